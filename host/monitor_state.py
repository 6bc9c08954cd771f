"""What the live view knows about one board (``MonitorState``), from the records and link states it is fed.

Pure data, no I/O, no clock of its own: callers pass ``time.monotonic()`` / ``time.time()`` values, so tests script
it. LAF for the bar meter; LAeq of the last second and of the last minute; LAFmax and LCpeak since the monitor
started, with the device time of the interval they fell in; the limit and whether it is exceeded; link health
(state, age of the last record, gaps, lost records, bad lines, reconnects, restarts) and device health (faults,
dropped and late audio blocks, free heap, overload latched).

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
- The limit: ``--limit`` or else the one in force on the device, from its last ``minute`` record (``limit`` and
  ``band``: its schedule, docs/enforcement.md), so it is known from the first minute the device closes.
- Exceedance (``over``): LAeq 1 s or LAeq 1 min above the limit, or an episode the device opened
  (``exceedance_start``) and has not closed (``exceedance_end``). ``episode_s`` is how long the open episode has
  lasted, by the device's clock (``utc`` of its newest record). ``over_s`` counts the interval seconds whose LAeq was
  above the limit.
"""

from __future__ import annotations

import collections
import math
import os
import time
from typing import Any, Iterable

from slm.link import CLOSED, CONNECTED, LOST, RECONNECTING, REFUSED
from slm.record_log import iso_time
from slm.utc import parse_utc

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


def short_port(port: str) -> str:
    """``/dev/ttyACM0`` -> ``ttyACM0``, ``/dev/pts/3`` -> ``pts/3``; other paths: the file name."""
    return port[5:] if port.startswith("/dev/") else (os.path.basename(port) or port)


def _num(x: Any) -> float | None:
    """A level from a record: a number, or None (null, missing, or not a number)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)



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
        # limit (the device's schedule, from its minute records) and its exceedance episodes
        self.minute: dict[str, Any] | None = None  # the last minute record
        self.episode: dict[str, Any] | None = None  # the open episode's exceedance_start record
        self.episodes = 0  # exceedance_start events seen
        self.last_episode: dict[str, Any] | None = None  # the last exceedance_end record
        self.night_max_events = 0
        self.device_utc: str | None = None  # utc of the newest record (the device's clock)
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
        self.faults_seen: dict[str, None] = {}  # every fault the device reported, in order (a dict as ordered set)
        self.buffered_records = 0  # records sent while no host listened (their host times derived: see slm.monitor)
        # through a broker (slm.monitor_mqtt): no level records, the link is the device's MQTT session
        self.via_broker = False
        self.last_seen_wall: float | None = None  # when the device last published (its utc for retained records)
        self.offline = False  # the broker published the device's last will (and nothing came since)
        # the whole run (kept across device restarts)
        self.opened_mono: float | None = None  # the first link state: the board is watched from then
        self.closed_mono: float | None = None  # the link closed: the watch ended
        self._connected_s = 0.0  # closed stretches of time in `connected` (the current one: connected_s())
        self._run_energy = 0.0  # sum of 10^(LAeq/10) · interval ms over every interval seen
        self._run_covered_ms = 0
        self.over_count = 0  # intervals whose LAeq rose above the limit (the one before was not above it)
        self._last_interval_over = False
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
        if isinstance(rec.get("utc"), str):
            self.device_utc = rec["utc"]
        if t == "level":
            self._take_level(rec, ms, wall)
        elif t == "interval":
            self._take_interval(rec, wall)
        elif t == "status":
            self.status = rec
            self._note_faults(rec)
            if rec.get("overload") is True:
                self._latch_overload(wall)
        elif t == "minute":
            self.minute = rec
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
        self._note_faults(hello)
        if serial is not None:
            self.serial = str(serial)
        if hello.get("board") is not None:
            self.board = str(hello["board"])
        self._cache.clear()

    def set_link_state(self, state: str, mono: float | None = None, wall: float | None = None,
                       reason: str | None = None) -> None:
        if state == self.link_state:
            return
        if mono is not None:
            if self.opened_mono is None:
                self.opened_mono = mono
            if self.link_state == CONNECTED and self.state_since is not None:
                self._connected_s += max(0.0, mono - self.state_since)
            if state == CLOSED:
                self.closed_mono = mono
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
        if self.via_broker:  # what a device publishes: status every status_s (10 s), intervals only if enabled
            cfg = config if isinstance(config, dict) else {}
            periods.append(_num(cfg.get("status_s")) or 10.0)
            if self.types_seen.get("interval") and _num(cfg.get("interval_s")):
                periods.append(_num(cfg.get("interval_s")))
            return max(SILENT_MIN_S, 3 * min(p for p in periods if p > 0))
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
        self.episode = None  # the device closes it itself (exceedance_end, interrupted) after its restart
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
                over = leq is not None and limit is not None and leq > limit
                if over:
                    self.over_s += (end - start) / 1000
                    if not self._last_interval_over:
                        self.over_count += 1
                self._last_interval_over = over
                if leq is not None:
                    self._run_energy += (end - start) * 10 ** (leq / 10)
                    self._run_covered_ms += end - start
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
        kind = rec.get("kind")
        if kind == "exceedance_start":
            self.episode = rec
            self.episodes += 1
        elif kind == "exceedance_end":
            self.episode = None
            self.last_episode = rec
        elif kind == "night_max":
            self.night_max_events += 1

    # ------------------------------------------------------------------------------------------------ views

    @property
    def display_name(self) -> str:
        """What the board is called: its ``name`` from hello if it has one, else its ``serial`` (the device's id),
        else (before the device said who it is) its port."""
        name = (self.hello or {}).get("name")
        if isinstance(name, str) and name:
            return name
        return self.serial or short_port(self.port)

    @property
    def laeq_run(self) -> WindowLeq:
        """LAeq over every interval seen since the monitor started (``coverage_s``: their total duration)."""
        covered = self._run_covered_ms / 1000
        db = 10 * math.log10(self._run_energy / self._run_covered_ms) if self._run_covered_ms > 0 else None
        return WindowLeq(db, covered, covered, "interval")

    def watched_s(self, now_mono: float) -> float:
        """How long the board has been watched: from its link's first state to its close (or now)."""
        if self.opened_mono is None:
            return 0.0
        end = self.closed_mono if self.closed_mono is not None else now_mono
        return max(0.0, end - self.opened_mono)

    def connected_s(self, now_mono: float) -> float:
        """How long the link was connected (the current stretch up to now)."""
        s = self._connected_s
        if self.link_state == CONNECTED and self.state_since is not None:
            s += max(0.0, now_mono - self.state_since)
        return s

    @property
    def device_limit_db(self) -> float | None:
        """The limit in force on the device in its last minute (None before a minute or without a schedule)."""
        return _num((self.minute or {}).get("limit"))

    @property
    def band(self) -> str | None:
        """The name of the device's band in force in its last minute (``day``, ``night`` or a local band's name)."""
        band = (self.minute or {}).get("band")
        return band if isinstance(band, str) else None

    @property
    def limit_db(self) -> float | None:
        """``--limit`` if given, else the device's limit in force; None: no limit."""
        return self.cli_limit_db if self.cli_limit_db is not None else self.device_limit_db

    @property
    def device_over(self) -> bool:
        """The device has an exceedance episode open."""
        return self.episode is not None

    @property
    def episode_s(self) -> float | None:
        """How long the open episode has lasted by the device's clock (None: no episode, or no clock)."""
        if self.episode is None:
            return None
        start, now = parse_utc(self.episode.get("start")), parse_utc(self.device_utc)
        return None if start is None or now is None else max(0.0, (now - start).total_seconds())

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
        ``"episode"`` (the device has an exceedance episode open). Empty: not exceeded (or no limit)."""
        reasons = []
        limit = self.limit_db
        if limit is not None:
            for label, w in (("1s", self.laeq_1s), ("1min", self.laeq_1min)):
                if w.db is not None and w.db > limit:
                    reasons.append(label)
        if self.device_over:
            reasons.append("episode")
        return reasons

    @property
    def over(self) -> bool:
        return bool(self.over_reasons)

    def record_age(self, now_mono: float) -> float | None:
        return None if self.last_record_mono is None else max(0.0, now_mono - self.last_record_mono)

    def device_faults(self) -> list[str]:
        """The device's faults now (its last status, else its hello)."""
        src = self.status if self.status is not None else self.hello
        faults = (src or {}).get("faults")
        return [str(f) for f in faults] if isinstance(faults, list) else []

    def _note_faults(self, src: dict[str, Any]) -> None:
        faults = src.get("faults")
        if isinstance(faults, list):
            for f in faults:
                self.faults_seen[str(f)] = None

    def summary(self, now_mono: float | None = None) -> dict[str, Any]:
        """The board's figures as plain JSON-able data (``slm monitor --json``)."""
        now_mono = time.monotonic() if now_mono is None else now_mono
        st = self.link_stats
        status = self.status or {}

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        age = self.record_age(now_mono)
        return {
            "name": self.display_name, "port": self.port, "serial": self.serial, "board": self.board,
            "state": self.end_state or self.view_state,
            "state_history": [{"host_time": iso_time(w) if w else None, "state": s} for w, s in self.state_history],
            "LAF": r(self.laf), "LAeq_1s": self.laeq_1s.as_dict(), "LAeq_1min": self.laeq_1min.as_dict(),
            "LAFmax": r(self.lafmax), "LAFmax_ms": self.lafmax_ms,
            "LAFmax_host_time": iso_time(self.lafmax_wall) if self.lafmax_wall else None,
            "LCpeak": r(self.lcpeak), "LCpeak_max": r(self.lcpeak_max), "LCpeak_max_ms": self.lcpeak_max_ms,
            "limit_db": self.limit_db, "over": self.over, "over_reasons": self.over_reasons,
            "over_s": round(self.over_s, 3), "band": self.band, "episodes": self.episodes,
            "episode_open": self.episode is not None,
            "episode_s": None if self.episode_s is None else round(self.episode_s, 1),
            "night_max_events": self.night_max_events,
            "over_count": self.over_count, "overload": self.overload,
            "watched_s": round(self.watched_s(now_mono), 3), "connected_s": round(self.connected_s(now_mono), 3),
            "LAeq_run": self.laeq_run.as_dict(),
            "LCpeak_max_host_time": iso_time(self.lcpeak_max_wall) if self.lcpeak_max_wall else None,
            "buffered_records": self.buffered_records, "faults_seen": list(self.faults_seen),
            "records": st.get("records", self.records_seen), "gaps": st.get("gaps", 0),
            "lost_records": st.get("lost_records", 0), "bad_lines": st.get("bad_lines", 0),
            "reconnects": st.get("reconnects", 0), "restarts": st.get("restarts", 0),
            "dropped_records": st.get("dropped_records", 0),
            "last_record_age_s": None if age is None else round(age, 3),
            **({"last_seen": iso_time(self.last_seen_wall) if self.last_seen_wall else None,
                "offline": self.offline} if self.via_broker else {}),
            "device": {"faults": self.device_faults(), "dropped": status.get("dropped"), "late": status.get("late"),
                       "heap_free": status.get("heap_free"), "uptime_s": status.get("uptime_s")},
        }
