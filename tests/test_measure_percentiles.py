"""The firmware's percentiles LA10, LA50, LA90 against the simulator's independent truth, per interval and over the
whole file, on a scene whose level fluctuates within every interval (tests/data/fluctuating.toml: drums, passing
traffic and a stepping tone; ideal microphone). The firmware samples LAF every 10 ms into 0.1 dB bins and reports
a bin's centre; the truth counts LAF at every sample in 0.001 dB bins: they agree within 0.15 dB."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm.measure import measure_file
from slm.sim.scenario import load_scenario
from slm.sim.scene import simulate

pytestmark = pytest.mark.micropython

SCENARIO = Path(__file__).parent / "data" / "fluctuating.toml"
PERCENTILES = ("LA10", "LA50", "LA90")
TOLERANCE_DB = 0.15


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("fluctuating")
    truth = simulate(load_scenario(SCENARIO), out, contributions=False)["meters"]["board"]
    return measure_file(out / "board.wav", interval_s=truth["intervals"][0]["end_s"]), truth


def test_percentiles_per_interval_agree_with_the_truth(measured):
    result, truth = measured
    assert len(result["intervals"]) == len(truth["intervals"]) == 3
    for got, want in zip(result["intervals"], truth["intervals"]):
        assert (got["start_s"], got["end_s"]) == (want["start_s"], want["end_s"])
        # the scene fluctuates: the three percentiles are far apart, so a mix-up cannot pass
        assert want["LA10"] - want["LA50"] > 3 and want["LA50"] - want["LA90"] > 3, want
        for key in PERCENTILES:
            assert got[key] == pytest.approx(want[key], abs=TOLERANCE_DB), (key, got, want)


def test_percentiles_of_the_whole_file_agree_with_the_truth(measured):
    result, truth = measured
    for key in PERCENTILES:
        assert result["overall"][key] == pytest.approx(truth["overall"][key], abs=TOLERANCE_DB), key
