"""What ships in firmware/weighting_coeffs.py is class 1, meets the ±0.1 dB goal and fits in 32-bit words; the parts
that come from closed formulas are exact; a fresh `make coeffs` design agrees with it in response.

The fitted H4 biquad and A poles come out of an optimiser whose last bits differ from machine to machine (one LSB of
a Q14 coefficient, 0.0004 dB), so they are compared in response, never integer by integer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from slm import weighting_design as wd
from slm.firmware import weighting_coeffs as shipped


@pytest.fixture(scope="module")
def committed():
    return wd.committed_designs()


@pytest.fixture(scope="module")
def fresh():
    return wd.design_all()


def test_every_rate_is_shipped(committed):
    assert tuple(committed) == wd.SAMPLE_RATES


def test_generated_text_is_the_generators_output(committed):
    """The committed file is exactly what generate_module writes for its own numbers (no hand edits)."""
    assert wd.firmware_coeffs_path().read_text() == wd.generate_module(committed)


def test_constants_and_log_table_match_the_design_code():
    assert (shipped.BIQUAD_Q, shipped.INPUT_BITS, shipped.HIST_SAMPLE_BLOCKS, shipped.HIST_BINS, shipped.HIST_BASE,
            shipped.SETTLE_TAUS, shipped.TAU_FAST, shipped.TAU_SLOW) == (
        wd.BIQUAD_Q, wd.INPUT_BITS, wd.HIST_SAMPLE_BLOCKS, wd.HIST_BINS, wd.HIST_BASE, wd.SETTLE_TAUS,
        wd.TAU_FAST, wd.TAU_SLOW)
    assert list(shipped.LOG_TABLE) == [round(1000 * math.log10(m / 256)) for m in range(256, 512)]


@pytest.mark.parametrize("rate", wd.SAMPLE_RATES)
def test_closed_form_sections_are_exact(committed, rate):
    """Block, DC blocker, the two f1 high-passes and the F/S weights come from formulas: equal to the integer."""
    d = committed[rate]
    assert d.block == wd.BLOCK_SAMPLES[rate]
    assert (d.dc.K, d.dc.Q) == (2**15, 15 + wd.DC_BLOCK_SHIFT[rate])
    hp1 = wd.HighPass.quantise(wd.bilinear_highpass_k(wd.F1, rate))
    assert [(h.K, h.Q) for h in d.hp_c] == [(hp1.K, hp1.Q)] * 2
    assert d.alpha_fast == wd._alpha(wd.TAU_FAST, d.block, rate)
    assert d.alpha_slow == wd._alpha(wd.TAU_SLOW, d.block, rate)


@pytest.mark.parametrize("rate", wd.SAMPLE_RATES)
def test_time_weighting_constants_are_exact(committed, rate):
    """α = 1 - exp(-T/τ) to better than 1e-4 relative, for F and S."""
    d = committed[rate]
    for (a, qa), tau in ((d.alpha_fast, wd.TAU_FAST), (d.alpha_slow, wd.TAU_SLOW)):
        exact = -np.expm1(-d.block / (d.fs * tau))
        assert abs(a / 2**qa - exact) / exact < 1e-4
        assert 15 <= qa < 30 and 2**14 <= a < 2**15


@pytest.mark.parametrize("rate", wd.SAMPLE_RATES)
def test_shipped_gains_are_those_of_the_shipped_integers(committed, rate):
    """The 1 kHz gain constants the firmware adds are the response of the committed integer chain."""
    d = committed[rate]
    again = wd.chain_gain_db(d)
    for w in "ACZ":
        assert abs(d.gain_db[w] - again[w]) < 1e-9, (w, d.gain_db[w], again[w])


@pytest.mark.parametrize("rate", wd.SAMPLE_RATES)
def test_shipped_design_is_class1_and_within_the_goal(committed, rate):
    """Class 1 limits at every third octave to 20 kHz (or 0.45 fs) and |deviation| <= 0.1 dB to fs/3."""
    assert wd.check_design(committed[rate]) == []


@pytest.mark.parametrize("rate", wd.SAMPLE_RATES)
def test_every_machine_word_fits_in_int32_with_equalisation_budget(committed, rate):
    proof = wd.range_proof(committed[rate])
    assert max(proof.values()) < 31, proof


@pytest.mark.parametrize("rate", wd.SAMPLE_RATES)
def test_shipped_design_beats_plain_bilinear(committed, rate):
    """At 48 kHz plain bilinear A reads -1.22 dB at 10 kHz; the quantised design is within 0.02 dB of the goal."""
    f = np.geomspace(10, rate / 3, 200)
    assert np.max(np.abs(committed[rate].deviation_db("A", f))) < 0.02
    assert np.max(np.abs(committed[rate].deviation_db("C", f))) < 0.02


@pytest.mark.parametrize("rate", wd.SAMPLE_RATES)
def test_fresh_design_agrees_with_the_shipped_one_in_response(committed, fresh, rate):
    """`make coeffs` on this machine gives the same filters within 0.001 dB from 10 Hz to 0.45 fs, and passes."""
    f = np.geomspace(10, 0.45 * rate, 300)
    for w in "ACZ":
        diff = fresh[rate].response_db(w, f) - committed[rate].response_db(w, f)
        assert np.max(np.abs(diff)) <= 0.001, (w, float(np.max(np.abs(diff))))
    assert wd.check_design(fresh[rate]) == []


def test_third_octave_grid():
    f = wd.third_octave_frequencies()
    assert len(f) == 34 and abs(f[0] - 10.0) < 1e-9 and abs(f[-1] - 19952.62) < 0.01
