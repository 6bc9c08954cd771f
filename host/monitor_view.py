"""The monitor's table (``render_table``): one row per board, as a ``rich`` table, for the live view and the end."""

from __future__ import annotations

import os
import time
from typing import Sequence

from slm.link import CONNECTED, LOST, RECONNECTING, REFUSED
from slm.monitor_state import SILENT, MonitorState, WindowLeq

BAR_RANGE_DB = (30.0, 110.0)
BAR_WIDTH = 12
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def _fmt_db(x: float | None) -> str:
    return "–" if x is None else "%.1f" % x


def _fmt_device_time(ms: int | None) -> str:
    """Device time (ms since the device started) as h:mm:ss."""
    if ms is None:
        return "–"
    s = ms // 1000
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)


def _fmt_age(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 10:
        return "%.1f s" % s
    if s < 120:
        return "%d s" % s
    if s < 7200:
        return "%d min" % (s // 60)
    return "%d h" % (s // 3600)


def _short_port(port: str) -> str:
    """``/dev/ttyACM0`` -> ``ttyACM0``, ``/dev/pts/3`` -> ``pts/3``; other paths: the file name."""
    return port[5:] if port.startswith("/dev/") else (os.path.basename(port) or port)


def level_bar(value: float | None, limit: float | None, width: int = BAR_WIDTH,
              lo: float = BAR_RANGE_DB[0], hi: float = BAR_RANGE_DB[1], dim: bool = False):
    """A bar meter as ``rich.text.Text``: ``width`` cells from ``lo`` to ``hi`` dB at eighth-cell resolution, green
    up to the limit and red above it (grey when ``dim``); the limit is a ``┃`` in its cell."""
    from rich.text import Text

    text = Text()
    span = hi - lo
    fill = 0.0 if value is None else min(max((value - lo) / span, 0.0), 1.0) * width
    limit_cell = None if limit is None else min(max(int((limit - lo) / span * width), 0), width - 1)
    over = value is not None and limit is not None and value > limit
    colour = "grey50" if dim else ("red" if over else "green")
    for cell in range(width):
        part = fill - cell
        if cell == limit_cell:
            text.append("┃", style="bold red" if over else "bold yellow")
        elif part >= 1:
            text.append("█", style=colour)
        elif part > 0:
            text.append(_EIGHTHS[int(part * 8)], style=colour)
        else:
            text.append("·", style="grey30")
    return text


def _link_cell(st: MonitorState, now_mono: float):
    from rich.text import Text

    state = st.end_state or st.view_state
    text = Text()
    if state == SILENT:
        since = st.last_record_mono if st.last_record_mono is not None else st.state_since
        text.append("SILENT %s" % _fmt_age(None if since is None else now_mono - since), style="bold red")
    elif state == CONNECTED:
        text.append("connected", style="green")
        text.append(" %s" % _fmt_age(st.record_age(now_mono)), style="dim")
    elif state in (LOST, RECONNECTING):
        lost_for = None if st.lost_since is None else now_mono - st.lost_since
        text.append("LOST %s" % _fmt_age(lost_for), style="bold red")
        if state == RECONNECTING:
            text.append(" reconnecting", style="yellow")
    elif state == REFUSED:
        text.append("REFUSED", style="bold red")
    else:
        text.append(state, style="dim")
    s = st.link_stats
    gaps, lost = s.get("gaps", 0), s.get("lost_records", 0)
    counts = []
    if gaps:
        counts.append("gaps %d (%d lost)" % (gaps, lost))
    for key, label in (("bad_lines", "bad"), ("reconnects", "reconn"), ("restarts", "restarts")):
        if s.get(key):
            counts.append("%s %d" % (label, s[key]))
    text.append("\n")
    text.append(" ".join(counts) if counts else "no gaps", style="yellow" if counts else "dim")
    return text


def _device_cell(st: MonitorState):
    from rich.text import Text

    text = Text()
    faults = st.device_faults()
    status = st.status or {}
    if st.overload:
        text.append("OVERLOAD ", style="bold red")
    if faults:
        text.append(",".join(faults), style="yellow")
    elif not st.overload:
        text.append("ok", style="green")
    parts = []
    for key in ("dropped", "late"):
        v = status.get(key)
        if isinstance(v, int) and v:
            parts.append(("%s %d" % (key, v), "yellow"))
    heap = status.get("heap_free")
    if isinstance(heap, int):
        parts.append(("heap %dk" % (heap // 1024), "dim"))
    if parts:
        text.append("\n")
        for k, (p, style) in enumerate(parts):
            text.append((" " if k else "") + p, style=style)
    return text


def _leq_cell(w: WindowLeq, limit: float | None):
    from rich.text import Text

    style = "bold red" if (w.db is not None and limit is not None and w.db > limit) else ""
    text = Text(_fmt_db(w.db), style=style)
    if w.partial:
        text.append(" (%ds)" % w.coverage_s if w.coverage_s >= 1 else " (%.1fs)" % w.coverage_s, style="dim")
    if w.db is not None and w.source == "level":
        text.append("~", style="dim")
    return text


def _limit_cell(st: MonitorState):
    from rich.text import Text

    limit = st.limit_db
    text = Text()
    if limit is None:
        text.append("none", style="dim")
        if st.device_over:
            text.append(" OVER", style="bold white on red")
        return text
    text.append("%g " % limit)
    reasons = st.over_reasons
    if reasons:
        text.append("OVER", style="bold white on red")
        text.append("\n" + " ".join(reasons), style="red")
    else:
        text.append("ok", style="green")
        if st.over_s > 0:
            text.append("\nwas over %s" % _fmt_age(st.over_s), style="yellow")
    return text


def render_table(states: Sequence[MonitorState], now_mono: float | None = None, title: str | None = None,
                 caption: str | None = None, bar: bool = True):
    """A ``rich.table.Table``, one row per board: name, bar meter and LAF, LAeq 1 s, LAeq 1 min (with the seconds
    covered while partial, ``~`` when from level records), LAFmax @ device time, LCpeak (max), limit and OVER,
    link (state; gaps, bad lines, reconnects, restarts), device (overload, faults; dropped, late, heap).
    Fits 140 columns; ``bar=False`` leaves the bar out (the summary)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    now_mono = time.monotonic() if now_mono is None else now_mono
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False,
                  collapse_padding=True)
    table.add_column("Board", no_wrap=True, max_width=16)
    table.add_column("LAF" if not bar else "LAF (30–110 dB)", no_wrap=True, justify="right" if not bar else "left")
    table.add_column("LAeq 1s", justify="right", no_wrap=True)
    table.add_column("LAeq 1min", justify="right", no_wrap=True)
    table.add_column("LAFmax @time", justify="right", no_wrap=True)
    table.add_column("LCpeak (max)", justify="right", no_wrap=True)
    table.add_column("Limit", no_wrap=True)
    table.add_column("Link", no_wrap=True)
    table.add_column("Device", no_wrap=True)
    for st in states:
        name = Text(_short_port(st.port), style="bold")
        if st.serial:
            name.append("\n" + st.serial, style="dim")
        stale = st.view_state != CONNECTED
        laf = st.laf
        one_s = st.laeq_1s
        level = Text()
        if bar:
            level.append_text(level_bar(laf if laf is not None else one_s.db, st.limit_db, dim=stale))
            level.append(" ")
        level.append("%5s" % _fmt_db(laf), style="grey50" if stale else "bold")
        lafmax = Text(_fmt_db(st.lafmax))
        if st.lafmax is not None:
            lafmax.append(" @" + _fmt_device_time(st.lafmax_ms), style="dim")
        peak = Text(_fmt_db(st.lcpeak))
        peak.append(" (%s)" % _fmt_db(st.lcpeak_max), style="dim")
        table.add_row(name, level, _leq_cell(one_s, st.limit_db), _leq_cell(st.laeq_1min, st.limit_db), lafmax, peak,
                      _limit_cell(st), _link_cell(st, now_mono), _device_cell(st))
    return table
