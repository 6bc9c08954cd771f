"""`slm measure`: output shape, options, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from slm.sim import signals
from slm.wav_io import write_wav

RATE = 48000
KEYS = {"LAeq", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax", "LASmin", "LCpeak", "LZpeak", "LAE", "LA10", "LA50",
        "LA90", "overload", "underrange"}


def slm(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "slm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    path = tmp_path_factory.mktemp("wav") / "tone.wav"
    write_wav(path, signals.sine(1000.0, 94.0, 2.5, RATE), RATE, bits=24)
    return path


@pytest.mark.micropython
def test_json_output_has_exactly_the_documented_keys(tone):
    r = slm("measure", tone, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"file", "sample_rate", "duration_s", "engine", "board", "sensitivity_dbfs", "skipped_s",
                        "overall", "intervals"}
    assert out["sample_rate"] == RATE and out["engine"] == "micropython" and out["sensitivity_dbfs"] == -26.0
    assert out["board"] is None and out["skipped_s"] == 0
    assert abs(out["duration_s"] - 2.5) < 1e-9
    assert set(out["overall"]) == KEYS
    assert [(i["start_s"], i["end_s"]) for i in out["intervals"]] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]
    for i in out["intervals"]:
        assert set(i) == KEYS | {"start_s", "end_s"}
    assert abs(out["overall"]["LAeq"] - 94.0) < 0.05


@pytest.mark.micropython
def test_sensitivity_shifts_every_level(tone):
    a = json.loads(slm("measure", tone, "--json").stdout)["overall"]
    b = json.loads(slm("measure", tone, "--json", "--sensitivity", "-36").stdout)["overall"]
    for k in ("LAeq", "LCpeak", "LAFmax", "LA50"):
        assert abs(b[k] - a[k] - 10.0) < 0.002


@pytest.mark.micropython
def test_full_scale_sine_reads_120_db(tmp_path):
    path = tmp_path / "fs.wav"
    write_wav(path, signals.sine(1000.0, 119.99, 2.0, RATE), RATE, is_float=True)
    out = json.loads(slm("measure", path, "--json").stdout)
    assert abs(out["overall"]["LAeq"] - 119.99) < 0.05 and not out["overall"]["overload"]


def test_cpython_engine_gives_the_same_numbers(tone):
    a = json.loads(slm("measure", tone, "--json").stdout)
    b = json.loads(slm("measure", tone, "--json", "--engine", "cpython").stdout)
    assert b["engine"] == "cpython"
    assert a["overall"] == b["overall"] and a["intervals"] == b["intervals"]


@pytest.mark.micropython
def test_channel_selects_a_channel(tmp_path):
    path = tmp_path / "stereo.wav"
    x = np.stack([signals.sine(1000.0, 80.0, 2.0, RATE), signals.sine(1000.0, 100.0, 2.0, RATE)], axis=1)
    write_wav(path, x, RATE, bits=16)
    left = json.loads(slm("measure", path, "--json").stdout)["overall"]["LAeq"]
    right = json.loads(slm("measure", path, "--json", "--channel", "1").stdout)["overall"]["LAeq"]
    assert abs(left - 80.0) < 0.05 and abs(right - 100.0) < 0.05


@pytest.mark.micropython
def test_interval_option_and_table_output(tone):
    r = slm("measure", tone, "--interval", "0.5")
    assert r.returncode == 0, r.stderr
    assert "LAeq" in r.stdout and "Whole file" in r.stdout and "94.0" in r.stdout
    out = json.loads(slm("measure", tone, "--interval", "0.5", "--json").stdout)
    assert len(out["intervals"]) == 5


def _assert_input_error(r, fragment):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and fragment in lines[0], lines[0]


def test_unsupported_rate_is_exit_2(tmp_path):
    path = tmp_path / "r22k.wav"
    write_wav(path, np.zeros(22050), 22050)
    _assert_input_error(slm("measure", path), "22050 Hz is not supported")


def test_missing_file_is_exit_2(tmp_path):
    _assert_input_error(slm("measure", tmp_path / "nope.wav"), "cannot read")


def test_not_a_wav_is_exit_2(tmp_path):
    path = tmp_path / "x.wav"
    path.write_text("hello, this is not audio")
    _assert_input_error(slm("measure", path), "not a WAV file")


def test_empty_file_is_exit_2(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _assert_input_error(slm("measure", path), "not a WAV file")


def test_empty_data_chunk_is_exit_2(tmp_path):
    path = tmp_path / "nodata.wav"
    write_wav(path, np.zeros(0), RATE)
    _assert_input_error(slm("measure", path), "no audio")


def test_truncated_file_is_exit_2(tmp_path):
    path = tmp_path / "cut.wav"
    write_wav(path, signals.sine(1000.0, 94.0, 1.0, RATE), RATE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_input_error(slm("measure", path), "truncated")


def test_unsupported_sample_format_is_exit_2(tmp_path):
    path = tmp_path / "u8.wav"
    write_wav(path, np.zeros(480), RATE, bits=16)
    data = bytearray(path.read_bytes())
    data[34:36] = (8).to_bytes(2, "little")  # bits per sample -> 8
    data[32:34] = (1).to_bytes(2, "little")  # block align
    path.write_bytes(bytes(data))
    _assert_input_error(slm("measure", path), "unsupported PCM sample size 8 bits")


def test_bad_channel_is_exit_2(tone):
    _assert_input_error(slm("measure", tone, "--channel", "3"), "channel 3 does not exist")


def test_bad_interval_is_exit_2(tone):
    _assert_input_error(slm("measure", tone, "--interval", "0.0123"), "not a whole number")
    _assert_input_error(slm("measure", tone, "--interval", "-1"), "--interval must be a number from 0")


def test_usage_error_is_exit_2(tone):
    r = slm("measure", tone, "--engine", "java")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_help_has_an_example():
    r = slm("measure", "--help")
    assert r.returncode == 0 and "slm measure square.wav" in r.stdout


@pytest.mark.micropython
def test_board_applies_its_microphone_equalisation_and_only_then(tmp_path):
    """No equalisation without --board; with an INMP441 board, a 100 Hz tone reads about +1.8 dB higher (the
    inverse of the microphone's typical -1.8 dB there) and 1 kHz is unchanged."""
    from slm.boards import load_board

    path = tmp_path / "low.wav"
    write_wav(path, np.concatenate([signals.sine(100.0, 80.0, 3.0, RATE), signals.sine(1000.0, 80.0, 3.0, RATE)]),
              RATE, bits=24)
    plain = json.loads(slm("measure", path, "--json").stdout)["intervals"]
    eq = json.loads(slm("measure", path, "--json", "--board", "esp32-devkitc-inmp441").stdout)["intervals"]
    mic_db = dict(load_board("esp32-devkitc-inmp441").microphone.response)[100.0]
    assert abs(plain[2]["LZeq"] - 80.0) < 0.05
    assert abs((eq[2]["LZeq"] - plain[2]["LZeq"]) + mic_db) < 0.5
    assert abs(eq[5]["LZeq"] - plain[5]["LZeq"]) < 0.05


def test_unknown_board_is_exit_2(tone):
    _assert_input_error(slm("measure", tone, "--board", "esp99-nothing"), "unknown board")


@pytest.mark.micropython
@pytest.mark.parametrize("board", ["esp32-devkitc-inmp441", "esp32-s3-devkitc-ics43434", "esp32-devkitc-sph0645"])
def test_equalisation_adds_no_offset_at_low_levels(tmp_path, board):
    """The equaliser's poles lie near z = 1; its rounding must not turn into a DC offset that lifts quiet Z levels.
    A 30 dB 1 kHz tone reads the same LZeq and LAeq with and without the board's equalisation. With --board the
    file holds what the board's I2S bus delivers: the SPH0645's samples arrive doubled (its input shift 11)."""
    from slm.boards import load_board

    x = signals.sine(1000.0, 30.0, 4.0, RATE)
    path = tmp_path / "quiet.wav"
    write_wav(path, x, RATE, bits=24)
    as_board = tmp_path / "quiet-board.wav"
    write_wav(as_board, x * 2 ** (load_board(board).microphone.input_shift - 10), RATE, bits=24)
    plain = json.loads(slm("measure", path, "--json").stdout)["intervals"][-1]
    eq = json.loads(slm("measure", as_board, "--json", "--board", board).stdout)["intervals"][-1]
    assert abs(eq["LZeq"] - plain["LZeq"]) < 0.2 and abs(eq["LAeq"] - plain["LAeq"]) < 0.2, (plain, eq)
