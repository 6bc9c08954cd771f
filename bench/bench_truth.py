"""Benchmark of the simulator's ground truth (sim/truth.py TruthMeter): run as

    .venv/bin/python bench/bench_truth.py

from the repository root.  Measures ns per sample and the multiple of real time of one TruthMeter on one core at
48 kHz (1 s intervals) for: pink noise in one call, the same in 0.1 s chunks, and digital silence (the FFT is
skipped).  Times are medians of 3 repeats of 30 s of signal.  Prints the figures; nothing here asserts on time.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core

import numpy as np  # noqa: E402

from slm.sim import signals, truth  # noqa: E402

RATE = 48000
SECONDS = 30.0


def _time(x: np.ndarray, chunk: int | None) -> float:
    times = []
    for _ in range(3):
        meter = truth.TruthMeter(RATE)
        t = time.perf_counter()
        if chunk is None:
            meter.process(x)
        else:
            for i in range(0, len(x), chunk):
                meter.process(x[i:i + chunk])
        meter.finish()
        meter.overall()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    truth.weighting_fir("A", RATE)  # design once (cached), not timed
    truth.weighting_fir("C", RATE)
    pa = 20e-6 * 10 ** (signals.FULL_SCALE_DB / 20) * math.sqrt(2)
    noise = signals.pink_noise(70.0, SECONDS, RATE, seed=1) * pa
    print(f"TruthMeter at {RATE} Hz, {SECONDS:.0f} s of signal, {platform.processor() or platform.machine()}, "
          f"numpy {np.__version__}")
    for name, x, chunk in (("pink noise, one call", noise, None), ("pink noise, 0.1 s chunks", noise, RATE // 10),
                           ("silence, one call", np.zeros_like(noise), None)):
        t = _time(x, chunk)
        print(f"  {name:26s} {t / len(x) * 1e9:6.1f} ns/sample  {SECONDS / t:6.0f}x real time")


if __name__ == "__main__":
    main()
