"""Every board profile end to end against the simulator's truth: `slm measure` on the simulated recording (48 and
44.1 kHz) and a virtual board running the profile, each hearing its microphone model: a 1 kHz tone at 80 dB reads
the truth, and the intervals in which the microphone clips (true peak 6 dB above its full scale) are overload,
the others not. The SPH0645 on an ESP32 delivers its samples shifted left by one bit: the profile's input shift
must be applied by both, and its clipping shows as wrapped samples."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from slm.boards import list_boards, load_board
from slm.link import DeviceLink
from slm.measure import measure_file
from slm.sim.scenario import load_scenario
from slm.sim.scene import simulate
from slm.virtual_board import VirtualBoard

pytestmark = pytest.mark.micropython

SCENARIO = Path(__file__).parent / "data" / "board-tone-clip.toml"
LOUD = (6.0, 8.0)  # scene seconds of the 123 dB tone
LEVEL_TOLERANCE_DB = 0.2  # 1 kHz: the equaliser's gain there is 0 dB; the microphone model's 0.00 dB


def loud(start_s: float, end_s: float) -> bool:
    return start_s < LOUD[1] and end_s > LOUD[0]


def quiet(start_s: float, end_s: float) -> bool:
    """Wholly within the 80 dB tone, away from the switch (a microphone response rings for a few ms)."""
    return end_s <= LOUD[0] or start_s >= LOUD[1] + 0.05


@pytest.fixture(scope="module", params=[48000, 44100])
def recording(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"clip{request.param}")
    truth = simulate(load_scenario(SCENARIO), out, rate=request.param, contributions=False)
    return out, truth


def _check(board: str, intervals: list[dict], truth_laeq: float) -> None:
    """Loud intervals are overload; whole quiet ones are not and read the truth in A and C, the first one too: the
    meter seeds its DC blocker with the first block's mean, so the SPH0645's large DC offset does not lift the
    first second's LCeq (+0.3 dB when the blocker started from rest)."""
    checked_loud = checked_quiet = 0
    for rec in intervals:
        span = (rec["start_s"], rec["end_s"])
        if loud(*span):
            assert rec["overload"], (board, span, rec)
            checked_loud += 1
        elif quiet(*span) and span[1] - span[0] >= 0.99:
            assert not rec["overload"], (board, span, rec)
            assert rec["LAeq"] == pytest.approx(truth_laeq, abs=LEVEL_TOLERANCE_DB), (board, span, rec)
            assert rec["LCeq"] == pytest.approx(truth_laeq, abs=LEVEL_TOLERANCE_DB), (board, span, rec)
            checked_quiet += 1
    assert checked_loud >= 2 and checked_quiet >= 3, (board, checked_loud, checked_quiet)


def _steady_truth(truth: dict, meter: str) -> float:
    levels = [i["LAeq"] for i in truth["meters"][meter]["intervals"] if quiet(i["start_s"], i["end_s"])
              and i["start_s"] >= 1.0]
    assert max(levels) - min(levels) < 0.02 and abs(levels[0] - 80.0) < 0.1
    return levels[0]


@pytest.mark.parametrize("board", list_boards())
def test_measure_reads_the_truth_and_flags_clipping(recording, board):
    out, truth = recording
    mic = load_board(board).microphone.model
    result = measure_file(out / f"{mic}.wav", board=board)
    assert result["skipped_s"] == pytest.approx(load_board(board).microphone.startup_discard_s, abs=0.002)
    # the file's grid: full intervals line up with the truth's
    for rec, want in zip(result["intervals"][1:], truth["meters"][mic]["intervals"][int(result["skipped_s"]) + 1:]):
        assert (rec["start_s"], rec["end_s"]) == (want["start_s"], want["end_s"])
        if quiet(rec["start_s"], rec["end_s"]):
            assert rec["LAeq"] == pytest.approx(want["LAeq"], abs=LEVEL_TOLERANCE_DB), (board, rec, want)
    _check(board, result["intervals"], _steady_truth(truth, mic))
    assert result["overall"]["overload"]


class Collector:
    def __init__(self):
        self.intervals: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, link, rec):
        if rec.get("t") == "interval":
            with self.lock:
                self.intervals.append(rec)


@pytest.mark.parametrize("board", list_boards())
def test_virtual_board_reads_the_truth_and_flags_clipping(tmp_path, board):
    """Device time starts after the board's start-up discard: device second k hears scene seconds k + discard on."""
    profile = load_board(board)
    mic = profile.microphone.model
    discard = profile.microphone.startup_discard_s
    truth = simulate(load_scenario(SCENARIO), tmp_path, rate=profile.rate, meter_ids=[mic], contributions=False)
    last_s = load_scenario(SCENARIO).duration_s - discard  # device seconds before the scene repeats
    col = Collector()
    with VirtualBoard(scenario=str(SCENARIO), meter=mic, speed=0, board=board) as vb:
        link = DeviceLink(vb.port, on_record=col).open()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with col.lock:
                    if any(r["end_ms"] >= 1000 * int(last_s) for r in col.intervals):
                        break
                time.sleep(0.05)
        finally:
            link.close()
    got = [{**r, "start_s": r["start_ms"] / 1000 + discard, "end_s": r["end_ms"] / 1000 + discard}
           for r in col.intervals if r["end_ms"] <= 1000 * last_s]
    assert got, f"no interval records from the virtual board {board}"
    _check(board, got, _steady_truth(truth, mic))


def test_sph0645_overload_at_its_shifted_full_scale(tmp_path):
    """The ESP32's one-bit shift halves the SPH0645's range: its samples wrap 6 dB below the microphone's own
    full scale, less the DC offset (the simulator's truth: a 1 kHz sine whose peak plus |DC| exceeds half the
    microphone's full scale wraps). Tones from 0.5 dB below that point up to the microphone's acoustic overload
    point: each second in which the true peak exceeds the shifted full scale is overload, the others are not."""
    from slm.sim.microphone import MIC_MODELS, Microphone
    from slm.sim.wav_writer import WavWriter

    board = "esp32-devkitc-sph0645"
    spec = MIC_MODELS[load_board(board).microphone.model]
    assert spec.word_left_shift == 1
    shifted_fs = 2.0 ** -spec.word_left_shift  # of the microphone's full scale
    wrap_db = spec.aop_db + 20 * math.log10(shifted_fs - abs(spec.dc_offset_fs))  # a sine peaking there wraps
    levels = [wrap_db - 0.5, wrap_db + 0.5, wrap_db + 3.0, spec.aop_db - 0.5]
    rate = 48000
    mic = Microphone(spec, rate, seed=3)
    t = np.arange(rate) / rate
    path = tmp_path / "sph0645.wav"
    settle_s = 3
    with WavWriter(path, rate) as w:
        w.write(mic.words(np.zeros(settle_s * rate)))
        for level in levels:
            w.write(mic.words(20e-6 * 10 ** (level / 20) * math.sqrt(2) * np.sin(2 * np.pi * 1000 * t)))
    by_start = {round(r["start_s"]): r for r in measure_file(path, board=board)["intervals"]}
    flags = [by_start[settle_s + i]["overload"] for i in range(len(levels))]
    assert flags == [level > wrap_db for level in levels], (round(wrap_db, 2), levels, flags)


def test_virtual_sph0645_overload_at_its_shifted_full_scale(tmp_path):
    """The same on a virtual board running the SPH0645 profile: 0.5 dB above the level at which the shifted samples
    wrap is overload, 0.5 dB below is not (tests/data/sph0645-wrap.toml)."""
    from slm.sim.microphone import MIC_MODELS

    board = "esp32-devkitc-sph0645"
    scenario = Path(__file__).parent / "data" / "sph0645-wrap.toml"
    spec = MIC_MODELS[load_board(board).microphone.model]
    wrap_db = spec.aop_db + 20 * math.log10(2.0 ** -spec.word_left_shift - abs(spec.dc_offset_fs))
    truth = simulate(load_scenario(scenario), tmp_path, rate=48000, meter_ids=[spec.model], contributions=False)
    level = {round(i["start_s"]): i["LAeq"] for i in truth["meters"][spec.model]["intervals"]}
    assert level[5] > wrap_db + 0.4 and level[6] > wrap_db + 0.4  # the truth: above and below the wrap
    assert wrap_db - 0.6 < level[8] < wrap_db - 0.4 and wrap_db - 0.6 < level[9] < wrap_db - 0.4
    discard = load_board(board).microphone.startup_discard_s
    col = Collector()
    with VirtualBoard(scenario=str(scenario), meter=spec.model, speed=0, board=board) as vb:
        link = DeviceLink(vb.port, on_record=col).open()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with col.lock:
                    if any(r["end_ms"] >= 7000 for r in col.intervals):
                        break
                time.sleep(0.05)
        finally:
            link.close()
    flags = {round(r["start_ms"] / 1000 + discard, 1): r["overload"] for r in col.intervals}
    # device seconds start 2.5 s into the scene: [5.5, 6.5] and [6.5, 7.5] hear the louder tone, [8.5, 9.5] the
    # quieter one (away from the switch at 7.5 s, where the microphone's response rings)
    assert flags[5.5] and flags[6.5], flags
    assert not flags[8.5] and not flags[3.5], flags
