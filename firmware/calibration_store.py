"""The device's calibration history: every calibration, check and manual offset, kept on the device in
calibration.json, so that a disputed measurement can be traced to the calibration in force when it was made
(docs/protocol.md: `calibrate`, `cal_history`).

The file is a JSON array with one record per line (any JSON reader takes it whole; the device reads it a line at a
time, so memory holds one record, at most ``MAX_RECORD_BYTES``, never the whole history)::

    [
    {"n":1,"method":"calibrator","offset_db":1.23,"previous_offset_db":0.0,"time":"2026-07-04T10:12:33+08:00",...},
    {"n":2,"method":"check","offset_db":1.23,...}
    ]

It is rewritten atomically (to calibration.tmp, then renamed), so a power cut leaves the old or the new history. It
keeps the newest ``MAX_RECORDS`` records; ``n`` numbers records for the device's life and is never reused. A missing
file is an empty history (a device never calibrated); an unreadable one is an empty history and the fault
``calibration_corrupt`` (the bad file is kept as calibration.bad at the next write), never an exception. Writes are
rare (a calibration), so plain allocation is fine here; nothing in this module runs per audio block.
"""

import json
import os

import protocol

HISTORY_FILE = "calibration.json"
TEMP_FILE = "calibration.tmp"
BAD_FILE = "calibration.bad"
MAX_RECORDS = 50
MAX_RECORD_BYTES = 800  # a stored record, so that a cal_history reply stays within the 1024-byte line
METHODS = ("calibrator", "reference", "check")
SETS_OFFSET = ("calibrator", "reference")
MAX_LIST = 12  # numbers in readings / residuals / a reference list
MAX_TEXT = {"time": 40, "operator": 60, "note": 200}


def _number(v, what, lo=-1000.0, hi=1000.0):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("bad_value: %s must be a number" % what)
    if v != v or not lo <= v <= hi:
        raise ValueError("bad_value: %s must be between %s and %s" % (what, lo, hi))
    return float(v)


def _numbers(v, what, lo=-1000.0, hi=1000.0, min_len=0):
    if not isinstance(v, list) or not min_len <= len(v) <= MAX_LIST:
        raise ValueError("bad_value: %s must be a list of %d to %d numbers" % (what, min_len, MAX_LIST))
    return [_number(x, what, lo, hi) for x in v]


def _text(v, what, limit, nullable=True):
    if v is None and nullable:
        return None
    if not isinstance(v, str) or len(v) > limit or not protocol.text_ok(v):
        raise ValueError("bad_value: %s must be text of at most %d characters" % (what, limit))
    return v


def _iso_time(v):
    _text(v, "time", MAX_TEXT["time"], False)
    return protocol.iso_time(v)


def _reference(v):
    if not isinstance(v, dict) or len(v) > 8:
        raise ValueError("bad_value: reference must be an object of at most 8 fields")
    out = {}
    for k, x in v.items():
        if not isinstance(k, str) or not 0 < len(k) <= 20 or not protocol.text_ok(k):
            raise ValueError("bad_value: reference keys must be short text")
        if x is None or isinstance(x, str):
            out[k] = _text(x, "reference." + protocol.echo(k), 60)
        elif isinstance(x, list):
            out[k] = _numbers(x, "reference." + protocol.echo(k), 0.0, 200.0)
        else:
            out[k] = _number(x, "reference." + protocol.echo(k))
    return out


def check_record(rec):
    """The host's record for `calibrate`, checked and copied; ValueError('bad_value: ...' / 'bad_key: ...').

    Fields: method (calibrator | reference | check), offset_db (required unless check), reference (object:
    level_db, instrument, values...), readings (1-12 levels), residuals, uncertainty_db, time (ISO 8601, required),
    operator, note, and the optional numbers slope, drift_db, window_s.
    """
    if not isinstance(rec, dict):
        raise ValueError("bad_value: record must be an object")
    for k in rec:
        if k not in ("method", "offset_db", "reference", "readings", "residuals", "uncertainty_db", "time",
                     "operator", "note", "slope", "drift_db", "window_s"):
            raise ValueError("bad_key: record.%s" % protocol.echo(k))
    method = rec.get("method")
    if method not in METHODS:
        raise ValueError("bad_value: method must be one of %s" % ", ".join(METHODS))
    out = {"method": method, "time": _iso_time(rec.get("time"))}
    if rec.get("offset_db") is not None or method in SETS_OFFSET:
        out["offset_db"] = _number(rec.get("offset_db"), "offset_db", -20.0, 20.0)
    out["reference"] = _reference(rec.get("reference"))
    out["readings"] = _numbers(rec.get("readings"), "readings", 0.0, 200.0, 1)
    out["residuals"] = _numbers(rec.get("residuals", []), "residuals", -20.0, 20.0)
    for k in ("uncertainty_db", "slope", "drift_db", "window_s"):
        v = rec.get(k)
        if v is not None:
            out[k] = _number(v, k, -100.0 if k == "drift_db" else 0.0, 3600.0 if k == "window_s" else 100.0)
    for k in ("operator", "note"):
        out[k] = _text(rec.get(k), k, MAX_TEXT[k])
    return out


def encode(rec):
    """A record's line (compact JSON, no newline); ValueError when it is longer than MAX_RECORD_BYTES."""
    text = json.dumps(rec, separators=(",", ":"))
    if len(text.encode()) > MAX_RECORD_BYTES:
        raise ValueError("bad_value: record too long (%d bytes, at most %d): shorten the note" %
                         (len(text.encode()), MAX_RECORD_BYTES))
    return text


class CalibrationStore:
    """The history file: ``count``, ``last_n``, ``fault``; ``load``, ``read``, ``append``, ``drop_last``."""

    def __init__(self, path=HISTORY_FILE, temp=TEMP_FILE, bad=BAD_FILE):
        self.path = path
        self.temp = temp
        self.bad = bad
        self.count = 0
        self.last_n = 0
        self.fault = None
        self.unclean = False  # the file holds text that is not UTF-8 (stored unchecked by older firmware)

    def load(self, expected=False):
        """Scan the file; returns its fault: None, 'calibration_corrupt' (unreadable: the history counts as empty),
        or 'calibration_missing' (no file although ``expected``: the configuration names a calibration)."""
        self.count = 0
        self.last_n = 0
        self.fault = None
        self.unclean = False
        count = 0
        try:
            f = open(self.path)
        except OSError:
            if expected:
                self.fault = "calibration_missing"
            return self.fault
        try:
            with f:
                for text in self._lines(f):
                    if text is None:
                        self.fault = "calibration_corrupt"
                        continue
                    if not protocol.text_ok(text):
                        self.unclean = True  # from now on lines are read with '?' for the bad bytes
                        text = protocol.clean_text(text)
                    try:
                        rec = json.loads(text)
                    except ValueError:
                        rec = None
                    if not isinstance(rec, dict) or "method" not in rec:
                        self.fault = "calibration_corrupt"
                        continue
                    n = rec.get("n")
                    if isinstance(n, int) and not isinstance(n, bool) and n > self.last_n:
                        self.last_n = n
                    count += 1
        except (OSError, ValueError, MemoryError):
            self.fault = "calibration_corrupt"
        if self.fault is None:
            self.count = count
        return self.fault

    def _lines(self, f):
        """The record texts of an open history file, in order; None for a line too long to be a record. ValueError
        when the file is not the expected array (no '[' first, or no ']' at the end)."""
        first = True
        closed = False
        while True:
            line = f.readline(MAX_RECORD_BYTES + 8)
            if not line:
                break
            if not line.endswith("\n") and len(line) >= MAX_RECORD_BYTES + 8:
                while line and not line.endswith("\n"):  # skip the rest of an over-long line
                    line = f.readline(256)
                yield None
                continue
            line = line.strip()
            if not line:
                continue
            if self.unclean:
                line = protocol.clean_text(line)
            if closed:
                raise ValueError("text after the end of the history")
            if first:
                if line != "[":
                    raise ValueError("not a history file")
                first = False
            elif line == "]":
                closed = True
            else:
                yield line[:-1] if line.endswith(",") else line
        if not closed:
            raise ValueError("the history file is cut short")

    def read(self, index):
        """Record ``index`` (0 = the oldest kept) as a dict; OSError when the file cannot be read."""
        if not 0 <= index < self.count:
            raise ValueError("bad_value: index must be between 0 and %d" % (self.count - 1))
        try:
            with open(self.path) as f:
                i = 0
                for text in self._lines(f):
                    if i == index:
                        rec = json.loads(text) if text is not None else None
                        if isinstance(rec, dict):
                            return rec
                        break
                    i += 1
        except (ValueError, MemoryError):
            pass
        raise OSError("calibration history unreadable")

    def append(self, text, n):
        """Write the history with one more record (its line ``text``, its number ``n``), dropping the oldest beyond
        MAX_RECORDS; atomic. OSError leaves the history as it was."""
        skip = max(0, self.count + 1 - MAX_RECORDS)
        self._rewrite(skip, self.count - skip, text)
        self.count = self.count - skip + 1
        self.last_n = n
        self.fault = None

    def drop_last(self):
        """Undo the last ``append`` when its calibration could not be applied (best effort: OSError passes)."""
        if self.count:
            self._rewrite(0, self.count - 1, None)
            self.count -= 1

    def _rewrite(self, skip, keep, text):
        total = keep + (1 if text is not None else 0)
        written = 0
        with open(self.temp, "w") as out:
            out.write("[\n")
            if keep and self.fault is None:
                try:
                    with open(self.path) as f:
                        i = 0
                        for line in self._lines(f):
                            if i >= skip and written < keep and line is not None:
                                written += 1
                                out.write(line + (",\n" if written < total else "\n"))
                            i += 1
                except (ValueError, MemoryError):
                    written = -1
                if written != keep:
                    raise OSError("calibration history unreadable")
            if text is not None:
                out.write(text + "\n")
            out.write("]\n")
            out.flush()
        if hasattr(os, "sync"):
            os.sync()
        if self.fault == "calibration_corrupt":
            try:
                os.remove(self.bad)
            except OSError:
                pass
            try:
                os.rename(self.path, self.bad)  # keep the unreadable file for whoever investigates
            except OSError:
                pass
        os.rename(self.temp, self.path)
        self.unclean = False
