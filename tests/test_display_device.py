"""The public display on a running virtual board: the firmware's app judges a minute against its schedule and the
sign shows that minute's LAeq, the limit in force, the local time and the state, pixel for pixel as the display
module draws that view (firmware/app.py -> display.view_for -> SSD1306 driver -> stand-in bus -> display.ppm)."""

from __future__ import annotations

import json
import time

import pytest

from slm.boards import load_board
from slm.display_image import DisplayImageError, read_ppm
from slm.link import DeviceLink
from slm.virtual_board import VirtualBoard
from tests.test_display import HARNESS, run_firmware

pytestmark = pytest.mark.micropython

BOARD = "esp32-devkitc-inmp441"  # an SSD1306 OLED and a warning light on its relay


def first_minute(link: DeviceLink, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in link.read_records(timeout=0.5):
            if rec.get("t") == "minute" and rec.get("LAeq") is not None:
                return rec
    raise AssertionError("no minute record")


def test_the_sign_shows_the_last_minute_judged_against_the_schedule(tmp_path):
    device = tmp_path / "dev"
    device.mkdir()
    (device / "config.json").write_text(json.dumps({"zone": "1", "stream_hz": 0}))  # GB 3096 class 1: 55 dB by day
    cfg = load_board(BOARD).device_config()["display"]
    with VirtualBoard(scenario="calibrator", speed=0, board=BOARD, device_dir=device) as vb:
        with DeviceLink(vb.port, timeout=10.0) as link:
            minute = first_minute(link)
            assert minute["band"] == "day" and minute["limit"] == 55.0 and minute["over"] is True
            # the sign's view from the next device second on: this minute, its limit, the clock a minute later
            hh, mm = map(int, minute["local"].split(":"))
            view = {"laeq": minute["LAeq"], "limit": 55.0, "band": "day",
                    "time": "%02d:%02d" % ((hh + (mm + 1) // 60) % 24, (mm + 1) % 60), "state": "over"}
            expected_dir = tmp_path / "expected"
            expected_dir.mkdir()
            run_firmware(HARNESS, {"cfg": cfg, "out": str(expected_dir), "views": [["over", view, 1]]})
            expected = read_ppm(expected_dir / "over.ppm")
            seen = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the sign redraws once a device second; look until it shows it
                try:
                    seen = read_ppm(device / "display.ppm")
                except (OSError, DisplayImageError):  # being replaced just now
                    continue
                if seen.rgb == expected.rgb:
                    break
                time.sleep(0.02)
            assert seen is not None and seen.rgb == expected.rgb, "the sign never showed the minute's view"
            assert seen.relay == 1  # the warning light is on while over the limit
