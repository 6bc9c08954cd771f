"""`slm verify` on records the real firmware signed (MicroPython unix port): a virtual board with a key provisioned
by `slm provision`, an evening with a power cut, monitored (`slm monitor --log`) and pulled (`slm pull`); and a device
on the network whose broker was away (store-and-forward from its ring) into `slm collect --keys`: everything
verifies clean, the collector marks every record valid, a changed digit is found; the key appears in no output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from slm.virtual_board import VirtualBoard
from tests.collect_helpers import RunningCollector, count, wait_until
from tests.services import Mosquitto, free_port
from tests.test_minute import BAND_60, make_device, minutes_of
from tests.test_net_device import networked, restart_briefly, run_net
from tests.test_verify import one_digit

pytestmark = pytest.mark.micropython


def slm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm.cli", *args], capture_output=True, text=True, timeout=timeout)


def provisioned(tmp_path: Path, device: str) -> tuple[Path, bytes]:
    """slm provision's keys folder for the device, and its key."""
    done = slm("provision", "--out", str(tmp_path / "broker"), "--device", device)
    assert done.returncode == 0, done.stderr
    keys = tmp_path / "broker" / "keys"
    return keys, bytes.fromhex((keys / f"{device}.key").read_text().strip())


class Monitor:
    """`slm monitor --log` on a board's port, in its own process; ``wait_minutes(k)``; ``stop()`` (Ctrl-C)."""

    def __init__(self, port: str, log: Path):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "slm.cli", "monitor", "--port", port, "--log", str(log),
                                      "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_minutes(self, k: int) -> None:
        waited = 0.0
        while _minutes_in(self.log) < k:
            assert self.proc.poll() is None, self.proc.stderr.read()
            assert waited < 600, "the monitor's log did not grow"
            time.sleep(0.5)
            waited += 0.5

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=60)
        return out + err


def _minutes_in(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text(encoding="utf-8").splitlines() if '"t":"minute"' in line)


def test_a_virtual_boards_evening_with_a_power_cut_verifies_from_its_log_and_its_pull(tmp_path):
    device = f"vb{uuid.uuid4().hex[:10]}"
    keys, key = provisioned(tmp_path, device)
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "device_id.txt").write_text(device + "\n")
    log = tmp_path / "evening.jsonl"
    with VirtualBoard("square-evening", speed=0, device_dir=flash, key=key) as vb:
        monitor = Monitor(vb.port, log)
        try:
            monitor.wait_minutes(3)
            vb.kill()  # a power cut; the board comes back and hears the scene go on
            vb.restart()
            monitor.wait_minutes(5)
        finally:
            printed = monitor.stop()
        pulled = slm("pull", "--port", vb.port, "--out", str(tmp_path / "pulled"))
        assert pulled.returncode == 0, pulled.stderr
    outputs = []
    for source in (str(log), str(tmp_path / "pulled")):
        done = slm("verify", source, "--keys", str(keys), "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        got = json.loads(done.stdout)
        chains = {c["kind"]: c for c in got["chains"]}
        assert chains["minute"]["valid"] >= 5 and chains["minute"]["start_checked"], chains["minute"]
        assert chains["audit"]["valid"] >= 2 and chains["audit"]["state"] == "valid"  # key, boots, firmware...
        outputs.append(done)
    trail = [json.loads(x) for x in (tmp_path / "pulled" / "audit.jsonl").read_text().splitlines()]
    assert sum(e["what"] == "boot" for e in trail) >= 2  # every start of the board is in its audit trail
    assert any(e["what"] == "power_loss" for e in trail)

    rows = (tmp_path / "pulled" / "minutes.csv").read_text(encoding="utf-8").splitlines()
    cells = rows[3].split(",")
    col = rows[0].split(",").index("LAeq")
    cells[col] = one_digit(cells[col])
    rows[3] = ",".join(cells)
    (tmp_path / "pulled" / "minutes.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    bad = slm("verify", str(tmp_path / "pulled"), "--keys", str(keys), "--json")
    assert bad.returncode == 1
    minute = next(c for c in json.loads(bad.stdout)["chains"] if c["kind"] == "minute")
    assert minute["problem"]["kind"] == "altered" and minute["problem"]["n"] == int(cells[0])
    for out in outputs + [bad, pulled]:
        assert key.hex() not in out.stdout + out.stderr
    assert key.hex() not in log.read_text() + printed


def test_a_network_outage_and_a_reboot_verify_clean_in_the_collectors_database(tmp_path):
    """The broker is unreachable while the device measures an evening's minutes with an episode (it keeps them in
    its ring); it reboots, the broker is back, and it sends what it kept: the collector (with the keys) marks every
    record valid, and `slm verify` of the database finds every chain valid."""
    device = f"net{uuid.uuid4().hex[:8]}"
    keys, key = provisioned(tmp_path, device)
    levels = minutes_of([50.0, 66.0, 67.0, 52.0])
    port = free_port()  # nothing listens there yet: the network is down
    d = networked(make_device(tmp_path, levels, "2026-07-15T12:00:00.000Z",
                              {"bands": BAND_60, "episode_min_minutes": 1, "status_s": 30}), port, device)
    (d / "slm_key.bin").write_bytes(key)
    sent = [r for r in run_net(d) if r["t"] in ("minute", "event", "audit")]
    db = str(tmp_path / "fleet.sqlite")
    with Mosquitto(port=port) as broker:
        collector = RunningCollector(broker.port, db, f"collect-{uuid.uuid4().hex[:8]}",
                                     keys={device: key})
        collector.wait_subscribed()
        sent += [r for r in restart_briefly(d, "2026-07-15T12:30:00.000Z") if r["t"] in ("minute", "event", "audit")]
        minutes = sum(r["t"] == "minute" for r in sent)
        wait_until(lambda: count(db, "SELECT count(*) FROM minutes WHERE verified = 1") == minutes,
                   "every minute stored and marked valid", collector=collector)
        wait_until(lambda: count(db, "SELECT count(*) FROM audits") >= sum(r["t"] == "audit" for r in sent),
                   "every audit record stored", collector=collector)
        counts = collector.stop()
    assert key.hex() not in "\n".join(collector.lines) + json.dumps(counts.as_dict())
    assert sum(counts.rejected.values()) == 0
    assert minutes >= 4 and all(r.get("mac") for r in sent)
    assert count(db, "SELECT count(*) FROM minutes WHERE verified IS NOT 1") == 0
    assert count(db, "SELECT count(*) FROM events WHERE verified IS NOT 1") == 0
    assert count(db, "SELECT count(*) FROM audits WHERE verified IS NOT 1") == 0
    done = slm("verify", db, "--keys", str(keys), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    chains = {c["kind"]: c for c in json.loads(done.stdout)["chains"]}
    assert chains["minute"]["valid"] == minutes and chains["event"]["valid"] >= 2
    assert key.hex() not in done.stdout + done.stderr
