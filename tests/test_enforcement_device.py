"""Issue 9's proof through the firmware: a virtual board (the real firmware on the MicroPython unix port) hears a
scenario of the square under a limit schedule; the exceedance episodes and night_max events it reports live, that
the monitor's state shows, and that `slm pull` copies from its own record, match those that the independent judge
(tests/episodes_truth.py) finds in the simulator's truth: same count, start and end within a minute, LAeq within
0.3 dB.

The virtual board replays its scene while its clock runs on, so only the scene's first pass is compared. The
evening of the drum team (40 minutes of scene) runs in `make soak`; the singers and the night bang in `make test`.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import pytest

from slm.link import DeviceLink
from slm.monitor_state import MonitorState
from slm.sim.scenario import load_scenario
from slm.virtual_board import VirtualBoard
from tests.episodes_truth import compare_episodes, judge_truth, parse_utc
from tests.test_enforcement_truth import CLASS_1, CST, scene_truth

pytestmark = pytest.mark.micropython


def last_minute_of(sc) -> str:
    """The local HH:MM of the scene's last whole minute."""
    end = sc.start.astimezone(CST) + dt.timedelta(seconds=sc.duration_s - 60)
    return end.strftime("%H:%M")


def run_board(tmp_path, scenario: str, meter: str, config: dict) -> tuple[list[dict], object]:
    """Every record of the scene's first pass (until its last minute is closed), and the device folder."""
    sc = load_scenario(scenario)
    device = tmp_path / "dev"
    device.mkdir()
    (device / "config.json").write_text(json.dumps({**config, "stream_hz": 0}))
    last = last_minute_of(sc)
    records: list[dict] = []
    with VirtualBoard(scenario=scenario, meter=meter, speed=0, device_dir=device) as vb:
        with DeviceLink(vb.port, timeout=10.0) as link:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                got = link.read_records(timeout=0.5)
                records += got
                if any(r.get("t") == "minute" and r.get("local") == last for r in got):
                    break
            else:
                raise AssertionError(f"the board never closed its {last} minute")
            records += link.read_records(timeout=1.0)  # the events that its close sends
        out = tmp_path / "pulled"
        r = subprocess.run([sys.executable, "-m", "slm.cli", "pull", "--port", vb.port, "--out", str(out), "--json"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    first_pass = [rec for rec in records if rec.get("t") != "minute" or rec.get("local") <= last]
    return first_pass, out


def events(records: list[dict], kind: str, until: str) -> list[dict]:
    """The device's events of one kind whose time is within the first pass (``until``: its end, UTC ISO)."""
    end = parse_utc(until)
    return [r for r in records if r.get("t") == "event" and r.get("kind") == kind
            and parse_utc(r.get("end") or r.get("time") or r.get("start")) <= end]


def check_against_truth(tmp_path, scenario: str, meter: str, config: dict):
    sc = load_scenario(scenario)
    truth = judge_truth(scene_truth(sc), meter, sc.start, config)
    records, pulled = run_board(tmp_path, scenario, meter, config)
    scene_end = (sc.start + dt.timedelta(seconds=sc.duration_s)).astimezone(dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")
    live_ends = events(records, "exceedance_end", scene_end)
    assert compare_episodes(live_ends, truth.episodes) == []
    assert len(events(records, "exceedance_start", scene_end)) == len(truth.episodes)
    # the monitor's view of the same records
    st = MonitorState("virtual")
    for rec in records:
        st.feed(rec)
    assert st.episodes == len(truth.episodes) and not st.device_over
    # the device's own record, pulled: the same events, and every minute of the first pass
    pulled_events = [json.loads(line) for line in (pulled / "events.jsonl").read_text().splitlines()]
    pulled_ends = events([{**e, "t": "event"} for e in pulled_events], "exceedance_end", scene_end)
    assert compare_episodes(pulled_ends, truth.episodes) == []
    assert [{k: e[k] for k in ("start", "end", "LAeq")} for e in pulled_ends] == \
        [{k: e[k] for k in ("start", "end", "LAeq")} for e in live_ends]
    minutes_csv = (pulled / "minutes.csv").read_text().splitlines()
    assert len(minutes_csv) - 1 >= len(truth.minutes)  # a header, then at least the first pass's minutes
    return truth, records, pulled_events, scene_end


def test_singers_without_their_band_are_one_episode_as_the_truth_says(tmp_path):
    truth, records, _, _ = check_against_truth(tmp_path, "evening-singers", "singers-edge", CLASS_1)
    assert len(truth.episodes) == 1  # 19:31 to 19:39 (tests/test_enforcement_truth.py)
    minutes = [r for r in records if r.get("t") == "minute"]
    assert {m["band"] for m in minutes} == {"day"} and all(m["limit"] == 55.0 for m in minutes)


def test_a_night_bang_is_one_night_max_and_no_episode(tmp_path):
    truth, records, pulled_events, scene_end = check_against_truth(tmp_path, "night-bang", "facade", CLASS_1)
    (live,) = events(records, "night_max", scene_end)
    (expected,) = truth.night_max
    assert parse_utc(live["time"]) == expected.time and live["limit"] == expected.limit == 60.0
    assert abs(live["LAFmax"] - expected.LAFmax) <= 0.3
    assert [e for e in pulled_events if e["kind"] == "night_max"][0]["LAFmax"] == live["LAFmax"]


@pytest.mark.slow
def test_the_drum_team_across_the_night_change_is_one_episode_from_22_00(tmp_path):
    truth, _, _, _ = check_against_truth(tmp_path, "evening-drums", "facade", CLASS_1)
    assert len(truth.episodes) == 1
