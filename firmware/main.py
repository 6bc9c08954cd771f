"""Boot entry point: start the meter application (firmware/app.py), and make sure it comes back from the REPL.

A lone Ctrl-C does not stop the meter (app.run); Ctrl-C followed by more console input within 2 s (mpremote,
`slm deploy`, a person) hands the board to the REPL. Then the watchdog is re-armed with ``REPL_WATCHDOG_MS``:
nothing feeds it at the REPL, so a board left there (a stray Ctrl-C and a key, a host that went away) resets
and measures again by itself; a host tool finishes its work well within the time and resets the board itself.
On the unix port (a virtual board) there is no watchdog: Ctrl-D at its REPL restarts it (docs/hardware.md)."""

import app

REPL_WATCHDOG_MS = 600000  # 10 minutes at the REPL, then the board resets into the meter


def arm_repl_watchdog(ms):
    """Start the hardware watchdog, or give the running one (the meter's, app.turn feeds it) a new timeout: on the
    ESP32, machine.WDT(timeout=) reconfigures the one task watchdog. False where there is none (unix, CPython)."""
    try:
        import machine

        machine.WDT(timeout=ms)
    except (ImportError, AttributeError):  # the unix port's machine has no WDT; CPython has no machine
        return False
    print("slm: REPL; the watchdog restarts the meter in %d min (machine.WDT(timeout=ms) for longer)" % (ms // 60000))
    return True


try:
    app.main()
except KeyboardInterrupt:
    arm_repl_watchdog(REPL_WATCHDOG_MS)
    raise
