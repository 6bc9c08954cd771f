"""`slm sim`'s output folder is always consistent: an interrupted or failing run (Ctrl-C, a full disk) leaves it as it
was, a rerun replaces the whole set, and a run that needs more disk than is free is refused before it starts."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slm.sim.scenario import load_scenario
from slm.sim.scene import NotEnoughSpaceError, output_bytes, simulate
from slm.wav_io import read_header
from tests.conftest import INTERRUPTIBLE

SCENARIO = """
[scene]
duration_s = {duration}
sample_rate = 16000
size_m = [20.0, 20.0]
ground = "none"
seed = 7

[[source]]
id = "noise"
kind = "pink"
position_m = [5.0, 5.0, 1.5]
level_dba_at_1m = 80.0

{meters}
"""


def scenario_file(tmp_path: Path, duration: float = 3.0, n_meters: int = 2) -> Path:
    meters = "\n".join(f'[[meter]]\nid = "m{k}"\nposition_m = [{10 + k}.0, 10.0, 2.0]\n' for k in range(n_meters))
    p = tmp_path / "small.toml"
    p.write_text(SCENARIO.format(duration=duration, meters=meters))
    return p


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def interrupt_after(chunks: int, exc: BaseException):
    calls = []

    def progress(done_s, total_s):
        calls.append(done_s)
        if len(calls) == chunks:
            raise exc

    return progress


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["ctrl-c", "disk-full"])
def test_an_interrupted_rerun_leaves_the_previous_run_untouched(tmp_path, exc):
    sc = load_scenario(scenario_file(tmp_path))
    out = tmp_path / "out"
    simulate(sc, out)
    before = snapshot(out)
    assert sorted(before) == ["m0.wav", "m1.wav", "truth.json"]
    with pytest.raises(type(exc)):
        simulate(sc, out, seed=99, progress=interrupt_after(2, exc))
    assert snapshot(out) == before  # no new WAV beside the old truth.json, no partial file, no staging folder


def test_an_interrupted_first_run_leaves_an_empty_folder(tmp_path):
    sc = load_scenario(scenario_file(tmp_path))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        simulate(sc, out, progress=interrupt_after(3, KeyboardInterrupt()))
    assert snapshot(out) == {}


def test_a_rerun_replaces_the_whole_set(tmp_path):
    sc = load_scenario(scenario_file(tmp_path))
    out = tmp_path / "out"
    simulate(sc, out)
    truth = simulate(sc, out, meter_ids=["m1"], duration_s=2.0, seed=5)
    assert sorted(snapshot(out)) == ["m1.wav", "truth.json"]  # m0.wav belonged to the run truth.json no longer lists
    on_disk = json.loads((out / "truth.json").read_text())
    assert on_disk == json.loads(json.dumps(truth)) and on_disk["seed"] == 5 and list(on_disk["meters"]) == ["m1"]
    assert read_header(out / "m1.wav").frames == 2 * 16000


def test_ctrl_c_to_slm_sim_leaves_no_partial_wav(tmp_path):
    """SIGINT to `slm sim` while it writes: the folder has no WAV (before: a truncated one)."""
    scenario = scenario_file(tmp_path, duration=3600.0, n_meters=1)  # ~15 s of work: SIGINT comes long before the end
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "slm.cli", "sim", str(scenario), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **INTERRUPTIBLE)
    try:
        deadline = time.monotonic() + 120
        while not any(p.suffix == ".wav" and p.stat().st_size > 100_000 for p in out.rglob("*")):
            assert proc.poll() is None and time.monotonic() < deadline, "slm sim wrote no audio"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, err
    assert snapshot(out) == {}


def test_a_run_that_needs_more_disk_than_is_free_is_refused_before_it_starts(tmp_path):
    scenario = scenario_file(tmp_path, duration=7 * 24 * 3600.0, n_meters=60)
    sc = load_scenario(scenario)
    needed = output_bytes(sc, 60, sc.duration_s, sc.sample_rate)
    out = tmp_path / "out"
    out.mkdir()
    assert shutil.disk_usage(out).free < needed  # 60 meters x 7 days x 16000 x 4 bytes: 2.3 TB
    with pytest.raises(NotEnoughSpaceError, match=r"needs 23\d\d\.\d GB and only .* is free"):
        simulate(sc, out)
    assert snapshot(out) == {}
    r = subprocess.run([sys.executable, "-m", "slm.cli", "sim", str(scenario), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "free" in r.stderr and "Errno" not in r.stderr
    assert snapshot(out) == {}


def test_the_space_estimate_covers_what_a_run_writes(tmp_path):
    sc = load_scenario(scenario_file(tmp_path, duration=5.0))
    out = tmp_path / "out"
    simulate(sc, out)
    written = sum(len(b) for b in snapshot(out).values())
    estimate = output_bytes(sc, 2, sc.duration_s, sc.sample_rate)
    assert written <= estimate <= 1.2 * written + 100_000, (written, estimate)
