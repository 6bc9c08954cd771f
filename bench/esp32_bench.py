"""ESP32 load of the meter, by executing its xtensawin machine code under qemu-xtensa: run as

    .venv/bin/python bench/esp32_bench.py          (or: make bench-esp32)

from the repository root. On the bench's signal (bench/bench_kernel.py's pink noise, 32-bit INMP441 words, chunks
of 20 blocks of 48 samples at 48 kHz) it

  1. runs meter.Meter on the MicroPython unix port and keeps its final state (the reference);
  2. compiles firmware/meter_kernel.py with mpy-cross -march=xtensawin, takes the viper functions' machine code
     out of the .mpy and runs process_blocks (which calls filter_block and log100) under qemu-xtensa
     (-cpu dc233c, windowed ABI) with a small runtime stand-in (bench/esp32/harness.c);
  3. runs the native kernel (firmware/natmod/meter_kernel_core.h, compiled as the native module is) the same way;
  4. checks both final states (filter state, block sums, every register and the histogram) word for word against
     the reference;
  5. counts the executed instructions per region from qemu's execution trace (-d in_asm,exec,nochain) and the
     cycles under two pipeline models: A (+1 per load whose result the next instruction uses, +2 per taken
     branch) and B (the ESP32's 7-stage pipeline: +2 per load-use, +3 per taken branch, +1 per mull used next);
  6. counts the I2S copy of machine.I2S.readinto per frame (bench/esp32/i2s_copy.c, restated from the port).

Needs qemu-user, gcc-xtensa-lx106 and binutils-xtensa-lx106 (Debian; for the ESP32-C3 part also
gcc-riscv64-unknown-elf and picolibc-riscv64-unknown-elf): installed with apt-get when missing and allowed (root,
--no-install not given); skipped with a message otherwise. docs/performance.md's "esp32" section is
rewritten with the figures (--no-doc skips that). Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import datetime as _dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "bench" / "esp32"
FIRMWARE = REPO / "firmware"
NATMOD = FIRMWARE / "natmod"
DOC = REPO / "docs" / "performance.md"
sys.path.insert(0, str(REPO / "bench"))

import bench_kernel as bk  # noqa: E402  (the signal and the tool lookup)

CHUNK_BLOCKS = 20
ESP32_HZ = 240e6
RATE = 48000
BOARD = "esp32-devkitc-inmp441"  # the signal's microphone: the kernel runs with this profile's equaliser, as a board
EQ_COST_SECONDS = 2.0  # signal for the equaliser's cost (native kernel without it, with one and with two sections)
COMMAND = ".venv/bin/python bench/esp32_bench.py"
DEBIAN_PACKAGES = ("qemu-user", "gcc-xtensa-lx106", "binutils-xtensa-lx106")
C3_PACKAGES = ("gcc-riscv64-unknown-elf", "picolibc-riscv64-unknown-elf")  # the C3 part only (skipped without)
TOOLS = ("qemu-xtensa", "xtensa-lx106-elf-gcc", "xtensa-lx106-elf-as", "xtensa-lx106-elf-ld", "xtensa-lx106-elf-nm")
GCC_WRAPPER = NATMOD / "toolchain" / "xtensa-esp32-elf-gcc"
# the native module's compile flags (py/dynruntime.mk for xtensawin plus firmware/natmod/Makefile's)
NATMOD_CFLAGS = ["-std=c99", "-Os", "-Wall", "-Werror", "-DNDEBUG", "-fpic", "-fno-common", "-U_FORTIFY_SOURCE",
                 "-fno-tree-loop-distribute-patterns", "-fwrapv"]
HARNESS_CFLAGS = ["-Os", "-ffreestanding", "-fno-builtin", "-nostdlib", "-mtext-section-literals"]
LOADS = ("l32i", "l32i.n", "l16ui", "l16si", "l8ui", "l32r")
MODELS = {"A": {"load_use": 1, "taken": 2, "mull_use": 0}, "B": {"load_use": 2, "taken": 3, "mull_use": 1}}


def log(msg: str) -> None:
    print(msg, flush=True)


def skip(msg: str) -> int:
    log(f"bench-esp32: skipped: {msg}")
    return 0


# -------------------------------------------------------------------------------------------------- tools


def ensure_tools(install: bool) -> str | None:
    """None when every tool is there (after installing the Debian packages if allowed), else why not."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    c3_missing = shutil.which("riscv64-unknown-elf-gcc") is None
    if (missing or c3_missing) and install and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = DEBIAN_PACKAGES + C3_PACKAGES
        log(f"installing {' '.join(packages)} with apt-get (missing: {', '.join(missing) or 'the C3 compiler'})")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-q", *packages]):
            subprocess.run(cmd, env=env, capture_output=True, text=True)
        missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (f"{', '.join(missing)} not found; install the Debian packages {' '.join(DEBIAN_PACKAGES)} "
                f"(apt-get install -y {' '.join(DEBIAN_PACKAGES)})")
    if bk.find_tool("mpy-cross") is None or bk.find_tool("micropython") is None:
        return "mpy-cross or the MicroPython unix port is missing from .venv (make install)"
    return None


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, **kw)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {err[-2000:]}")
    return proc


# ------------------------------------------------------------------------------------- reference (unix port)

REF_SCRIPT = r'''
import sys
sys.path.insert(0, FIRMWARE)
from array import array
import meter_kernel as K
import weighting_coeffs as W
import meter
m = meter.Meter(48000, eq=EQ)
f = open(OUT + "/init.bin", "wb")
for a in (m.cfg, m.st, m.sums, m.acc):
    f.write(array("i", [len(a)]))
    f.write(a)
f.write(array("i", [len(W.LOG_TABLE)]))
f.write(W.LOG_TABLE)
f.close()
words = array("i", open(WORDS, "rb").read())
chunk = m.block * CHUNK_BLOCKS
mv = memoryview(words)
for i in range(len(words) // chunk):
    K.process_blocks(mv[i * chunk:(i + 1) * chunk], CHUNK_BLOCKS, m.st, m.cfg, m.sums, m.acc)
f = open(OUT + "/final_ref.bin", "wb")
f.write(m.st)
f.write(m.sums)
f.write(m.acc)
f.close()
print(m.block, len(words) // chunk)
'''


def reference(tmp: Path, words_path: Path, eq: tuple[int, ...] | None) -> tuple[int, int]:
    script = tmp / "ref.py"
    script.write_text(f"FIRMWARE = {str(FIRMWARE)!r}\nOUT = {str(tmp)!r}\nWORDS = {str(words_path)!r}\n"
                      f"CHUNK_BLOCKS = {CHUNK_BLOCKS}\nEQ = {tuple(eq) if eq else None!r}\n" + REF_SCRIPT)
    out = run([bk.find_tool("micropython"), "-X", "heapsize=16M", str(script)], text=True).stdout.split()
    return int(out[0]), int(out[1])


def board_eq() -> tuple[int, ...] | None:
    """The equaliser the firmware gets from BOARD's profile at RATE (5 or 10 Q14 integers)."""
    from slm.boards import load_board

    return load_board(BOARD).eq_coeffs(RATE)


def prepare(tmp: Path, words: np.ndarray, eq: tuple[int, ...] | None) -> tuple[Path, bytes, dict]:
    """The reference run on the unix port and the emulated program's input (initial arrays, then the signal)."""
    tmp.mkdir(exist_ok=True)
    words_path = tmp / "words.bin"
    words.tofile(words_path)
    block, nchunks = reference(tmp, words_path, eq)
    info = {"block": block, "blocks": nchunks * CHUNK_BLOCKS, "samples": nchunks * CHUNK_BLOCKS * block}
    ref = (tmp / "final_ref.bin").read_bytes()
    stdin_path = tmp / "input.bin"
    with open(stdin_path, "wb") as f:
        f.write((tmp / "init.bin").read_bytes())
        f.write(np.array([nchunks, CHUNK_BLOCKS], dtype="<u4").tobytes())
        f.write(words[: info["samples"]].astype("<i4").tobytes())
    return stdin_path, ref, info


def eq_costs(tmp: Path, words: np.ndarray, elf: Path, eq: tuple[int, ...]) -> list[dict]:
    """The native filter loop's cost without the equaliser and with each of its sections, on the same signal."""
    variants = [("none", None)] + [(f"{k} section" + ("s" if k > 1 else ""), eq[: 5 * k])
                                   for k in range(1, len(eq) // 5 + 1)]
    syms = symbols(elf)
    out = []
    for i, (name, e) in enumerate(variants):
        stdin_path, ref, info = prepare(tmp / f"eq{i}", words, e)
        res, got = traced_run(elf, syms, stdin_path, tmp)
        n = info["samples"]
        fb = res["mk_filter_block"]
        out.append({"eq": name, "insns": fb["insns"] / n, "cA": fb["cycles_A"] / n, "cB": fb["cycles_B"] / n,
                    "same": compare_state(got, ref)["same"]})
        log(f"native mk_filter_block, equaliser {name}: {fb['insns'] / n:.1f} instructions/sample, "
            f"A {fb['cycles_A'] / n:.1f}, B {fb['cycles_B'] / n:.1f} cycles/sample; final state "
            f"{'identical' if out[-1]['same'] else 'DIFFERS'}")
    return out


# ------------------------------------------------------------------------------------- the viper machine code


class MpyReader:
    """Just enough of the .mpy v6 reader (MicroPython's tools/mpy-tool.py) to find native functions' code."""

    def __init__(self, data: bytes):
        self.d = data
        self.p = 0

    def byte(self) -> int:
        b = self.d[self.p]
        self.p += 1
        return b

    def uint(self) -> int:
        v = 0
        while True:
            b = self.byte()
            v = (v << 7) | (b & 0x7F)
            if not b & 0x80:
                return v

    def bytes(self, n: int) -> bytes:
        b = self.d[self.p:self.p + n]
        self.p += n
        return b


MP_CODE_BYTECODE, MP_CODE_NATIVE_PY, MP_CODE_NATIVE_VIPER, MP_CODE_NATIVE_ASM = 2, 3, 4, 5
SCOPE_VIPERRELOC, SCOPE_VIPERRODATA, SCOPE_VIPERBSS = 0x10, 0x20, 0x40


def kernel_functions() -> list[str]:
    tree = ast.parse((FIRMWARE / "meter_kernel.py").read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]


def read_mpy(data: bytes) -> tuple[list, list[dict]]:
    """(qstr names by index, [{kind, code, relocs, rodata}] of the native functions in definition order)."""
    r = MpyReader(data)
    hdr = r.bytes(4)
    if hdr[0] != ord("M") or hdr[1] != 6:
        raise ValueError("not a .mpy v6 file")
    qstrs: list = []
    n_qstr, n_obj = r.uint(), r.uint()
    for _ in range(n_qstr):
        ln = r.uint()
        qstrs.append(None if ln & 1 else r.bytes((ln >> 1) + 1)[:-1].decode())
    for _ in range(n_obj):
        t = r.byte()
        if t >= 5:
            ln = r.uint()
            r.bytes(ln + (1 if t in (5, 6) else 0))
    funcs: list[dict] = []

    def raw_code() -> None:
        kind_len = r.uint()
        kind = (kind_len & 3) + MP_CODE_BYTECODE
        has_children = (kind_len >> 2) & 1
        code = r.bytes(kind_len >> 3)
        if kind == MP_CODE_NATIVE_VIPER:
            flags = r.uint()
            rodata = r.uint() if flags & SCOPE_VIPERRODATA else 0
            if flags & SCOPE_VIPERBSS:
                r.uint()
            r.bytes(rodata)
            relocs = 0
            if flags & SCOPE_VIPERRELOC:
                while (op := r.byte()) != 0xFF:
                    relocs += 1
                    if op & 1:
                        r.uint()
                    op >>= 1
                    if op <= 5 and op & 1:
                        r.uint()
            funcs.append({"kind": kind, "code": code, "relocs": relocs, "rodata": rodata})
        elif kind != MP_CODE_BYTECODE:
            raise ValueError(f"unexpected raw code kind {kind}")
        if has_children:
            for _ in range(r.uint()):
                raw_code()

    raw_code()
    return qstrs, funcs


def viper_blobs(tmp: Path) -> tuple[dict, dict[str, int], str]:
    """Compile the kernel module for xtensawin; write blobs.S (its viper functions' machine code)."""
    mpy_cross = bk.find_tool("mpy-cross")
    version = run([mpy_cross, "--version"], text=True).stdout.strip()
    mpy = tmp / "meter_kernel.mpy"
    run([mpy_cross, "-march=xtensawin", "-o", str(mpy), str(FIRMWARE / "meter_kernel.py")], text=True)
    qstrs, funcs = read_mpy(mpy.read_bytes())
    names = kernel_functions()
    if len(funcs) != len(names):
        raise RuntimeError(f"{len(funcs)} native functions in the .mpy, {len(names)} in meter_kernel.py")
    sizes = {}
    lines = ["    .text"]
    for name, f in zip(names, funcs):
        if f["relocs"] or f["rodata"]:
            raise RuntimeError(f"{name}: relocations or rodata in the viper code: the stand-in cannot place it")
        (tmp / f"{name}.bin").write_bytes(f["code"])
        sizes[name] = len(f["code"])
        lines += ["    .align 4", f"    .global code_{name}", f"    .type code_{name}, @function",
                  f"code_{name}:", f'    .incbin "{tmp / (name + ".bin")}"', f"    .size code_{name}, {len(f['code'])}"]
    (tmp / "blobs.S").write_text("\n".join(lines) + "\n")
    q = {name: qstrs.index(name) for name in ("LOG_TABLE", "filter_block", "log100")}
    return sizes, q, version


def build(tmp: Path, qidx: dict[str, int]) -> dict[str, Path]:
    """run_viper.elf, run_native.elf and the I2S copy programs."""
    env = dict(os.environ, PYTHON=sys.executable)
    cc = [str(GCC_WRAPPER)]
    as_ = "xtensa-lx106-elf-as"
    ld = ["xtensa-lx106-elf-ld", "-static", "-Ttext=0x10000", "-e", "_start"]
    run([as_, str(HERE / "start.S"), "-o", str(tmp / "start.o")])
    run([as_, str(tmp / "blobs.S"), "-o", str(tmp / "blobs.o")])
    qdefs = [f"-DQ_LOG_TABLE={qidx['LOG_TABLE']}", f"-DQ_FILTER_BLOCK={qidx['filter_block']}",
             f"-DQ_LOG100={qidx['log100']}"]
    run(cc + HARNESS_CFLAGS + ["-DRUN_VIPER", *qdefs, "-c", str(HERE / "harness.c"), "-o", str(tmp / "hv.o")],
        env=env)
    run(cc + HARNESS_CFLAGS + ["-DRUN_NATIVE", "-c", str(HERE / "harness.c"), "-o", str(tmp / "hn.o")], env=env)
    run(cc + NATMOD_CFLAGS + ["-I", str(NATMOD), "-c", str(HERE / "core.c"), "-o", str(tmp / "core.o")], env=env)
    out = {"viper": tmp / "run_viper.elf", "native": tmp / "run_native.elf"}
    run(ld + [str(tmp / "start.o"), str(tmp / "hv.o"), str(tmp / "blobs.o"), "-o", str(out["viper"])])
    run(ld + [str(tmp / "start.o"), str(tmp / "hn.o"), str(tmp / "core.o"), "-o", str(out["native"])])
    for fmt, f_index in (("mono", 1), ("stereo", 3)):
        for opt in ("O2", "Os"):
            obj = tmp / f"i2s_{fmt}_{opt}.o"
            run(cc + [f"-{opt}", "-ffreestanding", "-fno-builtin", "-nostdlib", "-mtext-section-literals",
                      "-DFRAMES=960", f"-DF_INDEX={f_index}", "-c", str(HERE / "i2s_copy.c"), "-o", str(obj)], env=env)
            out[f"i2s_{fmt}_{opt}"] = tmp / f"i2s_{fmt}_{opt}.elf"
            run(ld + [str(tmp / "start.o"), str(obj), "-o", str(out[f"i2s_{fmt}_{opt}"])])
    return out


HARNESS_IO = {"main", "readn", "writen", "die", "setup_runtime"}


def group(name: str) -> str:
    """Which part of the count a function belongs to: the kernel's own functions by name, the stand-in's runtime
    entries as "runtime", the harness's input and output as "harness" (never counted)."""
    if name.startswith(("code_", "mk_")) or name == "copy_frames":
        return name
    return "harness" if name in HARNESS_IO else "runtime"


def shipped(elf: Path, mpy: Path) -> dict[str, bool]:
    """For each native kernel function in the emulator's ELF: are its bytes found verbatim in the .mpy we ship?"""
    sizes = {}
    for line in run(["xtensa-lx106-elf-nm", "-S", str(elf)], text=True).stdout.splitlines():
        p = line.split()
        if len(p) == 4 and p[3].startswith("mk_"):
            sizes[p[3]] = (int(p[0], 16), int(p[1], 16))
    head = run(["xtensa-lx106-elf-objdump", "-h", str(elf)], text=True).stdout
    sec = next(line.split() for line in head.splitlines() if line.split()[1:2] == [".text"])
    vma, off = int(sec[3], 16), int(sec[5], 16)
    data, blob = elf.read_bytes(), mpy.read_bytes()
    return {name: data[off + a - vma:off + a - vma + n] in blob for name, (a, n) in sorted(sizes.items())}


def symbols(elf: Path) -> list[tuple[str, int, int]]:
    """(group, start, end) of the sized functions in an ELF."""
    out = run(["xtensa-lx106-elf-nm", "-S", str(elf)], text=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].lower() == "t":
            a, n = int(parts[0], 16), int(parts[1], 16)
            syms.append((group(parts[3]), a, a + n))
    return syms


# ------------------------------------------------------------------------------------------- counting


IN_RE = re.compile(r"^0x([0-9a-f]+):\s+(\S+)\s*(.*)$")
TRACE_RE = re.compile(r"^Trace \d+: \S+ \[([0-9a-f]+)/([0-9a-f]+)/([0-9a-f]+)/([0-9a-f]+)\]")
SHORT = {"mov.n", "add.n", "addi.n", "movi.n", "l32i.n", "s32i.n", "ret.n", "retw.n", "nop.n", "beqz.n", "bnez.n"}
SRC_ONLY = ("s32i", "s16i", "s8i", "ssr", "ssl", "ssa8l", "ssa8b", "callx8", "jx", "wsr", "entry")


def _regs(args: str) -> list[str]:
    return re.findall(r"\ba(\d+)\b", args)


def _dst_src(op: str, args: str) -> tuple[str | None, list[str]]:
    r = _regs(args)
    if not r:
        return None, []
    if op.startswith(SRC_ONLY) or op.startswith("b"):
        return None, r
    return r[0], r[1:]


class TraceCounter:
    """Executed instructions per region and the events of the pipeline models (load-use, taken branch, mull-use),
    from a qemu ``-d in_asm,exec,nochain`` log read as it is written. Each translated block is summarised once
    (its counts per region and the pairs inside it); an execution then adds the summary and checks the pair across
    the boundary with the block executed before it."""

    def __init__(self, regions: list[tuple[str, int, int]], in_re: re.Pattern = None, pipeline: bool = True):
        self.regions = sorted(regions, key=lambda r: r[1])
        self.in_re = in_re or IN_RE
        self.pipeline = pipeline
        self.tbs: dict = {}
        self.insns = collections.Counter()
        self.events = collections.Counter()
        self.entries = collections.Counter()
        self._prev = None  # (op, dst) of the last instruction executed
        self._last = None  # (pc, op, size, region) of the last instruction executed

    def region(self, pc: int) -> str:
        for name, a, b in self.regions:
            if a <= pc < b:
                return name
        return "harness"

    def feed(self, lines) -> None:
        pending, cur = None, None
        in_re = self.in_re
        for line in lines:
            if line.startswith("IN:"):
                cur = []
                continue
            if cur is not None:
                m = in_re.match(line)
                if m:
                    cur.append((int(m[1], 16), m[2], m[3].strip()))
                    continue
                if not line.strip() and cur:
                    pending, cur = cur, None
                continue
            if line.startswith("Trace"):
                m = TRACE_RE.match(line)
                if not m:
                    continue
                key = (int(m[2], 16), m[3], m[4])
                tb = self.tbs.get(key)
                if tb is None:
                    if not pending or pending[0][0] != key[0]:
                        raise RuntimeError(f"trace: no translation logged for the block at 0x{key[0]:x}")
                    tb = self.tbs[key] = self._summarise(pending)
                    pending = None
                self._exec(tb)

    def _summarise(self, insns: list) -> dict:
        """Counts per region, the load-use and mull-use pairs inside the block, its first instruction's sources
        and region, its last instruction."""
        items = []
        for pc, op, args in insns:
            dst, srcs = _dst_src(op, args)
            size = 2 if op.endswith(".n") or op in SHORT else 3
            items.append((pc, op, dst, set(srcs), self.region(pc), size))
        counts = collections.Counter(it[4] for it in items)
        events = collections.Counter()
        entries = collections.Counter(it[4] for it in items if it[1] == "entry")
        for a, b in zip(items, items[1:]):
            kind = self._pair(a[1], a[2], b[3])
            if kind:
                events[b[4], kind] += 1
        first, last = items[0], items[-1]
        return {"counts": counts, "events": events, "entries": entries, "pc0": first[0], "srcs0": first[3],
                "rg0": first[4], "last": (last[0], last[1], last[5], last[4]), "prev": (last[1], last[2])}

    def _pair(self, op: str, dst: str | None, srcs: set) -> str | None:
        if not self.pipeline or dst is None or dst not in srcs:
            return None
        if op in LOADS:
            return "load_use"
        return "mull_use" if op == "mull" else None

    def _exec(self, tb: dict) -> None:
        if self._last is not None and self.pipeline:
            lpc, lop, lsize, lrg = self._last
            if tb["pc0"] != lpc + lsize and lop.startswith(("b", "j", "call", "ret", "loop")):
                self.events[lrg, "taken"] += 1
            kind = self._pair(self._prev[0], self._prev[1], tb["srcs0"])
            if kind:
                self.events[tb["rg0"], kind] += 1
        self.insns.update(tb["counts"])
        self.events.update(tb["events"])
        self.entries.update(tb["entries"])
        self._last = tb["last"]
        self._prev = tb["prev"]

    def result(self) -> dict:
        out = {}
        for rg, n in self.insns.items():
            ev = {k: self.events[rg, k] for k in ("load_use", "taken", "mull_use")}
            out[rg] = {"insns": n, **ev, "entries": self.entries[rg],
                       **{f"cycles_{m}": n + sum(p[k] * ev[k] for k in ev) for m, p in MODELS.items()}}
        return out


def traced_run(elf: Path, regions: list, stdin_path: Path, tmp: Path, qemu: tuple = ("qemu-xtensa", "-cpu", "dc233c"),
               counter: TraceCounter | None = None) -> tuple[dict, bytes]:
    """Run under qemu with the execution trace streamed through a FIFO into a TraceCounter."""
    fifo = tmp / "trace.fifo"
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)
    counter = counter or TraceCounter(regions)
    errors: list = []

    def reader() -> None:
        try:
            with open(fifo, errors="replace") as f:
                counter.feed(f)
        except Exception as e:  # reported after the run
            errors.append(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    with open(stdin_path, "rb") as inp:
        proc = subprocess.run([*qemu, "-d", "in_asm,exec,nochain", "-D", str(fifo), str(elf)], stdin=inp,
                              capture_output=True)
    t.join()
    if errors:
        raise errors[0]
    if proc.returncode != 0:
        raise RuntimeError(f"{elf.name} exited with {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}")
    return counter.result(), proc.stdout


def plain_run(elf: Path, stdin_path: Path) -> bytes:
    with open(stdin_path, "rb") as inp:
        proc = subprocess.run(["qemu-xtensa", "-cpu", "dc233c", str(elf)], stdin=inp, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{elf.name} exited with {proc.returncode}")
    return proc.stdout


def compare_state(got: bytes, ref: bytes) -> dict:
    g = np.frombuffer(got, dtype="<i4")
    r = np.frombuffer(ref, dtype="<i4")
    same = g.shape == r.shape and bool(np.array_equal(g, r))
    diff = [] if same or g.shape != r.shape else [int(i) for i in np.nonzero(g != r)[0][:8]]
    return {"same": same, "words": int(r.size), "diff_at": diff if g.shape == r.shape else ["size"]}


# ------------------------------------------------------------------------------------------------- report


def pct(cycles_per_sample: float) -> float:
    return 100.0 * cycles_per_sample * RATE / ESP32_HZ


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs; Linux {platform.release()}"


def tool_version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "?"


def write_doc(r: dict) -> None:
    L = ["## ESP32 load, executed under qemu-xtensa", "",
         "Generated by `bench/esp32_bench.py`; do not edit by hand, rerun the benchmark instead.", "",
         f"- Command: `{COMMAND}` from the repository root (the `make bench-esp32` target)",
         f"- Date: {r['date']}",
         f"- Machine: {r['machine']}",
         f"- Tools: {r['qemu']} (`qemu-xtensa -cpu dc233c`, user mode); {r['gcc']} with `-mabi=windowed` "
         f"(through `firmware/natmod/toolchain/xtensa-esp32-elf-gcc`); {r['mpy_cross']}",
         f"- Signal: bench/bench_kernel.py's pink noise at 75 dB SPL (INMP441 words), {r['seconds']:g} s = "
         f"{r['samples']:,} samples at 48 kHz, {r['blocks']:,} blocks of {r['block']}, in calls of "
         f"{CHUNK_BLOCKS} blocks (as the firmware calls `Meter.process`), with the `{BOARD}` profile's microphone "
         f"equaliser ({len(r['eq']) // 5 if r['eq'] else 0} biquad sections: `{list(r['eq']) if r['eq'] else None}`), as "
         "on a board",
         "", "### Results", "",
         "Instructions and cycles per audio sample at 48 kHz; % of one 240 MHz core = cycles × 48,000 / 240 MHz. "
         "Model A: +1 cycle per load whose result the next instruction uses, +2 per taken branch. Model B (the "
         "ESP32's 7-stage pipeline): +2 per load-use, +3 per taken branch, +1 per `mull` whose result the next "
         "instruction uses.", "",
         "| # | code (executed machine code) | instructions/sample | cycles/sample A / B | % of a core A / B | "
         "final state = unix port |",
         "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        L.append(f"| {row['id']} | {row['what']} | {row['insns']:.1f} | {row['cA']:.0f} / {row['cB']:.0f} | "
                 f"{pct(row['cA']):.1f} / {pct(row['cB']):.1f} | {row['check']} |")
    L += ["", f"Goal: the whole pipeline (kernel + I2S copy) ≤ 10 % of one core under both models: viper "
              f"**{r['viper_total_A']:.1f} / {r['viper_total_B']:.1f} %** ({'met' if r['viper_met'] else 'not met'}), "
              f"native kernel **{r['native_total_A']:.1f} / {r['native_total_B']:.1f} %** "
              f"({'met' if r['native_met'] else 'not met'}).", "",
          "### The microphone equaliser's cost", "",
          f"The native `mk_filter_block` alone on the first {EQ_COST_SECONDS:g} s of the signal, without the "
          "equaliser and with each of its sections (every final state equal to the unix port's):", "",
          "| equaliser | instructions/sample | cycles/sample A / B | % of a core A / B | more than without |",
          "|---|---|---|---|---|"]
    base = r["eq_costs"][0] if r["eq_costs"] else None
    for c in r["eq_costs"]:
        L.append(f"| {c['eq']} | {c['insns']:.1f} | {c['cA']:.0f} / {c['cB']:.0f} | {pct(c['cA']):.2f} / "
                 f"{pct(c['cB']):.2f} | {c['insns'] - base['insns']:+.1f} instructions, "
                 f"{pct(c['cB']) - pct(base['cB']):+.2f} % (B) |")
    L += ["",
          "### Method and what stays an estimate", "",
          f"1. The reference: `meter.Meter(48000, eq=...)` on the MicroPython unix port (`.venv/bin/micropython`) runs "
          f"`meter_kernel.process_blocks` over the signal; its initial and final state (`st`, `sums`, `acc` with "
          f"the histogram: {r['words']:,} int32 words) are written out.",
          f"2. Viper: `mpy-cross -march=xtensawin firmware/meter_kernel.py`; the machine code of each viper "
          f"function is read out of the .mpy (no relocations, no rodata): {r['viper_sizes']}. "
          "`bench/esp32/harness.c` is a runtime stand-in (MicroPython's object layout on a 32-bit port, the "
          "native function table with the entries the kernel calls) that calls `process_blocks` once per chunk, "
          "exactly as `Meter.process` does; `process_blocks` calls `filter_block` per block and `log100` per "
          "histogram sample through the stand-in's `load_global` and `call_function_n_kw`.",
          "3. Native: `firmware/natmod/meter_kernel_core.h` (the kernel of the `meter_fast` native module) compiled "
          "with the module's own flags (py/dynruntime.mk for xtensawin: `-Os -fpic`, plus `-fwrapv "
          "-fno-tree-loop-distribute-patterns`) by the same compiler that builds `meter_fast_xtensawin.mpy`, "
          "called once per chunk as `meter_fast.process_blocks` is. Found byte for byte in the committed "
          "`firmware/natmod/meter_fast_xtensawin.mpy`: " + ", ".join(f"`{k}` {'yes' if v else 'no'}"
                                                                  for k, v in r["shipped"].items())
          + " (a function that loads constants from a literal pool or calls another is placed differently in the "
          "module, so its `l32r`/call offsets differ while the instructions are the same source and flags).",
          "4. Both programs run under `qemu-xtensa -cpu dc233c` (an LX with the windowed ABI, like the ESP32's "
          "LX6); the final state each writes is compared with the reference word for word (the column on the "
          "right). The execution trace (`-d in_asm,exec,nochain`) is read as it is written and every executed "
          "instruction is counted in the function it belongs to; a taken branch is a block that does not "
          "continue at the next address; load-use and mull-use pairs are counted within the executed sequence.",
          "5. The I2S copy: `machine.I2S.readinto` on the esp32 port (v1.28.0 `fill_appbuf_from_dma`) copies "
          "the kept bytes of each 8-byte DMA frame one by one through a 240-byte transform buffer; "
          "`bench/esp32/i2s_copy.c` restates that loop, and its instructions per frame are counted the same way "
          f"(-O2 / -Os: {r['i2s_range']}). One frame per audio sample.",
          "6. Estimates, not measurements: cycles per instruction (the two models bracket the LX6's interlocks; "
          "instruction fetch from IRAM, where the port puts native code from .mpy files, and data in internal "
          "RAM are assumed to take no wait states; the flash cache is not modelled); MicroPython's own call path "
          "(the bytecode of `Meter.process`, `mp_call_function_n_kw`, argument conversion) is represented by the "
          f"stand-in ({r['runtime_note']}); the native module's argument unpacking (six `mp_get_buffer` calls "
          f"per call of 960 samples, well under 1 instruction per sample) is not executed here; ESP-IDF's I2S driver work (DMA interrupts, the queue, "
          "`i2s_channel_read`'s copy from DMA memory) is not included; the stand-in's floor division (used by "
          "`log100` and the histogram bin every 10 blocks) is a shift-subtract loop where the port has a divide "
          "instruction. `tests/test_hardware.py::test_process_blocks_cycles_on_the_board` times `process_blocks` "
          "with `time.ticks_cpu()` on a real board for the comparison with these models.",
          "7. Why a dynamic native module (C) and not xtensa assembly assembled by mpy-cross: it is MicroPython's "
          "documented way to load compiled code into stock firmware; the same source builds for the ESP32-C3's "
          "rv32imc (below), which an xtensa kernel cannot serve, and for x64, so the unix port loads it and the "
          "tests check it word for word against the viper kernel and take the firmware's selection path for real; "
          "and it covers the per-block work as well as the per-sample loop. The price: the prototype's hand-written "
          "assembly loop executed 206.5 instructions per sample (EQ off only, before the wrapped-sample check was "
          "added), the C loop about 10 % more. `firmware/natmod/README.md` tells how it is built.",
          "", "### Per-region counts", "", "| run | region | instructions/sample | load-use | taken | mull-use |",
          "|---|---|---|---|---|---|"]
    for run_name, regs in r["regions"].items():
        for rg, v in sorted(regs.items(), key=lambda kv: -kv[1]["insns"]):
            n = r["samples"] if not run_name.startswith("i2s") else r["i2s_frames"]
            L.append(f"| {run_name} | `{rg}` | {v['insns'] / n:.2f} | {v['load_use'] / n:.2f} | "
                     f"{v['taken'] / n:.2f} | {v['mull_use'] / n:.2f} |")
    L += ["", "### ESP32-C3 (rv32imc), estimated", "", r["c3_note"], "",
          "### Reproduce", "", "```",
          f"apt-get install -y {' '.join(DEBIAN_PACKAGES + C3_PACKAGES)}   # the benchmark does this itself as root",
          COMMAND + "   # --seconds S, --no-doc, --keep DIR, --no-install", "```", ""]
    from doc_sections import replace_section

    replace_section(DOC, "esp32", "\n".join(L))


# --------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="signal length (default 10)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    ap.add_argument("--keep", metavar="DIR", help="write the generated files into DIR and keep them")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get")
    args = ap.parse_args(argv)
    if args.seconds <= 0:
        print("esp32_bench: --seconds must be positive", file=sys.stderr)
        return 2
    why = ensure_tools(not args.no_install)
    if why:
        return skip(why)
    if args.keep:
        tmp = Path(args.keep).resolve()
        tmp.mkdir(parents=True, exist_ok=True)
        ctx = None
    else:
        ctx = tempfile.TemporaryDirectory(prefix="slm-esp32-")
        tmp = Path(ctx.name)
    try:
        return measure(args, tmp)
    finally:
        if ctx is not None:
            ctx.cleanup()


def measure(args, tmp: Path) -> int:
    r: dict = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
               "seconds": args.seconds, "qemu": tool_version(["qemu-xtensa", "--version"]),
               "gcc": tool_version(["xtensa-lx106-elf-gcc", "--version"])}
    words = bk.make_signal(args.seconds)
    eq = board_eq()
    r["eq"] = eq
    stdin_path, ref, info = prepare(tmp, words, eq)
    r.update(info)
    r["words"] = len(ref) // 4
    log(f"reference (unix port): {r['samples']:,} samples, {r['blocks'] // CHUNK_BLOCKS} calls of {CHUNK_BLOCKS} "
        f"blocks, {BOARD}'s equaliser ({len(eq) // 5 if eq else 0} sections)")
    sizes, qidx, r["mpy_cross"] = viper_blobs(tmp)
    r["viper_sizes"] = ", ".join(f"`{k}` {v:,} B" for k, v in sizes.items())
    elfs = build(tmp, qidx)
    n = r["samples"]
    runs = {}
    checks = {}
    for name in ("viper", "native"):
        syms = symbols(elfs[name])
        res, out = traced_run(elfs[name], syms, stdin_path, tmp)
        checks[name] = compare_state(out, ref)
        runs[name] = res
        tot = sum(v["insns"] for v in res.values())
        log(f"{name}: {tot / n:.1f} instructions/sample in all; final state "
            f"{'identical' if checks[name]['same'] else 'DIFFERS at ' + str(checks[name]['diff_at'])} "
            f"({checks[name]['words']} words)")
        for rg, v in sorted(res.items(), key=lambda kv: -kv[1]["insns"]):
            log(f"   {rg:22s} {v['insns'] / n:8.2f}/sample  A {v['cycles_A'] / n:8.1f}  B {v['cycles_B'] / n:8.1f}"
                f"  calls {v['entries']}")
    r["shipped"] = shipped(elfs["native"], NATMOD / "meter_fast_xtensawin.mpy")
    log(f"native functions found byte for byte in meter_fast_xtensawin.mpy: {r['shipped']}")
    i2s = {}
    frames = 960
    for key in [k for k in elfs if k.startswith("i2s_")]:
        syms = symbols(elfs[key])
        res, _ = traced_run(elfs[key], syms, Path(os.devnull), tmp)
        i2s[key] = res.get("copy_frames")
        runs[key] = {"copy_frames": res["copy_frames"]}
        v = res["copy_frames"]
        log(f"{key}: {v['insns'] / frames:.1f} instructions/frame, A {v['cycles_A'] / frames:.1f}, "
            f"B {v['cycles_B'] / frames:.1f} cycles/frame")
    r["i2s_frames"] = frames
    mono = [i2s["i2s_mono_O2"], i2s["i2s_mono_Os"]]
    r["i2s_range"] = " / ".join(f"{v['insns'] / frames:.1f}" for v in mono) + " instructions per frame (mono, " \
        "32 bits), " + " / ".join(f"{i2s[k]['insns'] / frames:.1f}" for k in ("i2s_stereo_O2", "i2s_stereo_Os")) \
        + " (stereo)"
    i2s_worst = max(mono, key=lambda v: v["cycles_B"])

    def per(res: dict, keys=None) -> tuple[float, float, float]:
        sel = [v for k, v in res.items() if k != "harness" and (keys is None or k in keys)]
        return (sum(v["insns"] for v in sel) / n, sum(v["cycles_A"] for v in sel) / n,
                sum(v["cycles_B"] for v in sel) / n)

    def check(name: str) -> str:
        c = checks[name]
        return f"identical ({c['words']:,} words)" if c["same"] else f"**differs** at {c['diff_at']}"

    rows = []
    v = runs["viper"]
    for rid, what, keys in (("v1", "viper `filter_block` (loop and call)", ["code_filter_block"]),
                            ("v2", "viper `process_blocks` per-block work", ["code_process_blocks"]),
                            ("v3", "viper `log100` (every 10 blocks)", ["code_log100"]),
                            ("v4", "runtime stand-in (calls, argument conversion, floor division)", ["runtime"])):
        i, a, b = per(v, keys)
        rows.append({"id": rid, "what": what, "insns": i, "cA": a, "cB": b, "check": ""})
    i, a, b = per(v)
    rows.append({"id": "**V**", "what": "**viper kernel, all** (`meter_kernel.process_blocks`)", "insns": i, "cA": a,
                 "cB": b, "check": check("viper")})
    vt = (a, b)
    nv = runs["native"]
    for rid, what, keys in (("n1", "native `mk_filter_block`", ["mk_filter_block"]),
                            ("n2", "native `mk_process_blocks` per-block work", ["mk_process_blocks"]),
                            ("n3", "native `mk_log100` and `mk_udiv` (histogram, every 10 blocks)", ["mk_log100", "mk_udiv", "runtime"])):
        i, a, b = per(nv, keys)
        rows.append({"id": rid, "what": what, "insns": i, "cA": a, "cB": b, "check": ""})
    i, a, b = per(nv)
    rows.append({"id": "**N**", "what": "**native kernel, all** (`meter_fast.process_blocks`)", "insns": i, "cA": a,
                 "cB": b, "check": check("native")})
    nt = (a, b)
    rows.append({"id": "i", "what": "I2S copy in `machine.I2S.readinto`, mono 32-bit frames (worse of -O2/-Os)",
                 "insns": i2s_worst["insns"] / frames, "cA": i2s_worst["cycles_A"] / frames,
                 "cB": i2s_worst["cycles_B"] / frames, "check": ""})
    ia, ib = i2s_worst["cycles_A"] / frames, i2s_worst["cycles_B"] / frames
    r["rows"] = rows
    r["viper_total_A"], r["viper_total_B"] = pct(vt[0] + ia), pct(vt[1] + ib)
    r["native_total_A"], r["native_total_B"] = pct(nt[0] + ia), pct(nt[1] + ib)
    r["viper_met"] = max(r["viper_total_A"], r["viper_total_B"]) <= 10 and checks["viper"]["same"]
    r["native_met"] = max(r["native_total_A"], r["native_total_B"]) <= 10 and checks["native"]["same"]
    rt = per(v, ["runtime"])[0]
    r["runtime_note"] = f"{rt:.1f} instructions/sample here"
    r["regions"] = {k: v for k, v in runs.items()}
    r["eq_costs"] = eq_costs(tmp, words[: int(EQ_COST_SECONDS * RATE)], elfs["native"], eq) if eq else []
    c3 = c3_run(tmp, stdin_path, ref, n)
    r["c3_note"] = c3_note(c3)
    log(f"whole pipeline (kernel + I2S copy), % of a 240 MHz core, model A / B: viper {r['viper_total_A']:.1f} / "
        f"{r['viper_total_B']:.1f}, native {r['native_total_A']:.1f} / {r['native_total_B']:.1f} (goal <= 10)")
    log(r["c3_note"])
    if not args.no_doc:
        write_doc(r)
        log(f"wrote {DOC.relative_to(REPO)}")
        model = {"source": f"{COMMAND}, {r['date']}", "unit": "cycles per sample of process_blocks, 48 kHz",
                 "viper": {"A": vt[0], "B": vt[1]}, "native": {"A": nt[0], "B": nt[1]},
                 "i2s_per_frame": {"A": ia, "B": ib}}
        (HERE / "model.json").write_text(json.dumps(model, indent=1) + "\n")
        log(f"wrote {(HERE / 'model.json').relative_to(REPO)} (read by tests/test_hardware.py)")
    return 0 if checks["viper"]["same"] and checks["native"]["same"] and all(c["same"] for c in r["eq_costs"]) else 1


RV_IN_RE = re.compile(r"^0x([0-9a-f]+):\s+[0-9a-f]+\s+(\S+)\s*(.*)$")
RV_CC = "riscv64-unknown-elf-gcc"
RV_FLAGS = ["-march=rv32imac", "-mabi=ilp32", "-mno-relax"]  # py/dynruntime.mk's for rv32imc
C3_HZ = 160e6


def c3_run(tmp: Path, stdin_path: Path, ref: bytes, samples: int) -> dict | None:
    """The native kernel and the I2S copy compiled for rv32 (the ESP32-C3) as the rv32imc native module is, executed
    under qemu-riscv32: instructions per sample and the final state. None when the tools are missing."""
    if not all(shutil.which(t) for t in (RV_CC, "qemu-riscv32", "riscv64-unknown-elf-nm", "riscv64-unknown-elf-ld")):
        return None
    specs = run([RV_CC, "--print-file-name=picolibc.specs"], text=True).stdout.strip()
    rv_flags = RV_FLAGS + ([f"-specs={specs}"] if specs != "picolibc.specs" else [])  # as py/dynruntime.mk does
    cc = [RV_CC, *rv_flags]
    ld = ["riscv64-unknown-elf-ld", "-m", "elf32lriscv", "-static", "-Ttext=0x10000", "-e", "_start"]
    base = ["-Os", "-ffreestanding", "-fno-builtin", "-nostdlib"]
    run(cc + ["-c", str(HERE / "start_rv32.S"), "-o", str(tmp / "rv_start.o")])
    run(cc + base + ["-DRUN_NATIVE", "-c", str(HERE / "harness.c"), "-o", str(tmp / "rv_h.o")])
    run(cc + NATMOD_CFLAGS + ["-I", str(NATMOD), "-c", str(HERE / "core.c"), "-o", str(tmp / "rv_core.o")])
    run(ld + [str(tmp / "rv_start.o"), str(tmp / "rv_h.o"), str(tmp / "rv_core.o"), "-o", str(tmp / "rv.elf")])
    run(cc + ["-O2"] + base[1:] + ["-DFRAMES=960", "-DF_INDEX=1", "-c", str(HERE / "i2s_copy.c"), "-o",
                                   str(tmp / "rv_i2s.o")])
    run(ld + [str(tmp / "rv_start.o"), str(tmp / "rv_i2s.o"), "-o", str(tmp / "rv_i2s.elf")])

    def syms(elf: Path) -> list:
        out = run(["riscv64-unknown-elf-nm", "-S", str(elf)], text=True).stdout
        return [(group(p[3]), int(p[0], 16), int(p[0], 16) + int(p[1], 16))
                for p in (line.split() for line in out.splitlines()) if len(p) == 4 and p[2].lower() == "t"]

    qemu = ("qemu-riscv32",)
    res, out = traced_run(tmp / "rv.elf", [], stdin_path, tmp, qemu,
                          TraceCounter(syms(tmp / "rv.elf"), RV_IN_RE, pipeline=False))
    i2s, _ = traced_run(tmp / "rv_i2s.elf", [], Path(os.devnull), tmp, qemu,
                        TraceCounter(syms(tmp / "rv_i2s.elf"), RV_IN_RE, pipeline=False))
    kernel = sum(v["insns"] for k, v in res.items() if k != "harness") / samples
    return {"kernel": kernel, "i2s": i2s["copy_frames"]["insns"] / 960, "check": compare_state(out, ref),
            "gcc": tool_version([RV_CC, "--version"])}


def c3_note(c3: dict | None) -> str:
    if c3 is None:
        return (f"Not run: {RV_CC}, picolibc-riscv64-unknown-elf or qemu-riscv32 (qemu-user) is missing.")
    total = c3["kernel"] + c3["i2s"]
    lo, hi = (100 * total * cpi * RATE / C3_HZ for cpi in (1.0, 1.5))
    same = "identical to the unix port's" if c3["check"]["same"] else f"**differs** at {c3['check']['diff_at']}"
    return (f"The same kernel source compiled as the rv32imc native module is ({c3['gcc']}, "
            f"{' '.join(RV_FLAGS)} `-Os -fpic`), executed under `qemu-riscv32` on the same signal: "
            f"**{c3['kernel']:.1f} instructions per sample** (final state {same}), and the I2S copy loop "
            f"{c3['i2s']:.1f} per frame (-O2). The C3's single 160 MHz core has no published pipeline model here; "
            f"at 1.0–1.5 cycles per instruction (an estimate) the whole pipeline takes **{lo:.1f}–{hi:.1f} %** "
            f"of it at 48 kHz. The C3 runs the viper kernel (rv32imc) when the native module is missing.")


if __name__ == "__main__":
    sys.exit(main())
