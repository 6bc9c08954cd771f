"""Device protocol line format (docs/protocol.md): encode host commands, parse device lines, nothing else.

One line is a JSON object, ``*``, the CRC-32 (zlib) of the JSON bytes as 8 lowercase hex digits, then ``\\n``
(a ``\\r`` before it is ignored)::

    {"t":"level","seq":412,"ms":41230,"LAF":71.43}*5e1f0a3c

``parse_line`` sorts every line the serial port delivers into one of three kinds:

- a protocol line: returns the decoded object (a ``dict``; a device record has ``t``, a host command has ``cmd``);
- not a protocol line (REPL banners, tracebacks, ``print`` output, blank lines): returns ``None``;
- a line that looks like a record (starts with ``{`` and contains ``*``) but is not one — wrong checksum, bad
  JSON, not an object, a checksum that is not 8 lowercase hex digits — or any line over ``MAX_LINE`` bytes:
  raises ``BadLine``. The caller counts these (``bad_lines``). A line whose checksum is wrong is never accepted.
  A line whose checksum is right but whose text is not UTF-8 is accepted with U+FFFD for the bad bytes.

``BadLine`` is the only exception ``parse_line`` raises for ``bytes`` input. No I/O, no state: a few µs a line.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

PROTOCOL_VERSION = 2
"""The protocol version this host speaks (docs/protocol.md); 2: the limit schedule, minutes, episodes, the clock."""
MAX_LINE = 1024
"""Longest line in bytes, without its ``\\n`` (and the ``\\r`` before it): JSON, ``*`` and the 8 checksum digits."""

_HEX = frozenset(b"0123456789abcdef")


class BadLine(ValueError):
    """A line that looks like a protocol line but is not one (checksum, JSON, length); ``reason`` says which."""

    def __init__(self, reason: str, line: bytes = b""):
        super().__init__(reason)
        self.reason = reason
        self.line = bytes(line[:80])


def _body(raw: bytes) -> bytes:
    """The line without its terminator (``\\n``, ``\\r\\n``)."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw


def _verify(line: bytes) -> dict[str, Any]:
    """Check and decode ``JSON*crc`` (already known to start with ``{``); raise BadLine."""
    star = line.rfind(b"*")
    if star < 0:
        raise BadLine("no checksum", line)
    text, crc = line[:star], line[star + 1:]
    if len(crc) != 8 or not _HEX.issuperset(crc):
        raise BadLine("checksum is not 8 lowercase hex digits", line)
    if zlib.crc32(text) != int(crc, 16):
        raise BadLine("checksum mismatch", line)
    try:
        # Bytes that are not UTF-8 under a matching checksum are what the device sent: older firmware stored text
        # unchecked (a lone surrogate as ED BF BF) and repeats it in every hello. Refusing the line would lock the
        # board out of every host tool, so the bad bytes become U+FFFD and the rest of the record is kept.
        obj = json.loads(text.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        raise BadLine("checksum matches but the text is not JSON", line) from None
    if not isinstance(obj, dict):
        raise BadLine("checksum matches but the JSON is not an object", line)
    return obj


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """One received line (with or without its ``\\n``) -> the protocol object, or ``None`` for non-protocol text.

    Raises ``BadLine`` for lines over ``MAX_LINE`` bytes and for lines that start with ``{`` and contain ``*`` but
    fail the checksum or the JSON. A line with leftover console text before the record (``garbage{...}*crc``, as
    after a boot message without a newline) is accepted when some ``{`` in it starts a text that passes the
    checksum; if none does it is noise, not a bad line.
    """
    line = _body(bytes(raw))
    if len(line) > MAX_LINE:
        raise BadLine("line longer than %d bytes" % MAX_LINE, line)
    if line.startswith(b"{"):
        if b"*" not in line:
            return None  # a brace at the start of some printed text, not a record
        return _verify(line)
    # Console text glued to the front of a record: try each "{" (few, and only on non-record lines).
    start = line.find(b"{")
    while start > 0 and b"*" in line[start:]:
        try:
            return _verify(line[start:])
        except BadLine:
            start = line.find(b"{", start + 1)
    return None


def encode_line(obj: dict[str, Any]) -> bytes:
    """A dict -> ``JSON*crc\\n`` (compact JSON, UTF-8). ValueError if it is not JSON-able or exceeds ``MAX_LINE``."""
    if not isinstance(obj, dict):
        raise TypeError("a protocol line holds a JSON object, not %s" % type(obj).__name__)
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    line = b"%s*%08x" % (text, zlib.crc32(text))
    if len(line) > MAX_LINE:
        raise ValueError("protocol line of %d bytes exceeds %d" % (len(line), MAX_LINE))
    return line + b"\n"


def command(cmd: str, id: int | None = None, **fields: Any) -> bytes:  # noqa: A002 - the protocol's field name
    """A host command line: ``command("set", 7, values={"stream_hz": 10})`` -> ``{"cmd":"set","id":7,...}*crc\\n``."""
    obj: dict[str, Any] = {"cmd": cmd}
    if id is not None:
        obj["id"] = id
    obj.update(fields)
    return encode_line(obj)
