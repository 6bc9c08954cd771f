"""Readable tables of measurement results for the terminal (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

INTERVAL_COLUMNS = ("LAeq", "LAFmax", "LAFmin", "LCeq", "LCpeak", "LA10", "LA50", "LA90")
OVERALL_ROWS = ("LAeq", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax", "LASmin", "LCpeak", "LZpeak", "LAE", "LA10",
                "LA50", "LA90")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _flags(m: dict) -> str:
    return " ".join(name for name, on in (("OVERLOAD", m["overload"]), ("under-range", m["underrange"])) if on)


def print_measurement(result: dict, console: Console | None = None) -> None:
    """Intervals as rows (the main values), then every value of the whole file; 0.1 dB (--json keeps 0.001 dB)."""
    console = console or Console()
    board = f"board {result['board']}, " if result.get("board") else ""
    console.print(f"[bold]{result['file']}[/]: {result['sample_rate']} Hz, {result['duration_s']:.3f} s, "
                  f"{board}sensitivity {result['sensitivity_dbfs']:g} dBFS, engine {result['engine']}")
    if result.get("skipped_s"):
        console.print(f"Skipped the first {result['skipped_s']:g} s (start-up); levels are from {result['skipped_s']:g} s "
                      "to the end.")
    table = Table(title="Intervals (dB)", title_justify="left")
    table.add_column("s", justify="right", no_wrap=True)
    for c in INTERVAL_COLUMNS:
        table.add_column(c, justify="right")
    table.add_column("flags")
    for m in result["intervals"]:
        table.add_row(f"{m['start_s']:g}-{m['end_s']:g}", *(_fmt(m[c]) for c in INTERVAL_COLUMNS), _flags(m))
    console.print(table)
    o = result["overall"]
    overall = Table(title="Whole file", title_justify="left")
    overall.add_column("value")
    overall.add_column("dB", justify="right")
    for c in OVERALL_ROWS:
        overall.add_row(c, _fmt(o[c]))
    overall.add_row("flags", _flags(o) or "none")
    console.print(overall)
    console.print("dB re 20 µPa; '-' = undefined (silence, or a minimum before the time weighting settled).")
