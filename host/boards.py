"""Board profiles: load and validate ``boards/*.toml`` (chip, I2S pins, microphone, sample rate) into dataclasses.

A profile names one board wired to one microphone. The host reads it to flash (chip, flash offset), to configure
the meter on the device (pins, slot, input shift, sensitivity, the microphone equaliser for the response table)
and to state what a reading can mean (self-noise, overload). The schema is in boards/README.md.

Every problem is a ``BoardError`` (a ``ValueError``) whose message is one line naming the file and the key,
e.g. ``boards/x.toml: i2s.sck: 52 is out of range 0..48``. Loading is cheap; ``Board.eq_coeffs`` reads the
shipped tables' committed designs (host/eq_table.py) and designs any other table with scipy (1-7 s, cached).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from slm.firmware.weighting_coeffs import RATES as _COEFF_RATES
from slm.errors import InputError
from slm.resources import boards_dir

SAMPLE_RATES = tuple(_COEFF_RATES)  # the rates the firmware has filters for

if TYPE_CHECKING:
    from slm import mic_eq

PIN_RANGE = (0, 48)
INPUT_SHIFT_RANGE = (0, 16)
MIN_INPUT_SHIFT = 32 - 22  # the kernel keeps 22 bits of the shifted word: a smaller shift wraps the top bits
SENSITIVITY_RANGE = (-60.0, 0.0)
SELF_NOISE_RANGE = (0.0, 80.0)
OVERLOAD_RANGE = (80.0, 160.0)
DATA_BITS_RANGE = (8, 32)
STARTUP_DISCARD_RANGE = (0.0, 30.0)
RESPONSE_HZ_RANGE = (10.0, 24000.0)
RESPONSE_DB_LIMIT = 20.0
RESPONSE_1K_TOLERANCE_DB = 0.05  # tables are relative to 1 kHz
SLOTS = ("left", "right")
DISPLAY_DRIVERS = ("ssd1306", "max7219", "ws2812", "none")
SSD1306_SIZES = ((128, 64),)  # the layout is drawn for 128x64 (docs/hardware.md)
SSD1306_ADDRESSES = (0x3C, 0x3D)
I2C_FREQ_RANGE = (10_000, 1_000_000)
MAX7219_MODULES_RANGE = (4, 16)  # the strip layout needs 32 columns
MAX7219_BAUD_RANGE = (100_000, 10_000_000)  # the MAX7219 clocks at most 10 MHz
WS2812_WIDTH_RANGE = (32, 48)  # write() blocks 30 µs per LED: 48x8 = 11.5 ms, within a 20 ms loop turn
WS2812_HEIGHT = 8
BRIGHTNESS_RANGE = (1, 255)
I2S_BITS = 32  # MicroPython >= 1.23 always clocks 32-bit slots on the ESP32 family


@dataclass(frozen=True)
class Chip:
    flash_offset: int  # where MicroPython's combined image goes
    i2s_ports: int
    max_gpio: int
    input_only: tuple[int, ...] = ()  # pins that cannot drive SCK, WS or an LED


CHIPS = {
    "esp32": Chip(0x1000, 2, 39, (34, 35, 36, 37, 38, 39)),
    "esp32s2": Chip(0x1000, 1, 46, (46,)),
    "esp32s3": Chip(0x0, 2, 48),
    "esp32c3": Chip(0x0, 1, 21),
    "esp32c6": Chip(0x0, 1, 30),
}


class BoardError(InputError):
    """A board profile that cannot be used; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class I2SConfig:
    id: int
    sck: int
    ws: int
    sd: int
    slot: str  # "left" (WS low, microphone's L/R or SEL pin to GND) or "right"
    bits: int = I2S_BITS


@dataclass(frozen=True)
class Microphone:
    model: str
    sensitivity_dbfs: float  # dBFS of a 94 dB SPL 1 kHz sine, full-scale-sine convention
    self_noise_dba: float
    acoustic_overload_db: float
    data_bits: int
    input_shift: int  # right shift from the 32-bit I2S word to the 22-bit sample
    startup_discard_s: float
    dc_offset_note: str = ""
    response: tuple[tuple[float, float], ...] = ()  # (Hz, dB re 1 kHz), typical, from the datasheet plot


@dataclass(frozen=True)
class Display:
    """The public display (``[display]``): the driver, its size, bus and pins, an optional relay (warning light)."""

    driver: str  # "ssd1306", "max7219", "ws2812"
    width: int
    height: int
    bus: dict[str, int] = field(default_factory=dict)  # ssd1306: i2c_id sda scl address freq; max7219: spi_id sck
    # mosi cs baudrate modules intensity; ws2812: pin
    serpentine: bool = True  # ws2812: odd columns run bottom to top
    brightness: int = 32  # ws2812: 1..255
    relay_pin: int | None = None
    relay_active_low: bool = False

    def device_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"driver": self.driver, "width": self.width, "height": self.height}
        cfg.update(self.bus)
        if self.driver == "ws2812":
            cfg.update(serpentine=self.serpentine, brightness=self.brightness)
        cfg.update(relay_pin=self.relay_pin, relay_active_low=self.relay_active_low)
        return cfg


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    chip: str
    flash_offset: int
    i2s: I2SConfig
    microphone: Microphone
    rate: int
    indicator_led: int | None = None
    indicator_active_low: bool = False
    display: Display | None = None
    path: Path | None = field(default=None, compare=False)

    def _where(self) -> str:
        return str(self.path) if self.path is not None else self.name

    def _rate(self, rate: int | None) -> int:
        rate = self.rate if rate is None else rate
        if rate not in SAMPLE_RATES:
            raise BoardError(f"{self._where()}: sample.rate: {rate} is not one of {', '.join(map(str, SAMPLE_RATES))}")
        return rate

    def eq_design(self, rate: int | None = None) -> mic_eq.EqReport | None:
        """The equaliser for ``rate`` (default: the profile's) with its evidence (flatness, limits, rounding
        noise: a fraction of a second); None without a response table. Raises BoardError as ``eq_coeffs``."""
        from slm import mic_eq

        eq = self.eq_coeffs(rate)
        if eq is None:
            return None
        return mic_eq.eq_report(self.microphone.response, mic_eq.sections_of(eq), self._rate(rate))

    def eq_coeffs(self, rate: int | None = None) -> tuple[int, ...] | None:
        """The firmware's ``eq`` for ``rate``: (b0, b1, b2, a1, a2) in Q14 of each section in order, 5 or 10
        integers, or None without a response table. Shipped profiles' designs are committed
        (boards/equalisers.json, host/eq_table.py); another table is designed now (seconds, then cached).

        Raises BoardError when the quantised sections would break the kernel's ranges (L1 norm of section 1 or
        of the cascade > 4, a coefficient beyond ±(2**16 - 1)), the boost limit or the pole radius limit.
        """
        from slm import eq_table, mic_eq

        rate = self._rate(rate)
        points = self.microphone.response
        if not points:
            return None
        eq = eq_table.committed(points, rate)
        if eq is None:
            eq = mic_eq.flat_coeffs(mic_eq.design_eq(points, rate))
        problems = mic_eq.coeff_problems(eq, rate)
        if problems:
            raise BoardError(f"{self._where()}: microphone.response: the equaliser at {rate} Hz is unsafe for the "
                             f"kernel: {'; '.join(problems)}")
        return eq

    def device_config(self, rate: int | None = None) -> dict[str, Any]:
        """What the device needs to run the meter with this board, as plain data (written to the device)."""
        rate = self._rate(rate)
        m = self.microphone
        eq = self.eq_coeffs(rate)
        return {
            "board": self.name,
            "mic": self.microphone.model,
            "i2s": {"id": self.i2s.id, "sck": self.i2s.sck, "ws": self.i2s.ws, "sd": self.i2s.sd,
                    "slot": self.i2s.slot, "bits": self.i2s.bits},
            "rate": rate,
            "input_shift": m.input_shift,
            "sensitivity_dbfs": m.sensitivity_dbfs,
            "eq": list(eq) if eq is not None else None,
            "startup_discard_s": m.startup_discard_s,
            "indicator_led": self.indicator_led,
            "indicator_active_low": self.indicator_active_low,
            "display": self.display.device_config() if self.display is not None else None,
        }


def list_boards() -> list[str]:
    """Names of the shipped profiles, sorted."""
    d = boards_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def load_board(name_or_path: str | os.PathLike) -> Board:
    """A validated profile, by shipped name (``esp32-devkitc-inmp441``) or by path to a ``.toml`` file."""
    s = os.fspath(name_or_path)
    looks_like_path = isinstance(name_or_path, os.PathLike) or s.endswith(".toml") or os.sep in s or "/" in s
    if looks_like_path:
        path = Path(s)
        if not path.is_file():
            raise BoardError(f"{path}: no such board file")
    else:
        path = boards_dir() / f"{s}.toml"
        if not path.is_file():
            known = ", ".join(list_boards()) or "none"
            raise BoardError(f"unknown board '{s}'; known boards: {known}")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise BoardError(f"{path}: not valid TOML: {' '.join(str(e).split())}") from None
    except OSError as e:
        raise BoardError(f"{path}: cannot read: {e.strerror}") from None
    return _Validator(path).board(data)


# --- validation -----------------------------------------------------------------------------------------------

_TOP = {"name", "description", "chip", "flash_offset", "indicator_led", "indicator_active_low", "i2s",
        "microphone", "sample", "display"}
_I2S = {"id", "sck", "ws", "sd", "slot", "bits"}
_MIC = {"model", "sensitivity_dbfs", "self_noise_dba", "acoustic_overload_db", "data_bits", "input_shift",
        "dc_offset_note", "startup_discard_s", "response"}
_SAMPLE = {"rate"}
_DISPLAY_COMMON = {"driver", "relay_pin", "relay_active_low"}
_DISPLAY = {
    "none": set(),
    "ssd1306": {"width", "height", "i2c_id", "sda", "scl", "address", "freq"},
    "max7219": {"modules", "spi_id", "sck", "mosi", "cs", "baudrate", "intensity"},
    "ws2812": {"width", "height", "pin", "serpentine", "brightness"},
}
_MISSING = object()


class _Validator:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str) -> BoardError:
        return BoardError(f"{self.path}: {key}: {problem}")

    def table(self, data: dict, key: str) -> dict:
        v = data.get(key, _MISSING)
        if v is _MISSING:
            raise self.fail(key, "missing table")
        if not isinstance(v, dict):
            raise self.fail(key, f"expected a table [{key}], got {_kind(v)}")
        return v

    def unknown(self, data: dict, allowed: set[str], prefix: str = "") -> None:
        for k in data:
            if k not in allowed:
                raise self.fail(prefix + k, f"unknown key (known: {', '.join(sorted(allowed))})")

    def get(self, data: dict, key: str, prefix: str, kind: str, required: bool = True, default: Any = None):
        full = prefix + key
        v = data.get(key, _MISSING)
        if v is _MISSING:
            if required:
                raise self.fail(full, "missing")
            return default
        ok = {
            "str": isinstance(v, str),
            "int": isinstance(v, int) and not isinstance(v, bool),
            "number": isinstance(v, (int, float)) and not isinstance(v, bool),
            "bool": isinstance(v, bool),
            "list": isinstance(v, list),
        }[kind]
        if not ok:
            expected = {"str": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
                        "list": "an array"}[kind]
            raise self.fail(full, f"expected {expected}, got {_kind(v)} {_short(v)}")
        if kind == "number":
            v = float(v)
            if not math.isfinite(v):
                raise self.fail(full, f"expected a finite number, got {v}")
        if kind == "str" and not v.strip() and required:
            raise self.fail(full, "must not be empty")
        return v

    def in_range(self, key: str, v, lo, hi) -> None:
        if not lo <= v <= hi:
            raise self.fail(key, f"{_num(v)} is out of range {_num(lo)}..{_num(hi)}")

    def board(self, data: dict) -> Board:
        self.unknown(data, _TOP)
        name = self.get(data, "name", "", "str")
        if name != self.path.stem:
            raise self.fail("name", f"'{name}' does not match the file name '{self.path.name}'")
        description = self.get(data, "description", "", "str")
        chip_name = self.get(data, "chip", "", "str")
        if chip_name not in CHIPS:
            raise self.fail("chip", f"unknown chip '{chip_name}' (known: {', '.join(CHIPS)})")
        chip = CHIPS[chip_name]
        flash_offset = self.get(data, "flash_offset", "", "int")
        if flash_offset != chip.flash_offset:
            raise self.fail("flash_offset", f"{flash_offset:#x} is wrong for {chip_name}: MicroPython's image goes at "
                                            f"{chip.flash_offset:#x}")
        led = self.get(data, "indicator_led", "", "int", required=False)
        active_low = self.get(data, "indicator_active_low", "", "bool", required=False, default=False)
        if led is None and "indicator_active_low" in data:
            raise self.fail("indicator_active_low", "given without indicator_led")

        i2s_t = self.table(data, "i2s")
        mic_t = self.table(data, "microphone")
        sample_t = self.table(data, "sample")
        self.unknown(i2s_t, _I2S, "i2s.")
        self.unknown(mic_t, _MIC, "microphone.")
        self.unknown(sample_t, _SAMPLE, "sample.")

        i2s = self.i2s(i2s_t, chip_name, chip)
        pins = {"i2s.sck": i2s.sck, "i2s.ws": i2s.ws, "i2s.sd": i2s.sd}
        if led is not None:
            self.pin("indicator_led", led, chip_name, chip, output=True)
            pins["indicator_led"] = led
        display = None
        if "display" in data:
            display = self.display(self.table(data, "display"), chip_name, chip)
            if display is not None:
                pins.update(display_pins(display))
        seen: dict[int, str] = {}
        for key, pin in pins.items():
            if pin in seen:
                raise self.fail(key, f"GPIO{pin} is already used by {seen[pin]}")
            seen[pin] = key

        mic = self.microphone(mic_t)
        rate = self.get(sample_t, "rate", "sample.", "int")
        if rate not in SAMPLE_RATES:
            raise self.fail("sample.rate", f"{rate} is not one of {', '.join(map(str, SAMPLE_RATES))}")
        return Board(name=name, description=description, chip=chip_name, flash_offset=flash_offset, i2s=i2s,
                     microphone=mic, rate=rate, indicator_led=led, indicator_active_low=active_low, display=display,
                     path=self.path)

    def pin(self, key: str, v: int, chip_name: str, chip: Chip, output: bool) -> None:
        self.in_range(key, v, *PIN_RANGE)
        if v > chip.max_gpio:
            raise self.fail(key, f"{chip_name} has no GPIO{v} (GPIO0..GPIO{chip.max_gpio})")
        if output and v in chip.input_only:
            raise self.fail(key, f"GPIO{v} is input-only on {chip_name} and cannot drive this signal")

    def i2s(self, t: dict, chip_name: str, chip: Chip) -> I2SConfig:
        p = "i2s."
        port = self.get(t, "id", p, "int")
        self.in_range(p + "id", port, 0, chip.i2s_ports - 1)
        pins = {}
        for key in ("sck", "ws", "sd"):
            pins[key] = self.get(t, key, p, "int")
            self.pin(p + key, pins[key], chip_name, chip, output=key != "sd")
        slot = self.get(t, "slot", p, "str")
        if slot not in SLOTS:
            raise self.fail(p + "slot", f"'{slot}' is not one of {', '.join(SLOTS)}")
        bits = self.get(t, "bits", p, "int")
        if bits != I2S_BITS:
            raise self.fail(p + "bits", f"{bits} is not supported: the receive path always uses {I2S_BITS}-bit slots")
        return I2SConfig(id=port, sck=pins["sck"], ws=pins["ws"], sd=pins["sd"], slot=slot, bits=bits)

    def display(self, t: dict, chip_name: str, chip: Chip) -> Display | None:
        p = "display."
        driver = self.get(t, "driver", p, "str")
        if driver not in DISPLAY_DRIVERS:
            raise self.fail(p + "driver", f"'{driver}' is not one of {', '.join(DISPLAY_DRIVERS)}")
        self.unknown(t, _DISPLAY_COMMON | _DISPLAY[driver], p)
        if driver == "none":
            if "relay_pin" in t or "relay_active_low" in t:
                raise self.fail(p + "relay_pin", "a relay needs a display (driver is none)")
            return None

        def pin(key: str, required: bool = True) -> int | None:
            v = self.get(t, key, p, "int", required=required)
            if v is not None:
                self.pin(p + key, v, chip_name, chip, output=True)
            return v

        def number(key: str, lo: int, hi: int, default: int) -> int:
            v = self.get(t, key, p, "int", required=False, default=default)
            self.in_range(p + key, v, lo, hi)
            return v

        bus: dict[str, int] = {}
        serpentine, brightness = True, 32
        if driver == "ssd1306":
            width = number("width", 1, 128, 128)
            height = number("height", 1, 64, 64)
            if (width, height) not in SSD1306_SIZES:
                raise self.fail(p + "width", f"{width}x{height} is not supported (the layout is drawn for "
                                             f"{', '.join(f'{w}x{h}' for w, h in SSD1306_SIZES)})")
            bus["i2c_id"] = number("i2c_id", 0, 1, 0)
            bus["sda"], bus["scl"] = pin("sda"), pin("scl")
            bus["address"] = self.get(t, "address", p, "int", required=False, default=0x3C)
            if bus["address"] not in SSD1306_ADDRESSES:
                raise self.fail(p + "address", f"{bus['address']:#x} is not an SSD1306 address (0x3c or 0x3d)")
            bus["freq"] = number("freq", *I2C_FREQ_RANGE, 400_000)
        elif driver == "max7219":
            modules = self.get(t, "modules", p, "int")
            self.in_range(p + "modules", modules, *MAX7219_MODULES_RANGE)
            width, height = 8 * modules, 8
            bus["modules"] = modules
            bus["spi_id"] = number("spi_id", 1, 2, 1)
            bus["sck"], bus["mosi"], bus["cs"] = pin("sck"), pin("mosi"), pin("cs")
            bus["baudrate"] = number("baudrate", *MAX7219_BAUD_RANGE, 10_000_000)
            bus["intensity"] = number("intensity", 0, 15, 4)
        else:
            width = self.get(t, "width", p, "int")
            self.in_range(p + "width", width, *WS2812_WIDTH_RANGE)
            if width % 8:
                raise self.fail(p + "width", f"{width} is not a multiple of 8 (matrix panels are 8 LEDs a column)")
            height = self.get(t, "height", p, "int")
            if height != WS2812_HEIGHT:
                raise self.fail(p + "height", f"{height} is not supported (the sign layout is {WS2812_HEIGHT} LEDs high)")
            bus["pin"] = pin("pin")
            serpentine = self.get(t, "serpentine", p, "bool", required=False, default=True)
            brightness = number("brightness", *BRIGHTNESS_RANGE, 32)
        relay = pin("relay_pin", required=False)
        active_low = self.get(t, "relay_active_low", p, "bool", required=False, default=False)
        if relay is None and "relay_active_low" in t:
            raise self.fail(p + "relay_active_low", "given without relay_pin")
        return Display(driver=driver, width=width, height=height, bus=bus, serpentine=serpentine,
                       brightness=brightness, relay_pin=relay, relay_active_low=active_low)

    def microphone(self, t: dict) -> Microphone:
        p = "microphone."
        model = self.get(t, "model", p, "str")
        sens = self.get(t, "sensitivity_dbfs", p, "number")
        self.in_range(p + "sensitivity_dbfs", sens, *SENSITIVITY_RANGE)
        noise = self.get(t, "self_noise_dba", p, "number")
        self.in_range(p + "self_noise_dba", noise, *SELF_NOISE_RANGE)
        aop = self.get(t, "acoustic_overload_db", p, "number")
        self.in_range(p + "acoustic_overload_db", aop, *OVERLOAD_RANGE)
        data_bits = self.get(t, "data_bits", p, "int")
        self.in_range(p + "data_bits", data_bits, *DATA_BITS_RANGE)
        shift = self.get(t, "input_shift", p, "int")
        self.in_range(p + "input_shift", shift, *INPUT_SHIFT_RANGE)
        if shift < MIN_INPUT_SHIFT:
            raise self.fail(p + "input_shift", f"{shift} keeps {32 - shift} bits of the word but the meter takes 22: "
                                               f"the top bits would wrap (use {MIN_INPUT_SHIFT} or more)")
        discard = self.get(t, "startup_discard_s", p, "number")
        self.in_range(p + "startup_discard_s", discard, *STARTUP_DISCARD_RANGE)
        note = self.get(t, "dc_offset_note", p, "str", required=False, default="")
        raw = self.get(t, "response", p, "list", required=False, default=None)
        response = self.response(raw) if raw is not None else ()
        return Microphone(model=model, sensitivity_dbfs=sens, self_noise_dba=noise, acoustic_overload_db=aop,
                          data_bits=data_bits, input_shift=shift, startup_discard_s=discard, dc_offset_note=note,
                          response=response)

    def response(self, raw: list) -> tuple[tuple[float, float], ...]:
        key = "microphone.response"
        if len(raw) < 2:
            raise self.fail(key, f"needs at least two [frequency_hz, dB] points, got {len(raw)}")
        points: list[tuple[float, float]] = []
        for i, row in enumerate(raw):
            k = f"{key}[{i}]"
            if (not isinstance(row, list) or len(row) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)):
                raise self.fail(k, f"expected [frequency_hz, dB] (two numbers), got {_short(row)}")
            f, db = float(row[0]), float(row[1])
            if not (math.isfinite(f) and math.isfinite(db)):
                raise self.fail(k, f"expected finite numbers, got {_short(row)}")
            if not RESPONSE_HZ_RANGE[0] <= f <= RESPONSE_HZ_RANGE[1]:
                raise self.fail(k, f"frequency {_num(f)} Hz is out of range "
                                   f"{_num(RESPONSE_HZ_RANGE[0])}..{_num(RESPONSE_HZ_RANGE[1])} Hz")
            if abs(db) > RESPONSE_DB_LIMIT:
                raise self.fail(k, f"{_num(db)} dB is out of range ±{_num(RESPONSE_DB_LIMIT)} dB")
            if points and f <= points[-1][0]:
                raise self.fail(k, f"frequency {_num(f)} Hz does not increase (previous {_num(points[-1][0])} Hz)")
            points.append((f, db))
        if not points[0][0] <= 1000.0 <= points[-1][0]:
            raise self.fail(key, "must span 1 kHz (the table is relative to 1 kHz)")
        from slm import mic_eq

        at_1k = float(mic_eq.response_db(points, [1000.0])[0])
        if abs(at_1k) > RESPONSE_1K_TOLERANCE_DB:
            raise self.fail(key, f"reads {at_1k:+.2f} dB at 1 kHz; the table must be relative to 1 kHz (0 dB there)")
        return tuple(points)


def display_pins(display: Display) -> dict[str, int]:
    """The GPIOs a display uses, by profile key (for the check that no pin is used twice)."""
    keys = {"ssd1306": ("sda", "scl"), "max7219": ("sck", "mosi", "cs"), "ws2812": ("pin",)}[display.driver]
    pins = {f"display.{k}": display.bus[k] for k in keys}
    if display.relay_pin is not None:
        pins["display.relay_pin"] = display.relay_pin
    return pins


def _kind(v) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "table"}.get(
        type(v), type(v).__name__)


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
