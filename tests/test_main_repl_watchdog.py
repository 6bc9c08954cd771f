"""firmware/main.py: when the meter hands the board to the REPL (Ctrl-C and more input), the hardware watchdog is
re-armed with REPL_WATCHDOG_MS, so a board left at the REPL resets into the meter by itself; when the application
ends otherwise, the watchdog is left alone. Run with CPython (firmware/ runs unchanged there) and stand-ins for the
hardware's ``machine`` module and for the application (the meter itself is tested elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"

MACHINE = '''
class WDT:
    def __init__(self, timeout):
        with open("wdt.log", "a") as f:
            f.write("%d\\n" % timeout)
'''


def boot(tmp_path: Path, app_main: str, with_machine: bool = True) -> subprocess.CompletedProcess:
    (tmp_path / "app.py").write_text(f"def main():\n    {app_main}\n")
    if with_machine:
        (tmp_path / "machine.py").write_text(MACHINE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(FIRMWARE)])}
    return subprocess.run([sys.executable, "-c", "import main"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def repl_watchdog_ms() -> int:
    """main.py's constant, read from its source (importing main would start the meter)."""
    line = next(ln for ln in (FIRMWARE / "main.py").read_text().splitlines() if ln.startswith("REPL_WATCHDOG_MS"))
    return int(line.split("=")[1].split("#")[0])


def test_the_repl_gets_a_watchdog_after_ctrl_c(tmp_path):
    r = boot(tmp_path, "raise KeyboardInterrupt")
    assert "KeyboardInterrupt" in r.stderr and r.returncode != 0  # the REPL (here: the interpreter) gets it
    assert (tmp_path / "wdt.log").read_text().split() == [str(repl_watchdog_ms())]
    assert 60000 <= repl_watchdog_ms() <= 3600000  # long enough for a host tool, short enough for a square
    assert "the watchdog restarts the meter" in r.stdout


def test_a_meter_that_ends_leaves_the_watchdog_alone(tmp_path):
    r = boot(tmp_path, "return None")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "wdt.log").exists()


def test_without_a_watchdog_the_interrupt_still_reaches_the_repl(tmp_path):
    r = boot(tmp_path, "raise KeyboardInterrupt", with_machine=False)
    assert "KeyboardInterrupt" in r.stderr and r.returncode != 0
    assert "watchdog" not in r.stdout
