"""Helpers of the collector tests: a collector running on its own thread against a broker and a database, and
waiting on what the database holds (event waits with generous timeouts, never a fixed sleep)."""

from __future__ import annotations

import threading
import time

from slm.collect import Broker, run
from slm.fleet_db import open_db

WAIT_S = 180.0  # generous: a loaded 2-core machine


class RunningCollector:
    """`slm collect`'s loop (slm.collect.run) on a thread; `stop()` returns its counts."""

    def __init__(self, broker_port: int, db_url: str, client_id: str, user: str | None = None,
                 password: str | None = None, ca_file: str | None = None, keys: dict[str, bytes] | None = None,
                 share: str | None = None):
        self.stop_event = threading.Event()
        self.counts = None
        self.error: BaseException | None = None
        self.lines: list[str] = []
        self.subscribed = threading.Semaphore(0)
        broker = Broker("127.0.0.1", broker_port, user, password, ca_file)
        db = open_db(db_url)

        def log(line: str) -> None:
            self.lines.append(line)
            if line.startswith("subscribed"):
                self.subscribed.release()

        def main() -> None:
            try:
                self.counts = run(db, broker, client_id=client_id, stop=self.stop_event, log=log, keys=keys,
                                  share=share)
            except BaseException as e:  # reported by stop()
                self.error = e

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()

    def wait_subscribed(self, timeout: float = WAIT_S) -> None:
        assert self.subscribed.acquire(timeout=timeout), f"the collector did not subscribe: {self.lines}"

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self):
        self.stop_event.set()
        self.thread.join(timeout=WAIT_S)
        assert not self.thread.is_alive(), "the collector did not stop"
        if self.error is not None:
            raise self.error
        return self.counts


def count(db_url: str, sql: str, params: tuple = ()) -> int:
    db = open_db(db_url)
    try:
        return db.query(sql, params)[0][0]
    finally:
        db.close()


def wait_until(predicate, what: str, timeout: float = WAIT_S, collector: RunningCollector | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if collector is not None and not collector.alive():
            raise AssertionError(f"the collector ended while waiting for {what}: {collector.error!r}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
