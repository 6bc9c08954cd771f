"""The device's own record (firmware/record_ring.py): its binary slots, the rings on the MicroPython unix port
(wraparound, capacity, recovery at boot, corrupt slots, open episodes) and power cuts (kill -9 while appending)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slm.firmware import record_ring as rr
from slm.firmware_engine import micropython_binary
from slm.resources import firmware_dir

BASE_MS = rr.parse_time("2026-07-15T13:50:00.000Z")[0]


def minute(i: int, **over) -> dict:
    """A minute record as the app builds it (helper A's fields, docs/protocol.md)."""
    rec = {"t": "minute", "utc": rr.format_time(BASE_MS + 60000 * (i + 1)), "ms": 60000 * (i + 1),
           "start": rr.format_time(BASE_MS + 60000 * i), "local": "%02d:%02d" % (21 + i // 60 % 3, i % 60),
           "s": 60, "LAeq": round(50 + (i % 3000) / 100, 2), "LAFmax": 71.25, "LA10": 55.5, "LA50": 50.01,
           "LA90": 45.0, "LCpeak": None if i % 7 == 0 else 92.34, "overload": i % 11 == 0, "band": "dance",
           "limit": 80, "over": i % 5 == 0}
    rec.update(over)
    return rec


def event(i: int, kind: str = "night_max") -> dict:
    rec = {"t": "event", "utc": rr.format_time(BASE_MS + 60000 * i + 250), "ms": 60000 * i + 250, "kind": kind}
    if kind == "exceedance_start":
        rec.update(start=rr.format_time(BASE_MS + 60000 * i), limit=55, band="day", LAeq=61.5)
    elif kind == "exceedance_end":
        rec.update(start=rr.format_time(BASE_MS), end=rr.format_time(BASE_MS + 60000 * i), duration_s=60 * i,
                   LAeq=63.07, LAFmax=88.8, limit=55, band="day", minutes_over=i, interrupted=False)
    else:
        rec.update(time=rr.format_time(BASE_MS + 60000 * i), LAFmax=77.7, limit=60, band="night")
    return rec


def stored(rec: dict, n: int) -> dict:
    return dict(rec, n=n)


def flash(tmp_path: Path) -> Path:
    d = tmp_path / "flash"
    d.mkdir()
    shutil.copy(firmware_dir() / "record_ring.py", d)
    return d


def run_mp(d: Path, script: str, timeout: float = 60) -> list:
    """Run a script with record_ring on the MicroPython unix port in ``d``; its stdout lines as JSON values."""
    (d / "script.py").write_text(script)
    r = subprocess.run([micropython_binary(), "script.py"], cwd=d, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr + r.stdout
    return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]


RING_SMALL = "rr.RecordRing('.', minutes=60, events_bytes=20 * rr.EVENT_SLOT)"


def close(a, b) -> bool:
    """Records equal; floats within 1e-9 (MicroPython's float repr is not the shortest one)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) < 1e-9
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return a == b


# -- the binary slots (CPython: the same module the device runs) -----------------------------------------------------
levels = st.one_of(st.none(), st.integers(-12000, 32000).map(lambda c: c / 100))
times = st.integers(0, 253402300799999).map(lambda ms: rr.format_time(ms))
texts = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=16)


@st.composite
def minute_records(draw):
    rec = {"t": "minute", "utc": draw(st.one_of(st.none(), times)), "ms": draw(st.integers(0, 2 ** 48 - 1)),
           "start": draw(st.one_of(st.none(), times)),
           "local": draw(st.integers(0, 1439).map(lambda m: "%02d:%02d" % (m // 60, m % 60))),
           "s": draw(st.one_of(st.integers(0, 60), st.integers(0, 60000).map(lambda c: c / 1000))),
           "overload": draw(st.booleans()), "band": draw(st.one_of(st.none(), texts)),
           "limit": draw(st.one_of(st.none(), st.integers(20, 140), st.integers(2000, 14000).map(lambda c: c / 100))),
           "over": draw(st.one_of(st.none(), st.booleans()))}
    for k in ("LAeq", "LAFmax", "LA10", "LA50", "LA90", "LCpeak"):
        rec[k] = draw(levels)
    for k in draw(st.sets(st.sampled_from(sorted(rec.keys() - {"t"})))):
        del rec[k]  # any field may be missing
    return rec


@st.composite
def event_records(draw):
    kind = draw(st.sampled_from(rr.EVENT_KINDS + ("something_new",)))
    rec = {"t": "event", "kind": kind, "utc": draw(times), "ms": draw(st.integers(0, 2 ** 48 - 1))}
    optional = {"start": times, "end": times, "time": times, "from": times, "to": times,
                "duration_s": st.one_of(st.integers(0, 10 ** 6), st.floats(0, 1e6)),
                "LAeq": levels, "LAFmax": levels, "limit": st.integers(20, 140), "band": st.one_of(st.none(), texts),
                "minutes_over": st.integers(0, 100000), "interrupted": st.booleans(),
                "step_s": st.floats(-1e9, 1e9, allow_nan=False)}
    for k in draw(st.sets(st.sampled_from(sorted(optional)), max_size=10)):
        rec[k] = draw(optional[k])
    return rec


def round_trip(kind: str, rec: dict, n: int = 7) -> tuple[dict, int]:
    slot = bytearray(rr.SCHEMAS[kind][1])
    left_out = rr.encode(kind, rec, n, slot, bytearray(512))
    return rr.decode(kind, slot), left_out


def uncut(got: dict, rec: dict) -> dict:
    """``got`` with its band put back when the slot kept a cut of it: the start of the name, cut at a character."""
    band = rec.get("band")
    if isinstance(band, str) and got.get("band") != band:
        assert band.startswith(got["band"]) and len(got["band"]) < len(band)
        assert len(got["band"].encode()) >= 16 or not got["band"]  # cut only as far as the room needs
        got = dict(got, band=band)
    return got


@settings(max_examples=400, deadline=None)
@given(minute_records(), st.integers(1, 2 ** 32 - 1))
def test_every_minute_field_round_trips_through_its_slot(rec, n):
    got, left_out = round_trip("minute", rec, n)
    if rec.get("band") != got.get("band"):  # a name of more than 30 bytes (UTF-8) is cut to fit the slot
        assert len(rec["band"].encode()) > 30 and len(got["band"].encode()) > 30 - 4
    assert uncut(got, rec) == stored(rec, n) and left_out == 0


@settings(max_examples=400, deadline=None)
@given(event_records())
def test_every_event_field_round_trips_through_its_slot(rec):
    """Every field comes back as it went in; a float that is not a level comes back at 0.001 (the device quantises
    it so before sending it: chain.body)."""
    got, left_out = round_trip("event", rec)
    want = {k: rr.quantise(v) if k in ("duration_s", "step_s") else v for k, v in rec.items()}
    assert uncut(got, rec) == stored(want, 7) and left_out == 0


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text("abcdefgxyz_", min_size=1, max_size=6).filter(lambda k: k not in ("t", "n")),
                       st.one_of(st.integers(-10, 10), st.booleans(), st.none(), st.text("abc", max_size=4)),
                       max_size=1))
def test_unknown_fields_are_kept_in_the_slot_extras(extra):
    """What the schema does not know goes into the slot's JSON extras (a whole minute leaves 24 bytes for them)."""
    rec = dict(minute(3), **extra)
    assert round_trip("minute", rec)[0] == stored(rec, 7)


@pytest.mark.parametrize("field", [{"start": "2026-07-15T21:50Z"}, {"utc": "2026-07-15T13:50:00.25Z"},
                                   {"LAFmax": 400.0}, {"s": "sixty"}, {"local": "24:00"}, {"over": 1},
                                   {"ms": -5}, {"limit": True}])
def test_values_outside_a_fields_form_are_kept_as_given(field):
    """A time with an offset, a level out of the int16 range, a text where a number belongs: the slot's extras."""
    rec = minute(1, band="d", **field)  # a short band name: a whole minute leaves 28 bytes for extras then
    assert round_trip("minute", rec) == (stored(rec, 7), 0)
    ev = dict(event(2, "clock_step"), **{"from": "2026-07-15T13:50:00Z", "to": "not a time", "step_s": -3600.5})
    assert round_trip("event", ev)[0] == stored(ev, 7)


def test_a_record_that_cannot_fit_leaves_out_its_extras_not_its_fields():
    rec = minute(1, note="x" * 200)
    got, left_out = round_trip("minute", rec)
    assert left_out == 1 and got == stored(minute(1), 7)


def test_a_slot_with_a_flipped_bit_or_cut_short_is_not_a_record():
    slot = bytearray(rr.MINUTE_SLOT)
    rr.encode("minute", minute(5), 9, slot, bytearray(512))
    assert rr.decode("minute", slot)["n"] == 9
    for i in range(rr.MINUTE_SLOT):
        bad = bytearray(slot)
        bad[i] ^= 0x10
        assert rr.decode("minute", bad) is None, i
    assert rr.decode("minute", bytes(rr.MINUTE_SLOT)) is None
    assert rr.decode("minute", b"\xff" * rr.MINUTE_SLOT) is None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(rr.KINDS), st.binary(min_size=8, max_size=8), st.binary(min_size=104, max_size=104))
def test_any_slot_content_with_a_right_crc_decodes_or_is_refused_never_raises(kind, head, body):
    """Whatever a slot holds (another firmware's layout, a bug), decode returns a record or None."""
    import struct
    import zlib

    size = rr.SCHEMAS[kind][1]
    rest = (head + body)[:size - 4]  # n from head, the states and values from body: any bytes at all
    slot = struct.pack("<I", zlib.crc32(rest)) + rest
    got = rr.decode(kind, slot)
    assert got is None or (got["t"] == kind and got["n"] == struct.unpack_from("<I", slot, 4)[0])


def test_default_capacity_holds_a_week_of_minutes_a_month_of_events_and_the_audit_trail_in_1_31_mib():
    """With the 16 mac bytes per slot (issue 12) the rings take 335 blocks of 4 KiB (they took 256 before)."""
    per_min = rr.SEGMENT_BYTES // rr.MINUTE_SLOT
    per_evt = rr.SEGMENT_BYTES // rr.EVENT_SLOT
    per_aud = rr.SEGMENT_BYTES // rr.AUDIT_SLOT
    events = rr.EVENTS_BYTES // rr.EVENT_SLOT
    blocks = -(-rr.MINUTES // per_min) + -(-events // per_evt) + -(-rr.AUDITS // per_aud)
    assert rr.MINUTES >= 7 * 24 * 60 and events >= 30 * 67 and rr.AUDITS >= 512
    assert blocks <= 335


# -- the rings on the MicroPython unix port ---------------------------------------------------------------------------
def test_records_written_on_micropython_read_back_equal_there_and_byte_for_byte_here(tmp_path):
    d = flash(tmp_path)
    rng = random.Random(9)
    recs = [minute(i, band=rng.choice(["day", "night", "广场舞", "dance evening"]), LA90=rng.choice([None, 41.27]))
            for i in range(40)]
    evs = [event(i, rng.choice(rr.EVENT_KINDS[:3])) for i in range(12)]
    (d / "in.json").write_text(json.dumps(recs + evs))
    out = run_mp(d, "import json, record_ring as rr\n"
                    f"ring = {RING_SMALL}\n"
                    "for rec in json.load(open('in.json')):\n    ring.add(rec)\n"
                    "print(json.dumps(ring.read('minute', 0, 100)))\nprint(json.dumps(ring.read('event', 0, 100)))\n"
                    "print(json.dumps(ring.info()))\n")
    want_m = [stored(r, i + 1) for i, r in enumerate(recs)]
    want_e = [stored(r, i + 1) for i, r in enumerate(evs)]
    assert close(out[0], want_m) and close(out[1], want_e)
    assert out[2]["minute"] == {"first": 1, "last": 40, "count": 40, "capacity": 60, "slot": rr.MINUTE_SLOT}
    here = rr.RecordRing(str(d), minutes=60, events_bytes=20 * rr.EVENT_SLOT)  # CPython reads MicroPython's files
    assert here.read("minute", 0, 100) == want_m and here.read("event", 0, 100) == want_e


def test_the_ring_wraps_keeps_its_capacity_and_recovers_n_at_boot(tmp_path):
    d = flash(tmp_path)
    (d / "in.json").write_text(json.dumps([minute(i) for i in range(200)]))
    out = run_mp(d, "import json, record_ring as rr\n"
                    f"ring = {RING_SMALL}\n"
                    "for rec in json.load(open('in.json')):\n    ring.add(rec)\n"
                    "print(json.dumps(ring.info()['minute']))\n")
    assert out[0] == {"first": 141, "last": 200, "count": 60, "capacity": 60, "slot": rr.MINUTE_SLOT}
    out = run_mp(d, "import json, record_ring as rr\n"  # a reboot: everything from the slots
                    f"ring = {RING_SMALL}\n"
                    "print(json.dumps(ring.info()['minute']))\n"
                    "print(ring.add({'t': 'minute', 'LAeq': 50.0}))\n"
                    "print(json.dumps([r['n'] for r in ring.read('minute', 0, 1000)]))\n"
                    "print(json.dumps([r['n'] for r in ring.read('minute', 150, 3)]))\n")
    assert out[0] == {"first": 141, "last": 200, "count": 60, "capacity": 60, "slot": rr.MINUTE_SLOT}
    assert out[1] == 201 and out[2] == list(range(142, 202)) and out[3] == [150, 151, 152]
    here = rr.RecordRing(str(d), minutes=60, events_bytes=20 * rr.EVENT_SLOT)
    assert here.read("minute", 0, 1000)[:-1] == [stored(minute(i), i + 1) for i in range(141, 200)]
    assert sorted(p.name for p in (d / "ring_min").iterdir()) == ["0", "1"]  # 42 slots in a segment: 2 files
    assert (d / "ring_min" / "0").stat().st_size == rr.SEGMENT_BYTES // rr.MINUTE_SLOT * rr.MINUTE_SLOT


def test_a_corrupt_or_torn_slot_is_skipped_and_its_neighbours_stay(tmp_path):
    d = flash(tmp_path)
    ring = rr.RecordRing(str(d), minutes=60, events_bytes=20 * rr.EVENT_SLOT)
    for i in range(30):
        ring.add(minute(i))
    seg = d / "ring_min" / "0"
    data = bytearray(seg.read_bytes())
    data[9 * rr.MINUTE_SLOT + 40] ^= 0xFF  # record 10: a flipped byte
    seg.write_bytes(bytes(data[:29 * rr.MINUTE_SLOT + 33]))  # record 30, the last: torn in the middle
    out = run_mp(d, "import json, record_ring as rr\n"
                    f"ring = {RING_SMALL}\n"
                    "print(json.dumps(ring.info()['minute']))\n"
                    "print(json.dumps([r['n'] for r in ring.read('minute', 0, 100)]))\n"
                    "print(ring.add({'t': 'minute', 'LAeq': 1.0}))\n"
                    "print(json.dumps(ring.info()['minute']))\n")
    assert out[0] == {"first": 1, "last": 29, "count": 28, "capacity": 60, "slot": rr.MINUTE_SLOT}
    assert out[1] == [n for n in range(1, 30) if n != 10]
    assert out[2] == 30  # the torn record's number goes to the next record: no number names two readable records
    assert out[3]["last"] == 30 and out[3]["count"] == 29
    here = rr.RecordRing(str(d), minutes=60, events_bytes=20 * rr.EVENT_SLOT)
    assert here.read("minute", 29, 5) == [stored(minute(28), 29), {"t": "minute", "n": 30, "LAeq": 1.0}]


def test_an_episode_open_at_a_restart_is_found_until_its_end_is_stored(tmp_path):
    d = flash(tmp_path)
    script = ("import json, record_ring as rr, sys\n"
              f"ring = {RING_SMALL}\n"
              "print(json.dumps(ring.open_episode()))\n"
              "for rec in json.load(open('in.json')):\n    ring.add(rec)\n"
              "print(json.dumps(ring.open_episode()))\n")
    (d / "in.json").write_text(json.dumps([event(1, "exceedance_start"), event(2, "exceedance_end"),
                                           event(3, "exceedance_start"), event(4, "night_max")]))
    out = run_mp(d, script)
    assert out[0] is None and close(out[1], stored(event(3, "exceedance_start"), 3))
    (d / "in.json").write_text("[]")
    out = run_mp(d, script)  # after a restart: found by the scan
    assert close(out[0], stored(event(3, "exceedance_start"), 3))
    (d / "in.json").write_text(json.dumps([dict(event(5, "exceedance_end"), interrupted=True)]))
    out = run_mp(d, script)
    assert close(out[0], stored(event(3, "exceedance_start"), 3)) and out[1] is None
    (d / "in.json").write_text("[]")
    assert run_mp(d, script) == [None, None]  # closed exactly once


def numbers(info: dict) -> list[int]:
    return list(range(info["first"], info["last"] + 1)) if info["last"] else []


WRITER = """\
import record_ring as rr, sys
ring = rr.RecordRing('.', minutes=60, events_bytes=20 * rr.EVENT_SLOT)
print('up', ring.info()['minute']['last'])
while True:
    n = ring.info()['minute']['last'] + 1
    ring.add({'t': 'minute', 'ms': n * 60000, 'LAeq': (n % 9000) / 100, 'band': 'b%d' % n})
    if n % 16 == 0:
        ring.add({'t': 'event', 'kind': 'night_max', 'ms': n * 60000, 'LAFmax': 80.0})
    print(n)
"""


def test_kill_9_while_appending_never_duplicates_and_loses_at_most_the_record_being_written(tmp_path):
    """100 rounds: a MicroPython process appends records until it is killed at a random moment (also during its
    boot scan). After each kill the ring reads back whole: consecutive numbers, each once, every record whose add
    had returned is there with its content, at most the one being written is missing."""
    d = flash(tmp_path)
    (d / "writer.py").write_text(WRITER)
    rng = random.Random(4242)
    acked = 0
    for i in range(100):
        p = subprocess.Popen([micropython_binary(), "writer.py"], cwd=d, stdout=subprocess.PIPE, text=True)
        first = ""
        if i % 4:  # most rounds are killed while appending; every 4th at any moment, often during the boot scan
            first = p.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.02))
        p.send_signal(signal.SIGKILL)
        out = p.stdout.read()  # (not communicate(): it would bypass what readline has buffered)
        p.wait(timeout=30)
        lines = (first + out).split("\n")[:-1]  # complete lines: what the process was told was stored
        if lines:
            assert lines[0] == f"up {acked}"  # recovered exactly where the last round's acks ended (or one more)
            acked = int(lines[-1]) if len(lines) > 1 else acked
        ring = rr.RecordRing(str(d), minutes=60, events_bytes=20 * rr.EVENT_SLOT)
        info = ring.info()["minute"]
        got = ring.read("minute", 0, 1000)
        ns = [r["n"] for r in got]
        assert ns == numbers(info) and len(ns) == info["count"]
        assert info["last"] in (acked, acked + 1)  # at most the record being written is missing
        assert info["count"] == min(60, info["last"])
        for r in got:
            assert r == {"t": "minute", "n": r["n"], "ms": r["n"] * 60000, "LAeq": (r["n"] % 9000) / 100,
                         "band": "b%d" % r["n"]}
        evs = ring.read("event", 0, 100)
        assert [e["n"] for e in evs] == numbers(ring.info()["event"])
        assert [e["ms"] for e in evs] == sorted({e["ms"] for e in evs})  # no event stored twice
        acked = info["last"]
    assert acked > 200  # the ring wrapped several times under the kills
