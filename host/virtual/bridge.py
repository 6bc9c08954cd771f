"""The virtual board's serial port: a pty pair whose slave is the port host tools open, bridged to the board's console.

The port ("pty B") lives as long as the virtual board, so host tools keep one device path across process restarts;
it is raw. It behaves like a USB-serial bridge: while no host has the port open, the board's output is kept in a
small ring (``BACKLOG_BYTES``, the newest bytes: the ``hello`` of a board just started, not minutes of old records)
and delivered ``CONNECT_SETTLE_S`` after a host opens the port (pyserial flushes its input while opening); bytes from
the host while the board is down are lost; a host that stops reading loses the oldest output beyond ``OUT_BYTES``.
At each process start the REPL's banner and the echo of the boot line are hidden, as a board shows neither.
Linux pty semantics are relied on (a pty master reports a hang-up while no process has the slave open).
Memory is bounded; the bridge is driven by one thread (the virtual board's I/O thread).
"""

from __future__ import annotations

import os
import select
import termios
import time
import tty

from slm.virtual.onepoll import OnePoll

BACKLOG_BYTES = 16384  # console output kept while no host has the port open (~0.1 s of records at speed 0)
OUT_BYTES = 65536  # console output queued for a host that is slow to read
IN_BYTES = 4096  # host input queued for a board that is slow to read its console
READ_BYTES = 4096
BOOT_ECHO = b">>> import main\r\n"  # the REPL's echo of the boot line, the end of what the console hides at boot
BOOT_HIDE_BYTES = 4096  # ... unless the echo does not come within this much output
BOOT_HIDE_S = 5.0  # ... or this time
CONNECT_SETTLE_S = 0.1  # a host opening the port flushes its input (pyserial does): write only after this


class ConsoleBridge:
    """``open()`` makes the port (``port``: /dev/pts/N; ``fd``: its master). ``booted(line)`` at each process start,
    ``from_device(data)`` for the board's output, ``to_device`` holds the host's input for the board,
    ``check_client()`` and ``service_port(events)`` in the I/O loop; ``close()``."""

    def __init__(self):
        self.port: str | None = None
        self.fd: int | None = None  # master of pty B
        self.client = False  # a host has the port open
        self.client_ready = 0.0  # monotonic time from which the port may be written to
        self.backlog = bytearray()
        self.to_host = bytearray()
        self.to_device = bytearray()
        self._booting: bytearray | None = None  # device output held until the echo of the boot line
        self._boot_deadline = 0.0
        self._poll = OnePoll(select.POLLIN)
        # figures
        self.bytes_to_host = 0
        self.bytes_from_host = 0
        self.dropped = 0  # bytes lost on the console (backlog/out ring overflow, input while down)

    def open(self) -> str:
        self.fd, slave = os.openpty()
        try:
            tty.setraw(slave)
            self.port = os.ttyname(slave)  # a real /dev/pts/N path
        finally:
            os.close(slave)  # the host opens it; while nobody does, the master reports a hang-up
        os.set_blocking(self.fd, False)
        return self.port

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    @property
    def settling(self) -> bool:
        """A host has just opened the port: hold output until its input flush is over."""
        return time.monotonic() < self.client_ready

    def booted(self, boot_line: bytes) -> None:
        """A new process: type boot_line at its REPL before anything from the host, hide what precedes its echo."""
        self.to_device[:] = boot_line
        self._booting = bytearray()
        self._boot_deadline = time.monotonic() + BOOT_HIDE_S

    def from_device(self, data: bytes) -> None:
        if self._booting is not None:  # hide the REPL banner and the echo of the boot line, as a board shows neither
            self._booting += data
            end = self._booting.find(BOOT_ECHO)
            if end < 0 and len(self._booting) < BOOT_HIDE_BYTES and time.monotonic() < self._boot_deadline:
                return
            data = bytes(self._booting[end + len(BOOT_ECHO):] if end >= 0 else self._booting)
            self._booting = None
            if not data:
                return
        if self.client:
            self.to_host += data
            over = len(self.to_host) - OUT_BYTES
            if over > 0:
                del self.to_host[:over]
                self.dropped += over
        else:
            self.backlog += data
            over = len(self.backlog) - BACKLOG_BYTES
            if over > 0:
                del self.backlog[:over]
                self.dropped += over

    def device_input_lost(self) -> None:
        """The board's console is gone: what the host typed for it is lost."""
        self.dropped += len(self.to_device)
        self.to_device.clear()

    def check_client(self) -> None:
        """Notice a host opening the port (pty B's master stops reporting a hang-up) or leaving it."""
        hup = bool(self._poll.poll(self.fd, 0) & select.POLLHUP)
        if not hup and not self.client:
            self.client = True
            self.client_ready = time.monotonic() + CONNECT_SETTLE_S
            self.to_host = self.backlog + self.to_host
            self.backlog = bytearray()
        elif hup and self.client:
            self._client_gone()

    def _client_gone(self) -> None:
        self.client = False
        try:
            termios.tcflush(self.fd, termios.TCOFLUSH)  # best effort: the next host starts from the backlog
        except termios.error:
            pass
        self.backlog = (self.backlog + self.to_host)[-BACKLOG_BYTES:]
        self.to_host = bytearray()

    def service_port(self, ev: int, device_up: bool) -> None:
        """Poll events on the port's master: the host's input (kept for the board if device_up, else lost), output
        to the host, the host leaving."""
        if ev & select.POLLIN:
            try:
                data = os.read(self.fd, READ_BYTES)
            except (BlockingIOError, OSError):
                data = b""
            if data:
                self.bytes_from_host += len(data)
                if not device_up:
                    self.dropped += len(data)  # the board is off
                else:
                    self.to_device += data
                    over = len(self.to_device) - IN_BYTES
                    if over > 0:
                        del self.to_device[:over]
                        self.dropped += over
        if ev & select.POLLOUT and self.to_host:
            try:
                n = os.write(self.fd, self.to_host)
                self.bytes_to_host += n
                del self.to_host[:n]
            except BlockingIOError:
                pass
            except OSError:
                pass
        if ev & select.POLLHUP:
            self._client_gone()
