"""The generated coefficient module matches a fresh design, and every design passes its checks and range proof."""

from __future__ import annotations

import numpy as np
import pytest

from slm import weighting_design as wd


@pytest.fixture(scope="module")
def designs():
    return wd.design_all()


def test_generated_module_is_current(designs):
    """`make coeffs` output equals the committed firmware/weighting_coeffs.py (regenerate after design changes)."""
    assert wd.firmware_coeffs_path().read_text() == wd.generate_module(designs)


@pytest.mark.parametrize("rate", wd.SAMPLE_RATES)
def test_design_checks_pass(designs, rate):
    assert wd.check_design(designs[rate]) == []


@pytest.mark.parametrize("rate", wd.SAMPLE_RATES)
def test_every_machine_word_fits_in_int32_with_equalisation_budget(designs, rate):
    proof = wd.range_proof(designs[rate])
    assert max(proof.values()) < 31, proof


@pytest.mark.parametrize("rate", wd.SAMPLE_RATES)
def test_quantised_design_beats_plain_bilinear(designs, rate):
    """At 48 kHz plain bilinear A reads -1.22 dB at 10 kHz; the quantised design is within 0.02 dB of the goal."""
    f = np.geomspace(10, rate / 3, 200)
    assert np.max(np.abs(designs[rate].deviation_db("A", f))) < 0.02
    assert np.max(np.abs(designs[rate].deviation_db("C", f))) < 0.02


def test_time_weighting_constants_are_exact(designs):
    """α = 1 - exp(-T/τ) to better than 1e-4 relative, for F and S at every rate."""
    for d in designs.values():
        for (a, qa), tau in ((d.alpha_fast, wd.TAU_FAST), (d.alpha_slow, wd.TAU_SLOW)):
            exact = -np.expm1(-d.block / (d.fs * tau))
            assert abs(a / 2**qa - exact) / exact < 1e-4
            assert 15 <= qa < 30 and 2**14 <= a < 2**15


def test_third_octave_grid():
    f = wd.third_octave_frequencies()
    assert len(f) == 34 and abs(f[0] - 10.0) < 1e-9 and abs(f[-1] - 19952.62) < 0.01
