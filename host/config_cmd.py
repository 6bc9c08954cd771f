"""`slm config`: read and change a meter's configuration over its link (show, set KEY=VALUE, limits).

Every change is one `set` command, so the device validates all values together and applies all or none; its
refusal (`bad_value`, `bad_key`) is bad input for the user (``ConfigRefused``, exit 2) with the device's own message.
The host only checks what it parses itself (``KEY=VALUE`` and the band syntax ``HH:MM-HH:MM=DB[:NAME]``) before
anything is sent; ranges, names and the number of bands are the device's to judge (docs/protocol.md).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from slm.errors import InputError

# A key whose values are names, never numbers: `zone=1` means the class "1" (GB 3096-2008 classes 0, 1, 2, 3, 4a, 4b).
TEXT_KEYS = ("zone",)
# Keys the device leaves out of a `get` of everything (too long for the line with the rest): asked for by name.
BY_NAME_KEYS = ("bands",)
REFUSAL_CODES = ("bad_value", "bad_key")

_HHMM = r"(\d\d:\d\d)"
_BAND = re.compile(_HHMM + "-" + _HHMM + r"=([^:]+)(?::(.*))?\Z", re.S)


class ConfigError(InputError):
    """Bad input to `slm config` (a KEY=VALUE or band that cannot be read): nothing was sent."""


class ConfigRefused(InputError):
    """The device refused a `set` (bad_value, bad_key): nothing changed on the device."""


# ----------------------------------------------------------------------------------------------- parsing (host)

def parse_assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value): VALUE as JSON where it parses (numbers, true/false, null, lists, objects,
    "quoted text"), else as text; a key of TEXT_KEYS keeps the text (except null)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{text!r}: give KEY=VALUE, e.g. stream_hz=5")
    if key in TEXT_KEYS and raw != "null":
        return key, raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    try:
        return key, json.loads(raw, parse_constant=_not_json)
    except ValueError:
        return key, raw


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")  # NaN, Infinity: kept as text, for the device to refuse


def parse_assignments(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    if not items:
        raise ConfigError("give at least one KEY=VALUE, e.g. `slm config set stream_hz=5`")
    values: dict[str, Any] = {}
    for item in items:
        key, value = parse_assignment(item)
        if key in values:
            raise ConfigError(f"{key} is given twice")
        values[key] = value
    return values


def _check_hhmm(text: str, what: str, allow_24: bool = False) -> str:
    if not re.fullmatch(r"\d\d:\d\d", text):
        raise ConfigError(f"{what} {text!r}: give a time as HH:MM, e.g. 22:00")
    h, m = int(text[:2]), int(text[3:])
    if not ((h <= 23 and m <= 59) or (allow_24 and text == "24:00")):
        raise ConfigError(f"{what} {text!r}: not a time of day (00:00 to 23:59{', or 24:00' if allow_24 else ''})")
    return text


def parse_band(text: str) -> dict[str, Any]:
    """``HH:MM-HH:MM=DB[:NAME]`` -> {"start", "end", "limit", "name"}; the name defaults to the span
    ("22:00-06:00"). A span may run past midnight (22:00-06:00); 24:00 is allowed as the end."""
    m = _BAND.match(text.strip())
    if not m:
        raise ConfigError(f"band {text!r}: give START-END=DB or START-END=DB:NAME, e.g. 22:00-06:00=45:night-quiet")
    start, end, limit_text, name = m.groups()
    _check_hhmm(start, f"band {text!r}: start")
    _check_hhmm(end, f"band {text!r}: end", allow_24=True)
    try:
        limit = float(limit_text)
    except ValueError:
        raise ConfigError(f"band {text!r}: the limit {limit_text!r} is not a number of dB") from None
    if limit != limit or limit in (float("inf"), float("-inf")):
        raise ConfigError(f"band {text!r}: the limit must be a finite number of dB")
    if name is None:
        name = f"{start}-{end}"
    elif not name:
        raise ConfigError(f"band {text!r}: the name after ':' is empty (leave out ':' for the default name)")
    return {"start": start, "end": end, "limit": int(limit) if limit == int(limit) else limit, "name": name}


def limit_values(zone: str | None = None, day: str | None = None, night: str | None = None,
                 bands: tuple[str, ...] | list[str] = (), clear_bands: bool = False) -> dict[str, Any]:
    """The `set` values for `slm config limits`: zone ("none" -> null), day_start, night_start, and bands (the
    given bands, in order, replace the list; --clear-bands empties it; neither leaves it as it is)."""
    values: dict[str, Any] = {}
    if zone is not None:
        values["zone"] = None if zone.strip().lower() in ("none", "null", "") else zone.strip()
    if day is not None:
        values["day_start"] = _check_hhmm(day, "--day")
    if night is not None:
        values["night_start"] = _check_hhmm(night, "--night")
    if bands and clear_bands:
        raise ConfigError("give --band ... or --clear-bands, not both (--band replaces the whole list)")
    if bands:
        values["bands"] = [parse_band(b) for b in bands]
    elif clear_bands:
        values["bands"] = []
    if not values:
        raise ConfigError("give --zone, --day, --night, --band or --clear-bands (see `slm config limits --help`)")
    return values


# ----------------------------------------------------------------------------------------------- the device

def read_config(link) -> dict[str, Any]:
    """The whole configuration (without the status fields), including the keys a `get` of everything leaves out (a device with a limit
    schedule: ``zone`` among its keys)."""
    config = dict(link.get())
    config.pop("status", None)  # a `get` of everything also brings the status fields: not configuration
    if "zone" in config:
        missing = [k for k in BY_NAME_KEYS if k not in config]
        if missing:
            config.update(link.get(missing))
    return config


def send_set(link, values: dict[str, Any]) -> dict[str, Any]:
    """One `set` of all values (the device applies all or none); its refusal becomes ConfigRefused."""
    from slm.link import DeviceError

    try:
        return link.set(**values)
    except DeviceError as e:
        if e.code in REFUSAL_CODES:
            raise ConfigRefused(f"the device refused the change, nothing was changed: {e.code}: {e.message}") from None
        raise


# ----------------------------------------------------------------------------------------------- showing

def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def format_band(band: dict[str, Any]) -> str:
    limit = band.get("limit")
    limit_text = f"{limit:g}" if isinstance(limit, (int, float)) else str(limit)
    return f"{band.get('start')}-{band.get('end')} {limit_text} dB {band.get('name')}"


def day_timeline(config: dict[str, Any]) -> list[tuple[str, str, float | None, str | None]]:
    """The limit in force through one local day: [(from "HH:MM", to "HH:MM", limit or None, band or None)], by the
    device's own schedule rules (slm.firmware.limits)."""
    from slm.firmware import limits

    schedule = limits.Schedule(config)
    spans: list[list[Any]] = []
    for minute in range(limits.DAY_MINUTES):
        limit, band = schedule.at(minute)
        if spans and spans[-1][2] == limit and spans[-1][3] == band:
            spans[-1][1] = minute + 1
        else:
            spans.append([minute, minute + 1, limit, band])
    return [(limits.hhmm(a), "24:00" if b == limits.DAY_MINUTES else limits.hhmm(b), lim, band)
            for a, b, lim, band in spans]


def clock_line(utc: str | None, tz_min: int | None, source: str | None) -> str:
    """The device's time as UTC and local time, and where it came from ("rtc", "host", "scenario", "unset")."""
    if not utc:
        return f"not set ({source})"
    try:
        t = dt.datetime.fromisoformat(utc.replace("Z", "+00:00"))
    except ValueError:
        return f"{utc} ({source})"
    local = ""
    if isinstance(tz_min, int):
        local = f", local {(t + dt.timedelta(minutes=tz_min)).strftime('%Y-%m-%d %H:%M:%S')} (UTC{tz_min / 60:+g} h)"
    return f"{t.strftime('%Y-%m-%d %H:%M:%S')} UTC{local}, from {source}"


def describe(config: dict[str, Any], hello: dict[str, Any] | None = None, port: str | None = None,
             utc: str | None = None) -> list[str]:
    """The configuration as readable lines: the device (and its clock: ``utc`` of its reply to ``info``), every key,
    the bands one per line, and (with a limit schedule) the limit in force through the day."""
    lines = []
    if hello:
        lines.append(f"device {hello.get('serial')} on {port} (firmware {hello.get('fw')}, board {hello.get('board')}, "
                     f"protocol {hello.get('proto')})")
        if "clock" in hello:
            lines.append(f"clock  {clock_line(utc, config.get('tz_min'), hello.get('clock'))}")
    keys = sorted(k for k in config if k != "bands")
    width = max([len(k) for k in keys] + [5])
    for k in keys:
        lines.append(f"  {k:<{width}}  {format_value(config[k])}")
    if "bands" in config:
        bands = config["bands"] or []
        lines.append(f"  {'bands':<{width}}  {len(bands) or 'none'}")
        for i, b in enumerate(bands, 1):
            lines.append(f"    {i}. {format_band(b)}")
    if "zone" in config:
        timeline = day_timeline(config)
        lines.append("limit in force through the local day (first band that covers a time, else the zone's day/night):")
        for a, b, limit, band in timeline:
            lines.append(f"  {a}-{b}  " + (f"{limit:g} dB  {band}" if limit is not None else "no limit"))
    return lines
