"""`slm hj212`: the HJ 212-2017 uplink. Reads what `slm collect` stored (slm.fleet_db, read only) and sends it to an
environmental monitoring platform over TCP as ST=23 (acoustic environment) packets: CN=2011 real-time LA, CN=2051
minute, CN=2061 hourly and CN=2031 daily data; docs/hj212.md gives the fields, flags and sources.

Delivery: one packet at a time; when its Flag asks for a reply (the default) the packet counts as delivered only once
the platform's data reply (CN=9014, same QN) arrived, and is sent again after `timeout_s`, at most `retries` times,
before the connection is dropped and made again later. What was delivered is kept in a state file (one cursor per
device and kind, saved after each delivery), so a restarted sender goes on after the last delivered minute, hour and
day: a minute is sent twice only when its reply did not come (or the sender stopped between the reply and the save)."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from slm.errors import InputError, OperationError
from slm.fleet_db import database_errors

ST_NOISE = "23"  # system code: acoustic environment quality monitoring
ST_REPLY = "91"  # system code: system interaction (the platform's replies)
CN_REALTIME, CN_MINUTE, CN_HOUR, CN_DAY, CN_DATA_REPLY = "2011", "2051", "2061", "2031", "9014"
FLAG_VERSION = 0b000001 << 2  # bits V5..V0 = 000001: HJ 212-2017 (000000 is HJ/T 212-2005)
FLAG_ACK = 0b01  # bit A: the platform shall reply
MAX_SEGMENT = 1024  # characters of a data segment at most
MAX_REPLY_BUFFER = 65536  # bytes of unparsed reply data kept at most
DAY_START_MIN, NIGHT_START_MIN = 6 * 60, 22 * 60  # GB 3096-2008: day 06:00-22:00, night 22:00-06:00 local
NIGHT_PENALTY_DB = 10.0  # Ldn's night weighting
MINUTES_PER_QUERY = 500
ID_RE = re.compile(r"[A-Za-z0-9]{1,24}\Z")
PW_RE = re.compile(r"[A-Za-z0-9]{1,9}\Z")
OFFSET_RE = re.compile(r"([+-])(\d\d):?(\d\d)\Z")


class Hj212Error(OperationError):
    """The platform could not be reached, or stopped replying."""


class LinkDown(Exception):
    """The connection failed or the platform did not reply after the resends (internal: the loop reconnects)."""


# ---- the packet ------------------------------------------------------------------------------------------------

def crc16(data: bytes) -> int:
    """HJ 212's CRC-16: start 0xFFFF; per byte crc = (crc >> 8) ^ byte, then 8 shifts right, XOR 0xA001 when the
    bit shifted out is 1."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(segment: str) -> bytes:
    """`##` + 4-digit length + data segment + CRC (4 hex digits) + CRLF."""
    data = segment.encode("ascii")
    if len(data) > MAX_SEGMENT:
        raise ValueError(f"data segment of {len(data)} characters (at most {MAX_SEGMENT})")
    return b"##%04d%s%04X\r\n" % (len(data), data, crc16(data))


def take_frames(buffer: bytearray) -> tuple[list[str], int]:
    """The data segments of the whole, valid frames at the start of `buffer` (removed from it), and how many bytes
    were thrown away as not a valid frame (garbage, bad length, bad CRC, not ASCII). An incomplete frame stays."""
    segments, bad = [], 0
    while True:
        start = buffer.find(b"##")
        if start < 0:
            keep = 1 if buffer.endswith(b"#") else 0
            bad += len(buffer) - keep
            del buffer[:len(buffer) - keep]
            return segments, bad
        bad += start
        del buffer[:start]
        if len(buffer) < 6:
            return segments, bad
        digits = bytes(buffer[2:6])
        if not digits.isdigit() or int(digits) > MAX_SEGMENT:
            bad += 2
            del buffer[:2]
            continue
        n = int(digits)
        if len(buffer) < 6 + n + 6:
            end = buffer.find(b"\r\n", 6)
            if 0 <= end < 10 + n:  # a frame has no CRLF before its end: this one is cut short
                bad += 2
                del buffer[:2]
                continue
            return segments, bad
        data, crc, tail = bytes(buffer[6:6 + n]), bytes(buffer[6 + n:10 + n]), bytes(buffer[10 + n:12 + n])
        try:
            ok = tail == b"\r\n" and int(crc, 16) == crc16(data) and re.fullmatch(rb"[0-9A-Fa-f]{4}", crc)
            text = data.decode("ascii")
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            bad += 2
            del buffer[:2]
            continue
        segments.append(text)
        del buffer[:12 + n]


def parse_segment(segment: str) -> tuple[dict[str, str], str]:
    """(header fields, CP text) of a data segment `QN=..;ST=..;...;CP=&&...&&`."""
    head, sep, rest = segment.partition("CP=&&")
    fields = {}
    for item in head.split(";"):
        key, eq, value = item.partition("=")
        if eq:
            fields[key] = value
    cp = rest[:-2] if sep and rest.endswith("&&") else rest
    return fields, cp


def level(value: float) -> str:
    """A level in dB as sent: 0.1 dB."""
    return f"{value:.1f}"


def stamp(t: datetime) -> str:
    """YYYYMMDDhhmmss (DataTime)."""
    return t.strftime("%Y%m%d%H%M%S")


@dataclass
class Packet:
    cn: str
    mn: str
    key: str  # what it carries (a minute's start, an hour, a day, an interval's utc), for the state
    data_time: datetime  # platform local time
    items: list[str]  # CP items after DataTime, e.g. "Leq-Data=55.2"
    qn: str = ""
    flag: int = FLAG_VERSION | FLAG_ACK

    def segment(self, pw: str) -> str:
        cp = ";".join([f"DataTime={stamp(self.data_time)}"] + self.items)
        return f"QN={self.qn};ST={ST_NOISE};CN={self.cn};PW={pw};MN={self.mn};Flag={self.flag};CP=&&{cp}&&"


# ---- what is sent, from the collector's tables -------------------------------------------------------------------

@dataclass
class Minute:
    start: datetime  # platform local time
    start_key: str  # the row's `start` (canonical UTC text)
    s: float | None
    laeq: float | None
    lafmax: float | None
    lafmin: float | None
    la10: float | None
    la50: float | None
    la90: float | None
    overload: bool | None

    @property
    def valid(self) -> bool:
        """Counts in hours and days: a level, some audio, no overload (as in `slm report`)."""
        return self.laeq is not None and (self.s or 0) > 0 and not self.overload


def energy_mean(minutes: list[Minute]) -> float | None:
    total = sum(m.s * 10 ** (m.laeq / 10) for m in minutes)
    seconds = sum(m.s for m in minutes)
    return 10 * math.log10(total / seconds) if seconds > 0 and total > 0 else None


def weighted_mean(minutes: list[Minute], name: str) -> float | None:
    pairs = [(getattr(m, name), m.s) for m in minutes if getattr(m, name) is not None]
    weight = sum(s for _, s in pairs)
    return sum(v * s for v, s in pairs) / weight if weight > 0 else None


def items(pairs: list[tuple[str, float | None]], suffix: str = "Data") -> list[str]:
    return [f"{code}-{suffix}={level(v)}" for code, v in pairs if v is not None]


def minute_items(m: Minute) -> list[str]:
    out = items([("Leq", m.laeq), ("L10", m.la10), ("L50", m.la50), ("L90", m.la90), ("LMx", m.lafmax),
                 ("LMn", m.lafmin)])
    if out:
        out[0] += ",Leq-Flag=" + ("T" if m.overload else "N")  # T: above the measuring range
    return out


def hour_items(minutes: list[Minute]) -> list[str]:
    valid = [m for m in minutes if m.valid]
    return items([("Leq", energy_mean(valid)), ("L10", weighted_mean(valid, "la10")),
                  ("L50", weighted_mean(valid, "la50")), ("L90", weighted_mean(valid, "la90")),
                  ("LMx", max((m.lafmax for m in valid if m.lafmax is not None), default=None)),
                  ("LMn", min((m.lafmin for m in valid if m.lafmin is not None), default=None))])


def _clock(t: datetime) -> int:
    return t.hour * 60 + t.minute


def day_items(minutes: list[Minute]) -> list[str]:
    """Ld, Ln (GB 3096-2008) and Ldn (night +10 dB) of the 24 h from 06:00 of the day."""
    valid = [m for m in minutes if m.valid]
    ld = energy_mean([m for m in valid if DAY_START_MIN <= _clock(m.start) < NIGHT_START_MIN])
    ln = energy_mean([m for m in valid if not DAY_START_MIN <= _clock(m.start) < NIGHT_START_MIN])
    ldn = None
    if ld is not None and ln is not None:
        ldn = 10 * math.log10((16 * 10 ** (ld / 10) + 8 * 10 ** ((ln + NIGHT_PENALTY_DB) / 10)) / 24)
    return items([("Ld", ld), ("Ln", ln), ("Ldn", ldn),
                  ("LMx", max((m.lafmax for m in valid if m.lafmax is not None), default=None)),
                  ("LMn", min((m.lafmin for m in valid if m.lafmin is not None), default=None))])


def utc_text(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_utc(text: str) -> datetime:
    return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)


class Source:
    """The collector's tables, read only, times turned into the platform's local time (UTC + offset)."""

    COLUMNS = "start, s, laeq, lafmax, lafmin, la10, la50, la90, overload"

    def __init__(self, db, offset: timedelta):
        self.db = db
        self.offset = offset

    def local(self, utc: str) -> datetime:
        return (parse_utc(utc) + self.offset).replace(tzinfo=None)

    def utc(self, local: datetime) -> str:
        return utc_text((local - self.offset).replace(tzinfo=timezone.utc))

    def _minutes(self, sql: str, params: tuple) -> list[Minute]:
        return [Minute(self.local(r[0]), r[0], *r[1:8], bool(r[8]) if r[8] is not None else None)
                for r in self.db.query(sql, params)]

    def minutes_after(self, device: str, after: str, limit: int = MINUTES_PER_QUERY) -> list[Minute]:
        return self._minutes(f"SELECT {self.COLUMNS} FROM minutes WHERE device = ? AND start > ? ORDER BY start "
                             f"LIMIT {int(limit)}", (device, after))

    def minutes_between(self, device: str, start: datetime, end: datetime) -> list[Minute]:
        return self._minutes(f"SELECT {self.COLUMNS} FROM minutes WHERE device = ? AND start >= ? AND start < ? "
                             "ORDER BY start", (device, self.utc(start), self.utc(end)))

    def first_and_last(self, device: str) -> tuple[datetime, datetime] | None:
        (first, last), = self.db.query("SELECT min(start), max(start) FROM minutes WHERE device = ?", (device,))
        return None if first is None else (self.local(first), self.local(last))

    def newest_interval(self, device: str) -> tuple[str, float | None, bool] | None:
        rows = self.db.query("SELECT utc, laeq, overload FROM intervals WHERE device = ? ORDER BY utc DESC LIMIT 1",
                             (device,))
        return (rows[0][0], rows[0][1], bool(rows[0][2])) if rows else None


# ---- state ---------------------------------------------------------------------------------------------------

class State:
    """What the platform acknowledged, per device and MN: the last minute (UTC start), hour (local start), day (local
    date), real-time interval (UTC); a JSON file replaced atomically after every change."""

    def __init__(self, path: Path):
        self.path = path
        self.cursors: dict[str, dict[str, str]] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if not isinstance(data, dict) or not isinstance(data.get("cursors"), dict):
                    raise ValueError("no cursors")
                self.cursors = {k: {kk: str(vv) for kk, vv in v.items()} for k, v in data["cursors"].items()}
            except (OSError, ValueError, AttributeError) as e:
                raise InputError(f"--state {path}: not a state file of slm hj212 ({e}); move it away to send "
                                 "everything again") from None
        elif not path.parent.is_dir():
            raise InputError(f"--state {path}: folder {path.parent} does not exist")

    def get(self, device: str, mn: str, kind: str) -> str | None:
        return self.cursors.get(f"{device}|{mn}", {}).get(kind)

    def put(self, device: str, mn: str, kind: str, value: str) -> None:
        self.cursors.setdefault(f"{device}|{mn}", {})[kind] = value
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"version": 1, "cursors": self.cursors}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


# ---- the connection ------------------------------------------------------------------------------------------

@dataclass
class Counts:
    sent: Counter = field(default_factory=Counter)  # packets delivered, by CN
    resent: int = 0
    replies: int = 0
    bad_reply_bytes: int = 0
    ignored_replies: int = 0
    connects: int = 0
    failures: int = 0

    def as_dict(self) -> dict:
        return {"sent": dict(self.sent), "resent": self.resent, "replies": self.replies,
                "bad_reply_bytes": self.bad_reply_bytes, "ignored_replies": self.ignored_replies,
                "connects": self.connects, "failures": self.failures}


class Link:
    """One TCP connection to the platform: `deliver` sends a packet and, when its Flag asks for it, waits for the
    data reply with its QN, sending it again on timeout."""

    def __init__(self, host: str, port: int, pw: str, timeout_s: float, retries: int, counts: Counts, log):
        self.host, self.port, self.pw = host, port, pw
        self.timeout_s, self.retries = timeout_s, retries
        self.counts, self.log = counts, log
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.acked: set[str] = set()
        self._last_qn = ""

    def connect(self) -> None:
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=max(self.timeout_s, 5.0))
        except OSError as e:
            raise LinkDown(f"cannot connect to {self.host}:{self.port}: {e.strerror or e}") from None
        self.buffer.clear()
        self.acked.clear()
        self.counts.connects += 1

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def next_qn(self, now: datetime) -> str:
        """YYYYMMDDhhmmsszzz of `now`, later than the last one (unique per packet)."""
        qn = now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}"
        if qn <= self._last_qn:
            qn = str(int(self._last_qn) + 1)
        self._last_qn = qn
        return qn

    def _read(self, until: float) -> None:
        """Read replies until `until` (monotonic) or until something arrived."""
        assert self.sock is not None
        self.sock.settimeout(max(0.001, until - time.monotonic()))
        try:
            chunk = self.sock.recv(4096)
        except socket.timeout:
            return
        except OSError as e:
            raise LinkDown(f"the connection to {self.host}:{self.port} failed: {e.strerror or e}") from None
        if not chunk:
            raise LinkDown(f"{self.host}:{self.port} closed the connection")
        self.buffer += chunk
        segments, bad = take_frames(self.buffer)
        if len(self.buffer) > MAX_REPLY_BUFFER:
            bad += len(self.buffer)
            self.buffer.clear()
        self.counts.bad_reply_bytes += bad
        for segment in segments:
            fields, cp = parse_segment(segment)
            qn = fields.get("QN") or dict(i.partition("=")[::2] for i in cp.split(";")).get("QN")
            if fields.get("CN") == CN_DATA_REPLY and qn:
                self.counts.replies += 1
                self.acked.add(qn)
            else:
                self.counts.ignored_replies += 1  # commands from the platform are not supported

    def deliver(self, packet: Packet) -> None:
        """Send until delivered; raises LinkDown."""
        if self.sock is None:
            self.connect()
        data = frame(packet.segment(self.pw))
        for attempt in range(1 + self.retries):
            if attempt:
                self.counts.resent += 1
            try:
                self.sock.sendall(data)
            except OSError as e:
                raise LinkDown(f"sending to {self.host}:{self.port} failed: {e.strerror or e}") from None
            if not packet.flag & FLAG_ACK:
                self._drain()
                return
            deadline = time.monotonic() + self.timeout_s
            while packet.qn not in self.acked and time.monotonic() < deadline:
                self._read(deadline)
            if packet.qn in self.acked:
                self.acked.discard(packet.qn)
                return
        raise LinkDown(f"no data reply from {self.host}:{self.port} to QN={packet.qn} after {1 + self.retries} "
                       f"sends")

    def _drain(self) -> None:
        """Without replies asked for, still read (and drop) what the platform sends, so its buffer never fills."""
        self._read(time.monotonic())
        self.acked.clear()


# ---- the sender ----------------------------------------------------------------------------------------------

@dataclass
class Options:
    host: str
    port: int
    stations: dict[str, str]  # device -> MN
    pw: str
    offset: timedelta = timedelta(hours=8)
    ack: bool = True
    timeout_s: float = 10.0
    retries: int = 3
    rtd_interval_s: float = 30.0  # 0: no real-time packets
    poll_s: float = 5.0


class Sender:
    def __init__(self, source: Source, state: State, link: Link, options: Options, clock=None):
        self.source, self.state, self.link, self.o = source, state, link, options
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.should_stop = lambda: False
        self._last_rtd: dict[str, float] = {}

    def _send(self, device: str, kind: str, packet: Packet) -> None:
        packet.flag = FLAG_VERSION | (FLAG_ACK if self.o.ack else 0)
        packet.qn = self.link.next_qn((self.clock() + self.o.offset).replace(tzinfo=None))
        self.link.deliver(packet)
        self.state.put(device, packet.mn, kind, packet.key)
        self.link.counts.sent[packet.cn] += 1

    def cycle(self) -> int:
        """Send what is due for every station; the number of packets sent."""
        sent = 0
        for device, mn in self.o.stations.items():
            sent += self._realtime(device, mn) + self._minutes(device, mn) + self._periods(device, mn)
        return sent

    def _realtime(self, device: str, mn: str) -> int:
        if self.o.rtd_interval_s <= 0:
            return 0
        now = time.monotonic()
        if now - self._last_rtd.get(device, -math.inf) < self.o.rtd_interval_s:
            return 0
        newest = self.source.newest_interval(device)
        if newest is None or newest[1] is None or newest[0] <= (self.state.get(device, mn, "rtd") or ""):
            return 0
        utc, laeq, overload = newest
        self._last_rtd[device] = now
        self._send(device, "rtd", Packet(CN_REALTIME, mn, utc, self.source.local(utc),
                                         [f"LA-Rtd={level(laeq)},LA-Flag={'T' if overload else 'N'}"]))
        return 1

    def _minutes(self, device: str, mn: str) -> int:
        sent = 0
        while True:
            batch = self.source.minutes_after(device, self.state.get(device, mn, "minute") or "")
            for m in batch:
                if self.should_stop():
                    return sent
                self._send(device, "minute", Packet(CN_MINUTE, mn, m.start_key, m.start, minute_items(m)))
                sent += 1
            if len(batch) < MINUTES_PER_QUERY:
                return sent

    def _periods(self, device: str, mn: str) -> int:
        """Hours, then days, that are complete: the device has a minute at or after their end (minutes arrive in
        order, so the period's minutes are all stored). A period without valid data is passed over."""
        span = self.source.first_and_last(device)
        if span is None:
            return 0
        first, last = span
        sent = 0
        done = self.state.get(device, mn, "hour")
        hour = (datetime.fromisoformat(done) + timedelta(hours=1) if done
                else first.replace(minute=0, second=0, microsecond=0))
        while hour + timedelta(hours=1) <= last and not self.should_stop():
            values = hour_items(self.source.minutes_between(device, hour, hour + timedelta(hours=1)))
            if values:
                self._send(device, "hour", Packet(CN_HOUR, mn, hour.isoformat(), hour, values))
                sent += 1
            else:
                self.state.put(device, mn, "hour", hour.isoformat())
            hour += timedelta(hours=1)
        done = self.state.get(device, mn, "day")
        day = (date.fromisoformat(done) + timedelta(days=1) if done
               else (first - timedelta(minutes=DAY_START_MIN)).date())
        while datetime.combine(day + timedelta(days=1), datetime.min.time()) + timedelta(minutes=DAY_START_MIN) \
                <= last and not self.should_stop():
            begin = datetime.combine(day, datetime.min.time()) + timedelta(minutes=DAY_START_MIN)
            values = day_items(self.source.minutes_between(device, begin, begin + timedelta(days=1)))
            midnight = datetime.combine(day, datetime.min.time())
            if values:
                self._send(device, "day", Packet(CN_DAY, mn, day.isoformat(), midnight, values))
                sent += 1
            else:
                self.state.put(device, mn, "day", day.isoformat())
            day += timedelta(days=1)
        return sent


def run(db, state_path: Path, options: Options, stop: threading.Event | None = None, once: bool = False,
        duration_s: float | None = None, log=None) -> Counts:
    """Send until `stop`, `duration_s` or Ctrl-C; with `once`, until nothing is due (a failure is then an error)."""
    log = log or (lambda line: print(f"slm hj212: {line}", file=sys.stderr, flush=True))
    stop = stop or threading.Event()
    counts = Counts()
    try:
        state = State(state_path)
    except InputError:
        db.close()
        raise
    link = Link(options.host, options.port, options.pw, options.timeout_s, options.retries, counts, log)
    sender = Sender(Source(db, options.offset), state, link, options)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    sender.should_stop = lambda: stop.is_set() or (deadline is not None and time.monotonic() >= deadline)
    db_errors = database_errors()
    backoff = 1.0
    try:
        while not sender.should_stop():
            try:
                sent = sender.cycle()
                backoff = 1.0
            except (LinkDown, *db_errors) as e:
                if isinstance(e, LinkDown):
                    link.close()
                else:
                    try:
                        db.rollback()  # PostgreSQL: end the failed transaction, or every query after fails too
                    except db_errors:
                        pass
                    e = f"reading the database failed: {str(e).strip().splitlines()[0] if str(e).strip() else e}"
                counts.failures += 1
                if once:
                    raise Hj212Error(str(e)) from None
                log(f"{e}; again in {backoff:.0f} s")
                stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            if once and sent == 0:
                break
            if sent == 0:
                stop.wait(options.poll_s)
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
        db.close()
    return counts


# ---- options -------------------------------------------------------------------------------------------------

def parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--to {text}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def parse_stations(pairs: tuple[str, ...]) -> dict[str, str]:
    if not pairs:
        raise InputError("name at least one station: --mn DEVICE=MN")
    stations: dict[str, str] = {}
    for pair in pairs:
        device, sep, mn = pair.partition("=")
        if not sep or not device or not ID_RE.match(mn):
            raise InputError(f"--mn {pair}: expected DEVICE=MN (MN: 1-24 letters and digits)")
        if device in stations:
            raise InputError(f"--mn {pair}: device {device} named twice")
        stations[device] = mn
    return stations


def parse_offset(text: str) -> timedelta:
    m = OFFSET_RE.match(text)
    if not m or int(m.group(3)) >= 60 or int(m.group(2)) > 14:
        raise InputError(f"--utc-offset {text}: expected +HH:MM (China: +08:00)")
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return timedelta(minutes=-minutes if m.group(1) == "-" else minutes)


def check_pw(pw: str) -> str:
    if not PW_RE.match(pw):
        raise InputError("--pw: 1-9 letters and digits")
    return pw


def default_state_path(db_url: str, host: str, port: int) -> Path:
    if db_url.startswith(("postgresql://", "postgres://")):
        raise InputError("--state FILE is needed with a PostgreSQL --db")
    path = db_url[len("sqlite:///"):] if db_url.startswith("sqlite:///") else db_url
    return Path(f"{path}.hj212-{host}-{port}.json")


def open_source_db(db_url: str):
    """The collector's database, which must exist (a sender never creates one)."""
    from slm.fleet_db import open_db

    if not db_url.startswith(("postgresql://", "postgres://")):
        path = db_url[len("sqlite:///"):] if db_url.startswith("sqlite:///") else db_url
        if not Path(path).is_file():
            raise InputError(f"--db {db_url}: no such database file")
    return open_db(db_url)
