"""The numbers of `slm report`, computed from minute records and events (host/report_source.py) of one meter over a
period of local time: hourly LAeq, LA10/50/90 and data coverage; Ld, Ln, Ldn (GB 3096-2008) and Lday, Levening,
Lnight, Lden (EU END 2002/49/EC); the exceedance episodes and night LAFmax events. docs/reports.md defines each.

Every level over more than one minute is the energy mean of the valid minutes' LAeq (a level, some audio, no
overload), weighted by their seconds of audio. Times are the device's local clock time.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Iterable

from slm.report_source import Event, Minute, Records
from slm.utc import utc_time

NIGHT_PENALTY_DB = 10.0  # Ldn's and Lden's night weighting
DRIFT_LIMIT_DB = 0.5  # GB 3096-2008 6.2 / GB 12348: a calibrator check after measuring that differs by more voids it
CHECKED_BY = {"keys": "chains checked with the devices' keys", "collector": "marked by the collector on arrival",
              "none": "not checked (give --keys)"}
EVENING_PENALTY_DB = 5.0  # Lden's evening weighting


@dataclass(frozen=True)
class Periods:
    """Clock times (minutes of the day) that split the day: China's day 06-22 / night 22-06 and the EU's
    day / evening / night (END's defaults 07-19, 19-23, 23-07; member states may shift them)."""

    cn_day: int = 6 * 60
    cn_night: int = 22 * 60
    eu_day: int = 7 * 60
    eu_evening: int = 19 * 60
    eu_night: int = 23 * 60

    @staticmethod
    def hours(start: int, end: int) -> float:
        return ((end - start) % 1440) / 60.0


def in_span(start: int, end: int, t: int) -> bool:
    """t (minute of the day) in [start, end), past midnight when start > end."""
    return start <= t < end if start <= end else (t >= start or t < end)


def energy_mean(minutes: Iterable[Minute]) -> float | None:
    """LAeq over valid minutes, weighted by their audio seconds; None without any."""
    total = seconds = 0.0
    for m in minutes:
        if m.valid:
            total += m.s * 10 ** (m.LAeq / 10)
            seconds += m.s
    return 10 * math.log10(total / seconds) if seconds > 0 and total > 0 else None


def _weighted_mean(pairs: list[tuple[float, float]]) -> float | None:
    w = sum(s for _, s in pairs)
    return sum(v * s for v, s in pairs) / w if w > 0 else None


@dataclass
class Hour:
    start: dt.datetime  # local
    minutes: int  # valid minutes
    coverage: float  # valid minutes / 60
    LAeq: float | None
    LAFmax: float | None
    LA10: float | None  # the minutes' LA10/50/90, averaged weighted by audio seconds
    LA50: float | None
    LA90: float | None
    limit: float | None  # the lowest limit in force in the hour

    @property
    def margin(self) -> float | None:
        return None if self.LAeq is None or self.limit is None else self.LAeq - self.limit


def hourly(minutes: list[Minute], start: dt.datetime, end: dt.datetime) -> list[Hour]:
    """One row per clock hour that overlaps [start, end) (local)."""
    by_hour: dict[dt.datetime, list[Minute]] = {}
    for m in minutes:
        by_hour.setdefault(m.local.replace(minute=0, second=0, microsecond=0), []).append(m)
    hours = []
    h = start.replace(minute=0, second=0, microsecond=0)
    while h < end:
        ms = by_hour.get(h, [])
        valid = [m for m in ms if m.valid]
        limits = [m.limit for m in ms if m.limit is not None]
        stats = {k: _weighted_mean([(getattr(m, k), m.s) for m in valid if getattr(m, k) is not None])
                 for k in ("LA10", "LA50", "LA90")}
        hours.append(Hour(h, len(valid), len(valid) / 60.0, energy_mean(valid),
                          max((m.LAFmax for m in valid if m.LAFmax is not None), default=None),
                          stats["LA10"], stats["LA50"], stats["LA90"], min(limits) if limits else None))
        h += dt.timedelta(hours=1)
    return hours


def _clock(m: Minute) -> int:
    return m.local.hour * 60 + m.local.minute


def _combine(parts: list[tuple[float | None, float, float]]) -> float | None:
    """10 lg of the hours-weighted mean of 10^((L + penalty)/10) over (L, penalty, hours); None when a part is."""
    known = [(level, p, h) for level, p, h in parts if level is not None]
    if len(known) < len(parts):
        return None
    total = sum(h for _, _, h in known)
    return 10 * math.log10(sum(h * 10 ** ((level + p) / 10) for level, p, h in known) / total)


@dataclass
class Indicators:
    Ld: float | None
    Ln: float | None
    Ldn: float | None
    Lday: float | None
    Levening: float | None
    Lnight: float | None
    Lden: float | None

    def rows(self) -> list[tuple[str, float | None]]:
        return list(vars(self).items())


def indicators(minutes: list[Minute], p: Periods) -> Indicators:
    def over(start: int, end: int) -> float | None:
        return energy_mean(m for m in minutes if in_span(start, end, _clock(m)))

    ld, ln = over(p.cn_day, p.cn_night), over(p.cn_night, p.cn_day)
    lday, leve, lnight = over(p.eu_day, p.eu_evening), over(p.eu_evening, p.eu_night), over(p.eu_night, p.eu_day)
    ldn = _combine([(ld, 0.0, p.hours(p.cn_day, p.cn_night)), (ln, NIGHT_PENALTY_DB, p.hours(p.cn_night, p.cn_day))])
    lden = _combine([(lday, 0.0, p.hours(p.eu_day, p.eu_evening)),
                     (leve, EVENING_PENALTY_DB, p.hours(p.eu_evening, p.eu_night)),
                     (lnight, NIGHT_PENALTY_DB, p.hours(p.eu_night, p.eu_day))])
    return Indicators(ld, ln, ldn, lday, leve, lnight, lden)


@dataclass
class Day:
    date: dt.date  # China's day starts at its day start on this date and its night ends the next morning
    indicators: Indicators


def daily(minutes: list[Minute], p: Periods, start: dt.datetime, end: dt.datetime) -> list[Day]:
    """The indicators of each day of the period: China's over the 24 h from the day start of that date (its night
    is the one after it), the EU's over the 24 h from the EU day start."""
    def window(date: dt.date, at: int) -> list[Minute]:
        t0 = dt.datetime.combine(date, dt.time()) + dt.timedelta(minutes=at)
        return [m for m in minutes if t0 <= m.local < t0 + dt.timedelta(days=1)]

    days = []
    date = (start - dt.timedelta(minutes=min(p.cn_day, p.eu_day))).date()
    while dt.datetime.combine(date, dt.time()) + dt.timedelta(minutes=min(p.cn_day, p.eu_day)) < end:
        cn, eu = indicators(window(date, p.cn_day), p), indicators(window(date, p.eu_day), p)
        ind = Indicators(cn.Ld, cn.Ln, cn.Ldn, eu.Lday, eu.Levening, eu.Lnight, eu.Lden)
        if any(v is not None for _, v in ind.rows()):
            days.append(Day(date, ind))
        date += dt.timedelta(days=1)
    return days


@dataclass
class Episode:
    start: dt.datetime  # local
    end: dt.datetime | None  # None: still open at the end of the records
    duration_s: float | None
    LAeq: float | None
    LAFmax: float | None
    limit: float | None
    band: str | None
    interrupted: bool
    records: str = ""  # the verification state of its minutes and events (see `trust`)
    calibration: str = ""  # the calibration in force at its start, and the last check's drift

    @property
    def margin(self) -> float | None:
        return None if self.LAeq is None or self.limit is None else self.LAeq - self.limit


@dataclass
class NightMax:
    time: dt.datetime  # local, the minute's start
    LAFmax: float
    threshold: float | None  # the limit in force + 15 dB (the event's `limit`, docs/protocol.md)

    @property
    def margin(self) -> float | None:
        """Over the limit + 15 dB."""
        return None if self.threshold is None else self.LAFmax - self.threshold


def _num(v) -> float | None:
    return None if v is None or v == "" else float(v)


def episodes(events: list[Event], offset: dt.timedelta, start: dt.datetime, end: dt.datetime) -> list[Episode]:
    """The episodes that start in [start, end) (local): each `exceedance_end`, and an `exceedance_start` without one
    (open)."""
    def local(text: str) -> dt.datetime:
        return (utc_time(text) + offset).replace(tzinfo=None)

    ended = {e.fields["start"] for e in events if e.kind == "exceedance_end"}
    out = []
    for e in events:
        f = e.fields
        if e.kind == "exceedance_end" or (e.kind == "exceedance_start" and f["start"] not in ended):
            closed = e.kind == "exceedance_end"
            out.append(Episode(local(f["start"]), local(f["end"]) if closed else None,
                               _num(f.get("duration_s")) if closed else None, _num(f.get("LAeq")),
                               _num(f.get("LAFmax")), _num(f.get("limit")), f.get("band"),
                               closed and f.get("interrupted") in (True, "true")))
    return sorted((ep for ep in out if start <= ep.start < end), key=lambda ep: ep.start)


def night_max(events: list[Event], offset: dt.timedelta, start: dt.datetime, end: dt.datetime) -> list[NightMax]:
    out = [NightMax((utc_time(e.fields["time"]) + offset).replace(tzinfo=None), float(e.fields["LAFmax"]),
                    _num(e.fields.get("limit")))
           for e in events if e.kind == "night_max"]
    return sorted((n for n in out if start <= n.time < end), key=lambda n: n.time)


@dataclass
class MeterReport:
    device: str
    site: str | None
    minutes: list[Minute]  # of the period
    hours: list[Hour]
    indicators: Indicators  # over the whole period
    days: list[Day]
    episodes: list[Episode]
    night_max: list[NightMax]
    coverage: float  # valid minutes / minutes of the period
    calibration: dict | None  # the calibration in force (the device's last hello in a database), None: unknown
    verification: str = ""  # the state of its records in the period (see `trust`)
    calibrations: list[Event] = field(default_factory=list)  # its audit trail's calibration entries
    drift: str | None = None  # data after a check that found a drift over DRIFT_LIMIT_DB


@dataclass
class Report:
    source: str
    start: dt.datetime  # local, the period [start, end)
    end: dt.datetime
    site: str | None
    periods: Periods
    meters: list[MeterReport] = field(default_factory=list)
    untimed: int = 0


def trust(states: list[str]) -> str:
    """The verification state of a set of records, in words: "valid (12)", "FAILED 2 of 12", "unsigned (12)"..."""
    if not states:
        return "no records"
    n = len(states)
    count = {k: states.count(k) for k in ("valid", "failed", "unsigned", "unchecked")}
    if count["failed"]:
        return f"FAILED {count['failed']} of {n}"
    if count["valid"] == n:
        return f"valid ({n})"
    parts = [f"{k} {count[k]}" for k in ("valid", "unchecked", "unsigned") if count[k]]
    return ", ".join(parts)


def _ms(text) -> int | None:
    from slm.firmware.record_ring import parse_time

    got = parse_time(text) if isinstance(text, str) else None
    return got[0] if got else None


def calibration_at(audits: list[Event], hello_cal: dict | None, utc_ms: int | None) -> tuple[str, float | None]:
    """(the calibration in force at utc_ms in words, the drift of the last check since it when over the limit)."""
    cals = [e for e in audits if e.kind == "calibration" and _ms(e.fields.get("utc")) is not None
            and (utc_ms is None or _ms(e.fields.get("utc")) <= utc_ms)]
    last = next((e for e in reversed(cals) if e.fields.get("kind") != "check"), None)
    if last is not None:
        f = last.fields
        after = f.get("after")
        text = f"{f.get('method') or 'calibrate'} {f.get('time') or f.get('utc')}" + (
            f", offset {after:+.2f} dB" if isinstance(after, (int, float)) else "") + f" (audit, {f.get('_state')})"
    elif hello_cal:
        off = hello_cal.get("offset_db")
        text = f"{hello_cal.get('method') or 'never calibrated'} {hello_cal.get('time') or ''}".strip() + (
            f", offset {off:+.2f} dB" if isinstance(off, (int, float)) else "") + " (the device's hello)"
    else:
        text = "unknown (not in this source)"
    checks = [e for e in cals[cals.index(last) + 1 if last is not None else 0:] if e.fields.get("kind") == "check"]
    drift = next((e.fields.get("drift_db") for e in reversed(checks)
                  if isinstance(e.fields.get("drift_db"), (int, float))), None)
    if drift is not None:
        text += f"; last check: drift {drift:+.2f} dB"
    return text, drift if drift is not None and abs(drift) > DRIFT_LIMIT_DB else None


def _drift_note(audits: list[Event], mins: list[Minute]) -> str | None:
    """The first check whose drift is over the limit, and the minutes after it until the next calibration."""
    for i, e in enumerate(audits):
        d = e.fields.get("drift_db")
        if e.kind == "calibration" and e.fields.get("kind") == "check" and isinstance(d, (int, float)) and \
                abs(d) > DRIFT_LIMIT_DB:
            at = _ms(e.fields.get("utc"))
            redo = next((_ms(x.fields.get("utc")) for x in audits[i + 1:] if x.kind == "calibration"
                         and x.fields.get("kind") != "check"), None)
            after = [m for m in mins if at is not None and m.start.timestamp() * 1000 >= at
                     and (redo is None or m.start.timestamp() * 1000 < redo)]
            return (f"a calibrator check at {e.fields.get('utc')} found a drift of {d:+.2f} dB (over "
                    f"{DRIFT_LIMIT_DB} dB, GB 3096-2008): {len(after)} minutes after it are flagged"
                    + ("" if redo is None else " (until the next calibration)"))
    return None


def _episode_records(ep: Episode, mins: list[Minute], evs: list[Event], offset: dt.timedelta,
                     end: dt.datetime) -> list[str]:
    stop = ep.end or end
    states = [m.state for m in mins if ep.start <= m.local < stop]
    for e in evs:
        if e.kind in ("exceedance_start", "exceedance_end") and e.fields.get("start") and \
                (utc_time(e.fields["start"]) + offset).replace(tzinfo=None) == ep.start:
            states.append(e.fields.get("_state", "unchecked"))
    return states


def build_report(records: Records, start: dt.datetime | None, end: dt.datetime | None, site: str | None,
                 periods: Periods = Periods()) -> Report:
    """The report of every meter in the records over [start, end) local time (None: from the first minute's hour to
    the end of the last minute's hour)."""
    if start is None or end is None:
        times = [m.local for m in records.minutes]
        if not times:
            start = start or dt.datetime(2000, 1, 1)
            end = end or start + dt.timedelta(hours=1)
        else:
            start = start or min(times).replace(minute=0, second=0, microsecond=0)
            end = end or max(times).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    report = Report(records.source, start, end, site, periods, untimed=records.untimed)
    minutes_of: dict[str, list[Minute]] = {}
    events_of: dict[str, list[Event]] = {}
    for m in records.minutes:
        minutes_of.setdefault(m.device, [])
        if start <= m.local < end:
            minutes_of[m.device].append(m)
    for e in records.events:
        events_of.setdefault(e.device, []).append(e)
    audits_of: dict[str, list[Event]] = {}
    for e in records.audits:
        audits_of.setdefault(e.device, []).append(e)
    for device in sorted(minutes_of.keys() | events_of.keys()):
        mins, evs = minutes_of.get(device, []), events_of.get(device, [])
        audits = audits_of.get(device, [])
        offset = records.offsets.get(device, dt.timedelta(0))
        period_minutes = (end - start).total_seconds() / 60
        eps = episodes(evs, offset, start, end)
        hello_cal = records.calibration.get(device)
        for ep in eps:
            ep.records = trust(_episode_records(ep, mins, evs, offset, end))
            at = ep.start - offset
            ep.calibration, _ = calibration_at(audits, hello_cal, int(at.replace(tzinfo=dt.timezone.utc).timestamp()
                                                                      * 1000))
        states = [m.state for m in mins] + [e.fields.get("_state", "unchecked") for e in evs]
        report.meters.append(MeterReport(
            device, next((m.site for m in mins if m.site), site), mins, hourly(mins, start, end),
            indicators(mins, periods), daily(mins, periods, start, end), eps, night_max(evs, offset, start, end),
            sum(m.valid for m in mins) / period_minutes, hello_cal,
            f"{trust(states)}: {CHECKED_BY[records.checked]}",
            [e for e in audits if e.kind == "calibration"], _drift_note(audits, mins)))
    return report
