"""Audio sources for the meter: 32-bit I2S words, read into a preallocated buffer without allocating.

``I2SAudio`` reads the board's microphone with ``machine.I2S`` (pins, slot and rate from board.json), discards the
start-up transient, and re-opens the peripheral after an I2S error. ``StreamAudio`` reads the same words from a file
or FIFO (virtual boards: the simulator writes them). Both: ``readinto(buf) -> bytes read`` (0 at the end of a
stream), ``errors`` (I2S errors recovered from).
"""

import micropython


class StreamAudio:
    """I2S words from a file or FIFO; blocks until the buffer is full or the stream ends. Like the microphone, it
    drops the first ``discard_s`` seconds (the start-up transient)."""

    def __init__(self, path, rate=48000, discard_s=0.0):
        self.f = open(path, "rb")
        self.errors = 0
        buf = bytearray(4096)
        left = int(discard_s * rate) * 4
        while left > 0:
            r = self.readinto(memoryview(buf)[:min(left, len(buf))])
            if not r:
                break
            left -= r

    def readinto(self, buf):
        got = self.f.readinto(buf)  # MicroPython reads until full or the end: no view needed, nothing allocated
        if not got:
            return 0
        n = len(buf)
        if got < n:  # a short read (CPython on a FIFO, or the end of the stream): the rest through a view
            mv = memoryview(buf)
            while got < n:
                r = self.f.readinto(mv[got:])
                if not r:
                    break
                got += r
        return got


class I2SAudio:
    """The board's I2S microphone (ESP32 ``machine.I2S``): mono from the left or right slot, 32-bit words."""

    def __init__(self, board):
        self.board = board
        self.errors = 0
        self.stereo = board["i2s"].get("slot", "left") == "right"
        self.scratch = None
        self.i2s = self._open()
        self._discard(board.get("startup_discard_s", 0.3))

    def _open(self):
        from machine import I2S, Pin

        c = self.board["i2s"]
        return I2S(c["id"], sck=Pin(c["sck"]), ws=Pin(c["ws"]), sd=Pin(c["sd"]), mode=I2S.RX, bits=32,
                       format=I2S.STEREO if self.stereo else I2S.MONO, rate=self.board["rate"], ibuf=16384)

    def _discard(self, seconds):
        buf = bytearray(4096)
        left = int(seconds * self.board["rate"]) * 4 * (2 if self.stereo else 1)
        while left > 0:
            left -= self.i2s.readinto(buf)

    def readinto(self, buf):
        try:
            if not self.stereo:
                return self.i2s.readinto(buf)
            if self.scratch is None or len(self.scratch) != 2 * len(buf):
                self.scratch = bytearray(2 * len(buf))
            n = self.i2s.readinto(self.scratch)
            _right_slot(self.scratch, buf, n // 8)
            return n // 2
        except OSError:
            self.errors += 1
            try:
                self.i2s.deinit()
            except OSError:
                pass
            self.i2s = self._open()
            return 0


@micropython.viper
def _right_slot(stereo, mono, frames: int):
    """mono[i] = the right-slot word of stereo frame i (no allocation)."""
    s = ptr32(stereo)
    m = ptr32(mono)
    i = 0
    while i < frames:
        m[i] = s[2 * i + 1]
        i += 1
