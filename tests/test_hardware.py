"""Tests on a real board: chip detection, flashing, the REPL, deploying and the running meter.

Marked ``hardware`` (deselected by ``make test``) and skipped unless a board is named::

    .venv/bin/python -m pytest -m hardware --board-port /dev/ttyUSB0 --board-name esp32-devkitc-inmp441 \\
        [--firmware ESP32_GENERIC.bin]

They run in file order: detect, flash (only with --firmware: it rewrites MicroPython, files on the board stay),
REPL, then deploy, records and the calibration on record. docs/hardware.md describes the set-up.
"""

from __future__ import annotations

import math
import time

import pytest

pytestmark = pytest.mark.hardware


@pytest.fixture(scope="module")
def port(request) -> str:
    path = request.config.getoption("--board-port")
    if not path:
        pytest.skip("needs a board: give --board-port PATH and --board-name NAME")
    return path


@pytest.fixture(scope="module")
def board(request, port):
    from slm.boards import load_board

    name = request.config.getoption("--board-name")
    if not name:
        pytest.skip("needs --board-name NAME (see `slm boards`) for the board on --board-port")
    return load_board(name)


def current_port(port: str) -> str:
    """The board's port now: a native-USB board can come back under another path after a reset."""
    from slm import discovery
    from slm.flashing import refind_port

    return refind_port(discovery.port_info(port)) or port


def test_detect_chip_matches_profile(port, board):
    from esptool import cmds

    from slm.flashing import normalise_chip

    with cmds.detect_chip(port) as esp:
        chip = normalise_chip(esp.CHIP_NAME)
        cmds.reset_chip(esp, "hard-reset")  # back to its firmware
    assert chip == board.chip, f"board {board.name} expects {board.chip}, the connected chip is {chip}"


def test_flash(request, port, board):
    firmware = request.config.getoption("--firmware")
    if not firmware:
        pytest.skip("needs --firmware MICROPYTHON.bin")
    from slm.flashing import flash

    stages = []
    result = flash(board.name, firmware, port=port, progress=lambda stage, done, total: stages.append(stage))
    assert result.chip == board.chip and result.offset == board.flash_offset and result.verified
    assert result.banner.startswith("MicroPython v") or result.banner == ""
    assert stages[0] == "connect" and "write" in stages and stages[-1] == "repl"


def test_repl(port, board):
    from slm.flashing import wait_for_repl

    path, banner = wait_for_repl(current_port(port), timeout=15)
    assert banner.startswith("MicroPython v"), banner
    chip_word = {"esp32": "ESP32", "esp32s2": "ESP32S2", "esp32s3": "ESP32S3", "esp32c3": "ESP32C3",
                 "esp32c6": "ESP32C6"}[board.chip]
    assert chip_word in banner.replace("-", ""), banner


def test_deploy(port, board):
    from slm.deploy import deploy
    from slm.link import DeviceLink

    report = deploy(board.name, current_port(port))  # returns once the meter has said hello
    assert report.verified and report.hello["board"] == board.name
    with DeviceLink(current_port(port), timeout=5.0) as link:
        info = link.info()
    assert info["proto"] == 2 and info["board"] == board.name and info["mic"] == board.microphone.model
    assert info["rate"] == board.rate and not info["faults"], info


def test_read_records(port, board):
    from slm.link import DeviceLink

    with DeviceLink(current_port(port), timeout=5.0) as link:
        link.stream(2)
        deadline = time.monotonic() + 6.0
        records = []
        while time.monotonic() < deadline:
            records += link.read_records(timeout=0.5)
        status = link.get("status")["status"]
        stats = link.stats()
    levels = [r for r in records if r.get("t") == "level"]
    assert len(levels) >= 6, f"{len(levels)} level records in 6 s"
    m = board.microphone
    for r in levels[2:]:  # after the start-up discard
        laf = r["LAF"]
        assert laf is not None and math.isfinite(laf), r
        # a room or a square: above the part's self-noise less a margin, below its overload point
        assert m.self_noise_dba - 10 <= laf <= m.acoustic_overload_db, r
    assert stats["bad_lines"] == 0 and stats["gaps"] == 0, stats
    assert not status["faults"] and status["dropped"] == 0, status


def test_calibration_in_force_is_on_record(port, board):
    """The device names the calibration in force (hello's cal) and its history holds that record: what a disputed
    measurement is traced back to. `slm calibrate --calibrator 94.0` first to see a calibrated board here."""
    from slm.calibration import read_history
    from slm.link import DeviceLink

    with DeviceLink(current_port(port), timeout=5.0) as link:
        info = link.info()
        history = read_history(link, info)
    cal = info["cal"]
    assert cal["sensitivity_dbfs"] == pytest.approx(board.microphone.sensitivity_dbfs), cal
    assert -10 <= cal["offset_db"] <= 10, cal  # MEMS sensitivity is within ±1-3 dB; slm calibrate refuses more
    assert not [f for f in info["faults"] if f.startswith("calibration_")], info["faults"]
    if cal["method"] in ("calibrator", "reference"):
        [in_force] = [r for r in history if r["in_force"]]
        assert (in_force["method"], in_force["time"], in_force["offset_db"]) == (cal["method"], cal["time"],
                                                                                  cal["offset_db"])
    assert len(history) <= 50 and [r["n"] for r in history] == sorted(r["n"] for r in history)


KERNEL_TIMING = r'''
import time, machine, meter, meter_kernel as K
from array import array
m1 = meter.Meter(48000)
m2 = meter.Meter(48000)
n = 20 * m1.block
w = array("i", [0] * n)
x = 12345
for i in range(n):  # white noise at about -12 dBFS from a fixed LCG: the same words every run
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    w[i] = ((x >> 8) - (1 << 22)) << 6
res = {"kernel": meter.KERNEL, "freq": machine.freq(), "samples": n, "native": [], "viper": []}
for r in range(ROUNDS):
    t0 = time.ticks_cpu()
    meter.process_blocks(w, 20, m1.st, m1.cfg, m1.sums, m1.acc)
    t1 = time.ticks_cpu()
    K.process_blocks(w, 20, m2.st, m2.cfg, m2.sums, m2.acc)
    t2 = time.ticks_cpu()
    res["native"].append(time.ticks_diff(t1, t0))
    res["viper"].append(time.ticks_diff(t2, t1))
res["same"] = m1.st == m2.st and m1.sums == m2.sums and m1.acc == m2.acc
print(repr(res))
'''


def test_process_blocks_cycles_on_the_board(port, board):
    """Times one call of process_blocks (20 blocks of 48 samples, as Meter.process is called) with
    time.ticks_cpu() (CPU cycles on the ESP32's Xtensa cores) for the kernel meter.py chose and for the viper kernel,
    checks that both end in the same state on the board, and compares the cycles per sample with the emulator's
    pipeline models (bench/esp32/model.json, written by `make bench-esp32`): measured within [0.8 × model A,
    1.5 × model B]. Needs the firmware deployed (test_deploy)."""
    import json
    from pathlib import Path

    from slm.mpremote_adapter import DeviceSession

    model = json.loads((Path(__file__).resolve().parent.parent / "bench" / "esp32" / "model.json").read_text())
    with DeviceSession(current_port(port), timeout=10.0) as session:
        session.stop_app()
        try:
            out = session.exec(KERNEL_TIMING.replace("ROUNDS", "7"), timeout=120, what="timing process_blocks")
        finally:
            session.restart_app()
    import ast

    res = ast.literal_eval(out.decode().strip().splitlines()[-1])
    assert res["same"], "the native and the viper kernel differ on the board"
    per = {k: sorted(res[k])[len(res[k]) // 2] / res["samples"] for k in ("native", "viper")}  # median cycles/sample
    share = {k: 100 * v * 48000 / 240e6 for k, v in per.items()}
    print(f"\n{board.name}: kernel {res['kernel']}, CPU {res['freq'] / 1e6:.0f} MHz; cycles/sample native "
          f"{per['native']:.0f} (model {model['native']['A']:.0f}-{model['native']['B']:.0f}), viper {per['viper']:.0f} "
          f"(model {model['viper']['A']:.0f}-{model['viper']['B']:.0f}); % of a 240 MHz core at 48 kHz: native "
          f"{share['native']:.1f}, viper {share['viper']:.1f}")
    if board.chip in ("esp32", "esp32s2", "esp32s3"):  # the models are the Xtensa LX6/LX7's
        assert res["kernel"] == "native", "stock firmware should load meter_fast.mpy"
        for k in ("native", "viper"):
            assert 0.8 * model[k]["A"] <= per[k] <= 1.5 * model[k]["B"], (k, per[k], model[k])
