"""The audit trail and the record chains on the device (firmware/audit.py, chain.py, app.py on the MicroPython unix
port, issue 12): a board with a key signs every minute, event and audit record so that CPython's hmac over
chain.body verifies them; the chains run on across restarts and power cuts; changes are audited with before and
after; the audit ring refuses changes rather than overwrite what stored data needs; the key never leaves the board."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from slm.firmware import chain
from slm.firmware import record_ring as rr
from slm.firmware_engine import micropython_binary
from tests.test_device_app import line, parse
from tests.test_minute import BAND_60, make_device, minutes_of, run, write_audio

pytestmark = pytest.mark.micropython

KEY = bytes.fromhex("5a17c0ffee" * 6 + "0102")
SERIAL = "slm-test-0001"
READ_RING = r"""
import json, record_ring
ring = record_ring.RecordRing()
out = {}
for kind in ("minute", "event", "audit"):
    recs, n = [], ring.info()[kind]["first"]
    while True:
        got = ring.read(kind, n, 50)
        if not got:
            break
        recs += got
        n = got[-1]["n"] + 1
    out[kind] = recs
print(json.dumps(out))
"""


def keyed_device(tmp_path: Path, levels, utc="2026-07-15T21:58:00.000Z", key: bytes | None = KEY) -> Path:
    d = make_device(tmp_path, levels, utc, {"bands": BAND_60, "episode_min_minutes": 1})
    (d / "device_id.txt").write_text(SERIAL + "\n")
    if key is not None:
        (d / "slm_key.bin").write_bytes(key)
    return d


def ring_of(d: Path) -> dict:
    (d / "read_ring.py").write_text(READ_RING)
    r = subprocess.run([micropython_binary(), "read_ring.py"], cwd=d, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def signed(recs: list[dict]) -> dict[str, list[dict]]:
    return {k: [r for r in recs if r["t"] == k] for k in ("minute", "event", "audit")}


def check_chain(kind: str, recs: list[dict], key: bytes = KEY, device: str = SERIAL,
                restarts: tuple[int, ...] = ()) -> None:
    """Every record of one chain verifies with CPython's hmac over chain.body, each linked to the one before
    (n consecutive; a chain starts with 16 zero bytes at the first n or at an n in ``restarts``)."""
    assert recs, kind
    prev = bytes(16)
    for i, rec in enumerate(recs):
        if i:
            assert rec["n"] == recs[i - 1]["n"] + 1, (kind, rec)
        if i == 0 or rec["n"] in restarts:
            prev = bytes(16)
        msg = (b"slm1" + device.encode() + b"\0" + kind.encode() + b"\0" + rec["n"].to_bytes(4, "big") + prev
               + chain.body(kind, rec))
        want = hmac.new(key, msg, hashlib.sha256).digest()[:16]
        assert rec["mac"] == want.hex(), (kind, rec)
        prev = want


def test_a_keyed_board_signs_minutes_events_and_audit_entries_that_cpython_verifies(tmp_path):
    levels = minutes_of([55.0, 65.0, 66.0, 50.0]) + [50.0]  # an episode opens and closes: events
    d = keyed_device(tmp_path, levels)
    cmds = (line({"cmd": "set", "id": 1, "values": {"episode_min_minutes": 2, "tz_min": 60}})
            + line({"cmd": "calibrate", "id": 2, "record": {"method": "calibrator", "offset_db": 0.5,
                                                          "reference": {"level_db": 94.0}, "readings": [93.5],
                                                          "time": "2026-07-15T21:00:00Z"}})
            + line({"cmd": "time", "id": 3, "utc": "2026-07-15T21:58:30.000Z"})
            + line({"cmd": "calibrate", "id": 4, "record": {"method": "check", "reference": {"level_db": 94.0},
                                                          "readings": [94.62], "drift_db": 0.62,
                                                          "time": "2026-07-15T22:00:00Z"}}))
    recs = run(d, cmds)
    assert [r["t"] for r in recs if r["t"] in ("ack", "error")] == ["ack"] * 4
    hello = recs[0]
    assert hello["key_id"] == hashlib.sha256(KEY).hexdigest()[:8] and hello["serial"] == SERIAL
    by = signed(recs)
    assert len(by["minute"]) >= 4 and {e["kind"] for e in by["event"]} >= {"exceedance_start", "clock_step"}
    for kind, chain_recs in by.items():
        check_chain(kind, chain_recs)
        assert chain_recs[0]["n"] == 1
    # what was sent is what was stored: the same fields, n and mac, byte for byte the same body
    stored = ring_of(d)
    for kind in ("minute", "event", "audit"):
        assert [r["n"] for r in stored[kind]] == [r["n"] for r in by[kind]]
        for s, w in zip(stored[kind], by[kind]):
            assert s["mac"] == w["mac"] and chain.body(kind, s) == chain.body(kind, w)
            assert s == w
    # the audit trail of the session: the key starts the chains, then boot and firmware, then the changes
    audit = by["audit"]
    whats = [a["what"] for a in audit]
    assert whats[:3] == ["key", "boot", "firmware"] and audit[0]["key_id"] == hello["key_id"]
    assert audit[0]["seq"] == 1  # right after hello: every signed record follows it
    assert audit[1]["cause"] == "power_on"
    fw = [a for a in audit if a["what"] == "firmware"]
    files = {}
    for part in fw:
        files.update(part["files"])
        assert part["parts"] == len(fw) and ("sha256" in part) == (part["part"] == 1)
    on_disk = sorted(p.name for p in d.iterdir()
                     if (p.suffix in (".py", ".mpy") or p.name == "board.json") and p.name != "read_ring.py")
    assert sorted(files) == on_disk
    for name in on_disk:
        assert files[name] == hashlib.sha256((d / name).read_bytes()).hexdigest()[:8]
    configs = {a["key"]: (a["before"], a["after"]) for a in audit if a["what"] == "config"}
    assert configs == {"episode_min_minutes": (1, 2), "tz_min": (480, 60)}
    cal, check = [a for a in audit if a["what"] == "calibration"]
    assert (cal["kind"], cal["method"], cal["before"], cal["after"], cal["cal_n"]) == ("calibrate", "calibrator",
                                                                                     0.0, 0.5, 1)
    assert cal["reference"] == {"level_db": 94.0} and cal["time"] == "2026-07-15T21:00:00Z" and "drift_db" not in cal
    # a check changes no offset and carries its drift (reports flag the data after a drift over 0.5 dB)
    assert (check["kind"], check["before"], check["after"], check["drift_db"]) == ("check", 0.5, 0.5, 0.62)
    (step,) = [a for a in audit if a["what"] == "clock_step"]
    assert step["to"].startswith("2026-07-15T21:58:30") and step["step_s"] > 29 and step["source"] == "host"
    # each entry says which minute and event came next: the trail is placed among the data
    assert all(isinstance(a["minute_n"], int) and isinstance(a["event_n"], int) for a in audit)


def test_the_chains_run_on_across_a_clean_restart_and_a_power_cut(tmp_path):
    d = keyed_device(tmp_path, minutes_of([55.0, 65.0]) + [50.0])
    first = run(d)
    write_audio(d, minutes_of([66.0, 50.0]) + [50.0])
    second = run(d)  # the audio of the first run ended: a clean stop
    # a power cut: killed while measuring (audio that lasts); then a start after it
    write_audio(d, [55.0] * 600)
    p = subprocess.Popen([micropython_binary(), "main.py"], cwd=d, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    got: list[bytes] = []
    two_minutes = threading.Event()

    def read() -> None:
        count = 0
        for raw in p.stdout:
            got.append(raw)
            count += b'"t":"minute"' in raw
            if count >= 2:
                two_minutes.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert two_minutes.wait(timeout=240)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    reader.join(timeout=60)
    third = [r for r in (parse(x.decode()) for x in got) if r is not None]
    write_audio(d, minutes_of([50.0]) + [50.0])
    fourth = run(d)
    sessions = (first, second, third, fourth)
    for kind in ("minute", "event", "audit"):
        sent = [r for s in sessions for r in signed(s)[kind]]
        stored = ring_of(d)[kind]
        # a power cut can lose at most the record being written; the ring's chain is whole and continuous
        check_chain(kind, stored)
        sent_n = {r["n"]: r["mac"] for r in sent}
        assert all(sent_n.get(r["n"], r["mac"]) == r["mac"] for r in stored)
    boots = [a for s in (second, third, fourth) for a in signed(s)["audit"] if a["what"] in ("boot", "power_loss")]
    assert [a["what"] for a in boots] == ["boot", "boot", "power_loss", "boot"]
    loss = boots[2]
    assert loss["last_n"] >= 1 and loss["last_utc"] is not None
    # the key and the firmware did not change: no new key or firmware entry after the first start
    later = [a["what"] for s in (second, third, fourth) for a in signed(s)["audit"]]
    assert "key" not in later and "firmware" not in later


def test_a_board_without_a_key_sends_no_mac_and_a_new_key_starts_new_chains(tmp_path):
    d = keyed_device(tmp_path, minutes_of([55.0, 65.0, 66.0]) + [66.0], key=None)  # ends in an open episode
    first = run(d)
    assert first[0]["key_id"] is None
    assert all("mac" not in r and "n" not in r for r in first if r["t"] in ("minute", "event", "audit"))
    assert [a["what"] for a in signed(first)["audit"]][:2] == ["boot", "firmware"]
    (d / "slm_key.bin").write_bytes(KEY)
    write_audio(d, minutes_of([55.0]) + [50.0])
    second = run(d)
    by = signed(second)
    key_entry = by["audit"][0]
    assert key_entry["what"] == "key" and key_entry["key_id"] == second[0]["key_id"] and key_entry["seq"] == 1
    # the chains start at the key: its audit entry, the interrupted episode's end and the first minute after it link
    # to 16 zero bytes
    (end,) = by["event"]
    assert end["kind"] == "exceedance_end" and end["interrupted"] is True and end["n"] == key_entry["event_n"]
    for kind in ("minute", "event", "audit"):
        check_chain(kind, by[kind])
    assert by["minute"][0]["n"] == key_entry["minute_n"] and by["minute"][0]["n"] > 1
    # and they run on from there after a restart
    write_audio(d, minutes_of([66.0, 67.0, 50.0]) + [50.0])
    third = run(d)
    assert [e["kind"] for e in signed(third)["event"]] == ["exceedance_start", "exceedance_end"]
    for kind in ("minute", "event", "audit"):
        check_chain(kind, by[kind] + signed(third)[kind])


def test_the_key_never_leaves_the_board(tmp_path):
    """A whole session of commands, the records, the pulled slots and the device's own output: no key bytes, no
    key in hex or base64."""
    d = keyed_device(tmp_path, minutes_of([55.0, 65.0]) + [50.0])
    cmds = [{"cmd": "info"}, {"cmd": "get"}, {"cmd": "get", "keys": ["bands", "status"]}, {"cmd": "ring"},
            {"cmd": "set", "values": {"tz_min": 0}}, {"cmd": "stream", "hz": 1}, {"cmd": "cal_history"},
            {"cmd": "calibrate", "record": {"method": "check", "note": "slm_key.bin", "readings": [94.0],
                                             "reference": {"level_db": 94.0}, "time": "2026-07-15T21:00:00Z"}},
            {"cmd": "get", "keys": ["slm_key.bin"]}, {"cmd": "pull", "kind": "../slm_key.bin"}, {"cmd": "reset"}]
    cmds += [{"cmd": "pull", "kind": k, "from": 0} for k in ("minute", "event", "audit")]
    r = subprocess.run([micropython_binary(), "main.py"], cwd=d,
                       input=b"".join(line(dict(c, id=i)) for i, c in enumerate(cmds)), capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout + r.stderr
    recs = [x for x in (parse(t) for t in r.stdout.decode().splitlines()) if x is not None]
    assert len([x for x in recs if x["t"] in ("ack", "error")]) == len(cmds)
    pulled = b"".join(base64.b64decode(s) for x in recs if x["t"] == "ack" and x["cmd"] == "pull"
                      for s in x["result"]["records"])
    ring_files = b"".join(p.read_bytes() for p in d.glob("ring_*/*"))
    others = b"".join(p.read_bytes() for p in d.iterdir() if p.is_file() and p.name != "slm_key.bin")
    assert len(pulled) > 0 and len(ring_files) > 0
    for blob in (out, pulled, ring_files, others):
        for form in (KEY, KEY.hex().encode(), KEY.hex().upper().encode(), base64.b64encode(KEY),
                     base64.b64encode(KEY)[:40]):
            assert form not in blob
    assert any(x["t"] == "ack" and x["cmd"] == "info" and x["result"]["key_id"] for x in recs)


# a device's small ring (10 minutes, 4 events, 24 audit entries) and its audit trail, records kept in `sent`
SMALL_TRAIL = r"""
import json, record_ring, audit
ring = record_ring.RecordRing('.', minutes=10, events_bytes=4 * record_ring.EVENT_SLOT, audits=24)
sent = []
def emit(kind, fields):
    rec = dict(fields)
    rec['t'] = kind
    ring.add(rec, trail.signer())
    sent.append(rec)
trail = audit.Trail(ring, 'dev', emit)
trail.recover()
"""
AUDIT_FULL = SMALL_TRAIL + r"""
ring.add({'t': 'minute', 'LAeq': 50.0}, trail.signer())
allowed = 0
while trail.room(1):
    trail.write('config', {'key': 'tz_min', 'before': allowed, 'after': allowed + 1})
    allowed += 1
own = 0
while trail.write('fault', {'name': 'f%d' % own}, own=True):
    own += 1
lost_before = trail.lost
print(json.dumps([allowed, own, lost_before, ring.info()['audit']]))
for i in range(10):  # the minutes the trail was kept for age out of their ring
    ring.add({'t': 'minute', 'LAeq': 50.0}, trail.signer())
print(json.dumps([trail.room(1), trail.write('boot', {'cause': 'x'}, own=True)]))
print(json.dumps([r for r in sent[-2:]]))
"""


def test_the_audit_ring_refuses_changes_rather_than_overwrite_what_stored_data_needs(tmp_path):
    d = tmp_path / "fw"
    d.mkdir()
    for name in ("record_ring.py", "audit.py", "chain.py"):
        (d / name).write_bytes((Path(rr.__file__).parent / name).read_bytes())
    (d / "slm_key.bin").write_bytes(KEY)
    (d / "script.py").write_text(AUDIT_FULL)
    r = subprocess.run([micropython_binary(), "script.py"], cwd=d, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    first, second, last = (json.loads(x) for x in r.stdout.splitlines())
    allowed, own, lost, info = first
    assert allowed == 24 - 1 - 16  # changes (after the key's entry) while more than the reserve of 16 is left
    assert 1 + allowed + own == 24 and lost == 1  # the device's own entries use the reserve, then are counted
    assert info["first"] == 1 and info["last"] == 24  # nothing overwritten
    assert second == [True, True]  # the minutes aged out: the oldest entries may go now
    assert last[0]["what"] == "audit_full" and last[0]["lost"] == 1 and last[1]["what"] == "boot"
    assert last[1]["n"] == 26 and last[0]["mac"] and last[1]["mac"]


def test_changing_commands_are_refused_with_audit_full_and_change_nothing(tmp_path):
    d = keyed_device(tmp_path, [50.0] * 3)
    # a trail filled up before the oldest stored minute: written by the firmware itself on the unix port
    script = (READ_RING.split("out = {}")[0] + "import audit\n"
              "ring = record_ring.RecordRing()\n"
              "ring.add({'t': 'minute', 'LAeq': 50.0})\n"
              "t = audit.Trail(ring, 'x', lambda k, f: ring.add(dict(f, t=k)))\n"
              "t.recover()\n"
              "while t.write('fault', {'name': 'filler'}, own=True):\n    pass\n"
              "print(json.dumps(ring.info()['audit']))\n")
    (d / "fill.py").write_text(script)
    r = subprocess.run([micropython_binary(), "fill.py"], cwd=d, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["count"] == rr.AUDITS
    config_before = (d / "config.json").read_bytes()
    cmds = (line({"cmd": "set", "id": 1, "values": {"tz_min": 0}})
            + line({"cmd": "time", "id": 2, "utc": "2026-07-15T23:00:00.000Z"})
            + line({"cmd": "calibrate", "id": 3, "record": {"method": "check", "reference": {"level_db": 94.0},
                                                          "readings": [94.0], "time": "2026-07-15T21:00:00Z"}})
            + line({"cmd": "get", "id": 4, "keys": ["tz_min"]}))
    recs = run(d, cmds)
    errors = {e["id"]: e["code"] for e in recs if e["t"] == "error"}
    assert errors == {1: "audit_full", 2: "audit_full", 3: "audit_full"}
    (got,) = [a for a in recs if a["t"] == "ack"]
    assert got["result"] == {"tz_min": 480} and (d / "config.json").read_bytes() == config_before
    assert not (d / "calibration.json").exists()


def pull_all(link, kind: str) -> list[dict]:
    """Every stored record of ``kind``, through `pull` (a few audit entries a reply)."""
    out: list[dict] = []
    nxt, last = 0, 1
    while nxt <= last:
        got = link.send("pull", kind=kind, timeout=30.0, **{"from": nxt})["result"]
        out += [rr.decode(kind, base64.b64decode(s)) for s in got["records"]]
        nxt, last = got["next"], got["last"]
    return out


def test_a_virtual_board_given_a_key_installs_it_unreadable_by_others_and_signs(tmp_path):
    """`slm virtual --key FILE` / VirtualBoard(key=...): slm_key.bin (mode 0600) in the device folder, hello's key_id,
    signed records; a key file that is not a key is refused with one line and exit 2, before anything starts."""
    from click.testing import CliRunner

    from slm.cli import main
    from slm.link import DeviceLink
    from slm.virtual_board import VirtualBoard

    from slm.pull import pull_record

    d = tmp_path / "board"
    with VirtualBoard("calibrator", speed=0, device_dir=d, key=KEY) as vb:
        with DeviceLink(vb.port, timeout=10.0) as link:
            info = link.info()
            reply = link.send("pull", kind="audit", **{"from": 0})["result"]
            pull_record(link, tmp_path / "pulled")  # `slm pull`'s files
            link.read_records()  # what came before (the first hello)
            link.reboot()  # the reboot command: a `reboot` entry, then after the restart a `boot` whose cause says so
            deadline = time.monotonic() + 120
            while not any(r.get("t") == "hello" for r in link.read_records(timeout=1.0)):
                assert time.monotonic() < deadline, "no hello after the reboot"
            audit_all = pull_all(link, "audit")
    assert info["key_id"] == hashlib.sha256(KEY).hexdigest()[:8]
    assert (d / "slm_key.bin").read_bytes() == KEY and (d / "slm_key.bin").stat().st_mode & 0o777 == 0o600
    audit = [rr.decode("audit", base64.b64decode(s)) for s in reply["records"]]
    assert audit[0]["what"] == "key" and audit[0]["key_id"] == info["key_id"]
    check_chain("audit", audit, device=info["serial"])
    whats = [(a["what"], a.get("why"), a.get("cause")) for a in audit_all]
    i = whats.index(("reboot", "command", None))
    assert whats[i + 1] == ("boot", None, "reboot")
    check_chain("audit", audit_all, device=info["serial"])  # one chain across the reboot
    pulled = b"".join(p.read_bytes() for p in (tmp_path / "pulled").iterdir() if p.is_file())
    for form in (KEY, KEY.hex().encode(), KEY.hex().upper().encode(), base64.b64encode(KEY)):
        assert form not in pulled
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"\x00" * 31)
    with CliRunner().isolation() as (out, err, _):
        try:
            main(["virtual", "--key", str(bad), "--dir", str(tmp_path / "other")])
            code = 0
        except SystemExit as e:
            code = e.code
        assert code == 2 and out.getvalue() == b"" and err.getvalue().count(b"\n") == 1, err.getvalue()
    assert not (tmp_path / "other").exists()


KEY_AGES_OUT = SMALL_TRAIL + r"""
trail.boot()
for i in range(60):  # a long life: minutes age out, and so do the oldest audit entries, the key's among them
    for k in range(10):
        emit('minute', {'LAeq': 50.0 + k})
    trail.write('fault', {'name': 'f%d' % i}, own=True)
first = ring.info()['audit']['first']
again = audit.Trail(ring, 'dev', emit)  # a restart
again.recover()
again.boot()
emit('minute', {'LAeq': 40.0})
print(first)
for rec in sent:
    print(json.dumps(rec))
"""


def test_a_key_entry_that_aged_out_of_the_audit_ring_is_not_taken_for_a_new_key(tmp_path):
    d = tmp_path / "fw"
    d.mkdir()
    for name in ("record_ring.py", "audit.py", "chain.py"):
        (d / name).write_bytes((Path(rr.__file__).parent / name).read_bytes())
    (d / "slm_key.bin").write_bytes(KEY)
    (d / "script.py").write_text(KEY_AGES_OUT)
    r = subprocess.run([micropython_binary(), "script.py"], cwd=d, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    first, sent = int(lines[0]), [json.loads(x) for x in lines[1:]]
    assert first > 1  # the key's entry (n = 1) was overwritten
    assert [a["what"] for a in sent if a["t"] == "audit"].count("key") == 1  # the restart wrote no second one
    for kind in ("minute", "audit"):
        check_chain(kind, [x for x in sent if x["t"] == kind], device="dev")  # one chain each, across the restart
