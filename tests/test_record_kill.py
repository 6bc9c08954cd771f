"""Power cuts on the whole device application: the firmware (app, judge, record ring) on the MicroPython unix port is
killed (SIGKILL) at random moments, round after round, while an episode is open; its own record must stay readable,
hold no record twice, lose at most the record being written, and close every interrupted episode exactly once.

Each round the clock starts an hour later (as an RTC that ran on while the board was off), so the minutes of two
rounds never share a start. `make test` runs 8 rounds; `make soak` runs 100.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import threading

import pytest

from slm.firmware_engine import micropython_binary
from slm.protocol import parse_line
from tests.test_minute import BAND_60, make_device

pytestmark = pytest.mark.micropython

BASE = dt.datetime(2026, 7, 15, 12, 0, tzinfo=dt.timezone.utc)
READ_RING = r"""
import json, record_ring
ring = record_ring.RecordRing()
out = {"info": ring.info()}
for kind in ("minute", "event"):
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


def one_round(d, k: int, rng: random.Random) -> list[dict]:
    """Run the device until a random moment, kill it; the records it sent before it died. Every other round the
    moment is drawn after the device opened its episode (so kills find episodes open, on any machine's speed); the
    others anywhere, boot included."""
    utc = (BASE + dt.timedelta(hours=k)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    (d / "rtc.json").write_text(json.dumps({"utc": utc, "source": "rtc"}))
    p = subprocess.Popen([micropython_binary(), "main.py"], cwd=d, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    lines: list[bytes] = []
    opened = threading.Event()

    def read() -> None:
        for raw in p.stdout:
            lines.append(raw)
            if b'"exceedance_start"' in raw:
                opened.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if k % 2:
        opened.wait(timeout=120)
    try:
        p.wait(timeout=rng.uniform(0.0, 1.0) if k % 2 else rng.uniform(0.5, 3.5))
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    reader.join(timeout=60)
    recs = []
    for line in lines:
        try:
            rec = parse_line(line.rstrip(b"\r\n"))
        except Exception:  # the line the kill cut in half
            continue
        if rec is not None:
            recs.append(rec)
    return recs


def read_ring(d) -> dict:
    r = subprocess.run([micropython_binary(), "-c", READ_RING], cwd=d, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def kill_rounds(tmp_path, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    # a tone over a 60 dB band all day: every minute is over, an episode is open whenever the device is killed
    d = make_device(tmp_path, [66.0] * 400, BASE.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    {"bands": BAND_60, "episode_min_minutes": 1})
    sent = [one_round(d, k, rng) for k in range(rounds)]
    ring = read_ring(d)
    minutes, events = ring["minute"], ring["event"]
    # readable, numbered without repeats, nothing stored twice
    for recs in (minutes, events):
        ns = [r["n"] for r in recs]
        assert ns == sorted(set(ns))
    starts = [m["start"] for m in minutes]
    assert len(starts) == len(set(starts)) and all(s is not None for s in starts)
    # every minute a round sent is in the record, except at most the last one it sent (killed while writing it)
    stored = set(starts)
    for k, recs in enumerate(sent):
        sent_minutes = [r["start"] for r in recs if r["t"] == "minute"]
        missing = [s for s in sent_minutes if s not in stored]
        assert missing in ([], sent_minutes[-1:]), (k, missing)
    # episodes: each start is ended once, as interrupted, by the next boot (the last one may still be open)
    kinds = [(e["kind"], e["start"]) for e in events if e["kind"].startswith("exceedance")]
    opened = [s for kind, s in kinds if kind == "exceedance_start"]
    ended = [s for kind, s in kinds if kind == "exceedance_end"]
    assert len(opened) == len(set(opened)) and len(ended) == len(set(ended))
    assert set(ended) <= set(opened) and len(set(opened) - set(ended)) <= 1
    assert all(e["interrupted"] for e in events if e["kind"] == "exceedance_end")
    for kind, start in kinds:  # an end follows its own start, before the next episode starts
        if kind == "exceedance_end":
            assert kinds[kinds.index(("exceedance_start", start)) + 1] == (kind, start)
    # every episode a round opened is in the record, unless that was the last thing it sent before it died
    for k, recs in enumerate(sent):
        for i, r in enumerate(recs):
            if r["t"] == "event" and r["kind"] == "exceedance_start":
                assert r["start"] in opened or i == len(recs) - 1, (k, r)
    assert len(opened) >= rounds // 2  # the kills did catch open episodes (not a test of nothing)


def test_killed_at_random_moments_the_record_stays_whole(tmp_path):
    kill_rounds(tmp_path, rounds=8, seed=9)


@pytest.mark.slow
def test_killed_at_random_moments_100_times_the_record_stays_whole(tmp_path):
    kill_rounds(tmp_path, rounds=100, seed=20261203)
