"""Judging the minutes against the limit schedule: `minute` records, exceedance episodes, `night_max` events.

``Judge.close_minute(...)`` takes one minute's levels (the meter's totals over that minute) and returns the records
to send: the ``minute`` record, then any ``event`` records (``exceedance_start``, ``exceedance_end``,
``night_max``). It runs once a minute and may allocate. Rules (docs/protocol.md, "Judging"):

- A minute is over when its LAeq is above the limit in force at its start (local time).
- An episode is declared when ``episode_min_minutes`` consecutive minutes are over; it starts at the first of them.
  It ends with the first minute whose LAeq is at or below limit - ``limit_hysteresis_db`` (the limit in force in
  that minute: an episode goes on across a band change while the level stays above the new limit - hysteresis),
  or that has no limit or no level. Its ``limit`` and ``band`` are those of its first minute.
- ``night_max``: in night hours (night_start..day_start), a minute whose LAFmax is above the limit in force + 15 dB
  (GB 3096-2008 5.1).
"""

import math

import clock
import limits

LEVEL_FIELDS = ("LAeq", "LAFmax", "LAFmin", "LA10", "LA50", "LA90", "LCpeak")


def _r2(v):
    return None if v is None else round(v, 2)


class Judge:
    """The judging state of one device: the configuration's schedule, the pending run of minutes over and the
    open episode (``episode``: a dict or None, for the display)."""

    def __init__(self, config):
        self.run = None  # minutes over, not yet an episode (or the episode's minutes): a dict
        self.episode = None  # the declared, open episode: start, limit, band, LAeq, LAFmax, duration_s, minutes_over
        self.configure(config)

    def configure(self, config):
        self.schedule = limits.Schedule(config)
        self.hysteresis = config["limit_hysteresis_db"]
        self.min_minutes = config["episode_min_minutes"]
        self.tz_min = config["tz_min"]

    def in_force(self, utc_ms):
        """(limit, band, local "HH:MM") at a UTC millisecond of the day."""
        m = clock.local_minute(utc_ms, self.tz_min)
        limit, band = self.schedule.at(m)
        return limit, band, limits.hhmm(m)

    def close_minute(self, res, seconds, start, end):
        """Records for a closed minute: [("minute", fields), ("event", fields), ...].

        res: the meter's levels over the minute (LAeq, LAFmax, LA10, LA50, LA90, LCpeak, overload);
        seconds: its seconds of audio; start: UTC (day, ms) of the minute's start (second 00), or None when the
        clock is unset; end: UTC (day, ms) when the minute closed (None when unset)."""
        limit = band = local = None
        start_iso = None
        night = False
        if start is not None:
            start_iso = clock.format_iso(start[0], start[1])
            m = clock.local_minute(start[1], self.tz_min)
            limit, band = self.schedule.at(m)
            local = limits.hhmm(m)
            night = self.schedule.is_night(m)
        laeq = res["LAeq"]
        over = None if limit is None else (laeq is not None and laeq > limit)
        rec = {"start": start_iso, "local": local, "s": round(seconds, 3)}
        for k in LEVEL_FIELDS:
            rec[k] = _r2(res[k])
        rec["overload"] = res["overload"]
        rec["band"] = band
        rec["limit"] = limit
        rec["over"] = over
        out = [("minute", rec)]
        end_iso = None if end is None else clock.format_iso(end[0], end[1])
        self._episode(rec, laeq, res["LAFmax"], seconds, limit, over, end_iso, out)
        fmax = res["LAFmax"]
        if night and limit is not None and fmax is not None and fmax > limit + limits.NIGHT_MAX_MARGIN_DB:
            out.append(("event", {"kind": "night_max", "time": start_iso, "LAFmax": _r2(fmax),
                                  "limit": limit + limits.NIGHT_MAX_MARGIN_DB, "band": band}))
        return out

    def _episode(self, rec, laeq, fmax, seconds, limit, over, end_iso, out):
        run = self.run
        if self.episode is not None:
            if run is None or limit is None or laeq is None or laeq <= limit - self.hysteresis:
                out.append(("event", self._end(self.episode, run, False)))
                run = None
            else:
                self._add(run, laeq, fmax, seconds, over, end_iso)
                self._update_episode(run)
                return
        if not over:
            self.run = None
            return
        if run is None:
            run = self.run = {"start": rec["start"], "limit": limit, "band": rec["band"], "first": _r2(laeq),
                              "energy": 0.0, "s": 0.0, "fmax": None, "over": 0, "end": None}
        self._add(run, laeq, fmax, seconds, over, end_iso)
        if run["over"] >= self.min_minutes:
            self._update_episode(run)
            out.append(("event", {"kind": "exceedance_start", "start": run["start"], "limit": run["limit"],
                                  "band": run["band"], "LAeq": run["first"]}))

    @staticmethod
    def _add(run, laeq, fmax, seconds, over, end_iso):
        run["energy"] += seconds * 10 ** (laeq / 10)
        run["s"] += seconds
        if fmax is not None and (run["fmax"] is None or fmax > run["fmax"]):
            run["fmax"] = fmax
        if over:
            run["over"] += 1
        run["end"] = end_iso

    def _update_episode(self, run):
        self.episode = {"start": run["start"], "limit": run["limit"], "band": run["band"],
                        "LAeq": _r2(10 * math.log10(run["energy"] / run["s"])), "LAFmax": _r2(run["fmax"]),
                        "duration_s": round(run["s"], 3), "minutes_over": run["over"]}

    def _end(self, ep, run, interrupted):
        fields = {"kind": "exceedance_end", "start": ep["start"], "end": run["end"] if run else None,
                  "duration_s": ep["duration_s"], "LAeq": ep["LAeq"], "LAFmax": ep["LAFmax"], "limit": ep["limit"],
                  "band": ep["band"], "minutes_over": ep["minutes_over"], "interrupted": interrupted}
        self.episode = None
        self.run = None
        return fields


def interrupted_end(start_rec, minutes):
    """The ``exceedance_end`` fields for an episode found open at boot (its ``exceedance_start`` record), from the
    minute records stored since its start (oldest first): closed as interrupted, ending 60 s after the start of the
    last stored minute (or at its start when no minute was stored)."""
    start = start_rec.get("start")
    energy = 0.0
    secs = 0.0
    fmax = None
    n_over = 0
    last = None
    for m in minutes:
        if start is None or m.get("start") is None or m["start"] < start:
            continue
        last = m["start"]
        la = m.get("LAeq")
        s = m.get("s") or 0
        if la is not None and s:
            energy += s * 10 ** (la / 10)
            secs += s
        f = m.get("LAFmax")
        if f is not None and (fmax is None or f > fmax):
            fmax = f
        if m.get("over"):
            n_over += 1
    end = start
    if last is not None:
        day, ms = clock.parse_iso(last)
        end = clock.format_iso(*clock.normalise(day, ms + clock.MINUTE_MS))
    return {"kind": "exceedance_end", "start": start, "end": end, "duration_s": round(secs, 3),
            "LAeq": _r2(10 * math.log10(energy / secs)) if secs else None, "LAFmax": _r2(fmax),
            "limit": start_rec.get("limit"), "band": start_rec.get("band"), "minutes_over": n_over,
            "interrupted": True}
