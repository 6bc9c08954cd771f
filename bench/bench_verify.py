"""Bench of `slm verify`: records verified per second from each source kind (a pulled folder, a monitor log, a
collector database on SQLite), and the ratio to reading the same source without verifying (what the MAC checks
cost over the reading); and the collector storing them with the keys (marking each on arrival) against without. The records are honest evenings of several devices signed with firmware/chain.py, written by
the host's own writers (tests/chain_records.py); CPU time of this process (process_time), best of ``--repeat``.

    .venv/bin/python bench/bench_verify.py [--devices 4] [--minutes 1440] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slm import verify as v  # noqa: E402
from tests.chain_records import Signer, evening, write_db, write_log, write_pulled  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--minutes", type=int, default=1440, help="minutes of records per device (a day: 1440)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slm-bench-verify-"))
    keys = tmp / "keys"
    records = {}
    for i in range(args.devices):
        s = Signer(f"bench{i:04d}")
        s.write_key(keys)
        records[s.device] = evening(s, minutes=args.minutes, reboot_every=max(60, args.minutes // 4))
    total = sum(len(r) for r in records.values())
    sources = {
        "pulled folders": [str(write_pulled(tmp / f"pulled-{d}", d, r)) for d, r in records.items()],
        "monitor log (.jsonl)": [str(write_log(tmp / "log.jsonl", records))],
        "database (SQLite)": [(write_db(str(tmp / "fleet.sqlite"), records, batch=500), str(tmp / "fleet.sqlite"))[1]],
    }
    print(f"{args.devices} devices, {total} signed records (minute, event, audit), best of {args.repeat}, CPU s")
    print(f"{'source':24} {'read s':>8} {'verify s':>9} {'records/s':>10} {'ratio':>6}")
    for name, srcs in sources.items():
        read_s = best(lambda: [v.load_source(s) for s in srcs], args.repeat)
        result: list = []
        verify_s = best(lambda: result.append(v.verify(srcs, str(keys))), args.repeat)
        assert result[-1].ok, [c.as_dict() for c in result[-1].chains if c.state != "valid"]
        print(f"{name:24} {read_s:8.3f} {verify_s:9.3f} {total / verify_s:10.0f} {verify_s / read_s:6.2f}")
    # the collector's check on arrival: storing with the keys against storing without (Collector, SQLite)
    key_of = {d: bytes.fromhex((keys / f"{d}.key").read_text().strip()) for d in records}
    runs = iter(range(10 ** 6))
    plain_s = best(lambda: write_db(str(tmp / f"plain{next(runs)}.sqlite"), records, batch=500), args.repeat)
    marked_s = best(lambda: write_db(str(tmp / f"marked{next(runs)}.sqlite"), records, key_of, batch=500), args.repeat)
    print(f"{'collector: store':24} {plain_s:8.3f} {marked_s:9.3f} {total / marked_s:10.0f} {marked_s / plain_s:6.2f}"
          "   (without keys / with keys)")


if __name__ == "__main__":
    main()
