"""IEC 61672 test signals as float arrays in microphone full-scale units (±1.0 = the largest sample).

Levels are dB re 20 µPa of the sine's rms; ``full_scale_db`` is the level of a full-scale sine (120 dB for a
microphone with -26 dBFS sensitivity). Every generator is deterministic; noise takes a seed.
"""

from __future__ import annotations

import numpy as np

FULL_SCALE_DB = 120.0


def third_octave_frequency(n: int) -> float:
    """Exact base-10 mid-band frequency 1000·10**(n/10) Hz (IEC 61260-1), n = -20 (10 Hz) .. 13 (20 kHz)."""
    return 1000.0 * 10.0 ** (n / 10.0)


def sine_amplitude(level_db: float, full_scale_db: float = FULL_SCALE_DB) -> float:
    """Peak amplitude (full-scale units) of a sine whose rms level is level_db."""
    return 10.0 ** ((level_db - full_scale_db) / 20.0)


def sine(freq: float, level_db: float, duration_s: float, rate: int, full_scale_db: float = FULL_SCALE_DB,
         phase: float = 0.0) -> np.ndarray:
    """A steady sine of the given rms level."""
    t = np.arange(int(round(duration_s * rate))) / rate
    return sine_amplitude(level_db, full_scale_db) * np.sin(2 * np.pi * freq * t + phase)


def toneburst(freq: float, level_db: float, burst_s: float, rate: int, lead_s: float = 0.5, tail_s: float = 2.0,
              full_scale_db: float = FULL_SCALE_DB) -> np.ndarray:
    """A burst of the steady sine (level_db is the steady signal's level), whole cycles starting and ending at zero
    crossings (IEC 61672-1 5.9), with silence before (lead_s) and after (tail_s)."""
    cycles = max(1, int(round(burst_s * freq)))
    n_burst = int(round(cycles * rate / freq))
    t = np.arange(n_burst) / rate
    burst = sine_amplitude(level_db, full_scale_db) * np.sin(2 * np.pi * freq * t)
    return np.concatenate([np.zeros(int(lead_s * rate)), burst, np.zeros(int(tail_s * rate))])


def cycles(freq: float, level_db: float, rate: int, kind: str = "one cycle", lead_s: float = 0.2,
           tail_s: float = 0.5, full_scale_db: float = FULL_SCALE_DB) -> np.ndarray:
    """Table 5 C-peak signals: "one cycle", "positive half cycle" or "negative half cycle" of the steady sine whose
    rms level is level_db, starting and ending at zero crossings, in silence."""
    period = 1.0 / freq
    if kind == "one cycle":
        dur, sign = period, 1.0
    elif kind == "positive half cycle":
        dur, sign = period / 2, 1.0
    elif kind == "negative half cycle":
        dur, sign = period / 2, -1.0
    else:
        raise ValueError(f"unknown signal kind {kind!r}")
    n = int(round(dur * rate))
    t = np.arange(n) / rate
    pulse = sign * sine_amplitude(level_db, full_scale_db) * np.sin(2 * np.pi * freq * t)
    return np.concatenate([np.zeros(int(lead_s * rate)), pulse, np.zeros(int(tail_s * rate))])


def level_steps(freq: float, levels_db, step_s: float, rate: int, full_scale_db: float = FULL_SCALE_DB) -> np.ndarray:
    """A continuous sine whose level changes to each of levels_db for step_s seconds (phase kept continuous)."""
    n_step = int(round(step_s * rate))
    t = np.arange(n_step * len(levels_db)) / rate
    amp = np.repeat([sine_amplitude(L, full_scale_db) for L in levels_db], n_step)
    return amp * np.sin(2 * np.pi * freq * t)


def pink_noise(level_db: float, duration_s: float, rate: int, seed: int = 0, full_scale_db: float = FULL_SCALE_DB,
               f_low: float = 10.0, f_high: float | None = None) -> np.ndarray:
    """Pink noise (equal power per octave from f_low to f_high) with the given unweighted (Z) rms level, by shaping
    white noise in the frequency domain (exact spectrum, circular)."""
    n = int(round(duration_s * rate))
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    f_high = f_high or 0.45 * rate
    shape = np.zeros_like(f)
    band = (f >= f_low) & (f <= f_high)
    shape[band] = 1.0 / np.sqrt(f[band])
    x = np.fft.irfft(spec * shape, n)
    rms = np.sqrt(np.mean(x * x))
    return x * (sine_amplitude(level_db, full_scale_db) / np.sqrt(2)) / rms
