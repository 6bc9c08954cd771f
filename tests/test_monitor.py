"""`slm monitor` (host/monitor.py): per-board state from records, the record log, the table, and whole runs.

- MonitorState from scripted record sequences: LAeq 1 s and 1 min are energy averages over device time, LAFmax and
  LCpeak since the start with their device time, the limit and its marks, link and device health.
- RecordLog: CSV and JSONL files are whole and complete after close, also when the loop writing them is interrupted.
- render_table and render_summary: the cells a person reads, rendered to text at 80 and 140-160 columns.
- Monitor and the command over a pty with a scripted board (unplug and re-plug: LOST, reconnecting, reconnected;
  Ctrl-C on the command leaves a complete log), and end to end on a virtual board running the real firmware
  (marked micropython): the calibrator scenario, and a board killed and restarted mid-run.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner
from rich.console import Console

from slm import discovery
from slm.cli import cli
from slm.utc import utc_text
from slm.monitor import (CSV_COLUMNS, SILENT, Monitor, MonitorState, RecordLog, energy_mean_db, level_bar,
                         render_summary, render_table)
from slm.protocol import BadLine, encode_line, parse_line
from slm.virtual_board import VirtualBoard

SLM = str(Path(sys.executable).with_name("slm"))

HELLO = {"proto": 2, "fw": "0.1.0", "board": "test-board", "mic": "INMP441", "rate": 48000, "serial": "a1b2c3",
         "cal": {"offset_db": 0.0, "sensitivity_dbfs": -26.0, "method": "datasheet", "time": None},
         "config": {"interval_s": 1.0, "stream_hz": 2, "status_s": 10, "zone": None}, "tz_min": 480, "clock": "rtc",
         "faults": []}


def hello_with(**config: Any) -> dict:
    h = json.loads(json.dumps(HELLO))
    h["config"].update(config)
    return h


class Feeder:
    """Writes a device's record sequence into a MonitorState: seq and ms as the firmware counts them."""

    def __init__(self, state: MonitorState, seq: int = 0):
        self.state = state
        self.seq = seq
        self.mono = 100.0

    def rec(self, t: str, ms: int, **fields: Any) -> dict:
        r = {"t": t, "seq": self.seq, "ms": ms, **fields}
        self.seq += 1
        self.state.feed(r, self.mono, 1.7e9 + self.mono)
        return r

    def interval(self, start_ms: int, end_ms: int, laeq: float | None, **fields: Any) -> dict:
        fields.setdefault("LAFmax", None if laeq is None else laeq + 3)
        fields.setdefault("LCpeak", None if laeq is None else laeq + 20)
        return self.rec("interval", end_ms, start_ms=start_ms, end_ms=end_ms, LAeq=laeq, overload=False,
                        underrange=False, **fields)

    def level(self, ms: int, laf: float, laeq_so_far: float | None, **fields: Any) -> dict:
        return self.rec("level", ms, LAF=laf, LAS=laf, LAeq=laeq_so_far, LCpeak=laf + 20, overload=False, **fields)


    def minute(self, ms: int, limit: float | None, band: str | None = "day", **fields: Any) -> dict:
        """A minute record as the device's schedule judges it (docs/protocol.md)."""
        fields.setdefault("start", "2026-07-15T13:50:00Z")
        return self.rec("minute", ms, local="21:50", s=60, LAeq=fields.pop("LAeq", 60.0), LAFmax=70.0, LA10=62.0,
                        LA50=59.0, LA90=55.0, LCpeak=90.0, overload=False, band=band, limit=limit,
                        over=None if limit is None else False, **fields)


def state_with(hello: dict | None = None, limit_db: float | None = None,
               device_limit: float | None = None) -> tuple[MonitorState, Feeder]:
    """A connected board; ``device_limit``: the limit in force that its first minute record states."""
    st = MonitorState("/dev/ttyACM0", limit_db=limit_db)
    st.set_link_state("connected", 100.0, 1.7e9)
    st.set_hello(hello or HELLO)
    f = Feeder(st)
    if device_limit is not None:
        f.minute(0, device_limit)
    return st, f


# ------------------------------------------------------------------------------------------------ LAeq windows

def test_energy_mean_of_levels():
    assert energy_mean_db([60.0, 60.0]) == pytest.approx(60.0)
    assert energy_mean_db([60.0, 70.0]) == pytest.approx(10 * math.log10((1e6 + 1e7) / 2))
    assert energy_mean_db([60.0, 70.0], [3, 1]) == pytest.approx(10 * math.log10((3e6 + 1e7) / 4))
    assert energy_mean_db([]) is None


def test_laeq_1s_is_the_last_1s_interval_and_1min_the_energy_mean_of_the_last_60():
    st, f = state_with()
    levels = [50 + 7 * math.sin(k / 5) + (k % 3) for k in range(90)]
    for k, la in enumerate(levels):
        f.interval(k * 1000, (k + 1) * 1000, round(la, 2))
    assert st.laeq_1s.db == pytest.approx(round(levels[-1], 2), abs=1e-9)
    assert st.laeq_1s.coverage_s == 1.0 and not st.laeq_1s.partial
    assert st.laeq_1min.db == pytest.approx(energy_mean_db([round(x, 2) for x in levels[-60:]]), abs=1e-9)
    assert st.laeq_1min.coverage_s == 60.0 and not st.laeq_1min.partial
    assert st.laeq_1min.source == "interval"


def test_first_minute_is_partial_and_says_how_much_it_covers():
    st, f = state_with()
    for k in range(20):
        f.interval(k * 1000, (k + 1) * 1000, 60.0 if k % 2 else 70.0)
    w = st.laeq_1min
    assert w.partial and w.coverage_s == 20.0
    assert w.db == pytest.approx(energy_mean_db([60.0, 70.0]))


def test_lost_intervals_leave_the_window_partly_covered_not_wrong():
    st, f = state_with()
    for k in range(60):
        if 30 <= k < 35:
            f.seq += 1  # five interval records lost on the way
            continue
        f.interval(k * 1000, (k + 1) * 1000, 80.0 if k < 30 else 60.0)
    w = st.laeq_1min
    assert w.coverage_s == 55.0
    assert w.db == pytest.approx(energy_mean_db([80.0] * 30 + [60.0] * 25))


def test_short_intervals_are_averaged_over_the_second_by_device_time():
    st, f = state_with(hello_with(interval_s=0.1))
    levels = [60.0 + (k % 10) for k in range(30)]
    for k, la in enumerate(levels):
        f.interval(k * 100, (k + 1) * 100, la)
    assert st.laeq_1s.db == pytest.approx(energy_mean_db(levels[-10:]))
    assert st.laeq_1s.coverage_s == pytest.approx(1.0)
    assert st.laeq_1min.coverage_s == pytest.approx(3.0)


def test_window_takes_the_overlapping_part_of_an_interval():
    st, f = state_with(hello_with(interval_s=0.4))
    for k, la in enumerate([90.0, 90.0, 60.0, 60.0]):  # 90 dB to 800 ms, then 60 dB: the last 1 s is 600-1600
        f.interval(k * 400, (k + 1) * 400, la)
    assert st.laeq_1s.db == pytest.approx(energy_mean_db([90.0, 60.0], [0.2, 0.8]))


def so_far(segments: list[tuple[float, float]], t: float) -> float:
    """LAeq from 0 to t of a level that is `level` up to each segment's end (piecewise constant), 0.01 dB."""
    energy, t0 = 0.0, 0.0
    for end, level in segments:
        if t <= t0:
            break
        energy += (min(t, end) - t0) * 10 ** (level / 10)
        t0 = end
    return round(10 * math.log10(energy / t), 2)


def test_long_intervals_take_the_last_second_from_level_records():
    # interval_s 10: the level records' LAeq so far in the interval give the energy of each half second.
    st, f = state_with(hello_with(interval_s=10.0))
    f.interval(0, 10000, 55.0)  # the interval before: sets where the current one starts
    segments = [(4.0, 60.0), (7.0, 70.0), (10.0, 66.0)]
    for k in range(1, 15):  # up to 7.0 s into the interval
        t = k * 0.5
        f.level(10000 + int(t * 1000), 65.0, so_far(segments, t))
    w = st.laeq_1s
    assert w.source == "level" and w.db == pytest.approx(70.0, abs=0.1) and w.coverage_s == 1.0
    for k in range(15, 17):  # the second from 7.0 to 8.0 s: 66 dB
        f.level(10000 + k * 500, 65.0, so_far(segments, k * 0.5))
    assert st.laeq_1s.db == pytest.approx(66.0, abs=0.1)
    # the minute window lies across intervals of 10 s: intervals are used when they are not longer than it
    assert st.laeq_1min.source == "interval" and st.laeq_1min.db == pytest.approx(55.0)


def test_level_record_window_is_not_shown_when_the_rounding_would_swamp_it():
    st, f = state_with(hello_with(interval_s=3600.0))
    f.interval(0, 3600000, 55.0)
    f.level(3600000 + 2000000, 60.0, 60.0)
    f.level(3600000 + 2001000, 60.0, 60.0)  # 1 s after 2000 s: ±0.01 dB of the total is ±20 dB of the second
    assert st.laeq_1s.db is None and st.laeq_1s.source == "level"


def test_a_restarted_device_starts_its_windows_again_but_the_maxima_stay():
    st, f = state_with()
    for k in range(10):
        f.interval(k * 1000, (k + 1) * 1000, 80.0, LAFmax=90.0 if k == 4 else 85.0, LCpeak=110.0 if k == 6 else 100)
    assert (st.lafmax, st.lafmax_ms) == (90.0, 5000)
    assert (st.lcpeak_max, st.lcpeak_max_ms) == (110.0, 7000)
    f.seq = 0
    f.rec("hello", 0, **HELLO)
    for k in range(3):
        f.interval(k * 1000, (k + 1) * 1000, 50.0)
    assert st.laeq_1min.db == pytest.approx(50.0) and st.laeq_1min.coverage_s == 3.0
    assert st.lafmax == 90.0 and st.lafmax_ms == 5000 and st.lcpeak_max == 110.0
    assert st.lcpeak == 70.0  # the last interval's
    assert st.device_restarts_seen == 1


def test_ms_going_backwards_is_a_restart_too():
    st, f = state_with()
    for k in range(5):
        f.interval(k * 1000, (k + 1) * 1000, 80.0)
    f.interval(0, 1000, 40.0)
    assert st.laeq_1min.db == pytest.approx(40.0) and st.laeq_1min.coverage_s == 1.0


def test_null_levels_are_skipped_not_counted_as_silence():
    st, f = state_with()
    f.interval(0, 1000, 60.0)
    f.interval(1000, 2000, None)
    assert st.laeq_1s.db is None
    assert st.laeq_1min.db == pytest.approx(60.0) and st.laeq_1min.coverage_s == 1.0
    assert st.lafmax == 63.0


# ------------------------------------------------------------------------------------------------ limit and health

def test_limit_from_the_device_configuration_and_over_it_by_1s_then_1min():
    st, f = state_with(device_limit=65.0)
    assert st.limit_db == 65.0 and not st.over
    for k in range(50):
        f.interval(k * 1000, (k + 1) * 1000, 60.0)
    f.interval(50000, 51000, 70.0)
    assert st.over_reasons == ["1s"]
    for k in range(51, 60):
        f.interval(k * 1000, (k + 1) * 1000, 75.0)
    assert st.over_reasons == ["1s", "1min"]
    assert st.over_s == pytest.approx(10.0)
    f.interval(60000, 61000, 50.0)
    assert st.over_reasons == ["1min"]


def test_cli_limit_overrides_the_device_limit():
    st, f = state_with(device_limit=80.0, limit_db=55.0)
    f.interval(0, 1000, 60.0)
    assert st.limit_db == 55.0 and st.over_reasons == ["1s", "1min"]
    st2, f2 = state_with()
    f2.interval(0, 1000, 120.0)
    assert st2.limit_db is None and not st2.over


def test_device_episodes_mark_over_until_closed_or_restart_with_band_and_duration():
    st, f = state_with(device_limit=65.0)
    assert st.band == "day" and st.limit_db == 65.0
    f.interval(0, 1000, 64.0)
    f.minute(60000, 55.0, band="night", LAeq=64.0, utc="2026-07-15T14:01:00.000Z")
    assert st.limit_db == 55.0 and st.band == "night"  # the schedule moved on: the limit of the last minute
    f.rec("event", 60000, kind="exceedance_start", start="2026-07-15T14:00:00Z", limit=55.0, band="night",
          LAeq=64.0, utc="2026-07-15T14:01:00.000Z")
    assert st.device_over and "episode" in st.over_reasons and st.episodes == 1
    f.interval(60000, 61000, 50.0, utc="2026-07-15T14:01:01.000Z")
    assert st.over_reasons == ["episode"] and st.episode_s == 61.0  # the levels are under it now; the episode is open
    f.rec("event", 62000, kind="exceedance_end", start="2026-07-15T14:00:00Z", end="2026-07-15T14:02:00Z",
          duration_s=120, LAeq=64.0, LAFmax=70.0, limit=55.0, band="night", minutes_over=2, interrupted=False)
    assert not st.device_over and st.episode_s is None and st.last_episode["minutes_over"] == 2
    f.rec("event", 63000, kind="exceedance_start", start="2026-07-15T14:03:00Z", limit=55.0, band="night", LAeq=60.0)
    f.rec("event", 63000, kind="night_max", time="2026-07-15T14:03:00Z", LAFmax=75.0, limit=70.0, band="night")
    assert st.device_over and st.episode_s == 0.0  # the newest utc is older than its start: not negative
    f.seq = 0
    f.rec("hello", 0, **HELLO)
    assert not st.device_over and st.episodes == 2 and st.night_max_events == 1
    s = st.summary()
    assert (s["band"], s["episodes"], s["episode_open"], s["night_max_events"]) == ("night", 2, False, 1)


def test_overload_is_latched_and_status_gives_device_health():
    st, f = state_with()
    f.level(500, 70.0, 70.0, )
    assert not st.overload
    f.rec("level", 1000, LAF=120.0, LAS=110.0, LAeq=100.0, LCpeak=130.0, overload=True)
    f.interval(0, 1000, 60.0)
    assert st.overload
    f.rec("status", 10000, uptime_s=10, heap_free=64000, blocks=1000, dropped=3, late=2, faults=["config_missing"],
          overload=True, lmax=99.0, lmax_ms=None)
    s = st.summary(now_mono=f.mono + 1)
    assert s["overload"] and s["device"] == {"faults": ["config_missing"], "dropped": 3, "late": 2,
                                             "heap_free": 64000, "uptime_s": 10}
    assert s["last_record_age_s"] == 1.0


def test_link_states_make_a_history_and_silence_is_noticed():
    st = MonitorState("/dev/ttyACM0")
    st.set_hello(HELLO)  # 1 s intervals, 2 level records a second: silent after 2 s without records
    st.set_link_state("connected", 0.0, 1000.0)
    st.feed({"t": "level", "seq": 1, "ms": 500, "LAF": 50.0}, 0.5, 1000.5)
    assert st.tick(1.0, 1001.0) is None and st.view_state == "connected"
    assert st.silent_after_s == 2.0
    assert st.tick(3.0, 1003.0) == SILENT and st.view_state == SILENT
    st.feed({"t": "level", "seq": 2, "ms": 1000, "LAF": 50.0}, 3.2, 1003.2)
    assert st.tick(3.25, 1003.25) == "connected"
    st.set_link_state("lost", 4.0, 1004.0, "device reports readiness to read but returned no data")
    st.set_link_state("reconnecting", 4.0, 1004.0)
    assert st.view_state == "reconnecting" and st.lost_since == 4.0
    assert st.tick(10.0, 1010.0) is None  # the link state already says it
    st.set_link_state("connected", 6.0, 1006.0)
    assert st.lost_since is None
    assert [s for _, s in st.state_history] == ["connected", SILENT, "connected", "lost", "reconnecting", "connected"]
    st.set_link_stats({"records": 9, "gaps": 1, "lost_records": 4, "bad_lines": 2, "reconnects": 1, "restarts": 1})
    s = st.summary(now_mono=7.0)
    assert (s["records"], s["gaps"], s["lost_records"], s["bad_lines"], s["reconnects"], s["restarts"]) == (
        9, 1, 4, 2, 1, 1)
    assert [h["state"] for h in s["state_history"]][-3:] == ["lost", "reconnecting", "connected"]
    json.dumps(s)


# ------------------------------------------------------------------------------------------------ rendering

def render(states: list[MonitorState], now_mono: float, width: int = 140, **kw: Any) -> str:
    console = Console(file=io.StringIO(), record=True, width=width)
    console.print(render_table(states, now_mono=now_mono, **kw))
    return console.export_text()


def two_boards() -> tuple[list[MonitorState], float]:
    """A board over its limit with gaps, and a virtual board (a long id, 10 h of device time, over its limit by
    1 s and 1 min: the widest cells) that was lost."""
    st, f = state_with(device_limit=65.0)
    for k in range(20):
        f.interval(k * 1000, (k + 1) * 1000, 60.0, LAFmax=80.5 if k == 12 else 70.0, LCpeak=101.2 if k == 3 else 90)
    f.interval(20000, 21000, 68.44, LAFmax=71.0, LCpeak=93.3)
    f.level(21500, 67.26, 66.0)
    f.rec("status", 22000, uptime_s=22, heap_free=81234, blocks=1375, dropped=3, late=0, faults=[], overload=False,
          lmax=80.5, lmax_ms=None)
    st.set_link_stats({"gaps": 2, "lost_records": 7, "bad_lines": 1, "reconnects": 0, "restarts": 0})
    lost = MonitorState("/dev/pts/12", limit_db=60.0)
    lost.set_link_state("connected", 90.0, 1.7e9 - 10)
    lost.set_hello(dict(HELLO, serial="virtual-0123456789ab"))
    g = Feeder(lost)
    for k in range(36000, 36070):
        g.interval(k * 1000, (k + 1) * 1000, 88.7, LAFmax=101.3 if k == 36042 else 91.9, LCpeak=113.1)
    g.level(36070500, 88.24, 88.2)
    lost.set_link_state("lost", 95.0, 1.7e9 - 5, "unplugged")
    lost.set_link_state("reconnecting", 95.0, 1.7e9 - 5)
    lost.set_link_stats({"reconnects": 2, "restarts": 1})
    return [st, lost], f.mono + 0.3


def test_table_shows_levels_maxima_limit_and_link():
    st, f = state_with(device_limit=65.0)
    for k in range(20):
        f.interval(k * 1000, (k + 1) * 1000, 60.0, LAFmax=80.5 if k == 12 else 70.0, LCpeak=101.2 if k == 3 else 90)
    f.interval(20000, 21000, 68.44, LAFmax=71.0, LCpeak=93.3)
    f.level(21500, 67.26, 66.0)
    st.set_link_stats({"gaps": 2, "lost_records": 7, "bad_lines": 1, "reconnects": 0, "restarts": 0})
    text = render([st], now_mono=f.mono + 0.3)
    row = next(line for line in text.splitlines() if "a1b2c3" in line)
    for cell in ("67.3", "68.4", "(21s)", "80.5 @0:00:13", "93.3 (101.2)", "65 day OVER", "connected 0.3 s"):
        assert cell in row, (cell, text)
    assert "gaps 2 (7 lost) bad 1" in text and "1s" in text and "ttyACM0" in text
    assert "┃" in row  # the limit on the bar


def test_table_shows_lost_reconnecting_silent_refused_and_overload():
    lost = MonitorState("/dev/ttyUSB0")
    lost.set_link_state("connected", 0.0, 1.0)
    lost.set_link_state("lost", 1.0, 2.0, "unplugged")
    lost.set_link_state("reconnecting", 1.0, 2.0)
    lost.set_link_stats({"reconnects": 2, "restarts": 1})
    silent = MonitorState("/dev/pts/7")
    silent.set_link_state("connected", 0.0, 1.0)
    silent.feed({"t": "level", "seq": 0, "ms": 0, "LAF": 50.0, "overload": True}, 0.5, 1.5)
    silent.tick(9.0)
    refused = MonitorState("/dev/ttyACM3")
    refused.set_link_state("refused", 0.0, 1.0, "/dev/ttyACM3: the device speaks protocol version 3")
    text = render([lost, silent, refused], now_mono=9.5)
    assert "LOST 8.5 s reconnecting" in text and "reconn 2 restarts 1" in text
    assert "SILENT 9.0 s" in text and "pts/7" in text and "OVERLOAD" in text
    assert "REFUSED" in text


def test_table_at_80_columns_shows_every_figure_whole():
    states, now = two_boards()
    text = render(states, now_mono=now, width=80, caption="Ctrl-C to stop · log evening.csv")
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in text, text
    words = text.split()
    for figure in ("a1b2c3", "ttyACM0", "virtual-0123456789ab", "pts/12", "67.3", "68.4", "61.1", "(21s)", "80.5",
                   "@0:00:13", "93.3", "101.2", "65", "OVER", "1s", "connected", "LOST", "reconnecting",
                   "heap", "79k", "restarts", "evening.csv", "88.2", "88.7", "101.3", "@10:00:43", "113.1", "60",
                   "1min"):
        assert figure in words, (figure, text)
    for phrase in ("gaps 2 (7 lost) bad 1", "dropped 3 heap 79k", "reconn 2 restarts 1", "LOST 5.3 s reconnecting",
                   "connected 0.3 s", "max 101.2", "max 113.1", "1s 1min"):
        assert phrase in text, (phrase, text)
    # each board's levels are on its own line, in the order of the columns
    row = next(line for line in lines if line.lstrip().startswith("a1b2c3")).split()
    assert row == ["a1b2c3", "67.3", "68.4", "61.1", "80.5", "93.3", "65", "day"], text  # the limit and its band
    row = next(line for line in lines if line.lstrip().startswith("virtual-")).split()
    assert row == ["virtual-0123456789ab", "88.2", "88.7", "88.7", "101.3", "113.1", "60"], text


def test_table_is_the_one_line_per_board_layout_where_it_fits():
    states, now = two_boards()
    text = render(states, now_mono=now, width=160)
    row = next(line for line in text.splitlines() if line.lstrip().startswith("a1b2c3"))
    assert "80.5 @0:00:13" in row and "connected 0.3 s" in row and "┃" in row and "…" not in text


def test_the_wide_layout_is_taken_exactly_when_it_fits_whole():
    from rich.measure import Measurement

    from slm.monitor_view import _wide_table

    states, now = two_boards()
    console = Console(file=io.StringIO(), width=80)
    wide = _wide_table(states, now, None, None)[0]
    needs = Measurement.get(console, console.options.update(max_width=10_000), wide).maximum  # rich's own figure
    fits = render(states, now_mono=now, width=needs)
    assert "LAF (30–110 dB)" in fits and "…" not in fits
    narrow = render(states, now_mono=now, width=needs - 1)
    assert "LAF (30–110 dB)" not in narrow and "…" not in narrow and "80.5" in narrow


def test_rows_are_named_by_the_device_id_with_the_port_below():
    st = MonitorState("/dev/pts/3")
    st.set_link_state("connected", 0.0, 1.0)
    assert st.display_name == "pts/3"  # before the device said who it is
    st.set_hello(dict(HELLO, serial="f00dfeed"))
    for width in (80, 160):
        lines = [line.strip() for line in render([st], now_mono=1.0, width=width).splitlines()]
        name_at = next(k for k, line in enumerate(lines) if line.startswith("f00dfeed"))
        assert lines[name_at + 1].startswith("pts/3"), lines
        assert not any(line.startswith("pts/3") for line in lines[:name_at])
    st.set_hello(dict(HELLO, serial="f00dfeed", name="north-corner"))  # a device that has a name says it
    assert st.display_name == "north-corner" and st.summary()["name"] == "north-corner"


def summary_text(states: list[MonitorState], now_mono: float, width: int = 80) -> str:
    console = Console(file=io.StringIO(), record=True, width=width)
    console.print(render_summary(states, now_mono=now_mono, title="slm monitor: 130 s"))
    return console.export_text()


def test_summary_gives_the_whole_run_per_board():
    st, f = state_with(device_limit=65.0)
    st.state_since = st.opened_mono = f.mono  # watched from here
    levels = [60.0 + (k % 5) for k in range(70)]  # below 65 dB ...
    levels[30:40] = [70.0] * 10  # ... but 10 s over it ...
    levels[50:52] = [66.0, 66.5]  # ... and 2 s more: over the limit twice
    levels[55] = 64.9
    f.rec("status", 0, uptime_s=0, heap_free=90000, blocks=0, dropped=0, late=0, faults=["config_missing"],
          overload=False, lmax=None, lmax_ms=None)
    for k, la in enumerate(levels[:45]):
        f.interval(k * 1000, (k + 1) * 1000, la, LAFmax=88.8 if k == 33 else la + 3, LCpeak=104.4 if k == 20 else 90)
    f.mono += 45
    f.seq = 0
    f.rec("hello", 0, **HELLO)  # the device restarted: the run goes on
    for k, la in enumerate(levels[45:]):
        f.interval(k * 1000, (k + 1) * 1000, la)
    st.set_link_stats({"records": 200, "gaps": 1, "lost_records": 3, "bad_lines": 0, "reconnects": 1,
                       "restarts": 1})
    st.set_link_state("closed", f.mono + 20, 1.7e9 + f.mono + 20)
    text = summary_text([st], now_mono=f.mono + 30)
    assert all(len(line) <= 80 for line in text.splitlines()) and "…" not in text and "█" not in text
    run_leq = 10 * math.log10(sum(10 ** (la / 10) for la in levels) / len(levels))
    lafmax_at = time.strftime("%H:%M:%S", time.localtime(1.7e9 + 100.0))  # the host time it arrived
    for phrase in ("a1b2c3", "ttyACM0", "test-board", "0:01:05",  # watched: 65 s from open to close
                   "%.1f dB" % run_leq, "over 0:01:10",  # LAeq of the 70 intervals
                   "88.8 dB at %s" % lafmax_at, "(device 0:00:34)", "104.4 dB", "(device 0:00:21)",
                   "65 dB: 0:00:12", "2 times over", "1 gap, 3 lost", "1 restart, 1 reconnect", "config_missing"):
        assert phrase in text, (phrase, text)
    s = st.summary(now_mono=f.mono + 30)
    assert s["LAeq_run"] == {"db": round(run_leq, 2), "coverage_s": 70.0, "source": "interval"}
    assert (s["over_s"], s["over_count"], s["watched_s"], s["faults_seen"]) == (12.0, 2, 65.0, ["config_missing"])


def test_summary_of_a_lost_board_and_of_one_without_limit():
    states, now = two_boards()
    text = summary_text(states, now)
    assert "virtual-0123456789ab" in text and "reconnecting" in text and "2 reconnects" in text
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())


def test_level_bar_marks_the_limit_and_fills_to_the_level():
    bar = level_bar(70.0, 90.0, width=8, lo=30.0, hi=110.0)
    assert bar.plain == "████··┃·"
    assert level_bar(None, None, width=4).plain == "····"
    assert level_bar(200.0, 50.0, width=4).plain == "█┃██"


# ------------------------------------------------------------------------------------------------ record log

def test_csv_log_has_one_header_and_a_row_per_record_and_appends(tmp_path):
    path = tmp_path / "evening.csv"
    with RecordLog(path) as log:
        log.write({"t": "level", "seq": 1, "ms": 500, "LAF": 61.5, "overload": False}, "/dev/ttyACM0", "a1", 1.7e9)
        log.write({"t": "status", "seq": 2, "ms": 1000, "faults": ["x", "y"], "heap_free": 5}, "/dev/ttyACM0", "a1")
        log.write_state("/dev/ttyACM0", "lost", "unplugged", "a1", 1.7e9 + 1)
    with RecordLog(path) as log:
        log.write({"t": "interval", "seq": 3, "ms": 2000, "LAeq": 60.25, "LA90": None}, "/dev/ttyACM1", None)
    text = path.read_text()
    assert text.endswith("\n") and text.count("host_time,") == 1
    rows = list(csv.DictReader(text.splitlines()))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [r["t"] for r in rows] == ["level", "status", "link", "interval"]
    assert rows[0]["LAF"] == "61.5" and rows[0]["overload"] == "false" and rows[0]["serial"] == "a1"
    assert rows[0]["host_time"].startswith("2023-11-14T") or rows[0]["host_time"][:4].isdigit()
    assert rows[1]["faults"] == "x;y" and rows[2]["state"] == "lost" and rows[2]["reason"] == "unplugged"
    assert rows[3]["LAeq"] == "60.25" and rows[3]["LA90"] == "" and rows[3]["port"] == "/dev/ttyACM1"


def test_jsonl_log_is_the_record_plus_host_time_and_port(tmp_path):
    path = tmp_path / "evening.jsonl"
    rec = {"t": "interval", "seq": 7, "ms": 7000, "start_ms": 6000, "end_ms": 7000, "LAeq": 60.1, "LA90": None}
    with RecordLog(path) as log:
        log.write(rec, "/dev/pts/3", "a1", 1.7e9)
    line = json.loads(path.read_text())
    assert line.pop("host_time").startswith("2023-11-1") and line.pop("port") == "/dev/pts/3"
    assert line == rec


def test_log_names_must_say_csv_or_jsonl_and_csv_columns_must_match(tmp_path):
    with pytest.raises(ValueError, match=r"\.csv or \.jsonl"):
        RecordLog(tmp_path / "x.txt")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="other columns"):
        RecordLog(other)


def test_a_cut_short_line_left_by_a_crash_is_ended_before_appending(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"t":"level","seq":1}\n{"t":"lev')
    with RecordLog(path) as log:
        log.write({"t": "level", "seq": 2, "ms": 0}, "p")
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["seq"] == 2


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_log_is_whole_after_an_interrupted_loop(tmp_path, suffix, interrupt):
    path = tmp_path / ("log" + suffix)
    written = 0
    with pytest.raises(interrupt):
        with RecordLog(path, flush_s=0.0) as log:
            for k in range(10000):
                log.write({"t": "level", "seq": k, "ms": 100 * k, "LAF": 60.0 + k % 7, "overload": False}, "/dev/x")
                written += 1
                if k == 4321:
                    raise interrupt()
    text = path.read_text()
    assert text.endswith("\n")
    if suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        assert [int(r["seq"]) for r in rows] == list(range(written))
    else:
        assert [json.loads(line)["seq"] for line in text.splitlines()] == list(range(written))


# ------------------------------------------------------------------------------------------------ scripted board

class ScriptedBoard:
    """The device end of a pty, published under a stable symlink as a virtual board does.

    A thread writes what the firmware writes (hello on `replug(restart=True)`, level records at `stream_hz`, an
    interval each device second with `laeq(ms)`, status every 10 s) with device time running at `speed` times
    real time, and answers `info` with HELLO. `unplug()` closes the pty (the host's reads fail, as when a board is
    pulled out); `replug()` makes a new pty under the same name. With `hold`, what it writes before the first
    command is kept and written just before the reply to that command, as a virtual board keeps what it wrote while
    no host had its port open and writes it when one opens it.
    """

    def __init__(self, path: Path, speed: float = 5.0, stream_hz: int = 2,
                 laeq: Callable[[int], float] = lambda ms: 60.0 + (ms // 1000) % 5, hello: dict | None = None,
                 hold: bool = False):
        self.path = path
        self.held: list[bytes] | None = [] if hold else None
        self.speed = speed
        self.step_ms = 1000 // stream_hz
        self.laeq = laeq
        self.hello = dict(HELLO if hello is None else hello)
        self.seq = 0
        self.ms = 0
        self.commands: list[dict] = []
        self.written: list[dict] = []
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self.replug(restart=False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def replug(self, restart: bool = True) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        tmp = self.path.with_suffix(".new")
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)
        with self._lock:
            self._master, self._slave = master, slave
            if restart:
                self.seq = self.ms = 0
                self._write_locked("hello", **self.hello)

    def unplug(self) -> None:
        with self._lock:
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None
            # the name goes, as /dev/ttyUSB0 does: left pointing at the freed /dev/pts/N, a reconnecting monitor could
            # open whatever pty the system hands out under that number next (another test's board)
            tmp = self.path.with_suffix(".gone")
            os.symlink("/nonexistent/unplugged", tmp)
            os.replace(tmp, self.path)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.unplug()

    def _write_locked(self, t: str, **fields: Any) -> None:
        # a protocol 2 device whose clock is right: its records carry the host's UTC
        rec = {"t": t, "seq": self.seq, "ms": self.ms, "utc": utc_text(datetime.datetime.now(datetime.timezone.utc)),
               **fields}
        self.seq += 1
        if self._master is None:
            return
        self.written.append(rec)
        if self.held is not None:
            self.held.append(encode_line(rec))
            return
        try:
            os.write(self._master, encode_line(rec))
        except (BlockingIOError, OSError):
            pass  # nobody reads: the bytes are lost, as on a serial line

    def _run(self) -> None:
        buf = b""
        next_t = time.monotonic()
        while not self._stop.is_set():
            master = self._master
            timeout = max(0.0, next_t - time.monotonic())
            if master is None:
                time.sleep(min(timeout, 0.02) or 0.01)
            else:
                try:
                    ready = select.select([master], [], [], min(timeout, 0.05))[0]
                    data = os.read(master, 4096) if ready else b""
                except OSError:
                    data = b""
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        obj = parse_line(line)
                    except BadLine:
                        continue
                    if obj and "cmd" in obj:
                        self.commands.append(obj)
                        with self._lock:
                            if self.held is not None:
                                held, self.held = self.held, None
                                os.write(master, b"".join(held))
                            if obj["cmd"] == "info":
                                self._write_locked("ack", id=obj.get("id"), cmd="info", result=self.hello)
                            else:
                                self._write_locked("ack", id=obj.get("id"), cmd=obj["cmd"], result={})
            if time.monotonic() >= next_t:
                next_t += self.step_ms / 1000 / self.speed
                with self._lock:
                    self.ms += self.step_ms
                    ms = self.ms
                    la = self.laeq(ms - 1)
                    self._write_locked("level", LAF=la, LAS=la, LAeq=la, LCpeak=la + 20, overload=False)
                    if ms % 1000 == 0:
                        self._write_locked("interval", start_ms=ms - 1000, end_ms=ms, LAeq=la, LAFmax=la + 2,
                                           LCpeak=la + 20, overload=False, underrange=False)
                    if ms % 10000 == 0:
                        self._write_locked("status", uptime_s=ms // 1000, heap_free=100000, blocks=ms // 16,
                                           dropped=0, late=0, faults=[], overload=False, lmax=la + 2, lmax_ms=None)


@pytest.fixture
def board(tmp_path):
    b = ScriptedBoard(tmp_path / "board-port")
    yield b
    b.close()


def read_log(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    if path.suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    return [json.loads(line) for line in text.splitlines()]


def log_so_far(path: Path) -> list[dict]:
    """The whole lines of a JSONL log that another process is still writing."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1]]


WAIT_S = 60.0
"""How long a test waits for something that takes a fraction of a second on an idle machine."""


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Poll ``predicate`` until it returns something true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        assert time.monotonic() < deadline, "waited %g s for %s" % (timeout, what)
        time.sleep(0.05)


def run_until(mon: Monitor, done: Callable[[Monitor], bool], on_frame: Callable[[Monitor], None] | None = None,
              timeout: float = WAIT_S) -> None:
    """``mon.run`` until ``done(mon)`` holds after a frame; fail after ``timeout`` s."""

    def frame(m: Monitor) -> None:
        if on_frame is not None:
            on_frame(m)
        if done(m):
            m.stop()

    mon.run(timeout, on_frame=frame)
    assert done(mon), "the monitor ran %g s without reaching its goal" % timeout


def intervals_seen(m: Monitor) -> int:
    return m.states[0].types_seen["interval"]


def test_monitor_over_a_pty_shows_the_levels_and_logs_every_record(board, tmp_path):
    log = RecordLog(tmp_path / "m.jsonl")
    mon = Monitor([str(board.path)], log=log, reconnect_interval=0.05)
    frames: list[str] = []
    with mon:
        run_until(mon, lambda m: len(frames) >= 5 and intervals_seen(m) >= 2,
                  on_frame=lambda m: frames.append(render(m.states, time.monotonic())))
    st = mon.states[0]
    assert st.serial == "a1b2c3" and st.end_state == "connected" and st.link_state == "closed"
    assert any("connected" in fr for fr in frames)
    rows = read_log(tmp_path / "m.jsonl")
    recs = [r for r in rows if r["t"] != "link"]
    assert recs and all(r["port"] == str(board.path) and "host_time" in r for r in rows)
    assert st.laeq_1s.db == [r for r in recs if r["t"] == "interval"][-1]["LAeq"]
    assert [r["state"] for r in rows if r["t"] == "link"][-1] == "closed"
    s = mon.summary()["boards"][0]
    assert s["records"] >= len(recs) and s["gaps"] == 0 and s["bad_lines"] == 0


def test_the_log_has_every_seq_also_the_replies_to_the_monitors_info(tmp_path):
    # The handshake's reply is a record of the device's (it takes a seq): logged, the seq has no holes where the
    # link counted no gap.
    b = ScriptedBoard(tmp_path / "board-port", speed=5.0)
    try:
        log = RecordLog(tmp_path / "m.jsonl")
        mon = Monitor([str(b.path)], log=log)
        with mon:
            run_until(mon, lambda m: intervals_seen(m) >= 3)
    finally:
        b.close()
    recs = [r for r in read_log(tmp_path / "m.jsonl") if r["t"] != "link"]
    seqs = [r["seq"] for r in recs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert mon.summary()["boards"][0]["gaps"] == 0
    acks = [r for r in recs if r["t"] == "ack"]
    assert [a["cmd"] for a in acks] == ["info"] and acks[0]["result"]["serial"] == "a1b2c3"


def test_records_sent_while_nobody_listened_get_host_times_from_their_device_time(tmp_path):
    # The board runs at real time and keeps what it writes until the host asks something; the monitor opens its
    # port after 4 s of device time: those records arrive at once, but happened over 4 s.
    b = ScriptedBoard(tmp_path / "board-port", speed=1.0, hold=True)
    try:
        wait_for("4 s of device time", lambda: b.ms >= 4000)
        log = RecordLog(tmp_path / "m.jsonl")
        mon = Monitor([str(b.path)], log=log)
        held = len(b.written)
        with mon:
            run_until(mon, lambda m: m.states[0].records_seen >= held + 4)  # and a few written after the open
    finally:
        b.close()
    rows = [r for r in read_log(tmp_path / "m.jsonl") if r["t"] != "link"]
    ack_at = next(k for k, r in enumerate(rows) if r["t"] == "ack")
    early = [r for r in rows[:ack_at] if r["ms"] <= 2000]  # written 2 s or more before the port was opened
    assert len(early) >= 4 and all(r.get("buffered") is True for r in early), rows[:ack_at]
    assert "buffered" not in rows[-1]  # the newest record arrived as it was written
    t = [datetime.datetime.fromisoformat(r["host_time"]).timestamp() for r in early]
    for (r0, t0), (r1, t1) in zip(zip(early, t), zip(early[1:], t[1:])):
        assert abs((t1 - t0) - (r1["ms"] - r0["ms"]) / 1000) < 0.002  # spaced as the device wrote them
    assert mon.summary()["boards"][0]["buffered_records"] == sum(1 for r in rows if r.get("buffered"))


def test_monitor_survives_an_unplug_and_shows_lost_then_reconnected(board, tmp_path):
    log = RecordLog(tmp_path / "m.csv")
    mon = Monitor([str(board.path)], log=log, reconnect_interval=0.05)
    seen: list[str] = []
    phase = ["running"]

    def frame(m: Monitor) -> None:
        seen.append(render(m.states, time.monotonic()))
        st = m.states[0]
        if phase[0] == "running" and intervals_seen(m) >= 2:
            board.unplug()
            phase[0] = "unplugged"
        elif phase[0] == "unplugged" and st.link_state == "reconnecting":
            if any("LOST" in fr and "reconnecting" in fr for fr in seen):
                board.replug(restart=True)
                phase[0] = "replugged"

    def done(m: Monitor) -> bool:
        st = m.states[0]
        return phase[0] == "replugged" and st.link_state == "connected" and st.device_restarts_seen >= 1 and \
            st._intervals and st._intervals[-1][1] >= 2000

    with mon:
        run_until(mon, done, on_frame=frame)
    st = mon.states[0]
    states = [s for _, s in st.state_history]
    assert states[:4] == ["connected", "lost", "reconnecting", "connected"], states
    assert any("LOST" in fr and "reconnecting" in fr for fr in seen)
    s = mon.summary()["boards"][0]
    assert s["reconnects"] == 1 and s["restarts"] == 1 and s["state"] == "connected"
    rows = read_log(tmp_path / "m.csv")
    link_rows = [(r["state"], r["reason"]) for r in rows if r["t"] == "link"]
    assert [x[0] for x in link_rows][:4] == ["connected", "lost", "reconnecting", "connected"]
    assert link_rows[1][1]  # why it was lost
    after = rows[[r["t"] for r in rows].index("link", 2):]
    assert any(r["t"] == "interval" for r in after)  # records again after the reconnect


def test_monitor_needs_every_port_at_the_start(board, tmp_path):
    mon = Monitor([str(board.path), str(tmp_path / "missing")], reconnect_interval=0.05)
    from slm.link import LinkError

    with pytest.raises(LinkError, match="could not open"):
        mon.open()
    assert all(b.link.state == "closed" for b in mon.boards)


def test_keyboard_interrupt_in_the_loop_ends_the_run_with_a_whole_log(board, tmp_path):
    log = RecordLog(tmp_path / "m.csv", flush_s=0.0)
    mon = Monitor([str(board.path)], log=log)
    calls = []

    def frame(m: Monitor) -> None:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt

    with mon:
        mon.run(None, on_frame=frame)
    assert log.closed
    rows = read_log(tmp_path / "m.csv")
    assert rows and rows[-1]["t"] == "link" and rows[-1]["state"] == "closed"


# ------------------------------------------------------------------------------------------------ the command

def test_command_without_a_board_exits_2(monkeypatch):
    monkeypatch.setattr(discovery, "find_boards", lambda: [])
    r = CliRunner().invoke(cli, ["monitor", "--duration", "1"])
    assert r.exit_code == 2 and r.output.strip() == "slm: error: no board found: plug one in or give --port"


def test_command_with_a_port_that_does_not_exist_exits_2(tmp_path):
    """A missing port is bad input, exit 2, as in deploy, flash and calibrate."""
    r = CliRunner().invoke(cli, ["monitor", "--port", str(tmp_path / "nothing"), "--duration", "1"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "does not exist" in r.output


def test_command_with_a_port_that_cannot_open_exits_1(tmp_path):
    """A port that exists but is not a serial device: the operation fails, exit 1."""
    not_a_tty = tmp_path / "not-a-tty"
    not_a_tty.write_text("")
    r = CliRunner().invoke(cli, ["monitor", "--port", str(not_a_tty), "--duration", "1"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output


def test_command_with_a_bad_log_name_exits_2(board):
    r = CliRunner().invoke(cli, ["monitor", "--port", str(board.path), "--log", "x.txt"])
    assert r.exit_code == 2 and ".csv or .jsonl" in r.output


def test_command_help_has_an_example():
    r = CliRunner().invoke(cli, ["monitor", "--help"])
    assert r.exit_code == 0 and "slm monitor --port" in r.output and "--duration" in r.output


def test_command_duration_json_summary(board, tmp_path):
    log = tmp_path / "run.jsonl"
    r = CliRunner().invoke(cli, ["monitor", "--port", str(board.path), "--duration", "3", "--json", "--limit", "62",
                                 "--log", str(log)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    b = summary["boards"][0]
    assert b["port"] == str(board.path) and b["serial"] == "a1b2c3" and b["name"] == "a1b2c3"
    assert b["state"] == "connected" and b["limit_db"] == 62.0
    assert b["records"] > 5 and b["gaps"] == 0 and b["bad_lines"] == 0
    assert b["LAeq_1s"]["db"] in (60.0, 61.0, 62.0, 63.0, 64.0) and b["LAFmax"] >= 62.0
    assert summary["log"] == str(log) and read_log(log)


def test_command_summary_after_the_run_is_a_summary_not_the_live_table(board):
    r = CliRunner().invoke(cli, ["monitor", "--port", str(board.path), "--duration", "3"])
    assert r.exit_code == 0, r.output
    assert "slm monitor: 3 s" in r.output and "a1b2c3" in r.output and "board-port" in r.output
    for row in ("watched", "LAeq", "LAFmax", "LCpeak max", "over limit", "gaps", "restarts", "faults", "at the end"):
        assert any(line.split()[:len(row.split())] == row.split() for line in r.output.splitlines()), (row, r.output)
    assert "█" not in r.output and "LAeq 1min" not in r.output


def test_ctrl_c_on_the_command_exits_0_with_a_complete_log(board, tmp_path):
    log = tmp_path / "evening.csv"
    p = subprocess.Popen([SLM, "monitor", "--port", str(board.path), "--log", str(log)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        # records arrive and the log is flushed once a second
        wait_for("the log to fill", lambda: log.exists() and log.stat().st_size >= 2000)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=WAIT_S)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert err == "" and "slm monitor:" in out
    rows = read_log(log)
    assert rows[-1]["t"] == "link" and rows[-1]["state"] == "closed"
    assert all(len(r) == len(CSV_COLUMNS) and None not in r.values() for r in rows)


# ------------------------------------------------------------------------------------------------ real firmware

class MonitorProcess:
    """``slm monitor --json --log FILE.jsonl`` on a port in another process; ``wait_log`` for what the log must
    show, ``stop()`` (Ctrl-C) for its summary."""

    def __init__(self, port: str, log: Path, *args: str):
        self.log = log
        self.p = subprocess.Popen([SLM, "monitor", "--port", port, "--json", "--log", str(log), *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_log(self, what: str, predicate: Callable[[list[dict]], Any]) -> Any:
        def check() -> Any:
            assert self.p.poll() is None, "slm monitor ended: %s" % (self.p.communicate()[1],)
            return predicate(log_so_far(self.log))
        return wait_for(what, check)

    def stop(self) -> dict:
        try:
            self.p.send_signal(signal.SIGINT)
            out, err = self.p.communicate(timeout=WAIT_S)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.communicate()
        assert self.p.returncode == 0, err
        return json.loads(out)


@pytest.mark.micropython
def test_virtual_board_calibrator_end_to_end(tmp_path):
    log = tmp_path / "x.jsonl"
    with VirtualBoard(scenario="calibrator", speed=5) as vb:
        mon = MonitorProcess(vb.port, log)
        try:
            # the calibrator's tone runs from 2 s to 35 s of device time
            mon.wait_log("intervals up to 15 s of device time",
                         lambda rows: any(r["t"] == "interval" and r["end_ms"] >= 15000 for r in rows))
        finally:
            summary = mon.stop()
    b = summary["boards"][0]
    assert b["state"] == "connected" and b["serial"] == vb.serial and b["board"] == "esp32-devkitc-inmp441"
    assert b["name"] == vb.serial
    assert b["records"] > 40 and b["gaps"] == 0 and b["lost_records"] == 0 and b["bad_lines"] == 0
    assert b["reconnects"] == 0 and b["restarts"] == 0
    rows = read_log(log)
    recs = [r for r in rows if r["t"] != "link"]
    assert all(r["port"] == vb.port and r["host_time"][:2] == "20" for r in rows)
    seqs = [r["seq"] for r in recs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gaps: the reply to the monitor's info is logged
    assert [r["cmd"] for r in recs if r["t"] == "ack"] == ["info"]
    intervals = [r for r in recs if r["t"] == "interval"]
    assert len(intervals) >= 10
    # the calibrator's 94 dB tone reaches the board's microphone 1.3 dB low, from 2 s to 34.8 s of scene time; the
    # scene may run ahead of what the board heard on a loaded machine (vb.scene_lead_s)
    tone_end_ms = min(34000, (34.8 - vb.scene_lead_s) * 1000)
    tone = [r for r in intervals if r["start_ms"] >= 3000 and r["end_ms"] <= tone_end_ms]
    off = [(r["start_ms"], r["LAeq"], r["LAFmax"]) for r in tone if abs(r["LAeq"] - 92.78) >= 0.3]
    assert tone and not off, (off, "virtual board: clock slips %g s, audio lost %g s" % (vb.clock_slips_s,
                                                                                       vb.audio_lost_s))
    assert b["LAeq_1s"]["db"] == intervals[-1]["LAeq"]
    last_min = [r for r in intervals if r["end_ms"] > intervals[-1]["end_ms"] - 60000]
    assert b["LAeq_1min"]["db"] == pytest.approx(energy_mean_db([r["LAeq"] for r in last_min]), abs=0.01)
    assert b["LAeq_run"]["db"] == pytest.approx(energy_mean_db([r["LAeq"] for r in intervals],
                                                               [r["end_ms"] - r["start_ms"] for r in intervals]),
                                                abs=0.01)
    assert b["LAFmax"] == max(r["LAFmax"] for r in intervals if r["LAFmax"] is not None)
    assert b["LCpeak_max"] == max(r["LCpeak"] for r in intervals if r["LCpeak"] is not None)


@pytest.mark.micropython
def test_virtual_board_killed_and_restarted_is_shown_and_followed(tmp_path):
    log = tmp_path / "x.jsonl"

    def kinds(rows: list[dict]) -> list[tuple[str, str | None]]:
        return [(r["t"], r.get("state")) for r in rows]

    with VirtualBoard(scenario="calibrator", speed=5) as vb:
        mon = MonitorProcess(vb.port, log)
        try:
            mon.wait_log("intervals", lambda rows: sum(r["t"] == "interval" for r in rows) >= 2)
            vb.kill()  # a power cut: the port stays (a USB bridge), the records stop
            mon.wait_log("the board shown silent", lambda rows: ("link", SILENT) in kinds(rows))
            vb.restart()
            mon.wait_log("records after the restart", lambda rows: any(
                r["t"] == "interval" for r in rows[kinds(rows).index(("link", SILENT)):]))
        finally:
            summary = mon.stop()
    b = summary["boards"][0]
    states = [h["state"] for h in b["state_history"]]
    assert states[0] == "connected" and SILENT in states, states
    assert states[states.index(SILENT):][:2] == [SILENT, "connected"], states
    assert b["state"] == "connected" and b["restarts"] == 1 and b["bad_lines"] == 0
    rows = read_log(log)
    k = kinds(rows)
    silent_at = k.index(("link", SILENT))
    back_at = k.index(("link", "connected"), silent_at)
    assert ("hello", None) in k[silent_at:back_at + 3]  # the restarted device says hello
    after = [r for r in rows[silent_at:] if r["t"] == "interval"]
    assert after and after[0]["start_ms"] < 2000  # device time started again
