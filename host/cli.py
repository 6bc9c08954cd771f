"""The `slm` command line: a click group of thin commands over library functions.

Exit codes: 0 success, 1 a failed operation, 2 bad input or usage; errors are one line on stderr (a traceback
only with --debug).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading

import click

from slm.errors import exit_code, one_line

# Only click and slm.errors are imported at start (`slm --help` in well under a second); every command imports
# what it needs when it runs.
ENGINES = ("micropython", "cpython")  # slm.firmware_engine.ENGINES (not imported here: it pulls in numpy)
EXIT_INTERRUPTED = 130  # as a shell reports a program ended by SIGINT


def _fail(message: str, code: int) -> None:
    click.echo(f"slm: error: {message}", err=True)
    sys.exit(code)


class _Interrupt:
    """Whether Ctrl-C (SIGINT) arrived. One that lands inside a C extension's import (numpy, scipy) comes out as
    that import's own error (numpy's ImportError "initialization failed"), not as KeyboardInterrupt."""

    seen = False

    @classmethod
    def handler(cls, signum, frame):
        cls.seen = True
        raise KeyboardInterrupt


def _report(exc: Exception, debug: bool) -> int:
    """One line on stderr for an error from a command; the exit code (re-raises with --debug)."""
    if debug:
        raise exc
    if _Interrupt.seen:  # whatever the interrupted code raised instead
        raise KeyboardInterrupt from exc
    code = exit_code(exc)
    if code is None:  # not an error slm knows: a bug
        click.echo(f"slm: internal error: {type(exc).__name__}: {one_line(exc)} "
                   "(run `slm --debug ...` for the traceback)", err=True)
        return 1
    click.echo(f"slm: error: {one_line(exc) or type(exc).__name__}", err=True)
    return code


class _Slm(click.Group):
    """The group that maps every error of a subcommand to one line and its exit code (slm.errors.exit_code)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as e:
            ctx.exit(_report(e, bool((ctx.obj or {}).get("debug"))))


@click.group(cls=_Slm, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="slm", prog_name="slm", message="%(prog)s %(version)s")
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
@click.option("--skip", "skip_s", type=float, default=None, metavar="SECONDS",
              help="Drop this much from the start (a microphone's start-up). Default: the board's start-up "
                   "discard, 0 without --board.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def measure(file, sensitivity, board, interval_s, engine, channel, skip_s, as_json):
    """Measure a WAV file with the meter's own firmware code.

    The samples become the 32-bit I2S words an ESP32 reads from the microphone and run through the firmware:
    A/C/Z weighting, Fast/Slow time weighting, Leq, maxima, minima, peaks, LAE, percentiles, overload and
    under-range, per interval and overall (levels in dB re 20 uPa). WAV full scale is microphone full scale.
    With --board the file holds what that board's I2S bus delivers (its input shift applies), and the board's
    start-up discard is skipped as the board does.

    \b
    Examples:
      slm measure square.wav
      slm measure square.wav --interval 60 --json > levels.json
      slm measure calib.wav --board esp32-devkitc-inmp441 --channel 1
    """
    from slm.measure import measure_file

    result = measure_file(file, sensitivity_dbfs=sensitivity, board=board, interval_s=interval_s, engine=engine,
                          channel=channel, skip_s=skip_s)
    if as_json:
        click.echo(json.dumps(result))
    else:
        from slm.report_table import print_measurement

        print_measurement(result)


@cli.command()
@click.option("--port", "ports", multiple=True, metavar="P",
              help="A board's serial port or a virtual board's pty (repeatable). Default: every board found by USB id.")
@click.option("--log", "log_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.csv|FILE.jsonl",
              help="Append every record, with the host time it arrived, to this file (CSV or JSON lines).")
@click.option("--limit", "limit_db", type=click.FloatRange(0, 200), default=None, metavar="DB",
              help="Limit for LAeq 1 s and 1 min in dB(A). Default: the limit in force on each device (its schedule).")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Stop after S seconds and print the summary (default: run until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--broker", default=None, metavar="URL", help="Watch the whole fleet through this MQTT broker "
              "(mqtt://HOST:PORT or mqtts://HOST:PORT with --tls) instead of serial ports.")
@click.option("--user", default=None, metavar="U", help="Broker user name (with --broker).")
@click.option("--password-file", default=None, metavar="F", help="File holding that user's password.")
@click.option("--tls", "ca_file", default=None, metavar="CA", help="CA certificate of the broker (TLS).")
def monitor(ports, log_file, limit_db, duration_s, as_json, broker, user, password_file, ca_file):
    """Watch boards live: level now, LAeq of the last second and minute, LAFmax, LCpeak, the limit, link health.

    One row per board, refreshed 4 times a second on a terminal: a bar meter of LAF with the limit marked, LAF,
    LAeq 1 s and 1 min (energy averages of the device's intervals; "(20s)" while less than the window has been
    seen), LAFmax since the start with its device time, LCpeak (last interval and max), the limit in force and its
    band, OVER when LAeq 1 s or 1 min is above the limit or the device has an exceedance episode open (with its
    duration), the link (connected / SILENT / LOST, reconnecting;
    gaps, lost records, bad lines, reconnects, restarts) and the device (faults, dropped and late blocks, heap,
    overload). Boards are named by the device's id (its serial; the port below it). On a narrow terminal (80
    columns) the details stack under the levels and the link and device health form a second table. At the end
    (--duration, Ctrl-C or SIGTERM) it prints a summary per board (time watched, LAeq over the whole run, LAFmax and
    LCpeak max with their times, time and times over the limit, gaps, lost records, restarts, faults) and exits 0,
    with the log complete. Every port must open and answer at the start (else exit 1); a board lost later is shown
    and re-found.
    The log (appended to) has a line per record: in JSONL the record plus host_time and port, in CSV fixed
    columns; link state changes are lines with t "link" and a state (lost, reconnecting, silent, connected...).
    The replies to the monitor's own info are logged too, so seq jumps only where records were lost (or after a
    reconnect, by one: the link's own info). host_time is when the record arrived, except for records the device
    sent while no host listened, which arrive together when the port opens: those are marked buffered (JSONL
    "buffered": true, CSV column buffered) and their host_time is derived from their device time (ms).

    \b
    Examples:
      slm monitor
      slm monitor --port /dev/ttyUSB0 --port /dev/ttyUSB1 --limit 65 --log evening.csv
      slm monitor --port /dev/pts/3 --duration 60 --json --log minute.jsonl
      slm monitor --broker mqtt://127.0.0.1:1883 --user collector --password-file collector.password

    With --broker: one row per device publishing on slm/SITE/DEVICE/..., its link being its MQTT session
    (OFFLINE after its last will) and when it was last seen; see docs/network.md.
    """
    from slm import discovery

    if broker is not None or user is not None or password_file is not None or ca_file is not None:
        from slm.collect import parse_broker
        from slm.errors import InputError
        from slm.monitor_mqtt import BrokerMonitor

        if broker is None:
            raise InputError("--user, --password-file and --tls go with --broker")
        if ports:
            raise InputError("give --broker or --port, not both")
        _watch(None, log_file, limit_db, duration_s, as_json,
               mon=BrokerMonitor(parse_broker(broker, user, password_file, ca_file), limit_db=limit_db))
        return
    if ports:
        targets = [discovery.resolve_port(p) for p in ports]
    else:
        try:
            targets = discovery.find_boards()
        except Exception as e:  # the OS's port listing failed
            raise OSError(f"could not list serial ports: {e}") from None
        if not targets:
            raise discovery.NoBoardError()
    _watch(targets, log_file, limit_db, duration_s, as_json)


def _watch(targets, log_file, limit_db, duration_s, as_json, title="slm monitor", mon=None, extra=None):
    """The monitor's live view and summary over the given ports (monitor and demo), or of `mon` (a BrokerMonitor);
    ``extra()``: a dict for the summary's "fleet" (the demo's collector)."""
    from rich.console import Console
    from rich.live import Live

    from slm.link import LinkError
    from slm.monitor import Monitor, RecordLog, render_summary, render_table

    debug = bool((click.get_current_context().obj or {}).get("debug"))
    if log_file:
        RecordLog.format_of(log_file)  # a bad name is bad input: say so before opening any port
    mon = mon or Monitor(targets, limit_db=limit_db)
    try:
        mon.open()
    except LinkError as e:
        if debug:
            raise
        hint = " (is the meter firmware running on it?)" if "no reply" in str(e) else ""
        _fail(f"{e}{hint}", 1)
    if log_file:
        try:
            mon.log = RecordLog(log_file)  # records that came meanwhile wait in the queue
        except BaseException:
            mon.close()
            raise

    def on_signal(signum, frame):
        mon.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    console = Console()
    live_view = console.is_terminal
    if not live_view:
        console = Console(width=160)  # a file or a pipe: room for the whole table
    caption = "Ctrl-C to stop" + (f" · log {log_file}" if log_file else "")
    try:
        if live_view:
            with Live(console=console, auto_refresh=False, transient=True) as live:
                mon.run(duration_s, on_frame=lambda m: live.update(render_table(m.states, caption=caption),
                                                                    refresh=True))
        else:
            mon.run(duration_s)
    finally:
        mon.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    fleet = extra() if extra is not None else None
    if as_json:
        click.echo(json.dumps({**mon.summary(), **({"fleet": fleet} if fleet is not None else {})}))
    else:
        summary = mon.summary()
        title = f"{title}: {summary['duration_s']:.0f} s"
        console.print(render_summary(mon.states, title=title, caption=f"log {log_file}" if log_file else None))
        if fleet is not None:
            for device, n in fleet["devices"].items():
                where = fleet["db"] if fleet["db_kept"] else "a temporary database (--db to keep it)"
                console.print(f"collector into {where}: {device}: {n['minutes']} minutes, {n['events']} events")


@cli.command()
@click.argument("scenario", required=False)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR", help="Output folder (created).")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0.1), default=None, metavar="S",
              help="Simulate only the first S seconds (default: the scenario's duration).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, metavar="N", help="Master random seed.")
@click.option("--meter", "meters", multiple=True, metavar="ID", help="Only this meter (repeatable).")
@click.option("--rate", type=click.Choice(["48000", "44100", "32000", "16000"]), default=None,
              help="Sample rate (default: the scenario's).")
@click.option("--no-contributions", is_flag=True, help="Skip the per-source contributions in truth.json (faster).")
@click.option("--list", "list_only", is_flag=True, help="List the built-in scenarios and exit.")
@click.option("--skip-space-check", is_flag=True, help="Run even if the disk seems to have too little free space.")
def sim(scenario, out_dir, duration_s, seed, meters, rate, no_contributions, list_only, skip_space_check):
    """Simulate a square: one WAV per meter (32-bit I2S words as the ESP32 reads them) and truth.json.

    SCENARIO is a built-in name (see --list) or a TOML file. truth.json holds what an ideal class 1 meter at each
    microphone reads per interval, and each source's contribution. The files replace the folder's previous ones
    only when the run succeeds (an interrupted run changes nothing); a run needing more disk than is free is refused.

    \b
    Examples:
      slm sim square-evening --out out/square --duration 60
      slm sim calibrator --out out/cal --meter board
      slm measure out/square/facade.wav --board esp32-devkitc-inmp441
    """
    from slm.sim.scenario import list_scenarios, load_scenario

    if list_only:
        for name in list_scenarios():
            click.echo(f"{name:18s} {load_scenario(name).description}")
        return
    if not scenario or not out_dir:
        raise click.UsageError("SCENARIO and --out DIR are required (or --list)")
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from slm.sim.scene import simulate

    sc = load_scenario(scenario)
    for m in meters:
        sc.meter(m)
    total = sc.duration_s if duration_s is None else duration_s
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  TimeRemainingColumn(), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"simulating {sc.name}", total=total)
        truth = simulate(sc, out_dir, duration_s=duration_s, seed=seed, meter_ids=meters or None,
                         rate=int(rate) if rate else None, contributions=not no_contributions,
                         progress=lambda done, _total: bar.update(task, completed=done),
                         space_check=not skip_space_check)
    for mid, m in truth["meters"].items():
        la = m["overall"]["LAeq"]
        click.echo(f"{out_dir}/{m['wav']}: LAeq {la if la is not None else '-'} dB, LAFmax {m['overall']['LAFmax']} dB")
    click.echo(f"{out_dir}/truth.json")


@cli.command()
@click.option("--scenario", default="square-evening", show_default=True, metavar="NAME",
              help="Built-in scenario (see `slm sim --list`) or a TOML file.")
@click.option("--meter", default=None, metavar="ID", help="The scenario's meter the board is (default: the first).")
@click.option("--speed", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="X",
              help="Device seconds per wall second; 0: as fast as the firmware reads.")
@click.option("--board", default="esp32-devkitc-inmp441", show_default=True, metavar="NAME", help="Board profile.")
@click.option("--dir", "device_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="The device's filesystem, kept (with config.json) across runs (default: a temporary folder).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, metavar="N", help="Master random seed.")
@click.option("--display", "display_png", type=click.Path(dir_okay=False), default=None, metavar="PNG",
              help="Write what the board's public display shows to this PNG, each time it changes.")
@click.option("--broker", default=None, metavar="URL",
              help="Publish to this MQTT broker (mqtt://HOST:PORT) as a meter on the network (docs/network.md).")
@click.option("--site", default="virtual", show_default=True, metavar="NAME", help="With --broker: the topics' site.")
@click.option("--user", default=None, metavar="U", help="With --broker: the board's broker account.")
@click.option("--password-file", default=None, metavar="F", help="With --broker: a file holding its password.")
@click.option("--intervals", is_flag=True, help="With --broker: publish the interval records too (the live level of "
              "`slm serve`).")
@click.option("--key", "key_file", default=None, metavar="FILE",
              help="Install this device key (64 hex digits, as `slm provision` keeps it): the board signs its records.")
def virtual(scenario, meter, speed, board, device_dir, seed, display_png, broker, site, user, password_file,
            intervals, key_file):
    """Run a virtual board: the firmware on MicroPython behind a serial port, hearing a simulated square.

    Prints one line (the port, scenario/meter, board, speed) and serves until Ctrl-C or SIGTERM. Open the port
    like a real board's: the device protocol (docs/protocol.md), Ctrl-C for the REPL, `mpremote connect PORT
    resume`. The `reboot` command restarts the board; the scenario repeats after its end.

    \b
    Examples:
      slm virtual
      slm virtual --scenario calibrator --speed 10 --dir out/board1
      slm virtual --display out/display.png
      slm virtual --broker mqtt://127.0.0.1:1883 --site square
    """
    import re
    import time

    from slm.virtual_board import VirtualBoard

    net = None
    if broker is not None:  # net.json of the board (firmware/net.py)
        from slm.collect import parse_broker
        from slm.errors import InputError

        b = parse_broker(broker, user, password_file)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", site):
            raise InputError(f"--site {site}: 1-64 characters of A-Z a-z 0-9 - _")
        net = {"host": b.host, "port": b.port, "site": site, "user": b.user, "password": b.password,
               "intervals": intervals}
    key = None
    if key_file is not None:
        from slm.device_key import read_key

        key = read_key(key_file)
    vb = VirtualBoard(scenario=scenario, meter=meter, speed=speed, board=board, device_dir=device_dir, seed=seed,
                      on_event=lambda text: click.echo(f"slm: {text}", err=True), net=net, key=key)
    if display_png is not None:
        _check_display(vb, display_png)
        since_ns = time.time_ns()
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    mirror = None
    try:
        vb.start()
        click.echo(vb.describe())
        if display_png is not None:  # the public display: the device folder's display.ppm -> the PNG
            from slm.display_image import DisplayMirror

            mirror = DisplayMirror(vb.device_dir / "display.ppm", display_png, since_ns=since_ns)
        while not done.wait(0.5):
            if mirror is not None:
                mirror.poll()
    finally:
        vb.stop()
        if mirror is not None:
            mirror.poll()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_display(vb, png):
    """`slm virtual --display` needs a board profile with a display and a folder to write the PNG in."""
    from pathlib import Path

    from slm.errors import InputError

    if vb.board.display is None:
        raise InputError(f"board {vb.board.name} has no [display] section; --display needs one "
                         "(e.g. --board esp32-devkitc-inmp441)")
    if not Path(png).resolve().parent.is_dir():
        raise InputError(f"--display {png}: no folder {Path(png).parent}")


@cli.command()
@click.option("--board", "board_name", required=True, metavar="NAME",
              help="Board profile (see `slm boards`): the chip to expect and where the image goes.")
@click.option("--firmware", required=True, metavar="FILE.bin",
              help="MicroPython firmware for the board's chip, from micropython.org/download (e.g. ESP32_GENERIC).")
@click.option("--port", default=None, metavar="P", help="Serial port. Default: the only board found by USB id.")
@click.option("--erase", is_flag=True, help="Erase the whole flash first (also removes files and the meter's "
              "configuration on the board).")
@click.option("--no-deploy", is_flag=True, help="Only flash MicroPython; do not install the meter afterwards.")
def flash(board_name, firmware, port, erase, no_deploy):
    """Flash MicroPython onto a board, check it boots to the REPL, then install the meter.

    The firmware file is checked first (an ESP image for the profile's chip, the complete image with bootloader
    and partition table), then the connected chip must be the profile's. esptool writes the image at the
    profile's flash offset and verifies it; after the reset the tool waits for MicroPython's prompt (found again
    by USB serial number when a native-USB board comes back under another port). Then it runs `slm deploy`, unless
    --no-deploy. If the board does not answer: hold BOOT, press and release RESET, release BOOT, and run again.

    \b
    Examples:
      slm flash --board esp32-devkitc-inmp441 --firmware ESP32_GENERIC-20241129-v1.24.1.bin
      slm flash --board esp32-s3-devkitc-ics43434 --firmware ESP32_GENERIC_S3.bin --port /dev/ttyACM0 --erase
      slm flash --board esp32-c3-inmp441 --firmware ESP32_GENERIC_C3.bin --no-deploy
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from slm.flashing import flash as flash_board

    labels = {"connect": "connecting", "erase": "erasing the flash", "write": "writing",
              "reset": "resetting", "repl": "waiting for the MicroPython prompt"}
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task(labels["connect"], total=None)

        def progress(stage, done, total):
            if stage == "write" and total:
                bar.update(task, description=labels["write"], completed=done, total=total)
            else:
                bar.update(task, description=labels.get(stage, stage), completed=0, total=None)

        result = flash_board(board_name, firmware, port=port, erase=erase, progress=progress)
    fw = result.firmware
    what = f"MicroPython {fw.version}" if fw.version else fw.path
    click.echo(f"flashed {what} ({fw.size} bytes at {result.offset:#x}{', after erasing' if result.erased else ''}"
               f"{', verified' if result.verified else ''}) onto {result.chip_description} on {result.port}")
    click.echo(f"REPL on {result.repl_port}: {result.banner or '>>>'}")
    if no_deploy:
        click.echo(f"flashed; run `slm deploy --board {result.board} --port {result.repl_port}` to install the meter")
        return
    from slm.deploy import deploy

    report = deploy(result.board, result.repl_port)
    click.echo(report.summary())
    for warning in report.warnings:
        click.echo(f"warning: {warning}")


@cli.command("deploy")
@click.option("--board", "board_name", required=True, metavar="NAME",
              help="Board profile (see `slm boards`): written to the device as board.json; its chip must be the "
                   "device's.")
@click.option("--port", default=None, metavar="P", help="Serial port (or a virtual board's pty). Default: the only "
              "board found by USB id.")
@click.option("--source", is_flag=True, help="Copy the .py sources instead of .mpy files compiled for the device.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--key", "key_file", default=None, metavar="FILE",
              help="Also install this device key (64 hex digits, as `slm provision` keeps it) as slm_key.bin.")
def deploy_command(board_name, port, source, as_json, key_file):
    """Install the meter on a board running MicroPython, then restart it; only changed files are written.

    Stops the application (Ctrl-C), asks the device its MicroPython (.mpy version, native architecture, chip),
    compiles the firmware with mpy-cross for it (sources where it cannot, and with --source; main.py always as
    source), writes board.json from the profile, copies the files whose SHA-256 on the device differs (each to a
    temporary name, checked, then renamed), removes modules an earlier deploy installed that are no longer part of
    the firmware, checks every file's hash, and soft-resets the board, waiting for the meter's hello.
    config.json (calibration and settings) is never touched. A second run writes nothing.

    \b
    Examples:
      slm deploy --board esp32-devkitc-inmp441
      slm deploy --board esp32-s3-devkitc-ics43434 --port /dev/ttyACM0 --json
      slm deploy --board esp32-c3-inmp441 --port /dev/pts/4 --source
    """
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from slm.deploy import deploy
    from slm.device_key import read_key

    key = read_key(key_file) if key_file is not None else None
    labels = {"connect": "connecting", "query": "asking the device", "build": "compiling", "copy": "writing",
              "copied": "writing", "remove": "removing old files", "verify": "verifying", "restart": "restarting"}
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(labels["connect"], total=None)

        def progress(stage, done, total, name):
            if stage == "copy":
                bar.update(task, description=f"writing {name}", completed=done, total=total or None)
            elif stage != "copied":
                bar.update(task, description=labels.get(stage, stage) + (f" {name}" if name else ""),
                           completed=0, total=None)

        report = deploy(board_name, port=port, source=source, progress=progress, key=key)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(report.summary())
    for note in report.notes:
        click.echo(f"note: {note}")
    for warning in report.warnings:
        click.echo(f"warning: {warning}")


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def boards(ctx, as_json):
    """List the board profiles (boards/*.toml): name, chip, microphone, sample rate.

    \b
    Examples:
      slm boards
      slm boards --json
      slm boards show esp32-devkitc-inmp441
    """
    if ctx.invoked_subcommand is not None:
        return
    from slm.board_info import summary, summary_line
    from slm.boards import list_boards, load_board

    profiles = [load_board(name) for name in list_boards()]
    if as_json:
        click.echo(json.dumps([summary(b) for b in profiles]))
        return
    for b in profiles:
        click.echo(summary_line(b))


@boards.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with the equaliser coefficients).")
def boards_show(name, as_json):
    """Explain one board profile: chip, flash offset, I2S pins and slot, microphone, equaliser, LED, wiring.

    NAME is a profile name (see `slm boards`) or a path to a .toml file.

    \b
    Examples:
      slm boards show esp32-s3-devkitc-ics43434
      slm boards show boards/esp32-c3-inmp441.toml --json
    """
    from slm.board_info import as_json as board_json
    from slm.board_info import describe, wiring_diagram
    from slm.boards import load_board

    board = load_board(name)
    if as_json:
        click.echo(json.dumps(board_json(board)))
        return
    rows = describe(board)
    width = max(len(label) for label, _ in rows)
    for label, text in rows:
        click.echo(f"{label:<{width}}  {text}")
    click.echo("")
    click.echo("wiring")
    click.echo(wiring_diagram(board))


@cli.group("config", invoke_without_command=True)
@click.option("--port", default=None, metavar="P", help="Serial port (or a virtual board's pty). Default: the only "
              "board found by USB id.")
@click.pass_context
def config_group(ctx, port):
    """Read and change a meter's configuration (the device validates every change: all or nothing).

    Without a subcommand: `show`. A refused change prints the device's message and exits 2; nothing changes.

    \b
    Examples:
      slm config --port /dev/ttyUSB0 show
      slm config --port /dev/ttyUSB0 set stream_hz=5 limit_hysteresis_db=2
      slm config --port /dev/ttyUSB0 limits --zone 1 --band 19:00-21:30=65:dance
    """
    ctx.obj["config_port"] = port
    if ctx.invoked_subcommand is None:
        ctx.invoke(config_show)


@contextlib.contextmanager
def _device_link(port):
    """An open link to one device (``--port``, a resolved port, or the only board found), its clock set from the host's on connect
    (slm.link.sync_clock: every command that connects to a device does this)."""
    from slm import discovery
    from slm.link import DeviceLink, sync_clock

    target = port if isinstance(port, discovery.PortInfo) else discovery.resolve_port(port)
    with DeviceLink(target, timeout=5.0) as link:
        sync_clock(link)
        yield link


def _config_link(ctx):
    return _device_link(ctx.obj.get("config_port"))


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the configuration as one JSON object.")
@click.pass_context
def config_show(ctx, as_json=False):
    """Show the configuration: every key, the bands, and the limit in force through the local day."""
    from slm import config_cmd

    with _config_link(ctx) as link:
        config = config_cmd.read_config(link)
        info = link.send("info")  # its hello fields, and the device's time (every record carries utc)
    if as_json:
        click.echo(json.dumps(config, ensure_ascii=False))
        return
    for line in config_cmd.describe(config, info.get("result"), link.path, info.get("utc")):
        click.echo(line)


@config_group.command("set")
@click.argument("assignments", nargs=-1, metavar="KEY=VALUE...")
@click.pass_context
def config_set(ctx, assignments):
    """Set configuration values in one `set` (all or nothing). VALUE is JSON where it parses (5, 1.5, true, null,
    [..], {..}, "text"), else text; zone is always a class name (0, 1, 2, 3, 4a, 4b) or null.

    \b
    Examples:
      slm config set stream_hz=5
      slm config set zone=1 episode_min_minutes=2 tz_min=480
    """
    from slm import config_cmd

    values = config_cmd.parse_assignments(assignments)  # bad syntax: exit 2 before connecting
    with _config_link(ctx) as link:
        stored = config_cmd.send_set(link, values)
    for key in sorted(stored):
        click.echo(f"{key} = {config_cmd.format_value(stored[key])}")


@config_group.command("limits")
@click.option("--zone", default=None, metavar="CLASS", help="GB 3096-2008 zone class: 0, 1, 2, 3, 4a, 4b, or none.")
@click.option("--day", default=None, metavar="HH:MM", help="Local start of the day period (default 06:00).")
@click.option("--night", default=None, metavar="HH:MM", help="Local start of the night period (default 22:00).")
@click.option("--band", "bands", multiple=True, metavar="HH:MM-HH:MM=DB[:NAME]",
              help="A local time band with its own LAeq limit (repeatable, at most 8; the first band covering a "
                   "time wins); the bands given replace the device's list. NAME defaults to the span.")
@click.option("--clear-bands", is_flag=True, help="Remove every local band.")
@click.pass_context
def config_limits(ctx, zone, day, night, bands, clear_bands):
    """Set the limit schedule: zone class, day/night hours, local bands; one `set`, so the device takes all of it
    or none (its message is shown as it is). Prints the limit in force through the day.

    \b
    Examples:
      slm config limits --zone 1
      slm config limits --zone 1 --band 19:00-21:30=65:dance --band 12:00-14:30=50:noon
      slm config limits --night 21:30 --clear-bands
    """
    from slm import config_cmd

    values = config_cmd.limit_values(zone, day, night, bands, clear_bands)  # bad syntax: exit 2 before connecting
    with _config_link(ctx) as link:
        config_cmd.send_set(link, values)
        config = config_cmd.read_config(link)
    for line in config_cmd.describe({k: v for k, v in config.items()
                                     if k in ("zone", "day_start", "night_start", "bands")}):
        click.echo(line)


DEMO_CONFIG = {"zone": "1", "bands": [{"start": "19:00", "end": "21:30", "limit": 65.0, "name": "dance"}]}
"""The demo's boards: GB 3096 class 1 (55/45 dB) with a local dance band, as docs/enforcement.md configures a square."""


@cli.command()
@click.option("--boards", "n_boards", type=click.IntRange(1, 4), default=4, show_default=True,
              help="How many virtual boards (meters of square-evening).")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Stop after S seconds and print the summary (default: run until Ctrl-C).")
@click.option("--speed", type=click.FloatRange(min=0.1, max=50), default=1.0, show_default=True, metavar="X",
              help="Device seconds per wall second.")
@click.option("--limit", "limit_db", type=click.FloatRange(0, 200), default=None, metavar="DB",
              help="A limit to mark instead of the boards' own (GB 3096 class 1 with a dance band 19:00-21:30 at "
                   "65 dB).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.csv|FILE.jsonl",
              help="Log every record with host time.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--serial", "serial_only", is_flag=True,
              help="Boards on serial only: no broker, no collector (the demo before the fleet).")
@click.option("--db", "db_url", default=None, metavar="URL",
              help="The fleet's database (fleet.sqlite or postgresql://...; default: a temporary SQLite file).")
def demo(n_boards, duration_s, speed, limit_db, log_file, as_json, serial_only, db_url):
    """The square as a fleet: virtual boards on a simulated square evening publishing through a local Mosquitto,
    `slm collect` storing what they publish, and the live monitor on them (`make demo`).

    Starts a Mosquitto on 127.0.0.1 and N virtual boards - the real firmware on the MicroPython unix port behind
    pseudo-terminals, each hearing one meter of the square-evening scenario (the dance team's edge, the facade across
    the street, ...) from 20:00 local time, each configured to GB 3096 class 1 with a local dance band (19:00-21:30,
    65 dB), each publishing to the broker (docs/network.md) - the collector storing into the fleet database, and
    `slm monitor --broker` on the broker: the limit in force, minutes over it, exceedance episodes, last seen; at the
    end what the collector stored per board. --serial: the boards and the monitor on their serial ports only.

    \b
    Examples:
      slm demo
      slm demo --boards 4 --speed 5 --duration 60
      slm demo --serial
    """
    import tempfile
    from contextlib import ExitStack
    from pathlib import Path

    from slm.sim.scenario import load_scenario
    from slm.virtual_board import VirtualBoard

    meters = ["dance-edge", "facade", "drums-edge", "singers-edge"][:n_boards]
    load_scenario("square-evening")
    with ExitStack() as stack:
        fleet = None
        if not serial_only:
            from slm.demo_fleet import DemoFleet

            fleet = stack.enter_context(DemoFleet(db_url))
            click.echo(f"broker {fleet.net['host']}:{fleet.port}, collector into {fleet.db_url}", err=True)
        ports = []
        for m in meters:
            device = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"slm-demo-{m}-")))
            (device / "config.json").write_text(json.dumps(DEMO_CONFIG))
            vb = stack.enter_context(VirtualBoard(scenario="square-evening", meter=m, speed=speed, device_dir=device,
                                                  net=fleet.net if fleet else None))  # started
            ports.append(vb.port)
            click.echo(f"virtual board {m}: {vb.port}" + (f", publishing as {vb.serial}" if fleet else ""),
                       err=True)
        mon = None
        if fleet is not None:  # the fleet's view: what the broker carries, as `slm monitor --broker` shows it
            from slm.collect import parse_broker
            from slm.monitor_mqtt import BrokerMonitor

            mon = BrokerMonitor(parse_broker(f"mqtt://{fleet.net['host']}:{fleet.port}", None, None, None),
                                limit_db=limit_db)
        _watch(ports, log_file, limit_db, duration_s, as_json, title="slm demo", mon=mon,
               extra=fleet.summary if fleet else None)


@cli.command()
@click.option("--port", default=None, metavar="P", help="Serial port (or a virtual board's pty). Default: the only "
              "board found by USB id.")
@click.option("--calibrator", "calibrator_db", default=None, metavar="DB",
              help="Calibrate with an acoustic calibrator of this level on the microphone (94.0 or 114.0; give the "
                   "certified level).")
@click.option("--reference", "use_reference", is_flag=True,
              help="Calibrate side by side with a class 1 reference meter, one window per level.")
@click.option("--check", "check_db", default=None, metavar="DB",
              help="Measure a calibrator of this level and report the drift since the calibration; changes nothing.")
@click.option("--history", "show_history", is_flag=True, help="Show the device's calibration history.")
@click.option("--reference-values", "reference_values", default=None, metavar="LIST",
              help="With --reference: the reference meter's LAeq for each level, in order, e.g. 70.1,75.2,80.0; the "
                   "windows then run without prompts, each after the level has changed by 3 dB and settled, and the "
                   "values go to the first windows whose levels step as the values do.")
@click.option("--window", "window_s", type=click.FloatRange(min=1, max=600), default=10.0, show_default=True,
              metavar="S", help="Length of each measuring window.")
@click.option("--operator", default=None, metavar="NAME", help="Who calibrates (recorded on the device).")
@click.option("--note", default=None, metavar="TEXT", help="A note for the record (place, conditions).")
@click.option("--instrument", default=None, metavar="TEXT",
              help="The calibrator or reference meter: make, model and serial number (recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print the result (or the history) as one JSON object.")
def calibrate(port, calibrator_db, use_reference, check_db, show_history, reference_values, window_s, operator, note,
              instrument, as_json):
    """Calibrate a meter in place, check it for drift, or show its calibration history.

    --calibrator DB: a calibrator (1 kHz) on the microphone; the tool waits for the level to settle, measures a
    window, checks the tone (present, steady within 0.3 dB, LAeq = LCeq = LZeq within 0.2 dB as only at 1 kHz) and
    sets offset = level - reading. --reference: side by side with a class 1 reference meter (10-20 cm apart) at one
    or more steady levels; type the reference meter's LAeq of each window, or give them all with --reference-values;
    the offset comes from a least-squares fit, accepted when linear (slope 1 ± 0.02, residuals within 0.3 dB).
    --check DB: the calibrator again, nothing changed; a drift over 0.5 dB invalidates the data since the last good
    check (GB 3096). Each run is recorded on the device (method, instrument, readings, offset, residuals,
    uncertainty U with k = 2, host time, operator, note); an absurd result is refused with the reason and the
    previous calibration stays in force (exit 1).

    \b
    Examples:
      slm calibrate --calibrator 94.0 --operator "Li Wei" --instrument "B&K 4231 s/n 2345678"
      slm calibrate --reference --instrument "NTi XL2 s/n A2A-12345-E0"
      slm calibrate --reference --reference-values 70.1,75.2,80.0 --window 15 --port /dev/ttyUSB0
      slm calibrate --check 94.0 --note "after the evening campaign"
      slm calibrate --history --json
    """
    from rich.console import Console

    from slm import calibration as cal
    from slm import discovery
    from slm.link import LinkError

    chosen = [name for name, on in (("--calibrator", calibrator_db is not None), ("--reference", use_reference),
                                    ("--check", check_db is not None), ("--history", show_history)) if on]
    if len(chosen) != 1:
        _fail("give one of --calibrator DB, --reference, --check DB, --history" +
              (f" (not {' and '.join(chosen)})" if chosen else ""), 2)
    if reference_values is not None and not use_reference:
        _fail("--reference-values goes with --reference", 2)
    level = None
    if calibrator_db is not None:
        level = cal.parse_level(calibrator_db, "--calibrator")
    if check_db is not None:
        level = cal.parse_level(check_db, "--check")
    values = cal.parse_reference_values(reference_values) if reference_values is not None else None
    debug = bool((click.get_current_context().obj or {}).get("debug"))
    target = discovery.resolve_port(port)  # exit 2 when missing; no --port and no USB board: says to give it
    err = Console(stderr=True)
    try:
        with _device_link(target) as link:
            if show_history:
                _print_history(cal.read_history(link), as_json)
                return
            result = _run_calibration(link, cal, err, level, calibrator_db is not None, values, window_s,
                                      operator, note, instrument)
    except (cal.CalibrationError, LinkError) as e:
        if debug:
            raise
        text = " ".join(str(e).split())
        if isinstance(e, cal.CalibrationRefused):
            text = f"calibration refused: {text}; the previous calibration stays in force"
        _fail(text, 1)
    if as_json:
        click.echo(json.dumps(result.as_dict(), ensure_ascii=False))
        return
    for line in _describe_calibration(result):
        click.echo(line)


def _run_calibration(link, cal, err, level, is_calibrator, values, window_s, operator, note, instrument):
    """One calibration run with a countdown on stderr (a terminal only) and, for --reference, the prompts."""
    from rich.progress import BarColumn, Progress, TextColumn

    interactive = err.is_terminal
    labels = {"settle": "waiting for the level to settle", "wait_change": "waiting for the next level (3 dB change)",
              "window": "measuring"}
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), console=err,
                   transient=True, disable=not interactive)
    state = {"task": None}

    def progress(phase, done, total, level_now):
        if phase == "step":
            stop_bar()
            err.print(f"the level changed ({level_now:.1f} dB(A)) during the window: it starts again once the level "
                      "has settled (its times are shown after it)")
            return
        if phase == "skip":
            stop_bar()
            err.print(f"a window at {level_now:.1f} dB(A) does not step as the reference values do: left out")
            return
        if state["task"] is None:
            bar.start()
            state["task"] = bar.add_task("", total=total, info="")
        info = f"{level_now:.1f} dB(A)" if isinstance(level_now, (int, float)) else ""
        if phase == "window":
            info += f"  {max(0, total - done) * window_s / total:.0f} s left"
        bar.update(state["task"], description=labels.get(phase, phase), completed=done, total=total, info=info)

    def stop_bar():
        if state["task"] is not None:
            bar.remove_task(state["task"])
            bar.stop()
            state["task"] = None

    common = {"window_s": window_s, "operator": operator, "note": note, "instrument": instrument}
    try:
        if level is not None and is_calibrator:
            return cal.calibrate_with_calibrator(link, level, progress=progress, **common)
        if level is not None:
            return cal.check_with_calibrator(link, level, progress=progress, **common)
        if values is not None:
            def report(i, w, ref):
                stop_bar()
                err.print(f"window {i + 1}: {w.host_start} to {w.host_end}: the meter read {w.LAeq:.2f} dB(A), "
                          f"the reference {ref:.2f}")

            return cal.calibrate_with_reference(link, values, progress=progress, on_window=report, **common)

        def ready(i):
            stop_bar()
            if i >= cal.MAX_LEVELS:
                return False
            while True:
                answer = click.prompt(f"Level {i + 1}: set a steady level, press Enter to start a {window_s:g} s "
                                      "window" + (" (or type done)" if i else ""), default="", show_default=False,
                                      err=True)
                if answer.strip().lower() in ("done", "d", "q") and i:
                    return False
                if not answer.strip():
                    return True

        def ask(i, w):
            stop_bar()
            err.print(f"window {i + 1}: {w.host_start} to {w.host_end}, the meter read {w.LAeq:.2f} dB(A)")
            hello = link.hello or {}
            floor, noise = cal.range_floor(hello)
            while True:
                text = click.prompt(f"Reference meter LAeq for window {i + 1}, dB(A)", err=True)
                try:
                    return cal.check_reference_value(text, floor, noise, i)
                except ValueError as e:
                    err.print(f"{e}; type it again")

        return cal.calibrate_with_reference(link, ask=ask, ready=ready, windows=cal.MAX_LEVELS, progress=progress,
                                            **common)
    finally:
        stop_bar()


def _describe_calibration(r) -> list[str]:
    w = r.windows
    if r.method == "calibrator":
        lines = [f"calibrator {r.reference['level_db']:g} dB: the meter read {r.readings[0]:.2f} dB(A) over "
                 f"{w[0]['intervals']} intervals (spread {w[0]['spread_db']:.2f} dB; LCeq - LAeq "
                 f"{w[0]['LCeq'] - w[0]['LAeq']:+.2f}, LZeq - LAeq {w[0]['LZeq'] - w[0]['LAeq']:+.2f} dB)"]
    elif r.method == "reference":
        pairs = ", ".join(f"{m:.2f}/{x:.2f}" for m, x in zip(r.readings, r.reference["values"]))
        lines = [f"reference meter, meter/reference LAeq: {pairs} dB(A); residuals "
                 f"{', '.join('%+.2f' % e for e in r.residuals) or '-'} dB"]
        if r.linear is not None:
            slope = f"slope {r.slope:.4f}, " if r.slope is not None else ""
            lines.append(f"linearity: {slope}{'linear' if r.linear else 'NOT linear'} (slope 1 ± 0.02, residuals "
                         "within 0.3 dB)")
    else:
        lines = [f"check with the calibrator at {r.reference['level_db']:g} dB: the meter reads {r.readings[0]:.2f} "
                 f"dB(A); drift {r.drift_db:+.2f} dB since the calibration in force"
                 + (f" ({r.baseline['method']}, {r.baseline['time']})" if r.baseline else " (none on record)")]
        if r.change_since_check_db is not None:
            lines.append(f"change since the last check: {r.change_since_check_db:+.2f} dB")
        if r.flagged:
            since = r.invalid_since or "the last calibration"
            lines.append(f"DRIFT OVER 0.5 dB: data since the last good check ({since}) are invalid under GB 3096; "
                         "recalibrate")
        else:
            lines.append("within 0.5 dB (GB 3096)")
    if r.method != "check":
        lines.append(f"offset {r.previous_offset_db:+.2f} -> {r.offset_db:+.2f} dB (change {r.change_db:+.2f} dB); "
                     f"expanded uncertainty U = {r.uncertainty_db:.2f} dB (k = 2)")
    else:
        lines.append(f"offset unchanged at {r.offset_db:+.2f} dB; U = {r.uncertainty_db:.2f} dB (k = 2)")
    lines.append(f"recorded on the device as #{r.n} at {r.time}")
    return lines


def _print_history(records: list, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"records": records}, ensure_ascii=False))
        return
    if not records:
        click.echo("no calibration on record")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="calibration history (* = in force)")
    for col in ("n", "time", "method", "offset dB", "reference", "readings", "residuals", "U dB", "drift", "operator",
                "note"):
        table.add_column(col)
    for r in records:
        ref = r.get("reference") or {}
        what = ", ".join(f"{k} {v}" for k, v in ref.items()) if isinstance(ref, dict) else str(ref)

        def nums(key):
            v = r.get(key)
            return ", ".join(f"{x:g}" for x in v) if isinstance(v, list) else ""

        def num(key, fmt="{:+.2f}"):
            v = r.get(key)
            return fmt.format(v) if isinstance(v, (int, float)) else ""

        table.add_row(f"{r.get('n')}{'*' if r.get('in_force') else ''}", str(r.get("time") or "-"),
                      str(r.get("method")), num("offset_db"), what, nums("readings"), nums("residuals"),
                      num("uncertainty_db", "{:.2f}"), num("drift_db"), str(r.get("operator") or ""),
                      str(r.get("note") or ""))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)


@cli.command()
@click.option("--port", default=None, metavar="P", help="Serial port (or a virtual board's pty). Default: the only "
              "board found by USB id.")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Directory for minutes.csv, events.jsonl and audit.jsonl (created; a later pull appends what is "
                   "new).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def pull(port, out_dir, as_json):
    """Copy the device's own record (its minute records, events and audit trail) into DIR, resuming where the last
    pull left.

    \b
    Examples:
      slm pull --out square-north/
      slm pull --port /dev/ttyUSB0 --out square-north/ --json
    """
    from slm.pull import PullStore, pull_record

    store = PullStore(out_dir)  # a directory that cannot take the pull is refused before the device is asked
    with _device_link(port) as link:
        report = pull_record(link, out_dir, store)
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
        return
    for kind, name in (("minute", "minutes"), ("event", "events"), ("audit", "audit records")):
        if kind not in report.kinds:
            continue
        r = report.kinds[kind]
        text = f"{name}: {r.pulled} new" + (f" (n {r.first}-{r.last})" if r.pulled else "")
        if r.lost:
            text += f", {r.lost} lost (overwritten on the device before they were pulled)"
        click.echo(text + f"; {report.out_dir} holds up to n={r.stored_last}")


@cli.command()
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option("--keys", "keys_dir", required=True, metavar="DIR", help="The devices' keys: the keys/ folder of "
              "`slm provision` (DEVICE.key).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def verify(sources, keys_dir, as_json):
    """Check the signed records (their hash chains): name each chain's first problem and last trustworthy point.

    SOURCE is a folder written by `slm pull`, a log of `slm monitor --log` (.jsonl) or a collector database (a
    SQLite file or postgresql://...); several are read together (a record replayed from another device is named
    when that device's records are among them). Exit 0: every record verified; 1: verification failed (or records
    are unsigned); 2: bad input. See docs/verifying.md.

    \b
    Examples:
      slm verify square-north/ --keys broker/keys
      slm verify fleet.sqlite --keys broker/keys --json
    """
    from rich.console import Console

    from slm.verify import verify as check

    result = check(list(sources), keys_dir)
    if as_json:
        click.echo(json.dumps(result.as_dict(), ensure_ascii=False))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
        from slm.verify import render

        render(result, console)
    return 0 if result.ok else 1


@cli.command()
@click.argument("source", metavar="SOURCE")
@click.option("--from", "start", default=None, metavar="T", help="Start, the meters' local time: 2026-07-15 or "
              "2026-07-15T19:00 (default: the first record's hour).")
@click.option("--to", "end", default=None, metavar="T", help="End (excluded; a date alone includes that day; "
              "default: the end of the last record's hour).")
@click.option("--site", default=None, metavar="NAME", help="The site to report from a database; the site's name "
              "for a pulled folder or a log.")
@click.option("--out", required=True, metavar="FILE|DIR", help="report.html, report.pdf, or a folder for both and "
              "a CSV per table.")
@click.option("--cn-periods", default="06:00,22:00", show_default=True, metavar="DAY,NIGHT",
              help="Start of China's day and night (Ld, Ln, Ldn).")
@click.option("--eu-periods", default="07:00,19:00,23:00", show_default=True, metavar="DAY,EVENING,NIGHT",
              help="Start of the EU END day, evening and night (Lday, Levening, Lnight, Lden).")
@click.option("--keys", "keys_dir", default=None, metavar="DIR", help="The devices' keys (slm provision's keys/): "
              "show each record's verification as `slm verify` finds it (default: the collector's marks).")
def report(source, start, end, site, out, cn_periods, eu_periods, keys_dir):
    """Report the levels of a period: hourly LAeq against the limit, Ld/Ln/Ldn, Lden, episodes, night maxima.

    SOURCE is a collector database (a SQLite file or postgresql://...), a folder written by `slm pull`, or a log
    of `slm monitor --log` (.csv or .jsonl).

    \b
    Examples:
      slm report fleet.sqlite --from 2026-07-15 --to 2026-07-21 --site square --out week/
      slm report square-north/ --from 2026-07-15T19:00 --to 2026-07-16T07:00 --out night.pdf
    """
    from slm.report import make_report

    rep, files = make_report(source, start, end, site, out, cn_periods, eu_periods, keys_dir)
    click.echo(f"{len(rep.meters)} meters, {rep.start:%Y-%m-%d %H:%M} to {rep.end:%Y-%m-%d %H:%M}: "
               + ", ".join(str(f) for f in files))


@cli.command()
@click.option("--broker", required=True, metavar="URL", help="mqtt://HOST:PORT (or mqtts://HOST:PORT with --tls).")
@click.option("--user", default=None, metavar="U", help="Broker user name (the collector's, from slm provision).")
@click.option("--password-file", default=None, metavar="F", help="File holding that user's password.")
@click.option("--tls", "ca_file", default=None, metavar="CA", help="CA certificate: connect with TLS and check the "
              "broker's certificate against it.")
@click.option("--db", "db_url", default="fleet.sqlite", show_default=True, metavar="URL",
              help="A SQLite file, or postgresql://USER@HOST:PORT/DB.")
@click.option("--client-id", default="slm-collect", show_default=True, metavar="ID",
              help="MQTT client id: the broker keeps this collector's session (and what it missed) under it.")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Stop after S seconds (default: run until Ctrl-C or SIGTERM).")
@click.option("--keys", "keys_dir", default=None, metavar="DIR", help="The devices' keys (the keys/ folder of "
              "`slm provision`): check each signed record on arrival and mark it (column verified).")
@click.option("--share", "share", default=None, metavar="GROUP", help="One of a group of collectors sharing the "
              "fleet: the broker gives each message to one of them ($share/GROUP/slm/#; docs/scale.md).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def collect(broker, user, password_file, ca_file, db_url, client_id, duration_s, keys_dir, share, as_json):
    """Store what the fleet publishes on an MQTT broker: devices, minutes, intervals, events, status.

    Subscribes to slm/# and validates every message (topic slm/SITE/DEVICE/KIND, the serial record as JSON):
    bad ones are counted and kept aside in the table `rejected`; a record sent again is stored once. At the end it
    prints what it received, stored, dropped as duplicates and rejected. See docs/network.md.

    \b
    Examples:
      slm collect --broker mqtt://127.0.0.1:1883 --db fleet.sqlite
      slm collect --broker mqtts://broker:8883 --tls ca.crt --user collector --password-file collector.pw \\
                  --db postgresql://slm@db/slm
    """
    from slm import collect as collect_mod
    from slm.fleet_db import open_db

    target = collect_mod.parse_broker(broker, user, password_file, ca_file)
    collect_mod.topic_filter(share)  # a bad group name is bad input, before anything is opened
    keys = None
    if keys_dir is not None:
        from slm.verify import load_keys

        keys = load_keys(keys_dir)
    db = open_db(db_url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counts = collect_mod.run(db, target, client_id=client_id, duration_s=duration_s, stop=stop, keys=keys,
                             share=share).as_dict()
    if as_json:
        click.echo(json.dumps(counts))
    else:
        click.echo(f"received {counts['received']}, stored {sum(counts['stored'].values())} {counts['stored']}, "
                   f"duplicates {sum(counts['duplicates'].values())}, rejected {sum(counts['rejected'].values())} "
                   f"{counts['rejected']}, connections {counts['connects']}")


@cli.command()
@click.option("--db", "db_url", required=True, metavar="URL", help="The collector's database: a SQLite file, or "
              "postgresql://USER@HOST:PORT/DB.")
@click.option("--to", "target", required=True, metavar="HOST:PORT", help="The platform's TCP address.")
@click.option("--mn", "stations", multiple=True, metavar="DEVICE=MN", help="Send this device as the station MN "
              "(repeatable; other devices are not sent).")
@click.option("--pw", required=True, metavar="PW", help="The platform's access password (PW).")
@click.option("--state", "state_file", default=None, metavar="FILE", help="What the platform acknowledged "
              "(default: DB.hj212-HOST-PORT.json next to a SQLite database).")
@click.option("--utc-offset", default="+08:00", show_default=True, metavar="+HH:MM",
              help="The platform's local time, for QN and DataTime (China Standard Time).")
@click.option("--no-ack", is_flag=True, help="Flag=4: do not ask the platform for data replies (default Flag=5).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="S", help="Wait this long for a data reply before sending again.")
@click.option("--retries", type=click.IntRange(0, 100), default=3, show_default=True,
              help="Sends again without a reply before the connection is dropped and made again.")
@click.option("--rtd-interval", "rtd_interval_s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              metavar="S", help="Real-time LA (CN=2011, from interval records) at most this often; 0: none.")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              metavar="S", help="Look for new rows this often.")
@click.option("--once", is_flag=True, help="Send what is due, then stop (exit 1 if the platform fails).")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Stop after S seconds (default: run until Ctrl-C or SIGTERM).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def hj212(db_url, target, stations, pw, state_file, utc_offset, no_ack, timeout_s, retries, rtd_interval_s, poll_s,
          once, duration_s, as_json):
    """Send the collector's data to an environmental platform by HJ 212-2017 (ST=23): real-time LA (CN=2011),
    minutes (2051), hours (2061) and days (2031: Ld, Ln, Ldn), resuming after the last acknowledged. See
    docs/hj212.md.

    \b
    Example:
      slm hj212 --db fleet.sqlite --to 10.1.2.3:9000 --mn a0b1c2d3e4f5=010000A8900016F000169DC0 --pw 100000
    """
    from pathlib import Path

    from slm import hj212 as hj

    host, port = hj.parse_target(target)
    options = hj.Options(host, port, hj.parse_stations(stations), hj.check_pw(pw), hj.parse_offset(utc_offset),
                         not no_ack, timeout_s, retries, rtd_interval_s, poll_s)
    state = Path(state_file) if state_file else hj.default_state_path(db_url, host, port)
    db = hj.open_source_db(db_url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counts = hj.run(db, state, options, stop=stop, once=once, duration_s=duration_s).as_dict()
    if as_json:
        click.echo(json.dumps(counts))
    else:
        click.echo(f"sent {sum(counts['sent'].values())} {counts['sent']}, resent {counts['resent']}, "
                   f"connections {counts['connects']}, failures {counts['failures']}")


@cli.command()
@click.option("--db", "db_url", default="fleet.sqlite", show_default=True, metavar="URL",
              help="The collector's database: a SQLite file, or postgresql://USER@HOST:PORT/DB (opened read-only).")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Listen on this address (0.0.0.0: every interface; see docs/web.md, Security).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: any free port, printed).")
@click.option("--positions", default=None, metavar="FILE", help="TOML file placing each site's meters on its plan "
              "(a scenario's meters or x, y in metres; docs/web.md).")
def serve(db_url, host, port, positions):
    """Serve a web page per site: the meters on a plan of the square, live levels, the limit and state, the last
    hour's chart, and the report of a chosen period. Read-only. See docs/web.md.

    \b
    Examples:
      slm serve --db fleet.sqlite --positions square.toml
      slm serve --db postgresql://slm@db/slm --host 0.0.0.0 --port 8080
    """
    from slm.serve import serve as run_server

    run_server(db_url, host, port, positions)


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder of the broker's files (created; files already there are updated).")
@click.option("--device", "devices", multiple=True, metavar="ID", help="A device's id, its serial (repeatable).")
@click.option("--devices-file", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="More device ids, one a line.")
@click.option("--collector", default="collector", show_default=True, metavar="NAME", help="The collector's account.")
@click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True, help="The broker's port.")
@click.option("--bind", default=None, metavar="ADDRESS", help="Listen on this address only (default: all).")
@click.option("--tls-cert", default=None, metavar="CERT", help="The broker's certificate (with --tls-key): TLS only.")
@click.option("--tls-key", default=None, metavar="KEY", help="The broker's private key.")
@click.option("--config-dir", default=None, metavar="DIR", help="Where the files will be on the broker's machine "
              "(default: DIR itself), for the paths in mosquitto.conf.")
@click.option("--rotate", multiple=True, metavar="ID", help="Give this account a new password (repeatable).")
def provision(out_dir, devices, devices_file, collector, port, bind, tls_cert, tls_key, config_dir, rotate):
    """Write the broker's security files: mosquitto.conf (no anonymous clients), passwd (one user per device and
    the collector), acl (a device writes only slm/+/ITS-ID/#, the collector reads slm/#), and each account's
    password in credentials/ID.json (and collector.password). Existing accounts keep their passwords.

    \b
    Example:
      slm provision --out broker/ --device a0b1c2d3e4f5 --device 0a1b2c3d4e5f
      mosquitto -c broker/mosquitto.conf
    """
    from pathlib import Path

    from slm.errors import InputError
    from slm.provision import provision as make_files

    ids = list(devices)
    if devices_file:
        ids += [line.strip() for line in Path(devices_file).read_text().splitlines() if line.strip()]
    if not ids and not Path(out_dir, "credentials").is_dir():
        raise InputError("name at least one device (--device ID or --devices-file FILE)")
    result = make_files(out_dir, ids, collector, port, tls_cert, tls_key, tuple(rotate), config_dir, bind)
    click.echo(f"{len(result['accounts'])} accounts ({len(result['added'])} new) in {out_dir}: "
               + ", ".join(result["files"]))


def main(argv: list[str] | None = None) -> None:
    """The `slm` entry point: exit codes 0 success, 1 a failed operation, 2 bad input or usage, 130 interrupted;
    errors are one line on stderr (a traceback only with --debug)."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in (args[:args.index("--")] if "--" in args else args)
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not where the caller ignores it)
        signal.signal(signal.SIGINT, _Interrupt.handler)
    try:
        code = cli.main(args=args, prog_name="slm", standalone_mode=False, obj={})
        sys.exit(code if isinstance(code, int) else 0)  # click returns ctx.exit()'s code in this mode
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:  # one line: what is wrong, and where the help is
        where = e.ctx.command_path if e.ctx is not None else "slm"
        message = " ".join(e.format_message().split())
        click.echo(f"{where}: {message} (see '{where} --help')", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:  # click's own message (a file it could not open, ...), exit 1 or 2
        e.show()
        sys.exit(e.exit_code)
    except (click.Abort, KeyboardInterrupt):
        if debug:
            raise
        _exit_interrupted()
    except BrokenPipeError:  # `slm ... | head`: the reader left; nothing more to say
        sys.stderr.close()
        sys.exit(1)
    except Exception as e:  # raised outside a subcommand
        if _Interrupt.seen and not debug:
            _exit_interrupted()
        sys.exit(_report(e, debug))


def _exit_interrupted() -> None:
    click.echo("slm: interrupted", err=True)
    sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
