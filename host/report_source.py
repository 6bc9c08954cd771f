"""The records `slm report` reads, from any of its three sources, as the same rows: `Minute`s and `Event`s.

A source is a collector database (a SQLite file or a ``postgresql://`` URL, host/fleet_db.py), a folder written by
`slm pull` (minutes.csv, events.jsonl, device.json; host/pull.py) or a monitor log (``slm monitor --log``, .csv or
.jsonl; host/record_log.py). Each has one small reader; all give minutes sorted by (device, start), one per
(device, start) (a record stored twice is read once), and events of the kinds the report uses. Minutes without a
clock time (``start`` null: the clock was unset) cannot be placed and are counted in ``Records.untimed``.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass, field
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


class _Builder:
    """Collects raw records into `Records`, one row per (device, start), whatever the source."""

    def __init__(self, source: str, kind: str):
        self.records = Records(source, kind)
        self._minutes: dict[tuple[str, dt.datetime], Minute] = {}
        self._events: dict[tuple[str, str, str], Event] = {}

    def minute(self, device: str, site: str | None, rec: dict[str, Any]) -> None:
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
                   _bool(rec.get("overload")), rec.get("band") or None, _num(limit))
        self._minutes.setdefault((device, start), m)

    def event(self, device: str, rec: dict[str, Any]) -> None:
        kind = rec.get("kind")
        if kind not in EVENT_KINDS:
            return
        at = rec.get("start") or rec.get("time") or rec.get("utc") or ""
        self._events.setdefault((device, kind, at), Event(device, kind, dict(rec)))

    def done(self) -> Records:
        self.records.minutes = sorted(self._minutes.values(), key=lambda m: (m.device, m.start))
        self.records.events = sorted(self._events.values(),
                                     key=lambda e: (e.device, e.fields.get("start") or e.fields.get("time") or ""))
        return self.records


def _connect_read_only(url: str):
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

    conn, mark = _connect_read_only(url)
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
        cols = ["device", "site", "start", "local", "s", "laeq", "lafmax", "la10", "la50", "la90", "lcpeak",
                "overload", "band", "limit_db"]
        rows = conn.execute(f"SELECT {', '.join(cols)} FROM minutes WHERE {' AND '.join(minute_where)} "
                            "ORDER BY device, start", tuple(minute_params)).fetchall()
        for row in rows:
            r = dict(zip(cols, row))
            rec = {"start": r["start"], "local": r["local"], "s": r["s"], "overload": r["overload"],
                   "band": r["band"], "limit": r["limit_db"], **{k: r[k.lower()] for k in LEVELS}}
            b.minute(r["device"], r["site"], rec)
        for device, payload in conn.execute(f"SELECT device, payload FROM events WHERE {' AND '.join(where)} "
                                            "ORDER BY device, at", tuple(params)).fetchall():
            b.event(device, json.loads(payload))
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
    from slm.pull import DEVICE_FILE, EVENTS_FILE, MINUTE_COLUMNS, MINUTES_FILE

    b = _Builder(str(folder), "pull")
    try:
        device = json.loads((folder / DEVICE_FILE).read_text())["serial"] if (folder / DEVICE_FILE).exists() \
            else folder.name
        with open(folder / MINUTES_FILE, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != MINUTE_COLUMNS:
                raise ReportSourceError(f"{folder / MINUTES_FILE}: not a minutes file of `slm pull`")
            for rec in reader:
                b.minute(device, site, rec)
        events = folder / EVENTS_FILE
        if events.exists():
            for line in events.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    b.event(device, json.loads(line))
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
    b = _Builder(str(path), "log")
    try:
        for rec in _log_rows(path):
            device = rec.get("serial") or rec.get("port") or path.stem
            if rec.get("t") == "minute":
                b.minute(device, site, rec)
            elif rec.get("t") == "event":
                b.event(device, {k: v for k, v in rec.items() if v not in ("", None)})
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
