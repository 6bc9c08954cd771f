"""`slm measure`: run the firmware's meter on a WAV file and report levels per interval and overall."""

from __future__ import annotations

from pathlib import Path

from slm.firmware_engine import LEVEL_KEYS, MeterSettings, run_meter
from slm.wav_io import iter_i2s_words, read_header

DEFAULT_SENSITIVITY_DBFS = -26.0


def measure_file(path: str | Path, sensitivity_dbfs: float | None = None, board: str | None = None,
                 interval_s: float = 1.0, engine: str = "micropython", channel: int = 0) -> dict:
    """Measure one channel of a WAV file with the firmware. Returns the `--json` object of `slm measure`.

    WAV full scale is the microphone's full scale; sensitivity is dBFS for 94 dB SPL (full-scale-sine convention),
    so the default -26.0 reads a full-scale sine as 120.0 dB. A board profile supplies the microphone's
    sensitivity (unless given) and its equalisation; without a board there is no equalisation.
    """
    info = read_header(path)
    eq = None
    if board is not None:
        from slm.boards import load_board

        profile = load_board(board)
        eq = profile.eq_biquad(info.rate)
        if sensitivity_dbfs is None:
            sensitivity_dbfs = profile.microphone.sensitivity_dbfs
    if sensitivity_dbfs is None:
        sensitivity_dbfs = DEFAULT_SENSITIVITY_DBFS
    settings = MeterSettings(rate=info.rate, interval_s=interval_s, sensitivity_dbfs=sensitivity_dbfs, eq=eq)
    settings.interval_blocks()  # validate before reading any audio
    chunks = iter_i2s_words(info, channel)
    run = run_meter(chunks, settings, engine=engine)
    block_s = MeterSettings.block_seconds(info.rate)
    intervals = []
    start = 0
    for rec in run.intervals:
        end = start + rec["blocks"]
        intervals.append({"start_s": round(start * block_s, 6), "end_s": round(end * block_s, 6),
                          **{k: rec[k] for k in (*LEVEL_KEYS, "overload", "underrange")}})
        start = end
    return {"file": str(path), "sample_rate": info.rate, "duration_s": round(info.duration_s, 6), "engine": engine,
            "sensitivity_dbfs": sensitivity_dbfs, "overall": run.overall, "intervals": intervals}
