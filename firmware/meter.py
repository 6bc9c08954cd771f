"""The sound level meter: owns the kernel's buffers, closes intervals, and turns integer results into levels.

``Meter(rate)`` allocates everything once (about 13 KB of arrays, see docs/performance.md); ``process(words,
nblocks)`` runs whole blocks of 32-bit I2S words and allocates nothing; ``close_interval()`` (once per interval,
allowed to allocate) returns the interval's levels and folds them into the running totals kept for ``totals()``.

Levels are dB re 20 µPa: the microphone sensitivity (dBFS for 94 dB SPL, full-scale-sine convention) and the
calibration offset are applied here, when mean squares become levels, never in the filter coefficients.
"""

import math
from array import array

import meter_kernel as K
from weighting_coeffs import (BIQUAD_Q, HIST_BASE, HIST_BINS, HIST_SAMPLE_BLOCKS, INPUT_BITS, LOG_TABLE, RATES,
                              SETTLE_TAUS, TAU_FAST, TAU_SLOW)

LEVEL_KEYS = ("LAeq", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax", "LASmin", "LCpeak", "LZpeak", "LAE",
              "LA10", "LA50", "LA90")
WORD_BITS = 32
# 10·lg of the mean square of a full-scale sine in 22-bit units: (2**21)**2 / 2
_FULL_SCALE_SINE_DB = 10 * math.log10(2.0 ** (2 * (INPUT_BITS - 1)) / 2)
_LIMB_DB = 10 * math.log10(2.0 ** 30)  # E carries 30 fraction bits
SEED_BLOCKS = 20  # the DC blocker's seed is the mean of at most this many blocks of the first words after a reset


def _native_process_blocks():
    """meter_fast.process_blocks, the kernel in C (firmware/natmod, deployed as meter_fast.mpy for the board's
    architecture), when it loads here and was built for this kernel's layout and log table; else None."""
    try:
        import meter_fast  # type: ignore[import-not-found]
    except (ImportError, ValueError, OSError):  # not deployed, or built for another architecture or .mpy version
        return None
    if getattr(meter_fast, "LAYOUT", None) != (K.CFG_SIZE, K.ST_SIZE, K.SUMS_SIZE, K.ACC_SIZE, sum(LOG_TABLE)):
        return None
    return meter_fast.process_blocks


# The kernel every Meter runs, chosen once at import: the native one when it can be loaded, else the viper one
# (meter_kernel.process_blocks). Both give the same state, word for word (tests/test_fast_kernel.py).
_native = _native_process_blocks()
KERNEL = "viper" if _native is None else "native"
process_blocks = K.process_blocks if _native is None else _native


def _limbs_to_int(a, off, n):
    v = 0
    for k in range(n - 1, -1, -1):
        v = (v << 15) + a[off + k]
    return v


def _db(power):
    return 10 * math.log10(power) if power > 0 else None


def _round(v):
    return None if v is None else round(v, 3)


class Meter:
    """An IEC 61672-1 class 1 digital meter for one microphone channel.

    rate: 48000, 44100, 32000 or 16000. sensitivity_dbfs: dBFS of a 94 dB SPL sine (INMP441: -26).
    calibration_db: added to every level. eq: None, or the microphone equaliser: one or two integer biquads
    (b0, b1, b2, a1, a2) in Q``BIQUAD_Q``, flat (5 or 10 integers), applied in that order.
    input_shift: right shift from the I2S word to the 22-bit sample (32 - 22 = 10 for 24-bit microphones).
    underrange_db: LAF below this (dB) raises the under-range flag; default 94 dB below full scale.
    """

    def __init__(self, rate=48000, sensitivity_dbfs=-26.0, calibration_db=0.0, eq=None, input_shift=WORD_BITS - INPUT_BITS,
                 underrange_db=None):
        if rate not in RATES:
            raise ValueError("unsupported sample rate %d" % rate)
        d = RATES[rate]  # type: dict
        self.rate = rate
        self.block = d["block"]
        self.gain_db = d["gain_db"]
        self.sensitivity_dbfs = sensitivity_dbfs
        self.calibration_db = calibration_db
        self.cfg = array("i", [0] * K.CFG_SIZE)
        self.st = array("i", [0] * K.ST_SIZE)
        self.sums = array("i", [0] * K.SUMS_SIZE)
        self.acc = array("i", [0] * (K.ACC_SIZE + HIST_BINS))
        self.total_hist = array("i", [0] * HIST_BINS)
        c = self.cfg
        if not WORD_BITS - INPUT_BITS <= input_shift <= 16:
            raise ValueError("input_shift must be 10..16, got %r" % (input_shift,))
        c[K.C_SHIFT] = input_shift
        # The sample keeps the word's top 32 - input_shift bits: full scale 2**21 at the usual 10; a larger shift
        # undoes data that arrived shifted left, whose top bits are lost, so its largest value is lower and
        # louder sound wraps round to the other sign. Overload: within 64 (0.0003 dB of full scale) of the
        # largest value, or (only when bits were lost) a step of more than 3/4 of the sample's span, which
        # only a wrap makes: clipping then shows as wrapped samples, not as samples stuck at full scale.
        top = 1 << (WORD_BITS - 1 - input_shift)
        c[K.C_OVERLOAD] = top - 64
        c[K.C_JUMP] = 3 * top // 2 if input_shift > WORD_BITS - INPUT_BITS else 1 << INPUT_BITS
        c[K.C_BQ] = BIQUAD_Q
        sections = (d["dc"],) + tuple(d["hp_c"]) + tuple(d["hp_a"])
        for i, (k, q) in enumerate(sections):
            c[K.C_DC + 2 * i] = k
            c[K.C_DC + 2 * i + 1] = q
        for i, v in enumerate(d["h4"]):
            c[K.C_H4 + i] = v
        if eq is not None:
            if len(eq) not in (5, 10):
                raise ValueError("eq must be 5 or 10 integers (one or two biquads), got %d" % len(eq))
            c[K.C_EQ_ON] = len(eq) // 5
            for i, v in enumerate(eq):
                c[(K.C_EQ if i < 5 else K.C_EQ2 - 5) + i] = v
        c[K.C_BLOCK] = self.block
        c[K.C_ALPHA_F], c[K.C_ALPHA_F + 1] = d["alpha_fast"]
        c[K.C_ALPHA_S], c[K.C_ALPHA_S + 1] = d["alpha_slow"]
        c[K.C_SETTLE_F] = self._blocks(SETTLE_TAUS * TAU_FAST)
        c[K.C_SETTLE_S] = self._blocks(SETTLE_TAUS * TAU_SLOW)
        c[K.C_HIST_EVERY] = HIST_SAMPLE_BLOCKS
        c[K.C_HIST_BASE] = HIST_BASE
        c[K.C_HIST_BINS] = HIST_BINS
        if underrange_db is None:
            underrange_db = self.full_scale_db() - 94.0
        self.underrange_db = underrange_db
        c[K.C_UNDER] = int(100 * (underrange_db - self._offset_db("A") + _LIMB_DB + 10 * math.log10(self.block)))
        self.reset()

    def _blocks(self, seconds):
        return int(math.ceil(seconds * self.rate / self.block))

    def full_scale_db(self):
        """Level (dB) of a full-scale sine: 94 dB minus the sensitivity in dBFS, plus the calibration."""
        return 94.0 - self.sensitivity_dbfs + self.calibration_db

    def _offset_db(self, weighting):
        """dB to add to 10·lg(mean square in 22-bit units²) to get the level with this weighting."""
        return self.full_scale_db() - _FULL_SCALE_SINE_DB - self.gain_db[weighting]

    def reset(self):
        """Start from rest: filters, time weightings, interval and totals; the next ``process`` seeds the DC
        blocker (``seed_filters``) on its words."""
        for arr in (self.st, self.sums, self.acc):
            for i in range(len(arr)):
                arr[i] = 0
        self.acc[K.HIST_PHASE] = HIST_SAMPLE_BLOCKS
        self.seeded = False
        self.clear_totals()

    def seed_filters(self, words, nblocks):
        """Start the DC blocker (and the equaliser before it) settled on the mean of the first
        min(nblocks, SEED_BLOCKS) blocks of ``words`` (20 ms at 48 kHz: a whole period of 50 Hz, so little of a
        low tone is taken for DC), as if that level had always been there. From rest, a microphone's DC offset
        (the SPH0645's is 3 % of full scale) is a step that the blocker takes seconds to remove (time constant
        2**14 / rate), and its decay lifts the first second's Z and C levels (+0.26 dB LCeq on an 80 dB tone).
        Once per reset; may allocate."""
        c = self.cfg
        n = min(nblocks, SEED_BLOCKS)
        total = 0
        for b in range(n):
            total += int(K.sample_sum(words, b * self.block, self.block, c[K.C_SHIFT]))
        x = total // (n * self.block)
        st = self.st
        for q, s in ((K.C_EQ, K.ST_EQ), (K.C_EQ2, K.ST_EQ2))[:c[K.C_EQ_ON]]:
            # each equaliser section's state for a constant input x: y = x·B(1) / A(1), rounded
            num = x * (c[q] + c[q + 1] + c[q + 2])
            den = (1 << c[K.C_BQ]) + c[q + 3] + c[q + 4]
            st[s] = st[s + 1] = x
            x = (2 * num + den) // (2 * den)
            st[s + 2] = st[s + 3] = x
        st[K.ST_DC] = x  # DC blocker u = x: integer word x, fraction word 0
        st[K.ST_DC + 1] = 0
        self.seeded = True

    def clear_totals(self):
        """Start the totals again while the filters, time weightings and the interval go on (the device app's
        minute is the totals of the intervals closed since its start)."""
        h = self.total_hist
        for i in range(len(h)):
            h[i] = 0
        self.totals_raw = {  # type: dict
            "leq": [0, 0, 0], "blocks": 0, "fmax": None, "fmin": None, "smax": None, "smin": None,
            "peak_c": 0, "peak_z": 0, "overload": False, "underrange": False, "hist": 0}

    def process(self, words, nblocks):
        """Measure ``nblocks`` blocks (``nblocks * self.block`` 32-bit I2S words from the start of ``words``)."""
        if not self.seeded and nblocks > 0:
            self.seed_filters(words, nblocks)
        process_blocks(words, nblocks, self.st, self.cfg, self.sums, self.acc)

    def interval_blocks(self):
        return self.acc[K.BLOCK_COUNT]

    def levels_db(self):
        """Current LAF, LAS (dB, None at digital silence): what a display shows now."""
        a = self.acc
        off = self._offset_db("A") - _LIMB_DB - 10 * math.log10(self.block)
        out = []
        for e in (K.EF, K.ES):
            v = _db(_limbs_to_int(a, e, K.E_LIMBS))
            out.append(None if v is None else v + off)
        return out

    def current(self):
        """What a display shows now: LAF, LAS, and LAeq, LCpeak and overload so far in the interval (dB or None)."""
        laf, las = self.levels_db()
        a = self.acc
        n = a[K.BLOCK_COUNT] * self.block
        leq = _limbs_to_int(a, K.LEQ_A, K.SUM_LIMBS)
        la = _db(leq / n) if n else None
        pc = a[K.PEAK_C]
        return {"LAF": laf, "LAS": las, "LAeq": None if la is None else la + self._offset_db("A"),
                "LCpeak": 20 * math.log10(pc) + self._offset_db("C") if pc > 0 else None,
                "overload": a[K.OVERLOADS] > 0}

    def lafmax_total(self):
        """LAFmax since reset over closed intervals (dB or None)."""
        v = self.totals_raw["fmax"]
        return _db(v) + self._offset_db("A") - _LIMB_DB - 10 * math.log10(self.block) if v else None

    def raw_interval(self):
        """The interval's integer results (exact; compared with host/int_model.py)."""
        a = self.acc
        raw = {"blocks": a[K.BLOCK_COUNT], "peak_c": a[K.PEAK_C], "peak_z": a[K.PEAK_Z],
               "overloads": a[K.OVERLOADS], "underranges": a[K.UNDERRANGES], "hist_count": a[K.HIST_COUNT],
               "leq": [_limbs_to_int(a, o, K.SUM_LIMBS) for o in (K.LEQ_A, K.LEQ_C, K.LEQ_Z)],
               "fmax": _limbs_to_int(a, K.FMAX, K.E_LIMBS), "smax": _limbs_to_int(a, K.SMAX, K.E_LIMBS),
               "fmin": _limbs_to_int(a, K.FMIN, K.E_LIMBS) if a[K.FMIN_VALID] else None,
               "smin": _limbs_to_int(a, K.SMIN, K.E_LIMBS) if a[K.SMIN_VALID] else None,
               "ef": _limbs_to_int(a, K.EF, K.E_LIMBS), "es": _limbs_to_int(a, K.ES, K.E_LIMBS),
               "hist": [[b, a[K.HIST + b]] for b in range(HIST_BINS) if a[K.HIST + b]]}
        return raw

    def _results(self, raw, hist, hist_off, hist_count):
        n = raw["blocks"] * self.block
        oa, oc, oz = self._offset_db("A"), self._offset_db("C"), self._offset_db("Z")
        e_off = oa - _LIMB_DB - 10 * math.log10(self.block)
        r = {}
        for key, o, s in (("LAeq", oa, raw["leq"][0]), ("LCeq", oc, raw["leq"][1]), ("LZeq", oz, raw["leq"][2])):
            v = _db(s / n) if n else None
            r[key] = None if v is None else v + o
        for key, e in (("LAFmax", "fmax"), ("LAFmin", "fmin"), ("LASmax", "smax"), ("LASmin", "smin")):
            v = _db(raw[e]) if raw[e] is not None else None
            r[key] = None if v is None else v + e_off
        for key, o, p in (("LCpeak", oc, raw["peak_c"]), ("LZpeak", oz, raw["peak_z"])):
            r[key] = 20 * math.log10(p) + o if p > 0 else None
        r["LAE"] = None if r["LAeq"] is None else r["LAeq"] + 10 * math.log10(n / self.rate)
        for key, pct in (("LA10", 10), ("LA50", 50), ("LA90", 90)):
            r[key] = self._percentile(hist, hist_off, hist_count, pct, e_off)
        for key in LEVEL_KEYS:
            r[key] = _round(r[key])
        r["overload"] = raw["overloads"] > 0
        r["underrange"] = raw["underranges"] > 0
        return r

    def _percentile(self, hist, off, count, pct, e_off):
        """Level exceeded pct % of the time, from the 0.1 dB histogram (bin centre); None below range."""
        if count == 0:
            return None
        need = count * pct / 100.0
        cum = 0
        for b in range(HIST_BINS - 1, -1, -1):
            cum += hist[off + b]
            if cum >= need and cum > 0:
                if b == 0:
                    return None
                return (HIST_BASE + 10 * b + 5) / 100.0 + e_off
        return None

    def close_interval(self):
        """End the interval: its levels (a dict of LEVEL_KEYS, overload, underrange), and start the next one."""
        raw = self.raw_interval()
        res = self._results(raw, self.acc, K.HIST, raw["hist_count"])
        t = self.totals_raw
        for i in range(3):
            t["leq"][i] += raw["leq"][i]
        t["blocks"] += raw["blocks"]
        for key, better in (("fmax", max), ("smax", max), ("fmin", min), ("smin", min)):
            if raw[key] is not None:
                t[key] = raw[key] if t[key] is None else better(t[key], raw[key])
        t["peak_c"] = max(t["peak_c"], raw["peak_c"])
        t["peak_z"] = max(t["peak_z"], raw["peak_z"])
        t["overload"] = t["overload"] or res["overload"]
        t["underrange"] = t["underrange"] or res["underrange"]
        t["hist"] += raw["hist_count"]
        K.add_histogram(self.total_hist, self.acc, HIST_BINS)
        a = self.acc
        for i in range(K.FMAX, K.BLOCKS_RUN):
            a[i] = 0
        for i in (K.HIST_COUNT, K.FMIN_VALID, K.SMIN_VALID, K.BLOCK_COUNT):
            a[i] = 0
        return res

    def totals(self):
        """Levels over everything since reset (closed intervals only)."""
        t = self.totals_raw
        raw = {"blocks": t["blocks"], "peak_c": t["peak_c"], "peak_z": t["peak_z"], "leq": t["leq"],
               "fmax": t["fmax"] or 0, "smax": t["smax"] or 0, "fmin": t["fmin"], "smin": t["smin"],
               "overloads": 1 if t["overload"] else 0, "underranges": 1 if t["underrange"] else 0}
        return self._results(raw, self.total_hist, 0, t["hist"])
