"""The public display (firmware/display.py) on the MicroPython unix port: the image of every state for each driver,
checked pixel-wise against committed references; the bytes a driver sends decoded back into the framebuf it drew;
a tick's work bounded; the state and the view from an app; the relay; board profile [display] validation; the PNG.

The firmware runs with its real drivers (micropython-lib's ssd1306, max7219.py, the neopixel interface) against the
stand-in buses of firmware/display_standin.py, which decode what was sent the way the panel would.
Rewrite the references after an intended change of the layout, and look at them:
    .venv/bin/python tests/test_display.py --write-references
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slm.boards import BoardError, load_board
from slm.display_image import DisplayImageError, Image, enlarge, read_png, read_ppm, to_png, write_png
from slm.firmware import display as fw_display
from slm.firmware_engine import micropython_binary
from slm.resources import firmware_dir

ROOT = Path(__file__).resolve().parent.parent
REFS = Path(__file__).resolve().parent / "data" / "display"
DOC_IMG = ROOT / "docs" / "img"

CONFIGS = {
    "ssd1306": {"driver": "ssd1306", "width": 128, "height": 64, "i2c_id": 0, "sda": 21, "scl": 22, "address": 60,
                "freq": 400000, "relay_pin": 26, "relay_active_low": False},
    "ws2812": {"driver": "ws2812", "width": 32, "height": 8, "pin": 14, "serpentine": True, "brightness": 32,
               "relay_pin": 15, "relay_active_low": False},
    "max7219": {"driver": "max7219", "width": 32, "height": 8, "modules": 4, "spi_id": 2, "sck": 18, "mosi": 23,
                "cs": 5, "baudrate": 10000000, "intensity": 4, "relay_pin": None, "relay_active_low": False},
}
VIEWS = {
    "under": {"laeq": 48.34, "limit": 55, "band": "day", "time": "14:05", "state": "under"},
    "near": {"laeq": 53.61, "limit": 55, "band": "day", "time": "14:06", "state": "near"},
    "over": {"laeq": 72.44, "limit": 55, "band": "night", "time": "22:15", "state": "over"},
    "mic_fault": {"laeq": None, "limit": 45, "band": "night", "time": "22:16", "state": "mic_fault"},
    "overload": {"laeq": 121.27, "limit": 80, "band": "dance", "time": "19:40", "state": "overload"},
    "no_measurement": {"laeq": None, "limit": 55, "band": "day", "time": "06:01", "state": "no_measurement"},
    "no_clock": {"laeq": 63.18, "limit": None, "band": None, "time": None, "state": "no_clock"},
}
STRIP_TIME_PAGE = ("time_page", dict(VIEWS["under"]), fw_display.STRIP_PAGE_S)  # shown after STRIP_PAGE_S updates
# what one tick may put on the bus at most: an SSD1306 page and its 6 addressing commands (2 bytes each over I2C),
# the whole WS2812 strip (one write), one MAX7219 row of every module
MAX_BYTES_PER_TICK = {"ssd1306": 1 + 128 + 6 * 2, "ws2812": 3 * 32 * 8, "max7219": 2 * 4}
MAX_STEPS_PER_REDRAW = 20

HARNESS = r"""
import gc, json, os, sys, time
import display
spec = json.loads(sys.stdin.read())
out = spec["out"]
results = {}
for name, view, updates in spec["views"]:
    d = display.make_display(spec["cfg"], None, out)  # a fresh display per case: the strip's page counts updates
    for _ in range(updates):
        d.update(view)
    sent, per_tick, us = [], [], []
    while True:
        s0 = d.standin.sent
        t0 = time.ticks_us()
        worked = d.tick()
        us.append(time.ticks_diff(time.ticks_us(), t0))
        if not worked:
            break
        per_tick.append(d.standin.sent - s0)
    os.rename(out + "/display.ppm", out + "/" + name + ".ppm")
    fb, w, h = d.panel.fb, d.panel.width, d.panel.height
    with open(out + "/" + name + ".fb", "wb") as f:
        f.write(bytes(fb.pixel(x, y) for y in range(h) for x in range(w)))
    results[name] = {"bytes": per_tick, "us": us[:-1]}
gc.collect()
idle = gc.mem_alloc()
for _ in range(1000):
    d.tick()
results["idle_alloc"] = gc.mem_alloc() - idle
results["idle_work"] = sum(1 for _ in range(10) if d.tick())
print(json.dumps(results))
"""


def run_firmware(script: str, spec: dict):
    r = subprocess.run([micropython_binary(), "-c", script], cwd=firmware_dir(), input=json.dumps(spec),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout.strip().splitlines()[-1])


def cases(driver: str) -> list:
    views = [[name, view, 1] for name, view in VIEWS.items()]
    if driver != "ssd1306":
        views.append(list(STRIP_TIME_PAGE))
    return views


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Every driver's images of every state, drawn by the firmware on the unix port: driver -> (folder, results)."""
    out = {}
    for driver, cfg in CONFIGS.items():
        folder = tmp_path_factory.mktemp(driver)
        out[driver] = (folder, run_firmware(HARNESS, {"cfg": cfg, "out": str(folder), "views": cases(driver)}))
    return out


SNAPSHOTS = [(d, name) for d in CONFIGS for name, _, _ in cases(d)]


@pytest.mark.micropython
@pytest.mark.parametrize("driver,name", SNAPSHOTS, ids=[f"{d}-{n}" for d, n in SNAPSHOTS])
def test_image_matches_reference_pixel_for_pixel(drawn, driver, name):
    folder, _ = drawn[driver]
    got = read_ppm(folder / f"{name}.ppm")
    ref = read_png(REFS / f"{driver}-{name}.png")
    assert (got.width, got.height) == (ref.width, ref.height)
    differ = [(x, y) for y in range(got.height) for x in range(got.width) if got.pixel(x, y) != ref.pixel(x, y)]
    assert not differ, f"{len(differ)} pixels differ from the reference, first at {differ[:5]}"


@pytest.mark.micropython
@pytest.mark.parametrize("driver", list(CONFIGS))
def test_bytes_sent_decode_back_into_the_framebuf(drawn, driver):
    """The panel model's image (decoded from the bus) lights exactly the framebuf's non-zero pixels, in the
    framebuf's colour (WS2812: the palette entry at the configured brightness)."""
    folder, _ = drawn[driver]
    cfg = CONFIGS[driver]
    for name, view, _ in cases(driver):
        img = read_ppm(folder / f"{name}.ppm")
        fb = (folder / f"{name}.fb").read_bytes()
        assert len(fb) == img.width * img.height
        lit = 0
        for y in range(img.height):
            for x in range(img.width):
                v = fb[y * img.width + x]
                px = img.pixel(x, y)
                if driver == "ws2812":
                    r, g, b = fw_display.PALETTE[v]
                    want = tuple(c * cfg["brightness"] // 255 for c in (r, g, b))
                else:
                    want = ((255, 255, 255) if driver == "ssd1306" else (255, 0, 0)) if v else (0, 0, 0)
                assert px == want, (name, x, y, v, px)
                lit += v != 0
        assert 0 < lit < img.width * img.height or view["state"] == "over", name


@pytest.mark.micropython
@pytest.mark.parametrize("driver", list(CONFIGS))
def test_tick_does_bounded_work(drawn, driver):
    _, res = drawn[driver]
    for name, _, _ in cases(driver):
        per_tick = res[name]["bytes"]
        assert 2 <= len(per_tick) <= MAX_STEPS_PER_REDRAW, (name, len(per_tick))
        assert max(per_tick) <= MAX_BYTES_PER_TICK[driver], (name, per_tick)
        assert sum(1 for n in per_tick if n) >= (8 if driver != "ws2812" else 1), per_tick  # the transfer is sliced
    assert res["idle_alloc"] == 0, "an idle tick allocates"
    assert res["idle_work"] == 0


@pytest.mark.micropython
def test_relay_is_on_only_when_over(drawn):
    for driver in ("ssd1306", "ws2812"):
        folder, _ = drawn[driver]
        for name, view, _ in cases(driver):
            assert read_ppm(folder / f"{name}.ppm").relay == (1 if view["state"] == "over" else 0), (driver, name)
    folder, _ = drawn["max7219"]
    assert read_ppm(folder / "over.ppm").relay is None  # no relay configured


ALLOC = r"""
import json, micropython, sys
import display
cfg = json.loads(sys.stdin.read())
d = display.make_display(cfg, None, "/tmp")


class NullBus:  # a real bus's write is C code that allocates nothing; the stand-in's decoding is the host's work
    def writeto(self, addr, buf):
        pass

    def writevto(self, addr, bufs):
        pass

    def write(self, buf):
        pass

    def __call__(self, v=None):
        pass


p = d.panel
if cfg["driver"] == "ssd1306":
    p.oled.i2c = NullBus()
elif cfg["driver"] == "max7219":
    p.chain.spi = p.chain.cs = NullBus()
else:
    p.np.write = lambda: None
p.on_frame = None
out = []
for s in range(4):
    view = {"laeq": 60.0 + s, "limit": 55, "band": "day", "time": "12:0%d" % s, "state": "over"}
    a0 = micropython.mem_total()  # every byte allocated, frames on the heap included
    d.update(view)
    while d.tick():
        pass
    out.append(micropython.mem_total() - a0)
print(json.dumps(out))
"""


@pytest.mark.micropython
@pytest.mark.parametrize("driver", list(CONFIGS))
def test_a_redraw_allocates_a_few_kilobytes(driver):
    """Measured: 2.3 KB (SSD1306), 1.0 KB (WS2812), 2.0 KB (MAX7219) per update and redraw; there is at most one a
    second (the number and the time change once a minute, a strip's page every 4 s), none per audio block."""
    per_redraw = run_firmware(ALLOC, CONFIGS[driver])
    assert max(per_redraw) <= 4 * 1024, per_redraw


VIEW_FOR = r"""
import json, os, sys
import display
spec = json.loads(sys.stdin.read())


class Meter:
    def __init__(self, overload):
        self.overload = overload

    def current(self):
        return {"LAF": 50.0, "LAS": 50.0, "LAeq": 50.0, "LCpeak": 80.0, "overload": self.overload}


class Audio:
    errors = spec["audio_errors"]


class App:  # what display.view_for reads of firmware/app.py's MeterApp
    last_minute = spec["minute"]
    faults = spec["faults"]
    meter = Meter(spec["meter_overload"])
    audio = Audio()


view = display.view_for(App(), spec["now"])
if spec["out"]:
    d = display.make_display(spec["cfg"], None, spec["out"])
    d.update(view)
    while d.tick():
        pass
print(json.dumps(view))
"""
MINUTE = {"start": "2026-07-15T14:15:00Z", "local": "22:15", "s": 60, "LAeq": 72.44, "LAFmax": 80.1, "LA10": 74.0,
          "LA50": 71.0, "LA90": 65.0, "LCpeak": 99.0, "overload": False, "band": "night", "limit": 55, "over": True}


def view_for(tmp_path=None, minute=MINUTE, faults=(), meter_overload=False, audio_errors=0, now="22:15") -> dict:
    spec = {"minute": minute, "faults": list(faults), "meter_overload": meter_overload, "audio_errors": audio_errors,
            "now": now, "cfg": CONFIGS["ssd1306"], "out": str(tmp_path) if tmp_path else None}
    return run_firmware(VIEW_FOR, spec)


@pytest.mark.micropython
def test_an_app_over_its_limit_shows_the_over_screen(tmp_path):
    """The whole path on the unix port: an app's last minute -> view_for -> the SSD1306 -> the reference image."""
    view = view_for(tmp_path)
    assert view == VIEWS["over"]
    got, ref = read_ppm(tmp_path / "display.ppm"), read_png(REFS / "ssd1306-over.png")
    assert got.rgb == ref.rgb and got.relay == 1


@pytest.mark.micropython
def test_view_for_reads_faults_overload_and_missing_minutes():
    assert view_for(faults=["mic_silent"])["state"] == "mic_fault"
    assert view_for(audio_errors=3)["state"] == "mic_fault"
    assert view_for(faults=["config_missing"])["state"] == "over"  # not a microphone fault
    assert view_for(minute=dict(MINUTE, LAeq=55.04, over=True))["state"] == "over"  # the record's verdict
    assert view_for(minute=dict(MINUTE, LAeq=54.0, over=False))["state"] == "near"
    assert view_for(meter_overload=True)["state"] == "overload"
    assert view_for(minute=dict(MINUTE, overload=True))["state"] == "overload"
    none = view_for(minute=None, now="06:00")
    assert none == {"laeq": None, "limit": None, "band": None, "time": "06:00", "state": "no_measurement"}
    assert view_for(now=None)["time"] == "22:15"  # the minute's own local time when the app has none
    unset = view_for(minute=dict(MINUTE, limit=None, band=None, over=None, local=None), faults=["clock_unset"], now=None)
    assert unset == {"laeq": 72.44, "limit": None, "band": None, "time": None, "state": "no_clock"}


@pytest.mark.parametrize("laeq,limit,state", [
    (55.0, 55, "near"), (55.04, 55, "near"), (55.05, 55, "over"), (55.1, 55, "over"), (52.0, 55, "near"),
    (51.95, 55, "near"), (51.94, 55, "under"), (30.0, 55, "under"), (70.0, None, "under"), (None, 55, "no_measurement"),
    (None, None, "no_measurement"), (45.5, 45.5, "near"),
])
def test_display_state_against_the_limit(laeq, limit, state):
    assert fw_display.display_state(laeq, limit) == state


def test_the_minute_records_verdict_decides_over():
    """The judge compares the unrounded LAeq: a minute at 55.04 over a limit of 55 is over on the sign too."""
    assert fw_display.display_state(55.04, 55, over=True) == "over"
    assert fw_display.display_state(55.04, 55, over=False) == "near"
    assert fw_display.display_state(40.0, 55, over=False) == "under"


def test_hhmm():
    assert [fw_display.hhmm(m) for m in (0, 61, 1439, None)] == ["00:00", "01:01", "23:59", None]


def test_display_state_order_of_precedence():
    assert fw_display.display_state(70.0, 55, ["mic_silent"], True) == "mic_fault"
    assert fw_display.display_state(None, 55, ["i2s_errors:4"]) == "mic_fault"
    assert fw_display.display_state(70.0, 55, ["clock_unset"], True) == "overload"
    assert fw_display.display_state(None, 55, [], True) == "overload"
    assert fw_display.display_state(None, None, ["clock_unset"]) == "no_measurement"
    assert fw_display.display_state(40.0, None, ["clock_unset"]) == "no_clock"  # never a green "under" without a clock
    assert fw_display.display_state(80.0, None, ["clock_unset", "config_missing"]) == "no_clock"


def test_number_and_limit_text_are_integer_rounded():
    assert fw_display.number_text(fw_display.tenths(72.44)) == "72.4"
    assert fw_display.number_text(fw_display.tenths(72.45)) == "72.5"
    assert fw_display.number_text(fw_display.tenths(99.96)) == "100.0"
    assert fw_display.number_text(None) == "--.-"
    assert fw_display.number_text(fw_display.tenths(-1.5)) == "-1.5"
    assert fw_display.limit_text(550) == "55" and fw_display.limit_text(455) == "45.5"


# --- board profile [display] ---------------------------------------------------------------------------------------

BASE = """name = "{stem}"
description = "test"
chip = "esp32"
flash_offset = 0x1000

[i2s]
id = 0
sck = 32
ws = 25
sd = 33
slot = "left"
bits = 32

[microphone]
model = "INMP441"
sensitivity_dbfs = -26.0
self_noise_dba = 33.0
acoustic_overload_db = 120.0
data_bits = 24
input_shift = 10
startup_discard_s = 0.3

[sample]
rate = 48000

[display]
{display}
"""
GOOD = {
    "ssd1306": 'driver = "ssd1306"\nsda = 21\nscl = 22',
    "max7219": 'driver = "max7219"\nmodules = 4\nsck = 18\nmosi = 23\ncs = 5',
    "ws2812": 'driver = "ws2812"\nwidth = 32\nheight = 8\npin = 14\nrelay_pin = 15',
}
BAD_DISPLAY = {
    "unknown driver": ('driver = "lcd1602"', "display.driver", "'lcd1602' is not one of ssd1306, max7219, ws2812, none"),
    "missing driver": ("sda = 21", "display.driver", "missing"),
    "missing pin": ('driver = "ssd1306"\nsda = 21', "display.scl", "missing"),
    "key of another driver": (GOOD["ssd1306"] + "\nmodules = 4", "display.modules", "unknown key"),
    "pin on the microphone": ('driver = "ssd1306"\nsda = 21\nscl = 32', "display.scl", "already used by i2s.sck"),
    "input-only pin": ('driver = "ws2812"\nwidth = 32\nheight = 8\npin = 34', "display.pin", "input-only"),
    "pin beyond chip": (GOOD["ssd1306"] + "\nrelay_pin = 40", "display.relay_pin", "no GPIO40"),
    "relay on the bus": (GOOD["max7219"] + "\nrelay_pin = 18", "display.relay_pin", "already used by display.sck"),
    "oled size": (GOOD["ssd1306"] + "\nwidth = 128\nheight = 32", "display.width", "128x32 is not supported"),
    "oled address": (GOOD["ssd1306"] + "\naddress = 0x27", "display.address", "0x27 is not an SSD1306 address"),
    "too few modules": ('driver = "max7219"\nmodules = 2\nsck = 18\nmosi = 23\ncs = 5', "display.modules",
                        "out of range 4..16"),
    "baud too high": (GOOD["max7219"] + "\nbaudrate = 20000000", "display.baudrate", "out of range"),
    "width not a multiple": ('driver = "ws2812"\nwidth = 36\nheight = 8\npin = 14', "display.width", "multiple of 8"),
    "strip too wide": ('driver = "ws2812"\nwidth = 64\nheight = 8\npin = 14', "display.width", "out of range 32..48"),
    "strip height": ('driver = "ws2812"\nwidth = 32\nheight = 16\npin = 14', "display.height", "16 is not supported"),
    "brightness": (GOOD["ws2812"] + "\nbrightness = 0", "display.brightness", "out of range 1..255"),
    "serpentine as int": (GOOD["ws2812"] + "\nserpentine = 1", "display.serpentine", "expected true or false"),
    "relay without display": ('driver = "none"\nrelay_pin = 4', "display.relay_pin", "needs a display"),
    "active_low alone": (GOOD["ssd1306"] + "\nrelay_active_low = true", "display.relay_active_low", "without relay_pin"),
}


def _profile(tmp_path: Path, display: str) -> Path:
    p = tmp_path / "disp-board.toml"
    p.write_text(BASE.format(stem="disp-board", display=display))
    return p


@pytest.mark.parametrize("case", list(BAD_DISPLAY))
def test_bad_display_section_gives_one_line(tmp_path, case):
    text, key, words = BAD_DISPLAY[case]
    path = _profile(tmp_path, text)
    with pytest.raises(BoardError) as e:
        load_board(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: {key}: "), msg
    assert words in msg, msg


@pytest.mark.parametrize("driver", list(GOOD))
def test_display_section_goes_into_board_json(tmp_path, driver):
    cfg = load_board(_profile(tmp_path, GOOD[driver])).device_config()["display"]
    assert cfg["driver"] == driver
    want = {k: v for k, v in CONFIGS[driver].items() if k not in ("relay_pin", "relay_active_low")}
    if driver == "max7219":
        want["spi_id"] = 1  # the default; the shipped profile uses VSPI
    assert {k: cfg[k] for k in want} == want


def test_no_display_and_none_give_null(tmp_path):
    assert load_board(_profile(tmp_path, 'driver = "none"')).device_config()["display"] is None
    assert load_board("esp32-c3-inmp441").device_config()["display"] is None
    assert load_board("esp32-devkitc-inmp441").device_config()["display"] == CONFIGS["ssd1306"]
    assert load_board("esp32-s3-devkitc-ics43434").device_config()["display"] == CONFIGS["ws2812"]
    assert load_board("esp32-devkitc-sph0645").device_config()["display"] == CONFIGS["max7219"]


# --- the host side: PPM -> PNG ---------------------------------------------------------------------------------------

def test_png_round_trip_and_enlarge(tmp_path):
    img = Image(3, 2, bytes(range(18)), relay=None)
    write_png(img, tmp_path / "a.png")
    assert read_png(tmp_path / "a.png").rgb == img.rgb
    big = enlarge(Image(2, 8, bytes([0, 8, 0] * 16)), scale=4)
    assert (big.width, big.height) == (8, 32)
    assert big.pixel(0, 0) == (0, 255, 0) and big.pixel(3, 0) == (0, 0, 0)  # LED brightened; the gap dark


def test_bad_ppm_is_one_line(tmp_path):
    p = tmp_path / "display.ppm"
    p.write_bytes(b"P6\n# relay 0\n128 64\n255\n" + bytes(100))
    with pytest.raises(DisplayImageError, match="pixel bytes for 128x64"):
        read_ppm(p)
    with pytest.raises(DisplayImageError, match="cannot read"):
        to_png(tmp_path / "missing.ppm", tmp_path / "x.png")


@pytest.mark.micropython
def test_mirror_writes_the_png_when_the_board_redraws(drawn, tmp_path):
    """`slm virtual --display`'s mirror: a new display.ppm becomes the PNG (enlarged), an unchanged one is not
    converted again, one older than the mirror is ignored."""
    import os
    import shutil
    import time

    from slm.display_image import DisplayMirror

    folder, _ = drawn["ssd1306"]
    ppm, png = tmp_path / "display.ppm", tmp_path / "out.png"
    shutil.copyfile(folder / "under.ppm", ppm)
    os.utime(ppm, ns=(time.time_ns() - 10**9,) * 2)  # left by an earlier run
    mirror = DisplayMirror(ppm, png, scale=2)
    assert not mirror.poll() and not png.exists()
    shutil.copyfile(folder / "over.ppm", tmp_path / "new.ppm")
    os.replace(tmp_path / "new.ppm", ppm)
    os.utime(ppm, ns=(time.time_ns() + 10**9,) * 2)
    assert mirror.poll() and not mirror.poll() and mirror.written == 1
    assert read_png(png).rgb == enlarge(read_png(REFS / "ssd1306-over.png"), 2).rgb


def test_virtual_display_needs_a_board_with_a_display(tmp_path):
    r = subprocess.run([sys.executable, "-m", "slm.cli", "virtual", "--board", "esp32-c3-inmp441", "--display",
                        str(tmp_path / "d.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("board esp32-c3-inmp441 has no [display] section; --display needs "
                                                 "one (e.g. --board esp32-devkitc-inmp441)"), r.stderr
    r = subprocess.run([sys.executable, "-m", "slm.cli", "virtual", "--display", str(tmp_path / "no" / "d.png")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


ABSENT = r"""
import json, sys
import display, display_standin
cfg = json.loads(sys.stdin.read())
real = display_standin.Ssd1306Model.transaction


def no_answer(self, addr, data):
    raise OSError(19)  # ENODEV: nothing at the address


display_standin.Ssd1306Model.transaction = no_answer
faults = []
absent = display.make_display(cfg, None, ".", faults)
display_standin.Ssd1306Model.transaction = real
d = display.make_display(cfg, None, ".", faults)
view = {"laeq": 60.0, "limit": 55, "band": None, "time": None, "state": "over"}
d.update(view)
d.tick()
display_standin.Ssd1306Model.transaction = no_answer  # unplugged in the middle of a redraw
while d.tick():
    pass
errors = d.errors
display_standin.Ssd1306Model.transaction = real  # back: the next update draws the view again
d.update(view)
while d.tick():
    pass
print(json.dumps({"absent": absent is None, "faults": faults, "errors": errors, "redraws": d.redraws}))
"""


@pytest.mark.micropython
def test_a_display_that_does_not_answer_never_stops_the_meter(tmp_path):
    cfg = dict(CONFIGS["ssd1306"])
    r = subprocess.run([micropython_binary(), "-c", f"import sys; sys.path.insert(0, {str(firmware_dir())!r})\n"
                        + ABSENT], cwd=tmp_path, input=json.dumps(cfg), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"absent": True, "faults": ["display_error"], "errors": 1, "redraws": 1}


def test_deploy_ships_the_drivers_and_keeps_the_stand_in_off_boards():
    from slm.deploy import DeviceFacts, firmware_sources, sources_for

    src = firmware_sources()
    assert {"display.py", "ssd1306.py", "max7219.py", "display_standin.py"} <= set(src)
    esp32 = DeviceFacts(platform="esp32", machine="Generic ESP32 module with ESP32", micropython="1.24.1",
                        mpy=6 | (3 << 8) | (10 << 10), free_bytes=None, block_bytes=None)
    unix = DeviceFacts(platform="linux", machine="linux", micropython="1.29.0", mpy=2822, free_bytes=None,
                       block_bytes=None)
    assert set(sources_for(src, esp32)) == set(src) - {"display_standin.py"}
    assert sources_for(src, unix) == src


def write_references() -> None:
    """Draw every case on the unix port and write the references (1:1) and the docs' enlarged images."""
    import tempfile

    REFS.mkdir(parents=True, exist_ok=True)
    DOC_IMG.mkdir(parents=True, exist_ok=True)
    for driver, cfg in CONFIGS.items():
        with tempfile.TemporaryDirectory() as folder:
            run_firmware(HARNESS, {"cfg": cfg, "out": folder, "views": cases(driver)})
            for name, _, _ in cases(driver):
                img = read_ppm(Path(folder) / f"{name}.ppm")
                write_png(img, REFS / f"{driver}-{name}.png")
                write_png(enlarge(img, 4 if driver == "ssd1306" else 10), DOC_IMG / f"display-{driver}-{name}.png")
                print(driver, name)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-references"]:
        write_references()
    else:
        print(__doc__)
