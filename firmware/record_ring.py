"""The device's own record: `minute`, `event` and `audit` records kept on flash in bounded rings (docs/protocol.md,
"Device record"), so that a meter nobody watched still has its last week of minutes, month of events and its audit
trail.

Each kind has its ring of fixed-size slots, stored in segment files of at most 4 KiB (one flash block), so that
writing one slot rewrites one small file: LittleFS copies a file from the modified block to its end, and a ring in
one large file would rewrite most of a megabyte every minute. A slot::

    crc32 (4) | n (u32) | states (u32: 2 bits per schema field) | values | extras length (u8) + JSON | mac (16) | zeros

``states`` to the end of the extras is the record's canonical body (``pack``, which chain.body uses too: one
encoder); ``mac`` is the record's chain MAC (firmware/chain.py) right after it, 16 zero bytes for a record made
without a key (then trailing zeros, which `pull` leaves out).

``n`` numbers the records of a kind, 1, 2, 3, ... and record n lives in slot (n - 1) % capacity, so a record is
found without an index, and ``n`` is recovered at boot by scanning the slots (the largest n whose slot's CRC is
right). The CRC covers everything after it; a slot whose CRC or position is wrong is skipped, never returned. The
schema fields are packed by type (times as 48-bit ms since 1970, levels as int16 in 0.01 dB, other floats at
0.001, ...); a field whose value does not fit its type, and any field the schema does not know, go to the slot's
JSON extras (canonical: sorted keys, compact, floats at 0.001, UTF-8 as is), as far as room allows. A text field
(``band``) is cut at a character boundary when the record would not fit its slot.

Power cuts: a slot is written with one open/seek/write/close. LittleFS commits a file on close (copy on write), so
a cut keeps the slot's previous content; on FAT a torn slot fails its CRC. Either way only the record being written
is lost, the ring stays readable, and since ``n`` comes from the slots themselves, the next record takes the lost
one's number: no number is ever used for two readable records.

Nothing here runs per audio block: ``add`` runs once a minute (it allocates a little; the slot buffer is reused).
"""

import json
import os
import struct
from binascii import crc32, hexlify, unhexlify

MINUTE_SLOT = 96  # bytes per minute slot: 42 in a 4032-byte segment
EVENT_SLOT = 128  # bytes per event slot: 32 in a 4096-byte segment
AUDIT_SLOT = 256  # bytes per audit slot: 16 in a 4096-byte segment
SEGMENT_BYTES = 4096  # a segment file holds as many whole slots as fit in one flash block
MINUTES = 10080  # 240 segments: 7 days of minutes
EVENTS_BYTES = 63 * 4096  # 63 segments: 2016 events (67 a day for 30 days)
AUDITS = 512  # 32 segments; with minutes and events 335 blocks of 4 KiB = 1.31 MiB
MAC_BYTES = 16  # after the body
STATES_AT = 8  # the body (chain.body) starts here: states, values, extras
HEADER = 12  # crc32, n, states

# Field types. A field's 2-bit state: 0 absent, 1 null, 2 and 3 a value (the two forms a type tells apart).
TIME = 0  # ISO 8601 UTC "YYYY-MM-DDTHH:MM:SS.mmmZ" (state 2) or "...:SSZ" (state 3): 6 bytes, ms since 1970
U48 = 1  # an integer 0 .. 2**48 - 1 (device ms): 6 bytes
LEVEL = 2  # dB at 0.01 dB, int16: a float (state 2) or an int (state 3)
SMALL = 3  # u16: an int (state 2) or a float at 0.001 up to 65.535 (state 3): a minute's seconds
HHMM = 4  # "HH:MM": u16 minutes of the day
BOOL = 5  # False (state 2), True (state 3): no bytes
TEXT = 6  # UTF-8, u8 length + bytes
KIND = 7  # an event kind from EVENT_KINDS: 1 byte
NUM = 8  # an int32 (state 2, 4 bytes) or a float at 0.001 (state 3: int64 of thousandths, 8 bytes)

MINUTE_FIELDS = (("utc", TIME), ("ms", U48), ("start", TIME), ("local", HHMM), ("s", SMALL), ("LAeq", LEVEL),
                 ("LAFmax", LEVEL), ("LA10", LEVEL), ("LA50", LEVEL), ("LA90", LEVEL), ("LCpeak", LEVEL),
                 ("overload", BOOL), ("band", TEXT), ("limit", LEVEL), ("over", BOOL),
                 ("seq", U48))  # seq last: slots written before it decode unchanged (its state bits were 0)
EVENT_FIELDS = (("utc", TIME), ("ms", U48), ("kind", KIND), ("start", TIME), ("end", TIME), ("time", TIME),
                ("duration_s", NUM), ("LAeq", LEVEL), ("LAFmax", LEVEL), ("limit", LEVEL), ("band", TEXT),
                ("minutes_over", NUM), ("interrupted", BOOL), ("from", TIME), ("to", TIME), ("step_s", NUM))
AUDIT_FIELDS = (("utc", TIME), ("ms", U48), ("seq", U48), ("what", TEXT), ("minute_n", U48), ("event_n", U48))
EVENT_KINDS = ("exceedance_start", "exceedance_end", "night_max", "clock_step")
KINDS = ("minute", "event", "audit")
SCHEMAS = {"minute": (MINUTE_FIELDS, MINUTE_SLOT), "event": (EVENT_FIELDS, EVENT_SLOT),
           "audit": (AUDIT_FIELDS, AUDIT_SLOT)}
FOLDERS = {"minute": "ring_min", "event": "ring_evt", "audit": "ring_aud"}
NOT_PACKED = ("t", "n", "mac")  # a record's fields that are not part of its body

_ZEROS = bytes(64)
_WORK = bytearray(512)  # a record is packed here first (its text may have to be cut to fit the slot)


# -- times -------------------------------------------------------------------------------------------------------
def _days(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _civil(z):
    """(year, month, day) of a day number since 1970-01-01."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


def format_time(ms, with_ms=True):
    """ISO 8601 UTC text of ms since 1970: "2026-07-15T13:50:00.250Z" (or without the fraction)."""
    s, frac = divmod(ms, 1000)
    day, sec = divmod(s, 86400)
    y, mo, d = _civil(day)
    text = "%04d-%02d-%02dT%02d:%02d:%02d" % (y, mo, d, sec // 3600, sec // 60 % 60, sec % 60)
    return text + (".%03dZ" % frac if with_ms else "Z")


def parse_time(text):
    """(ms since 1970, with_ms) of a time in exactly the form format_time writes, else None."""
    if not isinstance(text, str) or len(text) not in (20, 24):
        return None
    try:
        y, mo, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
        h, mi, s = int(text[11:13]), int(text[14:16]), int(text[17:19])
        frac = int(text[20:23]) if len(text) == 24 else 0
    except ValueError:
        return None
    if not (1970 <= y <= 9999 and 1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 60 and frac >= 0):
        return None
    ms = ((_days(y, mo, d) * 24 + h) * 60 + mi) * 60000 + s * 1000 + frac
    with_ms = len(text) == 24
    return (ms, with_ms) if format_time(ms, with_ms) == text else None  # refuses 2026-02-30, " 5", "+1" ...


# -- one slot ----------------------------------------------------------------------------------------------------
def _level_value(v):
    if hasattr(v, "v") and not isinstance(v, (int, float)):
        return v.v  # protocol.Levels' reused level object (MicroPython)
    return v


def _put(typ, v, buf, pos, text_cap):
    """Pack value ``v`` (not None) of type ``typ`` at buf[pos]: (state, new pos), or None when it does not fit."""
    if typ == BOOL:
        return (3 if v else 2, pos) if isinstance(v, bool) else None
    if isinstance(v, bool):
        return None
    if typ == LEVEL or typ == SMALL or typ == NUM:
        v = _level_value(v)  # protocol.Levels puts a reused object for every field sent at 0.01 (s, duration_s, ...)
        if isinstance(v, int):
            if typ == LEVEL and -327 <= v <= 327:
                struct.pack_into("<h", buf, pos, v * 100)
                return 3, pos + 2
            if typ == SMALL and 0 <= v <= 65535:
                struct.pack_into("<H", buf, pos, v)
                return 2, pos + 2
            if typ == NUM and -0x80000000 <= v <= 0x7FFFFFFF:
                struct.pack_into("<i", buf, pos, v)
                return 2, pos + 4
            return None
        if not isinstance(v, float) or v != v or v in (float("inf"), float("-inf")):
            return None
        if typ == NUM:
            c = milli(v)
            if -(1 << 63) <= c < 1 << 63:
                struct.pack_into("<q", buf, pos, c)
                return 3, pos + 8
            return None
        if typ == LEVEL:
            c = round(v * 100)
            if -32767 <= c <= 32767:
                struct.pack_into("<h", buf, pos, c)
                return 2, pos + 2
            return None
        c = milli(v)
        if 0 <= c <= 65535:
            struct.pack_into("<H", buf, pos, c)
            return 3, pos + 2
        return None
    if typ == TIME:
        t = parse_time(v)
        if t is None:
            return None
        _put48(buf, pos, t[0])
        return (2 if t[1] else 3), pos + 6
    if typ == U48:
        if isinstance(v, int) and 0 <= v < 1 << 48:
            _put48(buf, pos, v)
            return 2, pos + 6
        return None
    if typ == HHMM:
        if not isinstance(v, str) or len(v) != 5 or v[2] != ":":
            return None
        try:
            minutes = int(v[:2]) * 60 + int(v[3:])
        except ValueError:
            return None
        if not 0 <= minutes < 1440 or "%02d:%02d" % (minutes // 60, minutes % 60) != v:
            return None
        struct.pack_into("<H", buf, pos, minutes)
        return 2, pos + 2
    if typ == KIND:
        if v not in EVENT_KINDS:
            return None
        buf[pos] = EVENT_KINDS.index(v)
        return 2, pos + 1
    if typ == TEXT:
        if not isinstance(v, str):
            return None
        b = v.encode()
        if len(b) > text_cap:
            cut = text_cap
            while cut > 0 and b[cut] & 0xC0 == 0x80:  # not inside a character
                cut -= 1
            b = b[:cut]
        buf[pos] = len(b)
        buf[pos + 1:pos + 1 + len(b)] = b
        return 2, pos + 1 + len(b)
    return None


def _put48(buf, pos, v):
    struct.pack_into("<IH", buf, pos, v & 0xFFFFFFFF, v >> 32)


def _get48(buf, pos):
    lo, hi = struct.unpack_from("<IH", buf, pos)
    return lo | hi << 32


def _get(typ, state, buf, pos):
    """(value, new pos) of a packed field."""
    if typ == BOOL:
        return state == 3, pos
    if typ == LEVEL:
        c = struct.unpack_from("<h", buf, pos)[0]
        return (c // 100 if state == 3 else c / 100), pos + 2
    if typ == SMALL:
        c = struct.unpack_from("<H", buf, pos)[0]
        return (c if state == 2 else c / 1000), pos + 2
    if typ == NUM:
        if state == 2:
            return struct.unpack_from("<i", buf, pos)[0], pos + 4
        return struct.unpack_from("<q", buf, pos)[0] / 1000, pos + 8
    if typ == TIME:
        return format_time(_get48(buf, pos), state == 2), pos + 6
    if typ == U48:
        return _get48(buf, pos), pos + 6
    if typ == HHMM:
        m = struct.unpack_from("<H", buf, pos)[0]
        return "%02d:%02d" % (m // 60, m % 60), pos + 2
    if typ == KIND:
        return EVENT_KINDS[buf[pos]], pos + 1
    n = buf[pos]  # TEXT
    return str(bytes(buf[pos + 1:pos + 1 + n]), "utf-8"), pos + 1 + n


def milli(v):
    """A float's whole thousandths: every float a record carries (but levels, at 0.01 dB) is kept at 0.001."""
    return int(round(v * 1000))


def quantise(v):
    """A float as the record keeps it (0.001 steps), so that what is sent is what is stored and MAC'ed; other
    values unchanged."""
    if isinstance(v, float) and v == v and v not in (float("inf"), float("-inf")):
        return milli(v) / 1000
    return v


def canonical_json(v, out):
    """Append to list ``out`` the canonical JSON text of ``v``: sorted keys, no spaces, floats at 0.001 (as
    "-1.250"), text as UTF-8 with only quote, backslash and control characters escaped, non-finite floats as null.
    The same bytes on MicroPython and CPython, and json.loads of it re-encodes to the same text."""
    if v is None or v is True or v is False:
        out.append("null" if v is None else ("true" if v else "false"))
    elif isinstance(v, int):
        out.append("%d" % v)
    elif isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            out.append("null")
        else:
            c = milli(v)
            out.append("%s%d.%03d" % ("-" if c < 0 else "", abs(c) // 1000, abs(c) % 1000))
    elif isinstance(v, str):
        out.append('"')
        for ch in v:
            if ch == '"' or ch == "\\":
                out.append("\\" + ch)
            elif ord(ch) < 0x20:
                out.append("\\u%04x" % ord(ch))
            else:
                out.append(ch)
        out.append('"')
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i in range(len(v)):
            if i:
                out.append(",")
            canonical_json(v[i], out)
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        first = True
        for k in sorted(v, key=str):
            if not first:
                out.append(",")
            first = False
            canonical_json(str(k), out)
            out.append(":")
            canonical_json(v[k], out)
        out.append("}")
    else:
        canonical_json(_level_value(v) if hasattr(v, "v") else str(v), out)


def pack(kind, rec, work):
    """Pack the body of record ``rec`` of ``kind`` into ``work`` (a bytearray of 512 bytes) at STATES_AT: states,
    values, extras; the fields ``t``, ``n``, ``mac`` are not part of it. A text field is cut (at a character) as far
    as needed to keep every other field in the kind's slot; when that is not enough, the extras are left out.
    Returns (end, fields left out); the body is work[STATES_AT:end]. ValueError when even the schema's fields
    cannot fit. The slot writer (encode) and chain.body both use this: one encoder."""
    fields, size = SCHEMAS[kind]
    cap = 255
    keep_extras = True
    while True:
        end, states, extras = _pack(fields, rec, work, cap)
        text = b""
        if extras and keep_extras:
            out = []  # type: list
            canonical_json(extras, out)
            text = "".join(out).encode()
            if len(text) > 255:
                text = b""
        over = end + 1 + len(text) + MAC_BYTES - size
        if over <= 0:
            break
        longest = 0
        for k, typ in fields:
            if typ == TEXT and isinstance(rec.get(k), str):
                longest = max(longest, min(cap, len(rec[k].encode())))
        if longest >= over:
            cap = longest - over
        elif keep_extras and text:
            keep_extras = False
            cap = 255
        else:
            raise ValueError("record does not fit a %d-byte slot" % size)
    work[end] = len(text)
    work[end + 1:end + 1 + len(text)] = text
    struct.pack_into("<I", work, STATES_AT, states)
    return end + 1 + len(text), (len(extras) if extras and not text else 0)


def encode(kind, rec, n, buf, work, mac=None):
    """Pack record ``rec`` of ``kind`` as number ``n`` with chain MAC ``mac`` (16 bytes, None: zeros) into slot
    ``buf`` (its whole length), using ``work`` (a bytearray of 512 bytes; see ``pack``). Returns the number of fields
    left out (0: the record is whole). ValueError when even the schema's fields cannot fit."""
    end, left_out = pack(kind, rec, work)
    seal(kind, n, mac, buf, work, end)
    return left_out


def seal(kind, n, mac, buf, work, end):
    """Slot ``buf`` of a body packed in work[STATES_AT:end]: n, mac (None: zeros), zeros to the end, the CRC."""
    size = SCHEMAS[kind][1]
    struct.pack_into("<I", work, 4, n)
    work[end:end + MAC_BYTES] = mac if mac is not None else _ZEROS[:MAC_BYTES]
    end += MAC_BYTES
    buf[:end] = work[:end]
    i = end
    while i < size:  # zeros to the end of the slot
        k = min(size - i, len(_ZEROS))
        buf[i:i + k] = _ZEROS[:k]
        i += k
    struct.pack_into("<I", buf, 0, crc32(memoryview(buf)[4:size]) & 0xFFFFFFFF)


def _pack(fields, rec, work, text_cap):
    pos = HEADER
    states = 0
    extras = None
    for i in range(len(fields)):
        key, typ = fields[i]
        if key not in rec:
            continue
        v = rec[key]
        if v is None:
            states |= 1 << 2 * i
            continue
        got = _put(typ, v, work, pos, text_cap)
        if got is None:
            extras = extras or {}
            extras[key] = _level_value(v)
            continue
        states |= got[0] << 2 * i
        pos = got[1]
    for key in rec:
        if key not in NOT_PACKED and not _in_schema(fields, key):
            extras = extras or {}
            extras[key] = _level_value(rec[key])
    return pos, states, extras


def _in_schema(fields, key):
    for k, _ in fields:
        if k == key:
            return True
    return False


def slot_n(buf, size):
    """The record number in slot ``buf`` when its CRC is right, else 0."""
    if len(buf) < size:
        return 0
    if crc32(memoryview(buf)[4:size]) & 0xFFFFFFFF != struct.unpack_from("<I", buf, 0)[0]:
        return 0
    return struct.unpack_from("<I", buf, 4)[0]


def decode(kind, buf):
    """The record dict (with ``t``, ``n`` and, when it was made with a key, ``mac`` as 32 hex digits) in a slot of
    ``kind``, or None when the slot is not a valid one.
    ``buf`` may be shorter than the slot (trailing zeros left out, as `pull` sends it)."""
    fields, size = SCHEMAS[kind]
    if len(buf) < size:
        buf = bytes(buf) + bytes(size - len(buf))
    n = slot_n(buf, size)
    if n == 0:
        return None
    states = struct.unpack_from("<I", buf, STATES_AT)[0]
    rec = {"t": kind, "n": n}
    pos = HEADER
    try:
        for i in range(len(fields)):
            state = states >> 2 * i & 3
            if state == 0:
                continue
            key, typ = fields[i]
            if state == 1:
                rec[key] = None
                continue
            rec[key], pos = _get(typ, state, buf, pos)
        k = buf[pos]
        if k:
            rec.update(json.loads(str(bytes(buf[pos + 1:pos + 1 + k]), "utf-8")))
        mac = bytes(buf[pos + 1 + k:pos + 1 + k + MAC_BYTES])
        if len(mac) != MAC_BYTES:
            return None
        if mac != _ZEROS[:MAC_BYTES]:
            rec["mac"] = hexlify(mac).decode()
    except Exception:  # a slot whose CRC is right but whose content is not ours (CPython: struct.error too)
        return None
    return rec


def _event_kind(buf):
    """The ``kind`` of an event slot (already checked), without decoding the rest, or None."""
    states = struct.unpack_from("<I", buf, STATES_AT)[0]
    pos = HEADER
    for i in (0, 1):  # utc, ms: 6 bytes each when present with a value
        if states >> 2 * i & 3 >= 2:
            pos += 6
    if states >> 4 & 3 != 2 or buf[pos] >= len(EVENT_KINDS):
        return None
    return EVENT_KINDS[buf[pos]]


# -- the rings ---------------------------------------------------------------------------------------------------
class _Ring:
    """One kind's ring: slots in segment files folder/0, folder/1, ...; ``first``, ``last``, ``count``."""

    def __init__(self, folder, kind, capacity):
        self.folder = folder
        self.kind = kind
        self.size = SCHEMAS[kind][1]
        self.per_segment = SEGMENT_BYTES // self.size
        self.capacity = max(1, capacity)
        self.segments = (self.capacity + self.per_segment - 1) // self.per_segment
        self.slot = bytearray(self.size)
        self.valid = bytearray((self.capacity + 7) // 8)
        self.first = 0
        self.last = 0
        self.count = 0
        self.episode = None  # n of the last exceedance_start or _end (events), and whether it was a start
        self.episode_start = False

    def _path(self, segment):
        return "%s/%d" % (self.folder, segment)

    def _is_valid(self, p):
        return self.valid[p >> 3] >> (p & 7) & 1

    def _mark(self, p, on):
        if on:
            self.valid[p >> 3] |= 1 << (p & 7)
        else:
            self.valid[p >> 3] &= ~(1 << (p & 7)) & 0xFF

    def scan(self):
        """Recover first, last, count and the valid slots from the files (at boot)."""
        try:
            os.mkdir(self.folder)
        except OSError:
            pass  # it exists
        seg = bytearray(self.per_segment * self.size)
        lo = hi = 0
        for s in range(self.segments):
            try:
                with open(self._path(s), "rb") as f:
                    got = f.readinto(seg) or 0
            except OSError:
                continue
            for j in range(min(got // self.size, self.per_segment)):
                p = s * self.per_segment + j
                if p >= self.capacity:
                    break
                view = memoryview(seg)[j * self.size:(j + 1) * self.size]
                n = slot_n(view, self.size)
                if n == 0 or (n - 1) % self.capacity != p:
                    continue
                self._mark(p, True)
                lo = n if lo == 0 or n < lo else lo
                hi = n if n > hi else hi
                if self.kind == "event" and (self.episode is None or n > self.episode):
                    k = _event_kind(view)
                    if k == "exceedance_start" or k == "exceedance_end":
                        self.episode = n
                        self.episode_start = k == "exceedance_start"
        self.last = hi
        if hi - lo >= self.capacity:  # stale slots of an older round (only after tampering): drop them
            lo = 0
            for m in range(hi - self.capacity + 1, hi + 1):
                if self._is_valid((m - 1) % self.capacity):
                    got = self._read_n((m - 1) % self.capacity)
                    if got != m:
                        self._mark((m - 1) % self.capacity, False)
                    elif lo == 0:
                        lo = m
        self.first = lo
        self.count = 0
        for b in self.valid:
            while b:
                self.count += b & 1
                b >>= 1

    def _read_slot(self, p, f=None):
        """Read slot p into self.slot; True when the whole slot was read."""
        s, j = divmod(p, self.per_segment)
        try:
            if f is None:
                with open(self._path(s), "rb") as g:
                    g.seek(j * self.size)
                    got = g.readinto(self.slot)
            else:
                f.seek(j * self.size)
                got = f.readinto(self.slot)
        except OSError:
            return False
        return got == self.size

    def _read_n(self, p):
        return slot_n(self.slot, self.size) if self._read_slot(p) else 0

    def add(self, rec, sign=None):
        n = self.last + 1
        end, left_out = pack(self.kind, rec, _WORK)
        mac = None
        if sign is not None:  # sign(kind, n, body) -> 16 bytes: the record carries n and mac, sent as stored
            mac = sign(self.kind, n, bytes(memoryview(_WORK)[STATES_AT:end]))
            rec["n"] = n
            rec["mac"] = hexlify(mac).decode()
        seal(self.kind, n, mac, self.slot, _WORK, end)
        p = (n - 1) % self.capacity
        s, j = divmod(p, self.per_segment)
        off = j * self.size
        path = self._path(s)
        try:
            try:
                f = open(path, "r+b")
            except OSError as e:
                if e.args[0] != 2:  # only a missing segment is created: never truncate one that failed to open
                    raise
                f = open(path, "wb")
        except OSError:
            if mac is not None:
                self.last = n
            raise
        try:
            end = f.seek(0, 2)
            while end < off:  # a new or short segment: zeros up to the slot (an invalid slot)
                k = min(off - end, len(_ZEROS))
                f.write(_ZEROS[:k])
                end += k
            f.seek(off)
            f.write(self.slot)
        except OSError:
            if mac is not None:
                self.last = n  # a signed record goes out even so: its number is never used again in this run
            raise
        finally:
            f.close()
        had = self._is_valid(p)
        self._mark(p, True)
        self.last = n
        if not had:
            self.count += 1
        if self.first == 0:
            self.first = n
        elif self.first <= n - self.capacity:  # the oldest record was overwritten: the next valid one is first
            m = n - self.capacity + 1
            while not self._is_valid((m - 1) % self.capacity):
                m += 1
            self.first = m
        if self.kind == "event":
            k = rec.get("kind")
            if k == "exceedance_start" or k == "exceedance_end":
                self.episode = n
                self.episode_start = k == "exceedance_start"
        return n, left_out

    def each(self, first_n, take):
        """Call take(n, slot) for the valid records from ``first_n`` on, oldest first, until it returns False; the
        slot bytes are self.slot (reused: use them before returning). Returns the n to continue from (the one take
        refused, or last + 1)."""
        m = max(first_n, self.first, 1)
        f = None
        seg = -1
        try:
            while m <= self.last:
                p = (m - 1) % self.capacity
                if self._is_valid(p):
                    s = p // self.per_segment
                    if s != seg:
                        if f is not None:
                            f.close()
                            f = None
                        seg = s
                        try:
                            f = open(self._path(s), "rb")
                        except OSError:
                            f = None
                    if f is not None and self._read_slot(p, f) and slot_n(self.slot, self.size) == m:
                        if not take(m, self.slot):
                            return m
                m += 1
        finally:
            if f is not None:
                f.close()
        return max(m, first_n)

    def last_mac(self):
        """The mac of the last record (16 bytes; zeros when none or made without a key)."""
        if self.last == 0 or self._read_n((self.last - 1) % self.capacity) != self.last:
            return _ZEROS[:MAC_BYTES]
        rec = decode(self.kind, self.slot)
        return unhexlify(rec["mac"]) if rec is not None and "mac" in rec else _ZEROS[:MAC_BYTES]

    def info(self):
        return {"first": self.first, "last": self.last, "count": self.count, "capacity": self.capacity,
                "slot": self.size}


class RecordRing:
    """The device's record: ``add(rec)``, ``read(kind, first_n, max_count)``, ``info()``, ``open_episode()``.

    folder: where the ring folders ring_min/, ring_evt/ and ring_aud/ live; minutes: minute slots; events_bytes:
    bytes of event slots (rounded down to whole slots); audits: audit slots. The defaults take 1.31 MiB of flash
    (335 blocks of 4 KiB).
    """

    def __init__(self, folder=".", minutes=MINUTES, events_bytes=EVENTS_BYTES, audits=AUDITS):
        base = "" if folder in ("", ".") else folder.rstrip("/") + "/"  # plain names in the current folder
        self.rings = {"minute": _Ring(base + FOLDERS["minute"], "minute", minutes),
                      "event": _Ring(base + FOLDERS["event"], "event", events_bytes // EVENT_SLOT),
                      "audit": _Ring(base + FOLDERS["audit"], "audit", audits)}
        self.left_out = 0  # fields not stored since start (no room in their slot)
        for r in self.rings.values():
            r.scan()

    def _ring(self, kind):
        r = self.rings.get(kind) if isinstance(kind, str) else None
        if r is None:
            raise ValueError("bad_value: kind must be minute, event or audit")
        return r

    def add(self, rec, sign=None):
        """Store a `minute`, `event` or `audit` record (its ``t`` says which); returns its number n. With
        ``sign(kind, n, body) -> mac`` the record is signed: ``rec`` gets ``n`` and ``mac`` (hex) before it is written.
        OSError when the flash cannot be written (the record is then not stored; its number is used by the next one,
        unless the record was signed: a signed record is sent anyway, so its number is not used again)."""
        n, left_out = self._ring(rec.get("t")).add(rec, sign)
        self.left_out += left_out
        return n

    def each(self, kind, first_n, take):
        """take(n, slot bytes) for the records of ``kind`` from ``first_n`` on until it returns False (see
        _Ring.each); for `pull`, which sends the bytes. Returns the n to continue from."""
        return self._ring(kind).each(first_n, take)

    def read(self, kind, first_n, max_count):
        """The records of ``kind`` with n >= first_n, oldest first, at most max_count: dicts with ``n`` and ``t``."""
        out = []  # type: list

        def take(n, slot):
            if len(out) >= max_count:
                return False
            rec = decode(kind, slot)
            if rec is not None:
                out.append(rec)
            return True

        self._ring(kind).each(first_n, take)
        return out

    def last_mac(self, kind):
        """The mac (16 bytes) of the last record of ``kind``; zeros when there is none or it has no mac."""
        return self._ring(kind).last_mac()

    def info(self):
        """{kind: {first, last, count, capacity, slot}}: first/last n stored (0 when none), records stored, slots,
        bytes per slot."""
        return {k: r.info() for k, r in self.rings.items()}

    def open_episode(self):
        """The last `exceedance_start` event when no `exceedance_end` came after it (an episode that was open when
        the device stopped), else None."""
        r = self.rings["event"]
        if r.episode is None or not r.episode_start:
            return None
        got = self.read("event", r.episode, 1)
        return got[0] if got and got[0]["n"] == r.episode else None
