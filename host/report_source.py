"""The records `slm report` reads, from any of its three sources, as the same rows: `Minute`s and `Event`s.

A source is a collector database (a SQLite file or a ``postgresql://`` URL, host/fleet_db.py), a folder written by
`slm pull` (minutes.csv, events.jsonl, device.json; host/pull.py) or a monitor log (``slm monitor --log``, .csv or
.jsonl; host/record_log.py). Each has one small reader; all give minutes sorted by (device, start), one per
(device, start) (a record stored twice is read once), and events of the kinds the report uses. Minutes without a
clock time (``start`` null: the clock was unset) cannot be placed and are counted in ``Records.untimed``.

Each minute and event carries its verification state (docs/verifying.md): ``valid`` / ``failed`` as the collector
marked it on arrival (a database) or as `slm verify` finds it when the report is given the keys (``apply_verify``),
``unsigned`` (no MAC), or ``unchecked``. The audit trail's records (``audits``) give the calibration in force.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from slm.errors import InputError, OperationError
from slm.utc import utc_time

LEVELS = ("LAeq", "LAFmax", "LA10", "LA50", "LA90", "LCpeak")
EVENT_KINDS = ("exceedance_start", "exceedance_end", "night_max")
SQLITE_MAGIC = b"SQLite format 3\x00"


class ReportSourceError(InputError):
    """The source is missing, of an unknown kind or not readable as one: exit 2."""


@dataclass(frozen=True)
class Minute:
    device: str
    site: str | None
    start: dt.datetime  # UTC, the minute's start
    local: dt.datetime  # the same instant on the device's local clock (naive)
    s: float  # seconds of audio in it
    LAeq: float | None
    LAFmax: float | None
    LA10: float | None
    LA50: float | None
    LA90: float | None
    LCpeak: float | None
    overload: bool
    band: str | None
    limit: float | None
    n: int | None = None  # its number in the device's minute chain
    state: str = "unchecked"  # valid, failed, unsigned, unchecked (see the module's docstring)

    @property
    def valid(self) -> bool:
        """Data that counts: a level, some audio, no overload."""
        return self.LAeq is not None and self.s > 0 and not self.overload


@dataclass(frozen=True)
class Event:
    device: str
    kind: str
    fields: dict[str, Any]  # the record as the device sent it


@dataclass
class Records:
    source: str
    kind: str  # "database", "pull" or "log"
    minutes: list[Minute] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    untimed: int = 0
    offsets: dict[str, dt.timedelta] = field(default_factory=dict)  # device -> local time minus UTC
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> its last hello's `cal`
    audits: list[Event] = field(default_factory=list)  # the audit trail: kind is the entry's `what`
    checked: str = "none"  # how the states were found: "keys" (slm verify), "collector" (its marks) or "none"


def local_offset(start: dt.datetime, local_hhmm: str) -> dt.timedelta:
    """The device's UTC offset from a minute's UTC start and its local HH:MM (-10:00 to +14:00)."""
    h, m = local_hhmm.split(":")
    diff = (int(h) * 60 + int(m) - (start.hour * 60 + start.minute)) % 1440
    return dt.timedelta(minutes=diff - 1440 if diff > 840 else diff)


def _num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    return float(v)


def _bool(v: Any) -> bool:
    return v is True or v == "true" or v == 1 or v == "1" or v == "t"


def _int(v: Any) -> int | None:
    try:
        return None if v is None or v == "" or isinstance(v, bool) else int(v)
    except (TypeError, ValueError):
        return None


def _state(rec: dict[str, Any], verified: Any = None) -> str:
    """A record's state before any check of its own: the collector's mark, else unsigned or unchecked."""
    if not rec.get("mac"):
        return "unsigned"
    return "valid" if verified == 1 else "failed" if verified == 0 else "unchecked"


class _Builder:
    """Collects raw records into `Records`, one row per (device, start), whatever the source."""

    def __init__(self, source: str, kind: str):
        self.records = Records(source, kind)
        self._minutes: dict[tuple[str, dt.datetime], Minute] = {}
        self._events: dict[tuple[str, str, str], Event] = {}

    def minute(self, device: str, site: str | None, rec: dict[str, Any], verified: Any = None) -> None:
        start_text, local_text = rec.get("start"), rec.get("local")
        if not start_text or not local_text:
            self.records.untimed += 1
            return
        start = utc_time(start_text)
        offset = local_offset(start, local_text)
        self.records.offsets[device] = offset
        limit = rec.get("limit", rec.get("limit_db"))
        levels = {k: _num(rec.get(k)) for k in LEVELS}
        m = Minute(device, site or None, start, (start + offset).replace(tzinfo=None), _num(rec.get("s")) or 0.0,
                   levels["LAeq"], levels["LAFmax"], levels["LA10"], levels["LA50"], levels["LA90"], levels["LCpeak"],
                   _bool(rec.get("overload")), rec.get("band") or None, _num(limit), _int(rec.get("n")),
                   _state(rec, verified))
        self._minutes.setdefault((device, start), m)

    def event(self, device: str, rec: dict[str, Any], verified: Any = None) -> None:
        kind = rec.get("kind")
        if kind not in EVENT_KINDS:
            return
        at = rec.get("start") or rec.get("time") or rec.get("utc") or ""
        self._events.setdefault((device, kind, at), Event(device, kind, dict(rec, _state=_state(rec, verified))))

    def audit(self, device: str, rec: dict[str, Any], verified: Any = None) -> None:
        if isinstance(rec.get("what"), str):
            self.records.audits.append(Event(device, rec["what"], dict(rec, _state=_state(rec, verified))))

    def done(self) -> Records:
        self.records.minutes = sorted(self._minutes.values(), key=lambda m: (m.device, m.start))
        self.records.events = sorted(self._events.values(),
                                     key=lambda e: (e.device, e.fields.get("start") or e.fields.get("time") or ""))
        self.records.audits.sort(key=lambda e: (e.device, e.fields.get("utc") or ""))
        return self.records


def apply_verify(records: Records, source: str, keys_dir: str) -> None:
    """Give every minute and event the state `slm verify` finds for it with the devices' keys."""
    from slm.verify import verify

    result = verify([source], keys_dir)
    states = {(c.device, c.kind): c.states for c in result.chains}
    records.minutes = [replace(m, state=states.get((m.device, "minute"), {}).get(m.n, m.state) if m.n else m.state)
                       for m in records.minutes]
    for group in (records.events, records.audits):
        for e in group:
            n = _int(e.fields.get("n"))
            kind = "audit" if group is records.audits else "event"
            if n is not None:
                e.fields["_state"] = states.get((e.device, kind), {}).get(n, e.fields["_state"])
    records.checked = "keys"


def _columns(conn, table: str) -> set[str]:
    try:
        cur = conn.execute(f"SELECT * FROM {table} WHERE 1 = 0")
        cur.fetchall()
        return {d[0] for d in cur.description}
    except Exception:  # a table an earlier collector did not make
        conn.rollback()
        return set()


def connect_read_only(url: str):
    """(connection, parameter mark) of a collector database, opened read-only: a report never writes, not even the
    schema that `slm collect` would create in a file that lacks it."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        try:
            conn = psycopg.connect(url, connect_timeout=10, options="-c default_transaction_read_only=on")
        except psycopg.Error as e:
            raise OperationError(f"{url.split('@')[-1]}: PostgreSQL: {str(e).strip().splitlines()[0]}") from None
        return conn, "%s"
    import sqlite3

    path = Path(url[len("sqlite:///"):] if url.startswith("sqlite:///") else url)
    if not path.is_file():
        raise ReportSourceError(f"{url}: no such database file")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30), "?"
    except sqlite3.Error as e:
        raise ReportSourceError(f"{url}: cannot open the database ({e})") from None


def read_database(url: str, site: str | None, utc_from: str | None = None, utc_to: str | None = None) -> Records:
    """The minutes and events of a collector database (optionally of one site, and of minutes whose UTC start is
    in [utc_from, utc_to): canonical "YYYY-MM-DDTHH:MM:SS.mmmZ" texts compare in time order)."""
    from slm.fleet_db import database_errors

    conn, mark = connect_read_only(url)
    b = _Builder(url, "database")
    where, params = ["1 = 1"], []
    if site:
        where.append(f"site = {mark}")
        params.append(site)
    minute_where, minute_params = list(where), list(params)
    for op, value in ((">=", utc_from), ("<", utc_to)):
        if value:
            minute_where.append(f"start {op} {mark}")
            minute_params.append(value)
    try:
        signed = "verified" in _columns(conn, "minutes")  # a database of a collector that keeps n, mac, verified
        extra = ["n", "mac", "verified"] if signed else []
        cols = ["device", "site", "start", "local", "s", "laeq", "lafmax", "la10", "la50", "la90", "lcpeak",
                "overload", "band", "limit_db"] + extra
        rows = conn.execute(f"SELECT {', '.join(cols)} FROM minutes WHERE {' AND '.join(minute_where)} "
                            "ORDER BY device, start", tuple(minute_params)).fetchall()
        for row in rows:
            r = dict(zip(cols, row))
            rec = {"start": r["start"], "local": r["local"], "s": r["s"], "overload": r["overload"],
                   "band": r["band"], "limit": r["limit_db"], "n": r.get("n"), "mac": r.get("mac"),
                   **{k: r[k.lower()] for k in LEVELS}}
            b.minute(r["device"], r["site"], rec, r.get("verified"))
        for row in conn.execute(f"SELECT device, payload{', verified' if signed else ''} FROM events WHERE "
                                f"{' AND '.join(where)} ORDER BY device, at", tuple(params)).fetchall():
            b.event(row[0], json.loads(row[1]), row[2] if signed else None)
        if signed and _columns(conn, "audits"):
            for device, payload, verified in conn.execute(
                    f"SELECT device, payload, verified FROM audits WHERE {' AND '.join(where)} ORDER BY device, n",
                    tuple(params)).fetchall():
                b.audit(device, json.loads(payload), verified)
            b.records.checked = "collector"
        for device, hello in conn.execute(f"SELECT device, hello FROM devices WHERE {' AND '.join(where)} "
                                          "AND hello IS NOT NULL", tuple(params)).fetchall():
            cal = json.loads(hello).get("cal")
            if isinstance(cal, dict):
                b.records.calibration[device] = cal
    except database_errors() as e:
        raise ReportSourceError(f"{url}: not a database of `slm collect` ({str(e).strip().splitlines()[0]})") \
            from None
    finally:
        conn.close()
    return b.done()


def read_pull_folder(folder: Path, site: str | None) -> Records:
    from slm.pull import AUDIT_FILE, DEVICE_FILE, EVENTS_FILE, MINUTE_COLUMNS, MINUTE_COLUMNS_UNSIGNED, MINUTES_FILE

    b = _Builder(str(folder), "pull")
    try:
        device = json.loads((folder / DEVICE_FILE).read_text())["serial"] if (folder / DEVICE_FILE).exists() \
            else folder.name
        with open(folder / MINUTES_FILE, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames not in (MINUTE_COLUMNS, MINUTE_COLUMNS_UNSIGNED):
                raise ReportSourceError(f"{folder / MINUTES_FILE}: not a minutes file of `slm pull`")
            for rec in reader:
                b.minute(device, site, rec)
        for name, take in ((EVENTS_FILE, b.event), (AUDIT_FILE, b.audit)):
            if (folder / name).exists():
                for line in (folder / name).read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        take(device, json.loads(line))
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ReportSourceError(f"{folder}: not a folder of `slm pull` ({e})") from None
    return b.done()


def _log_rows(path: Path) -> Iterable[dict[str, Any]]:
    from slm.record_log import CSV_COLUMNS

    with open(path, newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
                raise ReportSourceError(f"{path}: not a log of `slm monitor --log` (other columns)")
            yield from reader
        else:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def read_monitor_log(path: Path, site: str | None) -> Records:
    from slm.verify import log_serial

    b = _Builder(str(path), "log")
    serial_of_port: dict[str, str] = {}
    try:
        for rec in _log_rows(path):
            named = log_serial(rec) if path.suffix.lower() == ".jsonl" else None
            if named is not None:
                serial_of_port[str(rec.get("port"))] = named
            device = rec.get("serial") or serial_of_port.get(str(rec.get("port"))) or rec.get("port") or path.stem
            if rec.get("t") == "minute":
                b.minute(device, site, rec)
            elif rec.get("t") == "event":
                b.event(device, {k: v for k, v in rec.items() if v not in ("", None)})
            elif rec.get("t") == "audit":
                b.audit(device, rec)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise ReportSourceError(f"{path}: not a log of `slm monitor --log` ({e})") from None
    return b.done()


def read_source(source: str, site: str | None = None, utc_from: str | None = None,
                utc_to: str | None = None) -> Records:
    """The records of SOURCE (see the module's docstring); ``site`` selects a site of a database, and names the site
    of a pulled folder or a log (their records do not carry one). A database is asked only for the minutes that
    start in [utc_from, utc_to) (the other sources are read whole)."""
    if source.startswith(("postgresql://", "postgres://", "sqlite:///")):
        return read_database(source, site, utc_from, utc_to)
    path = Path(source)
    if "://" in source:
        raise ReportSourceError(f"{source}: give a SQLite file, a postgresql:// URL, a folder of `slm pull` or a "
                                "monitor log (.csv, .jsonl)")
    if not path.exists():
        raise ReportSourceError(f"{source}: no such file or folder")
    if path.is_dir():
        from slm.pull import MINUTES_FILE

        if not (path / MINUTES_FILE).is_file():
            raise ReportSourceError(f"{source}: a folder without {MINUTES_FILE}: not a folder of `slm pull`")
        return read_pull_folder(path, site)
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        return read_database(source, site, utc_from, utc_to)
    if path.suffix.lower() in (".csv", ".jsonl"):
        return read_monitor_log(path, site)
    raise ReportSourceError(f"{source}: unknown kind of source: give a SQLite file, a postgresql:// URL, a folder of "
                            "`slm pull` or a monitor log (.csv, .jsonl)")
