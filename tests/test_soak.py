"""Soak (`make soak`, not in `make test`): a virtual board runs 24 simulated hours faster than real time; its heap
stays flat and the measured level stays within 0.05 dB."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from slm.link import DeviceLink
from slm.virtual_board import VirtualBoard

DATA = Path(__file__).parent / "data"
HOURS = 24


@pytest.mark.slow
@pytest.mark.micropython
def test_24_simulated_hours_heap_flat_level_stable():
    intervals, status = [], []
    lock = threading.Lock()

    def on_record(link, rec):
        with lock:
            if rec["t"] == "interval":
                intervals.append(rec["LAeq"])
            elif rec["t"] == "status":
                status.append(rec)

    with VirtualBoard(scenario=str(DATA / "steady-tone.toml"), speed=0,
                      board=str(DATA / "ideal-mic-board.toml")) as vb:
        with DeviceLink(vb.port, on_record=on_record).open() as link:
            link.set(interval_s=60.0, status_s=600)
            deadline = time.monotonic() + 3 * 3600
            while time.monotonic() < deadline:
                with lock:
                    if len(intervals) >= HOURS * 60:
                        break
                time.sleep(1.0)
            stats = link.stats()
    assert len(intervals) >= HOURS * 60
    assert stats["gaps"] == 0 and stats["restarts"] == 0
    levels = intervals[1:HOURS * 60]
    assert max(levels) - min(levels) < 0.05, (min(levels), max(levels))
    heap = [s["heap_free"] for s in status[6:]]  # after the first hour
    assert max(heap) - min(heap) < 16 * 1024, (min(heap), max(heap))
