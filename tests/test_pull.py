"""`slm pull` (host/pull.py, the `pull` and `ring` commands): a virtual board's own record copied to minutes.csv and
events.jsonl over its pty, resumed without duplicates or gaps, and bad input refused with exit 2."""

from __future__ import annotations

import base64
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slm.firmware import record_ring as rr
from slm.link import DeviceError, DeviceLink
from slm.pull import PullStore, pull_record
from slm.virtual_board import VirtualBoard
from tests.test_record_ring import event, minute

pytestmark = pytest.mark.micropython

SPEED = 20
BANDS = ["day", "night", "广场舞", "evening dance"]


def slm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm.cli", *args], capture_output=True, text=True, timeout=300)


def fill(device: Path, minutes: range, events: range) -> None:
    """Write records into the ring files of a virtual board's flash, as its app would have."""
    ring = rr.RecordRing(str(device))
    for i in minutes:
        ring.add(minute(i, band=BANDS[i % 4], LA10=None if i % 13 == 0 else 57.25))
    kinds = ("exceedance_start", "exceedance_end", "night_max", "clock_step")
    for i in events:
        rec = event(i, kinds[i % 4]) if i % 4 < 3 else dict(event(i, "clock_step"), **{"from": rr.format_time(
            rr.parse_time("2026-07-15T13:50:00.000Z")[0]), "to": rr.format_time(0), "step_s": -1.5})
        ring.add(rec)


def csv_rows(out: Path) -> list[dict]:
    with open(out / "minutes.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def jsonl(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "events.jsonl").read_text(encoding="utf-8").splitlines()]


def row_is(row: dict, rec: dict) -> bool:
    """A CSV row says what the record says: empty for null, true/false, numbers and text as written."""
    for k, v in rec.items():
        if k == "t":
            continue
        cell = row[k]
        if v is None:
            ok = cell == ""
        elif isinstance(v, bool):
            ok = cell == ("true" if v else "false")
        elif isinstance(v, (int, float)):
            ok = float(cell) == v
        else:
            ok = cell == v
        if not ok:
            return False
    return all(row[k] == "" for k in row if k not in rec and k != "extra")


def check_copy(device: Path, out: Path) -> tuple[int, int]:
    """The files hold the device's records 1..last (each once, in order, equal); returns the last n of each."""
    ring = rr.RecordRing(str(device))
    rows = csv_rows(out)
    minutes = ring.read("minute", 1, len(rows))
    assert [int(r["n"]) for r in rows] == [m["n"] for m in minutes] == list(range(1, len(rows) + 1))
    assert all(row_is(r, m) for r, m in zip(rows, minutes))
    evs = jsonl(out)
    want = [{k: v for k, v in e.items() if k != "t"} for e in ring.read("event", 1, len(evs))]
    assert evs == want and [e["n"] for e in evs] == list(range(1, len(evs) + 1))
    return len(rows), len(evs)


def test_slm_pull_copies_a_boards_record_and_resumes_without_duplicates_or_gaps(tmp_path):
    device, out = tmp_path / "device", tmp_path / "pulled"
    device.mkdir()
    fill(device, range(0, 150), range(0, 12))
    with VirtualBoard("calibrator", speed=SPEED, device_dir=device) as vb:
        r = slm("pull", "--port", vb.port, "--out", str(out), "--json")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        serial = vb.serial
    n_min, n_evt = check_copy(device, out)
    assert n_min >= 150 and n_evt >= 12  # everything written before (the app may have added more since)
    assert report["kinds"]["minute"]["pulled"] == n_min and report["kinds"]["minute"]["lost"] == 0
    assert report["serial"] == serial and json.loads((out / "device.json").read_text())["serial"] == serial

    # The device goes on recording; a pull is cut off in the middle of a row; the next pull resumes.
    ring = rr.RecordRing(str(device))
    last = ring.info()["minute"]["last"]
    fill(device, range(last, last + 40), range(12, 15))
    text = (out / "minutes.csv").read_bytes()
    (out / "minutes.csv").write_bytes(text[:-25])  # the last row torn
    with VirtualBoard("calibrator", speed=SPEED, device_dir=device) as vb:
        r = slm("pull", "--port", vb.port, "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("minutes: ") and "lost" not in r.stdout
        again = slm("pull", "--port", vb.port, "--out", str(out), "--json")
        assert again.returncode == 0, again.stderr
    n_min2, n_evt2 = check_copy(device, out)
    assert n_min2 >= last + 40 and n_evt2 >= 15
    assert json.loads(again.stdout)["kinds"]["minute"]["stored_last"] == n_min2

    # Another device's directory: refused, nothing changed
    (out / "device.json").write_text(json.dumps({"serial": "virtual-other"}))
    before = (out / "minutes.csv").read_bytes()
    with VirtualBoard("calibrator", speed=SPEED, device_dir=device) as vb:
        r = slm("pull", "--port", vb.port, "--out", str(out))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "virtual-other" in r.stderr
    assert (out / "minutes.csv").read_bytes() == before

    # The device's record erased (a new flash): its numbers start again, which the directory cannot take
    (out / "device.json").write_text(json.dumps({"serial": serial}))
    shutil.rmtree(device / "ring_min")
    shutil.rmtree(device / "ring_evt")
    fill(device, range(0, 5), range(0, 1))
    with VirtualBoard("calibrator", speed=SPEED, device_dir=device) as vb:
        r = slm("pull", "--port", vb.port, "--out", str(out))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "erased" in r.stderr
    assert (out / "minutes.csv").read_bytes() == before


def test_a_full_ring_is_pulled_whole_and_what_it_overwrote_is_counted_lost(tmp_path):
    """10 300 minutes into a ring of 10 200: the pull gets n 101..10300 (7 days and 2 hours) and says 100 were lost.
    The device's ms in the replies gives the time a week's pull takes within the console budget."""
    device, out = tmp_path / "device", tmp_path / "pulled"
    device.mkdir()
    fill(device, range(0, rr.MINUTES + 100), range(0, 3))
    acks = []
    with VirtualBoard("calibrator", speed=0, device_dir=device) as vb:
        with DeviceLink(vb.port, timeout=10.0) as link:
            send = link.send

            def timed(cmd, **fields):
                reply = send(cmd, **fields)
                acks.append(reply)
                return reply

            link.send = timed
            report = pull_record(link, out)
            for bad in ({"kind": "hour"}, {"kind": "minute", "from": -1}, {"kind": "minute", "max": 0},
                        {"kind": "event", "from": True}, {"kind": "event", "max": 65}):
                with pytest.raises(DeviceError) as e:
                    send("pull", **bad)
                assert e.value.code == "bad_value"
            ring = send("ring")["result"]
            assert ring["minute"]["capacity"] == rr.MINUTES and ring["minute"]["count"] == rr.MINUTES
            assert ring["event"]["first"] == 1 and ring["event"]["last"] >= 3 and ring["event"]["capacity"] == 2016
            one = send("pull", kind="minute", max=1, **{"from": 5000})["result"]
            assert len(one["records"]) == 1 and one["next"] == 5001
            assert rr.decode("minute", base64.b64decode(one["records"][0]))["n"] == 5000
    rows = csv_rows(out)
    assert [int(r["n"]) for r in rows[:2]] == [101, 102] and len(rows) >= rr.MINUTES
    assert [int(r["n"]) for r in rows] == list(range(101, 101 + len(rows)))
    assert report.kinds["minute"].lost == 100 and report.kinds["minute"].first == 101
    pulls = [a for a in acks if a["cmd"] == "pull" and a["result"]["kind"] == "minute"]
    device_s = (pulls[-1]["ms"] - pulls[0]["ms"]) / 1000
    per_reply = len(rows) / len(pulls)
    print(f"\nweek of minutes: {len(rows)} records in {len(pulls)} replies ({per_reply:.1f} a reply), "
          f"{sum(len(json.dumps(a)) for a in pulls) / 1e6:.2f} MB, {device_s:.0f} device seconds")
    assert per_reply >= 7  # the compact form: a reply line carries 7 or more minutes (a slot has 16 mac bytes)


def test_bad_output_directories_are_refused_with_one_line_and_exit_2(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    r = slm("pull", "--port", "/dev/null-no-such", "--out", str(a_file))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "minutes.csv").write_text("time,level\n2026-01-01,50\n")
    r = slm("pull", "--port", "/dev/null-no-such", "--out", str(foreign))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "minutes.csv" in r.stderr
    assert (foreign / "minutes.csv").read_text() == "time,level\n2026-01-01,50\n"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "events.jsonl").write_text('{"n": 1}\n{"kind": "x"}\n')
    r = slm("pull", "--port", "/dev/null-no-such", "--out", str(broken))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "events.jsonl" in r.stderr
    assert "Traceback" not in r.stderr
    (broken / "events.jsonl").write_text('{"n": 1}\nsome notes')  # no whole last row, and not a torn row of ours
    r = slm("pull", "--port", "/dev/null-no-such", "--out", str(broken))
    assert r.returncode == 2 and "events.jsonl" in r.stderr
    assert (broken / "events.jsonl").read_text() == '{"n": 1}\nsome notes'
    busy = tmp_path / "busy"
    busy.mkdir()
    held = PullStore(busy)  # a pull in progress holds the directory
    r = slm("pull", "--port", "/dev/null-no-such", "--out", str(busy))
    assert r.returncode == 2 and "another `slm pull`" in r.stderr
    held.close()
    r = slm("pull", "--port", "/dev/null-no-such", "--out", str(busy))
    assert "another" not in r.stderr  # released: now it is the port that is wrong
