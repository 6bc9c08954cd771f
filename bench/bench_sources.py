"""Benchmark of the simulator's sound sources (sim/sources.py): run as

    .venv/bin/python bench/bench_sources.py [--seconds 20] [--repeats 5] [--rate 48000]

from the repository root. For each kind with default parameters it renders `seconds` of audio in chunks of 4800
and of 24000 samples (0.1 s and the scene's 0.5 s at 48 kHz) and reports CPU time (time.process_time) per sample:
the fastest repeat (the machine may be shared), then the median, and the real-time factor of the fastest. The
time to make a source (templates, wavetables, filter design) is reported apart. Prints a Markdown table; nothing
asserts on time. The brief's target: >= 500x real time at 48 kHz on one core, i.e. <= 41.7 ns/sample.
"""

from __future__ import annotations

import argparse
import statistics
import time

from slm.sim.sources import SOURCE_KINDS, make_source


def cpu_ns_per_sample(kind: str, rate: int, seconds: float, chunk: int, repeats: int) -> list[float]:
    n_chunks = max(1, int(seconds * rate) // chunk)
    times = []
    for r in range(repeats):
        src = make_source(kind, rate, seed=r)
        src.render(chunk)  # warm up (first events, caches)
        start = time.process_time()
        for _ in range(n_chunks):
            src.render(chunk)
        times.append((time.process_time() - start) / (n_chunks * chunk) * 1e9)
    return times


def make_ms(kind: str, rate: int, repeats: int) -> float:
    times = []
    for r in range(repeats):
        start = time.process_time()
        make_source(kind, rate, seed=r)
        times.append(time.process_time() - start)
    return min(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rate", type=int, default=48000)
    args = ap.parse_args()
    budget = 1e9 / (500 * args.rate)
    print(f"Sources at {args.rate} Hz, {args.seconds:g} s per repeat, {args.repeats} repeats; CPU ns per sample "
          f"(fastest / median), real-time factor of the fastest; target <= {budget:.1f} ns (500x)\n")
    print("| kind | chunk 4800 | chunk 24000 | x real time | make (ms) |")
    print("|---|---|---|---|---|")
    for kind in SOURCE_KINDS:
        cells = []
        best = None
        for chunk in (4800, 24000):
            t = cpu_ns_per_sample(kind, args.rate, args.seconds, chunk, args.repeats)
            cells.append(f"{min(t):.1f} / {statistics.median(t):.1f}")
            best = min(t) if chunk == 4800 else best
        rt = 1e9 / (best * args.rate)
        print(f"| {kind} | {cells[0]} | {cells[1]} | {rt:.0f} | {make_ms(kind, args.rate, args.repeats):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
