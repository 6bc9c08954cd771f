"""Design, quantise and verify the firmware's A, C and Z weighting filters; write firmware/weighting_coeffs.py.

The analog weightings of IEC 61672-1 Annex E are split into parts that map well onto 32-bit integer code:

    Z = DC            (DC blocker: first-order high-pass, pole 1 - 2**-S, well below 1 Hz)
    C = Z · HP(f1)² · H4 · gC
    A = C · HP(f2) · HP(f3) · gA/gC

HP(fc) is the bilinear transform of s/(s + 2π fc), built in the firmware as ``e = x - u; u += k·e`` which
is (1 - z⁻¹)/(1 - (1-k) z⁻¹): exactly the bilinear high-pass up to a constant gain.  The bilinear
transform is accurate for these low corner frequencies (f1 = 20.6 Hz, f2 = 107.7 Hz, f3 = 737.9 Hz).

H4 stands for the double pole at f4 = 12194 Hz, where the bilinear transform fails (−1.22 dB at 10 kHz at
48 kHz).  It is a biquad fitted in magnitude, at each sample rate, to what C still needs after the
high-pass sections, from 10 Hz to one third of the sample rate (weighted less up to 0.45·fs).  Phase is not
specified by IEC 61672-1 for the weightings; magnitude is.

Coefficients are quantised (k = K / 2**Q with 15 <= log2 K < 16; biquad coefficients in Q``BIQUAD_Q``), the
response of the *quantised* structure is evaluated exactly, and the gain at 1 kHz is returned as a dB
constant that the firmware adds when it turns mean squares into levels (nothing is multiplied per sample).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize, signal

from slm.sim.weighting import F1, F2, F3, F4, design_goal_db  # IEC 61672-1 Annex E: the one implementation

SAMPLE_RATES = (48000, 44100, 32000, 16000)
BLOCK_SAMPLES = {48000: 48, 44100: 45, 32000: 32, 16000: 16}  # ~1 ms blocks that tile 0.1 s exactly
DC_BLOCK_SHIFT = {48000: 14, 44100: 14, 32000: 13, 16000: 12}  # DC blocker pole at 1 - 2**-S (0.4-0.6 Hz)
BIQUAD_Q = 14  # fractional bits of biquad coefficients
INPUT_BITS = 22  # working resolution: the 24-bit microphone word is shifted to 22 bits (2 bits headroom)
TAU_FAST = 0.125
TAU_SLOW = 1.0
HIST_SAMPLE_BLOCKS = 10  # LAF enters the percentile histogram every 10 blocks (~10 ms)
HIST_BINS = 1400  # 0.1 dB bins of 10·lg(E) ...
HIST_BASE = 10000  # ... from 100.00 dB (E in 2**-30 block-sum units: below 1 LSB rms) to 240 dB (above full scale)
SETTLE_TAUS = 5  # minima and percentiles wait 5 time constants after a reset (the weighting starts from rest)
OUT_OF_BAND_WEIGHT = 0.0  # fs/3 .. 0.45 fs only has to meet class 1 limits, checked after the fit


def third_octave_frequencies(low: float = 10.0, high: float = 20000.0) -> np.ndarray:
    """Exact base-10 third-octave mid-band frequencies 1000·10**(n/10) Hz within [low, high] (nominal bands)."""
    n = np.arange(-20, 14)
    f = 1000.0 * 10.0 ** (n / 10.0)
    return f[(f >= low * 0.99) & (f <= high * 1.01)]


GOALS = {w: functools.partial(design_goal_db, w) for w in "ACZ"}  # design goal in dB, by weighting


def bilinear_highpass_k(fc: float, fs: int) -> float:
    """k = 1 - p of the bilinear transform of s/(s + 2π fc): p = (2fs - ω)/(2fs + ω)."""
    w = 2 * math.pi * fc
    return 2 * w / (2 * fs + w)


@dataclass
class HighPass:
    """First-order section ``e = x - u; u += K·e / 2**Q`` (transfer (1 - z⁻¹)/(1 - (1-k) z⁻¹), k = K/2**Q)."""

    K: int
    Q: int

    @classmethod
    def quantise(cls, k: float) -> "HighPass":
        Q = 15 + math.ceil(-math.log2(k))
        K = round(k * 2**Q)
        if K >= 2**16:  # k just below a power of two
            Q -= 1
            K = round(k * 2**Q)
        assert 2**14 <= K < 2**16 and 12 <= Q <= 29, (k, K, Q)
        return cls(K, Q)

    @property
    def k(self) -> float:
        return self.K / 2**self.Q

    def sos(self) -> np.ndarray:
        k = self.k
        return np.array([[1.0, -1.0, 0.0, 1.0, -(1 - k), 0.0]])


@dataclass
class Biquad:
    """Direct-form-I biquad with integer coefficients in Q``q``: y = (b·x - a1·y1 - a2·y2) / 2**q."""

    b: tuple[int, int, int]
    a: tuple[int, int]  # a1, a2
    q: int = BIQUAD_Q

    @classmethod
    def quantise(cls, b, a, q: int = BIQUAD_Q) -> "Biquad":
        s = 2**q
        return cls(tuple(round(v * s) for v in b), (round(a[1] * s), round(a[2] * s)), q)

    def sos(self) -> np.ndarray:
        s = 2.0**self.q
        return np.array([[self.b[0] / s, self.b[1] / s, self.b[2] / s, 1.0, self.a[0] / s, self.a[1] / s]])

    def ints(self) -> list[int]:
        return [*self.b, *self.a]


@dataclass
class RateDesign:
    """Everything the firmware needs for one sample rate, and the evidence that it is right."""

    fs: int
    block: int
    dc: HighPass
    hp_c: list[HighPass]  # the two f1 sections of C
    h4: Biquad
    hp_a: list[HighPass]  # f2 and f3 sections, A only
    gain_db: dict[str, float] = field(default_factory=dict)  # 20 lg |H(1 kHz)| of each quantised chain
    alpha_fast: tuple[int, int] = (0, 0)  # (A, QA) with α = A / 2**QA
    alpha_slow: tuple[int, int] = (0, 0)

    def chain_sos(self, weighting: str) -> np.ndarray:
        parts = [self.dc.sos()]
        if weighting in "AC":
            parts += [h.sos() for h in self.hp_c] + [self.h4.sos()]
        if weighting == "A":
            parts += [h.sos() for h in self.hp_a]
        return np.vstack(parts)

    def response_db(self, weighting: str, f) -> np.ndarray:
        """Magnitude of the quantised chain at f (Hz), normalised like the firmware (0 dB at 1 kHz = goal)."""
        _, h = signal.sosfreqz(self.chain_sos(weighting), worN=np.asarray(f, dtype=float), fs=self.fs)
        return 20 * np.log10(np.abs(h)) - self.gain_db[weighting]

    def deviation_db(self, weighting: str, f) -> np.ndarray:
        return self.response_db(weighting, f) - GOALS[weighting](f)


def _alpha(tau: float, block: int, fs: int) -> tuple[int, int]:
    """Block-rate exponential weight α = 1 - exp(-T/τ) as A/2**QA with 2**14 <= A < 2**15."""
    alpha = -math.expm1(-block / (fs * tau))
    qa = 14 + math.ceil(-math.log2(alpha))
    a = round(alpha * 2**qa)
    if a >= 2**15:
        qa -= 1
        a = round(alpha * 2**qa)
    return a, qa


def _hp_h(k: float, zf: np.ndarray) -> np.ndarray:
    return (1 - k) * (1 - zf) / (1 - (1 - k) * zf)


def _fit_h4_and_a_sections(fs: int, fixed_c_sos: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Fit the H4 biquad and the f2, f3 high-pass poles jointly so that A and C, each normalised at 1 kHz,
    follow their design goals from 10 Hz to fs/3 (least squares in dB; weighted less up to 0.45·fs)."""
    f_in = np.geomspace(10.0, fs / 3, 300)
    f_out = np.linspace(fs / 3, 0.45 * fs, 40)[1:]
    f = np.concatenate([f_in, f_out, [1000.0]])
    weight = np.concatenate([np.ones_like(f_in), np.full_like(f_out, OUT_OF_BAND_WEIGHT), [0.0]])
    _, h_fixed = signal.sosfreqz(fixed_c_sos, worN=f, fs=fs)
    fixed_db = 20 * np.log10(np.abs(h_fixed))
    zf = np.exp(-2j * np.pi * f / fs)

    def residual(p):
        b0, b1, b2, a1, a2, k2, k3 = p
        h4 = 20 * np.log10(np.abs((b0 + b1 * zf + b2 * zf * zf) / (1 + a1 * zf + a2 * zf * zf)))
        c = fixed_db + h4
        a = c + 20 * np.log10(np.abs(_hp_h(k2, zf) * _hp_h(k3, zf)))
        rc = (c - c[-1] - GOALS["C"](f)) * weight
        ra = (a - a[-1] - GOALS["A"](f)) * weight
        poles = np.roots([1, a1, a2])
        penalty = np.maximum(np.abs(poles) - 0.9, 0).sum() * 1e3
        return np.concatenate([rc, ra, [penalty]])

    w4 = 2 * math.pi * F4
    b0, a0 = signal.bilinear([w4**2], [1, 2 * w4, w4**2], fs)
    p0 = [b0[0], b0[1], b0[2], a0[1], a0[2], bilinear_highpass_k(F2, fs), bilinear_highpass_k(F3, fs)]
    fit = optimize.least_squares(residual, p0, method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=40000)
    b = np.array(fit.x[:3])
    a = np.array([1.0, fit.x[3], fit.x[4]])
    # Magnitude only matters: reflect zeros outside the unit circle inside (changes gain by a constant).
    zeros = np.roots(b)
    gain = b[0]
    for i, z in enumerate(zeros):
        if abs(z) > 1:
            gain *= abs(z)
            zeros[i] = 1 / np.conj(z)
    b = np.real(gain * np.poly(zeros))
    # Unit gain at DC keeps the signal's scale through the section.
    b = b * (np.sum(a) / np.sum(b))
    return b, a, float(fit.x[5]), float(fit.x[6])


def design_rate(fs: int) -> RateDesign:
    dc = HighPass(2**15, 15 + DC_BLOCK_SHIFT[fs])
    hp1 = HighPass.quantise(bilinear_highpass_k(F1, fs))
    fixed = np.vstack([dc.sos(), hp1.sos(), hp1.sos()])
    b, a, k2, k3 = _fit_h4_and_a_sections(fs, fixed)
    hp_a = [HighPass.quantise(k2), HighPass.quantise(k3)]
    design = RateDesign(fs=fs, block=BLOCK_SAMPLES[fs], dc=dc, hp_c=[hp1, hp1], h4=Biquad.quantise(b, a), hp_a=hp_a)
    design.gain_db = chain_gain_db(design)
    design.alpha_fast = _alpha(TAU_FAST, design.block, fs)
    design.alpha_slow = _alpha(TAU_SLOW, design.block, fs)
    return design


def log_table() -> list[int]:
    """round(1000·lg(m/256)) for m = 256..511: 10·lg in 0.01 dB of a 9-bit mantissa."""
    return [round(1000 * math.log10(m / 256)) for m in range(256, 512)]


def impulse_l1(sos: np.ndarray, n: int = 1 << 16) -> float:
    """Sum of |h[n]|: the largest output magnitude for any input bounded by 1 (a range bound)."""
    x = np.zeros(n)
    x[0] = 1.0
    return float(np.abs(signal.sosfilt(sos, x)).sum())


EQ_L1_BUDGET = 4.0  # a microphone equalisation biquad may amplify the worst-case signal at most this much


def node_bounds(design: RateDesign, eq_l1: float = EQ_L1_BUDGET) -> dict[str, float]:
    """Largest magnitude each signal node can reach for any input within ±2**(INPUT_BITS-1) (sum of |h[n]| of the
    chain up to the node), with the microphone equalisation's worst case eq_l1 in front of the DC blocker. +2 LSB
    covers the roundings."""
    full = 2 ** (INPUT_BITS - 1)
    chain = np.vstack([design.dc.sos()])
    out = {"x": full, "dc_in": full * eq_l1 + 2, "z": impulse_l1(chain) * full * eq_l1 + 2}
    for name, sos in (("c1", design.hp_c[0].sos()), ("c2", design.hp_c[1].sos()), ("c", design.h4.sos()),
                      ("a2", design.hp_a[0].sos()), ("a", design.hp_a[1].sos())):
        chain = np.vstack([chain, sos])
        out[name] = impulse_l1(chain) * full * eq_l1 + 2
    return out


def range_proof(design: RateDesign, eq_l1: float = EQ_L1_BUDGET) -> dict[str, float]:
    """log2 of the largest magnitude of every value the kernel keeps in a machine word, from the node bounds.
    Everything must stay below 31 (signed 32-bit words). See docs/measurement.md, "proof of range"."""
    nb = node_bounds(design, eq_l1)
    log2 = math.log2
    words: dict[str, float] = {}
    # high-pass sections: input v, e = v - u (|u| <= |v| max), products K·(e >> 12), K·(e & 0xFFF), t
    for name, sec, vin in (("dc", design.dc, nb["dc_in"]), ("c1", design.hp_c[0], nb["z"]),
                           ("c2", design.hp_c[1], nb["c1"]), ("a2", design.hp_a[0], nb["c"]),
                           ("a3", design.hp_a[1], nb["a2"])):
        e = 2 * vin
        words[f"{name} e"] = log2(e)
        words[f"{name} K*eh"] = log2(sec.K * (e / 2**12 + 1))
        words[f"{name} t"] = log2(2 ** sec.Q + sec.K * 2**12 + 2 ** sec.Q)
    # biquad: partial sums of coefficient x high and low parts
    coef_sum = sum(abs(v) for v in design.h4.ints())
    vmax = max(nb["c2"], nb["c"])
    words["h4 sh"] = log2(coef_sum * (vmax / 2**12 + 1))
    words["h4 sl"] = log2(coef_sum * 2**12 + 2**BIQUAD_Q)
    # squares summed over a block: hh, hl, ll
    ymax = max(nb["a"], nb["c"], nb["z"])
    words["square hh sum"] = log2(design.block * (ymax / 2**12 + 1) ** 2)
    words["square hl sum"] = log2(design.block * (ymax / 2**12 + 1) * 2**12)
    words["square ll sum"] = log2(design.block * 2**24)
    # block-rate limb arithmetic: products of alpha (< 2**15) and 15-bit limbs, plus a carry
    words["alpha x limb"] = log2(2**15 * 2**15 + 2**16)
    return words


def generate_module(designs: dict[int, RateDesign]) -> str:
    """The text of firmware/weighting_coeffs.py."""
    lines = [
        '"""Generated by `make coeffs` (host/weighting_design.py): integer weighting filters per sample rate. Do not edit."""',
        "",
        "from array import array",
        "",
        "# Per rate: block samples, DC blocker (K, Q), C high-passes [(K, Q), (K, Q)], H4 biquad (b0, b1, b2, a1, a2),",
        "# A high-passes [(K, Q), (K, Q)], chain gain at 1 kHz in dB {A, C, Z}, alpha fast (A, QA), alpha slow (A, QA).",
        f"BIQUAD_Q = {BIQUAD_Q}",
        f"INPUT_BITS = {INPUT_BITS}",
        f"HIST_SAMPLE_BLOCKS = {HIST_SAMPLE_BLOCKS}",
        f"HIST_BINS = {HIST_BINS}",
        f"HIST_BASE = {HIST_BASE}",
        f"SETTLE_TAUS = {SETTLE_TAUS}",
        f"TAU_FAST = {TAU_FAST}",
        f"TAU_SLOW = {TAU_SLOW}",
        "RATES = {",
    ]
    for fs, d in designs.items():
        lines.append(f"    {fs}: {{")
        lines.append(f"        'block': {d.block},")
        lines.append(f"        'dc': ({d.dc.K}, {d.dc.Q}),")
        lines.append(f"        'hp_c': ({', '.join(f'({h.K}, {h.Q})' for h in d.hp_c)}),")
        lines.append(f"        'h4': ({', '.join(str(v) for v in d.h4.ints())}),")
        lines.append(f"        'hp_a': ({', '.join(f'({h.K}, {h.Q})' for h in d.hp_a)}),")
        gains = ", ".join(f"'{w}': {d.gain_db[w]!r}" for w in "ACZ")
        lines.append(f"        'gain_db': {{{gains}}},")
        lines.append(f"        'alpha_fast': {d.alpha_fast},")
        lines.append(f"        'alpha_slow': {d.alpha_slow},")
        lines.append("    },")
    lines.append("}")
    lines.append("")
    lines.append("# round(1000 * log10(m / 256)) for m = 256..511 (10 lg in 0.01 dB of a 9-bit mantissa)")
    table = log_table()
    lines.append("LOG_TABLE = array('H', (")
    for i in range(0, 256, 16):
        lines.append("    " + ", ".join(str(v) for v in table[i:i + 16]) + ",")
    lines.append("))")
    lines.append("")
    return "\n".join(lines)


def check_design(d: RateDesign) -> list[str]:
    """Problems with a design: class 1 limits, the ±0.1 dB bar to fs/3, ranges. Empty when all is well."""
    from slm.iec61672 import class1_limits  # late import keeps this module importable alone

    problems = []
    for w in "AC":
        f = third_octave_frequencies(10, min(20000, 0.45 * d.fs))
        dev = d.deviation_db(w, f)
        for fi, di in zip(f, dev):
            lo, hi = class1_limits(fi)
            if not lo <= di <= hi:
                problems.append(f"{d.fs} Hz {w} at {fi:.1f} Hz: {di:+.3f} dB outside class 1 ({lo}, {hi})")
        fb = np.geomspace(10, d.fs / 3, 400)
        worst = float(np.max(np.abs(d.deviation_db(w, fb))))
        if worst > 0.1:
            problems.append(f"{d.fs} Hz {w}: |deviation| {worst:.3f} dB > 0.1 dB below fs/3")
    for word, bits in range_proof(d).items():
        if bits >= 31:
            problems.append(f"{d.fs} Hz: {word} may reach 2**{bits:.2f}, beyond a signed 32-bit word")
    return problems


def design_all() -> dict[int, RateDesign]:
    return {fs: design_rate(fs) for fs in SAMPLE_RATES}


def design_from_coeffs(fs: int, entry: dict) -> RateDesign:
    """The RateDesign that one rate's entry of the generated module describes (what ships, not a fresh fit)."""
    (b0, b1, b2, a1, a2) = entry["h4"]
    return RateDesign(fs=fs, block=entry["block"], dc=HighPass(*entry["dc"]),
                      hp_c=[HighPass(*hp) for hp in entry["hp_c"]], h4=Biquad((b0, b1, b2), (a1, a2)),
                      hp_a=[HighPass(*hp) for hp in entry["hp_a"]], gain_db=dict(entry["gain_db"]),
                      alpha_fast=tuple(entry["alpha_fast"]), alpha_slow=tuple(entry["alpha_slow"]))


def committed_designs() -> dict[int, RateDesign]:
    """The designs in the committed firmware/weighting_coeffs.py, per rate."""
    from slm.firmware.weighting_coeffs import RATES

    return {fs: design_from_coeffs(fs, entry) for fs, entry in RATES.items()}


def chain_gain_db(d: RateDesign) -> dict[str, float]:
    """20 lg |H(1 kHz)| of each quantised chain (the constants the firmware adds to its levels)."""
    out = {}
    for w in "ACZ":
        _, h = signal.sosfreqz(d.chain_sos(w), worN=[1000.0], fs=d.fs)
        out[w] = float(20 * np.log10(np.abs(h[0])))
    return out


def firmware_coeffs_path() -> Path:
    from slm.resources import firmware_dir

    return firmware_dir() / "weighting_coeffs.py"


def main() -> None:
    designs = design_all()
    problems = [p for d in designs.values() for p in check_design(d)]
    if problems:
        raise SystemExit("design failed:\n" + "\n".join(problems))
    path = firmware_coeffs_path()
    path.write_text(generate_module(designs))
    for fs, d in designs.items():
        fb = np.geomspace(10, fs / 3, 400)
        print(f"{fs}: max |dev| A {np.abs(d.deviation_db('A', fb)).max():.4f} dB, "
              f"C {np.abs(d.deviation_db('C', fb)).max():.4f} dB to {fs / 3:.0f} Hz; largest word 2^"
              f"{max(range_proof(d).values()):.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
