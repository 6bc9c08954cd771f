"""`slm report` beside each episode: the verification state of its records and the calibration in force (from the
audit trail), per meter the state of all its records, and the data after a calibrator check that found a drift over
0.5 dB flagged (GB 3096-2008); from each source kind, with the keys (slm verify) or the collector's marks."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from slm.report import make_report
from tests.chain_records import BASE_MS, Signer, audit, evening, honest_devices, write_db, write_log, write_pulled
from tests.test_verify import A, B, Db, Log, Pulled

SOURCES = {"pulled": Pulled, "log": Log, "db": Db}


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    return honest_devices(tmp_path_factory.mktemp("keys"), A, B)


def episodes_csv(folder: Path) -> list[dict]:
    with open(folder / "episodes.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def verification_csv(folder: Path) -> dict:
    with open(folder / "verification.csv", newline="", encoding="utf-8") as f:
        return {r["device"]: r for r in csv.DictReader(f)}


def report_of(src, keys, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    make_report(src.sources[0], None, None, "square", str(out), keys_dir=str(keys))
    return out


@pytest.mark.parametrize("source", SOURCES)
def test_episode_shows_its_records_state_and_the_calibration_in_force(source, devices, tmp_path):
    (tmp_path / "src").mkdir()
    out = report_of(SOURCES[source](tmp_path / "src", devices["records"]), devices["keys"], tmp_path)
    ep = next(e for e in episodes_csv(out) if e["device"] == A)
    # the episode's minutes (20..30: 10 starting in it) and its start and end events, all valid
    assert ep["records"] == "valid (12)", ep
    assert ep["calibration_in_force"].endswith("last check: drift +0.12 dB"), ep
    ver = verification_csv(out)[A]
    assert ver["records"].startswith("valid (") and "keys" in ver["records"] and ver["calibration_drift"] == ""


@pytest.mark.parametrize("source", SOURCES)
def test_a_tampered_minute_in_an_episode_is_shown_failed(source, devices, tmp_path):
    (tmp_path / "src").mkdir()
    src = SOURCES[source](tmp_path / "src", devices["records"])
    src.tamper("digit", 25)  # a minute inside the episode
    out = report_of(src, devices["keys"], tmp_path)
    ep = next(e for e in episodes_csv(out) if e["device"] == A)
    assert ep["records"] == "FAILED 1 of 12", ep
    ver = verification_csv(out)
    assert ver[A]["records"].startswith("FAILED 1 of")
    assert source == "pulled" or ver[B]["records"].startswith("valid (")  # a pulled folder is one device's


def test_collector_marks_shown_without_keys(devices, tmp_path):
    url = str(tmp_path / "fleet.sqlite")
    write_db(url, devices["records"], {d: s.key for d, s in devices["signers"].items()})
    out = tmp_path / "out"
    make_report(url, None, None, "square", str(out))
    ver = verification_csv(out)
    assert all(v["records"].startswith("valid (") and "collector" in v["records"] for v in ver.values())
    html = (out / "report.html").read_text()
    assert "marked by the collector on arrival" in html


def test_unsigned_records_are_shown_unsigned(devices, tmp_path):
    records = [{k: x for k, x in r.items() if k != "mac"} for r in devices["records"][A]]
    write_pulled(tmp_path / "a", A, records)
    out = tmp_path / "out"
    make_report(str(tmp_path / "a"), None, None, None, str(out))
    assert verification_csv(out)[A]["records"].startswith("unsigned")


def test_data_after_a_drift_over_half_a_db_is_flagged(devices, tmp_path):
    """A calibrator check late in the evening found +0.62 dB: the meter's data after it are flagged; the check's
    audit record is valid; the key appears nowhere in the report."""
    signer = Signer(A, devices["signers"][A].key)
    records = evening(signer)
    records.append(signer.sign("audit", audit(BASE_MS + 85 * 60000 + 5000, 0, "calibration", kind="check",
                                              method="check", before=-26.0, after=-26.0, drift_db=0.62)))
    write_log(tmp_path / "log.jsonl", {A: records})
    out = tmp_path / "out"
    make_report(str(tmp_path / "log.jsonl"), None, None, None, str(out), keys_dir=str(devices["keys"]))
    drift = verification_csv(out)[A]["calibration_drift"]
    assert "+0.62 dB" in drift and "GB 3096" in drift and ": 4 minutes after it are flagged" in drift, drift
    with open(out / "calibration.csv", newline="", encoding="utf-8") as f:
        check = [r for r in csv.DictReader(f) if "OVER 0.5 dB" in r["check"]]
    assert [(r["method"], r["record"]) for r in check] == [("check (audit)", "valid")]
    text = "".join(p.read_text(errors="replace") for p in out.iterdir() if p.suffix in (".html", ".csv"))
    assert "OVER 0.5 dB" in text
    assert signer.key.hex() not in text and devices["signers"][B].key.hex() not in text


def test_cli_report_with_keys(devices, tmp_path):
    write_pulled(tmp_path / "a", A, devices["records"][A])
    done = subprocess.run([sys.executable, "-m", "slm.cli", "report", str(tmp_path / "a"), "--out",
                           str(tmp_path / "r.html"), "--keys", str(devices["keys"])], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "r.html").read_text()
    assert "checked with the devices&#x27; keys" in html or "checked with the devices' keys" in html
    assert devices["signers"][A].key.hex() not in html + done.stdout + done.stderr
