"""Load bench of `slm collect`: N simulated devices publish through a real Mosquitto (each: RATE interval records a
second and one minute record a minute), the collector (its own process) stores them into SQLite and PostgreSQL.
Prints records/s offered and stored, the collector's CPU (% of one core), the latency from publish to a row that
a reader can see (p50/p99, polled every 50 ms, so ±50 ms), and its part up to the collector's receipt (recv p50:
the publisher's queue and the broker), and records stored per CPU second of the collector (its capacity on one
core, the figure that holds on a loaded machine, where the collector gets only a share of a core).

    .venv/bin/python bench/bench_collect.py [--devices 1000] [--rate 2] [--seconds 20] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt  # noqa: E402

from slm.fleet_db import open_db  # noqa: E402
from tests.fleet_payloads import START, device_id, iso, topic  # noqa: E402
from tests.services import Mosquitto, Postgres  # noqa: E402

PUBLISHERS = 4  # connections the load generator uses (the broker does not care which device is on which)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def interval_record(n: int, k: int, rate: int) -> dict:
    t = START + timedelta(seconds=k / rate)
    return {"t": "interval", "seq": k, "ms": int(1000 * k / rate), "utc": iso(t), "start_ms": int(1000 * k / rate),
            "end_ms": int(1000 * (k + 1) / rate), "LAeq": 61.23, "LCeq": 66.1, "LZeq": 70.02, "LAFmax": 66.5,
            "LAFmin": 55.0, "LASmax": 64.0, "LASmin": 57.25, "LCpeak": 88.8, "LZpeak": 90.1, "LAE": 58.2,
            "LA10": 63.0, "LA50": 60.5, "LA90": 57.75, "overload": False, "underrange": False}


def minute_record(k: int) -> dict:
    t = START + timedelta(minutes=k)
    return {"t": "minute", "seq": k, "ms": 60000 * (k + 1), "utc": iso(t + timedelta(minutes=1)), "start": iso(t),
            "local": "20:00", "s": 60, "LAeq": 61.2, "LAFmax": 75.5, "LA10": 64.0, "LA50": 60.0, "LA90": 56.5,
            "LCpeak": 90.0, "overload": False, "band": "day", "limit": 65.0, "over": False}


class Load:
    """Publishes the fleet's records paced in 100 ms ticks from PUBLISHERS connections; keeps the publish time of
    every interval record by (device, utc)."""

    def __init__(self, port: int, devices: int, rate: int, seconds: float):
        self.devices, self.rate, self.seconds = devices, rate, seconds
        self.sent_at: dict[tuple[str, str], float] = {}
        self.sent = 0
        self.clients = []
        for i in range(PUBLISHERS):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"load-{i}-{os.getpid()}")
            c.max_inflight_messages_set(2000)
            c.max_queued_messages_set(0)
            c.connect("127.0.0.1", port)
            c.loop_start()
            self.clients.append(c)

    def run(self) -> None:
        ids = [device_id(i) for i in range(self.devices)]
        t0 = time.monotonic()
        tick = 0
        infos = []
        while tick * 0.1 < self.seconds:
            target = t0 + tick * 0.1
            while time.monotonic() < target:
                time.sleep(0.002)
            second, part = divmod(tick, 10)
            for n, dev in enumerate(ids):
                client = self.clients[n % PUBLISHERS]
                # RATE records a second, spread over the ticks; device n's minute at second n % 60 of each minute
                for j in range(self.rate):
                    if (j * 10) // self.rate == part:
                        k = second * self.rate + j
                        rec = interval_record(n, k, self.rate)
                        self.sent_at[(dev, rec["utc"])] = time.time()
                        infos.append(client.publish(topic(dev, "interval"), json.dumps(rec), qos=1))
                        self.sent += 1
                if part == 0 and second % 60 == n % 60:
                    infos.append(client.publish(topic(dev, "minute"), json.dumps(minute_record(second // 60)),
                                                qos=1))
                    self.sent += 1
            tick += 1
        for info in infos:
            info.wait_for_publish(timeout=300)
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


def bench(db_url: str, label: str, broker: Mosquitto, devices: int, rate: int, seconds: float) -> dict:
    collector = subprocess.Popen([sys.executable, "-m", "slm.cli", "collect", "--broker", broker.url, "--db", db_url,
                                  "--client-id", f"bench-{label}", "--json"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = collector.stderr.readline()
    assert "subscribed" in line, line
    db = open_db(db_url)
    seen_at: dict[tuple[str, str], float] = {}
    received_at: dict[tuple[str, str], float] = {}
    stop = threading.Event()

    def poll() -> None:
        last = ""
        while not stop.is_set():
            rows = db.query("SELECT device, utc, received FROM intervals WHERE received >= ?", (last,))
            now = time.time()
            for device, utc, received in rows:
                seen_at.setdefault((device, utc), now)
                received_at.setdefault((device, utc), datetime.strptime(received, "%Y-%m-%dT%H:%M:%S.%fZ")
                                       .replace(tzinfo=timezone.utc).timestamp())
                last = max(last, received)
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    load = Load(broker.port, devices, rate, seconds)
    cpu0, wall0 = cpu_seconds(collector.pid), time.monotonic()
    load.run()
    deadline = time.monotonic() + 300
    expected = sum(1 for _ in load.sent_at)
    while len(seen_at) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu1, wall1 = cpu_seconds(collector.pid), time.monotonic()
    stop.set()
    poller.join()
    minutes = db.query("SELECT count(*) FROM minutes")[0][0]
    db.close()
    collector.terminate()
    out, err = collector.communicate(timeout=120)
    latencies = sorted(seen_at[k] - load.sent_at[k] for k in seen_at if k in load.sent_at)
    to_collector = sorted(received_at[k] - load.sent_at[k] for k in received_at if k in load.sent_at)
    return {"db": label, "devices": devices, "offered_per_s": round(load.sent / seconds),
            "stored": len(seen_at) + minutes, "sent": load.sent,
            "stored_per_s": round((len(seen_at) + minutes) / (wall1 - wall0)),
            "collector_cpu_pct": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 1),
            "records_per_cpu_s": round((len(seen_at) + minutes) / max(cpu1 - cpu0, 1e-9)),
            "latency_p50_ms": round(1000 * statistics.median(latencies)) if latencies else None,
            "latency_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))]) if latencies else None,
            "to_collector_p50_ms": round(1000 * statistics.median(to_collector)) if to_collector else None,
            "summary": json.loads(out) if out.strip() else err.strip()[-200:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=2, help="interval records per device per second")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--db", default="sqlite,postgresql")
    args = ap.parse_args()
    results = []
    with Mosquitto() as broker:
        for engine in args.db.split(","):
            if engine == "sqlite":
                with tempfile.TemporaryDirectory() as d:
                    results.append(bench(str(Path(d) / "fleet.sqlite"), "sqlite", broker, args.devices, args.rate,
                                         args.seconds))
            else:
                with Postgres() as pg:
                    results.append(bench(pg.url, "postgresql", broker, args.devices, args.rate, args.seconds))
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "summary"}))
    print(f"{'db':<11} {'devices':>7} {'offered/s':>9} {'stored/s':>8} {'stored':>7} {'sent':>7} {'CPU %':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'recv p50':>8} {'rec/CPU s':>9}")
    for r in results:
        print(f"{r['db']:<11} {r['devices']:>7} {r['offered_per_s']:>9} {r['stored_per_s']:>8} {r['stored']:>7} "
              f"{r['sent']:>7} {r['collector_cpu_pct']:>6} {r['latency_p50_ms']:>7} {r['latency_p99_ms']:>7} "
              f"{r['to_collector_p50_ms']:>8} {r['records_per_cpu_s']:>9}")


if __name__ == "__main__":
    main()
