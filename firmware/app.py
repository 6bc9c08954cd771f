"""The meter application: audio in, levels out, commands in, and keep running (docs/protocol.md).

One loop: read a chunk of I2S words (at most 20 blocks, never past an interval's end) -> ``Meter.process`` ->
interval, level, status and event records -> poll the console for command bytes -> feed the watchdog. The audio
source paces the loop (a real microphone, or a virtual board's FIFO). Ctrl-C (byte 3) on the console stops the
application and returns to the REPL, so mpremote can always take the board back.

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


def _r(v):
    return None if v is None else round(v, 2)


class CommandReader:
    """Collects console bytes into lines without blocking; byte 3 (Ctrl-C) raises KeyboardInterrupt."""

    def __init__(self, stream, poller):
        self.stream = stream
        self.poller = poller
        self.buf = bytearray()
        self.overflow = False

    def lines(self):
        out = []  # type: list
        while self.poller.poll(0):
            ch = self.stream.read(1)
            if not ch:
                break
            b = ch[0] if isinstance(ch, (bytes, bytearray)) else ord(ch)
            if b == 3:
                raise KeyboardInterrupt
            if b == 10:
                if self.overflow:
                    out.append(None)
                elif self.buf:
                    out.append(bytes(self.buf))
                self.buf = bytearray()
                self.overflow = False
            elif len(self.buf) >= protocol.MAX_LINE:
                self.overflow = True
            else:
                self.buf.append(b)
        return out


class MeterApp:
    """The device: a meter configured from board.json and config.json, talking the protocol on ``out``."""

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
        self.ms = 0  # device time from the audio clock, and the remainder of samples·1000 / rate
        self.ms_rem = 0
        self.writer = protocol.RecordWriter(out, self.device_ms)
        self.audio = hw.open_audio(board)
        self.last_ticks = hw.ticks_ms()
        self.wall_ms = 0  # CPU-clock time since start, summed from tick differences (ticks wrap)
        self.blocks = 0
        self.dropped = 0
        self.late = 0
        self.limit_on = False
        self.overload_total = False
        self._new_meter()
        self.buf = bytearray(4 * self.meter.block * CHUNK_BLOCKS)

    # -- measuring ---------------------------------------------------------------------------------------------
    def _new_meter(self):
        b = self.board
        self.meter = Meter(rate=self.rate, sensitivity_dbfs=b.get("sensitivity_dbfs", -26.0),
                           calibration_db=self.config["calibration_db"], eq=b.get("eq"),
                           input_shift=b.get("input_shift", 10), underrange_db=self.config["underrange_db"])
        self.interval_blocks = int(round(self.config["interval_s"] * self.rate / self.meter.block))
        self.level_every = self.rate // self.config["stream_hz"] if self.config["stream_hz"] else 0
        self.since_level = 0
        self.since_status = 0
        self.interval_start = self.device_ms()

    def device_ms(self):
        return self.ms

    def step(self):
        """One chunk of audio and what follows from it. Returns False when the audio stream has ended."""
        block = self.meter.block
        todo = min(CHUNK_BLOCKS, self.interval_blocks - self.meter.interval_blocks())
        t0 = self.hw.ticks_ms()
        self.wall_ms += self.hw.ticks_diff(t0, self.last_ticks)
        self.last_ticks = t0
        got = self.audio.readinto(memoryview(self.buf)[:4 * block * todo])
        nb = got // (4 * block)
        if nb == 0:
            return got != 0 or self.hw.realtime
        if self.hw.realtime and self.hw.ticks_diff(self.hw.ticks_ms(), t0) < 1 and self.blocks > 0:
            self.late += 1  # the data was already waiting: the meter is behind the microphone
        self.meter.process(self.buf, nb)
        self.blocks += nb
        self.ms_rem += nb * block * 1000
        self.ms += self.ms_rem // self.rate
        self.ms_rem %= self.rate
        if self.hw.realtime:
            behind = self.wall_ms - self.ms
            lost = behind * self.rate // (1000 * block) - self.dropped
            if lost > 50:  # more than ~50 ms of audio missing against the CPU clock
                self.dropped += lost
        self.since_level += nb * block
        if self.level_every and self.since_level >= self.level_every:
            self.since_level = 0
            self._send_level()
        if self.meter.interval_blocks() >= self.interval_blocks:
            self._close_interval()
        self.since_status += nb * block
        if self.since_status >= self.config["status_s"] * self.rate:
            self.since_status = 0
            self.writer.send("status", self.status())
        return True

    def _close_interval(self):
        end = self.device_ms()
        res = self.meter.close_interval()
        self.overload_total = self.overload_total or res["overload"]
        rec = {"start_ms": self.interval_start, "end_ms": end}
        for k in LEVEL_KEYS:
            rec[k] = _r(res[k])
        rec["overload"] = res["overload"]
        rec["underrange"] = res["underrange"]
        self.interval_start = end
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
        self.writer.send("event", {"kind": kind, "quantity": "LAeq", "level": _r(laeq), "limit": limit,
                                   "interval_end_ms": end_ms})

    def _send_level(self):
        c = self.meter.current()
        self.writer.send("level", {"LAF": _r(c["LAF"]), "LAS": _r(c["LAS"]), "LAeq": _r(c["LAeq"]),
                                   "LCpeak": _r(c["LCpeak"]), "overload": c["overload"]})

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
        return {"uptime_s": self.wall_ms // 1000, "heap_free": self.hw.mem_free(),
                "blocks": self.blocks, "dropped": self.dropped, "late": self.late,
                "faults": list(self.faults) + (["i2s_errors:%d" % self.audio.errors] if self.audio.errors else []),
                "overload": self.overload_total or self.meter.current()["overload"],
                "lmax": _r(self.meter.lafmax_total()), "lmax_ms": None}

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
        elif "stream_hz" in values:
            self.level_every = self.rate // new["stream_hz"] if new["stream_hz"] else 0

    def reset_statistics(self):
        self.overload_total = False
        self.limit_on = False
        self._new_meter()


def run(hw, out, stdin, poller):
    """Start the application and keep it running; returns when the audio stream ends (virtual boards)."""
    import commands

    board, fault = load_board()
    if board is None:
        writer = protocol.RecordWriter(out, lambda: 0)
        writer.send("error", {"id": None, "cmd": None, "code": "io_error", "message": fault})
        return
    app = MeterApp(hw, board, out)
    app.writer.send("hello", app.hello())
    handler = commands.CommandHandler(app)
    reader = CommandReader(stdin, poller)
    errors_in_a_row = 0
    while True:
        try:
            if not app.step():
                break
            for line in reader.lines():
                handler.handle(line)
            hw.feed_watchdog()
            errors_in_a_row = 0
        except KeyboardInterrupt:
            raise
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
