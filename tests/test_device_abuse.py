"""The device under abuse (firmware on the MicroPython unix port): text it must not store, lines it must answer once,
replies that must fit a line, a full disk, a command flood, a stray Ctrl-C. docs/protocol.md says what it must do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import zlib

import numpy as np
import pytest
import serial

from slm.firmware_engine import micropython_binary
from slm.protocol import BadLine, command, parse_line
from slm.sim import signals
from slm.virtual_board import VirtualBoard
from tests.conftest import words_of
from tests.test_device_app import RATE, device_dir, line

pytestmark = pytest.mark.micropython

BAD_TIME = "2026-01-01T00:00\udfff"  # a lone surrogate: json.dumps sends it as the escape \udfff


def raw_line(text: bytes) -> bytes:
    return text + b"*%08x\n" % zlib.crc32(text)


def strict(raw: bytes) -> dict | None:
    """A device line as a host must read it: strict UTF-8, right checksum (slm.protocol.parse_line would replace bad
    bytes; here they fail the test)."""
    raw.decode("utf-8")
    return parse_line(raw)


def run_raw(d, stdin: bytes = b"", timeout: float = 120) -> tuple[list[bytes], list[dict]]:
    """Run the device until its audio ends; its output lines and the records among them (read strictly)."""
    r = subprocess.run([micropython_binary(), "main.py"], cwd=d, input=stdin, capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    lines = r.stdout.split(b"\n")
    assert all(len(x.rstrip(b"\r")) <= 1024 for x in lines), max(len(x) for x in lines)
    return lines, [rec for rec in (strict(x) for x in lines if x) if rec is not None]


def replies(recs: list[dict]) -> list[dict]:
    return [r for r in recs if r["t"] in ("ack", "error")]


# -- text --------------------------------------------------------------------------------------------------------

def calibrate(i: int, time_text: str, **extra) -> bytes:
    rec = {"method": "calibrator", "offset_db": 1.5, "reference": {"level_db": 94.0}, "readings": [94.0],
           "time": time_text, **extra}
    return line({"cmd": "calibrate", "id": i, "record": rec})


def test_a_surrogate_in_a_calibration_time_is_refused_and_nothing_is_stored(tmp_path):
    d = device_dir(tmp_path, seconds=0.5)
    (d / "config.json").write_text("{}")
    cmds = (calibrate(1, BAD_TIME) + calibrate(2, "2026-02-30T10:00:00+08:00") + calibrate(3, "2026-01-01T00:00xyz")
            + calibrate(4, "2026-07-04T10:12:33+08:00", note="ok \udfff")
            + calibrate(5, "2026-07-04T10:12:33+08:00", reference={"\ud800": 1.0})
            + raw_line(b'{"cmd":"calibrate","id":6,"record":{"method":"calibrator","offset_db":1.5,"readings":[94],'
                       b'"reference":{},"time":"2026-07-04T10:12:33Z","note":"\xed\xbf\xbf"}}')  # the raw bytes, not an escape
            + raw_line(b'{"cmd":"info","id":7,"x":"\xc0\x80"}')  # an overlong form: not UTF-8 either
            + line({"cmd": "\udfff", "id": 8})
            + line({"cmd": "info", "id": 9}))
    _, recs = run_raw(d, cmds)
    got = {r["id"]: r for r in replies(recs) if r["id"] is not None}
    anonymous = [r for r in replies(recs) if r["id"] is None]
    for i in (1, 2, 3, 4, 5, 8):
        assert got[i]["t"] == "error" and got[i]["code"] == "bad_value", got[i]
    assert "Unicode" in got[1]["message"] and "ISO 8601" in got[2]["message"] and "ISO 8601" in got[3]["message"]
    assert [r["code"] for r in anonymous] == ["bad_line", "bad_line"]  # 6 and 7: not UTF-8, so no id could be read
    assert got[9]["t"] == "ack" and got[9]["result"]["cal"]["time"] is None
    assert not (d / "calibration.json").exists() and (d / "config.json").read_text() == "{}"


def test_a_real_iso_time_is_stored(tmp_path):
    d = device_dir(tmp_path, seconds=0.5)
    _, recs = run_raw(d, calibrate(1, "2024-02-29T23:59:60.5-05:30") + line({"cmd": "info", "id": 2}))
    got = {r["id"]: r for r in replies(recs)}
    assert got[1]["t"] == "ack", got[1]
    assert got[2]["result"]["cal"]["time"] == "2024-02-29T23:59:60.5-05:30"


def test_text_stored_unchecked_by_older_firmware_is_sent_readable(tmp_path):
    """A board calibrated by older firmware holds ED BF BF in config.json and calibration.json: hello, info and
    cal_history are strict UTF-8 again, and the calibration offset is kept."""
    d = device_dir(tmp_path, seconds=0.5)
    bad = b"2026-01-01T00:00\xed\xbf\xbf"
    (d / "config.json").write_bytes(b'{"calibration_db": 1.5, "calibration_method": "calibrator", '
                                    b'"calibration_time": "' + bad + b'"}')
    (d / "calibration.json").write_bytes(b'[\n{"n":1,"method":"calibrator","offset_db":1.5,"previous_offset_db":0.0,'
                                         b'"time":"' + bad + b'","readings":[94.0]}\n]\n')
    _, recs = run_raw(d, line({"cmd": "info", "id": 1}) + line({"cmd": "cal_history", "id": 2}))
    hello = recs[0]
    assert hello["t"] == "hello" and hello["cal"]["offset_db"] == 1.5 and hello["faults"] == []
    assert hello["cal"]["time"] == "2026-01-01T00:00???"
    got = {r["id"]: r for r in replies(recs)}
    assert got[1]["result"]["cal"]["time"] == "2026-01-01T00:00???"
    assert got[2]["result"]["record"]["time"] == "2026-01-01T00:00???"


# -- one reply per line, every reply a line ------------------------------------------------------------------------

def test_every_line_gets_exactly_one_reply_that_fits_a_line(tmp_path):
    d = device_dir(tmp_path, seconds=1.0)
    sent = [
        line({"cmd": "x" * 300, "id": 1}),  # MicroPython cannot intern a name of 252+ characters
        line({"cmd": "info", "id": 2}),  # in the same read: it must not be lost
        line({"cmd": "get", "id": 3, "keys": ["k" * 970]}),  # an error echoing this key would exceed 1024 bytes
        line({"cmd": "set", "id": 4, "values": {"k" * 900: 1}}),
        line({"cmd": "calibrate", "id": 5, "record": {"method": "check", "z" * 900: 1}}),
        line({"cmd": "info", "id": 10 ** 300}),  # an id too long to echo
        line({"cmd": "get", "id": 6, "keys": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}),
        b"\xff\xfe not UTF-8\n",
        b"x" * 3000 + b"\n",  # too long: bad_line
        line({"cmd": "info", "id": 7}),
    ]
    lines, recs = run_raw(d, b"".join(sent))
    rs = replies(recs)
    assert len(rs) == len(sent), [(r["id"], r.get("code")) for r in rs]
    assert [r["id"] for r in rs] == [1, 2, 3, 4, 5, None, 6, None, None, 7]
    assert [r.get("code") for r in rs] == ["unknown_cmd", None, "bad_key", "bad_key", "bad_key", "bad_value",
                                           "bad_key", "bad_line", "bad_line", None]
    assert rs[2]["message"].startswith("k" * 40) and len(rs[2]["message"]) < 60
    assert all(len(x) <= 1024 for x in lines)


def test_a_full_disk_is_an_io_error_with_a_readable_message(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.fail("this test needs /dev/full (Linux) to stand for a full flash")
    d = device_dir(tmp_path, seconds=0.5)
    (d / "config.json").write_text('{"limit_hysteresis_db": 2.0}')
    os.symlink("/dev/full", d / "config.tmp")  # every write of the configuration meets ENOSPC
    _, recs = run_raw(d, line({"cmd": "set", "id": 1, "values": {"limit_hysteresis_db": 3}}) +
                      line({"cmd": "get", "id": 2}))
    got = {r["id"]: r for r in replies(recs)}
    assert got[1]["t"] == "error" and got[1]["code"] == "io_error"
    assert got[1]["message"] == "no space left on device (errno 28)"
    assert got[2]["result"]["limit_hysteresis_db"] == 2.0  # nothing changed
    assert json.loads((d / "config.json").read_text()) == {"limit_hysteresis_db": 2.0}


# -- what records carry --------------------------------------------------------------------------------------------

def test_levels_go_out_at_0_01_db_and_status_names_when_lmax_happened(tmp_path):
    d = device_dir(tmp_path, seconds=1.0)
    x = np.concatenate([signals.sine(1000.0, 70.0, 1.0, RATE), signals.sine(1000.0, 86.6, 1.0, RATE),
                        signals.sine(1000.0, 75.3, 2.0, RATE)])
    words_of(x).astype("<i4").tofile(d / "audio.bin")
    (d / "config.json").write_text('{"status_s": 1, "stream_hz": 10}')
    lines, recs = run_raw(d)
    level_keys = ("LAeq", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax", "LASmin", "LCpeak", "LZpeak", "LAE", "LA10",
                  "LA50", "LA90", "LAF", "LAS", "lmax")
    for raw in lines:
        for key, value in re.findall(rb'"(\w+)":(-?[0-9.eE+-]+)', raw):
            if key.decode() in level_keys:
                assert re.fullmatch(rb"-?\d+\.\d\d", value), raw  # two decimals, never 86.59999999999999
    intervals = [r for r in recs if r["t"] == "interval"]
    statuses = [r for r in recs if r["t"] == "status"]
    assert len(intervals) == 4 and statuses
    for st in statuses:
        closed = [iv for iv in intervals if iv["end_ms"] <= st["ms"]]
        if not closed:
            assert st["lmax"] is None and st["lmax_ms"] is None
            continue
        top = max(closed, key=lambda iv: iv["LAFmax"])
        assert st["lmax"] == top["LAFmax"] and st["lmax_ms"] == top["end_ms"], (st, top)
    assert statuses[-1]["lmax_ms"] == 2000  # the 86.6 dB second


# -- a command flood ---------------------------------------------------------------------------------------------

def flood_lines(n: int, seed: int = 8) -> list[bytes]:
    """Valid commands (every one with an id), damaged lines, junk and over-long lines, mixed."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append(line({"cmd": "get", "id": i, "keys": ["interval_s"]}))
        elif kind == 1:
            out.append(line({"cmd": "info", "id": i}))
        elif kind == 2:
            out.append(bytes(rng.integers(32, 127, 40, dtype=np.uint8)) + b"\n")
        elif kind == 3:
            out.append(b"{" + b"z" * 1100 + b"}\n")
        else:
            out.append(line({"cmd": "nope", "id": i}))
    return out


def test_a_command_flood_keeps_the_meter_on_time_and_answers_within_a_budget(tmp_path):
    """3000 lines (1.2 MB) waiting on the console while 10 s of audio are measured: every line that is read is
    answered exactly once and in order, the console work per loop turn is bounded (at most 2 replies per 20 ms
    chunk of device time, and reply bytes within the credit), every interval is measured, nothing fails, and the
    status counts what had to wait."""
    d = device_dir(tmp_path, seconds=10.0)
    (d / "config.json").write_text('{"status_s": 5}')
    sent = flood_lines(3000)
    _, recs = run_raw(d, b"".join(sent), timeout=300)
    intervals = [r for r in recs if r["t"] == "interval"]
    assert [iv["end_ms"] for iv in intervals] == [1000 * k for k in range(1, 11)]
    rs = replies(recs)
    assert 100 <= len(rs) < len(sent)
    for i, r in enumerate(rs):  # the i-th reply answers the i-th line
        kind = i % 5
        if kind in (0, 1):
            assert r["t"] == "ack" and r["id"] == i, (i, r)
        elif kind == 4:
            assert r["code"] == "unknown_cmd" and r["id"] == i, (i, r)
        else:
            assert r["t"] == "error" and r["id"] is None and r["code"] in ("bad_line", "bad_checksum"), (i, r)
    per_chunk: dict[int, int] = {}
    for r in rs:
        per_chunk[r["ms"]] = per_chunk.get(r["ms"], 0) + 1
    assert max(per_chunk.values()) <= 2
    last_ms = rs[-1]["ms"]
    reply_bytes = sum(len(json.dumps(r, separators=(",", ":"))) + 10 for r in rs[:-1])
    assert reply_bytes <= 1200 + 4000 * last_ms / 1000  # the burst plus 4000 bytes per device second
    status = [r for r in recs if r["t"] == "status"][-1]
    answered = [r for r in rs if r["seq"] < status["seq"]]
    assert not [f for f in status["faults"] if f.startswith("exception")]
    assert status["console"]["lines"] == len(answered)
    assert status["console"]["overlong"] == len([i for i in range(len(answered)) if i % 5 == 3])
    assert status["console"]["throttled"] > 100


class Port:
    """The host's end of a virtual board's port: records, read strictly, and a write lock for the flood."""

    def __init__(self, path: str):
        self.ser = serial.Serial(path, 115200, timeout=0.05, write_timeout=5)
        self.records: list[dict] = []
        self.bad = 0
        self.lock = threading.Lock()
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.ser.write(data)

    def pump(self) -> None:
        self._buf += self.ser.read(65536)
        while b"\n" in self._buf:
            raw, _, rest = self._buf.partition(b"\n")
            self._buf = bytearray(rest)
            try:
                rec = strict(bytes(raw))
            except (BadLine, UnicodeDecodeError):
                self.bad += 1
                continue
            if rec is not None:
                self.records.append(rec)

    def wait_for(self, pred, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self.pump()
            for rec in self.records[seen:]:
                if pred(rec):
                    return rec
            seen = len(self.records)
        raise AssertionError(f"no {what} within {timeout} s; last: {self.records[-3:]}")


def status_of(port: Port, i: int) -> dict:
    port.write(command("get", i, keys=["status"]))
    return port.wait_for(lambda r: r.get("id") == i, 60, "status reply")["result"]["status"]


def test_a_flood_over_the_virtual_boards_port_is_survived(tmp_path):
    """Full speed for 8 s from another thread: the board neither reboots nor stops measuring (every interval
    follows the one before), logs no exception, answers afterwards, and reports what had to wait."""
    with VirtualBoard("calibrator", speed=1) as vb:
        port = Port(vb.port)
        port.write(command("info", 1))
        port.wait_for(lambda r: r.get("id") == 1, 60, "info reply")
        stop = threading.Event()
        chunk = b"".join(flood_lines(500, seed=1))

        def flood():
            while not stop.is_set():
                try:
                    port.write(chunk)
                except serial.SerialTimeoutException:
                    pass  # the board reads at its own pace: the port is full

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        end = time.monotonic() + 8.0
        while time.monotonic() < end:
            port.pump()
        stop.set()
        t.join(10)
        flood_records = len(port.records)
        last_ms = port.records[-1]["ms"]
        port.wait_for(lambda r: r.get("t") == "interval" and r["ms"] > last_ms, 60, "interval")
        st = status_of(port, 2)
        port.ser.close()
    seqs = [r["seq"] for r in port.records]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), "the board restarted"
    received = set(seqs)
    intervals = [r for r in port.records if r["t"] == "interval"]
    during = [r for r in port.records[:flood_records] if r["t"] == "interval"]
    assert len(during) >= 3  # 8 device seconds at speed 1: the meter kept measuring through the flood
    for a, b in zip(intervals, intervals[1:]):
        if all(s in received for s in range(a["seq"], b["seq"])):  # none lost on the way to us
            assert b["start_ms"] == a["end_ms"], (a, b)
    assert not [f for f in st["faults"] if f.startswith("exception")], st["faults"]
    assert st["console"]["lines"] > 100 and st["console"]["throttled"] > 0, st["console"]


# -- a stray Ctrl-C ------------------------------------------------------------------------------------------------

def test_one_ctrl_c_byte_does_not_stop_the_meter(tmp_path):
    """A single 0x03 and nothing after it: after CTRL_C_WAIT_MS the meter goes on by itself (no Ctrl-D, no reboot),
    and status counts the interrupt."""
    with VirtualBoard("calibrator", speed=5) as vb:
        port = Port(vb.port)
        port.write(command("info", 1))
        port.wait_for(lambda r: r.get("id") == 1, 60, "info reply")
        before = port.wait_for(lambda r: r.get("t") == "interval", 60, "interval")
        port.write(b"\x03")
        after = port.wait_for(lambda r: r.get("t") == "interval" and r["seq"] > before["seq"] + 20, 60,
                              "intervals after the Ctrl-C")
        st = status_of(port, 2)
        port.ser.close()
    assert after["start_ms"] > before["end_ms"]
    seqs = [r["seq"] for r in port.records]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), "the board restarted"
    assert st["interrupts"] == 1
