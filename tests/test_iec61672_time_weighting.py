"""IEC 61672-1:2013 5.7, 5.8, 5.9: time weighting F and S, Leq, tonebursts (Table 4), decay rates, through the
firmware on MicroPython."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from slm import iec61672
from slm.sim import signals
from tests.conftest import run_signal, within

RATE = 48000
STEADY_DB = 100.0
F_BURST = 4000.0


@functools.lru_cache(maxsize=None)
def steady_la(rate: int = RATE) -> float:
    """A-weighted level of the steady 4 kHz signal that the bursts are cut from."""
    run = run_signal(signals.sine(F_BURST, STEADY_DB, 3.0, rate), rate=rate, interval_s=1.0)
    return run.intervals[-1]["LAeq"]


def burst_run(burst_ms: float, offset_samples: int = 0, rate: int = RATE):
    x = signals.toneburst(F_BURST, STEADY_DB, burst_ms / 1000.0, rate, lead_s=1.0, tail_s=3.0)
    x = np.concatenate([np.zeros(offset_samples), x])
    x = x[: (len(x) // 4800) * 4800]
    return run_signal(x, rate=rate, interval_s=len(x) / rate)


@pytest.mark.micropython
@pytest.mark.parametrize("burst_ms", sorted(iec61672.TONEBURST_CLASS1_FE, reverse=True))
@pytest.mark.parametrize("offset", [0, 17, 31])
def test_table4_fast_and_sound_exposure(burst_ms, offset):
    """5.9 / Table 4: LAFmax - LA = 10 lg(1 - e^(-Tb/0.125 s)) and LAE - LA = 10 lg(Tb / 1 s) within class 1,
    at several phases of the burst against the meter's 1 ms blocks."""
    run = burst_run(burst_ms, offset)
    la = steady_la()
    o = run.overall
    lower, upper = iec61672.TONEBURST_CLASS1_FE[burst_ms]
    f_dev = o["LAFmax"] - la - iec61672.toneburst_reference_db(burst_ms / 1000, 0.125)
    e_dev = o["LAE"] - la - iec61672.toneburst_reference_db(burst_ms / 1000, None)
    assert within(f_dev, lower, upper), f"LAFmax deviation {f_dev:+.3f} dB"
    assert within(e_dev, lower, upper), f"LAE deviation {e_dev:+.3f} dB"


@pytest.mark.micropython
@pytest.mark.parametrize("burst_ms", sorted(iec61672.TONEBURST_CLASS1_S, reverse=True))
def test_table4_slow(burst_ms):
    """5.9 / Table 4: LASmax - LA = 10 lg(1 - e^(-Tb/1 s)) within class 1."""
    run = burst_run(burst_ms)
    lower, upper = iec61672.TONEBURST_CLASS1_S[burst_ms]
    dev = run.overall["LASmax"] - steady_la() - iec61672.toneburst_reference_db(burst_ms / 1000, 1.0)
    assert within(dev, lower, upper), f"LASmax deviation {dev:+.3f} dB"


def _decay_rate(tau_interval: float, seconds_steady: float, weighting_key: str) -> float:
    """dB/s fall of the time-weighted level after a steady 4 kHz signal stops, from the maxima of short intervals
    (each interval's maximum is its first value while the level falls)."""
    x = np.concatenate([signals.sine(F_BURST, STEADY_DB, seconds_steady, RATE), np.zeros(int(3 * RATE))])
    run = run_signal(x, rate=RATE, interval_s=tau_interval)
    stop = int(round(seconds_steady / tau_interval))
    maxima = [i[weighting_key] for i in run.intervals[stop + 1: stop + 1 + int(round(1.0 / tau_interval))]]
    slope = np.polyfit(np.arange(len(maxima)) * tau_interval, maxima, 1)[0]
    return -slope


@pytest.mark.micropython
def test_decay_rate_fast():
    """5.8.2: after a steady signal stops, LAF falls at 34.7 dB/s (class 1: +3.8 / -3.7 dB/s)."""
    rate = _decay_rate(0.1, 2.0, "LAFmax")
    nominal, lower, upper = iec61672.DECAY_RATE_FAST
    assert lower <= rate <= upper, f"{rate:.2f} dB/s"
    assert abs(rate - nominal) < 0.5


@pytest.mark.micropython
def test_decay_rate_slow():
    """5.8.2: after a steady signal stops, LAS falls at 4.3 dB/s (class 1: +0.8 / -0.7 dB/s)."""
    rate = _decay_rate(0.1, 8.0, "LASmax")
    nominal, lower, upper = iec61672.DECAY_RATE_SLOW
    assert lower <= rate <= upper, f"{rate:.2f} dB/s"
    assert abs(rate - nominal) < 0.1


@pytest.mark.micropython
def test_slow_and_leq_equal_fast_for_a_steady_1khz_signal():
    """5.8.3: for a steady 1 kHz signal, LAS and LAeq equal LAF within ±0.1 dB (after S has settled)."""
    run = run_signal(signals.sine(1000.0, 94.0, 12.0, RATE), rate=RATE, interval_s=1.0)
    last = run.intervals[-1]
    laf = last["LAFmax"]
    assert abs(last["LAFmin"] - laf) <= 0.1
    assert abs(last["LASmax"] - laf) <= 0.1
    assert abs(last["LASmin"] - laf) <= 0.1
    assert abs(last["LAeq"] - laf) <= 0.1
