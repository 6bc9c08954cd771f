"""The command line's contract: errors are one line on stderr with exit 2 (input/usage) or 1 (a failed
operation), Ctrl-C at any moment is one line and exit 130, `--version` names the version; never a traceback
unless --debug."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from slm import errors
from tests.conftest import INTERRUPTIBLE

READY = "slm-cli-imported"
# Runs the CLI and says so from inside slm.cli.main (where an interrupt is slm's to handle), before the command
# imports numpy/scipy and simulates: the test interrupts it at known points after that.
RUNNER = f"""
import sys, slm.cli
group_main = slm.cli.cli.main
def announced(*args, **kwargs):
    print({READY!r}, flush=True)
    return group_main(*args, **kwargs)
slm.cli.cli.main = announced
slm.cli.main(sys.argv[1:])
"""


def slm(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "slm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("slm: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_version():
    r = slm("--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("slm ") and r.stdout.strip() != "slm "


def test_missing_input_file_is_exit_2_one_line(tmp_path):
    r = slm("measure", tmp_path / "nothing.wav")
    assert r.returncode == 2
    one_error_line(r.stderr)


def test_unknown_board_is_exit_2_one_line():
    r = slm("boards", "show", "no-such-board")
    assert r.returncode == 2
    assert "no-such-board" in one_error_line(r.stderr)


def test_unknown_command_is_usage_exit_2():
    r = slm("no-such-command")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,words", [
    (("no-such-command",), "No such command"),
    (("monitor", "--bogus"), "--bogus"),
    (("measure", "--interval", "nope", "x.wav"), "--interval"),
    (("hj212", "--db", "x.sqlite", "--to", "127.0.0.1:9", "--mn", "a=b", "--pw", "1", "--timeout", "0"), "--timeout"),
    (("report",), "Missing argument"),
])
def test_usage_errors_are_one_line_with_where_to_find_help(args, words):
    r = slm(*args)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("slm") and words in lines[0] and "--help'" in lines[0], lines[0]


def test_debug_shows_the_traceback(tmp_path):
    r = slm("--debug", "measure", tmp_path / "nothing.wav")
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.parametrize("exc, code", [
    (errors.InputError("x"), 2), (errors.OperationError("x"), 1), (errors.PortNotFoundError("x"), 2),
    (FileNotFoundError(2, "x"), 2), (PermissionError(13, "x"), 2), (OSError(5, "x"), 1), (ValueError("x"), 2),
    (RuntimeError("x"), None), (KeyError("x"), None)])
def test_exit_code_map(exc, code):
    assert errors.exit_code(exc) == code


def test_messages_are_one_line():
    assert str(errors.InputError("a\n  b\tc")) == "a b c"


@pytest.mark.parametrize("delay_s", [0.0, 0.3, 1.0])
def test_ctrl_c_at_any_moment_is_one_line_and_exit_130(tmp_path, delay_s):
    """Interrupted while importing numpy/scipy, while simulating, ...: `slm: interrupted`, exit 130."""
    p = subprocess.Popen([sys.executable, "-c", RUNNER, "sim", "square-evening", "--out", tmp_path / "out",
                          "--duration", "600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         **INTERRUPTIBLE)
    try:
        assert p.stdout.readline().strip() == READY
        time.sleep(delay_s)  # where it is interrupted varies; any moment must end the same way
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert one_error_line(err) == "slm: interrupted"


def test_an_error_that_an_interrupt_caused_is_the_interrupt(monkeypatch):
    """Ctrl-C inside numpy's import comes out as ImportError("initialization failed") (seen once in CI-like runs,
    at 1 s into `slm sim`): after a SIGINT, whatever a command raises is reported as the interrupt."""
    from slm import cli

    monkeypatch.setattr(cli._Interrupt, "seen", False)
    assert cli._report(ImportError("initialization failed"), debug=False) == 1  # without a SIGINT: a bug
    monkeypatch.setattr(cli._Interrupt, "seen", True)
    with pytest.raises(KeyboardInterrupt):
        cli._report(ImportError("initialization failed"), debug=False)


def test_engine_choices_are_the_engines():
    """cli keeps the engine names as a literal (importing slm.firmware_engine would slow every start)."""
    from slm import cli, firmware_engine

    assert cli.ENGINES == firmware_engine.ENGINES
