"""`slm provision`: the broker's security as files: a Mosquitto config (no anonymous clients), a password file with
one user per device (named by the device's id, its `serial`) and one for the collector, an ACL that lets a device
write only under its own id and the collector read everything, and each account's password in a file of its own.

Passwords are random (secrets), hashed as mosquitto_passwd does (`$7$`: PBKDF2-HMAC-SHA512, 12-byte salt), so
mosquitto_passwd itself is not needed. Running it again keeps the accounts that exist (their passwords unchanged)
and adds the new devices; `rotate` gives the named ones new passwords.

Each device also gets its record key (docs/verifying.md): 32 random bytes as 64 hex characters in
``keys/<device>.key`` (mode 0600, the folder 0700), the key its device signs its records with (installed by
`slm deploy --key` / `slm virtual --key`) and `slm verify` / `slm collect --keys` check them with. A key is made once
and kept on later runs; `rotate` makes the named devices new ones. No key is ever printed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path

from slm.errors import InputError
from slm.fleet_records import ID_RE

PBKDF2_ITERATIONS = 1000
COLLECTOR = "collector"
MOSQUITTO_CONF = "mosquitto.conf"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
SECRETS_DIR = "credentials"  # <account>.json: {"user", "password"}, mode 0600
KEYS_DIR = "keys"  # <device>.key: the device's record key, 64 hex characters, mode 0600
KEY_BYTES = 32


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The Mosquitto 2 password file hash of a password: `$7$ITERATIONS$SALT$HASH` (base64)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_text(collector: str) -> str:
    return (f"# slm provision: the collector reads everything of the fleet; a device writes only its own topics,\n"
            f"# slm/<site>/<its user name>/..., and reads nothing.\n"
            f"user {collector}\n"
            f"topic read slm/#\n"
            f"\n"
            f"pattern write slm/+/%u/#\n")


def config_text(folder: Path, port: int, tls_cert: str | None, tls_key: str | None, bind: str | None = None) -> str:
    lines = ["# slm provision: Mosquitto 2 for a fleet of slm meters (docs/network.md)",
             "per_listener_settings false",
             "allow_anonymous false",
             f"password_file {folder / PASSWORD_FILE}",
             f"acl_file {folder / ACL_FILE}",
             "# the collector's persistent session keeps what it missed while it was away",
             "persistence true",
             f"persistence_location {folder}/",
             "max_queued_messages 1000000",
             "max_inflight_messages 1000",
             ""]
    listener = f"listener {port} {bind}" if bind else f"listener {port}"
    if tls_cert:
        lines += [listener, f"certfile {tls_cert}", f"keyfile {tls_key}", "tls_version tlsv1.2"]
    else:
        lines += [listener,
                  "# TLS: give `slm provision --tls-cert CERT --tls-key KEY` (then clients use --tls CA)"]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _accounts(secrets_dir: Path) -> dict[str, str]:
    out = {}
    if secrets_dir.is_dir():
        for f in sorted(secrets_dir.glob("*.json")):
            try:
                data = json.loads(f.read_text())
                out[data["user"]] = data["password"]
            except (OSError, ValueError, KeyError, TypeError):
                raise InputError(f"{f}: not a credentials file of slm provision") from None
    return out


def key_path(keys_dir: str | os.PathLike[str], device: str) -> Path:
    return Path(keys_dir) / f"{device}.key"


def make_keys(keys_dir: Path, devices: list[str], rotate: tuple[str, ...] = ()) -> list[str]:
    """A record key for each device that has none (or is in ``rotate``); returns the devices given a new key."""
    keys_dir.mkdir(mode=0o700, exist_ok=True)
    made = []
    for device in devices:
        path = key_path(keys_dir, device)
        if path.exists() and device not in rotate:
            continue
        _write(path, secrets.token_bytes(KEY_BYTES).hex() + "\n", private=True)
        made.append(device)
    return made


def provision(out_dir: str, devices: list[str], collector: str = COLLECTOR, port: int = 1883,
              tls_cert: str | None = None, tls_key: str | None = None, rotate: tuple[str, ...] = (),
              config_dir: str | None = None, bind: str | None = None) -> dict:
    """Write (or update) the files in out_dir; returns {accounts: [...], added: [...], files: [...]}."""
    for name in list(devices) + [collector]:
        if not ID_RE.match(name):
            raise InputError(f"{name!r}: an account name is 1-64 letters, digits, '-' or '_'")
    if collector in devices:
        raise InputError(f"{collector!r} is the collector's account, not a device")
    if bool(tls_cert) != bool(tls_key):
        raise InputError("--tls-cert and --tls-key go together")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    secrets_dir = folder / SECRETS_DIR
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    accounts = _accounts(secrets_dir)
    unknown = [r for r in rotate if r not in accounts and r not in devices and r != collector]
    if unknown:
        raise InputError(f"--rotate {unknown[0]}: no such account")
    added = []
    for name in [collector, *devices]:
        if name not in accounts or name in rotate:
            if name not in accounts:
                added.append(name)
            accounts[name] = secrets.token_urlsafe(18)
            _write(secrets_dir / f"{name}.json", json.dumps({"user": name, "password": accounts[name]}) + "\n",
                   private=True)
    _write(folder / PASSWORD_FILE, "".join(f"{u}:{hash_password(p)}\n" for u, p in sorted(accounts.items())),
           private=True)
    _write(folder / ACL_FILE, acl_text(collector))
    where = Path(config_dir) if config_dir else folder.resolve()
    _write(folder / MOSQUITTO_CONF, config_text(where, port, tls_cert, tls_key, bind))
    _write(folder / f"{collector}.password", accounts[collector] + "\n", private=True)
    keys = make_keys(folder / KEYS_DIR, sorted(a for a in accounts if a != collector), rotate)
    return {"accounts": sorted(accounts), "added": added, "keys_made": keys,
            "files": [MOSQUITTO_CONF, PASSWORD_FILE, ACL_FILE, f"{SECRETS_DIR}/", f"{collector}.password",
                      f"{KEYS_DIR}/"]}
