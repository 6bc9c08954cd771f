"""The meter allocates nothing per audio block in steady state, and holds a bounded heap; the whole main loop
allocates nothing per turn, and a bounded amount per record and per command (MicroPython unix port).

Memory is deterministic, so these are tests; speed lives in bench/.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from slm.resources import firmware_dir
from slm.firmware_engine import micropython_binary

SCRIPT = r"""
import gc, json
from array import array
gc.collect()
before = gc.mem_alloc()
from meter import Meter
m = Meter(%(rate)d)
gc.collect()
held = gc.mem_alloc() - before
buf = array('i', [0] * (m.block * 20))
for i in range(len(buf)):
    buf[i] = ((i * 7919) %% 65536 - 32768) << 16


def allocated(calls):
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    while calls > 0:
        m.process(buf, 20)
        calls -= 1
    a1 = gc.mem_alloc()
    gc.enable()
    return a1 - a0


allocated(50)  # warm-up, and the measuring code's own first-use allocations
small = allocated(1)
large = allocated(600)  # crosses the F and S settling points (625 and 5000 blocks) into steady state
gc.collect()
a1 = gc.mem_alloc()
m.close_interval()
a2 = gc.mem_alloc()
print(json.dumps({"held": held, "per_block": (large - small) / (599 * 20), "close": a2 - a1}))
"""


def run(rate: int) -> dict:
    r = subprocess.run([micropython_binary(), "-c", SCRIPT % {"rate": rate}], cwd=firmware_dir(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.micropython
@pytest.mark.parametrize("rate", [48000, 44100, 32000, 16000])
def test_no_allocation_per_block_and_bounded_heap(rate):
    m = run(rate)
    assert m["per_block"] == 0, m
    # the meter's buffers, tables and code objects: 32 800 B since the minute totals (clear_totals), 33 950 B since
    # the equaliser's second section (its viper code)
    assert m["held"] <= 34 * 1024, m
    assert m["close"] < 64 * 1024, m  # closing an interval may allocate (results), bounded


# The whole main loop (app.turn: MeterApp.step, Console.serve, the watchdog) on the device's own files: 600 turns
# run with the heap locked (nothing allocated per turn in steady state), and a bounded amount per record sent and
# per command answered, counted with micropython.mem_total() (every byte ever allocated, including the frames of
# functions with many locals that MicroPython puts on the heap and frees at return; collections do not lower it).
APP_SCRIPT = r"""
import json, micropython, select, sys
import app, commands, hardware


class Sink:
    def __init__(self):
        self.lines = 0

    def write(self, s):
        self.lines += 1


board, fault = app.load_board()
board["display"] = None  # the public display allocates once a second, counted in tests/test_display.py


def make(config, stream, poller):
    with open("config.json", "w") as f:
        f.write(json.dumps(config))
    out = Sink()
    a = app.MeterApp(hardware.UnixPlatform(), board, out)
    con = app.Console(stream, poller, commands.CommandHandler(a), a.rate)
    a.console = con
    return a, con, out


def allocated(a, con, turns):
    t0 = micropython.mem_total()
    while turns > 0:
        app.turn(a, con)
        turns -= 1
    return micropython.mem_total() - t0


idle = select.poll()
idle.register(sys.stdin, select.POLLIN)  # a pipe nobody writes to: the console of a board left alone
quiet = {"stream_hz": 0, "status_s": 3600, "interval_s": 3600}
a, con, out = make(quiet, sys.stdin.buffer, idle)
allocated(a, con, 50)  # warm-up
transient = (allocated(a, con, 601) - allocated(a, con, 1)) / 600  # frames of big functions, freed at return
locked = 600
micropython.heap_lock()  # any allocation now raises MemoryError (a frame falls back to the C stack)
try:
    while locked > 0:
        app.turn(a, con)
        locked -= 1
except MemoryError:
    pass
micropython.heap_unlock()

a, con, out = make({"stream_hz": 10, "status_s": 3600, "interval_s": 1}, sys.stdin.buffer, idle)
allocated(a, con, 50)
n0 = out.lines
records = allocated(a, con, 500)
per_record = records / (out.lines - n0)

a, con, out = make({"stream_hz": 0, "status_s": 1, "interval_s": 3600}, sys.stdin.buffer, idle)
allocated(a, con, 50)
n0 = out.lines
statuses = allocated(a, con, 500)
per_status = statuses / (out.lines - n0)

cmds = open("commands.bin", "rb")
waiting = select.poll()
waiting.register(cmds, select.POLLIN)
a, con, out = make(quiet, cmds, waiting)
allocated(a, con, 1)
turns = 0
spent = 0
while con.lines < %(commands)d and turns < 5000:
    spent += allocated(a, con, 1)
    turns += 1
per_command = spent / con.lines
print(json.dumps({"locked_turns_left": locked, "transient_per_turn": transient, "per_record": per_record, "per_status": per_status,
                  "per_command": per_command, "commands": con.lines, "turns": turns}))
"""


def run_app(tmp_path) -> dict:
    from tests.test_device_app import device_dir, line

    d = device_dir(tmp_path, seconds=30.0, level_db=74.0)
    cmds = []
    for i in range(20):
        cmds += [line({"cmd": "get", "id": i, "keys": ["interval_s", "zone"]}), line({"cmd": "info", "id": i}),
                 line({"cmd": "set", "id": i, "values": {"episode_min_minutes": 1 + i}}), line({"cmd": "nope", "id": i}),
                 b"not a protocol line\n"]
    (d / "commands.bin").write_bytes(b"".join(cmds))
    r = subprocess.run([micropython_binary(), "-c", APP_SCRIPT % {"commands": len(cmds)}], cwd=d,
                       stdin=subprocess.PIPE, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["commands"] == len(cmds), m
    return m


@pytest.mark.micropython
def test_main_loop_allocates_nothing_per_turn_and_a_bounded_amount_per_record_and_command(tmp_path):
    m = run_app(tmp_path)
    assert m["locked_turns_left"] == 0, m  # audio, console poll, watchdog: no allocation at all
    # measured (48 kHz): 3.6 KB per record (10 level records to 1 interval), 11.9 KB per status (its gc.collect),
    # 3.2 KB per command on average (get, info, set with its save, unknown, junk): bounds with room, not targets
    assert m["per_record"] <= 6 * 1024, m
    assert m["per_status"] <= 16 * 1024, m
    assert m["per_command"] <= 8 * 1024, m
