"""The device's clock (firmware/clock.py, the `time` command, `clock_step`) on the MicroPython unix port, a virtual
board's clock that starts at its scenario's start time and goes on across a reboot, and the host's clock setting
on connect (slm.link.sync_clock)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time

import pytest

from slm.firmware_engine import micropython_binary
from slm.link import DeviceLink, sync_clock
from slm.utc import parse_utc, utc_text
from slm.sim.scenario import load_scenario
from slm.virtual_board import VirtualBoard
from tests.test_device_app import line
from tests.test_minute import make_device, of, run

pytestmark = pytest.mark.micropython


def test_iso_text_and_day_numbers_on_micropython(tmp_path):
    d = make_device(tmp_path, [], None)
    texts = ["2026-07-15T13:50:00.250Z", "2024-02-29T23:59:59.999+08:00", "1999-12-31T16:00-08:00",
             "2100-03-01T00:00:00Z", "2026-07-15T13:50:60Z"]
    script = ("import clock, json\nout = []\nfor t in %r:\n    d, ms = clock.parse_iso(t)\n"
              "    out.append([d, ms, clock.format_iso(d, ms)])\nprint(json.dumps(out))\n" % texts)
    r = subprocess.run([micropython_binary(), "-c", script], cwd=d, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    for text, (day, ms, iso) in zip(texts, json.loads(r.stdout)):
        want = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(":60", ":59"))
        if want.tzinfo is None:
            want = want.replace(tzinfo=dt.timezone.utc)
        assert epoch + dt.timedelta(days=day, milliseconds=ms) == want, text
        assert iso == utc_text(want)


def test_time_command_steps_the_clock_closes_the_minute_and_realigns(tmp_path):
    d = make_device(tmp_path, [60.0] * 100, "2026-07-15T12:00:00.000Z", {"zone": "1"})
    cmds = (line({"cmd": "time", "id": 1, "utc": "2026-07-15T12:00:00.520Z"})  # 0.5 s: adjusted, no event
            + line({"cmd": "time", "id": 2, "utc": "2026-07-15T14:30:40.000+01:00"})  # 13:30:40Z: a step
            + line({"cmd": "time", "id": 3, "utc": "2026-02-30T00:00:00Z"})
            + line({"cmd": "time", "id": 4})
            + line({"cmd": "time", "id": 5, "utc": "1999-12-31T23:59:59Z"}))
    recs = run(d, cmds)
    replies = {r["id"]: r for r in recs if r["t"] in ("ack", "error")}
    r1, r2 = replies[1], replies[2]
    assert r1["t"] == "ack" and r1["result"]["step_s"] == pytest.approx(0.5, abs=0.001)
    assert r2["t"] == "ack" and r2["result"]["utc"] == "2026-07-15T13:30:40.000Z"
    assert r2["result"]["step_s"] == pytest.approx(5440 - 0.04 - 0.5, abs=0.05)
    for i in (3, 4, 5):
        assert replies[i]["t"] == "error" and replies[i]["code"] == "bad_value"
    (step,) = of(recs, "event", "clock_step")
    assert step["to"] == "2026-07-15T13:30:40.000Z" and step["from"].startswith("2026-07-15T12:00:00.")
    assert step["step_s"] == r2["result"]["step_s"] and step["seq"] < r2["seq"]
    minutes = of(recs, "minute")
    # the minute at the step closes early, the next starts at the step and ends on the UTC minute, then whole ones
    assert [m["start"] for m in minutes] == ["2026-07-15T12:00:00.000Z", "2026-07-15T13:30:00.000Z",
                                             "2026-07-15T13:31:00.000Z"]
    assert minutes[0]["s"] < 0.1 and minutes[1]["s"] == pytest.approx(20.0, abs=0.05) and minutes[2]["s"] == 60.0
    assert minutes[1]["local"] == "21:30" and minutes[1]["limit"] == 55.0
    assert minutes[2]["utc"] == "2026-07-15T13:32:00.000Z"
    # records after the step carry the new time; ms goes on
    after = [r for r in recs if r["seq"] > step["seq"]]
    assert all(r["utc"] >= "2026-07-15T13:30:40" for r in after)
    assert [r["ms"] for r in recs] == sorted(r["ms"] for r in recs)


@pytest.mark.parametrize("to, whole", [("2026-07-15T12:00:05.000Z", 55.0), ("2026-07-15T11:59:57.000Z", 63.0),
                                       ("2026-07-15T11:58:30.000Z", None)])
def test_a_step_within_the_minute_keeps_it_open_and_no_two_minutes_share_a_start(tmp_path, to, whole):
    """+5 s lands inside the minute in progress: it stays open and ends on the UTC minute (55 s of audio); -3 s: it
    stays open until the new clock reaches 12:01 (63 s); -90 s leaves it: it closes early, the next starts at 11:58."""
    d = make_device(tmp_path, [60.0] * 130, "2026-07-15T12:00:00.000Z", {"zone": "1"})
    recs = run(d, line({"cmd": "time", "id": 1, "utc": to}))
    (step,) = of(recs, "event", "clock_step")
    assert step["to"] == to
    starts = [m["start"] for m in of(recs, "minute")]
    first = of(recs, "minute")[0]
    if whole is not None:
        assert len(starts) == len(set(starts)), starts
        assert first["start"] == "2026-07-15T12:00:00.000Z" and first["s"] == pytest.approx(whole, abs=0.05)
    else:
        assert starts[:2] == ["2026-07-15T12:00:00.000Z", "2026-07-15T11:58:00.000Z"] and first["s"] < 0.1


def test_setting_an_unset_clock_is_a_step_from_nothing(tmp_path):
    d = make_device(tmp_path, [60.0] * 3, None)
    recs = run(d, line({"cmd": "time", "id": 1, "utc": "2026-07-15T12:00:00Z"}) + line({"cmd": "info", "id": 2}))
    assert recs[0]["clock"] == "unset" and "clock_unset" in recs[0]["faults"]
    (step,) = of(recs, "event", "clock_step")
    assert step["from"] is None and step["step_s"] is None and step["to"] == "2026-07-15T12:00:00.000Z"
    info = [r for r in recs if r.get("id") == 2][0]["result"]
    assert info["clock"] == "host" and "clock_unset" not in info["faults"] and info["tz_min"] == 480
    assert recs[-1]["utc"] > "2026-07-15T12:00:02"


def test_a_virtual_board_clock_starts_at_the_scenario_start_and_goes_on_across_a_reboot(tmp_path):
    sc = load_scenario("calibrator")
    start = sc.start.astimezone(dt.timezone.utc)
    with VirtualBoard("calibrator", speed=0, device_dir=tmp_path / "dev") as vb:
        discard = vb.device_config.get("startup_discard_s", 0.0)
        with DeviceLink(vb.port, timeout=10.0) as link:
            hello = link.hello
            assert hello["clock"] == "scenario" and "clock_unset" not in hello["faults"]
            first = parse_utc(link.send("info")["utc"])
            assert sync_clock(link) is None  # a virtual board keeps its simulated time
            # the clock runs with the audio: device time and UTC advance together
            deadline = time.monotonic() + 60
            recs = []
            while not any(r.get("t") == "interval" and r["end_ms"] >= 5000 for r in recs):
                recs += link.read_records(timeout=0.5)
                assert time.monotonic() < deadline
            for r in recs:
                if r["t"] in ("interval", "status", "level"):
                    assert parse_utc(r["utc"]) == start + dt.timedelta(seconds=discard, milliseconds=r["ms"])
            assert first >= start + dt.timedelta(seconds=discard)
            last_before = max(parse_utc(r["utc"]) for r in recs)
            link.reboot()
            while True:
                got = link.read_records(timeout=0.5)
                hello2 = next((r for r in got if r.get("t") == "hello"), None)
                if hello2 is not None:
                    break
                assert time.monotonic() < deadline, "no hello after the reboot"
        # after the reboot the clock goes on from the scene time the board hears, never back to the start
        utc2 = parse_utc(hello2["utc"])
        assert hello2["clock"] == "scenario" and utc2 > last_before
        assert utc2 <= start + dt.timedelta(seconds=vb.scene_time_s + discard + 0.001)


def test_host_sets_the_clock_on_connect_when_it_is_off_by_more_than_a_second():
    with VirtualBoard("calibrator", speed=1) as vb:
        with DeviceLink(vb.port, timeout=10.0) as link:
            assert link.hello["clock"] == "scenario" and sync_clock(link) is None
            link.set_time(dt.datetime(2026, 7, 15, 12, 0, tzinfo=dt.timezone.utc))  # now an RTC set by a host
            assert link.info()["clock"] == "host"
            real_now = lambda: dt.datetime.now(dt.timezone.utc)  # noqa: E731
            ack = sync_clock(link, now=real_now)
            assert ack is not None and ack["cmd"] == "time"
            assert abs((parse_utc(ack["result"]["utc"]) - real_now()).total_seconds()) < 1.0
            assert ack["result"]["step_s"] > 1e6  # months
            assert sync_clock(link, now=real_now) is None  # within a second now: left alone
            assert abs((parse_utc(link.send("info")["utc"]) - real_now()).total_seconds()) < 1.0
