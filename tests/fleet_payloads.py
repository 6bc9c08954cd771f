"""Records as a fleet of meters publishes them (docs/protocol.md and docs/network.md), malformed and hostile
variants of them, and a test publisher (paho) that sends them to a broker and waits for the broker's PUBACKs."""

from __future__ import annotations

import json
import random
import threading
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt

START = datetime(2026, 7, 15, 12, 0, tzinfo=timezone.utc)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def device_id(i: int) -> str:
    return f"a0b1c2{i:06x}"


def topic(device: str, kind: str, site: str = "square") -> str:
    return f"slm/{site}/{device}/{kind}"


def minute(device_index: int, n: int, rng: random.Random) -> dict:
    """The n-th minute record of a device: 0.01 dB levels, the fields of SPEC9's `minute`."""
    start = START + timedelta(minutes=n)
    laeq = round(rng.uniform(45, 80), 2)
    over = laeq > 65
    return {"t": "minute", "seq": 100 + 3 * n, "ms": 60000 * (n + 1), "utc": iso(start + timedelta(seconds=60)),
            "start": iso(start), "local": (start + timedelta(hours=8)).strftime("%H:%M"), "s": 60,
            "LAeq": laeq, "LAFmax": round(laeq + rng.uniform(3, 15), 2),
            "LAFmin": None if n % 13 == 7 else round(laeq - 6.5 - n % 5, 2), "LA10": round(laeq + 2.5, 2),
            "LA50": round(laeq - 1.0, 2), "LA90": round(laeq - 4.25, 2),
            "LCpeak": None if n % 7 == 3 else round(laeq + 25.5, 2), "overload": n % 11 == 5,
            "band": "day", "limit": 65.0, "over": over}


def interval(device_index: int, n: int, rng: random.Random) -> dict:
    levels = {k: round(rng.uniform(40, 90), 2) for k in ("LAeq", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax",
                                                         "LASmin", "LCpeak", "LZpeak", "LAE", "LA10", "LA50",
                                                         "LA90")}
    levels["LAFmin"] = None
    return {"t": "interval", "seq": 101 + 3 * n, "ms": 1000 * (n + 1), "utc": iso(START + timedelta(seconds=n + 1)),
            "start_ms": 1000 * n, "end_ms": 1000 * (n + 1), **levels, "overload": False, "underrange": n % 5 == 0}


def event(device_index: int, n: int) -> dict:
    start = START + timedelta(minutes=10 * n)
    return {"t": "event", "seq": 102 + 3 * n, "ms": 600000 * n + 60000, "utc": iso(start + timedelta(seconds=60)),
            "kind": "exceedance_start", "start": iso(start), "limit": 65.0, "band": "day", "LAeq": 70.12}


def status(device_index: int, n: int) -> dict:
    return {"t": "status", "seq": 103 + 3 * n, "ms": 10000 * (n + 1), "utc": iso(START + timedelta(seconds=10 * n)),
            "uptime_s": 10 * n, "heap_free": 80000, "blocks": 1000 * n, "dropped": 0, "late": 0, "faults": [],
            "overload": False, "lmax": None, "lmax_ms": None, "interrupts": 0,
            "console": {"lines": 3, "overlong": 0, "throttled": 0}}


def hello(device: str) -> dict:
    return {"t": "hello", "seq": 0, "ms": 0, "utc": iso(START), "proto": 2, "fw": "0.1.0", "board": "esp32-devkitc",
            "mic": "inmp441", "rate": 48000, "serial": device, "tz_min": 480, "clock": "rtc",
            "cal": {"offset_db": 0.0, "sensitivity_dbfs": -26.0, "method": None, "time": None},
            "config": {"interval_s": 1.0}, "faults": []}


def encode(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def hostile(rng: random.Random, devices: list[str]) -> tuple[str, bytes]:
    """One malformed or hostile message: (topic, payload). None of them may ever become a stored row."""
    dev = rng.choice(devices)
    good = minute(0, rng.randrange(10 ** 5), rng)
    choice = rng.randrange(24)
    t_minute = topic(dev, "minute")
    if choice == 0:  # wrong types
        key = rng.choice(["LAeq", "s", "seq", "ms", "overload", "start", "over", "limit"])
        good[key] = rng.choice(["71.2", [1], {"a": 1}, True if key not in ("overload", "over") else 1,
                                "x" * 300, 1e308])
        return t_minute, encode(good)
    if choice == 1:  # huge
        return t_minute, b'{"t":"minute","pad":"' + b"A" * rng.randrange(4100, 70000) + b'"}'
    if choice == 2:  # wrong topic
        bad = rng.choice([f"slm/square/{dev}/level", f"slm/square/{dev}/minute/x", f"slm/{dev}/minute",
                          f"slm/sq uare/{dev}/minute", f"slm/square/{dev}/", "slm/square//minute",
                          f"other/square/{dev}/minute", f"slm/square/{'d' * 65}/minute"])
        return bad, encode(good)
    if choice == 3:  # another device's serial in a hello
        h = hello(dev)
        h["serial"] = rng.choice([d for d in devices if d != dev] or ["ffffffffffff"])
        return topic(dev, "hello"), encode(h)
    if choice == 4:  # another device's serial in a minute
        good["serial"] = "not-" + dev
        return t_minute, encode(good)
    if choice == 5:  # not JSON, not UTF-8, empty
        return t_minute, rng.choice([b"", b"{", b"\xff\xfe{}", b"null", b"[1,2]", b'"minute"', bytes(rng.randbytes(64))])
    if choice == 6:  # NaN, Infinity, a huge int
        return t_minute, encode(good).replace(b'"LAeq":' + str(good["LAeq"]).encode(),
                                              rng.choice([b'"LAeq":NaN', b'"LAeq":Infinity', b'"LAeq":1e999',
                                                          b'"LAeq":' + b"9" * 40]))
    if choice == 7:  # control characters and lone surrogates in text
        good["band"] = rng.choice(["a\x00b", "\udfff", "x\ny", "\x7f"])
        return t_minute, json.dumps(good).encode()
    if choice == 8:  # the kind in the payload differs from the topic's
        return topic(dev, "event"), encode(good)
    if choice == 9:  # no time (clock unset) or a bad time
        good["start"] = rng.choice([None, "2026-13-01T00:00:00.000Z", "2026-07-15 12:00:00", "yesterday", 1752580800,
                                    "2026-02-30T00:00:00.000Z", "1970-01-01T00:00:00.000Z"])
        return t_minute, encode(good)
    if choice == 10:  # deep nesting
        depth = rng.randrange(10, 2000)
        return t_minute, b'{"t":"minute","x":' + b"[" * depth + b"]" * depth + b"}"
    if choice == 11:  # missing fields
        for key in rng.sample(sorted(good), rng.randrange(1, 5)):
            del good[key]
        if all(k in good for k in ("t", "seq", "ms", "start", "s", "overload")):
            good["s"] = -1  # still malformed when only optional levels were removed
        return t_minute, encode(good)
    if choice == 12:  # out of range
        key = rng.choice(["LAeq", "s", "limit", "seq", "ms"])
        good[key] = rng.choice([-1e6, 1e6, 2 ** 60] if key in ("LAeq", "limit") else [-5, 61, 2 ** 60] if key == "s"
                               else [-1, 2 ** 60])
        return t_minute, encode(good)
    if choice == 13:  # event without a time or with a bad kind
        e = event(0, rng.randrange(100))
        if rng.random() < 0.5:
            e["kind"] = rng.choice(["", "X" * 40, 7, None, "drop table"])
        else:
            del e["start"]
            del e["utc"]
        return topic(dev, "event"), encode(e)
    if choice == 14:  # interval/status without utc, or with end before start
        if rng.random() < 0.5:
            i = interval(0, rng.randrange(100), rng)
            i["utc"] = None if rng.random() < 0.5 else i["utc"]
            if i["utc"] is not None:
                i["end_ms"] = i["start_ms"] - 1
            return topic(dev, "interval"), encode(i)
        s = status(0, rng.randrange(100))
        s["faults"] = rng.choice(["mic", [1, 2], ["x" * 50]])
        return topic(dev, "status"), encode(s)
    if choice == 15:  # SQL in text fields
        good["band"] = "x'); DROP TABLE minutes;--"
        good["local"] = "12:00'; --"
        return t_minute, encode(good)
    if choice == 16:  # a bool where an int is expected (JSON true is not 1)
        good["seq"] = True
        return t_minute, encode(good)
    if choice == 17:  # wrong kind field type
        good["t"] = rng.choice([None, 1, "MINUTE", ["minute"]])
        return t_minute, encode(good)
    if choice == 18:  # the offline will with extra or wrong fields
        return topic(dev, "status"), rng.choice([b'{"t":"status","state":"offline","x":1}', b"offline",
                                                 b'{"t":"status","state":"gone"}'])
    if choice == 19:  # a hello with bad field types
        h = hello(dev)
        h[rng.choice(["proto", "config", "cal", "fw", "rate"])] = rng.choice([[1], "2", -3, {"a": 1}])
        if isinstance(h["proto"], int) and isinstance(h["config"], dict) and isinstance(h["cal"], dict) \
                and isinstance(h["fw"], str) and type(h["rate"]) is int and h["rate"] > 0:
            h["proto"] = "2"
        return topic(dev, "hello"), encode(h)
    if choice == 20:  # random bytes after a valid prefix
        return t_minute, encode(good)[:rng.randrange(1, 40)] + rng.randbytes(rng.randrange(0, 50))
    if choice == 21:  # many keys
        return t_minute, encode({"t": "minute", **{f"k{i}": i for i in range(rng.randrange(400, 2000))}})
    if choice == 22:  # a time with an offset instead of Z, or local in a wrong form
        if rng.random() < 0.5:
            good["start"] = "2026-07-15T12:00:00+08:00"
        else:
            good["local"] = rng.choice(["24:00", "7:5", "12-00", ""])
        return t_minute, encode(good)
    # a valid-looking payload on the status topic with the wrong kind
    return topic(dev, "status"), encode(good)


class Publisher:
    """A paho client that publishes QoS 1 messages and waits until the broker acknowledged all of them."""

    def __init__(self, port: int, client_id: str, user: str | None = None, password: str | None = None,
                 will: tuple[str, bytes] | None = None, ca_file: str | None = None):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        if user is not None:
            self.client.username_pw_set(user, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=ca_file)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.connected = threading.Event()
        self.result = None
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.result = reason_code
        self.connected.set()

    def wait_connected(self, timeout: float = 60) -> bool:
        return self.connected.wait(timeout) and not self.result.is_failure

    def publish(self, messages, qos: int = 1, retain: bool = False) -> None:
        infos = [self.client.publish(t, p, qos=qos, retain=retain) for t, p in messages]
        for info in infos:
            info.wait_for_publish(timeout=120)
            assert info.is_published(), "the broker did not acknowledge a message"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
