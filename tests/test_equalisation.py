"""The microphone equalisation measured through the firmware: third-octave tones at 80 dB through the simulator's
microphone model (which follows the profile's response table within 0.07 dB, tests/test_microphones.py) and
`slm measure --board` (the firmware on the MicroPython unix port with the profile's equaliser): LZeq minus the
true 80 dB.

Measured (48 / 44.1 kHz, two sections for every microphone, boards/equalisers.json): within ±0.19 dB from 50 Hz
to fs/3 for every microphone (INMP441 -0.19 / -0.17 at 50 Hz, ICS-43434 -0.14 / -0.17, SPH0645 ±0.06); 125 Hz,
once -0.45 dB, reads -0.16 to -0.03 dB. With one section the edges had stayed at -0.29 to -0.78 dB.
docs/measurement.md has the table.
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
EDGE_TOLERANCE_DB = 0.2 + 0.005  # 50 Hz .. fs/3: the issue's goal, plus half the records' 0.01 dB step


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
    assert max(abs(d) for d in deviation.values()) <= EDGE_TOLERANCE_DB, deviation
