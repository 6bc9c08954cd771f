"""`slm measure` refuses bad input with one line on stderr and exit code 2: options that are not finite numbers
or out of range, damaged float WAVs (NaN), files too short to measure, and files that are not regular files
(a FIFO would block). The board's start-up is skipped as the board does, and the output says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from slm.errors import InputError
from slm.sim import signals
from slm.wav_io import WavError, write_wav

RATE = 48000


def slm(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "slm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def assert_input_error(r, fragment):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    path = tmp_path_factory.mktemp("wav") / "tone.wav"
    write_wav(path, signals.sine(1000.0, 94.0, 1.0, RATE), RATE, bits=24)
    return path


def test_wav_error_is_an_input_error():
    assert issubclass(WavError, InputError) and issubclass(WavError, ValueError)


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "100000"])
def test_interval_must_be_a_finite_sane_number(tone, value):
    assert_input_error(slm("measure", tone, "--interval", value), "--interval")


@pytest.mark.parametrize("value", ["nan", "-200"])
def test_sensitivity_must_be_within_the_profiles_range(tone, value):
    assert_input_error(slm("measure", tone, "--sensitivity", value), "--sensitivity must be a number from -60 to 0")


@pytest.mark.parametrize("value", ["nan", "5"])
def test_skip_must_be_within_the_file(tone, value):
    assert_input_error(slm("measure", tone, "--skip", value), "--skip")


def test_nan_in_a_float_wav_is_a_clear_error(tmp_path):
    x = signals.sine(1000.0, 94.0, 2.0, RATE)
    x[RATE // 2] = np.nan
    path = tmp_path / "nan.wav"
    write_wav(path, x, RATE, is_float=True)
    assert_input_error(slm("measure", path), "sample 24000 (0.500 s, channel 0) is nan - not a number")


@pytest.mark.parametrize("frames", [1, 47])
def test_a_file_shorter_than_one_block_is_a_clear_error(tmp_path, frames):
    path = tmp_path / "short.wav"
    write_wav(path, np.full(frames, 0.1), RATE)
    assert_input_error(slm("measure", path), f"too short: {frames} samples")


def test_skipping_all_but_a_fraction_of_a_block_is_a_clear_error(tmp_path):
    path = tmp_path / "short.wav"
    write_wav(path, np.full(RATE // 10, 0.1), RATE)
    assert_input_error(slm("measure", path, "--skip", "0.0995"), "of which 4800 skipped")


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "audio.wav"
    os.mkfifo(fifo)
    assert_input_error(slm("measure", fifo, timeout=60), "not a regular file (a FIFO)")


@pytest.mark.micropython
def test_board_start_up_is_skipped_and_said(tmp_path):
    """A recording that starts with a loud transient (as the microphones' start-up): with --board the board's
    start-up discard is skipped, the JSON and the table say so, and LAFmax is the tone's; --skip 0 keeps it."""
    x = signals.sine(1000.0, 70.0, 3.0, RATE)
    x[: RATE // 10] += 0.3 * np.exp(-np.arange(RATE // 10) / (RATE * 0.03))  # a decaying start-up offset
    x[: RATE // 10] += 0.05 * np.random.default_rng(1).standard_normal(RATE // 10)
    path = tmp_path / "startup.wav"
    write_wav(path, x, RATE, bits=24)
    board = "esp32-devkitc-inmp441"
    out = json.loads(slm("measure", path, "--board", board, "--json").stdout)
    assert out["skipped_s"] == 0.3 and out["board"] == board
    assert out["intervals"][0]["start_s"] == 0.3 and out["intervals"][0]["end_s"] == 1.0
    assert [(i["start_s"], i["end_s"]) for i in out["intervals"][1:]] == [(1.0, 2.0), (2.0, 3.0)]
    assert out["overall"]["LAFmax"] == pytest.approx(70.0, abs=0.2)
    kept = json.loads(slm("measure", path, "--board", board, "--skip", "0", "--json").stdout)
    assert kept["skipped_s"] == 0 and kept["overall"]["LAFmax"] > 75.0
    text = slm("measure", path, "--board", board).stdout
    assert "Skipped the first 0.3 s" in text
    plain = json.loads(slm("measure", path, "--json").stdout)
    assert plain["skipped_s"] == 0 and plain["board"] is None
