"""The meter allocates nothing per audio block in steady state, and holds a bounded heap (MicroPython unix port).

Memory is deterministic, so these are tests; speed lives in bench/.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from slm.cpython_shim import firmware_dir
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
    assert m["held"] <= 32 * 1024, m  # the meter's buffers, tables and code objects
    assert m["close"] < 64 * 1024, m  # closing an interval may allocate (results), bounded
