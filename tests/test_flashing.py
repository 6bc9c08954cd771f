"""`slm flash` and `slm boards` without hardware (host/flashing.py, host/board_info.py, host/cli.py).

No ESP32 can be attached here, so the esptool calls that need a chip (``esptool.cmds.detect_chip`` and what
follows) are replaced by a stand-in chip object (``FakeEsp``) that records what it is asked to do. That is enough to
check the error paths, the order of the calls and the flash offset; the real path is tests/test_hardware.py.
Everything before the chip (the firmware checks with esptool's own image parser, the port checks, discovery) and
after it (waiting for the REPL, on a pseudo-terminal that plays MicroPython) runs for real.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.machinery
import json
import os
import pty
import struct
import subprocess
import sys
import threading
import time
import tty
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import serial
from click.testing import CliRunner
from esptool import cmds
from esptool.util import FatalError

from slm import discovery, flashing
from slm.board_info import wiring_diagram
from slm.boards import BoardError, list_boards, load_board
from slm.cli import main
from slm.discovery import AmbiguousBoardError, NoBoardError, PortInfo
from slm.errors import InputError, OperationError, PortNotFoundError
from slm.flashing import (FirmwareError, FlashInputError, FlashOperationError, NoReplError, NoResponseError,
                          PortBusyError, PortPermissionError, WriteFailedError, WrongChipError, inspect_firmware,
                          refind_port, wait_for_repl)

ROOT = Path(__file__).resolve().parent.parent
ESP32_BOARD = "esp32-devkitc-inmp441"
S3_BOARD = "esp32-s3-devkitc-ics43434"
IMAGE_CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c6": 13}
OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32c3": 0x0, "esp32s3": 0x0, "esp32c6": 0x0}
BANNER = "MicroPython v1.24.1 on 2024-11-29; Generic ESP32 module with ESP32"


# --- synthetic firmware images ---------------------------------------------------------------------------------

def esp_image(chip_id: int, payload: bytes = b"\x11" * 16, digest: bool = True) -> bytes:
    """One ESP image as esptool parses it: header, extended header with the chip id, one segment, checksum and,
    as ESP-IDF builds them, an appended SHA-256."""
    header = struct.pack("<BBBBI", 0xE9, 1, 2, 0x20, 0x40080000)
    extended = struct.pack("<BBBBHBHH4sB", 0xEE, 0, 0, 0, chip_id, 0, 0, 0xFFFF, b"\0" * 4, int(digest))
    body = struct.pack("<II", 0x3FFF0000, len(payload)) + payload
    checksum = 0xEF
    for b in payload:
        checksum ^= b
    img = header + extended + body
    img += b"\0" * (15 - len(img) % 16) + bytes([checksum])
    return img + hashlib.sha256(img).digest() if digest else img


def app_desc(project: str = "micropython", version: str = "v1.24.1") -> bytes:
    return struct.pack("<II8s32s32s", flashing.APP_DESC_MAGIC, 0, b"", version.encode(), project.encode()) + b"\0" * 48


def micropython_image(chip: str, project: str = "micropython", image_chip: str | None = None) -> bytes:
    """A combined image laid out like MicroPython's: bootloader at the start (flash ``offset``), partition table
    at flash 0x8000, the application (with its esp_app_desc_t) at flash 0x10000."""
    offset = OFFSETS[chip]
    cid = IMAGE_CHIP_IDS[image_chip or chip]
    data = bytearray(b"\xff" * (0x10000 - offset))
    boot = esp_image(cid)
    data[0:len(boot)] = boot
    pt = 0x8000 - offset
    data[pt:pt + 32] = b"\xaa\x50" + struct.pack("<BBII16sI", 0, 0, 0x10000, 0x1F0000, b"factory", 0)
    data += esp_image(cid, app_desc(project))
    return bytes(data)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.fixture
def esp32_fw(tmp_path):
    return write(tmp_path, "ESP32_GENERIC.bin", micropython_image("esp32"))


@pytest.fixture
def s3_fw(tmp_path):
    return write(tmp_path, "ESP32_GENERIC_S3.bin", micropython_image("esp32s3"))


def one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text, repr(text)
    return text


def test_synthetic_image_is_what_esptool_parses():
    from esptool.bin_image import LoadFirmwareImage

    img = LoadFirmwareImage("esp32s3", micropython_image("esp32s3"))
    assert img.chip_id == 9 and len(img.segments) == 1


# --- the firmware file -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("chip", sorted(OFFSETS))
def test_a_micropython_image_for_the_chip_passes(tmp_path, chip):
    p = write(tmp_path, "fw.bin", micropython_image(chip))
    info = inspect_firmware(p, chip, OFFSETS[chip])
    assert (info.chip, info.project, info.version, info.size) == (chip, "micropython", "v1.24.1", p.stat().st_size)


def test_missing_firmware_file(tmp_path):
    with pytest.raises(FirmwareError) as e:
        flashing.flash(ESP32_BOARD, tmp_path / "nope.bin")
    assert "does not exist" in one_line(e.value)


def test_firmware_path_is_a_folder(tmp_path):
    with pytest.raises(FirmwareError) as e:
        inspect_firmware(tmp_path, "esp32", 0x1000)
    assert "is a folder" in one_line(e.value)


def test_empty_firmware_file(tmp_path):
    p = write(tmp_path, "empty.bin", b"")
    with pytest.raises(FirmwareError) as e:
        flashing.flash(ESP32_BOARD, p)
    assert "is empty" in one_line(e.value)


def test_unreadable_firmware_file(tmp_path, monkeypatch):
    p = write(tmp_path, "fw.bin", micropython_image("esp32"))

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod 000 does not stop root, which runs these tests in CI
    with pytest.raises(FirmwareError) as e:
        inspect_firmware(p, "esp32", 0x1000)
    assert "permission denied" in one_line(e.value)


@pytest.mark.parametrize("data", [b"hello, this is not firmware\n", b"\x00" * 4096, b"PK\x03\x04" + b"\0" * 100])
def test_not_an_esp_image(tmp_path, data):
    p = write(tmp_path, "x.bin", data)
    with pytest.raises(FirmwareError) as e:
        flashing.flash(ESP32_BOARD, p)
    msg = one_line(e.value)
    assert "not an ESP firmware image" in msg and "0xe9" in msg and "ESP32_GENERIC" in msg


def test_whole_flash_image_padded_for_address_zero(tmp_path):
    p = write(tmp_path, "merged.bin", b"\xff" * 0x1000 + micropython_image("esp32"))
    with pytest.raises(FirmwareError) as e:
        inspect_firmware(p, "esp32", 0x1000)
    assert "whole-flash image for address 0x0" in one_line(e.value)


@pytest.mark.parametrize("board, image_chip, expected", [
    (ESP32_BOARD, "esp32s3", "is an esp32s3 image, but board esp32-devkitc-inmp441 has an esp32"),
    (S3_BOARD, "esp32", "is an esp32 image, but board esp32-s3-devkitc-ics43434 has an esp32s3"),
    ("esp32-c3-inmp441", "esp32s3", "is an esp32s3 image, but board esp32-c3-inmp441 has an esp32c3"),
])
def test_firmware_for_another_chip(tmp_path, board, image_chip, expected):
    chip = load_board(board).chip
    p = write(tmp_path, "fw.bin", micropython_image(chip, image_chip=image_chip))
    with pytest.raises(FirmwareError) as e:
        flashing.flash(board, p)
    msg = one_line(e.value)
    assert expected in msg and flashing.MICROPYTHON_BUILDS[chip] in msg


def test_unknown_image_chip_id(tmp_path):
    p = write(tmp_path, "fw.bin", esp_image(0x7777))
    with pytest.raises(FirmwareError) as e:
        inspect_firmware(p, "esp32", 0x1000)
    assert "unknown chip (chip id 30583)" in one_line(e.value)


def test_application_image_alone(tmp_path):
    p = write(tmp_path, "micropython.bin", esp_image(0, app_desc()))
    with pytest.raises(FirmwareError) as e:
        inspect_firmware(p, "esp32", 0x1000)
    assert "application image alone" in one_line(e.value)


def test_bootloader_alone(tmp_path):
    p = write(tmp_path, "bootloader.bin", esp_image(9))
    with pytest.raises(FirmwareError) as e:
        inspect_firmware(p, "esp32s3", 0x0)
    assert "no partition table at 0x8000" in one_line(e.value)


def test_damaged_image_checksum(tmp_path):
    data = bytearray(micropython_image("esp32s3"))
    data[40] ^= 0xFF  # a byte of the bootloader's segment
    p = write(tmp_path, "fw.bin", bytes(data))
    with pytest.raises(FirmwareError) as e:
        inspect_firmware(p, "esp32s3", 0x0)
    assert "damaged: the bootloader's checksum does not match" in one_line(e.value)


def test_damaged_image_digest(tmp_path):
    data = bytearray(micropython_image("esp32s3"))
    data[len(esp_image(9)) - 1] ^= 0xFF  # the last byte of the bootloader's SHA-256
    p = write(tmp_path, "fw.bin", bytes(data))
    with pytest.raises(FirmwareError) as e:
        inspect_firmware(p, "esp32s3", 0x0)
    assert "damaged: the bootloader's SHA-256 does not match" in one_line(e.value)


@pytest.mark.parametrize("keep", [0x10000 - 0x1000 + 40, 0x10000 - 0x1000 - 100])
def test_truncated_download(tmp_path, keep):
    p = write(tmp_path, "fw.bin", micropython_image("esp32")[:keep])
    with pytest.raises(FirmwareError) as e:
        inspect_firmware(p, "esp32", 0x1000)
    msg = one_line(e.value)
    assert "application" in msg and ("truncated" in msg or "End of file" in msg), msg


def test_firmware_of_another_project(tmp_path):
    p = write(tmp_path, "fw.bin", micropython_image("esp32", project="arduino-lib-builder"))
    with pytest.raises(FirmwareError) as e:
        inspect_firmware(p, "esp32", 0x1000)
    assert "for 'arduino-lib-builder', not MicroPython" in one_line(e.value)


def test_unknown_board_is_a_board_error(esp32_fw):
    with pytest.raises(BoardError) as e:
        flashing.flash("esp33-nonesuch", esp32_fw)
    assert "known boards" in one_line(e.value)


def test_input_errors_are_value_errors_and_operation_errors_are_not():
    for cls in (FirmwareError, WrongChipError):
        assert issubclass(cls, FlashInputError) and issubclass(cls, InputError) and issubclass(cls, ValueError)
    for cls in (PortNotFoundError, AmbiguousBoardError, NoBoardError):  # slm.discovery's, shared by every command
        assert issubclass(cls, InputError) and not issubclass(cls, FlashOperationError)
    for cls in (PortPermissionError, PortBusyError, NoResponseError, WriteFailedError, NoReplError):
        assert issubclass(cls, FlashOperationError) and issubclass(cls, OperationError)
        assert not issubclass(cls, ValueError)


# --- the port --------------------------------------------------------------------------------------------------

def usb_port(device="/dev/ttyUSB0", vid=0x10C4, pid=0xEA60, serial_number="0001", location="1-1.2:1.0"):
    return PortInfo(device=device, vid=vid, pid=pid, serial_number=serial_number, location=location)


def test_no_board_found(esp32_fw, monkeypatch):
    monkeypatch.setattr(discovery, "all_ports", lambda: [])
    with pytest.raises(NoBoardError) as e:
        flashing.flash(ESP32_BOARD, esp32_fw)
    msg = one_line(e.value)
    assert "no board found" in msg and "--port" in msg


def test_several_boards_and_no_port(esp32_fw, monkeypatch):
    monkeypatch.setattr(discovery, "all_ports", lambda: [usb_port("/dev/ttyUSB0"), usb_port("/dev/ttyUSB1",
                                                                                           serial_number="0002")])
    with pytest.raises(AmbiguousBoardError) as e:
        flashing.flash(ESP32_BOARD, esp32_fw)
    assert "2 boards found" in one_line(e.value)


def test_port_that_does_not_exist(esp32_fw, tmp_path):
    with pytest.raises(PortNotFoundError) as e:
        flashing.flash(ESP32_BOARD, esp32_fw, port=str(tmp_path / "ttyUSB9"))
    assert "does not exist" in one_line(e.value)


def test_port_without_permission(esp32_fw, tmp_path, monkeypatch):
    port = write(tmp_path, "ttyUSB0", b"")
    real_access = os.access
    monkeypatch.setattr(flashing.os, "access", lambda p, mode: False if str(p) == str(port) else real_access(p, mode))
    with pytest.raises(PortPermissionError) as e:
        flashing.flash(ESP32_BOARD, esp32_fw, port=str(port))
    msg = one_line(e.value)
    assert "permission denied" in msg and "dialout" in msg


def serial_failure(message: str, code: int) -> FatalError:
    """What esptool raises when pyserial cannot open the port: a FatalError raised while handling pyserial's
    SerialException (ESPLoader.__init__), so the errno is in its context."""
    fe = FatalError(f"Could not open /dev/ttyUSB0, the port is busy or doesn't exist.\n({message})\n")
    fe.__context__ = serial.SerialException(code, message)
    return fe


@pytest.fixture
def fake_port(tmp_path):
    """A path that exists and may be opened, standing in for /dev/ttyUSB0 up to the esptool call."""
    return str(write(tmp_path, "ttyUSB0", b""))


def raise_from_detect(monkeypatch, exc):
    def detect_chip(port, **kwargs):
        raise exc

    monkeypatch.setattr(cmds, "detect_chip", detect_chip)


def test_esptool_permission_denied(esp32_fw, fake_port, monkeypatch):
    raise_from_detect(monkeypatch, serial_failure("[Errno 13] could not open port: Permission denied", errno.EACCES))
    with pytest.raises(PortPermissionError) as e:
        flashing.flash(ESP32_BOARD, esp32_fw, port=fake_port)
    assert "dialout" in one_line(e.value)


def test_port_busy(esp32_fw, fake_port, monkeypatch):
    raise_from_detect(monkeypatch, serial_failure("Could not exclusively lock port /dev/ttyUSB0: [Errno 11] "
                                                  "Resource temporarily unavailable", errno.EAGAIN))
    with pytest.raises(PortBusyError) as e:
        flashing.flash(ESP32_BOARD, esp32_fw, port=fake_port)
    assert "busy" in one_line(e.value)


@pytest.mark.parametrize("esptool_message, why", [
    ("Failed to connect to Espressif device: No serial data received.\nFor troubleshooting steps visit: "
     "https://docs.espressif.com/projects/esptool/en/latest/troubleshooting.html", "nothing answered"),
    ("Failed to connect to ESP32: Wrong boot mode detected (0x13)! The chip needs to be in download mode.",
     "started its program instead of the bootloader"),
    ("Failed to connect to ESP32: Invalid head of packet (0x1B): Possible serial noise or corruption.",
     "Invalid head of packet"),
])
def test_board_not_in_download_mode(esp32_fw, fake_port, monkeypatch, esptool_message, why):
    raise_from_detect(monkeypatch, FatalError(esptool_message))
    with pytest.raises(NoResponseError) as e:
        flashing.flash(ESP32_BOARD, esp32_fw, port=fake_port)
    msg = one_line(e.value)
    assert why in msg and "hold BOOT" in msg and "RESET" in msg
    assert "Failed to connect" in str(e.value.__cause__)  # esptool's own words stay reachable with --debug


# --- the chip (a stand-in for esptool's chip object) -------------------------------------------------------------

class FakeEsp:
    """Stands in for the ESPLoader that ``detect_chip`` returns; records the calls made on it via esptool.cmds."""

    IS_STUB = False
    secure_download_mode = False

    def __init__(self, chip_name: str, calls: list):
        self.CHIP_NAME = chip_name
        self.calls = calls
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True
        self.calls.append(("close",))

    def get_chip_description(self):
        return f"{self.CHIP_NAME} (revision v3.1)"

    def change_baud(self, baud):
        self.calls.append(("change_baud", baud))


@pytest.fixture
def fake_esptool(monkeypatch):
    """Replaces the esptool calls that need a chip; returns (calls, settings) to inspect and adjust."""
    calls: list = []
    settings = {"chip": "ESP32", "flash_size": "4MB", "fail": {}}

    def step(name, *args):
        calls.append((name, *args))
        if name in settings["fail"]:
            raise settings["fail"][name]

    def detect_chip(port, **kwargs):
        calls.append(("detect_chip", port))
        settings["esp"] = FakeEsp(settings["chip"], calls)
        return settings["esp"]

    monkeypatch.setattr(cmds, "detect_chip", detect_chip)
    monkeypatch.setattr(cmds, "run_stub", lambda esp: (step("run_stub"), esp)[1])
    monkeypatch.setattr(cmds, "attach_flash", lambda esp: step("attach_flash"))
    monkeypatch.setattr(cmds, "detect_flash_size", lambda esp: settings["flash_size"])
    monkeypatch.setattr(cmds, "erase_flash", lambda esp: step("erase_flash"))
    monkeypatch.setattr(cmds, "write_flash",
                        lambda esp, addr_data: step("write_flash", [(a, len(d)) for a, d in addr_data]))
    monkeypatch.setattr(cmds, "reset_chip", lambda esp, mode: step("reset_chip", mode))
    return calls, settings


def test_wrong_chip(s3_fw, fake_port, fake_esptool):
    calls, settings = fake_esptool
    settings["chip"] = "ESP32"
    with pytest.raises(WrongChipError) as e:
        flashing.flash(S3_BOARD, s3_fw, port=fake_port, wait_repl=False)
    assert one_line(e.value) == "board esp32-s3-devkitc-ics43434 expects esp32s3, the connected chip is esp32"
    names = [c[0] for c in calls]
    assert "write_flash" not in names and "erase_flash" not in names and "run_stub" not in names
    assert names[-2:] == ["reset_chip", "close"]  # left running its old firmware, port closed


def test_chip_names_are_normalised():
    assert flashing.normalise_chip("ESP32-S3") == "esp32s3"
    assert flashing.normalise_chip("ESP32-C3 (QFN32)") == "esp32c3"
    assert flashing.normalise_chip("ESP32") == "esp32"


def test_write_failed(esp32_fw, fake_port, fake_esptool):
    calls, settings = fake_esptool
    settings["fail"]["write_flash"] = FatalError("MD5 of file does not match data in flash!")
    with pytest.raises(WriteFailedError) as e:
        flashing.flash(ESP32_BOARD, esp32_fw, port=fake_port, wait_repl=False)
    msg = one_line(e.value)
    assert "writing the firmware failed" in msg and "MD5" in msg and "flashed again" in msg
    assert ("reset_chip", "hard-reset") not in calls and calls[-1] == ("close",)


def test_connection_lost_while_writing(esp32_fw, fake_port, fake_esptool):
    calls, settings = fake_esptool
    settings["fail"]["write_flash"] = serial.SerialException("device reports readiness to read but returned no data")
    with pytest.raises(WriteFailedError):
        flashing.flash(ESP32_BOARD, esp32_fw, port=fake_port, wait_repl=False)


def test_erase_failed(esp32_fw, fake_port, fake_esptool):
    calls, settings = fake_esptool
    settings["fail"]["erase_flash"] = FatalError("Timed out waiting for packet header")
    with pytest.raises(WriteFailedError) as e:
        flashing.flash(ESP32_BOARD, esp32_fw, port=fake_port, erase=True, wait_repl=False)
    assert "erasing the flash failed" in one_line(e.value)


def test_firmware_larger_than_the_flash(esp32_fw, fake_port, fake_esptool):
    calls, settings = fake_esptool
    settings["flash_size"] = "64KB"
    with pytest.raises(FirmwareError) as e:
        flashing.flash(ESP32_BOARD, esp32_fw, port=fake_port, erase=True, wait_repl=False)
    assert "does not fit this board's 64 KB flash" in one_line(e.value)
    assert "erase_flash" not in [c[0] for c in calls]  # nothing erased for an image that cannot go on


@pytest.mark.parametrize("erase", [False, True])
def test_call_order_and_offset(tmp_path, fake_port, fake_esptool, erase):
    calls, settings = fake_esptool
    settings["chip"] = "ESP32-S3"
    fw = write(tmp_path, "fw.bin", micropython_image("esp32s3"))
    stages = []
    result = flashing.flash(S3_BOARD, fw, port=fake_port, erase=erase, wait_repl=False,
                            progress=lambda stage, done, total: stages.append(stage))
    expected = [("detect_chip", fake_port), ("run_stub",), ("change_baud", 460800), ("attach_flash",)]
    expected += [("erase_flash",)] if erase else []
    expected += [("write_flash", [(0x0, fw.stat().st_size)]), ("reset_chip", "hard-reset"), ("close",)]
    assert calls == expected
    assert result.offset == 0 and result.chip == "esp32s3" and result.erased is erase and result.verified
    assert result.firmware.version == "v1.24.1"
    assert stages[0] == "connect" and "write" in stages and ("erase" in stages) is erase


def test_esp32_image_goes_at_0x1000(esp32_fw, fake_port, fake_esptool):
    calls, _ = fake_esptool
    flashing.flash(ESP32_BOARD, esp32_fw, port=fake_port, wait_repl=False)
    assert ("write_flash", [(0x1000, esp32_fw.stat().st_size)]) in calls


def test_esptool_logger_is_restored(esp32_fw, fake_port, fake_esptool):
    from esp_pylib.logger import EspLog

    before = EspLog.instance
    flashing.flash(ESP32_BOARD, esp32_fw, port=fake_port, wait_repl=False)
    assert EspLog.instance is before


# --- the REPL on a pseudo-terminal that plays MicroPython ---------------------------------------------------------

class FakeRepl:
    """The controller side of a pty: prints ``greeting`` after ``delay`` s (pyserial discards what arrived before
    the port was opened, as with a real board); on Ctrl-B prints the banner and a prompt if ``answer_ctrl_b``.
    ``path`` is the port to open."""

    def __init__(self, greeting: bytes = b"", answer_ctrl_b: bool = True, delay: float = 0.5):
        self.delay = delay
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self.received = bytearray()
        self.greeting = greeting
        self.answer_ctrl_b = answer_ctrl_b
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import select

        greet_at = time.monotonic() + self.delay
        while not self._stop.is_set():
            if self.greeting and time.monotonic() >= greet_at:
                os.write(self.master, self.greeting)
                self.greeting = b""
            r, _, _ = select.select([self.master], [], [], 0.05)
            if not r:
                continue
            try:
                data = os.read(self.master, 256)
            except OSError:
                return
            self.received += data
            if b"\x02" in data and self.answer_ctrl_b:
                os.write(self.master, f"{BANNER}\r\nType \"help()\" for more information.\r\n>>> ".encode())

    def close(self):
        self._stop.set()
        self._thread.join(1)
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture
def repl_factory():
    made = []

    def make(**kwargs):
        r = FakeRepl(**kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_repl_banner_after_boot(repl_factory):
    boot = b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
    repl = repl_factory(greeting=boot + f"{BANNER}\r\nType \"help()\" for more information.\r\n>>> ".encode())
    path, banner = wait_for_repl(repl.path, timeout=10, poke_after=5)
    assert (path, banner) == (repl.path, BANNER)
    assert b"\x03" not in repl.received  # a board that showed its prompt is not interrupted


def test_repl_poked_when_silent(repl_factory):
    repl = repl_factory()  # a main.py running, or the banner printed before the port was open
    path, banner = wait_for_repl(repl.path, timeout=5, poke_after=0.2)
    assert banner == BANNER and b"\x03" in repl.received and b"\x02" in repl.received


def test_repl_prompt_without_banner(repl_factory):
    repl = repl_factory(greeting=b"\r\n>>> ", answer_ctrl_b=False)
    path, banner = wait_for_repl(repl.path, timeout=10, poke_after=5)
    assert (path, banner) == (repl.path, "")


def test_no_repl(repl_factory):
    repl = repl_factory(greeting=b"Guru Meditation Error: Core  0 panic'ed", answer_ctrl_b=False)
    with pytest.raises(NoReplError) as e:
        wait_for_repl(repl.path, timeout=1.5, poke_after=0.2)
    msg = one_line(e.value)
    assert "no MicroPython prompt" in msg and "Guru Meditation" in msg


def test_still_in_download_mode(repl_factory):
    repl = repl_factory(greeting=b"rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
                                 b"\r\nwaiting for download\r\n", answer_ctrl_b=False)
    with pytest.raises(NoReplError) as e:
        wait_for_repl(repl.path, timeout=1.5, poke_after=0.2)
    assert "still in download mode" in one_line(e.value)


def test_flash_then_repl(esp32_fw, fake_esptool, repl_factory):
    repl = repl_factory()
    result = flashing.flash(ESP32_BOARD, esp32_fw, port=repl.path, repl_timeout=5)
    assert result.port == result.repl_port == repl.path and result.banner == BANNER


# --- finding a board again after its reset --------------------------------------------------------------------

def test_refind_by_serial_number_across_formats():
    # an ESP32-S3 on native USB: the ROM's USB-Serial-JTAG shows its MAC with colons, MicroPython as hex
    before = usb_port("/dev/ttyACM0", 0x303A, 0x1001, "F4:12:FA:12:34:56", None)
    now = [usb_port("/dev/ttyUSB0", serial_number="0001", location="1-3:1.0"),
           usb_port("/dev/ttyACM1", 0x303A, 0x4001, "F412FA123456", None)]
    assert refind_port(before, now) == "/dev/ttyACM1"


def test_refind_prefers_the_same_path_among_equal_serials():
    before = usb_port("/dev/ttyUSB1", serial_number="0001")
    now = [usb_port("/dev/ttyUSB0", serial_number="0001", location="1-1.1:1.0"),
           usb_port("/dev/ttyUSB1", serial_number="0001", location="1-1.2:1.0")]
    assert refind_port(before, now) == "/dev/ttyUSB1"


def test_refind_by_usb_location():
    before = usb_port("/dev/ttyACM0", 0x303A, 0x1001, None, "1-1.4:1.0")
    now = [usb_port("/dev/ttyACM1", 0x303A, 0x4001, None, "1-1.4:1.2"),
           usb_port("/dev/ttyACM2", 0x303A, 0x4001, None, "1-1.3:1.0")]
    assert refind_port(before, now) == "/dev/ttyACM1"


def test_refind_the_only_espressif_device():
    before = usb_port("/dev/ttyACM0", 0x303A, 0x1001, None, None)
    assert refind_port(before, [usb_port("/dev/ttyUSB0"), usb_port("/dev/ttyACM3", 0x303A, 0x4001, None,
                                                                   None)]) == "/dev/ttyACM3"
    assert refind_port(before, [usb_port("/dev/ttyUSB0")]) is None


def test_refind_a_path_without_usb_ids(tmp_path):
    p = write(tmp_path, "pts", b"")
    assert refind_port(PortInfo(device=str(p)), []) == str(p)
    assert refind_port(PortInfo(device=str(tmp_path / "gone")), []) is None


# --- the command line ------------------------------------------------------------------------------------------

@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None


def invoke(*args) -> CliResult:
    """`slm ARGS` in this process through slm.cli.main, which maps errors to one line and an exit code (with
    --debug the exception propagates: it is returned as ``exception``)."""
    with CliRunner().isolation() as (out, err, _):
        code, exception = 0, None
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception as e:  # --debug
            code, exception = 1, e
        return CliResult(code, out.getvalue().decode(), err.getvalue().decode(), exception)


def assert_one_error_line(r, code, fragment):
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slm: error: ") and fragment in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def run_slm(*args):
    return subprocess.run([sys.executable, "-m", "slm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_cli_unknown_board(esp32_fw):
    r = run_slm("flash", "--board", "esp33-nonesuch", "--firmware", esp32_fw)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "unknown board 'esp33-nonesuch'; known boards: " in r.stderr and ESP32_BOARD in r.stderr


def test_cli_missing_firmware(tmp_path):
    r = run_slm("flash", "--board", ESP32_BOARD, "--firmware", tmp_path / "nope.bin")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("data, fragment", [(b"", "is empty"), (b"not firmware", "not an ESP firmware image")])
def test_cli_invalid_firmware(tmp_path, data, fragment):
    assert_one_error_line(invoke("flash", "--board", ESP32_BOARD, "--firmware", write(tmp_path, "x.bin", data)), 2,
                          fragment)


def test_cli_no_board_found(esp32_fw, monkeypatch):
    monkeypatch.setattr(discovery, "all_ports", lambda: [])
    assert_one_error_line(invoke("flash", "--board", ESP32_BOARD, "--firmware", esp32_fw), 2, "no board found")


def test_cli_port_does_not_exist(esp32_fw, tmp_path):
    assert_one_error_line(invoke("flash", "--board", ESP32_BOARD, "--firmware", esp32_fw, "--port",
                                 tmp_path / "ttyUSB9"), 2, "does not exist")


def test_cli_permission_denied(esp32_fw, fake_port, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(flashing.os, "access", lambda p, mode: False if str(p) == fake_port else real_access(p, mode))
    assert_one_error_line(invoke("flash", "--board", ESP32_BOARD, "--firmware", esp32_fw, "--port", fake_port), 1,
                          "dialout")


def test_cli_port_busy(esp32_fw, fake_port, monkeypatch):
    raise_from_detect(monkeypatch, serial_failure("Could not exclusively lock port", errno.EAGAIN))
    assert_one_error_line(invoke("flash", "--board", ESP32_BOARD, "--firmware", esp32_fw, "--port", fake_port), 1,
                          "busy")


def test_cli_no_response(esp32_fw, fake_port, monkeypatch):
    raise_from_detect(monkeypatch, FatalError("Failed to connect to ESP32: No serial data received."))
    assert_one_error_line(invoke("flash", "--board", ESP32_BOARD, "--firmware", esp32_fw, "--port", fake_port), 1,
                          "hold BOOT")


def test_cli_wrong_chip(s3_fw, fake_port, fake_esptool):
    calls, settings = fake_esptool
    settings["chip"] = "ESP32"
    assert_one_error_line(invoke("flash", "--board", S3_BOARD, "--firmware", s3_fw, "--port", fake_port), 2,
                          "board esp32-s3-devkitc-ics43434 expects esp32s3, the connected chip is esp32")


def test_cli_write_failed(esp32_fw, fake_port, fake_esptool):
    calls, settings = fake_esptool
    settings["fail"]["write_flash"] = FatalError("MD5 of file does not match data in flash!")
    assert_one_error_line(invoke("flash", "--board", ESP32_BOARD, "--firmware", esp32_fw, "--port", fake_port), 1,
                          "writing the firmware failed")


def test_cli_debug_shows_the_traceback(esp32_fw, fake_port, monkeypatch):
    raise_from_detect(monkeypatch, FatalError("Failed to connect to ESP32: No serial data received."))
    r = invoke("--debug", "flash", "--board", ESP32_BOARD, "--firmware", esp32_fw, "--port", fake_port)
    assert r.exit_code != 0 and isinstance(r.exception, NoResponseError)


def test_cli_flash_then_deploy(esp32_fw, fake_esptool, repl_factory, monkeypatch):
    deployed = []
    module = types.ModuleType("slm.deploy")
    module.__spec__ = importlib.machinery.ModuleSpec("slm.deploy", None)

    def fake_deploy(board, port):
        deployed.append((board, port))
        return types.SimpleNamespace(summary=lambda: "deployed (fake)", warnings=["the calibration is old"])

    module.deploy = fake_deploy
    monkeypatch.setitem(sys.modules, "slm.deploy", module)
    repl = repl_factory()
    r = invoke("flash", "--board", ESP32_BOARD, "--firmware", esp32_fw, "--port", repl.path)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert deployed == [(ESP32_BOARD, repl.path)]
    assert "deployed (fake)\nwarning: the calibration is old\n" in r.stdout  # the deploy's report is printed
    r = invoke("flash", "--board", ESP32_BOARD, "--firmware", esp32_fw, "--port", repl.path, "--no-deploy")
    assert r.exit_code == 0 and len(deployed) == 1 and "run `slm deploy" in r.stdout


def test_cli_flash_help_has_an_example():
    r = invoke("flash", "--help")
    assert r.exit_code == 0 and "slm flash --board" in r.stdout and "--no-deploy" in r.stdout


# --- slm boards ------------------------------------------------------------------------------------------------

def test_boards_list():
    r = invoke("boards")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(list_boards())
    for line, name in zip(lines, list_boards()):
        b = load_board(name)
        assert line.split() == [name, b.chip, b.microphone.model, str(b.rate), "Hz"]


def test_boards_json():
    r = invoke("boards", "--json")
    data = json.loads(r.stdout)
    assert [d["name"] for d in data] == list_boards()
    s3 = next(d for d in data if d["name"] == S3_BOARD)
    assert (s3["chip"], s3["microphone"], s3["rate"]) == ("esp32s3", "ICS-43434", 48000)


def test_boards_show():
    r = invoke("boards", "show", "esp32-c3-inmp441")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    for fragment in ("esp32c3", "0x0", "SCK GPIO4, WS GPIO5, SD GPIO6", "left (WS low", "INMP441",
                     "-26 dBFS at 94 dB SPL", "33 dB(A)", "120 dB SPL", "input shift 10", "equaliser      on:",
                     "GPIO8, active low", "100 kOhm pull-down", "wiring", "GPIO6          ------------ SD"):
        assert fragment in out, fragment
    assert wiring_diagram(load_board("esp32-c3-inmp441")) in out


def test_boards_show_by_path_and_json():
    r = invoke("boards", "show", ROOT / "boards" / "esp32-devkitc-sph0645.toml", "--json")
    d = json.loads(r.stdout)
    assert d["flash_offset"] == 0x1000 and d["microphone"]["input_shift"] == 11 and d["i2s"]["slot"] == "left"
    assert len(d["equaliser"]["coeffs"]) == 5 * d["equaliser"]["sections"] and d["indicator_led"] is None
    assert any("SEL" in line for line in d["wiring"])


def test_boards_show_unknown():
    assert_one_error_line(invoke("boards", "show", "esp33-nonesuch"), 2, "known boards: esp32-c3-inmp441")


def test_boards_help_has_an_example():
    assert "slm boards show" in invoke("boards", "--help").stdout
    assert "slm boards show esp32" in invoke("boards", "show", "--help").stdout


# --- the hardware guide ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_boards())
def test_every_profile_has_its_wiring_in_the_hardware_guide(name):
    guide = (ROOT / "docs" / "hardware.md").read_text()
    assert f"`{name}`" in guide
    assert wiring_diagram(load_board(name)) in guide, f"docs/hardware.md: wiring of {name} is missing or stale"


def test_hardware_guide_gives_the_hardware_test_command():
    guide = (ROOT / "docs" / "hardware.md").read_text()
    assert ".venv/bin/python -m pytest -m hardware --board-port /dev/ttyUSB0 --board-name esp32-devkitc-inmp441" \
        in guide
