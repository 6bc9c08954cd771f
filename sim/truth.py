"""Ground truth of the simulator: what a perfect class 1 sound level meter reports for a sound pressure signal.

Computed from the sound pressure at the microphone (Pa, float64), independently of the firmware, streaming in chunks
with bounded memory::

    meter = TruthMeter(48000, interval_s=1.0)
    for chunk in chunks:            # any chunk sizes
        meter.process(chunk)
    meter.finish()                  # closes the trailing partial interval
    meter.intervals()               # [{"start_s", "end_s", "LAeq", ..., "LA90"}, ...]; dB re 20 µPa, None = silence
    meter.overall()                 # the same keys over everything so far

Frequency weighting (IEC 61672-1:2013 Annex E, ``slm.sim.weighting``).  A and C are FIR filters whose frequency response is the analog
design goal H(jω) itself, complex (magnitude and the analog phase), sampled on a fine grid and transformed to the
impulse response: ``weighting_fir``.  The sampled signal is read as band-limited, so the digital impulse response is
the analog one (causal, decaying with the 20.6 Hz double pole: 0.25 s of taps) plus a short tail *before* t = 0 that
band-limiting a causal response brings.  That tail is kept (``LOOKAHEAD`` = 1024 samples, tapered with a half
Hann window) and the output is re-aligned, so the weighted signal at time t is the analog filter's output at time t
(the meter looks 1024 samples ahead; ``finish`` treats the signal as silent after its end).  Above 0.47·fs the phase
is bent smoothly to 0 at Nyquist (a real Nyquist bin: no discontinuity, short tails); the magnitude is the design
goal up to Nyquist.  Measured deviation from the design goal (``fir_deviation``), 10 Hz to 0.45·fs:
A ≤ 0.0005 dB at 48 kHz (worst at 10 Hz, where A is -70 dB; 0.0011 dB at 16 kHz), C ≤ 0.0001 dB; phase within
0.005° of analog at 48 kHz (0.012° at 16 kHz); 0.45·fs to 0.49·fs within 0.007 dB.
Z is flat: the signal itself (delayed by the same lookahead, so all three stay aligned).  Filtering is FFT
overlap-save (65536-point blocks at 48 kHz) with the input history carried across chunks.

Time weighting (5.7, 5.8): exponential on the squared A-weighted signal per sample, the exact discrete equivalent
``e[n] = a·e[n-1] + (1-a)·pA²[n]``, a = exp(-1/(fs·τ)), τF = 0.125 s, τS = 1 s (``scipy.signal.lfilter`` with its
state carried), starting from rest (e = 0) at time 0.  Maxima count from time 0; minima and percentiles only from
5 time constants of F (0.625 s) or S (5 s) on, like a meter that starts from rest.

Percentiles LA10/LA50/LA90 (level exceeded 10/50/90 % of the time) count LAF at every sample from 0.625 s on, in
0.001 dB bins from -60 dB to 200 dB (a level's bin centre is reported: ±0.0005 dB); LAF below -60 dB (and digital
silence) counts as silence: a percentile falling there is None.  Bins keep memory bounded for any interval length.

Memory is bounded: FIR state (two FFT blocks), two histograms (≈ 4 MB), and the list of closed intervals, one
small dict each (use ``pop_intervals`` on very long runs).  Cost ≈ 35–55 ns per sample at 48 kHz on one core
(``bench/bench_truth.py``); blocks whose input is all zero skip the FFT.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import fft as sfft
from scipy import signal

from slm.sim.weighting import analog_response, design_goal_db

REFERENCE_PRESSURE_PA = 20e-6
TAU_FAST = 0.125  # s, 5.7
TAU_SLOW = 1.0  # s, 5.7
SETTLE_TAUS = 5  # minima and percentiles count from 5 time constants after the start from rest

LOOKAHEAD = 1024  # samples of the weighting FIR before t = 0 (band-limiting tail), tapered
FIR_SECONDS = 0.25  # causal part of the weighting FIR
PHASE_BEND_FROM = 0.47  # × fs: above this the phase goes smoothly to 0 at Nyquist

HIST_MIN_DB = -60.0  # percentile histogram: bins of HIST_STEP_DB from HIST_MIN_DB to HIST_MAX_DB
HIST_MAX_DB = 200.0
HIST_STEP_DB = 0.001
_HIST_BINS = int(round((HIST_MAX_DB - HIST_MIN_DB) / HIST_STEP_DB))  # bin 0 is "below HIST_MIN_DB or silence"

KEYS = ("start_s", "end_s", "LAeq", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax", "LASmin", "LCpeak", "LZpeak",
        "LAE", "LA10", "LA50", "LA90")


@functools.lru_cache(maxsize=None)
def weighting_fir(weighting: str, rate: int) -> tuple[np.ndarray, int]:
    """FIR taps of weighting A, C or Z at sample rate ``rate``, and the lookahead D in samples: tap k applies at lag
    k - D, so ``y[n] = sum_k taps[k]·x[n + D - k]`` is the weighted signal aligned with x.

    Frequency sampling of the analog response (``analog_response``) on a grid of 2**k ≥ 8·rate points; the phase is
    bent above PHASE_BEND_FROM·fs to make the Nyquist bin real; the impulse response is cut to lags -D .. 0.25 s with a
    half-Hann taper over the D lags before 0.  Read-only array (cached)."""
    rate = int(rate)
    d = LOOKAHEAD
    n_causal = int(math.ceil(FIR_SECONDS * rate))
    if weighting == "Z":
        taps = np.zeros(d + n_causal)
        taps[d] = 1.0
    else:
        nd = 1 << int(math.ceil(math.log2(8 * rate)))
        f = np.arange(nd // 2 + 1) * (rate / nd)
        h = analog_response(weighting, f)
        x = np.clip((f - PHASE_BEND_FROM * rate) / ((0.5 - PHASE_BEND_FROM) * rate), 0.0, 1.0)
        h = h * np.exp(-1j * np.angle(h[-1]) * x * x * (3 - 2 * x))
        impulse = np.fft.irfft(h, nd)
        taps = np.concatenate([impulse[nd - d:], impulse[:n_causal]])
        taps[:d] *= 0.5 * (1 - np.cos(np.pi * (np.arange(d) + 1) / (d + 1)))
    taps.setflags(write=False)
    return taps, d


def fir_response(weighting: str, rate: int, f) -> np.ndarray:
    """Complex frequency response of ``weighting_fir`` at f (Hz), with the lookahead removed (compare with
    ``analog_response``)."""
    taps, d = weighting_fir(weighting, rate)
    lags = np.arange(len(taps)) - d
    f = np.atleast_1d(np.asarray(f, dtype=float))
    out = np.empty(len(f), dtype=complex)
    for i in range(0, len(f), 64):  # bounded memory
        out[i:i + 64] = np.exp(-2j * np.pi * np.outer(f[i:i + 64], lags) / rate) @ taps
    return out


def fir_deviation(weighting: str, rate: int, f) -> tuple[np.ndarray, np.ndarray]:
    """Deviation of the FIR from the design goal at f: (magnitude in dB, phase in degrees)."""
    hf = fir_response(weighting, rate, f)
    ha = analog_response(weighting, f)
    return 20 * np.log10(np.abs(hf)) - design_goal_db(weighting, f), np.degrees(np.angle(hf / ha))


def _next_pow2(n: int) -> int:
    return 1 << int(math.ceil(math.log2(max(n, 2))))


class _Weighter:
    """Streaming A, C and Z weighting by FFT overlap-save with state across chunks.  ``feed`` runs a block whenever
    the buffer is full; ``flush`` runs what is pending (a smaller FFT).  Output goes to ``sink(yA, yC, yZ)`` aligned
    with the input: sample n of the output is the weighted signal at input sample n (needs input up to n + D)."""

    def __init__(self, rate: int, sink, with_c: bool = True):
        self.taps_a, self.delay = weighting_fir("A", rate)
        self.taps_c, _ = weighting_fir("C", rate)
        self.with_c = with_c  # False: only A (yC is passed as None), one inverse FFT less
        self.ntaps = len(self.taps_a)
        self.nfft = 4 * _next_pow2(self.ntaps)
        self.buf = np.zeros(self.nfft)  # input history (ntaps-1 samples, zeros = from rest) then pending input
        self.fill = self.ntaps - 1
        self.z_next = 0  # index of the next undelayed output; the first `delay` ones fall before t = 0
        self.sink = sink
        self._spectra: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _spectrum(self, n: int):
        if n not in self._spectra:
            self._spectra[n] = (sfft.rfft(self.taps_a, n), sfft.rfft(self.taps_c, n))
        return self._spectra[n]

    def feed(self, x: np.ndarray) -> None:
        i, n = 0, len(x)
        while i < n:
            take = min(n - i, self.nfft - self.fill)
            self.buf[self.fill:self.fill + take] = x[i:i + take]
            self.fill += take
            i += take
            if self.fill == self.nfft:
                self._run(self.nfft)

    def flush(self) -> None:
        if self.fill > self.ntaps - 1:
            self._run(_next_pow2(self.fill))

    def _run(self, n: int) -> None:
        k0, fill, d = self.ntaps - 1, self.fill, self.delay
        m = fill - k0
        seg = self.buf[:fill]
        if seg.any():
            spec = sfft.rfft(seg, n)
            ha, hc = self._spectrum(n)
            ya = sfft.irfft(spec * ha, n)[k0:fill]
            yc = sfft.irfft(spec * hc, n)[k0:fill] if self.with_c else None
        else:  # exact digital silence stays exact
            ya = np.zeros(m)
            yc = np.zeros(m) if self.with_c else None
        yz = self.buf[k0 - d:fill - d].copy()
        z0 = self.z_next
        self.z_next += m
        if z0 < d:
            cut = min(m, d - z0)
            ya, yz = ya[cut:], yz[cut:]
            yc = None if yc is None else yc[cut:]
        self.buf[:k0] = self.buf[fill - k0:fill]
        self.fill = k0
        if len(ya):
            self.sink(ya, yc, yz)


def weight_signal(p: np.ndarray, rate: int, weighting: str) -> np.ndarray:
    """The whole signal p weighted with A, C or Z (same length, aligned, silence assumed after the end): the filter
    TruthMeter uses, for one-shot use."""
    p = np.asarray(p, dtype=np.float64)
    out = {"A": [], "C": [], "Z": []}

    def sink(ya, yc, yz):
        out["A"].append(ya)
        out["C"].append(yc)
        out["Z"].append(yz)

    w = _Weighter(rate, sink)
    w.feed(p)
    w.feed(np.zeros(w.delay))
    w.flush()
    return np.concatenate(out[weighting]) if out[weighting] else np.zeros(0)


class _Span:
    """Running statistics of one span of samples (an interval, or everything)."""

    def __init__(self, start: int, hist: np.ndarray | None = None):
        self.start = start
        self.n = 0
        self.sum_a = self.sum_c = self.sum_z = 0.0
        self.f_max = self.s_max = 0.0
        self.f_min = self.s_min = math.inf
        self.c_peak = self.z_peak = 0.0
        self.hist = np.zeros(_HIST_BINS + 1, dtype=np.int64) if hist is None else hist
        self.lo, self.hi = _HIST_BINS + 1, -1  # range of touched bins

    def reset(self, start: int) -> None:
        """Start a new span at sample `start`, keeping the histogram's memory (only touched bins are cleared)."""
        hist = self.hist
        if self.hi >= self.lo:
            hist[self.lo:self.hi + 1] = 0
        self.__init__(start, hist)

    def add_hist(self, lo: int, counts: np.ndarray) -> None:
        self.hist[lo:lo + len(counts)] += counts
        self.lo = min(self.lo, lo)
        self.hi = max(self.hi, lo + len(counts) - 1)

    def percentiles(self) -> tuple[float | None, float | None, float | None]:
        if self.hi < self.lo:
            return None, None, None
        counts = self.hist[self.lo:self.hi + 1]
        cum = np.cumsum(counts)
        total = cum[-1]
        out = []
        for exceeded in (10, 50, 90):
            k = self.lo + int(np.searchsorted(cum, (1 - exceeded / 100) * total, side="left"))
            out.append(None if k == 0 else HIST_MIN_DB + (k - 0.5) * HIST_STEP_DB)
        return out[0], out[1], out[2]


class TruthMeter:
    """A perfect class 1 sound level meter (IEC 61672-1) for sound pressure p in Pa at ``rate`` samples/s.

    ``process(p)`` takes chunks of any size; ``intervals()`` lists the closed intervals of ``interval_s`` (an integer
    number of samples) and ``overall()`` everything so far; ``finish()`` ends the signal (silence after it) and closes
    the trailing partial interval.  Levels are dB re ``reference_pa``; None where the quantity is silence (zero
    energy, no sample counted yet, or a percentile in the silence bin).  Results cover the input up to LOOKAHEAD
    samples before its end until ``finish``.  See the module docstring for definitions.
    """

    def __init__(self, rate: int, interval_s: float = 1.0, reference_pa: float = REFERENCE_PRESSURE_PA):
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"rate must be a positive integer, not {rate!r}")
        self.rate = int(rate)
        self.interval_s = float(interval_s)
        n_int = round(interval_s * self.rate)
        if n_int < 1 or abs(n_int - interval_s * self.rate) > 1e-6:
            raise ValueError(f"interval_s={interval_s} is not a whole number of samples at {rate} Hz")
        self.interval_n = int(n_int)
        self.reference_pa = float(reference_pa)
        self._ref_db = 10 * math.log10(self.reference_pa**2)
        self._a_fast = math.exp(-1 / (self.rate * TAU_FAST))
        self._a_slow = math.exp(-1 / (self.rate * TAU_SLOW))
        self._zi_fast = np.zeros(1)
        self._zi_slow = np.zeros(1)
        self._settle_fast = int(math.ceil(SETTLE_TAUS * TAU_FAST * self.rate - 1e-9))
        self._settle_slow = int(math.ceil(SETTLE_TAUS * TAU_SLOW * self.rate - 1e-9))
        self._n_out = 0  # output samples consumed by the statistics
        self._interval = _Span(0)
        self._all = _Span(0)
        self._closed: list[dict] = []
        self._finished = False
        self._weighter = _Weighter(self.rate, self._consume)

    # -- input ---------------------------------------------------------------------------------------------------
    def process(self, p) -> None:
        """Add a chunk of sound pressure samples (Pa)."""
        if self._finished:
            raise RuntimeError("TruthMeter.process after finish()")
        p = np.asarray(p, dtype=np.float64).ravel()
        if not np.isfinite(p).all():
            raise ValueError("sound pressure must be finite")
        self._weighter.feed(p)

    def finish(self) -> None:
        """End of the signal: weight the last LOOKAHEAD samples (silence after the end) and close the trailing
        partial interval.  Further ``process`` calls raise."""
        if self._finished:
            return
        self._weighter.feed(np.zeros(self._weighter.delay))
        self._weighter.flush()
        self._finished = True
        if self._interval.n:
            self._close_interval()

    # -- results -------------------------------------------------------------------------------------------------
    def intervals(self) -> list[dict]:
        """Closed intervals so far, oldest first (a new list; the meter keeps them)."""
        self._catch_up()
        return list(self._closed)

    def pop_intervals(self) -> list[dict]:
        """Closed intervals not popped before; the meter forgets them (for very long runs)."""
        self._catch_up()
        out, self._closed = self._closed, []
        return out

    def overall(self) -> dict:
        """The same quantities over everything so far (start_s 0, end_s the time covered)."""
        self._catch_up()
        return self._result(self._all, self._n_out)

    # -- internals -----------------------------------------------------------------------------------------------
    def _catch_up(self) -> None:
        if not self._finished:
            self._weighter.flush()

    def _level(self, power: float) -> float | None:
        return 10 * math.log10(power) - self._ref_db if power > 0 and math.isfinite(power) else None

    def _result(self, span: _Span, end: int) -> dict:
        fs = self.rate
        lv = self._level
        n = span.n
        la10, la50, la90 = span.percentiles()
        return {
            "start_s": span.start / fs,
            "end_s": end / fs,
            "LAeq": lv(span.sum_a / n) if n else None,
            "LCeq": lv(span.sum_c / n) if n else None,
            "LZeq": lv(span.sum_z / n) if n else None,
            "LAFmax": lv(span.f_max),
            "LAFmin": lv(span.f_min),
            "LASmax": lv(span.s_max),
            "LASmin": lv(span.s_min),
            "LCpeak": lv(span.c_peak**2),
            "LZpeak": lv(span.z_peak**2),
            "LAE": lv(span.sum_a / fs),
            "LA10": la10,
            "LA50": la50,
            "LA90": la90,
        }

    def _close_interval(self) -> None:
        self._closed.append(self._result(self._interval, self._interval.start + self._interval.n))
        self._interval.reset(self._interval.start + self._interval.n)

    def _consume(self, ya: np.ndarray, yc: np.ndarray, yz: np.ndarray) -> None:
        """Statistics of a block of weighted samples (the next ones in time)."""
        a2 = ya * ya
        fast, self._zi_fast = signal.lfilter([1 - self._a_fast], [1.0, -self._a_fast], a2, zi=self._zi_fast)
        slow, self._zi_slow = signal.lfilter([1 - self._a_slow], [1.0, -self._a_slow], a2, zi=self._zi_slow)
        c2, z2 = yc * yc, yz * yz
        n0 = self._n_out
        i, n = 0, len(ya)
        while i < n:
            span = self._interval
            j = min(n, i + self.interval_n - span.n)
            self._add(n0 + i, a2[i:j], c2[i:j], z2[i:j], yc[i:j], yz[i:j], fast[i:j], slow[i:j])
            i = j
            if span.n == self.interval_n:
                self._close_interval()
        self._n_out = n0 + n

    def _add(self, g0: int, a2, c2, z2, yc, yz, fast, slow) -> None:
        """Add samples starting at global index g0 to the open interval and to the overall span (a2, c2, z2: the
        squared weighted samples)."""
        sum_a = float(a2.sum())  # not np.dot: BLAS threads cost more than they save here
        sum_c = float(c2.sum())
        sum_z = float(z2.sum())
        f_max, s_max = float(fast.max()), float(slow.max())
        c_peak = max(float(yc.max()), -float(yc.min()))  # max |y| without an array of |y|
        z_peak = max(float(yz.max()), -float(yz.min()))
        f_min = s_min = math.inf
        lo, counts = 0, None
        kf = self._settle_fast - g0
        if kf < len(fast):
            settled = fast[max(kf, 0):]
            f_min = float(settled.min())
            with np.errstate(divide="ignore"):
                codes = np.log10(settled)
            codes *= 10  # (10·lg e - (ref + HIST_MIN_DB)) / HIST_STEP_DB, in place
            codes -= self._ref_db + HIST_MIN_DB
            codes /= HIST_STEP_DB
            np.floor(codes, out=codes)
            codes += 1
            np.clip(codes, 0, _HIST_BINS, out=codes)
            idx = codes.astype(np.intp)
            lo = int(idx.min())
            counts = np.bincount(idx - lo)
        ks = self._settle_slow - g0
        if ks < len(slow):
            s_min = float(slow[max(ks, 0):].min())
        for span in (self._interval, self._all):
            span.n += len(a2)
            span.sum_a += sum_a
            span.sum_c += sum_c
            span.sum_z += sum_z
            span.f_max = max(span.f_max, f_max)
            span.s_max = max(span.s_max, s_max)
            span.f_min = min(span.f_min, f_min)
            span.s_min = min(span.s_min, s_min)
            span.c_peak = max(span.c_peak, c_peak)
            span.z_peak = max(span.z_peak, z_peak)
            if counts is not None:
                span.add_hist(lo, counts)


class LeqMeter:
    """Only LAeq per interval, with TruthMeter's A weighting: the cheap meter for each source's contribution.

    Same interface shape as TruthMeter (``process``, ``finish``, ``intervals``, ``overall``) but the results are
    levels (dB or None), not dicts.
    """

    def __init__(self, rate: int, interval_s: float = 1.0, reference_pa: float = REFERENCE_PRESSURE_PA):
        self.interval_n = round(interval_s * rate)
        if self.interval_n < 1 or abs(self.interval_n - interval_s * rate) > 1e-6:
            raise ValueError(f"interval_s={interval_s} is not a whole number of samples at {rate} Hz")
        self._ref2 = reference_pa**2
        self._sum = self._total = 0.0
        self._n = self._total_n = 0
        self._closed: list[float | None] = []
        self._finished = False
        self._weighter = _Weighter(rate, self._consume, with_c=False)

    def _level(self, energy: float, n: int) -> float | None:
        return 10 * math.log10(energy / n / self._ref2) if n and energy > 0 else None

    def _consume(self, ya: np.ndarray, yc: np.ndarray, yz: np.ndarray) -> None:
        i = 0
        while i < len(ya):
            take = min(len(ya) - i, self.interval_n - self._n)
            seg = ya[i:i + take]
            self._sum += float((seg * seg).sum())
            self._n += take
            i += take
            if self._n == self.interval_n:
                self._close()

    def _close(self) -> None:
        self._closed.append(self._level(self._sum, self._n))
        self._total += self._sum
        self._total_n += self._n
        self._sum, self._n = 0.0, 0

    def process(self, p) -> None:
        if self._finished:
            raise RuntimeError("LeqMeter.process after finish()")
        self._weighter.feed(np.asarray(p, dtype=np.float64).ravel())

    def finish(self) -> None:
        if self._finished:
            return
        self._weighter.feed(np.zeros(self._weighter.delay))
        self._weighter.flush()
        self._finished = True
        if self._n:
            self._close()

    def intervals(self) -> list[float | None]:
        return list(self._closed)

    def overall(self) -> float | None:
        return self._level(self._total, self._total_n)
