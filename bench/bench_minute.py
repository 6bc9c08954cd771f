"""The cost of judging (minute records, episodes, night_max: firmware/judge.py through app.py) on the MicroPython
unix port: CPU per minute and per second of audio, and the heap it allocates.

Runs the device application (no console traffic, stream_hz 0) on minutes of a 1 kHz tone whose level goes over and
under a band limit every other minute (an episode opens and closes), timing each ``MeterApp._close_minute`` call
(the minute's levels from the meter's totals, the judging and the records) and each loop turn. Prints figures;
it does not write docs (the figures are quoted in the report of issue 9 and docs/performance.md may take them).

    .venv/bin/python bench/bench_minute.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from slm.boards import load_board  # noqa: E402
from slm.firmware_engine import micropython_binary  # noqa: E402
from slm.resources import firmware_dir  # noqa: E402
from slm.sim import signals  # noqa: E402
from slm.wav_io import samples_to_i2s_words  # noqa: E402

RATE = 48000

SCRIPT = """
import gc, json, time, micropython
import app, hardware

class Out:
    def __init__(self):
        self.lines = 0
    def write(self, s):
        self.lines += 1

board = json.load(open("board.json"))
a = app.MeterApp(hardware.platform(), board, Out())
costs = []
allocs = []
close = a._close_minute

def timed(natural):
    a0 = micropython.mem_total()  # bytes allocated so far (the unix port counts them)
    t0 = time.ticks_us()
    close(natural)
    costs.append(time.ticks_diff(time.ticks_us(), t0))
    allocs.append(micropython.mem_total() - a0)

a._close_minute = timed
turn_us = 0
turns = 0
heap0 = None
gc.collect()
t_all = time.ticks_us()
while True:
    t0 = time.ticks_us()
    n = a.step()
    turn_us += time.ticks_diff(time.ticks_us(), t0)
    if n < 0:
        break
    turns += 1
    if heap0 is None and turns == 100:
        gc.collect()
        heap0 = gc.mem_free()
gc.collect()
print(json.dumps({"minutes": len(costs), "close_us": costs, "alloc": allocs, "turn_us": turn_us, "turns": turns,
                  "audio_s": a.sec + a.msec / 1000, "heap_free_start": heap0, "heap_free_end": gc.mem_free(),
                  "episode": a.episode, "records": a.writer.seq}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=10)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="slm-bench-minute-"))
    try:
        for f in firmware_dir().glob("*.py"):
            if f.name not in ("__init__.py", "stream_runner.py"):
                shutil.copy(f, d)
        board = load_board("esp32-devkitc-inmp441").device_config()
        board.update(audio_path="audio.bin", startup_discard_s=0.0)
        (d / "board.json").write_text(json.dumps(board))
        (d / "rtc.json").write_text(json.dumps({"utc": "2026-07-15T13:50:00.000Z", "source": "rtc"}))
        bands = [{"start": "00:00", "end": "24:00", "limit": 60, "name": "bench"}]
        (d / "config.json").write_text(json.dumps({"stream_hz": 0, "status_s": 3600, "bands": bands}))
        second = signals.sine(1000.0, 0.0, 1.0, RATE)
        with open(d / "audio.bin", "wb") as f:
            for m in range(args.minutes):
                level = 65.0 if m % 2 else 55.0
                words = samples_to_i2s_words(np.tile(second * 10 ** (level / 20), 60), 32, True)
                f.write(words.astype("<i4").tobytes())
        r = subprocess.run([micropython_binary(), "-c", SCRIPT], cwd=d, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            sys.exit(r.stderr)
        m = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    close = sorted(m["close_us"])
    mean_close = sum(close) / len(close)
    print(f"MicroPython unix port, {m['minutes']} minutes of audio at {RATE} Hz ({m['audio_s']:.0f} s), {m['records']} "
          "records")
    print(f"minute close (totals, judging, records): mean {mean_close / 1000:.2f} ms, max {close[-1] / 1000:.2f} ms "
          f"per minute = {mean_close / 60 / 1000:.3f} ms per second of audio")
    print(f"whole loop: {m['turn_us'] / m['audio_s'] / 1000:.2f} ms per second of audio "
          f"(judging {100 * mean_close / 60 / (m['turn_us'] / m['audio_s']):.2f} % of it)")
    print(f"allocated per minute close: mean {sum(m['alloc']) / len(m['alloc']):.0f} B, max {max(m['alloc'])} B "
          "(garbage, collected; nothing is allocated per audio block)")
    print(f"heap free after 100 turns {m['heap_free_start']} B, at the end {m['heap_free_end']} B")


if __name__ == "__main__":
    main()
