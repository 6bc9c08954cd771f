"""The device's command handler: one protocol line in, one ack or error record out (docs/protocol.md).

Every command is checked completely before anything changes: a malformed, unknown or out-of-range command gets an
``error`` reply and leaves the configuration and the measurement as they were.
"""

import audit
import calibration_store
import clock
import config_store
import protocol


MAX_CMD_CHARS = 20  # longer names are unknown without a look-up (MicroPython cannot intern names of 252+ chars)
ID_LIMIT = 1 << 31  # an id is echoed in the reply, so it must be short: a 32-bit integer
PULL_MAX = 64  # records per `pull` reply at most
PULL_BYTES = protocol.MAX_LINE - 224  # base64 text per `pull` reply: the rest of the line is the ack around it
CODES = ("bad_line", "bad_checksum", "unknown_cmd", "bad_key", "bad_value", "io_error", "internal", "audit_full")
RING_KINDS = ("minute", "event", "audit")  # what `pull` returns

# errno values a board's filesystem gives, named for the io_error message ("28" alone tells a technician nothing)
_OS_ERRORS = {2: "no such file", 5: "input/output error", 12: "out of memory", 13: "permission denied",
              17: "file exists", 22: "invalid argument", 27: "file too large", 28: "no space left on device",
              30: "read-only filesystem"}


def os_error_text(e):
    """A readable message for an OSError: 'no space left on device (errno 28)', or the error's own text."""
    code = e.args[0] if e.args else None
    if isinstance(code, int):
        return "%s (errno %d)" % (_OS_ERRORS.get(code, "filesystem error"), code)
    return str(e) or "filesystem error"


class CommandHandler:
    def __init__(self, app):
        self.app = app

    def handle(self, line):
        """Handle one received line (bytes, or None for a line that was too long): exactly one reply, whatever the
        line holds. Returns the reply's length in bytes."""
        cmd = None
        cid = None
        try:
            if line is None:
                raise ValueError("bad_line")
            msg = protocol.decode(line)
            cid = msg.get("id")
            if not isinstance(cid, int) or isinstance(cid, bool):
                cid = None
            elif not -ID_LIMIT <= cid < ID_LIMIT:
                cid = None
                raise ValueError("bad_value: id must be an integer of at most 32 bits")
            protocol.check_text(msg)
            name = msg.get("cmd")
            if not isinstance(name, str):
                raise ValueError("bad_line")
            if len(name) > MAX_CMD_CHARS:
                raise ValueError("unknown_cmd: %s" % protocol.echo(name))
            cmd = name
            method = getattr(self, "cmd_" + cmd, None) if cmd.replace("_", "").isalpha() else None
            if method is None:
                raise ValueError("unknown_cmd")
            result = method(msg)
            n = self.app.writer.send("ack", {"id": cid, "cmd": cmd, "result": result})
        except ValueError as e:
            return self._error(cid, cmd, str(e))
        except OSError as e:
            return self._error(cid, cmd, "io_error: " + os_error_text(e))
        except Exception as e:  # a firmware fault or MemoryError: still one reply, and the meter keeps running
            return self._error(cid, cmd, "internal: %s" % type(e).__name__)
        if cmd == "reboot":
            self.app.reboot("command")
        return n

    def _error(self, cid, cmd, text):
        code, _, message = text.partition(": ")
        if code not in CODES:
            code, message = "bad_value", text
        return self.app.writer.send("error", {"id": cid, "cmd": cmd, "code": code, "message": message or code})

    def cmd_info(self, msg):
        return self.app.hello()

    def cmd_get(self, msg):
        keys = msg.get("keys")
        if keys is None:
            keys = [k for k in config_store.DEFAULTS if k not in config_store.ONLY_BY_NAME] + ["status"]
        if not isinstance(keys, list):
            raise ValueError("bad_value: keys must be a list")
        out = {}
        for k in keys:
            if k == "status":
                out[k] = self.app.status()
            elif isinstance(k, str) and k in self.app.config:
                out[k] = self.app.config[k]
            else:
                raise ValueError("bad_key: %s" % protocol.echo(k))
        return out

    def cmd_set(self, msg):
        values = msg.get("values")
        if not isinstance(values, dict) or not values:
            raise ValueError("bad_value: values must be a non-empty object")
        checked = {}
        for k, v in values.items():
            if k in config_store.READ_ONLY:
                raise ValueError("bad_key: %s is set by calibrate" % k)
            if k not in config_store.RULES:
                raise ValueError("bad_key: %s" % protocol.echo(k))
            try:
                checked[k] = config_store.check(k, v)
            except ValueError as e:
                text = str(e)
                raise ValueError(text if ":" in text else "%s: %s" % (text, protocol.echo(k)))
        merged = dict(self.app.config)
        merged.update(checked)
        config_store.check_together(merged)
        self.app.audit_room(len(checked))
        if "calibration_db" not in checked:
            self.app.apply_config(checked)
            return checked
        # An offset typed in by hand: no calibration stands behind it. It goes into the history like a calibration,
        # and hello's cal says "manual" from now on.
        values = dict(checked)
        values["calibration_method"] = "manual"
        values["calibration_time"] = None
        self._record_and_apply({"method": "manual", "offset_db": checked["calibration_db"], "time": None}, values)
        return checked

    def _record_and_apply(self, rec, values):
        """Append ``rec`` to the calibration history, then save ``values`` in the configuration: all or nothing
        (the record is removed again when the configuration cannot be saved)."""
        app = self.app
        store = app.calibration
        rec["n"] = store.last_n + 1
        before = app.config["calibration_db"]
        rec["previous_offset_db"] = before
        store.append(calibration_store.encode(rec), rec["n"])
        if values:
            try:
                app.apply_config(values)
            except OSError:
                try:
                    store.drop_last()
                except OSError:
                    pass  # the record stays, but config.json still names the calibration in force
                raise
        for fault in ("calibration_missing", "calibration_corrupt"):
            if fault in app.faults:
                app.faults.remove(fault)
        entry = {"kind": "check" if rec["method"] == "check" else "calibrate", "method": rec["method"],
                 "cal_n": rec["n"], "before": before, "after": app.config["calibration_db"]}
        if rec.get("time") is not None:
            entry["time"] = rec["time"]
        if rec.get("drift_db") is not None:  # a check's drift: reports flag the data after one over 0.5 dB
            entry["drift_db"] = rec["drift_db"]
        if isinstance(rec.get("reference"), dict):
            entry["reference"] = audit.short_value(rec["reference"])
        app.trail.write("calibration", entry, own=True)  # the command checked the room first
        return rec["n"]

    def cmd_stream(self, msg):
        return self.cmd_set({"values": {"stream_hz": msg.get("hz")}})

    def cmd_time(self, msg):
        """Set the clock: {"utc": "2026-07-15T13:50:00.250Z"} (an offset such as +08:00 is converted to UTC)."""
        utc = msg.get("utc")
        if not isinstance(utc, str):
            raise ValueError("bad_value: utc must be an ISO 8601 time, e.g. 2026-07-15T13:50:00.250Z")
        day, ms = clock.parse_iso(utc)
        if not clock.days_from_civil(2000, 1, 1) <= day < clock.days_from_civil(2100, 1, 1):
            raise ValueError("bad_value: utc must be between 2000 and 2099")
        self.app.audit_room(1)
        step = self.app.set_clock(day, ms, "host")
        return {"utc": self.app.utc_now(), "step_s": step}

    def cmd_reset(self, msg):
        self.app.reset_statistics()
        return {}

    def cmd_reboot(self, msg):
        return {}

    def cmd_calibrate(self, msg):
        rec = calibration_store.check_record(msg.get("record"))
        self.app.audit_room(1)
        offset = self.app.config["calibration_db"]
        values = None
        if rec["method"] in calibration_store.SETS_OFFSET:
            values = {"calibration_db": config_store.check("calibration_db", rec["offset_db"]),
                      "calibration_method": rec["method"],
                      "calibration_time": config_store.check("calibration_time", rec["time"])}
        elif "offset_db" in rec and abs(rec["offset_db"] - offset) > 0.005:
            raise ValueError("bad_value: a check's offset_db must be the offset in force (%s)" % offset)
        else:
            rec["offset_db"] = offset
        n = self._record_and_apply(rec, values)
        return {"n": n, "offset_db": self.app.config["calibration_db"], "count": self.app.calibration.count}

    def cmd_cal_history(self, msg):
        store = self.app.calibration
        index = msg.get("index", -1)
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError("bad_value: index must be an integer")
        if store.count == 0:
            return {"count": 0, "index": None, "record": None, "max": calibration_store.MAX_RECORDS}
        if index < 0:
            index += store.count
        return {"count": store.count, "index": index, "record": store.read(index),
                "max": calibration_store.MAX_RECORDS}

    # -- the device's own record (record_ring; docs/protocol.md "Device record") -------------------------------
    def _ring(self):
        ring = self.app.ring
        if ring is None:  # its files could not be opened at start (the fault ring:... says why)
            raise OSError("the device record could not be opened")
        return ring

    def cmd_ring(self, msg):
        ring = self._ring()
        out = ring.info()
        out["left_out"] = ring.left_out
        return out

    def cmd_pull(self, msg):
        """Stored records of one kind from n = ``from`` on, as many as fit in the reply line (at most ``max``):
        each the base64 of its slot without the trailing zeros (the host decodes it with record_ring.decode)."""
        from binascii import b2a_base64

        ring = self._ring()
        kind = msg.get("kind")
        if kind not in RING_KINDS:
            raise ValueError("bad_value: kind must be minute, event or audit")
        info = ring.info()[kind]
        start = msg.get("from", info["first"])
        count = msg.get("max", PULL_MAX)
        if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start < 1 << 32:
            raise ValueError("bad_value: from must be a record number (0 or more)")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= PULL_MAX:
            raise ValueError("bad_value: max must be an integer from 1 to %d" % PULL_MAX)
        records = []  # type: list
        room = [PULL_BYTES]

        def take(n, slot):
            end = len(slot)
            while end > 12 and slot[end - 1] == 0:
                end -= 1
            text = b2a_base64(slot[:end]).strip().decode()
            if len(records) >= count or len(text) + 3 > room[0]:
                return False
            room[0] -= len(text) + 3
            records.append(text)
            return True

        nxt = ring.each(kind, start, take)
        return {"kind": kind, "records": records, "next": nxt, "first": info["first"], "last": info["last"]}
