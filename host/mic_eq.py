"""Design the firmware's microphone equalisation biquad: one Q14 section that undoes a MEMS microphone's response.

A board profile carries the microphone's typical frequency response relative to 1 kHz as (frequency Hz, dB)
points read from the datasheet plot. The equaliser E(z) is one direct-form-I biquad (the firmware's ``eq``
parameter, applied before the DC blocker, so it shapes Z, C and A alike) chosen so that

    R(f) + 20·lg|E(f)| ≈ 0 dB        for 20 Hz <= f <= fs/3,        20·lg|E(1 kHz)| = 0 dB exactly,

where R(f) is the table interpolated linearly in log-frequency (held flat beyond its ends). The fit is least
squares in dB on 300 log-spaced frequencies, in the style of ``weighting_design._fit_h4_and_a_sections``, with
these limits that keep the firmware safe:

- boost: 20·lg|E(f)| <= ``max_boost_db`` (12 dB) at every frequency from DC to fs/2, so the microphone's
  low-frequency roll-off is undone only down to where it reaches -12 dB (about 20 Hz for the INMP441) and
  the noise below is not lifted further; the target is clipped to the limit as well;
- range: the L1 norm of the impulse response (``weighting_design.impulse_l1``, the largest output for any input
  within ±1) is at most ``L1_LIMIT`` = 4, i.e. two bits of growth on the 22-bit sample, as the kernel's word
  ranges assume; the fit aims at ``L1_DESIGN`` to leave room for quantisation;
- poles: radius <= ``max_pole_radius`` (see ``MAX_POLE_RADIUS`` for why not 0.98), enforced by construction
  (the denominator is parametrised over the stability triangle scaled by the radius);
- coefficients: every Q14 integer within ±(2**16 - 1), the kernel's product bound (v = vh·2**12 + vl).

The frequencies from 20 to 50 Hz carry weight ``LOW_BAND_WEIGHT`` (0.1): one biquad cannot follow the steep
part of the roll-off below 50 Hz and the rest of the band at once, and the correction there is capped by the
boost limit anyway; full weight there leaves 0.8-1.5 dB at 50-60 Hz for the INMP441 and ICS-43434 instead of
0.2-0.4 dB.

The section is quantised with ``weighting_design.Biquad.quantise`` and its numerator then trimmed by single
LSBs so that the *quantised* section has unit gain at 1 kHz (|error| < 0.001 dB); every figure reported by
``eq_report`` is computed from the integer coefficients.

The kernel's biquads round to nearest, and the DC blocker after the equaliser removes the DC that the rounding
and the poles near z = 1 would leave. ``EqReport.dc_bias_lsb`` is the offset a flooring biquad would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from slm.firmware.weighting_coeffs import BIQUAD_Q

if TYPE_CHECKING:
    from slm.weighting_design import Biquad
# scipy and the design module are imported where a section is designed or analysed: a profile's response
# table alone (slm boards) needs only numpy.

FIT_LOW_HZ = 20.0  # the fit band starts here ...
FIT_POINTS = 300
LOW_BAND_EDGE_HZ = 50.0  # ... with reduced weight below this frequency
LOW_BAND_WEIGHT = 0.1
REFERENCE_HZ = 1000.0
L1_LIMIT = 4.0  # hard limit on sum |h[n]| (kernel word ranges)
L1_DESIGN = 3.9  # what the fit aims at, leaving room for quantisation
COEFF_LIMIT = 2**16 - 1  # |Q14 integer coefficient|; the kernel multiplies coefficients by 13-bit halves
# Largest pole radius. The 0.98 of a first draft puts every pole above fs·(1-0.98)/2π = 153 Hz at 48 kHz, so a
# roll-off at 40-60 Hz cannot be undone at all (the best one biquad then leaves 1.3-1.8 dB at 50 Hz at
# 48 kHz). 0.995 (pole frequency >= 38 Hz at 48 kHz, >= 13 Hz at 16 kHz) is a comfortable stability margin for
# Q14 coefficients (their step is 6e-5) and costs at most 0.1 dB against an unconstrained fit.
MAX_POLE_RADIUS = 0.995
_RADIUS_MARGIN = 2e-4  # designed radius is this much below the limit, so rounding cannot cross it
_PENALTY = 30.0


def response_db(points: Sequence[Sequence[float]], f) -> np.ndarray:
    """The microphone response table interpolated linearly in log-frequency at f (Hz); flat beyond its ends."""
    fp = np.log([p[0] for p in points])
    dp = np.array([p[1] for p in points], dtype=float)
    return np.interp(np.log(np.asarray(f, dtype=float)), fp, dp)


def biquad_response_db(bq: Biquad, rate: int, f) -> np.ndarray:
    """20·lg|E(f)| of the quantised section (not normalised)."""
    from scipy import signal

    _, h = signal.sosfreqz(bq.sos(), worN=np.asarray(f, dtype=float), fs=rate)
    return 20 * np.log10(np.abs(h))


def residual_db(points: Sequence[Sequence[float]], bq: Biquad | None, rate: int, f) -> np.ndarray:
    """Microphone plus equaliser, R(f) + 20·lg|E(f)|, in dB at f (Hz): what is left of the response (0 = flat)."""
    r = response_db(points, f)
    return r if bq is None else r + biquad_response_db(bq, rate, f)


def pole_radius(bq: Biquad) -> float:
    s = 2.0**bq.q
    return float(np.max(np.abs(np.roots([1.0, bq.a[0] / s, bq.a[1] / s]))))


@dataclass(frozen=True)
class EqReport:
    """Evidence for one quantised equaliser (all from the integer coefficients)."""

    rate: int
    max_abs_db: float  # max |R + E| from f_low to rate/3, over frequencies the boost limit allows
    worst_hz: float
    gain_1k_db: float
    max_boost_db: float  # max of 20·lg|E| from DC to rate/2
    l1: float
    pole_radius: float
    dc_bias_lsb: float  # the DC offset a flooring biquad would give, 0.5 / (1 + a1 + a2) (the kernel rounds)
    coeffs: tuple[int, int, int, int, int]


def correctable(points: Sequence[Sequence[float]], f, max_boost_db: float = 12.0, margin_db: float = 0.5):
    """Boolean mask: frequencies whose needed correction is within the boost limit (with a margin)."""
    return -response_db(points, f) <= max_boost_db - margin_db


def eq_report(points: Sequence[Sequence[float]], bq: Biquad, rate: int, f_low: float = 50.0,
              f_high: float | None = None, max_boost_db: float = 12.0) -> EqReport:
    """How well ``bq`` flattens the microphone from f_low to f_high (default rate/3), and its safety figures."""
    from slm.weighting_design import impulse_l1

    f_high = rate / 3 if f_high is None else f_high
    f = np.geomspace(f_low, f_high, 400)
    f = f[correctable(points, f, max_boost_db)]
    res = residual_db(points, bq, rate, f)
    i = int(np.argmax(np.abs(res)))
    fg = np.concatenate([[0.0], np.geomspace(1.0, rate / 2, 2000)])
    s = 2.0**bq.q
    a_sum = 1 + (bq.a[0] + bq.a[1]) / s
    return EqReport(
        rate=rate,
        max_abs_db=float(abs(res[i])),
        worst_hz=float(f[i]),
        gain_1k_db=float(biquad_response_db(bq, rate, [REFERENCE_HZ])[0]),
        max_boost_db=float(np.max(biquad_response_db(bq, rate, fg))),
        l1=impulse_l1(bq.sos(), n=1 << 15),
        pole_radius=pole_radius(bq),
        dc_bias_lsb=float(0.5 / abs(a_sum)),
        coeffs=tuple(bq.ints()),  # type: ignore[arg-type]
    )


def _triangle(s: float, t: float, radius: float) -> tuple[float, float]:
    """(c1, c2) of z² + c1 z + c2 with both roots within ``radius``, for any real s, t (onto the open triangle)."""
    u = math.tanh(s)
    v = (1 + u) * math.tanh(t)
    return v * radius, u * radius * radius


def _l1(b: np.ndarray, a: np.ndarray, n: int) -> float:
    from scipy import signal

    x = np.zeros(n)
    x[0] = 1.0
    return float(np.abs(signal.lfilter(b, a, x)).sum())


def _fit(points: tuple[tuple[float, float], ...], rate: int, max_boost_db: float, radius: float):
    from scipy import optimize

    f = np.geomspace(FIT_LOW_HZ, rate / 3, FIT_POINTS)
    weight = np.where(f < LOW_BAND_EDGE_HZ, LOW_BAND_WEIGHT, 1.0)
    target = np.minimum(-response_db(points, f), max_boost_db)
    fg = np.concatenate([[0.0], np.geomspace(1.0, rate / 2, 300)])
    zf = np.exp(-2j * np.pi * f / rate)
    zg = np.exp(-2j * np.pi * fg / rate)
    zr = np.exp(-2j * np.pi * REFERENCE_HZ / rate)
    # The impulse response decays at least as radius**n: 1e-7 of its start by n_l1 samples.
    n_l1 = int(math.ceil(math.log(1e-7) / math.log(radius)))

    def coeffs(p):
        a1, a2 = _triangle(p[0], p[1], radius)
        c1, c2 = _triangle(p[2], p[3], 1.0)  # minimum phase: magnitude is all that matters
        a = np.array([1.0, a1, a2])
        b = np.array([1.0, c1, c2])
        g = abs((1 + a1 * zr + a2 * zr * zr) / (1 + c1 * zr + c2 * zr * zr))
        return b * g, a

    def h(b, a, z):
        return (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)

    def residual(p, with_l1=True):
        b, a = coeffs(p)
        fit = (20 * np.log10(np.abs(h(b, a, zf)) + 1e-12) - target) * weight
        boost = np.maximum(20 * np.log10(np.abs(h(b, a, zg)) + 1e-12) - (max_boost_db - 0.05), 0.0) * _PENALTY
        size = np.maximum(np.abs(b) - (COEFF_LIMIT - 64) / 2**BIQUAD_Q, 0.0) * _PENALTY
        l1 = [max(_l1(b, a, n_l1) - L1_DESIGN, 0.0) * _PENALTY] if with_l1 else []
        return np.concatenate([fit, boost, size, l1])

    # Starting points: real pole pairs from near the radius (a low shelf) to mid-band, zeros alike.
    starts = []
    for s in (0.5, 1.5, 3.0):
        for t in (-2.5, -1.0, 0.5):
            for s2, t2 in ((0.5, -2.0), (1.5, -1.0), (0.0, 0.0), (-0.5, -1.5)):
                starts.append((s, t, s2, t2))
    # Rank the starts cheaply without the L1 term, then polish the best few with it.
    rough = []
    for p0 in starts:
        r = optimize.least_squares(lambda p: residual(p, False), p0, method="trf", max_nfev=400)
        rough.append((r.cost, tuple(r.x)))
    rough.sort()
    polished = [optimize.least_squares(residual, p0, method="trf", max_nfev=2000, xtol=1e-12, ftol=1e-12)
                for _, p0 in rough[:4]]
    return coeffs(min(polished, key=lambda r: r.cost).x)


def _trim_gain(b: np.ndarray, a: np.ndarray, rate: int) -> Biquad:
    """Quantise, then nudge the numerator by single LSBs so that the integer section has unit gain at 1 kHz."""
    from slm.weighting_design import Biquad

    zr = np.exp(-2j * np.pi * REFERENCE_HZ / rate)
    bq = Biquad.quantise(b, a)
    s = 2.0**BIQUAD_Q
    aq = np.array([1.0, bq.a[0] / s, bq.a[1] / s])
    den = aq[0] + aq[1] * zr + aq[2] * zr * zr
    # Rescale the float numerator against the quantised denominator, requantise, then search ±2 LSB.
    g = abs((b[0] + b[1] * zr + b[2] * zr * zr) / den)
    base = [round(v / g * s) for v in b]
    best: tuple[tuple[float, int], tuple[int, int, int]] | None = None
    rng = range(-2, 3)
    for d0 in rng:
        for d1 in rng:
            for d2 in rng:
                bi = (base[0] + d0, base[1] + d1, base[2] + d2)
                err = abs(20 * math.log10(abs((bi[0] + bi[1] * zr + bi[2] * zr * zr) / s / den)))
                key = (err, abs(d0) + abs(d1) + abs(d2))
                if best is None or key < best[0]:
                    best = (key, bi)
    assert best is not None
    return Biquad(best[1], bq.a, BIQUAD_Q)


@lru_cache(maxsize=64)
def _design_cached(points: tuple[tuple[float, float], ...], rate: int, max_boost_db: float,
                   max_pole_radius: float) -> Biquad:
    b, a = _fit(points, rate, max_boost_db, max_pole_radius - _RADIUS_MARGIN)
    return _trim_gain(b, a, rate)


def design_eq_biquad(response_points: Iterable[Sequence[float]], rate: int, max_boost_db: float = 12.0,
                     max_pole_radius: float = MAX_POLE_RADIUS) -> Biquad:
    """One Q14 biquad E with R + 20·lg|E| ≈ 0 dB from 20 Hz to rate/3 and |E(1 kHz)| = 1 (see the module doc).

    response_points: (frequency Hz, dB re 1 kHz), frequencies increasing. Deterministic; results are cached.
    Takes 0.2-1 s. The caller checks the result with ``eq_report`` (the design aims inside the limits, but only
    the report of the integer coefficients is evidence).
    """
    points = tuple((float(f), float(d)) for f, d in response_points)
    if len(points) < 2:
        raise ValueError("need at least two response points")
    if not 0 < max_pole_radius < 1:
        raise ValueError(f"max_pole_radius must be in (0, 1), got {max_pole_radius}")
    return _design_cached(points, int(rate), float(max_boost_db), float(max_pole_radius))
