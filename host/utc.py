"""UTC times as the device writes them ("2026-07-15T13:50:00.250Z"): text to an aware datetime and back, in one
place for the link, the monitor and the report."""

from __future__ import annotations

import datetime as dt
from typing import Any

UTC = dt.timezone.utc


def utc_text(t: dt.datetime) -> str:
    """A time as the device writes it: UTC, milliseconds, Z."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def utc_time(text: str) -> dt.datetime:
    """ISO 8601 with Z or an offset (none: UTC) -> an aware UTC datetime; ValueError when it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"not a time: {text!r}")
    t = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).astimezone(UTC)


def parse_utc(text: Any) -> dt.datetime | None:
    """A record's time field as ``utc_time`` gives it, or None when it is absent or not a time."""
    try:
        return utc_time(text)
    except ValueError:
        return None
