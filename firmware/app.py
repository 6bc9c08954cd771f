"""The meter application: audio in, levels out, commands in, and keep running (docs/protocol.md).

One loop: read a chunk of I2S words (at most 20 blocks, never past an interval's end) -> ``Meter.process`` ->
interval, level, status and event records -> poll the console for command bytes -> feed the watchdog. The audio
source paces the loop (a real microphone, or a virtual board's FIFO). Commands are read and answered within a budget
per turn (``Console``), so measuring keeps its pace whatever arrives. Ctrl-C (byte 3) on the console stops the
application; if more input follows within ``CTRL_C_WAIT_MS`` (mpremote, `slm deploy`, a person at the REPL) the
board goes to the REPL, so mpremote can always take it back; if not (a stray byte), the meter goes on by itself.

Files on the device: board.json (written by `slm deploy` from the board profile; read only), config.json (the
configuration, saved atomically by config_store), calibration.json (the calibration history, calibration_store).
"""

import gc
import json
import sys

import calibration_store
import config_store
import protocol
from meter import LEVEL_KEYS, Meter

FIRMWARE_VERSION = "0.1.0"
CHUNK_BLOCKS = 20
BOARD_FILE = "board.json"
BYTES_PER_TURN = 256  # console bytes read per loop turn at most (a turn measures up to CHUNK_BLOCKS blocks)
REPLIES_PER_TURN = 2  # lines answered per loop turn at most
REPLY_BYTES_PER_S = 4000  # reply bytes per device second on average (a third of a 115200-baud UART)
REPLY_BURST = 1200  # ... and at most this many at once (one `info` reply)
CTRL_C_WAIT_MS = 2000  # after Ctrl-C: console input within this time hands the board to the REPL


def load_board(path=BOARD_FILE):
    """The board settings (board.json), or None with a fault name when missing or unreadable."""
    try:
        with open(path) as f:
            board = json.load(f)
        if isinstance(board, dict) and "rate" in board:
            return board, None
        return None, "board_corrupt"
    except OSError:
        return None, "board_missing"
    except ValueError:
        return None, "board_corrupt"


class Console:
    """The command side of the loop: console bytes into lines, each line answered by the handler, within a budget
    per loop turn so that measuring keeps its real-time pace whatever arrives (docs/protocol.md, "Console").

    Per turn at most ``BYTES_PER_TURN`` bytes are read and ``REPLIES_PER_TURN`` lines answered, and replies draw on
    a credit of ``REPLY_BYTES_PER_S`` (device time), at most ``REPLY_BURST`` at once, which bounds what a flood
    costs the loop and the serial line. Input beyond that waits in the port's buffer (counted in ``throttled``);
    a line longer than MAX_LINE is discarded up to its newline and answered ``bad_line`` (counted in ``overlong``).
    Reading allocates nothing (one preallocated line buffer, ``ipoll``); answering a line may allocate.
    Byte 3 (Ctrl-C) drops the partial line and raises KeyboardInterrupt.
    """

    def __init__(self, stream, poller, handler, rate):
        self.stream = stream
        self.poller = poller
        self.handler = handler
        self.rate = rate
        self.ipoll = hasattr(poller, "ipoll")  # MicroPython: allocation-free; CPython has poll() only
        self.line = bytearray(protocol.MAX_LINE + 1)  # a line may end in \r
        self.view = memoryview(self.line)
        self.byte = bytearray(1)
        self.n = 0
        self.discarding = False
        self.eof = False
        self.budget = 0
        self.credit = REPLY_BURST
        self.lines = 0
        self.overlong = 0
        self.throttled = 0

    def _ready(self):
        if self.ipoll:
            for _ in self.poller.ipoll(0):
                return True
            return False
        return bool(self.poller.poll(0))

    def _read_line(self):
        """The length of the next complete line in ``self.line`` (> 0), -1 for a line that was too long, or 0 when
        no complete line can be read this turn (no more input now, end of input, or the byte budget spent)."""
        while self.budget > 0 and self._ready():
            if not self.stream.readinto(self.byte):
                self.eof = True
                return 0
            self.eof = False
            self.budget -= 1
            b = self.byte[0]
            if b == 3:
                self.drop_line()
                raise KeyboardInterrupt
            if b == 10:
                n = self.n
                self.n = 0
                if self.discarding:
                    self.discarding = False
                    return -1
                if n:
                    return n
            elif self.n < len(self.line):
                self.line[self.n] = b
                self.n += 1
            else:
                self.discarding = True
        return 0

    def drop_line(self):
        """Forget a partly received line (after Ctrl-C: what follows is a new line)."""
        self.n = 0
        self.discarding = False

    def serve(self, samples):
        """One loop turn's share of commands, after ``samples`` samples were measured."""
        self.credit += samples * REPLY_BYTES_PER_S // self.rate
        if self.credit > REPLY_BURST:
            self.credit = REPLY_BURST
        self.budget = BYTES_PER_TURN
        answered = 0
        while answered < REPLIES_PER_TURN and self.credit > 0:
            n = self._read_line()
            if n == 0:
                break
            if n < 0:
                self.overlong += 1
                line = None
            else:
                line = bytes(self.view[:n])
            self.lines += 1
            answered += 1
            self.credit -= self.handler.handle(line)
        if not self.eof and self._ready():
            self.throttled += 1  # the turn's budget is spent and input is waiting: it waits for the next turn

    def counts(self):
        return {"lines": self.lines, "overlong": self.overlong, "throttled": self.throttled}


class MeterApp:
    """The device: a meter configured from board.json and config.json, talking the protocol on ``out``.

    ``step()`` allocates nothing unless it sends a record: its buffer views are made once, and the device and CPU
    clocks are kept as whole seconds plus milliseconds, so they stay small integers for 34 years (a millisecond count
    would outgrow MicroPython's small int on an ESP32 after 12 days, and then allocate on every step).
    """

    def __init__(self, hw, board, out, faults=()):
        self.hw = hw
        self.board = board
        self.faults = list(faults)
        self.config, fault = config_store.load()
        if fault:
            self.faults.append(fault)
        self.calibration = calibration_store.CalibrationStore()
        fault = self.calibration.load(expected=self.config["calibration_method"] is not None)
        if fault:
            self.faults.append(fault)
        self.rate = board["rate"]
        self.sec = 0  # device time from the audio clock: seconds, milliseconds, remainder of samples·1000 / rate
        self.msec = 0
        self.ms_rem = 0
        self.writer = protocol.RecordWriter(out, self.device_ms)
        self.levels = protocol.Levels()
        self.audio = hw.open_audio(board)
        self.last_ticks = hw.ticks_ms()
        self.wall_sec = 0  # CPU-clock time since start, summed from tick differences (ticks wrap)
        self.wall_msec = 0
        self.blocks = 0
        self.dropped = 0
        self.late = 0
        self.interrupts = 0  # Ctrl-C bytes after which no host took the REPL
        self.console = None  # the Console, for its counts in status
        self.limit_on = False
        self.overload_total = False
        self._new_meter()
        block = self.meter.block
        self.buf = bytearray(4 * block * CHUNK_BLOCKS)
        mv = memoryview(self.buf)
        self.views = [mv[:4 * block * k] for k in range(CHUNK_BLOCKS + 1)]  # the buffer for k blocks

    # -- measuring ---------------------------------------------------------------------------------------------
    def _new_meter(self):
        b = self.board
        self.meter = Meter(rate=self.rate, sensitivity_dbfs=b.get("sensitivity_dbfs", -26.0),
                           calibration_db=self.config["calibration_db"], eq=b.get("eq"),
                           input_shift=b.get("input_shift", 10), underrange_db=self.config["underrange_db"])
        self.interval_blocks = int(round(self.config["interval_s"] * self.rate / self.meter.block))
        self._schedule()
        self.since_level = 0
        self.since_status = 0
        self.interval_start = self.device_ms()
        self.lmax = None  # the highest interval LAFmax since the statistics started, and that interval's end_ms
        self.lmax_ms = None

    def _schedule(self):
        """Samples between level records and between status records (integers: no float in step())."""
        c = self.config
        self.level_every = self.rate // c["stream_hz"] if c["stream_hz"] else 0
        self.status_every = int(c["status_s"] * self.rate)

    def device_ms(self):
        return self.sec * 1000 + self.msec

    def step(self):
        """One chunk of audio and what follows from it. Returns the samples measured (0 if none), or -1 when the
        audio stream has ended."""
        block = self.meter.block
        todo = CHUNK_BLOCKS
        left = self.interval_blocks - self.meter.interval_blocks()
        if left < todo:
            todo = left
        t0 = self.hw.ticks_ms()
        self.wall_msec += self.hw.ticks_diff(t0, self.last_ticks)
        self.last_ticks = t0
        if self.wall_msec >= 1000:
            self.wall_sec += self.wall_msec // 1000
            self.wall_msec %= 1000
        got = self.audio.readinto(self.views[todo])
        nb = got // (4 * block)
        if nb == 0:
            return 0 if got != 0 or self.hw.realtime else -1
        if self.hw.realtime and self.hw.ticks_diff(self.hw.ticks_ms(), t0) < 1 and self.blocks > 0:
            self.late += 1  # the data was already waiting: the meter is behind the microphone
        self.meter.process(self.buf, nb)
        samples = nb * block
        self.blocks += nb
        self.ms_rem += samples * 1000
        self.msec += self.ms_rem // self.rate
        self.ms_rem %= self.rate
        if self.msec >= 1000:
            self.sec += 1
            self.msec -= 1000
        if self.hw.realtime:
            behind = (self.wall_sec - self.sec) * 1000 + self.wall_msec - self.msec
            lost = behind * self.rate // (1000 * block) - self.dropped
            if lost > 50:  # more than ~50 ms of audio missing against the CPU clock
                self.dropped += lost
        self.since_level += samples
        if self.level_every and self.since_level >= self.level_every:
            self.since_level = 0
            self._send_level()
        if self.meter.interval_blocks() >= self.interval_blocks:
            self._close_interval()
        self.since_status += samples
        if self.since_status >= self.status_every:
            self.since_status = 0
            self.writer.send("status", self.status())
        return samples

    def _close_interval(self):
        end = self.device_ms()
        res = self.meter.close_interval()
        self.overload_total = self.overload_total or res["overload"]
        rec = {"start_ms": self.interval_start, "end_ms": end}
        for k in LEVEL_KEYS:
            rec[k] = self.levels.put(k, res[k])
        rec["overload"] = res["overload"]
        rec["underrange"] = res["underrange"]
        self.interval_start = end
        fmax = res["LAFmax"]
        if fmax is not None and (self.lmax is None or fmax > self.lmax):
            self.lmax = fmax
            self.lmax_ms = end
        self.writer.send("interval", rec)
        self._check_limit(res["LAeq"], end)

    def _check_limit(self, laeq, end_ms):
        limit = self.config["limit_db"]
        if limit is None or laeq is None:
            return
        if not self.limit_on and laeq > limit:
            self.limit_on = True
            kind = "limit_exceeded"
        elif self.limit_on and laeq < limit - self.config["limit_hysteresis_db"]:
            self.limit_on = False
            kind = "limit_cleared"
        else:
            return
        self.writer.send("event", {"kind": kind, "quantity": "LAeq", "level": self.levels.put("level", laeq), "limit": limit,
                                   "interval_end_ms": end_ms})

    def _send_level(self):
        c = self.meter.current()
        lv = self.levels
        self.writer.send("level", {"LAF": lv.put("LAF", c["LAF"]), "LAS": lv.put("LAS", c["LAS"]),
                                   "LAeq": lv.put("LAeq", c["LAeq"]), "LCpeak": lv.put("LCpeak", c["LCpeak"]),
                                   "overload": c["overload"]})

    # -- reporting ---------------------------------------------------------------------------------------------
    def hello(self):
        b = self.board
        return {"proto": protocol.PROTOCOL_VERSION, "fw": FIRMWARE_VERSION, "board": b.get("board"),
                "mic": b.get("mic"), "rate": self.rate, "serial": self.hw.unique_id(),
                "cal": {"offset_db": self.config["calibration_db"], "sensitivity_dbfs": b.get("sensitivity_dbfs"),
                        "method": self.config.get("calibration_method"), "time": self.config.get("calibration_time")},
                "config": dict(self.config), "faults": list(self.faults)}

    def status(self):
        gc.collect()  # heap_free then tells a leak from garbage not yet collected
        st = {"uptime_s": self.wall_sec, "heap_free": self.hw.mem_free(),
              "blocks": self.blocks, "dropped": self.dropped, "late": self.late,
              "faults": list(self.faults) + (["i2s_errors:%d" % self.audio.errors] if self.audio.errors else []),
              "overload": self.overload_total or self.meter.current()["overload"],
              "lmax": self.levels.put("lmax", self.lmax), "lmax_ms": self.lmax_ms, "interrupts": self.interrupts}
        if self.console is not None:
            st["console"] = self.console.counts()
        return st

    # -- configuration (commands.py calls these) ---------------------------------------------------------------
    def apply_config(self, values):
        """Save and apply already-checked values; restarts the statistics when the measurement itself changes."""
        new = dict(self.config)
        new.update(values)
        config_store.save(new)
        self.config = new
        for fault in ("config_missing", "config_corrupt"):
            if fault in self.faults:
                self.faults.remove(fault)
        if any(k in values for k in ("interval_s", "calibration_db", "underrange_db")):
            self._new_meter()
        else:
            self._schedule()

    def reset_statistics(self):
        self.overload_total = False
        self.limit_on = False
        self._new_meter()


def turn(app, console):
    """One turn of the main loop: a chunk of audio and its records, then the console's share, then the watchdog.
    False when the audio stream has ended. Allocates nothing unless it sends a record or answers a line."""
    samples = app.step()
    if samples < 0:
        return False
    console.serve(samples)
    app.hw.feed_watchdog()
    return True


def _host_follows(out, poller):
    """After a Ctrl-C: True if more console input comes within CTRL_C_WAIT_MS (mpremote and `slm deploy` send Ctrl-A
    for the raw REPL right after their Ctrl-C; a person presses a key), then the REPL gets it; False if the console
    stays quiet (a stray byte 3): the meter goes on. Nothing is read here, so the REPL sees every byte."""
    out.write("\r\nslm: Ctrl-C; any key within %d s opens the REPL, else the meter goes on\r\n" % (CTRL_C_WAIT_MS // 1000))
    return bool(poller.poll(CTRL_C_WAIT_MS))


def run(hw, out, stdin, poller):
    """Start the application and keep it running; returns when the audio stream ends (virtual boards), or raises
    KeyboardInterrupt when a host takes the console after a Ctrl-C."""
    import commands

    board, fault = load_board()
    if board is None:
        writer = protocol.RecordWriter(out, lambda: 0)
        writer.send("error", {"id": None, "cmd": None, "code": "io_error", "message": fault})
        return
    app = MeterApp(hw, board, out)
    app.writer.send("hello", app.hello())
    console = Console(stdin, poller, commands.CommandHandler(app), app.rate)
    app.console = console
    errors_in_a_row = 0
    while True:
        try:
            if not turn(app, console):
                break
            errors_in_a_row = 0
        except KeyboardInterrupt:  # byte 3 read by the Console, or (on a board) raised by the USB/UART driver
            console.drop_line()
            if _host_follows(out, poller):
                raise
            app.interrupts += 1
        except Exception as e:  # keep measuring; report it; reboot if it keeps happening
            errors_in_a_row += 1
            app.faults.append("exception:%s" % type(e).__name__)
            del app.faults[:-8]
            if errors_in_a_row > 20:
                hw.reboot()
    gc.collect()


def main():
    import select

    import hardware

    hw = hardware.platform()
    stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    run(hw, sys.stdout, stdin, poller)
