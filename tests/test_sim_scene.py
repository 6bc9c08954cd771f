"""The simulator end to end: `slm sim` files, determinism, bounded memory, physics of the scene, the microphone model,
and the firmware (through `slm measure` on MicroPython) against the simulator's ground truth."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from slm.measure import measure_file
from slm.sim.microphone import MIC_MODELS, Microphone, full_scale_pa
from slm.sim.scenario import Meter, Scenario, Source, load_scenario
from slm.sim.scene import SceneStream, simulate
from slm.sim.truth import TruthMeter
from slm.wav_io import read_header


def ideal(sc: Scenario) -> Scenario:
    return dataclasses.replace(sc, meters=tuple(dataclasses.replace(m, ideal=True) for m in sc.meters))


def two_source_scene(tmp_path, both: bool) -> Scenario:
    src = [Source(id="a", kind="pink", position_m=(10.0, 0.0, 2.0), level_dba_at_1m=90.0, active=((0.0, 6.0),)),
           Source(id="b", kind="pink", position_m=(-10.0, 0.0, 2.0), level_dba_at_1m=90.0, active=((0.0, 6.0),))]
    return Scenario(name="two", path=tmp_path / "two.toml", description="", duration_s=6.0, sample_rate=48000,
                    interval_s=1.0, temperature_c=20.0, humidity_pct=70.0, ground="none", seed=3, size_m=(40.0, 40.0),
                    sources=tuple(src if both else src[:1]),
                    meters=(Meter(id="m", position_m=(0.0, 0.0, 2.0), ideal=True),))


def test_two_equal_incoherent_sources_add_3_db(tmp_path):
    one = simulate(two_source_scene(tmp_path, False), tmp_path / "one")["meters"]["m"]["overall"]["LAeq"]
    two = simulate(two_source_scene(tmp_path, True), tmp_path / "both")["meters"]["m"]["overall"]["LAeq"]
    assert abs(two - one - 3.0) <= 0.1, (one, two)


def test_sim_cli_writes_wavs_and_truth(tmp_path):
    out = tmp_path / "cal"
    r = subprocess.run([sys.executable, "-m", "slm.cli", "sim", "calibrator", "--out", str(out), "--duration", "5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    truth = json.loads((out / "truth.json").read_text())
    info = read_header(out / "board.wav")
    assert info.rate == 48000 and info.bits == 32 and not info.is_float and info.frames == 5 * 48000
    m = truth["meters"]["board"]
    assert len(m["intervals"]) == 5 and set(m["overall"]) >= {"LAeq", "LAFmax", "LCpeak", "LA90"}
    assert abs(m["intervals"][-1]["LAeq"] - 94.08) < 0.05  # the calibrator's level at the microphone
    assert m["contributions_LAeq"]["calibrator-94"]["intervals"][-1] == pytest.approx(94.08, abs=0.05)


def test_sim_cli_bad_input_is_exit_2(tmp_path):
    for args, fragment in ((["no-such-scene", "--out", str(tmp_path)], "unknown scenario"),
                           (["calibrator", "--out", str(tmp_path), "--meter", "nobody"], "no meter 'nobody'")):
        r = subprocess.run([sys.executable, "-m", "slm.cli", "sim", *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_deterministic_for_a_seed(tmp_path):
    sc = load_scenario("quiet-night")
    simulate(sc, tmp_path / "a", duration_s=2, contributions=False)
    simulate(sc, tmp_path / "b", duration_s=2, contributions=False)
    simulate(sc, tmp_path / "c", duration_s=2, seed=99, contributions=False)
    a, b, c = ((tmp_path / d / "facade.wav").read_bytes() for d in "abc")
    assert a == b and a != c


def test_streaming_memory_does_not_grow_with_duration():
    stream = SceneStream(load_scenario("square-evening"))
    stream.next_chunk(24000)
    tracemalloc.start()
    for _ in range(10):
        stream.next_chunk(24000)
    _, peak_short = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for _ in range(60):
        stream.next_chunk(24000)
    _, peak_long = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak_long <= peak_short * 1.2 + 1e6, (peak_short, peak_long)


@pytest.mark.micropython
def test_firmware_agrees_with_truth_on_square_evening(tmp_path):
    """The issue's bar: every 1 s LAeq above 45 dB(A) within ±0.3 dB of truth (microphones ideal: no self-noise, flat
    response, exact sensitivity), every meter, through `slm measure` on the MicroPython unix port."""
    truth = simulate(ideal(load_scenario("square-evening")), tmp_path, duration_s=45, contributions=False)
    for mid, m in truth["meters"].items():
        result = measure_file(tmp_path / m["wav"])
        pairs = [(f["LAeq"], t["LAeq"]) for f, t in zip(result["intervals"], m["intervals"]) if t["LAeq"] > 45]
        assert len(pairs) == 45, mid
        worst = max(abs(f - t) for f, t in pairs)
        assert worst <= 0.3, (mid, worst)
        assert abs(result["overall"]["LAFmax"] - m["overall"]["LAFmax"]) <= 0.3, mid


@pytest.mark.micropython
def test_calibrator_scene_reads_the_sensitivity_error(tmp_path):
    """The board's microphone is 1.3 dB low: the firmware reads the 94.08 dB calibrator as 92.78 dB."""
    sc = load_scenario("calibrator")
    truth = simulate(sc, tmp_path, duration_s=20, contributions=False)["meters"]["board"]
    reading = measure_file(tmp_path / "board.wav")["intervals"]
    for f, t in list(zip(reading, truth["intervals"]))[5:19]:
        assert abs(f["LAeq"] - (t["LAeq"] - 1.3)) <= 0.1


@pytest.mark.micropython
def test_self_noise_floor_in_a_silent_scene(tmp_path):
    """An INMP441 in silence: the firmware reads its equivalent input noise, 33 dB(A), within 1 dB."""
    sc = load_scenario("quiet-night")
    sc = dataclasses.replace(sc, sources=(), duration_s=6.0)
    simulate(sc, tmp_path, contributions=False)
    reading = measure_file(tmp_path / "facade.wav")
    assert abs(reading["intervals"][-1]["LAeq"] - MIC_MODELS["INMP441"].self_noise_dba) <= 1.0


def test_microphone_scale_and_sph0645_shift():
    """A 94 dB sine into an ideal INMP441 and SPH0645: words decode (with each board's input shift) to the same
    full-scale fraction, 10**(-26/20) peak."""
    rate = 48000
    t = np.arange(4800) / rate
    p = math.sqrt(2) * 20e-6 * 10 ** (94 / 20) * np.sin(2 * np.pi * 1000 * t)
    for model, shift in (("INMP441", 10), ("SPH0645LM4H-B", 11)):
        words = Microphone(MIC_MODELS[model], rate, seed=1, ideal=True).words(p).astype(np.int64)
        x = ((words >> shift) & 0x3FFFFF)
        x = (x ^ 0x200000) - 0x200000
        peak = np.abs(x).max() / 2**21
        assert abs(20 * math.log10(peak) + 26.0) < 0.05, model
    assert full_scale_pa(-26.0) == pytest.approx(20e-6 * 10 ** (120 / 20) * math.sqrt(2))


def test_truth_is_computed_from_pressure_not_from_the_microphone(tmp_path):
    """A microphone with a +2 dB sensitivity error changes the words, not the truth."""
    base = two_source_scene(tmp_path, False)
    off = dataclasses.replace(base, meters=(dataclasses.replace(base.meters[0], ideal=False,
                                                                sensitivity_error_db=2.0),))
    t0 = simulate(base, tmp_path / "t0", duration_s=2)["meters"]["m"]["overall"]["LAeq"]
    t1 = simulate(off, tmp_path / "t1", duration_s=2)["meters"]["m"]["overall"]["LAeq"]
    assert t0 == t1
    meter = TruthMeter(48000)
    assert meter.interval_n == 48000


def test_schedule_envelope_spans_fades_and_chunking():
    from slm.sim.scene import schedule_envelope

    rate = 1000
    t = np.arange(10 * rate) / rate
    env = schedule_envelope([(1.0, 3.0), (5.0, 9.0)], 0.5, t, [0.0, -6.0])
    assert env[t < 1.0].max() == 0 and env[(t >= 3.0) & (t < 5.0)].max() == 0 and env[t >= 9.0].max() == 0
    assert np.all(env[(t >= 1.5) & (t <= 2.5)] == 1.0)
    assert env[1250] == pytest.approx(0.5) and env[8750] == pytest.approx(0.5 * 10 ** (-6 / 20))
    chunked = np.concatenate([schedule_envelope([(1.0, 3.0), (5.0, 9.0)], 0.5, t[i:i + 777], [0.0, -6.0])
                              for i in range(0, len(t), 777)])
    assert np.array_equal(env, chunked)


def test_a_repeating_stream_restarts_the_schedule_and_continues_the_sound(tmp_path):
    """repeat=True (the virtual board's scene): the schedule starts again after the duration, the tone runs on in phase
    (the pressure across the wrap is the same sine as before it) and the microphone's start-up happens once."""
    tone = Source(id="t", kind="tone", position_m=(1.0, 2.0, 1.0), level_dba_at_1m=80.0,
                  active=((0.0, 1.0), (1.5, 2.0)), fade_s=0.0)
    sc = Scenario(name="rep", path=tmp_path / "rep.toml", description="", duration_s=2.0, sample_rate=16000,
                  interval_s=1.0, temperature_c=20.0, humidity_pct=70.0, ground="none", seed=3, size_m=(4.0, 4.0),
                  sources=(tone,), meters=(Meter(id="m", position_m=(2.0, 2.0, 1.0), microphone="SPH0645LM4H-B"),))
    rate = sc.sample_rate
    stream = SceneStream(sc, meter_ids=["m"], repeat=True)
    chunks = [stream.next_chunk(n)["m"] for n in (7000, 9000, 13000, 19000, 16000)]  # wraps inside chunks
    p = np.concatenate([c.pressure_pa for c in chunks])
    v = np.concatenate([c.words for c in chunks]).astype(np.int64) >> 15  # SPH0645 on an ESP32: 18 bits, shifted
    delay = int(np.argmax(np.abs(p) > 0))  # the path's delay (1 m) before the tone arrives
    on = np.abs(p) > 1e-6
    for start, stop in ((0.0, 1.0), (1.5, 2.0), (2.0, 3.0), (3.5, 4.0)):  # the schedule, then again
        a, b = int(start * rate) + delay + 50, int(stop * rate) + delay - 50
        assert on[a:b].all(), (start, stop)
    for start, stop in ((1.0, 1.5), (3.0, 3.5)):
        a, b = int(start * rate) + delay + 200, int(stop * rate) + delay - 50
        assert not on[a:b].any(), (start, stop)
    # across the wrap at 2 s the sine goes on: one sinusoid fits 1.6 s .. 2.4 s
    seg = slice(int(1.6 * rate) + delay, int(2.4 * rate) + delay)
    t = np.arange(len(p))[seg] / rate
    basis = np.stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, p[seg], rcond=None)
    assert np.max(np.abs(basis @ coef - p[seg])) < 1e-3 * np.max(np.abs(p[seg]))
    # the microphone's start-up (a large offset) is over within 2.5 s and does not come back at the wrap
    startup = np.abs(v[:rate // 4]).max()
    after_wrap = np.abs(v[2 * rate:2 * rate + rate // 4] - np.median(v[3 * rate:4 * rate])).max()
    assert after_wrap < 0.2 * startup, (after_wrap, startup)


def test_constant_envelope_is_schedule_envelope_where_it_answers():
    """The shortcut for chunks inside one span (or outside all) agrees with the envelope sample for sample; it declines
    chunks that touch a fade, a span edge or two spans."""
    from slm.sim.scene import constant_envelope, schedule_envelope

    rate = 100
    spans, gains = [(1.0, 3.0), (5.0, 9.0), (9.0, 9.5)], [0.0, -6.0, 3.0]
    answered = 0
    for fade in (0.0, 0.5):
        for start in np.arange(0, 1100, 7):
            for length in (1, 13, 60, 240):
                t = (start + np.arange(length)) / rate
                g = constant_envelope(spans, fade, t[0], t[-1], gains)
                if g is not None:
                    answered += 1
                    assert np.all(schedule_envelope(spans, fade, t, gains) == g), (fade, start, length)
    assert answered > 200
    assert constant_envelope(spans, 0.5, 1.2, 1.4) is None  # inside the fade-in
    assert constant_envelope(spans, 0.5, 1.6, 2.4) == 1.0
    assert constant_envelope(spans, 0.0, 8.9, 9.1) is None  # two spans

