"""Flash MicroPython onto a meter board with esptool's Python API, then wait for the MicroPython REPL.

    result = flash("esp32-devkitc-inmp441", "ESP32_GENERIC-20241129-v1.24.1.bin")   # finds the board by USB id
    result = flash("esp32-s3-devkitc-ics43434", fw, port="/dev/ttyACM0", erase=True)
    result.repl_port    # where MicroPython answered (a native-USB S3/C3 can come back under another path)

Steps, each with a one-line error of its own (the classes below):

1. the board profile (``slm.boards.load_board``; ``BoardError``);
2. the firmware file, before any port is touched (``inspect_firmware``): it exists, is not empty, starts with an
   ESP image (magic 0xE9) whose header and checksum esptool accepts, carries the chip id of the profile's chip
   (``IMAGE_CHIP_ID`` in the image's extended header: an ESP32 image cannot go onto an ESP32-S3), is the *combined*
   image (bootloader at the start, partition table at flash 0x8000; not the application alone), and, when the
   application's description says so, is MicroPython;
3. the port: the one given, else the only board plugged in (``slm.discovery.resolve_port``, by USB id);
4. ``esptool.cmds.detect_chip`` (resets the board into its ROM bootloader with DTR/RTS), and the detected chip must
   be the profile's ``chip``; then ``run_stub``, ``change_baud``, ``attach_flash``, a size check against the flash
   chip, optional ``erase_flash``, ``write_flash(esp, [(profile.flash_offset, image)])`` (esptool checks the
   written data with an MD5 read back from the flash and fails on a mismatch), ``reset_chip(esp, "hard-reset")``;
5. ``wait_for_repl``: the port is opened again (found again by USB serial number, USB location, or as the only
   Espressif device when the path changed: an ESP32-S3 on native USB is 303A:1001 in the ROM bootloader and
   303A:4001 under MicroPython) until MicroPython's ``>>>`` prompt appears; after 1.5 s of silence it sends
   Ctrl-C and Ctrl-B (stops a running ``main.py``, prints the banner).

Errors derive from ``slm.errors``. Bad input, exit 2 (``InputError``): ``FlashInputError`` (missing or invalid
firmware file, firmware for another chip, a board with another chip), ``BoardError`` (unknown board), and from
``slm.discovery``: ``PortNotFoundError`` (a ``--port`` that does not exist), ``NoBoardError`` (no board found and
no ``--port``), ``AmbiguousBoardError`` (several boards and no ``--port``). A failed operation, exit 1
(``OperationError``): ``FlashOperationError`` (permission denied, port busy, no answer from the bootloader, erase
or write failed, no REPL after the reset).

esptool is imported only when a board is flashed; its log output is captured (``FlashError.details`` holds the
last lines) and its write progress goes to ``progress(stage, done, total)``. Cost: connecting takes 1-3 s, a
1.6 MB image about 20 s at 460800 Bd over a USB-UART bridge (less over native USB), ``erase`` 5-30 s more, the
REPL a few seconds after the reset.
"""

from __future__ import annotations

import collections
import errno
import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from slm import discovery
from slm.discovery import PortInfo
from slm.errors import InputError, OperationError, PortNotFoundError, SlmError

DEFAULT_BAUD = 460800  # after the stub is running; the ROM bootloader is reached at 115200
REPL_BAUD = 115200
REPL_TIMEOUT_S = 20.0  # the first boot after an erase formats the filesystem
REPL_POKE_AFTER_S = 1.5  # silence before Ctrl-C / Ctrl-B are sent
NATIVE_USB_RETRY_S = 6.0  # how long to look for a native-USB board that re-enumerated into its bootloader
ESPRESSIF_VID = 0x303A

ESP_IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432  # esp_app_desc_t at the start of an application's first segment
PARTITION_TABLE_ADDR = 0x8000
PARTITION_MAGIC = b"\xaa\x50"

MICROPYTHON_BUILDS = {  # chip -> the name of the generic build on micropython.org/download
    "esp32": "ESP32_GENERIC",
    "esp32s2": "ESP32_GENERIC_S2",
    "esp32s3": "ESP32_GENERIC_S3",
    "esp32c3": "ESP32_GENERIC_C3",
    "esp32c6": "ESP32_GENERIC_C6",
}
BOOT_HINT = "hold BOOT, press and release RESET, release BOOT, then try again"
DIALOUT_HINT = "add your user to the dialout group (uucp on Arch): sudo usermod -aG dialout $USER, then log in again"

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stage is "connect", "erase", "write", "reset" or "repl"; done/total count
bytes for "write" (as esptool sends them, compressed) and are 0 for the other stages."""


# --- errors ---------------------------------------------------------------------------------------------------

class FlashError(SlmError):
    """A flashing problem; ``str()`` is one line for the user, ``details`` the last lines esptool logged."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


class FlashInputError(FlashError, InputError):
    """Bad input: the firmware file, the chip, the port named. ``slm flash`` exits with 2."""


class FlashOperationError(FlashError, OperationError):
    """The operation failed: no board, no access, no answer, write failed. ``slm flash`` exits with 1."""


class FirmwareError(FlashInputError):
    """The firmware file is missing, empty, not an ESP image, not a complete image, or for another chip."""


class WrongChipError(FlashInputError):
    """The connected chip is not the board profile's chip."""


class PortPermissionError(FlashOperationError):
    """The port exists but this user may not open it."""


class PortBusyError(FlashOperationError):
    """Another program has the port open."""


class NoResponseError(FlashOperationError):
    """The ROM bootloader does not answer: the board is not in download mode, or the USB link is bad."""


class WriteFailedError(FlashOperationError):
    """Erasing, writing or verifying the flash failed."""


class NoReplError(FlashOperationError):
    """The firmware was written but MicroPython's prompt did not appear on the port."""


# --- results --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FirmwareInfo:
    """What the firmware file says about itself."""

    path: str
    size: int
    chip: str  # from the bootloader image's chip id, e.g. "esp32s3"
    project: str = ""  # from the application description, e.g. "micropython"
    version: str = ""  # e.g. "v1.24.1"


@dataclass(frozen=True)
class FlashResult:
    board: str
    chip: str  # detected, e.g. "esp32s3"
    chip_description: str  # esptool's, e.g. "ESP32-S3 (QFN56) (revision v0.2)"
    port: str  # where the board was flashed
    repl_port: str  # where MicroPython answered (differs from port when a native-USB board re-enumerated)
    firmware: FirmwareInfo
    offset: int
    erased: bool
    verified: bool  # esptool compared an MD5 of the written flash region with the image
    banner: str  # MicroPython's banner line, "" when only the prompt was seen (or the REPL was not awaited)
    seconds: float


# --- the firmware file ----------------------------------------------------------------------------------------

def _chip_of_image_id(image_chip_id: int) -> str | None:
    from esptool.targets import ROM_LIST

    for rom in ROM_LIST:
        if getattr(rom, "IMAGE_CHIP_ID", None) == image_chip_id and rom.CHIP_NAME != "ESP8266":
            return normalise_chip(rom.CHIP_NAME)
    return None


def normalise_chip(name: str) -> str:
    """esptool's ``"ESP32-S3"`` (or ``"ESP32-C3 (QFN32)"``) -> the profiles' ``"esp32s3"``."""
    return re.sub(r"[^a-z0-9]", "", name.lower().split("(")[0])


def _c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def inspect_firmware(path: str | os.PathLike, chip: str, offset: int, board_name: str = "") -> FirmwareInfo:
    """Check a MicroPython firmware file for ``chip`` (written at ``offset``) without any hardware.

    Raises ``FirmwareError`` with one line saying what is wrong and what to use instead. What cannot be told
    apart: two builds for the same chip (e.g. with and without SPIRAM); an image for a chip whose header carries
    no chip id (none of the chips here).
    """
    p = Path(path)
    where = f"firmware {p}"
    board = f"board {board_name}" if board_name else f"an {chip} board"
    build = MICROPYTHON_BUILDS.get(chip, chip.upper())
    get_it = f"download the {build} .bin from micropython.org/download"
    if not p.exists():
        raise FirmwareError(f"{where} does not exist")
    if p.is_dir():
        raise FirmwareError(f"{where} is a folder, not a .bin file")
    try:
        data = p.read_bytes()
    except PermissionError:
        raise FirmwareError(f"{where} cannot be read: permission denied") from None
    except OSError as e:
        raise FirmwareError(f"{where} cannot be read: {e.strerror or e}") from None
    if not data:
        raise FirmwareError(f"{where} is empty")
    if data[0] != ESP_IMAGE_MAGIC:
        if offset and len(data) > offset and data[offset] == ESP_IMAGE_MAGIC and not data[:offset].strip(b"\xff"):
            raise FirmwareError(f"{where} is a whole-flash image for address 0x0 (it starts with {offset:#x} bytes "
                                f"of padding); {chip} MicroPython images go at {offset:#x}: {get_it}")
        raise FirmwareError(f"{where} is not an ESP firmware image (first byte {data[0]:#04x}, expected "
                            f"{ESP_IMAGE_MAGIC:#04x}): {get_it}")
    if len(data) < 24:
        raise FirmwareError(f"{where} is too short for an ESP image header ({len(data)} bytes)")
    image_chip_id = struct.unpack_from("<H", data, 12)[0]
    image_chip = _chip_of_image_id(image_chip_id)
    if image_chip != chip:
        what = f"an {image_chip} image" if image_chip else f"an image for an unknown chip (chip id {image_chip_id})"
        raise FirmwareError(f"{where} is {what}, but {board} has an {chip}: {get_it}")
    if len(data) >= 36 and struct.unpack_from("<I", data, 32)[0] == APP_DESC_MAGIC:
        raise FirmwareError(f"{where} is an application image alone (micropython.bin, which goes at 0x10000), not "
                            f"the complete firmware with bootloader and partition table: {get_it}")
    _check_image(data, chip, where, "bootloader")
    pt = PARTITION_TABLE_ADDR - offset
    if len(data) < pt + 32 or data[pt:pt + 2] != PARTITION_MAGIC:
        raise FirmwareError(f"{where} is not a complete MicroPython image: no partition table at "
                            f"{PARTITION_TABLE_ADDR:#x} (a bootloader alone?): {get_it}")
    app = _app_partition(data, offset)
    project = version = ""
    if app is not None:
        if app >= len(data):
            raise FirmwareError(f"{where} ends before its application at {app + offset:#x} (a truncated download?): "
                                f"{get_it}")
        _check_image(data[app:], chip, where, "application")
        project, version = _app_description(data, app)
    if project and project != "micropython":
        raise FirmwareError(f"{where} is firmware for '{project}', not MicroPython: {get_it}")
    return FirmwareInfo(path=str(p), size=len(data), chip=image_chip, project=project, version=version)


def _check_image(data: bytes, chip: str, where: str, part: str) -> None:
    """esptool's parse of one ESP image (header, segments) and its checks of the checksum and the SHA-256."""
    from esptool.bin_image import LoadFirmwareImage

    try:
        image = LoadFirmwareImage(chip, data)
    except Exception as e:  # esptool raises FatalError, RuntimeError or struct.error for a damaged header
        reason = " ".join(str(e).split()) or type(e).__name__
        raise FirmwareError(f"{where} is not a valid ESP image ({part}: {reason})") from None
    if image.checksum != image.calculate_checksum():
        raise FirmwareError(f"{where} is damaged: the {part}'s checksum does not match (a truncated or corrupted "
                            "download?)")
    if getattr(image, "append_digest", False) and image.stored_digest != image.calc_digest:
        raise FirmwareError(f"{where} is damaged: the {part}'s SHA-256 does not match (a truncated or corrupted "
                            "download?)")


def _app_partition(data: bytes, offset: int) -> int | None:
    """File position of the first application partition named by the partition table, or None."""
    pos = PARTITION_TABLE_ADDR - offset
    while pos + 32 <= len(data) and data[pos:pos + 2] == PARTITION_MAGIC:
        ptype, _subtype, app_addr = struct.unpack_from("<BBI", data, pos + 2)
        pos += 32
        if ptype == 0 and app_addr >= offset:  # type 0: app
            return app_addr - offset
    return None


def _app_description(data: bytes, app: int) -> tuple[str, str]:
    """(project name, version) from the esp_app_desc_t at the start of the application's first segment."""
    desc = app + 24 + 8  # image header, first segment header
    if desc + 80 > len(data) or struct.unpack_from("<I", data, desc)[0] != APP_DESC_MAGIC:
        return "", ""
    return _c_string(data[desc + 48:desc + 80]), _c_string(data[desc + 16:desc + 48])


# --- ports ----------------------------------------------------------------------------------------------------

def _norm_serial(serial_number: str | None) -> str:
    """USB serial numbers compared without separators or case: the S3's USB-Serial-JTAG reports its MAC as
    ``F4:12:FA:...``, MicroPython's TinyUSB device as hex digits."""
    return re.sub(r"[^0-9a-z]", "", (serial_number or "").lower())


def _usb_path(location: str | None) -> str:
    """``"1-1.4:1.0"`` -> ``"1-1.4"``: the physical USB port, without configuration and interface."""
    return (location or "").split(":", 1)[0]


def refind_port(original: PortInfo, ports: list[PortInfo] | None = None) -> str | None:
    """The path of the board ``original`` now, or None when it is not (yet) back.

    Tried in order: the same USB serial number (the same path first: cheap boards share a serial such as
    ``0001``), the same USB location, the old path when the board has no serial number, and for an Espressif
    native-USB board the only Espressif device present. A port without USB ids (a pty) is its path.
    """
    if original.vid is None:
        return original.device if os.path.exists(original.device) else None
    ports = discovery.all_ports() if ports is None else ports
    sn = _norm_serial(original.serial_number)
    if sn:
        same = [p for p in ports if _norm_serial(p.serial_number) == sn]
        for p in same:
            if p.device == original.device:
                return p.device
        if same:
            return same[0].device
    loc = _usb_path(original.location)
    if loc:
        for p in ports:
            if _usb_path(p.location) == loc:
                return p.device
    if not sn and any(p.device == original.device for p in ports):
        return original.device
    if original.vid == ESPRESSIF_VID:
        espressif = [p for p in ports if p.vid == ESPRESSIF_VID]
        if len(espressif) == 1:
            return espressif[0].device
    return None


def resolve_port(port: str | None) -> PortInfo:
    """The port to flash (``slm.discovery.resolve_port``: ``PortNotFoundError``, ``NoBoardError``,
    ``AmbiguousBoardError``, all exit 2), which this user must be able to read and write."""
    info = discovery.resolve_port(port)
    if "://" not in info.device and not os.access(info.device, os.R_OK | os.W_OK):
        raise PortPermissionError(f"permission denied on {info.device}: {DIALOUT_HINT}")
    return info


def _errno_of(exc: BaseException | None) -> int | None:
    """The errno behind an exception or the exceptions it was raised from (esptool wraps pyserial's)."""
    seen = 0
    while exc is not None and seen < 5:
        e = getattr(exc, "errno", None)
        if isinstance(e, int):
            return e
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _port_error(path: str, exc: BaseException, details: str = "") -> SlmError | None:
    """A port-level failure (no such port, permission, busy) as our error, or None if it is not one."""
    text = " ".join(str(exc).split())
    code = _errno_of(exc)
    low = text.lower()
    if code == errno.EACCES or "permission denied" in low:
        return PortPermissionError(f"permission denied on {path}: {DIALOUT_HINT}", details)
    if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) or "exclusively lock" in low \
            or "resource busy" in low or "access is denied" in low:
        return PortBusyError(f"port {path} is busy: another program has it open (a serial monitor, slm monitor, "
                             "Thonny, ModemManager); close it and try again", details)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "no such file" in low:
        return PortNotFoundError(f"port {path} does not exist (unplugged?)")
    return None


# --- esptool --------------------------------------------------------------------------------------------------

def _quiet_logger(on_progress: Callable[[int, int], None]):
    """An esptool logger that keeps the last lines (for error details) and reports write progress."""
    from esp_pylib.logger import EspLogBase

    class QuietLog(EspLogBase):
        def __init__(self) -> None:
            self.lines: collections.deque[str] = collections.deque(maxlen=40)

        def _keep(self, *args: Any) -> None:
            text = " ".join(str(a) for a in args).strip()
            if text:
                self.lines.append(text)

        def print(self, *args: Any, **kwargs: Any) -> None:
            self._keep(*args)

        def err(self, *args: Any, suggestion: str | None = None) -> None:
            self._keep("error:", *args)

        def warn(self, *args: Any, suggestion: str | None = None) -> None:
            self._keep("warning:", *args)

        def note(self, *args: Any) -> None:
            self._keep("note:", *args)

        def hint(self, *args: Any) -> None:
            self._keep("hint:", *args)

        def debug(self, *args: Any) -> None:
            pass

        def set_verbosity(self, mode: int | str) -> None:
            pass

        def progress_bar(self, cur_iter: int, total_iters: int, prefix: str = "", suffix: str = "",
                         bar_length: int = 30) -> None:
            on_progress(int(cur_iter), int(total_iters))

        # esptool.logger.EsptoolLogger aliases, called by some esptool code paths
        def warning(self, message: str, suggestion: str | None = None) -> None:
            self.warn(message)

        def error(self, message: str, suggestion: str | None = None) -> None:
            self.err(message)

    return QuietLog()


class _EsptoolSession:
    """Installs the quiet logger for the duration of one flash and restores esptool's afterwards."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.stage = "connect"
        self.logger = _quiet_logger(self._on_progress)
        self._previous: Any = None

    def _on_progress(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(self.stage, done, total)

    def enter(self, stage: str) -> None:
        self.stage = stage
        if self.progress is not None:
            self.progress(stage, 0, 0)

    def details(self) -> str:
        return "\n".join(self.logger.lines)

    def __enter__(self) -> "_EsptoolSession":
        from esp_pylib.logger import EspLog

        self._previous = EspLog.instance
        EspLog.instance = self.logger
        return self

    def __exit__(self, *exc: Any) -> None:
        from esp_pylib.logger import EspLog

        EspLog.instance = self._previous


def _no_response(path: str, chip: str, exc: BaseException, details: str) -> NoResponseError:
    text = " ".join(str(exc).split())
    if "wrong boot mode" in text.lower():
        why = "the chip started its program instead of the bootloader"
    elif "no serial data received" in text.lower():
        why = "nothing answered"
    else:
        why = text.split(" For troubleshooting")[0].rstrip(".")
    return NoResponseError(f"no response from the {chip} bootloader on {path} ({why}): {BOOT_HINT}; "
                           "use a USB cable that carries data", details)


def _detect(path: str, chip: str, session: _EsptoolSession) -> Any:
    """``esptool.cmds.detect_chip`` on ``path`` with our errors."""
    import serial
    from esptool import cmds
    from esptool.util import FatalError

    try:
        return cmds.detect_chip(path, baud=115200, connect_mode="default-reset")
    except (FatalError, serial.SerialException, OSError) as e:
        err = _port_error(path, e, session.details())
        if err is not None:
            raise err from e
        raise _no_response(path, chip, e, session.details()) from e


def _connect(port: PortInfo, chip: str, session: _EsptoolSession) -> tuple[Any, str]:
    """Connect to the ROM bootloader; a native-USB board that re-enumerated into it is followed once."""
    try:
        return _detect(port.device, chip, session), port.device
    except (NoResponseError, PortNotFoundError):
        if port.vid != ESPRESSIF_VID:
            raise
        # MicroPython's native USB device (303A:4001) answers esptool's DTR/RTS sequence by restarting into the
        # ROM bootloader, which comes back as another USB device (303A:1001), maybe under another path.
        deadline = time.monotonic() + NATIVE_USB_RETRY_S
        time.sleep(1.0)
        while time.monotonic() < deadline:
            path = refind_port(port)
            if path is not None:
                return _detect(path, chip, session), path
            time.sleep(0.25)
        raise


def _size_text(n: int) -> str:
    return f"{n // 2**20} MB" if n >= 2**20 else f"{n // 2**10} KB"


def _flash_size(esp: Any) -> int | None:
    from esptool import cmds
    from esptool.util import flash_size_bytes

    try:
        return flash_size_bytes(cmds.detect_flash_size(esp))
    except Exception:  # unknown flash id, or secure download mode: esptool checks again while writing
        return None


def flash(board_name: str, firmware_path: str | os.PathLike, port: str | None = None, erase: bool = False,
          progress: Progress | None = None, *, baud: int = DEFAULT_BAUD, wait_repl: bool = True,
          repl_timeout: float = REPL_TIMEOUT_S) -> FlashResult:
    """Write MicroPython ``firmware_path`` onto the board of profile ``board_name`` and wait for its REPL.

    ``port``: a serial port path (default: the only board plugged in, by USB id). ``erase``: erase the whole flash
    first (removes the filesystem: files and the meter's configuration). ``progress(stage, done, total)``: see
    ``Progress``. ``baud``: the rate after the flasher stub starts. ``wait_repl=False`` returns right after the
    reset. Raises the errors above (one line each); nothing is written before the file, the port and the chip
    have passed their checks.
    """
    from slm.boards import load_board

    t0 = time.monotonic()
    board = load_board(board_name)
    info = inspect_firmware(firmware_path, board.chip, board.flash_offset, board.name)
    port_info = resolve_port(port)

    import serial
    from esptool import cmds
    from esptool.util import FatalError

    with _EsptoolSession(progress) as session:
        session.enter("connect")
        esp, path = _connect(port_info, board.chip, session)
        with esp:
            connected = normalise_chip(esp.CHIP_NAME)
            if connected != board.chip:
                try:
                    cmds.reset_chip(esp, "hard-reset")  # leave the board running what it had
                except Exception:
                    pass
                raise WrongChipError(f"board {board.name} expects {board.chip}, the connected chip is {connected}")
            try:
                description = esp.get_chip_description()
            except Exception:
                description = esp.CHIP_NAME
            stage = "connect"
            try:
                esp = cmds.run_stub(esp)
                if baud > 115200:
                    try:
                        esp.change_baud(baud)
                    except Exception:  # the ROM cannot change it: keep 115200
                        pass
                cmds.attach_flash(esp)
                size = _flash_size(esp)
                if size is not None and board.flash_offset + info.size > size:
                    raise FirmwareError(f"firmware {info.path} ({info.size} bytes at {board.flash_offset:#x}) does "
                                        f"not fit this board's {_size_text(size)} flash: use a build for its flash "
                                        "size")
                if erase:
                    stage = "erase"
                    session.enter("erase")
                    cmds.erase_flash(esp)
                stage = "write"
                session.enter("write")
                data = Path(info.path).read_bytes()
                cmds.write_flash(esp, [(board.flash_offset, data)])
                verified = not esp.secure_download_mode
                stage = "reset"
                session.enter("reset")
                cmds.reset_chip(esp, "hard-reset")
            except SlmError:
                raise
            except (FatalError, serial.SerialException, OSError) as e:
                details = session.details()
                reason = " ".join(str(e).split()).split(" For troubleshooting")[0]
                if stage == "connect":
                    err = _port_error(path, e, details)
                    raise (err or NoResponseError(f"the bootloader on {path} stopped answering ({reason}): "
                                                  f"{BOOT_HINT}", details)) from e
                if stage == "reset":
                    raise WriteFailedError(f"the firmware was written and verified but the reset failed on {path} "
                                           f"({reason}): press RESET", details) from e
                what = "erasing the flash" if stage == "erase" else "writing the firmware"
                raise WriteFailedError(f"{what} failed on {path}: {reason}; the board will not start MicroPython "
                                       "until it is flashed again", details) from e

    repl_port, banner = path, ""
    if wait_repl:
        if progress is not None:
            progress("repl", 0, 0)
        after = PortInfo(device=path, vid=port_info.vid, pid=port_info.pid, serial_number=port_info.serial_number,
                         location=port_info.location, description=port_info.description)
        repl_port, banner = wait_for_repl(after, timeout=repl_timeout)
    return FlashResult(board=board.name, chip=connected, chip_description=description, port=path,
                       repl_port=repl_port, firmware=info, offset=board.flash_offset, erased=erase,
                       verified=verified, banner=banner, seconds=time.monotonic() - t0)


# --- the REPL -------------------------------------------------------------------------------------------------

_BANNER = re.compile(rb"MicroPython v[^\r\n]*")
_PROMPT = b">>> "
_POKE = b"\r\x03\x03\x02"  # Ctrl-C twice stops a running main.py, Ctrl-B prints the banner (and leaves raw REPL)


def _open_repl(path: str) -> Any:
    import serial

    kwargs: dict[str, Any] = {"baudrate": REPL_BAUD, "timeout": 0.1, "write_timeout": 1.0}
    if os.name == "posix":
        kwargs["exclusive"] = True
    return serial.Serial(path, **kwargs)


def wait_for_repl(port: PortInfo | str, timeout: float = REPL_TIMEOUT_S,
                  poke_after: float = REPL_POKE_AFTER_S) -> tuple[str, str]:
    """Wait for MicroPython's ``>>>`` prompt on ``port``; return (the path it answered on, the banner line).

    The port is found again by ``refind_port`` while the board re-enumerates. After ``poke_after`` s without a
    prompt, Ctrl-C Ctrl-C Ctrl-B is sent (every second): this stops a running ``main.py`` (the meter; deploy it
    again afterwards) and makes MicroPython print its banner. Raises ``NoReplError`` after ``timeout`` s,
    ``PortPermissionError`` at once when the port cannot be opened for lack of rights.
    """
    import serial

    info = port if isinstance(port, PortInfo) else discovery.port_info(port)
    deadline = time.monotonic() + timeout
    seen = bytearray()
    last_path = info.device
    found = False
    busy: SlmError | None = None
    while time.monotonic() < deadline:
        path = refind_port(info)
        if path is None:
            time.sleep(0.2)
            continue
        last_path, found = path, True
        try:
            ser = _open_repl(path)
        except (serial.SerialException, OSError) as e:
            err = _port_error(path, e)
            if isinstance(err, PortPermissionError):
                raise err from e
            busy = err if isinstance(err, PortBusyError) else None
            time.sleep(0.2)  # re-enumerating: the node exists before it can be opened
            continue
        busy = None
        try:
            next_poke = time.monotonic() + poke_after
            grace_end = None
            while time.monotonic() < deadline:
                chunk = ser.read(512)
                if chunk:
                    seen += chunk
                    del seen[:-8192]
                banners = list(_BANNER.finditer(seen))
                prompt = seen.rfind(_PROMPT)
                if prompt >= 0:
                    before = [m for m in banners if m.start() < prompt]
                    if before:
                        return path, before[-1].group(0).decode("utf-8", "replace").strip()
                    if grace_end is None:  # a prompt without a banner: ask for the banner once, briefly
                        ser.write(b"\x02")
                        grace_end = time.monotonic() + 1.0
                    elif time.monotonic() >= grace_end:
                        return path, ""
                elif time.monotonic() >= next_poke:
                    ser.write(_POKE)
                    next_poke = time.monotonic() + 1.0
        except (serial.SerialException, OSError):
            time.sleep(0.2)  # the port went away under us (native USB re-enumerating): find it again
            continue
        finally:
            try:
                ser.close()
            except Exception:
                pass
    if busy is not None:
        raise busy
    if not found:
        raise NoReplError(f"port {last_path} did not come back within {timeout:g} s after the reset (unplugged? a "
                          "native-USB board under another name: give its new --port)")
    text = bytes(seen).decode("utf-8", "replace")
    if "waiting for download" in text:
        raise NoReplError(f"the board on {last_path} is still in download mode after the reset: release BOOT and "
                          "press RESET")
    tail = " ".join(text.split())[-60:]
    said = f"; last output: {tail!r}" if tail else " (no output at all)"
    raise NoReplError(f"no MicroPython prompt on {last_path} within {timeout:g} s{said}: press RESET and check "
                      "that the firmware is MicroPython for this chip")
