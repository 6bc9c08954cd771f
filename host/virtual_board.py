"""A virtual board: the unmodified firmware on the MicroPython unix port, behind a pseudo-terminal, hearing a scene.

    with VirtualBoard("calibrator", speed=10) as vb:
        ser = serial.Serial(vb.port, 115200, timeout=1)   # /dev/pts/N: talk docs/protocol.md as with a real board

What runs:

- a device directory, like a board's flash after ``slm deploy``: firmware/*.py (not __init__.py, stream_runner.py),
  board.json (the board profile's ``device_config()`` plus ``"audio_path": "audio.fifo"``), device_id.txt (the
  serial number: ``virtual-<hash of the directory>``, kept once written), the FIFO audio.fifo, and config.json as the
  firmware saves it (a given ``device_dir`` keeps it across runs; a temporary one is removed by ``stop()``);
- ``micropython`` (its REPL) in that directory with stdin/stdout/stderr on a pseudo-terminal ("pty A"), and
  ``import main`` typed at its prompt: the firmware runs as after a board's boot (the banner and that echo are hidden
  from the host, as a board shows neither). When the application stops (Ctrl-C, byte 3, on the console, or the end
  of the audio) the process is back at the ``>>>`` prompt, where mpremote can take over (``mpremote connect PORT
  resume ...``; a soft reset ends the unix port's process). The firmware's ``reboot()`` (``sys.exit(75)``) ends the
  process with code 75. (``micropython -i main.py`` would not do: under ``-i`` the unix port falls into the REPL
  after a script's ``sys.exit`` too, so a reboot could not be told from Ctrl-C.)
- the I/O thread relays pty A's master to a second pty pair whose slave is ``port`` ("pty B"), which lives as long
  as the VirtualBoard, so host tools keep one device path across process restarts. Both ptys are raw. The thread
  also supervises the process: exit code 75 (the firmware's ``reboot()``) or 0 (a soft reset, Ctrl-D at the REPL)
  starts it again, like a board rebooting and running main.py; any other exit (a crash) leaves the board down until
  ``restart()``;
- the feeder thread renders the scenario for one meter with ``SceneStream`` in 0.1 s chunks and writes the I2S words
  (int32, little-endian) into the FIFO, paced so that device time runs at ``speed`` x real time (0 or inf: as fast as
  the firmware reads). The scene's clock starts when the firmware first opens the FIFO and then keeps running while
  the board is down or not reading (that audio is lost, as a microphone's would be): a rebooted board hears the scene
  continue. Paced or not, the scenario repeats after its duration: its schedule starts again while the sources, the
  sound paths and the microphone run on (``SceneStream(repeat=True)``), so the wrap adds nothing to the sound (no
  second microphone start-up, no phase jump). Each process start gets a fresh FIFO, so a new
  process never reads a dead one's leftover words.

The console behaves like a USB-serial bridge: while no host has ``port`` open, the board's output is kept in a small
ring (``BACKLOG_BYTES``, the newest bytes: the ``hello`` of a board just started, not minutes of old records) and
delivered ``CONNECT_SETTLE_S`` after a host opens the port (pyserial flushes its input while opening); bytes from the
host while the board is down are lost; a host that stops reading loses the oldest output beyond ``OUT_BYTES``.
Memory is bounded throughout. Linux pty semantics are relied on (a pty master reports a hang-up while no process has
the slave open); other systems are untested.

Figures (2-core x86-64): at speed 0 the board runs about 130 device seconds per wall second
on the calibrator scenario and 70 on square-evening (the feeder, rendering the scene, is the limit: one core; the
firmware uses 15-25 % of another); at speed 1 the feeder uses 1.5-2.5 % of a core, the I/O thread under 0.1 %, the
MicroPython process 0.3 %.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import math
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Callable

from slm.boards import load_board
from slm.cpython_shim import firmware_dir
from slm.firmware_engine import EngineError, micropython_binary
from slm.sim.scenario import load_scenario

REBOOT_EXIT_CODE = 75  # firmware/hardware.py: UnixPlatform.reboot()
SOFT_RESET_EXIT_CODE = 0  # Ctrl-D at the REPL (or mpremote's soft reset) ends the unix port; a board reruns main.py
FIFO_NAME = "audio.fifo"
SKIP_FILES = ("__init__.py", "stream_runner.py")
CHUNK_S = 0.1  # device seconds of audio per FIFO write
MAX_PENDING_CHUNKS = 5  # paced: audio waiting beyond the FIFO's own buffer before the oldest is dropped
MAX_BEHIND_S = 1.0  # paced: when rendering falls further behind than this, the scene's clock slips
BACKLOG_BYTES = 16384  # console output kept while no host has the port open (~0.1 s of records at speed 0)
OUT_BYTES = 65536  # console output queued for a host that is slow to read
IN_BYTES = 4096  # host input queued for a board that is slow to read its console
READ_BYTES = 4096
BOOT_LINE = b"import main\r"  # typed at the REPL: runs the firmware like a board's boot does
BOOT_ECHO = b">>> import main\r\n"  # the REPL's echo of it, the end of what the board's console hides at boot
BOOT_HIDE_BYTES = 4096  # ... unless the echo does not come within this much output
BOOT_HIDE_S = 5.0  # ... or this time
CONNECT_SETTLE_S = 0.1  # a host opening the port flushes its input (pyserial does): write only after this
STOP_TIMEOUT_S = 5.0
REBOOT_LOOP_DELAY_S = 0.2  # before restarting a process that rebooted within a second of its start


class VirtualBoardError(EngineError):
    """The virtual board could not be started or controlled; the message is one line."""


class VirtualBoard:
    """One virtual board: ``start()``, ``port``, ``kill()``, ``restart()``, ``stop()``; also a context manager.

    scenario: a built-in scenario name or a TOML path; meter: the meter whose microphone the board is (default: the
    scenario's first); speed: device seconds per wall second (0 or inf: as fast as the firmware reads); board: a
    board profile name or path; device_dir: the device's filesystem (default: a temporary directory); seed: the
    scene's master seed (default: the scenario's); on_event: called with one-line messages (process started,
    rebooted, exited), from the I/O thread.
    """

    def __init__(self, scenario: str = "square-evening", meter: str | None = None, speed: float = 1.0,
                 board: str = "esp32-devkitc-inmp441", device_dir: str | os.PathLike | None = None,
                 seed: int | None = None, on_event: Callable[[str], None] | None = None):
        self.scenario = load_scenario(scenario)
        self.meter_id = meter if meter is not None else self.scenario.meters[0].id
        self.scenario.meter(self.meter_id)  # ScenarioError naming the meters
        self.board = load_board(board)
        try:
            speed = float(speed)
        except (TypeError, ValueError):
            raise ValueError(f"speed must be a number, not {speed!r}") from None
        if math.isnan(speed) or speed < 0:
            raise ValueError(f"speed must be 0 (as fast as possible) or more, not {speed:g}")
        self.speed = speed
        self.paced = 0 < speed < math.inf
        self.seed = seed
        self.device_config = self.board.device_config()
        self.rate = int(self.device_config["rate"])
        self._given_dir = Path(device_dir) if device_dir is not None else None
        self.device_dir: Path | None = None
        self.on_event = on_event
        self.port: str | None = None  # the pty slave host tools open, set by start()
        self.serial: str | None = None  # the device's serial number (device_id.txt)
        self.boots = 0  # processes started
        self.exit_codes: collections.deque[int] = collections.deque(maxlen=32)  # of past processes, newest last
        self.errors: list[str] = []  # thread failures (one line each)
        self._state = "new"
        self._proc: subprocess.Popen | None = None
        self._ma: int | None = None  # master of pty A (the process's console)
        self._mb: int | None = None  # master of pty B (the port)
        self._client = False  # a host has the port open
        self._client_ready = 0.0  # monotonic time from which the port may be written to
        self._backlog = bytearray()
        self._to_b = bytearray()
        self._to_a = bytearray()
        self._booting: bytearray | None = None  # device output held until the echo of BOOT_LINE
        self._boot_deadline = 0.0
        self._boot_time = 0.0
        self._requests: collections.deque = collections.deque()
        self._wake_r = self._wake_w = -1
        self._stopping = threading.Event()
        self._io_thread: threading.Thread | None = None
        self._feed_thread: threading.Thread | None = None
        self._stream = None
        # figures (read them any time; written by the threads)
        self.bytes_to_host = 0
        self.bytes_from_host = 0
        self.console_dropped = 0  # bytes lost on the console (backlog/out ring overflow, input while down)
        self.audio_fed_s = 0.0  # device seconds written into the FIFO
        self.audio_lost_s = 0.0  # device seconds rendered while the board was down or not reading
        self.clock_slips_s = 0.0  # device seconds the scene's clock skipped because rendering fell behind
        self.scene_time_s = 0.0  # device seconds of the scene rendered so far
        self.scene_clock0: float | None = None  # paced: time.monotonic() at scene time 0 (for latency figures)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> VirtualBoard:
        """Prepare the device directory, start the process, the I/O and feeder threads; returns at once."""
        if self._state != "new":
            raise VirtualBoardError("a virtual board starts once; use restart() to restart its process")
        self._state = "starting"
        try:
            self._micropython = micropython_binary()
            from slm.sim.scene import SceneStream

            self._stream = SceneStream(self.scenario, rate=self.rate, seed=self.seed, meter_ids=[self.meter_id],
                                       repeat=True)
            self._prepare_dir()
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._mb, sb = os.openpty()
            try:
                tty.setraw(sb)
                self.port = os.ttyname(sb)  # a real /dev/pts/N path
            finally:
                os.close(sb)  # the host opens it; while nobody does, the master reports a hang-up
            os.set_blocking(self._mb, False)
            self._spawn()
        except BaseException:
            self._state = "stopped"
            self._close_all()
            raise
        self._io_thread = threading.Thread(target=self._guard, args=(self._io_loop, "I/O"), name="vb-io",
                                           daemon=True)
        self._feed_thread = threading.Thread(target=self._guard, args=(self._feed_loop, "feeder"), name="vb-feeder",
                                             daemon=True)
        self._state = "running"
        self._io_thread.start()
        self._feed_thread.start()
        return self

    def stop(self) -> None:
        """End the process, join the threads, close the ptys; remove the device directory if it was temporary."""
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        self._state = "stopping"
        self._stopping.set()
        if self._io_thread is not None and self._io_thread.is_alive():
            try:
                self._request("stop")
            except VirtualBoardError:
                pass
            self._io_thread.join(STOP_TIMEOUT_S)
        self._end_process(signal.SIGKILL)  # if the I/O thread could not (it failed)
        if self._feed_thread is not None:
            self._feed_thread.join(STOP_TIMEOUT_S)
        self._close_all()
        self._state = "stopped"

    def kill(self) -> None:
        """SIGKILL the MicroPython process (a power cut); returns when it is gone. The board stays down."""
        self._request("kill")

    def restart(self) -> None:
        """Power-cycle the board: kill the process if it runs, start a new one (same port, same device files)."""
        self._request("restart")

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """The MicroPython process is alive."""
        p = self._proc
        return p is not None and p.poll() is None

    @property
    def pid(self) -> int | None:
        p = self._proc
        return p.pid if p is not None and p.poll() is None else None

    def describe(self) -> str:
        """One line: port, scenario/meter, board, speed."""
        return f"{self.port} {self.scenario.name}/{self.meter_id} {self.board.name} speed {self.speed:g}"

    # -- the device directory ----------------------------------------------------------------------------------
    def _prepare_dir(self) -> None:
        import json

        if self._given_dir is None:
            self.device_dir = Path(tempfile.mkdtemp(prefix="slm-virtual-"))
        else:
            self.device_dir = self._given_dir.resolve()
            self.device_dir.mkdir(parents=True, exist_ok=True)
        d = self.device_dir
        sources = [src for src in sorted(Path(firmware_dir()).glob("*.py")) if src.name not in SKIP_FILES]
        if not any(src.name == "main.py" for src in sources):
            raise VirtualBoardError(f"no firmware in {firmware_dir()} (main.py missing)")
        for src in sources:
            shutil.copyfile(src, d / src.name)
        board = dict(self.device_config)
        board["audio_path"] = FIFO_NAME
        tmp = d / "board.tmp"
        tmp.write_text(json.dumps(board))
        os.replace(tmp, d / "board.json")
        config = d / "config.json"
        if not config.exists():  # a freshly set-up board runs on the defaults (a lost file is a fault, this is not)
            config.write_text("{}")
        id_file = d / "device_id.txt"
        try:
            self.serial = id_file.read_text().strip() or None
        except OSError:
            self.serial = None
        if not self.serial:
            self.serial = "virtual-" + hashlib.sha1(str(d).encode()).hexdigest()[:12]
            id_file.write_text(self.serial + "\n")

    def _fresh_fifo(self) -> None:
        path = self.device_dir / FIFO_NAME
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.mkfifo(path, 0o600)

    # -- the process (started and reaped by the I/O thread after start()) ---------------------------------------
    def _spawn(self) -> None:
        self._fresh_fifo()
        ma, sa = os.openpty()
        try:
            tty.setraw(sa)
            env = dict(os.environ)
            env["MICROPYPATH"] = ".frozen:lib"  # like a board: sys.path = ['', '.frozen', 'lib']
            try:
                proc = subprocess.Popen([self._micropython], stdin=sa, stdout=sa, stderr=sa,
                                        cwd=self.device_dir, env=env, start_new_session=True, close_fds=True)
            except OSError as e:
                os.close(ma)
                raise VirtualBoardError(f"cannot start {self._micropython}: {e.strerror or e}") from None
        finally:
            os.close(sa)
        os.set_blocking(ma, False)
        self._ma, self._proc = ma, proc
        self._to_a[:] = BOOT_LINE  # typed at the REPL before anything from the host
        self._booting = bytearray()
        self._boot_deadline = time.monotonic() + BOOT_HIDE_S
        self.boots += 1
        self._boot_time = time.monotonic()
        self._event(f"board started (pid {proc.pid}, boot {self.boots})")

    def _end_process(self, sig: int) -> int | None:
        """Signal the process, reap it, forward its last output, close pty A. Returns its exit code."""
        proc, rc = self._proc, None
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
            self._proc = None
            self.exit_codes.append(rc)
        if self._ma is not None:
            self._drain_a()
            os.close(self._ma)
            self._ma = None
        return rc

    def _drain_a(self) -> None:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                data = os.read(self._ma, READ_BYTES)
            except BlockingIOError:
                if _OnePoll(select.POLLIN).poll(self._ma, 0.05):
                    continue
                return
            except OSError:
                return  # EIO: nothing more
            if not data:
                return
            self._from_device(data)

    # -- the I/O thread ----------------------------------------------------------------------------------------
    def _request(self, op: str) -> None:
        if self._state not in ("running", "stopping"):
            raise VirtualBoardError(f"the virtual board is not running (state: {self._state})")
        if self._io_thread is None or not self._io_thread.is_alive():
            raise VirtualBoardError("the virtual board's I/O thread has ended: " + "; ".join(self.errors))
        done = threading.Event()
        box: list = []
        self._requests.append((op, done, box))
        self._wake()
        if not done.wait(STOP_TIMEOUT_S * 3):
            raise VirtualBoardError(f"{op}: the virtual board did not answer")
        if box:
            raise box[0]

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _event(self, text: str) -> None:
        if self.on_event is not None:
            try:
                self.on_event(text)
            except Exception:  # a display callback must not take the board down
                pass

    def _guard(self, loop, name: str) -> None:
        try:
            loop()
        except Exception as e:  # pragma: no cover - a bug; reported, and stop() still cleans up
            self.errors.append(f"{name} thread: {type(e).__name__}: {e}")
            self._event(f"error: {self.errors[-1]}")

    def _from_device(self, data: bytes) -> None:
        if self._booting is not None:  # hide the REPL banner and the echo of BOOT_LINE, as a board shows neither
            self._booting += data
            end = self._booting.find(BOOT_ECHO)
            if end < 0 and len(self._booting) < BOOT_HIDE_BYTES and time.monotonic() < self._boot_deadline:
                return
            data = bytes(self._booting[end + len(BOOT_ECHO):] if end >= 0 else self._booting)
            self._booting = None
            if not data:
                return
        if self._client:
            self._to_b += data
            over = len(self._to_b) - OUT_BYTES
            if over > 0:
                del self._to_b[:over]
                self.console_dropped += over
        else:
            self._backlog += data
            over = len(self._backlog) - BACKLOG_BYTES
            if over > 0:
                del self._backlog[:over]
                self.console_dropped += over

    def _check_client(self) -> None:
        """Notice a host opening the port (pty B's master stops reporting a hang-up)."""
        hup = bool(self._port_poll.poll(self._mb, 0) & select.POLLHUP)
        if not hup and not self._client:
            self._client = True
            self._client_ready = time.monotonic() + CONNECT_SETTLE_S
            self._to_b = self._backlog + self._to_b
            self._backlog = bytearray()
        elif hup and self._client:
            self._client_gone()

    def _client_gone(self) -> None:
        self._client = False
        try:
            termios.tcflush(self._mb, termios.TCOFLUSH)  # best effort: the next host starts from the backlog
        except termios.error:
            pass
        self._backlog = (self._backlog + self._to_b)[-BACKLOG_BYTES:]
        self._to_b = bytearray()

    def _run_requests(self) -> bool:
        """Carry out kill/restart/stop requests; False when the thread should end."""
        go_on = True
        while self._requests:
            op, done, box = self._requests.popleft()
            try:
                if op == "kill":
                    if self._proc is not None:
                        rc = self._end_process(signal.SIGKILL)
                        self._event(f"board killed (exit code {rc}); down until restart")
                elif op == "restart":
                    if self._proc is not None:
                        self._end_process(signal.SIGKILL)
                    self._spawn()
                elif op == "stop":
                    if self._proc is not None:
                        self._end_process(signal.SIGKILL)
                    go_on = False
            except Exception as e:
                box.append(e if isinstance(e, VirtualBoardError) else VirtualBoardError(f"{op}: {e}"))
            done.set()
        return go_on

    def _process_ended(self) -> None:
        rc = self._end_process(signal.SIGKILL)
        if rc in (REBOOT_EXIT_CODE, SOFT_RESET_EXIT_CODE) and not self._stopping.is_set():
            self._event("board rebooting (reboot command)" if rc == REBOOT_EXIT_CODE else
                        "board restarting (soft reset from the REPL)")
            if time.monotonic() - self._boot_time < 1.0:
                self._stopping.wait(REBOOT_LOOP_DELAY_S)  # a boot loop: do not spin
            try:
                self._spawn()
            except VirtualBoardError as e:
                self._event(f"board down: {e}")
        else:
            self._event(f"board stopped (exit code {rc}); down until restart")

    def _io_loop(self) -> None:
        poller = select.poll()
        self._port_poll = _OnePoll(select.POLLIN)
        while True:
            if self._requests and not self._run_requests():
                return
            self._check_client()
            watched = {self._wake_r: select.POLLIN}
            if self._ma is not None:
                watched[self._ma] = select.POLLIN | (select.POLLOUT if self._to_a else 0)
            timeout_ms = 200 if self._client else 50
            if self._client:
                settling = time.monotonic() < self._client_ready
                watched[self._mb] = select.POLLIN | (select.POLLOUT if self._to_b and not settling else 0)
                if settling:
                    timeout_ms = 20
            for fd, mask in watched.items():
                poller.register(fd, mask)
            try:
                events = poller.poll(timeout_ms)
            finally:
                for fd in watched:
                    poller.unregister(fd)
            for fd, ev in events:
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 512)
                    except BlockingIOError:
                        pass
                elif fd == self._ma:
                    self._service_a(ev)
                elif fd == self._mb:
                    self._service_b(ev)
            if self._proc is not None and self._ma is None:
                self._process_ended()  # pty A hung up
            elif self._proc is not None and not events and self._proc.poll() is not None:
                self._process_ended()  # gone without a hang-up (a child kept pty A open): reap it anyway

    def _service_a(self, ev: int) -> None:
        if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
            try:
                data = os.read(self._ma, READ_BYTES)
            except BlockingIOError:
                data = None
            except OSError:  # EIO: the process closed its console (it ended)
                data = b""
            if data:
                self._from_device(data)
            elif data == b"":
                self._drain_a()
                os.close(self._ma)
                self._ma = None
                return
        if ev & select.POLLOUT and self._to_a:
            try:
                n = os.write(self._ma, self._to_a)
                del self._to_a[:n]
            except BlockingIOError:
                pass
            except OSError:
                self.console_dropped += len(self._to_a)
                self._to_a.clear()

    def _service_b(self, ev: int) -> None:
        if ev & select.POLLIN:
            try:
                data = os.read(self._mb, READ_BYTES)
            except (BlockingIOError, OSError):
                data = b""
            if data:
                self.bytes_from_host += len(data)
                if self._ma is None:
                    self.console_dropped += len(data)  # the board is off
                else:
                    self._to_a += data
                    over = len(self._to_a) - IN_BYTES
                    if over > 0:
                        del self._to_a[:over]
                        self.console_dropped += over
        if ev & select.POLLOUT and self._to_b:
            try:
                n = os.write(self._mb, self._to_b)
                self.bytes_to_host += n
                del self._to_b[:n]
            except BlockingIOError:
                pass
            except OSError:
                pass
        if ev & select.POLLHUP:
            self._client_gone()

    # -- the feeder thread -------------------------------------------------------------------------------------
    def _feed_loop(self) -> None:
        stream = self._stream
        chunk_n = max(1, int(round(CHUNK_S * self.rate)))
        path = str(self.device_dir / FIFO_NAME)
        pending: collections.deque = collections.deque()  # [bytes, offset], oldest first
        fd = None
        clock0 = None  # monotonic time at scene time 0 (paced)
        rendered = 0  # samples rendered since scene time 0

        def render() -> bytes:
            nonlocal rendered
            words = stream.next_chunk(chunk_n)[self.meter_id].words
            rendered += chunk_n
            self.scene_time_s = rendered / self.rate
            return words.astype("<i4").tobytes()

        def drop_oldest() -> None:
            b, o = pending[0]
            tail = (-o) % 4  # keep the FIFO word-aligned: finish a word already begun
            self.audio_lost_s += (len(b) - o - tail) / 4 / self.rate
            if tail:
                pending[0] = [b[o:o + tail], 0]
            else:
                pending.popleft()

        def close_fd() -> None:
            nonlocal fd
            if fd is not None:
                os.close(fd)
                fd = None

        fifo_poll = _OnePoll(select.POLLOUT)

        try:
            while not self._stopping.is_set():
                if fd is None:
                    try:
                        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                    except OSError as e:  # ENXIO: no reader yet; ENOENT: between FIFOs
                        if e.errno not in (errno.ENXIO, errno.ENOENT):
                            raise
                    else:
                        if pending:  # a fresh FIFO starts on a word boundary
                            b, o = pending[0]
                            o += (-o) % 4
                            if o >= len(b):
                                pending.popleft()
                            else:
                                pending[0] = [b, o]
                        if clock0 is None:
                            clock0 = time.monotonic()
                            self.scene_clock0 = clock0
                if not self.paced:
                    if fd is None:
                        self._stopping.wait(0.02)
                        continue
                    if not pending:
                        pending.append([render(), 0])
                    timeout = 0.1
                else:
                    if clock0 is None:
                        self._stopping.wait(0.02)
                        continue
                    now = time.monotonic()
                    due = int((now - clock0) * self.speed * self.rate)
                    if due - rendered > MAX_BEHIND_S * self.rate:  # rendering cannot keep up: slip
                        slip = due - rendered - chunk_n
                        clock0 += slip / (self.speed * self.rate)
                        self.scene_clock0 = clock0
                        self.clock_slips_s += slip / self.rate
                        due = rendered + chunk_n
                    while rendered + chunk_n <= due and not self._stopping.is_set():
                        data = render()
                        if fd is None:
                            self.audio_lost_s += len(data) / 4 / self.rate  # nobody listening: it is gone
                            continue
                        pending.append([data, 0])
                        while len(pending) > MAX_PENDING_CHUNKS:
                            drop_oldest()
                    next_due = clock0 + (rendered + chunk_n) / (self.speed * self.rate)
                    timeout = max(0.0, min(0.1, next_due - time.monotonic()))
                    if fd is None or not pending:
                        self._stopping.wait(timeout)
                        continue
                # write what is pending, waiting at most `timeout` for room in the FIFO
                if not fifo_poll.poll(fd, timeout):
                    continue
                try:
                    while pending:
                        b, o = pending[0]
                        n = os.write(fd, memoryview(b)[o:])
                        self.audio_fed_s += n / 4 / self.rate
                        if o + n >= len(b):
                            pending.popleft()
                        else:
                            pending[0][1] = o + n
                except BlockingIOError:
                    pass
                except BrokenPipeError:  # the reader is gone (the process ended): a new FIFO comes with the next
                    close_fd()
        finally:
            close_fd()

    # -- cleanup -----------------------------------------------------------------------------------------------
    def _close_all(self) -> None:
        for name in ("_ma", "_mb", "_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            setattr(self, name, None if name in ("_ma", "_mb") else -1)
        if self._given_dir is None and self.device_dir is not None:
            shutil.rmtree(self.device_dir, ignore_errors=True)
        elif self.device_dir is not None:
            fifo = self.device_dir / FIFO_NAME
            try:
                if stat.S_ISFIFO(os.lstat(fifo).st_mode):
                    os.unlink(fifo)
            except OSError:
                pass


class _OnePoll:
    """poll() on one file descriptor (any number, unlike select): the returned events, 0 on timeout."""

    def __init__(self, mask: int):
        self.mask = mask
        self.p = select.poll()
        self.fd: int | None = None

    def poll(self, fd: int, timeout_s: float) -> int:
        if fd != self.fd:
            if self.fd is not None:
                self.p.unregister(self.fd)
            self.p.register(fd, self.mask)
            self.fd = fd
        ev = self.p.poll(int(math.ceil(timeout_s * 1000)))
        return ev[0][1] if ev else 0
