"""What differs between an ESP32 and the unix port (virtual boards): audio input, reboot, watchdog, identity.

``platform()`` returns an object with ``open_audio(board)``, ``reboot()``, ``feed_watchdog()``, ``unique_id()``,
``ticks_ms()``, ``ticks_diff()`` and ``realtime`` (whether the audio source runs on its own clock, so lost audio can be counted).
Hardware is chosen here once and passed to the application, never imported by the meter code.
"""

import gc
import sys
import time

import audio_source

REBOOT_EXIT_CODE = 75  # a virtual board's runner restarts the process when it exits with this code

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


class UnixPlatform(_Clock):
    """The MicroPython unix port: audio from a FIFO or file of I2S words named in board.json."""

    realtime = False

    def open_audio(self, board):
        return audio_source.StreamAudio(board.get("audio_path", "audio.fifo"), board["rate"],
                                        board.get("startup_discard_s", 0.0))

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
        src = audio_source.I2SAudio(board)
        self.wdt = self.machine.WDT(timeout=self.WATCHDOG_MS)
        return src

    def reboot(self):
        self.machine.reset()

    def feed_watchdog(self):
        if self.wdt is not None:
            self.wdt.feed()

    def unique_id(self):
        import binascii

        return binascii.hexlify(self.machine.unique_id()).decode()


def platform():
    if sys.platform in ("linux", "darwin"):
        return UnixPlatform()
    return Esp32Platform()
