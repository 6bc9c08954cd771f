"""The device's configuration file: defaults, validation, and atomic saving (temporary file, then rename).

A power cut during ``save`` leaves the old or the new file, never a broken one; a missing or corrupt file gives the
defaults and a fault name, never an exception. Keys and ranges are in docs/protocol.md.
"""

import json
import os

import protocol

CONFIG_FILE = "config.json"
TEMP_FILE = "config.tmp"

DEFAULTS = {
    "interval_s": 1.0,
    "stream_hz": 2,
    "status_s": 10,
    "limit_db": None,
    "limit_hysteresis_db": 1.0,
    "calibration_db": 0.0,
    "underrange_db": None,
    "calibration_method": None,
    "calibration_time": None,
}

# key: (kind, low, high, may be None)
RULES = {
    "interval_s": ("tenths", 0.1, 3600.0, False),
    "stream_hz": ("int", 0, 10, False),
    "status_s": ("number", 1.0, 3600.0, False),
    "limit_db": ("number", 20.0, 140.0, True),
    "limit_hysteresis_db": ("number", 0.0, 20.0, False),
    "calibration_db": ("number", -20.0, 20.0, False),
    "underrange_db": ("number", 0.0, 120.0, True),
    "calibration_method": ("text", 0, 20, True),  # of the calibration in force: calibrator, reference, manual
    "calibration_time": ("time", 0, 40, True),  # its host time (ISO 8601), as in calibration.json
}

# Written by `calibrate` (and `set` of calibration_db) only, never by `set` itself.
READ_ONLY = ("calibration_method", "calibration_time")


def check(key, value):
    """The value converted to its stored form; ValueError('bad_key' or 'bad_value: ...') if it is not allowed."""
    if key not in RULES:
        raise ValueError("bad_key")
    kind, lo, hi, nullable = RULES[key]
    if value is None:
        if nullable:
            return None
        raise ValueError("bad_value: %s may not be null" % key)
    if kind == "text" or kind == "time":
        if not isinstance(value, str) or len(value) > hi or not protocol.text_ok(value):
            raise ValueError("bad_value: %s must be text of at most %d characters" % (key, hi))
        if kind == "time":
            iso_time(value)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("bad_value: %s must be a number" % key)
    if kind == "int":
        if not isinstance(value, int):
            raise ValueError("bad_value: %s must be an integer" % key)
    elif value != value or value in (float("inf"), float("-inf")):
        raise ValueError("bad_value: %s must be finite" % key)
    if not lo <= value <= hi:
        raise ValueError("bad_value: %s must be between %s and %s" % (key, lo, hi))
    if kind == "tenths":
        tenths = round(value * 10)
        if abs(value * 10 - tenths) > 1e-6:
            raise ValueError("bad_value: %s must be a multiple of 0.1" % key)
        return tenths / 10
    return value if kind == "int" else float(value)


_TIME_FORMAT = "bad_value: time must be an ISO 8601 date and time (YYYY-MM-DDTHH:MM[:SS[.fff]][Z|+HH:MM|-HH:MM])"
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _number(v, i, n, lo, hi):
    """The n-digit number at v[i:i+n]; ValueError unless it is there and between lo and hi."""
    part = v[i:i + n]
    if len(part) != n or not _ascii_digits(part) or not lo <= int(part) <= hi:
        raise ValueError(_TIME_FORMAT)
    return int(part)


def _ascii_digits(part):
    for ch in part:
        if not "0" <= ch <= "9":
            return False
    return True


def _expect(v, i, chars):
    if v[i:i + 1] == "" or v[i:i + 1] not in chars:
        raise ValueError(_TIME_FORMAT)


def iso_time(v):
    """``v`` if it is a real ISO 8601 date and time, else ValueError('bad_value: ...'): YYYY-MM-DDTHH:MM, then
    optionally :SS and a fraction, then optionally Z or +HH:MM / -HH:MM (what `slm calibrate` sends)."""
    if not isinstance(v, str):
        raise ValueError(_TIME_FORMAT)
    year = _number(v, 0, 4, 1, 9999)
    _expect(v, 4, "-")
    month = _number(v, 5, 2, 1, 12)
    _expect(v, 7, "-")
    leap = month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    _number(v, 8, 2, 1, 29 if leap else _MONTH_DAYS[month - 1])
    _expect(v, 10, "T")
    _number(v, 11, 2, 0, 23)
    _expect(v, 13, ":")
    _number(v, 14, 2, 0, 59)
    i = 16
    if v[i:i + 1] == ":":
        _number(v, i + 1, 2, 0, 60)  # 60: a leap second
        i += 3
        if v[i:i + 1] == ".":
            j = i + 1
            while _ascii_digits(v[j:j + 1]) and j < len(v) and j - i <= 9:
                j += 1
            _number(v, i + 1, max(1, j - i - 1), 0, 999999999)
            i = j
    if v[i:] in ("", "Z"):
        return v
    _expect(v, i, "+-")
    _number(v, i + 1, 2, 0, 23)
    _expect(v, i + 3, ":")
    _number(v, i + 4, 2, 0, 59)
    if len(v) != i + 6:
        raise ValueError(_TIME_FORMAT)
    return v


def load(path=CONFIG_FILE):
    """(config, fault): the saved configuration over the defaults; fault is None, 'config_missing' or
    'config_corrupt' (then the defaults are used)."""
    config = dict(DEFAULTS)
    try:
        with open(path) as f:
            saved = json.load(f)
    except OSError:
        return config, "config_missing"
    except ValueError:
        return config, "config_corrupt"
    if not isinstance(saved, dict):
        return config, "config_corrupt"
    try:
        for key, value in saved.items():
            if key == "calibration_time" and isinstance(value, str) and len(value) <= RULES[key][2]:
                config[key] = protocol.clean_text(value)  # older firmware stored it unchecked: kept, made readable
                continue
            config[key] = check(key, value)
    except ValueError:
        return dict(DEFAULTS), "config_corrupt"
    return config, None


def save(config, path=CONFIG_FILE, temp=TEMP_FILE):
    """Write the configuration atomically: the whole file to ``temp``, flushed, then renamed over ``path``."""
    text = json.dumps(config)
    with open(temp, "w") as f:
        f.write(text)
        f.flush()
    if hasattr(os, "sync"):
        os.sync()
    os.rename(temp, path)
