"""An exceedance episode open when the device restarts is closed once, as interrupted, from the device's record
(firmware/app.py with firmware/record_ring.py on the MicroPython unix port)."""

from __future__ import annotations

import json

import pytest

from tests.test_minute import BAND_60, energy_mean, make_device, minutes_of, of, run, write_audio

pytestmark = pytest.mark.micropython


def test_an_episode_open_at_a_restart_is_closed_once_as_interrupted(tmp_path):
    d = make_device(tmp_path, minutes_of([55.0, 65.0, 66.0]) + [66.0], "2026-07-15T12:00:00.000Z",
                    {"bands": BAND_60, "episode_min_minutes": 1})
    first = run(d)
    (start,) = of(first, "event", "exceedance_start")
    assert start["start"] == "2026-07-15T12:01:00.000Z" and of(first, "event", "exceedance_end") == []
    minutes = of(first, "minute")
    # the audio ends with the episode open (a power cut); the board comes back at 12:10 in a quiet square
    write_audio(d, [50.0] * 5)
    (d / "rtc.json").write_text(json.dumps({"utc": "2026-07-15T12:10:00.000Z", "source": "rtc"}))
    second = run(d)
    (end,) = of(second, "event", "exceedance_end")
    assert end["interrupted"] is True and end["start"] == start["start"] and end["seq"] == 1  # right after hello
    assert end["end"] == "2026-07-15T12:03:00.000Z"  # 60 s after the start of the last minute stored
    assert end["duration_s"] == 120.0 and end["minutes_over"] == 2 and end["limit"] == 60.0 and end["band"] == "test"
    assert end["LAeq"] == pytest.approx(energy_mean([m["LAeq"] for m in minutes[1:]]), abs=0.01)
    assert end["LAFmax"] == max(m["LAFmax"] for m in minutes[1:])
    third = run(d)
    assert of(third, "event", "exceedance_end") == []  # closed once, never again
