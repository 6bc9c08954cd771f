"""`slm monitor --broker URL`: the live view of the whole fleet from an MQTT broker (``BrokerMonitor``).

The same view as over serial (slm.monitor, slm.monitor_state, slm.monitor_view): one ``MonitorState`` per device
heard on `slm/<site>/<device>/<kind>` (docs/network.md), fed with the records the devices publish (the serial
records, validated as the collector does, slm.fleet_records: a bad message is counted, never shown). What differs:

- The link of a row is the device's MQTT session: `connected` once it publishes, `OFFLINE` when the broker publishes
  its last will (`{"t":"status","state":"offline"}` on its status topic) and until it publishes again; `SILENT` when
  connected but nothing came for 3 status periods (3 interval periods when it publishes intervals).
- Last seen: when the device last published, by the host clock; for a retained message (the `hello` and the last
  `status`, which the broker hands over on subscribing) by the device's own `utc` in it, since it was published
  before the monitor was there. Retained records are logged as `buffered`.
- Devices publish no `level` records over MQTT: LAF and the 1 s / 1 min windows come from `interval` records, so
  only from devices with `"intervals": true` (the rest show their minute records' limit and status).

Like ``Monitor``: paho's network thread only queues; ``run`` drains the queue into the states once a frame. A clean
session with a client id of its own per run: the monitor only reads, and missed nothing it would need later."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from typing import Any, Callable

from slm.collect import Broker, BrokerError, mqtt_client
from slm.fleet_records import Rejected, validate
from slm.link import CONNECTED, LOST
from slm.monitor import FRAME_S
from slm.monitor_state import SILENT, MonitorState
from slm.record_log import RecordLog
from slm.utc import parse_utc

TOPIC_FILTER = "slm/+/+/+"
CONNECT_TIMEOUT_S = 15.0
OFFLINE_REASON = "offline (last will)"


class BrokerMonitor:
    """``open()`` connects and subscribes (else BrokerError); ``run(duration_s, on_frame)``, ``stop()``,
    ``close()``, ``summary()`` and ``states`` as ``slm.monitor.Monitor``'s, so the CLI renders both alike."""

    def __init__(self, broker: Broker, *, limit_db: float | None = None, log: RecordLog | None = None,
                 client_id: str | None = None):
        self.broker = broker
        self.limit_db = limit_db
        self.log = log
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._fatal: str | None = None
        self._boards: dict[tuple[str, str], MonitorState] = {}
        self.rejected = 0
        self.connects = 0
        self.started_mono: float | None = None
        self.frames = 0
        self.client = mqtt_client(broker, client_id or f"slm-monitor-{os.getpid()}-{time.monotonic_ns() % 10**6}",
                                  clean_session=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # paho's thread: note and enqueue, nothing else
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._fatal = f"the broker {self.broker.label} refused the connection: {reason_code}"
            self._subscribed.set()
            client.disconnect()
            return
        self.connects += 1
        client.subscribe(TOPIC_FILTER, qos=0)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):
            self._fatal = f"the broker {self.broker.label} refused the subscription to {TOPIC_FILTER}"
            client.disconnect()
        self._subscribed.set()

    def _on_message(self, client, userdata, msg):
        self.queue.put((msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic(), time.time()))

    # the monitor's thread
    def open(self) -> "BrokerMonitor":
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        except (OSError, ValueError) as e:
            raise BrokerError(f"cannot reach the broker {self.broker.label}: {e}") from None
        self.client.loop_start()
        if not self._subscribed.wait(CONNECT_TIMEOUT_S) or self._fatal:
            self.client.loop_stop()
            raise BrokerError(self._fatal or f"no answer from the broker {self.broker.label} within "
                                             f"{CONNECT_TIMEOUT_S:g} s")
        self.started_mono = time.monotonic()
        return self

    @property
    def states(self) -> list[MonitorState]:
        return [self._boards[k] for k in sorted(self._boards)]

    def _state(self, site: str, device: str, mono: float, wall: float) -> MonitorState:
        key = (site, device)
        st = self._boards.get(key)
        if st is None:
            st = self._boards[key] = MonitorState(device, f"{site}/{device}", self.limit_db)
            st.via_broker = True
            st.serial = device
        return st

    def drain(self) -> int:
        n = 0
        while True:
            try:
                topic, payload, retained, mono, wall = self.queue.get_nowait()
            except queue.Empty:
                return n
            n += 1
            self._take(topic, payload, retained, mono, wall)

    def _take(self, topic: str, payload: bytes, retained: bool, mono: float, wall: float) -> None:
        try:
            kind, row = validate(topic, payload)
        except Rejected:
            self.rejected += 1
            return
        except Exception:  # validation failed in a way it did not foresee: not shown, all the same
            self.rejected += 1
            return
        st = self._state(row["site"], row["device"], mono, wall)
        if kind == "offline":
            st.offline = True
            st.set_link_state(LOST, mono, wall, OFFLINE_REASON)
            if self.log is not None:
                self.log.write_state(st.port, "offline", OFFLINE_REASON, st.serial, wall)
            return
        rec = json.loads(payload)
        seen = wall
        if retained:  # published before we subscribed: its own clock says when
            t = parse_utc(rec.get("utc"))
            seen = None if t is None else t.timestamp()
        if seen is not None and (st.last_seen_wall is None or seen > st.last_seen_wall):
            st.last_seen_wall = seen
        if st.offline and retained:
            # a retained hello seen after the retained will: still offline
            st.feed(rec, None, seen)
            return
        st.offline = False
        if st.link_state != CONNECTED:
            st.set_link_state(CONNECTED, mono, wall)
            if self.log is not None:
                self.log.write_state(st.port, CONNECTED, None, st.serial, wall)
        st.feed(rec, None if retained else mono, seen)
        if self.log is not None:
            self.log.write(rec, st.port, st.serial, seen if seen is not None else wall, buffered=retained)

    def refresh(self) -> None:
        self.drain()
        now, wall = time.monotonic(), time.time()
        for st in self._boards.values():
            view = st.tick(now, wall)
            if view is not None and self.log is not None:
                reason = "no records for %.1f s" % st.silent_after_s if view == SILENT else None
                self.log.write_state(st.port, view, reason, st.serial, wall)
        if self.log is not None:
            self.log.maybe_flush()

    def stop(self) -> None:
        self._stop.set()

    def run(self, duration_s: float | None = None, on_frame: Callable[["BrokerMonitor"], None] | None = None,
            frame_s: float = FRAME_S) -> None:
        start = time.monotonic()
        if self.started_mono is None:
            self.started_mono = start
        deadline = None if duration_s is None else start + duration_s
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                if self._fatal:
                    raise BrokerError(self._fatal)
                self.refresh()
                if on_frame is not None:
                    on_frame(self)
                self.frames += 1
                wait = frame_s if deadline is None else min(frame_s, max(0.0, deadline - time.monotonic()))
                self._stop.wait(wait)
        except KeyboardInterrupt:
            pass
        self.refresh()

    def close(self) -> None:
        try:
            self.client.disconnect()
            self.client.loop_stop()
            self.refresh()
            for st in self._boards.values():
                if st.end_state is None:
                    st.end_state = st.view_state
        finally:
            if self.log is not None:
                self.log.close()

    def summary(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"duration_s": None if self.started_mono is None else round(now - self.started_mono, 3),
                "log": None if self.log is None else str(self.log.path), "broker": self.broker.label,
                "rejected": self.rejected, "boards": [st.summary(now) for st in self.states]}

    def __enter__(self) -> "BrokerMonitor":
        if self.started_mono is None:
            self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
