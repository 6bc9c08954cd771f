"""`slm measure`: run the firmware's meter on a WAV file and report levels per interval and overall."""

from __future__ import annotations

import math
from pathlib import Path

from slm.errors import InputError
from slm.firmware_engine import LEVEL_KEYS, MeterSettings, run_meter
from slm.wav_io import WavError, iter_i2s_words, read_header

DEFAULT_SENSITIVITY_DBFS = -26.0
DEFAULT_INPUT_SHIFT = 10  # a 24-bit microphone: the word's top 22 bits
MAX_INTERVAL_S = 86400.0  # one day; the whole-file results cover longer spans


def _number(name: str, value, lo: float, hi: float, unit: str = "") -> float:
    """value as a float within [lo, hi], or an InputError naming the option."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{name} must be a number from {lo:g} to {hi:g}{unit}, not {value!r}")
    return v


def measure_file(path: str | Path, sensitivity_dbfs: float | None = None, board: str | None = None,
                 interval_s: float = 1.0, engine: str = "micropython", channel: int = 0,
                 skip_s: float | None = None) -> dict:
    """Measure one channel of a WAV file with the firmware. Returns the `--json` object of `slm measure`.

    WAV full scale is the microphone's full scale; sensitivity is dBFS for 94 dB SPL (full-scale-sine convention),
    so the default -26.0 reads a full-scale sine as 120.0 dB. A board profile supplies what the board applies: the
    microphone's sensitivity (unless given), its equalisation, the input shift from the I2S word to the sample
    (the samples are then the words as that board reads them), and the start-up it discards. Without a board there
    is no equalisation, no shift beyond a 24-bit part's and no skip.

    skip_s: seconds dropped from the start (default: the board's start-up discard, else 0); intervals keep the
    file's grid (the first one is shorter). Bad values raise InputError (a WavError for the file).
    """
    from slm.boards import SENSITIVITY_RANGE, load_board

    info = read_header(path)
    interval_s = _number("--interval", interval_s, 0.0, MAX_INTERVAL_S, " s")
    eq = None
    input_shift = DEFAULT_INPUT_SHIFT
    board_name = None
    default_skip = 0.0
    if board is not None:
        profile = load_board(board)
        board_name = profile.name
        eq = profile.eq_coeffs(info.rate)
        input_shift = profile.microphone.input_shift
        default_skip = profile.microphone.startup_discard_s
        if sensitivity_dbfs is None:
            sensitivity_dbfs = profile.microphone.sensitivity_dbfs
    if sensitivity_dbfs is None:
        sensitivity_dbfs = DEFAULT_SENSITIVITY_DBFS
    sensitivity_dbfs = _number("--sensitivity", sensitivity_dbfs, *SENSITIVITY_RANGE, " dBFS")
    skip_s = default_skip if skip_s is None else _number("--skip", skip_s, 0.0, info.duration_s, " s (the file's length)")
    settings = MeterSettings(rate=info.rate, interval_s=interval_s, sensitivity_dbfs=sensitivity_dbfs, eq=eq,
                             input_shift=input_shift)
    interval_blocks = settings.interval_blocks()  # validate before reading any audio
    block = settings.block_samples()
    skip_blocks = math.ceil(skip_s * info.rate / block - 1e-9)
    blocks_left = (info.frames - skip_blocks * block) // block
    if blocks_left < 1:
        raise WavError(f"{info.path}: too short: {info.frames} samples"
                       + (f" of which {skip_blocks * block} skipped" if skip_blocks else "")
                       + f"; the meter needs at least one block of {block} samples ({block / info.rate * 1000:g} ms)")
    settings.first_interval_blocks = interval_blocks - skip_blocks % interval_blocks
    chunks = iter_i2s_words(info, channel, start_frame=skip_blocks * block)
    run = run_meter(chunks, settings, engine=engine)
    block_s = block / info.rate
    intervals = []
    start = skip_blocks
    for rec in run.intervals:
        end = start + rec["blocks"]
        intervals.append({"start_s": round(start * block_s, 6), "end_s": round(end * block_s, 6),
                          **{k: rec[k] for k in (*LEVEL_KEYS, "overload", "underrange")}})
        start = end
    return {"file": str(path), "sample_rate": info.rate, "duration_s": round(info.duration_s, 6), "engine": engine,
            "board": board_name, "sensitivity_dbfs": sensitivity_dbfs, "skipped_s": round(skip_blocks * block_s, 6),
            "overall": run.overall, "intervals": intervals}
