"""The device on the network (firmware/net.py through app.py on the MicroPython unix port) against a real Mosquitto
(tests/services.py) and `slm collect`'s loop into SQLite: every minute and event stored once and equal to what the
board sent over serial, levels identical to a run without network, and with the broker stopped for a while and
restarted nothing lost, no duplicate stored, order kept (store-and-forward from the device's ring)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from slm.firmware_engine import micropython_binary
from slm.protocol import command
from slm.resources import firmware_dir
from slm.sim import signals
from tests.collect_helpers import WAIT_S, RunningCollector, count, wait_until
from tests.conftest import words_of
from tests.services import Mosquitto, free_port
from tests.test_collect import minute_columns, stored_minutes
from tests.test_device_app import parse
from tests.test_minute import BAND_60, RATE, make_device, minutes_of, run

pytestmark = pytest.mark.micropython

SITE = "square"
START = "2026-07-15T12:00:00.000Z"
SECRET = "s3cret-broker-pw"


@pytest.fixture(scope="module")
def broker():
    with Mosquitto() as m:
        yield m


def networked(d: Path, port: int, device: str) -> Path:
    """Give a device folder (tests/test_minute.make_device) the MQTT library, an id and a net.json."""
    shutil.copytree(firmware_dir() / "lib", d / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    (d / "device_id.txt").write_text(device + "\n")
    (d / "net.json").write_text(json.dumps({"host": "127.0.0.1", "port": port, "site": SITE, "user": device,
                                            "password": SECRET}))
    return d


def run_net(d: Path) -> list[dict]:
    """Run the device on its audio file to the end (as tests/test_minute.run, with lib/ on the module path)."""
    r = subprocess.run([micropython_binary(), "main.py"], cwd=d, capture_output=True, timeout=600,
                       env={**os.environ, "MICROPYPATH": ".frozen:lib"})
    assert r.returncode == 0, r.stderr.decode()
    return [rec for rec in (parse(x) for x in r.stdout.decode().splitlines()) if rec is not None]


def restart_briefly(d: Path, utc: str, until_sent: bool = True) -> list[dict]:
    """The board comes back (after a power cut) on quiet audio and sends what its ring still holds: it runs until
    its status (asked over its console) says the broker acknowledged every ring record, on at most
    RESTART_MAX_S s of audio (under a minute: no new minute record), fed as the device reads it, so a loaded
    machine's slow connection cannot end the run first. ``until_sent=False``: 2 s of quiet audio from a file (a
    broker it cannot reach)."""
    (d / "rtc.json").write_text(json.dumps({"utc": utc, "source": "rtc"}))
    board = json.loads((d / "board.json").read_text())
    if not until_sent:
        write_quiet(d, 2)
        board["audio_path"] = "tail.bin"
        (d / "board.json").write_text(json.dumps(board))
        return run_net(d)
    fifo = d / "tail.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    board["audio_path"] = fifo.name
    (d / "board.json").write_text(json.dumps(board))
    audio = QuietAudio(fifo, RESTART_MAX_S)
    audio.start()
    proc = subprocess.Popen([micropython_binary(), "main.py"], cwd=d, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "MICROPYPATH": ".frozen:lib"})
    serial = Serial(proc)
    serial.start()
    try:
        asked = 0
        while audio.is_alive() and not _ring_acknowledged(serial.records):
            proc.stdin.write(command("get", id=asked, keys=["status"]))
            proc.stdin.flush()
            asked += 1
            audio.stop.wait(0.3)
    finally:
        audio.stop.set()
        audio.join(timeout=WAIT_S)
        proc.stdin.close()
        proc.wait(timeout=WAIT_S)
        serial.join(timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert audio.error is None, audio.error
    assert _ring_acknowledged(serial.records), f"the ring not sent on {RESTART_MAX_S} s of audio"
    return serial.records


RESTART_MAX_S = 50


def _ring_acknowledged(records: list[dict]) -> bool:
    """A status reply in ``records`` says the device is connected and the broker acknowledged its whole ring."""
    for r in list(records):
        net = (r.get("result") or {}).get("status", {}).get("net") if r["t"] == "ack" else None
        if net and net["state"] == "up" and net["backlog"] == 0 and net["inflight"] == 0:
            return True
    return False


class QuietAudio(threading.Thread):
    """Feeds a device's FIFO a quiet 1 kHz tone a quarter second at a time, about 2.5 device seconds per wall
    second, until ``stop`` is set or ``seconds`` are written; then closes the FIFO, which ends the device's audio."""

    def __init__(self, fifo: Path, seconds: float):
        super().__init__(daemon=True)
        self.fifo, self.seconds = fifo, seconds
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        chunk = words_of(signals.sine(1000.0, 0.0, 0.25, RATE) * 10 ** (40 / 20)).astype("<i4").tobytes()
        try:
            with open(self.fifo, "wb") as f:
                for _ in range(int(self.seconds * 4)):
                    if self.stop.is_set():
                        return
                    f.write(chunk)
                    f.flush()
                    self.stop.wait(0.1)
        except BaseException as e:  # reported by the test
            self.error = e


def write_quiet(d: Path, seconds: int) -> None:
    words_of(signals.sine(1000.0, 0.0, float(seconds), RATE) * 10 ** (40 / 20)).astype("<i4").tofile(d / "tail.bin")


def stored_events(db: str, device: str) -> list[tuple]:
    from slm.fleet_db import open_db
    con = open_db(db)
    try:
        return sorted((k, json.loads(p)["seq"]) for k, p in con.query(
            "SELECT kind, payload FROM events WHERE device = ?", (device,)))
    finally:
        con.close()


def same_but_firmware(recs: list[dict], alone: list[dict]) -> bool:
    """The records but status (and the audit trail's firmware entries), equal but for their seq."""
    def plain(rs):
        return [{k: v for k, v in r.items() if k != "seq"} for r in rs
                if r["t"] != "status" and r.get("what") != "firmware"]
    return plain(recs) == plain(alone)


def test_minutes_and_events_stored_once_equal_to_serial_levels_as_without_network(broker, tmp_path):
    device = f"net{uuid.uuid4().hex[:8]}"
    levels = minutes_of([55.0, 65.0, 66.0, 67.0, 52.0, 50.0])
    config = {"bands": BAND_60, "episode_min_minutes": 1, "status_s": 30}
    alone_dir = make_device(tmp_path, levels, START, config, name="alone")
    (alone_dir / "device_id.txt").write_text(device + "\n")
    alone = run(alone_dir)
    d = networked(make_device(tmp_path, levels, START, config, name="net"), broker.port, device)
    net = json.loads((d / "net.json").read_text())
    (d / "net.json").write_text(json.dumps({**net, "intervals": True}))  # live interval records too
    db = str(tmp_path / "fleet.sqlite")
    collector = RunningCollector(broker.port, db, f"collect-{uuid.uuid4().hex[:8]}")
    collector.wait_subscribed()
    first = run_net(d)
    second = restart_briefly(d, "2026-07-15T12:30:00.000Z")
    sent = [r for r in first + second if r["t"] in ("minute", "event")]
    wait_until(lambda: count(db, "SELECT count(*) FROM minutes") == sum(r["t"] == "minute" for r in sent),
               "every minute stored", collector=collector)
    wait_until(lambda: count(db, "SELECT count(*) FROM events") == sum(r["t"] == "event" for r in sent),
               "every event stored", collector=collector)
    counts = collector.stop()

    assert SECRET not in json.dumps(first + second)  # net.json's password never goes out over serial
    # the network changes nothing the meter measures or sends over serial (but the status's `net` counts, and the
    # audit trail's firmware entries: this board has lib/umqtt; they shift the seq of what follows)
    assert same_but_firmware(first, alone)
    assert [{k: v for k, v in r.items() if k not in ("net", "uptime_s", "heap_free")} for r in first
            if r["t"] == "status"] == \
        [{k: v for k, v in r.items() if k not in ("uptime_s", "heap_free")} for r in alone if r["t"] == "status"]
    minutes = [r for r in sent if r["t"] == "minute"]
    assert len(minutes) == 6
    assert stored_minutes(db) == {(device, r["start"]): minute_columns(r) for r in minutes}
    events = [r for r in sent if r["t"] == "event"]
    assert {e["kind"] for e in events} >= {"exceedance_start", "exceedance_end"}
    assert stored_events(db, device) == sorted((e["kind"], e["seq"]) for e in events)
    assert sum(counts.rejected.values()) == 0
    from slm.fleet_db import open_db
    con = open_db(db)
    try:
        intervals = {row[0]: row[1:] for row in con.query("SELECT utc, seq, ms, laeq, lafmax FROM intervals")}
    finally:
        con.close()
    sent_intervals = {r["utc"]: (r["seq"], r["ms"], r["LAeq"], r["LAFmax"]) for r in first + second
                      if r["t"] == "interval"}
    assert intervals and all(sent_intervals[utc] == v for utc, v in intervals.items())
    assert count(db, "SELECT count(*) FROM devices WHERE device = ? AND hello IS NOT NULL", (device,)) == 1
    assert count(db, "SELECT count(*) FROM statuses WHERE device = ?", (device,)) >= 1
    assert [r["net"]["connects"] for r in first if r["t"] == "status"][-1] >= 1


class Arrivals:
    """A persistent-session subscriber to one device's minutes: the order in which they arrive (QoS 1)."""

    def __init__(self, port: int, device: str):
        self.starts: list[str] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"arrivals-{device}",
                                  clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"slm/{SITE}/{device}/minute", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.starts.append(json.loads(m.payload)["start"])
        self.client.reconnect_delay_set(0.2, 2)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class PacedAudio(threading.Thread):
    """Feeds the device's FIFO a second of tone at a time (one level a second, cycling) at about 20 device seconds
    per wall second, until ``stop`` is set; then closes the FIFO, which ends the device's audio."""

    def __init__(self, fifo: Path):
        super().__init__(daemon=True)
        self.fifo = fifo
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open(self.fifo, "wb") as f:
                i = 0
                while not self.stop.is_set():
                    level = 50.0 + 4 * (i % 5)
                    f.write(words_of(signals.sine(1000.0, 0.0, 1.0, RATE) * 10 ** (level / 20)).astype("<i4")
                            .tobytes())
                    i += 1
                    self.stop.wait(0.05)
        except BaseException as e:  # reported by the test
            self.error = e


class Serial(threading.Thread):
    """Reads the device's serial output (its stdout) as records."""

    def __init__(self, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.proc = proc
        self.records: list[dict] = []

    def run(self) -> None:
        for line in self.proc.stdout:
            rec = parse(line.decode())
            if rec is not None:
                self.records.append(rec)

    def minutes(self) -> list[dict]:
        return [r for r in list(self.records) if r["t"] == "minute"]


def test_broker_stopped_and_restarted_nothing_lost_no_duplicates_order_kept(tmp_path):
    device = f"flap{uuid.uuid4().hex[:8]}"
    db = str(tmp_path / "fleet.sqlite")
    with Mosquitto() as broker:
        d = networked(make_device(tmp_path, [], START, {"status_s": 20}), broker.port, device)
        board = json.loads((d / "board.json").read_text())
        board["audio_path"] = "audio.fifo"
        (d / "board.json").write_text(json.dumps(board))
        os.mkfifo(d / "audio.fifo")
        arrivals = Arrivals(broker.port, device)
        assert arrivals.subscribed.wait(WAIT_S)
        collector = RunningCollector(broker.port, db, f"collect-{uuid.uuid4().hex[:8]}")
        collector.wait_subscribed()
        audio = PacedAudio(d / "audio.fifo")
        audio.start()
        proc = subprocess.Popen([micropython_binary(), "main.py"], cwd=d, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "MICROPYPATH": ".frozen:lib"})
        serial = Serial(proc)
        serial.start()
        try:
            wait_until(lambda: count(db, "SELECT count(*) FROM minutes") >= 2, "the first minutes stored",
                       collector=collector)
            broker.stop()
            down_at = len(serial.minutes())
            wait_until(lambda: len(serial.minutes()) >= down_at + 3, "three minutes measured with the broker down")
            broker.start()
            collector.wait_subscribed()  # it reconnected
            wait_until(lambda: any(r["t"] == "status" and r["net"]["connects"] >= 2 and r["net"]["backlog"] == 0
                                   for r in list(serial.records)), "the device back on the broker, its backlog sent")
        finally:
            audio.stop.set()
            audio.join(timeout=WAIT_S)
            proc.wait(timeout=WAIT_S)
            serial.join(timeout=WAIT_S)
        assert proc.returncode == 0, proc.stderr.read().decode()
        assert audio.error is None
        statuses = [r for r in serial.records if r["t"] == "status"]
        assert max(s["net"]["errors"] for s in statuses) >= 1 and max(s["net"]["backlog"] for s in statuses) >= 3
        second = restart_briefly(d, "2026-07-15T13:00:00.000Z")  # sends what the first run's end left
        minutes = serial.minutes() + [r for r in second if r["t"] == "minute"]
        wait_until(lambda: count(db, "SELECT count(*) FROM minutes") == len(minutes), "every minute stored",
                   collector=collector)
        wait_until(lambda: len(set(arrivals.starts)) == len(minutes), "every minute seen by the subscriber")
        arrivals.close()
        collector.stop()

    assert len(minutes) >= 6
    assert stored_minutes(db) == {(device, r["start"]): minute_columns(r) for r in minutes}
    first_arrivals = list(dict.fromkeys(arrivals.starts))
    assert first_arrivals == [r["start"] for r in minutes]  # in the order measured
    assert max(s["net"]["dropped"] for s in statuses) == 0
    print(f"longest network step of a loop turn: {max(s['net']['max_us'] for s in statuses)} µs; "
          f"connections: {statuses[-1]['net']['connects']}, errors: {statuses[-1]['net']['errors']}")


class SeededAudio(threading.Thread):
    """Feeds a device's FIFO ``seconds`` seconds of a 1 kHz tone, one level a second drawn from ``seed`` (the same
    audio for the same seed), waiting ``pace`` s after each second (0: as fast as the device reads), then closes
    the FIFO, which ends the device's run."""

    def __init__(self, fifo: Path, seconds: int, seed: int, pace: float):
        super().__init__(daemon=True)
        self.fifo, self.seconds, self.seed, self.pace = fifo, seconds, seed, pace
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(self.seed)
        second = words_of(signals.sine(1000.0, 0.0, 1.0, RATE))
        try:
            with open(self.fifo, "wb") as f:
                for _ in range(self.seconds):
                    if self.stop.is_set():
                        return
                    f.write((second * 10 ** (rng.uniform(40.0, 80.0) / 20)).astype("<i4").tobytes())
                    if self.pace:
                        self.stop.wait(self.pace)
        except BaseException as e:  # reported by the test
            self.error = e


def start_board(d: Path) -> tuple[subprocess.Popen, "Serial"]:
    """The device of folder ``d`` running on the unix port, its serial output read by a thread."""
    proc = subprocess.Popen([micropython_binary(), "main.py"], cwd=d, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "MICROPYPATH": ".frozen:lib"})
    serial = Serial(proc)
    serial.start()
    return proc, serial


def fifo_audio(d: Path) -> Path:
    board = json.loads((d / "board.json").read_text())
    board["audio_path"] = "audio.fifo"
    (d / "board.json").write_text(json.dumps(board))
    os.mkfifo(d / "audio.fifo")
    return d / "audio.fifo"


def run_seeded(d: Path, seconds: int, seed: int, pace: float, during=None) -> list[dict]:
    """Run the device on SeededAudio to its end (``during()``, if given, runs meanwhile); its serial records."""
    audio = SeededAudio(fifo_audio(d), seconds, seed, pace)
    audio.start()
    proc, serial = start_board(d)
    try:
        if during is not None:
            during(proc)
        proc.wait(timeout=seconds * pace + 600)
    finally:
        audio.stop.set()
        if proc.poll() is None:
            proc.kill()
        audio.join(timeout=WAIT_S)
        serial.join(timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert audio.error is None
    return serial.records


class Flapper(threading.Thread):
    """Takes the broker away every few seconds until ``stop``: killed (SIGKILL: connections reset, refused) and
    started again, or frozen (SIGSTOP: it accepts connections but answers nothing, so a waiting client would hang
    until its timeout) and thawed. Counts what it did."""

    def __init__(self, broker: Mosquitto, seed: int):
        super().__init__(daemon=True)
        self.broker, self.rng = broker, random.Random(seed)
        self.stop = threading.Event()
        self.kills = self.freezes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(self.rng.uniform(2.0, 5.0)):
                proc = self.broker.proc
                assert proc is not None
                if self.rng.random() < 0.5:
                    proc.kill()
                    proc.wait()
                    self.broker.proc = None
                    self.kills += 1
                    self.stop.wait(self.rng.uniform(1.0, 3.0))
                    self.broker.start()
                else:
                    os.kill(proc.pid, signal.SIGSTOP)
                    self.freezes += 1
                    self.stop.wait(self.rng.uniform(1.0, 4.0))
                    os.kill(proc.pid, signal.SIGCONT)
        except BaseException as e:  # reported by the test
            self.error = e


IDLE_TICKS = """
import gc, json, micropython, time
import hardware, net, record_ring
hw = hardware.platform()
settings, _ = net.load_settings()
n = net.Net(settings, "alloc01", record_ring.RecordRing(), hw)
n.record({"t": "hello", "serial": "alloc01"})
t0 = time.ticks_ms()
while (n.state != "up" or n.inflight or n.outbox) and time.ticks_diff(time.ticks_ms(), t0) < 60000:
    n.tick()
    time.sleep_ms(2)
up = n.state == "up" and not n.inflight and n.sent == 1
gc.collect()
done = 0
micropython.heap_lock()
try:
    while done < 5000:
        n.tick()
        done += 1
except MemoryError:
    pass
micropython.heap_unlock()
print(json.dumps({"up": up, "locked_ticks": done, "errors": n.errors, "state": n.state}))
"""


def test_a_connected_network_step_allocates_nothing_when_there_is_nothing_to_send(broker, tmp_path):
    """The loop's network step on every turn (reading PUBACKs that have not come, nothing to publish) with the
    heap locked: any allocation would raise."""
    d = networked(make_device(tmp_path, [], START), broker.port, "alloc01")
    (d / "idle.py").write_text(IDLE_TICKS)
    r = subprocess.run([micropython_binary(), "idle.py"], cwd=d, capture_output=True, timeout=300,
                       env={**os.environ, "MICROPYPATH": ".frozen:lib"})
    assert r.returncode == 0, r.stderr.decode()
    got = json.loads(r.stdout)
    assert got == {"up": True, "locked_ticks": 5000, "errors": 0, "state": "up"}, got


def test_slm_virtual_with_broker_publishes_into_the_collector(broker, tmp_path):
    """`slm virtual --broker`: the virtual board of the square publishes its minutes; `slm collect` stores them."""
    import sys

    db = str(tmp_path / "fleet.sqlite")
    collector = RunningCollector(broker.port, db, f"collect-{uuid.uuid4().hex[:8]}")
    collector.wait_subscribed()
    board_dir = tmp_path / "board"
    err = tmp_path / "virtual.err"  # a file, not a pipe: a pipe nobody reads can fill and block the command
    with open(err, "wb") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "slm.cli", "virtual", "--speed", "0", "--dir", str(board_dir),
                                 "--broker", broker.url, "--site", "square"],
                                stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        wait_until(lambda: count(db, "SELECT count(*) FROM minutes") >= 2, "two minutes of the virtual board",
                   collector=collector)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("slm virtual did not stop on SIGTERM: " + err.read_text()[-2000:]) from None
    collector.stop()
    serial = (board_dir / "device_id.txt").read_text().strip()
    assert count(db, "SELECT count(*) FROM minutes WHERE device = ? AND site = 'square'", (serial,)) >= 2
    assert count(db, "SELECT count(*) FROM devices WHERE device = ? AND hello IS NOT NULL", (serial,)) == 1
    assert "password" not in (board_dir / "config.json").read_text()


def test_slm_virtual_bad_broker_is_one_line_exit_2():
    import sys

    done = subprocess.run([sys.executable, "-m", "slm.cli", "virtual", "--broker", "http://x"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "expected mqtt://HOST:PORT" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


class NtpServer(threading.Thread):
    """An SNTP server on 127.0.0.1 answering every request with the time ``utc`` (stratum 2)."""

    def __init__(self, utc: datetime):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seconds = int((utc - datetime(1900, 1, 1, tzinfo=timezone.utc)).total_seconds())
        self.requests = 0

    def run(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(512)
            except OSError:
                return
            self.requests += 1
            reply = bytearray(48)
            reply[0], reply[1] = 0x1C, 2  # version 3, server; stratum 2
            reply[40:44] = self.seconds.to_bytes(4, "big")
            self.sock.sendto(bytes(reply), addr)


def test_ntp_sets_the_clock_as_a_clock_step(tmp_path):
    ntp = NtpServer(datetime(2026, 7, 15, 12, 5, 0, tzinfo=timezone.utc))
    ntp.start()
    try:
        d = make_device(tmp_path, [50.0] * 180, START, {"status_s": 30})
        networked(d, free_port(), "ntpdev")  # no broker there: the clock is set all the same
        net = json.loads((d / "net.json").read_text())
        net.update(ntp="127.0.0.1", ntp_port=ntp.port)
        (d / "net.json").write_text(json.dumps(net))
        recs = run_net(d)
    finally:
        ntp.sock.close()
    assert ntp.requests >= 1
    (step,) = [r for r in recs if r["t"] == "event" and r["kind"] == "clock_step"]
    assert step["from"] < "2026-07-15T12:03:00.000Z"
    assert "2026-07-15T12:05:00.000Z" <= step["to"] < "2026-07-15T12:06:00.000Z"  # + half the round trip
    later = [r for r in recs if r["t"] == "minute" and r["seq"] > step["seq"]]
    assert later and all(m["start"] >= "2026-07-15T12:05:00.000Z" for m in later)
    statuses = [r for r in recs if r["t"] == "status"]
    assert statuses[-1]["net"]["state"] == "down" and statuses[-1]["net"]["errors"] >= 1  # no broker


@pytest.mark.parametrize("right_ca", [True, False], ids=["its-ca", "another-ca"])
def test_device_over_tls_with_its_provisioned_account(tmp_path, right_ca):
    """The broker as `slm provision` secures it (accounts, ACL, TLS): the device connects with its own account and
    checks the broker's certificate against the CA in its net.json; given another CA it refuses the broker."""
    import tempfile

    from slm.provision import provision
    from tests.test_provision import make_certificates, password

    device = "tlsdev01"
    folder = Path(tempfile.mkdtemp(prefix="slm-tls-dev-"))  # not under pytest's root-only tmp: mosquitto reads it
    try:
        ca, cert, key = make_certificates(folder, "fleet")
        other_ca, _, _ = make_certificates(folder, "other")
        port = free_port()
        provision(str(folder), [device], port=port, bind="127.0.0.1", tls_cert=str(cert), tls_key=str(key))
        with Mosquitto(config_file=folder / "mosquitto.conf", port=port):
            db = str(tmp_path / "fleet.sqlite")
            collector = RunningCollector(port, db, "tls-collector", user="collector",
                                         password=password(folder, "collector"), ca_file=str(ca))
            collector.wait_subscribed()
            d = networked(make_device(tmp_path, minutes_of([55.0, 60.0]), START, {"status_s": 30}), port, device)
            shutil.copy(ca if right_ca else other_ca, d / "ca.crt")
            net = json.loads((d / "net.json").read_text())
            net.update(tls=True, ca="ca.crt", password=password(folder, device))
            (d / "net.json").write_text(json.dumps(net))
            first = run_net(d)
            second = restart_briefly(d, "2026-07-15T12:30:00.000Z", until_sent=right_ca)
            minutes = [r for r in first + second if r["t"] == "minute"]
            if right_ca:
                wait_until(lambda: count(db, "SELECT count(*) FROM minutes") == len(minutes), "the minutes over TLS",
                           collector=collector)
                assert stored_minutes(db) == {(device, r["start"]): minute_columns(r) for r in minutes}
            statuses = [r["net"] for r in first + second if r["t"] == "status"]
            collector.stop()
        if not right_ca:
            assert count(db, "SELECT count(*) FROM devices") == 0  # nothing reached the broker
            assert all(s["connects"] == 0 for s in statuses) and statuses[-1]["errors"] >= 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("text", ["{", '{"host": "127.0.0.1", "site": "bad site"}', '{"site": "sq"}',
                                  '{"host": "127.0.0.1", "site": "sq", "port": "1883"}'])
def test_a_broken_net_json_is_a_fault_and_the_meter_runs_as_without_network(tmp_path, text):
    levels = minutes_of([55.0])
    alone = run(make_device(tmp_path, levels, START, {"status_s": 30}, name="alone"))
    d = make_device(tmp_path, levels, START, {"status_s": 30}, name="broken")
    (d / "net.json").write_text(text)
    recs = run_net(d)
    assert recs[0]["t"] == "hello" and "net_corrupt" in recs[0]["faults"]
    assert [a["name"] for a in recs if a.get("what") == "fault"] == ["net_corrupt"]  # in the audit trail too
    assert same_but_firmware([r for r in recs[1:] if r.get("what") != "fault"], alone[1:])
    statuses = [r for r in recs if r["t"] == "status"]
    assert statuses and not any("net" in r for r in statuses)
