"""The public display's cost on the MicroPython unix port, and whether it delays the audio (docs/hardware.md,
"Public display").

    .venv/bin/python bench/bench_display.py [--seconds 30]

For each driver (on the stand-in buses of firmware/display_standin.py): the loop of firmware/app.py is imitated at
real time: audio "arrives" every chunk (20 blocks, 20 ms at 48 kHz), the real Meter measures it, then the display
ticks once; the view changes every second (a new number each second: a full redraw per second, the worst case; the
device's number changes once a minute). A turn that starts after its chunk has arrived is late (the app's `late`:
the data was already waiting). Reports the cost of one tick (mean, max), of a whole redraw, the late turns with and
without the display, and the stand-in's bytes. The ESP32 figures in docs/hardware.md are estimated from these
(see there). Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

SCRIPT = r"""
import json, sys, time
from array import array
import display
from meter import Meter
spec = json.loads(sys.stdin.read())
m = Meter(48000)
CHUNK = 20
buf = array("i", [0] * (m.block * CHUNK))
for i in range(len(buf)):
    buf[i] = ((i * 7919) % 65536 - 32768) << 14
chunk_us = m.block * CHUNK * 1000000 // 48000
per_s = 1000000 // chunk_us
d = display.make_display(spec["cfg"], None, spec["out"]) if spec["cfg"] else None
if d is not None:  # the panel model is the host's, not the device's work: it takes the bytes and does nothing
    mod = d.standin.model
    for name in ("transaction", "clock_in", "latch"):
        if hasattr(mod, name):
            setattr(mod, name, lambda *a: None)
    d.standin.model = mod
    d.panel.on_frame = None


def view(s):
    laeq = 50.0 + (s % 40)
    return {"laeq": laeq, "limit": 65, "band": "evening", "time": "21:%02d" % (s % 60),
            "state": display.display_state(laeq, 65)}


steps = []  # per step of a redraw: its cost in each of REPEAT redraws (a median ignores the machine's hiccups)
if d is not None:
    for s in range(spec["repeat"]):
        d.update(view(s))
        i = 0
        while True:
            t0 = time.ticks_us()
            worked = d.tick()
            dt = time.ticks_diff(time.ticks_us(), t0)
            if not worked:
                break
            if i == len(steps):
                steps.append([])
            steps[i].append(dt)
            i += 1
medians = [sorted(v)[len(v) // 2] for v in steps]
chunks = spec["seconds"] * per_s
late = 0
tick_us = []
meter_us = []
redraw_us = 0
start = time.ticks_us()
for k in range(chunks):
    arrival = time.ticks_add(start, k * chunk_us)
    if time.ticks_diff(time.ticks_us(), arrival) > 1000 and k:
        late += 1  # the chunk was waiting: the loop is behind the microphone
    while time.ticks_diff(arrival, time.ticks_us()) > 0:
        pass
    t0 = time.ticks_us()
    m.process(buf, CHUNK)
    t1 = time.ticks_us()
    meter_us.append(time.ticks_diff(t1, t0))
    if d is not None:
        if k % per_s == 0:
            d.update(view(k // per_s + 1000))
        t2 = time.ticks_us()
        worked = d.tick()
        dt = time.ticks_diff(time.ticks_us(), t2)
        if worked:
            tick_us.append(dt)
            redraw_us += dt
print(json.dumps({"late": late, "chunks": chunks, "chunk_us": chunk_us, "meter_mean_us": sum(meter_us) // len(meter_us),
                  "meter_max_us": max(meter_us), "ticks": len(tick_us),
                  "tick_mean_us": sum(tick_us) // len(tick_us) if tick_us else 0,
                  "tick_max_us": max(tick_us) if tick_us else 0,
                  "redraws": d.redraws if d else 0, "redraw_mean_us": redraw_us // d.redraws if d and d.redraws else 0,
                  "bytes_per_redraw": d.standin.sent // max(1, d.redraws) if d else 0,
                  "step_median_us": medians}))
"""


def run(cfg, seconds: int, out: str) -> dict:
    from slm.firmware_engine import micropython_binary
    from slm.resources import firmware_dir

    r = subprocess.run([micropython_binary(), "-c", SCRIPT], cwd=firmware_dir(),
                       input=json.dumps({"cfg": cfg, "seconds": seconds, "out": out, "repeat": 200}), capture_output=True, text=True,
                       timeout=seconds * 5 + 60)
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout)


def main() -> None:
    import tempfile

    from test_display import CONFIGS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        rows = [("none", run(None, args.seconds, out))]
        rows += [(name, run(cfg, args.seconds, out)) for name, cfg in CONFIGS.items()]
    print("| display | late turns / turns (paced, 1 redraw/s) | meter per chunk (mean) | steps per redraw | "
          "step, median: largest / sum (a redraw) | bus bytes per redraw |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        med = r["step_median_us"]
        print(f"| {name} | {r['late']} / {r['chunks']} | {r['meter_mean_us']} µs | {len(med)} | "
              f"{max(med) if med else 0} / {sum(med)} µs | {r['bytes_per_redraw']} |")
        if med:
            print(f"|   | steps (µs): {' '.join(map(str, med))} | | | | |")


if __name__ == "__main__":
    main()
