"""The device's command handler: one protocol line in, one ack or error record out (docs/protocol.md).

Every command is checked completely before anything changes: a malformed, unknown or out-of-range command gets an
``error`` reply and leaves the configuration and the measurement as they were.
"""

import config_store
import protocol


class CommandHandler:
    def __init__(self, app):
        self.app = app

    def handle(self, line):
        """Handle one received line (bytes, or None for a line that was too long)."""
        cmd = None
        cid = None
        try:
            if line is None:
                raise ValueError("bad_line")
            msg = protocol.decode(line)
            cmd = msg.get("cmd")
            cid = msg.get("id")
            if not isinstance(cid, int) or isinstance(cid, bool):
                cid = None
            if not isinstance(cmd, str):
                raise ValueError("bad_line")
            method = getattr(self, "cmd_" + cmd, None) if cmd.isalpha() else None
            if method is None:
                raise ValueError("unknown_cmd")
            result = method(msg)
        except ValueError as e:
            self._error(cid, cmd, str(e))
            return
        except OSError as e:
            self._error(cid, cmd, "io_error: %s" % e)
            return
        self.app.writer.send("ack", {"id": cid, "cmd": cmd, "result": result})
        if cmd == "reboot":
            self.app.hw.reboot()

    def _error(self, cid, cmd, text):
        code, _, message = text.partition(": ")
        if code not in ("bad_line", "bad_checksum", "unknown_cmd", "bad_key", "bad_value", "io_error"):
            code, message = "bad_value", text
        self.app.writer.send("error", {"id": cid, "cmd": cmd if isinstance(cmd, str) else None, "code": code,
                                       "message": message or code})

    def cmd_info(self, msg):
        return self.app.hello()

    def cmd_get(self, msg):
        keys = msg.get("keys")
        if keys is None:
            keys = list(config_store.DEFAULTS) + ["status"]
        if not isinstance(keys, list):
            raise ValueError("bad_value: keys must be a list")
        out = {}
        for k in keys:
            if k == "status":
                out[k] = self.app.status()
            elif isinstance(k, str) and k in self.app.config:
                out[k] = self.app.config[k]
            else:
                raise ValueError("bad_key: %s" % (k,))
        return out

    def cmd_set(self, msg):
        values = msg.get("values")
        if not isinstance(values, dict) or not values:
            raise ValueError("bad_value: values must be a non-empty object")
        checked = {}
        for k, v in values.items():
            try:
                checked[k] = config_store.check(k, v)
            except ValueError as e:
                text = str(e)
                raise ValueError(text if ":" in text else "%s: %s" % (text, k))
        self.app.apply_config(checked)
        return checked

    def cmd_stream(self, msg):
        return self.cmd_set({"values": {"stream_hz": msg.get("hz")}})

    def cmd_reset(self, msg):
        self.app.reset_statistics()
        return {}

    def cmd_reboot(self, msg):
        return {}
