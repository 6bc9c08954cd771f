"""Shared helpers: run signals through the firmware (MicroPython unix port by default) and read levels back."""

from __future__ import annotations

import math

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
