"""Synthetic sound sources of a city square that stream deterministic audio in chunks: dance music from big
loudspeakers, a singing group, a drum team, crowd babble, distant road traffic, a calibrator tone and pink noise.

    src = make_source("music", 48000, seed=7, bpm=128)
    x = np.concatenate([src.render(24000) for _ in range(10)])   # 5 s

``render(n)`` returns the next n float64 samples. The concatenation of the chunks is identical, bit for bit, for
any way of cutting the stream, because every sample is a function of its absolute index and of state carried in a
fixed order:
- oscillators take their phase from the sample index in closed form (never accumulated per chunk);
- filters are ``scipy.signal.sosfilt`` with their state ``zi`` carried from call to call;
- noise comes from ``numpy.random.Generator`` streams, whose draws do not depend on how they are split;
- events (notes, drum hits, syllables, pass-bys) are drawn in time order from their own generator, ahead of need,
  from precomputed templates; slow envelopes are computed at a control rate in fixed blocks;
- babble, whose cost is mostly per call, synthesises fixed blocks of 16384 samples and serves any chunking from
  them (SoundSource.block).
Absolute scale is arbitrary (the scene sets levels by measuring a calibration render); each kind is scaled to
roughly unit rms, except the tone, which has unit amplitude. Output is band-limited to min(16 kHz, 0.45·rate).

Cost (one core, 48 kHz, 0.1 s chunks, default parameters): 3 ns per sample (music, drums) to about 30 (babble),
i.e. >= 500x real time; measured by bench/bench_sources.py. Making a source takes 10-100 ms (templates, tables,
filter design). Memory: templates and wavetables of a few MB at most (music, voice); everything else O(chunk).
"""

from __future__ import annotations

import math
import operator
import zlib

import numpy as np
from scipy import signal

# kind -> parameter -> (default, min, max, description); an int default means the parameter takes whole numbers.
SOURCE_KINDS: dict[str, dict[str, tuple]] = {
    "music": {
        "bpm": (124.0, 60.0, 200.0, "tempo in beats per minute; a kick drum on every beat"),
        "bass_hz": (55.0, 30.0, 120.0, "root of the bass line, Hz"),
        "key_hz": (220.0, 100.0, 880.0, "root of the chord pads, Hz"),
        "swing": (0.0, 0.0, 0.5, "delay of the off-beat sixteenths, as a fraction of a sixteenth (1/3: triplet feel)"),
        "kick_hz": (52.0, 35.0, 100.0, "pitch the kick drum decays to, Hz"),
    },
    "voice": {
        "f0_hz": (220.0, 60.0, 1000.0, "sung pitch (the tonic of the tune), Hz"),
        "vibrato_hz": (5.5, 0.0, 12.0, "vibrato rate, Hz"),
        "vibrato_depth": (0.02, 0.0, 0.1, "vibrato depth, peak frequency deviation relative to the note"),
        "voices": (4, 1, 16, "singers, slightly detuned"),
        "detune_cents": (8.0, 0.0, 50.0, "spread of the singers' tuning, cents (standard deviation)"),
        "syllable_hz": (2.5, 0.5, 8.0, "sung syllables per second"),
        "melody": (1, 0, 1, "1: a pentatonic tune around f0_hz (the most frequent note); 0: every syllable on f0_hz"),
    },
    "drums": {
        "bpm": (120.0, 30.0, 240.0, "tempo in beats per minute"),
        "hits_per_beat": (2, 1, 8, "big-drum hits per beat"),
        "accent_every": (4, 1, 32, "every n-th hit is accented (louder, often with cymbals)"),
        "jitter_ms": (6.0, 0.0, 40.0, "random timing error of each hit, ms (standard deviation)"),
    },
    "babble": {
        "talkers": (20, 1, 200, "independent talkers"),
        "syllable_hz": (4.0, 1.0, 8.0, "syllables per second of each talker"),
    },
    "traffic": {
        "vehicles_per_minute": (20.0, 0.0, 600.0, "pass-bys per minute on the nearest road"),
        "passby_db": (6.0, 0.0, 20.0, "peak of a car's pass-by above the steady background, dB (lorries +6 dB)"),
        "fluctuation_db": (1.5, 0.0, 6.0, "slow random drift of the background, dB (standard deviation)"),
    },
    "tone": {
        "frequency_hz": (1000.0, 1.0, 96000.0, "nominal frequency, Hz (must be below rate/2)"),
        "frequency_error": (0.0, -0.1, 0.1, "relative frequency error (a calibrator's: 0.007 = 0.7 %)"),
    },
    "pink": {
        "f_low": (20.0, 1.0, 20000.0, "lower band edge, Hz (2nd-order high-pass)"),
        "f_high": (16000.0, 10.0, 96000.0, "upper band edge, Hz (4th-order low-pass; at most 0.45·rate)"),
    },
}

MIN_RATE, MAX_RATE = 8000, 192000
BAND_TOP_HZ = 16000.0  # every kind is band-limited to min(BAND_TOP_HZ, 0.45·rate)

# Vowel formants F1, F2, F3 (Hz), an adult voice between the male and female averages (Peterson & Barney 1952).
VOWEL_FORMANTS_HZ = {
    "a": (780.0, 1250.0, 2700.0),
    "e": (520.0, 1900.0, 2600.0),
    "i": (320.0, 2400.0, 3000.0),
    "o": (520.0, 900.0, 2600.0),
    "u": (350.0, 800.0, 2500.0),
}
FORMANT_BOOST_DB = (14.0, 11.0, 7.0)   # peaking-filter gains that carve the formants out of the speech tilt
FORMANT_BANDWIDTH_HZ = (90.0, 110.0, 170.0)
BABBLE_VOWELS = ("a", "i", "u")  # babble sums talkers into one channel per vowel: the corners of the vowel triangle


# --- building blocks -------------------------------------------------------------------------------------------

def band_top_hz(rate: int) -> float:
    """Upper band limit of every source at this rate."""
    return min(BAND_TOP_HZ, 0.45 * rate)


def peaking_sos(f0: float, gain_db: float, q: float, rate: int) -> np.ndarray:
    """One biquad of the RBJ audio-EQ cookbook 'peakingEQ': gain_db at f0, unity far from it."""
    a_lin = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * f0 / rate
    alpha = math.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * a_lin, -2.0 * math.cos(w0), 1.0 - alpha * a_lin])
    a = np.array([1.0 + alpha / a_lin, -2.0 * math.cos(w0), 1.0 - alpha / a_lin])
    return np.concatenate([b / a[0], a / a[0]])[None, :]


def pinking_sos(f_low: float, f_high: float, rate: int, per_decade: int = 3) -> np.ndarray:
    """A -10 dB/decade (-3 dB/octave) power slope from f_low up to f_high (flat outside): real pole-zero pairs,
    a pole every 1/per_decade decade and a zero half a step above it, mapped by the matched z-transform; a
    zero at z = -c, fitted over the band, undoes the matched-z error near Nyquist. Ripple from 2·f_low to f_high
    within ±0.2 dB for 20 Hz - 16 kHz, ±0.4 dB for any band."""
    step = 10.0 ** (1.0 / per_decade)
    n_pairs = int(math.ceil(math.log10(f_high / f_low) * per_decade)) + 1  # one pair beyond f_high
    f_pole = f_low * step ** np.arange(n_pairs)
    f_pole = f_pole[f_pole < 0.5 * rate]
    f_zero = f_pole * math.sqrt(step)
    poles = np.exp(-2.0 * math.pi * f_pole / rate)
    zeros = np.exp(-2.0 * math.pi * np.minimum(f_zero, 0.5 * rate) / rate)
    sos = signal.zpk2sos(zeros, poles, 1.0)
    f = np.geomspace(max(2.0 * f_low, 1.0), min(f_high, 0.45 * rate), 200)
    _, h = signal.sosfreqz(sos, worN=f, fs=rate)
    error_db = 20.0 * np.log10(np.abs(h)) + 10.0 * np.log10(f)
    w = 2.0 * math.pi * f / rate
    best_c, best_err = 0.0, np.inf
    for c in np.linspace(0.0, 0.2, 81):
        corr_db = 10.0 * np.log10((1.0 + c * c + 2.0 * c * np.cos(w)) / (1.0 + c) ** 2)
        r = error_db + corr_db
        err = float(np.ptp(r))
        if err < best_err:
            best_c, best_err = c, err
    tail = np.array([[1.0 / (1.0 + best_c), best_c / (1.0 + best_c), 0.0, 1.0, 0.0, 0.0]])
    return np.vstack([sos, tail])


def noise_power_gain(sos: np.ndarray) -> float:
    """Output variance of the filter for unit-variance white noise (mean of |H|² over 0..Nyquist)."""
    _, h = signal.sosfreqz(sos, worN=1 << 16)
    return float(np.mean(np.abs(h) ** 2))


def formant_sos(vowel: str, rate: int) -> np.ndarray:
    """Three peaking biquads at the vowel's formants (no tilt): multiply a voice source by this to make the vowel."""
    rows = []
    for f, g, bw in zip(VOWEL_FORMANTS_HZ[vowel], FORMANT_BOOST_DB, FORMANT_BANDWIDTH_HZ):
        if f < 0.45 * rate:
            rows.append(peaking_sos(f, g, f / bw, rate))
    return np.vstack(rows)


def harmonic_table(amplitudes: np.ndarray, size: int) -> np.ndarray:
    """One period (size samples) of sum_h amplitudes[h-1]·sin(2π h t), scaled to unit rms."""
    spec = np.zeros(size // 2 + 1, dtype=complex)
    spec[1:len(amplitudes) + 1] = -1j * np.asarray(amplitudes)
    table = np.fft.irfft(spec, size)
    return table / np.sqrt(np.mean(table ** 2))


def table_tone(table: np.ndarray, freq: float, n: int, rate: int, phase: float = 0.0) -> np.ndarray:
    """n samples of a periodic wave given by one period in table (nearest entry; use >= 8192 entries for
    distortion below -60 dB), phase in cycles."""
    size = len(table)
    pos = np.arange(n) * (freq / rate) + phase
    pos -= np.floor(pos)
    pos *= size
    i = pos.astype(np.intp)
    i &= size - 1
    return table[i]


def _seeds(kind: str, seed: int, n: int) -> list[np.random.SeedSequence]:
    """n independent seed sequences for one source (the kind is mixed in so kinds never share a stream)."""
    return np.random.SeedSequence([seed, zlib.crc32(kind.encode())]).spawn(n)


def _fade_ends(x: np.ndarray, rate: int, fade_s: float = 0.005) -> np.ndarray:
    """Linear fade-out over the last fade_s seconds, so a truncated template ends at zero."""
    m = min(len(x), max(1, int(fade_s * rate)))
    x[-m:] *= np.linspace(1.0, 0.0, m)
    return x


# --- streaming machinery ---------------------------------------------------------------------------------------

class SoundSource:
    """A stream of samples: render(n) returns the next n samples (float64), continuing from the previous call.

    Subclasses implement _render(start, n) for consecutive ranges. A subclass whose per-call cost is high (several
    filter calls) sets `block`: it is then asked for fixed blocks of that many samples, and render() serves any
    chunking from them (setting block = 0 on an instance calls _render with the caller's chunks directly)."""

    kind = ""
    block = 0
    params: dict = {}  # the resolved parameters (set by make_source)

    def __init__(self, rate: int, seed: int):
        self.rate = rate
        self.seed = seed
        self.position = 0  # samples rendered so far
        self._held = np.zeros(0)  # samples position .. position+len-1, already synthesised (when block > 0)

    def render(self, n: int) -> np.ndarray:
        n = operator.index(n)
        if n < 0:
            raise ValueError(f"render: n must be >= 0, got {n}")
        if not self.block:
            out = self._render(self.position, n) if n else np.zeros(0)
        else:
            while len(self._held) < n:
                fresh = self._render(self.position + len(self._held), self.block)
                self._held = np.concatenate([self._held, fresh])
            out, self._held = self._held[:n].copy(), self._held[n:]
        self.position += n
        return out

    def _render(self, start: int, n: int) -> np.ndarray:
        """Samples start .. start+n-1 of the stream (called with consecutive ranges)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind!r} rate={self.rate} seed={self.seed} at {self.position}>"


class EventTrack:
    """Templates placed at absolute sample positions with a gain; mix_into adds the parts that fall in a chunk.

    Events may be added out of time order; they are summed in the order they were added, so every sample is the
    same sum whatever the chunking."""

    def __init__(self):
        self._events: list[tuple[int, np.ndarray, float]] = []

    def add(self, start: int, template: np.ndarray, gain: float) -> None:
        self._events.append((int(start), template, float(gain)))

    def mix_into(self, out: np.ndarray, start: int) -> None:
        end = start + len(out)
        keep = []
        for ev in self._events:
            s, tmpl, g = ev
            if s >= end:
                keep.append(ev)
                continue
            e = s + len(tmpl)
            if e <= start:
                continue
            a, b = max(s, start), min(e, end)
            out[a - start:b - start] += g * tmpl[a - s:b - s]
            if e > end:
                keep.append(ev)
        self._events = keep

    def rms_if_added_in_power(self, duration: int) -> float:
        """rms over duration samples of the pending events, were they uncorrelated (cross terms neglected)."""
        energy: dict[int, float] = {}
        total = 0.0
        for _, tmpl, g in self._events:
            if id(tmpl) not in energy:
                energy[id(tmpl)] = float(np.dot(tmpl, tmpl))
            total += g * g * energy[id(tmpl)]
        return math.sqrt(total / duration)


class ControlTrack:
    """A slow envelope held on a control grid (one value per `step` samples), computed in fixed blocks of `block`
    points by compute(j0, j1) -> array of shape (..., j1 - j0), in order, and dropped once passed."""

    def __init__(self, step: int, block: int, compute):
        self.step = step
        self.block = block
        self._compute = compute
        self._j0 = 0
        self._values = compute(0, block)

    def per_sample(self, start: int, n: int) -> np.ndarray:
        j_first, j_last = start // self.step, (start + n - 1) // self.step
        while self._j0 + self._values.shape[-1] <= j_last:
            j = self._j0 + self._values.shape[-1]
            self._values = np.concatenate([self._values, self._compute(j, j + self.block)], axis=-1)
        drop = (j_first - self._j0) // self.block * self.block
        if drop > 0:
            self._values = self._values[..., drop:]
            self._j0 += drop
        a, b = j_first - self._j0, j_last - self._j0 + 1
        v = self._values[..., a:b]
        held_samples = np.broadcast_to(v[..., None], v.shape + (self.step,)).reshape(v.shape[:-1] + (-1,))
        skip = start - j_first * self.step
        return held_samples[..., skip:skip + n]


# --- the kinds -------------------------------------------------------------------------------------------------

class Tone(SoundSource):
    """A steady sine of unit amplitude at frequency_hz·(1 + frequency_error), its phase from the sample index (the
    starting phase drawn from the seed, so that different seeds differ)."""

    kind = "tone"

    def __init__(self, rate: int, seed: int, frequency_hz: float, frequency_error: float):
        super().__init__(rate, seed)
        self.frequency_hz = frequency_hz * (1.0 + frequency_error)
        if not 0.0 < self.frequency_hz < 0.5 * rate:
            raise ValueError(f"tone: frequency_hz·(1+frequency_error) = {self.frequency_hz:g} Hz must be in "
                             f"(0, {0.5 * rate:g}) (below rate/2)")
        self._cycles_per_sample = self.frequency_hz / rate
        (phase_seed,) = _seeds(self.kind, seed, 1)
        self._start_cycles = float(np.random.default_rng(phase_seed).random())

    def _render(self, start, n):
        cycles = np.arange(start, start + n, dtype=np.float64) * self._cycles_per_sample
        cycles += self._start_cycles
        cycles -= np.floor(cycles)
        return np.sin(2.0 * math.pi * cycles)


class PinkNoise(SoundSource):
    """Gaussian white noise through a pinking filter (1/f power from f_low to f_high), a 2nd-order Butterworth
    high-pass at f_low and a 4th-order low-pass at f_high (at most 0.45·rate); unit rms."""

    kind = "pink"

    def __init__(self, rate: int, seed: int, f_low: float, f_high: float):
        super().__init__(rate, seed)
        f_high = min(f_high, 0.45 * rate)
        if not f_low < f_high / 2:
            raise ValueError(f"pink: f_low ({f_low:g} Hz) must be below f_high/2 ({f_high / 2:g} Hz at this rate)")
        self.f_low, self.f_high = f_low, f_high
        sos = np.vstack([signal.butter(2, f_low, "highpass", fs=rate, output="sos"),
                         pinking_sos(f_low, f_high, rate),
                         signal.butter(4, f_high, "lowpass", fs=rate, output="sos")])
        sos[0, :3] /= math.sqrt(noise_power_gain(sos))
        self._sos = sos
        self._zi = np.zeros((len(sos), 2))
        (noise_seed,) = _seeds(self.kind, seed, 1)
        self._rng = np.random.default_rng(noise_seed)

    def _render(self, start, n):
        y, self._zi = signal.sosfilt(self._sos, self._rng.standard_normal(n), zi=self._zi)
        return y


class RoadTraffic(SoundSource):
    """Distant road traffic: Gaussian noise shaped like the EN 1793-3 normalised traffic spectrum as heard from
    afar (third-octave levels flat to ~60 Hz, then -3 dB/octave with the tyre hump near 1 kHz, extra air
    absorption above 4 kHz; high-pass at 40 Hz), times a slow envelope: a background drifting by fluctuation_db
    plus pass-by swells (Poisson arrivals, vehicles_per_minute; intensity 1/(1+(t/τ)²), τ 2-6 s, 15 % lorries
    6 dB louder). Envelope on a 10 ms control grid; unit rms on average."""

    kind = "traffic"
    HEAVY_SHARE, HEAVY_DB = 0.15, 6.0
    TAU_S = (2.0, 6.0)
    CUT = 6.0  # a pass-by lasts |t| < CUT·τ
    DRIFT_PERIODS_S = (37.0, 89.0, 211.0)

    def __init__(self, rate: int, seed: int, vehicles_per_minute: float, passby_db: float, fluctuation_db: float):
        super().__init__(rate, seed)
        top = min(4000.0, band_top_hz(rate))
        sos = np.vstack([signal.butter(2, 40.0, "highpass", fs=rate, output="sos"),
                         signal.butter(1, 60.0, "lowpass", fs=rate, output="sos"),
                         peaking_sos(1000.0, 4.0, 0.8, rate),
                         signal.butter(2, top, "lowpass", fs=rate, output="sos")])
        sos[0, :3] /= math.sqrt(noise_power_gain(sos))
        self._sos, self._zi = sos, np.zeros((len(sos), 2))
        noise_seed, event_seed, drift_seed = _seeds(self.kind, seed, 3)
        self._noise = np.random.default_rng(noise_seed)
        self._events = np.random.default_rng(event_seed)
        drift = np.random.default_rng(drift_seed)
        self._drift_phase = drift.uniform(0.0, 2.0 * math.pi, len(self.DRIFT_PERIODS_S))
        # sum of len(periods) unit sines has variance len/2: scale to fluctuation_db standard deviation
        self._drift_db = fluctuation_db * math.sqrt(2.0 / len(self.DRIFT_PERIODS_S))
        self._per_s = vehicles_per_minute / 60.0
        self._passby_power = 10.0 ** (passby_db / 10.0)
        self._vehicles = np.zeros((0, 3))  # centre time s, tau s, peak power
        self._arrivals_until_s = -self.CUT * self.TAU_S[1]  # vehicles already passing at t = 0
        # mean power: background (mean of the drift's 10^(dB/10)) + pass-bys (rate · E[peak] · E[τ] · ∫shape)
        t = np.arange(0.0, 3600.0, 0.5)
        mean_background = float(np.mean(10.0 ** (self._drift(t) / 10.0)))
        cut_val = 1.0 / (1.0 + self.CUT ** 2)
        shape_integral = (2.0 * math.atan(self.CUT) - 2.0 * self.CUT * cut_val) / (1.0 - cut_val)
        mean_peak = self._passby_power * (1 - self.HEAVY_SHARE + self.HEAVY_SHARE * 10 ** (self.HEAVY_DB / 10))
        mean_power = mean_background + self._per_s * mean_peak * np.mean(self.TAU_S) * shape_integral
        self._power_scale = 1.0 / mean_power
        self._step = max(1, int(round(0.01 * rate)))  # control grid: 10 ms
        self._envelope = ControlTrack(self._step, 128, self._envelope_block)

    def _drift(self, t_s: np.ndarray) -> np.ndarray:
        db = np.zeros_like(t_s)
        for period, phase in zip(self.DRIFT_PERIODS_S, self._drift_phase):
            db += np.sin(2.0 * math.pi * t_s / period + phase)
        return self._drift_db * db

    def _draw_vehicles(self) -> None:
        """The next 16 arrivals, always drawn as one batch of the same shape (so the draws never depend on need)."""
        m = 16
        gaps = self._events.exponential(1.0 / self._per_s, m)
        tau = self._events.uniform(*self.TAU_S, m)
        heavy = self._events.random(m) < self.HEAVY_SHARE
        spread_db = self._events.normal(0.0, 2.0, m)
        centre = self._arrivals_until_s + np.cumsum(gaps)
        peak = self._passby_power * 10.0 ** ((spread_db + heavy * self.HEAVY_DB) / 10.0)
        self._vehicles = np.vstack([self._vehicles, np.column_stack([centre, tau, peak])])
        self._arrivals_until_s = float(centre[-1])

    def _envelope_block(self, j0: int, j1: int) -> np.ndarray:
        t = np.arange(j0, j1) * (self._step / self.rate)
        power = 10.0 ** (self._drift(t) / 10.0)
        if self._per_s > 0:
            while self._arrivals_until_s < t[-1] + self.CUT * self.TAU_S[1]:
                self._draw_vehicles()
            v = self._vehicles
            near = (v[:, 0] + self.CUT * v[:, 1] > t[0]) & (v[:, 0] - self.CUT * v[:, 1] < t[-1])
            cut_val = 1.0 / (1.0 + self.CUT ** 2)
            centre, tau, peak = v[near].T
            x = (t[None, :] - centre[:, None]) / tau[:, None]
            swell = np.maximum(0.0, (1.0 / (1.0 + x * x) - cut_val) / (1.0 - cut_val))
            power += (peak[:, None] * swell).sum(axis=0)
            self._vehicles = v[v[:, 0] + self.CUT * v[:, 1] > t[-1]]
        return np.sqrt(power * self._power_scale)

    def _render(self, start, n):
        y, self._zi = signal.sosfilt(self._sos, self._noise.standard_normal(n), zi=self._zi)
        return y * self._envelope.per_sample(start, n)


class CrowdBabble(SoundSource):
    """Crowd chatter: `talkers` independent talkers, each a string of syllables (syllable_hz, ±40 %) in talk
    spurts with pauses, a syllable being white noise with a sin² envelope through the formant filter of a random
    vowel (three peaking biquads on a 150-700 Hz speech tilt).

    Talkers saying the same vowel share one channel: the sum of independent noises with envelopes e_i is
    (for noise) the same as one noise with envelope sqrt(Σ e_i²), so the cost is one noise and one filter per vowel
    (BABBLE_VOWELS) whatever the number of talkers. Envelopes on a 4 ms control grid; unit rms on average."""

    kind = "babble"
    block = 16384  # three filter calls per render: amortise their fixed cost
    PAUSE_CHANCE, PAUSE_S = 0.15, (0.2, 1.2)   # after a syllable, a pause of uniform length with this chance
    SPREAD_DB = 2.0                            # talker loudness and syllable stress, standard deviation
    BATCH = 32

    def __init__(self, rate: int, seed: int, talkers: int, syllable_hz: float):
        super().__init__(rate, seed)
        n_ch = len(BABBLE_VOWELS)
        seeds = _seeds(self.kind, seed, 1 + n_ch + talkers)  # talker gains, channel noises, talkers' syllables
        # speech tilt: first-order high-pass at 150 Hz and low-pass at 700 Hz in one biquad
        hp_b, hp_a = signal.butter(1, 150.0, "highpass", fs=rate)
        lp_b, lp_a = signal.butter(1, 700.0, "lowpass", fs=rate)
        tilt = np.concatenate([np.convolve(hp_b, lp_b), np.convolve(hp_a, lp_a)])[None, :]
        self._sos = []
        for vowel in BABBLE_VOWELS:
            sos = np.vstack([tilt, formant_sos(vowel, rate)])
            sos[0, :3] /= math.sqrt(noise_power_gain(sos))
            self._sos.append(sos)
        self._zi = [np.zeros((len(s), 2)) for s in self._sos]
        self._noise = [np.random.default_rng(s) for s in seeds[1:1 + n_ch]]
        talker_rng = np.random.default_rng(seeds[0])
        self._talker_gain2 = 10.0 ** (talker_rng.normal(0.0, self.SPREAD_DB, talkers) / 10.0)
        self._talkers = [np.random.default_rng(s) for s in seeds[1 + n_ch:]]
        self.step = max(1, int(round(0.004 * rate)))
        self._syllable_steps = rate / syllable_hz / self.step  # mean syllable length in control steps
        self._pause_steps = (self.PAUSE_S[0] * rate / self.step, self.PAUSE_S[1] * rate / self.step)
        # talkers start at random points of their speech so the crowd is already talking at t = 0
        self._horizon = -talker_rng.uniform(0.0, 4.0 * self._syllable_steps, talkers)
        self._pool = np.zeros((0, 4))  # start, end (control steps), vowel channel, power gain
        # expected Σ e² over talkers: gain² · E[10^(stress/10)] · E[sin⁴] · share of time in syllables
        lognormal = math.exp((self.SPREAD_DB * math.log(10) / 10) ** 2 / 2)
        duty = self._syllable_steps / (self._syllable_steps + self.PAUSE_CHANCE * np.mean(self._pause_steps))
        self._power_scale = 1.0 / (float(np.sum(self._talker_gain2)) * lognormal * 0.375 * duty)
        self._envelope = ControlTrack(self.step, 256, self._envelope_block)

    def _draw_syllables(self, talker: int) -> np.ndarray:
        rng = self._talkers[talker]
        m = self.BATCH
        length = self._syllable_steps * rng.uniform(0.6, 1.4, m)
        pause = (rng.random(m) < self.PAUSE_CHANCE) * rng.uniform(*self._pause_steps, m)
        vowel = rng.integers(0, len(BABBLE_VOWELS), m)
        stress = 10.0 ** (rng.normal(0.0, self.SPREAD_DB, m) / 10.0)
        begin = self._horizon[talker] + np.concatenate([[0.0], np.cumsum(length + pause)[:-1]])
        self._horizon[talker] = begin[-1] + length[-1] + pause[-1]
        return np.column_stack([begin, begin + length, vowel, stress * self._talker_gain2[talker]])

    def _envelope_block(self, j0: int, j1: int) -> np.ndarray:
        """sqrt of Σ e² per vowel channel at control points j0 .. j1-1 (shape (vowels, j1-j0))."""
        # draw until every talker's horizon passes j1 (rounds of one batch per talker, in talker order)
        new = []
        while True:
            extra = [self._draw_syllables(i) for i in range(len(self._talkers)) if self._horizon[i] < j1]
            if not extra:
                break
            new += extra
        if new:
            self._pool = np.vstack([self._pool] + new)
        p = self._pool
        live = p[(p[:, 0] < j1) & (p[:, 1] > j0)]
        lo = np.maximum(np.ceil(live[:, 0]), j0).astype(np.int64)
        hi = np.minimum(np.ceil(live[:, 1]), j1).astype(np.int64)
        counts = np.maximum(hi - lo, 0)
        total = int(counts.sum())
        width = j1 - j0
        n_ch = len(BABBLE_VOWELS)
        if total == 0:
            power = np.zeros((n_ch, width))
        else:
            owner = np.repeat(np.arange(len(live)), counts)
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            j = lo[owner] + offsets
            x = (j - live[owner, 0]) / (live[owner, 1] - live[owner, 0])
            s2 = np.sin(math.pi * x) ** 2
            weight = live[owner, 3] * s2 * s2
            bins = live[owner, 2].astype(np.int64) * width + (j - j0)
            power = np.bincount(bins, weights=weight, minlength=n_ch * width).reshape(n_ch, width).astype(float)
        self._pool = p[p[:, 1] > j1]
        return np.sqrt(power * (self._power_scale * 12.0))  # 12: variance of uniform noise on (-0.5, 0.5) is 1/12

    def _render(self, start, n):
        env = self._envelope.per_sample(start, n)
        out = np.zeros(n)
        for c in range(len(self._sos)):
            excitation = self._noise[c].random(n)
            excitation -= 0.5
            excitation *= env[c]
            y, self._zi[c] = signal.sosfilt(self._sos[c], excitation, zi=self._zi[c])
            out += y
        return out


class DanceMusic(SoundSource):
    """Four-on-the-floor dance music from big loudspeakers: a kick on every beat (a sine gliding from 3·kick_hz to
    kick_hz, 0.16 s decay), an off-beat bass line (a sawtooth low-passed at 350 Hz on bass_hz, one of three
    patterns per bar, following a i-VI-III-VII progression), chord pads on key_hz (minor triads, four harmonics,
    two detuned copies), a clap on beats 2 and 4, and hi-hats on the sixteenths (open on the off-beats), the
    off-beat sixteenths delayed by `swing`. Everything is a precomputed template placed on the grid, so the cost
    is a few additions per sample. Most of the energy is below 200 Hz. Unit rms."""

    kind = "music"
    PROGRESSION = (0, 8, 3, 10)  # semitones above the roots: i - VI - III - VII
    BASS_PATTERNS = ((None, 0, None, 0, None, 0, None, 0),      # eighth notes, None: rest
                     (None, 0, None, 12, None, 0, None, 7),
                     (None, 0, 12, 0, None, 0, 10, 12))
    KICK, BASS, PAD, CLAP, HAT_CLOSED, HAT_OPEN = 1.0, 0.75, 0.035, 0.10, 0.03, 0.045  # mix gains

    def __init__(self, rate: int, seed: int, bpm: float, bass_hz: float, key_hz: float, swing: float,
                 kick_hz: float):
        super().__init__(rate, seed)
        template_seed, event_seed = _seeds(self.kind, seed, 2)
        rng = np.random.default_rng(template_seed)
        self._events = np.random.default_rng(event_seed)
        self.sixteenth = 60.0 * rate / bpm / 4.0  # samples
        self.swing = swing
        top = band_top_hz(rate)
        t = np.arange(int(0.45 * rate)) / rate
        glide = 0.03
        phase = kick_hz * t + 2.0 * kick_hz * glide * (1.0 - np.exp(-t / glide))
        kick = (1.0 - np.exp(-t / 0.001)) * np.exp(-t / 0.16) * np.sin(2.0 * math.pi * phase)
        click_n = int(0.004 * rate)
        click = signal.sosfilt(signal.butter(2, [1000.0, min(8000.0, 0.4 * rate)], "bandpass", fs=rate,
                                             output="sos"), rng.standard_normal(click_n))
        kick[:click_n] += 0.3 * click * np.exp(-np.arange(click_n) / (0.001 * rate))
        self._kick = _fade_ends(kick, rate)
        # bass: one template per (chord, pattern note), an eighth minus a little
        bass_len = int(2 * self.sixteenth * 0.85)
        tb = np.arange(bass_len) / rate
        bass_env = (1.0 - np.exp(-tb / 0.004)) * (0.6 + 0.4 * np.exp(-tb / 0.08))
        bass_env *= np.clip((bass_len - np.arange(bass_len)) / (0.02 * rate), 0.0, 1.0)
        self._bass = {}
        for r in self.PROGRESSION:
            for o in {o for p in self.BASS_PATTERNS for o in p if o is not None}:
                f = bass_hz * 2.0 ** ((r + o) / 12.0)
                h = np.arange(1, max(2, int(min(3000.0, top) / f)) + 1)
                table = harmonic_table((1.0 / h) / np.sqrt(1.0 + (h * f / 350.0) ** 4), 8192)
                self._bass[(r, o)] = table_tone(table, f, bass_len, rate) * bass_env
        # pads: one template per chord, a bar long plus a 0.3 s release
        bar = int(round(16 * self.sixteenth))
        release = int(0.3 * rate)
        tp = np.arange(bar + release)
        pad_env = np.minimum(1.0, tp / (0.12 * rate)) * np.clip((bar + release - tp) / release, 0.0, 1.0)
        pad_table = harmonic_table(np.array([1.0, 0.5, 0.3, 0.2]), 8192)
        self._pads = {}
        for r in self.PROGRESSION:
            chord = np.zeros(bar + release)
            for interval in (0, 3, 7):
                for cents in (-7.0, 7.0):
                    f = key_hz * 2.0 ** ((r + interval) / 12.0 + cents / 1200.0)
                    chord += table_tone(pad_table, f, bar + release, rate, rng.random())
            self._pads[r] = chord * pad_env
        # clap and hats: filtered noise bursts, three variants each
        def burst(length_s, band, decay_s, bursts=1):
            m = int(length_s * rate)
            x = signal.sosfilt(signal.butter(2, band, "bandpass", fs=rate, output="sos"), rng.standard_normal(m))
            tt = np.arange(m) / rate
            env = np.exp(-tt / decay_s)
            for b in range(1, bursts):
                env += np.where(tt >= 0.011 * b, np.exp(-(tt - 0.011 * b) / 0.004), 0.0)
            x = x * env
            return _fade_ends(x / np.max(np.abs(x)), rate)
        hat_band = [min(7000.0, 0.3 * rate), top]
        self._claps = [burst(0.25, [800.0, min(3000.0, 0.4 * rate)], 0.06, bursts=3) for _ in range(3)]
        self._hats_closed = [burst(0.06, hat_band, 0.012) for _ in range(3)]
        self._hats_open = [burst(0.3, hat_band, 0.07) for _ in range(3)]
        self._track = EventTrack()
        self._bar = 0
        self._gain = 1.0 / self._reference_rms()

    def _at(self, sixteenth: int) -> int:
        """Sample where the given sixteenth (counted from 0) starts; odd ones are delayed by the swing."""
        return int(round((sixteenth + (self.swing if sixteenth % 2 else 0.0)) * self.sixteenth))

    def _bar_events(self, bar: int, rng: np.random.Generator, track: EventTrack) -> None:
        s0 = 16 * bar
        r = self.PROGRESSION[bar % len(self.PROGRESSION)]
        pattern = self.BASS_PATTERNS[int(rng.integers(0, len(self.BASS_PATTERNS)))]
        hat_gain = rng.uniform(0.6, 1.0, 16)
        hat_pick = rng.integers(0, 3, 16)
        hat_drop = rng.random(16) < 0.2
        clap_pick = rng.integers(0, 3, 2)
        track.add(self._at(s0), self._pads[r], self.PAD)
        for beat in range(4):
            track.add(self._at(s0 + 4 * beat), self._kick, self.KICK)
        for i, o in enumerate(pattern):
            if o is not None:
                track.add(self._at(s0 + 2 * i), self._bass[(r, o)], self.BASS)
        for k, beat in enumerate((1, 3)):
            track.add(self._at(s0 + 4 * beat), self._claps[clap_pick[k]], self.CLAP)
        for i in range(16):
            if i % 4 == 2:
                track.add(self._at(s0 + i), self._hats_open[hat_pick[i]], self.HAT_OPEN * hat_gain[i])
            elif i % 2 == 1 and not hat_drop[i]:
                track.add(self._at(s0 + i), self._hats_closed[hat_pick[i]], self.HAT_CLOSED * hat_gain[i])

    def _reference_rms(self) -> float:
        """rms of 8 bars drawn with a fixed generator, from the events' energies (templates summed in power)."""
        track, rng = EventTrack(), np.random.default_rng(0)
        for b in range(8):
            self._bar_events(b, rng, track)
        return track.rms_if_added_in_power(self._at(16 * 8))

    def _render(self, start, n):
        while self._at(16 * self._bar) < start + n:
            self._bar_events(self._bar, self._events, self._track)
            self._bar += 1
        out = np.zeros(n)
        self._track.mix_into(out, start)
        out *= self._gain
        return out


class DrumTeam(SoundSource):
    """A drum team: big-drum hits (bpm·hits_per_beat per minute, timing jitter jitter_ms) of four drums, each a
    low membrane tone (60-95 Hz with modes at 1.59 and 2.14 times, pitch settling in 40 ms, 0.11 s decay) plus a
    stick noise; every accent_every-th hit is accented (about 8 dB louder, half the time with hand cymbals); now and
    then (about every 20 s, on an accent) a gong. Impulsive: crest factor about 9, the LCpeak and LAFmax case.
    Templates placed on the beat grid; unit rms."""

    kind = "drums"
    ACCENT, NORMAL, CYMBAL, GONG = 1.0, (0.3, 0.5), 0.22, 0.5
    CYMBAL_CHANCE, GONG_EVERY_S = 0.5, 20.0

    def __init__(self, rate: int, seed: int, bpm: float, hits_per_beat: int, accent_every: int, jitter_ms: float):
        super().__init__(rate, seed)
        template_seed, event_seed = _seeds(self.kind, seed, 2)
        rng = np.random.default_rng(template_seed)
        self._events = np.random.default_rng(event_seed)
        self.spacing = 60.0 * rate / bpm / hits_per_beat  # samples between hits
        self.accent_every = accent_every
        self.jitter = jitter_ms * 1e-3 * rate
        self._jitter_max = int(math.ceil(3.0 * self.jitter))
        top = band_top_hz(rate)
        t = np.arange(int(0.6 * rate)) / rate
        self._drums = []
        for f0 in rng.uniform(60.0, 95.0, 4):
            x = np.zeros_like(t)
            for ratio, amp, decay in ((1.0, 1.0, 0.11), (1.59, 0.5, 0.07), (2.14, 0.25, 0.05)):
                phase = ratio * f0 * (t + 0.25 * 0.04 * (1.0 - np.exp(-t / 0.04)))
                x += amp * np.exp(-t / decay) * np.sin(2.0 * math.pi * phase + rng.uniform(0, 0.3))
            m = int(0.05 * rate)
            stick = signal.sosfilt(signal.butter(2, [150.0, min(2500.0, 0.4 * rate)], "bandpass", fs=rate,
                                                 output="sos"), rng.standard_normal(m))
            x[:m] += 0.5 * stick / np.std(stick) * np.exp(-np.arange(m) / (0.008 * rate))
            x *= 1.0 - np.exp(-t / 0.0008)
            self._drums.append(_fade_ends(x / np.max(np.abs(x)), rate, 0.03))
        tc = np.arange(int(1.5 * rate)) / rate
        self._cymbals = []
        for _ in range(2):
            x = signal.sosfilt(signal.butter(2, [3000.0, top], "bandpass", fs=rate, output="sos"),
                               rng.standard_normal(len(tc)))
            for f in rng.uniform(400.0, 1200.0, 5):
                x += 0.5 * np.sin(2 * math.pi * f * tc + rng.uniform(0, 2 * math.pi))
            x *= (1.0 - np.exp(-tc / 0.002)) * np.exp(-tc / 0.3)
            self._cymbals.append(_fade_ends(x / np.max(np.abs(x)), rate, 0.05))
        tg = np.arange(int(4.0 * rate)) / rate
        gong = np.zeros_like(tg)
        fg = rng.uniform(90.0, 130.0)
        for ratio, amp, decay in ((1.0, 1.0, 2.5), (1.48, 0.7, 2.0), (2.03, 0.5, 1.6), (2.56, 0.4, 1.2),
                                  (3.21, 0.3, 0.9), (4.12, 0.2, 0.6)):
            gong += amp * np.exp(-tg / decay) * np.sin(2 * math.pi * ratio * fg * tg + rng.uniform(0, 2 * math.pi))
        gong *= 1.0 - np.exp(-tg / 0.02)
        self._gong = _fade_ends(gong / np.max(np.abs(gong)), rate, 0.2)
        self._gong_chance = min(1.0, accent_every * self.spacing / rate / self.GONG_EVERY_S)
        self._track = EventTrack()
        self._hit = 0
        self._gain = 1.0 / self._reference_rms()

    def _hit_events(self, i: int, rng: np.random.Generator, track: EventTrack) -> None:
        jitter, drum, level, cymbal, gong, which = (rng.normal(), rng.integers(0, 4), rng.random(), rng.random(),
                                                     rng.random(), rng.integers(0, 2))
        at = int(round(i * self.spacing + float(np.clip(jitter, -3, 3)) * self.jitter))
        at = max(at, 0)
        if i % self.accent_every == 0:
            track.add(at, self._drums[drum], self.ACCENT * (0.9 + 0.1 * level))
            if cymbal < self.CYMBAL_CHANCE:
                track.add(at, self._cymbals[which], self.CYMBAL)
            if gong < self._gong_chance:
                track.add(at, self._gong, self.GONG)
        else:
            lo, hi = self.NORMAL
            track.add(at, self._drums[drum], lo + (hi - lo) * level)

    def _reference_rms(self) -> float:
        """rms of 120 s of hits drawn with a fixed generator, from the events' energies (summed in power), the gong
        counted at its long-term rate."""
        track, rng = EventTrack(), np.random.default_rng(0)
        chance, self._gong_chance = self._gong_chance, 0.0
        n_hits = int(120.0 * self.rate / self.spacing)
        for i in range(n_hits):
            self._hit_events(i, rng, track)
        self._gong_chance = chance
        duration = n_hits * self.spacing
        gong_power = self.GONG ** 2 * float(np.sum(self._gong ** 2)) * chance / (self.accent_every * self.spacing)
        return math.sqrt(track.rms_if_added_in_power(int(duration)) ** 2 + gong_power)

    def _render(self, start, n):
        while self._hit * self.spacing - self._jitter_max < start + n:
            self._hit_events(self._hit, self._events, self._track)
            self._hit += 1
        out = np.zeros(n)
        self._track.mix_into(out, start)
        out *= self._gain
        return out


class SingingGroup(SoundSource):
    """A singing group through a small PA: `voices` singers detuned by detune_cents (standard deviation), each a
    wavetable voice (harmonics falling 9 dB/octave, shaped by the formants of the syllable's vowel, the PA's band
    150 Hz - 8 kHz) with vibrato vibrato_hz of relative depth vibrato_depth (its phase in closed form from the
    sample index, a different vibrato phase per singer). Phrases of 5-7 syllables (syllable_hz, the last one
    long) on a pentatonic tune whose most frequent note is f0_hz (or all on f0_hz when melody = 0), then a breath
    of 0.4-1.2 s. Syllables start and end with 30 / 60 ms ramps. Unit rms on average."""

    kind = "voice"
    TUNES = ((0, 2, 4, 2, 0), (4, 4, 2, 0, 2, 0), (0, -3, 0, 2, 4, 2, 0), (7, 4, 2, 4, 2, 0), (-5, -3, 0, 0, 2, 0),
             (0, 0, 2, 4, 0, 0))
    NOTES = (-5, -3, 0, 2, 4, 7)   # semitones above f0_hz used by the tunes
    VOWELS = tuple(VOWEL_FORMANTS_HZ)
    TABLE = 8192
    ATTACK_S, RELEASE_S = 0.03, 0.06
    BREATH_S = (0.4, 1.2)

    def __init__(self, rate: int, seed: int, f0_hz: float, vibrato_hz: float, vibrato_depth: float, voices: int,
                 detune_cents: float, syllable_hz: float, melody: int):
        super().__init__(rate, seed)
        voice_seed, event_seed = _seeds(self.kind, seed, 2)
        rng = np.random.default_rng(voice_seed)
        self._events = np.random.default_rng(event_seed)
        self.f0_hz, self.melody, self.syllable_s = f0_hz, melody, 1.0 / syllable_hz
        top = min(8000.0, band_top_hz(rate))
        pa = np.vstack([signal.butter(2, 150.0, "highpass", fs=rate, output="sos"),
                        signal.butter(2, top, "lowpass", fs=rate, output="sos")])
        self._tables = {}
        for note in (self.NOTES if melody else (0,)):
            f = f0_hz * 2.0 ** (note / 12.0)
            h = np.arange(1, max(1, int(top / (f * (1.0 + vibrato_depth) * 2.0 ** (3 * detune_cents / 1200)))) + 1)
            for v, vowel in enumerate(self.VOWELS):
                _, resp = signal.sosfreqz(np.vstack([pa, formant_sos(vowel, rate)]), worN=h * f, fs=rate)
                self._tables[(note, v)] = harmonic_table(h ** -1.5 * np.abs(resp), self.TABLE)
        detune = 2.0 ** (rng.normal(0.0, detune_cents, voices) / 1200.0)
        self._cycles = f0_hz * detune / rate                 # cycles per sample of each singer on f0_hz
        vib_phase = rng.uniform(0.0, 2.0 * math.pi, voices)
        self._cos_psi, self._sin_psi = np.cos(vib_phase), np.sin(vib_phase)
        self._vib_cycles = vibrato_hz / rate
        self._vibrato = vibrato_hz > 0 and vibrato_depth > 0
        # phase(k) = c·(k - s) - c·depth/(2π·vc)·(cos(θ(k)+ψ) - cos(θ(s)+ψ)), θ(k) = 2π·vc·k
        self._depth_term = vibrato_depth / (2.0 * math.pi * self._vib_cycles) if self._vibrato else 0.0
        self._vib_table = np.cos(2.0 * math.pi * np.arange(4096) / 4096)
        self._syllables: list[tuple] = []   # (start, end, note, vowel index, start phase per voice)
        self._scheduled_until = 0
        # unit rms: voices add in power; the envelope's mean square from the phrase statistics
        mean_tune = np.mean([len(t) + 1 for t in self.TUNES]) * self.syllable_s * rate  # last syllable double
        mean_syllables = np.mean([len(t) for t in self.TUNES])
        ramp_loss = mean_syllables * (2.0 / 3.0) * (self.ATTACK_S + self.RELEASE_S) * rate
        mean_breath = np.mean(self.BREATH_S) * rate
        self._gain = 1.0 / math.sqrt(voices * (mean_tune - ramp_loss) / (mean_tune + mean_breath))

    def _schedule_phrase(self) -> None:
        rng = self._events
        tune = self.TUNES[int(rng.integers(0, len(self.TUNES)))]
        lengths = self.syllable_s * rng.uniform(0.9, 1.1, len(tune))
        lengths[-1] *= 2.0
        vowels = rng.integers(0, len(self.VOWELS), len(tune))
        phases = rng.random((len(tune), len(self._cycles)))
        breath = rng.uniform(*self.BREATH_S)
        t = self._scheduled_until
        for i, note in enumerate(tune):
            n = int(round(lengths[i] * self.rate))
            self._syllables.append((t, t + n, note if self.melody else 0, int(vowels[i]), phases[i]))
            t += n
        self._scheduled_until = t + int(round(breath * self.rate))

    def _render(self, start, n):
        end = start + n
        while self._scheduled_until < end:
            self._schedule_phrase()
        out = np.zeros(n)
        keep = []
        for syl in self._syllables:
            if syl[1] > end:
                keep.append(syl)
            if syl[0] < end and syl[1] > start:
                self._sing(syl, start, out)
        self._syllables = keep
        out *= self._gain
        return out

    def _sing(self, syllable: tuple, start: int, out: np.ndarray, block: int = 2048) -> None:
        """Add the part of one syllable that falls in out (which begins at sample start), in cache-sized blocks.

        The wavetable index of each singer is, in table steps, C·(k - s) + K - P·cos θ(k) + Q·sin θ(k): the
        closed-form phase of a vibrato sin(θ(k) + ψ) around the note, k the absolute sample index, s the
        syllable's first sample."""
        s, e, note, vowel, phase0 = syllable
        size = self.TABLE
        table = self._tables[(note, vowel)]
        c = self._cycles * (2.0 ** (note / 12.0))
        coef_c = (c * size)[:, None]
        offset = phase0 + 2.0  # +2 cycles: keep the index positive under the vibrato
        if self._vibrato:
            amp = c * self._depth_term
            ts = s * self._vib_cycles
            i_s = int((ts - math.floor(ts)) * 4096) & 4095
            cos_s, sin_s = self._vib_table[i_s], self._vib_table[(i_s - 1024) & 4095]
            offset = offset + amp * (cos_s * self._cos_psi - sin_s * self._sin_psi)
            coef_p = (amp * self._cos_psi * size)[:, None]
            coef_q = (amp * self._sin_psi * size)[:, None]
        coef_k = (offset * size)[:, None]
        inv_attack, inv_release = 1.0 / (self.ATTACK_S * self.rate), 1.0 / (self.RELEASE_S * self.rate)
        a, b = max(s, start), min(e, start + len(out))
        for a0 in range(a, b, block):
            b0 = min(b, a0 + block)
            k = np.arange(a0, b0, dtype=np.float64)
            since = k - s
            env = np.minimum(since * inv_attack, (e - k) * inv_release)
            np.minimum(env, 1.0, out=env)
            index = coef_c * since
            index += coef_k
            if self._vibrato:
                theta = k * self._vib_cycles
                theta -= np.floor(theta)
                theta *= 4096.0
                vi = theta.astype(np.intp)
                vi &= 4095
                index -= coef_p * self._vib_table[vi]
                vi -= 1024
                vi &= 4095
                index += coef_q * self._vib_table[vi]
            ii = index.astype(np.intp)
            ii &= size - 1
            voices = np.take(table, ii).sum(axis=0)
            voices *= env
            out[a0 - start:b0 - start] += voices


_CLASSES = {"music": DanceMusic, "voice": SingingGroup, "drums": DrumTeam, "babble": CrowdBabble,
            "traffic": RoadTraffic, "tone": Tone, "pink": PinkNoise}


def make_source(kind: str, rate: int, seed: int, **params) -> SoundSource:
    """A fresh source of the given kind (see SOURCE_KINDS); missing params take their defaults.

    Raises ValueError (one line, naming the kind or parameter and the allowed range) for an unknown kind or
    parameter, a value out of range, a fraction where a whole number is needed, a bad rate or seed."""
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {kind!r}; known: {', '.join(SOURCE_KINDS)}")
    spec = SOURCE_KINDS[kind]
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"{kind}: rate must be a whole number of Hz in [{MIN_RATE}, {MAX_RATE}], got {rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{kind}: seed must be a whole number >= 0, got {seed!r}")
    values = {}
    for name, value in params.items():
        if name not in spec:
            raise ValueError(f"unknown parameter {name!r} for source kind {kind!r}; known: {', '.join(spec)}")
        default, lo, hi = spec[name][:3]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{kind}: parameter {name} must be a number, got {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{kind}: parameter {name} = {value!r} is out of range [{lo:g}, {hi:g}]")
        if isinstance(default, int):
            if value != int(value):
                raise ValueError(f"{kind}: parameter {name} must be a whole number in [{lo}, {hi}], got {value!r}")
            value = int(value)
        else:
            value = float(value)
        values[name] = value
    resolved = {name: values.get(name, entry[0]) for name, entry in spec.items()}
    source = _CLASSES[kind](int(rate), int(seed), **resolved)
    source.params = resolved
    return source
