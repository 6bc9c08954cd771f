"""`make accuracy`: print the measured deviation tables for docs/measurement.md, from the firmware on MicroPython.

Uses the same measurement as tests/test_iec61672_frequency_weighting.py (steady sines at exact frequencies).
"""

from __future__ import annotations

from slm import iec61672
from slm.weighting_design import SAMPLE_RATES
from tests.test_iec61672_frequency_weighting import measured_response, third_octaves


def main() -> None:
    print("Deviation from the IEC 61672-1 Annex E design goal, measured through the firmware on the MicroPython unix")
    print("port (dB; steady sines at exact base-10 third-octave frequencies; class 1 limits from Table 3).\n")
    responses = {rate: measured_response(rate, third_octaves(rate)) for rate in SAMPLE_RATES}
    header = "| f (Hz) | class 1 | " + " | ".join(f"A {r // 1000 if r % 1000 == 0 else r / 1000:g}k" for r in SAMPLE_RATES)
    header += " | " + " | ".join(f"C {r // 1000 if r % 1000 == 0 else r / 1000:g}k" for r in SAMPLE_RATES) + " |"
    print(header)
    print("|" + "---|" * (2 + 2 * len(SAMPLE_RATES)))
    for n in range(-20, 14):
        f = iec61672.exact_band_frequency(n)
        lo, hi = iec61672.class1_limits(f)
        lim = f"{'+' if hi > 0 else ''}{hi:g}; {lo:g}".replace("-inf", "−∞")
        cells = []
        for w in "AC":
            for r in SAMPLE_RATES:
                d = responses[r].get(f)
                cells.append("" if d is None else f"{d[w]:+.3f}")
        print(f"| {f:.1f} | {lim} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
