"""The meter application: audio in, levels out, commands in, and keep running (docs/protocol.md).

One loop: read a chunk of I2S words (at most 20 blocks, never past an interval's end) -> ``Meter.process`` ->
interval, level, status, minute and event records -> poll the console for command bytes -> feed the watchdog.
An interval never spans a UTC minute boundary: the interval in progress ends there, and the minute's levels are
the meter's totals over the intervals of that minute (judged by judge.py against the limit schedule). The audio
source paces the loop (a real microphone, or a virtual board's FIFO). Commands are read and answered within a budget
per turn (``Console``), so measuring keeps its pace whatever arrives. Ctrl-C (byte 3) on the console stops the
application; if more input follows within ``CTRL_C_WAIT_MS`` (mpremote, `slm deploy`, a person at the REPL) the
board goes to the REPL, so mpremote can always take it back; if not (a stray byte), the meter goes on by itself.

Files on the device: board.json (written by `slm deploy` from the board profile; read only), config.json (the
configuration, saved atomically by config_store), calibration.json (the calibration history, calibration_store),
the record ring of minutes, events and the audit trail (record_ring, audit.py); slm_key.bin, the device key that
signs them, when one was installed (audit.py; no command reads it); net.json, when the meter is on a network (net.py).
"""

import gc
import json
import sys

import audit
import calibration_store
import clock
import config_store
import display
import judge
import net
import protocol
import record_ring
from meter import LEVEL_KEYS, Meter

FIRMWARE_VERSION = "0.1.0"
CHUNK_BLOCKS = 20
BOARD_FILE = "board.json"
BYTES_PER_TURN = 256  # console bytes read per loop turn at most (a turn measures up to CHUNK_BLOCKS blocks)
REPLIES_PER_TURN = 2  # lines answered per loop turn at most
REPLY_BYTES_PER_S = 4000  # reply bytes per device second on average (a third of a 115200-baud UART)
REPLY_BURST = 1200  # ... and at most this many at once (one `info` reply)
CTRL_C_WAIT_MS = 2000  # after Ctrl-C: console input within this time hands the board to the REPL
STEP_EVENT_S = 1.0  # a `time` command that moves the clock by more than this is a clock step (an event)
EPISODE_SCAN_MINUTES = 1440  # at boot, an episode left open is summed over at most this many stored minutes
WIRE_FIELDS = judge.LEVEL_FIELDS + ("s", "duration_s", "step_s", "limit")  # sent at 0.01 (protocol.Levels)
CALIBRATION_KEYS = ("calibration_db", "calibration_method", "calibration_time")  # audited as a calibration


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
        self.clock = clock.Clock()
        self.writer = protocol.RecordWriter(out, self.device_ms, self.utc_now)
        self.levels = protocol.Levels()
        self.audio = hw.open_audio(board)
        rtc = hw.rtc()  # after the audio is open: device time 0 is its first word
        if rtc is None:
            self.faults.append("clock_unset")
        else:
            self.clock.set(rtc[0], rtc[1], 0, 0, rtc[2])
        self.judge = judge.Judge(self.config)
        self.last_minute = None  # the last minute record (dict), for the display
        self.episode = None  # the open exceedance episode (dict), for the display
        self.display = None  # the public display (board.json "display"), unless the configuration turns it off
        if self.config["display_on"]:
            self.display = display.make_display(board.get("display"), hw, faults=self.faults)
        self.display_due = 0  # samples until the next display update (one a second)
        self.ring = None  # the device's own record; None (and a fault) when its files cannot be opened
        try:
            self.ring = record_ring.RecordRing()
        except Exception as e:
            self.faults.append("ring:%s" % type(e).__name__)
        self.trail = audit.Trail(self.ring, hw.unique_id(), self._emit)  # the key, the chains, the audit entries
        if self.trail.fault:  # a slm_key.bin that is not 32 bytes: the records go unsigned
            self.faults.append(self.trail.fault)
        self.net = None  # the network (net.py), when net.json exists: set by run()
        self.last_ticks = hw.ticks_ms()
        self.wall_sec = 0  # CPU-clock time since start, summed from tick differences (ticks wrap)
        self.wall_msec = 0
        self.blocks = 0
        self.dropped = 0
        self.late = 0
        self.interrupts = 0  # Ctrl-C bytes after which no host took the REPL
        self.console = None  # the Console, for its counts in status
        self.overload_total = False
        self.minute_start = None  # UTC (day, ms) of the minute in progress (second 00), None when unset
        self.minute_left = 0  # blocks from the interval's start to the minute's end
        self._new_meter()
        block = self.meter.block
        self.minute_blocks = 60 * self.rate // block  # a whole number of blocks at every supported rate
        self._start_minute()
        self.buf = bytearray(4 * block * CHUNK_BLOCKS)
        mv = memoryview(self.buf)
        self.views = [mv[:4 * block * k] for k in range(CHUNK_BLOCKS + 1)]  # the buffer for k blocks

    # -- measuring ---------------------------------------------------------------------------------------------
    def _restart_meter(self):
        """A new meter for a new configuration or a reset: the interval in progress is dropped, the minute goes on
        (its levels start again from here)."""
        self.minute_left -= self.meter.interval_blocks()
        self._new_meter()

    def _new_meter(self):
        b = self.board
        self.meter = Meter(rate=self.rate, sensitivity_dbfs=b.get("sensitivity_dbfs", -26.0),
                           calibration_db=self.config["calibration_db"], eq=b.get("eq"),
                           input_shift=b.get("input_shift", 10), underrange_db=self.config["underrange_db"])
        self.interval_blocks = int(round(self.config["interval_s"] * self.rate / self.meter.block))
        self.interval_target = min(self.interval_blocks, self.minute_left) if self.minute_left > 0 else \
            self.interval_blocks
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

    def utc_now(self):
        """UTC now (ISO 8601 text), None when the clock is unset."""
        return self.clock.iso(self.sec, self.msec)

    def step(self):
        """One chunk of audio and what follows from it. Returns the samples measured (0 if none), or -1 when the
        audio stream has ended."""
        block = self.meter.block
        todo = CHUNK_BLOCKS
        left = self.interval_target - self.meter.interval_blocks()
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
        if self.meter.interval_blocks() >= self.interval_target:
            self._close_interval()
        if self.display is not None:
            self.display_due -= samples
            if self.display_due <= 0:
                self.display_due += self.rate
                self._update_display(self.display)
        self.since_status += samples
        if self.since_status >= self.status_every:
            self.since_status = 0
            st = self.status()
            self.writer.send("status", st)
            self.trail.note_faults(st["faults"])
        return samples

    def _update_display(self, disp):
        """Once a device second: the display's view (the last minute's LAeq, the limit, the local time, the state);
        it draws it in slices, one per loop turn (``turn``)."""
        now = None
        if self.clock.at(self.sec, self.msec):
            now = display.hhmm(clock.local_minute(self.clock.ms, self.config["tz_min"]))
        disp.update(display.view_for(self, now))

    def _close_interval(self, early=False):
        """Close the interval in progress (at its end or the minute's end) and, when the minute ends with it, the
        minute; ``early``: now, at a clock step (the caller closes the minute)."""
        end = self.device_ms()
        self.minute_left -= self.meter.interval_blocks()
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
        if early:
            return
        if self.minute_left <= 0:
            self._close_minute(True)
        self.interval_target = min(self.interval_blocks, self.minute_left)

    # -- minutes, judging and the clock --------------------------------------------------------------------------
    def _blocks_for_ms(self, ms):
        """Whole blocks that reach ``ms`` milliseconds of audio (at least one)."""
        per = 1000 * self.meter.block
        return max(1, (ms * self.rate + per - 1) // per)

    def _start_minute(self):
        """Start a minute now (at an interval's start): aligned to the UTC minute, or 60 s of audio when unset."""
        if self.clock.at(self.sec, self.msec):
            day, ms = self.clock.day, self.clock.ms
            start = ms - ms % clock.MINUTE_MS
            self.minute_start = (day, start)
            self.minute_left = self._blocks_for_ms(start + clock.MINUTE_MS - ms)
        else:
            self.minute_start = None
            self.minute_left = self.minute_blocks
        self.interval_target = min(self.interval_blocks, self.minute_left)

    def _close_minute(self, natural):
        """Send the minute's records (the meter's totals since the minute began) and start the next minute:
        ``natural`` when it reached its end, else it ends early (a clock step)."""
        m = self.meter
        seconds = m.totals_raw["blocks"] * m.block / self.rate
        res = m.totals()
        m.clear_totals()
        start = self.minute_start
        end = None
        if start is not None:
            end = clock.normalise(start[0], start[1] + clock.MINUTE_MS) if natural else \
                ((self.clock.day, self.clock.ms) if self.clock.at(self.sec, self.msec) else None)
        records = self.judge.close_minute(res, seconds, start, end)
        self.last_minute = records[0][1]
        self.episode = self.judge.episode
        for kind, fields in records:
            self._emit(kind, fields)
        if natural and start is not None:
            self.minute_start = end
            self.minute_left = self.minute_blocks
        elif natural:
            self.minute_left = self.minute_blocks
        else:
            self._start_minute()

    def _emit(self, kind, fields):
        """Keep a minute, event or audit record in the device's record (the ring) and send it: one record, stored
        and sent alike. With a key it is signed first (``n`` and ``mac``, audit.Trail). Its floats are quantised
        before either, so that the line's text and the slot hold the same value: 0.01 for WIRE_FIELDS (they go out
        with two decimals), 0.001 for any other (record_ring.quantise)."""
        rec = self.writer.stamp(kind, fields)
        for k in list(rec):
            v = rec[k]
            if isinstance(v, float):
                if k in WIRE_FIELDS:
                    rec[k] = self.levels.put(k, round(v * 100) / 100 if v == v and abs(v) < 1e300 else v)
                else:
                    rec[k] = record_ring.quantise(v)
        if self.ring is not None:
            try:
                self.ring.add(rec, self.trail.signer())
            except Exception as e:
                self._ring_fault(e)
        self.writer.write(rec)

    def _ring_fault(self, e):
        name = "ring:%s" % type(e).__name__
        if name not in self.faults:
            self.faults.append(name)
            del self.faults[:-8]

    def set_clock(self, day, ms, source):
        """Set the clock to UTC (day, ms) now (the `time` command). Returns the step in seconds (None when the
        clock was unset). A step of more than STEP_EVENT_S (or the first setting) closes the interval and minute in
        progress and is a ``clock_step`` event; a smaller one moves the end of the minute in progress."""
        sec, msec = self.sec, self.msec
        step = self.clock.step_s(day, ms, sec, msec)
        before = self.clock.iso(sec, msec)
        big = step is None or step > STEP_EVENT_S or step < -STEP_EVENT_S
        # a step that lands inside the minute in progress, or less than a minute before it, keeps that minute open
        # until the new clock reaches its end (it is shorter or longer than 60 s: its `s` says), so that no two
        # minute records share a start; a larger step closes it early (a step back by a minute or more repeats
        # minute starts: the clock_step event says why)
        new_minute = big
        if big and step is not None and self.minute_start is not None:
            into = (day - self.minute_start[0]) * clock.DAY_MS + ms - self.minute_start[1]
            new_minute = not -clock.MINUTE_MS < into < clock.MINUTE_MS
        if new_minute:
            if self.meter.interval_blocks() > 0:
                self._close_interval(True)
            if self.meter.totals_raw["blocks"] > 0:
                self._close_minute(False)
        self.clock.set(day, ms, sec, msec, source)
        self.hw.set_rtc(day, ms)
        if "clock_unset" in self.faults:
            self.faults.remove("clock_unset")
        if new_minute:
            self._start_minute()
        if big:
            step_s = None if step is None else round(step, 3)
            self._emit("event", {"kind": "clock_step", "from": before, "to": self.utc_now(), "step_s": step_s})
            self.trail.write("clock_step", {"from": before, "to": self.utc_now(), "step_s": step_s, "source": source},
                             own=True)
        if not new_minute and self.minute_start is not None:
            self.clock.at(sec, msec)
            left_ms = (self.minute_start[0] - self.clock.day) * clock.DAY_MS + self.minute_start[1] + \
                clock.MINUTE_MS - self.clock.ms
            if left_ms <= 0:
                if self.meter.interval_blocks() > 0:
                    self._close_interval(True)
                self._close_minute(False)
            else:
                self.minute_left = self.meter.interval_blocks() + self._blocks_for_ms(left_ms)
                self.interval_target = min(self.interval_blocks, self.minute_left)
        return None if step is None else round(step, 3)

    def close_interrupted_episode(self):
        """At boot: an episode the ring holds open (the device restarted during it) is closed once, as
        interrupted, from the minutes stored since its start."""
        ring = self.ring
        if ring is None:
            return
        try:
            start = ring.open_episode()
            if not start:
                return
            fields = judge.interrupted_end(start, _stored_minutes(ring))
        except Exception as e:
            self._ring_fault(e)
            return
        self._emit("event", fields)


    def _send_level(self):
        c = self.meter.current()
        lv = self.levels
        self.writer.send("level", {"LAF": lv.put("LAF", c["LAF"]), "LAS": lv.put("LAS", c["LAS"]),
                                   "LAeq": lv.put("LAeq", c["LAeq"]), "LCpeak": lv.put("LCpeak", c["LCpeak"]),
                                   "overload": c["overload"]})

    # -- reporting ---------------------------------------------------------------------------------------------
    def hello(self):
        b = self.board
        config = {k: v for k, v in self.config.items() if k not in config_store.ONLY_BY_NAME}
        return {"proto": protocol.PROTOCOL_VERSION, "fw": FIRMWARE_VERSION, "board": b.get("board"),
                "mic": b.get("mic"), "rate": self.rate, "serial": self.hw.unique_id(),
                "cal": {"offset_db": self.config["calibration_db"], "sensitivity_dbfs": b.get("sensitivity_dbfs"),
                        "method": self.config.get("calibration_method"), "time": self.config.get("calibration_time")},
                "config": config, "tz_min": self.config["tz_min"], "clock": self.clock.source,
                "faults": list(self.faults), "key_id": self.trail.key_id}

    def status(self):
        gc.collect()  # heap_free then tells a leak from garbage not yet collected
        st = {"uptime_s": self.wall_sec, "heap_free": self.hw.mem_free(),
              "blocks": self.blocks, "dropped": self.dropped, "late": self.late,
              "faults": list(self.faults) + (["i2s_errors:%d" % self.audio.errors] if self.audio.errors else []),
              "overload": self.overload_total or self.meter.current()["overload"],
              "lmax": self.levels.put("lmax", self.lmax), "lmax_ms": self.lmax_ms, "interrupts": self.interrupts}
        if self.console is not None:
            st["console"] = self.console.counts()
        if self.net is not None:
            st["net"] = self.net.counts()
        return st

    # -- configuration (commands.py calls these) ---------------------------------------------------------------
    def apply_config(self, values):
        """Save and apply already-checked values; restarts the statistics when the measurement itself changes. Each
        changed key is an audit ``config`` entry (but the calibration keys: the caller writes a ``calibration``
        entry for those)."""
        before = self.config
        new = dict(self.config)
        new.update(values)
        config_store.save(new)
        self.config = new
        for fault in ("config_missing", "config_corrupt"):
            if fault in self.faults:
                self.faults.remove(fault)
        if any(k in values for k in ("interval_s", "calibration_db", "underrange_db")):
            self._restart_meter()
        else:
            self._schedule()
        self.judge.configure(new)
        self.trail.config(before, {k: v for k, v in values.items() if k not in CALIBRATION_KEYS})

    def audit_room(self, entries):
        """ValueError('audit_full: ...') when the audit trail has no room for ``entries`` more entries (a command
        that changes something is then refused: audit.py)."""
        if not self.trail.room(entries):
            raise ValueError("audit_full: the audit trail has no room before the oldest stored records; pull them, "
                             "or wait for them to age out")

    def start_trail(self):
        """At boot, before any record: recover the chains (audit.Trail.recover)."""
        try:
            self.trail.recover()
        except Exception as e:  # the meter measures on; the fault says so
            self.faults.append("audit:%s" % type(e).__name__)

    def audit_boot(self):
        """At boot: the boot's audit entries (audit.Trail.boot)."""
        cause = self.hw.reset_cause() if hasattr(self.hw, "reset_cause") else None
        try:
            self.trail.boot(cause)
        except Exception as e:
            self.faults.append("audit:%s" % type(e).__name__)

    def reboot(self, why):
        """Reboot, with an audit ``reboot`` entry saying why (command, errors)."""
        try:
            self.trail.write("reboot", {"why": why}, own=True)
            self.trail.stop(reboot=True)
        except Exception:
            pass
        self.hw.reboot()

    def reset_statistics(self):
        self.overload_total = False
        self._restart_meter()


def _stored_minutes(ring):
    """The ring's last EPISODE_SCAN_MINUTES minute records, oldest first, read a few at a time."""
    info = ring.info().get("minute") or {}
    first, last = info.get("first"), info.get("last")
    if first is None or last is None:
        return
    n = max(first, last - EPISODE_SCAN_MINUTES + 1)
    while n <= last:
        batch = ring.read("minute", n, 20)
        if not batch:
            return
        for rec in batch:
            yield rec
        n = batch[-1].get("n", n + len(batch) - 1) + 1


def turn(app, console):
    """One turn of the main loop: a chunk of audio and its records, then the console's share, then the watchdog.
    False when the audio stream has ended. Allocates nothing unless it sends a record, answers a line or redraws
    the display (once a second)."""
    samples = app.step()
    if samples < 0:
        return False
    console.serve(samples)
    if app.display is not None:
        app.display.tick()
    if app.net is not None:
        app.net.tick()
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
    app.net = net.start(hw, app.ring, app.set_clock, app.faults)  # None without net.json
    if app.net is not None:
        app.writer.tap = app.net.record
    app.writer.send("hello", app.hello())
    app.start_trail()
    app.close_interrupted_episode()
    app.audit_boot()
    console = Console(stdin, poller, commands.CommandHandler(app), app.rate)
    app.console = console
    errors_in_a_row = 0
    while True:
        try:
            if not turn(app, console):
                app.trail.stop()
                break
            errors_in_a_row = 0
        except KeyboardInterrupt:  # byte 3 read by the Console, or (on a board) raised by the USB/UART driver
            console.drop_line()
            if _host_follows(out, poller):
                app.trail.stop()
                raise
            app.interrupts += 1
        except Exception as e:  # keep measuring; report it; reboot if it keeps happening
            errors_in_a_row += 1
            app.faults.append("exception:%s" % type(e).__name__)
            del app.faults[:-8]
            if errors_in_a_row > 20:
                app.reboot("errors")
    gc.collect()


def main():
    import select

    import hardware

    hw = hardware.platform()
    stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    run(hw, sys.stdout, stdin, poller)
