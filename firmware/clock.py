"""The device's UTC clock: an anchor (UTC at a device time) advanced by the audio clock, and ISO 8601 text.

The anchor is taken from the RTC at boot (hardware.py) and moved only by the `time` command (or NTP later); between
anchor changes UTC advances with the device time counted from the audio samples, so a minute is exactly 60 s of
audio. Everything is kept in small integers (days since 1970-01-01, milliseconds of the day, device seconds and
milliseconds) so that nothing grows into a long integer on an ESP32; only text for a record allocates.
Local time is UTC + ``tz_min`` minutes (no daylight saving).
"""

import protocol

DAY_MS = 86400000
MINUTE_MS = 60000
SOURCES = ("rtc", "host", "scenario", "ntp", "unset")


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(year, month, day) of a day number since 1970-01-01."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def parse_iso(text):
    """(day, ms of the day) in UTC for an ISO 8601 date and time (protocol.iso_time's forms; without a zone it is
    UTC). ValueError('bad_value: ...') if it is not one."""
    protocol.iso_time(text)
    day = days_from_civil(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    ms = (int(text[11:13]) * 60 + int(text[14:16])) * 60000
    i = 16
    if text[i:i + 1] == ":":
        ms += min(int(text[i + 1:i + 3]), 59) * 1000  # a leap second is read as :59
        i += 3
        if text[i:i + 1] == ".":
            j = i + 1
            while j < len(text) and "0" <= text[j] <= "9":
                j += 1
            frac = (text[i + 1:j] + "000")[:3]
            ms += int(frac)
            i = j
    if text[i:i + 1] in ("+", "-"):
        off = (int(text[i + 1:i + 3]) * 60 + int(text[i + 4:i + 6])) * 60000
        ms += -off if text[i] == "+" else off
    return normalise(day, ms)


def normalise(day, ms):
    """(day, ms) with 0 <= ms < DAY_MS."""
    if ms >= DAY_MS or ms < 0:
        day += ms // DAY_MS
        ms %= DAY_MS
    return day, ms


def format_iso(day, ms):
    """'2026-07-15T13:50:00.250Z' for a UTC day and millisecond of the day."""
    y, mo, d = civil_from_days(day)
    s = ms // 1000
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (y, mo, d, s // 3600, s // 60 % 60, s % 60, ms % 1000)


class Clock:
    """UTC as a function of device time. ``set(day, ms, sec, msec, source)`` anchors it; ``at(sec, msec)`` puts UTC
    at that device time into ``day`` and ``ms`` (False when the clock is unset); ``iso(sec, msec)`` gives the text
    or None. ``source``: where the time came from ("rtc", "host", "scenario"; "unset" before any)."""

    def __init__(self):
        self.source = "unset"
        self.a_day = 0  # the anchor: UTC (day, ms) at device time (a_sec, a_msec)
        self.a_ms = 0
        self.a_sec = 0
        self.a_msec = 0
        self.day = 0  # the result of the last at()
        self.ms = 0

    def is_set(self):
        return self.source != "unset"

    def set(self, day, ms, sec, msec, source):
        self.a_day, self.a_ms = normalise(day, ms)
        self.a_sec = sec
        self.a_msec = msec
        self.source = source

    def at(self, sec, msec):
        if self.source == "unset":
            return False
        dsec = sec - self.a_sec
        day = self.a_day + dsec // 86400
        ms = self.a_ms + (dsec % 86400) * 1000 + msec - self.a_msec
        if ms >= DAY_MS or ms < 0:
            day += ms // DAY_MS
            ms %= DAY_MS
        self.day = day
        self.ms = ms
        return True

    def iso(self, sec, msec):
        return format_iso(self.day, self.ms) if self.at(sec, msec) else None

    def step_s(self, day, ms, sec, msec):
        """Seconds from the clock's time at device time (sec, msec) to UTC (day, ms) (None when unset)."""
        if not self.at(sec, msec):
            return None
        return (day - self.day) * 86400 + (ms - self.ms) / 1000


def local_minute(day_ms, tz_min):
    """Minute of the local day (0..1439) for a UTC millisecond of the day."""
    return (day_ms // MINUTE_MS + tz_min) % 1440
