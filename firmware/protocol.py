"""Device protocol lines (docs/protocol.md): JSON text, '*', CRC-32 as 8 hex digits; records carry seq and ms.

Received text is checked here once: a line that is not UTF-8 is ``bad_line``, and ``check_text`` refuses strings the
device must never store or echo (lone UTF-16 surrogates, which MicroPython's JSON reader turns into invalid UTF-8).
Sent lines never exceed ``MAX_LINE``; levels go out with two decimals (0.01 dB, ``Levels``), because a float's repr
on MicroPython can read 86.59999999999999.
"""

import json
import sys
from binascii import crc32

MAX_LINE = 1024
PROTOCOL_VERSION = 2
ECHO_CHARS = 40  # received text quoted back in an error message is cut to this many characters


def encode(obj):
    """One protocol line (str, with the newline) for a dict. ValueError('internal: ...') when the line would exceed
    MAX_LINE bytes."""
    text = json.dumps(obj, separators=(",", ":"))
    data = text.encode()
    if len(data) + 9 > MAX_LINE:
        raise ValueError("internal: record of %d bytes is longer than a line" % (len(data) + 9))
    return "%s*%08x\n" % (text, crc32(data) & 0xFFFFFFFF)


_MICROPYTHON = sys.implementation.name == "micropython"
_INF = float("inf")
_NINF = float("-inf")


class _Level:
    """One level field, reused from record to record: MicroPython's json writes an object by its repr."""

    def __init__(self):
        self.v = 0.0

    def __repr__(self):
        text = "%.2f" % self.v
        return "0.00" if text == "-0.00" else text


class Levels:
    """Level fields for records, at 0.01 dB. MicroPython's json writes a float by a 16-digit repr (86.6 goes out as
    86.59999999999999), so there ``put`` returns one reused object per field name whose repr is '86.60' (no
    allocation per record); CPython's json writes round(v, 2) as 86.6. A record must be encoded before the same
    field name is put again (records are sent as soon as they are built)."""

    def __init__(self):
        self.slots = {}

    def put(self, key, v):
        """What to put in a record for level ``v`` (dB, a float or None): None for None and non-finite values."""
        if v is None or v != v or v == _INF or v == _NINF:
            return None
        if not _MICROPYTHON:
            r = round(v, 2)
            return r if r != 0 else 0.0
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = _Level()
        slot.v = v
        return slot


def decode(line):
    """The dict carried by a line (str or bytes, newline optional). Raises ValueError with an error code as its
    message: 'bad_checksum' or 'bad_line' (also for bytes that are not UTF-8)."""
    if isinstance(line, (bytes, bytearray)):
        if len(line) > MAX_LINE + 2 or (line and max(line) >= 0x80 and utf8_error(line) >= 0):
            raise ValueError("bad_line")  # not UTF-8
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
    try:
        data = text.encode()
    except ValueError:  # CPython: a str holding a lone surrogate
        raise ValueError("bad_line")
    if crc32(data) & 0xFFFFFFFF != want:
        raise ValueError("bad_checksum")
    try:
        obj = json.loads(text)
    except ValueError:
        raise ValueError("bad_line")
    if not isinstance(obj, dict):
        raise ValueError("bad_line")
    return obj


def utf8_error(b, start=0):
    """Index of the first byte of ``b`` (from ``start``) that is not part of well-formed UTF-8, or -1. Strict like
    CPython (no overlong forms, no surrogates, nothing above U+10FFFF); MicroPython's own check lets those through."""
    i = start
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        lo, hi = 0x80, 0xBF
        if 0xC2 <= c <= 0xDF:
            k = 1
        elif 0xE0 <= c <= 0xEF:
            k = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F  # U+D800..U+DFFF are surrogates
        elif 0xF0 <= c <= 0xF4:
            k = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            return i
        if i + k >= n or not lo <= b[i + 1] <= hi:
            return i
        j = i + 2
        while j <= i + k:
            if not 0x80 <= b[j] <= 0xBF:
                return i
            j += 1
        i += k + 1
    return -1


def _bytes_of(s):
    try:
        return s.encode()
    except ValueError:  # CPython: a lone surrogate cannot be encoded
        return s.encode("utf-8", "surrogatepass")


def text_ok(s):
    """Whether a str is text the device may store and send: well-formed UTF-8, no UTF-16 surrogate. A JSON escape
    like \\udfff becomes the bytes ED BF BF on MicroPython (not UTF-8) and a lone surrogate on CPython."""
    b = _bytes_of(s)
    return (not b or max(b) < 0x80) or utf8_error(b) < 0


def clean_text(s):
    """``s`` with every byte that is not well-formed UTF-8 replaced by '?': for text loaded from the device's files,
    which older firmware may have stored unchecked."""
    b = _bytes_of(s)
    if not b or max(b) < 0x80:
        return s
    i = utf8_error(b)
    if i < 0:
        return s
    out = bytearray(b)
    while i >= 0:
        out[i] = 0x3F
        i = utf8_error(out, i + 1)
    return bytes(out).decode()


def check_text(obj):
    """ValueError('bad_value: ...') when any string in a decoded message (keys and values, at any depth) is not
    text_ok. Iterative, so deep nesting cannot exhaust the stack."""
    todo = [obj]
    while todo:
        x = todo.pop()
        if isinstance(x, str):
            if not text_ok(x):
                raise ValueError("bad_value: text must be valid Unicode (no UTF-16 surrogate escapes)")
        elif isinstance(x, dict):
            for k in x:
                todo.append(k)
                todo.append(x[k])
        elif isinstance(x, list):
            todo.extend(x)


_TIME_FORMAT = "bad_value: time must be an ISO 8601 date and time (YYYY-MM-DDTHH:MM[:SS[.fff]][Z|+HH:MM|-HH:MM])"
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _number(v, i, n, lo, hi):
    """The n-digit number at v[i:i+n]; ValueError unless it is there and between lo and hi."""
    part = v[i:i + n]
    if len(part) != n or not _ascii_digits(part) or not lo <= int(part) <= hi:
        raise ValueError(_TIME_FORMAT)
    return int(part)


def _ascii_digits(part):
    for ch in part:
        if not "0" <= ch <= "9":
            return False
    return True


def _expect(v, i, chars):
    if v[i:i + 1] == "" or v[i:i + 1] not in chars:
        raise ValueError(_TIME_FORMAT)


def iso_time(v):
    """``v`` if it is a real ISO 8601 date and time, else ValueError('bad_value: ...'): YYYY-MM-DDTHH:MM, then
    optionally :SS and a fraction, then optionally Z or +HH:MM / -HH:MM (what `slm calibrate` sends)."""
    if not isinstance(v, str):
        raise ValueError(_TIME_FORMAT)
    year = _number(v, 0, 4, 1, 9999)
    _expect(v, 4, "-")
    month = _number(v, 5, 2, 1, 12)
    _expect(v, 7, "-")
    leap = month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    _number(v, 8, 2, 1, 29 if leap else _MONTH_DAYS[month - 1])
    _expect(v, 10, "T")
    _number(v, 11, 2, 0, 23)
    _expect(v, 13, ":")
    _number(v, 14, 2, 0, 59)
    i = 16
    if v[i:i + 1] == ":":
        _number(v, i + 1, 2, 0, 60)  # 60: a leap second
        i += 3
        if v[i:i + 1] == ".":
            j = i + 1
            while _ascii_digits(v[j:j + 1]) and j < len(v) and j - i <= 9:
                j += 1
            _number(v, i + 1, max(1, j - i - 1), 0, 999999999)
            i = j
    if v[i:] in ("", "Z"):
        return v
    _expect(v, i, "+-")
    _number(v, i + 1, 2, 0, 23)
    _expect(v, i + 3, ":")
    _number(v, i + 4, 2, 0, 59)
    if len(v) != i + 6:
        raise ValueError(_TIME_FORMAT)
    return v


def echo(x):
    """Received text (or any value) for an error message: at most ECHO_CHARS characters."""
    text = x if isinstance(x, str) else repr(x)
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "..."


class RecordWriter:
    """Numbers and timestamps records and writes them as lines to ``out`` (a stream with write())."""

    def __init__(self, out, clock_ms, clock_utc=None):
        self.out = out
        self.clock_ms = clock_ms  # function: device time in ms (from the audio clock)
        self.clock_utc = clock_utc  # function: UTC now as ISO 8601 text, or None when the clock is unset
        self.seq = 0
        self.tap = None  # called with each record sent (its dict): the network's copy (net.py)

    def send(self, kind, fields):
        """Write one record; returns its length in characters. ValueError (nothing sent, seq unchanged) when the
        record would be longer than a line."""
        return self.write(self.stamp(kind, fields))

    def stamp(self, kind, fields):
        """The record ``send`` would write now (t, seq, ms, utc and the fields), to be written with ``write``."""
        rec = {"t": kind, "seq": self.seq, "ms": self.clock_ms(),
               "utc": self.clock_utc() if self.clock_utc is not None else None}
        rec.update(fields)
        return rec

    def write(self, rec):
        """Write a record made by ``stamp`` (nothing sent between): see ``send``."""
        line = encode(rec)
        self.seq += 1
        self.out.write(line)
        if self.tap is not None:
            self.tap(rec)
        return len(line)
