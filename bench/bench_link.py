"""CPU cost of the host link (slm.link.DeviceLink): N links, each fed 10 level records/s through a pty.

A child process plays the devices (it writes into the pty masters, so its work is not counted); this process
opens one DeviceLink per pty slave and counts the CPU time (``time.process_time``: all its threads) used while the
records arrive. Prints the figures; nothing asserts on time.

    .venv/bin/python bench/bench_link.py            # 1 and 16 links, 10 s each
    .venv/bin/python bench/bench_link.py --links 16 --rate 10 --seconds 30
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
import timeit
import tty

from slm.link import DeviceLink
from slm.protocol import encode_line, parse_line


def _level(seq: int, ms: int) -> bytes:
    return encode_line({"t": "level", "seq": seq, "ms": ms, "LAF": 61.23, "LAS": 60.87, "LAeq": 60.95,
                        "LCpeak": 84.12, "overload": False})


def _devices(masters: list[int], rate: float, seconds: float, start: float, record=None) -> None:
    """Child: write `rate` records/s into every master until `seconds` have passed after `start`;
    ``record(seq, ms) -> bytes`` makes each line (default: a level record)."""
    period = 1.0 / rate
    for seq in range(round(rate * seconds)):
        delay = start + seq * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        line = (record or _level)(seq, round(seq * 1000 * period))
        for m in masters:
            os.write(m, line)


def measure(links: int, rate: float, seconds: float) -> dict:
    ptys = []
    for _ in range(links):
        m, s = os.openpty()
        tty.setraw(s)
        ptys.append((m, s, os.ttyname(s)))
    opened = [DeviceLink(path, reconnect=False).open(handshake=False) for _, _, path in ptys]
    time.sleep(0.3)
    start = time.monotonic() + 0.5
    child = mp.get_context("fork").Process(target=_devices, args=([m for m, _, _ in ptys], rate, seconds, start))
    child.start()
    while time.monotonic() < start:
        time.sleep(0.01)
    cpu0, wall0 = time.process_time(), time.monotonic()
    child.join()
    time.sleep(0.2)  # the last records
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    got = sum(lk.records for lk in opened)
    bad = sum(lk.bad_lines + lk.gaps for lk in opened)
    for lk in opened:
        lk.close()
    for m, s, _ in ptys:
        os.close(m)
        os.close(s)
    return {"links": links, "records": got, "expected": links * round(rate * seconds), "bad_or_gaps": bad,
            "cpu_s": cpu, "wall_s": wall, "core_pct": 100 * cpu / wall,
            "us_per_record": 1e6 * cpu / max(got, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--rate", type=float, default=10.0, help="records per second per link")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    line = _level(412, 41230)
    n = 20000
    per_line = timeit.timeit(lambda: parse_line(line), number=n) / n
    print("parse_line: %.1f us per %d-byte level line" % (1e6 * per_line, len(line)))
    for k in args.links:
        r = measure(k, args.rate, args.seconds)
        print("%2d link(s) x %g records/s for %.1f s: %d/%d records, %d bad/gaps; CPU %.3f s = %.2f %% of one core "
              "(%.0f us per record, reader threads + parsing)" % (
                  k, args.rate, r["wall_s"], r["records"], r["expected"], r["bad_or_gaps"], r["cpu_s"],
                  r["core_pct"], r["us_per_record"]))


if __name__ == "__main__":
    main()
