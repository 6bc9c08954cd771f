"""The fleet end to end: four virtual boards (the real firmware on the MicroPython unix port) measure a stretch of
seeded audio each and publish through a real Mosquitto into two `slm collect` loops at once, one into SQLite and one
into PostgreSQL (tests/services.py); the broker is stopped for a while and started again. Every minute record is
stored exactly once in both databases, equal to what its board sent over serial, and first arrived in the order
measured (store-and-forward from each board's ring, docs/network.md)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.collect_helpers import WAIT_S, RunningCollector, count, wait_until
from tests.services import Mosquitto, Postgres
from tests.test_collect import minute_columns, stored_minutes
from tests.test_minute import BAND_60, make_device
from tests.test_net_device import (START, Arrivals, SeededAudio, fifo_audio, networked, restart_briefly,
                                   start_board)

pytestmark = pytest.mark.micropython

BOARDS = 4


def fleet_through_a_broker_outage(tmp_path: Path, audio_s: int, pace: float, outage_minutes: int) -> None:
    devices = [f"fleet{i}{uuid.uuid4().hex[:6]}" for i in range(BOARDS)]
    sqlite = str(tmp_path / "fleet.sqlite")
    with Postgres() as pg, Mosquitto() as broker:
        dbs = [sqlite, pg.url]
        collectors = [RunningCollector(broker.port, db, f"collect-{i}-{uuid.uuid4().hex[:6]}")
                      for i, db in enumerate(dbs)]
        for c in collectors:
            c.wait_subscribed()
        arrivals = [Arrivals(broker.port, device) for device in devices]
        for a in arrivals:
            assert a.subscribed.wait(WAIT_S)
        boards = []
        for i, device in enumerate(devices):
            d = networked(make_device(tmp_path, [], START, {"bands": BAND_60, "episode_min_minutes": 1,
                                                            "status_s": 20}, name=device), broker.port, device)
            audio = SeededAudio(fifo_audio(d), audio_s, seed=100 + i, pace=pace)
            audio.start()
            boards.append((d, audio) + start_board(d))
        try:
            def minutes_measured():
                return [len(serial.minutes()) for _, _, _, serial in boards]

            wait_until(lambda: all(count(db, "SELECT count(*) FROM minutes") >= 2 * BOARDS for db in dbs),
                       "the first minutes of every board stored")
            broker.stop()
            down_at = minutes_measured()
            wait_until(lambda: all(n >= m + outage_minutes for n, m in zip(minutes_measured(), down_at)),
                       f"{outage_minutes} minutes measured by every board with the broker down",
                       timeout=outage_minutes * 60 * pace + WAIT_S)
            broker.start()
            for _, _, proc, serial in boards:
                wait_until(lambda: any(r["t"] == "status" and r["net"]["connects"] >= 2 for r in list(serial.records)),
                           "every board back on the broker")
        finally:
            for _, audio, proc, serial in boards:
                audio.join(timeout=audio_s * pace + WAIT_S)  # the stretch plays to its end
                audio.stop.set()
            for _, audio, proc, serial in boards:
                proc.wait(timeout=WAIT_S)
                serial.join(timeout=WAIT_S)
        sent = {}
        for (d, audio, proc, serial), device in zip(boards, devices):
            assert proc.returncode == 0, proc.stderr.read().decode()
            assert audio.error is None
            statuses = [r for r in serial.records if r["t"] == "status"]
            assert max(s["net"]["backlog"] for s in statuses) >= outage_minutes  # it did keep them back
            assert max(s["net"]["dropped"] for s in statuses) == 0
            second = restart_briefly(d, "2026-07-15T18:00:00.000Z")  # what the end of its run left unsent
            sent[device] = serial.minutes() + [r for r in second if r["t"] == "minute"]
            assert len(sent[device]) == audio_s // 60
        total = sum(len(m) for m in sent.values())
        for db, c in zip(dbs, collectors):
            wait_until(lambda: count(db, "SELECT count(*) FROM minutes") == total, f"every minute stored in {db}",
                       collector=c)
        for a, device in zip(arrivals, devices):
            wait_until(lambda: len(set(a.starts)) == len(sent[device]), "every minute seen by the subscriber")
            a.close()
        counts = [c.stop() for c in collectors]

        expected = {(device, r["start"]): minute_columns(r) for device, minutes in sent.items() for r in minutes}
        for db, c in zip(dbs, counts):
            assert count(db, "SELECT count(*) FROM minutes") == total  # each once (and nothing else)
            assert stored_minutes(db) == expected, db
            assert sum(c.rejected.values()) == 0
        for a, device in zip(arrivals, devices):
            assert list(dict.fromkeys(a.starts)) == [r["start"] for r in sent[device]]  # first arrivals in order
    print(f"{BOARDS} boards, {total} minutes, stored once in SQLite and PostgreSQL through a broker outage; "
          f"duplicates dropped by the collectors: {[json.dumps(c.duplicates) for c in counts]}")


def test_four_boards_through_a_broker_outage_into_sqlite_and_postgresql(tmp_path):
    # 12 device minutes a board at 20 device seconds per wall second (36 s), the broker down for 3 of them
    fleet_through_a_broker_outage(tmp_path, audio_s=720, pace=0.05, outage_minutes=3)


@pytest.mark.slow
def test_four_boards_of_an_evening_through_a_five_minute_broker_outage(tmp_path):
    # 4 device hours a board at 20 device seconds per wall second (12 min), the broker down for 5 wall minutes
    fleet_through_a_broker_outage(tmp_path, audio_s=4 * 3600, pace=0.05, outage_minutes=100)
