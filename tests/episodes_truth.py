"""The independent judge for issue 9's proof: minute LAeq, the limit in force, exceedance episodes and night_max from
the simulator's truth, to compare with what the firmware reports.

Written from the rules (docs/enforcement.md, the shared design of issue 9), not from the firmware: nothing here
imports firmware code. Input: truth.json's per-interval truth levels of one meter (``slm sim``; intervals of whole
seconds) and the scenario's ``start`` (local clock time with its UTC offset at scene time 0), as a virtual board's
clock starts there. The device's minutes are whole UTC minutes; local time is UTC + ``tz_min``.

Rules:
- minute: LAeq = the energy mean of its intervals (weighted by their length), LAFmax = their maximum; the limit and
  band in force at the minute's local start: the first band (in order) that covers it (start <= t < end, past
  midnight when start > end, "24:00" = end of day), else the zone's day or night limit (night: night_start ..
  day_start), else none. over = LAeq > limit (None without a limit).
- episode: declared when ``episode_min_minutes`` consecutive minutes are over, starting at the first of them; it goes
  on (whatever the band) until the first minute whose LAeq is at or below the limit in force in that minute minus
  ``limit_hysteresis_db`` (or that has no limit), which is not part of it: the episode ends at that minute's start.
  Its limit and band are its first minute's; LAeq and LAFmax over its minutes; minutes_over counts its minutes over.
- night_max: a minute in night hours with a limit whose LAFmax is above that limit + 15 dB (GB 3096-2008 5.1).

    judgement = judge_truth(truth, "facade", scenario.start, {"zone": "1"})
    judgement.episodes, judgement.night_max, judgement.minutes
    problems = compare_episodes(device_exceedance_end_events, judgement.episodes)   # [] when they match
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UTC = dt.timezone.utc
# GB 3096-2008 Table 1, LAeq limits in dB(A): zone class -> (day, night)
ZONES = {"0": (50.0, 40.0), "1": (55.0, 45.0), "2": (60.0, 50.0), "3": (65.0, 55.0), "4a": (70.0, 55.0),
         "4b": (70.0, 60.0)}
NIGHT_MAX_MARGIN_DB = 15.0
DEFAULTS: dict[str, Any] = {"zone": None, "day_start": "06:00", "night_start": "22:00", "bands": [], "limit_hysteresis_db": 1.0,
            "episode_min_minutes": 1, "tz_min": 480}


def minute_of_day(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _in_span(start: int, end: int, t: int) -> bool:
    if start <= end:
        return start <= t < end
    return t >= start or t < end


@dataclass(frozen=True)
class Rules:
    """The judging settings of one configuration (the SPEC's keys, defaults filled in)."""

    zone: str | None
    day_start: int
    night_start: int
    bands: tuple[tuple[int, int, float, str], ...]
    hysteresis_db: float
    min_minutes: int
    tz_min: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Rules":
        c = {**DEFAULTS, **config}
        bands = tuple((minute_of_day(b["start"]), minute_of_day(b["end"]), float(b["limit"]), b["name"])
                      for b in c["bands"])
        return cls(c["zone"], minute_of_day(c["day_start"]), minute_of_day(c["night_start"]), bands,
                   float(c["limit_hysteresis_db"]), int(c["episode_min_minutes"]), int(c["tz_min"]))

    def is_night(self, t: int) -> bool:
        return _in_span(self.night_start, self.day_start, t)

    def in_force(self, t: int) -> tuple[float | None, str | None]:
        """(limit, band name) at a local minute of the day."""
        for start, end, limit, name in self.bands:
            if _in_span(start, end, t):
                return limit, name
        if self.zone is None:
            return None, None
        day, night = ZONES[self.zone]
        return (night, "night") if self.is_night(t) else (day, "day")


@dataclass
class Minute:
    start: dt.datetime  # UTC
    local: str  # "HH:MM"
    s: float
    LAeq: float | None
    LAFmax: float | None
    limit: float | None
    band: str | None
    over: bool | None
    night: bool


@dataclass
class Episode:
    start: dt.datetime
    end: dt.datetime  # the start of the minute that ended it (or the end of the data: ``open``)
    limit: float | None
    band: str | None
    minutes: list[Minute] = field(default_factory=list)
    open: bool = False

    @property
    def duration_s(self) -> float:
        return sum(m.s for m in self.minutes)

    @property
    def LAeq(self) -> float | None:
        return energy_mean([(m.LAeq, m.s) for m in self.minutes])

    @property
    def LAFmax(self) -> float | None:
        return max((m.LAFmax for m in self.minutes if m.LAFmax is not None), default=None)

    @property
    def minutes_over(self) -> int:
        return sum(1 for m in self.minutes if m.over)

    def local(self, tz_min: int) -> tuple[str, str]:
        """(start, end) as local "HH:MM"."""
        start, end = ((t + dt.timedelta(minutes=tz_min)).strftime("%H:%M") for t in (self.start, self.end))
        return start, end


@dataclass
class NightMax:
    time: dt.datetime
    LAFmax: float
    limit: float
    band: str | None


@dataclass
class Judgement:
    rules: Rules
    minutes: list[Minute]
    episodes: list[Episode]
    night_max: list[NightMax]


def energy_mean(levels_and_weights) -> float | None:
    total = weight = 0.0
    for level, w in levels_and_weights:
        weight += w
        if level is not None:
            total += w * 10 ** (level / 10)
    if weight <= 0 or total <= 0:
        return None
    return 10 * math.log10(total / weight)


def minutes_from_intervals(intervals: list[dict[str, Any]], start: dt.datetime, rules: Rules) -> list[Minute]:
    """The device's minutes (whole UTC minutes) from truth intervals; ``start`` is the clock time at scene time 0."""
    t0 = start.astimezone(UTC)
    groups: dict[dt.datetime, list[dict[str, Any]]] = {}
    for iv in intervals:
        a = t0 + dt.timedelta(seconds=iv["start_s"])
        b = t0 + dt.timedelta(seconds=iv["end_s"])
        minute = a.replace(second=0, microsecond=0)
        if b > minute + dt.timedelta(minutes=1):
            raise ValueError(f"interval {iv['start_s']}..{iv['end_s']} s crosses a minute boundary: truth intervals "
                             "must divide the minute (interval_s 1 s and a start on a whole second)")
        groups.setdefault(minute, []).append(iv)
    out = []
    for minute, ivs in sorted(groups.items()):
        s = sum(iv["end_s"] - iv["start_s"] for iv in ivs)
        laeq = energy_mean([(iv["LAeq"], iv["end_s"] - iv["start_s"]) for iv in ivs])
        fmax = max((iv["LAFmax"] for iv in ivs if iv["LAFmax"] is not None), default=None)
        local = minute + dt.timedelta(minutes=rules.tz_min)
        t = local.hour * 60 + local.minute
        limit, band = rules.in_force(t)
        over = None if limit is None else (laeq is not None and laeq > limit)
        out.append(Minute(minute, local.strftime("%H:%M"), s, laeq, fmax, limit, band, over, rules.is_night(t)))
    return out


def find_episodes(minutes: list[Minute], rules: Rules) -> list[Episode]:
    episodes: list[Episode] = []
    current: Episode | None = None
    run: list[Minute] = []  # consecutive minutes over, not yet an episode
    for m in minutes:
        if current is not None:
            if m.limit is None or m.LAeq is None or m.LAeq <= m.limit - rules.hysteresis_db:
                current.end = m.start
                episodes.append(current)
                current = None
            else:
                current.minutes.append(m)
            continue
        if not m.over:
            run = []
            continue
        run.append(m)
        if len(run) >= rules.min_minutes:
            current = Episode(run[0].start, run[0].start, run[0].limit, run[0].band, list(run))
            run = []
    if current is not None:
        last = current.minutes[-1]
        current.end = last.start + dt.timedelta(seconds=last.s)
        current.open = True
        episodes.append(current)
    return episodes


def find_night_max(minutes: list[Minute]) -> list[NightMax]:
    return [NightMax(m.start, m.LAFmax, m.limit + NIGHT_MAX_MARGIN_DB, m.band) for m in minutes
            if m.night and m.limit is not None and m.LAFmax is not None
            and m.LAFmax > m.limit + NIGHT_MAX_MARGIN_DB]


def judge_truth(truth: dict[str, Any] | str | Path, meter: str, start: dt.datetime,
                config: dict[str, Any]) -> Judgement:
    """Minutes, episodes and night_max of one meter of a truth.json (dict or path) under a configuration."""
    data = truth if isinstance(truth, dict) else json.loads(Path(truth).read_text())
    rules = Rules.from_config(config)
    minutes = minutes_from_intervals(data["meters"][meter]["intervals"], start, rules)
    return Judgement(rules, minutes, find_episodes(minutes, rules), find_night_max(minutes))


def margin_db(judgement: Judgement) -> float:
    """How far the closest call is from a decision: the smallest distance of a minute's LAeq from its limit and from
    its limit - hysteresis, and of a night minute's LAFmax from its limit + 15 dB. A meter whose levels differ from
    the truth by less than this reaches the same decisions."""
    h = judgement.rules.hysteresis_db
    gaps = [math.inf]
    for m in judgement.minutes:
        if m.limit is None or m.LAeq is None:
            continue
        gaps += [abs(m.LAeq - m.limit), abs(m.LAeq - (m.limit - h))]
        if m.night and m.LAFmax is not None:
            gaps.append(abs(m.LAFmax - (m.limit + NIGHT_MAX_MARGIN_DB)))
    return min(gaps)


def parse_utc(text: str) -> dt.datetime:
    """A record's UTC ISO time ("2026-07-15T13:50:00.250Z")."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def compare_episodes(device_ends: list[dict[str, Any]], truth_episodes: list[Episode], tolerance_s: float = 60.0,
                     tolerance_db: float = 0.3) -> list[str]:
    """What differs between the device's ``exceedance_end`` events (dicts as sent: ISO start/end, LAeq) and the
    truth's episodes: the same count, start and end within ``tolerance_s``, LAeq within ``tolerance_db``. An empty
    list when they match."""
    problems = []
    if len(device_ends) != len(truth_episodes):
        problems.append(f"{len(device_ends)} episodes on the device, {len(truth_episodes)} in the truth")
    for i, (d, t) in enumerate(zip(device_ends, truth_episodes)):
        for what, device_time, truth_time in (("start", d.get("start"), t.start), ("end", d.get("end"), t.end)):
            if device_time is None:
                problems.append(f"episode {i + 1}: no {what} on the device")
                continue
            off = (parse_utc(device_time) - truth_time).total_seconds()
            if abs(off) > tolerance_s:
                problems.append(f"episode {i + 1}: {what} {device_time} is {off:+.0f} s from the truth's "
                                f"{truth_time.isoformat()}")
        la, truth_la = d.get("LAeq"), t.LAeq
        if la is None or truth_la is None or abs(la - truth_la) > tolerance_db:
            problems.append(f"episode {i + 1}: LAeq {la} on the device, {truth_la} in the truth")
    return problems
