"""`make demo`'s command: the square as a fleet: virtual boards of the simulated square configured to GB 3096 class 1
with a dance band publish through a local Mosquitto into `slm collect`, and the monitor on them: the summary shows
the boards' own limit in force, their exceedance episodes, and what the collector stored of each board."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.micropython


def test_demo_boards_judge_the_dance_team_against_their_dance_band():
    # 20 s at 10x: 200 s of device time even on an idle machine, and the first minute closes under load too
    r = subprocess.run([sys.executable, "-m", "slm.cli", "demo", "--boards", "1", "--speed", "10", "--duration", "20",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (board,) = json.loads(r.stdout)["boards"]
    # the dance team's edge at 20:00 local: the dance band's 65 dB is in force, and the team is far over it
    assert board["band"] == "dance" and board["limit_db"] == 65.0
    assert board["episodes"] == 1 and board["episode_open"] and board["LAeq_run"]["db"] > 80
    # the fleet: the board published through the demo's broker and the collector stored its minutes (the first
    # closes 60 device seconds in, long before the 20 s end even under load)
    stored = json.loads(r.stdout)["fleet"]["devices"]
    assert list(stored) == [board["serial"]]
    assert stored[board["serial"]]["minutes"] >= 1
    # the monitor read the broker (the fleet's view: its MQTT session, last seen), not the board's serial port
    assert board["offline"] is False and board["last_seen"]
