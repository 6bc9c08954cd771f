"""`slm provision`'s files on a real Mosquitto: no anonymous client gets in, a device cannot publish under another
device's topic nor read the fleet, the collector reads everything with its own account."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from slm.provision import hash_password, provision
from tests.collect_helpers import RunningCollector, count, wait_until
from tests.fleet_payloads import Publisher, encode, minute, topic
from tests.services import Mosquitto, find_program, free_port

DEVICES = ["a0b1c2000001", "a0b1c2000002"]


@pytest.fixture(scope="module")
def secured():
    """A broker run with the provisioned mosquitto.conf: (broker, folder of the files)."""
    folder = Path(tempfile.mkdtemp(prefix="slm-provision-"))  # not under pytest's root-only tmp: mosquitto reads it
    port = free_port()
    provision(str(folder), DEVICES, port=port, bind="127.0.0.1")
    broker = Mosquitto(config_file=folder / "mosquitto.conf", port=port)
    broker.start()
    yield broker, folder
    broker.close()
    shutil.rmtree(folder, ignore_errors=True)


def password(folder: Path, account: str) -> str:
    return json.loads((folder / "credentials" / f"{account}.json").read_text())["password"]


def test_hash_is_mosquitto_passwd_format():
    h = hash_password("secret", salt=b"0123456789ab", iterations=101)
    _, seven, iterations, salt, digest = h.split("$")
    assert (seven, iterations, base64.b64decode(salt)) == ("7", "101", b"0123456789ab")
    assert base64.b64decode(digest) == hashlib.pbkdf2_hmac("sha512", b"secret", b"0123456789ab", 101)


def test_mosquitto_passwd_accepts_our_file(tmp_path):
    """Mosquitto's own tool reads the file and adds to it (same format)."""
    provision(str(tmp_path), DEVICES)
    done = subprocess.run([find_program("mosquitto_passwd"), "-b", str(tmp_path / "passwd"), "extra", "pw"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    users = [line.split(":")[0] for line in (tmp_path / "passwd").read_text().splitlines()]
    assert users == ["a0b1c2000001", "a0b1c2000002", "collector", "extra"]


def test_anonymous_and_wrong_password_are_refused(secured):
    broker, folder = secured
    anonymous = Publisher(broker.port, f"anon-{uuid.uuid4().hex[:6]}")
    wrong = Publisher(broker.port, DEVICES[0], user=DEVICES[0], password="not-the-password")
    try:
        assert not anonymous.wait_connected() and anonymous.result.is_failure
        assert not wrong.wait_connected() and wrong.result.is_failure
    finally:
        anonymous.close()
        wrong.close()


def test_device_cannot_publish_as_another_nor_read_and_collector_reads_all(secured, tmp_path):
    broker, folder = secured
    db = str(tmp_path / "fleet.sqlite")
    collector = RunningCollector(broker.port, db, f"c-{uuid.uuid4().hex[:6]}", user="collector",
                                 password=password(folder, "collector"))
    collector.wait_subscribed()
    dev1, dev2 = DEVICES
    # dev2 listens to the whole fleet: its ACL gives it no read
    heard: list = []
    spy = Publisher(broker.port, dev2, user=dev2, password=password(folder, dev2))
    got_suback = threading.Event()
    spy.client.on_message = lambda c, u, m: heard.append(m.topic)
    spy.client.on_subscribe = lambda *a: got_suback.set()
    assert spy.wait_connected()
    spy.client.subscribe("slm/#", qos=1)
    assert got_suback.wait(60)
    anonymous = Publisher(broker.port, f"anon-{uuid.uuid4().hex[:6]}")  # refused: tries to send nothing through
    device = Publisher(broker.port, dev1, user=dev1, password=password(folder, dev1))
    try:
        assert device.wait_connected()
        rng = random.Random(3)
        forged = minute(1, 0, rng)
        own = minute(0, 1, rng)
        device.publish([(topic(dev2, "minute"), encode(forged)),  # dev1 pretends to be dev2: the broker drops it
                        (topic(dev1, "minute"), encode(own))])
        wait_until(lambda: count(db, "SELECT count(*) FROM minutes WHERE device = ?", (dev1,)) == 1,
                   "dev1's own minute", collector=collector)
        assert count(db, "SELECT count(*) FROM minutes WHERE device = ?", (dev2,)) == 0
        assert count(db, "SELECT count(*) FROM minutes") == 1
        assert heard == []
    finally:
        device.close()
        spy.close()
        anonymous.close()
    counts = collector.stop()
    assert counts.received == 1


def test_rerun_keeps_passwords_adds_devices_rotates_on_request(tmp_path):
    provision(str(tmp_path), DEVICES)
    before = {a: password(tmp_path, a) for a in DEVICES + ["collector"]}
    provision(str(tmp_path), DEVICES + ["a0b1c2000003"], rotate=("a0b1c2000002",))
    assert password(tmp_path, DEVICES[0]) == before[DEVICES[0]]
    assert password(tmp_path, "collector") == before["collector"]
    assert password(tmp_path, DEVICES[1]) != before[DEVICES[1]]
    assert (tmp_path / "credentials" / "a0b1c2000003.json").stat().st_mode & 0o077 == 0
    assert (tmp_path / "passwd").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("args, message", [
    (["--device", "bad/id"], "letters, digits"),
    (["--device", "collector"], "collector's account"),
    (["--device", "d1", "--tls-cert", "x.crt"], "go together"),
    ([], "name at least one device"),
])
def test_cli_bad_input_is_one_line_exit_2(args, message, tmp_path):
    done = subprocess.run([sys.executable, "-m", "slm.cli", "provision", "--out", str(tmp_path / "b"), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_collector_with_a_wrong_password_exits_1_in_one_line(secured, tmp_path):
    broker, folder = secured
    pw = tmp_path / "pw"
    pw.write_text("wrong\n")
    done = subprocess.run([sys.executable, "-m", "slm.cli", "collect", "--broker", broker.url, "--user", "collector",
                           "--password-file", str(pw), "--db", str(tmp_path / "f.sqlite"), "--duration", "60"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "refused the connection" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def make_certificates(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl): (ca.crt, server.crt, server.key)."""
    def openssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=folder)
        assert done.returncode == 0, done.stderr
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.crt", "-days", "2",
            "-subj", f"/CN={name} test CA")
    openssl("req", *ec, "-keyout", f"{name}-server.key", "-out", f"{name}-server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", f"{name}-server.csr", "-CA", f"{name}-ca.crt", "-CAkey", f"{name}-ca.key",
            "-CAcreateserial", "-out", f"{name}-server.crt", "-days", "2", "-extfile", "ext")
    return folder / f"{name}-ca.crt", folder / f"{name}-server.crt", folder / f"{name}-server.key"


def test_tls_broker_collector_checks_the_certificate():
    folder = Path(tempfile.mkdtemp(prefix="slm-tls-"))
    try:
        ca, cert, key = make_certificates(folder, "fleet")
        other_ca, _, _ = make_certificates(folder, "other")
        port = free_port()
        provision(str(folder), DEVICES, port=port, bind="127.0.0.1", tls_cert=str(cert), tls_key=str(key))
        assert "certfile" in (folder / "mosquitto.conf").read_text()
        with Mosquitto(config_file=folder / "mosquitto.conf", port=port):
            db = str(folder / "fleet.sqlite")
            collector = RunningCollector(port, db, "tls-collector", user="collector",
                                         password=password(folder, "collector"), ca_file=str(ca))
            collector.wait_subscribed()
            device = Publisher(port, DEVICES[0], user=DEVICES[0], password=password(folder, DEVICES[0]),
                               ca_file=str(ca))
            try:
                assert device.wait_connected()
                device.publish([(topic(DEVICES[0], "minute"), encode(minute(0, 0, random.Random(1))))])
                wait_until(lambda: count(db, "SELECT count(*) FROM minutes") == 1, "a minute over TLS",
                           collector=collector)
            finally:
                device.close()
            collector.stop()
            done = subprocess.run([sys.executable, "-m", "slm.cli", "collect", "--broker", f"mqtts://127.0.0.1:{port}",
                                   "--tls", str(other_ca), "--user", "collector", "--password-file",
                                   str(folder / "collector.password"), "--db", str(folder / "x.sqlite"),
                                   "--duration", "30"], capture_output=True, text=True, timeout=120)
            assert done.returncode == 1
            assert "certificate verify failed" in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
                done.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_record_keys_made_kept_and_rotated(tmp_path):
    """Each device gets a 64-hex record key, private (0600 in a 0700 folder); a re-run keeps it, --rotate renews it,
    and the CLI never prints it."""
    out = subprocess.run([sys.executable, "-m", "slm.cli", "provision", "--out", str(tmp_path), "--device", DEVICES[0],
                          "--device", DEVICES[1]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    keys = {d: (tmp_path / "keys" / f"{d}.key").read_text().strip() for d in DEVICES}
    assert all(len(k) == 64 and bytes.fromhex(k) for k in keys.values()) and keys[DEVICES[0]] != keys[DEVICES[1]]
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert all((tmp_path / "keys" / f"{d}.key").stat().st_mode & 0o777 == 0o600 for d in DEVICES)
    assert not (tmp_path / "keys" / "collector.key").exists()
    again = subprocess.run([sys.executable, "-m", "slm.cli", "provision", "--out", str(tmp_path), "--device",
                            "a0b1c2000003", "--rotate", DEVICES[1]], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    now = {d: (tmp_path / "keys" / f"{d}.key").read_text().strip() for d in DEVICES}
    assert now[DEVICES[0]] == keys[DEVICES[0]] and now[DEVICES[1]] != keys[DEVICES[1]]
    assert (tmp_path / "keys" / "a0b1c2000003.key").exists()
    printed = out.stdout + out.stderr + again.stdout + again.stderr
    assert not any(k in printed for k in list(keys.values()) + list(now.values()))
