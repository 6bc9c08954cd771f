"""The MicroPython unix-port process of a virtual board: started at its REPL on a pseudo-terminal, ended and reaped.

``micropython`` (its REPL) runs in the device directory with stdin/stdout/stderr on a pseudo-terminal ("pty A");
the caller types ``BOOT_LINE`` (``import main``) at the prompt, and the firmware runs as after a board's boot. When
the application stops (Ctrl-C, byte 3, on the console, or the end of the audio) the process is back at the ``>>>``
prompt, where mpremote can take over (``mpremote connect PORT resume ...``; a soft reset ends the unix port's
process). The firmware's ``reboot()`` (``sys.exit(75)``) ends the process with code 75. (``micropython -i main.py``
would not do: under ``-i`` the unix port falls into the REPL after a script's ``sys.exit`` too, so a reboot could
not be told from Ctrl-C.) ``restarts_board(rc)`` says which exits a board answers by booting again.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
import tty
from pathlib import Path
from typing import Callable

from slm.virtual.errors import VirtualBoardError
from slm.virtual.onepoll import OnePoll

REBOOT_EXIT_CODE = 75  # firmware/hardware.py: UnixPlatform.reboot()
SOFT_RESET_EXIT_CODE = 0  # Ctrl-D at the REPL (or mpremote's soft reset) ends the unix port; a board reruns main.py
BOOT_LINE = b"import main\r"  # typed at the REPL: runs the firmware like a board's boot does
STOP_TIMEOUT_S = 5.0
READ_BYTES = 4096
DRAIN_S = 1.0  # the longest a dead process's last output is waited for


def restarts_board(rc: int | None) -> bool:
    """A process that ended with this exit code is started again, as a board reboots and runs main.py."""
    return rc in (REBOOT_EXIT_CODE, SOFT_RESET_EXIT_CODE)


class BoardProcess:
    """At most one MicroPython process at a time: ``spawn()``, ``end(signal)``; ``fd`` is pty A's master (None when
    no process runs or its console closed), ``proc`` the process. Output read from pty A goes to ``on_output``."""

    def __init__(self, binary: str, cwd: Path, on_output: Callable[[bytes], None]):
        self.binary, self.cwd, self.on_output = binary, cwd, on_output
        self.proc: subprocess.Popen | None = None
        self.fd: int | None = None
        self.started_at = 0.0  # time.monotonic() of the last spawn

    def spawn(self) -> int:
        """Start a process on a new pty A (raw); returns its pid."""
        ma, sa = os.openpty()
        try:
            tty.setraw(sa)
            env = dict(os.environ)
            env["MICROPYPATH"] = ".frozen:lib"  # like a board: sys.path = ['', '.frozen', 'lib']
            try:
                proc = subprocess.Popen([self.binary], stdin=sa, stdout=sa, stderr=sa,
                                        cwd=self.cwd, env=env, start_new_session=True, close_fds=True)
            except OSError as e:
                os.close(ma)
                raise VirtualBoardError(f"cannot start {self.binary}: {e.strerror or e}") from None
        finally:
            os.close(sa)
        os.set_blocking(ma, False)
        self.fd, self.proc = ma, proc
        self.started_at = time.monotonic()
        return proc.pid

    def read(self) -> bytes | None:
        """What the process wrote (b"" once its console is closed: then call ``console_closed``), None if nothing."""
        try:
            return os.read(self.fd, READ_BYTES)
        except BlockingIOError:
            return None
        except OSError:  # EIO: the process closed its console (it ended)
            return b""

    def write(self, data: bytes | bytearray) -> int:
        """Write to the console; returns the bytes taken (0 if the pty is full). OSError if it is gone."""
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0

    def console_closed(self) -> None:
        """Pty A hung up: pass on what is left and close it (the process is reaped by ``end``)."""
        self._drain()
        os.close(self.fd)
        self.fd = None

    def end(self, sig: int) -> int | None:
        """Signal the process, reap it, pass on its last output, close pty A. Returns its exit code (None: none ran)."""
        proc, rc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            try:
                rc = proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            self.proc = None
        if self.fd is not None:
            self.console_closed()
        return rc

    def close(self) -> None:
        """Close pty A without reaping (cleanup after a failure)."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def _drain(self) -> None:
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            try:
                data = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                if OnePoll(select.POLLIN).poll(self.fd, 0.05):
                    continue
                return
            except OSError:
                return  # EIO: nothing more
            if not data:
                return
            self.on_output(data)
