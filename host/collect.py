"""`slm collect`: subscribe to the fleet's topics on an MQTT broker (paho-mqtt) and store every valid record in the
fleet database (slm.fleet_db); anything else is counted and kept aside in its `rejected` table, never a crash.

Delivery: QoS 1 on a persistent session (a fixed client id, clean_session false), and a message is acknowledged to
the broker only after the transaction that stored it is committed (paho's manual_ack). So a collector or broker
restart loses nothing: what was not acknowledged is delivered again, and the natural keys drop what was stored
already. paho's network thread only queues messages; this module's thread validates, stores, commits and acks.

With the devices' keys (``--keys DIR``) each signed record (minute, event, audit) is checked on arrival and stored
with ``verified`` 1 or 0 (slm.verify.ArrivalCheck); a record is never dropped for failing. A record whose natural
key is stored already but whose MAC differs (two records claim the same minute) is kept aside in `rejected` as
``conflict``, so that nothing a device or anyone else sent is lost without trace."""

from __future__ import annotations

import json
import queue
import re
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from slm.errors import InputError, OperationError
from slm.fleet_db import TABLE_OF_KIND, TABLES, FleetDb, database_errors
from slm.fleet_records import SIGNED, Rejected, validate

TOPIC_FILTER = "slm/#"  # all of it: a message on a wrong topic under slm/ is counted, not silently missed
SHARE_GROUP_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


def topic_filter(share: str | None = None) -> str:
    """What a collector subscribes to: slm/#, or with ``share`` the shared subscription $share/GROUP/slm/# (MQTT 5's,
    which Mosquitto 2 also gives MQTT 3.1.1 clients): the broker hands each message to one collector of the group,
    so several collectors share a fleet (docs/scale.md)."""
    if share is None:
        return TOPIC_FILTER
    if not SHARE_GROUP_RE.match(share):
        raise InputError(f"--share {share[:80]!r}: a group name is 1-64 characters of A-Z a-z 0-9 - _")
    return f"$share/{share}/{TOPIC_FILTER}"
BATCH_MAX = 500  # messages per transaction at most
BATCH_WAIT_S = 0.2  # a transaction stays open at most this long


class BrokerError(OperationError):
    """The broker could not be reached or refused the collector."""


@dataclass
class Broker:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    ca_file: str | None = None

    @property
    def label(self) -> str:
        return f"{'mqtts' if self.ca_file else 'mqtt'}://{self.host}:{self.port}"


def parse_broker(url: str, user: str | None = None, password_file: str | None = None,
                 ca_file: str | None = None) -> Broker:
    """`mqtt://HOST[:PORT]` (1883, or 8883 with TLS) or `mqtts://HOST[:PORT]` (TLS: give --tls CA)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise InputError(f"--broker {url}: expected mqtt://HOST:PORT")
    if parts.scheme == "mqtts" and not ca_file:
        raise InputError("--broker mqtts://...: give the CA certificate with --tls CA")
    try:
        port = parts.port or (8883 if ca_file else 1883)
    except ValueError:
        raise InputError(f"--broker {url}: bad port") from None
    password = None
    if password_file is not None:
        if user is None:
            raise InputError("--password-file needs --user")
        try:
            password = Path(password_file).read_text().strip()
        except OSError as e:
            raise InputError(f"--password-file {password_file}: {e.strerror}") from None
    if ca_file is not None and not Path(ca_file).is_file():
        raise InputError(f"--tls {ca_file}: no such file")
    return Broker(parts.hostname, port, user, password, ca_file)


def mqtt_client(broker: Broker, client_id: str, clean_session: bool, manual_ack: bool = False):
    """A paho-mqtt client for the broker (its user, password and TLS), reconnecting after 1 s, then up to 10 s
    (shared by `slm collect` and `slm monitor --broker`)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                         manual_ack=manual_ack)
    if broker.user is not None:
        client.username_pw_set(broker.user, broker.password)
    if broker.ca_file:
        client.tls_set(ca_certs=broker.ca_file, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


def now_utc() -> str:
    t = datetime.now(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass
class Counts:
    received: int = 0
    stored: Counter = field(default_factory=Counter)
    duplicates: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    offline: int = 0
    connects: int = 0

    def as_dict(self) -> dict:
        return {"received": self.received, "stored": dict(self.stored), "duplicates": dict(self.duplicates),
                "rejected": dict(self.rejected), "offline": self.offline, "connects": self.connects}


class Collector:
    """Validates messages and stores them into a FleetDb. `handle` decides about one message and queues what it
    writes; `commit` writes the batch (one statement per table and row kind, pipelined on PostgreSQL) and commits;
    the counts change only with a commit."""

    def __init__(self, db: FleetDb, keys: dict[str, bytes] | None = None):
        self.db = db
        self.counts = Counts()
        self._db_errors = database_errors()
        self.check = None
        if keys is not None:
            from slm.verify import ArrivalCheck

            self.check = ArrivalCheck(keys, self._stored_mac)
        self._clear()

    def _stored_mac(self, table: str, device: str, n: int) -> str | None:
        rows = self.db.execute(f"SELECT mac FROM {table} WHERE device = ? AND n = ?", (device, n)).fetchall()
        return rows[0][0] if len(rows) == 1 else None

    def _clear(self) -> None:
        self._pending = Counts()
        self._rows: dict[str, list[dict]] = {}
        self._devices: list[tuple[str, dict, str]] = []  # ("hello" | "offline", row, when), in arrival order
        self._seen: dict[str, tuple[str, str]] = {}  # device -> (site, when) of its last record
        self._rejects: list[tuple[str, str, str, bytes]] = []
        self._marks: list[tuple[str, str, int, str, int]] = []  # (table, device, n, mac, verified) found later

    def handle(self, topic: str, payload: bytes, when: str) -> str:
        """Queue one message; returns its kind, "offline" or "rejected:<reason>"."""
        self._pending.received += 1
        try:
            kind, row = validate(topic, payload)
        except Rejected as e:
            return self._reject(topic, payload, when, e.reason)
        except Exception:  # a case validation does not foresee (a bug): kept aside all the same, never a crash
            return self._reject(topic, payload, when, "internal")
        if kind in ("offline", "hello"):
            self._seen.pop(row["device"], None)  # its own row says online or not
            self._devices.append((kind, row, when))
            if kind == "offline":
                self._pending.offline += 1
            else:
                self._pending.stored[kind] += 1
            return kind
        self._seen[row["device"]] = (row["site"], when)
        row["received"] = when
        if kind in SIGNED:
            row["verified"] = None
            if self.check is not None:
                self._mark(kind, row)
        self._rows.setdefault(kind, []).append(row)
        return kind

    def _mark(self, kind: str, row: dict) -> None:
        table = TABLE_OF_KIND[kind]
        rec = json.loads(row["payload"])
        row["verified"] = self.check.mark(kind, row["device"], rec, table)
        if row["n"] is not None and row["verified"] is not None:
            later = self.check.recheck(kind, row["device"], row["n"])
            if later is not None:
                self._marks.append((table, row["device"], *later))

    def _conflicts(self, kind: str, rows: list[dict], stored: list[bool]) -> None:
        """Signed records not stored because their natural key was: kept aside when they differ from the stored."""
        table = TABLE_OF_KIND[kind]
        key = TABLES[table][1]
        for row, new in zip(rows, stored):
            if new or not row.get("mac"):
                continue
            where = " AND ".join(f"{k} = ?" for k in key)
            got = self.db.execute(f"SELECT mac FROM {table} WHERE {where}", tuple(row[k] for k in key)).fetchall()
            if got and got[0][0] != row["mac"]:
                self._pending.rejected["conflict"] += 1
                self._rejects.append((row["received"], f"slm/{row['site']}/{row['device']}/{kind}", "conflict",
                                      row["payload"].encode()))

    def _reject(self, topic: str, payload: bytes, when: str, reason: str) -> str:
        self._pending.rejected[reason] += 1
        self._rejects.append((when, topic, reason, payload))
        return f"rejected:{reason}"

    def commit(self) -> None:
        for kind, row, when in self._devices:
            if kind == "offline":
                self.db.offline(row["device"], row["site"], when)
            else:
                self.db.seen(row["device"], row["site"], when, row)
        for kind, rows in self._rows.items():
            flags = self.db.insert_many(TABLE_OF_KIND[kind], rows)
            stored = sum(flags)
            self._pending.stored[kind] += stored
            if len(rows) > stored:
                self._pending.duplicates[kind] += len(rows) - stored
                if kind in SIGNED:
                    self._conflicts(kind, rows, flags)
        for table, device, n, mac, verified in self._marks:
            self.db.execute(f"UPDATE {table} SET verified = ? WHERE device = ? AND n = ? AND mac = ? "
                            "AND verified IS NULL", (verified, device, n, mac))
        self.db.seen_many([(device, site, when) for device, (site, when) in self._seen.items()])
        self.db.reject_many(self._rejects)
        self.db.commit()
        c, p = self.counts, self._pending
        c.received += p.received
        c.offline += p.offline
        c.stored.update(p.stored)
        c.duplicates.update(p.duplicates)
        c.rejected.update(p.rejected)
        self._clear()

    def rollback(self) -> None:
        self.db.rollback()
        self._clear()

    def store_batch(self, messages: list[tuple[str, bytes, str]]) -> None:
        """Store and commit messages; if the database refuses the batch (which validation should prevent), store
        them one at a time so that one bad message costs only itself (kept aside as `db_error`)."""
        try:
            for topic, payload, when in messages:
                self.handle(topic, payload, when)
            self.commit()
            return
        except self._db_errors:
            self.rollback()
        for topic, payload, when in messages:
            try:
                self.handle(topic, payload, when)
                self.commit()
            except self._db_errors as e:
                self.rollback()
                self._reject(topic, payload + b"  " + str(e).encode()[:200], when, "db_error")
                self._pending.received += 1
                self.commit()


class MqttSource:
    """paho-mqtt on its own network thread: connects, subscribes on every (re)connect, queues messages; `ack`
    acknowledges them once stored."""

    def __init__(self, broker: Broker, client_id: str, log=None, share: str | None = None):
        self.broker = broker
        self.filter = topic_filter(share)
        self.messages: queue.Queue = queue.Queue()
        self.log = log or (lambda line: print(f"slm collect: {line}", file=sys.stderr, flush=True))
        self.connects = 0
        self.fatal: str | None = None
        self.subscribed = threading.Event()
        self.client = mqtt_client(broker, client_id, clean_session=False, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.fatal = f"the broker {self.broker.label} refused the connection: {reason_code}"
            client.disconnect()
            return
        self.connects += 1
        client.subscribe(self.filter, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):
            self.fatal = f"the broker {self.broker.label} refused the subscription to {self.filter}"
            client.disconnect()
            return
        self.log(f"subscribed to {self.filter} on {self.broker.label} (connection {self.connects})")
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.subscribed.clear()
        if self.fatal is None:
            self.log(f"lost the broker ({reason_code}); reconnecting")

    def _on_message(self, client, userdata, msg):
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # a broker forwards only UTF-8 topics; be safe anyway
            topic = msg._topic.decode("utf-8", "backslashreplace")
        self.messages.put((topic, bytes(msg.payload), now_utc(), msg.mid, msg.qos))

    def start(self) -> None:
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            raise BrokerError(f"cannot reach the broker {self.broker.label}: {e}") from None
        self.client.loop_start()

    def ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self.client.ack(mid, qos)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run(db: FleetDb, broker: Broker, client_id: str = "slm-collect", duration_s: float | None = None,
        stop: threading.Event | None = None, log=None, keys: dict[str, bytes] | None = None,
        share: str | None = None) -> Counts:
    """Collect until `stop` is set, `duration_s` has passed, or Ctrl-C; returns the counts. With ``keys``
    ({device: key}) signed records are checked on arrival; with ``share`` as one of a group of collectors."""
    collector = Collector(db, keys)
    source = MqttSource(broker, client_id, log, share)
    stop = stop or threading.Event()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    source.start()
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            if source.fatal:
                raise BrokerError(source.fatal)
            try:
                first = source.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            batch_end = time.monotonic() + BATCH_WAIT_S
            while len(batch) < BATCH_MAX and time.monotonic() < batch_end:
                try:
                    batch.append(source.messages.get_nowait())
                except queue.Empty:
                    break  # nothing waiting: commit now, so the broker sends the next (acks free its window)
            collector.store_batch([(t, p, w) for t, p, w, _, _ in batch])
            for _, _, _, mid, qos in batch:
                source.ack(mid, qos)
    except KeyboardInterrupt:
        pass
    finally:
        source.stop()
        collector.counts.connects = source.connects
        db.close()
    return collector.counts
