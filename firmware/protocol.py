"""Device protocol lines (docs/protocol.md): JSON text, '*', CRC-32 as 8 hex digits; records carry seq and ms."""

import json
from binascii import crc32

MAX_LINE = 1024
PROTOCOL_VERSION = 1


def encode(obj):
    """One protocol line (str, with the newline) for a dict."""
    text = json.dumps(obj, separators=(",", ":"))
    return "%s*%08x\n" % (text, crc32(text.encode()) & 0xFFFFFFFF)


def decode(line):
    """The dict carried by a line (str or bytes, newline optional). Raises ValueError with an error code as its
    message: 'bad_checksum' or 'bad_line'."""
    if isinstance(line, (bytes, bytearray)):
        line = bytes(line).decode()
    line = line.rstrip("\r\n")
    star = line.rfind("*")
    if star < 0 or len(line) - star != 9 or len(line) > MAX_LINE:
        raise ValueError("bad_line")
    text = line[:star]
    try:
        want = int(line[star + 1:], 16)
    except ValueError:
        raise ValueError("bad_line")
    if crc32(text.encode()) & 0xFFFFFFFF != want:
        raise ValueError("bad_checksum")
    try:
        obj = json.loads(text)
    except ValueError:
        raise ValueError("bad_line")
    if not isinstance(obj, dict):
        raise ValueError("bad_line")
    return obj


class RecordWriter:
    """Numbers and timestamps records and writes them as lines to ``out`` (a stream with write())."""

    def __init__(self, out, clock_ms):
        self.out = out
        self.clock_ms = clock_ms  # function: device time in ms (from the audio clock)
        self.seq = 0

    def send(self, kind, fields):
        rec = {"t": kind, "seq": self.seq, "ms": self.clock_ms()}
        rec.update(fields)
        self.seq += 1
        self.out.write(encode(rec))
