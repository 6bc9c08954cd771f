"""`slm report`: its numbers recomputed here from the raw minute records by code written again (energy means, Ld,
Ln, Ldn, Lden, coverage; nothing imported from slm.report_calc), the same report from every kind of source (a
collector database in SQLite and PostgreSQL, a folder of `slm pull`, a monitor log in CSV and JSON lines), its PDF
rendered with pdftoppm, bad input refused with one line and exit 2, and on a simulated night (a virtual board through
the night-bang scenario, then `slm pull`) hourly LAeq equal to the simulator's truth within 0.3 dB."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slm.collect import Collector
from slm.fleet_db import open_db
from slm.pull import PullStore
from slm.record_log import RecordLog
from tests.services import Postgres

UTC = dt.timezone.utc
TZ = dt.timedelta(hours=8)
DEVICE, SITE = "m1", "square"
FIRST_LOCAL = dt.datetime(2026, 7, 15, 18, 0)  # 14 hours: evening, night, morning; two dates (the heat map)
HOURS = 14


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def synthetic_records() -> list[dict]:
    """Minutes as a device sends them, with gaps, overloads, short minutes and the night limit, and events."""
    rng = random.Random(11)
    recs: list[dict] = []
    seq = 0
    for i in range(HOURS * 60):
        local = FIRST_LOCAL + dt.timedelta(minutes=i)
        if 120 <= i < 150 or rng.random() < 0.03:  # half an hour of nothing (20:00-20:30), and scattered gaps
            continue
        night = local.hour >= 22 or local.hour < 6
        limit = 45.0 if night else 55.0
        base = 48.0 if night else 56.0
        laeq = round(base + 6 * math.sin(i / 37) + rng.uniform(-3, 3), 1)
        if i == 60 * 5 + 20:  # 23:20: a bang
            lafmax = 67.3
        else:
            lafmax = round(laeq + rng.uniform(3, 12), 1)
        seq += 1
        start = local - TZ
        recs.append({"t": "minute", "seq": seq, "ms": i * 60000, "utc": iso(start + dt.timedelta(minutes=1)),
                     "start": iso(start), "local": local.strftime("%H:%M"), "s": 41 if i == 200 else 60,
                     "LAeq": laeq, "LAFmax": lafmax, "LA10": round(laeq + 2.5, 1), "LA50": round(laeq - 1, 1),
                     "LA90": round(laeq - 4.2, 1), "LCpeak": round(lafmax + 9, 1), "overload": rng.random() < 0.02,
                     "band": "night" if night else "day", "limit": limit, "over": laeq > limit})
    ep_start, ep_end = FIRST_LOCAL + dt.timedelta(minutes=5) - TZ, FIRST_LOCAL + dt.timedelta(minutes=17) - TZ
    recs += [{"t": "event", "seq": 9001, "ms": 1, "utc": iso(ep_start), "kind": "exceedance_start",
              "start": iso(ep_start), "limit": 55.0, "band": "day", "LAeq": 58.1},
             {"t": "event", "seq": 9002, "ms": 2, "utc": iso(ep_end), "kind": "exceedance_end", "start": iso(ep_start),
              "end": iso(ep_end), "duration_s": 720, "LAeq": 59.4, "LAFmax": 71.2, "limit": 55.0, "band": "day",
              "minutes_over": 11, "interrupted": False},
             {"t": "event", "seq": 9003, "ms": 3, "utc": iso(FIRST_LOCAL + dt.timedelta(minutes=321) - TZ),
              "kind": "night_max", "time": iso(FIRST_LOCAL + dt.timedelta(minutes=320) - TZ), "LAFmax": 67.3,
              "limit": 60.0, "band": "night"}]  # limit: the night limit + 15 dB (docs/protocol.md)
    return recs


# -- the three kinds of source, written by the project's own writers ----------------------------------------------
def write_database(url: str, recs: list[dict]) -> None:
    db = open_db(url)
    col = Collector(db)
    for r in recs:
        col.handle(f"slm/{SITE}/{DEVICE}/{r['t']}", json.dumps(r).encode(), "2026-07-16T00:00:00.000Z")
    col.commit()
    assert col.counts.stored["minute"] == sum(r["t"] == "minute" for r in recs) and not col.counts.rejected
    db.close()


def write_pull_folder(folder: Path, recs: list[dict]) -> None:
    store = PullStore(folder)
    store.claim(DEVICE)
    for kind in ("minute", "event"):
        rows = [{**r, "n": i + 1} for i, r in enumerate(x for x in recs if x["t"] == kind)]
        if rows:
            store.outputs[kind].append(rows)
    store.close()


def write_log(path: Path, recs: list[dict]) -> None:
    with RecordLog(path) as log:
        for r in recs:
            log.write(r, "/dev/pts/9", DEVICE)
        log.write_state("/dev/pts/9", "lost", "test", DEVICE)


def slm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm.cli", *args], capture_output=True, text=True, timeout=300)


def report_to(source: str, out: Path, *extra: str) -> dict[str, list[dict]]:
    r = slm("report", source, "--out", str(out), "--site", SITE, *extra)
    assert r.returncode == 0, r.stderr
    tables = {}
    for name in ("summary", "daily", "hourly", "episodes", "night_max", "calibration", "periods"):
        with open(out / f"{name}.csv", newline="") as f:
            tables[name] = list(csv.DictReader(f))
    return tables


# -- the numbers, written again ------------------------------------------------------------------------------------
def leq(minutes: list[dict]) -> float | None:
    """Energy mean of the valid minutes' LAeq weighted by their seconds."""
    valid = [m for m in minutes if m["LAeq"] is not None and not m["overload"] and m["s"] > 0]
    if not valid:
        return None
    return 10 * math.log10(sum(m["s"] * 10 ** (0.1 * m["LAeq"]) for m in valid) / sum(m["s"] for m in valid))


def local_of(m: dict) -> dt.datetime:
    return dt.datetime.strptime(m["start"], "%Y-%m-%dT%H:%M:%S.000Z") + TZ


def expected_numbers(recs: list[dict]) -> dict:
    minutes = [r for r in recs if r["t"] == "minute"]
    hour_of = lambda m: local_of(m).replace(minute=0)  # noqa: E731
    hours = {}
    for h in range(HOURS):
        start = FIRST_LOCAL + dt.timedelta(hours=h)
        ms = [m for m in minutes if hour_of(m) == start]
        hours[start.strftime("%Y-%m-%d %H:%M")] = (leq(ms), sum(1 for m in ms if not m["overload"]) / 60)

    def between(a: int, b: int) -> float | None:  # clock hours [a, b), past midnight when a > b
        return leq([m for m in minutes if (a <= local_of(m).hour < b if a < b else
                                           (local_of(m).hour >= a or local_of(m).hour < b))])

    ld, ln = between(6, 22), between(22, 6)
    lday, leve, lnight = between(7, 19), between(19, 23), between(23, 7)
    ldn = 10 * math.log10((16 * 10 ** (ld / 10) + 8 * 10 ** ((ln + 10) / 10)) / 24)
    lden = 10 * math.log10((12 * 10 ** (lday / 10) + 4 * 10 ** ((leve + 5) / 10) + 8 * 10 ** ((lnight + 10) / 10)) / 24)
    return {"hours": hours, "Ld": ld, "Ln": ln, "Ldn": ldn, "Lday": lday, "Levening": leve, "Lnight": lnight,
            "Lden": lden}


def as_float(text: str) -> float | None:
    return float(text) if text else None


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The report of the same records from each kind of source: {kind: tables}."""
    tmp = tmp_path_factory.mktemp("report")
    recs = synthetic_records()
    sources = {"sqlite": str(tmp / "fleet.sqlite"), "pull": str(tmp / "pulled"), "csv_log": str(tmp / "mon.csv"),
               "jsonl_log": str(tmp / "mon.jsonl")}
    write_database(sources["sqlite"], recs)
    write_pull_folder(Path(sources["pull"]), recs)
    write_log(Path(sources["csv_log"]), recs)
    write_log(Path(sources["jsonl_log"]), recs)
    out = {}
    with Postgres() as pg:
        write_database(pg.url, recs)
        out["postgresql"] = report_to(pg.url, tmp / "out-postgresql")
    for kind, src in sources.items():
        out[kind] = report_to(src, tmp / f"out-{kind}")
    return recs, out, tmp


def test_every_kind_of_source_gives_the_same_report(reports):
    _, out, tmp = reports
    first = out["sqlite"]
    for kind, tables in out.items():
        if kind == "jsonl_log":  # its lines carry no serial (slm.record_log): the meter is named by its port
            assert {r["device"] for rows in tables.values() for r in rows if "device" in r} == {"/dev/pts/9"}
            tables = {name: [{**r, "device": DEVICE} if "device" in r else r for r in rows]
                      for name, rows in tables.items()}
        assert tables == first, kind
    assert len(first["hourly"]) == HOURS and first["hourly"][0]["site"] == SITE
    # the HTML of each is the same too, apart from the source's name
    texts = {k: (tmp / f"out-{k}" / "report.html").read_text() for k in out}
    assert all(len(t) > 20000 and t.count("data:image/png;base64,") == 3 for t in texts.values())


def test_the_numbers_are_those_of_the_raw_minutes(reports):
    recs, out, _ = reports
    want = expected_numbers(recs)
    tables = out["sqlite"]
    for row in tables["hourly"]:
        level, coverage = want["hours"][row["hour"]]
        if level is None:
            assert row["LAeq"] == ""
        else:
            assert abs(float(row["LAeq"]) - level) <= 0.05, row
        assert abs(float(row["coverage"]) - coverage) <= 0.0005, row
    assert tables["hourly"][2]["LAeq"] != "" and float(tables["hourly"][2]["coverage"]) < 0.5  # 20:00, half empty
    summary = {r["indicator"]: as_float(r["dB"]) for r in tables["summary"]}
    for name in ("Ld", "Ln", "Ldn", "Lday", "Levening", "Lnight", "Lden"):
        assert abs(summary[name] - want[name]) <= 0.05, name
    assert summary["Ldn"] > summary["Ld"]  # the night weighting shows
    # per day: China's 15 July is 06:00 on the 15th to 06:00 on the 16th; the EU's 07:00 to 07:00
    first = {r["date"]: r for r in tables["daily"]}["2026-07-15"]
    cn_day = [r for r in recs if r["t"] == "minute" and local_of(r) < dt.datetime(2026, 7, 16, 6)]
    eu_day = [r for r in recs if r["t"] == "minute" and local_of(r) < dt.datetime(2026, 7, 16, 7)]
    assert abs(float(first["Ld"]) - leq([m for m in cn_day if 6 <= local_of(m).hour < 22])) <= 0.05
    assert abs(float(first["Ln"]) - leq([m for m in cn_day if local_of(m).hour >= 22 or local_of(m).hour < 6])) \
        <= 0.05
    assert abs(float(first["Lnight"]) - leq([m for m in eu_day if local_of(m).hour >= 23 or local_of(m).hour < 7])) \
        <= 0.05
    second = {r["date"]: r for r in tables["daily"]}["2026-07-16"]  # 06:00-08:00 of the 16th: a day without night
    assert second["Ln"] == second["Ldn"] == "" and abs(float(second["Ld"]) - leq(
        [m for m in recs if m["t"] == "minute" and local_of(m) >= dt.datetime(2026, 7, 16, 6)])) <= 0.05
    (ep,) = tables["episodes"]
    assert (ep["start"], ep["end"], ep["duration_s"], ep["LAeq"], ep["margin"]) == \
        ("2026-07-15 18:05", "2026-07-15 18:17", "720", "59.4", "+4.4")
    (night,) = tables["night_max"]
    assert (night["time"], night["LAFmax"], night["limit_plus_15"], night["margin"]) == \
        ("2026-07-15 23:20", "67.3", "60.0", "+7.3")


def test_the_period_selects_local_time_and_a_date_alone_is_the_whole_day(reports, tmp_path):
    recs, out, tmp = reports
    part = report_to(str(tmp / "pulled"), tmp_path / "part", "--from", "2026-07-15T22:00", "--to", "2026-07-15")
    assert [r["hour"][-5:] for r in part["hourly"]] == ["22:00", "23:00"]
    assert part["hourly"] == out["pull"]["hourly"][4:6]
    assert part["episodes"] == [] and len(part["night_max"]) == 1
    # a database is asked only for the minutes around the period: the same report
    assert report_to(str(tmp / "fleet.sqlite"), tmp_path / "part-db", "--from", "2026-07-15T22:00", "--to",
                     "2026-07-15") == part


def test_the_pdf_renders_and_its_pages_are_pictures(reports, tmp_path):
    _, _, tmp = reports
    pdf = tmp / "out-sqlite" / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    pdftoppm = shutil.which("pdftoppm")
    assert pdftoppm, "pdftoppm (Debian's poppler-utils) is needed: tests/ensure_services.sh installs it"
    r = subprocess.run([pdftoppm, "-png", "-r", "40", str(pdf), str(tmp_path / "page")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 5  # title, three figures, tables
    for page in pages:
        data = page.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 2000


@pytest.mark.parametrize("args, says", [
    (["/nonexistent/fleet.sqlite", "--out", "r.html"], "no such file"),
    (["{src}", "--from", "2026-13-01", "--out", "r.html"], "--from"),
    (["{src}", "--from", "2026-07-16", "--to", "2026-07-15", "--out", "r.html"], "not after"),
    (["{src}", "--out", "r.docx"], "--out"),
    (["{src}", "--eu-periods", "07:00,19:00", "--out", "r.html"], "--eu-periods"),
    (["{notes}", "--out", "r.html"], "unknown kind"),
    (["{src}", "--from", "2030-01-01", "--out", "r.html"], "no minute records"),
    (["{db}", "--site", "elsewhere", "--out", "r.html"], "no minute records of site elsewhere"),
    (["ftp://host/db", "--out", "r.html"], "give a SQLite file"),
])
def test_bad_input_is_one_line_and_exit_2(reports, tmp_path, args, says):
    _, _, tmp = reports
    notes = tmp_path / "notes.txt"
    notes.write_text("not records\n")
    args = [a.format(src=tmp / "pulled", db=tmp / "fleet.sqlite", notes=notes) for a in args]
    args = [str(tmp_path / a) if a.startswith("r.") else a for a in args]
    r = slm("report", *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("r.*"))


@pytest.mark.micropython
def test_a_simulated_night_pulled_from_a_virtual_board_matches_the_truth(tmp_path):
    """night-bang with an ideal microphone: the firmware on a virtual board hears 5 minutes of the square at 23:10; the
    report of its pulled
    record has the hour's LAeq of the simulator's truth (the judge's minutes) within 0.3 dB, and its bang."""
    from slm.sim.scenario import load_scenario
    from tests.episodes_truth import energy_mean, judge_truth
    from tests.test_enforcement_device import run_board
    from tests.test_enforcement_truth import CLASS_1, scene_truth

    from slm.sim.scenario import scenario_path

    # an ideal microphone (the INMP441's self-noise would add ~1.5 dB to this quiet night's 34-41 dB minutes)
    text = scenario_path("night-bang").read_text()
    assert 'microphone = "INMP441"\n' in text
    scenario = tmp_path / "night-bang-ideal.toml"
    scenario.write_text(text.replace('microphone = "INMP441"\n', 'microphone = "INMP441"\nideal = true\n'))
    sc = load_scenario(scenario)
    assert sc.meters[0].ideal
    truth = judge_truth(scene_truth(sc), "facade", sc.start, CLASS_1)
    _, pulled = run_board(tmp_path, str(scenario), "facade", CLASS_1)
    start = sc.start.replace(tzinfo=None)
    end = start + dt.timedelta(seconds=sc.duration_s)
    tables = report_to(str(pulled), tmp_path / "out", "--from", start.isoformat(timespec="minutes"),
                       "--to", end.isoformat(timespec="minutes"))
    (hour,) = tables["hourly"]
    assert hour["hour"] == "2026-07-15 23:00" and hour["valid_minutes"] == str(len(truth.minutes))
    expected = energy_mean([(m.LAeq, m.s) for m in truth.minutes])
    assert abs(float(hour["LAeq"]) - expected) <= 0.3, (hour["LAeq"], expected)
    (bang,) = tables["night_max"]
    (judged,) = truth.night_max
    assert bang["time"] == (judged.time + TZ).strftime("%Y-%m-%d %H:%M")
    (recorded,) = [json.loads(line) for line in (pulled / "events.jsonl").read_text().splitlines()
                   if json.loads(line)["kind"] == "night_max"]
    assert float(bang["LAFmax"]) == round(recorded["LAFmax"], 1)  # the device's own event, as recorded
    assert bang["limit_plus_15"] == "60.0" and float(bang["margin"]) > 0
    summary = {r["indicator"]: r["dB"] for r in tables["summary"]}
    assert summary["Ld"] == "" and abs(float(summary["Ln"]) - expected) <= 0.3  # all night: no day level


def test_a_sqlite_file_of_something_else_is_refused_and_left_as_it_was(tmp_path):
    import sqlite3

    other = tmp_path / "notes.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.close()
    before = other.read_bytes()
    r = slm("report", str(other), "--out", str(tmp_path / "r.html"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not a database of `slm collect`" \
        in r.stderr, r.stderr
    assert other.read_bytes() == before and not (tmp_path / "r.html").exists()


def test_the_calibration_in_force_comes_from_the_devices_hello_in_a_database(tmp_path):
    recs = synthetic_records()[:30]
    hello = {"t": "hello", "seq": 0, "ms": 0, "proto": 2, "fw": "0.9", "board": "esp32", "mic": "INMP441", "rate": 48000,
             "serial": DEVICE, "cal": {"offset_db": 1.25, "sensitivity_dbfs": -26.0, "method": "calibrator",
                                       "time": "2026-07-14T09:30"}}
    url = str(tmp_path / "fleet.sqlite")
    write_database(url, [hello] + recs)
    (row,) = report_to(url, tmp_path / "out")["calibration"]
    assert (row["method"], row["time"], row["offset_db"], row["sensitivity_dbfs"]) == \
        ("calibrator", "2026-07-14T09:30", "+1.25", "-26.0")
    write_pull_folder(tmp_path / "pulled", recs)  # a pulled folder has no hello: unknown
    (row,) = report_to(str(tmp_path / "pulled"), tmp_path / "out-pull")["calibration"]
    assert row["method"].startswith("unknown")


def test_the_html_opens_offline_in_headless_chromium(reports, tmp_path):
    _, _, tmp = reports
    page = tmp / "out-sqlite" / "report.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing to fetch: figures are data: URIs
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: tests/ensure_services.sh installs it"
    shot = tmp_path / "page.png"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1100,2400",
                        page.as_uri()], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and shot.exists(), r.stderr[-500:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1100, 2400)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    # the page shows its figures: the bars' red, amber and green are on it, not only text on white
    present = {c for _, c in colours}
    for want in ((0xd6, 0x27, 0x28), (0xff, 0x7f, 0x0e), (0x2c, 0xa0, 0x2c)):
        assert any(sum(abs(a - b) for a, b in zip(want, c)) < 12 for c in present), want
