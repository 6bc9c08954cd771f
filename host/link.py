"""One connection to one meter (a board's serial port or a virtual board's pty): records in, commands out, reconnects.

The transport is thin, like mpremote's: the link reads protocol lines (docs/protocol.md), keeps link-quality counts,
matches command replies, and knows nothing about levels or configuration beyond the ``hello`` it must check.

Threading model
    Each open link owns one daemon reader thread. The thread blocks in the serial port's ``read`` (a ``select`` on
    POSIX), so an idle link costs nothing and a busy one costs one wake-up per chunk the port delivers (about one
    per line); it splits lines, parses them, counts, settles replies and hands records on. Records go either

    - to ``on_record(link, record)`` if given, called on the reader thread (keep it short: put the record on your
      own queue, e.g. one ``queue.Queue`` shared by all links of a monitor), or
    - into the link's bounded queue, drained without blocking by ``read_records()`` (or with ``timeout=``).

    ``send`` and the command helpers may be called from any thread (several at once); each waits on its own event
    for the reply with its id. State changes go to ``on_state(link, state)``, also on the reader thread.
    Cost (``bench/bench_link.py``, 2-core EPYC, pty peer in another process): one link at 10 records/s uses
    0.1-0.2 % of one core, 16 such links 1.6-2 % (about 0.1 ms of CPU per record: wake-up, read, parse); an idle
    link wakes twice a second (``read_timeout``).

States (``link.state``)
    ``connected``; ``lost`` (the port failed: pyserial raised ``SerialException`` or ``OSError`` such as EIO on an
    unplug; the port is closed at once and pending commands fail with ``LinkLost``); ``reconnecting`` (trying every
    ``reconnect_interval`` s until ``close()``); ``refused`` (the device speaks a protocol version this host does not
    know; ``link.error`` says so, nothing more is read); ``closed``.

Reconnection
    A link made from a ``discovery.PortInfo`` with a USB serial number finds the same board again by that number,
    wherever it reappears (a new ``/dev/ttyACM*``, or a new product id on an ESP32-S3). A link made from a path
    (a virtual board's pty, or a port with no serial number) reopens the same path: for a pty the virtual board
    must recreate its pty under that path (a symlink). After reopening, the link sends ``info`` to learn the device
    again (without waiting for the reply): opening a port discards what arrived before (pyserial flushes input), so
    a ``hello`` written before the reopen is not seen. A pty number can be reused by another pty, so a path may lead
    to another device: a ``hello``/``info`` with a different ``serial`` is logged and restarts the ``seq`` counting
    (neither a gap nor a restart).

Counts (plain ints, read them any time)
    ``records``; ``bad_lines`` (looked like a record but failed the checksum/JSON/length, or lacks t/seq/ms);
    ``noise_lines`` (REPL text, skipped); ``gaps`` and ``lost_records`` (jumps in ``seq``; an estimate: records
    lost at the end of a run before a restart cannot be known); ``restarts`` (a ``hello`` record, or ``seq`` or
    ``ms`` going backwards: not a gap); ``reconnects``; ``dropped_records`` (the queue was full);
    ``echoed_lines`` (our own commands echoed back by a REPL when the meter is not running).
"""

from __future__ import annotations

import collections
import datetime as dt
import errno
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable

from slm import discovery
from slm.errors import OperationError
from slm.protocol import MAX_LINE, PROTOCOL_VERSION, BadLine, command, parse_line
from slm.utc import parse_utc, utc_text

log = logging.getLogger(__name__)

CONNECTED = "connected"
LOST = "lost"
RECONNECTING = "reconnecting"
REFUSED = "refused"
CLOSED = "closed"

DEFAULT_BAUDRATE = 115200
CLOCK_TOLERANCE_S = 1.0  # sync_clock sets the device's clock when it is further than this from the host's


class LinkError(OperationError):
    """A link problem; the message is one line for the user."""


class LinkTimeout(LinkError):
    """No reply to a command in time (or the port would not take the line)."""


class LinkLost(LinkError):
    """The connection is gone (unplugged, closed, or not connected right now)."""


class ProtocolVersionError(LinkError):
    """The device speaks a protocol version this host does not know."""


class DeviceError(LinkError):
    """The device answered a command with an ``error`` record; nothing was changed on the device."""

    def __init__(self, cmd: str | None, code: str, message: str):
        self.cmd, self.code, self.message = cmd, code, message
        text = " ".join(str(message).split())  # one line
        super().__init__("%s: %s: %s" % (cmd or "command", code, text) if text else "%s: %s" % (cmd or "command", code))

    @classmethod
    def from_record(cls, rec: dict[str, Any], cmd: str | None = None) -> "DeviceError":
        return cls(rec.get("cmd") or cmd, str(rec.get("code") or "error"), str(rec.get("message") or ""))


def sync_clock(link: "DeviceLink", info_reply: dict[str, Any] | None = None,
               now: Callable[[], dt.datetime] | None = None,
               tolerance_s: float = CLOCK_TOLERANCE_S) -> dict[str, Any] | None:
    """Set the device's clock to the host's UTC when it differs by more than ``tolerance_s`` (or is unset), except
    on a device whose ``clock`` is "scenario" (a virtual board keeps its simulated time). Every host command that
    connects to a device calls this once after the handshake. ``info_reply``: the ``ack`` of an ``info`` just sent
    (else one is sent). Returns the ``ack`` of the ``time`` command (its result: {utc, step_s}), None when the clock
    was left as it is."""
    clock_now = now or (lambda: dt.datetime.now(dt.timezone.utc))
    reply = info_reply if info_reply is not None else link.send("info")
    result = reply.get("result") if isinstance(reply.get("result"), dict) else {}
    if result.get("clock") == "scenario":
        return None
    device = parse_utc(reply.get("utc"))
    if device is not None and abs((device - clock_now()).total_seconds()) <= tolerance_s:
        return None
    ack = link.send("time", utc=utc_text(clock_now()))
    log.info("%s: device clock set (step %s s)", link.path, (ack.get("result") or {}).get("step_s"))
    return ack


class _Pending:
    __slots__ = ("cmd", "event", "reply", "error")

    def __init__(self, cmd: str):
        self.cmd = cmd
        self.event = threading.Event()
        self.reply: dict[str, Any] | None = None
        self.error: LinkError | None = None


def _is_int(x: Any) -> bool:
    return type(x) is int


RecordCallback = Callable[["DeviceLink", dict[str, Any]], None]
StateCallback = Callable[["DeviceLink", str], None]


class DeviceLink:
    """One connection to one device. ``with DeviceLink(port) as link: link.info()``.

    port: a path (``/dev/ttyUSB0``, a pty, a symlink to one) or a ``discovery.PortInfo`` (reconnects by its USB
    serial number when it has one). timeout: default seconds to wait for a command's reply. read_timeout: how long
    the reader blocks per read before it checks for ``close()`` (it is woken at once by close on POSIX anyway).
    """

    def __init__(self, port: str | os.PathLike[str] | discovery.PortInfo, *, baudrate: int = DEFAULT_BAUDRATE,
                 timeout: float = 2.0, reconnect: bool = True, reconnect_interval: float = 0.5,
                 on_record: RecordCallback | None = None, on_state: StateCallback | None = None,
                 queue_size: int = 10000, read_timeout: float = 0.5,
                 find_port: Callable[[str], str | None] = discovery.find_by_serial):
        if isinstance(port, discovery.PortInfo):
            self.path: str = port.device
            self.usb_serial: str | None = port.serial_number
        else:
            self.path = os.fspath(port)
            self.usb_serial = None
        self.baudrate = baudrate
        self.timeout = timeout
        self.reconnect = reconnect
        self.reconnect_interval = reconnect_interval
        self.read_timeout = read_timeout
        self.on_record = on_record
        self.on_state = on_state
        self._find_port = find_port

        # What the device told us.
        self.hello: dict[str, Any] | None = None
        self.serial: str | None = None
        self.error: str | None = None  # why the link was refused
        self.state_reason: str | None = None  # the exception text behind the last `lost`

        # Counts (written by the reader thread only).
        self.records = 0
        self.bad_lines = 0
        self.noise_lines = 0
        self.echoed_lines = 0
        self.gaps = 0
        self.lost_records = 0
        self.restarts = 0
        self.reconnects = 0
        self.dropped_records = 0
        self.last_rx: float | None = None  # time.monotonic() of the last good record

        self._state = CLOSED
        self._serial: Any = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()  # state, pending, ids
        self._write_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._internal_ids: set[int] = set()
        self._next_id = 0
        self._queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=queue_size)
        self._queue_cond = threading.Condition()
        self._buf = bytearray()
        self._discarding = False
        self._last_seq: int | None = None
        self._last_ms: int | None = None

    # ---------------------------------------------------------------- life cycle

    @property
    def state(self) -> str:
        return self._state

    def __repr__(self) -> str:
        return "<DeviceLink %s %s>" % (self.path, self._state)

    def open(self, handshake: bool = True) -> "DeviceLink":
        """Open the port and start the reader; with ``handshake``, send ``info`` and check the protocol version.

        Raises LinkError when the port cannot be opened, LinkTimeout when the device does not answer ``info``,
        ProtocolVersionError when it speaks another protocol version (the link is then closed).
        """
        if self._thread is not None:
            raise LinkError("%s: link already open" % self.path)
        self._closing.clear()
        self._serial = self._open_serial(self.path)
        self._set_state(CONNECTED)
        self._thread = threading.Thread(target=self._run, name="slm-link %s" % self.path, daemon=True)
        self._thread.start()
        if handshake:
            try:
                self.info()
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        """Stop the reader, close the port, fail pending commands. Safe to call twice, from any thread."""
        self._closing.set()
        ser = self._serial
        if ser is not None:
            try:
                ser.cancel_read()
            except Exception:
                pass
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(2.0, 2 * self.read_timeout))
        if self._serial is not None and (thread is None or not thread.is_alive()):
            self._close_serial()
        self._fail_pending(LinkLost("%s: link closed" % self.path))
        if self._state != REFUSED:
            self._set_state(CLOSED)
        with self._queue_cond:
            self._queue_cond.notify_all()

    def __enter__(self) -> "DeviceLink":
        if self._thread is None:
            self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- records

    def read_records(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Records received since the last call (oldest first); waits up to ``timeout`` s for the first one.

        Only used without ``on_record``. Replies consumed by ``send`` are not included; ``hello``, unsolicited
        ``error`` and record types this host does not know are.
        """
        with self._queue_cond:
            if not self._queue and timeout > 0:
                self._queue_cond.wait_for(lambda: self._queue or self._closing.is_set(), timeout)
            out = list(self._queue)
            self._queue.clear()
        return out

    def stats(self) -> dict[str, Any]:
        """A snapshot of state and counts, for a UI or ``--json``."""
        return {
            "port": self.path, "usb_serial": self.usb_serial, "serial": self.serial, "state": self._state,
            "records": self.records, "bad_lines": self.bad_lines, "noise_lines": self.noise_lines,
            "gaps": self.gaps, "lost_records": self.lost_records, "restarts": self.restarts,
            "reconnects": self.reconnects, "dropped_records": self.dropped_records,
            "idle_s": None if self.last_rx is None else round(time.monotonic() - self.last_rx, 3),
        }

    # ---------------------------------------------------------------- commands

    def send(self, cmd: str, *, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send a command with a fresh id and wait for the ``ack`` with that id; returns the ack record.

        Raises DeviceError for an ``error`` reply, LinkTimeout after ``timeout`` (default ``self.timeout``) s,
        LinkLost when not connected or lost while waiting, ProtocolVersionError on a refused link.
        """
        with self._lock:
            if self._state == REFUSED:
                raise ProtocolVersionError(self.error or "protocol refused")
            if self._state != CONNECTED:
                raise LinkLost("%s: not connected (%s)" % (self.path, self._state))
            self._next_id += 1
            cid = self._next_id
            pending = _Pending(cmd)
            self._pending[cid] = pending
        try:
            self._write(command(cmd, cid, **fields))
        except BaseException:
            with self._lock:
                self._pending.pop(cid, None)
            raise
        wait = self.timeout if timeout is None else timeout
        if not pending.event.wait(wait):
            with self._lock:
                self._pending.pop(cid, None)
            if not pending.event.is_set():
                raise LinkTimeout("%s: no reply to %s within %g s" % (self.path, cmd, wait))
        if pending.error is not None:
            raise pending.error
        reply = pending.reply
        assert reply is not None
        if reply.get("t") == "error":
            raise DeviceError.from_record(reply, cmd)
        return reply

    def _result(self, reply: dict[str, Any]) -> dict[str, Any]:
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    def info(self, timeout: float | None = None) -> dict[str, Any]:
        """The device's ``hello`` fields (proto, fw, board, mic, rate, serial, cal, config, faults); also kept in
        ``self.hello``. Raises ProtocolVersionError for a protocol version this host does not know."""
        return self._result(self.send("info", timeout=timeout))

    def get(self, keys: str | Iterable[str] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Configuration values (all without ``keys``); the key ``status`` gives the status fields."""
        if keys is None:
            return self._result(self.send("get", timeout=timeout))
        key_list = [keys] if isinstance(keys, str) else list(keys)
        return self._result(self.send("get", timeout=timeout, keys=key_list))

    def set(self, **values: Any) -> dict[str, Any]:
        """Validate and save configuration values on the device (all or none); returns the new values."""
        if not values:
            raise ValueError("set: give at least one key=value")
        return self._result(self.send("set", values=values))

    def stream(self, hz: int) -> dict[str, Any]:
        """Set ``stream_hz`` (0-10 ``level`` records per device second; saved like ``set``)."""
        return self._result(self.send("stream", hz=hz))

    def reset(self) -> dict[str, Any]:
        """Restart the statistics (current interval, overload, lmax)."""
        return self._result(self.send("reset"))

    def set_time(self, utc: dt.datetime) -> dict[str, Any]:
        """Set the device's clock (the ``time`` command); returns {utc, step_s}."""
        return self._result(self.send("time", utc=utc_text(utc)))

    def reboot(self) -> dict[str, Any]:
        """Restart the device after its ``ack``; the link sees a restart (and, on native USB, an unplug)."""
        return self._result(self.send("reboot"))

    # ---------------------------------------------------------------- port

    def _open_serial(self, path: str) -> Any:
        import serial  # pyserial

        kwargs: dict[str, Any] = {"baudrate": self.baudrate, "timeout": self.read_timeout,
                                  "write_timeout": self.timeout}
        if os.name == "posix":
            kwargs["exclusive"] = True  # a second monitor on the same board fails clearly instead of stealing lines
        try:
            return serial.Serial(path, **kwargs)
        except (serial.SerialException, OSError, ValueError) as exc:
            errno_ = getattr(exc, "errno", None)
            if errno_ in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
                reason = "the port is in use by another program"
            elif isinstance(errno_, int):
                reason = os.strerror(errno_)
            else:
                reason = " ".join(str(exc).split())
            raise LinkError("could not open %s: %s" % (path, reason)) from None

    def _close_serial(self) -> None:
        with self._write_lock:
            ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except Exception:
                pass

    def _write(self, data: bytes) -> None:
        import serial

        with self._write_lock:
            ser = self._serial
            if ser is None:
                raise LinkLost("%s: not connected (%s)" % (self.path, self._state))
            try:
                ser.write(data)
            except serial.SerialTimeoutException:
                raise LinkTimeout("%s: the port did not take a command within %g s" % (self.path, self.timeout)) \
                    from None
            except (serial.SerialException, OSError) as exc:
                try:
                    ser.cancel_read()  # the reader notices the failure and handles the loss
                except Exception:
                    pass
                raise LinkLost("%s: connection lost (%s)" % (self.path, exc)) from None

    # ---------------------------------------------------------------- reader thread

    def _run(self) -> None:
        import serial

        try:
            while not self._closing.is_set():
                ser = self._serial
                if ser is None:
                    if self._state == REFUSED or not self.reconnect:
                        break
                    self._reconnect_once()
                    continue
                try:
                    data = ser.read(1)  # blocks in select until a byte, close() or read_timeout
                    if data:
                        waiting = ser.in_waiting
                        if waiting:
                            data += ser.read(waiting)
                except (serial.SerialException, OSError) as exc:
                    if self._closing.is_set():
                        break
                    self._lost(exc)
                    continue
                if data:
                    self._feed(data)
        except Exception:  # a bug must not leave a silent half-open link
            log.exception("%s: reader thread failed", self.path)
            self._fail_pending(LinkLost("%s: reader failed" % self.path))
            self._set_state(LOST, "reader failed")
        finally:
            self._close_serial()

    def _lost(self, exc: BaseException) -> None:
        self._close_serial()
        self._buf.clear()
        self._discarding = False
        reason = " ".join(str(exc).split()) or type(exc).__name__
        log.info("%s: connection lost: %s", self.path, reason)
        self._fail_pending(LinkLost("%s: connection lost (%s)" % (self.path, reason)))
        self._set_state(LOST, reason)
        if self.reconnect:
            self._set_state(RECONNECTING, reason)

    def _reconnect_once(self) -> None:
        path: str | None = self.path
        if self.usb_serial:
            try:
                path = self._find_port(self.usb_serial)
            except Exception as exc:  # discovery itself failing must not end the reader
                log.debug("discovery failed: %s", exc)
                path = None
        if path:
            try:
                ser = self._open_serial(path)
            except LinkError:
                ser = None
            if ser is not None:
                with self._write_lock:
                    self._serial = ser
                self.path = path
                self.reconnects += 1
                with self._lock:
                    self._internal_ids.clear()
                self._set_state(CONNECTED)
                self._send_internal("info")
                return
        self._closing.wait(self.reconnect_interval)

    def _send_internal(self, cmd: str) -> None:
        """A command whose reply the reader consumes itself (the ``info`` after a reconnect)."""
        with self._lock:
            self._next_id += 1
            cid = self._next_id
            self._internal_ids.add(cid)
        try:
            self._write(command(cmd, cid))
        except LinkError:
            with self._lock:
                self._internal_ids.discard(cid)

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if self._discarding:
                self._discarding = False  # the end of an over-long line, already counted
            else:
                self._handle_line(bytes(buf[start:nl]))
            start = nl + 1
            if self._serial is None:  # refused or lost while handling
                buf.clear()
                return
        del buf[:start]
        if len(buf) > MAX_LINE + 1:  # + a possible "\r": discard up to the next "\n" and count it once
            if not self._discarding:
                self.bad_lines += 1
                self._discarding = True
            buf.clear()

    def _handle_line(self, line: bytes) -> None:
        try:
            rec = parse_line(line)
        except BadLine:
            self.bad_lines += 1
            return
        if rec is None:
            if line.strip():
                self.noise_lines += 1
            return
        t, seq, ms = rec.get("t"), rec.get("seq"), rec.get("ms")
        if not isinstance(t, str) or not _is_int(seq) or not _is_int(ms):
            if "cmd" in rec and "t" not in rec:
                self.echoed_lines += 1  # a REPL echoing our command: the meter is not running
            else:
                self.bad_lines += 1
            return
        self.records += 1
        self.last_rx = time.monotonic()

        hello: dict[str, Any] | None = None
        if t == "hello":
            hello = {k: v for k, v in rec.items() if k not in ("t", "seq", "ms")}
        elif t == "ack" and rec.get("cmd") == "info" and isinstance(rec.get("result"), dict):
            hello = rec["result"]
        if hello is not None and self.serial is not None and hello.get("serial") not in (None, self.serial):
            log.warning("%s: another device (serial %s, was %s)", self.path, hello.get("serial"), self.serial)
            self._last_seq = self._last_ms = None  # a different counter: neither a gap nor a restart
        self._track_seq(t, seq, ms)
        if hello is not None:
            self._take_hello(hello)
            if self._state == REFUSED:
                return
        if t in ("ack", "error") and self._settle(rec):
            return
        self._deliver(rec)

    def _track_seq(self, t: str, seq: int, ms: int) -> None:
        last, last_ms = self._last_seq, self._last_ms
        self._last_seq, self._last_ms = seq, ms
        if last is None:
            return
        if t == "hello" or seq <= last or (last_ms is not None and ms < last_ms):
            # The device restarted (hello is sent only at start); records 0..seq-1 of the new run were missed.
            self.restarts += 1
            if seq > 0:
                self.gaps += 1
                self.lost_records += seq
        elif seq != last + 1:
            self.gaps += 1
            self.lost_records += seq - last - 1

    def _take_hello(self, fields: dict[str, Any]) -> None:
        proto = fields.get("proto")
        if not _is_int(proto) or proto != PROTOCOL_VERSION:
            if proto is None:
                msg = "%s: the device does not state its protocol version; this slm speaks version %d" % (
                    self.path, PROTOCOL_VERSION)
            else:
                msg = ("%s: the device speaks protocol version %s; this slm speaks version %d: "
                       "update slm or deploy matching firmware" % (self.path, proto, PROTOCOL_VERSION))
            self._refuse(msg)
            return
        self.hello = dict(fields)
        serial = fields.get("serial")
        if serial is not None:
            self.serial = str(serial)

    def _refuse(self, msg: str) -> None:
        log.error("%s", msg)
        self.error = msg
        self._close_serial()
        self._set_state(REFUSED, msg)
        self._fail_pending(ProtocolVersionError(msg))

    def _settle(self, rec: dict[str, Any]) -> bool:
        """Hand a reply to the command waiting for its id; False when nobody waits for it."""
        cid = rec.get("id")
        with self._lock:
            if type(cid) is int:
                if cid in self._internal_ids:
                    # nobody waits for the link's own `info`; its reply is delivered like any record, so that
                    # whoever logs the records sees every seq
                    self._internal_ids.discard(cid)
                    return False
                pending = self._pending.pop(cid, None)
            elif cid is None and rec.get("t") == "error" and len(self._pending) == 1 and not self._internal_ids:
                # The device could not read a line's id (bad_checksum, bad_line) and one command is in flight:
                # it can only be that one.
                pending = self._pending.pop(next(iter(self._pending)))
            else:
                pending = None
        if pending is None:
            return False
        pending.reply = rec
        pending.event.set()
        return True

    def _fail_pending(self, error: LinkError) -> None:
        with self._lock:
            pendings = list(self._pending.values())
            self._pending.clear()
            self._internal_ids.clear()
        for p in pendings:
            p.error = error
            p.event.set()

    def _deliver(self, rec: dict[str, Any]) -> None:
        callback = self.on_record
        if callback is not None:
            try:
                callback(self, rec)
            except Exception:
                log.exception("%s: on_record callback failed", self.path)
            return
        with self._queue_cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped_records += 1
            self._queue.append(rec)
            self._queue_cond.notify_all()

    def _set_state(self, state: str, reason: str | None = None) -> None:
        with self._lock:
            if self._state == state:
                return
            self._state = state
            if reason is not None:
                self.state_reason = reason
        callback = self.on_state
        if callback is not None:
            try:
                callback(self, state)
            except Exception:
                log.exception("%s: on_state callback failed", self.path)
