"""The simulator's microphone datasheet figures and the board profiles' agree (the profiles are what boards run with;
the simulator must model the same parts)."""

from __future__ import annotations

import pytest

from slm.boards import list_boards, load_board
from slm.sim.microphone import MIC_MODELS


@pytest.mark.parametrize("name", list_boards())
def test_board_microphone_matches_the_simulator_model(name):
    mic = load_board(name).microphone
    spec = MIC_MODELS[mic.model]
    assert mic.sensitivity_dbfs == spec.sensitivity_dbfs
    assert mic.self_noise_dba == spec.self_noise_dba
    assert mic.acoustic_overload_db == spec.aop_db
    assert mic.data_bits == spec.data_bits
    assert mic.input_shift == 10 + spec.word_left_shift
    assert mic.startup_discard_s == spec.startup_s
    assert [tuple(map(float, p)) for p in mic.response] == [tuple(map(float, p)) for p in spec.response]
