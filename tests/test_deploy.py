"""`slm deploy` (slm.deploy, slm.mpremote_adapter): end to end against a virtual board over its pty with mpremote,
the same path as a real board; and the pieces that need no board (chip check, building the files for ESP32 chips).

The virtual-board tests share one board whose device directory starts with nothing but board.json and
device_id.txt (the firmware the virtual board copies in at its start is removed, and the process restarted, so
`import main` fails and the board sits at the REPL): the first deploy is a real one from scratch. They run in
file order; each leaves the board deployed and running.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from slm import deploy as deploy_mod
from slm.boards import load_board
from slm.cli import main
from slm.deploy import (MANIFEST, DeployInputError, DeployOperationError, DeviceFacts, build_files, check_device,
                        chip_of_machine, deploy, firmware_sources, library_files)
from slm.link import DeviceLink

BOARD = "esp32-devkitc-inmp441"
SPEED = 5
FAST_TIMEOUT_S = 2.0  # a killed board is noticed after this much silence


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(d: Path) -> dict[str, tuple[str, int]]:
    """Every regular file in the device directory: (SHA-256, mtime in ns); not rtc.json, the virtual board's clock,
    which its feeder rewrites at every start of the firmware (host/virtual/feeder.py), nor display.ppm, the image of
    its sign, which the display's stand-in rewrites as it draws (not flash content), nor slm_run, the firmware's
    running marker (firmware/audit.py), written at every start."""
    return {p.name: (sha(p.read_bytes()), p.stat().st_mtime_ns) for p in sorted(d.iterdir())
            if p.is_file() and p.name not in ("rtc.json", "display.ppm", "slm_run")}


def device_files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir() if p.is_file() and p.name != "audio.fifo"}


# --- without a board -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("machine, chip", [
    ("Generic ESP32 module with ESP32", "esp32"),
    ("Generic ESP32S3 module with ESP32S3", "esp32s3"),
    ("ESP32C3 module with ESP32C3", "esp32c3"),
    ("LOLIN_S2_MINI with ESP32-S2FN4R2", "esp32s2"),
    ("ESP32C6 module with ESP32C6", "esp32c6"),
    ("linux [GCC 14.2.1] version", None),
])
def test_chip_of_machine(machine, chip):
    assert chip_of_machine(machine) == chip


def facts(platform="esp32", machine="Generic ESP32 module with ESP32", mpy=6 | (3 << 8) | (10 << 10)):
    return DeviceFacts(platform=platform, machine=machine, micropython="1.24.1", mpy=mpy, free_bytes=2 ** 20,
                       block_bytes=4096)


def test_chip_check_refuses_another_chip():
    board = load_board(BOARD)  # esp32
    assert check_device(board, facts(), "P") == []
    with pytest.raises(DeployInputError, match="expects an esp32, the device on P is an esp32c3"):
        check_device(board, facts(machine="ESP32C3 module with ESP32C3", mpy=6 | (3 << 8) | (11 << 10)), "P")
    with pytest.raises(DeployInputError, match="esp32s3"):
        check_device(board, facts(machine="Generic ESP32S3 module with ESP32S3"), "P")
    with pytest.raises(DeployInputError, match="sys.platform 'rp2'"):
        check_device(board, facts(platform="rp2", machine="Raspberry Pi Pico with RP2040"), "P")
    # a custom build whose _machine names no chip: the native architecture must fit
    with pytest.raises(DeployInputError, match="rv32imc"):
        check_device(board, facts(machine="custom board", mpy=6 | (3 << 8) | (11 << 10)), "P")
    assert check_device(board, facts(machine="custom board"), "P")  # a note, no error
    # the unix port (a virtual board) takes any profile
    assert check_device(load_board("esp32-c3-inmp441"), facts(platform="linux", machine="linux", mpy=2822), "P")


@pytest.mark.parametrize("arch_id, arch", [(10, "xtensawin"), (11, "rv32imc")])
def test_build_for_esp32_chips(arch_id, arch):
    """.mpy v6.3 for the chip's native architecture; main.py as source; native code tagged with the arch."""
    dev = facts(mpy=6 | (3 << 8) | (arch_id << 10))
    assert dev.arch == arch
    files, notes = build_files(firmware_sources(), dev, source=False)
    names = {f.name for f in files}
    assert "main.py" in names and "meter_kernel.mpy" in names and not notes
    assert all(f.name == "main.py" or f.kind == "mpy" for f in files)
    for f in files:
        if f.kind == "mpy":
            assert f.data[:2] == b"M\x06", f.name
            if f.data[2] >> 2:  # native code (viper): the architecture and sub-version are recorded
                assert f.data[2] >> 2 == arch_id and f.data[2] & 3 == 3, f.name
    kernel = next(f for f in files if f.name == "meter_kernel.mpy")
    assert kernel.data[2] >> 2 == arch_id  # the DSP kernel is viper code


def test_build_sources_when_asked_or_unsupported():
    src = firmware_sources()
    files, notes = build_files(src, facts(), source=True)
    assert all(f.kind == "py" for f in files) and {f.name for f in files} == set(src)
    assert notes == ["sources requested (--source)"]
    files, notes = build_files(src, facts(mpy=7 | (10 << 10)), source=False)  # a future .mpy version
    assert all(f.kind == "py" for f in files) and "cannot emit .mpy v7.0" in notes[0]


def test_build_falls_back_per_module_for_an_old_compiler():
    """A v6.2 device (MicroPython 1.22): mpy-cross 1.22 cannot assemble the viper kernel for xtensawin ("xtensa bccz
    out of range"), so that module goes as source and the others as v6.2 .mpy."""
    files, notes = build_files(firmware_sources(), facts(mpy=6 | (2 << 8) | (10 << 10)), source=False)
    kinds = {f.name: f.kind for f in files}
    assert kinds.get("meter_kernel.py") == "py" and "meter_kernel.mpy" not in kinds
    assert any("meter_kernel.py as source" in n for n in notes)
    assert kinds.get("app.mpy") == "mpy"
    assert next(f for f in files if f.name == "app.mpy").data[:2] == b"M\x06"


# --- end to end on a virtual board --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vb(tmp_path_factory):
    from slm.virtual_board import VirtualBoard

    d = tmp_path_factory.mktemp("device")
    board = VirtualBoard(scenario="calibrator", speed=SPEED, board=BOARD, device_dir=d)
    board.start()
    try:
        board.kill()
        for p in d.iterdir():
            if p.is_dir():
                shutil.rmtree(p)  # lib/: no library either
            elif p.name not in ("board.json", "device_id.txt"):
                p.unlink()  # "from scratch": no firmware, no configuration
        board.restart()  # `import main` fails: the board waits at the REPL
        yield board
    finally:
        board.stop()


@pytest.fixture(scope="module")
def first(vb):
    """The deploy from scratch (once)."""
    before = device_files(vb.device_dir)
    assert before == {"board.json", "device_id.txt"}, before
    report = deploy(BOARD, vb.port)
    return before, report


def link_info(port: str) -> dict:
    with DeviceLink(port, timeout=5.0) as link:
        return link.info()


@pytest.mark.micropython
def test_deploy_from_scratch(vb, first):
    _, report = first
    d = vb.device_dir
    sources = firmware_sources()
    modules = sorted(n[:-3] + ".mpy" for n in sources if n != "main.py")
    expected = set(modules) | {"main.py", "board.json", "meter_fast.mpy"}  # and the native kernel for x64
    assert set(report.files) == expected and set(report.written) == expected
    assert report.changed and report.verified and report.removed == [] and report.unchanged == []
    assert report.format == "mpy" and report.device["arch"] == "x64" and report.device["mpy"] == "6.3"
    assert report.bytes_written == sum((d / n).stat().st_size for n in expected)
    for name, path in library_files().items():  # umqtt.simple under lib/, as the firmware imports it
        assert (d / name).read_bytes() == path.read_bytes() and f"library {name} installed" in report.notes
    # every file on the device hashes as reported, as the manifest says, and as built here
    manifest = json.loads((d / MANIFEST).read_text())
    assert manifest["board"] == BOARD
    for name in expected:
        assert sha((d / name).read_bytes()) == report.files[name] == manifest["files"][name]
    assert (d / "main.py").read_bytes() == sources["main.py"].read_bytes()
    mpy = (d / "meter_kernel.mpy").read_bytes()
    assert mpy[:2] == b"M\x06" and mpy[2] >> 2 == 2  # x64 native code for the unix port
    assert not any(n.endswith(".part") or n.endswith(".py") and n != "main.py" for n in device_files(d))
    # board.json is the profile's device config (plus the FIFO on the unix port)
    board_cfg = json.loads((d / "board.json").read_text())
    assert board_cfg == dict(load_board(BOARD).device_config(), audio_path="audio.fifo")
    # the application restarted and said hello as this board
    assert report.restarted and report.hello["board"] == BOARD and report.hello["t"] == "hello"
    assert report.warnings == []  # nothing calibrated
    info = link_info(vb.port)
    assert info["board"] == BOARD and info["rate"] == board_cfg["rate"] and info["mic"] == board_cfg["mic"]


@pytest.mark.micropython
def test_redeploy_writes_nothing(vb, first):
    before = snapshot(vb.device_dir)
    report = deploy(BOARD, vb.port)
    assert not report.changed and report.written == [] and report.removed == [] and report.bytes_written == 0
    assert set(report.unchanged) == set(first[1].files) and report.files == first[1].files
    assert "nothing to do" in report.summary()
    after = snapshot(vb.device_dir)
    for name in first[1].files:
        assert after[name] == before[name], name  # not even rewritten with the same bytes
    assert after[MANIFEST] == before[MANIFEST]
    assert report.hello["board"] == BOARD


@pytest.mark.micropython
def test_redeploy_keeps_the_calibration(vb, first):
    with DeviceLink(vb.port, timeout=5.0) as link:
        assert link.set(calibration_db=-1.3) == {"calibration_db": -1.3}
    config = (vb.device_dir / "config.json").read_bytes()
    report = deploy(BOARD, vb.port)
    assert not report.changed
    assert (vb.device_dir / "config.json").read_bytes() == config
    assert report.hello["cal"]["offset_db"] == -1.3
    # a deploy that does change files (sources) keeps it too
    report = deploy(BOARD, vb.port, source=True)
    assert report.changed and report.format == "py" and "config.json" not in report.written
    assert (vb.device_dir / "config.json").read_bytes() == config
    assert report.hello["cal"]["offset_db"] == -1.3
    assert not any(n.endswith(".mpy") for n in device_files(vb.device_dir))  # the .mpy forms are gone
    report = deploy(BOARD, vb.port)
    assert report.format == "mpy" and (vb.device_dir / "config.json").read_bytes() == config
    assert link_info(vb.port)["cal"]["offset_db"] == -1.3


@pytest.mark.micropython
def test_stale_modules_of_ours_are_removed_others_kept(vb, first):
    d = vb.device_dir
    stale = b"# a module an older firmware had\n"
    (d / "old_module.mpy").write_bytes(stale)
    (d / "user_script.py").write_bytes(b"print('not ours')\n")
    manifest = json.loads((d / MANIFEST).read_text())
    manifest["files"]["old_module.mpy"] = sha(stale)
    manifest["files"]["config.json"] = "0" * 64  # a manifest can never make deploy remove data files
    (d / MANIFEST).write_text(json.dumps(manifest))
    config = (d / "config.json").read_bytes()
    report = deploy(BOARD, vb.port)
    assert report.removed == ["old_module.mpy"] and report.written == []
    assert not (d / "old_module.mpy").exists() and (d / "user_script.py").exists()
    assert (d / "config.json").read_bytes() == config
    assert "old_module.mpy" not in json.loads((d / MANIFEST).read_text())["files"]
    (d / "user_script.py").unlink()


@pytest.mark.micropython
def test_interrupted_deploy_then_restart_and_deploy_again(vb, first):
    d = vb.device_dir
    with DeviceLink(vb.port, timeout=5.0) as link:
        link.set(calibration_db=-2.1)
    config = (d / "config.json").read_bytes()
    old = {n: sha((d / n).read_bytes()) for n in first[1].files}
    new_sources = {n: sha(p.read_bytes()) for n, p in firmware_sources().items()}
    copied = []

    def pull_the_plug(stage, done, total, name):
        if stage == "copied":
            copied.append(name)
            if done == 1:
                vb.kill()  # a power cut right after the first file

    with pytest.raises(DeployOperationError, match="interrupted after writing 1 of"):
        deploy(BOARD, vb.port, source=True, progress=pull_the_plug, timeout=FAST_TIMEOUT_S)
    assert len(copied) == 1
    # no file under a real name is half written: each is the old .mpy or the complete new source
    for p in d.iterdir():
        if p.name in old:
            assert sha(p.read_bytes()) == old[p.name] or sha(p.read_bytes()) == new_sources.get(p.name), p.name
        elif p.name in new_sources:
            assert sha(p.read_bytes()) == new_sources[p.name], p.name
    assert (d / "config.json").read_bytes() == config
    vb.restart()
    report = deploy(BOARD, vb.port)
    assert report.format == "mpy" and report.verified
    assert {n: sha((d / n).read_bytes()) for n in report.files} == report.files
    assert not any(n.endswith(".part") or (n.endswith(".py") and n != "main.py") for n in device_files(d))
    assert (d / "config.json").read_bytes() == config
    assert report.hello["board"] == BOARD and report.hello["cal"]["offset_db"] == -2.1
    info = link_info(vb.port)
    assert info["cal"]["offset_db"] == -2.1 and not info["faults"]


# --- the command line ---------------------------------------------------------------------------------------------

def run_cli(*args: str):
    """`slm deploy ARGS` in this process through slm.cli.main (its one-line errors and exit codes)."""
    with CliRunner().isolation() as (out, err, _):
        try:
            main(["deploy", *args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return code, out.getvalue().decode(), err.getvalue().decode()


@pytest.mark.micropython
def test_cli_json_report(vb, first):
    code, out, err = run_cli("--board", BOARD, "--port", vb.port, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["changed"] is False and rep["written"] == [] and rep["board"] == BOARD and rep["verified"]
    code, out, err = run_cli("--board", BOARD, "--port", vb.port)
    assert code == 0 and out.startswith("nothing to do"), (out, err)


@pytest.mark.micropython
def test_bad_input_exits_2_and_changes_nothing(vb, first, tmp_path, monkeypatch):
    d = vb.device_dir
    before = {n: v for n, v in snapshot(d).items() if n != "config.json"}
    config = (d / "config.json").read_bytes()
    bad_profile = tmp_path / "broken.toml"
    bad_profile.write_text((Path(load_board(BOARD).path)).read_text().replace("[i2s]", "[i2s]\nsck = 99\n", 1)
                           .replace('name = "%s"' % BOARD, 'name = "broken"'))
    cases = [
        (("--board", "no-such-board", "--port", vb.port), "unknown board 'no-such-board'"),
        (("--board", str(bad_profile), "--port", vb.port), "broken.toml"),
        (("--board", BOARD, "--port", "/dev/no-such-port"), "port /dev/no-such-port does not exist"),
    ]
    for args, text in cases:
        code, out, err = run_cli(*args)
        assert code == 2 and out == "", (args, code, out, err)
        assert err.count("\n") == 1 and err.startswith("slm: error: ") and text in err, err
    # a device whose chip is not the profile's: the real session, with the device claiming to be an ESP32-C3
    real_info = deploy_mod.adapter.DeviceSession.device_info

    def c3_info(self):
        info = real_info(self)
        info.update(platform="esp32", machine="ESP32C3 module with ESP32C3", mpy=6 | (3 << 8) | (11 << 10))
        return info

    monkeypatch.setattr(deploy_mod.adapter.DeviceSession, "device_info", c3_info)
    code, out, err = run_cli("--board", BOARD, "--port", vb.port, "--source")
    monkeypatch.undo()
    assert code == 2 and out == "" and err.count("\n") == 1, (code, out, err)
    assert "expects an esp32, the device on" in err and "esp32c3" in err
    after = {n: v for n, v in snapshot(d).items() if n != "config.json"}
    assert after == before
    assert (d / "config.json").read_bytes() == config
    assert link_info(vb.port)["board"] == BOARD  # the application was restarted as it was


@pytest.mark.micropython
def test_another_microphone_warns_that_the_calibration_no_longer_matches(vb, first):
    """The device keeps its calibration across a deploy of another board's profile, but the offset belongs to the
    microphone it was made with: the text and --json reports warn when the profile's microphone is not the one the
    device's previous board.json names."""
    other = "esp32-devkitc-sph0645"
    assert load_board(other).device_config()["mic"] != load_board(BOARD).device_config()["mic"]
    config = (vb.device_dir / "config.json").read_bytes()
    assert json.loads(config)["calibration_db"] != 0  # calibrated by the tests above
    code, out, err = run_cli("--board", other, "--port", vb.port, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["hello"]["board"] == other and len(rep["warnings"]) == 1, rep["warnings"]
    warning = rep["warnings"][0]
    assert "INMP441" in warning and "SPH0645LM4H-B" in warning and "no longer matches the microphone" in warning
    assert (vb.device_dir / "config.json").read_bytes() == config  # kept, not reset
    code, out, err = run_cli("--board", BOARD, "--port", vb.port)  # back again: another change of microphone
    assert code == 0, err
    warnings = [ln for ln in out.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "SPH0645LM4H-B" in warnings[0] and "no longer matches the microphone" in \
        warnings[0], out
    code, out, err = run_cli("--board", BOARD, "--port", vb.port, "--json")  # the same microphone: no warning
    assert code == 0 and json.loads(out)["warnings"] == [], (out, err)
    assert link_info(vb.port)["board"] == BOARD


def test_no_board_found_is_bad_input(monkeypatch):
    from slm import discovery
    from slm.errors import InputError

    monkeypatch.setattr(discovery, "find_boards", lambda: [])
    with pytest.raises(InputError, match="no board found"):
        deploy(BOARD)
    code, out, err = run_cli("--board", BOARD)
    assert code == 2 and out == "" and err.count("\n") == 1 and "give --port" in err, err


def test_silent_port_is_an_operation_error():
    """A port that opens but where no MicroPython answers (a pty with nobody on the other side): exit 1."""
    import os

    master, slave = os.openpty()
    try:
        with pytest.raises(DeployOperationError, match="no MicroPython REPL"):
            deploy(BOARD, os.ttyname(slave), timeout=0.3)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.micropython
def test_deploy_installs_a_key_that_the_board_reports_and_audits(vb, first, tmp_path):
    """`slm deploy --key FILE` (issue 12): slm_key.bin on the device, hello's key_id, an audit `key` entry that starts
    the chains; the key itself is in no output; a second deploy finds it installed; a bad key file is exit 2."""
    import base64

    from slm.firmware import record_ring as rr

    key = bytes(range(100, 132))
    key_file = tmp_path / "dev.key"
    key_file.write_text(key.hex() + "\n")
    kid = hashlib.sha256(key).hexdigest()[:8]
    code, out, err = run_cli("--board", BOARD, "--port", vb.port, "--key", str(key_file), "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["hello"]["key_id"] == kid and f"key {kid} installed" in rep["notes"]
    assert (vb.device_dir / "slm_key.bin").read_bytes() == key
    code, out2, err2 = run_cli("--board", BOARD, "--port", vb.port, "--key", str(key_file), "--json")
    assert code == 0 and f"key {kid} already installed" in json.loads(out2)["notes"], err2
    for text in (out, err, out2, err2):
        assert key.hex() not in text.lower() and base64.b64encode(key).decode() not in text
    audit, nxt, last = [], 0, 1
    with DeviceLink(vb.port, timeout=5.0) as link:
        while nxt <= last:  # a few audit entries a reply
            got = link.send("pull", kind="audit", **{"from": nxt})["result"]
            audit += [rr.decode("audit", base64.b64decode(s)) for s in got["records"]]
            nxt, last = got["next"], got["last"]
    keys = [a for a in audit if a["what"] == "key"]
    assert len(keys) == 1 and keys[0]["key_id"] == kid and len(keys[0]["mac"]) == 32
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    code, out, err = run_cli("--board", BOARD, "--port", vb.port, "--key", str(bad))
    assert code == 2 and out == "" and err.count("\n") == 1 and "not a key" in err, (code, out, err)
