"""The firmware on the MicroPython unix port and the bit-exact integer model agree exactly, and no value the
firmware keeps in a machine word ever leaves int32 (the model raises RangeError), for random and worst-case input.

Together: what the unix port (64-bit words) computes is what a 32-bit ESP32 computes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slm import iec61672
from slm.firmware_engine import MeterSettings, run_meter
from slm.int_model import IntegerMeterModel, RangeError, _w
from slm.weighting_design import BLOCK_SAMPLES, SAMPLE_RATES

FULL = 2**23 - 1
MIN = -(2**23)


def to_words(s24: np.ndarray, seed: int = 0) -> np.ndarray:
    garbage = np.random.default_rng(seed).integers(0, 256, len(s24))
    return ((np.asarray(s24, dtype=np.int64) << 8) | garbage).astype(np.uint32).view(np.int32)


def compare(words: np.ndarray, rate: int, eq=None, interval_s: float = 0.1, input_shift: int = 10) -> None:
    block = BLOCK_SAMPLES[rate]
    nblocks = len(words) // block
    words = words[: nblocks * block]
    s = MeterSettings(rate=rate, interval_s=interval_s, eq=eq, input_shift=input_shift)
    run = run_meter([words], s, engine="micropython", raw=True)
    model = IntegerMeterModel(rate, eq=eq, input_shift=input_shift, underrange_log100=_underrange_threshold(s))
    per = s.interval_blocks()
    expected = []
    done = 0
    while done < nblocks:
        n = min(per, nblocks - done)
        model.process(words[done * block:(done + n) * block], n)
        expected.append(model.close_interval()[0])
        done += n
    assert len(run.raw) == len(expected)
    for i, (got, want) in enumerate(zip(run.raw, expected)):
        assert got == want, f"interval {i} differs: " + ", ".join(
            f"{k}: firmware {got[k]} model {want[k]}" for k in want if got.get(k) != want[k])


def _underrange_threshold(s: MeterSettings) -> int:
    from slm.cpython_shim import import_firmware

    meter = import_firmware("meter")
    m = meter.Meter(rate=s.rate, sensitivity_dbfs=s.sensitivity_dbfs, eq=s.eq)
    return m.cfg[import_firmware("meter_kernel").C_UNDER]


def test_range_checker_catches_overflow():
    with pytest.raises(RangeError):
        _w(2**31, "test")
    assert _w(-(2**31), "test") == -(2**31)


EQ_PEAKING = (16458, -32400, 15953, -32400, 16027)  # RBJ peaking +3 dB at 200 Hz, Q 1, 48 kHz, in Q14
# Two sections: an INMP441's low-frequency correction at 48 kHz (+4 dB at 50 Hz, poles at radius 0.99), then an
# RBJ high shelf of +3 dB at 12 kHz; L1 norms 2.87 and 3.60 (the kernel's budget is 4 at every node)
EQ_TWO = (21491, -27662, 6348, -17550, 1244, 19472, -1968, 3376, 1656, 2841)


@pytest.mark.micropython
@pytest.mark.parametrize("n", range(-20, 14))
def test_full_scale_sine_at_every_third_octave(n):
    rate = 48000
    f = iec61672.exact_band_frequency(n)
    t = np.arange(int(0.8 * rate)) / rate
    compare(to_words(np.round(FULL * np.sin(2 * np.pi * f * t)).astype(np.int64), n + 20), rate)


@pytest.mark.micropython
@pytest.mark.parametrize("rate", SAMPLE_RATES)
def test_alternating_full_scale(rate):
    s = np.where(np.arange(int(1.2 * rate)) % 2 == 0, FULL, MIN)
    compare(to_words(s), rate)


@pytest.mark.micropython
@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize("level", [FULL, MIN, 12345, -1])
def test_dc(rate, level):
    compare(to_words(np.full(int(0.7 * rate), level)), rate)


@pytest.mark.micropython
@pytest.mark.parametrize("eq", [EQ_PEAKING, EQ_TWO], ids=["one-section", "two-sections"])
def test_microphone_equalisation_path(eq):
    rng = np.random.default_rng(5)
    s = np.clip(np.round(rng.standard_normal(48000) * 2**21), MIN, FULL).astype(np.int64)
    compare(to_words(s), 48000, eq=eq)


@pytest.mark.micropython
def test_two_section_equaliser_on_full_scale_worst_cases():
    """Full-scale alternation, DC of both signs and a full-scale low sine through both sections: every node within
    its proven range (the model asserts int32 at every step) and the firmware equal to the model."""
    n = 24000
    t = np.arange(n) / 48000
    s = np.concatenate([np.where(np.arange(n) % 2 == 0, FULL, MIN), np.full(n, FULL), np.full(n, MIN),
                        np.round(FULL * np.sin(2 * np.pi * 50 * t)).astype(np.int64)])
    compare(to_words(s), 48000, eq=EQ_TWO)


@pytest.mark.micropython
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate=st.sampled_from(SAMPLE_RATES), period=st.integers(2, 4000), duty=st.floats(0.01, 0.99),
       blocks=st.integers(1, 900), low=st.sampled_from([MIN, -FULL, 0]))
def test_full_scale_square_waves(rate, period, duty, blocks, low):
    i = np.arange(blocks * BLOCK_SAMPLES[rate])
    s = np.where((i % period) < duty * period, FULL, low)
    compare(to_words(s, period), rate)


@pytest.mark.micropython
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate=st.sampled_from(SAMPLE_RATES), seed=st.integers(0, 2**32 - 1), blocks=st.integers(1, 900),
       scale=st.sampled_from([1, 2**8, 2**16, 2**23]), eq=st.sampled_from([None, EQ_PEAKING, EQ_TWO]))
def test_random_words(rate, seed, blocks, scale, eq):
    """Any 32-bit words at all (the low byte is garbage, the top 24 bits any sample), at several amplitudes."""
    rng = np.random.default_rng(seed)
    s = np.clip(rng.integers(-scale, scale, blocks * BLOCK_SAMPLES[rate]), MIN, FULL)
    compare(to_words(s, seed), rate, eq=eq if rate == 48000 else None)


@pytest.mark.micropython
@pytest.mark.parametrize("shift", [11, 12])
def test_shifted_words_that_lost_their_top_bits(shift):
    """Data that arrives shifted left (the SPH0645 on an ESP32: input_shift 11) loses its top bits, so a loud sine
    wraps round: the sample takes the word's own sign bit on every port, and the wraps count as overload, exactly
    as the model computes. A sine within the range has no overload; one that wraps has."""
    rate = 48000
    t = np.arange(rate // 5) / rate
    room = 2.0 ** (10 - shift)  # the part of full scale left in the word
    for amplitude, overloads in ((0.9 * room, False), (1.8 * room, True)):
        s24 = np.round(amplitude * FULL * np.sin(2 * np.pi * 1000 * t)).astype(np.int64) - 40000  # and a DC offset
        words = to_words(s24, seed=shift) << (shift - 10)  # the top bits fall off, as on the bus
        words = (words.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
        compare(words, rate, input_shift=shift)
        run = run_meter([words], MeterSettings(rate=rate, interval_s=0.1, input_shift=shift), raw=True)
        assert all(r["overload"] == overloads for r in run.intervals), (shift, amplitude)
