"""Host side of the device protocol (docs/protocol.md): line format, discovery, and the link over a pty.

No hardware and no network: a pty pair stands in for the serial port, and a scripted peer on its master side
plays the device, in these unit tests only (end-to-end tests run the real firmware). The peer writes what the
firmware would write and answers commands from a table; a real board is re-found by its USB serial number, which
is tested here with a monkeypatched ``comports()`` whose "board" is a pty.
"""

from __future__ import annotations

import json
import os
import re
import select
import threading
import time
import tty
import zlib
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import serial.tools.list_ports
from serial.tools.list_ports_common import ListPortInfo

from slm import discovery
from slm.discovery import AmbiguousBoardError, NoBoardError, PortInfo
from slm.link import (CLOSED, CONNECTED, LOST, RECONNECTING, REFUSED, DeviceError, DeviceLink, LinkError, LinkLost,
                      LinkTimeout, ProtocolVersionError)
from slm.protocol import MAX_LINE, PROTOCOL_VERSION, BadLine, command, encode_line, parse_line

HELLO = {"proto": 2, "fw": "0.1.0", "board": "test-board", "mic": "INMP441", "rate": 48000, "serial": "a1b2c3",
         "cal": {"offset_db": 0.0, "sensitivity_dbfs": -26.0, "method": "datasheet", "time": None},
         "config": {"interval_s": 1.0, "stream_hz": 2}, "faults": []}

REPL_NOISE = [
    b"ets Jun  8 2016 00:22:57\r\n",
    b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
    b"MicroPython v1.29.0 on 2026-07-05; Generic ESP32 module with ESP32\r\n",
    b'Type "help()" for more information.\r\n',
    b">>> \r\n",
    b"Traceback (most recent call last):\r\n",
    b'  File "main.py", line 12, in <module>\r\n',
    b"MemoryError: memory allocation failed, allocating 4096 bytes\r\n",
    b"{'dict': 'printed by Python', 'no': 'star'}\r\n",
    b"\r\n",
    b"x" * 200 + b"\r\n",
]


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:  # generous: a loaded machine
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# ------------------------------------------------------------------------------------------------ scripted peer

Handler = Callable[[dict], "tuple[str, Any] | None"]  # ("ack", result) / ("error", (code, message))


class Peer:
    """The device end of a pty: writes records with seq/ms, answers commands from ``handlers``.

    A handler gets the command object and returns ``("ack", result)``, ``("error", (code, message))`` or None
    (no reply). ``info`` answers with HELLO unless replaced.
    """

    def __init__(self, hello: dict | None = None, link_path: Path | None = None, booting: bool = False):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF translation before the link opens its end
        self.path = os.ttyname(self.slave)
        self.hello = dict(HELLO if hello is None else hello)
        self.seq = 0
        self.ms = 0
        self.commands: list[dict] = []
        self.handlers: dict[str, Handler] = {"info": lambda c: ("ack", self.hello)}
        self.default_ack = True
        self.booting = booting  # writes its hello just before it answers the first command
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.link_path = link_path
        if link_path is not None:
            self.publish(link_path)

    def publish(self, link_path: Path) -> None:
        """Put the pty under a stable name (a symlink), as a virtual board does."""
        tmp = link_path.with_suffix(".new")
        os.symlink(self.path, tmp)
        os.replace(tmp, link_path)

    def write(self, data: bytes) -> None:
        with self._lock:
            os.write(self.master, data)

    def record(self, t: str, seq: int | None = None, **fields: Any) -> dict:
        with self._lock:
            if seq is not None:
                self.seq = seq
            rec = {"t": t, "seq": self.seq, "ms": self.ms, **fields}
            self.seq += 1
            self.ms += 100
            os.write(self.master, encode_line(rec))
        return rec

    def _serve(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    obj = parse_line(line)
                except BadLine:
                    self.record("error", id=None, cmd=None, code="bad_checksum", message="bad checksum")
                    continue
                if obj is None or "cmd" not in obj:
                    continue
                self.commands.append(obj)
                if self.booting:
                    self.booting = False
                    self.record("hello", **self.hello)
                handler = self.handlers.get(obj["cmd"])
                reply: tuple[str, Any] | None
                if handler is None:
                    reply = ("ack", {}) if self.default_ack else None
                else:
                    reply = handler(obj)
                if reply is None:
                    continue
                kind, payload = reply
                if kind == "ack":
                    self.record("ack", id=obj.get("id"), cmd=obj["cmd"], result=payload)
                else:
                    code, message = payload
                    self.record("error", id=obj.get("id"), cmd=obj["cmd"], code=code, message=message)

    def unplug(self) -> None:
        """Close the master: the slave reads EIO / end of file, like a board pulled out. Its stable name goes too:
        left pointing at the freed /dev/pts/N, a reconnecting link could open another test's pty under that number."""
        self._stop.set()
        self._thread.join(2)
        os.close(self.master)
        os.close(self.slave)
        if self.link_path is not None:
            tmp = self.link_path.with_suffix(".gone")
            os.symlink("/nonexistent/unplugged", tmp)
            os.replace(tmp, self.link_path)

    def close(self) -> None:
        if not self._stop.is_set():
            self.unplug()


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


@pytest.fixture
def link_factory():
    links: list[DeviceLink] = []

    def make(port: Any, handshake: bool = True, **kw: Any) -> DeviceLink:
        kw.setdefault("timeout", 2.0)
        kw.setdefault("reconnect_interval", 0.05)
        link = DeviceLink(port, **kw)
        links.append(link)
        return link.open(handshake=handshake)

    yield make
    for link in links:
        link.close()


def collect(link: DeviceLink, n: int, timeout: float = 5.0) -> list[dict]:
    out: list[dict] = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        out += link.read_records(timeout=0.1)
    return out


# ------------------------------------------------------------------------------------------------ line format

def test_encode_line_format_is_compact_json_star_crc32_newline():
    line = encode_line({"t": "level", "seq": 412, "ms": 41230, "LAF": 71.43})
    assert line == b'{"t":"level","seq":412,"ms":41230,"LAF":71.43}*%08x\n' % zlib.crc32(
        b'{"t":"level","seq":412,"ms":41230,"LAF":71.43}')
    assert re.fullmatch(rb"\{[^\n]*\}\*[0-9a-f]{8}\n", line)


@pytest.mark.parametrize("obj", [
    {"t": "hello", "seq": 0, "ms": 0, **HELLO},
    {"t": "interval", "seq": 7, "ms": 1000, "LAeq": 55.21, "LA90": None, "overload": False},
    {"t": "error", "seq": 3, "ms": 5, "id": None, "cmd": None, "code": "bad_line", "message": "a * b {x}"},
    {"cmd": "set", "id": 7, "values": {"stream_hz": 10, "zone": None}},
    {"t": "event", "seq": 1, "ms": 2, "kind": "exceedance_start", "band": "Platz – 70 dB(A) · µPa"},
])
def test_round_trip(obj):
    line = encode_line(obj)
    assert parse_line(line) == obj
    assert parse_line(line[:-1]) == obj  # without the newline
    assert parse_line(line[:-1] + b"\r\n") == obj  # a \r before the \n is ignored


def test_command_lines():
    assert parse_line(command("info")) == {"cmd": "info"}
    assert parse_line(command("set", 7, values={"stream_hz": 10})) == {"cmd": "set", "id": 7,
                                                                        "values": {"stream_hz": 10}}
    assert command("get", id=3, keys=["status"]).startswith(b'{"cmd":"get","id":3,"keys":["status"]}*')
    assert PROTOCOL_VERSION == 2


def test_encode_refuses_what_is_not_a_line():
    with pytest.raises(ValueError):
        encode_line({"x": "y" * MAX_LINE})
    with pytest.raises(ValueError):
        encode_line({"x": float("nan")})
    with pytest.raises(TypeError):
        encode_line([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("noise", REPL_NOISE)
def test_repl_noise_is_not_a_protocol_line(noise):
    assert parse_line(noise) is None


def _with_crc(text: bytes, crc: int | None = None) -> bytes:
    return text + b"*%08x" % (zlib.crc32(text) if crc is None else crc)


@pytest.mark.parametrize("line,reason", [
    (_with_crc(b'{"t":"level","seq":1,"ms":2}', 0x12345678), "checksum mismatch"),
    (b'{"t":"level","seq":1,"ms":2}*5E1F0A3C', "hex"),
    (b'{"t":"level","seq":1,"ms":2}*5e1f0a3', "hex"),
    (b'{"t":"level","seq":1,"ms":2}*', "hex"),
    (_with_crc(b'{"t":"level","seq":1,'), "not JSON"),
    (_with_crc(b'{"t":"level"}garbage'), "not JSON"),
])
def test_lines_that_look_like_records_but_fail_are_bad(line, reason):
    with pytest.raises(BadLine, match=reason):
        parse_line(line)


def test_text_that_is_not_utf8_under_a_right_checksum_is_read_with_replacement():
    """A device whose files hold invalid UTF-8 (older firmware stored a calibration time with a lone surrogate, ED BF
    BF) repeats it in every hello: the host reads the record, bad bytes as U+FFFD, instead of locking the board out."""
    text = b'{"t":"hello","seq":0,"ms":0,"proto":1,"cal":{"time":"2026-01-01T00:00\xed\xbf\xbf"}}'
    rec = parse_line(_with_crc(text))
    assert rec is not None and rec["proto"] == 1
    assert rec["cal"]["time"].startswith("2026-01-01T00:00") and "\ufffd" in rec["cal"]["time"]
    assert parse_line(_with_crc(b'{"t":"\xff\xfe"}')) == {"t": "\ufffd\ufffd"}
    with pytest.raises(BadLine, match="checksum mismatch"):  # a wrong checksum is still never accepted
        parse_line(_with_crc(text, zlib.crc32(text) ^ 1))


def test_link_talks_to_a_device_that_holds_invalid_utf8(peer, link_factory):
    bad_time = "2026-01-01T00:00\udfff"  # sent by the peer as the bytes ED BF BF, as MicroPython stores it
    hello = dict(HELLO, cal=dict(HELLO["cal"], time="@@TIME@@"))
    raw = json.dumps({"t": "ack", "seq": 0, "ms": 0, "id": None, "cmd": "info", "result": hello},
                     separators=(",", ":")).encode().replace(b"@@TIME@@", bad_time.encode("utf-8", "surrogatepass"))

    def info(cmd):
        body = raw.replace(b'"id":null', b'"id":%d' % cmd["id"])
        peer.write(_with_crc(body) + b"\n")
        return None

    peer.handlers["info"] = info
    link = link_factory(peer.path)
    assert link.hello is not None and link.hello["serial"] == HELLO["serial"]
    assert link.hello["cal"]["time"].startswith("2026-01-01T00:00") and link.bad_lines == 0


def test_one_flipped_bit_is_never_accepted():
    line = encode_line({"t": "level", "seq": 412, "ms": 41230, "LAF": 71.43, "LAS": 70.88})[:-1]
    for i in range(len(line)):
        for bit in range(8):
            mutated = bytearray(line)
            mutated[i] ^= 1 << bit
            try:
                assert parse_line(bytes(mutated)) is None
            except BadLine:
                pass


def test_over_long_line_is_bad():
    text = json.dumps({"t": "x", "pad": "a" * MAX_LINE}, separators=(",", ":")).encode()
    with pytest.raises(BadLine, match="longer"):
        parse_line(_with_crc(text))
    with pytest.raises(BadLine, match="longer"):
        parse_line(b"z" * (MAX_LINE + 1))
    fits = _with_crc(b'{"p":"' + b"a" * (MAX_LINE - 17) + b'"}')
    assert len(fits) == MAX_LINE and parse_line(fits + b"\r\n") == {"p": "a" * (MAX_LINE - 17)}


def test_record_after_console_text_on_the_same_line_is_recovered():
    line = encode_line({"t": "hello", "seq": 0, "ms": 0, "proto": 1})
    assert parse_line(b"\x00\xffets boot garbage" + line) == {"t": "hello", "seq": 0, "ms": 0, "proto": 1}
    assert parse_line(b">>> " + line) is not None
    # ... but a damaged record after console text is only noise: it cannot be told from printed text.
    assert parse_line(b">>> " + line.replace(b"hello", b"hellO")) is None


# Fuzzing: the parser accepts a line only if its checksum is right, and raises nothing but BadLine.

def _independently_valid(raw: bytes) -> bool:
    """The contract, written out again: some "{" starts JSON text whose CRC-32 is the 8 lowercase hex digits after
    the last "*"."""
    body = raw[:-1] if raw.endswith(b"\n") else raw
    body = body[:-1] if body.endswith(b"\r") else body
    star = body.rfind(b"*")
    if star < 0 or not re.fullmatch(rb"[0-9a-f]{8}", body[star + 1:]):
        return False
    want = int(body[star + 1:], 16)
    return any(zlib.crc32(body[i:star]) == want for i in range(star) if body[i:i + 1] == b"{")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
_records = st.fixed_dictionaries({"t": st.sampled_from(["level", "interval", "status", "ack", "error"]),
                                  "seq": st.integers(0, 2**31), "ms": st.integers(0, 2**40)},
                                 optional={"x": _json_values, "y": _json_values})


@st.composite
def _mutated_lines(draw) -> tuple[bytes, dict | None]:
    kind = draw(st.sampled_from(["random", "random_record_like", "mutated", "mutated", "valid"]))
    if kind == "random":
        return draw(st.binary(max_size=MAX_LINE + 40)), None
    if kind == "random_record_like":
        return b"{" + draw(st.binary(max_size=200)) + b"*" + draw(st.binary(max_size=10)), None
    rec = draw(_records)
    try:
        line = bytearray(encode_line(rec))
    except ValueError:  # too long
        return b"", None
    if kind == "valid":
        return bytes(line), rec
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "swap"]))
        i = draw(st.integers(0, len(line) - 1)) if line else 0
        if not line:
            break
        if op == "flip":
            line[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            line[i] = draw(st.sampled_from(b'{}*"\\0123456789abcdef:,\n\r ') | st.integers(0, 255))
        elif op == "insert":
            line.insert(i, draw(st.integers(0, 255)))
        elif op == "delete":
            del line[i]
        else:
            j = draw(st.integers(0, len(line) - 1))
            line[i], line[j] = line[j], line[i]
    return bytes(line), rec


def _check_parser(case: tuple[bytes, dict | None]) -> None:
    raw, original = case
    try:
        got = parse_line(raw)
    except BadLine:
        return
    if got is None:
        return
    assert isinstance(got, dict)
    assert _independently_valid(raw), raw
    if original is not None:
        # A mutated record is never accepted as a different record (CRC-32 catches every burst up to 32 bits;
        # a wider mutation slips through with probability 2**-32).
        assert got == original, raw


_fuzz = given(_mutated_lines())


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@_fuzz
def test_parser_never_accepts_a_wrong_checksum(case):
    _check_parser(case)


@pytest.mark.slow
@settings(max_examples=100_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@_fuzz
def test_parser_never_accepts_a_wrong_checksum_soak(case):
    _check_parser(case)


# ------------------------------------------------------------------------------------------------ the link

def test_records_flow_and_hello_is_remembered(peer, link_factory):
    link = link_factory(peer.path)
    assert link.state == CONNECTED
    assert link.serial == "a1b2c3" and link.hello["proto"] == 2
    assert peer.commands[0]["cmd"] == "info" and isinstance(peer.commands[0]["id"], int)
    sent = [peer.record("level", LAF=60.0 + i) for i in range(5)]
    assert collect(link, 5) == sent  # the info ack was consumed by info(), not queued
    assert (link.records, link.bad_lines, link.gaps) == (6, 0, 0)


def test_repl_noise_and_tracebacks_between_records_are_skipped_not_bad(peer, link_factory):
    link = link_factory(peer.path)
    for noise in REPL_NOISE:
        peer.write(noise)
        peer.record("level")
    got = collect(link, len(REPL_NOISE))
    assert [r["t"] for r in got] == ["level"] * len(REPL_NOISE)
    assert link.bad_lines == 0 and link.gaps == 0
    assert link.noise_lines == sum(1 for n in REPL_NOISE if n.strip())


def test_lines_split_across_reads_are_joined(peer, link_factory):
    link = link_factory(peer.path)
    line = encode_line({"t": "level", "seq": 1, "ms": 100})
    for i in range(len(line)):
        peer.write(line[i:i + 1])
    assert collect(link, 1) == [{"t": "level", "seq": 1, "ms": 100}]


def test_bad_lines_are_counted_and_never_delivered(peer, link_factory):
    link = link_factory(peer.path, handshake=False)
    good = encode_line({"t": "level", "seq": 0, "ms": 0})
    peer.write(good.replace(b'"ms":0', b'"ms":1'))  # checksum no longer matches
    peer.write(_with_crc(b'{"t":"level","seq":1') + b"\n")  # checksum matches, JSON broken
    peer.write(encode_line({"t": "level", "seq": 2}))  # no ms
    peer.write(b"{" + b"9" * (3 * MAX_LINE) + b"\n")  # over-long, counted once
    peer.write(encode_line({"t": "level", "seq": 3, "ms": 300}))
    got = collect(link, 1)
    assert got == [{"t": "level", "seq": 3, "ms": 300}]
    assert wait_until(lambda: link.bad_lines == 4), link.stats()


def test_repl_echo_of_our_command_is_not_a_record(peer, link_factory):
    link = link_factory(peer.path, handshake=False)
    peer.write(b">>> " + command("info", 1))
    peer.record("level", seq=0)
    assert [r["t"] for r in collect(link, 1)] == ["level"]
    assert link.echoed_lines == 1 and link.bad_lines == 0


def test_gaps_are_counted_with_lost_records(peer, link_factory):
    link = link_factory(peer.path, handshake=False)
    for seq in (10, 11, 12, 15, 16, 20):
        peer.record("level", seq=seq)
    collect(link, 6)
    assert (link.gaps, link.lost_records, link.restarts) == (2, 2 + 3, 0)


def test_restart_with_hello_is_not_a_gap(peer, link_factory):
    link = link_factory(peer.path, handshake=False)
    for seq in range(100, 105):
        peer.record("level", seq=seq)
    peer.ms = 0
    peer.record("hello", seq=0, **HELLO)
    peer.record("level")
    peer.record("level")
    got = collect(link, 8)
    assert got[5]["t"] == "hello"
    assert (link.gaps, link.lost_records, link.restarts) == (0, 0, 1)


def test_restart_whose_hello_was_lost_counts_the_missed_start(peer, link_factory):
    link = link_factory(peer.path, handshake=False)
    for seq in range(100, 103):
        peer.record("level", seq=seq)
    peer.ms = 0
    peer.record("level", seq=3)  # hello (0), and records 1, 2 were lost
    collect(link, 4)
    assert (link.restarts, link.gaps, link.lost_records) == (1, 1, 3)


def test_restart_seen_by_the_clock_when_seq_ran_past_the_old_run(peer, link_factory):
    link = link_factory(peer.path, handshake=False)
    peer.ms = 500_000
    peer.record("level", seq=10)
    peer.ms = 0
    peer.record("level", seq=40)  # ms went backwards: a new run, not 29 lost records
    collect(link, 2)
    assert link.restarts == 1 and link.lost_records == 40


def test_commands_get_their_replies_by_id(peer, link_factory):
    link = link_factory(peer.path)
    peer.handlers["get"] = lambda c: None  # answered later, below
    peer.handlers["set"] = lambda c: ("ack", c["values"])
    peer.handlers["stream"] = lambda c: ("ack", {"stream_hz": c["hz"]})
    results: dict[str, Any] = {}
    t = threading.Thread(target=lambda: results.setdefault("get", link.get(["interval_s"])))
    t.start()
    assert wait_until(lambda: any(c["cmd"] == "get" for c in peer.commands))
    get_cmd = peer.commands[-1]
    peer.record("level")  # records between a command and its reply still flow
    assert link.set(zone="1") == {"zone": "1"}  # answered while the get is still waiting
    assert link.stream(10) == {"stream_hz": 10}
    peer.record("ack", id=get_cmd["id"] + 1000, cmd="get", result={"wrong": "id"})  # nobody's: delivered
    peer.record("ack", id=get_cmd["id"], cmd="get", result={"interval_s": 1.0})
    t.join(3)
    assert results["get"] == {"interval_s": 1.0}
    ids = [c["id"] for c in peer.commands]
    assert len(set(ids)) == len(ids)
    assert get_cmd == {"cmd": "get", "id": get_cmd["id"], "keys": ["interval_s"]}
    assert [r["t"] for r in collect(link, 2)] == ["level", "ack"]


def test_reset_reboot_info_get_all(peer, link_factory):
    link = link_factory(peer.path)
    assert link.reset() == {}
    assert link.get() == {}
    assert link.info() == HELLO
    assert link.reboot() == {}
    assert [c["cmd"] for c in peer.commands] == ["info", "reset", "get", "info", "reboot"]
    assert "keys" not in peer.commands[2]


def test_error_reply_raises_device_error(peer, link_factory):
    link = link_factory(peer.path)
    peer.handlers["set"] = lambda c: ("error", ("bad_value", "stream_hz: 99 is out of range 0..10\n(see docs)"))
    with pytest.raises(DeviceError) as err:
        link.set(stream_hz=99)
    assert err.value.code == "bad_value" and err.value.cmd == "set"
    assert str(err.value) == "set: bad_value: stream_hz: 99 is out of range 0..10 (see docs)"


def test_error_without_id_settles_the_only_command_in_flight(peer, link_factory):
    link = link_factory(peer.path)
    def garbled(c: dict) -> None:  # as if the line had reached the device damaged
        peer.record("error", id=None, cmd=None, code="bad_checksum", message="checksum mismatch")

    peer.handlers["reset"] = garbled
    with pytest.raises(DeviceError, match="bad_checksum"):
        link.reset()


def test_no_reply_raises_link_timeout(peer, link_factory):
    link = link_factory(peer.path)
    peer.default_ack = False
    with pytest.raises(LinkTimeout, match="no reply to reset within 0.3 s"):
        link.send("reset", timeout=0.3)
    peer.default_ack = True
    assert link.reset() == {}  # the link is still good


def test_silent_device_fails_the_handshake(peer):
    peer.handlers["info"] = lambda c: None
    link = DeviceLink(peer.path, timeout=0.3)
    with pytest.raises(LinkTimeout):
        link.open()
    assert link.state == CLOSED


def test_unknown_protocol_version_is_refused_with_a_clear_message(link_factory):
    p = Peer(hello={**HELLO, "proto": 1})
    try:
        with pytest.raises(ProtocolVersionError, match="protocol version 1; this slm speaks version 2"):
            link_factory(p.path)
    finally:
        p.close()


def test_unsolicited_hello_with_unknown_protocol_refuses_the_link(peer, link_factory):
    states: list[str] = []
    link = link_factory(peer.path, on_state=lambda lk, s: states.append(s))
    peer.record("hello", seq=0, **{**HELLO, "proto": 99})
    assert wait_until(lambda: link.state == REFUSED)
    assert "99" in link.error and states[-1] == REFUSED
    with pytest.raises(ProtocolVersionError):
        link.info()


def test_on_record_callback_serves_many_links(link_factory):
    peers = [Peer(hello={**HELLO, "serial": "s%d" % i}) for i in range(4)]
    got: list[tuple[str, int]] = []
    lock = threading.Lock()

    def on_record(link, rec):
        with lock:
            got.append((link.serial, rec["seq"]))

    try:
        links = [link_factory(p.path, on_record=on_record) for p in peers]
        for _ in range(3):
            for p in peers:
                p.record("level")
        assert wait_until(lambda: len(got) == 12)
        assert sorted(got) == sorted(("s%d" % i, s) for i in range(4) for s in (1, 2, 3))
        assert all(lk.read_records() == [] for lk in links)
    finally:
        for p in peers:
            p.close()


def test_unplug_goes_lost_and_reconnects_by_path(tmp_path, link_factory):
    port = tmp_path / "vboard"
    first = Peer(link_path=port)
    states: list[str] = []
    link = link_factory(str(port), on_state=lambda lk, s: states.append(s))
    first.record("level")
    assert collect(link, 1)
    # A command in flight when the board goes away fails at once, not at its timeout.
    first.default_ack = False
    failure: dict[str, BaseException] = {}
    t = threading.Thread(target=lambda: failure.setdefault("e", pytest.raises(LinkLost, link.reset).value))
    t.start()
    assert wait_until(lambda: any(c["cmd"] == "reset" for c in first.commands))
    first.unplug()
    t.join(5)
    assert isinstance(failure.get("e"), LinkLost)  # not LinkTimeout: failed at once, not after 2 s
    assert wait_until(lambda: link.state == RECONNECTING)
    assert states[:3] == [CONNECTED, LOST, RECONNECTING]
    assert link.state_reason
    with pytest.raises(LinkLost):
        link.info()
    time.sleep(0.2)  # a few reconnect attempts find nothing at the path

    # The virtual board is back under the same name (a new pty may even reuse the old number), starting up.
    second = Peer(link_path=port, booting=True)
    try:
        assert wait_until(lambda: link.state == CONNECTED)
        assert link.reconnects == 1
        assert wait_until(lambda: any(c["cmd"] == "info" for c in second.commands))  # it re-learns the device
        second.record("level")
        got = collect(link, 3)
        # the reply to the link's own `info` is delivered too: whoever logs the records sees every seq
        assert [r["t"] for r in got] == ["hello", "ack", "level"] and got[1]["cmd"] == "info"
        assert [r["seq"] for r in got] == [got[0]["seq"] + k for k in range(3)]
        assert link.restarts == 1 and link.gaps == 0
        assert link.info() == HELLO
    finally:
        second.close()


def test_unplug_without_reconnect_stays_lost(peer, link_factory):
    link = link_factory(peer.path, reconnect=False)
    peer.unplug()
    assert wait_until(lambda: link.state == LOST)
    time.sleep(0.2)
    assert link.state == LOST


def _fake_port(device: str, vid: int | None, pid: int | None, serial_number: str | None = None,
               location: str | None = None, description: str = "") -> ListPortInfo:
    p = ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid, p.serial_number, p.location, p.description = vid, pid, serial_number, location, description
    return p


def test_unplug_reconnects_by_usb_serial_number_at_a_new_path(monkeypatch, link_factory):
    """A real board is re-found by its USB serial number wherever it reappears; here the "board" is a pty."""
    listed: list[ListPortInfo] = []
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda *a, **k: list(listed))
    first = Peer()
    listed[:] = [_fake_port(first.path, 0x303A, 0x4001, "F412FA5C"), _fake_port("/dev/null-other", 0x10C4, 0xEA60, "X")]
    board = discovery.select_board(serial_number="F412FA5C")
    link = link_factory(board)
    assert link.usb_serial == "F412FA5C"
    first.unplug()
    listed.clear()
    assert wait_until(lambda: link.state == RECONNECTING)
    second = Peer()
    try:
        listed[:] = [_fake_port(second.path, 0x303A, 0x4001, "F412FA5C")]
        assert wait_until(lambda: link.state == CONNECTED)
        assert link.path == second.path and link.reconnects == 1
        assert wait_until(lambda: any(c["cmd"] == "info" for c in second.commands))
        second.record("level", seq=50)
        got = collect(link, 2)  # the reply to the link's own info, then the level
        assert [r["t"] for r in got] == ["ack", "level"] and got[1]["seq"] == 50
    finally:
        second.close()


def test_close_stops_the_reader_and_fails_pending(peer, link_factory):
    link = link_factory(peer.path)
    thread = link._thread
    link.close()
    assert link.state == CLOSED and thread is not None and not thread.is_alive()
    with pytest.raises(LinkLost):
        link.info()
    link.close()  # twice is fine


def test_a_port_in_use_is_refused_clearly(peer, link_factory):
    link_factory(peer.path)
    with pytest.raises(LinkError, match="could not open .*: the port is in use by another program$"):
        DeviceLink(peer.path).open()


def test_open_a_missing_port_is_one_clear_line(tmp_path):
    link = DeviceLink(tmp_path / "nothing-here")
    with pytest.raises(LinkError) as err:
        link.open()
    assert "could not open" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ discovery

PORTS = [
    _fake_port("/dev/ttyS0", None, None, description="ttyS0"),
    _fake_port("/dev/ttyUSB1", 0x1A86, 0x7523, None, "1-1.2", "USB Serial"),
    _fake_port("/dev/ttyUSB0", 0x10C4, 0xEA60, "0001", "1-1.1", "CP2102 USB to UART"),
    _fake_port("/dev/ttyACM0", 0x303A, 0x1001, "F4:12:FA:5C:00:01", "1-2", "USB JTAG/serial debug unit"),
    _fake_port("/dev/ttyACM1", 0x303A, 0x4001, "F412FA5C0002", "1-3", "ESP32-S3 MicroPython"),
    _fake_port("/dev/ttyACM2", 0x2341, 0x0043, "arduino", "1-4", "Arduino Uno"),
    _fake_port("/dev/ttyUSB2", 0x0403, 0x6015, "FT1", "1-5", "FT231X"),
    _fake_port("/dev/ttyUSB3", 0x0403, 0x6014, "FT2", "1-6", "FT232H (not in the list)"),
]


@pytest.fixture
def fake_ports(monkeypatch):
    listed = list(PORTS)
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda *a, **k: list(listed))
    return listed


def test_find_boards_keeps_known_usb_ids_only(fake_ports):
    boards = discovery.find_boards()
    assert [b.device for b in boards] == ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyUSB0", "/dev/ttyUSB1",
                                          "/dev/ttyUSB2"]
    usb0 = boards[2]
    assert (usb0.vid, usb0.pid, usb0.serial_number, usb0.location, usb0.chip, usb0.usb_id) == (
        0x10C4, 0xEA60, "0001", "1-1.1", "CP210x", "10c4:ea60")
    assert usb0.label() == "/dev/ttyUSB0 (CP210x, 10c4:ea60, serial 0001)"
    assert discovery.usb_chip(0x303A, 0xBEEF) == "Espressif native USB"  # any Espressif product id
    assert discovery.usb_chip(0x1A86, 0x55D3) == "CH343" and discovery.usb_chip(0x1A86, 0x55D4) == "CH9102"
    assert discovery.usb_chip(None, None) is None


def test_find_by_serial(fake_ports):
    assert discovery.find_by_serial("F412FA5C0002") == "/dev/ttyACM1"
    assert discovery.find_by_serial("0001") == "/dev/ttyUSB0"
    assert discovery.find_by_serial("arduino") is None  # not a known chip
    assert discovery.find_by_serial("nope") is None


def test_select_board_errors(fake_ports):
    with pytest.raises(AmbiguousBoardError, match="5 boards found .*choose one with --port") as err:
        discovery.select_board()
    assert len(err.value.boards) == 5
    assert discovery.select_board(serial_number="0001").device == "/dev/ttyUSB0"
    with pytest.raises(NoBoardError, match="no board with USB serial number zz"):
        discovery.select_board(serial_number="zz")
    fake_ports[:] = [p for p in PORTS if p.device in ("/dev/ttyS0", "/dev/ttyACM2")]
    with pytest.raises(NoBoardError, match="^no board found: plug one in or give --port$"):
        discovery.select_board()
    fake_ports.append(PORTS[4])
    assert discovery.select_board().serial_number == "F412FA5C0002"


def test_select_board_by_port_keeps_its_serial_number(fake_ports, tmp_path):
    assert discovery.select_board("/dev/ttyUSB0").serial_number == "0001"
    alias = tmp_path / "by-id-link"
    os.symlink("/dev/ttyUSB0", alias)
    info = discovery.select_board(str(alias))
    assert info.device == str(alias) and info.serial_number == "0001"
    pty = discovery.select_board("/dev/pts/77")  # not listed: a virtual board
    assert pty == PortInfo(device="/dev/pts/77") and pty.usb_id is None and pty.label() == "/dev/pts/77"
