"""The device's configuration file: defaults, validation, and atomic saving (temporary file, then rename).

A power cut during ``save`` leaves the old or the new file, never a broken one; a missing or corrupt file gives the
defaults and a fault name, never an exception. Keys and ranges are in docs/protocol.md.
"""

import json
import os

import limits
import protocol

CONFIG_FILE = "config.json"
TEMP_FILE = "config.tmp"

DEFAULTS = {  # type: dict
    "interval_s": 1.0,
    "stream_hz": 2,
    "status_s": 10,
    "zone": None,
    "day_start": "06:00",
    "night_start": "22:00",
    "bands": [],
    "limit_hysteresis_db": 1.0,
    "episode_min_minutes": 1,
    "tz_min": 480,
    "display_on": True,
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
    "zone": ("zone", 0, 0, True),  # GB 3096-2008 class: limits.ZONES
    "day_start": ("hhmm", 0, 0, False),
    "night_start": ("hhmm", 0, 0, False),
    "bands": ("bands", 0, 0, False),
    "limit_hysteresis_db": ("number", 0.0, 20.0, False),
    "episode_min_minutes": ("int", 1, 60, False),
    "tz_min": ("int", -720, 840, False),  # local time = UTC + tz_min minutes (no daylight saving)
    "display_on": ("bool", 0, 0, False),
    "calibration_db": ("number", -20.0, 20.0, False),
    "underrange_db": ("number", 0.0, 120.0, True),
    "calibration_method": ("text", 0, 20, True),  # of the calibration in force: calibrator, reference, manual
    "calibration_time": ("time", 0, 40, True),  # its host time (ISO 8601), as in calibration.json
}

# Written by `calibrate` (and `set` of calibration_db) only, never by `set` itself.
READ_ONLY = ("calibration_method", "calibration_time")
# Keys of older firmware, dropped when a saved configuration is loaded (the limit schedule replaced limit_db).
REMOVED = ("limit_db",)
# Left out of hello and of a `get` without keys (a list of 8 bands would not fit in a line with the rest): ask by name.
ONLY_BY_NAME = ("bands",)
MAX_BANDS_JSON = 600  # bytes of the bands list in JSON, so that a `get`/`set` of it fits in a line


def check(key, value):
    """The value converted to its stored form; ValueError('bad_key' or 'bad_value: ...') if it is not allowed."""
    if key not in RULES:
        raise ValueError("bad_key")
    kind, lo, hi, nullable = RULES[key]
    if value is None:
        if nullable:
            return None
        raise ValueError("bad_value: %s may not be null" % key)
    if kind == "zone":
        if not isinstance(value, str) or value not in limits.ZONES:
            raise ValueError("bad_value: zone must be null or one of %s (GB 3096-2008 classes)"
                             % ", ".join(sorted(limits.ZONES)))
        return value
    if kind == "hhmm":
        try:
            limits.parse_hhmm(value)
        except ValueError as e:
            raise ValueError("bad_value: %s %s" % (key, e))
        return value
    if kind == "bands":
        try:
            bands = limits.check_bands(value)
        except ValueError as e:
            raise ValueError("bad_value: bands: %s" % e)
        for b in bands:
            if not protocol.text_ok(b["name"]):
                raise ValueError("bad_value: bands: a name must be valid Unicode")
        n = len(json.dumps(bands, separators=(",", ":")).encode())
        if n > MAX_BANDS_JSON:
            raise ValueError("bad_value: bands: %d bytes in JSON, at most %d: use shorter names" % (n, MAX_BANDS_JSON))
        return bands
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("bad_value: %s must be true or false" % key)
        return value
    if kind == "text" or kind == "time":
        if not isinstance(value, str) or len(value) > hi or not protocol.text_ok(value):
            raise ValueError("bad_value: %s must be text of at most %d characters" % (key, hi))
        if kind == "time":
            protocol.iso_time(value)
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


def check_together(config):
    """ValueError('bad_value: ...') when values that are each allowed do not go together (``set`` checks the
    configuration it would save, so nothing changes when this fails)."""
    if config["day_start"] == config["night_start"]:
        raise ValueError("bad_value: day_start and night_start must differ")


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
            if key in REMOVED:
                continue
            if key == "calibration_time" and isinstance(value, str) and len(value) <= RULES[key][2]:
                config[key] = protocol.clean_text(value)  # older firmware stored it unchecked: kept, made readable
                continue
            config[key] = check(key, value)
        check_together(config)
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
