"""`slm demo`'s fleet: a local Mosquitto on 127.0.0.1, the net.json that makes virtual boards publish to it
(firmware/net.py), and `slm collect`'s loop storing what they publish into a fleet database (docs/network.md)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from slm.errors import OperationError

SITE = "square"
START_TIMEOUT_S = 20.0


class DemoFleetError(OperationError):
    """The demo's broker could not be started."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mosquitto() -> str:
    for path in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if path and os.access(path, os.X_OK):
            return path
    raise DemoFleetError("slm demo: the fleet needs Mosquitto 2 (apt-get install mosquitto); "
                         "or run the serial demo: slm demo --serial")


class DemoFleet:
    """A context manager: the broker started, the collector subscribed (into ``db_url``, default a temporary
    SQLite file, removed on exit); ``net`` is the boards' net.json; ``summary()`` what the database holds."""

    def __init__(self, db_url: str | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="slm-demo-broker-"))
        self.db_url = db_url or str(self.folder / "fleet.sqlite")
        self.temporary = db_url is None
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.counts = None
        self.error: BaseException | None = None
        self.subscribed = threading.Event()

    @property
    def net(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "site": SITE, "intervals": True}  # the live level

    def __enter__(self) -> "DemoFleet":
        try:
            self._start_broker()
            self._start_collector()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start_broker(self) -> None:
        config = self.folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "log_dest stderr", "log_type error"]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto switches to its own user, which cannot read this folder
        config.write_text("\n".join(lines) + "\n")
        log = open(self.folder / "mosquitto.log", "wb")
        self.proc = subprocess.Popen([_mosquitto(), "-c", str(config)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoFleetError(f"slm demo: mosquitto exited ({self.folder / 'mosquitto.log'}): "
                                     f"{(self.folder / 'mosquitto.log').read_text()[-200:].strip()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise DemoFleetError(f"slm demo: mosquitto did not listen on 127.0.0.1:{self.port}")

    def _start_collector(self) -> None:
        from slm.collect import Broker, run
        from slm.fleet_db import open_db

        db = open_db(self.db_url)  # run() closes it

        def log(line: str) -> None:
            if line.startswith("subscribed"):
                self.subscribed.set()

        def main() -> None:
            try:
                self.counts = run(db, Broker("127.0.0.1", self.port), client_id="slm-demo-collect",
                                  stop=self.stop_event, log=log)
            except BaseException as e:  # reported when starting; later the summary shows what was stored
                self.error = e
                self.subscribed.set()

        self.thread = threading.Thread(target=main, daemon=True, name="slm-demo-collect")
        self.thread.start()
        self.subscribed.wait(START_TIMEOUT_S)
        if self.error is not None:
            raise self.error

    def summary(self) -> dict:
        """What the collector has stored: minutes and events per device, and the last status's network counts."""
        from slm.fleet_db import open_db

        db = open_db(self.db_url)
        try:
            minutes = dict(db.query("SELECT device, count(*) FROM minutes GROUP BY device"))
            events = dict(db.query("SELECT device, count(*) FROM events GROUP BY device"))
            devices = [row[0] for row in db.query("SELECT device FROM devices ORDER BY device")]
        finally:
            db.close()
        return {"broker": f"mqtt://127.0.0.1:{self.port}", "db": self.db_url, "db_kept": not self.temporary,
                "devices": {d: {"minutes": minutes.get(d, 0), "events": events.get(d, 0)} for d in devices}}

    def close(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)  # the broker's files, and the default (temporary) database
