"""Bit-exact model of the firmware's integer pipeline that checks every machine-word value fits in signed 32 bits.

This is an independent re-implementation of firmware/meter_kernel.py, written from the exact arithmetic rather
than from the firmware's word-splitting: a high-pass section is ``u += K·e`` on an unbounded integer, a biquad is
``y = floor((Σ b·x - a1·y1 - a2·y2) / 2**q + 1/2)``, the time weighting is ``E += floor(A·(S·2**30 - E) / 2**QA)`` on an
unbounded integer. Alongside, it computes each intermediate that the firmware keeps in a machine word (split
products, partial sums, limbs) and raises ``RangeError`` if one leaves [-2**31, 2**31). Results identical to the
firmware's on the MicroPython unix port (64-bit words) then mean the firmware is right on a 32-bit ESP32 too.

Plain Python integers per sample (the recursion is sequential and has floors), numpy for input and histograms.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from slm import weighting_design as wd

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
SEED_BLOCKS = 20  # firmware/meter.py: the DC blocker's seed is the mean of the first call's first blocks, at most these


class RangeError(AssertionError):
    """A value the firmware keeps in a machine word would not fit in 32 bits."""


def _w(v: int, what: str) -> int:
    if v < INT32_MIN or v > INT32_MAX:
        raise RangeError(f"{what} = {v} does not fit in int32")
    return v


def _log100(e: int, table: list[int]) -> int:
    """1000·lg(e) in 0.01 dB from a 9-bit mantissa table; 0 for e < 256 (as the firmware's log100)."""
    if e < 256:
        return 0
    msb = e.bit_length() - 1
    m = e >> (msb - 8)
    return (msb * 30103) // 100 + table[m - 256]


def round_half_up(num: int, den: int) -> int:
    """num / den rounded to the nearest integer, halves up (den > 0)."""
    return (2 * num + den) // (2 * den)


class HighPassModel:
    def __init__(self, k: int, q: int):
        self.k, self.q, self.u = k, q, 0  # u in units of 2**-q

    def step(self, x: int) -> int:
        k, q = self.k, self.q
        uh = self.u >> q
        e = _w(x - uh, "high-pass e")
        # the words the kernel computes: t = K·(e & 0xFFF) + l;  w = K·(e >> 12) + (t >> 12);  h += w >> (q - 12)
        t = _w(k * (e & 0xFFF) + (self.u & ((1 << q) - 1)), "high-pass t")
        w = _w(k * (e >> 12) + (t >> 12), "high-pass w")
        _w(uh + (w >> (q - 12)), "high-pass u")
        self.u += k * e
        return e


class BiquadModel:
    def __init__(self, coeffs, q: int):
        self.b0, self.b1, self.b2, self.a1, self.a2 = coeffs
        self.q = q
        self.x1 = self.x2 = self.y1 = self.y2 = 0

    def step(self, x: int) -> int:
        b0, b1, b2, a1, a2 = self.b0, self.b1, self.b2, self.a1, self.a2
        x1, x2, y1, y2 = self.x1, self.x2, self.y1, self.y2
        sh = _w(b0 * (x >> 12) + b1 * (x1 >> 12) + b2 * (x2 >> 12) - a1 * (y1 >> 12) - a2 * (y2 >> 12), "biquad sh")
        sl = _w(b0 * (x & 0xFFF) + b1 * (x1 & 0xFFF) + b2 * (x2 & 0xFFF) - a1 * (y1 & 0xFFF) - a2 * (y2 & 0xFFF),
                "biquad sl")
        _w(((sh & ((1 << (self.q - 12)) - 1)) << 12) + sl + (1 << (self.q - 1)), "biquad low sum")
        y = _w((b0 * x + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2 + (1 << (self.q - 1))) >> self.q, "biquad y")
        self.x2, self.x1, self.y2, self.y1 = x1, x, y1, y
        return y


class IntegerMeterModel:
    """Same construction parameters and raw results as firmware meter.Meter (raw_interval / totals_raw)."""

    def __init__(self, rate: int = 48000, eq=None, input_shift: int = 10, underrange_log100: int | None = None):
        fw = firmware_coefficients()
        d = fw["RATES"][rate]
        self.hist_bins, self.hist_base = fw["HIST_BINS"], fw["HIST_BASE"]
        self.rate, self.block, self.shift = rate, d["block"], input_shift
        top = 1 << (31 - input_shift)  # the sample keeps the word's top 32 - input_shift bits
        self.overload = top - 64
        self.jump = 3 * top // 2 if input_shift > 32 - wd.INPUT_BITS else 1 << wd.INPUT_BITS
        self.x_prev = 0
        self.seeded = False
        self.dc = HighPassModel(*d["dc"])
        self.c1 = HighPassModel(*d["hp_c"][0])
        self.c2 = HighPassModel(*d["hp_c"][1])
        self.h4 = BiquadModel(d["h4"], wd.BIQUAD_Q)
        self.a2 = HighPassModel(*d["hp_a"][0])
        self.a3 = HighPassModel(*d["hp_a"][1])
        eq = list(eq) if eq is not None else []
        if len(eq) not in (0, 5, 10):
            raise ValueError(f"eq must be 5 or 10 integers (one or two biquads), got {len(eq)}")
        self.eq = [BiquadModel(eq[i:i + 5], wd.BIQUAD_Q) for i in range(0, len(eq), 5)]  # in the order applied
        self.alphas = [tuple(d["alpha_fast"]), tuple(d["alpha_slow"])]
        self.settle = [math.ceil(fw["SETTLE_TAUS"] * tau * rate / self.block)
                       for tau in (fw["TAU_FAST"], fw["TAU_SLOW"])]
        self.hist_every = fw["HIST_SAMPLE_BLOCKS"]
        self.table = list(firmware_coefficients()["LOG_TABLE"])
        self.under = underrange_log100 if underrange_log100 is not None else -1
        self.e = [0, 0]  # F and S: LA² block sums with 30 fraction bits
        self.run = 0
        self.hist_phase = self.hist_every
        self.total_hist = np.zeros(self.hist_bins, dtype=np.int64)
        self._new_interval()

    def _seed(self, first_words: list[int]) -> None:
        """The firmware's start (Meter.seed_filters): the DC blocker, and the equaliser's sections before it, settled
        on the mean x of the first call's samples: each section's y = round(x·B(1) / A(1)) feeds the next."""
        y = sum(((w ^ 0x80000000) - 0x80000000) >> self.shift for w in first_words) // len(first_words)
        for e in self.eq:
            x = y
            y = round_half_up(x * (e.b0 + e.b1 + e.b2), (1 << e.q) + e.a1 + e.a2)
            e.x1 = e.x2 = x
            e.y1 = e.y2 = y
        self.dc.u = y << self.dc.q
        self.seeded = True

    def _new_interval(self):
        self.leq = [0, 0, 0]
        self.ext = {"fmax": 0, "smax": 0, "fmin": None, "smin": None}
        self.peak_c = self.peak_z = self.overloads = self.underranges = self.hist_count = self.blocks = 0
        self.hist = np.zeros(self.hist_bins, dtype=np.int64)

    def _sample(self, word: int, sums: list[int]) -> None:
        word = (word ^ 0x80000000) - 0x80000000  # the word as a signed 32-bit value
        x = word >> self.shift
        if x >= self.overload or x < -self.overload:
            self.overloads += 1
        if abs(x - self.x_prev) > self.jump:
            self.overloads += 1
        self.x_prev = x
        for e in self.eq:
            x = e.step(x)
        z = self.dc.step(x)
        c = self.h4.step(self.c2.step(self.c1.step(z)))
        a = self.a3.step(self.a2.step(c))
        for ch, v in enumerate((a, c, z)):
            h, lo = v >> 12, v & 0xFFF
            sums[3 * ch] = _w(sums[3 * ch] + h * h, "square hh sum")
            sums[3 * ch + 1] = _w(sums[3 * ch + 1] + h * lo, "square hl sum")
            sums[3 * ch + 2] = _w(sums[3 * ch + 2] + lo * lo, "square ll sum")
        self.peak_c = max(self.peak_c, abs(c))
        self.peak_z = max(self.peak_z, abs(z))

    def process(self, words, nblocks: int) -> None:
        words = np.asarray(words, dtype=np.int64)
        ws = (words & 0xFFFFFFFF).tolist()  # the unix port's zero-extended view; the kernel masks either way
        if not self.seeded and nblocks > 0:
            self._seed(ws[:min(nblocks, SEED_BLOCKS) * self.block])
        for blk in range(nblocks):
            sums = [0] * 9
            for word in ws[blk * self.block:(blk + 1) * self.block]:
                self._sample(word, sums)
            self._block(sums)

    def _block(self, sums: list[int]) -> None:
        s = []
        for ch in range(3):
            hh, hl, ll = sums[3 * ch:3 * ch + 3]
            v = hh * 2**24 + hl * 2**13 + ll
            if v >= 2**60:
                raise RangeError(f"block sum {v} needs more than 4 limbs")
            s.append(v)
            self.leq[ch] += v
        for w in range(2):
            a, qa = self.alphas[w]
            if not 15 <= qa < 30 or not 0 < a < 2**15:
                raise RangeError(f"alpha {a}/2**{qa} outside the limb code's range")
            d = s[0] * 2**30 - self.e[w]
            top = d >> 75  # the signed top limb of d
            _w(a * top + 2**15, "A·d top limb")
            self.e[w] += (a * d) >> qa
            if self.e[w] < 0 or self.e[w] >= 2**89:
                raise RangeError(f"time-weighted value {self.e[w]} outside 6 limbs")
        self.run = min(self.run + 1, 2**30)
        self.blocks += 1
        ef, es = self.e
        self.ext["fmax"] = max(self.ext["fmax"], ef)
        self.ext["smax"] = max(self.ext["smax"], es)
        if self.run >= self.settle[0]:
            self.ext["fmin"] = ef if self.ext["fmin"] is None else min(self.ext["fmin"], ef)
        if self.run >= self.settle[1]:
            self.ext["smin"] = es if self.ext["smin"] is None else min(self.ext["smin"], es)
        self.hist_phase -= 1
        if self.hist_phase <= 0:
            self.hist_phase = self.hist_every
            if self.run >= self.settle[0]:
                lg = _log100(ef, self.table)
                if lg < self.under:
                    self.underranges += 1
                b = 0 if lg < self.hist_base else min((lg - self.hist_base) // 10, self.hist_bins - 1)
                self.hist[b] += 1
                self.hist_count += 1

    def raw_interval(self) -> dict:
        """The same dict as firmware Meter.raw_interval()."""
        return {"blocks": self.blocks, "peak_c": self.peak_c, "peak_z": self.peak_z, "overloads": self.overloads,
                "underranges": self.underranges, "hist_count": self.hist_count, "leq": list(self.leq),
                "fmax": self.ext["fmax"], "smax": self.ext["smax"], "fmin": self.ext["fmin"],
                "smin": self.ext["smin"], "ef": self.e[0], "es": self.e[1],
                "hist": [[int(b), int(self.hist[b])] for b in np.flatnonzero(self.hist)]}

    def close_interval(self) -> tuple[dict, np.ndarray]:
        raw, hist = self.raw_interval(), self.hist.copy()
        self.total_hist += self.hist
        self._new_interval()
        return raw, hist


@functools.lru_cache(maxsize=1)
def firmware_coefficients() -> dict:
    """The generated firmware/weighting_coeffs.py, read as data (the coefficients the firmware really uses)."""
    from slm.firmware import weighting_coeffs

    return vars(weighting_coeffs)
