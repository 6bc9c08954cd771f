"""Fuzzing the collector: malformed and hostile payloads (wrong types, huge, wrong topic, replayed, another device's
serial, bad text and times...) through a real broker into SQLite and PostgreSQL: 0 crashes, 0 bad rows, each one
counted and kept aside. `make test` runs a sample; `make fuzz-collect` the 100,000."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slm.fleet_records import Rejected, validate
from tests.collect_helpers import RunningCollector, count
from tests.fleet_payloads import Publisher, device_id, encode, hostile, minute, topic
from tests.services import Mosquitto
from tests.test_collect import db_url, postgres, sentinel, stored_minutes  # noqa: F401 (fixtures)

CHUNK = 1000


@pytest.fixture(scope="module")
def broker():
    with Mosquitto() as m:
        yield m


def fuzz(broker, db_url, n: int, seed: int) -> None:
    rng = random.Random(seed)
    devices = [device_id(i) for i in range(8)]
    collector = RunningCollector(broker.port, db_url, f"fuzz-{uuid.uuid4().hex[:8]}")
    collector.wait_subscribed()
    publisher = Publisher(broker.port, f"fuzzer-{uuid.uuid4().hex[:6]}")
    assert publisher.wait_connected()
    good: set[tuple[str, str]] = set()
    to_collector = 0
    sent = 0
    try:
        while sent < n:
            batch = []
            for _ in range(min(CHUNK, n - sent)):
                t, p = hostile(rng, devices)
                batch.append((t, p))
                to_collector += t.startswith("slm/")
                if rng.random() < 0.05:  # valid records among them, some of them replayed later
                    dev = rng.choice(devices)
                    rec = minute(0, rng.randrange(2000), rng)
                    batch.append((topic(dev, "minute"), encode(rec)))
                    good.add((dev, rec["start"]))
            sent += min(CHUNK, n - sent)
            publisher.publish(batch)
            assert collector.alive(), collector.error
    finally:
        publisher.close()
    sentinel(broker.port, db_url, collector, seed)
    counts = collector.stop()
    assert counts.rejected.get("internal", 0) == 0
    assert sum(counts.rejected.values()) == to_collector
    assert count(db_url, "SELECT count(*) FROM rejected") == to_collector
    stored = set(stored_minutes(db_url))
    stored.discard((device_id(999), minute(999, 10_000 + seed, random.Random(seed))["start"]))
    assert stored == good  # 0 bad rows: exactly the valid minutes
    for table in ("intervals", "events", "statuses"):
        assert count(db_url, f"SELECT count(*) FROM {table}") == 0
    assert count(db_url, "SELECT count(*) FROM devices WHERE hello IS NOT NULL") == 0


def test_fuzz_sample(broker, db_url):
    fuzz(broker, db_url, 1500, seed=17)


@pytest.mark.slow
def test_fuzz_100000(broker, db_url):
    fuzz(broker, db_url, 100_000, seed=23)


def json_values():
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                           inner, max_size=4),
                        max_leaves=12)


KEYS = ["t", "seq", "ms", "utc", "start", "s", "LAeq", "overload", "kind", "serial", "faults", "start_ms", "end_ms",
        "time", "limit", "band", "local", "proto", "config"]


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["minute", "interval", "event", "status", "hello", "level"]),
       base=st.fixed_dictionaries({}, optional={k: json_values() for k in KEYS}),
       raw=st.binary(max_size=200))
def test_validate_raises_only_rejected(kind, base, raw):
    """Whatever the payload, validation returns a row or raises Rejected: nothing else escapes it."""
    import json
    for payload in (raw, json.dumps(base).encode(), json.dumps({**base, "t": kind}).encode()):
        try:
            validate(topic(device_id(1), kind), payload)
        except Rejected:
            pass
