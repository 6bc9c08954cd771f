"""Real services for the tests: a Mosquitto 2 broker and a PostgreSQL server on 127.0.0.1, on free ports, each in
its own temporary folder, stopped and removed afterwards (`make services` installs them; see tests/ensure_services.sh).

PostgreSQL refuses to run as root: as root the server runs as the `postgres` system user (or `nobody`), in a folder
that user owns, through subprocess's own `user=`/`group=` switch (no sudo, no su)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 60.0  # generous: a loaded 2-core machine


class ServiceMissing(RuntimeError):
    """A service program is not installed (the message says what to install)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until something accepts connections on 127.0.0.1:port; fail if the process ended first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it listened on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s:.0f} s")


def find_program(name: str, extra_globs: tuple[str, ...] = ()) -> str:
    """The path of a program: PATH, then /usr/sbin and /usr/local/sbin (Debian puts mosquitto there), then the given
    globs (the newest match first)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    for pattern in extra_globs:
        matches = sorted(glob.glob(pattern), key=_version_key, reverse=True)
        if matches:
            return matches[0]
    raise ServiceMissing(f"{name} not found: install it with `apt-get install mosquitto postgresql` "
                         "(or run `make services` as root)")


def _version_key(path: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in Path(path).parts)


def mosquitto_program() -> str:
    return find_program("mosquitto")


def postgres_bin_dir() -> Path:
    """The folder of initdb, pg_ctl and postgres: Debian keeps them in /usr/lib/postgresql/<version>/bin."""
    initdb = Path(find_program("initdb", ("/usr/lib/postgresql/*/bin/initdb",))).resolve()
    return initdb.parent


def _mosquitto_user(folder: Path) -> str:
    """Started as root, mosquitto switches to the user `mosquitto` (Debian's package makes it): that user gets the
    folder, for its persistence file. Not root: nothing to switch."""
    if os.geteuid() != 0:
        return ""
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return "user root"
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)
    return "user mosquitto"


class Mosquitto:
    """A Mosquitto broker on 127.0.0.1:port. `extra_config` lines are added to the generated config (e.g. the
    security lines of `slm provision`). Persistence is on, in its folder, so a restart keeps the sessions and the
    QoS 1 messages queued for them, as a production broker does."""

    def __init__(self, extra_config: str = "", anonymous: bool = True, port: int | None = None,
                 config_file: Path | None = None):
        """`config_file`: run with that config instead (it must open `port` on 127.0.0.1); its folder is given
        to the user mosquitto switches to, as for the generated one."""
        self.program = mosquitto_program()
        self.folder = Path(tempfile.mkdtemp(prefix="slm-mosquitto-"))
        self.port = port or free_port()
        self.config = self.folder / "mosquitto.conf"
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "mosquitto.log"
        if config_file is not None:
            self.config = Path(config_file)
            _mosquitto_user(self.config.parent)
            return
        lines = [f"listener {self.port} 127.0.0.1",
                 f"allow_anonymous {'true' if anonymous else 'false'}",
                 "persistence true",
                 f"persistence_location {self.folder}/",
                 "autosave_interval 1",
                 "log_dest stderr",
                 "log_type error",
                 "log_type warning",
                 "max_queued_messages 100000",
                 "max_inflight_messages 1000",  # as slm provision writes it: acks after commit need a window
                 _mosquitto_user(self.folder),
                 extra_config]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Mosquitto":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.program, "-c", str(self.config)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, f"mosquitto (log: {self.log})")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def _service_user() -> pwd.struct_passwd | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServiceMissing("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")


class Postgres:
    """A PostgreSQL server on 127.0.0.1:port with a database `slm` (trust authentication, user `slm`), its data in a
    temporary folder; fsync off (a test server)."""

    def __init__(self, port: int | None = None):
        self.bin = postgres_bin_dir()
        self.user = _service_user()
        self.folder = Path(tempfile.mkdtemp(prefix="slm-postgres-"))
        self.data = self.folder / "data"
        self.port = port or free_port()
        self.log = self.folder / "postgres.log"
        if self.user is not None:
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://slm@127.0.0.1:{self.port}/slm"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=self.folder,
                              timeout=START_TIMEOUT_S * 2, **kwargs)

    def start(self) -> "Postgres":
        done = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "slm", "--auth=trust", "-E", "UTF8",
                         "--locale=C", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()[-500:]}")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -F -c fsync=off -c full_page_writes=off"
        done = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts,
                         "-w", "-t", str(int(START_TIMEOUT_S)), "start")
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {done.stderr.strip()[-300:]} {log}")
        done = self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "slm", "slm")
        if done.returncode != 0:
            raise RuntimeError(f"createdb failed: {done.stderr.strip()[-300:]}")
        return self

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
