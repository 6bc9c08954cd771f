"""IEC 61672-1:2013 Annex E frequency weightings A, C and Z: the analog design goals, in dB and as complex responses.

The one implementation of Annex E in slm: the simulator's ground truth (sim/truth.py), the microphone model's
self-noise and the host's filter design (host/weighting_design.py) all use it.  (The tests keep an independent copy
written out from the standard.)

Equations (E.1) to (E.6) with the pole frequencies of (E.2)-(E.5), in Hz::

    C(f) = 20 lg[ f4² f² / ((f² + f1²)(f² + f4²)) ] - C1000
    A(f) = 20 lg[ f4² f⁴ / ((f² + f1²) (f² + f2²)^½ (f² + f3²)^½ (f² + f4²)) ] - A1000
    Z(f) = 0

A1000 and C1000 are the values these poles give at 1 kHz (the standard rounds them to -2.000 and -0.062 dB), so the
goals are exactly 0 dB at 1 kHz.
"""

from __future__ import annotations

import numpy as np

F1, F2, F3, F4 = 20.598997, 107.65265, 737.86223, 12194.217  # Hz, (E.2)-(E.5)
A1000 = -1.999656  # dB
C1000 = -0.061902  # dB
WEIGHTINGS = ("A", "C", "Z")


def design_goal_db(weighting: str, f) -> np.ndarray:
    """Design goal of frequency weighting A, C or Z in dB at frequencies f (Hz, array or scalar): (E.1), (E.6).
    -inf at 0 Hz for A and C (no warning)."""
    f = np.asarray(f, dtype=float)
    f2 = f * f
    with np.errstate(divide="ignore"):
        if weighting == "A":
            return 20 * np.log10(F4**2 * f2 * f2 / ((f2 + F1**2) * np.sqrt(f2 + F2**2) * np.sqrt(f2 + F3**2)
                                                     * (f2 + F4**2))) - A1000
        if weighting == "C":
            return 20 * np.log10(F4**2 * f2 / ((f2 + F1**2) * (f2 + F4**2))) - C1000
    if weighting == "Z":
        return np.zeros_like(f)
    raise ValueError(f"unknown weighting {weighting!r} (A, C or Z)")


def analog_response(weighting: str, f) -> np.ndarray:
    """Complex response H(j2πf) of the analog weighting whose magnitude is the design goal, at frequencies f (Hz):
    A = g·ω4² s⁴ / ((s+ω1)² (s+ω2) (s+ω3) (s+ω4)²), C = g·ω4² s² / ((s+ω1)² (s+ω4)²), Z = 1; g = 10**(-X1000/20),
    ωk = 2π fk, s = j2πf."""
    s = 2j * np.pi * np.asarray(f, dtype=float)
    w1, w2, w3, w4 = (2 * np.pi * fp for fp in (F1, F2, F3, F4))
    if weighting == "A":
        return 10 ** (-A1000 / 20) * w4**2 * s**4 / ((s + w1) ** 2 * (s + w2) * (s + w3) * (s + w4) ** 2)
    if weighting == "C":
        return 10 ** (-C1000 / 20) * w4**2 * s**2 / ((s + w1) ** 2 * (s + w4) ** 2)
    if weighting == "Z":
        return np.ones_like(s)
    raise ValueError(f"unknown weighting {weighting!r} (A, C or Z)")
