"""Benchmark of the simulator's propagation filter (sim/propagation.py): run as

    .venv/bin/python bench/bench_propagation.py

from the repository root. It times a 4-meter × 6-source scene of a 30 m square at 48 kHz (meters at 4 m on the
corners, sources 0.5-1.7 m high), 10 s of white noise per source, for each ground, as 24 separate PropagationPaths
and as 6 PropagationFans (one per source, sharing the source's FFT), in chunks of 4800 and 48000 samples.

Figures are CPU time (time.process_time) per sample per path: the fastest repeat (the machine may be shared; the
median and slowest follow), and the scene's real-time factor from the fastest repeat (seconds of scene per second of
one core, propagation only). A bare rfft, multiply, irfft of 8192 samples is timed before and after as a yardstick of
the machine's state. Prints a Markdown table; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from slm.sim.propagation import PropagationFan, PropagationPath

RATE = 48000
METERS = [(0.0, 0.0, 4.0), (30.0, 0.0, 4.0), (0.0, 30.0, 4.0), (30.0, 30.0, 4.0)]
SOURCES = [(5.0, 5.0, 1.5), (25.0, 8.0, 1.0), (12.0, 20.0, 1.7), (3.0, 27.0, 0.5), (20.0, 15.0, 1.2),
           (28.0, 28.0, 1.6)]
N_PATHS = len(METERS) * len(SOURCES)


def cpu_seconds(run, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return times


def scene_runner(objects, signal: np.ndarray, chunk: int):
    def run():
        for i in range(0, len(signal), chunk):
            piece = signal[i:i + chunk]
            for obj in objects:
                obj.process(piece)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    signal = np.random.default_rng(0).standard_normal(int(args.seconds * RATE))
    n = len(signal)

    frame, block = np.random.default_rng(1).standard_normal(8192), np.empty(8192)
    spectrum = np.empty(4097, np.complex128)
    filter_spectrum = np.fft.rfft(np.random.default_rng(2).standard_normal(8192))

    def fft_pair():
        for _ in range(200):
            np.fft.rfft(frame, out=spectrum)
            np.multiply(spectrum, filter_spectrum, out=spectrum)
            np.fft.irfft(spectrum, 8192, out=block)

    def yardstick(when: str) -> None:
        fft_times = cpu_seconds(fft_pair, args.repeats)
        print(f"yardstick ({when}): rfft, multiply, irfft of 8192 samples: "
              f"{min(fft_times) / 200 / 8192 * 1e9:.2f} ns/sample")

    yardstick("before")
    print()
    print("| ground | FIR taps | chunk | form | ns/sample/path: min (median, max) | scene × real time |")
    print("|---|---|---|---|---|---|")
    for ground in ("hard", "none", "soft"):
        for chunk in (4800, 48000):
            for form in ("paths", "fans"):
                start = time.process_time()
                if form == "paths":
                    objects = [PropagationPath(s, m, RATE, ground=ground) for s in SOURCES for m in METERS]
                    taps = [len(p.fir) for p in objects]
                else:
                    objects = [PropagationFan(s, METERS, RATE, ground=ground) for s in SOURCES]
                    taps = [len(p.fir) for fan in objects for p in fan.paths]
                design_s = time.process_time() - start
                times = cpu_seconds(scene_runner(objects, signal, chunk), args.repeats)
                per_sample = [t / n / N_PATHS * 1e9 for t in times]
                median, best = statistics.median(per_sample), min(per_sample)
                print(f"| {ground} | {min(taps)}-{max(taps)} | {chunk} | {len(objects)} {form} "
                      f"(design {design_s * 1e3:.0f} ms) | {best:.1f} ({median:.1f}, {max(per_sample):.1f}) "
                      f"| {1e9 / (best * N_PATHS * RATE):.0f}× |")
    print()
    yardstick("after")


if __name__ == "__main__":
    main()
