"""`slm verify`: check the hash chains of devices' records (docs/verifying.md) in a pulled folder, a monitor log
(.jsonl) or the collector's database, and name the first problem of each chain and the last trustworthy point.

Each device signs three chains, one per kind (`minute`, `event`, `audit`): record n carries
``mac = link(key, device, kind, n, mac of record n-1, body(record))`` (firmware/chain.py, imported here: the one
encoding). The MAC is recomputed from the record as received. A chain may start at any n (the device's ring
overwrote what came before): its first record then has no predecessor to check it against, and is the chain's
anchor (named, not counted as valid); every later record is checked against the one before it."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from slm.errors import InputError
from slm.firmware import chain
from slm.firmware.record_ring import format_time, parse_time

KINDS = ("minute", "event", "audit")
ZERO_MAC = bytes(chain.MAC_BYTES)
MAC_RE = re.compile(r"[0-9a-f]{%d}\Z" % (2 * chain.MAC_BYTES))
KEY_RE = re.compile(r"[0-9a-fA-F]{64}\Z")
LOG_ONLY_FIELDS = ("host_time", "port", "buffered", "serial")  # what `slm monitor --log` adds to a record
CLOCK_SLACK_MS = 5000  # a record's time may be this much before the previous one's without being a rollback
PROBLEMS = {
    "altered": "its MAC does not match its content: changed after it was signed",
    "removed": "records are missing",
    "inserted": "a record that is not in the device's chain",
    "reordered": "records out of order",
    "replayed": "a record of another device",
    "clock_rollback": "its time goes back without a clock_step audit record",
    "unsigned": "no MAC: a record the device did not sign",
}


class VerifyInputError(InputError):
    """The source or the keys cannot be read (exit 2)."""


@dataclass
class Item:
    """One record as received: ``rec`` is what the MAC is recomputed from."""

    device: str
    kind: str
    n: int | None
    mac: str | None
    rec: dict[str, Any]
    where: str  # where it is in the source, for the person reading the report
    conflict: str | None = None  # a stored copy that disagrees with the signed record (the database's columns)

    @property
    def utc(self) -> str | None:
        v = self.rec.get("utc")
        return v if isinstance(v, str) else None


@dataclass
class Problem:
    kind: str
    n: int | None
    where: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "where": self.where, "detail": self.detail}


@dataclass
class ChainResult:
    device: str
    kind: str
    records: int = 0
    valid: int = 0
    unsigned: int = 0
    before_key: int = 0  # unsigned records from before the device's key was installed (not covered, not a failure)
    failed: int = 0
    start_n: int | None = None  # n of the chain's first record
    start_checked: bool = False  # the first record is checked too (it is n=1 or starts a key's chain)
    last_n: int | None = None
    problem: Problem | None = None  # the first
    problems: int = 0
    trusted: dict[str, Any] | None = None  # the last trustworthy point: {n, utc, where}
    notes: list[str] = field(default_factory=list)
    states: dict[int, str] = field(default_factory=dict)  # n -> valid, failed, unchecked (a start), unsigned

    @property
    def state(self) -> str:
        if self.records == 0:
            return "empty"
        if self.problem is not None:
            return "unsigned" if self.problem.kind == "unsigned" and self.valid == 0 else "failed"
        return "valid"

    def fail(self, kind: str, item: Item, detail: str) -> None:
        self.problems += 1
        if self.problem is None:
            self.problem = Problem(kind, item.n, item.where, detail)

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "kind": self.kind, "state": self.state, "records": self.records,
                "valid": self.valid, "unsigned": self.unsigned, "before_key": self.before_key, "failed": self.failed,
                "start_n": self.start_n,
                "start_checked": self.start_checked, "last_n": self.last_n, "problems": self.problems,
                "problem": self.problem.as_dict() if self.problem else None, "last_trustworthy": self.trusted,
                "notes": self.notes}


@dataclass
class Result:
    sources: list[str]
    chains: list[ChainResult]
    key_ids: dict[str, str]

    @property
    def ok(self) -> bool:
        return bool(self.chains) and all(c.state in ("valid", "empty") for c in self.chains)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "sources": self.sources, "key_ids": self.key_ids,
                "chains": [c.as_dict() for c in self.chains]}


# -- keys ---------------------------------------------------------------------------------------------------------
def key_id(key: bytes) -> str:
    """What a device's `hello` says of its key (never the key)."""
    return chain.key_id(key)


def load_keys(keys_dir: str | Path) -> dict[str, bytes]:
    """{device: key} of the `<device>.key` files `slm provision` writes."""
    folder = Path(keys_dir)
    if not folder.is_dir():
        raise VerifyInputError(f"--keys {keys_dir}: not a folder of keys (slm provision writes DIR/keys/)")
    keys = {}
    for f in sorted(folder.glob("*.key")):
        try:
            text = f.read_text().strip()
        except OSError as e:
            raise VerifyInputError(f"{f}: {e.strerror}") from None
        if not KEY_RE.match(text):
            raise VerifyInputError(f"{f}: not a key of slm provision (64 hex characters)")
        keys[f.stem] = bytes.fromhex(text)
    return keys


def body(kind: str, rec: dict[str, Any]) -> bytes | None:
    """The record's canonical bytes (chain.body), or None for one no device could have packed."""
    try:
        return chain.body(kind, rec)
    except (ValueError, TypeError, KeyError, OverflowError):
        return None


def record_mac(key: bytes, device: str, kind: str, n: int, prev: bytes, rec: dict[str, Any]) -> bytes | None:
    b = body(kind, rec)
    return None if b is None else chain.link(key, device, kind, n, prev, b)


def mac_bytes(item: Item) -> bytes | None:
    return bytes.fromhex(item.mac) if isinstance(item.mac, str) and MAC_RE.match(item.mac) else None


# -- one chain ----------------------------------------------------------------------------------------------------
class _Checker:
    """Checks one device's chain of one kind, its records in the order the source holds them."""

    def __init__(self, device: str, kind: str, key: bytes, items: list[Item], macs: dict[bytes, list[Item]],
                 steps: list[tuple[int, int]], lost: list[tuple[int, int]], signed_from: int | None = None):
        self.device, self.kind, self.key, self.items = device, kind, key, items
        self.signed_from = signed_from  # the chain's first n under the key (its `key` audit entry verified)
        self.macs = macs  # mac -> the records carrying it, of any device (a replay: another device's)
        self.steps = steps  # (from ms, to ms) of the device's clock steps back
        self.lost = lost  # (first n, last n) the pull says the device overwrote before they were pulled
        self.result = ChainResult(device, kind)

    def _mac_ok(self, item: Item, prev: bytes) -> bool:
        got = mac_bytes(item)
        return got is not None and item.n is not None and record_mac(self.key, self.device, self.kind, item.n, prev,
                                                                     item.rec) == got

    def run(self) -> ChainResult:
        r = self.result
        items = self.items
        prev: Item | None = None  # the last record whose MAC is in the chain (checked, or the anchor)
        last_time: int | None = None
        for i, item in enumerate(items):
            r.records += 1
            r.last_n = item.n if item.n is not None else r.last_n
            if r.start_n is None:
                r.start_n = item.n
            mac = mac_bytes(item)
            if mac is None and item.n is not None and self.signed_from is not None and item.n < self.signed_from:
                r.before_key += 1  # made before the key was installed: nothing to check, nothing wrong
                r.states.setdefault(item.n, "before_key")
                continue
            if mac is None or item.n is None:
                r.unsigned += 1
                r.fail("unsigned", item, "no MAC" if item.mac is None else f"no valid MAC ({str(item.mac)[:40]!r})")
                if item.n is not None:
                    r.states.setdefault(item.n, "unsigned")
                continue
            nxt = items[i + 1] if i + 1 < len(items) else None
            failures = r.problems
            ok = False
            if prev is None or item.n != (prev.n or 0) + 1:
                ok = self._start(item, prev, items[i + 1:])
            elif self._mac_ok(item, bytes.fromhex(prev.mac or "")):
                ok = True
            elif self._mac_ok(item, ZERO_MAC):
                ok = True
                r.notes.append(f"a new chain starts at n={item.n} (a key was installed)")
            else:
                self._name_mismatch(item, prev, nxt)
            if ok and item.conflict:
                r.fail("altered", item, item.conflict)
                ok = False
            t = _ms(item.utc)
            if ok and t is not None and last_time is not None and t < last_time - CLOCK_SLACK_MS and \
                    not self._stepped(last_time, t):
                r.fail("clock_rollback", item, f"its utc {item.utc} is before the previous record's "
                                               f"({_iso(last_time)}) and no clock_step record says why")
                ok = False
            if t is not None and (ok or r.problems == failures):
                last_time = t
            if ok:
                r.valid += 1
                if r.problem is None:
                    r.trusted = {"n": item.n, "utc": item.utc, "where": item.where}
            elif r.problems > failures:
                r.failed += 1
            state = "valid" if ok else "failed" if r.problems > failures else "unchecked"
            if item.n not in r.states or state == "failed":  # a failed copy of n makes n failed
                r.states[item.n] = state
            # the next record is checked against this one, unless it follows the one before (this one was put in)
            if prev is None or item.n > (prev.n or 0):
                inserted = nxt is not None and prev is not None and nxt.n == item.n and not ok
                if not inserted:
                    prev = item
        return r

    def _start(self, item: Item, prev: Item | None, rest: list[Item]) -> bool:
        """The first record, or one after a gap or out of order: True when it is checked (a chain's start)."""
        r = self.result
        if prev is not None and item.n is not None and prev.n is not None:
            if item.n <= prev.n:
                if item.n == prev.n:
                    r.fail("inserted", item, f"a second record numbered n={item.n}" + (
                        " (a copy)" if item.mac == prev.mac else ""))
                else:
                    r.fail("reordered", item, f"n={item.n} comes after n={prev.n}")
                return False
            missing = (prev.n + 1, item.n - 1)
            if any(x.n is not None and missing[0] <= x.n <= missing[1] for x in rest):
                r.fail("reordered", item, f"n={item.n} comes before n={missing[0]}")
                return False
            if not any(a <= missing[0] and missing[1] <= b for a, b in self.lost):
                r.fail("removed", item, f"n={missing[0]}" + (f"-{missing[1]}" if missing[1] > missing[0] else "")
                       + f" missing between n={prev.n} and n={item.n}")
            else:
                r.notes.append(f"n={missing[0]}-{missing[1]} were overwritten on the device before they were pulled")
        if self._mac_ok(item, ZERO_MAC):
            if prev is None:
                r.start_checked = True
            return True
        o = self._other(item)
        if o is not None:
            r.fail("replayed", item, f"it is record n={o.n} of device {o.device} ({o.where})")
            return False
        if prev is None:
            r.notes.append(f"starts at n={item.n}: its predecessor is not here (overwritten on the device, or "
                           "not received), so record n=%d itself cannot be checked; the chain is checked from "
                           "n=%d on" % (item.n or 0, (item.n or 0) + 1))
        else:
            r.notes.append(f"after the gap, record n={item.n} cannot be checked")
        return False

    def _other(self, item: Item) -> Item | None:
        """The record of another device that carries this record's mac (a replay), if the sources hold it."""
        return next((o for o in self.macs.get(mac_bytes(item), ())  # type: ignore[arg-type]
                     if o.device != self.device), None)

    def _name_mismatch(self, item: Item, prev: Item, nxt: Item | None) -> None:
        r = self.result
        mac = mac_bytes(item)
        o = self._other(item)
        if o is not None:
            r.fail("replayed", item, f"it is record n={o.n} of device {o.device} ({o.where})")
        elif nxt is not None and nxt.n == item.n + 1 and mac_bytes(nxt) is not None and \
                record_mac(self.key, self.device, self.kind, item.n + 1, mac_bytes(nxt), item.rec) == mac:  # type: ignore
            r.fail("reordered", item, f"it is the device's record n={item.n + 1}, swapped with n={item.n}")
        elif nxt is not None and nxt.n == item.n and self._mac_ok(nxt, bytes.fromhex(prev.mac or "")):
            r.fail("inserted", item, f"a forged n={item.n} before the device's own")
        elif nxt is not None and nxt.n == item.n + 1 and self._mac_ok(nxt, mac):  # type: ignore[arg-type]
            r.fail("altered", item, "its MAC does not match its content (the next record confirms the MAC: the "
                                    "content was changed)")
        else:
            r.fail("altered", item, "its MAC does not match its content: changed or forged")

    def _stepped(self, before: int, after: int) -> bool:
        """A clock step back of the device explains a record at ``after`` following one at ``before``."""
        return any(to - CLOCK_SLACK_MS <= after and before <= frm + CLOCK_SLACK_MS for frm, to in self.steps)


def _ms(utc: str | None) -> int | None:
    if utc is None:
        return None
    got = parse_time(utc)
    if got is None and isinstance(utc, str) and utc.endswith("Z") and "." in utc:
        got = parse_time(utc[:19] + "Z")
    return got[0] if got else None


def _iso(ms: int) -> str:
    return format_time(ms)


def _clock_steps(items: Iterable[Item]) -> list[tuple[int, int]]:
    """(from, to) ms of the clock steps back that the device recorded (audit `clock_step`, event `clock_step`)."""
    out = []
    for it in items:
        rec = it.rec
        if rec.get("what") == "clock_step" or rec.get("kind") == "clock_step":
            frm, to = _ms(rec.get("from")), _ms(rec.get("to"))
            if frm is not None and to is not None and to < frm:
                out.append((frm, to))
    return out


def verify_items(items: list[Item], keys: dict[str, bytes], lost: dict[tuple[str, str], list] | None = None,
                 only_kinds: Iterable[str] = KINDS) -> list[ChainResult]:
    """Check every device's chains in ``items`` (in source order)."""
    by_chain: dict[tuple[str, str], list[Item]] = {}
    for it in items:
        by_chain.setdefault((it.device, it.kind), []).append(it)
    missing = sorted({d for (d, _), xs in by_chain.items() if d not in keys and any(x.mac for x in xs)})
    if missing:
        raise VerifyInputError(f"no key for device {missing[0]} in the keys folder (its file would be "
                               f"{missing[0]}.key)")
    macs: dict[bytes, list[Item]] = {}  # every record's mac: one of another device in a chain is a replay
    for it in items:
        m = mac_bytes(it)
        if m is not None:
            macs.setdefault(m, []).append(it)
    by_device: dict[str, list[Item]] = {}
    key_entry: dict[str, Item] = {}  # device -> its last `key` audit entry (where its chains begin)
    installed: dict[str, str] = {}  # device -> key_id of the last `key` audit entry naming one (the key it signs with)
    for it in items:
        by_device.setdefault(it.device, []).append(it)
        if it.kind == "audit" and it.rec.get("what") == "key":
            if it.n is not None:
                key_entry[it.device] = it
            if isinstance(it.rec.get("key_id"), str):
                installed[it.device] = it.rec["key_id"]
    steps = {d: _clock_steps(xs) for d, xs in by_device.items()}
    out = []
    for (device, kind) in sorted(by_chain, key=lambda dk: (dk[0], KINDS.index(dk[1]) if dk[1] in KINDS else 9)):
        checker = _Checker(device, kind, keys.get(device, b""), by_chain[(device, kind)], macs,
                           steps.get(device, []), (lost or {}).get((device, kind), []),
                           _signed_from(kind, key_entry.get(device), keys.get(device)))
        result = checker.run()
        if result.before_key:
            result.notes.append(f"{result.before_key} unsigned record(s) before n={checker.signed_from}, made before "
                                "the key was installed: not covered by the chain")
        if device in installed and device in keys and installed[device] != key_id(keys[device]):
            result.notes.insert(0, f"the device's last `key` audit entry names key {installed[device]}, the key file "
                                   f"{device}.key is {key_id(keys[device])}: not the key it signs with")
        out.append(result)
    return out


def _signed_from(kind: str, entry: Item | None, key: bytes | None) -> int | None:
    """Where the chain of ``kind`` begins under the device's key: the n its last `key` audit entry (``entry``) names
    (the entry's own n for the audit chain), when that entry's MAC checks out as the first of a chain; else None."""
    if not key or entry is None or entry.n is None:
        return None
    got = mac_bytes(entry)
    if got is None or record_mac(key, entry.device, "audit", entry.n, ZERO_MAC, entry.rec) != got:
        return None
    start = entry.n if kind == "audit" else entry.rec.get(f"{kind}_n")
    return start if isinstance(start, int) else None


# -- sources -------------------------------------------------------------------------------------------------------
def _signed_fields(kind: str, device: str, rec: dict[str, Any], where: str) -> Item:
    n = rec.get("n")
    n = n if type(n) is int else None
    mac = rec.get("mac")
    return Item(device, kind, n, mac if isinstance(mac, str) else None, rec, where)


def load_pulled(folder: Path) -> tuple[list[Item], dict[tuple[str, str], list]]:
    """The records of a folder written by `slm pull`, and the ranges it says were lost on the device."""
    from slm import pull

    try:
        info = json.loads((folder / pull.DEVICE_FILE).read_text())
        device = info["serial"]
    except (OSError, ValueError, KeyError, TypeError):
        raise VerifyInputError(f"{folder}: no {pull.DEVICE_FILE} of `slm pull`: not a pulled folder") from None
    if not isinstance(device, str):
        raise VerifyInputError(f"{folder}/{pull.DEVICE_FILE}: the device has no serial")
    items: list[Item] = []
    minutes = folder / pull.MINUTES_FILE
    if minutes.exists():
        with open(minutes, newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            if header not in (pull.MINUTE_COLUMNS, pull.MINUTE_COLUMNS_UNSIGNED):
                raise VerifyInputError(f"{minutes}: not a minutes file of `slm pull`")
            for line, row in enumerate(rows, start=2):
                try:
                    rec = pull.minute_record(header, row)
                except ValueError as e:
                    raise VerifyInputError(f"{minutes} line {line}: {e}") from None
                items.append(_signed_fields("minute", device, rec, f"{pull.MINUTES_FILE} line {line}"))
    for kind, name in (("event", pull.EVENTS_FILE), ("audit", pull.AUDIT_FILE)):
        path = folder / name
        if path.exists():
            for line, rec in _jsonl(path):
                items.append(_signed_fields(kind, device, rec, f"{name} line {line}"))
    lost = {(device, k): [tuple(x) for x in v] for k, v in (info.get("lost") or {}).items()
            if isinstance(v, list)}
    return items, lost


def _jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        with open(path, encoding="utf-8") as f:
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text)
                except ValueError:
                    raise VerifyInputError(f"{path} line {line}: not JSON") from None
                if not isinstance(rec, dict):
                    raise VerifyInputError(f"{path} line {line}: not a JSON object")
                yield line, rec
    except (OSError, UnicodeDecodeError) as e:
        raise VerifyInputError(f"{path}: {getattr(e, 'strerror', None) or e}") from None


def log_serial(line: dict[str, Any]) -> str | None:
    """The device id a monitor log's line names for its port: its hello, or the reply to `info`."""
    if line.get("t") == "hello" and isinstance(line.get("serial"), str):
        return line["serial"]
    result = line.get("result")
    if line.get("t") == "ack" and isinstance(result, dict) and isinstance(result.get("serial"), str):
        return result["serial"]
    return None


def load_log(path: Path) -> list[Item]:
    """The records of a `slm monitor --log FILE.jsonl`. A port's connection (from one `link` "connected" line to the
    next) is one device, named by its hello or its reply to `info` anywhere in it: the records a board sent before
    the port was opened come first (``buffered``), the reply that names it after them."""
    if path.suffix.lower() != ".jsonl":
        raise VerifyInputError(f"{path}: verify reads a .jsonl log (a CSV log does not keep records as received)")
    segment_of_port: dict[str, int] = {}
    device_of: dict[tuple[str, int], str] = {}
    pending = []
    for line, rec in _jsonl(path):
        t = rec.get("t")
        port = str(rec.get("port"))
        if t == "link" and rec.get("state") == "connected":
            segment_of_port[port] = segment_of_port.get(port, 0) + 1
            continue
        segment = (port, segment_of_port.get(port, 0))
        serial = log_serial(rec)
        if serial is not None:
            device_of.setdefault(segment, serial)
            continue
        if t not in KINDS:
            continue
        named = rec.get("serial") if isinstance(rec.get("serial"), str) else None
        pending.append((line, t, rec, named, segment))
    items = []
    for line, t, rec, named, segment in pending:
        device = named or device_of.get(segment)
        if device is None:
            raise VerifyInputError(f"{path} line {line}: a record of a device the log does not name (no hello or "
                                   "info reply on its connection)")
        record = {k: v for k, v in rec.items() if k not in LOG_ONLY_FIELDS}
        items.append(_signed_fields(t, device, record, f"{path.name} line {line}"))
    return items


MINUTE_COLUMNS_CHECKED = ("laeq", "lafmax", "lafmin", "la10", "la50", "la90", "lcpeak", "overload", "band", "limit_db",
                          "over", "s", "local")  # a minute row's columns that must agree with its signed payload


def load_db(url: str) -> list[Item]:
    """The signed tables of a collector database, each device's records in n order."""
    from slm.fleet_db import database_errors
    from slm.fleet_records import Rejected, minute_row
    from slm.report_source import connect_read_only

    conn, _ = connect_read_only(url)  # verifying never writes, not even a newer schema
    items = []
    try:
        names = [d[0] for d in conn.execute("SELECT * FROM minutes LIMIT 0").description]
        checked = [c for c in MINUTE_COLUMNS_CHECKED if c in names]  # a database of an older collector has fewer
        for kind, table, cols in (("minute", "minutes", "start, payload, " + ", ".join(checked)),
                                  ("event", "events", "kind, at, payload"),
                                  ("audit", "audits", "what, utc, payload")):
            rows = conn.execute(f"SELECT device, n, mac, {cols} FROM {table} ORDER BY device, n").fetchall()
            for row in rows:
                device, n, mac, payload = row[0], row[1], row[2], row[4 if kind == "minute" else
                                                                      5 if kind != "minute" else 4]
                if payload is None:
                    continue  # stored before records were kept as received: nothing to check
                try:
                    rec = json.loads(payload)
                except ValueError:
                    rec = {}
                item = Item(device, kind, n, mac, rec, f"{table} {device} n={n}")
                if kind == "minute":
                    try:
                        again = minute_row(rec, {})
                    except Rejected:
                        again = {}
                    stored = dict(zip(["start"] + checked, (row[3],) + tuple(row[5:])))
                    changed = [k for k, v in stored.items() if _differs(again.get(k), v)]
                    if changed:
                        item.conflict = f"its stored {', '.join(changed)} differ from the record as signed"
                else:
                    what = rec.get("kind") if kind == "event" else rec.get("what")
                    if row[3] != what:
                        item.conflict = f"its stored {'kind' if kind == 'event' else 'what'} differs from the " \
                                        "record as signed"
                items.append(item)
    except database_errors() as e:
        raise VerifyInputError(f"{url}: not a database of `slm collect` with signed records "
                               f"({str(e).strip().splitlines()[0] if str(e).strip() else e})") from None
    finally:
        conn.close()
    return items


def _differs(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) != bool(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) > 1e-9
    return a != b


def load_source(source: str) -> tuple[list[Item], dict[tuple[str, str], list]]:
    if source.startswith(("postgresql://", "postgres://", "sqlite:///")):
        return load_db(source), {}
    p = Path(source)
    if p.is_dir():
        return load_pulled(p)
    if not p.exists():
        raise VerifyInputError(f"{source}: no such file or folder")
    if p.suffix.lower() in (".jsonl", ".csv"):
        return load_log(p), {}
    with open(p, "rb") as f:
        magic = f.read(16)
    if magic == b"SQLite format 3\0":
        return load_db(source), {}
    raise VerifyInputError(f"{source}: not a pulled folder, a .jsonl monitor log or a collector database")


def verify(sources: list[str], keys_dir: str) -> Result:
    """Verify the records of the sources (read together: a record replayed from another device is named when that
    device's records are among them)."""
    keys = load_keys(keys_dir)
    items: list[Item] = []
    lost: dict[tuple[str, str], list] = {}
    for s in sources:
        got, gaps = load_source(s)
        items += got
        lost.update(gaps)
    if not items:
        raise VerifyInputError(f"{', '.join(sources)}: no minute, event or audit records to verify")
    chains = verify_items(items, keys, lost)
    ids = {d: key_id(keys[d]) for d in sorted({c.device for c in chains}) if d in keys}
    return Result(list(sources), chains, ids)


# -- output --------------------------------------------------------------------------------------------------------
KIND_WORDS = {"altered": "ALTERED", "removed": "REMOVED", "inserted": "INSERTED (forged)", "reordered": "REORDERED",
              "replayed": "REPLAYED from another device", "clock_rollback": "CLOCK ROLLED BACK",
              "unsigned": "UNSIGNED"}


def render(result: Result, console: Any) -> None:
    """The result as a table and one line per problem (rich)."""
    from rich.table import Table

    table = Table(title="slm verify: " + ", ".join(result.sources), title_justify="left")
    for col in ("device", "chain", "state", "records", "valid", "n", "first problem", "last trustworthy"):
        table.add_column(col)
    for c in result.chains:
        style = {"valid": "green", "failed": "bold red", "unsigned": "yellow"}.get(c.state, "")
        p = c.problem
        trusted = f"n={c.trusted['n']} {c.trusted['utc'] or ''}".strip() if c.trusted else "none"
        table.add_row(c.device, c.kind, f"[{style}]{c.state}[/]" if style else c.state, str(c.records), str(c.valid),
                      f"{c.start_n}-{c.last_n}" if c.start_n is not None else "",
                      f"{KIND_WORDS[p.kind]} n={p.n} ({p.where})" if p else "", trusted)
    console.print(table)
    for c in result.chains:
        if c.problem:
            p = c.problem
            console.print(f"{c.device} {c.kind}: first problem {KIND_WORDS[p.kind]} at n={p.n} ({p.where}): "
                          f"{p.detail}; {c.problems} problem(s) in all; last trustworthy: "
                          + (f"n={c.trusted['n']} utc {c.trusted['utc']}" if c.trusted else "none"),
                          markup=False, highlight=False)
        for note in c.notes[:3]:
            console.print(f"{c.device} {c.kind}: {note}", markup=False, highlight=False)
    before_key = sum(c.before_key for c in result.chains)
    if not result.ok:
        console.print("VERIFICATION FAILED", markup=False)
    elif before_key:
        console.print(f"all signed records verified; {before_key} made before the key was installed are not covered",
                      markup=False)
    else:
        console.print("all records verified", markup=False)


# -- on arrival (the collector) ----------------------------------------------------------------------------------
class ArrivalCheck:
    """What `slm collect --keys` marks a signed record with when it arrives: 1 (its MAC is right after the record
    before it in its chain, or it starts a chain), 0 (wrong), None (unsigned, no key, or the record before it has
    not arrived yet: ``recheck`` then gives it its mark when that one comes). ``stored_mac(table, device, n)``
    looks a record's mac up in the database when it is not among the recent ones."""

    def __init__(self, keys: dict[str, bytes], stored_mac: Any):
        self.keys = keys
        self.stored_mac = stored_mac
        self.recent: dict[tuple[str, str, int], str] = {}  # (device, kind, n) -> mac, the last few per chain
        self.waiting: dict[tuple[str, str, int], tuple[dict[str, Any], str]] = {}  # unchecked: their rec, mac

    def mark(self, kind: str, device: str, rec: dict[str, Any], table: str) -> int | None:
        n, mac = rec.get("n"), rec.get("mac")
        key = self.keys.get(device)
        if key is None or type(n) is not int or not isinstance(mac, str):
            return None
        got = bytes.fromhex(mac) if MAC_RE.match(mac) else None
        if got is None:
            return 0
        self.recent[(device, kind, n)] = mac
        self.recent.pop((device, kind, n - 64), None)
        packed = body(kind, rec)
        if packed is None:
            return 0
        if chain.link(key, device, kind, n, ZERO_MAC, packed) == got:
            return 1
        prev = self.recent.get((device, kind, n - 1)) if n > 1 else None
        if prev is None and n > 1:
            prev = self.stored_mac(table, device, n - 1)
        if prev is None or not MAC_RE.match(prev):
            self.waiting[(device, kind, n)] = (rec, mac)
            if len(self.waiting) > 10000:  # bounded: the oldest stays unchecked (verify checks it later)
                del self.waiting[next(iter(self.waiting))]
            return None
        return 1 if chain.link(key, device, kind, n, bytes.fromhex(prev), packed) == got else 0

    def recheck(self, kind: str, device: str, n: int) -> tuple[int, str, int] | None:
        """(n + 1, its mac, its mark) when record n + 1 was waiting for record n (just stored), else None."""
        waiting = self.waiting.pop((device, kind, n + 1), None)
        mac = self.recent.get((device, kind, n))
        if waiting is None or mac is None or not MAC_RE.match(mac):
            return None
        rec, its_mac = waiting
        ok = record_mac(self.keys[device], device, kind, n + 1, bytes.fromhex(mac), rec) == bytes.fromhex(its_mac)
        return n + 1, its_mac, 1 if ok else 0
