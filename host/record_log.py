"""The monitor's record log (``RecordLog``): every record with the host time it arrived, to CSV or JSON lines.

``FILE.jsonl``: one JSON object a line, the record plus ``host_time`` and ``port``. ``FILE.csv``: a fixed set of
columns, ``CSV_COLUMNS``. ``host_time`` is when the record arrived, except for records marked ``buffered``: the
device sent them while no host listened (before the port was opened) and they arrived together when it was; their
``host_time`` is derived from the device time (``slm.monitor`` says how). Link state changes are logged too, as
rows with ``t`` = ``"link"`` and a ``state`` (they have no ``seq``/``ms``: the host made them, not the device).
The file is appended to, written a whole line per ``write`` call, flushed about once a second, and flushed and
closed on exit, also on Ctrl-C: it always ends with a whole line.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import time
from pathlib import Path
from typing import Any


def iso_time(wall: float) -> str:
    """Host time as ISO-8601 local time with its offset, to the millisecond."""
    return datetime.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")


CSV_COLUMNS: tuple[str, ...] = (
    "host_time", "port", "serial", "t", "seq", "ms", "utc",
    # level
    "LAF", "LAS", "LAeq", "LCpeak", "overload",
    # interval
    "start_ms", "end_ms", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax", "LASmin", "LZpeak", "LAE",
    "LA10", "LA50", "LA90", "underrange",
    # minute (and the start of an episode)
    "start", "local", "s", "band", "limit", "over",
    # status
    "uptime_s", "heap_free", "blocks", "dropped", "late", "faults", "lmax", "lmax_ms",
    # event: exceedance_start / exceedance_end / night_max / clock_step
    "kind", "end", "duration_s", "minutes_over", "interrupted", "time", "from", "to", "step_s",
    # host-made rows (t = "link")
    "state", "reason",
    # a record the device sent while no host listened: host_time derived from its device time
    "buffered",
)
"""The CSV log's columns, in order: one row per record; a field a record does not have is empty."""


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))
    return v


class RecordLog:
    """Appends records with their host time to ``path`` (``.csv`` or ``.jsonl``; ValueError for other names).

    Each ``write`` is one whole line in one call to the file object, so an interruption (Ctrl-C, an exception)
    can only fall between lines; ``close`` (also on leaving a ``with`` block) flushes. Lines are flushed to the
    file at most ``flush_s`` after they were written (checked on each write and by ``maybe_flush``). An existing
    file is appended to; a CSV file gets its header only when it is new or empty, and one with another header is
    refused (ValueError).
    """

    def __init__(self, path: str | os.PathLike[str], flush_s: float = 1.0):
        self.path = Path(path)
        self.format = self.format_of(path)
        self.flush_s = flush_s
        self.lines = 0
        existing = self.path.stat().st_size if self.path.exists() else 0
        needs_newline = False
        if existing:
            with open(self.path, "rb") as f:
                if self.format == "csv":
                    header = f.readline().rstrip(b"\r\n").decode("utf-8", "replace")
                    if header != ",".join(CSV_COLUMNS):
                        raise ValueError("--log %s: the file exists with other columns; give a new file name"
                                         % self.path)
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        if needs_newline:
            self._file.write("\n")  # end a line cut short by a crash before appending
        self._csv = None
        if self.format == "csv":
            self._csv = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
            if not existing:
                self._csv.writeheader()
        self._last_flush = time.monotonic()
        self._closed = False

    @staticmethod
    def format_of(path: str | os.PathLike[str]) -> str:
        """``"csv"`` or ``"jsonl"`` from the file name; ValueError for another name."""
        suffix = Path(path).suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise ValueError("--log %s: the file name must end in .csv or .jsonl" % os.fspath(path))
        return suffix[1:]

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, rec: dict[str, Any], port: str, serial: str | None = None, wall: float | None = None,
              buffered: bool = False) -> None:
        """One record (as received) and its host time (``time.time()`` when it arrived; now if omitted).

        ``buffered``: the device sent it while no host listened, and ``wall`` is derived from its device time;
        the line then has ``buffered`` true (JSONL: only then; CSV: ``true`` or empty)."""
        host_time = iso_time(time.time() if wall is None else wall)
        if self._csv is not None:
            row = {k: _csv_value(v) for k, v in rec.items()}
            row["host_time"], row["port"] = host_time, port
            row["buffered"] = "true" if buffered else ""
            if serial is not None or "serial" not in row:
                row["serial"] = _csv_value(serial)
            self._csv.writerow(row)  # one write() of the whole line
        else:
            line = {"host_time": host_time, "port": port}
            if buffered:
                line["buffered"] = True
            line.update(rec)
            self._file.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n")
        self.lines += 1
        self.maybe_flush()

    def write_state(self, port: str, state: str, reason: str | None = None, serial: str | None = None,
                    wall: float | None = None) -> None:
        """A host-made row for a link state change: ``t`` = ``"link"``, ``state``, ``reason``."""
        rec: dict[str, Any] = {"t": "link", "state": state}
        if reason:
            rec["reason"] = reason
        self.write(rec, port, serial, wall)

    def maybe_flush(self, now_mono: float | None = None) -> None:
        now_mono = time.monotonic() if now_mono is None else now_mono
        if now_mono - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        if not self._closed:
            self._file.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()

    def __enter__(self) -> "RecordLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
