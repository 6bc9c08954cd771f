"""The shipped board profiles (*.toml), data for slm.boards; installed as the package slm.board_profiles."""
