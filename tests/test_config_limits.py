"""`slm config limits` and `set` of the limit schedule (zone, day/night hours, bands; SPEC of issue 9) against a
virtual board: one `set`, all or nothing, the device's message on a refusal, the limit in force through the day.

Needs the firmware's limit schedule (config keys zone, day_start, night_start, bands; firmware/limits.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm.virtual_board import VirtualBoard
from tests.test_config_cmd import device_config, slm

pytestmark = pytest.mark.micropython

BOARD = "esp32-devkitc-inmp441"
SCHEDULE_KEYS = ("zone", "day_start", "night_start", "bands")


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits-board")
    with VirtualBoard("calibrator", speed=1, board=BOARD, device_dir=d) as vb:
        yield vb, Path(d)


def schedule(port: str) -> dict:
    code, out, err = slm("config", "--port", port, "show", "--json")
    assert code == 0, err
    config = json.loads(out)
    return {k: config[k] for k in SCHEDULE_KEYS}


def timeline(out: str) -> list[str]:
    """The "HH:MM-HH:MM  limit dB  band" lines after the timeline's heading."""
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("limit in force"))
    return [" ".join(line.split()) for line in lines[i + 1:]]


def test_class_1_with_a_dance_band(board):
    vb, d = board
    code, out, err = slm("config", "--port", vb.port, "limits", "--zone", "1", "--day", "06:00", "--night", "22:00",
                         "--band", "19:00-21:30=65:dance")
    assert code == 0 and err == "", err
    assert timeline(out) == ["00:00-06:00 45 dB night", "06:00-19:00 55 dB day", "19:00-21:30 65 dB dance",
                             "21:30-22:00 55 dB day", "22:00-24:00 45 dB night"], out
    assert schedule(vb.port) == {"zone": "1", "day_start": "06:00", "night_start": "22:00",
                                 "bands": [{"start": "19:00", "end": "21:30", "limit": 65.0, "name": "dance"}]}
    saved = json.loads((d / "config.json").read_text())
    assert saved["zone"] == "1" and saved["bands"][0]["name"] == "dance"


def test_first_band_wins_and_bands_run_past_midnight(board):
    vb, _ = board
    code, out, err = slm("config", "--port", vb.port, "limits", "--zone", "2",
                         "--band", "12:00-14:30=50:noon", "--band", "22:00-06:00=50:quiet",
                         "--band", "06:00-24:00=65:otherwise")
    assert code == 0, err
    assert timeline(out) == ["00:00-06:00 50 dB quiet", "06:00-12:00 65 dB otherwise", "12:00-14:30 50 dB noon",
                             "14:30-22:00 65 dB otherwise", "22:00-24:00 50 dB quiet"], out
    assert [b["name"] for b in schedule(vb.port)["bands"]] == ["noon", "quiet", "otherwise"]


def test_bands_replace_and_clear(board):
    vb, _ = board
    assert slm("config", "--port", vb.port, "limits", "--zone", "1", "--band", "19:00-21:30=65:dance",
               "--band", "22:00-06:00=45")[0] == 0
    assert [b["name"] for b in schedule(vb.port)["bands"]] == ["dance", "22:00-06:00"]
    assert slm("config", "--port", vb.port, "limits", "--zone", "3")[0] == 0  # zone only: bands kept
    assert schedule(vb.port)["zone"] == "3" and len(schedule(vb.port)["bands"]) == 2
    assert slm("config", "--port", vb.port, "limits", "--band", "07:00-08:00=60:morning")[0] == 0
    assert [b["name"] for b in schedule(vb.port)["bands"]] == ["morning"]
    code, out, _ = slm("config", "--port", vb.port, "limits", "--clear-bands", "--zone", "none")
    assert code == 0 and schedule(vb.port)["bands"] == [] and schedule(vb.port)["zone"] is None
    assert timeline(out) == ["00:00-24:00 no limit"], out


def test_set_zone_is_a_class_name(board):
    vb, _ = board
    code, out, err = slm("config", "--port", vb.port, "set", "zone=4a", "episode_min_minutes=2")
    assert code == 0, err
    assert "zone = 4a" in out.splitlines() and schedule(vb.port)["zone"] == "4a"
    assert device_config(vb.port)["episode_min_minutes"] == 2
    assert slm("config", "--port", vb.port, "set", "zone=1", "episode_min_minutes=1")[0] == 0


@pytest.mark.parametrize("args, words", [
    (["--zone", "2", "--band", "19:00-21:30=200:dance"], ("bad_value", "band")),  # limit out of range
    (["--zone", "2", "--band", "22:00-06:00=45:night"], ("bad_value", "night")),  # the zone's own period name
    (["--zone", "2", "--band", "19:00-21:30=65:a-name-far-too-long"], ("bad_value", "name")),
    (["--zone", "2"] + [a for i in range(9) for a in ("--band", f"{i:02d}:00-{i:02d}:30=60:b{i}")], ("bad_value", "8")),
    (["--zone", "5"], ("bad_value", "zone")),
    (["--zone", "2", "--day", "22:00", "--night", "22:00"], ("bad_value", "differ")),
    (["--zone", "2", "--band", "10:00-10:00=60:empty"], ("bad_value", "band")),
])
def test_refused_schedule_changes_nothing(board, args, words):
    vb, d = board
    assert slm("config", "--port", vb.port, "limits", "--zone", "1", "--band", "19:00-21:30=65:dance")[0] == 0
    before = schedule(vb.port)
    before_file = (d / "config.json").read_bytes()
    code, out, err = slm("config", "--port", vb.port, "limits", *args)
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and "nothing was changed" in err and all(w in err for w in words), err
    assert schedule(vb.port) == before  # the valid zone 2 was not applied either: all or nothing
    assert (d / "config.json").read_bytes() == before_file


def test_show_gives_the_device_clock_in_local_time(board):
    vb, _ = board
    code, out, err = slm("config", "--port", vb.port, "show")
    assert code == 0, err
    clock = next(line for line in out.splitlines() if line.startswith("clock"))
    # a virtual board's clock starts at its scenario's start (calibrator: 2026-07-15 20:00 +08:00)
    assert "local 2026-07-15 20:0" in clock and clock.endswith("from scenario"), clock
