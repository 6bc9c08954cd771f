"""What `slm serve` reads from the collector's database (host/fleet_db.py's schema), read-only: the sites, each
site's meters with their newest interval (the live level), newest minute (the level judged, the limit in force) and
newest status (faults), and the last hour of minutes for the charts.

The connection is opened read-only (SQLite ``mode=ro``; PostgreSQL ``default_transaction_read_only``), so the web
server can never change what `slm collect` stored. Newest rows are fetched per device through the tables' natural
keys ((device, utc) and (device, start)), one index probe each, so a query costs the same however long the database
has been collecting."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

from slm.errors import InputError, OperationError
from slm.fleet_db import database_errors

SQLITE_MAGIC = b"SQLite format 3\x00"
HISTORY_MINUTES = 60  # the chart: the last hour of minutes


class ServeDbError(InputError):
    """The database given to `slm serve` is missing or is not one of `slm collect`: exit 2."""


class ServeDbUnavailable(OperationError):
    """A query failed while serving (a PostgreSQL server gone, a locked file): the request gets a 503."""


def utc_text(t: dt.datetime) -> str:
    """The canonical UTC text of the fleet database ("YYYY-MM-DDTHH:MM:SS.mmmZ")."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_utc(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def _connect(url: str):
    """(connection, parameter mark), read-only; ServeDbError for what is not a collector database."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        try:
            conn = psycopg.connect(url, connect_timeout=10, autocommit=True,
                                   options="-c default_transaction_read_only=on")
        except psycopg.Error as e:
            raise OperationError(f"--db {url.split('@')[-1]}: PostgreSQL: {str(e).strip().splitlines()[0]}") \
                from None
        return conn, "%s"
    import sqlite3

    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///"):]
    elif "://" in url:
        raise ServeDbError(f"--db {url}: give a SQLite file or a postgresql:// URL")
    path = Path(url)
    if not path.is_file():
        raise ServeDbError(f"--db {url}: no such database file")
    with open(path, "rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise ServeDbError(f"--db {url}: not a SQLite database")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, check_same_thread=False,
                               isolation_level=None)  # autocommit: each query sees what the collector committed
    except sqlite3.Error as e:
        raise ServeDbError(f"--db {url}: cannot open the database ({e})") from None
    return conn, "?"


def _bool(v: Any) -> bool | None:
    return None if v is None else bool(v)


class FleetReader:
    """Read-only queries over one collector database; thread-safe (one connection, one query at a time)."""

    def __init__(self, url: str):
        self.url = url
        self.conn, self.mark = _connect(url)
        self._lock = threading.Lock()
        self._errors = database_errors()
        try:
            self._query("SELECT count(*) FROM devices WHERE 1 = 0")
            for table in ("minutes", "intervals", "statuses"):
                self._query(f"SELECT count(*) FROM {table} WHERE 1 = 0")
        except ServeDbUnavailable as e:
            self.close()
            raise ServeDbError(f"--db {url.split('@')[-1]}: not a database of `slm collect` ({e})") from None

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self.mark != "?":
            sql = sql.replace("?", self.mark)
        with self._lock:
            try:
                if self.conn is None:  # a PostgreSQL connection lost earlier: connect again
                    self.conn, _ = _connect(self.url)
                return self.conn.execute(sql, params).fetchall()
            except self._errors as e:
                if self.mark != "?" and self.conn is not None and self.conn.closed:
                    self.conn = None  # the server went away; the next query reconnects
                text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ServeDbUnavailable(f"the database: {text}") from None

    def close(self) -> None:
        try:
            if self.conn is not None:
                self.conn.close()
        except self._errors:
            pass

    # -- what the pages show -----------------------------------------------------------------------------------
    def sites(self) -> list[tuple[str, int]]:
        """(site, number of devices), by name."""
        return [(s, n) for s, n in self._query("SELECT site, count(*) FROM devices WHERE site IS NOT NULL "
                                               "GROUP BY site ORDER BY site")]

    def devices(self, site: str) -> list[dict]:
        rows = self._query("SELECT device, online, last_seen, offline_at FROM devices WHERE site = ? "
                           "ORDER BY device", (site,))
        return [{"device": d, "online": _bool(online), "last_seen": seen, "offline_at": off}
                for d, online, seen, off in rows]

    def _newest(self, table: str, order: str, columns: list[str], devices: list[str]) -> dict[str, dict]:
        """The newest row of each device in `table` (by its key column `order`), as dicts of `columns`."""
        out: dict[str, dict] = {}
        cols = ", ".join(["device"] + columns)
        for i in range(0, len(devices), 200):  # bounded statements (SQLite allows 999+ parameters, PG 65535)
            chunk = devices[i:i + 200]
            parts = [f"SELECT * FROM (SELECT {cols} FROM {table} WHERE device = ? ORDER BY {order} DESC LIMIT 1) "
                     f"AS n{k}" for k in range(len(chunk))]
            for row in self._query(" UNION ALL ".join(parts), tuple(chunk)):
                out[row[0]] = dict(zip(columns, row[1:]))
        return out

    def newest(self, devices: list[str]) -> tuple[dict, dict, dict]:
        """(newest interval, newest minute, newest status) per device."""
        intervals = self._newest("intervals", "utc", ["utc", "laeq", "lafmax", "overload"], devices)
        minutes = self._newest("minutes", "start", ["start", "local", "s", "laeq", "lafmax", "overload", "band",
                                                    "limit_db", "over"], devices)
        statuses = self._newest("statuses", "utc", ["utc", "faults"], devices)
        return intervals, minutes, statuses

    def history(self, site: str, devices: list[str], end: dt.datetime) -> dict[str, list[dict]]:
        """The minutes of the site's devices that start in the hour before `end` (UTC), per device, in order."""
        since = utc_text(end - dt.timedelta(minutes=HISTORY_MINUTES))
        wanted = set(devices)
        out: dict[str, list[dict]] = {d: [] for d in devices}
        rows = self._query("SELECT device, start, laeq, limit_db, band, over, overload FROM minutes "
                           "WHERE start >= ? AND site = ? ORDER BY device, start", (since, site))
        for device, start, laeq, limit, band, over, overload in rows:
            if device in wanted:
                out[device].append({"start": start, "laeq": laeq, "limit": limit, "band": band, "over": _bool(over),
                                    "overload": _bool(overload)})
        return out
