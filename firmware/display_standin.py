"""Stand-in display buses for the unix port (virtual boards): they take what a driver sends as the panel would,
decode it into the panel's image and write that image to ``display.ppm`` (binary PPM, P6) in the device folder.

The models are written from the datasheets, independently of the drivers: an SSD1306's command parser and display
RAM (horizontal addressing), a chain of MAX7219 shift registers latched on chip select, and a WS2812 strip (GRB
bytes, LEDs wired column by column, serpentine). A second header line ``# relay 0|1`` gives the warning light's
pin. ``sent`` counts the bytes the driver has put on the bus (tests bound the work of one tick with it).
"""

import os

SSD1306_ARGS = {0x20: 1, 0x21: 2, 0x22: 2, 0x81: 1, 0xA8: 1, 0xD3: 1, 0xDA: 1, 0xD5: 1, 0xD9: 1, 0xDB: 1,
                0xAD: 1, 0x8D: 1}
IMAGE_FILE = "display.ppm"
OLED_ON = (255, 255, 255)
LED_RED = (255, 0, 0)


class Ssd1306Model:
    """An SSD1306 on I2C: control bytes 0x80 (one command), 0x00 (commands), 0x40 (data); horizontal addressing."""

    def __init__(self, width, height, addr):
        self.width, self.height, self.addr = width, height, addr
        self.ram = bytearray(128 * 8)
        self.cols = [0, 127]
        self.page_range = [0, 7]
        self.col = self.page = 0
        self.on = False
        self.inverted = False
        self.all_on = False
        self.mode = 2  # page addressing after reset
        self.cmd = []  # a command waiting for its arguments
        self.errors = 0

    def transaction(self, addr, data):
        if addr != self.addr:
            self.errors += 1  # nobody answers: a real bus raises OSError(ENODEV)
            raise OSError(19)
        i = 0
        while i < len(data):
            control = data[i]
            i += 1
            if control == 0x80:
                self.command(data[i])
                i += 1
            elif control == 0xC0:
                self.data(data[i])
                i += 1
            elif control == 0x00:
                while i < len(data):
                    self.command(data[i])
                    i += 1
            elif control == 0x40:
                while i < len(data):
                    self.data(data[i])
                    i += 1
            else:
                self.errors += 1
                return

    def command(self, b):
        c = self.cmd
        c.append(b)
        if len(c) - 1 < SSD1306_ARGS.get(c[0], 0):
            return
        op = c[0]
        if op == 0x20:
            self.mode = c[1] & 3
        elif op == 0x21:
            self.cols = [c[1] & 127, c[2] & 127]
            self.col = self.cols[0]
        elif op == 0x22:
            self.page_range = [c[1] & 7, c[2] & 7]
            self.page = self.page_range[0]
        elif op in (0xAE, 0xAF):
            self.on = op == 0xAF
        elif op in (0xA6, 0xA7):
            self.inverted = op == 0xA7
        elif op in (0xA4, 0xA5):
            self.all_on = op == 0xA5
        self.cmd = []

    def data(self, b):
        self.ram[self.page * 128 + self.col] = b
        if self.mode != 0:
            self.errors += 1  # the driver sets horizontal addressing; nothing else is modelled
        self.col += 1
        if self.col > self.cols[1]:
            self.col = self.cols[0]
            self.page += 1
            if self.page > self.page_range[1]:
                self.page = self.page_range[0]

    def pixel(self, x, y):
        if not self.on:
            return None
        if self.all_on:
            return OLED_ON
        lit = (self.ram[(y >> 3) * 128 + x] >> (y & 7)) & 1
        return OLED_ON if lit ^ self.inverted else None


class Max7219Model:
    """A chain of MAX7219s: 16-bit words shift through while CS is low; on CS rising each module latches the word
    in its register (the last word sent is in module 0, the first in the last module)."""

    def __init__(self, modules):
        self.width, self.height = 8 * modules, 8
        self.modules = modules
        self.shift = bytearray(2 * modules)
        self.rows = [bytearray(8) for _ in range(modules)]
        self.regs = [bytearray(16) for _ in range(modules)]
        self.errors = 0

    def clock_in(self, data):
        n = len(self.shift)
        for b in data:
            self.shift[:n - 1] = self.shift[1:]
            self.shift[n - 1] = b

    def latch(self):
        n = self.modules
        for k in range(n):  # word k of the register chain (k = 0: the first word still in the chain)
            reg, value = self.shift[2 * k], self.shift[2 * k + 1]
            m = n - 1 - k
            self.regs[m][reg & 15] = value
            if 1 <= reg <= 8:
                self.rows[m][reg - 1] = value

    def pixel(self, x, y):
        m = x >> 3
        r = self.regs[m]
        if r[0x0F] & 1:
            return LED_RED
        if not r[0x0C] & 1 or (r[0x0B] & 7) < y or r[0x09]:
            return None  # shut down, row not scanned, or BCD decoding (not a matrix)
        return LED_RED if (self.rows[m][y] >> (7 - (x & 7))) & 1 else None


class NeoPixelModel:
    """A WS2812 matrix: 3 bytes (G, R, B) per LED; LED i is in column i // height, row i % height counted from the
    top, or from the bottom in odd columns when serpentine."""

    def __init__(self, width, height, serpentine):
        self.width, self.height, self.serpentine = width, height, serpentine
        self.leds = bytearray(3 * width * height)
        self.errors = 0

    def pixel(self, x, y):
        h = self.height
        r = h - 1 - y if self.serpentine and x & 1 else y
        i = 3 * (x * h + r)
        g, red, b = self.leds[i], self.leds[i + 1], self.leds[i + 2]
        return (red, g, b) if g or red or b else None


class StandInI2C:
    def __init__(self, owner, model):
        self.owner, self.model = owner, model

    def writeto(self, addr, buf):
        self.owner.sent += len(buf)
        self.model.transaction(addr, bytes(buf))

    def writevto(self, addr, bufs):
        data = b"".join(bytes(b) for b in bufs)
        self.owner.sent += len(data)
        self.model.transaction(addr, data)


class StandInSPI:
    def __init__(self, owner, model):
        self.owner, self.model = owner, model

    def write(self, buf):
        self.owner.sent += len(buf)
        self.model.clock_in(buf)


class StandInPin:
    OUT = 1

    def __init__(self, on_rise=None):
        self.v = 0
        self.on_rise = on_rise

    def init(self, mode=None, value=None):
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return self.v
        rise = v and not self.v
        self.v = 1 if v else 0
        if rise and self.on_rise is not None:
            self.on_rise()

    def __call__(self, v=None):
        return self.value(v)


class StandInNeoPixel:
    """What the display uses of ``neopixel.NeoPixel``: ``buf`` (GRB) and ``write()``."""

    def __init__(self, owner, model, n):
        self.owner, self.model, self.n = owner, model, n
        self.buf = bytearray(3 * n)

    def write(self):
        self.owner.sent += len(self.buf)
        self.model.leds[:] = self.buf


def _model(cfg):
    """The panel that a display section describes."""
    d = cfg["driver"]
    if d == "ssd1306":
        return Ssd1306Model(cfg["width"], cfg["height"], cfg.get("address", 0x3C))
    if d == "max7219":
        return Max7219Model(cfg["modules"])
    return NeoPixelModel(cfg["width"], cfg["height"], cfg.get("serpentine", True))


class StandIn:
    """The stand-in hardware of one display section; ``write_image()`` writes what the panel shows."""

    def __init__(self, cfg, folder="."):
        self.cfg = cfg
        self.folder = folder
        self.sent = 0
        self.relay = None
        self.panel = None
        self.model = _model(cfg)
        self.rgb = bytearray(3 * self.model.width * self.model.height)

    def i2c(self):
        return StandInI2C(self, self.model)

    def spi(self):
        return StandInSPI(self, self.model)

    def pin(self, n):
        if n == self.cfg.get("relay_pin"):
            self.relay = StandInPin()
            return self.relay
        return StandInPin(self.model.latch if n == self.cfg.get("cs") else None)

    def neopixel(self, n):
        return StandInNeoPixel(self, self.model, n)

    def image(self):
        """The panel's pixels as RGB bytes, row by row."""
        m, rgb = self.model, self.rgb
        i = 0
        for y in range(m.height):
            for x in range(m.width):
                c = m.pixel(x, y)
                if c is None:
                    rgb[i] = rgb[i + 1] = rgb[i + 2] = 0
                else:
                    rgb[i], rgb[i + 1], rgb[i + 2] = c
                i += 3
        return rgb

    def write_image(self):
        relay = -1 if self.relay is None else self.relay.v
        rgb = self.image()
        path = self.folder + "/" + IMAGE_FILE
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"P6\n# relay %d\n%d %d\n255\n" % (relay, self.model.width, self.model.height))
            f.write(rgb)
        os.rename(tmp, path)
