"""The cost of the device's own record (firmware/record_ring.py, the `pull` command) on the MicroPython unix port:
time and garbage of one ``add``, the boot scan of a full ring, building one `pull` reply, the heap the ring keeps.

Fills a ring of the default size (10 200 minutes, 2016 events) in a temporary folder on the unix port, then times.
Prints figures (quoted in docs/protocol.md, "Device record"); on an ESP32 the flash, not the CPU, sets the cost of an
``add`` (a 4 KiB block program and erase, tens of ms) and of the scan (reading 1 MB).

    .venv/bin/python bench/bench_ring.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from slm.firmware_engine import micropython_binary  # noqa: E402
from slm.resources import firmware_dir  # noqa: E402

SCRIPT = """
import gc, json, time
import record_ring as rr
import commands

REC = {"t": "minute", "utc": "2026-07-15T13:51:00.000Z", "start": "2026-07-15T13:50:00.000Z", "local": "21:50",
       "s": 60.0, "LAeq": 61.23, "LAFmax": 80.5, "LA10": 63.0, "LA50": 60.0, "LA90": 55.55, "LCpeak": 90.1,
       "overload": False, "band": "evening dance", "limit": 55, "over": True}
out = {}
gc.collect()
free0 = gc.mem_free()
ring = rr.RecordRing()
gc.collect()
out["heap_kept_bytes"] = free0 - gc.mem_free()
t = time.ticks_us()
for i in range(rr.MINUTES + 100):
    ring.add(REC)
out["add_us"] = time.ticks_diff(time.ticks_us(), t) // (rr.MINUTES + 100)
gc.collect()
gc.disable()
f = gc.mem_free()
ring.add(REC)
out["add_garbage_bytes"] = f - gc.mem_free()
gc.enable()
del ring
gc.collect()
t = time.ticks_ms()
ring = rr.RecordRing()
out["boot_scan_full_ms"] = time.ticks_diff(time.ticks_ms(), t)
out["info"] = ring.info()


class App:
    pass


app = App()
app.ring = ring
handler = commands.CommandHandler(app)
t = time.ticks_us()
n = 0
start = ring.info()["minute"]["first"]
for i in range(50):
    r = handler.cmd_pull({"kind": "minute", "from": start})
    n += len(r["records"])
    start = r["next"]
out["pull_reply_us"] = time.ticks_diff(time.ticks_us(), t) // 50
out["minutes_per_reply"] = n / 50
print(json.dumps(out))
"""


def main() -> None:
    d = Path(tempfile.mkdtemp(prefix="slm-bench-ring-"))
    try:
        for src in firmware_dir().glob("*.py"):  # record_ring, commands and what commands imports
            if src.name not in ("main.py", "stream_runner.py", "__init__.py"):
                shutil.copy(src, d)
        (d / "bench.py").write_text(SCRIPT)
        r = subprocess.run([micropython_binary(), "-X", "heapsize=1M", "bench.py"], cwd=d, capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            sys.exit(r.stderr + r.stdout)
        res = json.loads(r.stdout.splitlines()[-1])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"ring on the unix port (default size: {res['info']['minute']['capacity']} minutes, "
          f"{res['info']['event']['capacity']} events)")
    print(f"  add:                {res['add_us'] / 1000:.2f} ms, {res['add_garbage_bytes']} bytes of garbage")
    print(f"  boot scan (full):   {res['boot_scan_full_ms']} ms")
    print(f"  pull reply:         {res['pull_reply_us'] / 1000:.2f} ms for {res['minutes_per_reply']:.1f} minutes")
    print(f"  heap kept:          {res['heap_kept_bytes']} bytes")


if __name__ == "__main__":
    main()
