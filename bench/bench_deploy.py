"""Wall time of `slm deploy` (slm.deploy.deploy) to a virtual board over its pty: from scratch and no-change.

"From scratch": the device directory holds only board.json and device_id.txt (the virtual board's own copy of the
firmware is removed and its process restarted, so it waits at the REPL); the deploy compiles the firmware with
mpy-cross (x64), writes every file, verifies, restarts the board and waits for its hello. "Re-deploy": the same
deploy again, which writes nothing (hash every file on the device, compare, restart, hello). Goal: a re-deploy
under 3 s. Prints the figures; nothing asserts on time.

    .venv/bin/python bench/bench_deploy.py               # 5 runs of each
    .venv/bin/python bench/bench_deploy.py --runs 10 --source
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from slm.deploy import deploy
from slm.virtual_board import VirtualBoard

BOARD = "esp32-devkitc-inmp441"


def empty_device(vb: VirtualBoard) -> None:
    vb.kill()
    for p in Path(vb.device_dir).iterdir():
        if p.name not in ("board.json", "device_id.txt"):
            p.unlink()
    vb.restart()
    time.sleep(0.3)  # the new process reaches its REPL (import main fails)


def figures(label: str, times: list[float]) -> str:
    return (f"{label:<28s} median {statistics.median(times):6.2f} s  min {min(times):6.2f} s  "
            f"max {max(times):6.2f} s  ({len(times)} runs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--source", action="store_true", help="deploy the .py sources instead of .mpy")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as d:
        with VirtualBoard(scenario="calibrator", speed=1, board=BOARD, device_dir=d) as vb:
            scratch, again, phases = [], [], []
            first = None
            for _ in range(args.runs):
                empty_device(vb)
                marks: dict[str, float] = {}
                t0 = time.monotonic()
                rep = deploy(BOARD, vb.port, source=args.source,
                              progress=lambda stage, *_: marks.setdefault(stage, time.monotonic()))
                scratch.append(time.monotonic() - t0)
                phases.append({k: v - t0 for k, v in marks.items()})
                first = first or rep
                t0 = time.monotonic()
                rep2 = deploy(BOARD, vb.port, source=args.source)
                again.append(time.monotonic() - t0)
                assert not rep2.changed
            assert first is not None
    print(f"slm deploy to a virtual board ({BOARD}, {first.format}, {len(first.files)} files, "
          f"{first.bytes_written} bytes from scratch)")
    print(figures("from scratch", scratch))
    print(figures("re-deploy, nothing changed", again))
    ph = {k: statistics.median(p[k] for p in phases if k in p) for k in phases[0]}
    print("from scratch, median time at which each stage began: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(ph.items(), key=lambda kv: kv[1])))
    print(f"goal: re-deploy under 3 s: {'met' if statistics.median(again) < 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
