"""The device's audit trail and record chains (docs/evidence.md, docs/protocol.md "Audit trail"): the device key
(slm_key.bin), the signing of every minute, event and audit record (chain.link, one chain per kind), and the audit
entries: boot, power_loss, firmware, key, config, calibration, clock_step, fault, reboot, audit_full.

The audit ring is never overwritten before the data it concerns: its oldest entry may be overwritten only when the
entry after it was written before every minute and event still stored (each entry carries ``minute_n`` and
``event_n``, the numbers the next minute and event got), so the trail always reaches back before the oldest stored
record. When that leaves fewer than ``RESERVE`` entries of room, commands that change something are refused with
``audit_full`` (pull the records, or let them age out of their rings); the reserve is for what the device writes by
itself (boot, faults, clock steps from NTP). When even that is used up, such entries are counted, not written, and
the next entry written is an ``audit_full`` {lost} entry.
"""

import hashlib
import os

import chain
import record_ring

KEY_FILE = "slm_key.bin"  # 32 bytes; read here only: no protocol command reads files
RUN_FILE = "slm_run"  # "run" while the application runs, "reboot" when it asked for a reboot, gone after a clean stop
RESERVE = 16  # audit entries kept for what the device writes by itself
VALUE_CHARS = 40  # a config value longer than this (canonical JSON) is recorded as "sha256:" + 16 hex digits
FIRMWARE_FILES = (".py", ".mpy")  # with board.json and lib/: the files a deploy writes
LIB = "lib"
KINDS = ("minute", "event", "audit")


def load_key(path=KEY_FILE):
    """(the 32-byte key or None, a fault name or None)."""
    try:
        with open(path, "rb") as f:
            key = f.read(33)
    except OSError:
        return None, None
    if len(key) != 32:
        return None, "key_bad"
    return key, None


def firmware_files(folder=""):
    """[(name, sha256 hex)] of the firmware files, sorted: *.py, *.mpy and board.json at the top, all of lib/."""
    names = []
    for name in os.listdir(folder or "."):
        if name == "board.json" or name.endswith(FIRMWARE_FILES[0]) or name.endswith(FIRMWARE_FILES[1]):
            names.append(name)
    _walk(LIB, names)
    names.sort()
    out = []
    buf = bytearray(512)
    for name in names:
        h = hashlib.sha256()
        try:
            with open((folder + "/" if folder else "") + name, "rb") as f:
                while True:
                    k = f.readinto(buf)
                    if not k:
                        break
                    h.update(memoryview(buf)[:k])
        except OSError:
            continue
        out.append((name, _hex(h.digest())))
    return out


def _walk(path, names):
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for name in entries:
        p = path + "/" + name
        try:
            is_dir = os.stat(p)[0] & 0x4000
        except OSError:
            continue
        if is_dir:
            _walk(p, names)
        else:
            names.append(p)


def _hex(b):
    return "".join("%02x" % x for x in b)


def set_sha256(files):
    """The SHA-256 (hex) of a file set: over "name sha256\\n" lines, sorted by name."""
    h = hashlib.sha256()
    for name, digest in files:
        h.update(("%s %s\n" % (name, digest)).encode())
    return _hex(h.digest())


def short_value(v):
    """A config value as an audit entry keeps it: itself, or "sha256:" + 16 hex digits when its canonical JSON is
    longer than VALUE_CHARS (a list of bands)."""
    out = []  # type: list
    record_ring.canonical_json(v, out)
    text = "".join(out)
    if len(text) <= VALUE_CHARS:
        return v
    return "sha256:" + _hex(hashlib.sha256(text.encode()).digest())[:16]


class Trail:
    """The chains and the audit entries of one device. ``emit(kind, fields)`` sends and stores a record (the app's
    _emit, which signs it with ``signer()``)."""

    def __init__(self, ring, device_id, emit, key_path=KEY_FILE, run_path=RUN_FILE):
        self.ring = ring
        self.device_id = device_id
        self.emit = emit
        self.run_path = run_path
        self.key, self.fault = load_key(key_path)
        self.key_id = chain.key_id(self.key) if self.key is not None else None
        self.prev = {}  # kind -> mac of its last record
        self.last_firmware = None
        self.lost = 0  # entries not written for want of room (audit_full)
        self.faults_seen = []

    # -- signing ---------------------------------------------------------------------------------------------------
    def sign(self, kind, n, body):
        """record_ring's sign callback: the record's mac, which becomes the chain's previous mac."""
        mac = chain.link(self.key, self.device_id, kind, n, self.prev.get(kind, chain.ZERO_MAC), body)
        self.prev[kind] = mac
        return mac

    def signer(self):
        return self.sign if self.key is not None and self.ring is not None else None

    # -- boot --------------------------------------------------------------------------------------------------------
    def recover(self):
        """At boot, before any other record is emitted: each chain's previous mac, from the ring (zeros for a chain
        that starts: no key, a new key, or nothing of that kind since the key came); a changed key is written as the
        ``key`` entry now."""
        ring = self.ring
        last = self._latest(("key", "firmware")) if ring is not None else {}  # firmware: its part 1
        self.last_firmware = last.get("firmware")
        key_entry = last.get("key")
        had = key_entry.get("key_id") if key_entry is not None else None
        new_key = had != self.key_id
        if self.key is not None and ring is not None and key_entry is not None and not new_key:
            for kind in KINDS:
                r = ring.rings[kind]
                starts = key_entry.get(kind + "_n") if kind != "audit" else key_entry.get("n")
                if isinstance(starts, int) and r.last < starts:
                    self.prev[kind] = chain.ZERO_MAC  # nothing of this kind since the key came: a chain starts
                else:
                    self.prev[kind] = ring.last_mac(kind)
        else:
            for kind in KINDS:
                self.prev[kind] = chain.ZERO_MAC
        if new_key:  # first, so that every record signed from now on follows it
            self.write("key", {"key_id": self.key_id}, own=True)

    def boot(self, cause=None):
        """At boot, after ``recover`` (which writes the ``key`` entry when the key changed: it starts the chains):
        power_loss when the last run did not end cleanly, boot with its cause (``cause``: the board's reset cause,
        None where it cannot tell), firmware when the file set changed since the last firmware entry."""
        ring = self.ring
        before = self._read_run()
        if before == "run" and cause in (None, "power_on"):
            info = ring.info()["minute"] if ring is not None else None
            fields = {}
            if info and info["last"]:
                got = ring.read("minute", info["last"], 1)
                fields = {"last_n": info["last"], "last_utc": got[0].get("utc") if got else None}
            self.write("power_loss", fields, own=True)
        self._write_run("run")
        if before == "reboot" and cause in (None, "soft", "hard"):
            cause = "reboot"
        self.write("boot", {"cause": cause or "power_on"}, own=True)
        files = firmware_files()
        digest = set_sha256(files)
        fw = self.last_firmware
        if fw is None or fw.get("sha256") != digest:  # (the latest firmware entry with a sha256: part 1)
            self._firmware(digest, files)

    def stop(self, reboot=False):
        """A clean stop (the REPL took the board, the audio ended) or a reboot the device asked for."""
        if reboot:
            self._write_run("reboot")
            return
        try:
            os.remove(self.run_path)
        except OSError:
            pass

    def _read_run(self):
        try:
            with open(self.run_path) as f:
                return f.read().strip()
        except OSError:
            return None

    def _write_run(self, what):
        try:
            with open(self.run_path, "w") as f:
                f.write(what)
        except OSError:
            pass

    def _firmware(self, digest, files):
        """firmware entries: the first 8 hex digits of each file's sha256, in as many entries (``part`` of ``parts``)
        as the audit slot needs; the first also carries the set's sha256 (``set_sha256``)."""
        parts = []  # type: list
        part = {}  # type: dict
        work = bytearray(512)
        for name, h in files:
            part[name] = h[:8]
            rec = {"t": "audit", "utc": "2026-01-01T00:00:00.000Z", "ms": 1 << 40, "seq": 1 << 40,
                   "what": "firmware", "minute_n": 1 << 40, "event_n": 1 << 40, "part": 99, "parts": 99,
                   "files": part}
            if not parts:
                rec["sha256"] = digest
            if record_ring.pack("audit", rec, work)[1] and len(part) > 1:
                del part[name]
                parts.append(part)
                part = {name: h[:8]}
        parts.append(part)
        for i in range(len(parts)):
            fields = {"part": i + 1, "parts": len(parts), "files": parts[i]}
            if i == 0:
                fields["sha256"] = digest
            self.write("firmware", fields, own=True)

    def _latest(self, whats):
        """{what: the latest audit entry of each of ``whats``} found in the ring, newest first."""
        found = {}  # type: dict
        r = self.ring.rings["audit"]
        n = r.last
        while n >= r.first and n > 0 and len(found) < len(whats):
            got = self.ring.read("audit", n, 1)
            if got and got[0]["n"] == n:
                w = got[0].get("what")
                if w == "firmware" and got[0].get("part", 1) != 1:
                    w = None
                if w in whats and w not in found:
                    found[w] = got[0]
            n -= 1
        return found

    # -- entries -----------------------------------------------------------------------------------------------------
    def room(self, entries):
        """Whether ``entries`` audit entries (plus the reserve) can be written without overwriting an entry that
        stored data still needs."""
        return self._free(entries + RESERVE) >= entries + RESERVE

    def _free(self, want):
        ring = self.ring
        if ring is None:
            return want
        r = ring.rings["audit"]
        free = r.capacity - (r.last - r.first + 1 if r.first else 0)
        if free >= want:
            return free
        mins = ring.rings["minute"].first
        evts = ring.rings["event"].first
        n = r.first
        while free < want and n < r.last:
            got = ring.read("audit", n + 1, 1)  # the entry that becomes the oldest when n is overwritten
            if not got or got[0]["n"] != n + 1:
                break
            e = got[0]
            if (mins and not e.get("minute_n", 0) <= mins) or (evts and not e.get("event_n", 0) <= evts):
                break
            free += 1
            n += 1
        return free

    def write(self, what, fields, own=False):
        """Write one audit entry. ``own``: the device writes it by itself (it may use the reserve). Returns False
        when there was no room (the entry is counted in ``lost``)."""
        if self._free(1 if own else 1 + RESERVE) < (1 if own else 1 + RESERVE):
            self.lost += 1
            return False
        if self.lost and what != "audit_full":
            if self._free(2) < 2:
                self.lost += 1
                return False
            lost = self.lost
            self.lost = 0
            self.write("audit_full", {"lost": lost}, own=True)
        rec = {"what": what}
        ring = self.ring
        if ring is not None:
            rec["minute_n"] = ring.rings["minute"].last + 1
            rec["event_n"] = ring.rings["event"].last + 1
        rec.update(fields)
        self.emit("audit", rec)
        return True

    def config(self, before, values):
        """config entries: one per key whose value changes (before, after)."""
        for k in sorted(values):
            if before.get(k) != values[k]:
                self.write("config", {"key": k, "before": short_value(before.get(k)),
                                      "after": short_value(values[k])})

    def note_faults(self, faults):
        """A fault entry for each fault name not noted since boot (names like ring:OSError; counts after ':' are
        cut so that a counting fault is one entry)."""
        for f in faults:
            name = f if isinstance(f, str) else str(f)
            if name.startswith("i2s_errors:"):
                name = "i2s_errors"
            if name not in self.faults_seen:
                self.faults_seen.append(name)
                self.write("fault", {"name": name}, own=True)
