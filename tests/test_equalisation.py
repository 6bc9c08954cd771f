"""The microphone equalisation measured through the firmware: third-octave tones at 80 dB through the simulator's
microphone model (which follows the profile's response table within 0.07 dB, tests/test_microphones.py) and
`slm measure --board` (the firmware on the MicroPython unix port with the profile's equaliser): LZeq minus the
true 80 dB.

Measured (48 / 44.1 kHz): within ±0.15 dB from 100 Hz to 6.3 kHz for every microphone; 125 Hz, once -0.45 dB,
reads -0.07 to 0.00 dB. One biquad does not flatten the band edges: 50-63 Hz (-0.48 SPH0645, -0.29 INMP441) and
8-16 kHz (-0.78 SPH0645 at 16 kHz, 48 kHz) stay beyond the ±0.2 dB goal; docs/measurement.md has the table.
"""

from __future__ import annotations

import numpy as np
import pytest

from slm.boards import list_boards, load_board
from slm.measure import measure_file
from slm.sim.microphone import MIC_MODELS, Microphone
from slm.sim.wav_writer import WavWriter

pytestmark = pytest.mark.micropython

TONE_S = 1.0
SETTLE_S = 3.0  # the microphone's start-up and the DC blocker's settling on its DC offset (measured, not skipped:
# a board starts its filters from rest after its discard, and the SPH0645's DC offset then takes a few seconds to
# leave the Z path)
LEVEL_DB = 80.0
MID_BAND = (100.0, 6400.0)
MID_BAND_TOLERANCE_DB = 0.2
EDGE_TOLERANCE_DB = 0.8  # 50 Hz .. fs/3: what one section achieves (class 1 allows ±1.0 dB and more there)


def one_board_per_microphone() -> list[str]:
    seen, boards = set(), []
    for name in list_boards():
        model = load_board(name).microphone.model
        if model not in seen:
            seen.add(model)
            boards.append(name)
    return boards


def third_octaves(low: float, high: float) -> np.ndarray:
    f = 1000.0 * 10.0 ** (np.arange(-13, 14) / 10.0)
    return f[(f >= low * 0.99) & (f <= high)]


@pytest.mark.parametrize("rate", [48000, 44100])
@pytest.mark.parametrize("board", one_board_per_microphone())
def test_equalised_response_through_the_firmware(tmp_path, board, rate):
    freqs = third_octaves(50.0, rate / 3)
    mic = Microphone(MIC_MODELS[load_board(board).microphone.model], rate, seed=1)
    amplitude = 20e-6 * 10 ** (LEVEL_DB / 20) * np.sqrt(2)
    path = tmp_path / "tones.wav"
    n = int(TONE_S * rate)
    t = np.arange(n) / rate
    with WavWriter(path, rate) as w:
        w.write(mic.words(np.zeros(int(SETTLE_S * rate))))
        for f in freqs:
            w.write(mic.words(amplitude * np.sin(2 * np.pi * f * t)))
    result = measure_file(path, board=board, interval_s=0.5, skip_s=0)
    by_start = {round(r["start_s"], 6): r for r in result["intervals"]}
    deviation = {}
    for i, f in enumerate(freqs):  # the second half of each tone: the microphone's and the filters' ringing is over
        deviation[float(f)] = by_start[round(SETTLE_S + i * TONE_S + 0.5, 6)]["LZeq"] - LEVEL_DB
    mid = {f: d for f, d in deviation.items() if MID_BAND[0] <= f <= MID_BAND[1]}
    assert max(abs(d) for d in mid.values()) <= MID_BAND_TOLERANCE_DB, mid
    assert max(abs(d) for d in deviation.values()) <= EDGE_TOLERANCE_DB, deviation
    assert abs(deviation[min(deviation, key=lambda f: abs(f - 125.9))]) <= 0.1, deviation  # the 125 Hz
