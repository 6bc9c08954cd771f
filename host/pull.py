"""`slm pull`: copy a device's own record (its `minute`, `event` and `audit` rings, docs/protocol.md "Device record")
into a directory, resuming where the last pull left off.

The directory holds ``minutes.csv`` (one row per minute, the record number ``n`` first, its ``mac`` last before the
extras), ``events.jsonl`` and ``audit.jsonl`` (one JSON object per record, with ``n`` and ``mac``) and
``device.json`` (the serial number of the device whose record it is, and the ranges of records the device
overwrote before they were pulled, ``lost``, which `slm verify` needs to tell them from removed ones). Every field
the device signed is kept as it was, so that `slm verify` recomputes each record's MAC from these files: in
minutes.csv an empty cell is a null, and a number is written as the device sent it (``55`` and ``55.0`` differ). What was
already pulled is read from the files themselves (the ``n`` of their last row), so there is no state to get out of
step with the rows: a pull that was interrupted leaves complete rows (a torn last line is dropped at the next pull
and fetched again), and the next pull appends from the next n. Nothing is ever written twice or skipped; records the
device overwrote before they were pulled are counted as ``lost``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from slm.errors import InputError, OperationError
from slm.firmware import record_ring

MINUTES_FILE = "minutes.csv"
EVENTS_FILE = "events.jsonl"
AUDIT_FILE = "audit.jsonl"
DEVICE_FILE = "device.json"
LOCK_FILE = ".pull.lock"  # held (flock) while a pull writes the directory: two pulls at once would duplicate rows
MINUTE_COLUMNS = ["n"] + [k for k, _ in record_ring.MINUTE_FIELDS] + ["mac", "extra"]
MINUTE_COLUMNS_UNSIGNED = [k for k in MINUTE_COLUMNS if k != "mac"]  # the files of earlier pulls (appended as such)
_TEXT_TYPES = (record_ring.TIME, record_ring.TEXT, record_ring.HHMM)
_MINUTE_TYPES = dict(record_ring.MINUTE_FIELDS)
_INT_RE = re.compile(r"-?\d+\Z")
REPLY_TIMEOUT_S = 10.0
TAIL_BYTES = 1 << 16  # the last row of a file is looked for in its last 64 KiB


class PullDirError(InputError):
    """The output directory cannot take this pull (not a directory, files of another kind or device): exit 2."""


class PullError(OperationError):
    """The device's record could not be pulled (old firmware, a reply that makes no sense): exit 1."""


@dataclass
class KindReport:
    pulled: int = 0  # rows written by this pull
    first: int | None = None  # n of the first and last row written by this pull
    last: int | None = None
    lost: int = 0  # records overwritten (or unreadable) on the device before they were pulled
    stored_last: int = 0  # n of the last row in the file after the pull


@dataclass
class PullReport:
    serial: str | None
    out_dir: str
    kinds: dict[str, KindReport] = field(default_factory=dict)
    ring: dict[str, Any] = field(default_factory=dict)  # the device's `ring` reply

    def as_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, "out_dir": self.out_dir, "ring": self.ring,
                "kinds": {k: vars(r) for k, r in self.kinds.items()}}


def _minute_row(rec: dict[str, Any], columns: list[str] = MINUTE_COLUMNS) -> list[Any]:
    extra = {k: v for k, v in rec.items() if k not in columns and k != "t"}
    row = []
    for k in columns[:-1]:
        v = rec.get(k)
        row.append("" if v is None else ("true" if v is True else "false" if v is False else v))
    row.append(json.dumps(extra, ensure_ascii=False, separators=(",", ":")) if extra else "")
    return row


def minute_record(header: list[str], row: list[str]) -> dict[str, Any]:
    """The minute record a row of minutes.csv holds (the inverse of writing it): schema fields typed as the device
    sent them, an empty cell null, the extras merged. ValueError for a row that is not one."""
    if len(row) != len(header):
        raise ValueError(f"{len(row)} cells, not {len(header)}")
    rec: dict[str, Any] = {"t": "minute"}
    for k, cell in zip(header, row):
        if k == "extra":
            if cell:
                extra = json.loads(cell)
                if not isinstance(extra, dict):
                    raise ValueError("extra is not a JSON object")
                rec.update(extra)
        elif k in ("n", "mac"):
            if cell:
                rec[k] = int(cell) if k == "n" else cell
        elif cell == "":
            rec[k] = None
        elif _MINUTE_TYPES[k] == record_ring.BOOL:
            if cell not in ("true", "false"):
                raise ValueError(f"{k} is not true or false")
            rec[k] = cell == "true"
        elif _MINUTE_TYPES[k] in _TEXT_TYPES:
            rec[k] = cell
        else:
            rec[k] = int(cell) if _INT_RE.match(cell) else float(cell)
    return rec


class _Output:
    """One file of the directory: its last n, and appending rows."""

    def __init__(self, path: Path, kind: str):
        self.path = path
        self.kind = kind
        self.last_n = 0
        self.columns = MINUTE_COLUMNS
        self._check()

    def _check(self) -> None:
        p = self.path
        if p.exists() and not p.is_file():
            raise PullDirError(f"{p} is not a file")
        if not p.exists() or p.stat().st_size == 0:
            return
        with open(p, "rb") as f:
            if self.kind == "minute":
                header = f.readline().rstrip(b"\r\n").decode("utf-8", "replace").split(",")
                if header == MINUTE_COLUMNS_UNSIGNED:
                    self.columns = MINUTE_COLUMNS_UNSIGNED
                elif header != MINUTE_COLUMNS:
                    raise PullDirError(f"{p} is not a minutes file of `slm pull` (its first line is not the header)")
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            f.seek(start)
            tail = f.read()
        complete = tail.rfind(b"\n") + 1
        torn = tail[complete:]
        lines = tail[:complete].splitlines()
        last = lines[-1] if lines else b""
        if self.kind == "minute" and (not last or (start == 0 and len(lines) == 1)):
            last = b""  # the header alone
        if last:
            self.last_n = self._row_n(last)
        if torn:  # a row cut off by an interrupted pull (it is fetched again); anything else is not ours to cut
            if not torn.startswith(b'{"n":' if self.kind != "minute" else b"%d," % (self.last_n + 1)):
                raise PullDirError(f"{p} does not end with a whole row: not a file of `slm pull`")
            with open(p, "r+b") as f:
                f.truncate(start + complete)

    def _row_n(self, line: bytes) -> int:
        try:
            if self.kind == "minute":
                n = int(next(csv.reader([line.decode()]))[0])
            else:
                n = json.loads(line)["n"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError
        except (ValueError, KeyError, TypeError, IndexError, StopIteration, UnicodeDecodeError):
            raise PullDirError(f"{self.path}: its last row has no record number n: not a file of `slm pull`") \
                from None
        return n

    def append(self, records: list[dict[str, Any]]) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        buf = io.StringIO()
        if self.kind == "minute":
            w = csv.writer(buf, lineterminator="\n")
            if new:
                self.columns = MINUTE_COLUMNS
                w.writerow(MINUTE_COLUMNS)
            for rec in records:
                w.writerow(_minute_row(rec, self.columns))
        else:
            for rec in records:
                buf.write(json.dumps({k: v for k, v in rec.items() if k != "t"}, ensure_ascii=False,
                                     separators=(",", ":")) + "\n")
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        self.last_n = records[-1]["n"]


class PullStore:
    """The output directory, checked (and locked) before the device is asked anything; ``close()`` releases it."""

    def __init__(self, out_dir: str | os.PathLike[str]):
        self.dir = Path(out_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise PullDirError(f"{self.dir} is not a directory")
        self._lock_file: Any = None
        if self.dir.is_dir():
            self._lock()
        self.serial: str | None = None
        device = self.dir / DEVICE_FILE
        if device.exists():
            try:
                self.serial = json.loads(device.read_text())["serial"]
            except (ValueError, KeyError, TypeError, OSError):
                raise PullDirError(f"{device} is not a device file of `slm pull`") from None
        self.lost: dict[str, list[list[int]]] = {}
        if device.exists():
            try:
                self.lost = json.loads(device.read_text()).get("lost") or {}
            except (ValueError, OSError, AttributeError):
                self.lost = {}
        self.outputs = {"minute": _Output(self.dir / MINUTES_FILE, "minute"),
                        "event": _Output(self.dir / EVENTS_FILE, "event"),
                        "audit": _Output(self.dir / AUDIT_FILE, "audit")}

    def claim(self, serial: str | None) -> None:
        """Make the directory this device's (refused when it holds another device's record)."""
        if self.serial is not None and self.serial != serial:
            raise PullDirError(f"{self.dir} holds the record of device {self.serial}, not of {serial}: "
                               "pull into another directory")
        if self.serial is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            if self._lock_file is None:
                self._lock()
            self.serial = serial
            self._write_device()

    def _write_device(self) -> None:
        tmp = self.dir / (DEVICE_FILE + ".tmp")
        info: dict[str, Any] = {"serial": self.serial}
        if self.lost:
            info["lost"] = self.lost
        tmp.write_text(json.dumps(info) + "\n")
        os.replace(tmp, self.dir / DEVICE_FILE)

    def note_lost(self, kind: str, first: int, last: int) -> None:
        """Records first..last of kind were overwritten on the device before they were pulled (between rows)."""
        self.lost.setdefault(kind, []).append([first, last])
        self._write_device()

    def _lock(self) -> None:
        import fcntl

        f = open(self.dir / LOCK_FILE, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise PullDirError(f"another `slm pull` is writing to {self.dir}") from None
        self._lock_file = f

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None


class _NoAuditTrail(PullError):
    """The device's `pull` does not know kind audit (firmware before the audit trail)."""


def _send(link: Any, cmd: str, **fields: Any) -> dict[str, Any]:
    from slm.link import DeviceError

    try:
        reply = link.send(cmd, timeout=REPLY_TIMEOUT_S, **fields)
    except DeviceError as e:
        if e.code == "unknown_cmd":
            raise PullError("the device's firmware keeps no record (no `%s` command): deploy current firmware"
                            % cmd) from None
        if e.code == "bad_value" and fields.get("kind") == "audit":
            raise _NoAuditTrail("no audit trail") from None
        raise PullError(f"the device could not read its record ({e.code}: {e.message})") from None
    result = reply.get("result")
    if not isinstance(result, dict):
        raise PullError(f"the device's reply to {cmd} has no result")
    return result


def pull_kind(link: Any, out: _Output, report: KindReport,
              progress: Callable[[str, int, int], None] | None = None,
              on_lost: Callable[[str, int, int], None] | None = None) -> None:
    """Pull one kind's records after ``out.last_n`` and append them; ``on_lost(kind, first, last)`` for records
    the device overwrote between two rows of the file."""
    kind = out.kind
    want = out.last_n + 1
    while True:
        r = _send(link, "pull", kind=kind, **{"from": want})
        texts, nxt, first, last = r.get("records"), r.get("next"), r.get("first"), r.get("last")
        if not (isinstance(texts, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                                for x in (nxt, first, last))):
            raise PullError("the device's pull reply is malformed")
        if out.last_n > last:
            raise PullError(f"the device's {kind} record ends at n={last} but {out.path} already holds up to "
                            f"n={out.last_n}: the device's record was erased; pull into a new directory")
        records = []
        gaps = []
        written = out.last_n
        expected = want  # the n the next row should have: a record beyond it means records lost on the device
        for text in texts:
            try:
                rec = record_ring.decode(kind, base64.b64decode(text, validate=True))
            except (ValueError, TypeError):
                rec = None
            if rec is None:
                raise PullError(f"a {kind} record from the device fails its check")
            if rec["n"] < expected:
                raise PullError(f"the device sent {kind} n={rec['n']} again (expected n >= {expected})")
            report.lost += rec["n"] - expected
            expected = rec["n"] + 1
            if written and rec["n"] > written + 1:
                gaps.append((written + 1, rec["n"] - 1))
            written = rec["n"]
            records.append(rec)
        if records:
            out.append(records)
            for first_lost, last_lost in gaps:
                if on_lost is not None:
                    on_lost(kind, first_lost, last_lost)
            report.pulled += len(records)
            report.first = records[0]["n"] if report.first is None else report.first
            report.last = records[-1]["n"]
        elif nxt <= want and nxt <= last:
            raise PullError(f"the device's pull of {kind} records does not advance (n={want})")
        report.lost += max(0, nxt - expected)  # slots the device skipped after the last record sent
        if progress is not None:
            progress(kind, out.last_n, last)
        if nxt > last:
            break
        want = nxt
    report.stored_last = out.last_n


def pull_record(link: Any, out_dir: str | os.PathLike[str], store: PullStore | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> PullReport:
    """Pull the device's minutes and events into ``out_dir`` (see the module's docstring); the store (made here
    when not given) is released at the end."""
    store = store or PullStore(out_dir)
    try:
        hello = link.hello or link.info(timeout=REPLY_TIMEOUT_S)
        serial = hello.get("serial")
        ring = _send(link, "ring")
        store.claim(serial)
        report = PullReport(serial=serial, out_dir=str(store.dir), ring=ring)
        for kind in ("minute", "event", "audit"):
            if kind not in ring:
                continue  # firmware without an audit trail
            report.kinds[kind] = KindReport()
            try:
                pull_kind(link, store.outputs[kind], report.kinds[kind], progress, store.note_lost)
            except _NoAuditTrail:
                del report.kinds[kind]
    finally:
        store.close()
    return report
