"""`slm monitor --broker`: the fleet's live view from a real Mosquitto (tests/services.py), fed by devices' records
published by paho (tests/fleet_payloads.py): a row per device, OFFLINE after the broker published a device's last
will, last seen; the retained hello/status/will for a monitor started later; the CLI end to end."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import pytest

from slm.collect import Broker
from slm.monitor_mqtt import BrokerMonitor
from slm.monitor_view import render_table

from tests.fleet_payloads import Publisher, encode, hello, interval, minute, status, topic
from tests.services import Mosquitto

WAIT_S = 120.0
OFFLINE = b'{"t":"status","state":"offline"}'


@pytest.fixture(scope="module")
def broker():
    with Mosquitto() as b:
        yield b


def wait_for(mon: BrokerMonitor, condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mon.refresh()
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {[s.summary() for s in mon.states]}")


def by_name(mon: BrokerMonitor) -> dict:
    return {s.serial: s for s in mon.states}


def publish_device(port: int, device: str, site: str, n_intervals: int, with_will: bool) -> Publisher:
    p = Publisher(port, device, will=(topic(device, "status", site), OFFLINE) if with_will else None)
    assert p.wait_connected()
    rng = random.Random(device)
    p.publish([(topic(device, "hello", site), encode(hello(device)))], retain=True)
    p.publish([(topic(device, "status", site), encode(status(0, 1)))], retain=True)
    p.publish([(topic(device, "minute", site), encode(minute(0, 0, rng)))])
    p.intervals = [interval(0, n, rng) for n in range(n_intervals)]
    p.publish([(topic(device, "interval", site), encode(rec)) for rec in p.intervals])
    return p


def test_rows_per_device_offline_after_the_last_will_and_last_seen(broker):
    run = uuid.uuid4().hex[:6]
    devices = [f"mon{run}a", f"mon{run}b", f"mon{run}c"]
    mon = BrokerMonitor(Broker("127.0.0.1", broker.port)).open()
    publishers = []
    try:
        before = time.time()
        for i, dev in enumerate(devices):
            publishers.append(publish_device(broker.port, dev, "square" if i < 2 else "street", 5 + i, i == 2))
        # a hostile message is counted, not shown
        publishers[0].publish([(topic(devices[0], "minute"), b"{not json")])
        wait_for(mon, lambda: all(d in by_name(mon) and by_name(mon)[d].types_seen.get("interval") == 5 + i
                                  for i, d in enumerate(devices)) and mon.rejected >= 1, "every device's records")
        rows = by_name(mon)
        for i, dev in enumerate(devices):
            st = rows[dev]
            assert st.port == f"{'square' if i < 2 else 'street'}/{dev}"
            assert st.view_state == "connected" and not st.offline
            assert before - 1 <= st.last_seen_wall <= time.time() + 1
            assert st.hello["serial"] == dev and st.board == "esp32-devkitc"
            assert st.limit_db == 65.0  # from its minute record
            last = publishers[i].intervals[-1]  # 1 s intervals: LAeq 1 s is the last one's
            assert st.interval_s == 1.0 and st.laeq_1s.db == pytest.approx(last["LAeq"], abs=0.006)
            assert st.laeq_1min.coverage_s == pytest.approx(5 + i)
        assert mon.rejected >= 1

        # device c vanishes without a DISCONNECT: the broker publishes its will
        seen_c = by_name(mon)[devices[2]].last_seen_wall
        publishers[2].client.socket().close()
        wait_for(mon, lambda: by_name(mon)[devices[2]].offline, "the last will")
        st = by_name(mon)[devices[2]]
        assert st.view_state == "lost" and st.last_seen_wall == seen_c
        assert by_name(mon)[devices[0]].view_state == "connected"
        summary = mon.summary()
        row = next(b for b in summary["boards"] if b["serial"] == devices[2])
        assert row["offline"] is True and row["last_seen"] is not None and row["state"] == "lost"
        table = render_table(mon.states)
        from rich.console import Console
        console = Console(width=200, record=True)
        console.print(table)
        text = console.export_text()
        assert "OFFLINE" in text and all(d in text for d in devices)
    finally:
        mon.close()
        for p in publishers[:2]:
            p.close()

    # a monitor started later sees the retained records: hello, status, and device c's will
    later = BrokerMonitor(Broker("127.0.0.1", broker.port)).open()
    try:
        wait_for(later, lambda: all(d in by_name(later) for d in devices)
                 and by_name(later)[devices[2]].offline, "the retained records")
        rows = by_name(later)
        assert rows[devices[2]].view_state == "lost"
        status_utc = datetime.fromisoformat(status(0, 1)["utc"].replace("Z", "+00:00"))
        for dev in devices[:2]:  # last seen by the device's own clock: when it published the retained status
            assert rows[dev].last_seen_wall == status_utc.timestamp()
            assert rows[dev].view_state == "connected"
    finally:
        later.close()


def slm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_monitor_broker_json_and_bad_options(broker):
    dev = f"cli{uuid.uuid4().hex[:6]}"
    p = publish_device(broker.port, dev, "square", 3, True)
    try:
        r = slm("monitor", "--broker", broker.url, "--duration", "2", "--json")
    finally:
        p.close()
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    row = next(b for b in out["boards"] if b["serial"] == dev)
    assert row["offline"] is False and row["last_seen"].startswith(str(datetime.now(timezone.utc).year))

    for args, message in [(["--broker", "http://x"], "expected mqtt://HOST:PORT"),
                          (["--broker", broker.url, "--port", "/dev/null"], "not both"),
                          (["--user", "u"], "go with --broker"),
                          (["--broker", broker.url, "--user", "u", "--password-file", "/nonexistent"],
                           "--password-file")]:
        r = slm("monitor", *args, "--duration", "1")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, (args, r.stderr)
    port = broker.port
    with Mosquitto() as other:
        port = other.port
    r = slm("monitor", "--broker", f"mqtt://127.0.0.1:{port}", "--duration", "1")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "cannot reach the broker" in r.stderr, r.stderr


@pytest.mark.micropython
def test_a_virtual_board_publishing_is_a_row_and_offline_when_it_stops(broker, tmp_path):
    """The firmware on the unix port (tests/test_net_device.py) publishes 2 minutes with interval records through
    the broker; when its process ends, its connection drops without a DISCONNECT and the broker publishes its will."""
    from tests.test_minute import BAND_60, make_device, minutes_of
    from tests.test_net_device import networked, run_net

    device = f"vb{uuid.uuid4().hex[:8]}"
    d = networked(make_device(tmp_path, minutes_of([55.0, 65.0]), "2026-07-15T12:00:00.000Z",
                              {"bands": BAND_60, "status_s": 30}), broker.port, device)
    net = json.loads((d / "net.json").read_text())
    (d / "net.json").write_text(json.dumps({**net, "intervals": True}))
    mon = BrokerMonitor(Broker("127.0.0.1", broker.port)).open()
    try:
        started = time.time()
        serial = run_net(d)
        ended = time.time()
        wait_for(mon, lambda: device in by_name(mon) and by_name(mon)[device].offline, "the board's last will")
        st = by_name(mon)[device]
    finally:
        mon.close()
    by_seq = {r["seq"]: r for r in serial}
    assert st.serial == device and st.hello["serial"] == device and st.view_state == "lost"
    assert started - 1 <= st.last_seen_wall <= ended + 1
    assert st.types_seen["hello"] >= 1 and st.types_seen["interval"] >= 1
    assert st.minute is not None  # the first minute went out while the second was measured
    assert by_seq[st.minute["seq"]] == st.minute  # shown as the board sent it over serial, field for field
    assert st.limit_db == 60 and st.band == "test"
    newest = [r for r in serial if r["t"] == "interval" and r["end_ms"] == st._intervals[-1][1]]
    assert len(newest) == 1 and st.laeq_1s.db == pytest.approx(newest[0]["LAeq"], abs=0.006)
