"""Virtual boards (slm.virtual_board, `slm virtual`): the unmodified firmware on the MicroPython unix port behind a
pty, fed by the simulator, talked to over the port with pyserial like a real board."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from slm.link import DeviceLink
from slm.protocol import BadLine, command, parse_line
from slm.sim.scenario import load_scenario
from slm.sim.scene import SceneStream
from slm.sim.truth import TruthMeter
from slm.virtual_board import VirtualBoard

pytestmark = pytest.mark.micropython

SPEED = 20
BOARD = "esp32-devkitc-inmp441"
SENSITIVITY_ERROR_DB = -1.3  # the calibrator scenario's board microphone


class Console:
    """The host's end of the port: protocol records (and the raw bytes, for the REPL)."""

    def __init__(self, port: str):
        self.ser = serial.Serial(port, 115200, timeout=0.05)
        self.buf = bytearray()
        self.raw = bytearray()
        self.records: list[dict] = []
        self.pos = 0  # records before this one have been looked at by expect()
        self.bad = 0

    def close(self):
        self.ser.close()

    def send(self, cmd: str, id: int | None = None, **fields) -> None:  # noqa: A002
        self.ser.write(command(cmd, id, **fields))

    def _pump(self) -> list[dict]:
        data = self.ser.read(4096)
        self.raw += data
        self.buf += data
        new = []
        while b"\n" in self.buf:
            line, _, rest = self.buf.partition(b"\n")
            self.buf = bytearray(rest)
            try:
                rec = parse_line(bytes(line))
            except BadLine:
                self.bad += 1
                continue
            if rec is not None:
                new.append(rec)
        self.records += new
        return new

    def expect(self, pred, timeout: float = 10.0, what: str = "record") -> dict:
        """The next record (after the last one expect returned) for which pred(record) is true."""
        deadline = time.monotonic() + timeout
        while True:
            while self.pos < len(self.records):
                rec = self.records[self.pos]
                self.pos += 1
                if pred(rec):
                    return rec
            if time.monotonic() > deadline:
                break
            self._pump()
        raise AssertionError(f"no {what} within {timeout} s; last records: {self.records[-3:]}")

    def expect_bytes(self, text: bytes, timeout: float = 5.0) -> None:
        start = len(self.raw)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._pump()
            if text in self.raw[start:]:
                return
        raise AssertionError(f"no {text!r} within {timeout} s; got {bytes(self.raw[start:])[-200:]!r}")

    def quiet_for(self, seconds: float) -> list[dict]:
        """The records that arrive within ``seconds``."""
        end = time.monotonic() + seconds
        got = []
        while time.monotonic() < end:
            got += self._pump()
        self.pos = len(self.records)
        return got


def is_(kind, **fields):
    return lambda r: r.get("t") == kind and all(r.get(k) == v for k, v in fields.items())


@pytest.fixture
def board_factory(tmp_path):
    boards = []

    def make(**kw) -> VirtualBoard:
        kw.setdefault("scenario", "calibrator")
        kw.setdefault("speed", SPEED)
        vb = VirtualBoard(**kw).start()
        boards.append(vb)
        return vb

    yield make
    for vb in boards:
        vb.stop()


@pytest.fixture
def consoles():
    opened = []

    def make(port):
        c = Console(port)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


def truth_laeq(seconds: int) -> list[float]:
    """What an ideal meter at the calibrator scenario's board microphone reads, per 1 s interval."""
    sc = load_scenario("calibrator")
    stream = SceneStream(sc, meter_ids=["board"])
    truth = TruthMeter(stream.rate, interval_s=1.0)
    for _ in range(seconds):
        truth.process(stream.next_chunk(stream.rate)["board"].pressure_pa)
    truth.finish()
    return [i["LAeq"] for i in truth.intervals()]


def test_hello_then_intervals_every_device_second_at_the_truth_minus_the_microphone_error(board_factory, consoles):
    vb = board_factory()
    assert re.fullmatch(r"/dev/pts/\d+", vb.port) and os.path.realpath(vb.port) == vb.port
    con = consoles(vb.port)
    hello = con.expect(is_("hello"), what="hello")
    assert hello["proto"] == 2 and hello["board"] == BOARD and hello["seq"] == 0 and hello["ms"] == 0
    assert hello["serial"] == vb.serial and vb.serial.startswith("virtual-")
    at_34 = con.expect(lambda r: r.get("t") == "interval" and r["end_ms"] >= 34000, timeout=20, what="interval at 34 s")
    # one read of the pty may bring records after the 34 s interval too: stop at it
    recs = con.records[con.records.index(hello):con.records.index(at_34) + 1]
    assert [r["seq"] for r in recs] == list(range(len(recs)))  # no gaps
    intervals = [r for r in recs if r["t"] == "interval"]
    assert [(i["start_ms"], i["end_ms"]) for i in intervals] == [(k * 1000, k * 1000 + 1000) for k in range(34)]
    truth = truth_laeq(34)
    # the tone fades out from 34.8 s; on a loaded machine the scene runs ahead of what the board heard when the feeder
    # falls behind or the board does not read in time (vb.scene_lead_s), so intervals that may hear the fade are not
    # compared
    last = min(34, int(34.8 - vb.scene_lead_s))
    assert last >= 20, (vb.clock_slips_s, vb.audio_lost_s)
    for k in range(3, last):
        assert intervals[k]["LAeq"] == pytest.approx(truth[k] + SENSITIVITY_ERROR_DB, abs=0.3), k
    assert truth[10] == pytest.approx(94.0, abs=0.3)  # the calibrator's 94 dB reaches the microphone
    assert con.bad == 0


def test_set_is_acked_and_applied_malformed_commands_get_errors(board_factory, consoles):
    vb = board_factory()
    con = consoles(vb.port)
    con.expect(is_("hello"))
    con.send("set", 7, values={"stream_hz": 10})
    ack = con.expect(is_("ack", id=7))
    assert ack["cmd"] == "set" and ack["result"] == {"stream_hz": 10}
    levels = []
    while len(levels) < 6:
        levels.append(con.expect(is_("level")))
    gaps = {b["ms"] - a["ms"] for a, b in zip(levels[1:], levels[2:])}
    assert gaps == {100}  # 10 per device second
    assert json.loads((vb.device_dir / "config.json").read_text())["stream_hz"] == 10

    good = command("set", 8, values={"stream_hz": 1})
    con.ser.write(good[:-9] + b"00000000\n")  # checksum wrong
    err = con.expect(is_("error"))
    assert err["code"] == "bad_checksum"
    con.ser.write(b"{not json*12345678\n")
    assert con.expect(is_("error"))["code"] in ("bad_line", "bad_checksum")
    con.send("set", 9, values={"stream_hz": 99})
    err = con.expect(is_("error", id=9))
    assert err["code"] == "bad_value"
    con.send("frobnicate", 10)
    assert con.expect(is_("error", id=10))["code"] == "unknown_cmd"
    assert json.loads((vb.device_dir / "config.json").read_text())["stream_hz"] == 10  # nothing changed
    start = next(i for i, r in enumerate(con.records) if r["t"] == "hello")
    seqs = [r["seq"] for r in con.records[start:]]
    assert seqs == list(range(len(seqs)))


def test_reboot_restarts_the_process_with_the_saved_configuration_on_the_same_port(board_factory, consoles, tmp_path):
    vb = board_factory(device_dir=tmp_path / "dev")
    port = vb.port
    con = consoles(port)
    first = con.expect(is_("hello"))
    assert first["faults"] == [] and first["config"]["stream_hz"] == 2  # a fresh board: the defaults, no fault
    con.send("set", 1, values={"stream_hz": 5, "interval_s": 0.5})
    con.expect(is_("ack", id=1))
    con.send("reboot", 2)
    con.expect(is_("ack", id=2, cmd="reboot"))
    hello = con.expect(is_("hello"), what="hello after reboot")
    assert hello["seq"] == 0 and hello["ms"] == 0 and hello["serial"] == first["serial"]
    assert hello["config"]["stream_hz"] == 5 and hello["config"]["interval_s"] == 0.5 and hello["faults"] == []
    ivs = [con.expect(is_("interval")) for _ in range(2)]
    # an interval also ends at a UTC minute boundary: of two in a row at most one is cut short
    assert any(iv["end_ms"] - iv["start_ms"] == 500 for iv in ivs) and ivs[0]["seq"] > 0
    assert vb.port == port and vb.boots == 2 and list(vb.exit_codes) == [75] and vb.running
    con.close()

    # the device directory is the board's flash: a new virtual board on it has the same serial and configuration
    vb.stop()
    assert (tmp_path / "dev" / "config.json").exists() and not (tmp_path / "dev" / "audio.fifo").exists()
    vb2 = board_factory(device_dir=tmp_path / "dev")
    con2 = consoles(vb2.port)
    hello2 = con2.expect(is_("hello"))
    assert hello2["serial"] == first["serial"] and hello2["config"]["stream_hz"] == 5


def test_killed_board_stays_down_until_restart_then_records_resume(board_factory, consoles):
    vb = board_factory()
    port = vb.port
    con = consoles(port)
    con.expect(is_("hello"))
    con.expect(is_("interval"))
    vb.kill()
    assert not vb.running and vb.pid is None and list(vb.exit_codes) == [-signal.SIGKILL]
    con.quiet_for(0.3)  # what was already on its way
    assert con.quiet_for(0.7) == []
    lost_before = vb.audio_lost_s
    vb.restart()
    assert vb.running and vb.port == port and vb.boots == 2
    hello = con.expect(is_("hello"), what="hello after restart")
    assert hello["seq"] == 0
    iv = con.expect(is_("interval"))
    assert iv["start_ms"] == 0 and iv["LAeq"] is not None
    # the scene went on while the board was off: that audio was not heard
    assert lost_before > 0.5 * SPEED * 0.7 and vb.scene_time_s > vb.audio_fed_s


def test_ctrl_c_stops_the_application_and_gives_the_repl(board_factory, consoles):
    vb = board_factory()
    con = consoles(vb.port)
    con.expect(is_("hello"))
    con.ser.write(b"\x03\r")  # Ctrl-C and a key: a host takes the REPL (a lone Ctrl-C: the meter goes on)
    con.expect_bytes(b">>> ")
    con.ser.write(b"print(6 * 7)\r")
    con.expect_bytes(b"42")
    con.ser.write(b"\x01")  # raw REPL, as mpremote uses it
    con.expect_bytes(b"raw REPL; CTRL-B to exit\r\n>")
    con.ser.write(b"import os; print(sorted(os.listdir()))\x04")
    con.expect_bytes(b"'board.json', 'calibration_store.py', 'chain.py', 'clock.py', 'commands.py', 'config.json', "
                     b"'config_store.py', 'device_id.txt'")
    con.ser.write(b"\x02")
    con.expect_bytes(b">>> ")
    assert vb.running


def test_speed_zero_runs_as_fast_as_the_firmware_reads(board_factory, consoles):
    vb = board_factory(speed=0)
    con = consoles(vb.port)
    con.expect(is_("hello"))
    t0 = time.monotonic()
    iv = con.expect(lambda r: r.get("t") == "interval" and r["end_ms"] >= 60000, timeout=20)
    assert iv["seq"] > 0 and time.monotonic() - t0 < 10  # > 6 device seconds per wall second even on a busy CI


def test_device_link_talks_to_a_virtual_board(board_factory):
    vb = board_factory()
    with DeviceLink(vb.port, timeout=5) as link:
        assert link.serial == vb.serial and link.hello["proto"] == 2
        assert link.set(stream_hz=4) == {"stream_hz": 4}
        assert link.get(["stream_hz"]) == {"stream_hz": 4}


# -- the command ---------------------------------------------------------------------------------------------------

def slm(*args) -> list[str]:
    return [sys.executable, "-m", "slm.cli", "virtual", *args]


@pytest.mark.parametrize("args", [("--scenario", "nope"), ("--meter", "nope"), ("--board", "nope")])
def test_cli_bad_input_exits_2_with_one_line(args):
    r = subprocess.run(slm(*args), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("slm: error: ")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_the_port_serves_and_stops_cleanly(sig, tmp_path):
    dev = tmp_path / "dev"
    proc = subprocess.Popen(slm("--scenario", "calibrator", "--speed", str(SPEED), "--dir", str(dev)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([proc.stdout], [], [], 30)[0], "no port line"
        line = proc.stdout.readline().strip()
        m = re.fullmatch(rf"(/dev/pts/\d+) calibrator/board {BOARD} speed {SPEED} id (virtual-[0-9a-f]+)", line)
        assert m, line
        port = m.group(1)
        assert (dev / "device_id.txt").read_text().strip() == m.group(2)  # the id to provision the board's key for
        con = Console(port)
        try:
            con.expect(lambda r: r.get("t") in ("hello", "level", "interval"))
        finally:
            con.close()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == ""
    pid = int(re.search(r"pid (\d+)", err).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # MicroPython reaped
    assert (dev / "device_id.txt").exists() and not (dev / "audio.fifo").exists()
    assert Path(dev / "main.py").exists()


REPEATING_TONE = """
[scene]
description = "a steady 80 dB 1 kHz tone, 2 s long: the virtual board repeats it"
duration_s = 2.0
size_m = [4.0, 4.0]
ground = "none"
seed = 5

[[source]]
id = "tone"
kind = "tone"
position_m = [1.0, 2.0, 1.0]
level_dba_at_1m = 80.0
fade_s = 0.0

[[meter]]
id = "board"
position_m = [2.0, 2.0, 1.0]
microphone = "SPH0645LM4H-B"
"""


def test_a_repeating_scenario_adds_nothing_at_the_wrap(board_factory, consoles, tmp_path):
    """The scenario repeats every 2 s: across 8 wraps the board's maxima, peaks and overload flag are those of the
    steady tone the truth hears (a restarted microphone's start-up transient used to read LAFmax 114 dB, LCpeak
    122.6 dB and overload at each wrap)."""
    scenario = tmp_path / "repeating-tone.toml"
    scenario.write_text(REPEATING_TONE)
    seconds = 18
    vb = board_factory(scenario=str(scenario), board="esp32-devkitc-sph0645", speed=0)
    con = consoles(vb.port)
    con.expect(is_("hello"))
    con.expect(lambda r: r.get("t") == "interval" and r["end_ms"] >= seconds * 1000, timeout=60,
               what=f"interval at {seconds} s")
    intervals = {r["start_ms"] // 1000: r for r in con.records if r.get("t") == "interval"}
    stream = SceneStream(load_scenario(scenario), rate=vb.rate, meter_ids=["board"], repeat=True)
    truth = TruthMeter(stream.rate, interval_s=1.0)
    for _ in range(seconds):
        truth.process(stream.next_chunk(stream.rate)["board"].pressure_pa)
    truth.finish()
    expected = truth.intervals()
    assert expected[10]["LAFmax"] == pytest.approx(80.0, abs=0.1)  # the truth is the steady tone across wraps
    for k in range(3, seconds):  # after the board's 2.5 s start-up discard
        got, want = intervals[k], expected[k]
        assert got["overload"] is False, k
        assert got["LAFmax"] == pytest.approx(want["LAFmax"], abs=0.3), k
        assert got["LCpeak"] == pytest.approx(want["LCpeak"], abs=0.5), k
        assert got["LAeq"] == pytest.approx(want["LAeq"], abs=0.3), k


def test_the_virtual_board_is_a_package_of_one_job_modules_behind_the_old_import():
    """slm.virtual: device directory, process, port bridge, audio feeder, and the board that ties them; the old import
    path slm.virtual_board gives the same classes."""
    import importlib

    import slm.virtual_board as old
    from slm.firmware_engine import EngineError
    from slm.virtual import VirtualBoard as New, VirtualBoardError

    assert old.VirtualBoard is New and old.VirtualBoardError is VirtualBoardError
    assert issubclass(VirtualBoardError, EngineError)
    for name in ("device_dir", "process", "bridge", "feeder", "board", "errors", "onepoll"):
        module = importlib.import_module(f"slm.virtual.{name}")
        assert module.__doc__ and module.__doc__.strip(), name
        assert len(Path(module.__file__).read_text().splitlines()) < 400, name  # the one module had 696
