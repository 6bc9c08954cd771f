"""Shared helpers: run signals through the firmware (MicroPython unix port by default) and read levels back."""

from __future__ import annotations

import math
import signal

import numpy as np
import pytest

from slm.firmware_engine import MeterRun, MeterSettings, run_meter
from slm.wav_io import samples_to_i2s_words


def words_of(x: np.ndarray) -> np.ndarray:
    """Float samples (full scale ±1) -> the I2S words the ESP32 reads."""
    return samples_to_i2s_words(np.asarray(x, dtype=np.float64), 32, True)


def run_signal(x: np.ndarray, rate: int = 48000, interval_s: float = 1.0, engine: str = "micropython",
               raw: bool = False, **settings) -> MeterRun:
    """Measure a float signal with the firmware; the signal is streamed in 1 s chunks."""
    w = words_of(x)
    step = rate
    chunks = (w[i:i + step] for i in range(0, len(w), step))
    return run_meter(chunks, MeterSettings(rate=rate, interval_s=interval_s, **settings), engine=engine, raw=raw)


def energy_mean_db(levels) -> float:
    """Level of the mean power of several equal-length intervals."""
    return 10 * math.log10(sum(10 ** (v / 10) for v in levels) / len(levels))


def within(value: float, lower: float, upper: float) -> bool:
    return lower - 1e-9 <= value <= upper + 1e-9


@pytest.fixture(scope="session")
def rates():
    return (48000, 44100, 32000, 16000)


# --- hardware tests (tests/test_hardware.py, marked `hardware`, deselected by `make test`) ----------------------

def pytest_addoption(parser):
    group = parser.getgroup("hardware", "tests on a real board: pytest -m hardware --board-port PATH ...")
    group.addoption("--board-port", default=None, metavar="PATH",
                    help="Serial port of a real board; without it the hardware tests are skipped.")
    group.addoption("--board-name", default=None, metavar="NAME",
                    help="The board's profile (boards/NAME.toml), e.g. esp32-devkitc-inmp441.")
    group.addoption("--firmware", default=None, metavar="PATH",
                    help="MicroPython .bin to flash in the flash test (without it that test is skipped).")


def _sigint_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


INTERRUPTIBLE = {"preexec_fn": _sigint_as_at_a_terminal}
"""Popen arguments for a child that a test interrupts with SIGINT: Ctrl-C reaches it as at a terminal even when the
tests run in a background job, whose children inherit SIGINT ignored (Python then installs no KeyboardInterrupt)."""

