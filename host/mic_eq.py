"""Design the firmware's microphone equaliser: one or two Q14 biquads that undo a MEMS microphone's response.

A board profile carries the microphone's typical frequency response relative to 1 kHz as (frequency Hz, dB)
points read from the datasheet plot. The equaliser E(z) is a cascade of one or two direct-form-I biquads (the
firmware's ``eq`` parameter: 5 or 10 integers, applied in order before the DC blocker, so it shapes Z, C and A
alike) chosen so that

    R(f) + 20·lg|E(f)| ≈ 0 dB        for 50 Hz <= f <= fs/3,        20·lg|E(1 kHz)| = 0 dB exactly,

where R(f) is the table interpolated linearly in log-frequency (held flat beyond its ends). ``design_eq`` first
designs one section; when its quantised residual exceeds ``TARGET_DB`` it designs two:

1. one section is fitted to the whole band (least squares in dB on 300 log-spaced frequencies from 20 Hz, those
   below 50 Hz weighted ``LOW_BAND_WEIGHT``: the correction there is capped by the boost limit anyway);
2. for two sections, each gets a role: the *low* section is fitted to the target held flat above 1 kHz (the
   low-frequency roll-off), the *high* section to what the low one leaves over the whole band; both fits start
   from the same fixed grid of 36 starting points as the single section;
3. the two are polished jointly (least squares on all 8 parameters from the role fits), then the largest
   deviations are pressed down by a few rounds of Lawson reweighting (each frequency's weight multiplied by its
   residual), keeping the round with the smallest largest deviation that keeps the L1 and boost limits (the
   single section gets these rounds too, and its plain fit is kept as a fallback);
4. the cascade's poles and zeros are paired into sections, and the sections ordered, for the least rounding
   noise (``_pair``), each section keeping at most one pole near z = 1 (``PARTNER_POLE_MAX``);
5. each denominator is quantised, the zeros are fitted again against those integers, and each numerator is
   chosen among the roundings within ±3 LSB for the smallest largest deviation (``_quantise``). The two-section
   design is used only if its integers are flatter than the single section's.

Limits that keep the firmware safe, all checked on the integer coefficients (``eq_report``, ``check``):

- boost: 20·lg|E(f)| <= ``max_boost_db`` (12 dB) at every frequency from DC to fs/2, so the microphone's
  low-frequency roll-off is undone only down to where it reaches -12 dB (about 20 Hz for the INMP441) and
  the noise below is not lifted further; the target is clipped to the limit as well;
- range: the L1 norm of the impulse response (``weighting_design.impulse_l1``, the largest output for any input
  within ±1) is at most ``L1_LIMIT`` = 4 for the first section alone *and* for the cascade, i.e. two bits of
  growth on the 22-bit sample at every node, as the kernel's word ranges assume
  (``weighting_design.node_bounds``); the fit aims at ``L1_DESIGN`` to leave room for quantisation;
- poles: radius <= ``max_pole_radius(rate)`` (see ``MAX_POLE_RADII``), enforced by construction (each denominator
  is parametrised over the stability triangle scaled by the radius);
- coefficients: every Q14 integer within ±(2**16 - 1), the kernel's product bound (v = vh·2**12 + vl).

Denominators are quantised with ``weighting_design.Biquad.quantise``; the last numerator is chosen so that the
*quantised cascade* has unit gain at 1 kHz (|error| <= 0.0005 dB). Every figure reported by ``eq_report`` is
computed from the integer coefficients.

The kernel's biquads round each output to nearest; that error is fed back through the section's poles, 1/A(z),
and then passes the sections after it. ``eq_report`` gives that rounding noise through the Z and A chains in dB
re full scale (a full-scale sine), to compare with the microphone's self-noise. The DC blocker after the
equaliser removes the DC that the rounding and the poles near z = 1 would leave; ``EqReport.dc_bias_lsb`` is the
offset flooring biquads would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable, Sequence, Union

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
ROLE_SPLIT_HZ = 1000.0  # the low section's target is held flat above this frequency
TARGET_DB = 0.12  # one section is enough when its quantised residual, 50 Hz to fs/3, is within this
MAX_SECTIONS = 2
LAWSON_ROUNDS = 6
ROUGH_NFEV = 100  # evaluations per start when ranking the starts of a one-section fit
L1_LIMIT = 4.0  # hard limit on sum |h[n]| of section 1 and of the cascade (kernel word ranges)
L1_DESIGN = 3.9  # what the fit aims at, leaving room for quantisation
COEFF_LIMIT = 2**16 - 1  # |Q14 integer coefficient|; the kernel multiplies coefficients by 13-bit halves
# Largest pole radius, per sample rate (``max_pole_radius``). The 0.98 of a first draft puts every pole above
# fs·(1-0.98)/2π = 153 Hz at 48 kHz, so a roll-off at 40-60 Hz cannot be undone at all (the best one biquad then
# leaves 1.3-1.8 dB at 50 Hz at 48 kHz). A radius limit is a limit on the lowest pole frequency, fs·(1-r)/2π:
# 0.995 allows 13 Hz at 16 kHz and 25 Hz at 32 kHz, but only 38 Hz at 48 kHz, which kept the INMP441 at 48 and
# 44.1 kHz at 0.23-0.24 dB at 50-60 Hz even with two sections (the table's bend there is narrower than such a
# pole can follow; the best two sections for 50 Hz-1.5 kHz alone, in float: 0.21 dB at 0.995, 0.16 at 0.998).
# So 48 and 44.1 kHz allow 0.998 (15 and 14 Hz): 1 - r is still 33 Q14 steps, and the rounding noise through Z
# stays at -107 to -116 dBFS, 20 dB under the microphones' self-noise. At 16 kHz 0.998 (5 Hz) would lift that
# noise to -89 dBFS, so 32 and 16 kHz keep 0.995.
MAX_POLE_RADII = {48000: 0.998, 44100: 0.998, 32000: 0.995, 16000: 0.995}


def max_pole_radius(rate: int) -> float:
    """The largest pole radius the equaliser may have at ``rate`` (see MAX_POLE_RADII)."""
    return MAX_POLE_RADII.get(int(rate), min(MAX_POLE_RADII.values()))
# One pole near z = 1 per section: A(1) = 1 + a1 + a2 of every section at least (1 - radius)·(1 - this), i.e.
# beside a pole at the radius limit the other lies at most here. Two poles near 1 (the shape a free fit finds
# for the SPH0645) leave A(1) ~ (1 - 0.995)² = 2.5e-5, below the Q14 step (6e-5): rounding then moves the
# low-frequency response by decibels, or the poles onto the unit circle. With 0.8 instead (A(1) >= 1e-3 at
# 0.995), the INMP441 at 48 kHz got 0.21 dB instead of 0.24, the SPH0645 0.11-0.12 instead of 0.08, and one
# section's rounding error went through a 1/A(z) of gain 1000 at DC (-100 dBFS of noise through Z, not -114).
PARTNER_POLE_MAX = 0.2
SNAP_IMAG = 5e-3  # a root pair closer than this to the real axis may be split between sections
_RADIUS_MARGIN = 2e-4  # designed radius is this much below the limit, so rounding cannot cross it
_PENALTY = 30.0
NOISE_SAMPLES = 1 << 18  # impulse responses for the rounding noise: 16 time constants of the slowest DC blocker

Equaliser = Union["Biquad", Sequence["Biquad"]]


def response_db(points: Sequence[Sequence[float]], f) -> np.ndarray:
    """The microphone response table interpolated linearly in log-frequency at f (Hz); flat beyond its ends."""
    fp = np.log([p[0] for p in points])
    dp = np.array([p[1] for p in points], dtype=float)
    return np.interp(np.log(np.asarray(f, dtype=float)), fp, dp)


def _sections(eq: Equaliser) -> tuple[Biquad, ...]:
    return tuple(eq) if isinstance(eq, (tuple, list)) else (eq,)  # type: ignore[arg-type]


def cascade_sos(eq: Equaliser) -> np.ndarray:
    """The quantised sections as one second-order-sections array, in the order the firmware applies them."""
    return np.vstack([bq.sos() for bq in _sections(eq)])


def flat_coeffs(eq: Equaliser) -> tuple[int, ...]:
    """The firmware's ``eq``: b0 b1 b2 a1 a2 of each section in order (5 or 10 integers)."""
    return tuple(v for bq in _sections(eq) for v in bq.ints())


def biquad_response_db(eq: Equaliser, rate: int, f) -> np.ndarray:
    """20·lg|E(f)| of the quantised section or cascade (not normalised)."""
    from scipy import signal

    _, h = signal.sosfreqz(cascade_sos(eq), worN=np.asarray(f, dtype=float), fs=rate)
    return 20 * np.log10(np.abs(h))


def residual_db(points: Sequence[Sequence[float]], eq: Equaliser | None, rate: int, f) -> np.ndarray:
    """Microphone plus equaliser, R(f) + 20·lg|E(f)|, in dB at f (Hz): what is left of the response (0 = flat)."""
    r = response_db(points, f)
    return r if eq is None else r + biquad_response_db(eq, rate, f)


def pole_radius(eq: Equaliser) -> float:
    """The largest pole radius of the quantised section or cascade."""
    out = 0.0
    for bq in _sections(eq):
        s = 2.0**bq.q
        out = max(out, float(np.max(np.abs(np.roots([1.0, bq.a[0] / s, bq.a[1] / s])))))
    return out


@lru_cache(maxsize=8)
def _committed_design(rate: int):
    """The firmware's weighting design for ``rate`` (weighting_design.committed_designs, read once)."""
    from slm.weighting_design import committed_designs

    return committed_designs()[rate]


def rounding_noise_dbfs(eq: Equaliser, rate: int) -> dict[str, float]:
    """The equaliser's own rounding noise at the Z and A outputs, dB re a full-scale sine of the 22-bit sample.

    Each section rounds its output to nearest: an error of variance 1/12 LSB² that its own poles (1/A_k) and
    then every later section and the weighting chain (from the committed firmware design) shape.
    """
    from scipy import signal

    from slm.weighting_design import INPUT_BITS

    design = _committed_design(rate)
    secs = _sections(eq)
    full_scale_power = (2.0 ** (INPUT_BITS - 1)) ** 2 / 2
    out = {}
    for weighting in "ZA":
        chain = design.chain_sos(weighting)
        gain = 10 ** (-design.gain_db[weighting] / 20)
        power = 0.0
        for k, bq in enumerate(secs):
            s = 2.0**bq.q
            feedback = np.array([[1.0, 0.0, 0.0, 1.0, bq.a[0] / s, bq.a[1] / s]])
            after = [feedback] + [b.sos() for b in secs[k + 1:]] + [chain]
            x = np.zeros(NOISE_SAMPLES)
            x[0] = gain
            power += float(np.sum(signal.sosfilt(np.vstack(after), x) ** 2)) / 12
        out[weighting] = 10 * math.log10(power / full_scale_power)
    return out


@dataclass(frozen=True)
class EqReport:
    """Evidence for one quantised equaliser, one or two sections (all from the integer coefficients)."""

    rate: int
    sections: int
    max_abs_db: float  # max |R + E| from f_low to rate/3, over frequencies the boost limit allows
    worst_hz: float
    gain_1k_db: float
    max_boost_db: float  # max of 20·lg|E| of the cascade from DC to rate/2
    l1: float  # of the cascade
    l1_first: float  # of section 1 alone (the node between the sections)
    pole_radius: float  # the largest of all sections
    dc_bias_lsb: float  # the DC offset flooring biquads would give (the kernel rounds)
    noise_z_dbfs: float  # the equaliser's rounding noise through the Z chain, dB re full scale
    noise_a_dbfs: float  # ... and through the A chain
    coeffs: tuple[int, ...]  # the firmware's eq: 5 integers per section


def correctable(points: Sequence[Sequence[float]], f, max_boost_db: float = 12.0, margin_db: float = 0.5):
    """Boolean mask: frequencies whose needed correction is within the boost limit (with a margin)."""
    return -response_db(points, f) <= max_boost_db - margin_db


def _dc_bias_lsb(secs: Sequence[Biquad]) -> float:
    """Flooring each section's output adds -0.5 LSB of DC, amplified by 1/A_k(1) and every later section."""
    bias = 0.0
    for bq in secs:
        s = 2.0**bq.q
        bias = bias * sum(bq.b) / s / (1 + (bq.a[0] + bq.a[1]) / s) + 0.5 / abs(1 + (bq.a[0] + bq.a[1]) / s)
    return float(abs(bias))


def _max_residual(points, eq: Equaliser, rate: int, f_low: float, f_high: float, max_boost_db: float):
    f = np.geomspace(f_low, f_high, 400)
    f = f[correctable(points, f, max_boost_db)]
    res = residual_db(points, eq, rate, f)
    i = int(np.argmax(np.abs(res)))
    return float(abs(res[i])), float(f[i])


def _limits(secs: Sequence[Biquad], rate: int) -> dict[str, float]:
    """The figures the kernel's safety depends on, from the integers: L1 norms, largest boost, pole radius."""
    from slm.weighting_design import impulse_l1

    fg = np.concatenate([[0.0], np.geomspace(1.0, rate / 2, 2000)])
    return {"l1": impulse_l1(cascade_sos(secs), n=1 << 15), "l1_first": impulse_l1(secs[0].sos(), n=1 << 15),
            "max_boost_db": float(np.max(biquad_response_db(secs, rate, fg))), "pole_radius": pole_radius(secs),
            "max_coeff": float(max(abs(c) for c in flat_coeffs(secs)))}


def _limit_problems(secs: Sequence[Biquad], rate: int, max_boost_db: float = 12.0,
                    radius_limit: float | None = None) -> list[str]:
    radius_limit = max_pole_radius(rate) if radius_limit is None else radius_limit
    lim = _limits(secs, rate)
    problems = []
    if lim["l1_first"] > L1_LIMIT:
        problems.append(f"section 1 has an L1 norm of {lim['l1_first']:.3f} > {L1_LIMIT:g}")
    if lim["l1"] > L1_LIMIT:
        problems.append(f"the cascade has an L1 norm of {lim['l1']:.3f} > {L1_LIMIT:g}")
    if lim["max_boost_db"] > max_boost_db + 0.02:
        problems.append(f"it boosts by {lim['max_boost_db']:.2f} dB > {max_boost_db:g} dB")
    if lim["max_coeff"] > COEFF_LIMIT:
        problems.append(f"a coefficient is beyond ±{COEFF_LIMIT}: {flat_coeffs(secs)}")
    if lim["pole_radius"] > radius_limit:
        problems.append(f"a pole lies at radius {lim['pole_radius']:.5f} > {radius_limit}")
    return problems


def eq_report(points: Sequence[Sequence[float]], eq: Equaliser, rate: int, f_low: float = 50.0,
              f_high: float | None = None, max_boost_db: float = 12.0) -> EqReport:
    """How well ``eq`` (a section or a cascade) flattens the microphone from f_low to f_high (default rate/3),
    and its safety figures."""
    secs = _sections(eq)
    f_high = rate / 3 if f_high is None else f_high
    worst_db, worst_hz = _max_residual(points, secs, rate, f_low, f_high, max_boost_db)
    lim = _limits(secs, rate)
    noise = rounding_noise_dbfs(secs, rate)
    return EqReport(
        rate=rate,
        sections=len(secs),
        max_abs_db=worst_db,
        worst_hz=worst_hz,
        gain_1k_db=float(biquad_response_db(secs, rate, [REFERENCE_HZ])[0]),
        max_boost_db=lim["max_boost_db"],
        l1=lim["l1"],
        l1_first=lim["l1_first"],
        pole_radius=lim["pole_radius"],
        dc_bias_lsb=_dc_bias_lsb(secs),
        noise_z_dbfs=noise["Z"],
        noise_a_dbfs=noise["A"],
        coeffs=flat_coeffs(secs),
    )


def sections_of(coeffs: Sequence[int]) -> tuple[Biquad, ...]:
    """The Q14 sections of the firmware's flat ``eq`` (5 or 10 integers)."""
    from slm.weighting_design import Biquad

    if len(coeffs) not in (5, 10):
        raise ValueError(f"an equaliser has 5 or 10 coefficients, got {len(coeffs)}")
    return tuple(Biquad(tuple(coeffs[i:i + 3]), tuple(coeffs[i + 3:i + 5]), BIQUAD_Q)  # type: ignore[arg-type]
                 for i in range(0, len(coeffs), 5))


def check(rep: EqReport, max_boost_db: float = 12.0, radius_limit: float | None = None) -> list[str]:
    """What is wrong with a quantised equaliser for the kernel (empty: nothing)."""
    return _limit_problems(sections_of(rep.coeffs), rep.rate, max_boost_db, radius_limit)


def coeff_problems(coeffs: Sequence[int], rate: int) -> list[str]:
    """``check`` for the flat integers alone (no flatness or noise figures: quick)."""
    return _limit_problems(sections_of(coeffs), rate)


# --- the fit ----------------------------------------------------------------------------------------------------

def _untriangle(c1: float, c2: float) -> tuple[float, float]:
    """(s, t) with ``_triangle(s, t, 1) == (c1, c2)``, for roots within the unit circle (clipped just inside)."""
    u = min(max(c2, -1 + 1e-9), 1 - 1e-9)
    v = min(max(c1 / (1 + u), -1 + 1e-9), 1 - 1e-9)
    return math.atanh(u), math.atanh(v)


def _triangle(s: float, t: float, radius: float) -> tuple[float, float]:
    """(c1, c2) of z² + c1 z + c2 with both roots within ``radius``, for any real s, t (onto the open triangle)."""
    u = math.tanh(s)
    v = (1 + u) * math.tanh(t)
    return v * radius, u * radius * radius


# Starting points of a one-section fit: real pole pairs from near the radius (a low shelf) to mid-band, zeros alike.
_STARTS = tuple((s, t, s2, t2) for s in (0.5, 1.5, 3.0) for t in (-2.5, -1.0, 0.5)
                for s2, t2 in ((0.5, -2.0), (1.5, -1.0), (0.0, 0.0), (-0.5, -1.5)))


class _Problem:
    """The fit's frequencies, target and limits for one table, rate, boost limit and pole radius."""

    def __init__(self, points, rate: int, max_boost_db: float, radius: float):
        self.rate, self.max_boost_db, self.radius = rate, max_boost_db, radius
        self.f = np.geomspace(FIT_LOW_HZ, rate / 3, FIT_POINTS)
        self.weight = np.where(self.f < LOW_BAND_EDGE_HZ, LOW_BAND_WEIGHT, 1.0)
        self.target = np.minimum(-response_db(points, self.f), max_boost_db)
        self.low_target = np.minimum(-response_db(points, np.minimum(self.f, ROLE_SPLIT_HZ)), max_boost_db)
        self.in_band = (self.f >= LOW_BAND_EDGE_HZ) & correctable(points, self.f, max_boost_db)
        fg = np.concatenate([[0.0], np.geomspace(1.0, rate / 2, 300)])
        self.zf = np.exp(-2j * np.pi * self.f / rate)
        self.zg = np.exp(-2j * np.pi * fg / rate)
        self.zr = np.exp(-2j * np.pi * REFERENCE_HZ / rate)
        # The impulse response decays at least as radius**n: 1e-7 of its start by n_l1 samples.
        self.n_l1 = int(math.ceil(math.log(1e-7) / math.log(radius)))
        self.den_dc_min = (1 - radius) * (1 - PARTNER_POLE_MAX)
        self.fixed_a: list[tuple[float, float]] | None = None  # quantised denominators, for the last refit

    def refit_zeros(self, secs, a_int: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The sections with their denominators fixed at the integers ``a_int`` and the zeros fitted again: a pole
        near z = 1 makes the response at low frequencies sensitive to the denominator's rounding, which the zeros
        can then make up for."""
        zeros = np.concatenate([_untriangle(b[1] / b[0], b[2] / b[0]) for b, _ in secs])
        self.fixed_a = [(a1 / 2**BIQUAD_Q, a2 / 2**BIQUAD_Q) for a1, a2 in a_int]
        try:
            return self.sections(self.lawson(zeros))
        finally:
            self.fixed_a = None

    def section(self, p, a: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(b, a) of one section from 4 parameters (2 for the zeros alone when the denominator ``a`` is given),
        normalised to unit gain at 1 kHz; zeros within the unit circle (minimum phase: magnitude is all that
        matters)."""
        zr = self.zr
        a1, a2 = _triangle(p[0], p[1], self.radius) if a is None else a
        c1, c2 = _triangle(p[-2], p[-1], 1.0)
        g = abs((1 + a1 * zr + a2 * zr * zr) / (1 + c1 * zr + c2 * zr * zr))
        return np.array([1.0, c1, c2]) * g, np.array([1.0, a1, a2])

    def sections(self, params) -> list[tuple[np.ndarray, np.ndarray]]:
        if self.fixed_a is not None:
            return [self.section(params[2 * i:2 * i + 2], a) for i, a in enumerate(self.fixed_a)]
        return [self.section(params[i:i + 4]) for i in range(0, len(params), 4)]

    @staticmethod
    def _db(secs, z) -> np.ndarray:
        h = np.ones_like(z)
        for b, a in secs:
            h = h * (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
        return 20 * np.log10(np.abs(h) + 1e-12)

    def l1(self, secs) -> float:
        from scipy import signal

        x = np.zeros(self.n_l1)
        x[0] = 1.0
        for b, a in secs:
            x = signal.lfilter(b, a, x)
        return float(np.abs(x).sum())

    def fit_error(self, params, target, fixed_db=0.0) -> np.ndarray:
        return self._db(self.sections(params), self.zf) + fixed_db - target

    def residual(self, params, target, weight, fixed_db=0.0, with_l1=True) -> np.ndarray:
        secs = self.sections(params)
        fit = (self._db(secs, self.zf) + fixed_db - target) * weight
        boost = np.maximum(self._db(secs, self.zg) - (self.max_boost_db - 0.05), 0.0) * _PENALTY
        size = [np.maximum(np.abs(b) - (COEFF_LIMIT - 64) / 2**BIQUAD_Q, 0.0) * _PENALTY for b, _ in secs]
        size.append(np.array([max(self.den_dc_min - a.sum(), 0.0) * _PENALTY / self.den_dc_min for _, a in secs]))
        l1 = []
        if with_l1:
            l1 = [max(self.l1(secs[:1]) - L1_DESIGN, 0.0) * _PENALTY]
            if len(secs) > 1:
                l1.append(max(self.l1(secs) - L1_DESIGN, 0.0) * _PENALTY)
        return np.concatenate([fit, boost, *size, l1])

    def fit_one(self, target, fixed_db=0.0) -> np.ndarray:
        """One section from the fixed starts: rank them cheaply without the L1 term, polish the best few with it."""
        from scipy import optimize

        rough = []
        for p0 in _STARTS:
            r = optimize.least_squares(self.residual, p0, args=(target, self.weight, fixed_db, False),
                                       method="trf", max_nfev=ROUGH_NFEV)
            rough.append((r.cost, tuple(r.x)))
        rough.sort()
        polished = [optimize.least_squares(self.residual, p0, args=(target, self.weight, fixed_db),
                                           method="trf", max_nfev=1000, xtol=1e-10, ftol=1e-10)
                    for _, p0 in rough[:3]]
        return min(polished, key=lambda r: r.cost).x

    def worst(self, params) -> float:
        """Largest |deviation| within the band that counts (50 Hz to fs/3, correctable), before quantisation;
        infinite when the L1 norm of section 1 or of the cascade exceeds the design limit or the boost its limit
        (the fit's penalties are soft, and a reweighted round can trade them for flatness)."""
        secs = self.sections(params)
        if (self.l1(secs[:1]) > L1_DESIGN + 0.02 or self.l1(secs) > L1_DESIGN + 0.02
                or np.max(self._db(secs, self.zg)) > self.max_boost_db):
            return math.inf
        return float(np.max(np.abs(self.fit_error(params, self.target)[self.in_band])))

    def fit_two(self) -> np.ndarray:
        """Low section for the roll-off, high section for the rest, then a joint polish and Lawson rounds."""
        from scipy import optimize

        low = self.fit_one(self.low_target)
        high = self.fit_one(self.target, fixed_db=self._db(self.sections(low), self.zf))
        joint = optimize.least_squares(self.residual, np.concatenate([low, high]), args=(self.target, self.weight),
                                       method="trf", max_nfev=2000, xtol=1e-10, ftol=1e-10).x
        return self.lawson(joint)

    def lawson(self, params) -> np.ndarray:
        """Press the largest deviations down: rounds of least squares with each in-band frequency's weight
        multiplied by its deviation; the parameters with the smallest largest deviation (``params`` included)."""
        from scipy import optimize

        best, best_worst = params, self.worst(params)
        weight = self.weight.copy()
        for _ in range(LAWSON_ROUNDS):
            err = np.abs(self.fit_error(params, self.target))
            weight = np.where(self.in_band, weight * (err + 0.01), weight)
            weight = np.where(self.in_band, weight / weight[self.in_band].mean(), weight)
            params = optimize.least_squares(self.residual, params, args=(self.target, weight),
                                            method="trf", max_nfev=300, xtol=1e-10, ftol=1e-10).x
            worst = self.worst(params)
            if worst < best_worst:
                best, best_worst = params, worst
        return best


_SEARCH = np.array([(d0, d1, d2) for d0 in range(-3, 4) for d1 in range(-3, 4) for d2 in range(-3, 4)])
_GAIN_TOL_DB = 0.0005


def _quantise(problem: _Problem, secs, refit: bool = True, search: bool = True) -> tuple[Biquad, ...]:
    """Integer sections for the fitted float ``secs``: quantise each denominator, fit the zeros again against those
    integers, then choose each numerator among the roundings within ±3 LSB of the float one (rescaled for unit
    gain at 1 kHz): the one with the smallest largest deviation in the band, the sections after it still in
    float; for the last section only among those that give the integer cascade unit gain at 1 kHz."""
    from slm.weighting_design import Biquad

    s = 2.0**BIQUAD_Q
    a_ints = [Biquad.quantise(b, a).a for b, a in secs]
    if refit:
        secs = problem.refit_zeros(secs, a_ints)
    z = np.concatenate([[problem.zr], problem.zf[problem.in_band]])  # 1 kHz first, then the band
    target = problem.target[problem.in_band]
    done = np.ones_like(z)  # response of the integer sections chosen so far
    out: list[Biquad] = []
    for k, ((b, _), a_int) in enumerate(zip(secs, a_ints)):
        den = 1 + a_int[0] / s * z + a_int[1] / s * z * z
        rest = np.ones_like(z)
        for bf, af in secs[k + 1:]:
            rest = rest * (bf[0] + bf[1] * z + bf[2] * z * z) / (af[0] + af[1] * z + af[2] * z * z)
        g = abs((b[0] + b[1] * z[0] + b[2] * z[0] ** 2) / den[0] * done[0])
        cand = np.round(b / g * s).astype(np.int64) + _SEARCH
        num = (cand[:, :1] + cand[:, 1:2] * z + cand[:, 2:3] * z * z) / s
        h = np.abs(done * num / den * rest)
        gain_db = 20 * np.log10(h[:, 0])
        if not search:  # plain rounding: only the gain at 1 kHz, the fewest LSB from the float numerator
            dev = np.abs(gain_db) + np.abs(_SEARCH).sum(axis=1) * 1e-9
        elif k == len(secs) - 1:
            dev = np.max(np.abs(20 * np.log10(h[:, 1:]) - target), axis=1)
            dev = np.where(np.abs(gain_db) <= _GAIN_TOL_DB, dev, np.inf)
            if not np.isfinite(dev).any():  # cannot happen within ±3 LSB, but then take the best gain
                dev = np.abs(gain_db)
        else:  # the last section makes up the gain: compare shapes, normalised at 1 kHz
            dev = np.max(np.abs(20 * np.log10(h[:, 1:] / h[:, :1]) - target), axis=1) + np.abs(gain_db) / 20
        best = cand[int(np.argmin(dev))]
        bq = Biquad((int(best[0]), int(best[1]), int(best[2])), a_int, BIQUAD_Q)
        done = done * (best[0] + best[1] * z + best[2] * z * z) / s / den
        out.append(bq)
    return tuple(out)


def _groups(roots: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ways to split 4 roots (conjugates kept together) into two pairs."""
    roots = np.sort_complex(roots)
    out = []
    for i in range(1, 4):
        first = np.array([roots[0], roots[i]])
        second = np.delete(roots, [0, i])
        if abs(first.imag.sum()) < 1e-9 and abs(second.imag.sum()) < 1e-9:
            out.append((first, second))
    return out


def _pair(problem: _Problem, secs) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two fitted sections with their poles and zeros paired and ordered for the least rounding noise.

    The cascade's magnitude depends only on its poles and zeros, not on which section holds which: a fit may
    put a pole near z = 1 in one section and the zeros near z = 1 in the other, and the first section's rounding
    error, amplified by its 1/A(z), then meets the second's full low-frequency gain (-77 dBFS of noise through
    the Z chain for the INMP441 at 48 kHz instead of -110). Every pairing and order that keeps one pole near
    z = 1 per section and section 1's L1 norm within the design limit is scored by its noise gain at the Z output
    (the DC blocker included), and the quietest taken.
    """
    from scipy import signal

    dc = _committed_design(problem.rate).dc.sos()
    zr = problem.zr
    # A nearly real pair (a double zero near z = 1 comes out as one) counts as two real roots: they may then go
    # to different sections; the zeros are fitted again after quantisation anyway (``refit_zeros``).
    def roots(c):
        r = np.roots(c)
        return r.real if np.max(np.abs(r.imag)) < SNAP_IMAG else r

    poles = np.concatenate([roots(a) for _, a in secs])
    zeros = np.concatenate([roots(b) for b, _ in secs])
    x = np.zeros(1 << 17)
    x[0] = 1.0
    best, best_noise = list(secs), math.inf
    for pp in _groups(poles):
        for zz in _groups(zeros):
            cand = []
            for p, z in zip(pp, zz):
                a, b = np.real(np.poly(p)), np.real(np.poly(z))
                b = b * abs(np.polyval(a, zr) / np.polyval(b, zr))
                cand.append((b, a))
            for order in (cand, cand[::-1]):
                if min(a.sum() for _, a in order) < 0.9 * problem.den_dc_min or problem.l1(order[:1]) > L1_DESIGN:
                    continue
                noise = 0.0
                for k, (_, a) in enumerate(order):
                    sos = [np.array([1.0, 0, 0, *a])] + [np.concatenate([b2, a2]) for b2, a2 in order[k + 1:]]
                    noise += float(np.sum(signal.sosfilt(np.vstack([*sos, dc]), x) ** 2))
                if noise < best_noise - 1e-9:
                    best, best_noise = order, noise
    return best


@lru_cache(maxsize=64)
def _design_cached(points: tuple[tuple[float, float], ...], rate: int, max_boost_db: float,
                   radius_limit: float, max_sections: int) -> tuple[Biquad, ...]:
    problem = _Problem(points, rate, max_boost_db, radius_limit - _RADIUS_MARGIN)

    def flatness(secs) -> float:
        """Largest in-band deviation of the integer sections; infinite when they break a limit."""
        if _limit_problems(secs, rate, max_boost_db, radius_limit):
            return math.inf
        return _max_residual(points, secs, rate, LOW_BAND_EDGE_HZ, rate / 3, max_boost_db)[0]

    # The Lawson rounds and the zeros' refit weigh flatness more than the L1 norm: the plain fit is the fallback.
    single = problem.fit_one(problem.target)
    one = min((_quantise(problem, problem.sections(problem.lawson(single))),
               _quantise(problem, problem.sections(single), refit=False),
               _quantise(problem, problem.sections(single), refit=False, search=False)), key=flatness)
    one_db = flatness(one)
    if max_sections == 1 or one_db <= TARGET_DB:
        return one
    two = _quantise(problem, _pair(problem, problem.sections(problem.fit_two())))
    return two if flatness(two) < one_db else one


def design_eq(response_points: Iterable[Sequence[float]], rate: int, max_boost_db: float = 12.0,
              radius_limit: float | None = None, max_sections: int = MAX_SECTIONS) -> tuple[Biquad, ...]:
    """Q14 sections E, applied in order, with R + 20·lg|E| ≈ 0 dB from 50 Hz to rate/3 and |E(1 kHz)| = 1: one
    section when one is within ``TARGET_DB``, else two (see the module doc).

    response_points: (frequency Hz, dB re 1 kHz), frequencies increasing. Deterministic; results are cached.
    Takes 1-5 s on a slow machine. The caller checks the result with ``eq_report`` and ``check`` (the design
    aims inside the limits, but only the report of the integer coefficients is evidence).
    """
    points = tuple((float(f), float(d)) for f, d in response_points)
    radius_limit = max_pole_radius(rate) if radius_limit is None else radius_limit
    if len(points) < 2:
        raise ValueError("need at least two response points")
    if not 0 < radius_limit < 1:
        raise ValueError(f"radius_limit must be in (0, 1), got {radius_limit}")
    if max_sections not in (1, 2):
        raise ValueError(f"max_sections must be 1 or 2, got {max_sections}")
    return _design_cached(points, int(rate), float(max_boost_db), float(radius_limit), int(max_sections))
