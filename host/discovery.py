"""Find meter boards on the host's USB serial ports by USB id; no I/O on the ports themselves.

Kept apart from the link, like pyserial's ``serial.tools``: this module only reads the operating system's list of
serial ports (``serial.tools.list_ports.comports()``) and picks the ones whose USB vendor/product id is a chip
found on ESP32 boards (``KNOWN_USB_IDS``). Boards are told apart, and found again after an unplug, by their USB
serial number: the path (``/dev/ttyUSB0``) can change on every plug, and an ESP32-S3 on native USB even changes its
product id between the ROM bootloader (303A:1001) and MicroPython (303A:4001), so the vendor id alone selects
Espressif boards and the serial number follows them.

    select_board()                 # the one board plugged in, or NoBoardError / AmbiguousBoardError
    select_board("/dev/ttyUSB1")   # a named port (also a virtual board's pty), with its USB serial if it has one
    resolve_port("/dev/ttyUSB1")   # the same, but the named port must exist (PortNotFoundError): flash, deploy,
                                   # calibrate and monitor find their port with this
    find_by_serial("5C2A1F")       # the port of that board now, or None

Errors are ``slm.errors.InputError`` (exit 2): ``PortNotFoundError``, ``NoBoardError``, ``AmbiguousBoardError``.

A listing takes a few ms (sysfs on Linux).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from slm.errors import InputError, PortNotFoundError

ANY_PID = None

KNOWN_USB_IDS: dict[tuple[int, int | None], str] = {
    (0x303A, ANY_PID): "Espressif native USB",
    (0x10C4, 0xEA60): "CP210x",
    (0x10C4, 0xEA64): "CP210x",
    (0x10C4, 0xEA70): "CP210x",
    (0x1A86, 0x7523): "CH340",
    (0x1A86, 0x55D4): "CH9102",
    (0x1A86, 0x55D3): "CH343",
    (0x0403, 0x6001): "FTDI",
    (0x0403, 0x6010): "FTDI",
    (0x0403, 0x6015): "FTDI",
}
"""(USB vendor id, product id or ``ANY_PID``) -> name of the USB chip, for the ports an ESP32 board shows up as."""


class DiscoveryError(InputError, LookupError):
    """No single board could be chosen; the message is one line for the user (exit 2)."""


class NoBoardError(DiscoveryError):
    def __init__(self, message: str = "no board found: plug one in or give --port"):
        super().__init__(message)


class AmbiguousBoardError(DiscoveryError):
    """Several boards are plugged in and none was named; ``boards`` lists them."""

    def __init__(self, boards: list["PortInfo"]):
        self.boards = boards
        names = ", ".join(b.label() for b in boards)
        super().__init__("%d boards found (%s): choose one with --port" % (len(boards), names))


def usb_chip(vid: int | None, pid: int | None) -> str | None:
    """Name of the USB chip for a known vendor/product id, else None."""
    if vid is None:
        return None
    return KNOWN_USB_IDS.get((vid, pid)) or KNOWN_USB_IDS.get((vid, ANY_PID))


@dataclass(frozen=True)
class PortInfo:
    """One serial port as the operating system lists it (fields from pyserial's ``ListPortInfo``)."""

    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    location: str | None = None
    description: str = ""

    @property
    def usb_id(self) -> str | None:
        """``"303a:4001"``, or None for a port that is not USB (a pty)."""
        if self.vid is None or self.pid is None:
            return None
        return "%04x:%04x" % (self.vid, self.pid)

    @property
    def chip(self) -> str | None:
        return usb_chip(self.vid, self.pid)

    def label(self) -> str:
        """Short text for messages: ``/dev/ttyUSB0 (CP210x 10c4:ea60, serial 0001)``."""
        parts = [p for p in (self.chip, self.usb_id) if p]
        if self.serial_number:
            parts.append("serial " + self.serial_number)
        return "%s (%s)" % (self.device, ", ".join(parts)) if parts else self.device

    @classmethod
    def from_pyserial(cls, port: Any) -> "PortInfo":
        return cls(device=port.device, vid=port.vid, pid=port.pid, serial_number=port.serial_number or None,
                   location=port.location, description=port.description or "")


def all_ports() -> list[PortInfo]:
    """Every serial port the operating system lists (``serial.tools.list_ports.comports()``), known chip or not."""
    import serial.tools.list_ports  # here, so that protocol-only users need no pyserial

    return [PortInfo.from_pyserial(p) for p in serial.tools.list_ports.comports()]


def find_boards() -> list[PortInfo]:
    """The ports whose USB id is in ``KNOWN_USB_IDS``, sorted by device path."""
    return sorted((p for p in all_ports() if p.chip), key=lambda p: p.device)


def find_by_serial(serial_number: str) -> str | None:
    """The device path of the known board with this USB serial number now, or None when it is not plugged in."""
    for p in find_boards():
        if p.serial_number == serial_number:
            return p.device
    return None


def port_info(path: str) -> PortInfo:
    """The listed port at ``path`` (a symlink such as ``/dev/serial/by-id/...`` is followed), with its USB serial
    number; a path the system does not list as a serial port (a virtual board's pty) gives a bare PortInfo."""
    real = os.path.realpath(path)
    for p in all_ports():
        if p.device == path or os.path.realpath(p.device) == real:
            return PortInfo(device=path, vid=p.vid, pid=p.pid, serial_number=p.serial_number,
                            location=p.location, description=p.description)
    return PortInfo(device=path)


def select_board(port: str | None = None, serial_number: str | None = None) -> PortInfo:
    """The board to talk to: the named ``port``, else the board with ``serial_number``, else the only board.

    Raises ``NoBoardError`` when there is none and ``AmbiguousBoardError`` when there are several to choose from.
    """
    if port:
        return port_info(port)
    boards = find_boards()
    if serial_number is not None:
        boards = [b for b in boards if b.serial_number == serial_number]
        if not boards:
            raise NoBoardError("no board with USB serial number %s found: plug it in or give --port" % serial_number)
    if not boards:
        raise NoBoardError()
    if len(boards) > 1:
        raise AmbiguousBoardError(boards)
    return boards[0]


def resolve_port(port: str | None = None) -> PortInfo:
    """The port a command talks to: ``port`` when given (it must exist: ``PortNotFoundError`` otherwise; a virtual
    board's pty is fine), else the only board plugged in (``NoBoardError``, ``AmbiguousBoardError``). All three are
    ``slm.errors.InputError``: exit 2. A URL (``rfc2217://host:port``, ``socket://...``) is taken as given."""
    if port and "://" not in port and not os.path.exists(port):
        raise PortNotFoundError(f"port {port} does not exist: check the cable and the name (a virtual board's port "
                                "is the one `slm virtual` printed), or leave out --port to find a board by its USB id")
    if port:
        return select_board(port)
    try:
        return select_board()
    except NoBoardError:
        raise NoBoardError(NO_BOARD_HINT) from None


NO_BOARD_HINT = ("no board found (no serial port with an ESP32 board's USB id): plug the board in with a data cable, "
                 "or give --port; a virtual board has no USB id: give the port `slm virtual` printed, e.g. "
                 "--port /dev/pts/5")
