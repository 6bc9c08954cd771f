"""The `slm` command line: a click group of thin commands over library functions.

Exit codes: 0 success, 1 a failed operation, 2 bad input or usage; errors are one line on stderr (a traceback
only with --debug).
"""

from __future__ import annotations

import functools
import json
import sys

import click

from slm.firmware_engine import ENGINES, EngineError
from slm.wav_io import WavError

INPUT_ERRORS: tuple[type[BaseException], ...] = (WavError, ValueError, FileNotFoundError)
OPERATION_ERRORS: tuple[type[BaseException], ...] = (EngineError, OSError)


def _fail(message: str, code: int) -> None:
    click.echo(f"slm: error: {message}", err=True)
    sys.exit(code)


def handle_errors(f):
    """Turn the library's exceptions into one line on stderr and exit code 2 (input) or 1 (operation)."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return f(*args, **kwargs)
        except INPUT_ERRORS as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _fail(str(e).splitlines()[0] if str(e) else type(e).__name__, 2)
        except OPERATION_ERRORS as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            _fail(str(e).splitlines()[0] if str(e) else type(e).__name__, 1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """slm: open firmware and tools for decibel meters on public squares.

    \b
    Example:
      slm measure recording.wav --json
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--sensitivity", "sensitivity", type=float, default=None, metavar="DBFS",
              help="Microphone sensitivity: dBFS of a 94 dB SPL sine (full-scale-sine convention). "
                   "Default -26.0, or the board's.")
@click.option("--board", default=None, metavar="NAME", help="Board profile: its microphone's sensitivity and "
              "equalisation (no equalisation without it).")
@click.option("--interval", "interval_s", type=float, default=1.0, show_default=True, metavar="SECONDS",
              help="Length of each measurement interval.")
@click.option("--engine", type=click.Choice(ENGINES), default="micropython", show_default=True,
              help="Run the firmware on the MicroPython unix port or under CPython (slow fallback).")
@click.option("--channel", type=int, default=0, show_default=True, metavar="N", help="Channel of the WAV file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handle_errors
def measure(file, sensitivity, board, interval_s, engine, channel, as_json):
    """Measure a WAV file with the meter's own firmware code.

    The samples become the 32-bit I2S words an ESP32 reads from the microphone and run through the firmware:
    A/C/Z weighting, Fast/Slow time weighting, Leq, maxima, minima, peaks, LAE, percentiles, overload and
    under-range, per interval and overall (levels in dB re 20 uPa). WAV full scale is microphone full scale.

    \b
    Examples:
      slm measure square.wav
      slm measure square.wav --interval 60 --json > levels.json
      slm measure calib.wav --board esp32-devkitc-inmp441 --channel 1
    """
    from slm.measure import measure_file

    result = measure_file(file, sensitivity_dbfs=sensitivity, board=board, interval_s=interval_s, engine=engine,
                          channel=channel)
    if as_json:
        click.echo(json.dumps(result))
    else:
        from slm.report_table import print_measurement

        print_measurement(result)


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
