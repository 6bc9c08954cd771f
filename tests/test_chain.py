"""firmware/chain.py: HMAC-SHA256 against CPython's hmac (on the MicroPython unix port and on CPython), a record's
canonical body (record_ring's packer, the same bytes on both and in the slot) and the chain link."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import shutil
import subprocess
from pathlib import Path

from slm.firmware import chain
from slm.firmware import record_ring as rr
from slm.firmware_engine import micropython_binary
from slm.resources import firmware_dir


def cases(seed: int = 12) -> list[tuple[bytes, bytes]]:
    """Keys and messages of every awkward length: empty, one byte, a block (64), longer than a block."""
    rnd = random.Random(seed)
    out = []
    for klen in (0, 1, 31, 32, 63, 64, 65, 100, 200):
        for mlen in (0, 1, 55, 56, 64, 65, 300):
            out.append((rnd.randbytes(klen), rnd.randbytes(mlen)))
    return out


def run_mp(tmp_path: Path, script: str) -> list:
    d = tmp_path / "fw"
    d.mkdir(exist_ok=True)
    for name in ("chain.py", "record_ring.py"):
        shutil.copy(firmware_dir() / name, d)
    (d / "script.py").write_text(script)
    r = subprocess.run([micropython_binary(), "script.py"], cwd=d, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_hmac_sha256_equals_cpython_hmac_on_cpython():
    for key, msg in cases():
        assert chain.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_hmac_sha256_equals_cpython_hmac_on_the_micropython_unix_port(tmp_path):
    pairs = cases(7)
    (tmp_path / "cases.json").write_text(json.dumps([[k.hex(), m.hex()] for k, m in pairs]))
    got = run_mp(tmp_path, "import json, chain\nfrom binascii import unhexlify, hexlify\n"
                           "for k, m in json.load(open('../cases.json')):\n"
                           "    print(json.dumps(hexlify(chain.hmac_sha256(unhexlify(k), unhexlify(m))).decode()))\n")
    assert got == [hmac.new(k, m, hashlib.sha256).hexdigest() for k, m in pairs]


MINUTE = {"t": "minute", "utc": "2026-07-15T21:01:00.000Z", "ms": 123456, "start": "2026-07-15T21:00:00.000Z",
          "local": "23:00", "s": 60, "LAeq": 61.23, "LAFmax": 75.5, "LA10": 63.1, "LA50": 60.0, "LA90": 55.55,
          "LCpeak": 99.99, "overload": False, "band": "night", "limit": 55, "over": True, "seq": 42}
EVENT = {"t": "event", "utc": "2026-07-15T22:00:00.250Z", "ms": 999, "kind": "exceedance_end",
         "start": "2026-07-15T21:00:00.000Z", "end": "2026-07-15T22:00:00.000Z", "duration_s": 3600.125,
         "LAeq": 62.5, "LAFmax": 80.0, "limit": 55, "band": "nuit é", "minutes_over": 60, "interrupted": False,
         "seq": 43, "w": {"b": 1.5, "a": [None, True, "\"\\\n"]}}
AUDIT = {"t": "audit", "utc": "2026-07-15T22:00:01.000Z", "ms": 1000, "seq": 44, "what": "config",
         "minute_n": 10, "event_n": 3, "key": "limit_night", "before": 55, "after": 50.5}


def test_body_is_the_slot_body_and_survives_json_and_decoding():
    """body(rec) == the slot's bytes from STATES_AT on == body(decode(slot)) == body(json round trip); t, n, mac
    are not in it."""
    for rec in (MINUTE, EVENT, AUDIT):
        kind = rec["t"]
        b = chain.body(kind, rec)
        assert rr.pack(kind, rec, bytearray(512))[1] == 0  # nothing left out
        slot = bytearray(rr.SCHEMAS[kind][1])
        rr.encode(kind, rec, 5, slot, bytearray(512), b"\x11" * 16)
        assert bytes(slot[rr.STATES_AT:rr.STATES_AT + len(b)]) == b
        got = rr.decode(kind, slot)
        assert got["n"] == 5 and got["mac"] == "11" * 16
        assert chain.body(kind, got) == b
        assert chain.body(kind, json.loads(json.dumps(rec))) == b
        assert chain.body(kind, dict(rec, n=9, mac="00" * 16)) == b
        changed = dict(rec, seq=rec["seq"] + 1)
        assert chain.body(kind, changed) != b


def test_body_and_link_are_the_same_bytes_on_micropython(tmp_path):
    key = bytes(range(32))
    (tmp_path / "recs.json").write_text(json.dumps([MINUTE, EVENT, AUDIT]))
    got = run_mp(tmp_path, "import json, chain\nfrom binascii import hexlify\n"
                           "key = bytes(range(32))\nprev = chain.ZERO_MAC\n"
                           "for i, rec in enumerate(json.load(open('../recs.json'))):\n"
                           "    b = chain.body(rec['t'], rec)\n"
                           "    prev = chain.link(key, 'slm-a1', rec['t'], i + 1, prev, b)\n"
                           "    print(json.dumps([hexlify(b).decode(), hexlify(prev).decode(), chain.key_id(key)]))\n")
    prev = bytes(16)
    for i, rec in enumerate((MINUTE, EVENT, AUDIT)):
        b = chain.body(rec["t"], rec)
        msg = b"slm1slm-a1\0" + rec["t"].encode() + b"\0" + (i + 1).to_bytes(4, "big") + prev + b
        prev = hmac.new(key, msg, hashlib.sha256).digest()[:16]
        assert got[i] == [b.hex(), prev.hex(), hashlib.sha256(key).hexdigest()[:8]]
        assert chain.link(key, "slm-a1", rec["t"], i + 1, bytes(16) if i == 0 else bytes.fromhex(got[i - 1][1]),
                          b) == prev
