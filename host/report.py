"""`slm report`: its options checked (period, clock times, output), then the records read (host/report_source.py),
the numbers computed (host/report_calc.py) and the files written (host/report_render.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from slm.errors import InputError
from slm.report_calc import Periods, build_report
from slm.report_render import write_report
from slm.report_source import apply_verify, read_source

OUT_SUFFIXES = (".html", ".pdf", "")


def parse_local_time(text: str | None, option: str, end: bool = False) -> dt.datetime | None:
    """``2026-07-15`` or ``2026-07-15T19:00`` (also with a space), local clock time of the meters. A date alone is
    its midnight for --from, and the midnight after it for --to (the day is included)."""
    if text is None:
        return None
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{option} {text!r}: give a local date or time such as 2026-07-15 or 2026-07-15T19:00") \
            from None
    if t.tzinfo is not None:
        raise InputError(f"{option} {text!r}: give the meters' local clock time, without a UTC offset")
    if end and len(text.strip()) == 10:
        t += dt.timedelta(days=1)
    return t


def _clock(text: str, option: str) -> int:
    try:
        h, m = text.strip().split(":")
        minutes = int(h) * 60 + int(m)
        if not (0 <= int(h) < 24 and 0 <= int(m) < 60):
            raise ValueError
    except ValueError:
        raise InputError(f"{option}: {text!r} is not a clock time HH:MM") from None
    return minutes


def parse_periods(cn: str, eu: str) -> Periods:
    """--cn-periods DAY,NIGHT and --eu-periods DAY,EVENING,NIGHT (clock times at which each period starts)."""
    cn_times = [_clock(x, "--cn-periods") for x in cn.split(",")]
    eu_times = [_clock(x, "--eu-periods") for x in eu.split(",")]
    if len(cn_times) != 2 or cn_times[0] == cn_times[1]:
        raise InputError(f"--cn-periods {cn!r}: give two different clock times DAY,NIGHT such as 06:00,22:00")
    if len(eu_times) != 3 or len(set(eu_times)) != 3 or \
            sum(Periods.hours(a, b) for a, b in zip(eu_times, eu_times[1:] + eu_times[:1])) != 24:
        raise InputError(f"--eu-periods {eu!r}: give three clock times DAY,EVENING,NIGHT in order round the day, "
                         "such as 07:00,19:00,23:00")
    d, e, n = eu_times
    return Periods(cn_times[0], cn_times[1], d, e, n)


def make_report(source: str, start: str | None, end: str | None, site: str | None, out: str,
                cn_periods: str = "06:00,22:00", eu_periods: str = "07:00,19:00,23:00",
                keys_dir: str | None = None) -> tuple[object, list[Path]]:
    """The report of SOURCE written to OUT; (the Report, the files written). With ``keys_dir`` (the devices' keys)
    every record's state is what `slm verify` finds; without, a database's marks by the collector."""
    t0, t1 = parse_local_time(start, "--from"), parse_local_time(end, "--to", end=True)
    if t0 is not None and t1 is not None and t1 <= t0:
        raise InputError(f"--to {end} is not after --from {start}")
    periods = parse_periods(cn_periods, eu_periods)
    out_path = Path(out)
    if out_path.suffix.lower() not in OUT_SUFFIXES and not out_path.is_dir():
        raise InputError(f"--out {out}: give a .html or .pdf file, or a folder (for both and a CSV per table)")
    if not out_path.parent.is_dir():
        raise InputError(f"--out {out}: folder {out_path.parent} does not exist")
    if out_path.suffix and out_path.is_dir() and out_path.suffix.lower() in (".html", ".pdf"):
        raise InputError(f"--out {out}: is a folder")
    # the database is asked for the minutes around the period: local time is UTC + the device's offset (-10 to +14 h)
    utc_from = None if t0 is None else (t0 - dt.timedelta(hours=15)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    utc_to = None if t1 is None else (t1 + dt.timedelta(hours=15)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    records = read_source(source, site, utc_from, utc_to)
    if keys_dir is not None:
        apply_verify(records, source, keys_dir)
    report = build_report(records, t0, t1, site, periods)
    if not any(m.minutes for m in report.meters):
        where = f" of site {site}" if site and records.kind == "database" else ""
        raise InputError(f"{source}: no minute records{where} from {report.start:%Y-%m-%d %H:%M} to "
                         f"{report.end:%Y-%m-%d %H:%M}")
    return report, write_report(report, out_path)
