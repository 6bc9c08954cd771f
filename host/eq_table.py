"""The shipped board profiles' microphone equalisers, designed once and committed (boards/equalisers.json).

Designing an equaliser (host/mic_eq.py) takes 1-8 s of scipy per microphone and rate, too long for every
`slm measure`, `slm deploy` or virtual board. So the integers of every shipped profile's table at every sample rate
are written to boards/equalisers.json by `make coeffs` (``python -m slm.eq_table``), and ``Board.eq_coeffs`` takes
them from there; a profile whose table is not in the file (a user's own) is designed when first needed. The
tests check what ships (the committed integers against every limit and the flatness goal) and that a fresh design
is no flatter than the committed one by more than a rounding's worth, never the integers themselves: the optimiser
may land one LSB away on another machine.

An entry is keyed by the exact response table and rate, so an edited table is never given an old design.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import Sequence

from slm.resources import boards_dir

TABLE_NAME = "equalisers.json"


def _key(points: Sequence[Sequence[float]], rate: int) -> str:
    return json.dumps([int(rate), [[float(f), float(d)] for f, d in points]])


@lru_cache(maxsize=1)
def _table() -> dict[str, list[int]]:
    try:
        data = json.loads((boards_dir() / TABLE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return {_key(e["response"], e["rate"]): [int(v) for v in e["eq"]] for e in data.get("designs", [])}


def committed(points: Sequence[Sequence[float]], rate: int) -> tuple[int, ...] | None:
    """The committed equaliser for this response table and rate (5 or 10 integers), or None if there is none."""
    eq = _table().get(_key(points, rate))
    return tuple(eq) if eq is not None else None


def generate() -> dict:
    """Design the equaliser of every shipped profile's response table at every sample rate (one entry per table)."""
    from slm import mic_eq
    from slm.boards import list_boards, load_board
    from slm.weighting_design import SAMPLE_RATES

    designs, seen = [], set()
    for name in list_boards():
        points = load_board(name).microphone.response
        if not points or points in seen:
            continue
        seen.add(points)
        for rate in SAMPLE_RATES:
            eq = mic_eq.flat_coeffs(mic_eq.design_eq(points, rate))
            designs.append({"profile": name, "rate": rate, "response": [list(p) for p in points], "eq": list(eq)})
    return {"generated_by": "make coeffs (python -m slm.eq_table); do not edit", "designs": designs}


def main() -> None:
    path = boards_dir() / TABLE_NAME
    data = generate()
    rows = ",\n".join("  " + json.dumps(e) for e in data["designs"])  # one design per line: readable diffs
    path.write_text(f'{{"generated_by": {json.dumps(data["generated_by"])},\n "designs": [\n{rows}\n]}}\n')
    for e in data["designs"]:
        print(f"{e['profile']} {e['rate']} Hz: {len(e['eq']) // 5} section(s) {e['eq']}", file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
