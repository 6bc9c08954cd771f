"""`slm verify` (host/verify.py): honest signed records verify clean from each source kind (a pulled folder, a monitor
log, the collector's database on SQLite and PostgreSQL); each kind of tampering (a digit changed, a record deleted,
two swapped, a forged one inserted, another device's record replayed, the clock rolled back) is found and named,
with the last trustworthy point; the collector marks what it stores; the key never appears in any output."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from slm import verify as v
from tests.chain_records import Signer, evening, honest_devices, write_db, write_log, write_pulled
from tests.services import Postgres

A, B = "a0b1c2000001", "a0b1c2000002"
TAMPERED_N = 10  # the minute record tampered with


def slm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    """Two devices' honest evenings (reboots, a clock step with its audit record, an episode) and their keys."""
    return honest_devices(tmp_path_factory.mktemp("keys"), A, B)


def one_digit(text: str) -> str:
    """Change the first digit of a number's text (55.25 -> 65.25)."""
    m = re.search(r"\d", text)
    return text[:m.start()] + str((int(m.group()) + 1) % 10) + text[m.end():]


# -- tampering with each source kind ------------------------------------------------------------------------------
class Pulled:
    name = "pulled"

    def __init__(self, tmp: Path, records: dict):
        self.a = write_pulled(tmp / "a", A, records[A])
        self.b = write_pulled(tmp / "b", B, records[B])
        self.sources = [str(self.a), str(self.b)]

    def _rows(self, folder: Path) -> list[list[str]]:
        with open(folder / "minutes.csv", newline="", encoding="utf-8") as f:
            return list(csv.reader(f))

    def _write(self, rows: list[list[str]]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        (self.a / "minutes.csv").write_text(buf.getvalue(), encoding="utf-8")

    def tamper(self, how: str, n: int = TAMPERED_N) -> None:
        rows = self._rows(self.a)
        header, i = rows[0], n  # row i holds n = i
        col = header.index("LAeq")
        if how == "digit":
            rows[i][col] = one_digit(rows[i][col])
        elif how == "delete":
            del rows[i]
        elif how == "swap":
            rows[i], rows[i + 1] = rows[i + 1], rows[i]
        elif how == "insert":
            forged = list(rows[i])
            forged[col] = "45.0"
            forged[header.index("mac")] = os.urandom(16).hex()
            rows.insert(i, forged)
        elif how == "replay":
            rows[i] = self._rows(self.b)[i]
        self._write(rows)


class Log:
    name = "log"

    def __init__(self, tmp: Path, records: dict):
        self.path = write_log(tmp / "evening.jsonl", records)
        self.sources = [str(self.path)]

    def tamper(self, how: str, n: int = TAMPERED_N) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        recs = [json.loads(x) for x in lines]

        def index(device: str, k: int) -> int:
            port = next(r["port"] for r in recs if r.get("serial") == device and r["t"] == "hello")
            return next(j for j, r in enumerate(recs) if r["port"] == port and r["t"] == "minute" and r["n"] == k)

        i = index(A, n)
        if how == "digit":
            rec = recs[i]
            lines[i] = lines[i].replace('"LAeq":%s' % json.dumps(rec["LAeq"]),
                                        '"LAeq":%s' % one_digit(json.dumps(rec["LAeq"])))
        elif how == "delete":
            del lines[i]
        elif how == "swap":
            k = index(A, n + 1)
            lines[i], lines[k] = lines[k], lines[i]
        elif how == "insert":
            forged = dict(recs[i], LAeq=45.0, mac=os.urandom(16).hex())
            lines.insert(i, json.dumps(forged))
        elif how == "replay":
            other = dict(recs[index(B, n)], port=recs[i]["port"])
            lines[i] = json.dumps(other)
        self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class Db:
    name = "db"

    def __init__(self, tmp: Path, records: dict, url: str | None = None, keys: dict | None = None):
        self.url = url or str(tmp / "fleet.sqlite")
        write_db(self.url, records, keys)
        self.sources = [self.url]

    def sql(self, statements: list[tuple[str, tuple]]) -> None:
        from slm.fleet_db import open_db

        db = open_db(self.url)
        for sql, params in statements:
            db.execute(sql, params)
        db.close()

    def row(self, device: str, n: int) -> tuple:
        from slm.fleet_db import open_db

        db = open_db(self.url)
        try:
            return db.query("SELECT payload, mac, laeq FROM minutes WHERE device = ? AND n = ?", (device, n))[0]
        finally:
            db.close()

    def tamper(self, how: str, n: int = TAMPERED_N) -> None:
        payload, mac, laeq = self.row(A, n)
        where = (A, n)
        if how == "digit":  # the record and its column, as a careful forger would
            rec = json.loads(payload)
            rec["LAeq"] = float(one_digit(json.dumps(rec["LAeq"])))
            self.sql([("UPDATE minutes SET payload = ?, laeq = ? WHERE device = ? AND n = ?",
                       (json.dumps(rec), rec["LAeq"]) + where)])
        elif how == "delete":
            self.sql([("DELETE FROM minutes WHERE device = ? AND n = ?", where)])
        elif how == "swap":  # the two records exchange their places in the chain
            self.sql([("UPDATE minutes SET n = -1 WHERE device = ? AND n = ?", where),
                      ("UPDATE minutes SET n = ? WHERE device = ? AND n = ?", (n, A, n + 1)),
                      ("UPDATE minutes SET n = ? WHERE device = ? AND n = -1", (n + 1, A))])
        elif how == "insert":
            rec = dict(json.loads(payload), LAeq=45.0, start="2026-07-15T10:00:00.000Z")
            self.sql([("INSERT INTO minutes (device, start, site, seq, ms, laeq, n, mac, payload) "
                       "VALUES (?, ?, 'square', 0, 0, 45.0, ?, ?, ?)",
                       (A, rec["start"], n, os.urandom(16).hex(), json.dumps(rec)))])
        elif how == "replay":
            b_payload, b_mac, b_laeq = self.row(B, n)
            self.sql([("UPDATE minutes SET payload = ?, mac = ?, laeq = ? WHERE device = ? AND n = ?",
                       (b_payload, b_mac, b_laeq) + where)])


SOURCES = {"pulled": Pulled, "log": Log, "db": Db}
EXPECTED = {"digit": ("altered", TAMPERED_N), "delete": ("removed", TAMPERED_N + 1),
            "swap": ("reordered", TAMPERED_N + 1), "insert": ("inserted", TAMPERED_N),
            "replay": ("replayed", TAMPERED_N)}


def minute_chain(result: v.Result, device: str = A) -> v.ChainResult:
    return next(c for c in result.chains if c.device == device and c.kind == "minute")


@pytest.mark.parametrize("source", SOURCES)
def test_honest_evening_verifies_clean(source, devices, tmp_path):
    """Reboots, a clock step back with its audit record, an episode: every record of every chain is valid."""
    src = SOURCES[source](tmp_path, devices["records"])
    result = v.verify(src.sources, str(devices["keys"]))
    assert result.ok, [c.as_dict() for c in result.chains if c.state != "valid"]
    counts = {(c.device, c.kind): c.valid for c in result.chains}
    for device, records in devices["records"].items():
        for kind in ("minute", "event", "audit"):
            assert counts[(device, kind)] == sum(r["t"] == kind for r in records)
    assert all(c.start_checked and c.start_n == 1 for c in result.chains)


@pytest.mark.parametrize("how", EXPECTED)
@pytest.mark.parametrize("source", SOURCES)
def test_tampering_is_found_and_named(source, how, devices, tmp_path):
    src = SOURCES[source](tmp_path, devices["records"])
    src.tamper(how)
    result = v.verify(src.sources, str(devices["keys"]))
    assert not result.ok
    chain = minute_chain(result)
    kind, n = EXPECTED[how]
    if source == "db" and how == "swap":
        n = TAMPERED_N  # rows have no order but n: record n=10 holds what n=11 signed
    assert chain.state == "failed"
    assert (chain.problem.kind, chain.problem.n) == (kind, n), chain.as_dict()
    # the last trustworthy point: the record before (or the device's own n=10, when it comes before the forged one)
    assert chain.trusted["n"] == TAMPERED_N - 1 or (how == "insert" and chain.trusted["n"] == TAMPERED_N)
    others = [c for c in result.chains if c is not chain]
    assert all(c.state == "valid" for c in others), [c.as_dict() for c in others if c.state != "valid"]


@pytest.mark.parametrize("source", SOURCES)
def test_clock_rolled_back_without_a_clock_step_record(source, devices, tmp_path):
    """The device's records are all genuinely signed, but its clock went back an hour with no clock_step audit
    record (an RTC set back three hours while it was off): named at the first minute after it."""
    signer = Signer(A, devices["signers"][A].key)
    records = evening(signer, rollback_at=60)
    src = SOURCES[source](tmp_path, {A: records, B: devices["records"][B]})
    result = v.verify(src.sources, str(devices["keys"]))
    chain = minute_chain(result)
    assert (chain.problem.kind, chain.problem.n) == ("clock_rollback", 61), chain.as_dict()
    assert chain.trusted["n"] == 60


def test_chain_starting_after_an_overwritten_ring_is_not_an_error(devices, tmp_path):
    """The device's ring overwrote its first records: the folder starts at n=K; it verifies, and says so."""
    records = [r for r in devices["records"][A] if not (r["t"] == "minute" and r["n"] < 30)]
    write_pulled(tmp_path / "a", A, records)
    result = v.verify([str(tmp_path / "a")], str(devices["keys"]))
    chain = minute_chain(result)
    assert result.ok and chain.start_n == 30 and not chain.start_checked
    assert chain.valid == chain.records - 1  # the anchor itself cannot be checked
    assert any("starts at n=30" in note for note in chain.notes)


def test_unsigned_records_are_never_valid(devices, tmp_path):
    records = [{k: x for k, x in r.items() if k != "mac"} for r in devices["records"][A]]
    write_pulled(tmp_path / "a", A, records)
    result = v.verify([str(tmp_path / "a")], str(devices["keys"]))
    assert not result.ok
    assert all(c.state == "unsigned" and c.valid == 0 for c in result.chains)


def test_cli_text_json_exit_codes_and_no_key_in_output(devices, tmp_path):
    src = Pulled(tmp_path, devices["records"])
    keys = [s.key.hex() for s in devices["signers"].values()]
    ok = slm("verify", *src.sources, "--keys", str(devices["keys"]))
    assert ok.returncode == 0, ok.stderr
    assert "all records verified" in ok.stdout
    src.tamper("digit")
    bad = slm("verify", *src.sources, "--keys", str(devices["keys"]), "--json")
    assert bad.returncode == 1, bad.stderr
    got = json.loads(bad.stdout)
    problem = next(c for c in got["chains"] if c["device"] == A and c["kind"] == "minute")["problem"]
    assert problem["kind"] == "altered" and problem["n"] == TAMPERED_N
    text = slm("verify", *src.sources, "--keys", str(devices["keys"]))
    assert text.returncode == 1 and "ALTERED" in text.stdout and f"n={TAMPERED_N}" in text.stdout
    for out in (ok, bad, text):
        assert not any(k in out.stdout + out.stderr for k in keys)


@pytest.mark.parametrize("args, message", [
    (["nowhere/"], "no such file"),
    (["KEYS"], "not a pulled folder"),
    (["SRC", "--keys", "nowhere"], "not a folder of keys"),
])
def test_cli_bad_input_is_one_line_exit_2(args, message, devices, tmp_path):
    write_pulled(tmp_path / "a", A, devices["records"][A])
    args = [str(devices["keys"]) if a == "KEYS" else str(tmp_path / "a") if a == "SRC" else a for a in args]
    if "--keys" not in args:
        args += ["--keys", str(devices["keys"])]
    done = slm("verify", *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
        done.stderr


def test_missing_key_is_bad_input(devices, tmp_path):
    write_pulled(tmp_path / "a", A, devices["records"][A])
    keys = tmp_path / "keys"
    keys.mkdir()
    done = slm("verify", str(tmp_path / "a"), "--keys", str(keys))
    assert done.returncode == 2 and f"no key for device {A}" in done.stderr


# -- the collector's marks ----------------------------------------------------------------------------------------
def marks(url: str, table: str = "minutes") -> dict:
    con = sqlite3.connect(url)
    try:
        return {(d, n): m for d, n, m in con.execute(f"SELECT device, n, verified FROM {table}")}
    finally:
        con.close()


def test_collector_marks_records_on_arrival_even_out_of_order(devices, tmp_path):
    """With the keys, every honest record is stored verified = 1, also when its predecessor arrives after it (a
    store-and-forward resend); a record replayed from another device on this device's topic is stored, marked 0."""
    keys = {d: s.key for d, s in devices["signers"].items()}
    records = list(devices["records"][A])
    j = next(i for i, r in enumerate(records) if r["t"] == "minute" and r["n"] == 20)
    records[j], records[j + 1] = records[j + 1], records[j]
    stolen = dict(next(r for r in devices["records"][B] if r["t"] == "minute" and r["n"] == 5),
                  start="2026-07-15T09:00:00.000Z")
    url = str(tmp_path / "fleet.sqlite")
    write_db(url, {A: records + [stolen]}, keys, batch=7)
    con = sqlite3.connect(url)
    got = {(start, n): m for start, n, m in con.execute("SELECT start, n, verified FROM minutes")}
    con.close()
    assert got.pop((stolen["start"], 5)) == 0  # the replayed record: stored all the same, marked failed
    assert len(got) == sum(r["t"] == "minute" for r in records) and set(got.values()) == {1}
    assert set(marks(url, "audits").values()) == {1} and set(marks(url, "events").values()) == {1}


def test_collector_without_keys_stores_unmarked(devices, tmp_path):
    url = str(tmp_path / "fleet.sqlite")
    write_db(url, {A: devices["records"][A]})
    assert set(marks(url).values()) == {None}


@pytest.fixture(scope="module")
def postgres():
    with Postgres() as pg:
        yield pg


def test_postgresql_same_schema_marks_and_verify(devices, postgres, tmp_path):
    name = "t" + uuid.uuid4().hex[:12]
    subprocess.run([str(postgres.bin / "createdb"), "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "slm", name],
                   check=True, capture_output=True)
    url = f"postgresql://slm@127.0.0.1:{postgres.port}/{name}"
    keys = {d: s.key for d, s in devices["signers"].items()}
    src = Db(tmp_path, devices["records"], url, keys)
    from slm.fleet_db import open_db

    db = open_db(url)
    assert {m for (m,) in db.query("SELECT verified FROM minutes")} == {1}
    db.close()
    assert v.verify(src.sources, str(devices["keys"])).ok
    src.tamper("swap")
    chain = minute_chain(v.verify(src.sources, str(devices["keys"])))
    assert (chain.problem.kind, chain.problem.n) == ("reordered", TAMPERED_N)


def test_an_earlier_collectors_database_gets_the_new_columns_and_verify_leaves_it_alone(devices, tmp_path):
    """A database made before records were signed: `slm verify` refuses it (exit 2) without writing to it; the
    collector adds the tables and columns it lacks and keeps every row."""
    url = tmp_path / "old.sqlite"
    con = sqlite3.connect(url)
    con.execute("CREATE TABLE minutes (device TEXT, start TEXT, site TEXT, seq BIGINT, ms BIGINT, utc TEXT, "
                "local TEXT, s DOUBLE PRECISION, laeq DOUBLE PRECISION, lafmax DOUBLE PRECISION, la10 DOUBLE "
                "PRECISION, la50 DOUBLE PRECISION, la90 DOUBLE PRECISION, lcpeak DOUBLE PRECISION, overload BOOLEAN, "
                "band TEXT, limit_db DOUBLE PRECISION, over BOOLEAN, received TEXT, PRIMARY KEY (device, start))")
    con.execute("CREATE TABLE rejected (id INTEGER PRIMARY KEY AUTOINCREMENT, received TEXT, topic TEXT, "
                "reason TEXT, size BIGINT, payload TEXT)")
    con.execute("INSERT INTO minutes (device, start, laeq) VALUES ('old1', '2026-07-01T00:00:00.000Z', 50.5)")
    con.commit()
    con.close()
    before = url.read_bytes()
    done = slm("verify", str(url), "--keys", str(devices["keys"]))
    assert done.returncode == 2 and "not a database of `slm collect` with signed records" in done.stderr
    assert url.read_bytes() == before
    write_db(str(url), {A: devices["records"][A]}, {A: devices["signers"][A].key})
    con = sqlite3.connect(url)
    assert con.execute("SELECT laeq FROM minutes WHERE device = 'old1'").fetchall() == [(50.5,)]
    assert con.execute("SELECT count(*) FROM minutes WHERE verified = 1").fetchone()[0] == \
        sum(r["t"] == "minute" for r in devices["records"][A])
    con.close()
    assert v.verify([str(url)], str(devices["keys"])).ok  # the old row has no payload: nothing to check


def test_collect_keys_folder_that_is_not_one_is_exit_2(tmp_path):
    done = slm("collect", "--broker", "mqtt://127.0.0.1:1", "--db", str(tmp_path / "f.sqlite"), "--keys",
               str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "not a folder of keys" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_key_file_that_is_not_the_devices_is_named(devices, tmp_path):
    """The audit trail's `key` entry names the key the device signs with (its key_id): a wrong key file is said so."""
    signer = Signer(A, devices["signers"][A].key)
    from slm.firmware import chain

    records = [signer.sign("audit", {"utc": "2026-07-15T11:00:00.000Z", "ms": 0, "what": "key",
                                     "key_id": chain.key_id(signer.key)})] + evening(signer)[1:]
    write_pulled(tmp_path / "a", A, records)
    keys = tmp_path / "keys"
    Signer(A).write_key(keys)  # another key under the device's name
    result = v.verify([str(tmp_path / "a")], str(keys))
    assert not result.ok
    assert all(c.notes and f"names key {chain.key_id(signer.key)}" in c.notes[0] for c in result.chains)


def test_a_source_without_records_is_bad_input(devices, tmp_path):
    write_pulled(tmp_path / "empty", A, [])
    done = slm("verify", str(tmp_path / "empty"), "--keys", str(devices["keys"]))
    assert done.returncode == 2 and "no minute, event or audit records" in done.stderr


def test_a_log_whose_board_is_named_after_its_buffered_records(devices, tmp_path):
    """The monitor opened the port of a running board: the records it had sent meanwhile come first (buffered), the
    reply to `info` that names the board after them; a second connection on the same port is another board."""
    from slm.record_log import RecordLog

    a, b = devices["records"][A], devices["records"][B]
    path = tmp_path / "late.jsonl"
    with RecordLog(path) as log:
        log.write_state("/dev/pts/0", "connected")
        for rec in a[:40]:
            log.write(dict(rec, buffered=True), "/dev/pts/0")
        log.write({"t": "ack", "id": 1, "seq": 9999, "ms": 0, "result": {"serial": A}}, "/dev/pts/0")
        for rec in a[40:]:
            log.write(rec, "/dev/pts/0")
        log.write_state("/dev/pts/0", "connected")  # another board on the port: named by its own hello
        for rec in b[:5]:
            log.write(rec, "/dev/pts/0")
        log.write({"t": "hello", "serial": B, "proto": 2, "seq": 0, "ms": 0}, "/dev/pts/0")
        for rec in b[5:]:
            log.write(rec, "/dev/pts/0")
    result = v.verify([str(path)], str(devices["keys"]))
    assert result.ok, result
    assert {c.device for c in result.chains} == {A, B}
    assert sum(c.records for c in result.chains) == len(a) + len(b)
    # records on a connection nothing names are bad input, never taken for another board's
    bare = tmp_path / "bare.jsonl"
    with RecordLog(bare) as log:
        log.write_state("/dev/pts/0", "connected")
        log.write(a[0], "/dev/pts/0")
    r = slm("verify", str(bare), "--keys", str(devices["keys"]))
    assert r.returncode == 2 and "does not name" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_records_made_before_the_key_was_installed_are_not_covered_but_not_a_failure(tmp_path):
    """A board that measured before it got its key: its first records are unsigned; the `key` audit entry (signed,
    the first of its chain) says where each chain begins. Those before are counted apart; an unsigned record after
    it is still a failure, and so is a `key` entry whose MAC does not check out (it could claim any start)."""
    from tests.chain_records import BASE_MS, audit, minute

    device = "a0b1c2000009"
    signer = Signer(device)
    keys = tmp_path / "keys"
    signer.write_key(keys)
    unsigned = [dict(audit(BASE_MS, 500, "boot", cause="power_on"), t="audit", n=1, seq=0),
                dict(audit(BASE_MS + 900, 900, "firmware", sha256="ab" * 8), t="audit", n=2, seq=1)]
    unsigned += [dict(minute(BASE_MS + i * 60000, (i + 1) * 60000, 50.0), t="minute", n=i + 1, seq=2 + i)
                 for i in range(5)]
    signer.n.update(minute=5, audit=2)
    signer.seq = 10
    signed = [signer.sign("audit", audit(BASE_MS + 301000, 301000, "key", key_id="e0c3ea00", minute_n=6, event_n=1))]
    signed += [signer.sign("minute", minute(BASE_MS + i * 60000, (i + 1) * 60000, 52.0)) for i in range(5, 12)]

    def check(records, name):
        write_pulled(tmp_path / name, device, records)
        return v.verify([str(tmp_path / name)], str(keys))

    result = check(unsigned + signed, "honest")
    assert result.ok, result
    by = {c.kind: c for c in result.chains}
    assert (by["minute"].before_key, by["minute"].valid, by["audit"].before_key) == (5, 7, 2)
    r = slm("verify", str(tmp_path / "honest"), "--keys", str(keys))
    assert r.returncode == 0 and "7 made before the key was installed are not covered" in r.stdout
    stripped = [{k: x for k, x in rec.items() if not (k == "mac" and rec["t"] == "minute" and rec["n"] == 8)}
                for rec in unsigned + signed]
    result = check(stripped, "stripped")
    assert not result.ok and {c.kind: c for c in result.chains}["minute"].problem.kind == "unsigned"
    forged = [dict(rec, minute_n=9) if rec.get("what") == "key" else rec for rec in unsigned + signed]
    result = check(forged, "forged")
    assert not result.ok and all(c.before_key == 0 for c in result.chains)
