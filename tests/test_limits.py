"""The limit schedule on the device (firmware/limits.py, config_store.py) on the MicroPython unix port: which limit
and band are in force at a local time, and `set` of the schedule keys, validated all or nothing."""

from __future__ import annotations

import json
import subprocess

import pytest

from slm.firmware_engine import micropython_binary
from tests.test_device_app import line
from tests.test_minute import make_device, of, run

pytestmark = pytest.mark.micropython

LOOKUP = """
import json, config_store, limits
cases = json.load(open("cases.json"))
out = []
for config, times in cases:
    c = dict(config_store.DEFAULTS)
    for k, v in config.items():
        c[k] = config_store.check(k, v)
    s = limits.Schedule(c)
    out.append([list(s.at(limits.parse_hhmm(t))) for t in times])
print(json.dumps(out))
"""


def lookup(tmp_path, cases, name="device"):
    """[(config, ["HH:MM", ...]), ...] -> for each config, [limit, band] at each time, from the firmware."""
    d = make_device(tmp_path, [], None, name=name)
    (d / "cases.json").write_text(json.dumps(cases))
    r = subprocess.run([micropython_binary(), "-c", LOOKUP], cwd=d, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_zone_presets_day_and_night(tmp_path):
    zones = {"0": (50, 40), "1": (55, 45), "2": (60, 50), "3": (65, 55), "4a": (70, 55), "4b": (70, 60)}
    times = ["05:59", "06:00", "12:00", "21:59", "22:00", "23:59", "00:00"]
    got = lookup(tmp_path, [({"zone": z}, times) for z in zones] + [({}, times)])
    for (z, (day, night)), res in zip(zones.items(), got):
        assert res == [[night, "night"], [day, "day"], [day, "day"], [day, "day"], [night, "night"],
                       [night, "night"], [night, "night"]], z
    assert got[-1] == [[None, None]] * len(times)  # no zone, no band: no limit


def test_moved_day_and_night_hours(tmp_path):
    (got,) = lookup(tmp_path, [({"zone": "2", "day_start": "07:30", "night_start": "23:00"},
                                ["06:30", "07:29", "07:30", "22:30", "22:59", "23:00"])])
    assert got == [[50, "night"], [50, "night"], [60, "day"], [60, "day"], [60, "day"], [50, "night"]]


def test_bands_across_midnight_and_the_first_band_that_covers_wins(tmp_path):
    bands = [{"start": "12:00", "end": "14:30", "limit": 50, "name": "noon rest"},
             {"start": "19:00", "end": "21:00", "limit": 80, "name": "dance"},
             {"start": "20:00", "end": "06:00", "limit": 45, "name": "night rule"},  # overlaps dance: dance first
             {"start": "06:00", "end": "24:00", "limit": 65, "name": "otherwise"}]
    (got,) = lookup(tmp_path, [({"zone": "1", "bands": bands},
                                ["11:59", "12:00", "14:29", "14:30", "19:00", "20:30", "20:59", "21:00", "23:59",
                                 "00:00", "05:59", "06:00"])])
    assert got == [[65, "otherwise"], [50, "noon rest"], [50, "noon rest"], [65, "otherwise"], [80, "dance"],
                   [80, "dance"], [80, "dance"], [45, "night rule"], [45, "night rule"], [45, "night rule"],
                   [45, "night rule"], [65, "otherwise"]]
    (got,) = lookup(tmp_path, [({"zone": "1", "bands": bands[:2]}, ["13:00", "15:00", "23:00"])], name="b")
    assert got == [[50, "noon rest"], [55, "day"], [45, "night"]]  # outside the bands: the zone


def test_set_of_the_schedule_is_all_or_nothing_with_clear_messages(tmp_path):
    d = make_device(tmp_path, [60.0] * 4, "2026-07-15T04:00:00.000Z")
    good_bands = [{"start": "22:00", "end": "06:00", "limit": 45, "name": "night rule"}]
    bad = [
        ({"zone": "5"}, "zone must be null or one of 0, 1, 2, 3, 4a, 4b"),
        ({"zone": 1}, "zone must be null or one of"),
        ({"day_start": "6:00"}, "day_start must be \"HH:MM\""),
        ({"night_start": "24:00"}, "night_start must be a time from 00:00 to 23:59"),
        ({"day_start": "22:00"}, "day_start and night_start must differ"),
        ({"bands": [dict(good_bands[0], start="25:00")]}, "bands: band 1: start must be a time from 00:00 to 23:59"),
        ({"bands": [dict(good_bands[0], limit=150)]}, "bands: band 1: limit must be between 20.0 and 140.0 dB"),
        ({"bands": [dict(good_bands[0], name="")]}, "bands: band 1: name must be text of 1 to 16 characters"),
        ({"bands": [dict(good_bands[0], name="x" * 17)]}, "name must be text of 1 to 16 characters"),
        ({"bands": [dict(good_bands[0], end="22:00")]}, "bands: band 1: start and end are the same time"),
        ({"bands": [dict(good_bands[0], colour="red")]}, "bands: band 1: unknown field colour"),
        ({"bands": [{"start": "22:00", "end": "06:00", "limit": 45}]}, "bands: band 1: name is missing"),
        ({"bands": good_bands * 9}, "bands: at most 8 bands, got 9"),
        ({"bands": {"start": "22:00"}}, "bands: must be a list"),
        ({"episode_min_minutes": 0}, "episode_min_minutes must be between 1 and 60"),
        ({"tz_min": 900}, "tz_min must be between -720 and 840"),
        ({"tz_min": 480.5}, "tz_min must be an integer"),
        ({"display_on": 1}, "display_on must be true or false"),
        ({"limit_db": 70}, "limit_db"),  # removed: the schedule replaced it
    ]
    cmds = [line({"cmd": "set", "id": 100 + i, "values": {"zone": "1", **values}}) for i, (values, _) in
            enumerate(bad)]
    cmds.append(line({"cmd": "set", "id": 1, "values": {"zone": "4a", "bands": good_bands, "day_start": "07:00",
                                                         "tz_min": -300, "episode_min_minutes": 3}}))
    cmds.append(line({"cmd": "get", "id": 2, "keys": ["zone", "bands", "day_start", "tz_min", "episode_min_minutes"]}))
    cmds.append(line({"cmd": "get", "id": 3}))
    recs = run(d, b"".join(cmds))
    replies = {r["id"]: r for r in recs if r["t"] in ("ack", "error")}
    for i, (values, message) in enumerate(bad):
        r = replies[100 + i]
        assert r["t"] == "error" and r["code"] in ("bad_value", "bad_key") and message in r["message"], (values, r)
    assert replies[1]["t"] == "ack"
    assert replies[2]["result"] == {"zone": "4a", "bands": [dict(good_bands[0], limit=45.0)], "day_start": "07:00",
                                    "tz_min": -300, "episode_min_minutes": 3}
    assert "bands" not in replies[3]["result"] and replies[3]["result"]["zone"] == "4a"  # bands only by name
    saved = json.loads((d / "config.json").read_text())
    assert saved["zone"] == "4a" and saved["tz_min"] == -300 and "limit_db" not in saved
    assert "bands" not in recs[0]["config"] and recs[0]["config"]["zone"] is None  # hello before the set


def test_eight_bands_with_long_names_fit_in_every_line_and_a_saved_limit_db_is_dropped(tmp_path):
    bands = [{"start": "%02d:00" % (2 * i), "end": "%02d:30" % (2 * i), "limit": 50 + i, "name": "band name %6d" % i}
             for i in range(8)]
    d = make_device(tmp_path, [60.0] * 2, "2026-07-15T04:00:00.000Z",
                    {"limit_db": 70.0, "zone": "3", "bands": bands})  # a configuration of protocol 1 firmware
    recs = run(d, line({"cmd": "get", "id": 1, "keys": ["bands"]}) + line({"cmd": "info", "id": 2}))
    replies = {r["id"]: r for r in of(recs, "ack")}
    assert "config_corrupt" not in recs[0]["faults"] and recs[0]["config"]["zone"] == "3"
    assert "limit_db" not in recs[0]["config"]
    assert [b["name"] for b in replies[1]["result"]["bands"]] == [b["name"] for b in bands]
    assert replies[2]["result"]["clock"] == "rtc"
