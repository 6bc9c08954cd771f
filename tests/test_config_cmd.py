"""`slm config` (slm.config_cmd) against a virtual board: show, set (acked, persisted, all or nothing), the device's
refusal as one line with exit 2, and the host's own syntax checks (exit 2 before any port is opened)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm import config_cmd
from slm.link import DeviceLink
from slm.virtual_board import VirtualBoard
from tests.test_calibration import slm

BOARD = "esp32-devkitc-inmp441"


def device_config(port: str) -> dict:
    """The device's whole configuration read over a link of its own: a `get` of everything (without the status
    fields), and the bands, which a device with a limit schedule gives only by name."""
    with DeviceLink(port, timeout=5.0) as link:
        config = link.get()
        if "zone" in config:
            config.update(link.get(["bands"]))
    config.pop("status", None)
    return config


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    d = tmp_path_factory.mktemp("config-board")
    with VirtualBoard("calibrator", speed=1, board=BOARD, device_dir=d) as vb:
        yield vb, Path(d)



@pytest.mark.micropython
def test_show_lists_every_key_with_its_value(board):
    vb, _ = board
    config = device_config(vb.port)
    code, out, err = slm("config", "--port", vb.port, "show")
    assert code == 0 and err == "", err
    lines = out.splitlines()
    assert lines[0].startswith("device ") and vb.port in lines[0]
    shown = {}
    for line in lines[1:]:
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in config:
            shown[parts[0]] = parts[1]
    assert set(shown) == set(config), (sorted(shown), sorted(config))
    for key, value in config.items():
        if key == "bands":  # their count, then one line each
            assert shown[key] == (str(len(value)) if value else "none")
            continue
        assert shown[key] == config_cmd.format_value(value), key
    assert "status" not in shown and "uptime_s" not in out  # the status fields are not configuration

    code, out, err = slm("config", "--port", vb.port)  # no subcommand: show
    assert code == 0 and "stream_hz" in out, err
    code, out, err = slm("config", "--port", vb.port, "show", "--json")
    assert code == 0 and json.loads(out) == device_config(vb.port)


@pytest.mark.micropython
def test_set_is_acked_and_persisted(board):
    vb, d = board
    before = device_config(vb.port)["stream_hz"]
    new = 7 if before != 7 else 6
    code, out, err = slm("config", "--port", vb.port, "set", f"stream_hz={new}", "status_s=15")
    assert code == 0 and err == "", err
    assert f"stream_hz = {new}" in out.splitlines() and "status_s = 15.0" in out.splitlines(), out
    assert device_config(vb.port)["stream_hz"] == new  # a new link reads the new value back
    saved = json.loads((d / "config.json").read_text())  # on the device's flash
    assert saved["stream_hz"] == new and saved["status_s"] == 15.0


@pytest.mark.micropython
def test_set_survives_a_restart(tmp_path):
    with VirtualBoard("calibrator", speed=1, board=BOARD, device_dir=tmp_path) as vb:
        code, _, err = slm("config", "--port", vb.port, "set", "stream_hz=9")
        assert code == 0, err
    with VirtualBoard("calibrator", speed=1, board=BOARD, device_dir=tmp_path) as vb:
        code, out, err = slm("config", "--port", vb.port, "show", "--json")
    assert code == 0 and json.loads(out)["stream_hz"] == 9, err


@pytest.mark.micropython
@pytest.mark.parametrize("args, message", [
    (["stream_hz=50"], "stream_hz must be between 0 and 10"),
    (["status_s=20", "stream_hz=true"], "stream_hz must be a number"),  # all or nothing: status_s not changed
    (["no_such_key=1"], "bad_key: no_such_key"),
    (["calibration_method=manual"], "bad_key: calibration_method"),
])
def test_refused_value_is_one_line_exit_2_and_changes_nothing(board, args, message):
    vb, d = board
    before_file = (d / "config.json").read_bytes() if (d / "config.json").exists() else None
    before = device_config(vb.port)
    code, out, err = slm("config", "--port", vb.port, "set", *args)
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("slm: error: ") and message in err, err
    assert "nothing was changed" in err and "Traceback" not in err
    assert device_config(vb.port) == before
    assert ((d / "config.json").read_bytes() if (d / "config.json").exists() else None) == before_file


@pytest.mark.parametrize("args, message", [
    (["set"], "give at least one KEY=VALUE"),
    (["set", "stream_hz"], "give KEY=VALUE"),
    (["set", "=5"], "give KEY=VALUE"),
    (["set", "stream_hz=1", "stream_hz=2"], "stream_hz is given twice"),
    (["limits"], "give --zone"),
    (["limits", "--band", "22:00-06:00"], "give START-END=DB"),
    (["limits", "--band", "22:00-6:00=45"], "give START-END=DB"),
    (["limits", "--band", "24:00-06:00=45"], "not a time of day"),
    (["limits", "--band", "22:00-06:61=45"], "not a time of day"),
    (["limits", "--band", "22:00-06:00=loud"], "is not a number of dB"),
    (["limits", "--band", "22:00-06:00=nan"], "finite"),
    (["limits", "--band", "22:00-06:00=45:"], "the name after ':' is empty"),
    (["limits", "--band", "22:00-06:00=45", "--clear-bands"], "not both"),
    (["limits", "--day", "6:00"], "--day '6:00': give a time as HH:MM"),
    (["limits", "--night", "22:60"], "not a time of day"),
])
def test_host_syntax_errors_exit_2_before_connecting(tmp_path, args, message):
    missing = str(tmp_path / "no-such-port")  # never opened: the syntax is checked first
    code, out, err = slm("config", "--port", missing, *args)
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and message in err and "does not exist" not in err, err


def test_missing_port_is_exit_2(tmp_path):
    code, out, err = slm("config", "--port", str(tmp_path / "ttyNONE"), "show")
    assert code == 2 and out == "" and err.count("\n") == 1 and "does not exist" in err, err


def test_assignment_values():
    parse = config_cmd.parse_assignment
    assert parse("stream_hz=5") == ("stream_hz", 5)
    assert parse("limit_hysteresis_db=1.5") == ("limit_hysteresis_db", 1.5)
    assert parse("display_on=false") == ("display_on", False)
    assert parse("zone=null") == ("zone", None)
    assert parse("zone=1") == ("zone", "1")  # a class name, not the number 1
    assert parse('zone="4a"') == ("zone", "4a")
    assert parse("day_start=06:00") == ("day_start", "06:00")  # not JSON: text
    assert parse('note="a b"') == ("note", "a b")
    assert parse("x=a=b") == ("x", "a=b")
    assert parse("limit_hysteresis_db=NaN") == ("limit_hysteresis_db", "NaN")  # not a number the line could carry
    assert parse('bands=[{"start":"22:00","end":"06:00","limit":45,"name":"q"}]')[1][0]["limit"] == 45


def test_band_syntax():
    assert config_cmd.parse_band("22:00-06:00=45") == {"start": "22:00", "end": "06:00", "limit": 45,
                                                       "name": "22:00-06:00"}
    assert config_cmd.parse_band("19:00-21:30=65.5:dance") == {"start": "19:00", "end": "21:30", "limit": 65.5,
                                                               "name": "dance"}
    assert config_cmd.parse_band("00:00-24:00=50:all:day")["name"] == "all:day"
    values = config_cmd.limit_values("1", "06:30", None, ["12:00-14:30=50:noon", "22:00-06:00=45"])
    assert values == {"zone": "1", "day_start": "06:30",
                      "bands": [{"start": "12:00", "end": "14:30", "limit": 50, "name": "noon"},
                                {"start": "22:00", "end": "06:00", "limit": 45, "name": "22:00-06:00"}]}
    assert config_cmd.limit_values(zone="none") == {"zone": None}
    assert config_cmd.limit_values(clear_bands=True) == {"bands": []}


def test_clock_line():
    assert config_cmd.clock_line("2026-07-15T13:50:00.250Z", 480, "scenario") == \
        "2026-07-15 13:50:00 UTC, local 2026-07-15 21:50:00 (UTC+8 h), from scenario"
    assert config_cmd.clock_line("2026-07-15T23:50:00.000Z", 480, "host").startswith(
        "2026-07-15 23:50:00 UTC, local 2026-07-16 07:50:00")  # the next local day
    assert config_cmd.clock_line(None, 480, "unset") == "not set (unset)"
