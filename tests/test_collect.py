"""`slm collect` through a real Mosquitto broker into SQLite and a real PostgreSQL: every record stored once and
equal to what was sent, replays dropped, hostile payloads kept aside without a crash, a broker restart survived."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import uuid

import pytest

from tests.collect_helpers import RunningCollector, count, wait_until
from tests.fleet_payloads import (Publisher, device_id, encode, event, hello, hostile, interval, minute, status,
                                  topic)
from tests.services import Mosquitto, Postgres

DEVICES = 6
MINUTES = 40


@pytest.fixture(scope="module")
def broker():
    with Mosquitto() as m:
        yield m


@pytest.fixture(scope="module")
def postgres():
    with Postgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh database of each engine for each test."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.sqlite")
    pg = request.getfixturevalue("postgres")
    name = "t" + uuid.uuid4().hex[:12]
    subprocess.run([str(pg.bin / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "slm", name], check=True,
                   capture_output=True)
    return f"postgresql://slm@127.0.0.1:{pg.port}/{name}"


def fleet_records(devices: int, minutes: int, seed: int = 1):
    """(topic, record) of a whole fleet: hello, minutes, intervals, events and status of every device."""
    rng = random.Random(seed)
    out = []
    for i in range(devices):
        dev = device_id(i)
        out.append((topic(dev, "hello"), hello(dev)))
        for n in range(minutes):
            out.append((topic(dev, "minute"), minute(i, n, rng)))
            out.append((topic(dev, "interval"), interval(i, n, rng)))
            if n % 10 == 0:
                out.append((topic(dev, "event"), event(i, n // 10)))
                out.append((topic(dev, "status"), status(i, n // 10)))
    return out


def publish_as_devices(port: int, records, tag: str) -> None:
    """Each device publishes its own records on its own connection, all devices at once."""
    by_device: dict[str, list] = {}
    for t, rec in records:
        by_device.setdefault(t.split("/")[2], []).append((t, encode(rec)))
    publishers = [Publisher(port, f"{tag}-{dev}") for dev in by_device]
    try:
        for p in publishers:
            assert p.wait_connected()
        for p, messages in zip(publishers, by_device.values()):
            p.publish(messages)
    finally:
        for p in publishers:
            p.close()


def sentinel(port: int, db_url: str, collector, n: int) -> None:
    """Publish one new minute after everything else and wait until it is stored: the collector handles one
    connection's messages in order, so everything sent before it was handled."""
    dev = device_id(999)
    rec = minute(999, 10_000 + n, random.Random(n))
    p = Publisher(port, f"sentinel-{uuid.uuid4().hex[:6]}")
    try:
        assert p.wait_connected()
        p.publish([(topic(dev, "minute"), encode(rec))])
    finally:
        p.close()
    wait_until(lambda: count(db_url, "SELECT count(*) FROM minutes WHERE device = ? AND start = ?",
                             (dev, rec["start"])) == 1, "the sentinel minute", collector=collector)


def minute_columns(rec: dict) -> dict:
    """The columns a minute record is stored in (bools as the database gives them back)."""
    cols = {"start": rec["start"], "local": rec["local"], "s": float(rec["s"]), "seq": rec["seq"], "ms": rec["ms"],
            "utc": rec["utc"], "band": rec["band"], "limit_db": rec["limit"], "overload": rec["overload"],
            "over": rec["over"]}
    for key in ("LAeq", "LAFmax", "LAFmin", "LA10", "LA50", "LA90", "LCpeak"):
        cols[key.lower()] = rec.get(key)
    return cols


def stored_minutes(db_url: str) -> dict[tuple[str, str], dict]:
    names = ["device", "start", "local", "s", "seq", "ms", "utc", "band", "limit_db", "overload", "over", "laeq",
             "lafmax", "lafmin", "la10", "la50", "la90", "lcpeak"]
    from slm.fleet_db import open_db
    db = open_db(db_url)
    try:
        rows = db.query(f"SELECT {', '.join(names)} FROM minutes")
    finally:
        db.close()
    out = {}
    for row in rows:
        d = dict(zip(names, row))
        for key in ("overload", "over"):
            d[key] = None if d[key] is None else bool(d[key])
        out[(d.pop("device"), d["start"])] = d
    return out


def test_every_record_stored_once_and_equal_replays_dropped(broker, db_url):
    records = fleet_records(DEVICES, MINUTES)
    collector = RunningCollector(broker.port, db_url, f"collect-{uuid.uuid4().hex[:8]}")
    collector.wait_subscribed()
    publish_as_devices(broker.port, records, "first")
    publish_as_devices(broker.port, records, "replay")  # a store-and-forward resend of everything
    minutes = [(t.split("/")[2], r) for t, r in records if r["t"] == "minute"]
    # one more: a minute of device 0 sent twice in a row (a resend right after a lost PUBACK)
    extra = minute(0, MINUTES, random.Random(7))
    publish_as_devices(broker.port, [(topic(device_id(0), "minute"), extra)] * 2, "twice")
    sentinel(broker.port, db_url, collector, 1)
    counts = collector.stop()

    stored = stored_minutes(db_url)
    expected = {(dev, r["start"]): minute_columns(r) for dev, r in minutes + [(device_id(0), extra)]}
    stored.pop((device_id(999), minute(999, 10_001, random.Random(1))["start"]))
    assert stored == expected
    sent = {kind: sum(1 for _, r in records if r["t"] == kind) for kind in ("minute", "interval", "event", "status")}
    for kind, table in (("interval", "intervals"), ("event", "events"), ("status", "statuses")):
        assert count(db_url, f"SELECT count(*) FROM {table}") == sent[kind]
    assert count(db_url, "SELECT count(*) FROM devices WHERE hello IS NOT NULL") == DEVICES
    assert count(db_url, "SELECT count(*) FROM devices WHERE online") == DEVICES + 1  # + the sentinel's device
    assert count(db_url, "SELECT count(*) FROM rejected") == 0
    assert counts.duplicates["minute"] == sent["minute"] + 1
    assert sum(counts.duplicates.values()) == sum(sent.values()) + 1
    assert counts.stored["minute"] == sent["minute"] + 2


def test_hostile_payloads_counted_and_kept_aside_no_crash(broker, db_url):
    rng = random.Random(5)
    devices = [device_id(i) for i in range(4)]
    good = fleet_records(len(devices), 10, seed=3)
    bad = [hostile(rng, devices) for _ in range(600)]
    mixed = [(t, encode(r)) for t, r in good] + bad
    rng.shuffle(mixed)
    collector = RunningCollector(broker.port, db_url, f"collect-{uuid.uuid4().hex[:8]}")
    collector.wait_subscribed()
    p = Publisher(broker.port, "hostile")
    try:
        assert p.wait_connected()
        p.publish(mixed)
    finally:
        p.close()
    sentinel(broker.port, db_url, collector, 2)
    assert collector.alive()
    counts = collector.stop()

    seen_by_collector = [t for t, _ in bad if t.startswith("slm/")]  # it subscribes to slm/# only
    assert sum(counts.rejected.values()) == len(seen_by_collector)
    assert count(db_url, "SELECT count(*) FROM rejected") == len(seen_by_collector)
    assert "internal" not in counts.rejected
    assert count(db_url, "SELECT count(*) FROM rejected WHERE reason = 'wrong_device'") > 0
    # nothing of the hostile ones became a row: exactly the good records are stored
    assert count(db_url, "SELECT count(*) FROM minutes") == sum(1 for _, r in good if r["t"] == "minute") + 1
    assert count(db_url, "SELECT count(*) FROM intervals") == sum(1 for _, r in good if r["t"] == "interval")
    assert count(db_url, "SELECT count(*) FROM devices") == len(devices) + 1
    assert set(stored_minutes(db_url)) - {(device_id(999), minute(999, 10_002, random.Random(2))["start"])} == \
        {(t.split("/")[2], r["start"]) for t, r in good if r["t"] == "minute"}


def test_broker_restart_collector_reconnects_nothing_lost(db_url):
    records = fleet_records(3, 20, seed=11)
    first, second = records[: len(records) // 2], records[len(records) // 2:]
    with Mosquitto() as broker:
        collector = RunningCollector(broker.port, db_url, f"collect-{uuid.uuid4().hex[:8]}")
        collector.wait_subscribed()
        publish_as_devices(broker.port, first, "before")
        broker.restart()
        publish_as_devices(broker.port, second, "after")  # maybe before the collector is back: queued for it
        collector.wait_subscribed()  # the second subscription: it reconnected
        sentinel(broker.port, db_url, collector, 3)
        counts = collector.stop()
    assert counts.connects >= 2
    stored = stored_minutes(db_url)
    expected = {(t.split("/")[2], r["start"]) for t, r in records if r["t"] == "minute"}
    assert expected <= set(stored) and len(stored) == len(expected) + 1
    assert count(db_url, "SELECT count(*) FROM intervals") == sum(1 for _, r in records if r["t"] == "interval")


def test_last_will_marks_a_device_offline(broker, db_url):
    dev = f"will{uuid.uuid4().hex[:8]}"  # its retained will stays on the broker: one device per test
    collector = RunningCollector(broker.port, db_url, f"collect-{uuid.uuid4().hex[:8]}")
    collector.wait_subscribed()
    p = Publisher(broker.port, dev, will=(topic(dev, "status"), b'{"t":"status","state":"offline"}'))
    assert p.wait_connected()
    p.publish([(topic(dev, "status"), encode(status(0, 1)))], retain=True)
    wait_until(lambda: count(db_url, "SELECT count(*) FROM devices WHERE device = ? AND online", (dev,)) == 1,
               "the device online", collector=collector)
    p.client.loop_stop()  # no reconnect
    p.client.socket().close()  # the device vanishes without a DISCONNECT: the broker publishes its will
    wait_until(lambda: count(db_url, "SELECT count(*) FROM devices WHERE device = ? AND NOT online", (dev,)) == 1,
               "the device offline", collector=collector)
    counts = collector.stop()
    assert counts.offline >= 1  # also the retained wills of earlier tests' devices, seen on subscribing
    assert count(db_url, "SELECT count(*) FROM devices WHERE device = ? AND offline_at IS NOT NULL", (dev,)) == 1


def slm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_collects_and_prints_a_summary(broker, tmp_path):
    db = tmp_path / "cli.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "slm.cli", "collect", "--broker", broker.url, "--db", str(db),
                             "--client-id", f"cli-{uuid.uuid4().hex[:6]}", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("slm collect: subscribed to slm/# on mqtt://127.0.0.1"), line
        records = fleet_records(2, 5, seed=4)
        publish_as_devices(broker.port, records, "cli")
        wait_until(lambda: db.exists() and count(str(db), "SELECT count(*) FROM minutes") == 10, "10 minutes")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    import json
    summary = json.loads(out)
    assert summary["stored"]["minute"] == 10 and summary["rejected"] == {}


@pytest.mark.parametrize("args, code, message", [
    (["--broker", "http://x"], 2, "expected mqtt://HOST:PORT"),
    (["--broker", "mqtt://127.0.0.1:1", "--db", "/nonexistent/dir/f.sqlite"], 2, "does not exist"),
    (["--broker", "mqtt://127.0.0.1:1", "--db", "mysql://x"], 2, "postgresql://"),
    (["--broker", "mqtts://127.0.0.1:1"], 2, "--tls"),
    (["--broker", "mqtt://127.0.0.1:1", "--password-file", "/nonexistent"], 2, "needs --user"),
])
def test_cli_bad_usage_is_one_line_exit_2(args, code, message, tmp_path):
    done = slm("collect", *args, "--duration", "1") if "--db" in args else \
        slm("collect", *args, "--db", str(tmp_path / "f.sqlite"), "--duration", "1")
    assert done.returncode == code
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_cli_unreachable_broker_is_one_line_exit_1(tmp_path):
    from tests.services import free_port
    done = slm("collect", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--db", str(tmp_path / "f.sqlite"),
               "--duration", "5")
    assert done.returncode == 1
    assert "cannot reach the broker" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_collector_killed_mid_stream_loses_nothing(broker, db_url):
    """A collector killed (SIGKILL) while it stores: what it had not committed was not acknowledged, so the broker
    gives it again to the restarted collector (same client id); everything is stored exactly once."""
    records = fleet_records(4, 400, seed=21)
    client_id = f"killed-{uuid.uuid4().hex[:6]}"

    def start():
        proc = subprocess.Popen([sys.executable, "-m", "slm.cli", "collect", "--broker", broker.url, "--db", db_url,
                                 "--client-id", client_id], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        line = proc.stderr.readline()
        assert line.startswith("slm collect: subscribed"), line
        return proc

    proc = start()
    publisher = threading.Thread(target=publish_as_devices, args=(broker.port, records, "k"))
    publisher.start()
    wait_until(lambda: count(db_url, "SELECT count(*) FROM minutes") >= 50, "the first minutes")
    proc.kill()
    proc.wait(timeout=60)
    publisher.join(timeout=300)
    assert count(db_url, "SELECT count(*) FROM minutes") < 1600  # it was killed before it had everything
    proc = start()
    try:
        expected = {(t.split("/")[2], r["start"]) for t, r in records if r["t"] == "minute"}
        wait_until(lambda: count(db_url, "SELECT count(*) FROM minutes") == len(expected), "every minute", )
        sentinel(broker.port, db_url, None, 4)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    stored = set(stored_minutes(db_url)) - {(device_id(999), minute(999, 10_004, random.Random(4))["start"])}
    assert stored == expected
    assert count(db_url, "SELECT count(*) FROM intervals") == sum(1 for _, r in records if r["t"] == "interval")


def test_collectors_sharing_a_subscription_split_the_fleet_each_record_once(broker, tmp_path):
    """Two collectors of one --share group (Mosquitto 2's shared subscription): every minute is stored by exactly
    one of them, both take part, and together they hold the whole fleet's minutes."""
    records = [(t, r) for t, r in fleet_records(DEVICES, MINUTES, seed=5) if r["t"] in ("hello", "minute")]
    urls = [str(tmp_path / f"share{i}.sqlite") for i in (1, 2)]
    group = f"g{uuid.uuid4().hex[:8]}"
    collectors = [RunningCollector(broker.port, url, f"share-{i}-{group}", share=group) for i, url in enumerate(urls)]
    for c in collectors:
        c.wait_subscribed()
    assert all(any(f"$share/{group}/slm/#" in line for line in c.lines) for c in collectors)
    publish_as_devices(broker.port, records, f"share-{group}")
    sent = {(t.split("/")[2], r["start"]) for t, r in records if r["t"] == "minute"}
    wait_until(lambda: sum(count(u, "SELECT count(*) FROM minutes") for u in urls) >= len(sent),
               "the group to store every minute")
    for c in collectors:
        c.stop()
    held = [set(stored_minutes(u)) for u in urls]
    assert held[0] | held[1] == sent and not held[0] & held[1]
    assert held[0] and held[1]  # the broker spread them (hundreds of messages from several connections)


@pytest.mark.parametrize("group", ["a/b", "", "#", "x" * 65])
def test_a_bad_share_group_is_one_line_exit_2(group, tmp_path):
    r = subprocess.run([sys.executable, "-m", "slm.cli", "collect", "--broker", "mqtt://127.0.0.1:9", "--db",
                        str(tmp_path / "f.sqlite"), "--share", group], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--share" in r.stderr, r.stderr
    assert not (tmp_path / "f.sqlite").exists()  # nothing opened
