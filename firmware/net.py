"""The meter on the network (docs/network.md, "On the device"): an optional Wi-Fi station, MQTT through
micropython-lib's umqtt.simple, store-and-forward from the device's record ring, all within a bound per loop turn.

Settings come from net.json (kept apart from config.json; `hello` and `get` never show them)::

    {"host": "10.0.0.2", "port": 1883, "user": "<device id>", "password": "...", "site": "square",
     "tls": false, "ca": "ca.pem", "ssid": "...", "wifi_password": "...", "intervals": false, "ntp": "10.0.0.2",
     "ntp_port": 123, "timeout_ms": 1000}

Only ``host`` and ``site`` are required. Without ``ssid`` (or without the ``network`` module: the unix port of a
virtual board) the network is taken as there. Records go to ``slm/<site>/<device>/<kind>`` as the JSON of the serial
record (no checksum), QoS 1; ``hello`` on every connection and ``status`` are retained, and the last will is a
retained ``{"t":"status","state":"offline"}``.

Minutes and events are not queued here: they are read back from the ring (record_ring) by their number ``n``,
oldest first, from a cursor per kind (the last ``n`` the broker acknowledged), kept in net_sent.json; so whatever
could not be published (broker down, Wi-Fi lost, a power cut) is sent later, in order. What the ring overwrote
before it could be sent is counted in ``dropped``. The ring bounds what is kept (a week of minutes, a month of
events). hello, status and (with ``"intervals": true``) interval records are live only: at most OUTBOX_MAX wait,
the newest status replaces an older one, and what finds no room is counted in ``skipped``.

The loop does not wait on the network for long: ``tick()`` does one step per loop turn (poll the Wi-Fi, one NTP
packet, one connection attempt, or publishes for at most BUDGET_MS / PUBLISH_PER_TURN), and every blocking socket
operation has a timeout, ``timeout_ms`` in net.json, default OP_TIMEOUT_MS (umqtt.simple is blocking: a QoS 1
publish waits for its PUBACK; on an ESP32 a wait longer than the I2S buffer, 85 ms at 48 kHz, loses audio, and a TLS
handshake is not bounded: docs/network.md). Failures back off from BACKOFF_MIN_MS, doubling, to BACKOFF_MAX_MS.
"""

import json
import os

NET_FILE = "net.json"
CURSOR_FILE = "net_sent.json"
OFFLINE = b'{"t":"status","state":"offline"}'
OP_TIMEOUT_MS = 1000  # connect, CONNACK, PUBACK: the longest one turn waits on a silent broker (net.json timeout_ms)
BUDGET_MS = 20  # publishing stops for this turn once it has taken this long
PUBLISH_PER_TURN = 8
OUTBOX_MAX = 8  # live records (hello, status, interval) waiting for the broker
BACKOFF_MIN_MS = 1000
BACKOFF_MAX_MS = 60000
WIFI_WAIT_MS = 20000  # a Wi-Fi connection that is not up after this is started again
KEEPALIVE_S = 60
PING_MS = 30000  # a PINGREQ when nothing was published for this long (the broker then keeps the session)
CURSOR_SAVE_EVERY = 20  # acknowledged ring records between cursor saves (and whenever the backlog is empty)
NTP_EVERY_MS = 3600000
NTP_WAIT_MS = 2000
NTP_DELTA_DAYS = 25567  # days from 1900-01-01 (NTP) to 1970-01-01
RING_KINDS = ("event", "audit", "minute")
PUBLISHED = ("hello", "status", "interval", "minute", "event", "audit")
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def load_settings(path=NET_FILE):
    """(settings dict, None), (None, None) when there is no net.json, or (None, fault name) when it is unusable."""
    try:
        with open(path) as f:
            s = json.load(f)
    except OSError:
        return None, None
    except ValueError:
        return None, "net_corrupt"
    if not isinstance(s, dict) or not isinstance(s.get("host"), str) or not s["host"] or \
            not valid_id(s.get("site")) or not _int_in(s.get("port", 1883), 1, 65535) or \
            not _int_in(s.get("timeout_ms", OP_TIMEOUT_MS), 1, 60000):
        return None, "net_corrupt"
    return s, None


def _int_in(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def valid_id(text):
    """A site or device id of the topics: 1-64 characters of A-Z a-z 0-9 - _."""
    if not isinstance(text, str) or not 1 <= len(text) <= 64:
        return False
    for ch in text:
        if ch not in ID_CHARS:
            return False
    return True


def _encode(rec):
    return json.dumps(rec, separators=(",", ":")).encode()


class Net:
    """``record(rec)`` takes each record the device sends (protocol.RecordWriter's tap); ``tick()`` once per loop
    turn; ``counts()`` for the status record. ``hw``: ticks_ms/ticks_diff; ``ring``: the RecordRing (None: minutes
    and events are then live only); ``set_clock(day, ms, source)``: the app's, for NTP."""

    def __init__(self, settings, device, ring, hw, set_clock=None, wlan=None, cursor_path=CURSOR_FILE):
        self.s = settings
        self.device = device
        self.prefix = "slm/%s/%s/" % (settings["site"], device)
        self.ring = ring
        self.hw = hw
        self.set_clock = set_clock
        self.wlan = wlan
        self.cursor_path = cursor_path
        self.intervals = settings.get("intervals") is True
        self.timeout_s = settings.get("timeout_ms", OP_TIMEOUT_MS) / 1000
        self.client = None
        self.tls = None  # the TLS wrapper of the connection (_Tls), when net.json asks for TLS
        self.state = "down"  # down (waiting to try), wifi (joining), up (connected to the broker)
        self.failed_at = hw.ticks_ms()
        self.wait_ms = 0  # after a failure: the wait before the next try (backing off)
        self.backoff = BACKOFF_MIN_MS
        self.wifi_since = 0
        self.outbox = []  # [kind, payload bytes, retain]
        self.hello = None  # the device's hello (payload)
        self.status = None  # its last status (payload): retained again on every connection, over the last will
        self.last_io = 0
        self.unsaved = 0
        self.ntp_sock = None
        self.ntp_at = None  # ticks of the last NTP request (None: none yet)
        self.connects = 0
        self.sent = 0
        self.dropped = 0  # ring records overwritten before they were sent
        self.skipped = 0  # live records that found no room or no connection
        self.errors = 0
        self.last_error = None
        self.max_ms = 0  # the longest tick() so far (CPU clock, ms)
        self.cursor = self._load_cursor()

    # -- what the device sends -------------------------------------------------------------------------------------
    def record(self, rec):
        """A record just sent over serial (its dict, encoded now: level fields are reused objects)."""
        kind = rec["t"]
        if kind not in PUBLISHED:
            return
        if kind in RING_KINDS and self.ring is not None:
            return  # read back from the ring
        if kind == "interval" and (not self.intervals or self.state != "up"):
            if self.intervals:
                self.skipped += 1
            return
        payload = _encode(rec)
        if kind == "hello":  # published first on every connection (and now, when connected)
            self.hello = payload
            if self.state == "up":
                self._queue_hello()
            return
        if kind == "status":
            self.status = payload
            for item in self.outbox:
                if item[0] == kind:
                    item[1] = payload  # only the newest counts
                    return
        if len(self.outbox) >= OUTBOX_MAX:
            for i in range(len(self.outbox)):
                if self.outbox[i][0] != "hello":
                    del self.outbox[i]
                    self.skipped += 1
                    break
        self.outbox.append([kind, payload, kind == "status"])

    # -- the loop's turn -------------------------------------------------------------------------------------------
    def tick(self):
        """One bounded step of the network's work; never raises."""
        t0 = self.hw.ticks_ms()
        try:
            if self.state == "up":
                self._publish_some()
            else:
                self._bring_up()
        except Exception as e:  # a bug or an unforeseen error: count it, drop the connection, try again later
            self._failed(e)
        took = self.hw.ticks_diff(self.hw.ticks_ms(), t0)
        if took > self.max_ms:
            self.max_ms = took

    def _bring_up(self):
        hw = self.hw
        now = hw.ticks_ms()
        if hw.ticks_diff(now, self.failed_at) < self.wait_ms:
            return
        w = self.wlan
        if w is not None and not w.isconnected():
            if self.state != "wifi" or hw.ticks_diff(now, self.wifi_since) > WIFI_WAIT_MS:
                self.state = "wifi"
                self.wifi_since = now
                try:
                    w.disconnect()
                except Exception:
                    pass
                w.connect(self.s.get("ssid"), self.s.get("wifi_password", ""))
            return
        if self._ntp(now):
            return
        self._connect()

    def _connect(self):
        from umqtt.simple import MQTTClient

        s = self.s
        ssl = None
        if s.get("tls"):
            ssl = _Tls(s.get("ca"))
        self.tls = ssl
        port = s.get("port", 8883 if ssl else 1883)
        client = MQTTClient(self.device, s["host"], port, user=s.get("user"), password=s.get("password"),
                            keepalive=KEEPALIVE_S, ssl=ssl)
        client.set_last_will(self.prefix + "status", OFFLINE, retain=True, qos=1)
        self.client = client
        client.connect(timeout=self.timeout_s)
        self.state = "up"
        self._queue_hello()
        self.connects += 1
        self.backoff = BACKOFF_MIN_MS
        self.last_io = self.hw.ticks_ms()

    def _queue_hello(self):
        """hello first, and the last status (the broker may hold the last will's `offline` as retained status)."""
        if self.status is not None and not any(item[0] == "status" for item in self.outbox):
            self.outbox.append(["status", self.status, True])
        if self.hello is None:
            return
        if self.outbox and self.outbox[0][0] == "hello":
            self.outbox[0][1] = self.hello
        else:
            self.outbox.insert(0, ["hello", self.hello, True])

    def _publish_some(self):
        hw = self.hw
        t0 = hw.ticks_ms()
        done = 0
        while done < PUBLISH_PER_TURN and hw.ticks_diff(hw.ticks_ms(), t0) < BUDGET_MS:
            if self.outbox and self.outbox[0][0] == "hello":
                item = self.outbox[0]
                self._publish(item[0], item[1], item[2])
                self.outbox.pop(0)
            elif not self._send_from_ring():
                if not self.outbox:
                    break
                item = self.outbox[0]
                self._publish(item[0], item[1], item[2])
                self.outbox.pop(0)
            done += 1
        if done:
            self.last_io = hw.ticks_ms()
            return
        if self.unsaved:
            self._save_cursor()
        c = self.client
        assert c is not None
        if hw.ticks_diff(t0, self.last_io) >= PING_MS:
            self._timeout()
            c.ping()
            self.last_io = t0
        else:
            c.check_msg()  # consumes a PINGRESP without waiting (raises when the broker has gone)

    def _send_from_ring(self):
        """Publish the oldest ring record not yet acknowledged (events first); False when there is none."""
        ring = self.ring
        if ring is None:
            return False
        for kind in RING_KINDS:
            r = ring.rings[kind]
            nxt = self.cursor[kind] + 1
            if nxt > r.last:
                continue
            if r.first and nxt < r.first:  # overwritten before it was sent
                self.dropped += r.first - nxt
                self.cursor[kind] = r.first - 1
                self.unsaved += 1
                nxt = r.first
            got = ring.read(kind, nxt, 1)
            if not got:  # no readable record left up to the last (damaged slots)
                self.cursor[kind] = r.last
                self.unsaved += 1
                continue
            rec = got[0]
            n = rec["n"] if "mac" in rec else rec.pop("n")  # a signed record keeps its chain number
            self._publish(kind, _encode(rec), False)
            self.cursor[kind] = n
            self.unsaved += 1
            if self.unsaved >= CURSOR_SAVE_EVERY:
                self._save_cursor()
            return True
        return False

    def _publish(self, kind, payload, retain):
        c = self.client
        assert c is not None
        self._timeout()
        c.publish(self.prefix + kind, payload, retain, 1)
        self.sent += 1

    def _timeout(self):
        """Bound the next socket operation: umqtt.simple leaves its socket blocking after each read, and a TLS
        socket has no settimeout (its TCP socket has)."""
        c = self.client
        assert c is not None
        sock = self.tls.raw if self.tls is not None else c.sock
        sock.settimeout(self.timeout_s)

    def _failed(self, e):
        self.errors += 1
        self.last_error = "%s:%s" % (type(e).__name__, e.args[0] if e.args else "")
        if self.client is not None:
            try:
                self.client.sock.close()
            except Exception:
                pass
            self.client = None
        self.state = "down"
        self.failed_at = self.hw.ticks_ms()
        self.wait_ms = self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_MS)

    # -- NTP (one request, its answer read in later turns) ---------------------------------------------------------
    def _ntp(self, now):
        """True while an NTP exchange takes this turn; sets the clock when an answer comes."""
        host = self.s.get("ntp")
        if not host or self.set_clock is None:
            return False
        import socket

        hw = self.hw
        if self.ntp_sock is None:
            if self.ntp_at is not None and hw.ticks_diff(now, self.ntp_at) < NTP_EVERY_MS:
                return False
            self.ntp_at = now
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            query = bytearray(48)
            query[0] = 0x1B  # version 3, client
            try:
                sock.sendto(query, socket.getaddrinfo(host, self.s.get("ntp_port", 123))[0][-1])
            except OSError:
                sock.close()
                return False
            self.ntp_sock = sock
            return True
        try:
            answer = self.ntp_sock.recv(48)
        except OSError:
            answer = None
        if not answer:
            if hw.ticks_diff(now, self.ntp_at) < NTP_WAIT_MS:
                return True
            self.ntp_sock.close()
            self.ntp_sock = None
            return False
        self.ntp_sock.close()
        self.ntp_sock = None
        if len(answer) >= 48 and answer[1] != 0:  # stratum 0: kiss-o'-death, no time
            half_rtt = hw.ticks_diff(now, self.ntp_at) // 2
            secs = int.from_bytes(answer[40:44], "big")
            frac = int.from_bytes(answer[44:48], "big")
            ms = (secs % 86400) * 1000 + (frac * 1000 >> 32) + half_rtt
            self.set_clock(secs // 86400 - NTP_DELTA_DAYS, ms, "ntp")
        return False

    # -- the cursor ------------------------------------------------------------------------------------------------
    def _load_cursor(self):
        cur = {}
        try:
            with open(self.cursor_path) as f:
                cur = json.load(f)
        except (OSError, ValueError):
            pass
        out = {}
        for kind in RING_KINDS:
            v = cur.get(kind) if isinstance(cur, dict) else None
            r = self.ring.rings[kind] if self.ring is not None else None
            if not isinstance(v, int) or v < 0 or (r is not None and v > r.last):
                # none known, or a ring that was emptied since: everything the ring holds is sent
                v = r.first - 1 if r is not None and r.first > 0 else 0
            out[kind] = v
        return out

    def _save_cursor(self):
        tmp = self.cursor_path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(self.cursor))
            os.rename(tmp, self.cursor_path)
            self.unsaved = 0
        except OSError:
            pass  # sent again after a restart: the collector drops duplicates

    # -- reporting -------------------------------------------------------------------------------------------------
    def backlog(self):
        """Ring records not yet acknowledged by the broker."""
        if self.ring is None:
            return 0
        left = 0
        for kind in RING_KINDS:
            r = self.ring.rings[kind]
            left += max(0, r.last - max(self.cursor[kind], r.first - 1 if r.first else 0))
        return left

    def counts(self):
        return {"state": self.state, "connects": self.connects, "sent": self.sent, "backlog": self.backlog(),
                "dropped": self.dropped, "skipped": self.skipped, "errors": self.errors, "error": self.last_error,
                "max_ms": self.max_ms}


class _Tls:
    """What umqtt.simple's ``ssl`` argument needs (``wrap_socket(sock, server_hostname)``), keeping the TCP socket
    (``raw``) whose timeout bounds the TLS socket's reads."""

    def __init__(self, ca):
        self.ctx = _tls_context(ca)
        self.raw = None

    def wrap_socket(self, sock, server_hostname=None):
        self.raw = sock
        return self.ctx.wrap_socket(sock, server_hostname=server_hostname)


def _tls_context(ca):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        with open(ca, "rb") as f:
            data = f.read()
        if data.startswith(b"-----BEGIN"):  # PEM: MicroPython's mbedtls takes the DER inside
            from binascii import a2b_base64

            data = a2b_base64(b"".join(x for x in data.split(b"\n") if x.strip() and not x.startswith(b"-----")))
        ctx.load_verify_locations(cadata=data)
        ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
    else:
        # encrypted, the broker not authenticated: give "ca" in net.json
        ctx.verify_mode = ssl.CERT_NONE  # type: ignore[attr-defined]
    return ctx


def _wifi(settings):
    """The station interface when net.json names a network and the board has Wi-Fi, else None (the network is
    taken as there: the unix port, or a board on Ethernet)."""
    if not settings.get("ssid"):
        return None
    try:
        import network
    except ImportError:
        return None
    w = network.WLAN(network.STA_IF)
    w.active(True)
    return w


def start(hw, ring, set_clock, faults):
    """The Net of this device when net.json exists and is usable (else None; a broken one adds a fault)."""
    settings, fault = load_settings()
    if fault:
        faults.append(fault)
    if settings is None:
        return None
    device = hw.unique_id()
    if not valid_id(device):
        faults.append("net_bad_id")
        return None
    try:
        return Net(settings, device, ring, hw, set_clock, _wifi(settings))
    except Exception as e:
        faults.append("net:%s" % type(e).__name__)
        return None
