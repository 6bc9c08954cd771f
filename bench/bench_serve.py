"""Response times of `slm serve` with N meters on one site in the database (default 100, an hour of their records:
a minute record a minute and an interval record a second each, stored by the collector's own code from the payloads
a board publishes), the server in its own process, measured over loopback:

- sequential requests on one keep-alive connection (p50/p99): a static file (the baseline: the framework and the
  server alone), the site's page, its JSON view (what the page loads first), the last hour's history;
- the live stream: time from opening it to its first event (a fresh connection each time, p50/p99), and with K pages
  watching at once, the gaps between events (the period is 1 s), the event's size, the server's CPU, and the page's
  response time meanwhile;
- the view itself (the queries and the states of N meters), built in this process (p50/p99).

    .venv/bin/python bench/bench_serve.py [--meters 100] [--requests 300] [--streams 20] [--seconds 15] [--write-docs]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_sections import cpu_model, replace_section  # noqa: E402

from slm.collect import Collector  # noqa: E402
from slm.fleet_db import open_db  # noqa: E402
from tests.fleet_payloads import device_id, interval, minute, status, topic  # noqa: E402

SITE = "bench"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill(db_path: str, meters: int, minutes: int) -> int:
    """An hour (minutes) of records of `meters` devices, through slm.collect.Collector; the messages stored."""
    db = open_db(db_path)
    c = Collector(db)
    rng = random.Random(11)
    n = 0
    when = "2026-07-15T13:00:00.000Z"
    for i in range(meters):
        dev = device_id(i)
        for k in range(minutes):
            c.handle(topic(dev, "minute", SITE), json.dumps(minute(i, k, rng)).encode(), when)
        for k in range(minutes * 60):
            c.handle(topic(dev, "interval", SITE), json.dumps(interval(i, k, rng)).encode(), when)
        for k in range(minutes * 6):
            c.handle(topic(dev, "status", SITE), json.dumps(status(i, k)).encode(), when)
        n += minutes * 67
        c.commit()
    stored = sum(c.counts.stored.values())
    db.close()
    assert stored == n, (stored, n)
    return n


def positions(path: Path, meters: int) -> None:
    side = int(meters ** 0.5 + 0.999)
    lines = ['[sites.bench]', 'size_m = [200.0, 200.0]', '[sites.bench.meters]']
    lines += [f"{device_id(i)} = [{10 + 180 * (i % side) / side:.1f}, {10 + 180 * (i // side) / side:.1f}]"
              for i in range(meters)]
    path.write_text("\n".join(lines) + "\n")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def timed_gets(host: str, port: int, paths: list[str], n: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """n rounds of one GET of each path, each path on its own keep-alive connection, interleaved so that the load
    of the machine weighs on every path alike: (seconds of each request, size of the body) by path."""
    conns = {p: http.client.HTTPConnection(host, port, timeout=60) for p in paths}
    times: dict[str, list[float]] = {p: [] for p in paths}
    sizes: dict[str, int] = {}
    for _ in range(n):
        for path, conn in conns.items():
            t0 = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            times[path].append(time.perf_counter() - t0)
            assert r.status == 200, (path, r.status, body[:200])
            sizes[path] = len(body)
    for conn in conns.values():
        conn.close()
    return times, sizes


def first_event(host: str, port: int, path: str) -> tuple[float, int]:
    """Seconds from opening the stream to its first complete `live` event; the event's size."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request("GET", path)
    r = conn.getresponse()
    assert r.status == 200
    buf = b""
    while b"event: live" not in buf or not buf.split(b"event: live", 1)[1].count(b"\n\n"):
        buf += r.read1(65536)
    dt = time.perf_counter() - t0
    conn.close()
    return dt, len(buf.split(b"event: live", 1)[1].split(b"\n\n", 1)[0])


class Watcher(threading.Thread):
    """One page's live stream: the arrival time of each event."""

    def __init__(self, host: str, port: int, path: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.host, self.port, self.path, self.stop = host, port, path, stop
        self.arrivals: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            conn.request("GET", self.path)
            r = conn.getresponse()
            buf = b""
            while not self.stop.is_set():
                buf += r.read1(65536)
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    if b"event: live" in block:
                        self.arrivals.append(time.perf_counter())
            conn.close()
        except BaseException as e:  # reported by main
            self.error = e


def view_build_times(db: str, n: int) -> list[float]:
    from slm.serve_data import FleetReader
    from slm.serve_live import site_view

    reader = FleetReader(db)
    try:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            view = site_view(reader, SITE)
            out.append(time.perf_counter() - t0)
        assert view is not None and all(m["live"] and m["minute"] for m in view["meters"])
        return out
    finally:
        reader.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meters", type=int, default=100)
    ap.add_argument("--minutes", type=int, default=60, help="records of this many minutes per meter")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--write-docs", action="store_true", help="write the section of docs/performance.md")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="slm-bench-serve-") as tmp:
        db = str(Path(tmp) / "fleet.sqlite")
        t0 = time.perf_counter()
        stored = fill(db, a.meters, a.minutes)
        fill_s = time.perf_counter() - t0
        size_mb = Path(db).stat().st_size / 1e6
        print(f"database: {a.meters} meters, {stored} records ({size_mb:.0f} MB), filled in {fill_s:.0f} s",
              flush=True)
        pos = Path(tmp) / "positions.toml"
        positions(pos, a.meters)
        proc = subprocess.Popen([sys.executable, "-c", "from slm.cli import main; main()", "serve", "--db", db,
                                 "--port", "0", "--positions", str(pos)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            m = re.search(r"http://([\d.]+):(\d+)/", proc.stderr.readline())
            assert m, "slm serve did not start"
            host, port = m.group(1), int(m.group(2))
            rows = []
            routes = [("static file (baseline)", "/static/serve.css"), ("site page (HTML)", f"/sites/{SITE}"),
                      ("site view (JSON, with the plan)", f"/api/sites/{SITE}"),
                      ("last hour's minutes (JSON)", f"/api/sites/{SITE}/history")]
            paths = [path for _, path in routes]
            timed_gets(host, port, paths, 20)  # warm-up
            times, sizes = timed_gets(host, port, paths, a.requests)
            for name, path in routes:
                rows.append((name, path, times[path], sizes[path]))
                print(f"{name}: p50 {1e3 * pct(times[path], 50):.1f} ms, p99 {1e3 * pct(times[path], 99):.1f} ms, "
                      f"{sizes[path]} bytes", flush=True)
            firsts = [first_event(host, port, f"/api/sites/{SITE}/live") for _ in range(max(10, a.requests // 10))]
            first_times, event_size = [f for f, _ in firsts], firsts[-1][1]
            print(f"live stream, first event: p50 {1e3 * pct(first_times, 50):.1f} ms, "
                  f"p99 {1e3 * pct(first_times, 99):.1f} ms, {event_size} bytes", flush=True)
            stop = threading.Event()
            watchers = [Watcher(host, port, f"/api/sites/{SITE}/live", stop) for _ in range(a.streams)]
            for w in watchers:
                w.start()
            time.sleep(2.0)  # every stream open
            cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
            loaded = []
            while time.perf_counter() - wall0 < a.seconds:
                t, _ = timed_gets(host, port, [f"/sites/{SITE}"], 1)
                loaded += t[f"/sites/{SITE}"]
                time.sleep(0.05)
            cpu_pct = 100 * (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - wall0)
            stop.set()
            for w in watchers:
                w.join(10)
                if w.error:
                    raise w.error
            gaps = [b - x for w in watchers for x, b in zip(w.arrivals, w.arrivals[1:]) if x >= wall0]
            print(f"{a.streams} streams: gap p50 {pct(gaps, 50):.3f} s p99 {pct(gaps, 99):.3f} s, server CPU "
                  f"{cpu_pct:.0f} %, page meanwhile p50 {1e3 * pct(loaded, 50):.1f} ms p99 "
                  f"{1e3 * pct(loaded, 99):.1f} ms", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
        builds = view_build_times(db, 50)
        print(f"view of {a.meters} meters built in-process: p50 {1e3 * pct(builds, 50):.1f} ms, "
              f"p99 {1e3 * pct(builds, 99):.1f} ms", flush=True)

    ms = lambda v: f"{1e3 * v:.1f} ms"  # noqa: E731
    load = os.getloadavg()[0]
    lines = [
        "## Web view (`slm serve`)",
        "",
        f"Generated by `bench/bench_serve.py --meters {a.meters} --requests {a.requests} --streams {a.streams}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} CPUs, CPython "
        f"{platform.python_version()}, load average {load:.1f} at the end. The database: SQLite, {a.meters} meters "
        f"on one site with {a.minutes} minutes of records each (a minute record a minute, an interval record a "
        f"second, a status every 10 s: {stored:,} records, {size_mb:.0f} MB), stored by the collector's code; "
        "`slm serve` in its own process, requests over loopback from this one, one at a time, each path on its own "
        "keep-alive connection, the paths taking turns (so the machine's load weighs on each alike).",
        "",
        "| request | p50 | p99 | size |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} `{path}` | {ms(pct(t, 50))} | {ms(pct(t, 99))} | {size:,} B |" for name, path, t, size in rows]
    lines += [
        f"| live stream `/api/sites/{SITE}/live`: open to the first event (a new connection each) | "
        f"{ms(pct(first_times, 50))} | {ms(pct(first_times, 99))} | {event_size:,} B an event |",
        f"| site page while {a.streams} live streams are open (a new connection each) | {ms(pct(loaded, 50))} | "
        f"{ms(pct(loaded, 99))} | |",
        f"| the view of {a.meters} meters built in-process (queries + states; at most twice a second per site) | "
        f"{ms(pct(builds, 50))} | {ms(pct(builds, 99))} | |",
        "",
        f"With {a.streams} pages watching, the events arrived {pct(gaps, 50):.3f} s apart (p50; p99 "
        f"{pct(gaps, 99):.3f} s) and the server used {cpu_pct:.0f} % of one core. The static file is the baseline "
        "(Starlette's StaticFiles: a stat and the file read in worker threads, no database); the page is a "
        "template kept in memory. The view is built at most twice a second per site whatever the number of "
        "pages and encoded once, so most JSON requests above were served from it, a rebuild costing the last row's "
        "time, and a page more costs the sending of one event a second. The history is the largest answer (every "
        "minute of the hour of every meter), fetched once when a page opens. The server's socket is made with "
        "`IPPROTO_TCP` so that asyncio sets TCP_NODELAY: without it every response on a keep-alive connection "
        "waited 40 ms for the client's delayed ACK (the first run of this bench: 44 ms for the static file).",
    ]
    text = "\n".join(lines)
    print(text)
    if a.write_docs:
        replace_section(REPO / "docs" / "performance.md", "serve", text)


if __name__ == "__main__":
    main()
