"""`slm report`'s output from a computed `Report` (host/report_calc.py): its tables (also as CSV), its figures
(matplotlib, Agg backend: hourly LAeq bars against the limit, the 1-minute time history with the limit and the
episodes shaded, an hour x day heat map when the period spans days), a self-contained HTML file (figures embedded as
base64 PNG, opens offline) and a PDF (matplotlib's PdfPages). matplotlib is imported here only, so that `slm` starts
fast."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
from pathlib import Path
from typing import Any

from slm.report_calc import MeterReport, Report

OVER_COLOUR, NEAR_COLOUR, UNDER_COLOUR, NO_LIMIT_COLOUR = "#d62728", "#ff7f0e", "#2ca02c", "#7f7f7f"
NEAR_DB = 3.0  # bars within this of the limit are amber
TIME = "%Y-%m-%d %H:%M"


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "" if v is None else fmt.format(v)


def _t(v: dt.datetime | None) -> str:
    return "open" if v is None else v.strftime(TIME)


Table = tuple[list[str], list[list[str]]]


def _number(v) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def tables(report: Report) -> dict[str, Table]:
    """Every table of the report, by name: rows of text, one column per header (all meters in each)."""
    p = report.periods
    hm = lambda minutes: f"{minutes // 60:02d}:{minutes % 60:02d}"  # noqa: E731
    summary: list[list[str]] = []
    days: list[list[str]] = []
    hourly: list[list[str]] = []
    eps: list[list[str]] = []
    nights: list[list[str]] = []
    calibration: list[list[str]] = []
    verification: list[list[str]] = []
    for m in report.meters:
        site = m.site or ""
        cal = m.calibration
        if cal is None:
            calibration.append([m.device, site, "unknown (not in this source)", "", "", ""])
        else:
            calibration.append([m.device, site, str(cal.get("method") or "never calibrated"), str(cal.get("time") or ""),
                                _f(cal.get("offset_db"), "{:+.2f}"), _f(cal.get("sensitivity_dbfs"))])
        for e in m.calibrations:  # the audit trail: every calibration and check, with the state of its record
            f = e.fields
            drift = f.get("drift_db")
            what = " ".join(dict.fromkeys(str(x) for x in (f.get("kind"), f.get("method")) if x))  # once each
            calibration.append([m.device, site, f"{what} (audit)".strip(),
                                str(f.get("time") or f.get("utc") or ""), _f(_number(f.get("after")), "{:+.2f}"), "",
                                (f"drift {drift:+.2f}" + (" OVER 0.5 dB" if abs(drift) > 0.5 else ""))
                                if isinstance(drift, (int, float)) else "",
                                str(f.get("_state") or "")])
        for name, value in m.indicators.rows():
            summary.append([m.device, site, name, _f(value)])
        summary.append([m.device, site, "coverage", _f(m.coverage, "{:.3f}")])
        for d in m.days:
            days.append([m.device, site, d.date.isoformat()] + [_f(v) for _, v in d.indicators.rows()])
        for h in m.hours:
            hourly.append([m.device, site, h.start.strftime(TIME), _f(h.LAeq), _f(h.LAFmax), _f(h.LA10), _f(h.LA50),
                           _f(h.LA90), _f(h.limit), _f(h.margin, "{:+.1f}"), str(h.minutes), _f(h.coverage, "{:.3f}")])
        for e in m.episodes:
            eps.append([m.device, site, _t(e.start), _t(e.end), _f(e.duration_s, "{:.0f}"), _f(e.LAeq), _f(e.LAFmax),
                        _f(e.limit), _f(e.margin, "{:+.1f}"), e.band or "", "yes" if e.interrupted else "",
                        e.records, e.calibration])
        verification.append([m.device, site, m.verification, m.drift or ""])
        for n in m.night_max:
            nights.append([m.device, site, n.time.strftime(TIME), _f(n.LAFmax), _f(n.threshold),
                           _f(n.margin, "{:+.1f}")])
    return {
        "summary": (["device", "site", "indicator", "dB"], summary),
        "daily": (["device", "site", "date", "Ld", "Ln", "Ldn", "Lday", "Levening", "Lnight", "Lden"], days),
        "hourly": (["device", "site", "hour", "LAeq", "LAFmax", "LA10", "LA50", "LA90", "limit", "margin",
                    "valid_minutes", "coverage"], hourly),
        "episodes": (["device", "site", "start", "end", "duration_s", "LAeq", "LAFmax", "limit", "margin", "band",
                      "interrupted", "records", "calibration_in_force"], eps),
        "verification": (["device", "site", "records", "calibration_drift"], verification),
        "night_max": (["device", "site", "time", "LAFmax", "limit_plus_15", "margin"], nights),
        "calibration": (["device", "site", "method", "time", "offset_db", "sensitivity_dbfs", "check", "record"],
                        [row + [""] * (8 - len(row)) for row in calibration]),
        "periods": (["period", "from", "to"], [["China day (Ld)", hm(p.cn_day), hm(p.cn_night)],
                                              ["China night (Ln)", hm(p.cn_night), hm(p.cn_day)],
                                              ["EU day", hm(p.eu_day), hm(p.eu_evening)],
                                              ["EU evening", hm(p.eu_evening), hm(p.eu_night)],
                                              ["EU night", hm(p.eu_night), hm(p.eu_day)]]),
    }


def write_csv(report: Report, folder: Path) -> list[Path]:
    out = []
    for name, (header, rows) in tables(report).items():
        path = folder / f"{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)
        out.append(path)
    return out


# -- figures -------------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bar_colour(h) -> str:
    if h.limit is None or h.LAeq is None:
        return NO_LIMIT_COLOUR
    return OVER_COLOUR if h.LAeq > h.limit else NEAR_COLOUR if h.LAeq > h.limit - NEAR_DB else UNDER_COLOUR


def figures(report: Report, m: MeterReport) -> list[tuple[str, Any]]:
    """(title, matplotlib figure) of one meter: hourly bars, time history, and the heat map when days > 1."""
    plt = _pyplot()
    import matplotlib.dates as mdates

    out = []
    hours = [h for h in m.hours if h.LAeq is not None]
    fig, ax = plt.subplots(figsize=(10, 3.6), layout="constrained")
    if hours:
        ax.bar([h.start for h in hours], [h.LAeq for h in hours], width=1 / 24 * 0.85, align="edge",
               color=[_bar_colour(h) for h in hours], edgecolor="black", linewidth=0.4)
        for h in hours:
            if h.limit is not None:
                ax.hlines(h.limit, h.start, h.start + dt.timedelta(hours=1), colors="black", linewidth=1.5)
        low = min(h.LAeq for h in hours)
        ax.set_ylim(max(0.0, low - 15), max([h.LAeq for h in hours] + [h.limit or 0 for h in hours]) + 5)
    ax.set_xlim(report.start, report.end)
    ax.set_ylabel("LAeq, 1 h (dB)")
    ax.set_title(f"{m.device}: hourly LAeq (red over the limit, amber within {NEAR_DB:g} dB, black line = limit)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %H:%M"))
    ax.grid(axis="y", alpha=0.3)
    out.append(("Hourly LAeq against the limit", fig))

    fig, ax = plt.subplots(figsize=(10, 3.6), layout="constrained")
    t: list[dt.datetime] = []
    laeq: list[float] = []
    lafmax: list[float] = []
    for x in m.minutes:
        if not x.valid:
            continue
        if t and x.local - t[-1] > dt.timedelta(seconds=60):  # a missing minute: no line across it
            t.append(t[-1] + dt.timedelta(minutes=1))
            laeq.append(float("nan"))
            lafmax.append(float("nan"))
        t.append(x.local + dt.timedelta(seconds=30))
        laeq.append(x.LAeq)
        lafmax.append(float("nan") if x.LAFmax is None else x.LAFmax)
    ax.plot(t, laeq, ".-", color="#1f77b4", markersize=3, linewidth=0.8, label="LAeq, 1 min")
    ax.plot(t, lafmax, ".", color="#9467bd", markersize=2, label="LAFmax, 1 min")
    lim = [x for x in m.minutes if x.limit is not None]
    if lim:
        ax.step([x.local for x in lim] + [lim[-1].local + dt.timedelta(minutes=1)],
                [x.limit for x in lim] + [lim[-1].limit], where="post", color="black", linewidth=1.2, label="limit")
    for i, e in enumerate(m.episodes):
        ax.axvspan(e.start, e.end or report.end, color=OVER_COLOUR, alpha=0.18, label="episode" if i == 0 else None)
    for i, n in enumerate(m.night_max):
        ax.plot([n.time + dt.timedelta(seconds=30)], [n.LAFmax], "v", color=OVER_COLOUR, markersize=8,
                label="night LAFmax over limit + 15 dB" if i == 0 else None)
    ax.set_xlim(report.start, report.end)
    ax.set_ylabel("dB(A)")
    ax.set_title(f"{m.device}: 1-minute time history")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %H:%M"))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    out.append(("1-minute time history, limit and episodes", fig))

    days = sorted({h.start.date() for h in m.hours})
    if len(days) > 1:
        import numpy as np

        grid = np.full((24, len(days)), np.nan)
        for h in m.hours:
            if h.LAeq is not None:
                grid[h.start.hour, days.index(h.start.date())] = h.LAeq
        fig, ax = plt.subplots(figsize=(min(10, 5 + 0.6 * len(days)), 5.2), layout="constrained")
        im = ax.imshow(grid, aspect="auto", origin="upper", cmap="viridis",
                       extent=(-0.5, len(days) - 0.5, 23.5, -0.5), interpolation="nearest")
        ax.set_xticks(range(len(days)), [d.strftime("%a %d %b") for d in days], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(0, 24, 2))
        ax.set_ylabel("hour of the day")
        ax.set_title(f"{m.device}: LAeq per hour and day\n(blank: no data)")
        fig.colorbar(im, ax=ax, label="LAeq, 1 h (dB)")
        out.append(("Week: hour x day heat map", fig))
    return out


# -- HTML ----------------------------------------------------------------------------------------------------------
def _html_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p><i>none</i></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _meter_rows(table: Table, device: str) -> Table:
    header, rows = table
    return header[2:], [r[2:] for r in rows if r[0] == device]


def _title(report: Report) -> str:
    site = f" at {report.site}" if report.site else ""
    return f"Noise report{site}, {report.start.strftime(TIME)} to {report.end.strftime(TIME)} (local time)"


def render_html(report: Report) -> str:
    plt = _pyplot()
    ts = tables(report)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(_title(report))}</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #999;padding:2px 6px;text-align:right}img{max-width:100%}"
             "</style></head><body>",
             f"<h1>{html.escape(_title(report))}</h1>",
             f"<p>Source: {html.escape(report.source)}. Levels in dB(A); every level over more than a minute is the "
             "energy mean of the valid minutes (with data, no overload). Definitions: docs/reports.md.</p>"]
    if report.untimed:
        parts.append(f"<p>{report.untimed} minute records without a clock time are not shown.</p>")
    parts.append("<h2>Periods</h2>" + _html_table(*ts["periods"]))
    for m in report.meters:
        parts.append(f"<h2>Meter {html.escape(m.device)}" + (f" ({html.escape(m.site)})" if m.site else "") + "</h2>")
        parts.append(f"<p><b>Records</b>: {html.escape(m.verification)}"
                     + (f"<br><b>Calibration</b>: {html.escape(m.drift)}" if m.drift else "") + "</p>")
        parts.append("<h3>Indicators</h3>" + _html_table(*_meter_rows(ts["summary"], m.device)))
        parts.append("<h3>Indicators per day</h3><p>China's day from its day start, with the night after it; the "
                     "EU's from the EU day start.</p>" + _html_table(*_meter_rows(ts["daily"], m.device)))
        for title, fig in figures(report, m):
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            plt.close(fig)
            data = base64.b64encode(buf.getvalue()).decode("ascii")
            parts.append(f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' "
                         f"src='data:image/png;base64,{data}'>")
        parts.append("<h3>Exceedance episodes</h3>" + _html_table(*_meter_rows(ts["episodes"], m.device)))
        parts.append("<h3>Night LAFmax events over the limit + 15 dB</h3>"
                     + _html_table(*_meter_rows(ts["night_max"], m.device)))
        parts.append("<h3>Calibration in force</h3>" + _html_table(*_meter_rows(ts["calibration"], m.device)))
        parts.append("<h3>Hourly levels and data coverage</h3>" + _html_table(*_meter_rows(ts["hourly"], m.device)))
    parts.append("</body></html>")
    return "\n".join(parts)


# -- PDF -----------------------------------------------------------------------------------------------------------
def _table_pages(plt, title: str, header: list[str], rows: list[list[str]], per_page: int = 32):
    for i in range(0, max(len(rows), 1), per_page):
        chunk = rows[i:i + per_page] or [["none"] + [""] * (len(header) - 1)]
        fig = plt.figure(figsize=(11.69, 8.27))
        fig.suptitle(title + (f" ({i // per_page + 1})" if len(rows) > per_page else ""), fontsize=12)
        ax = fig.add_axes((0.03, 0.03, 0.94, 0.88))
        ax.axis("off")
        tab = ax.table(cellText=chunk, colLabels=header, loc="upper center", cellLoc="right")
        tab.auto_set_font_size(False)
        tab.set_fontsize(8)
        tab.auto_set_column_width(list(range(len(header))))
        yield fig


def write_pdf(report: Report, path: Path) -> None:
    plt = _pyplot()
    from matplotlib.backends.backend_pdf import PdfPages

    ts = tables(report)
    with PdfPages(path, metadata={"Title": _title(report), "Creator": "slm report"}) as pdf:
        fig = plt.figure(figsize=(11.69, 8.27))
        fig.text(0.05, 0.92, _title(report), fontsize=14, weight="bold")
        fig.text(0.05, 0.87, f"Source: {report.source}", fontsize=9)
        y = 0.80
        for m in report.meters:
            ind = ", ".join(f"{k} {_f(v)}" for k, v in m.indicators.rows() if v is not None) or "no levels"
            fig.text(0.05, y, f"{m.device}{' (' + m.site + ')' if m.site else ''}: {ind}; coverage "
                     f"{m.coverage:.1%}; {len(m.episodes)} episodes, {len(m.night_max)} night LAFmax events",
                     fontsize=9)
            fig.text(0.07, y - 0.025, f"records {m.verification}" + (f"; {m.drift}" if m.drift else ""), fontsize=8)
            y -= 0.065
        pdf.savefig(fig)
        plt.close(fig)
        for m in report.meters:
            for _title_text, fig in figures(report, m):
                pdf.savefig(fig)
                plt.close(fig)
        for name, title in (("summary", "Indicators"), ("daily", "Indicators per day"),
                            ("episodes", "Exceedance episodes"),
                            ("night_max", "Night LAFmax events over the limit + 15 dB"),
                            ("hourly", "Hourly levels and data coverage"), ("calibration", "Calibration in force"),
                            ("verification", "Verification of the records"),
                            ("periods", "Periods")):
            for fig in _table_pages(plt, title, *ts[name]):
                pdf.savefig(fig)
                plt.close(fig)


def write_report(report: Report, out: Path) -> list[Path]:
    """out.html, out.pdf, or a folder: report.html, report.pdf and a CSV per table. The files written."""
    suffix = out.suffix.lower()
    if suffix == ".html":
        out.write_text(render_html(report), encoding="utf-8")
        return [out]
    if suffix == ".pdf":
        write_pdf(report, out)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(render_html(report), encoding="utf-8")
    write_pdf(report, out / "report.pdf")
    return [out / "report.html", out / "report.pdf"] + write_csv(report, out)
