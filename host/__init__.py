"""The meter host tool `slm`: measure, and (later) flash, deploy, calibrate and monitor boards."""
