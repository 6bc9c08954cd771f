"""The one place that talks to mpremote's library: a MicroPython board's raw REPL as a small session object.

mpremote's Python API (``mpremote.transport_serial.SerialTransport``) changes between releases; everything slm
needs from it goes through ``DeviceSession`` here, so a new mpremote means changing this file only. Pinned:
``mpremote==1.29.0`` (pyproject.toml).

    with DeviceSession("/dev/ttyUSB0", timeout=5.0) as dev:   # opens the port
        dev.stop_app()                     # Ctrl-C, then the raw REPL without a soft reset (the app stays stopped)
        dev.device_info()                  # {"mpy": 2822, "platform": "linux", "machine": ..., "free": ...}
        dev.hash_files(["app.mpy"])        # {"app.mpy": "<sha256 hex>" or None}, computed on the device
        dev.write_file_atomic("app.mpy", data, sha256_hex)   # to app.mpy.part, checked, renamed
        dev.restart_app()                  # leave the raw REPL and soft-reset: main.py runs again
        dev.read_lines(until=..., timeout=5)

What it relies on (measured with mpremote 1.29.0 against the MicroPython unix port behind a pty, and as mpremote
itself drives ESP32 boards):

- ``SerialTransport(port, baudrate, timeout=)``: ``timeout`` is pyserial's read timeout; without it a dead device
  blocks a read for ever. mpremote also waits up to 10 s of silence (hard-coded) for the raw REPL's ``>`` prompt;
  the subclass below caps every such wait at the session's ``timeout``, so a device that stops answering (a board
  unplugged, a virtual board killed) is noticed after ``timeout`` seconds of silence, not 10.
- ``enter_raw_repl(soft_reset=False)``: Ctrl-C, then Ctrl-A. A soft reset would end the unix port's process (a
  virtual board then restarts it) and on a board would run boot.py first: neither is wanted here.
- ``exec_raw(code, timeout)`` -> (stdout, stderr of the code); ``fs_listdir``, ``fs_stat``, ``fs_readfile``,
  ``fs_hashfile``, ``fs_rmfile`` as mpremote implements them (each a few raw-REPL round trips).
- Writes are done here rather than with ``fs_writefile`` (which sends 256 bytes per round trip as a ``repr``, up to
  4 characters per byte of a .mpy): 2 KB per round trip, base64 (1.33 characters per byte), decoded on the device
  by ``binascii.a2b_base64``: about 1.2 s per 10 KB at 115200 Bd (estimated from the line rate), ~2 ms per KB
  over a virtual board's pty.
- Hashes are SHA-256 computed on the device with ``hashlib.sha256`` over a 256-byte buffer (no allocation beyond
  the buffer and one small memoryview per chunk), all requested files in one round trip.
- Restarting the application: Ctrl-B (the normal REPL), then Ctrl-D: a board soft-resets and runs main.py (a soft
  reset from the *raw* REPL would not run main.py); the unix port ends its process, which a virtual board restarts.

A port that does not exist raises ``slm.errors.PortNotFoundError`` (bad input, exit 2). Every other failure is
an ``AdapterError`` (an ``slm.errors.OperationError``, exit 1) whose message is one line: ``PortOpenError``
(permission, busy), ``NoReplError`` (no raw REPL after Ctrl-C), ``DeviceGoneError`` (the device
stopped answering or the port failed), ``DeviceExecError`` (the code raised on the device: the traceback's last
line), ``HashMismatchError`` (a file written did not hash as sent: it was not renamed into place).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import errno
import io
import os
import time
from typing import Any, Callable, Iterable

from slm.errors import OperationError, PortNotFoundError

MPREMOTE_VERSION = "1.29.0"  # the mpremote this adapter was written and tested against (pinned in pyproject.toml)
WRITE_CHUNK = 2048  # bytes of file data per raw-REPL round trip when writing
HASH_CHUNK = 256  # bytes per read when hashing on the device
TEMP_SUFFIX = ".part"  # written files go to NAME.part first, then are renamed to NAME

S_IFMT = 0xF000
S_IFREG = 0x8000


class AdapterError(OperationError):
    """A problem talking to the board; the message is one line."""


class PortOpenError(AdapterError):
    """The port exists but cannot be opened (permission, in use)."""


class NoReplError(AdapterError):
    """No MicroPython raw REPL answered after Ctrl-C."""


class DeviceGoneError(AdapterError):
    """The device stopped answering, or the port failed, during the session."""


class DeviceExecError(AdapterError):
    """Code run on the device raised; ``exc_line`` is the traceback's last line (``OSError: [Errno 28] ENOSPC``)."""

    def __init__(self, exc_line: str, what: str = ""):
        self.exc_line = exc_line
        super().__init__(f"{what}: {exc_line}" if what else exc_line)


class HashMismatchError(AdapterError):
    """A file written to the device does not hash as the data sent."""


def _transport_class():
    """mpremote's SerialTransport, with its hard-coded 10 s waits capped at the session's timeout."""
    from mpremote.transport_serial import SerialTransport

    class _CappedSerialTransport(SerialTransport):
        char_timeout: float = 10.0

        def read_until(self, min_num_bytes, ending, timeout=10, data_consumer=None, timeout_overall=None):
            if timeout is not None:
                timeout = min(timeout, self.char_timeout)
            return super().read_until(min_num_bytes, ending, timeout=timeout, data_consumer=data_consumer,
                                      timeout_overall=timeout_overall)

    return _CappedSerialTransport


def _last_line(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.replace("\x04", "").splitlines() if ln.strip()]
    return lines[-1] if lines else "error"


_HASH_FUNC = """\
def _slm_hash(names):
    import os, hashlib, binascii
    b = bytearray(%d)
    m = memoryview(b)
    out = {}
    for n in names:
        h = None
        try:
            if os.stat(n)[0] & 0xF000 == 0x8000:
                s = hashlib.sha256()
                with open(n, 'rb') as f:
                    while True:
                        k = f.readinto(b)
                        if not k:
                            break
                        s.update(m[:k])
                h = binascii.hexlify(s.digest()).decode()
        except OSError:
            pass
        out[n] = h
    return out
""" % HASH_CHUNK

_INFO = """\
import sys, os
def _slm_info():
    r = {'platform': sys.platform, 'mpy': getattr(sys.implementation, '_mpy', None),
         'machine': getattr(sys.implementation, '_machine', ''), 'version': tuple(sys.implementation.version[:3]),
         'free': None, 'block': None, 'files': [], 'hashlib': False, 'binascii': False}
    try:
        import hashlib
        r['hashlib'] = hasattr(hashlib, 'sha256')
    except ImportError:
        pass
    try:
        import binascii
        r['binascii'] = hasattr(binascii, 'a2b_base64')
    except ImportError:
        pass
    try:
        s = os.statvfs('.')
        r['free'] = s[0] * s[4]
        r['block'] = s[0]
    except (AttributeError, OSError):
        pass
    for e in os.ilistdir(''):
        if e[1] & 0xF000 == 0x8000 or e[1] == 0:
            try:
                if os.stat(e[0])[0] & 0xF000 == 0x8000:
                    r['files'].append(e[0])
            except OSError:
                pass
    return r
print(repr(_slm_info()))
del _slm_info
"""


class DeviceSession:
    """One session with a MicroPython board over its serial port (or a virtual board's pty).

    port: the serial device path. timeout: seconds of silence after which the device counts as gone (also
    pyserial's read timeout). Use as a context manager, or call ``open()`` and ``close()``.
    """

    def __init__(self, port: str, timeout: float = 5.0, baudrate: int = 115200):
        self.port = port
        self.timeout = float(timeout)
        self.baudrate = baudrate
        self._t: Any = None
        self.in_raw_repl = False
        self.broken = False  # the device stopped answering (a DeviceGoneError was raised)

    # -- connection ---------------------------------------------------------------------------------------------
    def open(self) -> "DeviceSession":
        """Open the port (does not touch the running application)."""
        if os.name != "nt" and not os.path.exists(self.port):
            raise PortNotFoundError(f"port {self.port} does not exist (unplugged?)")
        from mpremote.transport import TransportError

        cls = _transport_class()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                t = cls(self.port, baudrate=self.baudrate, wait=0, exclusive=True, timeout=self.timeout)
        except (TransportError, OSError) as e:
            raise self._open_error(e) from None
        t.char_timeout = self.timeout
        self._t = t
        return self

    def _open_error(self, exc: BaseException) -> AdapterError | PortNotFoundError:
        """Why the port would not open, in one line (mpremote only says 'failed to access')."""
        if not os.path.exists(self.port):
            return PortNotFoundError(f"port {self.port} does not exist (unplugged?)")
        if not os.access(self.port, os.R_OK | os.W_OK):
            return PortOpenError(f"permission denied on {self.port}: add your user to the dialout group "
                                 "(uucp on Arch), then log in again")
        reason = str(exc)
        try:
            import serial

            s = serial.Serial(self.port, self.baudrate, exclusive=True, timeout=0)
            s.close()
        except Exception as e:  # pyserial's own reason: busy, locked, I/O error
            reason = str(e)
        if "lock" in reason.lower() or "busy" in reason.lower() or getattr(exc, "errno", None) == errno.EBUSY:
            return PortOpenError(f"port {self.port} is busy: close the other program using it (a serial monitor, "
                                 "`slm monitor`)")
        return PortOpenError(f"cannot open {self.port}: {reason}")

    def close(self) -> None:
        """Close the port (leaves the device as it is). Safe to call twice."""
        t, self._t = self._t, None
        if t is not None:
            try:
                t.close()
            except Exception:  # the port is already gone
                try:
                    t.serial.close()
                except Exception:
                    pass

    def __enter__(self) -> "DeviceSession":
        if self._t is None:
            self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _transport(self) -> Any:
        if self._t is None:
            raise DeviceGoneError(f"{self.port}: not connected")
        return self._t

    def _gone(self, what: str, exc: BaseException) -> DeviceGoneError:
        self.broken = True
        return DeviceGoneError(f"{self.port}: the device stopped answering ({what}: {_last_line(str(exc)) or exc})")

    # -- the REPL -----------------------------------------------------------------------------------------------
    def stop_app(self, attempts: int = 3) -> None:
        """Stop the running program (Ctrl-C) and enter the raw REPL without a soft reset."""
        from mpremote.transport import TransportError

        t = self._transport()
        for _ in range(attempts):
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got on failure
                    t.enter_raw_repl(soft_reset=False, timeout_overall=self.timeout)
                self.in_raw_repl = True
                return
            except TransportError:
                continue
            except OSError as e:  # pyserial's SerialException is an OSError too
                raise self._gone("entering the raw REPL", e) from None
        raise NoReplError(f"no MicroPython REPL on {self.port} after Ctrl-C (is MicroPython running? press RESET "
                          "and try again)")

    def leave(self) -> None:
        """Leave the raw REPL for the normal one (Ctrl-B); the application stays stopped."""
        t = self._transport()
        try:
            t.exit_raw_repl()
        except OSError as e:
            raise self._gone("leaving the raw REPL", e) from None
        self.in_raw_repl = False

    def restart_app(self) -> None:
        """Leave the raw REPL and soft-reset (Ctrl-D at the normal REPL): a board runs boot.py and main.py again;
        the unix port ends its process (a virtual board restarts it, which runs main again)."""
        t = self._transport()
        try:
            if self.in_raw_repl:
                t.exit_raw_repl()
                self.in_raw_repl = False
                with contextlib.redirect_stdout(io.StringIO()):
                    t.read_until(1, b">>> ", timeout=min(self.timeout, 2.0))
            t.serial.write(b"\x04")
            t.serial.flush()
        except OSError as e:
            raise self._gone("soft reset", e) from None

    def read_lines(self, until: Callable[[bytes], bool], timeout: float) -> list[bytes]:
        """Lines the device prints (without their line ends), until ``until(line)`` is true or ``timeout`` s pass."""
        t = self._transport()
        ser = t.serial
        lines: list[bytes] = []
        buf = bytearray()
        deadline = time.monotonic() + timeout
        saved_timeout = ser.timeout
        try:
            ser.timeout = 0.1
            while time.monotonic() < deadline:
                n = ser.in_waiting
                data = ser.read(n if n else 1)
                if not data:
                    continue
                buf += data
                while b"\n" in buf:
                    line, _, rest = bytes(buf).partition(b"\n")
                    buf = bytearray(rest)
                    line = line.rstrip(b"\r")
                    lines.append(line)
                    if until(line):
                        return lines
                if buf.endswith(b">>> ") and until(bytes(buf)):
                    lines.append(bytes(buf))
                    return lines
        except OSError as e:
            raise self._gone("reading", e) from None
        finally:
            with contextlib.suppress(Exception):
                ser.timeout = saved_timeout
        if buf:
            lines.append(bytes(buf))
        return lines

    def exec(self, code: str, timeout: float | None = None, what: str = "") -> bytes:
        """Run code in the raw REPL; returns what it printed. Raises DeviceExecError if it raised."""
        from mpremote.transport import TransportError

        t = self._transport()
        if not self.in_raw_repl:
            raise DeviceGoneError(f"{self.port}: not in the raw REPL (call stop_app() first)")
        try:
            out, err = t.exec_raw(code, timeout=self.timeout if timeout is None else timeout)
        except TransportError as e:
            raise self._gone(what or "exec", e) from None
        except OSError as e:
            raise self._gone(what or "exec", e) from None
        if err:
            raise DeviceExecError(_last_line(err), what)
        return out

    def eval(self, expression: str, what: str = "") -> Any:
        """The value of a Python literal expression evaluated on the device."""
        out = self.exec("print(repr(%s))" % expression, what=what)
        return self._literal(out, what)

    def _literal(self, out: bytes, what: str) -> Any:
        try:
            return ast.literal_eval(out.decode("utf-8", "replace").strip())
        except (ValueError, SyntaxError):
            raise DeviceGoneError(f"{self.port}: unexpected output from the device ({what}): "
                                  f"{out[:60]!r}") from None

    # -- information ------------------------------------------------------------------------------------------------
    def device_info(self) -> dict[str, Any]:
        """``platform`` (sys.platform), ``mpy`` (sys.implementation._mpy or None), ``machine``, ``version``
        (MicroPython's), ``free`` and ``block`` (bytes, of the current directory's filesystem, or None),
        ``files`` (regular files in the current directory), ``hashlib`` and ``binascii`` (available)."""
        out = self.exec(_INFO, what="reading the device's information")
        info = self._literal(out, "device information")
        if not isinstance(info, dict):
            raise DeviceGoneError(f"{self.port}: unexpected device information {info!r}"[:120])
        return info

    def list_files(self, path: str = "") -> list[tuple[str, bool, int]]:
        """(name, is_dir, size) of each entry of a directory (size 0 where the port does not tell)."""
        from mpremote.transport import TransportError

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                entries = self._transport().fs_listdir(path)
        except (TransportError, OSError) as e:
            raise self._fs_error(e, f"listing {path or '.'}") from None
        return [(e.name, bool(e.st_mode & 0x4000), int(e.st_size)) for e in entries]

    def stat(self, path: str) -> os.stat_result | None:
        """The file's stat result, or None when it does not exist."""
        from mpremote.transport import TransportError

        try:
            return self._transport().fs_stat(path)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise self._fs_error(e, f"stat {path}") from None
        except TransportError as e:
            raise self._fs_error(e, f"stat {path}") from None

    def hash_file(self, path: str) -> str:
        """SHA-256 (hex) of one file, computed on the device (mpremote's own ``fs_hashfile``)."""
        from mpremote.transport import TransportError

        try:
            return self._transport().fs_hashfile(path, "sha256", chunk_size=HASH_CHUNK).hex()
        except (TransportError, OSError) as e:
            raise self._fs_error(e, f"hashing {path}") from None

    def hash_files(self, names: Iterable[str]) -> dict[str, str | None]:
        """SHA-256 (hex) of each named file in one round trip; None for a name that is not a regular file."""
        names = list(names)
        if not names:
            return {}
        code = _HASH_FUNC + "print(repr(_slm_hash(%r)))\ndel _slm_hash\n" % (names,)
        out = self.exec(code, timeout=max(self.timeout, 10.0), what="hashing files")
        result = self._literal(out, "hashes")
        if not isinstance(result, dict):
            raise DeviceGoneError(f"{self.port}: unexpected hash output")
        return {n: result.get(n) for n in names}

    def read_file(self, path: str) -> bytes:
        """A file's bytes (mpremote's ``fs_readfile``; for small files: 1 KB per round trip)."""
        from mpremote.transport import TransportError

        try:
            return bytes(self._transport().fs_readfile(path, chunk_size=1024))
        except (TransportError, OSError) as e:
            raise self._fs_error(e, f"reading {path}") from None

    # -- changes ----------------------------------------------------------------------------------------------------
    def write_file(self, path: str, data: bytes, on_chunk: Callable[[int], None] | None = None) -> None:
        """Write ``data`` to ``path`` (replacing it) in WRITE_CHUNK pieces; ``on_chunk(bytes_so_far)``.
        Not atomic: see ``write_file_atomic``."""
        self.exec("import binascii\n_slm_f = open(%r, 'wb')\n_slm_w = _slm_f.write\n_slm_a = binascii.a2b_base64"
                  % path, what=f"opening {path}")
        try:
            for i in range(0, len(data), WRITE_CHUNK):
                chunk = data[i:i + WRITE_CHUNK]
                self.exec("_slm_w(_slm_a(%r))" % base64.b64encode(chunk), what=f"writing {path}")
                if on_chunk is not None:
                    on_chunk(i + len(chunk))
            self.exec("_slm_f.close()\ndel _slm_f, _slm_w, _slm_a", what=f"closing {path}")
        except DeviceExecError:
            with contextlib.suppress(AdapterError):
                self.exec("_slm_f.close()")
            raise

    def write_file_atomic(self, path: str, data: bytes, sha256_hex: str,
                          on_chunk: Callable[[int], None] | None = None) -> None:
        """Write to ``path + TEMP_SUFFIX``, check its SHA-256 on the device, then rename it to ``path``.

        The file under its real name is either the old one or the complete new one, whatever happens meanwhile
        (a rename replaces a file atomically on LittleFS and on the unix port). A hash mismatch removes the
        temporary file and raises HashMismatchError.
        """
        tmp = path + TEMP_SUFFIX
        self.write_file(tmp, data, on_chunk)
        code = (_HASH_FUNC + "import os\n_slm_h = _slm_hash([%r])[%r]\n"
                "if _slm_h == %r:\n    os.rename(%r, %r)\nelse:\n    os.remove(%r)\n"
                "print(repr(_slm_h))\ndel _slm_hash, _slm_h\n") % (tmp, tmp, sha256_hex, tmp, path, tmp)
        got = self._literal(self.exec(code, timeout=max(self.timeout, 10.0), what=f"renaming {tmp} to {path}"),
                            "hash")
        if got != sha256_hex:
            raise HashMismatchError(f"{self.port}: {path} was corrupted on the way (SHA-256 {str(got)[:12]}... "
                                    f"instead of {sha256_hex[:12]}...); it was not replaced")

    def rename(self, old: str, new: str) -> None:
        self.exec("import os\nos.rename(%r, %r)" % (old, new), what=f"renaming {old} to {new}")

    def remove(self, path: str) -> None:
        """Remove a file (mpremote's ``fs_rmfile``); a file that is already gone is fine."""
        from mpremote.transport import TransportError

        try:
            self._transport().fs_rmfile(path)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return
            raise self._fs_error(e, f"removing {path}") from None
        except TransportError as e:
            raise self._fs_error(e, f"removing {path}") from None

    def _fs_error(self, exc: BaseException, what: str) -> AdapterError:
        from mpremote.transport import TransportExecError

        if isinstance(exc, TransportExecError):
            return DeviceExecError(_last_line(exc.error_output), what)
        if isinstance(exc, OSError) and exc.errno is not None:  # mpremote's conversion of the device's OSError
            return DeviceExecError(f"OSError: {errno.errorcode.get(exc.errno, exc.errno)}", what)
        return self._gone(what, exc)
