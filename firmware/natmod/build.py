"""Build the native kernel (meter_fast.c) for every architecture the firmware runs on, as meter_fast_<arch>.mpy.

    python firmware/natmod/build.py --mpy-dir DIR [--arch x64,xtensawin,rv32imc] [--out DIR]

DIR is a MicroPython v1.28.0 source tree (py/dynruntime.mk, py/*.h, tools/mpy_ld.py, tools/ar_util.py,
tools/mpy-tool.py); pyelftools must be importable by this Python. Compilers: gcc (x64), Debian's gcc-xtensa-lx106
through toolchain/xtensa-esp32-elf-gcc (xtensawin), Debian's gcc-riscv64-unknown-elf with picolibc (rv32imc).
The same sources and tools give the same bytes (tests/test_fast_kernel.py rebuilds and compares when it can).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHS = ("x64", "xtensawin", "rv32imc")
COMPILERS = {"x64": "gcc", "xtensawin": "xtensa-lx106-elf-gcc", "rv32imc": "riscv64-unknown-elf-gcc"}
SOURCES = ("Makefile", "meter_fast.c", "meter_kernel_core.h", "log_table.h")
MPY_VERSION = "v1.28.0"


def missing_tools(arch: str, mpy_dir: Path | None) -> str | None:
    """Why ``arch`` cannot be built here, or None."""
    if mpy_dir is None or not (mpy_dir / "py" / "dynruntime.mk").exists():
        return f"no MicroPython {MPY_VERSION} source tree (py/dynruntime.mk) given"
    try:
        import elftools  # noqa: F401
    except ImportError:
        return "pyelftools is not installed"
    if shutil.which(COMPILERS[arch]) is None:
        return f"{COMPILERS[arch]} is not installed"
    return None


def build(arch: str, mpy_dir: Path, out: Path) -> Path:
    """Build in a scratch copy of the sources (no build/ left behind); returns the .mpy written to ``out``."""
    with tempfile.TemporaryDirectory(prefix="meter-fast-") as tmp:
        work = Path(tmp) / "natmod"
        work.mkdir()
        for name in SOURCES:
            shutil.copy(HERE / name, work / name)
        env = dict(os.environ, PATH=f"{HERE / 'toolchain'}{os.pathsep}{os.environ.get('PATH', '')}",
                   PYTHON=sys.executable, SOURCE_DATE_EPOCH="0")
        proc = subprocess.run(["make", f"ARCH={arch}", f"MPY_DIR={mpy_dir}", f"PYTHON={sys.executable}"],
                              cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building meter_fast for {arch} failed:\n{proc.stdout}{proc.stderr}")
        dst = out / f"meter_fast_{arch}.mpy"
        shutil.copy(work / "meter_fast.mpy", dst)
        return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mpy-dir", type=Path, required=True, help=f"MicroPython {MPY_VERSION} source tree")
    ap.add_argument("--arch", default=",".join(ARCHS), help="comma-separated architectures (default: all)")
    ap.add_argument("--out", type=Path, default=HERE, help="where meter_fast_<arch>.mpy go (default: here)")
    args = ap.parse_args(argv)
    archs = [a for a in args.arch.split(",") if a]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        print(f"build.py: unknown architecture {unknown[0]} (one of {', '.join(ARCHS)})", file=sys.stderr)
        return 2
    mpy_dir = args.mpy_dir.resolve()
    failed = 0
    for arch in archs:
        why = missing_tools(arch, mpy_dir)
        if why:
            print(f"build.py: {arch}: {why}", file=sys.stderr)
            failed = 1
            continue
        try:
            path = build(arch, mpy_dir, args.out)
        except RuntimeError as e:
            print(f"build.py: {e}", file=sys.stderr)
            failed = 1
            continue
        print(f"{path.name}: {path.stat().st_size} bytes")
    return failed


if __name__ == "__main__":
    sys.exit(main())
