"""A virtual board's filesystem: what a board's flash holds after `slm deploy`, plus the FIFO its audio comes through.

firmware/*.py (not __init__.py, stream_runner.py), board.json (the board profile's ``device_config()`` plus
``"audio_path": "audio.fifo"``), device_id.txt (the serial number: ``virtual-<hash of the directory>``, kept once
written), config.json as the firmware saves it (``{}`` on a fresh board), rtc.json (the board's clock, written by the
feeder when it opens a FIFO; here only marked as following the audio), lib/ (firmware/lib: umqtt.simple), net.json
when the board is given a broker, slm_key.bin (mode 0600) when it is given a key, and the FIFO audio.fifo. A given
directory keeps its files across runs (only the FIFO is removed); a temporary one is removed entirely.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from slm.resources import firmware_dir
from slm.virtual.errors import VirtualBoardError

FIFO_NAME = "audio.fifo"
RTC_NAME = "rtc.json"
KEY_NAME = "slm_key.bin"  # firmware/audit.py KEY_FILE
SKIP_FILES = ("__init__.py", "stream_runner.py")


class DeviceDirectory:
    """``prepare()`` lays out the files (``path``, ``serial`` are set then), ``fresh_fifo()`` makes a new audio FIFO,
    ``clean_up()`` removes the directory (temporary) or the FIFO (given)."""

    def __init__(self, given: str | os.PathLike | None, device_config: dict, net: dict | None = None,
                 key: bytes | None = None):
        self.given = Path(given) if given is not None else None
        self.device_config = device_config
        self.net = net  # net.json's settings (the board publishes to a broker), None: leave net.json as it is
        self.key = key  # the device key (32 bytes) to install as slm_key.bin, None: leave it as it is
        self.path: Path | None = None
        self.serial: str | None = None

    @property
    def fifo_path(self) -> Path:
        return self.path / FIFO_NAME

    @property
    def rtc_path(self) -> Path:
        return self.path / RTC_NAME

    def prepare(self) -> None:
        if self.given is None:
            self.path = Path(tempfile.mkdtemp(prefix="slm-virtual-"))
        else:
            self.path = self.given.resolve()
            self.path.mkdir(parents=True, exist_ok=True)
        d = self.path
        sources = [src for src in sorted(Path(firmware_dir()).glob("*.py")) if src.name not in SKIP_FILES]
        if not any(src.name == "main.py" for src in sources):
            raise VirtualBoardError(f"no firmware in {firmware_dir()} (main.py missing)")
        for src in sources:
            shutil.copyfile(src, d / src.name)
        lib = Path(firmware_dir()) / "lib"  # libraries the firmware imports (umqtt.simple), as `slm deploy` puts them
        if lib.is_dir():
            shutil.copytree(lib, d / "lib", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.md"))
        board = dict(self.device_config)
        board["audio_path"] = FIFO_NAME
        tmp = d / "board.tmp"
        tmp.write_text(json.dumps(board))
        os.replace(tmp, d / "board.json")
        (d / RTC_NAME).write_text(json.dumps({"follows_audio": True}))  # the feeder writes the time
        if self.net is not None:
            (d / "net.json").write_text(json.dumps(self.net))
        if self.key is not None:  # the firmware notices a new key at boot: an audit `key` entry starts its chains
            tmp = d / (KEY_NAME + ".part")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.key)
            os.replace(tmp, d / KEY_NAME)
        config = d / "config.json"
        if not config.exists():  # a freshly set-up board runs on the defaults (a lost file is a fault, this is not)
            config.write_text("{}")
        id_file = d / "device_id.txt"
        try:
            self.serial = id_file.read_text().strip() or None
        except OSError:
            self.serial = None
        if not self.serial:
            self.serial = "virtual-" + hashlib.sha1(str(d).encode()).hexdigest()[:12]
            id_file.write_text(self.serial + "\n")

    def fresh_fifo(self) -> None:
        """A new FIFO for a new process: it never reads a dead one's leftover words."""
        try:
            os.unlink(self.fifo_path)
        except FileNotFoundError:
            pass
        os.mkfifo(self.fifo_path, 0o600)

    def clean_up(self) -> None:
        if self.path is None:
            return
        if self.given is None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            if stat.S_ISFIFO(os.lstat(self.fifo_path).st_mode):
                os.unlink(self.fifo_path)
        except OSError:
            pass
