"""`slm serve` end to end: four virtual boards of the simulated square (square-evening, the demo's limits) publish
through a real Mosquitto into `slm collect`'s SQLite (the real pipeline: firmware on the MicroPython unix port ->
MQTT -> collector -> database), `slm serve` runs as its own process on that database, and headless Chromium
(Debian's /usr/bin/chromium driven by Playwright, no browser download) opens the site's page: four meters on the plan,
updating without a reload, every value shown equal to the database's row it names. Then the refusals: unknown sites,
bad periods, changing methods, bad databases; and the database unchanged by serving."""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from slm.cli import DEMO_CONFIG
from slm.collect import Collector
from slm.fleet_db import open_db
from tests.collect_helpers import RunningCollector, wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.micropython

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
SITE = "square"
METERS = ["dance-edge", "facade", "drums-edge", "singers-edge"]
SPEED = 4.0  # device seconds per wall second: a minute closes every 15 s
WAIT_S = 240.0  # generous: a loaded 2-core machine
WAIT_MS = WAIT_S * 1000
SLM = [sys.executable, "-c", "from slm.cli import main; main()"]


def start_server(db: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """`slm serve` on a free port in its own process; (process, base URL) once it listens."""
    proc = subprocess.Popen([*SLM, "serve", "--db", db, "--port", "0", *extra], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if not m:
        proc.kill()
        raise AssertionError(f"slm serve did not start: {line}{proc.stderr.read()}")
    return proc, m.group(1)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, as a service manager stops it; SIGKILL after a minute."""
    """SIGTERM, as Ctrl-C would; SIGKILL after a minute."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def get(url: str, method: str = "GET") -> tuple[int, str, dict]:
    """(status, body, headers) of a request; 4xx/5xx are answers, not exceptions."""
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def shown(db: float | None) -> str:
    """What the page must show for a level: tenths of a dB, half away from zero (the sign's rounding)."""
    if db is None:
        return "--.-"
    t = math.floor(abs(db) * 10 + 0.5)
    return f"{'-' if db < 0 else ''}{t // 10}.{t % 10}"


def expected_state(laeq: float | None, limit: float | None, over: bool | None, overload: bool) -> str:
    """docs/hardware.md's table (no faults on a virtual board): overload, no measurement, over (the record's
    verdict), near (at most 3.0 dB under), under."""
    if overload:
        return "overload"
    if laeq is None:
        return "no_measurement"
    if limit is None:
        return "under"
    if over:
        return "over"
    return "near" if round(laeq * 10) >= round(limit * 10) - 30 else "under"


def db_rows(db: str, sql: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    """The four boards publishing (`slm virtual --broker ... --intervals`, each its own process, its device id the
    scenario's meter as docs/web.md sets it up), the collector storing, `slm serve` serving; yields (db, url, {device:
    meter})."""
    tmp = tmp_path_factory.mktemp("serve")
    db = str(tmp / "fleet.sqlite")
    boards, server = [], None
    with Mosquitto() as broker:
        collector = RunningCollector(broker.port, db, "serve-test-collector")
        collector.wait_subscribed()
        try:
            for meter in METERS:
                d = tmp / meter
                d.mkdir()
                (d / "config.json").write_text(json.dumps(DEMO_CONFIG))
                (d / "device_id.txt").write_text(meter + "\n")
                with open(tmp / f"{meter}.err", "wb") as err:  # a file: a pipe nobody reads could block the board
                    boards.append(subprocess.Popen(
                        [*SLM, "virtual", "--scenario", "square-evening", "--meter", meter, "--speed", str(SPEED),
                         "--dir", str(d), "--broker", broker.url, "--site", SITE, "--intervals"],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err))
            devices = {meter: meter for meter in METERS}
            positions = tmp / "positions.toml"
            positions.write_text('[sites.square]\nscenario = "square-evening"\n[sites.square.meters]\n'
                                 + "".join(f'{d} = "{m}"\n' for d, m in devices.items()))
            for device in devices:  # every board's intervals and a first minute in the database
                wait_until(lambda: db_rows(db, "SELECT count(*) FROM minutes WHERE device = ?", (device,))[0][0] > 0
                           and db_rows(db, "SELECT count(*) FROM intervals WHERE device = ?", (device,))[0][0] > 0,
                           f"{device}'s records in the database", timeout=WAIT_S, collector=collector)
            server, url = start_server(db, "--positions", str(positions))
            yield db, url, devices
        finally:
            if server is not None:
                stop_process(server)
            for proc in boards:
                stop_process(proc)
            collector.stop()


def chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    context = pw.chromium.launch_persistent_context(str(tmp_path / "chromium-profile"), executable_path=CHROMIUM,
                                                    headless=True, args=CHROMIUM_FLAGS,
                                                    viewport={"width": 1300, "height": 1800})
    return pw, context


SNAPSHOT_JS = """() => [...document.querySelectorAll('.meter')].map(c => ({
    device: c.dataset.device, state: c.dataset.state, liveUtc: c.dataset.liveUtc, liveLaeq: c.dataset.liveLaeq,
    minuteStart: c.dataset.minuteStart, minuteLaeq: c.dataset.minuteLaeq, limit: c.dataset.limit,
    name: c.querySelector('.name').textContent, level: c.querySelector('.level').textContent,
    minuteLevel: c.querySelector('.minute-level').textContent, limitText: c.querySelector('.limit').textContent,
    band: c.querySelector('.band').textContent, stateText: c.querySelector('.state').textContent,
    chartPoints: c.querySelectorAll('.chart circle').length,
    mark: (() => { const g = document.querySelector(`.plan-meter[data-device="${c.dataset.device}"]`);
                   return g && {name: g.querySelector('.mark-name').textContent,
                                level: g.querySelector('.mark-level').textContent,
                                cls: g.getAttribute('class')}; })()}))"""


def test_page_shows_the_four_boards_updating_with_the_databases_values(square, tmp_path):
    db, url, serials = square
    pw, context = chromium(tmp_path)
    try:
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + f"sites/{SITE}", timeout=WAIT_MS)
        page.wait_for_function("() => document.querySelectorAll('.meter[data-live-utc^=\"20\"]"
                               "[data-minute-start^=\"20\"]').length === 4", timeout=WAIT_MS)
        page.evaluate("() => { window.notReloaded = true; }")
        first = {s["device"]: s for s in page.evaluate(SNAPSHOT_JS)}
        # updating without a reload: every meter's live record moves on twice, from the stream alone
        for _ in range(2):
            seen = {d: s["liveUtc"] for d, s in first.items()}
            page.wait_for_function("seen => [...document.querySelectorAll('.meter')].every("
                                   "c => c.dataset.liveUtc > seen[c.dataset.device])", arg=seen, timeout=WAIT_MS)
            first = {s["device"]: s for s in page.evaluate(SNAPSHOT_JS)}
        assert page.evaluate("() => window.notReloaded === true")
        assert int(page.get_attribute("#connection", "data-updates")) >= 2
        snap = page.evaluate(SNAPSHOT_JS)
        page.screenshot(path=str(tmp_path / "site.png"), full_page=True)
    finally:
        context.close()
        pw.stop()

    assert not errors
    assert sorted(s["device"] for s in snap) == sorted(serials)
    for s in snap:
        device = s["device"]
        # the live level: the interval record the card names, as stored
        (laeq,), = db_rows(db, "SELECT laeq FROM intervals WHERE device = ? AND utc = ?", (device, s["liveUtc"]))
        assert float(s["liveLaeq"]) == laeq and s["level"] == shown(laeq)
        # the minute judged, the limit in force and the state, as stored
        (m_laeq, limit, band, over, overload), = db_rows(
            db, "SELECT laeq, limit_db, band, over, overload FROM minutes WHERE device = ? AND start = ?",
            (device, s["minuteStart"]))
        assert float(s["minuteLaeq"]) == m_laeq and s["minuteLevel"] == shown(m_laeq)
        assert float(s["limit"]) == limit and s["limitText"] == f"{shown(limit)} dB" and s["band"] == f"({band})"
        interval_overload = db_rows(db, "SELECT overload FROM intervals WHERE device = ? AND utc = ?",
                                    (device, s["liveUtc"]))[0][0]
        assert s["state"] == expected_state(m_laeq, limit, over, bool(overload) or bool(interval_overload))
        assert s["chartPoints"] >= 1
        # on the plan: the scenario's meter name, the same level, the state's colour class
        assert s["name"] == serials[device] and s["mark"]["name"] == serials[device]
        assert s["mark"]["level"] == f"{s['level']} dB" and s["state"] in s["mark"]["cls"].split()
    # square-evening at 20:00 local, GB 3096 class 1 with the dance band 19:00-21:30 at 65 dB in force
    assert {s["limit"] for s in snap} == {"65"} and {s["band"] for s in snap} == {"(dance)"}


def test_report_of_a_chosen_period_is_slm_reports(square):
    """The report form's period (the meters' local time, square-evening's evening) gives `slm report`'s HTML."""
    db, url, devices = square
    (first, last), = db_rows(db, "SELECT min(start), max(start) FROM minutes")
    local = lambda utc: datetime.fromisoformat(utc[:16]) + timedelta(hours=8)  # noqa: E731  (tz_min 480)
    t0, t1 = local(first).replace(minute=0), local(last).replace(minute=0) + timedelta(hours=1)
    status, body, headers = get(url + f"sites/{SITE}/report?from={t0:%Y-%m-%dT%H:%M}&to={t1:%Y-%m-%dT%H:%M}")
    assert status == 200, body
    assert "text/html" in headers["content-type"]
    for device in devices:
        assert device in body
    assert "data:image/png;base64," in body  # the report's own figures, embedded


@pytest.mark.parametrize("path, status, text", [
    ("sites/nowhere", 404, "no site 'nowhere'"),
    ("sites/bad%20name", 404, "no site"),
    ("api/sites/nowhere", 404, "no site 'nowhere'"),
    ("api/sites/nowhere/live", 404, "no site"),
    (f"sites/{SITE}/report", 400, "give the period"),
    (f"sites/{SITE}/report?from=yesterday&to=2026-07-15", 400, "from 'yesterday'"),
    (f"sites/{SITE}/report?from=2026-07-15T20:00&to=2026-07-15T19:00", 400, "is not after"),
    (f"sites/{SITE}/report?from=2026-01-01&to=2026-07-15", 400, "at most 31 days"),
    (f"sites/{SITE}/report?from=2026-07-15T20:00%2B08:00&to=2026-07-15T21:00", 400, "without a UTC offset"),
    (f"sites/{SITE}/report?from=2020-01-01&to=2020-01-02", 400, "no minute records"),
    ("static/../serve_app.py", 404, ""),
    ("nothing-here", 404, ""),
])
def test_bad_input_is_a_clear_4xx_without_a_traceback(square, path, status, text):
    db, url, _ = square
    got, body, _ = get(url + path)
    assert got == status, body
    assert text in html.unescape(body) and "Traceback" not in body and 'File "' not in body


def test_nothing_changes_anything(square):
    """Every route is GET/HEAD only; a changing method is refused; the database is opened read-only."""
    from slm.serve_app import READ_ONLY_METHODS, build_app
    from slm.serve_data import FleetReader

    db, url, _ = square
    reader = FleetReader(db)
    try:
        app = build_app(reader, {}, db)
        for route in app.routes:
            assert set(getattr(route, "methods", None) or {"GET", "HEAD"}) <= READ_ONLY_METHODS, route.path
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.conn.execute("DELETE FROM minutes")
    finally:
        reader.close()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("", f"sites/{SITE}", f"api/sites/{SITE}", f"sites/{SITE}/report"):
            status, body, _ = get(url + path, method)
            assert status == 405, (method, path, body)


def small_db(path: Path | str) -> str:
    """A database (a SQLite path or a PostgreSQL URL) stored by the collector from real record payloads (one
    device, two minutes, intervals)."""
    db = open_db(str(path))
    c = Collector(db)
    topic = "slm/plaza/lamp-1/"
    c.handle(topic + "hello", json.dumps({"t": "hello", "serial": "lamp-1", "proto": 2, "fw": "x", "board": "b",
                                          "mic": "INMP441", "rate": 48000, "seq": 0, "ms": 0}).encode(), "2026-07-15T12:00:00.000Z")
    for i, level in enumerate((58.24, 71.25)):
        c.handle(topic + "minute", json.dumps({
            "t": "minute", "seq": 10 + i, "ms": 60000 * (i + 1), "utc": f"2026-07-15T12:0{i + 1}:00.000Z",
            "start": f"2026-07-15T12:0{i}:00.000Z", "local": f"20:0{i}", "s": 60.0, "LAeq": level, "LAFmax": 80.0,
            "LA10": 60.0, "LA50": 55.0, "LA90": 50.0, "LCpeak": 90.0, "overload": False, "band": "day",
            "limit": 55.0 + i * 10, "over": level > 55.0 + i * 10}).encode(), "2026-07-15T12:02:00.000Z")
    for s in range(3):
        c.handle(topic + "interval", json.dumps({
            "t": "interval", "seq": 20 + s, "ms": 120000 + s * 1000, "utc": f"2026-07-15T12:02:0{s + 1}.000Z",
            "start_ms": 120000 + s * 1000, "end_ms": 121000 + s * 1000, "LAeq": 62.0 + s, "LCeq": 70.0,
            "LZeq": 75.0, "LAFmax": 66.0, "LAFmin": 50.0, "LASmax": 64.0, "LASmin": 52.0, "LCpeak": 90.0,
            "LZpeak": 95.0, "LAE": 62.0, "LA10": 63.0, "LA50": 60.0, "LA90": 55.0, "overload": False,
            "underrange": False}).encode(), "2026-07-15T12:02:03.000Z")
    c.commit()
    assert sum(c.counts.rejected.values()) == 0
    db.close()
    return str(path)


def check_plaza(url: str) -> None:
    """The JSON feeds and pages of small_db's site as served."""
    status, body, headers = get(url + "api/sites/plaza")
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    view = json.loads(body)
    (m,) = view["meters"]
    assert m["live"]["utc"] == "2026-07-15T12:02:03.000Z" and m["live"]["laeq"] == 64.0
    # 71.25 dB is exactly halfway between tenths: the sign rounds half away from zero
    assert m["minute"]["laeq"] == 71.25 and m["minute"]["text"] == "71.3" and m["minute"]["limit"] == 65.0
    assert m["state"] == "over" and view["plan"] is None
    status, body, _ = get(url + "api/sites/plaza/history")
    assert [r["laeq"] for r in json.loads(body)["minutes"]["lamp-1"]] == [58.24, 71.25]
    status, body, _ = get(url)
    assert status == 200 and 'href="/sites/plaza"' in body
    status, body, _ = get(url + "sites/plaza")
    assert status == 200 and 'data-site="plaza"' in body and "/static/site.js" in body


def test_json_view_of_a_stored_site_and_the_database_unchanged(tmp_path):
    db = small_db(tmp_path / "fleet.sqlite")
    before = hashlib.sha256(Path(db).read_bytes()).hexdigest()
    proc, url = start_server(db)
    try:
        check_plaza(url)
    finally:
        stop_process(proc)
    assert hashlib.sha256(Path(db).read_bytes()).hexdigest() == before


def test_plan_from_a_positions_file_in_metres(tmp_path):
    db = small_db(tmp_path / "fleet.sqlite")
    positions = tmp_path / "plaza.toml"
    positions.write_text("[sites.plaza]\nsize_m = [50.0, 20.0]\n[sites.plaza.meters]\nlamp-1 = [10.0, 25.5]\n")
    proc, url = start_server(db, "--positions", str(positions))
    try:
        status, body, _ = get(url + "api/sites/plaza")
    finally:
        stop_process(proc)
    assert status == 200
    assert json.loads(body)["plan"] == {"size_m": [50.0, 20.0], "scenario": None, "sources": [],
                                        "meters": {"lamp-1": {"x": 10.0, "y": 25.5, "name": "lamp-1"}},
                                        "bounds": [0.0, 0.0, 50.0, 25.5]}


def test_postgresql_database_served_the_same():
    from tests.services import Postgres

    with Postgres() as pg:
        small_db(pg.url)
        proc, url = start_server(pg.url)
        try:
            check_plaza(url)
        finally:
            stop_process(proc)


def slm_serve_error(*args: str) -> tuple[int, str]:
    """`slm serve ARGS` in this process through slm.cli.main, for arguments it refuses before serving: (exit code,
    stderr)."""
    from click.testing import CliRunner

    from slm.cli import main

    with CliRunner().isolation() as (_, err, _):
        try:
            main(["serve", *args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        return code, err.getvalue().decode()


def test_bad_database_or_positions_is_one_line_exit_2(tmp_path):
    (tmp_path / "notes.txt").write_text("not a database\n")
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("CREATE TABLE t (a)")
    other.commit()
    other.close()
    good = small_db(tmp_path / "fleet.sqlite")
    bad_positions = tmp_path / "positions.toml"
    bad_positions.write_text('[sites.plaza]\nscenario = "square-evening"\n[sites.plaza.meters]\nlamp-1 = "nowhere"\n')
    for args, words in [
        (["--db", str(tmp_path / "missing.sqlite")], "no such database file"),
        (["--db", str(tmp_path / "notes.txt")], "not a SQLite database"),
        (["--db", str(tmp_path / "other.sqlite")], "not a database of `slm collect`"),
        (["--db", "mysql://host/db"], "give a SQLite file or a postgresql:// URL"),
        (["--db", good, "--positions", str(tmp_path / "none.toml")], "--positions"),
        (["--db", good, "--positions", str(bad_positions)], "no meter 'nowhere'"),
        (["--db", good, "--host", "localhost-ish"], "give an IP address"),
    ]:
        code, err = slm_serve_error(*args)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and err.startswith("slm: error: ") and words in err, (args, err)


def test_port_in_use_is_one_line_exit_1(tmp_path):
    import socket

    good = small_db(tmp_path / "fleet.sqlite")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        code, err = slm_serve_error("--db", good, "--port", str(s.getsockname()[1]))
    assert code == 1 and err.count("\n") == 1 and "cannot listen on 127.0.0.1" in err, err
