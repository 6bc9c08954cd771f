"""The public display: what the sign shows (the 1-minute LAeq, the limit in force, the time, the state) and drawing
it in bounded slices so the audio never waits (docs/hardware.md, "Public display").

    disp = display.make_display(board.get("display"), hw, faults=app.faults)  # None without a display
    disp.update(display.view_for(app, "22:15"))            # once a second: cheap, stores the view
    disp.tick()                                             # every loop turn: at most one slice of work

A view is {"laeq": dB or None, "limit": dB or None, "band": name or None, "time": "HH:MM" or None, "state": one of
STATES}. A redraw is a generator: each ``tick()`` runs one step of it (clear, one text, one big digit, or one slice
of the bus transfer: an SSD1306 page, a MAX7219 row, the WS2812 strip), so a loop turn never carries a whole redraw.
The number is the last closed minute's LAeq, never the instantaneous level (a sign that moved with every shout
would be played as a scoreboard). Everything drawn is computed with integers (tenths of a dB), so the same view
gives the same pixels on every port.

Drivers: micropython-lib's ``ssd1306`` (I2C OLED, 128x64), ``max7219`` (a chain of 8x8 matrices over SPI) and
MicroPython's built-in ``neopixel`` (a WS2812 matrix); on the unix port (virtual boards) ``display_standin``
supplies buses that record what the driver sends, decode it back into the panel's image and write it to
``display.ppm`` in the device folder. An optional relay (a warning light) is on while the state is "over".
"""

import sys

STATES = ("under", "near", "over", "mic_fault", "overload", "no_measurement", "no_clock")
NEAR_TENTHS = 30  # "near": within 3 dB below the limit
MIC_FAULT_PREFIXES = ("mic", "i2s")  # faults that mean the microphone cannot be trusted
STRIP_PAGE_S = 4  # a strip sign alternates number+limit and time, this many seconds (updates) each

# WS2812 palette indices (the strip's GS8 framebuf holds an index per pixel)
OFF, GREEN, AMBER, RED, WHITE = 0, 1, 2, 3, 4
PALETTE = ((0, 0, 0), (0, 255, 0), (255, 150, 0), (255, 0, 0), (255, 255, 255))
STATE_COLOUR = {"under": GREEN, "near": AMBER, "over": RED, "mic_fault": RED, "overload": RED,
                "no_measurement": WHITE, "no_clock": WHITE}

# seven segments a b c d e f g (bit 0 = a) for the big digits
SEGMENTS = {"0": 0x3F, "1": 0x06, "2": 0x5B, "3": 0x4F, "4": 0x66, "5": 0x6D, "6": 0x7D, "7": 0x07, "8": 0x7F,
            "9": 0x6F, "-": 0x40}
# a 3x5 font (rows top to bottom, bit 2 = left column) for the strip's small digits
SMALL = {"0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 3, 1, 7),
         "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 2, 2),
         "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), ":": (0, 2, 0, 2, 0), "-": (0, 0, 7, 0, 0)}


# -- what to show ---------------------------------------------------------------------------------------------------
def tenths(db):
    """dB -> an integer number of tenths (None stays None)."""
    if db is None:
        return None
    return int(db * 10 + (0.5 if db >= 0 else -0.5))


def display_state(laeq, limit, faults=(), overload=False, over=None):
    """The state shown for a minute's LAeq against the limit in force, the device's faults and overload.

    Order: a microphone fault, then overload (the number is not valid), then no measurement, then no clock (the RTC
    was never set, e.g. after a power cut on a board without a battery: the time of day and so the limit in force are
    unknown, and a green "under" would be a verdict the meter cannot give), then over / near / under.
    ``over`` is the minute record's own verdict (the judge's, so the sign and the record always agree); without it
    LAeq and limit are compared in tenths of a dB. "near": not over and at most 3.0 dB under the limit. Without a
    limit in force the state is "under" (there is nothing to exceed)."""
    for f in faults:
        for p in MIC_FAULT_PREFIXES:
            if f.startswith(p):
                return "mic_fault"
    if overload:
        return "overload"
    if laeq is None:
        return "no_measurement"
    if "clock_unset" in faults:
        return "no_clock"
    if limit is None:
        return "under"
    level, lim = tenths(laeq), tenths(limit)
    if over is None:
        over = level > lim
    if over:
        return "over"
    if level >= lim - NEAR_TENTHS:
        return "near"
    return "under"


def hhmm(minute_of_day):
    """Minute of the local day (0..1439) -> "HH:MM" (None stays None)."""
    if minute_of_day is None:
        return None
    return "%02d:%02d" % (minute_of_day // 60, minute_of_day % 60)


def view_for(app, now_local=None):
    """The view from the app: its last minute record (``app.last_minute``: LAeq, limit, band, local, over,
    overload), its faults, the audio source's errors and the meter's overload; ``now_local`` is the local time
    "HH:MM" to show (else the last minute's)."""
    m = app.last_minute
    faults = list(app.faults)
    audio = getattr(app, "audio", None)
    if audio is not None and audio.errors:
        faults.append("i2s_errors")
    laeq = limit = band = local = over = None
    overload = False
    if m is not None:
        laeq, limit, band, local, over = m.get("LAeq"), m.get("limit"), m.get("band"), m.get("local"), m.get("over")
        overload = bool(m.get("overload"))
    meter = getattr(app, "meter", None)
    if meter is not None and not overload:
        overload = bool(meter.current()["overload"])
    return {"laeq": laeq, "limit": limit, "band": band, "time": now_local or local,
            "state": display_state(laeq, limit, faults, overload, over)}


def number_text(t):
    """Tenths of a dB -> "72.4" (None -> "--.-")."""
    if t is None:
        return "--.-"
    return "%s%d.%d" % ("-" if t < 0 else "", abs(t) // 10, abs(t) % 10)


def limit_text(t):
    """Tenths of a dB -> "55" or "55.5"."""
    return "%d" % (t // 10) if t % 10 == 0 else "%d.%d" % (t // 10, t % 10)


# -- drawing --------------------------------------------------------------------------------------------------------
def draw_digit(fb, ch, x, y, w, h, t, c):
    """One seven-segment character (a digit or "-") with its top-left corner at (x, y)."""
    s = SEGMENTS.get(ch, 0)
    half = h // 2
    if s & 1:
        fb.fill_rect(x, y, w, t, c)  # a
    if s & 2:
        fb.fill_rect(x + w - t, y, t, half, c)  # b
    if s & 4:
        fb.fill_rect(x + w - t, y + half, t, h - half, c)  # c
    if s & 8:
        fb.fill_rect(x, y + h - t, w, t, c)  # d
    if s & 16:
        fb.fill_rect(x, y + half, t, h - half, c)  # e
    if s & 32:
        fb.fill_rect(x, y, t, half, c)  # f
    if s & 64:
        fb.fill_rect(x, y + half - t // 2, w, t, c)  # g


def draw_big_text(fb, glyph, s, x, y, scale, c):
    """Text in the 8x8 font, each pixel a scale x scale square; ``glyph`` is a 8x8 MONO_HLSB scratch framebuf.
    A generator: one character per step."""
    for ch in s:
        glyph.fill(0)
        glyph.text(ch, 0, 0, 1)
        for gy in range(8):
            for gx in range(8):
                if glyph.pixel(gx, gy):
                    fb.fill_rect(x + gx * scale, y + gy * scale, scale, scale, c)
        x += 8 * scale
        yield


def draw_small(fb, s, x, y, c):
    """Text in the 3x5 font (digits, ":", "-"); returns the x after it."""
    for ch in s:
        rows = SMALL.get(ch)
        if rows is None:
            x += 4
            continue
        w = 1 if ch == ":" else 3
        for r in range(5):
            bits = rows[r]
            for k in range(w):
                if bits & (4 >> (k + (1 if w == 1 else 0))):
                    fb.pixel(x + k, y + r, c)
        x += w + 1
    return x


class FullLayout:
    """A 128x64 monochrome panel (SSD1306): time and band, a big seven-segment LAeq, the limit, a state bar."""

    DIGIT_W, DIGIT_H, DIGIT_T, DIGIT_GAP = 17, 30, 4, 4
    NUMBER_Y = 13
    LIMIT_Y = 44
    BAR_Y = 54
    BAR_TEXT = {"under": "UNDER LIMIT", "near": "NEAR LIMIT", "over": "OVER LIMIT", "mic_fault": "NOT MEASURING",
                "overload": "NOT VALID", "no_measurement": "NO MEASUREMENT", "no_clock": "CLOCK NOT SET"}

    def __init__(self, panel):
        import framebuf

        self.fb = panel.fb
        self.width = panel.width
        self.height = panel.height
        self.glyph = framebuf.FrameBuffer(bytearray(8), 8, 8, framebuf.MONO_HLSB)

    def centre_text(self, s, y, c=1):
        self.fb.text(s, (self.width - 8 * len(s)) // 2, y, c)

    def draw(self, view, page):
        """A generator: the steps of drawing ``view`` into the framebuf."""
        fb = self.fb
        state = view["state"]
        fb.fill(0)
        if view["time"]:
            fb.text(view["time"], 0, 0, 1)
        band = view["band"]
        if band:
            band = band[:10]
            fb.text(band, self.width - 8 * len(band), 0, 1)
        fb.hline(0, 9, self.width, 1)
        yield
        lim = tenths(view["limit"])
        if state == "mic_fault":
            yield from draw_big_text(fb, self.glyph, "MIC", (self.width - 72) // 2, self.NUMBER_Y + 3, 3, 1)
            self.centre_text("FAULT", self.LIMIT_Y)
        elif state == "overload":
            yield from draw_big_text(fb, self.glyph, "OVL", (self.width - 72) // 2, self.NUMBER_Y + 3, 3, 1)
            t = tenths(view["laeq"])
            self.centre_text("OVERLOAD" if t is None else "OVERLOAD >%s" % limit_text(t - t % 10), self.LIMIT_Y)
        else:
            yield from self.draw_number(tenths(view["laeq"]))
            if state == "no_clock":
                self.centre_text("LIMIT UNKNOWN", self.LIMIT_Y)
            else:
                self.centre_text("NO LIMIT" if lim is None else "LIMIT %s dB" % limit_text(lim), self.LIMIT_Y)
        yield
        self.draw_bar(state)
        yield

    def draw_number(self, t):
        fb = self.fb
        s = number_text(t)
        dw, gap = self.DIGIT_W, self.DIGIT_GAP
        width = (len(s) - 1) * (dw + gap) + 4 + gap + 16  # digits, the point, "dB"
        x = (self.width - width) // 2
        y = self.NUMBER_Y
        for ch in s:
            if ch == ".":
                fb.fill_rect(x, y + self.DIGIT_H - 4, 4, 4, 1)
                x += 4 + gap
            else:
                draw_digit(fb, ch, x, y, dw, self.DIGIT_H, self.DIGIT_T, 1)
                x += dw + gap
                yield
        fb.text("dB", x, y + self.DIGIT_H - 8, 1)

    def draw_bar(self, state):
        fb = self.fb
        y, h = self.BAR_Y, self.height - self.BAR_Y
        text = self.BAR_TEXT[state]
        if state in ("over", "mic_fault", "overload"):
            fb.fill_rect(0, y, self.width, h, 1)
            self.centre_text(text, y + 1, 0)
        else:
            fb.rect(0, y, self.width, h, 1)
            self.centre_text(text, y + 1, 1)
            if state == "near":  # a warning mark at each end
                for x in (2, self.width - 9):
                    for k in range(4):
                        fb.hline(x + 3 - k, y + 1 + 2 * k, 1 + 2 * k, 1)
                        fb.hline(x + 3 - k, y + 2 + 2 * k, 1 + 2 * k, 1)


class StripLayout:
    """An 8-pixel-high sign (a WS2812 matrix or a MAX7219 chain): the LAeq in whole dB in the state's colour with
    the limit in small digits beside it, alternating with the time every STRIP_PAGE_S seconds. A monochrome strip
    shows "over" inverted and "near" underlined; a colour strip shows the state by colour."""

    def __init__(self, panel):
        self.fb = panel.fb
        self.width = panel.width
        self.colour = panel.colour

    def draw(self, view, page):
        fb, w = self.fb, self.width
        state = view["state"]
        c = STATE_COLOUR[state] if self.colour else 1
        white = WHITE if self.colour else 1
        inverted = state == "over" and not self.colour
        fb.fill(1 if inverted else 0)
        if inverted:
            c = white = 0
        yield
        if state == "mic_fault":
            fb.text("MIC", 0, 0, c)
        elif state == "overload":
            fb.text("OVL", 0, 0, c)
        elif page == 1 and view["time"]:
            draw_small(fb, view["time"], (w - 18) // 2, 1, white)
        else:
            t = tenths(view["laeq"])
            s = "--" if t is None else "%d" % ((t + 5) // 10)
            fb.text(s, 0, 0, c)
            if state == "near" and not self.colour:
                for x in range(0, 8 * len(s), 2):
                    fb.pixel(x, 7, 1)
            lim = tenths(view["limit"])
            ls = "" if lim is None else "%d" % ((lim + 5) // 10)
            if ls and 8 * len(s) <= w - 4 * len(ls):  # the limit where it does not touch the number
                draw_small(fb, ls, w - 4 * len(ls) + 1, 2, white)
        yield


# -- the display ----------------------------------------------------------------------------------------------------
class Display:
    """A panel, its layout and an optional relay. ``update(view)`` stores the view (and switches the relay);
    ``tick()`` runs one step of the redraw in progress, if any, and returns whether it did any work."""

    def __init__(self, panel, layout, relay=None, relay_active_low=False):
        self.panel = panel
        self.layout = layout
        self.relay = relay
        self.relay_on = 0 if relay_active_low else 1
        self.strip = isinstance(layout, StripLayout)
        self.seconds = 0
        self.pending = None  # (view, page) to draw next
        self.shown = None  # (view, page) last drawn or being drawn
        self.job = None
        self.redraws = 0
        self.steps = 0
        self.errors = 0  # bus errors (a display unplugged): the redraw is dropped, the next view tries again
        self.standin = None  # on the unix port: the stand-in buses (tests read what was sent)
        if relay is not None:
            relay.value(1 - self.relay_on)

    def update(self, view):
        self.seconds += 1
        page = (self.seconds // STRIP_PAGE_S) % 2 if self.strip else 0
        if self.relay is not None:
            self.relay.value(self.relay_on if view["state"] == "over" else 1 - self.relay_on)
        key = (view, page)
        if key != self.shown and key != self.pending:
            self.pending = key

    def tick(self):
        if self.job is None:
            if self.pending is None:
                return False
            self.shown = self.pending
            self.pending = None
            self.job = self._redraw(self.shown[0], self.shown[1])
        self.steps += 1
        try:
            next(self.job)
        except StopIteration:
            self.job = None
            self.redraws += 1
        except OSError:
            self.job = None
            self.shown = None
            self.errors += 1
        return True

    def busy(self):
        return self.job is not None or self.pending is not None

    def _redraw(self, view, page):
        yield from self.layout.draw(view, page)
        yield from self.panel.send()
        self.panel.frame_done()


# -- panels: the framebuf and how it goes out on the bus --------------------------------------------------------------
class Ssd1306Panel:
    """micropython-lib's SSD1306_I2C; sent one page (8 rows, ``width`` bytes) per step with the driver's own
    write_cmd/write_data (its ``show()`` sends all pages at once)."""

    colour = False

    def __init__(self, oled, on_frame=None):
        self.oled = oled
        self.fb = oled
        self.width = oled.width
        self.height = oled.height
        self.on_frame = on_frame
        self.pages = [memoryview(oled.buffer)[p * oled.width:(p + 1) * oled.width] for p in range(oled.pages)]

    def send(self):
        import ssd1306

        o = self.oled
        for p in range(o.pages):
            for cmd in (ssd1306.SET_COL_ADDR, 0, o.width - 1, ssd1306.SET_PAGE_ADDR, p, p):
                o.write_cmd(cmd)
            o.write_data(self.pages[p])
            yield

    def frame_done(self):
        if self.on_frame is not None:
            self.on_frame()


class Max7219Panel:
    """A chain of MAX7219 8x8 matrices (max7219.Matrix): one row of every module per step."""

    colour = False

    def __init__(self, chain, on_frame=None):
        self.chain = chain
        self.fb = chain
        self.width = chain.width
        self.height = 8
        self.on_frame = on_frame

    def send(self):
        for row in range(8):
            self.chain.show_row(row)
            yield

    def frame_done(self):
        if self.on_frame is not None:
            self.on_frame()


class NeoPixelPanel:
    """A WS2812 matrix through MicroPython's ``neopixel.NeoPixel`` (its ``buf``, GRB, and ``write()``): a GS8
    framebuf of palette indices, turned into the strip's bytes one column per step (serpentine or not), then one
    ``write()``. Column x's LEDs are x*height .. x*height+height-1; with ``serpentine`` every odd column runs
    bottom to top (the usual 8x32 panels)."""

    colour = True

    def __init__(self, np, width, height, serpentine=True, brightness=32, on_frame=None):
        import framebuf

        self.np = np
        self.width = width
        self.height = height
        self.serpentine = serpentine
        self.on_frame = on_frame
        self.fb = framebuf.FrameBuffer(bytearray(width * height), width, height, framebuf.GS8)
        # the GRB bytes of each palette entry at this brightness
        self.grb = [bytes((g * brightness // 255, r * brightness // 255, b * brightness // 255))
                    for r, g, b in PALETTE]

    def send(self):
        buf, fb, h = self.np.buf, self.fb, self.height
        for x in range(self.width):
            up = self.serpentine and x & 1
            for y in range(h):
                i = 3 * (x * h + (h - 1 - y if up else y))
                c = self.grb[fb.pixel(x, y)]
                buf[i] = c[0]
                buf[i + 1] = c[1]
                buf[i + 2] = c[2]
            if x & 7 == 7:
                yield
        self.np.write()
        yield

    def frame_done(self):
        if self.on_frame is not None:
            self.on_frame()


# -- construction -----------------------------------------------------------------------------------------------------
def _unix():
    return sys.platform in ("linux", "darwin")


def make_display(cfg, hw=None, folder=".", faults=None):
    """The display that board.json's ``display`` section describes, or None ("none", no section, or a display that
    does not answer: then "display_error" is appended to ``faults``; measuring never depends on the display). On the
    unix port the buses are stand-ins that decode what the driver sends and write the panel's image to
    ``folder/display.ppm`` after every redraw. ``hw`` is the platform object (unused: the buses are chosen by port)."""
    if not cfg or cfg.get("driver", "none") == "none":
        return None
    try:
        return _make(cfg, folder)
    except (OSError, ImportError):  # no device at the address, a bus that cannot be opened, no driver (CPython)
        if faults is not None:
            faults.append("display_error")
        return None


def _make(cfg, folder):
    board = None
    if _unix():
        import display_standin

        board = display_standin.StandIn(cfg, folder)
    relay = None
    if cfg.get("relay_pin") is not None:
        relay = board.pin(cfg["relay_pin"]) if board else _machine_pin(cfg["relay_pin"])
    on_frame = board.write_image if board else None
    driver = cfg["driver"]
    if driver == "ssd1306":
        panel = _ssd1306(cfg, board, on_frame)
    elif driver == "max7219":
        panel = _max7219(cfg, board, on_frame)
    elif driver == "ws2812":
        panel = _ws2812(cfg, board, on_frame)
    else:
        raise ValueError("unknown display driver %s" % driver)
    layout = FullLayout(panel) if driver == "ssd1306" else StripLayout(panel)
    disp = Display(panel, layout, relay, cfg.get("relay_active_low", False))
    disp.standin = board
    return disp


def _ssd1306(cfg, board, on_frame):
    import ssd1306

    i2c = board.i2c() if board else _machine_i2c(cfg)
    return Ssd1306Panel(ssd1306.SSD1306_I2C(cfg["width"], cfg["height"], i2c, addr=cfg.get("address", 0x3C)),
                        on_frame)


def _max7219(cfg, board, on_frame):
    import max7219

    spi, cs = (board.spi(), board.pin(cfg["cs"])) if board else _machine_spi(cfg)
    return Max7219Panel(max7219.Matrix(spi, cs, cfg["modules"], cfg.get("intensity", 4)), on_frame)


def _ws2812(cfg, board, on_frame):
    n = cfg["width"] * cfg["height"]
    if board:
        np = board.neopixel(n)
    else:
        import neopixel

        np = neopixel.NeoPixel(_machine_pin(cfg["pin"]), n)
    return NeoPixelPanel(np, cfg["width"], cfg["height"], cfg.get("serpentine", True), cfg.get("brightness", 32),
                         on_frame)


def _machine_pin(n):
    import machine

    return machine.Pin(n, machine.Pin.OUT)


def _machine_i2c(cfg):
    import machine

    return machine.I2C(cfg.get("i2c_id", 0), scl=machine.Pin(cfg["scl"]), sda=machine.Pin(cfg["sda"]),
                       freq=cfg.get("freq", 400000))


def _machine_spi(cfg):
    import machine

    spi = machine.SPI(cfg.get("spi_id", 1), baudrate=cfg.get("baudrate", 10000000), polarity=0, phase=0,
                      sck=machine.Pin(cfg["sck"]), mosi=machine.Pin(cfg["mosi"]))
    return spi, machine.Pin(cfg["cs"], machine.Pin.OUT, value=1)
