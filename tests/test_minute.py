"""Judging on the device (firmware/judge.py through app.py on the MicroPython unix port): `minute` records aligned to
UTC minutes whose levels are those of the intervals in them, exceedance episodes with hysteresis and a minimum
length, and `night_max`."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from slm.boards import load_board
from slm.firmware_engine import micropython_binary
from slm.resources import firmware_dir
from slm.sim import signals
from tests.conftest import words_of
from tests.test_device_app import parse

pytestmark = pytest.mark.micropython

RATE = 16000  # the meter's lowest rate: minutes of audio run fast; the judging is the same at every rate


def make_device(tmp_path: Path, levels_per_s, utc: str | None, config: dict | None = None,
                name: str = "device") -> Path:
    """A device folder: the firmware, board.json at RATE, audio of a 1 kHz tone at one level per second
    (``levels_per_s``: dB, or None for silence), rtc.json (``utc``: the time of the first word; None: no clock) and
    config.json."""
    d = tmp_path / name
    d.mkdir()
    for f in firmware_dir().glob("*.py"):
        if f.name not in ("__init__.py", "stream_runner.py"):
            shutil.copy(f, d)
    board = load_board("esp32-devkitc-inmp441").device_config()
    board.update(rate=RATE, audio_path="audio.bin", startup_discard_s=0.0, eq=None)  # eq: designed for 48 kHz
    (d / "board.json").write_text(json.dumps(board))
    write_audio(d, levels_per_s)
    if utc is not None:
        (d / "rtc.json").write_text(json.dumps({"utc": utc, "source": "rtc"}))
    (d / "config.json").write_text(json.dumps({"stream_hz": 0, "status_s": 3600, **(config or {})}))
    return d


def write_audio(d: Path, levels_per_s) -> None:
    second = signals.sine(1000.0, 0.0, 1.0, RATE)  # 1000 whole cycles: seconds join without a click
    parts = [np.zeros(RATE) if lv is None else second * 10 ** (lv / 20) for lv in levels_per_s]
    words_of(np.concatenate(parts or [np.zeros(0)])).astype("<i4").tofile(d / "audio.bin")


def run(d: Path, commands: bytes = b"") -> list[dict]:
    r = subprocess.run([micropython_binary(), "main.py"], cwd=d, input=commands, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    assert all(len(x) <= 1024 for x in lines)
    recs = [rec for rec in (parse(x) for x in lines) if rec is not None]
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    return recs


def of(recs, t, kind=None):
    return [r for r in recs if r["t"] == t and (kind is None or r.get("kind") == kind)]


def energy_mean(levels, weights=None) -> float:
    weights = weights or [1] * len(levels)
    return 10 * math.log10(sum(w * 10 ** (v / 10) for v, w in zip(levels, weights)) / sum(weights))


def test_minutes_are_aligned_to_utc_and_hold_the_levels_of_their_intervals(tmp_path):
    rng = np.random.default_rng(3096)
    # 20 s before 13:50:00 UTC, then a whole minute of changing levels, then 5 s: minutes 13:49 (partial), 13:50
    per_s = [60.0] * 20 + list(rng.uniform(45.0, 75.0, 60).round(1)) + [60.0] * 5
    d = make_device(tmp_path, per_s, "2026-07-15T13:49:40.000Z")
    recs = run(d)
    hello = recs[0]
    assert hello["utc"] == "2026-07-15T13:49:40.000Z" and hello["clock"] == "rtc" and hello["tz_min"] == 480
    minutes = of(recs, "minute")
    assert [(m["start"], m["local"], m["s"]) for m in minutes] == [
        ("2026-07-15T13:49:00.000Z", "21:49", 20.0), ("2026-07-15T13:50:00.000Z", "21:50", 60.0)]
    assert minutes[0]["utc"] == "2026-07-15T13:50:00.000Z" and minutes[1]["utc"] == "2026-07-15T13:51:00.000Z"
    intervals = of(recs, "interval")
    for m, (lo, hi) in zip(minutes, [(0, 20000), (20000, 80000)]):
        ivs = [i for i in intervals if lo <= i["start_ms"] < hi]
        assert len(ivs) == (hi - lo) // 1000 and all(i["end_ms"] - i["start_ms"] == 1000 for i in ivs)
        assert m["LAeq"] == pytest.approx(energy_mean([i["LAeq"] for i in ivs]), abs=0.01)
        assert m["LAFmax"] == max(i["LAFmax"] for i in ivs)
        assert m["LAFmin"] == min(i["LAFmin"] for i in ivs)  # HJ 212's LMn
        assert m["LCpeak"] == max(i["LCpeak"] for i in ivs)
        assert m["overload"] is False
        assert m["limit"] is None and m["band"] is None and m["over"] is None  # no schedule configured
    # the F-weighted levels sampled over the minute: LA10 >= LA50 >= LA90, within the minute's span of levels
    m = minutes[1]
    lv = sorted(per_s[20:80])
    assert m["LA10"] >= m["LA50"] >= m["LA90"]
    assert lv[0] - 0.5 <= m["LA90"] and m["LA10"] <= lv[-1] + 0.5


def test_percentiles_of_a_minute_of_three_levels(tmp_path):
    # 12 s at 70, 30 s at 60 and 18 s at 50 dB: 70 dB is exceeded... LA10 70, LA50 60, LA90 50
    per_s = [70.0] * 6 + [60.0] * 15 + [50.0] * 9 + [70.0] * 6 + [60.0] * 15 + [50.0] * 9 + [60.0]
    recs = run(make_device(tmp_path, per_s, "2026-07-15T04:00:00.000Z"))
    (m,) = of(recs, "minute")
    assert m["s"] == 60.0 and m["start"] == "2026-07-15T04:00:00.000Z"
    assert (m["LA10"], m["LA50"], m["LA90"]) == (pytest.approx(70.0, abs=0.15), pytest.approx(60.0, abs=0.15),
                                                 pytest.approx(50.0, abs=0.15))


def test_minutes_of_an_unset_clock_are_60_s_of_audio_without_a_start(tmp_path):
    recs = run(make_device(tmp_path, [55.0] * 61, None, {"zone": "1"}))
    hello = recs[0]
    assert hello["clock"] == "unset" and "clock_unset" in hello["faults"] and hello["utc"] is None
    assert all(r["utc"] is None for r in recs)
    (m,) = of(recs, "minute")
    assert m["ms"] == 60000 and m["start"] is None and m["local"] is None and m["s"] == 60.0
    assert m["limit"] is None and m["band"] is None and m["over"] is None  # no local time: no limit in force
    assert m["LAeq"] == pytest.approx(55.0, abs=0.05)


BAND_60 = [{"start": "00:00", "end": "24:00", "limit": 60, "name": "test"}]


def minutes_of(levels_per_min):
    return [lv for lv in levels_per_min for _ in range(60)]


def test_episode_needs_its_minimum_length_and_ends_below_the_hysteresis(tmp_path):
    # limit 60, hysteresis 1, at least 2 minutes over: minute 1 alone is not an episode; 3-4 over declare one that
    # starts at minute 3; 59.5 (within the hysteresis) keeps it open; 58.5 ends it at the start of minute 7
    per_min = [55.0, 65.0, 58.0, 65.0, 63.0, 59.5, 64.0, 58.5, 55.0]
    d = make_device(tmp_path, minutes_of(per_min) + [55.0], "2026-07-15T12:00:00.000Z",
                    {"bands": BAND_60, "limit_hysteresis_db": 1.0, "episode_min_minutes": 2})
    recs = run(d)
    minutes = of(recs, "minute")
    assert len(minutes) == 9
    assert [m["over"] for m in minutes] == [lv > 60 for lv in per_min]
    assert all(m["limit"] == 60.0 and m["band"] == "test" for m in minutes)
    for m, lv in zip(minutes, per_min):
        assert m["LAeq"] == pytest.approx(lv, abs=0.05)
    starts = of(recs, "event", "exceedance_start")
    ends = of(recs, "event", "exceedance_end")
    assert len(starts) == 1 and len(ends) == 1
    s, e = starts[0], ends[0]
    assert s["start"] == "2026-07-15T12:03:00.000Z" and s["limit"] == 60.0 and s["band"] == "test"
    assert s["LAeq"] == pytest.approx(65.0, abs=0.05)
    assert s["seq"] == minutes[4]["seq"] + 1  # declared with the second minute over
    assert e["start"] == s["start"] and e["end"] == "2026-07-15T12:07:00.000Z" and e["duration_s"] == 240.0
    assert e["minutes_over"] == 3 and e["interrupted"] is False and e["limit"] == 60.0 and e["band"] == "test"
    assert e["LAeq"] == pytest.approx(energy_mean([m["LAeq"] for m in minutes[3:7]]), abs=0.01)
    assert e["LAFmax"] == max(m["LAFmax"] for m in minutes[3:7])
    assert e["seq"] == minutes[7]["seq"] + 1  # ended by the minute at 58.5 dB
    assert of(recs, "event", "night_max") == []


def test_an_episode_goes_on_across_a_band_change_while_above_the_new_limit(tmp_path):
    # zone 1 (55 day / 45 night, night from 22:00 local = 14:00 UTC): 21:58-22:02 at 58 dB is over by day, and at
    # night stays above 45 - 1: one episode with the day limit; at 22:02 the level falls to 40 dB and ends it
    per_min = [58.0, 58.0, 58.0, 58.0, 40.0]
    recs = run(make_device(tmp_path, minutes_of(per_min) + [40.0], "2026-07-15T13:58:00.000Z", {"zone": "1"}))
    minutes = of(recs, "minute")
    assert [(m["local"], m["band"], m["limit"], m["over"]) for m in minutes] == [
        ("21:58", "day", 55.0, True), ("21:59", "day", 55.0, True), ("22:00", "night", 45.0, True),
        ("22:01", "night", 45.0, True), ("22:02", "night", 45.0, False)]
    (s,) = of(recs, "event", "exceedance_start")
    (e,) = of(recs, "event", "exceedance_end")
    assert s["start"] == "2026-07-15T13:58:00.000Z" and s["band"] == "day" and s["limit"] == 55.0
    assert e["end"] == "2026-07-15T14:02:00.000Z" and e["minutes_over"] == 4 and e["band"] == "day"


def test_night_max_when_a_single_event_passes_the_night_limit_by_15_db(tmp_path):
    # zone 1 at 23:00 local: night limit 45, LAFmax above 60 is a night_max; over 40 dB, a bang of 0.3 s at 65 dB in
    # minute 0 (its LAeq stays at 40.6 dB), one at 58 dB in minute 1
    bang = signals.sine(1000.0, 0.0, 0.3, RATE)
    quiet = signals.sine(1000.0, 0.0, 1.0, RATE) * 10 ** (40 / 20)
    x = np.concatenate([np.tile(quiet, 30), bang * 10 ** (65 / 20), np.tile(quiet, 60), bang * 10 ** (58 / 20),
                        np.tile(quiet, 31)])
    d = make_device(tmp_path, [], "2026-07-15T15:00:00.000Z", {"zone": "1"})
    words_of(x).astype("<i4").tofile(d / "audio.bin")
    recs = run(d)
    minutes = of(recs, "minute")
    assert [m["band"] for m in minutes] == ["night", "night"]
    reach = 10 * math.log10(1 - math.exp(-0.3 / 0.125))  # F time weighting after 0.3 s of a steady tone
    assert minutes[0]["LAFmax"] == pytest.approx(65.0 + reach, abs=0.1)
    assert minutes[1]["LAFmax"] == pytest.approx(58.0 + reach, abs=0.1)
    assert minutes[0]["LAeq"] == pytest.approx(10 * math.log10(1e4 + 10 ** 6.5 * 0.3 / 60), abs=0.1)
    (n,) = of(recs, "event", "night_max")
    assert n["time"] == "2026-07-15T15:00:00.000Z" and n["limit"] == 60.0 and n["band"] == "night"
    assert n["LAFmax"] == minutes[0]["LAFmax"]
    assert of(recs, "event", "exceedance_start") == []  # the minute's LAeq stays under 45


def test_an_episode_left_open_at_a_reboot_is_closed_from_the_stored_minutes(tmp_path):
    """judge.interrupted_end, on MicroPython: the end 60 s after the last stored minute, LAeq and LAFmax over the
    stored minutes from the episode's start."""
    d = make_device(tmp_path, [], None)
    start = {"t": "event", "kind": "exceedance_start", "start": "2026-07-15T13:58:00.000Z", "limit": 55.0,
             "band": "day", "LAeq": 62.0}
    minutes = [{"t": "minute", "start": start_at, "s": 60.0, "LAeq": la, "LAFmax": la + 5, "over": la > 55}
               for start_at, la in (("2026-07-15T13:57:00.000Z", 50.0), ("2026-07-15T13:58:00.000Z", 62.0),
                                    ("2026-07-15T13:59:00.000Z", 66.0), ("2026-07-15T14:00:00.000Z", 54.5))]
    (d / "stored.json").write_text(json.dumps([start, minutes]))
    script = ("import json, judge\nstart, minutes = json.load(open('stored.json'))\n"
              "print(json.dumps(judge.interrupted_end(start, iter(minutes))))\n")
    r = subprocess.run([micropython_binary(), "-c", script], cwd=d, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["kind"] == "exceedance_end" and e["interrupted"] is True and e["start"] == start["start"]
    assert e["end"] == "2026-07-15T14:01:00.000Z" and e["duration_s"] == 180.0 and e["minutes_over"] == 2
    assert e["LAeq"] == pytest.approx(energy_mean([62.0, 66.0, 54.5]), abs=0.01) and e["LAFmax"] == 71.0
    assert e["limit"] == 55.0 and e["band"] == "day"
