"""IEC 61672-1:2013 5.6 level linearity, 5.13 C-weighted peak (Table 5), 5.11 overload, 5.12 under-range, 5.14
stability, and the 94 dB reference, through the firmware on MicroPython."""

from __future__ import annotations

import numpy as np
import pytest

from slm import iec61672
from slm.measure import measure_file
from slm.sim import signals
from slm.wav_io import write_wav
from tests.conftest import run_signal

RATE = 48000


@pytest.mark.micropython
@pytest.mark.parametrize("freq", [1000.0, 7943.28])
def test_level_linearity_30_to_119_db(freq):
    """5.6: level linearity at 1 kHz and 8 kHz within ±0.1 dB (project bar; class 1 allows ±0.8 dB) from 30 dB to
    119 dB SPL with -26 dBFS sensitivity, in 1 dB steps, relative to the reading at 94 dB."""
    levels = list(range(30, 120))
    x = signals.level_steps(freq, levels, 2.0, RATE)
    run = run_signal(x, rate=RATE, interval_s=1.0)
    measured = {L: run.intervals[2 * i + 1]["LAeq"] for i, L in enumerate(levels)}
    ref = measured[94]
    deviations = {L: measured[L] - ref - (L - 94) for L in levels}
    worst = max(deviations, key=lambda L: abs(deviations[L]))
    assert abs(deviations[worst]) <= 0.1, f"{deviations[worst]:+.3f} dB at {worst} dB"
    assert not any(i["overload"] for i in run.intervals)
    assert not any(i["underrange"] for i in run.intervals[1:])


@pytest.mark.micropython
@pytest.mark.parametrize("bits,is_float", [(16, False), (24, False), (32, False), (32, True)])
def test_94_db_reference_reads_94_00(tmp_path, bits, is_float):
    """A 94.0 dB 1 kHz tone reads 94.00 ± 0.05 dB as LAeq, LCeq and LZeq, from every WAV sample format."""
    path = tmp_path / "tone.wav"
    write_wav(path, signals.sine(1000.0, 94.0, 3.0, RATE), RATE, bits=bits, is_float=is_float)
    result = measure_file(path)
    for key in ("LAeq", "LCeq", "LZeq"):
        for interval in result["intervals"][1:]:
            assert abs(interval[key] - 94.0) <= 0.05, (key, interval[key])
        assert abs(result["overall"][key] - 94.0) <= 0.05


@pytest.mark.micropython
def test_94_db_reference_is_the_same_from_every_format(tmp_path):
    readings = []
    for bits, is_float in [(16, False), (24, False), (32, False), (32, True)]:
        path = tmp_path / f"tone{bits}{is_float}.wav"
        write_wav(path, signals.sine(1000.0, 94.0, 2.0, RATE), RATE, bits=bits, is_float=is_float)
        readings.append(measure_file(path)["intervals"][-1]["LAeq"])
    assert max(readings) - min(readings) <= 0.01, readings


@pytest.mark.micropython
@pytest.mark.parametrize("kind,freq", list(iec61672.CPEAK_CLASS1))
def test_table5_c_weighted_peak(kind, freq):
    """5.13 / Table 5: LCpeak - LC of single cycles and half cycles within class 1 limits."""
    level = 100.0
    steady = run_signal(signals.sine(freq, level, 3.0, RATE), rate=RATE, interval_s=1.0).intervals[-1]["LCeq"]
    x = signals.cycles(freq, level, RATE, kind=kind, lead_s=0.5, tail_s=0.5)
    x = x[: (len(x) // 4800) * 4800]
    peak = run_signal(x, rate=RATE, interval_s=len(x) / RATE).overall["LCpeak"]
    nominal, limit = iec61672.CPEAK_CLASS1[(kind, freq)]
    assert abs(peak - steady - nominal) <= limit, f"LCpeak - LC = {peak - steady:.2f} dB, nominal {nominal}"


@pytest.mark.micropython
def test_overload_flagged_above_full_scale_not_below_119_db():
    """5.11: no overload at 119 dB (1 dB below full scale); overload for a clipped 120.5 dB sine."""
    quiet = run_signal(signals.sine(1000.0, 119.0, 2.0, RATE), rate=RATE)
    loud = run_signal(np.clip(signals.sine(1000.0, 120.5, 2.0, RATE), -1, 1), rate=RATE)
    assert not quiet.overall["overload"]
    assert all(i["overload"] for i in loud.intervals) and loud.overall["overload"]


def _overload_threshold(kind: str) -> float:
    for tenth in range(1170, 1240):
        level = tenth / 10
        x = np.clip(signals.cycles(500.0, level, RATE, kind=kind, lead_s=0.1, tail_s=0.1), -1, 1)
        x = x[: (len(x) // 4800) * 4800]
        if run_signal(x, rate=RATE, interval_s=len(x) / RATE).overall["overload"]:
            return level
    raise AssertionError(f"{kind} never overloaded")


@pytest.mark.micropython
def test_positive_and_negative_half_cycle_overload_thresholds_within_1_5_db():
    """5.11.3: the levels at which positive and negative 500 Hz half cycles first indicate overload differ by at most
    1.5 dB. Levels are those of the steady sine the half cycle is cut from; its peak reaches full scale at 120 dB."""
    pos = _overload_threshold("positive half cycle")
    neg = _overload_threshold("negative half cycle")
    assert abs(pos - neg) <= 1.5
    assert 119.9 <= pos <= 120.1 and 119.9 <= neg <= 120.1


@pytest.mark.micropython
def test_overload_latched_for_the_interval_and_overall():
    """5.11.4: an overload in one interval marks that interval and the whole measurement, not the next interval."""
    x = np.concatenate([signals.sine(1000.0, 90.0, 1.0, RATE), np.clip(signals.sine(1000.0, 125.0, 0.01, RATE), -1, 1),
                        signals.sine(1000.0, 90.0, 1.99, RATE)])
    run = run_signal(x, rate=RATE, interval_s=1.0)
    assert [i["overload"] for i in run.intervals] == [False, True, False]
    assert run.overall["overload"]


@pytest.mark.micropython
def test_under_range_below_the_linear_range_only():
    """5.12: a 20 dB tone (below the 26 dB lower limit at -26 dBFS) indicates under-range; 30 dB does not."""
    low = run_signal(signals.sine(1000.0, 20.0, 3.0, RATE), rate=RATE)
    ok = run_signal(signals.sine(1000.0, 30.0, 3.0, RATE), rate=RATE)
    assert all(i["underrange"] for i in low.intervals[1:]) and low.overall["underrange"]
    assert not any(i["underrange"] for i in ok.intervals) and not ok.overall["underrange"]


@pytest.mark.micropython
def test_digital_silence_reads_undefined_not_a_number():
    run = run_signal(np.zeros(2 * RATE), rate=RATE)
    for key in ("LAeq", "LCeq", "LZeq", "LAFmax", "LCpeak", "LA50"):
        assert run.overall[key] is None
    assert run.overall["underrange"]


@pytest.mark.micropython
def test_stability_30_minutes_of_steady_tone():
    """5.14: a 30-minute steady 1 kHz tone: per-minute LAeq, and LAF at the end against the start, drift < 0.05 dB."""
    period = signals.sine(1000.0, 94.0, 1.0, RATE)  # exactly 1000 cycles: tiles without a seam
    from slm.firmware_engine import MeterSettings, run_meter
    from tests.conftest import words_of

    w = words_of(period)
    run = run_meter((w for _ in range(30 * 60)), MeterSettings(rate=RATE, interval_s=60.0))
    leqs = [i["LAeq"] for i in run.intervals]
    assert len(leqs) == 30
    assert max(leqs) - min(leqs) < 0.05
    assert abs(run.intervals[-1]["LAFmax"] - run.intervals[0]["LAFmax"]) < 0.05
