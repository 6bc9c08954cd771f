"""The device application (firmware/app.py, commands.py, config_store.py) on the MicroPython unix port, and its
command handler and configuration under random input and power cuts."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slm.boards import load_board
from slm.protocol import parse_line
from slm.cpython_shim import import_firmware
from slm.resources import firmware_dir
from slm.firmware_engine import micropython_binary
from slm.sim import signals
from tests.conftest import words_of

RATE = 48000


def line(obj) -> bytes:
    text = json.dumps(obj, separators=(",", ":"))
    return (text + "*%08x\n" % zlib.crc32(text.encode())).encode()


def parse(raw: str) -> dict | None:
    raw = raw.rstrip("\r\n")
    if "*" not in raw or not raw.startswith("{"):
        return None
    text, crc = raw.rsplit("*", 1)
    assert int(crc, 16) == zlib.crc32(text.encode()), raw
    return json.loads(text)


def device_dir(tmp_path: Path, seconds: float = 2.0, level_db: float = 94.0) -> Path:
    d = tmp_path / "device"
    d.mkdir()
    for f in firmware_dir().glob("*.py"):
        if f.name not in ("__init__.py", "stream_runner.py"):
            shutil.copy(f, d)
    board = load_board("esp32-devkitc-inmp441").device_config()
    board["audio_path"] = "audio.bin"
    board["startup_discard_s"] = 0.0  # synthetic audio: no microphone start-up transient to drop
    (d / "board.json").write_text(json.dumps(board))
    (d / "rtc.json").write_text(json.dumps({"utc": "2026-07-15T12:00:00.000Z", "source": "rtc"}))  # a set RTC
    words_of(signals.sine(1000.0, level_db, seconds, RATE)).astype("<i4").tofile(d / "audio.bin")
    return d


def run_device(d: Path, commands: bytes = b"") -> list[dict]:
    r = subprocess.run([micropython_binary(), "main.py"], cwd=d, input=commands, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    assert all(len(x) <= 1024 for x in lines)  # docs/protocol.md: lines of at most 1024 bytes
    return [rec for rec in (parse(x) for x in lines) if rec is not None]


@pytest.mark.micropython
def test_records_have_sequence_numbers_device_time_and_levels(tmp_path):
    recs = run_device(device_dir(tmp_path, seconds=3.0))
    assert recs[0]["t"] == "hello" and recs[0]["proto"] == 2 and recs[0]["board"] == "esp32-devkitc-inmp441"
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    intervals = [r for r in recs if r["t"] == "interval"]
    assert [(i["start_ms"], i["end_ms"]) for i in intervals] == [(0, 1000), (1000, 2000), (2000, 3000)]
    assert all(abs(i["LAeq"] - 94.0) < 0.05 for i in intervals)
    levels = [r for r in recs if r["t"] == "level"]
    assert len(levels) == 6 and all(abs(r["LAF"] - 94.0) < 0.1 for r in levels[1:])
    assert all(r["ms"] <= 3000 for r in recs)


@pytest.mark.micropython
def test_missing_and_corrupt_configuration_give_defaults_and_a_fault(tmp_path):
    d = device_dir(tmp_path, seconds=1.0)
    hello = run_device(d)[0]
    assert "config_missing" in hello["faults"] and hello["config"]["interval_s"] == 1.0
    (d / "config.json").write_text('{"interval_s": 0.5, "stream_hz": ')  # a torn write
    hello = run_device(d)[0]
    assert "config_corrupt" in hello["faults"] and hello["config"]["interval_s"] == 1.0
    (d / "config.json").write_text('{"interval_s": 99999}')  # valid JSON, value out of range
    hello = run_device(d)[0]
    assert "config_corrupt" in hello["faults"] and hello["config"]["interval_s"] == 1.0


@pytest.mark.micropython
def test_set_get_and_errors_change_nothing(tmp_path):
    d = device_dir(tmp_path, seconds=2.0)
    cmds = b"".join([
        line({"cmd": "set", "id": 1, "values": {"interval_s": 0.5, "zone": "2"}}),
        line({"cmd": "set", "id": 2, "values": {"interval_s": 0.7, "stream_hz": 99}}),  # one bad value: nothing
        line({"cmd": "get", "id": 3, "keys": ["interval_s", "zone", "stream_hz"]}),
        line({"cmd": "fly", "id": 4}),
        b'{"cmd":"get","id":5}*00000000\n',
        b"not a protocol line at all\n",
        line({"cmd": "set", "id": 6, "values": {"colour": "red"}}),
        line({"cmd": "stream", "id": 7, "hz": 10}),
    ])
    recs = run_device(d, cmds)
    replies = {r["id"]: r for r in recs if r["t"] in ("ack", "error") and r["id"] is not None}
    assert replies[1]["t"] == "ack" and replies[1]["result"] == {"interval_s": 0.5, "zone": "2"}
    assert replies[2]["t"] == "error" and replies[2]["code"] == "bad_value"
    assert replies[3]["result"] == {"interval_s": 0.5, "zone": "2", "stream_hz": 2}
    assert replies[4]["code"] == "unknown_cmd"
    assert replies[6]["code"] == "bad_key"
    assert replies[7]["t"] == "ack"
    anonymous = [r for r in recs if r["t"] == "error" and r["id"] is None]
    assert {r["code"] for r in anonymous} == {"bad_checksum", "bad_line"}
    saved = json.loads((d / "config.json").read_text())
    assert saved["interval_s"] == 0.5 and saved["zone"] == "2" and saved["stream_hz"] == 10
    intervals = [r for r in recs if r["t"] == "interval"]
    # commands are read after the first 20 ms chunk; the new interval length restarts the statistics at once
    assert [(i["start_ms"], i["end_ms"]) for i in intervals] == [(20, 520), (520, 1020), (1020, 1520)]


@pytest.mark.micropython
def test_power_cut_during_configuration_writes_always_leaves_a_valid_file(tmp_path):
    """kill -9 at 200 random moments while the device saves its configuration over and over: every time, the file
    it starts with loads without a fault, holding one of the written configurations."""
    d = tmp_path / "flash"
    d.mkdir()
    for name in ("config_store.py", "limits.py", "protocol.py"):
        shutil.copy(firmware_dir() / name, d)
    writer = ("import config_store\nc = dict(config_store.DEFAULTS)\nconfig_store.save(c)\nprint('ready')\ni = 0\n"
              "while True:\n    i += 1\n    c['status_s'] = 1 + i % 3000\n    c['limit_hysteresis_db'] = i % 20\n"
              "    config_store.save(c)\n")
    (d / "writer.py").write_text(writer)
    checker = "import config_store\nc, fault = config_store.load()\nprint(fault, c['status_s'], c['limit_hysteresis_db'])\n"
    (d / "checker.py").write_text(checker)
    rng = random.Random(61672)
    for _ in range(200):
        p = subprocess.Popen([micropython_binary(), "writer.py"], cwd=d, stdout=subprocess.PIPE)
        assert p.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0, 0.02))
        p.send_signal(signal.SIGKILL)
        p.wait()
        out = subprocess.run([micropython_binary(), "checker.py"], cwd=d, capture_output=True, text=True,
                             timeout=30).stdout.split()
        assert out[0] == "None", out  # no fault: the file is whole
        status_s, hysteresis = int(float(out[1])), float(out[2])
        if status_s == 10 and hysteresis == 1.0:
            continue  # the defaults written first
        assert hysteresis == (status_s - 1) % 20  # one save's values, never half of two


class _Out:
    def __init__(self):
        self.lines: list[str] = []

    def write(self, s):
        self.lines.append(s)


def _handler_under_cpython(tmp_path):
    """The firmware's MeterApp and CommandHandler under CPython (the same code), in a temporary device dir."""
    d = device_dir(tmp_path, seconds=0.1)
    os.chdir(d)
    app_mod = import_firmware("app")
    commands = import_firmware("commands")
    hardware = import_firmware("hardware")
    board, fault = app_mod.load_board()
    assert fault is None
    app = app_mod.MeterApp(hardware.UnixPlatform(), board, _Out())
    return app, commands.CommandHandler(app), d


_CAL = {"method": "calibrator", "offset_db": 0.5, "reference": {"level_db": 94.0}, "readings": [94.0],
        "time": "2026-07-04T10:12:33+08:00"}
_ODD_TEXT = ["\udfff", "\ud83d\ude00", "2026-01-01T00:00\udfff", "x" * 300, "é", "2026-02-30T00:00", ""]


def _mutations():
    valid = [line({"cmd": c, "id": i, **extra}) for i, (c, extra) in enumerate([
        ("info", {}), ("get", {"keys": ["interval_s"]}), ("set", {"values": {"stream_hz": 3}}),
        ("set", {"values": {"zone": None}}), ("stream", {"hz": 5}), ("reset", {}),
        ("calibrate", {"record": _CAL}), ("calibrate", {"record": dict(_CAL, method="check", note="n")}),
        ("cal_history", {"index": 0}), ("set", {"values": {"calibration_db": 0.25}})])]
    raw = st.binary(max_size=300)
    mutated = st.tuples(st.sampled_from(valid), st.integers(0, 200), st.binary(min_size=1, max_size=3)).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + len(t[2]):])
    text = st.text(max_size=5) | st.sampled_from(_ODD_TEXT)
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | text,
                               lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3),
                               max_leaves=8)
    record = st.fixed_dictionaries({}, optional={k: json_values | st.just(v) for k, v in _CAL.items()}) | st.dictionaries(
        st.sampled_from(["method", "time", "note", "operator", "reference", "readings", "offset_db", "z" * 300]),
        json_values, max_size=4)
    crafted = st.builds(lambda cmd, extra: line({"cmd": cmd, **extra}),
                        st.sampled_from(["info", "get", "set", "stream", "reset", "nope", "", "Set", "calibrate",
                                         "cal_history", "x" * 300, "\udfff"]),
                        st.dictionaries(st.sampled_from(["id", "keys", "values", "hz", "index"]), json_values,
                                        max_size=3) | st.builds(lambda r: {"record": r}, record))
    return st.one_of(raw, mutated, crafted)


def _fuzz(tmp_path, examples):
    cwd = os.getcwd()
    try:
        app, handler, d = _handler_under_cpython(tmp_path)

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(data=_mutations())
        def one(data):
            before = dict(app.config)
            saved_before = (d / "config.json").read_text() if (d / "config.json").exists() else None
            history_before = (d / "calibration.json").read_bytes() if (d / "calibration.json").exists() else None
            app.writer.out.lines.clear()
            text = data.split(b"\n")[0]
            handler.handle(text)
            lines = [json.loads(x.rsplit("*", 1)[0]) for x in app.writer.out.lines]
            replies = [r for r in lines if r["t"] != "audit"]  # a change also sends its audit entries (issue 12)
            assert len(replies) == 1 and replies[0]["t"] in ("ack", "error")
            assert replies[0]["t"] == "ack" or len(lines) == 1  # a refused command changes nothing, audits nothing
            assert all(len(x.encode()) <= 1025 for x in app.writer.out.lines)
            if replies[0]["t"] == "error":
                assert app.config == before
                now = (d / "config.json").read_text() if (d / "config.json").exists() else None
                assert now == saved_before
                history = (d / "calibration.json").read_bytes() if (d / "calibration.json").exists() else None
                assert history == history_before

        one()
    finally:
        os.chdir(cwd)


def test_command_handler_takes_random_and_mutated_input(tmp_path):
    _fuzz(tmp_path, 1000)  # 100,000 in make soak


@pytest.mark.slow
def test_command_handler_takes_100000_random_and_mutated_inputs(tmp_path):
    _fuzz(tmp_path, 100_000)


# The same fuzz on the MicroPython unix port (what a board runs): cases go to one process in batches, which answers
# each with the firmware's handler and reports its replies and whether the configuration or the history changed.

_MP_FUZZ = r"""
import app, commands, hardware


class Out:
    def __init__(self):
        self.lines = []

    def write(self, s):
        self.lines.append(s)


def snapshot(name):
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError:
        return None


board, fault = app.load_board()
a = app.MeterApp(hardware.UnixPlatform(), board, Out())
h = commands.CommandHandler(a)
cases = open("cases.bin", "rb")
res = open("results.bin", "wb")
while True:
    head = cases.read(4)
    if len(head) < 4:
        break
    data = cases.read(int.from_bytes(head, "little"))
    before = dict(a.config)
    config, history = snapshot("config.json"), snapshot("calibration.json")
    a.writer.out.lines = []
    h.handle(data)
    flags = (a.config != before, snapshot("config.json") != config, snapshot("calibration.json") != history)
    res.write(b"%d %d %d %d\n" % ((len(a.writer.out.lines),) + tuple(int(f) for f in flags)))
    for reply in a.writer.out.lines:
        res.write(reply.encode() if isinstance(reply, str) else reply)
res.close()
"""

MP_BATCH = 100


def _check_mp_batch(d, batch: list[bytes]) -> None:
    cases = b"".join(len(x).to_bytes(4, "little") + x for x in (c.split(b"\n")[0] for c in batch))
    (d / "cases.bin").write_bytes(cases)
    r = subprocess.run([micropython_binary(), "fuzz.py"], cwd=d, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = (d / "results.bin").read_bytes().split(b"\n")
    i = 0
    for case in batch:
        n, config_changed, config_file_changed, history_changed = map(int, out[i].split())
        lines = out[i + 1:i + 1 + n]
        i += 1 + n
        assert all(len(x) <= 1024 for x in lines), case
        parsed = [parse_line(x) for x in lines]  # the host's parser, with strict UTF-8 on top
        for x in lines:
            x.decode("utf-8")
        assert all(r is not None for r in parsed), (case, lines)
        replies = [r for r in parsed if r["t"] != "audit"]  # a change also sends its audit entries (issue 12)
        assert len(replies) == 1, (case, lines)
        rec = replies[0]
        assert rec["t"] in ("ack", "error"), (case, lines)
        assert rec["t"] == "ack" or n == 1, (case, lines)  # a refused command audits nothing
        if rec["t"] == "error":
            assert not (config_changed or config_file_changed or history_changed), (case, rec)


def _fuzz_micropython(tmp_path, cases):
    d = device_dir(tmp_path, seconds=0.1)
    (d / "fuzz.py").write_text(_MP_FUZZ)

    @settings(max_examples=max(1, cases // MP_BATCH), deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    @given(batch=st.lists(_mutations(), min_size=MP_BATCH, max_size=MP_BATCH))
    def one(batch):
        _check_mp_batch(d, batch)

    one()


@pytest.mark.micropython
def test_command_handler_on_micropython_takes_random_and_mutated_input(tmp_path):
    _fuzz_micropython(tmp_path, 3000)


@pytest.mark.micropython
@pytest.mark.slow
def test_command_handler_on_micropython_takes_100000_random_and_mutated_inputs(tmp_path):
    _fuzz_micropython(tmp_path, 100_000)
