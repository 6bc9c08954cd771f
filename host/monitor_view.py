"""The monitor's screens as ``rich`` renderables: the live table (``render_table``, fitted to the terminal's
width) and the end-of-run summary (``render_summary``)."""

from __future__ import annotations

import datetime
import time
from typing import Sequence

from slm.link import CONNECTED, LOST, RECONNECTING, REFUSED
from slm.monitor_state import SILENT, MonitorState, WindowLeq, short_port

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
    elif state == LOST and st.offline:
        text.append("OFFLINE", style="bold red")
    elif state in (LOST, RECONNECTING):
        lost_for = None if st.lost_since is None else now_mono - st.lost_since
        text.append("LOST %s" % _fmt_age(lost_for), style="bold red")
        if state == RECONNECTING:
            text.append(" reconnecting", style="yellow")
    elif state == REFUSED:
        text.append("REFUSED", style="bold red")
    else:
        text.append(state, style="dim")
    if st.via_broker:  # no serial link counts: when the device last published
        text.append("\nseen %s" % _fmt_clock(st.last_seen_wall), style="dim")
        return text
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


def _leq_cell(w: WindowLeq, limit: float | None, stacked: bool = False):
    """A window's LAeq; the seconds covered while partial (on a second line when ``stacked``), ``~`` when it comes
    from level records."""
    from rich.text import Text

    style = "bold red" if (w.db is not None and limit is not None and w.db > limit) else ""
    text = Text(_fmt_db(w.db), style=style)
    if w.db is not None and w.source == "level":
        text.append("~", style="dim")
    if w.partial:
        text.append("\n" if stacked else " ")
        text.append("(%ds)" % w.coverage_s if w.coverage_s >= 1 else "(%.1fs)" % w.coverage_s, style="dim")
    return text


def _limit_cell(st: MonitorState, stacked: bool = False):
    from rich.text import Text

    limit = st.limit_db
    sep = "\n" if stacked else " "
    text = Text()
    if limit is None:
        text.append("none", style="dim")
        if st.device_over:
            text.append(sep + "OVER", style="bold white on red")
    else:
        text.append("%g" % limit)
        if st.band and st.cli_limit_db is None:
            text.append(" " + st.band, style="dim")
        text.append(sep)
        reasons = st.over_reasons
        if reasons:
            text.append("OVER", style="bold white on red")
            text.append("\n" + " ".join(reasons), style="red")
        else:
            text.append("ok", style="green")
            if st.over_s > 0:
                text.append("\nwas over %s" % _fmt_age(st.over_s), style="yellow")
    if st.device_over:
        text.append("\nepisode %s" % ("?" if st.episode_s is None else _fmt_duration(st.episode_s)), style="bold red")
    return text


def _name_cell(st: MonitorState):
    """The board's name (its id from hello), and its port as the detail below."""
    from rich.text import Text

    name = Text(st.display_name, style="bold")
    port = short_port(st.port)
    if port != st.display_name:
        name.append("\n" + port, style="dim")
    return name


def _wide_table(states: Sequence[MonitorState], now_mono: float, title: str | None, caption: str | None):
    """One line of columns per board (two with the details): name, bar meter and LAF, LAeq 1 s, LAeq 1 min, LAFmax
    @ device time, LCpeak (max), limit, link, device. Returns the table and the width it needs whole."""
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False,
                  collapse_padding=True)
    headers = ("Board", "LAF (30–110 dB)", "LAeq 1s", "LAeq 1min", "LAFmax @time", "LCpeak (max)", "Limit", "Link",
               "Device")
    for k, header in enumerate(headers):
        table.add_column(header, justify="right" if 2 <= k <= 5 else "left", no_wrap=True)
    widths = [len(h) for h in headers]
    for st in states:
        stale = st.view_state != CONNECTED
        level = level_bar(st.laf if st.laf is not None else st.laeq_1s.db, st.limit_db, dim=stale)
        level.append(" %5s" % _fmt_db(st.laf), style="grey50" if stale else "bold")
        lafmax = Text(_fmt_db(st.lafmax))
        if st.lafmax is not None:
            lafmax.append(" @" + _fmt_device_time(st.lafmax_ms), style="dim")
        peak = Text(_fmt_db(st.lcpeak))
        peak.append(" (%s)" % _fmt_db(st.lcpeak_max), style="dim")
        cells = (_name_cell(st), level, _leq_cell(st.laeq_1s, st.limit_db), _leq_cell(st.laeq_1min, st.limit_db),
                 lafmax, peak, _limit_cell(st), _link_cell(st, now_mono), _device_cell(st))
        table.add_row(*cells)
        widths = [max(w, max(cell_len(line) for line in cell.plain.split("\n"))) for w, cell in zip(widths, cells)]
    return table, sum(widths) + 2 * len(widths)  # the table and the width it needs (each column has 2 of padding)


NARROW_BAR_WIDTH = 8


def _narrow_tables(states: Sequence[MonitorState], now_mono: float, title: str | None, caption: str | None):
    """For a narrow terminal (80 columns): the levels with their details stacked below them (LAF over its bar,
    the seconds covered under LAeq, the device time under LAFmax, the max under LCpeak), then the link and device
    health of each board in a second table."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    levels = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, collapse_padding=True)
    levels.add_column("Board", no_wrap=True)
    levels.add_column("LAF", no_wrap=True)
    levels.add_column("LAeq\n1s", justify="right", no_wrap=True)
    levels.add_column("LAeq\n1min", justify="right", no_wrap=True)
    levels.add_column("LAFmax", justify="right", no_wrap=True)
    levels.add_column("LCpeak", justify="right", no_wrap=True)
    levels.add_column("Limit", no_wrap=True)
    health = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, collapse_padding=True, caption=caption)
    health.add_column("Board", no_wrap=True)
    health.add_column("Link", no_wrap=True)
    health.add_column("Device", no_wrap=True)
    for st in states:
        stale = st.view_state != CONNECTED
        level = Text("%5s\n" % _fmt_db(st.laf), style="grey50" if stale else "bold")
        level.append_text(level_bar(st.laf if st.laf is not None else st.laeq_1s.db, st.limit_db,
                                    width=NARROW_BAR_WIDTH, dim=stale))
        lafmax = Text(_fmt_db(st.lafmax))
        if st.lafmax is not None:
            lafmax.append("\n@" + _fmt_device_time(st.lafmax_ms), style="dim")
        peak = Text(_fmt_db(st.lcpeak))
        if st.lcpeak_max is not None:
            peak.append("\nmax %s" % _fmt_db(st.lcpeak_max), style="dim")
        levels.add_row(_name_cell(st), level, _leq_cell(st.laeq_1s, st.limit_db, stacked=True),
                       _leq_cell(st.laeq_1min, st.limit_db, stacked=True), lafmax, peak,
                       _limit_cell(st, stacked=True))
        health.add_row(Text(st.display_name, style="bold"), _link_cell(st, now_mono), _device_cell(st))
    return Group(levels, health)


class MonitorTable:
    """The live view as a ``rich`` renderable that fits the width it is given: the whole table on one line per
    board where it fits (about 140 columns), else the narrow layout (see ``_narrow_tables``)."""

    def __init__(self, states: Sequence[MonitorState], now_mono: float, title: str | None, caption: str | None):
        self.states, self.now_mono, self.title, self.caption = states, now_mono, title, caption

    def __rich_console__(self, console, options):
        wide, needs = _wide_table(self.states, self.now_mono, self.title, self.caption)
        if needs <= options.max_width:
            yield wide
        else:
            yield _narrow_tables(self.states, self.now_mono, self.title, self.caption)


def render_table(states: Sequence[MonitorState], now_mono: float | None = None, title: str | None = None,
                 caption: str | None = None) -> MonitorTable:
    """The live view, one row per board: name (the device's id, with the port below it), bar meter and LAF, LAeq 1 s,
    LAeq 1 min (with the seconds covered while partial, ``~`` when from level records), LAFmax @ device time, LCpeak
    (max), limit and OVER, link (state; gaps, bad lines, reconnects, restarts), device (overload, faults; dropped,
    late, heap). Fits the console: at 80 columns the details stack and the health goes to a second table."""
    return MonitorTable(states, time.monotonic() if now_mono is None else now_mono, title, caption)


# ---------------------------------------------------------------------------------------------------- summary

def _fmt_duration(s: float) -> str:
    """Seconds as h:mm:ss."""
    s = int(round(s))
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)


def _fmt_clock(wall: float | None) -> str:
    """Host time as local hh:mm:ss."""
    return "–" if wall is None else datetime.datetime.fromtimestamp(wall).strftime("%H:%M:%S")


def _count(n: int, word: str) -> str:
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def _summary_column(st: MonitorState, now_mono: float) -> list:
    from rich.text import Text

    s = st.link_stats
    rows: list = []
    ident = Text(short_port(st.port))
    if st.board:
        ident.append("\n" + st.board, style="dim")
    rows.append(ident)
    watched = Text(_fmt_duration(st.watched_s(now_mono)))
    watched.append("\nconnected %s" % _fmt_duration(st.connected_s(now_mono)), style="dim")
    rows.append(watched)
    run = st.laeq_run
    leq = Text(_fmt_db(run.db), style="bold")
    if run.db is not None:
        leq.append(" dB\nover %s" % _fmt_duration(run.coverage_s), style="dim")
    rows.append(leq)
    for value, ms, wall in ((st.lafmax, st.lafmax_ms, st.lafmax_wall),
                            (st.lcpeak_max, st.lcpeak_max_ms, st.lcpeak_max_wall)):
        cell = Text(_fmt_db(value), style="bold")
        if value is not None:
            cell.append(" dB at %s\n(device %s)" % (_fmt_clock(wall), _fmt_device_time(ms)), style="dim")
        rows.append(cell)
    limit = st.limit_db
    over = Text()
    if limit is None:
        over.append("no limit", style="dim")
    else:
        over.append("%g dB: " % limit)
        over.append("%s" % _fmt_duration(st.over_s), style="bold red" if st.over_s else "green")
        over.append("\n%s over" % _count(st.over_count, "time"), style="red" if st.over_count else "dim")
    if st.episodes or st.night_max_events:
        over.append("\ndevice: %s, %d night_max" % (_count(st.episodes, "episode"), st.night_max_events), style="red")
    rows.append(over)
    gaps = Text("%s, %d lost" % (_count(s.get("gaps", 0), "gap"), s.get("lost_records", 0)),
                style="yellow" if s.get("gaps") else "")
    if s.get("bad_lines"):
        gaps.append("\n" + _count(s["bad_lines"], "bad line"), style="yellow")
    rows.append(gaps)
    rows.append(Text("%s, %s" % (_count(s.get("restarts", 0), "restart"), _count(s.get("reconnects", 0), "reconnect")),
                     style="yellow" if s.get("restarts") or s.get("reconnects") else ""))
    device = Text(", ".join(st.faults_seen) if st.faults_seen else "none",
                  style="yellow" if st.faults_seen else "green")
    if st.overload:
        device.append("\nOVERLOAD", style="bold red")
    status = st.status or {}
    counts = ["%s %d" % (k, status[k]) for k in ("dropped", "late") if isinstance(status.get(k), int) and status[k]]
    if counts:
        device.append("\n" + " ".join(counts), style="yellow")
    rows.append(device)
    end = Text(st.end_state or st.view_state)
    if st.buffered_records:
        end.append("\n%s buffered" % _count(st.buffered_records, "record"), style="dim")
    rows.append(end)
    return rows


SUMMARY_ROWS = ("port", "watched", "LAeq", "LAFmax", "LCpeak max", "over limit", "gaps", "restarts", "faults",
                "at the end")


def render_summary(states: Sequence[MonitorState], now_mono: float | None = None, title: str | None = None,
                   caption: str | None = None):
    """The end-of-run summary: one column per board (headed by its name), one row per figure: how long it was
    watched (and connected), LAeq over every interval seen, LAFmax and LCpeak max with their host and device times,
    the time and the number of times over the limit (and the device's limit events), gaps and lost records, device
    restarts and reconnects, faults (and overload, dropped and late blocks), the link state at the end."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    now_mono = time.monotonic() if now_mono is None else now_mono
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False,
                  collapse_padding=True, show_lines=False)
    table.add_column("", style="bold", no_wrap=True)
    columns = []
    for st in states:
        table.add_column(st.display_name, no_wrap=True)
        columns.append(_summary_column(st, now_mono))
    for k, label in enumerate(SUMMARY_ROWS):
        table.add_row(Text(label), *[col[k] for col in columns])
    return table
