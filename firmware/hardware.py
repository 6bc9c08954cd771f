"""What differs between an ESP32 and the unix port (virtual boards): audio input, reboot, watchdog, identity.

``platform()`` returns an object with ``open_audio(board)``, ``reboot()``, ``feed_watchdog()``, ``unique_id()``,
``ticks_ms()``, ``ticks_diff()``, ``rtc()`` and ``set_rtc(day, ms)`` (the real-time clock: UTC at the start of the
audio, see clock.py) and ``realtime`` (whether the audio source runs on its own clock, so lost audio can be counted).
Hardware is chosen here once and passed to the application, never imported by the meter code.

The unix port's real-time clock is the file rtc.json in the device folder: {"utc": ISO 8601 time of the stream's
first audio word, "source": "scenario", "follows_audio": true}. A virtual board (host/virtual) rewrites it each
time it starts feeding a fresh audio FIFO, so with ``follows_audio`` the firmware removes the old file before it
opens the FIFO and waits for the new one after: its clock then starts at the scene time of the first word it hears,
across reboots too. Without the file the clock is unset.
"""

import gc
import json
import os
import sys
import time

import audio_source
import clock

REBOOT_EXIT_CODE = 75  # a virtual board's runner restarts the process when it exits with this code
RTC_FILE = "rtc.json"
RTC_WAIT_MS = 10000  # the longest the unix port waits for a virtual board's rtc.json after opening the audio
RTC_VALID_YEAR = 2024  # an RTC before this year was never set (an ESP32 starts at 2000-01-01)

try:
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
except AttributeError:  # CPython, the fallback engine

    def _ticks_ms():
        return int(time.monotonic() * 1000)  # type: ignore[attr-defined]

    def _ticks_diff(a, b):
        return a - b


_mem_free = getattr(gc, "mem_free", lambda: 0)  # CPython has no MicroPython heap to report


class _Clock:
    """Time and memory, the same on every port."""

    def ticks_ms(self):
        return _ticks_ms()

    def ticks_diff(self, a, b):
        return _ticks_diff(a, b)

    def mem_free(self):
        return _mem_free()


def _sleep_ms(ms):
    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:  # CPython
        time.sleep(ms / 1000)


def _read_rtc_file():
    """The rtc.json dict, or None when it is missing or unreadable."""
    try:
        with open(RTC_FILE) as f:
            rtc = json.load(f)
    except (OSError, ValueError):
        return None
    return rtc if isinstance(rtc, dict) else None


class UnixPlatform(_Clock):
    """The MicroPython unix port: audio from a FIFO or file of I2S words named in board.json; the clock from
    rtc.json."""

    realtime = False

    def __init__(self):
        self._rtc = None

    def open_audio(self, board):
        rtc = _read_rtc_file()
        follows = rtc is not None and rtc.get("follows_audio") is True
        if follows:
            try:
                os.remove(RTC_FILE)
            except OSError:
                pass
        rate = board["rate"]
        discard_s = board.get("startup_discard_s", 0.0)
        src = audio_source.StreamAudio(board.get("audio_path", "audio.fifo"), rate, discard_s)
        waited = 0
        while follows:
            rtc = _read_rtc_file()
            if rtc is not None or waited >= RTC_WAIT_MS:
                break
            _sleep_ms(5)
            waited += 5
        self._rtc = None
        if rtc is not None:
            try:
                day, ms = clock.parse_iso(rtc.get("utc"))
                source = rtc.get("source", "rtc")
                # device time 0 is the first word after the start-up discard
                self._rtc = (day, ms + int(discard_s * rate) * 1000 // rate,
                             source if source in clock.SOURCES and source != "unset" else "rtc")
            except (ValueError, TypeError):
                self._rtc = None
        return src

    def rtc(self):
        """(day, ms of the day) UTC at device time 0 and the clock's source, or None (unset)."""
        return self._rtc

    def set_rtc(self, day, ms):
        pass  # a virtual board's clock follows its scene at every start

    def reboot(self):
        sys.exit(REBOOT_EXIT_CODE)

    def feed_watchdog(self):
        pass

    def unique_id(self):
        try:
            with open("device_id.txt") as f:
                return f.read().strip()
        except OSError:
            return "virtual"


class Esp32Platform(_Clock):
    """An ESP32-class board: I2S microphone, hardware watchdog, machine.reset()."""

    realtime = True
    WATCHDOG_MS = 8000

    def __init__(self):
        import machine

        self.machine = machine
        self.wdt = None

    def open_audio(self, board):
        return audio_source.I2SAudio(board)

    def reboot(self):
        self.machine.reset()

    def reset_cause(self):
        """Why the board started (the audit trail's boot entry): power_on, hard, watchdog, deepsleep, soft."""
        m = self.machine
        names = {m.PWRON_RESET: "power_on", m.HARD_RESET: "hard", m.WDT_RESET: "watchdog",
                 m.DEEPSLEEP_RESET: "deepsleep", m.SOFT_RESET: "soft"}
        return names.get(m.reset_cause(), "other")

    def rtc(self):
        """(day, ms of the day) UTC now from the RTC and "rtc", or None when it was never set."""
        try:
            y, mo, d, _, h, mi, s, us = self.machine.RTC().datetime()
        except Exception:
            return None
        if y < RTC_VALID_YEAR:
            return None
        return clock.days_from_civil(y, mo, d), ((h * 60 + mi) * 60 + s) * 1000 + us // 1000, "rtc"

    def set_rtc(self, day, ms):
        """Set the RTC (it keeps running across a reset) to UTC (day, ms of the day)."""
        y, mo, d = clock.civil_from_days(day)
        s = ms // 1000
        self.machine.RTC().datetime((y, mo, d, (day + 3) % 7, s // 3600, s // 60 % 60, s % 60, ms % 1000 * 1000))

    def feed_watchdog(self):
        """Called once per loop turn. The watchdog starts at the first call, not before: the start-up (the record's
        scan of its files, closing an interrupted episode) may take seconds on the flash, and a watchdog that fired
        during it would restart the board into the same start-up again."""
        if self.wdt is None:
            self.wdt = self.machine.WDT(timeout=self.WATCHDOG_MS)
        self.wdt.feed()

    def unique_id(self):
        import binascii

        return binascii.hexlify(self.machine.unique_id()).decode()


def platform():
    if sys.platform in ("linux", "darwin"):
        return UnixPlatform()
    return Esp32Platform()
