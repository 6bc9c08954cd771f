"""The limit schedule: which LAeq limit (dB) and band name are in force at a local minute of the day.

The configuration (config_store) holds a GB 3096-2008 zone class, the day/night hours and up to 8 local bands.
The limit in force at a local time: the FIRST band (in list order) that covers it; else the zone's day or night
limit; else none. Times are minutes of the local day (0..1439); a band covers start <= t < end, and runs past
midnight when start > end (22:00-06:00); end "24:00" is the end of the day.
"""

# GB 3096-2008 table 1: LAeq limits (dB) by acoustic environment zone class, (day, night)
ZONES = {"0": (50.0, 40.0), "1": (55.0, 45.0), "2": (60.0, 50.0), "3": (65.0, 55.0), "4a": (70.0, 55.0),
         "4b": (70.0, 60.0)}
NIGHT_MAX_MARGIN_DB = 15.0  # GB 3096-2008 5.1: at night a single event's LAFmax may exceed the limit by at most this
MAX_BANDS = 8
BAND_NAME_CHARS = 16
BAND_LIMIT_RANGE = (20.0, 140.0)
DAY_MINUTES = 1440


def parse_hhmm(text, allow_24=False):
    """Minutes of the day for "HH:MM" (00:00..23:59; also "24:00" -> 1440 with ``allow_24``); ValueError if not."""
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":":
        raise ValueError("must be \"HH:MM\"")
    hh, mm = text[:2], text[3:]
    for ch in hh + mm:
        if not "0" <= ch <= "9":
            raise ValueError("must be \"HH:MM\"")
    h, m = int(hh), int(mm)
    if allow_24 and h == 24 and m == 0:
        return DAY_MINUTES
    if h > 23 or m > 59:
        raise ValueError("must be a time from 00:00 to 23:59" + (" (or 24:00)" if allow_24 else ""))
    return 60 * h + m


def hhmm(minute):
    """ "HH:MM" for a minute of the day."""
    return "%02d:%02d" % (minute // 60, minute % 60)


def covers(start, end, minute):
    """Whether the span start..end (minutes; past midnight when start > end) covers ``minute``."""
    if start < end:
        return start <= minute < end
    if start > end:
        return minute >= start or minute < end
    return False  # an empty span


class Schedule:
    """The schedule of one configuration, parsed once: ``at(minute)`` -> (limit dB or None, band name or None),
    ``is_night(minute)``. Built from checked configuration values (config_store.check)."""

    def __init__(self, config):
        zone = config.get("zone")
        self.zone = ZONES[zone] if zone is not None else None
        self.day_start = parse_hhmm(config.get("day_start", "06:00"))
        self.night_start = parse_hhmm(config.get("night_start", "22:00"))
        self.bands = [(parse_hhmm(b["start"]), parse_hhmm(b["end"], True), b["limit"], b["name"])
                      for b in config.get("bands") or ()]

    def is_night(self, minute):
        return covers(self.night_start, self.day_start, minute)

    def at(self, minute):
        """(limit, band) in force at a local minute of the day (0..1439)."""
        for start, end, limit, name in self.bands:
            if covers(start, end, minute):
                return limit, name
        if self.zone is None:
            return None, None
        if self.is_night(minute):
            return self.zone[1], "night"
        return self.zone[0], "day"


def check_bands(value):
    """The bands in their stored form (a new list of dicts), or ValueError with the reason (no key prefix)."""
    if not isinstance(value, list):
        raise ValueError("must be a list of {start, end, limit, name}")
    if len(value) > MAX_BANDS:
        raise ValueError("at most %d bands, got %d" % (MAX_BANDS, len(value)))
    out = []
    for i, b in enumerate(value):
        where = "band %d: " % (i + 1)
        if not isinstance(b, dict):
            raise ValueError(where + "must be an object {start, end, limit, name}")
        for k in b:
            if k not in ("start", "end", "limit", "name"):
                raise ValueError(where + "unknown field %s" % (k if isinstance(k, str) and len(k) <= 20 else "?"))
        for k in ("start", "end", "limit", "name"):
            if k not in b:
                raise ValueError(where + "%s is missing" % k)
        try:
            start = parse_hhmm(b["start"])
        except ValueError as e:
            raise ValueError(where + "start " + str(e))
        try:
            end = parse_hhmm(b["end"], True)
        except ValueError as e:
            raise ValueError(where + "end " + str(e))
        if start == end:
            raise ValueError(where + "start and end are the same time (use 00:00-24:00 for the whole day)")
        limit = b["limit"]
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit != limit:
            raise ValueError(where + "limit must be a number (dB)")
        lo, hi = BAND_LIMIT_RANGE
        if not lo <= limit <= hi:
            raise ValueError(where + "limit must be between %s and %s dB" % (lo, hi))
        name = b["name"]
        if not isinstance(name, str) or not 1 <= len(name) <= BAND_NAME_CHARS:
            raise ValueError(where + "name must be text of 1 to %d characters" % BAND_NAME_CHARS)
        if name in ("day", "night"):
            raise ValueError(where + "name may not be \"day\" or \"night\" (the zone's own periods)")
        for ch in name:
            if ch < " " or ch == "\x7f":
                raise ValueError(where + "name may not hold control characters")
        out.append({"start": b["start"], "end": b["end"], "limit": float(limit), "name": name})
    return out
