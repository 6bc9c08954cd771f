"""A chain of MAX7219 8x8 LED matrices over machine.SPI, as one framebuf (written for slm; MIT like the rest).

``Matrix(spi, cs, modules, intensity)`` is a ``framebuf.FrameBuffer`` of ``8 * modules`` x 8 pixels (MONO_HLSB:
bit 7 of a byte is the leftmost pixel). ``show_row(r)`` sends row ``r`` to every module in one chip-select frame
(2 bytes per module, from a preallocated buffer: nothing allocates), ``show()`` sends all eight rows.

Wiring: module 0, the one whose DIN is wired to the microcontroller, is the leftmost; the 16-bit words shift
through the chain, so the first word of a frame ends up in the last (rightmost) module. A row register's D7 is the
module's leftmost column (FC-16 style modules; mirror the panel if yours differ). The datasheet's registers:
digit 0-7 rows = 0x1-0x8, decode mode 0x9 (0: no decoding), intensity 0xA (0-15), scan limit 0xB (7: all rows),
shutdown 0xC (1: normal operation), display test 0xF (0: off).
"""

import framebuf

REG_ROW0 = 0x01
REG_DECODE = 0x09
REG_INTENSITY = 0x0A
REG_SCAN_LIMIT = 0x0B
REG_SHUTDOWN = 0x0C
REG_TEST = 0x0F


class Matrix(framebuf.FrameBuffer):
    def __init__(self, spi, cs, modules, intensity=4):
        self.spi = spi
        self.cs = cs
        self.modules = modules
        self.width = 8 * modules
        self.buffer = bytearray(modules * 8)
        self.frame = bytearray(2 * modules)
        super().__init__(self.buffer, self.width, 8, framebuf.MONO_HLSB)
        self.cs(1)
        for reg, value in ((REG_TEST, 0), (REG_SHUTDOWN, 0), (REG_SCAN_LIMIT, 7), (REG_DECODE, 0),
                           (REG_INTENSITY, intensity & 15), (REG_SHUTDOWN, 1)):
            self.write_all(reg, value)
        self.fill(0)
        self.show()

    def write_all(self, reg, value):
        """Set register ``reg`` of every module to ``value``."""
        f = self.frame
        for m in range(self.modules):
            f[2 * m] = reg
            f[2 * m + 1] = value
        self._send()

    def show_row(self, row):
        """Send row ``row`` (0-7) of the framebuf to every module."""
        f, b, n = self.frame, self.buffer, self.modules
        start = row * n
        for k in range(n):  # the first word goes to the last module
            f[2 * k] = REG_ROW0 + row
            f[2 * k + 1] = b[start + n - 1 - k]
        self._send()

    def show(self):
        for row in range(8):
            self.show_row(row)

    def intensity(self, value):
        self.write_all(REG_INTENSITY, value & 15)

    def _send(self):
        self.cs(0)
        self.spi.write(self.frame)
        self.cs(1)
