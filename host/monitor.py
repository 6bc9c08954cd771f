"""Live view of one or more meters (`slm monitor`): per-board state, a record log, and a `rich` table.

Three parts, each usable alone:

- ``MonitorState``: what one board's view shows, from the records and link states it is fed (pure data, no I/O,
  no clock of its own: callers pass ``time.monotonic()`` / ``time.time()`` values, so tests script it):
  LAF for the bar meter; LAeq of the last second and of the last minute; LAFmax and LCpeak since the monitor
  started, with the device time of the interval they fell in; the limit and whether it is exceeded; link health
  (state, age of the last record, gaps, lost records, bad lines, reconnects, restarts) and device health
  (faults, dropped and late audio blocks, free heap, overload latched).
- ``RecordLog``: every record with the host time it arrived, to ``FILE.jsonl`` (one JSON object a line: the
  record plus ``host_time`` and ``port``) or ``FILE.csv`` (a fixed set of columns, ``CSV_COLUMNS``). Link state
  changes are logged too, as rows with ``t`` = ``"link"`` and a ``state`` (they have no ``seq``/``ms``: the host
  made them, not the device). The file is appended to, written a whole line per ``write`` call, flushed about once a
  second, and flushed and closed on exit, also on Ctrl-C: it always ends with a whole line.
- ``Monitor``: one ``DeviceLink`` per port, all feeding one ``queue.SimpleQueue`` from their reader threads
  (``on_record``/``on_state`` only stamp and enqueue). ``Monitor.run`` wakes once a frame (0.25 s), drains the
  queue into the states and the log, and calls ``on_frame`` (the CLI renders there). ``render_table`` builds the
  ``rich`` table from the states; ``summary`` the ``--json`` object.

How the levels are made (docs/protocol.md records):

- LAeq 1 s and LAeq 1 min: the energy average of the ``interval`` records (LAeq over ``start_ms``..``end_ms``)
  that end within the last 1 s / 60 s of device time before the newest interval's end, each weighted by the part
  of its duration inside the window. With the default 1 s intervals, LAeq 1 s is the last interval's LAeq and
  LAeq 1 min the energy mean of the last 60. Until a minute has been seen (or after records were lost) the window
  is only partly covered: ``coverage_s`` says how much, and the table shows it. When the device's intervals are
  longer than the window (``interval_s`` > 1 s), the window is taken from the ``level`` records instead: their
  ``LAeq`` so far in the interval gives the interval's energy so far, E(t) = 10^(LAeq/10) · (t − start), and
  the window's LAeq is 10·lg((E(b) − E(a)) / (b − a)). The 0.01 dB rounding of the records limits that
  difference: it is shown only while known to ±0.2 dB (and is then marked as coming from level records).
- The device's time base restarts when the device does (a ``hello`` record, or ``ms`` going backwards): the
  windows start again then; LAFmax, LCpeak max and the overload latch are kept (they are the monitor's).
- LAFmax and LCpeak max: the largest interval ``LAFmax`` / ``LCpeak`` seen, with the device time (``end_ms``)
  and host time of that interval.
- Exceedance (``over``): LAeq 1 s or LAeq 1 min above the limit, or the device's own ``limit_exceeded`` event
  not yet followed by ``limit_cleared``. The limit is ``--limit`` or else the device's ``limit_db`` (its
  ``hello`` configuration). ``over_s`` counts the interval seconds whose LAeq was above the limit.

Cost: the link readers do the parsing; the monitor thread touches each record once (a few µs: state update and a
log line) and renders 4 frames a second (``bench/bench_monitor.py`` measures both).
"""

from __future__ import annotations

import collections
import csv
import datetime
import json
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from slm import discovery
from slm.link import CLOSED, CONNECTED, LOST, RECONNECTING, REFUSED, DeviceLink, LinkError

FRAME_S = 0.25
"""Seconds between frames: the live view refreshes 4 times a second."""
WINDOW_1S_MS = 1000
WINDOW_1MIN_MS = 60000
LEVEL_RELATIVE_ERROR_MAX = 10 ** (0.2 / 10) - 1  # a level-record window is shown while known to ±0.2 dB
_ROUNDING = 10 ** (0.005 / 10) - 1  # energy error of a level rounded to 0.01 dB
SILENT_MIN_S = 2.0
"""A connected board is shown ``silent`` when nothing came for 3 x its longest expected pause between records
(from its configuration: the interval, level and status periods), and at least this long."""
SILENT = "silent"


def energy_mean_db(levels: Iterable[float], weights: Iterable[float] | None = None) -> float | None:
    """10·lg of the (weighted) mean of 10^(L/10): the LAeq of several intervals. None for no levels."""
    levels = list(levels)
    w = [1.0] * len(levels) if weights is None else list(weights)
    total = sum(w)
    if not levels or total <= 0:
        return None
    return 10 * math.log10(sum(wi * 10 ** (li / 10) for li, wi in zip(levels, w)) / total)


def _num(x: Any) -> float | None:
    """A level from a record: a number, or None (null, missing, or not a number)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _iso(wall: float) -> str:
    """Host time as ISO-8601 local time with its offset, to the millisecond."""
    return datetime.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")


class WindowLeq:
    """An LAeq over a window of device time: ``db`` (None when unknown), ``coverage_s`` (how much of the window
    the records covered), ``source`` (``"interval"`` or ``"level"``)."""

    __slots__ = ("db", "coverage_s", "window_s", "source")

    def __init__(self, db: float | None, coverage_s: float, window_s: float, source: str):
        self.db, self.coverage_s, self.window_s, self.source = db, coverage_s, window_s, source

    @property
    def partial(self) -> bool:
        return self.db is not None and self.coverage_s < self.window_s - 1e-6

    def as_dict(self) -> dict[str, Any]:
        return {"db": None if self.db is None else round(self.db, 2), "coverage_s": round(self.coverage_s, 3),
                "source": self.source}


NO_LEQ_1S = WindowLeq(None, 0.0, 1.0, "interval")
NO_LEQ_1MIN = WindowLeq(None, 0.0, 60.0, "interval")


class MonitorState:
    """What the monitor knows about one board. Feed it; read its attributes; no I/O, no threads.

    ``feed(record, mono, wall)`` with each record (``mono``: ``time.monotonic()`` at arrival, for ages;
    ``wall``: ``time.time()``, for times shown to people), ``set_link_state`` with each link state,
    ``set_link_stats`` with ``DeviceLink.stats()``, ``set_hello`` with the link's ``hello`` (the handshake's
    ``info`` reply is not a record). ``limit_db``: the ``--limit`` value, which overrides the device's.
    """

    def __init__(self, name: str, port: str | None = None, limit_db: float | None = None):
        self.name = name
        self.port = port if port is not None else name
        self.cli_limit_db = limit_db
        # device
        self.hello: dict[str, Any] | None = None
        self.serial: str | None = None
        self.board: str | None = None
        self.status: dict[str, Any] | None = None
        # levels now
        self.laf: float | None = None
        self.las: float | None = None
        self.level_ms: int | None = None
        # maxima since the monitor started (kept across device restarts)
        self.lafmax: float | None = None
        self.lafmax_ms: int | None = None
        self.lafmax_wall: float | None = None
        self.lcpeak: float | None = None  # of the last interval
        self.lcpeak_max: float | None = None
        self.lcpeak_max_ms: int | None = None
        self.lcpeak_max_wall: float | None = None
        self.overload = False  # latched: any record said overload
        self.overload_wall: float | None = None
        # limit
        self.device_over = False  # a limit_exceeded event not yet cleared
        self.exceeded_events = 0
        self.over_s = 0.0  # interval seconds with LAeq above the limit
        self.last_event: dict[str, Any] | None = None
        # link
        self.link_state: str = CLOSED
        self.link_reason: str | None = None
        self.state_since: float | None = None
        self.lost_since: float | None = None  # mono of the loss, until connected again
        self.state_history: collections.deque[tuple[float, str]] = collections.deque(maxlen=100)
        self.link_stats: dict[str, Any] = {}
        self.last_record_mono: float | None = None
        self.silent = False  # connected, but no records for longer than silent_after_s
        self.end_state: str | None = None  # the state when the monitor stopped (before it closed the link)
        self.records_seen = 0
        self.types_seen: collections.Counter[str] = collections.Counter()
        self.device_restarts_seen = 0
        # windows of the current device run
        self._intervals: collections.deque[tuple[int, int, float | None]] = collections.deque()  # start, end, LAeq
        self._interval_start: int | None = None  # start of the interval in progress (device ms)
        self._levels: collections.deque[tuple[int, float]] = collections.deque()  # (ms, energy so far · ms)
        self._last_ms: int | None = None
        self._cache: dict[int, WindowLeq] = {}

    # ------------------------------------------------------------------------------------------------ input

    def feed(self, rec: dict[str, Any], mono: float | None = None, wall: float | None = None) -> None:
        """Take one record (a dict with ``t``, ``seq``, ``ms`` and the fields of its type)."""
        t = rec.get("t")
        ms = rec.get("ms")
        self.records_seen += 1
        self.types_seen[str(t)] += 1
        if mono is not None:
            self.last_record_mono = mono
        if type(ms) is int:
            if t == "hello" or (self._last_ms is not None and ms < self._last_ms):
                self._device_restarted(start_ms=0 if t == "hello" else None)
            self._last_ms = ms
        if t == "level":
            self._take_level(rec, ms, wall)
        elif t == "interval":
            self._take_interval(rec, wall)
        elif t == "status":
            self.status = rec
            if rec.get("overload") is True:
                self._latch_overload(wall)
        elif t == "event":
            self._take_event(rec)
        elif t == "hello":
            self.set_hello({k: v for k, v in rec.items() if k not in ("t", "seq", "ms")})

    def set_hello(self, hello: dict[str, Any] | None) -> None:
        """The device's hello fields (from a ``hello`` record or the link's ``info`` reply)."""
        if not hello:
            return
        serial = hello.get("serial")
        if self.serial is not None and serial is not None and str(serial) != self.serial:
            self._device_restarted(start_ms=None)  # another device on this port: another time base
        self.hello = hello
        if serial is not None:
            self.serial = str(serial)
        if hello.get("board") is not None:
            self.board = str(hello["board"])
        self._cache.clear()

    def set_link_state(self, state: str, mono: float | None = None, wall: float | None = None,
                       reason: str | None = None) -> None:
        if state == self.link_state:
            return
        self.link_state = state
        self.link_reason = reason
        self.state_since = mono
        if state in (LOST, RECONNECTING, REFUSED):
            if self.lost_since is None:
                self.lost_since = mono
        else:
            self.lost_since = None
        self.state_history.append((wall if wall is not None else 0.0, state))

    def tick(self, now_mono: float, wall: float | None = None) -> str | None:
        """Once a frame: notice a connected board going silent or sending again. Returns the new view state
        (``"silent"`` / ``"connected"``) when it changed, else None; the change goes into ``state_history``."""
        silent = False
        if self.link_state == CONNECTED:
            since = self.last_record_mono
            if since is None or (self.state_since is not None and since < self.state_since):
                since = self.state_since
            silent = since is not None and now_mono - since > self.silent_after_s
        if silent == self.silent:
            return None
        self.silent = silent
        if self.link_state != CONNECTED:
            return None  # the link state itself says what happened
        view = SILENT if silent else CONNECTED
        self.state_history.append((wall if wall is not None else 0.0, view))
        return view

    @property
    def silent_after_s(self) -> float:
        config = (self.hello or {}).get("config")
        periods = []
        if isinstance(config, dict):
            for key in ("interval_s", "status_s"):
                v = _num(config.get(key))
                if v and v > 0:
                    periods.append(v)
            hz = _num(config.get("stream_hz"))
            if hz and hz > 0:
                periods.append(1 / hz)
        return max(SILENT_MIN_S, 3 * min(periods)) if periods else max(SILENT_MIN_S, 3.0)

    @property
    def view_state(self) -> str:
        """The link state, with ``silent`` for a connected board that stopped sending."""
        return SILENT if (self.link_state == CONNECTED and self.silent) else self.link_state

    def set_link_stats(self, stats: dict[str, Any]) -> None:
        """Counts from ``DeviceLink.stats()`` (records, gaps, lost_records, bad_lines, reconnects, restarts...)."""
        self.link_stats = stats

    # ------------------------------------------------------------------------------------------------ records

    def _device_restarted(self, start_ms: int | None) -> None:
        if self._last_ms is not None or self._intervals:
            self.device_restarts_seen += 1
        self._intervals.clear()
        self._levels.clear()
        self._interval_start = start_ms
        self._last_ms = None
        self.device_over = False
        self.laf = self.las = None
        self.lcpeak = None
        self._cache.clear()

    def _latch_overload(self, wall: float | None) -> None:
        if not self.overload:
            self.overload = True
            self.overload_wall = wall

    def _take_level(self, rec: dict[str, Any], ms: Any, wall: float | None) -> None:
        self.laf = _num(rec.get("LAF"))
        self.las = _num(rec.get("LAS"))
        self.level_ms = ms if type(ms) is int else None
        if rec.get("overload") is True:
            self._latch_overload(wall)
        leq = _num(rec.get("LAeq"))
        start = self._interval_start
        if leq is not None and start is not None and type(ms) is int and ms > start:
            levels = self._levels
            levels.append((ms, 10 ** (leq / 10) * (ms - start)))
            while levels and levels[0][0] < ms - WINDOW_1MIN_MS - 2000:
                levels.popleft()
            self._cache.clear()

    def _take_interval(self, rec: dict[str, Any], wall: float | None) -> None:
        start, end = rec.get("start_ms"), rec.get("end_ms")
        if type(end) is not int:
            end = rec.get("ms") if type(rec.get("ms")) is int else None
        if type(start) is not int:
            start = self._interval_start
        leq = _num(rec.get("LAeq"))
        if end is not None:
            self._interval_start = end
            self._levels.clear()  # level records after this belong to the next interval
            if start is not None and end > start:
                iv = self._intervals
                iv.append((start, end, leq))
                while iv and iv[0][1] <= end - WINDOW_1MIN_MS:
                    iv.popleft()
                limit = self.limit_db
                if leq is not None and limit is not None and leq > limit:
                    self.over_s += (end - start) / 1000
        lafmax = _num(rec.get("LAFmax"))
        if lafmax is not None and (self.lafmax is None or lafmax > self.lafmax):
            self.lafmax, self.lafmax_ms, self.lafmax_wall = lafmax, end, wall
        self.lcpeak = _num(rec.get("LCpeak"))
        if self.lcpeak is not None and (self.lcpeak_max is None or self.lcpeak > self.lcpeak_max):
            self.lcpeak_max, self.lcpeak_max_ms, self.lcpeak_max_wall = self.lcpeak, end, wall
        if rec.get("overload") is True:
            self._latch_overload(wall)
        self._cache.clear()

    def _take_event(self, rec: dict[str, Any]) -> None:
        self.last_event = rec
        if rec.get("kind") == "limit_exceeded":
            self.device_over = True
            self.exceeded_events += 1
        elif rec.get("kind") == "limit_cleared":
            self.device_over = False

    # ------------------------------------------------------------------------------------------------ views

    @property
    def device_limit_db(self) -> float | None:
        config = (self.hello or {}).get("config")
        return _num(config.get("limit_db")) if isinstance(config, dict) else None

    @property
    def limit_db(self) -> float | None:
        """``--limit`` if given, else the device's ``limit_db``; None: no limit."""
        return self.cli_limit_db if self.cli_limit_db is not None else self.device_limit_db

    @property
    def interval_s(self) -> float | None:
        """The device's interval length: from its last interval record, else its configuration."""
        if self._intervals:
            s, e, _ = self._intervals[-1]
            return (e - s) / 1000
        config = (self.hello or {}).get("config")
        return _num(config.get("interval_s")) if isinstance(config, dict) else None

    def window_leq(self, window_ms: int) -> WindowLeq:
        """LAeq over the last ``window_ms`` of device time (see the module docstring)."""
        cached = self._cache.get(window_ms)
        if cached is None:
            cached = self._cache[window_ms] = self._window_leq(window_ms)
        return cached

    def _window_leq(self, window_ms: int) -> WindowLeq:
        interval_s = self.interval_s
        if interval_s is not None and interval_s * 1000 > window_ms + 1:
            return self._window_from_levels(window_ms)
        iv = self._intervals
        if not iv:
            return WindowLeq(None, 0.0, window_ms / 1000, "interval")
        w_end = iv[-1][1]
        w_start = w_end - window_ms
        covered = 0
        energy_f = 0.0
        for start, end, leq in reversed(iv):
            if end <= w_start:
                break
            if leq is None:
                continue
            overlap = end - max(start, w_start)
            energy_f += overlap * 10 ** (leq / 10)
            covered += overlap
        if covered <= 0:
            return WindowLeq(None, 0.0, window_ms / 1000, "interval")
        return WindowLeq(10 * math.log10(energy_f / covered), covered / 1000, window_ms / 1000, "interval")

    def _window_from_levels(self, window_ms: int) -> WindowLeq:
        levels, start = self._levels, self._interval_start
        none = WindowLeq(None, 0.0, window_ms / 1000, "level")
        if not levels or start is None:
            return none
        b_ms, b_e = levels[-1]
        a_ms, a_e = start, 0.0
        for ms, e in reversed(levels):
            if ms <= b_ms - window_ms:
                a_ms, a_e = ms, e
                break
        span = b_ms - a_ms
        diff = b_e - a_e
        if span <= 0 or diff <= 0 or _ROUNDING * (a_e + b_e) > LEVEL_RELATIVE_ERROR_MAX * diff:
            return none
        return WindowLeq(10 * math.log10(diff / span), min(span, window_ms) / 1000, window_ms / 1000, "level")

    @property
    def laeq_1s(self) -> WindowLeq:
        return self.window_leq(WINDOW_1S_MS)

    @property
    def laeq_1min(self) -> WindowLeq:
        return self.window_leq(WINDOW_1MIN_MS)

    @property
    def over_reasons(self) -> list[str]:
        """Why the limit counts as exceeded now: any of ``"1s"``, ``"1min"`` (LAeq above ``limit_db``),
        ``"device"`` (the device's limit_exceeded event). Empty: not exceeded (or no limit)."""
        reasons = []
        limit = self.limit_db
        if limit is not None:
            for label, w in (("1s", self.laeq_1s), ("1min", self.laeq_1min)):
                if w.db is not None and w.db > limit:
                    reasons.append(label)
        if self.device_over:
            reasons.append("device")
        return reasons

    @property
    def over(self) -> bool:
        return bool(self.over_reasons)

    def record_age(self, now_mono: float) -> float | None:
        return None if self.last_record_mono is None else max(0.0, now_mono - self.last_record_mono)

    def device_faults(self) -> list[str]:
        src = self.status if self.status is not None else self.hello
        faults = (src or {}).get("faults")
        return [str(f) for f in faults] if isinstance(faults, list) else []

    def summary(self, now_mono: float | None = None) -> dict[str, Any]:
        """The board's figures as plain JSON-able data (``slm monitor --json``)."""
        now_mono = time.monotonic() if now_mono is None else now_mono
        st = self.link_stats
        status = self.status or {}

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        age = self.record_age(now_mono)
        return {
            "name": self.name, "port": self.port, "serial": self.serial, "board": self.board,
            "state": self.end_state or self.view_state,
            "state_history": [{"host_time": _iso(w) if w else None, "state": s} for w, s in self.state_history],
            "LAF": r(self.laf), "LAeq_1s": self.laeq_1s.as_dict(), "LAeq_1min": self.laeq_1min.as_dict(),
            "LAFmax": r(self.lafmax), "LAFmax_ms": self.lafmax_ms,
            "LAFmax_host_time": _iso(self.lafmax_wall) if self.lafmax_wall else None,
            "LCpeak": r(self.lcpeak), "LCpeak_max": r(self.lcpeak_max), "LCpeak_max_ms": self.lcpeak_max_ms,
            "limit_db": self.limit_db, "over": self.over, "over_reasons": self.over_reasons,
            "over_s": round(self.over_s, 3), "exceeded_events": self.exceeded_events,
            "overload": self.overload,
            "records": st.get("records", self.records_seen), "gaps": st.get("gaps", 0),
            "lost_records": st.get("lost_records", 0), "bad_lines": st.get("bad_lines", 0),
            "reconnects": st.get("reconnects", 0), "restarts": st.get("restarts", 0),
            "dropped_records": st.get("dropped_records", 0),
            "last_record_age_s": None if age is None else round(age, 3),
            "device": {"faults": self.device_faults(), "dropped": status.get("dropped"), "late": status.get("late"),
                       "heap_free": status.get("heap_free"), "uptime_s": status.get("uptime_s")},
        }


# ---------------------------------------------------------------------------------------------------- record log

CSV_COLUMNS: tuple[str, ...] = (
    "host_time", "port", "serial", "t", "seq", "ms",
    # level
    "LAF", "LAS", "LAeq", "LCpeak", "overload",
    # interval
    "start_ms", "end_ms", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax", "LASmin", "LZpeak", "LAE",
    "LA10", "LA50", "LA90", "underrange",
    # status
    "uptime_s", "heap_free", "blocks", "dropped", "late", "faults", "lmax", "lmax_ms",
    # event
    "kind", "quantity", "level", "limit", "interval_end_ms",
    # host-made rows (t = "link")
    "state", "reason",
)
"""The CSV log's columns, in order: one row per record; a field a record does not have is empty."""


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))
    return v


class RecordLog:
    """Appends records with their host time to ``path`` (``.csv`` or ``.jsonl``; ValueError for other names).

    Each ``write`` is one whole line in one call to the file object, so an interruption (Ctrl-C, an exception)
    can only fall between lines; ``close`` (also on leaving a ``with`` block) flushes. Lines are flushed to the
    file at most ``flush_s`` after they were written (checked on each write and by ``maybe_flush``). An existing
    file is appended to; a CSV file gets its header only when it is new or empty, and one with another header is
    refused (ValueError).
    """

    def __init__(self, path: str | os.PathLike[str], flush_s: float = 1.0):
        self.path = Path(path)
        self.format = self.format_of(path)
        self.flush_s = flush_s
        self.lines = 0
        existing = self.path.stat().st_size if self.path.exists() else 0
        needs_newline = False
        if existing:
            with open(self.path, "rb") as f:
                if self.format == "csv":
                    header = f.readline().rstrip(b"\r\n").decode("utf-8", "replace")
                    if header != ",".join(CSV_COLUMNS):
                        raise ValueError("--log %s: the file exists with other columns; give a new file name"
                                         % self.path)
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        if needs_newline:
            self._file.write("\n")  # end a line cut short by a crash before appending
        self._csv = None
        if self.format == "csv":
            self._csv = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
            if not existing:
                self._csv.writeheader()
        self._last_flush = time.monotonic()
        self._closed = False

    @staticmethod
    def format_of(path: str | os.PathLike[str]) -> str:
        """``"csv"`` or ``"jsonl"`` from the file name; ValueError for another name."""
        suffix = Path(path).suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise ValueError("--log %s: the file name must end in .csv or .jsonl" % os.fspath(path))
        return suffix[1:]

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, rec: dict[str, Any], port: str, serial: str | None = None, wall: float | None = None) -> None:
        """One record (as received) and the host time it arrived (``time.time()``; now if omitted)."""
        host_time = _iso(time.time() if wall is None else wall)
        if self._csv is not None:
            row = {k: _csv_value(v) for k, v in rec.items()}
            row["host_time"], row["port"] = host_time, port
            if serial is not None or "serial" not in row:
                row["serial"] = _csv_value(serial)
            self._csv.writerow(row)  # one write() of the whole line
        else:
            line = {"host_time": host_time, "port": port}
            line.update(rec)
            self._file.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n")
        self.lines += 1
        self.maybe_flush()

    def write_state(self, port: str, state: str, reason: str | None = None, serial: str | None = None,
                    wall: float | None = None) -> None:
        """A host-made row for a link state change: ``t`` = ``"link"``, ``state``, ``reason``."""
        rec: dict[str, Any] = {"t": "link", "state": state}
        if reason:
            rec["reason"] = reason
        self.write(rec, port, serial, wall)

    def maybe_flush(self, now_mono: float | None = None) -> None:
        now_mono = time.monotonic() if now_mono is None else now_mono
        if now_mono - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        if not self._closed:
            self._file.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()

    def __enter__(self) -> "RecordLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------- monitor

class Board:
    """One monitored board: its link and its state."""

    __slots__ = ("index", "link", "state", "hello_seen")

    def __init__(self, index: int, link: DeviceLink, state: MonitorState):
        self.index, self.link, self.state = index, link, state
        self.hello_seen: dict[str, Any] | None = None


def _port_name(port: str | discovery.PortInfo) -> str:
    return port.device if isinstance(port, discovery.PortInfo) else os.fspath(port)


class Monitor:
    """Watches several boards at once: one ``DeviceLink`` per port, one queue, one thread doing the rest.

    ``open()`` opens every port and asks each device for ``info`` (all must answer, else LinkError and nothing
    stays open; ``handshake=False`` skips the question, for benchmarks); after that, a lost board is only shown (its link reconnects by itself). ``run()`` drains the
    queue into the states and the log once a frame until ``duration_s`` has passed, ``stop()`` is called (from a
    signal handler, say) or KeyboardInterrupt; ``close()`` closes the links, takes what they still delivered and
    closes the log. ``with Monitor(ports) as m: m.run(5)``.
    """

    def __init__(self, ports: Sequence[str | os.PathLike[str] | discovery.PortInfo], *, limit_db: float | None = None,
                 log: RecordLog | None = None, handshake_timeout: float = 3.0, reconnect_interval: float = 0.5,
                 handshake: bool = True, link_factory: Callable[..., DeviceLink] = DeviceLink):
        if not ports:
            raise ValueError("no ports to monitor")
        self.log = log
        self.limit_db = limit_db
        self.handshake = handshake
        self.queue: queue.SimpleQueue[tuple[int, dict[str, Any] | None, str | None, float, float]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.boards: list[Board] = []
        self.started_mono: float | None = None
        self.frames = 0
        seen: set[str] = set()
        for i, port in enumerate(ports):
            name = _port_name(port)
            if name in seen:
                raise ValueError("--port %s given twice" % name)
            seen.add(name)
            link = link_factory(port, timeout=handshake_timeout, reconnect_interval=reconnect_interval,
                                on_record=self._record_callback(i), on_state=self._state_callback(i))
            self.boards.append(Board(i, link, MonitorState(name, name, limit_db)))

    # called on the links' reader threads: stamp and enqueue, nothing else
    def _record_callback(self, i: int) -> Callable[[DeviceLink, dict[str, Any]], None]:
        put = self.queue.put

        def on_record(link: DeviceLink, rec: dict[str, Any]) -> None:
            put((i, rec, None, time.monotonic(), time.time()))

        return on_record

    def _state_callback(self, i: int) -> Callable[[DeviceLink, str], None]:
        put = self.queue.put

        def on_state(link: DeviceLink, state: str) -> None:
            put((i, None, state, time.monotonic(), time.time()))

        return on_state

    def open(self) -> "Monitor":
        """Open every link (with the ``info`` handshake). On a failure, close the opened ones and raise LinkError."""
        try:
            for b in self.boards:
                b.link.open(handshake=self.handshake)
        except BaseException:
            self._close_links()
            raise
        self.started_mono = time.monotonic()
        return self  # what came meanwhile waits in the queue for the first refresh (and a log set after open)

    def stop(self) -> None:
        """Ask ``run`` to return (safe from a signal handler or another thread)."""
        self._stop.set()

    @property
    def states(self) -> list[MonitorState]:
        return [b.state for b in self.boards]

    def drain(self) -> int:
        """Move everything queued into the states and the log; returns how many items."""
        q, boards, log = self.queue, self.boards, self.log
        n = 0
        while True:
            try:
                i, rec, state, mono, wall = q.get_nowait()
            except queue.Empty:
                break
            n += 1
            b = boards[i]
            if rec is not None:
                b.state.feed(rec, mono, wall)
                if log is not None:
                    log.write(rec, b.state.port, b.link.serial, wall)
            elif state is not None:
                reason = b.link.state_reason if state in (LOST, RECONNECTING, REFUSED) else None
                if state == REFUSED:
                    reason = b.link.error or reason
                b.state.set_link_state(state, mono, wall, reason)
                if log is not None:
                    log.write_state(b.state.port, state, reason, b.link.serial, wall)
        return n

    def refresh(self) -> None:
        """Drain the queue, then copy each link's counts and hello into its state (once a frame)."""
        self.drain()
        now, wall = time.monotonic(), time.time()
        for b in self.boards:
            link, st = b.link, b.state
            hello = link.hello
            if hello is not None and hello is not b.hello_seen:
                b.hello_seen = hello
                st.set_hello(hello)
            if link.path != st.port:
                st.port = link.path  # re-found under another path (a board re-plugged)
            st.set_link_stats(link.stats())
            view = st.tick(now, wall)
            if view is not None and self.log is not None:
                reason = "no records for %.1f s" % st.silent_after_s if view == SILENT else None
                self.log.write_state(st.port, view, reason, link.serial, wall)
        if self.log is not None:
            self.log.maybe_flush()

    def run(self, duration_s: float | None = None, on_frame: Callable[["Monitor"], None] | None = None,
            frame_s: float = FRAME_S) -> None:
        """Until ``duration_s`` (None: until ``stop()`` or Ctrl-C): refresh and call ``on_frame`` each frame.

        KeyboardInterrupt ends the run normally (the caller then closes).
        """
        start = time.monotonic()
        if self.started_mono is None:
            self.started_mono = start
        deadline = None if duration_s is None else start + duration_s
        next_frame = start
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_frame:
                    self.refresh()
                    if on_frame is not None:
                        on_frame(self)
                    self.frames += 1
                    next_frame += frame_s
                    if next_frame < now:  # fell behind (a slow terminal): do not try to catch up
                        next_frame = now + frame_s
                wake = next_frame if deadline is None else min(next_frame, deadline)
                self._stop.wait(max(0.0, wake - time.monotonic()))
        except KeyboardInterrupt:
            pass
        self.refresh()

    def close(self) -> None:
        """Close the links, take their last records and states, then flush and close the log. Safe twice."""
        try:
            self.refresh()
            for st in self.states:
                if st.end_state is None:
                    st.end_state = st.view_state
            self._close_links()
            self.refresh()
        finally:
            if self.log is not None:
                self.log.close()

    def _close_links(self) -> None:
        for b in self.boards:
            try:
                b.link.close()
            except Exception:
                pass

    def summary(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "duration_s": None if self.started_mono is None else round(now - self.started_mono, 3),
            "log": None if self.log is None else str(self.log.path),
            "boards": [b.state.summary(now) for b in self.boards],
        }

    def __enter__(self) -> "Monitor":
        if self.started_mono is None:
            self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------- rendering

BAR_RANGE_DB = (30.0, 110.0)
BAR_WIDTH = 12
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def _fmt_db(x: float | None) -> str:
    return "–" if x is None else "%.1f" % x


def _fmt_device_time(ms: int | None) -> str:
    """Device time (ms since the device started) as h:mm:ss."""
    if ms is None:
        return "–"
    s = ms // 1000
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)


def _fmt_age(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 10:
        return "%.1f s" % s
    if s < 120:
        return "%d s" % s
    if s < 7200:
        return "%d min" % (s // 60)
    return "%d h" % (s // 3600)


def _short_port(port: str) -> str:
    """``/dev/ttyACM0`` -> ``ttyACM0``, ``/dev/pts/3`` -> ``pts/3``; other paths: the file name."""
    return port[5:] if port.startswith("/dev/") else (os.path.basename(port) or port)


def level_bar(value: float | None, limit: float | None, width: int = BAR_WIDTH,
              lo: float = BAR_RANGE_DB[0], hi: float = BAR_RANGE_DB[1], dim: bool = False):
    """A bar meter as ``rich.text.Text``: ``width`` cells from ``lo`` to ``hi`` dB at eighth-cell resolution, green
    up to the limit and red above it (grey when ``dim``); the limit is a ``┃`` in its cell."""
    from rich.text import Text

    text = Text()
    span = hi - lo
    fill = 0.0 if value is None else min(max((value - lo) / span, 0.0), 1.0) * width
    limit_cell = None if limit is None else min(max(int((limit - lo) / span * width), 0), width - 1)
    over = value is not None and limit is not None and value > limit
    colour = "grey50" if dim else ("red" if over else "green")
    for cell in range(width):
        part = fill - cell
        if cell == limit_cell:
            text.append("┃", style="bold red" if over else "bold yellow")
        elif part >= 1:
            text.append("█", style=colour)
        elif part > 0:
            text.append(_EIGHTHS[int(part * 8)], style=colour)
        else:
            text.append("·", style="grey30")
    return text


def _link_cell(st: MonitorState, now_mono: float):
    from rich.text import Text

    state = st.end_state or st.view_state
    text = Text()
    if state == SILENT:
        since = st.last_record_mono if st.last_record_mono is not None else st.state_since
        text.append("SILENT %s" % _fmt_age(None if since is None else now_mono - since), style="bold red")
    elif state == CONNECTED:
        text.append("connected", style="green")
        text.append(" %s" % _fmt_age(st.record_age(now_mono)), style="dim")
    elif state in (LOST, RECONNECTING):
        lost_for = None if st.lost_since is None else now_mono - st.lost_since
        text.append("LOST %s" % _fmt_age(lost_for), style="bold red")
        if state == RECONNECTING:
            text.append(" reconnecting", style="yellow")
    elif state == REFUSED:
        text.append("REFUSED", style="bold red")
    else:
        text.append(state, style="dim")
    s = st.link_stats
    gaps, lost = s.get("gaps", 0), s.get("lost_records", 0)
    counts = []
    if gaps:
        counts.append("gaps %d (%d lost)" % (gaps, lost))
    for key, label in (("bad_lines", "bad"), ("reconnects", "reconn"), ("restarts", "restarts")):
        if s.get(key):
            counts.append("%s %d" % (label, s[key]))
    text.append("\n")
    text.append(" ".join(counts) if counts else "no gaps", style="yellow" if counts else "dim")
    return text


def _device_cell(st: MonitorState):
    from rich.text import Text

    text = Text()
    faults = st.device_faults()
    status = st.status or {}
    if st.overload:
        text.append("OVERLOAD ", style="bold red")
    if faults:
        text.append(",".join(faults), style="yellow")
    elif not st.overload:
        text.append("ok", style="green")
    parts = []
    for key in ("dropped", "late"):
        v = status.get(key)
        if isinstance(v, int) and v:
            parts.append(("%s %d" % (key, v), "yellow"))
    heap = status.get("heap_free")
    if isinstance(heap, int):
        parts.append(("heap %dk" % (heap // 1024), "dim"))
    if parts:
        text.append("\n")
        for k, (p, style) in enumerate(parts):
            text.append((" " if k else "") + p, style=style)
    return text


def _leq_cell(w: WindowLeq, limit: float | None):
    from rich.text import Text

    style = "bold red" if (w.db is not None and limit is not None and w.db > limit) else ""
    text = Text(_fmt_db(w.db), style=style)
    if w.partial:
        text.append(" (%ds)" % w.coverage_s if w.coverage_s >= 1 else " (%.1fs)" % w.coverage_s, style="dim")
    if w.db is not None and w.source == "level":
        text.append("~", style="dim")
    return text


def _limit_cell(st: MonitorState):
    from rich.text import Text

    limit = st.limit_db
    text = Text()
    if limit is None:
        text.append("none", style="dim")
        if st.device_over:
            text.append(" OVER", style="bold white on red")
        return text
    text.append("%g " % limit)
    reasons = st.over_reasons
    if reasons:
        text.append("OVER", style="bold white on red")
        text.append("\n" + " ".join(reasons), style="red")
    else:
        text.append("ok", style="green")
        if st.over_s > 0:
            text.append("\nwas over %s" % _fmt_age(st.over_s), style="yellow")
    return text


def render_table(states: Sequence[MonitorState], now_mono: float | None = None, title: str | None = None,
                 caption: str | None = None, bar: bool = True):
    """A ``rich.table.Table``, one row per board: name, bar meter and LAF, LAeq 1 s, LAeq 1 min (with the seconds
    covered while partial, ``~`` when from level records), LAFmax @ device time, LCpeak (max), limit and OVER,
    link (state; gaps, bad lines, reconnects, restarts), device (overload, faults; dropped, late, heap).
    Fits 140 columns; ``bar=False`` leaves the bar out (the summary)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    now_mono = time.monotonic() if now_mono is None else now_mono
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False,
                  collapse_padding=True)
    table.add_column("Board", no_wrap=True, max_width=16)
    table.add_column("LAF" if not bar else "LAF (30–110 dB)", no_wrap=True, justify="right" if not bar else "left")
    table.add_column("LAeq 1s", justify="right", no_wrap=True)
    table.add_column("LAeq 1min", justify="right", no_wrap=True)
    table.add_column("LAFmax @time", justify="right", no_wrap=True)
    table.add_column("LCpeak (max)", justify="right", no_wrap=True)
    table.add_column("Limit", no_wrap=True)
    table.add_column("Link", no_wrap=True)
    table.add_column("Device", no_wrap=True)
    for st in states:
        name = Text(_short_port(st.port), style="bold")
        if st.serial:
            name.append("\n" + st.serial, style="dim")
        stale = st.view_state != CONNECTED
        laf = st.laf
        one_s = st.laeq_1s
        level = Text()
        if bar:
            level.append_text(level_bar(laf if laf is not None else one_s.db, st.limit_db, dim=stale))
            level.append(" ")
        level.append("%5s" % _fmt_db(laf), style="grey50" if stale else "bold")
        lafmax = Text(_fmt_db(st.lafmax))
        if st.lafmax is not None:
            lafmax.append(" @" + _fmt_device_time(st.lafmax_ms), style="dim")
        peak = Text(_fmt_db(st.lcpeak))
        peak.append(" (%s)" % _fmt_db(st.lcpeak_max), style="dim")
        table.add_row(name, level, _leq_cell(one_s, st.limit_db), _leq_cell(st.laeq_1min, st.limit_db), lafmax, peak,
                      _limit_cell(st), _link_cell(st, now_mono), _device_cell(st))
    return table
