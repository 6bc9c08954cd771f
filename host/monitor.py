"""Live view of one or more meters (`slm monitor`): the run loop (``Monitor``) over one link per board.

The parts, each usable alone:

- ``MonitorState`` (slm.monitor_state): what one board's view shows, from the records and link states it is fed;
  how the levels are made is described there.
- ``RecordLog`` (slm.record_log): every record with the host time it arrived, to ``FILE.csv`` or ``FILE.jsonl``.
- ``render_table`` / ``render_summary`` (slm.monitor_view): the live table and the end-of-run summary.
- ``Monitor`` (here): one ``DeviceLink`` per port, all feeding one ``queue.SimpleQueue`` from their reader threads
  (``on_record``/``on_state`` only stamp and enqueue). ``Monitor.run`` wakes once a frame (0.25 s), drains the
  queue into the states and the log, and calls ``on_frame`` (the CLI renders there); ``summary`` gives the
  ``--json`` object.

What the log holds: every record the links deliver, and the replies to the monitor's own ``info`` (the
handshake), put in ``seq`` order, so that the ``seq`` of the logged records jumps only where the link counted a gap
(or the device restarted). One exception the monitor cannot see: after a reconnect the link itself asks ``info``
and consumes the reply, so the log's ``seq`` jumps by one there without a gap being counted.

Records the device sent while no host listened (a virtual board keeps what it wrote while its port was closed)
arrive together when the port is (re)opened, all at about one host time. Among the first records after a
(re)connection, one whose device time lies more than ``BUFFERED_MARGIN_S`` before the connection (counted back
from the newest of them: host time of arrival − (its ``ms`` − the record's ``ms``) / 1000) is ``buffered``: it
is logged with that derived host time and marked (``buffered`` true). The derivation assumes the device clock runs
at real time, as a board's does (a virtual board at ``--speed`` 5 runs 5 times faster: there it is approximate).

Cost: the link readers do the parsing; the monitor thread touches each record once (a few µs: state update and a
log line) and renders 4 frames a second (``bench/bench_monitor.py`` measures both).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Sequence

from slm import discovery
from slm.link import CONNECTED, LOST, RECONNECTING, REFUSED, DeviceLink, LinkError, LinkTimeout, sync_clock
from slm.monitor_state import SILENT, MonitorState, WindowLeq, energy_mean_db
from slm.monitor_view import level_bar, render_summary, render_table
from slm.record_log import CSV_COLUMNS, RecordLog

__all__ = ["CSV_COLUMNS", "FRAME_S", "SILENT", "Monitor", "MonitorState", "RecordLog", "WindowLeq", "energy_mean_db",
           "level_bar", "render_summary", "render_table"]

log = logging.getLogger(__name__)

FRAME_S = 0.25
"""Seconds between frames: the live view refreshes 4 times a second."""
HANDSHAKE_TIMEOUT_S = 5.0
"""How long ``open()`` waits for each device's reply to ``info`` (asking again every ``HANDSHAKE_RETRY_S``: a
board that is still starting may not read the first question)."""
HANDSHAKE_RETRY_S = 1.5
BUFFERED_MARGIN_S = 0.5
"""A record counts as buffered when its device time puts it this long before the port was (re)opened."""


class Board:
    """One monitored board: its link and its state."""

    __slots__ = ("index", "link", "state", "hello_seen", "replies", "connected_wall")

    def __init__(self, index: int, link: DeviceLink, state: MonitorState):
        self.index, self.link, self.state = index, link, state
        self.hello_seen: dict[str, Any] | None = None
        self.replies: list[tuple[int, dict[str, Any], None, float, float]] = []  # the handshake's, to log in order
        self.connected_wall: float | None = None  # host time of the (re)connection whose first records are awaited


def _merge_replies(batch: list, b: Board) -> list:
    """``batch`` with board ``b``'s handshake replies put before its first record with a higher ``seq``."""
    replies, b.replies = b.replies, []
    out = []
    for item in batch:
        if replies and item[0] == b.index and item[1] is not None:
            seq = item[1].get("seq")
            while replies and type(seq) is int and replies[0][1]["seq"] < seq:
                out.append(replies.pop(0))
        out.append(item)
    return out + replies


def _port_name(port: str | discovery.PortInfo) -> str:
    return port.device if isinstance(port, discovery.PortInfo) else os.fspath(port)


class Monitor:
    """Watches several boards at once: one ``DeviceLink`` per port, one queue, one thread doing the rest.

    ``open()`` opens every port and asks each device for ``info`` (all must answer, else LinkError and nothing
    stays open; ``handshake=False`` skips the question, for benchmarks); after that, a lost board is only shown
    (its link reconnects by itself). ``run()`` drains the queue into the states and the log once a frame until
    ``duration_s`` has passed, ``stop()`` is called (from a signal handler, say) or KeyboardInterrupt; ``close()``
    closes the links, takes what they still delivered and closes the log. ``with Monitor(ports) as m: m.run(5)``.
    """

    def __init__(self, ports: Sequence[str | os.PathLike[str] | discovery.PortInfo], *, limit_db: float | None = None,
                 log: RecordLog | None = None, handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
                 reconnect_interval: float = 0.5, handshake: bool = True,
                 link_factory: Callable[..., DeviceLink] = DeviceLink):
        if not ports:
            raise ValueError("no ports to monitor")
        self.log = log
        self.limit_db = limit_db
        self.handshake = handshake
        self.handshake_timeout = handshake_timeout
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
        """Open every link and ask each device ``info`` (unless ``handshake=False``). On a failure (a port that does
        not open, a device that does not answer within ``handshake_timeout``, another protocol version), close the
        opened ones and raise LinkError."""
        try:
            for b in self.boards:
                b.link.open(handshake=False)
                if self.handshake:
                    self._handshake(b)
        except BaseException:
            self._close_links()
            raise
        self.started_mono = time.monotonic()
        return self  # what came meanwhile waits in the queue for the first refresh (and a log set after open)

    def _handshake(self, b: Board) -> None:
        """Ask ``info`` until a reply or ``handshake_timeout``; keep the reply to log it in ``seq`` order (the
        link hands a reply to the command waiting for it, not to ``on_record``)."""
        link = b.link
        deadline = time.monotonic() + self.handshake_timeout
        while True:
            wait = min(HANDSHAKE_RETRY_S, deadline - time.monotonic())
            try:
                reply = link.send("info", timeout=max(wait, 0.01))
                break
            except LinkTimeout:
                if time.monotonic() >= deadline:
                    raise LinkTimeout("%s: no reply to info within %g s" % (link.path, self.handshake_timeout)) \
                        from None
        b.replies.append((b.index, reply, None, time.monotonic(), time.time()))
        try:
            ack = sync_clock(link, reply)
            if ack is not None:
                b.replies.append((b.index, ack, None, time.monotonic(), time.time()))
        except LinkError as e:  # the meter goes on with its own clock; watching it matters more
            log.warning("%s: could not set the clock: %s", link.path, e)

    def stop(self) -> None:
        """Ask ``run`` to return (safe from a signal handler or another thread)."""
        self._stop.set()

    @property
    def states(self) -> list[MonitorState]:
        return [b.state for b in self.boards]

    def drain(self) -> int:
        """Move everything queued into the states and the log; returns how many items."""
        q = self.queue
        batch = []
        while True:
            try:
                batch.append(q.get_nowait())
            except queue.Empty:
                break
        for b in self.boards:
            if b.replies:
                batch = _merge_replies(batch, b)
        anchors = self._catch_up_anchors(batch)
        awaiting = {b.index: b.connected_wall for b in self.boards}  # a (re)connection's host time, until records
        came = {b.index: False for b in self.boards}  # records came after it
        for i, rec, state, mono, wall in batch:
            b = self.boards[i]
            if rec is not None:
                self._take_record(b, rec, mono, wall, None if awaiting[i] is None else anchors.get(i))
                came[i] = True
            elif state is not None:
                awaiting[i], came[i] = (wall if state == CONNECTED else None), False
                self._take_state(b, state, mono, wall)
        for b in self.boards:  # once the first records after a (re)connection have come, the rest are live
            b.connected_wall = None if came[b.index] else awaiting[b.index]
        return len(batch)

    def _catch_up_anchors(self, batch: list) -> dict[int, tuple[int, float, float]]:
        """For each board whose link (re)connected and whose first records after that are in this batch: the
        newest of those records' ``ms``, its arrival time, and the connection's host time."""
        anchors: dict[int, tuple[int, float, float]] = {}
        connected: dict[int, float | None] = {b.index: b.connected_wall for b in self.boards}
        for i, rec, state, mono, wall in batch:
            if state is not None:
                connected[i] = wall if state == CONNECTED else None
            elif rec is not None and connected.get(i) is not None and type(rec.get("ms")) is int:
                anchors[i] = (rec["ms"], wall, connected[i])
        return anchors

    def _take_record(self, b: Board, rec: dict[str, Any], mono: float, wall: float,
                     anchor: tuple[int, float, float] | None) -> None:
        buffered = False
        ms = rec.get("ms")
        if anchor is not None and type(ms) is int and ms <= anchor[0]:
            # Sent before the port was opened and held by the device (or the virtual board) until a host read:
            # it arrived late; its host time is the newest record's arrival less the device time between them.
            sent = anchor[1] - (anchor[0] - ms) / 1000
            if sent < anchor[2] - BUFFERED_MARGIN_S:
                buffered, wall = True, sent
                b.state.buffered_records += 1
        b.state.feed(rec, mono, wall)
        if self.log is not None:
            self.log.write(rec, b.state.port, b.link.serial, wall, buffered=buffered)

    def _take_state(self, b: Board, state: str, mono: float, wall: float) -> None:
        reason = b.link.state_reason if state in (LOST, RECONNECTING, REFUSED) else None
        if state == REFUSED:
            reason = b.link.error or reason
        b.state.set_link_state(state, mono, wall, reason)
        if self.log is not None:
            self.log.write_state(b.state.port, state, reason, b.link.serial, wall)

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
