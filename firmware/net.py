"""The meter on the network (docs/network.md, "On the device"): an optional Wi-Fi station, MQTT through
micropython-lib's umqtt.simple, store-and-forward from the device's record ring, all within a bound per loop turn.

Settings come from net.json (kept apart from config.json; `hello` and `get` never show them)::

    {"host": "10.0.0.2", "port": 1883, "user": "<device id>", "password": "...", "site": "square",
     "tls": false, "ca": "ca.pem", "ssid": "...", "wifi_password": "...", "intervals": false, "ntp": "10.0.0.2",
     "ntp_port": 123, "timeout_ms": 5000}

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

The loop never waits on the network: ``tick()`` does one step per loop turn (poll the Wi-Fi, one NTP packet, one
step of a connection, or reading PUBACKs and writing publishes for at most BUDGET_MS / PUBLISH_PER_TURN) on a
non-blocking socket. umqtt.simple's own connect() and publish() wait on their socket (a QoS 1 publish waits for its
PUBACK), so the connection is driven here (_Link): TCP connect, TLS handshake, CONNECT and CONNACK in later turns;
QoS 1 publishes go out in a window of WINDOW records whose PUBACKs are collected in later turns; a connection that
leaves a CONNACK, PUBACK or PINGRESP unanswered for ``timeout_ms`` (net.json, default OP_TIMEOUT_MS) is dropped,
and the next one sends again from the oldest record not acknowledged. Failures back off from BACKOFF_MIN_MS,
doubling, to BACKOFF_MAX_MS. What still blocks: a host name's getaddrinfo (give the broker's address as a number)
and the CPU of a TLS handshake step (docs/network.md).
"""

import json
import os
import time

NET_FILE = "net.json"
CURSOR_FILE = "net_sent.json"
OFFLINE = b'{"t":"status","state":"offline"}'
OP_TIMEOUT_MS = 5000  # a connection, CONNACK, PUBACK or PINGRESP not there after this: the connection is dropped
BUDGET_MS = 10  # publishing stops for this turn once it has taken this long (and a longer step is counted: `over`)
PUBLISH_PER_TURN = 4
WINDOW = 8  # QoS 1 publishes awaiting their PUBACK
OUT_MAX = 4096  # bytes the socket has not yet taken: no new publish while more wait
OUTBOX_MAX = 8  # live records (hello, status, interval) waiting for the broker
BACKOFF_MIN_MS = 1000
BACKOFF_MAX_MS = 60000
WIFI_WAIT_MS = 20000  # a Wi-Fi connection that is not up after this is started again
KEEPALIVE_S = 60
PING_MS = 30000  # a PINGREQ when nothing was published for this long (the broker then keeps the session)
CURSOR_SAVE_EVERY = 20  # acknowledged ring records between cursor saves (and on a turn with nothing in flight)
NTP_EVERY_MS = 3600000
NTP_WAIT_MS = 2000
NTP_DELTA_DAYS = 25567  # days from 1900-01-01 (NTP) to 1970-01-01
RING_KINDS = ("event", "audit", "minute")
PUBLISHED = ("hello", "status", "interval", "minute", "event", "audit")
_IN_PROGRESS = (115, 119, 11)  # EINPROGRESS (Linux; lwIP), EAGAIN: a non-blocking connect under way
_AGAIN = (11,)  # EAGAIN: nothing to read, no room to write
_ECONNREFUSED = 111
_ECONNRESET = 104
_ETIMEDOUT = 110
_ticks_us = getattr(time, "ticks_us", None) or (lambda: int(time.monotonic() * 1000000))  # type: ignore[attr-defined]
_ticks_diff = getattr(time, "ticks_diff", None) or (lambda a, b: a - b)
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
        self.topics = {}
        for kind in PUBLISHED:
            self.topics[kind] = (self.prefix + kind).encode()
        self.ring = ring
        self.hw = hw
        self.set_clock = set_clock
        self.wlan = wlan
        self.cursor_path = cursor_path
        self.intervals = settings.get("intervals") is True
        self.timeout_ms = settings.get("timeout_ms", OP_TIMEOUT_MS)
        self.addr = None  # the broker's address, resolved once
        self.link = None  # the connection in progress or up (_Link)
        self.state = "down"  # down (waiting to try), wifi (joining), connecting (TCP/TLS/CONNACK), up
        self.failed_at = hw.ticks_ms()
        self.wait_ms = 0  # after a failure: the wait before the next try (backing off)
        self.backoff = BACKOFF_MIN_MS
        self.wifi_since = 0
        self.outbox = []  # [kind, payload bytes, retain]: live records
        self.inflight = []  # [packet id, kind, ring n or None, ticks sent]: published, PUBACK not yet seen
        self.next_n = {}  # per ring kind: the next record to publish on this connection
        self.pid = 0
        self.high = {}  # per ring kind: the highest record published so far (to count what is sent again)
        self.hello = None  # the device's hello (payload)
        self.status = None  # its last status (payload): retained again on every connection, over the last will
        self.last_io = 0
        self.ping_at = None  # ticks of the PINGREQ awaiting its PINGRESP
        self.unsaved = 0
        self.ntp_sock = None
        self.ntp_at = None  # ticks of the last NTP request (None: none yet)
        self.connects = 0
        self.sent = 0  # records the broker acknowledged
        self.resent = 0  # ring records published again after a connection dropped before their PUBACK
        self.dropped = 0  # ring records overwritten before they were sent
        self.skipped = 0  # live records that found no room or no connection
        self.errors = 0
        self.last_error = None
        self.steps = 0  # tick() calls
        self.max_us = 0  # the longest tick() so far (µs, ticks_us), without its cursor file writes (store_us)
        self.store_us = 0  # the longest cursor file write so far (µs): local storage, not the network
        self._stored_us = 0  # this tick's time in cursor file writes
        self.max_state = self.max_stage = None  # what that tick began in (finding a slow path; no allocation)
        self.over = 0  # tick() calls that took longer than BUDGET_MS
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
        """One bounded step of the network's work: never waits on a socket, never raises."""
        state = self.state
        stage = self.link.stage if self.link is not None else None
        self._stored_us = 0
        t0 = _ticks_us()
        try:
            if self.link is None:
                self._bring_up()
            else:
                self._serve(self.hw.ticks_ms())
        except Exception as e:  # refused, reset, timed out, or a bug: count it, drop the connection, try later
            self._failed(e)
        # the cursor's file write is counted apart (store_us): it is the device's storage, which the ring's own
        # writes in the same loop share, and a loaded host may hold a process in it for long
        took = _ticks_diff(_ticks_us(), t0) - self._stored_us
        self.steps += 1
        if took > self.max_us:
            self.max_us = took
            self.max_state = state
            self.max_stage = stage
        if took > BUDGET_MS * 1000:
            self.over += 1

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
                w.connect(self.s.get("ssid"), self.s.get("wifi_password", ""))  # returns at once: joins meanwhile
            return
        if self._ntp(now):
            return
        s = self.s
        tls = _Tls(s.get("ca")) if s.get("tls") else None
        port = s.get("port", 8883 if tls else 1883)
        if self.addr is None:
            import socket

            self.addr = socket.getaddrinfo(s["host"], port)[0][-1]  # blocks on a name: give the address (docs)
        self.state = "connecting"
        self.link = _Link(self.device, s, port, self.prefix + "status", self.addr, tls, now, self.acked)

    def _serve(self, now):
        link = self.link
        assert link is not None
        hw = self.hw
        if link.stage != "up":
            link.advance()
            if link.stage != "up":
                if hw.ticks_diff(now, link.since) > self.timeout_ms:
                    raise OSError(_ETIMEDOUT)
                return
            self._connected(now)
        link.read()
        self._publish_some(now)
        link.flush()
        if self.inflight and hw.ticks_diff(now, self.inflight[0][3]) > self.timeout_ms:
            raise OSError(_ETIMEDOUT)  # no PUBACK: connect again and send from the oldest unacknowledged
        if self.ping_at is not None and hw.ticks_diff(now, self.ping_at) > self.timeout_ms:
            raise OSError(_ETIMEDOUT)

    def _connected(self, now):
        self.state = "up"
        self.connects += 1
        self.backoff = BACKOFF_MIN_MS
        self.last_io = now
        self.ping_at = None
        for item in self.inflight:
            if item[2] is None:
                self.skipped += 1  # a live record lost with the last connection
        self.inflight = []
        for kind in RING_KINDS:
            self.next_n[kind] = self.cursor[kind] + 1
        self._queue_hello()

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

    def _publish_some(self, now):
        """Publish what the window and the budget allow: hello first, then the ring (events, minutes), then the
        other live records; a PINGREQ when idle for PING_MS; the cursor saved when nothing is in flight."""
        hw = self.hw
        link = self.link
        assert link is not None
        done = 0
        while done < PUBLISH_PER_TURN and len(self.inflight) < WINDOW and len(link.out) < OUT_MAX and \
                hw.ticks_diff(hw.ticks_ms(), now) < BUDGET_MS:
            if self.outbox and self.outbox[0][0] == "hello":
                self._publish_live(now)
            elif not self._send_from_ring(now):
                if not self.outbox:
                    break
                self._publish_live(now)
            done += 1
        if done:
            self.last_io = now
            return
        if self.unsaved and not self.inflight:
            self._save_cursor()
        if self.ping_at is None and not self.inflight and hw.ticks_diff(now, self.last_io) >= PING_MS:
            link.out += b"\xc0\x00"
            self.ping_at = now
            self.last_io = now

    def _publish_live(self, now):
        item = self.outbox.pop(0)
        self._publish(item[0], item[1], item[2], None, now)

    def _send_from_ring(self, now):
        """Publish the oldest ring record not yet published on this connection (events first); False when none."""
        ring = self.ring
        if ring is None:
            return False
        for kind in RING_KINDS:
            r = ring.rings[kind]
            nxt = self.next_n[kind]
            if nxt > r.last:
                continue
            if r.first and nxt < r.first:  # overwritten before it was sent
                self.dropped += r.first - nxt
                nxt = r.first
                self._advance(kind, nxt - 1)
            got = ring.read(kind, nxt, 1)
            if not got:  # no readable record left up to the last (damaged slots)
                self.next_n[kind] = r.last + 1
                self._advance(kind, r.last)
                continue
            rec = got[0]
            # a signed record keeps its chain number, and an audit entry its number (the collector's key)
            n = rec["n"] if "mac" in rec or kind == "audit" else rec.pop("n")
            self.next_n[kind] = n + 1
            if n <= self.cursor[kind]:
                continue
            if self.connects > 1 and n <= self.high.get(kind, 0):
                self.resent += 1
            self._publish(kind, _encode(rec), False, n, now)
            return True
        return False

    def _publish(self, kind, payload, retain, n, now):
        link = self.link
        assert link is not None
        self.pid = self.pid % 65535 + 1
        link.publish(self.topics[kind], payload, retain, self.pid)
        self.inflight.append([self.pid, kind, n, now])
        if n is not None and n > self.high.get(kind, 0):
            self.high[kind] = n

    def acked(self, pid):
        """A PUBACK (or, with pid 0, a PINGRESP): the window's head moves on, and with it the ring's cursor."""
        if pid == 0:
            self.ping_at = None
            return
        fl = self.inflight
        for item in fl:
            if item[0] == pid:
                item[0] = 0
                break
        while fl and fl[0][0] == 0:
            item = fl.pop(0)
            self.sent += 1
            if item[2] is not None:
                self._advance(item[1], item[2])

    def _advance(self, kind, n):
        if n > self.cursor[kind]:
            self.cursor[kind] = n
            self.unsaved += 1
            if self.unsaved >= CURSOR_SAVE_EVERY:
                self._save_cursor()

    def _failed(self, e):
        self.errors += 1
        self.last_error = "%s:%s" % (type(e).__name__, e.args[0] if e.args else "")
        if self.link is not None:
            self.link.close()
            self.link = None
        self.state = "down"
        self.ping_at = None
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
        t0 = _ticks_us()
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(self.cursor))
            os.rename(tmp, self.cursor_path)
            self.unsaved = 0
        except OSError:
            pass  # sent again after a restart: the collector drops duplicates
        took = _ticks_diff(_ticks_us(), t0)
        self._stored_us += took
        if took > self.store_us:
            self.store_us = took

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
        return {"state": self.state, "connects": self.connects, "sent": self.sent, "resent": self.resent,
                "backlog": self.backlog(), "inflight": len(self.inflight), "dropped": self.dropped,
                "skipped": self.skipped, "errors": self.errors, "error": self.last_error, "steps": self.steps,
                "max_us": self.max_us, "max_in": None if self.max_state is None else [self.max_state, self.max_stage],
                "over": self.over, "store_us": self.store_us}


class _Link:
    """One MQTT connection driven without waiting: a non-blocking socket, connected in steps (TCP, TLS, CONNECT and
    CONNACK) by ``advance()``; ``publish()`` queues a QoS 1 PUBLISH in ``out``, ``flush()`` writes what the socket
    takes, ``read()`` hands each PUBACK's packet id (0 for a PINGRESP) to ``on_ack``. micropython-lib's
    umqtt.simple MQTTClient holds the session's settings (client id, account, keepalive, last will) and encodes the
    lengths; its own connect() and publish() wait on the socket, so the packets are written here."""

    def __init__(self, device, s, port, will_topic, addr, tls, now, on_ack):
        import socket

        from umqtt.simple import MQTTClient, _encode_len

        m = MQTTClient(device, s["host"], port, user=s.get("user"), password=s.get("password"), keepalive=KEEPALIVE_S,
                       ssl=tls)
        m.set_last_will(will_topic, OFFLINE, retain=True, qos=1)
        self.mqtt = m
        self.encode_len = _encode_len
        self.tls = tls
        self.on_ack = on_ack  # bound once: a bound method made every turn would be an allocation every turn
        self.since = now  # when this connection was started
        self.out = bytearray()  # written to the socket as it takes it
        self.inb = bytearray()  # received, not yet a whole packet
        self.rx = bytearray(64)
        self.hdr = bytearray(5)
        self.raw = socket.socket()
        self.sock = self.raw  # the TLS socket over it, once wrapped
        self.stage = "tcp"  # tcp, connack, up
        try:
            self.raw.setblocking(False)
            try:
                self.raw.connect(addr)
            except OSError as e:
                if e.args[0] not in _IN_PROGRESS:
                    raise
            import select

            self.poller = select.poll()
            self.poller.register(self.raw, select.POLLOUT)
        except Exception:
            self.raw.close()
            raise

    def advance(self):
        """One step of connecting: the TCP connection made, then CONNECT written, then its CONNACK read."""
        if self.stage == "tcp":
            import select

            for item in self.poller.poll(0):  # (obj, event, ...): more than 2 items on some ports
                ev = item[1]
                if ev & (select.POLLERR | select.POLLHUP):
                    raise OSError(_ECONNREFUSED)
                if ev & select.POLLOUT:
                    self.poller.unregister(self.raw)
                    if self.tls is not None:  # the handshake goes on as the socket is written and read
                        self.sock = self.tls.wrap_socket(self.raw, server_hostname=self.mqtt.server)
                    self._connect_packet()
                    self.stage = "connack"
            return
        self.flush()
        self.read()

    def _connect_packet(self):
        m = self.mqtt
        flags = 0x02  # clean session
        sz = 10 + 2 + len(m.client_id)
        if m.user:
            sz += 2 + len(_b(m.user)) + 2 + len(_b(m.pswd))
            flags |= 0xC0
        if m.lw_topic:
            sz += 2 + len(_b(m.lw_topic)) + 2 + len(m.lw_msg)
            flags |= 0x4 | (m.lw_qos & 0x1) << 3 | (m.lw_qos & 0x2) << 3 | m.lw_retain << 5
        self._header(0x10, sz)
        out = self.out
        out += b"\x00\x04MQTT\x04"
        out.append(flags)
        out.append(m.keepalive >> 8)
        out.append(m.keepalive & 0xFF)
        self._str(m.client_id)
        if m.lw_topic:
            self._str(m.lw_topic)
            self._str(m.lw_msg)
        if m.user:
            self._str(m.user)
            self._str(m.pswd)

    def _header(self, first, sz):
        h = self.hdr
        h[0] = first
        i = self.encode_len(h, sz)
        self.out += h[:i + 1]

    def _str(self, s):
        s = _b(s)
        self.out.append(len(s) >> 8)
        self.out.append(len(s) & 0xFF)
        self.out += s

    def publish(self, topic, payload, retain, pid):
        self._header(0x32 | (1 if retain else 0), 2 + len(topic) + 2 + len(payload))
        self._str(topic)
        self.out.append(pid >> 8)
        self.out.append(pid & 0xFF)
        self.out += payload

    def flush(self):
        if not self.out:
            return
        try:
            n = self.sock.write(self.out)
        except OSError as e:
            if e.args[0] not in _AGAIN:
                raise
            n = None
        if n:
            self.out = self.out[n:]

    def read(self):
        """Whatever the broker sent (nothing allocated when it sent nothing)."""
        try:
            n = self.sock.readinto(self.rx)
        except OSError as e:
            if e.args[0] not in _AGAIN:
                raise
            return
        if n is None:
            return
        if n == 0:
            raise OSError(_ECONNRESET)  # the broker closed the connection
        self._parse(n)

    def _parse(self, n):
        """The whole packets in what has come: CONNACK, PUBACK, PINGRESP (anything else is skipped)."""
        self.inb += self.rx[:n]
        while True:
            inb = self.inb
            size = 0
            shift = 0
            i = 1
            while True:
                if i >= len(inb):
                    return
                b = inb[i]
                size |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
            if len(inb) < i + size:
                return
            op = inb[0] & 0xF0
            if op == 0x20:  # CONNACK
                if size < 2 or inb[i + 1] != 0:
                    from umqtt.simple import MQTTException

                    raise MQTTException(inb[i + 1] if size >= 2 else -1)
                self.stage = "up"
            elif op == 0x40 and size >= 2:  # PUBACK
                self.on_ack(inb[i] << 8 | inb[i + 1])
            elif op == 0xD0:  # PINGRESP
                self.on_ack(0)
            self.inb = inb[i + size:]

    def close(self):
        for s in (self.sock, self.raw):
            try:
                s.close()
            except Exception:
                pass


def _b(s):
    return s.encode() if isinstance(s, str) else s


class _Tls:
    """What umqtt.simple's ``ssl`` argument needs (``wrap_socket(sock, server_hostname)``); the handshake is not
    done at once but as the non-blocking socket is written and read."""

    def __init__(self, ca):
        self.ctx = _tls_context(ca)

    def wrap_socket(self, sock, server_hostname=None):
        return self.ctx.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)


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
