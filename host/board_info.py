"""Explain a board profile to a person: one-line summaries, a full description and a text wiring diagram.

Used by ``slm boards`` / ``slm boards show`` and, verbatim, by docs/hardware.md (a test checks that every shipped
profile's ``wiring_diagram`` appears there). Pure functions of a ``slm.boards.Board``; only ``describe`` with
``with_eq=True`` does work (the equaliser's report: its flatness, limits and rounding noise, about a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slm.boards import Board


@dataclass(frozen=True)
class MicPins:
    """The names printed on a microphone module's pins, and what to know when wiring it."""

    vdd: str
    gnd: str
    sck: str
    ws: str
    sd: str
    sel: str
    notes: tuple[str, ...] = ()


MIC_PINS: dict[str, MicPins] = {
    "INMP441": MicPins("VDD", "GND", "SCK", "WS", "SD", "L/R", (
        "SD needs a 100 kOhm pull-down to GND (the datasheet's; many modules have none: add one from SD to GND)",
    )),
    "ICS-43434": MicPins("VDD", "GND", "SCK (BCLK)", "WS (LRCL)", "SD (DOUT)", "SEL (L/R)", (
        "keep the module dry: users report ICS-43434 failures in persistent humidity",
    )),
    "SPH0645LM4H-B": MicPins("3V", "GND", "BCLK", "LRCL", "DOUT", "SEL", (
        "on the ESP32 its samples arrive shifted left by one bit: the profile's input_shift 11 undoes it",
    )),
}
GENERIC_PINS = MicPins("VDD", "GND", "SCK/BCLK", "WS/LRCL", "SD/DOUT", "L/R (SEL)")

CHIP_LABELS = {"esp32": "ESP32", "esp32s2": "ESP32-S2", "esp32s3": "ESP32-S3", "esp32c3": "ESP32-C3",
               "esp32c6": "ESP32-C6"}


def mic_pins(model: str) -> MicPins:
    return MIC_PINS.get(model, GENERIC_PINS)


def summary_line(board: Board) -> str:
    """``esp32-devkitc-inmp441  esp32  INMP441  48000 Hz`` (columns padded for a list)."""
    return f"{board.name:28s} {board.chip:8s} {board.microphone.model:14s} {board.rate} Hz"


def summary(board: Board) -> dict[str, Any]:
    return {"name": board.name, "chip": board.chip, "microphone": board.microphone.model, "rate": board.rate,
            "description": board.description}


def wiring_diagram(board: Board) -> str:
    """A text diagram, ESP32 pin to microphone pin, with the slot select, the pull-down and the indicator LED."""
    m = mic_pins(board.microphone.model)
    chip = CHIP_LABELS.get(board.chip, board.chip)
    sel_to, sel_note = ("GND", "left slot") if board.i2s.slot == "left" else ("3V3", "right slot")
    rows = [
        ("3V3", m.vdd, "3.3 V, not 5 V"),
        ("GND", m.gnd, ""),
        (f"GPIO{board.i2s.sck}", m.sck, "bit clock"),
        (f"GPIO{board.i2s.ws}", m.ws, "word select"),
        (f"GPIO{board.i2s.sd}", m.sd, "data from the microphone"),
        (sel_to, m.sel, sel_note),
    ]
    left = f"{chip} board"
    right = f"{board.microphone.model} module"
    w_left = max(len(left), *(len(r[0]) for r in rows))
    w_right = max(len(right), *(len(r[1]) for r in rows))
    wire = " " + "-" * 12 + " "
    lines = [f"  {left:<{w_left}}{' ' * len(wire)}{right}"]
    for pin, mic, note in rows:
        lines.append(f"  {pin:<{w_left}}{wire}{mic:<{w_right}}  {note}".rstrip())
    if board.microphone.model == "INMP441":
        lines.append(f"  {'':<{w_left}}{' ' * len(wire)}{m.sd} --[100k]-- GND  pull-down")
    if board.indicator_led is not None:
        level = "active low" if board.indicator_active_low else "active high"
        lines.append(f"  GPIO{board.indicator_led} -> indicator LED ({level})")
    lines += [f"  {line}" for line in display_wiring(board)]
    return "\n".join(lines)


def display_wiring(board: Board) -> list[str]:
    """The public display's and the warning relay's wires (docs/hardware.md, "Public display")."""
    d = board.display
    if d is None:
        return []
    b = d.bus
    if d.driver == "ssd1306":
        lines = [f"GPIO{b['sda']} SDA, GPIO{b['scl']} SCL -> SSD1306 OLED {d.width}x{d.height} at I2C {b['address']:#x} "
                 "(VCC to 3V3)"]
    elif d.driver == "max7219":
        lines = [f"GPIO{b['sck']} CLK, GPIO{b['mosi']} DIN, GPIO{b['cs']} CS -> MAX7219 chain of {b['modules']} 8x8 "
                 "matrices (VCC 5 V)"]
    else:
        lines = [f"GPIO{b['pin']} -> WS2812 matrix {d.width}x{d.height} DIN (5 V supply, common GND)"]
    if d.relay_pin is not None:
        level = "active low" if d.relay_active_low else "active high"
        lines.append(f"GPIO{d.relay_pin} -> relay module for the warning light ({level}; on while over the limit)")
    return lines


def describe(board: Board, with_eq: bool = True) -> list[tuple[str, str]]:
    """(label, text) rows explaining the profile; ``with_eq`` designs the equaliser to report its figures."""
    m = board.microphone
    i2s = board.i2s
    sel = "the microphone's select pin to GND" if i2s.slot == "left" else "the microphone's select pin to 3V3"
    rows = [
        ("board", board.name),
        ("description", board.description),
        ("chip", f"{board.chip} ({CHIP_LABELS.get(board.chip, board.chip)})"),
        ("flash offset", f"{board.flash_offset:#x} (where MicroPython's combined image is written)"),
        ("I2S", f"I2S{i2s.id}: SCK GPIO{i2s.sck}, WS GPIO{i2s.ws}, SD GPIO{i2s.sd}; {i2s.bits}-bit slots"),
        ("slot", f"{i2s.slot} (WS {'low' if i2s.slot == 'left' else 'high'}; {sel}); a wrong slot reads silence"),
        ("microphone", m.model),
        ("sensitivity", f"{m.sensitivity_dbfs:g} dBFS at 94 dB SPL, 1 kHz (full scale = "
                        f"{94 - m.sensitivity_dbfs:g} dB SPL)"),
        ("self-noise", f"{m.self_noise_dba:g} dB(A) (quiet rooms read a few dB more)"),
        ("overload", f"{m.acoustic_overload_db:g} dB SPL"),
        ("data", f"{m.data_bits} bits; input shift {m.input_shift} (32-bit word to the meter's 22-bit sample)"),
        ("start-up", f"the first {m.startup_discard_s:g} s after start are discarded"),
    ]
    if m.dc_offset_note:
        rows.append(("DC offset", m.dc_offset_note))
    rows.append(("sample rate", f"{board.rate} Hz"))
    rows.append(("equaliser", _eq_text(board, with_eq)))
    if board.indicator_led is None:
        rows.append(("indicator LED", "none"))
    else:
        level = "low" if board.indicator_active_low else "high"
        rows.append(("indicator LED", f"GPIO{board.indicator_led}, active {level}"))
    rows.append(("display", "none" if board.display is None else "; ".join(display_wiring(board))))
    for note in mic_pins(m.model).notes:
        rows.append(("wiring note", note))
    if board.path is not None:
        rows.append(("profile file", str(board.path)))
    return rows


def _eq_text(board: Board, with_eq: bool) -> str:
    m = board.microphone
    if not m.response:
        return "off: the profile has no response table"
    span = f"{len(m.response)} points, {m.response[0][0]:g} Hz to {m.response[-1][0]:g} Hz"
    if not with_eq:
        return f"on: one or two biquads from the datasheet response table ({span})"
    rep = board.eq_design()
    assert rep is not None
    what = "one biquad" if rep.sections == 1 else f"{rep.sections} biquads"
    return (f"on: {what} from the datasheet response table ({span}); residual within ±{rep.max_abs_db:.2f} dB "
            f"from 50 Hz to {board.rate / 3 / 1000:.0f} kHz, largest boost {rep.max_boost_db:.1f} dB; the table is "
            "typical, not this unit's")


def as_json(board: Board) -> dict[str, Any]:
    """The profile as plain data for ``slm boards show --json``: the description fields and what the device gets."""
    rep = board.eq_design()
    return {
        **summary(board),
        "flash_offset": board.flash_offset,
        "i2s": {"id": board.i2s.id, "sck": board.i2s.sck, "ws": board.i2s.ws, "sd": board.i2s.sd,
                "slot": board.i2s.slot, "bits": board.i2s.bits},
        "microphone": {"model": board.microphone.model, "sensitivity_dbfs": board.microphone.sensitivity_dbfs,
                       "self_noise_dba": board.microphone.self_noise_dba,
                       "acoustic_overload_db": board.microphone.acoustic_overload_db,
                       "data_bits": board.microphone.data_bits, "input_shift": board.microphone.input_shift,
                       "startup_discard_s": board.microphone.startup_discard_s},
        "equaliser": None if rep is None else {"coeffs": list(rep.coeffs), "max_abs_db": round(rep.max_abs_db, 3),
                                               "max_boost_db": round(rep.max_boost_db, 2), "sections": rep.sections},
        "indicator_led": board.indicator_led,
        "indicator_active_low": board.indicator_active_low,
        "display": None if board.display is None else board.display.device_config(),
        "wiring": wiring_diagram(board).splitlines(),
    }
