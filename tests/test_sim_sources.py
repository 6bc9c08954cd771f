"""Synthetic sound sources (sim/sources.py): streaming in chunks, determinism, each kind's character, parameters.

Each test names the property of the brief it checks. Nothing here asserts on time (bench/bench_sources.py measures
speed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from slm.sim.sources import SOURCE_KINDS, make_source

KINDS = list(SOURCE_KINDS)
RATE = 48000


def render(kind: str, seconds: float, rate: int = RATE, seed: int = 1, chunk: int = 24000, **params) -> np.ndarray:
    src = make_source(kind, rate, seed, **params)
    n = int(round(seconds * rate))
    return np.concatenate([src.render(min(chunk, n - i)) for i in range(0, n, chunk)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


def frame_levels_db(x: np.ndarray, frame: int) -> np.ndarray:
    m = len(x) // frame * frame
    return 10.0 * np.log10(np.mean(x[:m].reshape(-1, frame) ** 2, axis=1) + 1e-30)


def power_below(x: np.ndarray, f_hz: float, rate: int = RATE) -> float:
    """Share of the signal's power below f_hz (Welch)."""
    f, p = signal.welch(x, rate, nperseg=1 << 15)
    return float(p[f < f_hz].sum() / p.sum())


def envelope_period_s(x: np.ndarray, expected_s: float, rate: int = RATE) -> float:
    """Lag of the highest autocorrelation of the 5 ms rms envelope between 0.5 and 1.5 times expected_s."""
    hop = rate // 200
    env = np.sqrt(np.mean(x[:len(x) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    env -= env.mean()
    ac = signal.correlate(env, env, mode="full", method="fft")[len(env) - 1:]
    lo, hi = int(0.5 * expected_s * 200), int(1.5 * expected_s * 200) + 1
    return (lo + int(np.argmax(ac[lo:hi]))) / 200.0


# --- streaming: chunking invariance and determinism -------------------------------------------------------------

STREAM_S = 3.0  # covers bar and phrase boundaries, several control blocks and many events


@pytest.fixture(scope="module")
def whole_streams():
    """Each kind rendered in one call of STREAM_S seconds (the reference)."""
    return {kind: make_source(kind, RATE, 11).render(int(STREAM_S * RATE)) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunking", ["333", "48000", "random split", "1 then rest"])
def test_chunks_concatenate_to_the_same_stream(kind, chunking, whole_streams):
    """The concatenation of chunks is identical, bit for bit, for any chunking (state carried across calls).
    '1 then rest': the first 0.5 s one sample per call, then the rest in one call."""
    whole = whole_streams[kind]
    n = len(whole)
    src = make_source(kind, RATE, 11)
    if chunking == "1 then rest":
        sizes = [1] * (RATE // 2) + [n - RATE // 2]
    elif chunking == "random split":
        rng = np.random.default_rng(5)
        sizes = []
        while sum(sizes) < n:
            sizes.append(int(min(n - sum(sizes), rng.choice([0, 1, 7, 480, 1023, 4800, 17000]) + rng.integers(0, 5))))
    else:
        step = int(chunking)
        sizes = [min(step, n - i) for i in range(0, n, step)]
    parts = [src.render(k) for k in sizes]
    assert all(len(p) == k and p.dtype == np.float64 for p, k in zip(parts, sizes))
    assert np.array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("chunking", ["333", "1 then rest"])
def test_babble_synthesis_behind_its_block_buffer_is_chunk_invariant(chunking):
    """babble synthesises in fixed blocks (SoundSource.block); with the buffer off its synthesis itself must be
    invariant too, so that the state it carries is right wherever a block ends."""
    n = int(STREAM_S * RATE)
    reference = make_source("babble", RATE, 11)
    assert reference.block > 0
    whole = reference.render(n)
    src = make_source("babble", RATE, 11)
    src.block = 0
    sizes = [333] * (n // 333) + [n % 333] if chunking == "333" else [1] * (RATE // 2) + [n - RATE // 2]
    assert np.array_equal(np.concatenate([src.render(k) for k in sizes]), whole)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rate", [16000, 44100])
def test_chunking_invariance_at_other_rates(kind, rate):
    src_a, src_b = make_source(kind, rate, 3), make_source(kind, rate, 3)
    n = int(2.5 * rate)
    a = src_a.render(n)
    b = np.concatenate([src_b.render(k) for k in [1, 99, 1000, 3333, rate] + [n - rate - 4433]])
    assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_output_different_seed_different(kind):
    a = make_source(kind, RATE, 123).render(RATE)
    b = make_source(kind, RATE, 123).render(RATE)
    c = make_source(kind, RATE, 124).render(RATE)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(np.isfinite(a))


def test_render_zero_and_negative():
    src = make_source("pink", RATE, 0)
    assert src.render(0).shape == (0,)
    with pytest.raises(ValueError, match="n must be >= 0"):
        src.render(-1)


# --- level: roughly unit rms, every rate ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_roughly_unit_rms(kind):
    """rms of 20 s within ±2 dB of 1 (the tone: unit amplitude, rms 1/√2)."""
    x = render(kind, 20.0)
    if kind == "tone":
        assert rms(x) == pytest.approx(1 / math.sqrt(2), rel=1e-6)
        # sampled peaks of a unit sine: at most 1, at least cos(π f / rate) (a sample within half a step of the crest)
        assert math.cos(math.pi * 1000.0 / RATE) - 1e-12 <= np.max(np.abs(x)) <= 1.0
    else:
        assert abs(20 * math.log10(rms(x))) < 2.0, rms(x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rate", [16000, 22050, 32000, 44100, 48000])
def test_every_rate_from_16_to_48_khz_works(kind, rate):
    x = render(kind, 4.0, rate=rate, chunk=rate // 2)
    assert len(x) == 4 * rate and np.all(np.isfinite(x))
    assert 0.25 < rms(x) < 4.0


# --- music -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bpm", [90.0, 124.0, 150.0])
def test_music_has_its_beat(bpm):
    """The envelope's autocorrelation peaks at 60/bpm s (within 2 %, between half and one and a half beats)."""
    x = render("music", 20.0, bpm=bpm)
    assert envelope_period_s(x, 60.0 / bpm) == pytest.approx(60.0 / bpm, rel=0.02)


def test_music_energy_is_mostly_below_200_hz():
    assert power_below(render("music", 20.0), 200.0) > 0.6


def test_music_is_band_limited_to_16_khz():
    x = render("music", 10.0)
    f, p = signal.welch(x, RATE, nperseg=8192)
    assert p[f > 17000].sum() / p.sum() < 1e-4


@pytest.mark.parametrize("bass_hz", [45.0, 70.0])
def test_music_bass_follows_bass_hz(bass_hz):
    """The strongest spectral line below 100 Hz other than the kick is the bass root (or its octave, fifth)."""
    x = render("music", 20.0, bass_hz=bass_hz, kick_hz=90.0)
    f, p = signal.welch(x, RATE, nperseg=1 << 16)
    band = (f > 30) & (f < 85)
    peak = f[band][np.argmax(p[band])]
    roots = [bass_hz * 2 ** (r / 12) for r in (0, 3, 8, 10)]
    assert min(abs(peak / r - 1) for r in roots) < 0.02


# --- voice -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("f0", [220.0, 300.0])
def test_voice_spectral_peak_at_f0(f0):
    """The strongest spectral line is the tonic f0_hz (within 2 %), with the default tune and four singers."""
    x = render("voice", 30.0, f0_hz=f0)
    f, p = signal.welch(x, RATE, nperseg=1 << 14)
    assert f[np.argmax(p)] == pytest.approx(f0, rel=0.02)


def _vibrato_fit(x: np.ndarray, f0: float, fv: float):
    """Relative frequency deviation of the fundamental (band-pass, Hilbert) fitted by a sine at fv over the sung
    samples: (amplitude, share of variance explained)."""
    y = signal.sosfiltfilt(signal.butter(4, [0.7 * f0, 1.4 * f0], "bandpass", fs=RATE, output="sos"), x)
    z = signal.hilbert(y)
    inst = np.diff(np.unwrap(np.angle(z))) * RATE / (2 * math.pi)
    amp = np.abs(z)[1:]
    sung = amp > 0.5 * np.percentile(amp, 99)
    t = np.arange(1, len(x)) / RATE
    m = np.column_stack([np.sin(2 * math.pi * fv * t), np.cos(2 * math.pi * fv * t), np.ones_like(t)])[sung]
    d = inst[sung] / f0 - 1
    coef = np.linalg.lstsq(m, d, rcond=None)[0]
    explained = 1 - np.sum((d - m @ coef) ** 2) / np.sum((d - d.mean()) ** 2)
    return math.hypot(coef[0], coef[1]), explained


@pytest.mark.parametrize("fv,depth", [(5.5, 0.02), (4.0, 0.04)])
def test_voice_vibrato_rate_and_depth(fv, depth):
    """One singer on f0: the fundamental's frequency swings at vibrato_hz by ±vibrato_depth (within 15 %)."""
    x = render("voice", 10.0, voices=1, melody=0, vibrato_hz=fv, vibrato_depth=depth)
    amplitude, explained = _vibrato_fit(x, 220.0, fv)
    assert amplitude == pytest.approx(depth, rel=0.15)
    assert explained > 0.9
    assert _vibrato_fit(x, 220.0, 0.6 * fv)[1] < 0.1


def test_voice_without_vibrato_holds_its_pitch():
    x = render("voice", 5.0, voices=1, melody=0, vibrato_depth=0.0)
    amplitude, _ = _vibrato_fit(x, 220.0, 5.5)
    assert amplitude < 0.001


def test_voice_phrases_have_pauses():
    """Phrases end in breaths: at least 10 % of 50 ms frames are 30 dB below the median."""
    levels = frame_levels_db(render("voice", 30.0), RATE // 20)
    assert np.mean(levels < np.median(levels) - 30.0) > 0.1


def test_voice_singers_are_detuned():
    """Four singers beat against each other: the fundamental's envelope fluctuates more than one singer's."""
    def envelope_spread(voices):
        x = render("voice", 10.0, voices=voices, melody=0, vibrato_depth=0.0)
        y = signal.sosfiltfilt(signal.butter(4, [180, 260], "bandpass", fs=RATE, output="sos"), x)
        a = np.abs(signal.hilbert(y))
        a = a[a > 0.3 * np.percentile(a, 99)]
        return np.std(a) / np.mean(a)
    assert envelope_spread(4) > 1.5 * envelope_spread(1)


# --- drums -------------------------------------------------------------------------------------------------------

def test_drums_are_impulsive():
    """Crest factor (peak / rms) >= 4: the LCpeak / LAFmax case."""
    x = render("drums", 30.0)
    assert np.max(np.abs(x)) / rms(x) >= 4.0


def test_drums_energy_in_low_frequencies():
    assert power_below(render("drums", 30.0), 200.0) > 0.6


@pytest.mark.parametrize("bpm,hits", [(120.0, 2), (90.0, 1)])
def test_drums_hit_on_the_grid(bpm, hits):
    """The envelope repeats every hit (60/bpm/hits_per_beat s) within 3 % despite the jitter."""
    x = render("drums", 30.0, bpm=bpm, hits_per_beat=hits, accent_every=1)
    period = 60.0 / bpm / hits
    assert envelope_period_s(x, period) == pytest.approx(period, rel=0.03)


def test_drums_accents_repeat_every_accent_every_hits():
    x = render("drums", 30.0, bpm=120.0, hits_per_beat=2, accent_every=4)
    assert envelope_period_s(x, 1.0) == pytest.approx(1.0, rel=0.03)


# --- babble ------------------------------------------------------------------------------------------------------

def test_babble_is_roughly_stationary():
    """1 s levels of 20 talkers within ±3 dB of their mean over 60 s."""
    levels = frame_levels_db(render("babble", 60.0), RATE)
    assert np.max(np.abs(levels - levels.mean())) < 3.0


def test_babble_is_speech_shaped():
    """Long-term spectrum peaks between 200 Hz and 1 kHz; < 10 % of the power above 4 kHz, < 3 % below 100 Hz."""
    x = render("babble", 30.0)
    f, p = signal.welch(x, RATE, nperseg=8192)
    assert 200.0 < f[np.argmax(p)] < 1000.0
    assert p[f > 4000].sum() / p.sum() < 0.1
    assert p[f < 100].sum() / p.sum() < 0.03


@pytest.mark.parametrize("syllable_hz", [3.0, 5.0])
def test_one_talker_modulates_at_the_syllable_rate(syllable_hz):
    """One talker's envelope spectrum peaks at syllable_hz (±30 %) between 1.5 and 12 Hz (below: talk spurts)."""
    x = render("babble", 60.0, talkers=1, syllable_hz=syllable_hz)
    env = np.sqrt(np.mean(x.reshape(-1, 480) ** 2, axis=1))
    f, p = signal.welch(env - env.mean(), 100.0, nperseg=1024)
    band = (f > 1.5) & (f < 12.0)
    assert f[band][np.argmax(p[band])] == pytest.approx(syllable_hz, rel=0.3)


def test_more_talkers_fluctuate_less():
    def spread(talkers):
        return np.std(frame_levels_db(render("babble", 30.0, talkers=talkers), RATE // 8))
    assert spread(20) < 0.5 * spread(2)


# --- traffic -----------------------------------------------------------------------------------------------------

def test_traffic_energy_below_1_khz():
    """Road-traffic spectrum: >= 80 % of the power below 1 kHz, >= 60 % in the 63-1000 Hz octaves."""
    x = render("traffic", 60.0)
    assert power_below(x, 1000.0) >= 0.8
    assert power_below(x, 1000.0) - power_below(x, 44.0) >= 0.6


def test_traffic_pass_bys_swell():
    """Without pass-bys and drift the 1 s levels are steady (std < 0.5 dB: only the noise's own spread);
    pass-bys make them swing (L10 - L90 > 3 dB)."""
    steady = frame_levels_db(render("traffic", 60.0, vehicles_per_minute=0, fluctuation_db=0), RATE)
    busy = frame_levels_db(render("traffic", 120.0, vehicles_per_minute=6, fluctuation_db=0), RATE)
    assert np.std(steady) < 0.5
    assert np.percentile(busy, 90) - np.percentile(busy, 10) > 3.0


def test_traffic_drifts_slowly():
    """fluctuation_db = 3: 1 s levels spread by about 3 dB, but neighbouring seconds differ by a fifth of that."""
    levels = frame_levels_db(render("traffic", 180.0, vehicles_per_minute=0, fluctuation_db=3.0), RATE)
    assert 1.5 < np.std(levels) < 4.5
    assert np.std(np.diff(levels)) < 0.2 * np.std(levels)


# --- tone --------------------------------------------------------------------------------------------------------

def _frequency(x: np.ndarray, rate: int) -> float:
    """Frequency from the slope of the analytic signal's phase over the middle of x."""
    phase = np.unwrap(np.angle(signal.hilbert(x)))
    m = len(x) // 4
    t = np.arange(m, 3 * m) / rate
    return float(np.polyfit(t, phase[m:3 * m], 1)[0] / (2 * math.pi))


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
@pytest.mark.parametrize("f,err", [(1000.0, 0.0), (1000.0, 0.007), (1000.0, -0.004), (250.0, 0.0031)])
def test_tone_frequency(rate, f, err):
    """Frequency within 1e-6 relative of frequency_hz·(1+frequency_error)."""
    x = render("tone", 2.0, rate=rate, chunk=777, frequency_hz=f, frequency_error=err)
    assert _frequency(x, rate) == pytest.approx(f * (1 + err), rel=1e-6)


# --- pink --------------------------------------------------------------------------------------------------------

def test_pink_slope_is_minus_3_db_per_octave():
    """PSD (Welch) falls 3 ± 0.5 dB per octave between 50 Hz and 8 kHz: octave by octave and as a fitted line."""
    x = render("pink", 60.0)
    f, p = signal.welch(x, RATE, nperseg=1 << 14)
    centres = 63.0 * 2.0 ** np.arange(8)  # 63 Hz .. 8 kHz
    band_psd_db = np.array([10 * np.log10(np.mean(p[(f >= c / 2 ** 0.5) & (f < c * 2 ** 0.5)])) for c in centres])
    steps = np.diff(band_psd_db)
    assert np.all(np.abs(steps + 3.0) < 0.5), steps
    sel = (f >= 50) & (f <= 8000)
    slope = np.polyfit(np.log2(f[sel]), 10 * np.log10(p[sel]), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.5)


def test_pink_band_edges():
    """f_low / f_high: 10 dB down an octave outside the band (relative to the 1/f line)."""
    x = render("pink", 30.0, f_low=100.0, f_high=4000.0)
    f, p = signal.welch(x, RATE, nperseg=1 << 14)
    line = lambda fx: np.mean(p[(f > 400) & (f < 800)] * f[(f > 400) & (f < 800)]) / fx  # noqa: E731

    def band(lo, hi):
        sel = (f >= lo) & (f < hi)
        return 10 * np.log10(np.mean(p[sel]) / np.mean(line(f[sel])))
    assert band(40, 50) < -10.0
    assert band(8000, 9000) < -10.0
    assert abs(band(200, 2000)) < 0.5


# --- parameters --------------------------------------------------------------------------------------------------

def test_source_kinds_table_is_consistent():
    for kind, spec in SOURCE_KINDS.items():
        for name, entry in spec.items():
            default, lo, hi, description = entry
            assert lo <= default <= hi and isinstance(description, str) and description, (kind, name)
        make_source(kind, RATE, 0, **{name: entry[0] for name, entry in spec.items()})


def test_unknown_kind_names_it():
    with pytest.raises(ValueError, match="unknown source kind 'trumpet'") as e:
        make_source("trumpet", RATE, 0)
    assert "\n" not in str(e.value)


def test_unknown_param_names_it():
    with pytest.raises(ValueError, match="unknown parameter 'tempo' for source kind 'music'") as e:
        make_source("music", RATE, 0, tempo=120)
    assert "\n" not in str(e.value) and "bpm" in str(e.value)


@pytest.mark.parametrize("kind,name", [(k, n) for k in KINDS for n in SOURCE_KINDS[k]])
def test_out_of_range_names_the_param_and_range(kind, name):
    default, lo, hi, _ = SOURCE_KINDS[kind][name]
    for bad in (lo - 1, hi + 1, float("nan")):
        with pytest.raises(ValueError, match=rf"parameter {name} .*\[{lo:g}, {hi:g}\]") as e:
            make_source(kind, RATE, 0, **{name: bad})
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind,name", [(k, n) for k in KINDS for n, e in SOURCE_KINDS[k].items()
                                       if isinstance(e[0], int)])
def test_whole_number_params_refuse_fractions(kind, name):
    default, lo, hi, _ = SOURCE_KINDS[kind][name]
    with pytest.raises(ValueError, match=f"{name} must be a whole number"):
        make_source(kind, RATE, 0, **{name: lo + 0.5})


def test_non_numbers_are_refused():
    with pytest.raises(ValueError, match="bpm must be a number"):
        make_source("music", RATE, 0, bpm="fast")
    with pytest.raises(ValueError, match="voices must be a number"):
        make_source("voice", RATE, 0, voices=True)


def test_bad_rate_and_seed():
    with pytest.raises(ValueError, match="rate"):
        make_source("pink", 1000, 0)
    with pytest.raises(ValueError, match="rate"):
        make_source("pink", 48000.0, 0)
    with pytest.raises(ValueError, match="seed"):
        make_source("pink", RATE, -1)


def test_tone_above_nyquist_names_frequency_hz():
    with pytest.raises(ValueError, match="frequency_hz"):
        make_source("tone", 16000, 0, frequency_hz=8000.0)


def test_pink_band_must_be_open():
    with pytest.raises(ValueError, match="f_low"):
        make_source("pink", RATE, 0, f_low=5000.0, f_high=6000.0)


def test_params_are_resolved_on_the_source():
    src = make_source("drums", RATE, 0, bpm=100)
    assert src.params["bpm"] == 100.0 and src.params["hits_per_beat"] == 2
    assert src.kind == "drums" and src.rate == RATE
