"""The live view of a site for `slm serve`: each meter's newest level, the minute judged, the limit in force and the
state the device's sign would show (firmware/display.py's `display_state`, so the page and the sign agree), built
from the database (host/serve_data.py) at most once per `LiveViews.ttl_s` per site however many pages watch it, and
sent to each page once a second as server-sent events.

Levels are given as numbers (dB, as stored) and as the text shown: one decimal, rounded as the sign rounds (tenths
of a dB, half away from zero, `display.tenths`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time

from slm.firmware.display import display_state, tenths
from slm.serve_data import FleetReader, parse_utc, utc_text

STREAM_PERIOD_S = 1.0
OFFLINE = "offline"  # beyond the sign's states: the broker published the device's last will


def level_text(db: float | None) -> str:
    """One decimal as the sign shows it; "--.-" without a level."""
    t = tenths(db)
    if t is None:
        return "--.-"
    return f"{'-' if t < 0 else ''}{abs(t) // 10}.{abs(t) % 10}"


def meter_view(device: dict, interval: dict | None, minute: dict | None, status: dict | None) -> dict:
    """One meter's entry of the live view."""
    faults = [f for f in (status or {}).get("faults", "").split(",") if f] if status else []
    live = None
    if interval is not None:
        live = {"utc": interval["utc"], "laeq": interval["laeq"], "lafmax": interval["lafmax"],
                "overload": bool(interval["overload"]), "text": level_text(interval["laeq"])}
    judged = None
    if minute is not None:
        judged = {"start": minute["start"], "local": minute["local"], "s": minute["s"], "laeq": minute["laeq"],
                  "lafmax": minute["lafmax"], "overload": bool(minute["overload"]), "band": minute["band"],
                  "limit": minute["limit_db"], "over": None if minute["over"] is None else bool(minute["over"]),
                  "text": level_text(minute["laeq"]),
                  "limit_text": "none" if minute["limit_db"] is None else level_text(minute["limit_db"])}
    if device["online"] is False:
        state = OFFLINE
    else:
        overload = bool(judged and judged["overload"]) or bool(live and live["overload"])
        state = display_state(judged["laeq"] if judged else None, judged["limit"] if judged else None, faults,
                              overload, judged["over"] if judged else None)
    return {"device": device["device"], "online": device["online"], "last_seen": device["last_seen"],
            "state": state, "faults": faults, "live": live, "minute": judged}


def site_view(reader: FleetReader, site: str) -> dict | None:
    """The site's meters now, or None for a site the database does not know."""
    devices = reader.devices(site)
    if not devices:
        return None
    ids = [d["device"] for d in devices]
    intervals, minutes, statuses = reader.newest(ids)
    meters = [meter_view(d, intervals.get(d["device"]), minutes.get(d["device"]), statuses.get(d["device"]))
              for d in devices]
    starts = [m["minute"]["start"] for m in meters if m["minute"]]
    newest_end = utc_text(parse_utc(max(starts)) + dt.timedelta(minutes=1)) if starts else None
    return {"site": site, "built": utc_text(dt.datetime.now(dt.timezone.utc)), "newest_minute_end": newest_end,
            "meters": meters}


class LiveViews:
    """The newest view of each site, rebuilt when older than `ttl_s` (one query per site and period, however many
    streams read it)."""

    def __init__(self, reader: FleetReader, ttl_s: float = 0.5):
        self.reader = reader
        self.ttl_s = ttl_s
        self._views: dict[str, tuple[float, dict | None, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, site: str) -> dict | None:
        return self._entry(site)[0]

    def get_json(self, site: str) -> str:
        """The view as JSON text, encoded once per rebuild (every stream sends the same text)."""
        return self._entry(site)[1]

    def _entry(self, site: str) -> tuple[dict | None, str]:
        with self._guard:
            lock = self._locks.setdefault(site, threading.Lock())
        with lock:  # one rebuild at a time per site; the others wait for it and take its result
            at, view, text = self._views.get(site, (-1e9, None, "null"))
            if time.monotonic() - at >= self.ttl_s:
                view = site_view(self.reader, site)
                text = json.dumps(view, separators=(",", ":"))
                self._views[site] = (time.monotonic(), view, text)
            return view, text


async def event_stream(views: LiveViews, site: str, stopping: asyncio.Event):
    """Server-sent events: `live` with the site's view as JSON, once a second, until the client leaves (the
    framework cancels this generator) or the server stops."""
    from starlette.concurrency import run_in_threadpool

    yield "retry: 2000\n\n"
    n = 0
    while not stopping.is_set():
        text = await run_in_threadpool(views.get_json, site)
        n += 1
        yield f"id: {n}\nevent: live\ndata: {text}\n\n"
        try:
            await asyncio.wait_for(stopping.wait(), STREAM_PERIOD_S)
        except asyncio.TimeoutError:
            pass
