"""Rewrite the windowed-ABI instructions in gcc's assembly output as .byte, for Debian's lx106 assembler.

Debian has no xtensa-esp32-elf toolchain; its gcc-xtensa-lx106 compiles for the ESP32's windowed ABI with
-mabi=windowed, but its assembler (configured for the ESP8266's core) rejects entry, retw and callx8. Their ESP32
encodings are written out here. Usage: xtensa_windowed.py IN.s OUT.s
"""
import re
import sys


def rewrite(line: str) -> str:
    s = line.strip()
    m = re.match(r"entry\s+(sp|a1),\s*(\d+)$", s)
    if m:
        n = int(m[2]) // 8
        if int(m[2]) % 8 or n >= 1 << 12:
            sys.exit(f"xtensa_windowed: unsupported frame size in: {s}")
        return f"\t.byte 0x36, {((n & 15) << 4) | 1:#x}, {n >> 4:#x}  /* {s} */\n"
    if s == "retw.n":
        return "\t.byte 0x1d, 0xf0  /* retw.n */\n"
    if s == "retw":
        return "\t.byte 0x90, 0x00, 0x00  /* retw */\n"
    m = re.match(r"callx8\s+a(\d+)$", s)
    if m:
        return f"\t.byte 0xe0, {int(m[1]):#x}, 0x00  /* {s} */\n"
    m = re.match(r"call8\s+(\S+)$", s)
    if m:  # a8 is free at a call8: it receives the return address
        return f"\tmovi\ta8, {m[1]}\n\t.byte 0xe0, 0x08, 0x00  /* callx8 a8 (was {s}) */\n"
    if re.match(r"(call4|call12|callx4|callx12|movsp)\b", s):
        sys.exit(f"xtensa_windowed: unsupported windowed instruction: {s}")
    return line


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        text = "".join(rewrite(line) for line in f)
    with open(sys.argv[2], "w") as f:
        f.write(text)
