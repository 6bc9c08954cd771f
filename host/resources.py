"""Where slm's data lives: the firmware, the board profiles and the scenarios, found the same way in a checkout
(editable install) and in an installed wheel (importlib.resources, one place)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def _package_dir(package: str) -> Path:
    """The folder of a data package of slm. Installed packages are plain folders (never zipped), so the
    Traversable that importlib.resources gives is a real path on disk."""
    return Path(str(resources.files(package)))


def firmware_dir() -> Path:
    """firmware/: the MicroPython sources that run on the board (package slm.firmware)."""
    return _package_dir("slm.firmware")


def boards_dir() -> Path:
    """The board profiles (*.toml): $SLM_BOARDS_DIR if set, else the shipped boards/ (package slm.board_profiles)."""
    env = os.environ.get("SLM_BOARDS_DIR")
    return Path(env) if env else _package_dir("slm.board_profiles")


def scenarios_dir() -> Path:
    """The built-in scenarios of the simulator (sim/scenarios/*.toml): the simulator's own SCENARIO_DIR (sim/
    depends on nothing in host/, so it finds them itself, beside its modules, in a checkout and a wheel alike)."""
    from slm.sim.scenario import SCENARIO_DIR

    return SCENARIO_DIR
