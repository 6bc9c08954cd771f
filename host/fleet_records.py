"""Validation of what arrives from the broker: a topic `slm/<site>/<device>/<kind>` and a JSON payload (the serial
record of docs/protocol.md) become one row for the fleet database, or a `Rejected` reason. Pure: no I/O.

Everything is checked before anything is stored: types (a bool is not a number, an int is not a bool), ranges, text
(UTF-8, no control characters, bounded length), times (ISO 8601 UTC, made canonical so that the natural keys that drop
duplicates compare equal), and the device: a payload that names a serial must name the topic's device."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone

KINDS = ("hello", "minute", "interval", "event", "status", "audit")
SIGNED = ("minute", "event", "audit")  # the kinds a device with a key signs (n, mac: docs/verifying.md)
MAX_PAYLOAD = 4096  # bytes; a serial line is at most 1024
MAX_TEXT = 200  # characters of any string field
MAX_INT = 2 ** 53  # seq, ms, counters: exact in JSON everywhere and in a BIGINT
DB_RANGE = (-100.0, 300.0)  # any level, dB
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
UTC_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z\Z")
LOCAL_RE = re.compile(r"([01]\d|2[0-3]):[0-5]\d\Z")
EVENT_KIND_RE = re.compile(r"[a-z_]{1,32}\Z")
MAC_MAX = 64  # characters of a `mac` stored (a device's is 32 hex; anything else is stored and fails verification)
INTERVAL_LEVELS = ("LAeq", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax", "LASmin", "LCpeak", "LZpeak", "LAE",
                   "LA10", "LA50", "LA90")
MINUTE_LEVELS = ("LAeq", "LAFmax", "LAFmin", "LA10", "LA50", "LA90", "LCpeak")
OFFLINE = {"t": "status", "state": "offline"}  # the device's last will, published by the broker


class Rejected(Exception):
    """A message that is not stored; `reason` is a short code counted by the collector."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def parse_topic(topic: str) -> tuple[str, str, str]:
    """`slm/<site>/<device>/<kind>` -> (site, device, kind)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "slm":
        raise Rejected("bad_topic", topic[:100])
    _, site, device, kind = parts
    if not ID_RE.match(site) or not ID_RE.match(device):
        raise Rejected("bad_topic", topic[:100])
    if kind not in KINDS:
        raise Rejected("bad_topic", topic[:100])
    return site, device, kind


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_payload(payload: bytes) -> dict:
    """Strict JSON object: UTF-8, at most MAX_PAYLOAD bytes, no NaN/Infinity, every string clean."""
    if len(payload) > MAX_PAYLOAD:
        raise Rejected("too_big", f"{len(payload)} bytes")
    try:
        text = payload.decode("utf-8")
        obj = json.loads(text, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Rejected("bad_json", str(e)[:80]) from None
    if not isinstance(obj, dict):
        raise Rejected("bad_json", "not an object")
    _check_text(obj, 0)
    return obj


def _check_text(value, depth: int) -> None:
    """Every string (keys too) encodable as UTF-8, without control characters, bounded; nesting bounded."""
    if depth > 6:
        raise Rejected("bad_value", "nested too deep")
    if isinstance(value, str):
        if len(value) > MAX_TEXT or any(ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF or c == "\x7f" for c in value):
            raise Rejected("bad_text", repr(value[:40]))
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, depth + 1)
            _check_text(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_text(v, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise Rejected("bad_value", "not finite")


def utc_key(value, field: str, nullable: bool = False) -> str | None:
    """An ISO 8601 UTC time -> its canonical text "YYYY-MM-DDTHH:MM:SS.mmmZ" (the form the device sends)."""
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise Rejected("no_time" if value is None else "bad_type", field)
    m = UTC_RE.match(value)
    if not m:
        raise Rejected("bad_time", field)
    y, mo, d, h, mi, s, frac = m.groups()
    try:
        t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc)
    except ValueError:
        raise Rejected("bad_time", field) from None
    if not 2000 <= t.year <= 2200:
        raise Rejected("bad_time", field)
    ms = int((frac or "0").ljust(3, "0")[:3])
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def _int(rec: dict, key: str, lo: int = 0, hi: int = MAX_INT, nullable: bool = False) -> int | None:
    v = rec.get(key)
    if v is None and nullable:
        return None
    if type(v) is not int:
        raise Rejected("bad_type", key)
    if not lo <= v <= hi:
        raise Rejected("bad_value", key)
    return v


def _num(rec: dict, key: str, lo: float, hi: float, nullable: bool = False) -> float | None:
    v = rec.get(key)
    if v is None and nullable:
        return None
    if type(v) not in (int, float):
        raise Rejected("bad_type", key)
    if not lo <= v <= hi:
        raise Rejected("bad_value", key)
    return float(v)


def _db(rec: dict, key: str) -> float | None:
    return _num(rec, key, *DB_RANGE, nullable=True)


def _bool(rec: dict, key: str, nullable: bool = False) -> bool | None:
    v = rec.get(key)
    if v is None and nullable:
        return None
    if type(v) is not bool:
        raise Rejected("bad_type", key)
    return v


def _text(rec: dict, key: str, max_len: int = 64, nullable: bool = True) -> str | None:
    v = rec.get(key)
    if v is None and nullable:
        return None
    if not isinstance(v, str) or len(v) > max_len:
        raise Rejected("bad_type", key)
    return v


def _common(rec: dict, kind: str, site: str, device: str) -> dict:
    if rec.get("t") != kind:
        raise Rejected("wrong_kind", f"t={str(rec.get('t'))[:20]!r} on a {kind} topic")
    serial = rec.get("serial", device)
    if serial != device:  # a record that names another device than its topic's
        raise Rejected("wrong_device", str(serial)[:40])
    row = {"device": device, "site": site, "seq": _int(rec, "seq"), "ms": _int(rec, "ms"),
           "utc": utc_key(rec.get("utc"), "utc", nullable=True)}
    if kind in SIGNED:
        row["n"] = _int(rec, "n", 1, nullable=kind != "audit")
        row["mac"] = _text(rec, "mac", MAC_MAX)
    return row


def _payload_text(rec: dict) -> str:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=True)


def minute_row(rec: dict, row: dict) -> dict:
    row["start"] = utc_key(rec.get("start"), "start")
    row["local"] = _text(rec, "local", 5)
    if row["local"] is not None and not LOCAL_RE.match(row["local"]):
        raise Rejected("bad_value", "local")
    row["s"] = _num(rec, "s", 0, 60)
    for key in MINUTE_LEVELS:
        row[key.lower()] = _db(rec, key)
    row["overload"] = _bool(rec, "overload")
    row["band"] = _text(rec, "band", 16)
    row["limit_db"] = _num(rec, "limit", 20, 140, nullable=True)
    row["over"] = _bool(rec, "over", nullable=True)
    row["payload"] = _payload_text(rec)  # as received: what its MAC is checked against
    return row


def interval_row(rec: dict, row: dict) -> dict:
    if row["utc"] is None:
        raise Rejected("no_time", "utc")
    row["start_ms"] = _int(rec, "start_ms")
    row["end_ms"] = _int(rec, "end_ms")
    if row["end_ms"] < row["start_ms"]:
        raise Rejected("bad_value", "end_ms")
    for key in INTERVAL_LEVELS:
        row[key.lower()] = _db(rec, key)
    row["overload"] = _bool(rec, "overload")
    row["underrange"] = _bool(rec, "underrange")
    return row


EVENT_TIMES = {"exceedance_start": ("start",), "exceedance_end": ("start", "end"), "night_max": ("time",),
               "clock_step": ()}


def event_row(rec: dict, row: dict) -> dict:
    kind = rec.get("kind")
    if not isinstance(kind, str) or not EVENT_KIND_RE.match(kind):
        raise Rejected("bad_value", "kind")
    for key in EVENT_TIMES.get(kind, ()):
        utc_key(rec.get(key), key)
    for key in ("LAeq", "LAFmax"):
        _db(rec, key)
    _num(rec, "limit", 20, 140, nullable=True)
    _text(rec, "band", 16)
    if kind == "exceedance_end":
        _num(rec, "duration_s", 0, 10 ** 9)
        _int(rec, "minutes_over", 0, 10 ** 7)
        _bool(rec, "interrupted")
    if kind == "clock_step":
        utc_key(rec.get("from"), "from", nullable=True)
        utc_key(rec.get("to"), "to", nullable=True)
        _num(rec, "step_s", -1e10, 1e10)
    # The natural key: the episode's start, the night maximum's minute, else the record's own time.
    at = rec.get("start") if "start" in rec else rec.get("time") if "time" in rec else rec.get("utc")
    row["kind"] = kind
    row["at"] = utc_key(at, "start/time/utc")
    row["payload"] = _payload_text(rec)
    return row


def status_row(rec: dict, row: dict) -> dict:
    if row["utc"] is None:
        raise Rejected("no_time", "utc")
    for key in ("uptime_s", "heap_free", "blocks", "dropped", "late"):
        row[key] = _int(rec, key, nullable=True)
    faults = rec.get("faults", [])
    if not isinstance(faults, list) or len(faults) > 32 or not all(isinstance(f, str) and len(f) <= 40
                                                                   for f in faults):
        raise Rejected("bad_type", "faults")
    row["faults"] = ",".join(faults)
    row["payload"] = _payload_text(rec)
    return row


def hello_row(rec: dict, row: dict) -> dict:
    if rec.get("serial") != row["device"]:
        raise Rejected("wrong_device", f"serial {str(rec.get('serial'))[:40]!r}")
    row["serial"] = rec["serial"]
    row["proto"] = _int(rec, "proto", 1, 1000)
    row["fw"] = _text(rec, "fw")
    row["board"] = _text(rec, "board")
    row["mic"] = _text(rec, "mic")
    row["rate"] = _int(rec, "rate", 1, 10 ** 6, nullable=True)
    row["key_id"] = _text(rec, "key_id", 16)
    for key in ("cal", "config"):
        if not isinstance(rec.get(key, {}), dict):
            raise Rejected("bad_type", key)
    row["hello"] = _payload_text(rec)
    return row


AUDIT_WHAT_RE = re.compile(r"[a-z_]{1,32}\Z")


def audit_row(rec: dict, row: dict) -> dict:
    what = rec.get("what")
    if not isinstance(what, str) or not AUDIT_WHAT_RE.match(what):
        raise Rejected("bad_value", "what")
    row["what"] = what
    row["payload"] = _payload_text(rec)
    return row


ROW_OF = {"minute": minute_row, "interval": interval_row, "event": event_row, "status": status_row,
          "hello": hello_row, "audit": audit_row}


def validate(topic: str, payload: bytes) -> tuple[str, dict]:
    """(kind, row) of a valid message; kind "offline" for a device's last will. Raises Rejected."""
    site, device, kind = parse_topic(topic)
    rec = parse_payload(payload)
    if kind == "status" and rec == OFFLINE:
        return "offline", {"device": device, "site": site}
    row = _common(rec, kind, site, device)
    return kind, ROW_OF[kind](rec, row)
