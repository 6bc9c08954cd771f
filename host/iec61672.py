"""IEC 61672-1:2013 tables used to design and check the meter: Table 3 limits, Table 4 tonebursts, Table 5 C-peak.

Values are transcribed from shared/reference/standards.md (GB/T 3785.1-2023 is the identical adoption).
Limits are (lower, upper) deviations in dB; ``-inf`` stands for "no lower limit".
"""

from __future__ import annotations

import math

INF = math.inf

# Table 3: band index n (exact frequency 1000·10**(n/10) Hz) -> class 1 acceptance limits (lower, upper), dB.
CLASS1_FREQUENCY_LIMITS = {
    -20: (-INF, 3.0), -19: (-INF, 2.5), -18: (-4.0, 2.0), -17: (-2.0, 2.0), -16: (-1.5, 2.0), -15: (-1.5, 1.5),
    -14: (-1.0, 1.0), -13: (-1.0, 1.0), -12: (-1.0, 1.0), -11: (-1.0, 1.0), -10: (-1.0, 1.0), -9: (-1.0, 1.0),
    -8: (-1.0, 1.0), -7: (-1.0, 1.0), -6: (-1.0, 1.0), -5: (-1.0, 1.0), -4: (-1.0, 1.0), -3: (-1.0, 1.0),
    -2: (-1.0, 1.0), -1: (-1.0, 1.0), 0: (-0.7, 0.7), 1: (-1.0, 1.0), 2: (-1.0, 1.0), 3: (-1.0, 1.0),
    4: (-1.0, 1.0), 5: (-1.0, 1.0), 6: (-1.0, 1.0), 7: (-1.5, 1.5), 8: (-2.0, 1.5), 9: (-2.5, 1.5),
    10: (-3.0, 2.0), 11: (-5.0, 2.0), 12: (-16.0, 2.5), 13: (-INF, 3.0),
}


def band_index(f: float) -> int:
    """Nearest base-10 third-octave band index n for frequency f (Hz)."""
    return round(10 * math.log10(f / 1000.0))


def class1_limits(f: float) -> tuple[float, float]:
    """Class 1 limits (lower, upper) in dB for a frequency on the third-octave grid (Table 3)."""
    return CLASS1_FREQUENCY_LIMITS[band_index(f)]


def exact_band_frequency(n: int) -> float:
    return 1000.0 * 10.0 ** (n / 10.0)


# Table 4: 4 kHz toneburst duration (ms) -> class 1 limits (lower, upper) for F and E, and for S (None: not specified).
TONEBURST_CLASS1_FE = {
    1000: (-0.5, 0.5), 500: (-0.5, 0.5), 200: (-0.5, 0.5), 100: (-1.0, 1.0), 50: (-1.0, 1.0), 20: (-1.0, 1.0),
    10: (-1.0, 1.0), 5: (-1.0, 1.0), 2: (-1.5, 1.0), 1: (-2.0, 1.0), 0.5: (-2.5, 1.0), 0.25: (-3.0, 1.0),
}
TONEBURST_CLASS1_S = {
    1000: (-0.5, 0.5), 500: (-0.5, 0.5), 200: (-0.5, 0.5), 100: (-1.0, 1.0), 50: (-1.0, 1.0), 20: (-1.5, 1.0),
    10: (-2.0, 1.0), 5: (-2.5, 1.0), 2: (-3.0, 1.0),
}


def toneburst_reference_db(duration_s: float, tau_s: float | None) -> float:
    """Table 4 reference response δ: 10 lg(1 - e^(-Tb/τ)) for F/S maxima, 10 lg(Tb / 1 s) for LAE (tau None)."""
    if tau_s is None:
        return 10 * math.log10(duration_s)
    return 10 * math.log10(-math.expm1(-duration_s / tau_s))


# Table 5: (signal, frequency) -> (LCpeak - LC reference, class 1 limit ±).
CPEAK_CLASS1 = {
    ("one cycle", 31.5): (2.5, 2.0),
    ("one cycle", 500): (3.5, 1.0),
    ("one cycle", 8000): (3.4, 2.0),
    ("positive half cycle", 500): (2.4, 1.0),
    ("negative half cycle", 500): (2.4, 1.0),
}

# 5.7/5.8: decay rates after a steady signal stops, dB/s (nominal, lower, upper) for class 1.
DECAY_RATE_FAST = (34.7, 34.7 - 3.7, 34.7 + 3.8)
DECAY_RATE_SLOW = (4.3, 4.3 - 0.7, 4.3 + 0.8)

REFERENCE_PRESSURE_PA = 20e-6
