"""The native kernel (firmware/natmod, the ``meter_fast`` dynamic native module) computes what the viper kernel
computes, word for word, and firmware/meter.py takes it only when it loads and fits, else keeps the viper kernel.

On the unix port (x64) the committed ``meter_fast_x64.mpy`` is loaded for real: its state after every call is
compared with the viper kernel's (every filter state word, block sum, register and histogram bin; every rate; EQ on
and off; shifted inputs) on the integer model's worst-case and random inputs, and the whole firmware runs with it
against the bit-exact integer model (tests/test_integer_model.py's comparison). The xtensawin and rv32imc builds
are the same C source; they are checked by their headers here, rebuilt and compared byte for byte when a MicroPython
source tree and the cross compilers are there (SLM_MICROPYTHON_SRC), and executed under qemu-xtensa by
``make bench-esp32``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slm.firmware_engine import micropython_binary
from slm.resources import firmware_dir
from slm.weighting_design import BLOCK_SAMPLES, SAMPLE_RATES
from tests.test_integer_model import EQ_PEAKING, EQ_TWO, FULL, MIN, compare, to_words

NATMOD = firmware_dir() / "natmod"
ARCH_IDS = {"x64": 2, "xtensawin": 10, "rv32imc": 11}

pytestmark = pytest.mark.micropython


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory) -> Path:
    """A folder holding the x64 native kernel under the name the firmware imports."""
    d = tmp_path_factory.mktemp("native")
    shutil.copy(NATMOD / "meter_fast_x64.mpy", d / "meter_fast.mpy")
    return d


def run_mp(script: str, path_dir: Path | None, tmp_path: Path, timeout: float = 120) -> str:
    """Run a script on the unix port with firmware/ and then ``path_dir`` on sys.path."""
    f = tmp_path / "script.py"
    f.write_text(script)
    env = dict(os.environ, MICROPYPATH=str(firmware_dir()) + ("" if path_dir is None else f":{path_dir}"))
    proc = subprocess.run([micropython_binary(), "-X", "heapsize=32M", str(f)], cwd=firmware_dir(), env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# --- the committed builds -----------------------------------------------------------------------------------------

def test_log_table_header_is_the_firmware_table():
    gen = _load("gen_log_table", NATMOD / "gen_log_table.py")
    assert (NATMOD / "log_table.h").read_text() == gen.header()


@pytest.mark.parametrize("arch", sorted(ARCH_IDS))
def test_committed_native_kernels_are_mpy_6_3_for_their_architecture(arch):
    data = (NATMOD / f"meter_fast_{arch}.mpy").read_bytes()
    assert data[:2] == b"M\x06" and data[2] >> 2 == ARCH_IDS[arch] and data[2] & 3 == 3


@pytest.mark.parametrize("arch", sorted(ARCH_IDS))
def test_committed_native_kernels_are_what_the_sources_build(arch, tmp_path):
    build = _load("natmod_build", NATMOD / "build.py")
    src = os.environ.get("SLM_MICROPYTHON_SRC")
    why = build.missing_tools(arch, Path(src) if src else None)
    if why:
        pytest.skip(f"cannot build the native kernel for {arch} here: {why} (set SLM_MICROPYTHON_SRC to a "
                    f"MicroPython {build.MPY_VERSION} tree)")
    built = build.build(arch, Path(src).resolve(), tmp_path)
    assert built.read_bytes() == (NATMOD / f"meter_fast_{arch}.mpy").read_bytes()


# --- native = viper, word for word ---------------------------------------------------------------------------------

COMPARE_SCRIPT = r'''
import sys
from array import array
import meter, meter_kernel as K, meter_fast as F
assert meter.KERNEL == "native", meter.KERNEL
f = open(WORDS, "rb")
words = array("i", f.read())
f.close()
m1 = meter.Meter(RATE, eq=EQ, input_shift=SHIFT)
m2 = meter.Meter(RATE, eq=EQ, input_shift=SHIFT)
block = m1.block
pos = 0
calls = 0
diffs = 0
mv = memoryview(words)
while pos + block <= len(words):
    nb = min(CALL_BLOCKS, (len(words) - pos) // block)
    part = mv[pos:pos + nb * block]
    K.process_blocks(part, nb, m1.st, m1.cfg, m1.sums, m1.acc)
    F.process_blocks(part, nb, m2.st, m2.cfg, m2.sums, m2.acc)
    pos += nb * block
    calls += 1
    for a, b in ((m1.st, m2.st), (m1.sums, m2.sums), (m1.acc, m2.acc)):
        for i in range(len(a)):
            if a[i] != b[i]:
                diffs += 1
                if diffs < 5:
                    print("DIFF call", calls, "word", i, a[i], b[i])
    if calls % CLOSE_EVERY == 0:
        r1 = m1.close_interval()
        r2 = m2.close_interval()
        if r1 != r2:
            diffs += 1
            print("DIFF interval", r1, r2)
# filter_block and log100 alone, from the same state
s1 = array("i", m1.st); s2 = array("i", m1.st); b1 = array("i", m1.sums); b2 = array("i", m1.sums)
nf = min(2 * block, len(words) - 3)
K.filter_block(0, 0, words, 3, nf, s1, m1.cfg, b1)
F.filter_block(0, 0, words, 3, nf, s2, m1.cfg, b2)
if s1 != s2 or b1 != b2:
    diffs += 1
    print("DIFF filter_block")
for off in (K.EF, K.ES):
    if K.log100(m1.acc, off) != F.log100(m1.acc, off):
        diffs += 1
        print("DIFF log100", off)
print("RESULT", calls, diffs, m1.acc[K.BLOCKS_RUN], m1.acc[K.OVERLOADS], sum(m1.total_hist), int(m1.totals_raw["smin"] is not None))
'''


def native_vs_viper(words: np.ndarray, rate: int, tmp_path: Path, native_dir: Path, eq=None, shift: int = 10,
                    call_blocks: int = 20, close_every: int = 25) -> dict:
    path = tmp_path / "words.bin"
    np.asarray(words, dtype="<i4").tofile(path)
    script = (f"WORDS = {str(path)!r}\nRATE = {rate}\nEQ = {tuple(eq) if eq else None!r}\nSHIFT = {shift}\n"
              f"CALL_BLOCKS = {call_blocks}\nCLOSE_EVERY = {close_every}\n" + COMPARE_SCRIPT)
    out = run_mp(script, native_dir, tmp_path)
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    calls, diffs, run, overloads, hist, smin = (int(v) for v in line.split()[1:])
    assert diffs == 0, out
    return {"calls": calls, "blocks_run": run, "overloads": overloads, "hist": hist, "smin": smin}


def sine(rate: int, f: float, seconds: float, amplitude: float = FULL) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * f * t)).astype(np.int64)


@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize("eq", [None, EQ_PEAKING, EQ_TWO], ids=["no-eq", "eq", "eq2"])
def test_native_equals_viper_on_noise_with_every_statistic(rate, eq, tmp_path, native_dir):
    """Six seconds of loud noise in calls of 20 blocks, intervals closed every 25 calls: past the F and S settling,
    so the min/max, percentile histogram and under-range paths all run."""
    rng = np.random.default_rng(rate)
    s = np.clip(np.round(rng.standard_normal(6 * rate) * 2**20 * np.repeat(rng.uniform(0.001, 1.0, 60), rate // 10)),
                MIN, FULL).astype(np.int64)
    r = native_vs_viper(to_words(s, rate), rate, tmp_path, native_dir, eq=eq)
    assert r["hist"] > 0 and r["smin"] == 1 and r["blocks_run"] == 6 * rate // BLOCK_SAMPLES[rate]


@pytest.mark.parametrize("rate", SAMPLE_RATES)
def test_native_equals_viper_on_worst_cases(rate, tmp_path, native_dir):
    """Full-scale alternation, full-scale DC of both signs, a full-scale sine at the top of the band, silence."""
    n = rate // 2
    parts = [np.where(np.arange(n) % 2 == 0, FULL, MIN), np.full(n, FULL), np.full(n, MIN), sine(rate, 0.45 * rate, 0.5),
             np.zeros(n, dtype=np.int64), sine(rate, 20.0, 0.5)]
    r = native_vs_viper(to_words(np.concatenate(parts)), rate, tmp_path, native_dir, call_blocks=7, close_every=1000)
    assert r["overloads"] > 0


@pytest.mark.parametrize("shift", [11, 12, 16])
def test_native_equals_viper_on_shifted_words(shift, tmp_path, native_dir):
    """Words that lost their top bits (input_shift > 10): the general (not specialised) loop, wraps and jumps."""
    rate = 48000
    s24 = sine(rate, 1000.0, 1.0, 1.8 * FULL * 2.0 ** (10 - shift)) - 40000
    words = (to_words(s24, shift).astype(np.int64) << (shift - 10)) & 0xFFFFFFFF
    r = native_vs_viper(words.astype(np.uint32).view(np.int32), rate, tmp_path, native_dir, shift=shift,
                        close_every=1000)
    assert r["overloads"] > 0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rate=st.sampled_from(SAMPLE_RATES), seed=st.integers(0, 2**32 - 1), blocks=st.integers(1, 900),
       scale=st.sampled_from([1, 2**8, 2**16, 2**23]), eq=st.sampled_from([None, EQ_PEAKING, EQ_TWO]),
       call_blocks=st.integers(1, 40))
def test_native_equals_viper_on_any_words(rate, seed, blocks, scale, eq, call_blocks, tmp_path, native_dir):
    """Any 32-bit words at all, at several amplitudes, in calls of any size (as test_integer_model.test_random_words)."""
    rng = np.random.default_rng(seed)
    s = np.clip(rng.integers(-scale, scale, blocks * BLOCK_SAMPLES[rate]), MIN, FULL)
    native_vs_viper(to_words(s, seed), rate, tmp_path, native_dir, eq=eq,
                    call_blocks=call_blocks, close_every=3)


# --- the whole firmware with the native kernel against the integer model ------------------------------------------

@pytest.fixture
def firmware_with_native(native_dir, monkeypatch):
    """Every MicroPython run of the firmware (slm.firmware_engine.run_meter) finds the native kernel."""
    monkeypatch.setenv("MICROPYPATH", str(native_dir))
    return native_dir


def test_firmware_with_the_native_kernel_equals_the_integer_model(firmware_with_native):
    rng = np.random.default_rng(11)
    for rate in SAMPLE_RATES:
        s = np.clip(np.round(rng.standard_normal(rate) * 2**21), MIN, FULL).astype(np.int64)
        compare(to_words(s, rate), rate, eq=EQ_PEAKING if rate == 48000 else None)
    compare(to_words(np.where(np.arange(48000) % 2 == 0, FULL, MIN)), 48000)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rate=st.sampled_from(SAMPLE_RATES), period=st.integers(2, 4000), duty=st.floats(0.01, 0.99),
       blocks=st.integers(1, 900), low=st.sampled_from([MIN, -FULL, 0]))
def test_firmware_with_the_native_kernel_on_square_waves(firmware_with_native, rate, period, duty, blocks, low):
    i = np.arange(blocks * BLOCK_SAMPLES[rate])
    compare(to_words(np.where((i % period) < duty * period, FULL, low), period), rate)


# --- selection and fallback ------------------------------------------------------------------------------------

KERNEL_SCRIPT = "import meter\nprint('KERNEL', meter.KERNEL, meter.process_blocks is __import__('meter_kernel').process_blocks)\n"


def kernel_in(path_dir: Path | None, tmp_path: Path) -> tuple[str, bool]:
    out = run_mp(KERNEL_SCRIPT, path_dir, tmp_path)
    _, kernel, is_viper = next(x for x in out.splitlines() if x.startswith("KERNEL")).split()
    return kernel, is_viper == "True"


def test_the_native_kernel_is_chosen_when_it_loads(native_dir, tmp_path):
    assert kernel_in(native_dir, tmp_path) == ("native", False)


def test_viper_without_a_native_kernel(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert kernel_in(empty, tmp_path) == ("viper", True)


@pytest.mark.parametrize("arch", ["xtensawin", "rv32imc"])
def test_viper_when_the_native_kernel_is_for_another_architecture(arch, tmp_path):
    d = tmp_path / arch
    d.mkdir()
    shutil.copy(NATMOD / f"meter_fast_{arch}.mpy", d / "meter_fast.mpy")
    assert kernel_in(d, tmp_path) == ("viper", True)


def test_viper_when_the_native_kernel_was_built_for_another_layout(tmp_path):
    d = tmp_path / "stale"
    d.mkdir()
    (d / "meter_fast.py").write_text("LAYOUT = (36, 19, 20, 80, 1)\n\ndef process_blocks(*a):\n    raise RuntimeError\n")
    assert kernel_in(d, tmp_path) == ("viper", True)


def test_viper_fallback_measures_like_the_native_kernel(native_dir, tmp_path):
    """The same signal through a Meter with each kernel (chosen at import): the same levels and raw results."""
    script = r'''
import meter
from array import array
import random
random.seed(7)
m = meter.Meter(48000)
w = array("i", [(random.getrandbits(24) - (1 << 23)) << 8 for _ in range(m.block * 20)])
for _ in range(60):
    m.process(w, 20)
print("RAW", meter.KERNEL, m.raw_interval())
'''
    empty = tmp_path / "empty"
    empty.mkdir()
    native = run_mp(script, native_dir, tmp_path)
    viper = run_mp(script, empty, tmp_path)
    n = next(x for x in native.splitlines() if x.startswith("RAW")).split(" ", 2)
    v = next(x for x in viper.splitlines() if x.startswith("RAW")).split(" ", 2)
    assert n[1] == "native" and v[1] == "viper" and n[2] == v[2]


def test_native_kernel_rejects_buffers_too_small(native_dir, tmp_path):
    script = r'''
import meter, meter_fast as F
from array import array
m = meter.Meter(48000)
w = array("i", [0] * (m.block * 2))
for args in ((w, 3, m.st, m.cfg, m.sums, m.acc), (w, 1, array("i", [0] * 5), m.cfg, m.sums, m.acc),
             (w, 1, m.st, m.cfg, m.sums, array("i", [0] * 90)), (w, -1, m.st, m.cfg, m.sums, m.acc)):
    try:
        F.process_blocks(*args)
        print("ACCEPTED")
    except ValueError:
        print("REJECTED")
F.process_blocks(w, 2, m.st, m.cfg, m.sums, m.acc)
print("OK", m.acc[78])
'''
    out = run_mp(script, native_dir, tmp_path).split()
    assert out == ["REJECTED"] * 4 + ["OK", "2"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
