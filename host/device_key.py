"""A device key file for `slm deploy --key FILE` and `slm virtual --key FILE` (docs/evidence.md): 64 hex digits
(the form `slm provision` keeps in its keystore, <folder>/keys/<device_id>.key) or 32 raw bytes. The key itself is
never printed; ``key_id`` (the first 8 hex digits of its SHA-256) names it."""

from __future__ import annotations

import os
import string
from pathlib import Path

from slm.errors import InputError
from slm.firmware import chain

DEVICE_KEY_FILE = "slm_key.bin"  # firmware/audit.py KEY_FILE: the key on the device's filesystem
KEY_BYTES = 32


class KeyFileError(InputError):
    """A key file that cannot be read or is not a key (exit 2)."""


def read_key(path: str | os.PathLike) -> bytes:
    """The 32-byte key in ``path``: 64 hex digits (whitespace around them allowed) or exactly 32 bytes."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"key file {path}: {e.strerror or e}") from None
    text = data.strip()
    if len(text) == 2 * KEY_BYTES and all(chr(c) in string.hexdigits for c in text):
        return bytes.fromhex(text.decode())
    if len(data) == KEY_BYTES:
        return data
    raise KeyFileError(f"key file {path}: not a key (64 hex digits or 32 bytes, as `slm provision` writes)")


def key_id(key: bytes) -> str:
    return chain.key_id(key)
