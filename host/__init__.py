"""The `slm` host tool: measure recordings with the firmware, simulate squares, run virtual boards, flash, deploy,
calibrate and monitor boards. `slm.cli` is the command line; each job has its own module."""
