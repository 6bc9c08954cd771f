"""The fleet database of `slm collect`: one schema, stored in SQLite (a file, WAL; the embedded default) or
PostgreSQL (`postgresql://...`, psycopg 3), through one thin layer: the SQL is the same, only the connection, the
parameter marks and the id column differ.

Rows are inserted with their natural key (`INSERT ... ON CONFLICT DO NOTHING`), so a record sent twice (a replay, a
store-and-forward resend, a retained message seen again) is stored once and counted as a duplicate."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from slm.errors import InputError, OperationError

T, I, F, B = "TEXT", "BIGINT", "DOUBLE PRECISION", "BOOLEAN"
LEVEL = F

# table: ([(column, type)], natural key)
TABLES: dict[str, tuple[list[tuple[str, str]], tuple[str, ...]]] = {
    "devices": ([("device", T), ("site", T), ("serial", T), ("proto", I), ("fw", T), ("board", T), ("mic", T),
                 ("rate", I), ("hello", T), ("first_seen", T), ("last_seen", T), ("online", B), ("offline_at", T),
                 ("key_id", T)],
                ("device",)),
    "minutes": ([("device", T), ("start", T), ("site", T), ("seq", I), ("ms", I), ("utc", T), ("local", T),
                 ("s", F), ("laeq", LEVEL), ("lafmax", LEVEL), ("la10", LEVEL), ("la50", LEVEL), ("la90", LEVEL),
                 ("lcpeak", LEVEL), ("overload", B), ("band", T), ("limit_db", F), ("over", B), ("received", T),
                 ("n", I), ("mac", T), ("verified", I), ("payload", T), ("lafmin", LEVEL)],
                ("device", "start")),
    "intervals": ([("device", T), ("utc", T), ("site", T), ("seq", I), ("ms", I), ("start_ms", I), ("end_ms", I)]
                  + [(k, LEVEL) for k in ("laeq", "lceq", "lzeq", "lafmax", "lafmin", "lasmax", "lasmin", "lcpeak",
                                          "lzpeak", "lae", "la10", "la50", "la90")]
                  + [("overload", B), ("underrange", B), ("received", T)],
                  ("device", "utc")),
    "events": ([("device", T), ("kind", T), ("at", T), ("site", T), ("seq", I), ("ms", I), ("utc", T),
                ("payload", T), ("received", T), ("n", I), ("mac", T), ("verified", I)],
               ("device", "kind", "at")),
    "audits": ([("device", T), ("n", I), ("ms", I), ("site", T), ("seq", I), ("utc", T), ("what", T), ("payload", T),
                ("received", T), ("mac", T), ("verified", I)],
               ("device", "n", "ms")),
    "statuses": ([("device", T), ("utc", T), ("site", T), ("seq", I), ("ms", I), ("uptime_s", I), ("heap_free", I),
                  ("blocks", I), ("dropped", I), ("late", I), ("faults", T), ("payload", T), ("received", T)],
                 ("device", "utc")),
    "rejected": ([("id", "{id}"), ("received", T), ("topic", T), ("reason", T), ("size", I), ("payload", T)], ()),
}
TABLE_OF_KIND = {"minute": "minutes", "interval": "intervals", "event": "events", "status": "statuses",
                 "audit": "audits"}
# `verified` of a signed record (minutes, events, audits): 1 its MAC is right (checked against the record before it
# in its chain), 0 it is wrong, NULL not checked (unsigned, no key given to the collector, or its predecessor has not
# arrived). Nothing is ever dropped for failing: docs/verifying.md.
KEEP_REJECTED_BYTES = 1024  # of a rejected payload, kept for a person to look at
KEEP_REJECTED_ROWS = 100_000  # the newest rejected messages kept (~130 MB at most); the counts stay exact


class FleetDbError(OperationError):
    """The database could not be opened or written."""


def _ddl(dialect_id: str) -> list[str]:
    out = []
    for table, (columns, key) in TABLES.items():
        cols = [f"{name} {kind.format(id=dialect_id)}" for name, kind in columns]
        if key:
            cols.append(f"PRIMARY KEY ({', '.join(key)})")
        out.append(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})")
    out.append("CREATE INDEX IF NOT EXISTS minutes_start ON minutes (start)")
    out += [f"CREATE INDEX IF NOT EXISTS {t}_chain ON {t} (device, n)" for t in ("minutes", "events")]
    out.append("CREATE INDEX IF NOT EXISTS rejected_reason ON rejected (reason)")
    return out


def printable(data: bytes | str, limit: int = KEEP_REJECTED_BYTES) -> str:
    """Any bytes as text every database stores: UTF-8 where it is, backslash escapes elsewhere, no NUL."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    text = data[:limit].decode("utf-8", "backslashreplace")
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class FleetDb:
    """The common layer; `open_db` gives the SQLite or PostgreSQL one. Writes go into an open transaction that
    `commit` ends."""

    mark = "?"
    id_column = ""

    def __init__(self, conn, where: str):
        self.conn = conn
        self.where = where
        if not self._has_schema():  # DDL only once: it would lock the tables a running collector writes
            for statement in _ddl(self.id_column):
                self.conn.execute(statement)
        else:
            self._upgrade()
        self.conn.commit()

    def _columns(self, table: str) -> list[str] | None:
        try:
            cur = self.conn.execute(f"SELECT * FROM {table} WHERE 1 = 0")
            cur.fetchall()
            return [d[0] for d in cur.description]
        except database_errors():
            self.conn.rollback()
            return None

    def _upgrade(self) -> None:
        """A database of an earlier collector: add the tables and columns it lacks (nothing else changes)."""
        statements = []
        ddl = _ddl(self.id_column)
        for table, (columns, _) in TABLES.items():
            have = self._columns(table)
            if have is None:
                statements += [s for s in ddl if s.startswith(f"CREATE TABLE IF NOT EXISTS {table} ")]
            else:
                statements += [f"ALTER TABLE {table} ADD COLUMN {name} {kind}" for name, kind in columns
                               if name not in have]
        if statements:
            statements += [s for s in ddl if s.startswith("CREATE INDEX")]
        for statement in statements:
            self.conn.execute(statement)

    def _has_schema(self) -> bool:
        try:
            self.conn.execute("SELECT count(*) FROM rejected WHERE 1 = 0").fetchall()
            return True
        except database_errors():
            self.conn.rollback()
            return False

    def _sql(self, sql: str) -> str:
        return sql if self.mark == "?" else sql.replace("?", self.mark)

    def execute(self, sql: str, params: tuple = ()):
        return self.conn.execute(self._sql(sql), params)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        rows = self.execute(sql, params).fetchall()
        self.conn.commit()  # a reader ends its transaction, so that it sees what the collector writes next
        return rows

    def insert(self, table: str, row: dict) -> bool:
        """Insert a row unless its natural key is stored already; True when stored."""
        names = list(row)
        sql = (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
               "ON CONFLICT DO NOTHING")
        return self.execute(sql, tuple(row[n] for n in names)).rowcount == 1

    def insert_many(self, table: str, rows: list[dict]) -> list[bool]:
        """`insert` for many rows (all with the same columns); which were stored."""
        return [self.insert(table, row) for row in rows]

    def seen_many(self, devices: list[tuple[str, str, str]]) -> None:
        """Many (device, site, when) heard from (no hello)."""
        if devices:
            self.conn.cursor().executemany(self._sql(self._seen_sql(["device", "site", "first_seen", "last_seen", "online",
                                                            "offline_at"])),
                                  [(d, s, w, w, True, None) for d, s, w in devices])

    def reject_many(self, rejects: list[tuple[str, str, str, bytes]]) -> None:
        """Many (when, topic, reason, payload) kept aside."""
        if rejects:
            self.conn.cursor().executemany(
                self._sql("INSERT INTO rejected (received, topic, reason, size, payload) VALUES (?, ?, ?, ?, ?)"),
                [(w, printable(t, 300), r, len(p), printable(p)) for w, t, r, p in rejects])
            # the table keeps the newest KEEP_REJECTED_ROWS (ids only grow): a flood cannot fill the disk
            self.execute("DELETE FROM rejected WHERE id <= (SELECT max(id) FROM rejected) - ?",
                         (KEEP_REJECTED_ROWS,))

    @staticmethod
    def _seen_sql(names: list[str]) -> str:
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in ("device", "first_seen"))
        return (f"INSERT INTO devices ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
                f"ON CONFLICT (device) DO UPDATE SET {updates}")

    def seen(self, device: str, site: str, when: str, hello: dict | None = None) -> None:
        """A device was heard from: create or update its row (and its hello fields, when given)."""
        row = {"device": device, "site": site, "first_seen": when, "last_seen": when, "online": True,
               "offline_at": None}
        if hello:
            row.update({k: hello[k] for k in ("serial", "proto", "fw", "board", "mic", "rate", "hello", "key_id")})
        names = list(row)
        self.execute(self._seen_sql(names), tuple(row[n] for n in names))

    def offline(self, device: str, site: str, when: str) -> None:
        """The broker published a device's last will."""
        self.execute("INSERT INTO devices (device, site, first_seen, last_seen, online, offline_at) "
                     "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET online = excluded.online, "
                     "offline_at = excluded.offline_at", (device, site, when, when, False, when))

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        try:
            self.conn.commit()
        finally:
            self.conn.close()


class SqliteFleetDb(FleetDb):
    id_column = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: str):
        p = Path(path)
        if p.is_dir():
            raise InputError(f"--db {path}: is a folder, not a database file")
        if not p.parent.is_dir():
            raise InputError(f"--db {path}: folder {p.parent} does not exist")
        try:
            conn = sqlite3.connect(str(p), timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a power cut loses at most the last commits, never the file
            super().__init__(conn, str(p))
        except sqlite3.DatabaseError as e:
            raise FleetDbError(f"--db {path}: {e}") from None


class PostgresFleetDb(FleetDb):
    mark = "%s"
    id_column = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"

    def __init__(self, url: str):
        import psycopg

        try:
            conn = psycopg.connect(url, connect_timeout=10)
            super().__init__(conn, url.split("@")[-1])
        except psycopg.Error as e:
            raise FleetDbError(f"--db: PostgreSQL: {str(e).strip().splitlines()[0] if str(e).strip() else e}") \
                from None

    def _sql(self, sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def insert_many(self, table: str, rows: list[dict]) -> list[bool]:
        """One pipelined round trip for the batch (psycopg's executemany), RETURNING tells which rows were new."""
        if not rows:
            return []
        names = list(rows[0])
        sql = (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
               "ON CONFLICT DO NOTHING RETURNING 1")
        cur = self.conn.cursor()
        cur.executemany(self._sql(sql), [tuple(row[n] for n in names) for row in rows], returning=True)
        stored = []
        while True:
            stored.append(cur.fetchone() is not None)
            if not cur.nextset():
                break
        return stored


def database_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a write can raise, for both engines (psycopg only if it is installed)."""
    errors: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(errors)


def open_db(url: str) -> FleetDb:
    """`postgresql://...` (or `postgres://...`) -> PostgreSQL; anything else is a SQLite file path
    (`sqlite:///path` also accepted)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresFleetDb(url)
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///"):] or "fleet.sqlite"
    elif "://" in url:
        raise InputError(f"--db {url}: give a SQLite file or a postgresql:// URL")
    return SqliteFleetDb(url)
