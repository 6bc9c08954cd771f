"""`slm hj212`: the HJ 212-2017 uplink against a test platform on 127.0.0.1 (a plain socket server here that
parses the frames, checks length and CRC with its own code, and replies), with the data in a collector database
filled through the collector's own validation (slm.collect.Collector). The hours and days expected are computed
here again from the raw minute records."""

from __future__ import annotations

import json
import math
import random
import re
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from slm.collect import Collector
from slm.fleet_db import open_db
from slm.hj212 import crc16, frame

from tests.fleet_payloads import START, device_id, interval, minute, topic

VECTOR = ("##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
          "CP=&&RtdInterval=30&&1C80")
CST = timedelta(hours=8)
WAIT_S = 120.0
MINUTES = 610  # 20:00 local (START + 8 h) to past 06:00 the next morning: one day (from 06:00) complete
STATIONS = {device_id(1): "010000A8900016F000169DC1", device_id(2): "010000A8900016F000169DC2"}


def reference_crc(data: bytes) -> int:
    """The CRC as issue 10 words it, written again here."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ b
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


def test_crc_and_frame_of_the_standard_vector():
    segment = VECTOR[6:-4]
    assert len(segment.encode()) == 101 == int(VECTOR[2:6])
    assert f"{crc16(segment.encode()):04X}" == "1C80" == f"{reference_crc(segment.encode()):04X}"
    assert frame(segment) == (VECTOR + "\r\n").encode()


# ---- the test platform -----------------------------------------------------------------------------------------

class Platform:
    """A TCP server that takes HJ 212 frames, checks `##`, the length, the CRC and CRLF, and answers each packet
    with Flag bit A set by a data reply (CN=9014, same QN) unless `reply` says otherwise. Every frame it got is in
    `packets` (dicts of the header fields plus `cp`), with `bad` counting frames that failed a check."""

    def __init__(self, reply=None):
        self.reply = reply or (lambda packet, n: "ack")
        self.packets: list[dict] = []
        self.bad = 0
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.port = self.server.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    packet = self._parse(line)
                    if packet is None:
                        continue
                    with self.lock:
                        self.packets.append(packet)
                        n = sum(1 for p in self.packets if p["QN"] == packet["QN"])
                    if int(packet["Flag"]) & 1:
                        answer = self.reply(packet, n)
                        parts = [answer] if isinstance(answer, (str, bytes)) else answer
                        if parts:  # one write: small writes one after another wait for Nagle's algorithm
                            conn.sendall(b"".join(self.ack(packet) if d == "ack" else d for d in parts))

    def _parse(self, line: bytes) -> dict | None:
        if not line.startswith(b"##") or len(line) < 10:
            self.bad += 1
            return None
        length, data, crc = int(line[2:6]), line[6:-4], line[-4:]
        if len(data) != length or int(crc, 16) != reference_crc(data):
            self.bad += 1
            return None
        head, cp = data.decode("ascii").split(";CP=&&")
        packet = dict(item.split("=", 1) for item in head.split(";"))
        assert cp.endswith("&&")
        packet["cp"] = cp[:-2]
        return packet

    @staticmethod
    def ack(packet: dict, crc_ok: bool = True) -> bytes:
        seg = f"QN={packet['QN']};ST=91;CN=9014;PW={packet['PW']};MN={packet['MN']};Flag=4;CP=&&&&".encode()
        crc = reference_crc(seg) ^ (0 if crc_ok else 1)
        return b"##%04d%s%04X\r\n" % (len(seg), seg, crc)

    def close(self):
        self.closed = True
        self.server.close()


def values(packet: dict) -> dict[str, str]:
    """CP items: {"DataTime": ..., "Leq-Data": ..., "Leq-Flag": ...}."""
    out = {}
    for item in packet["cp"].split(";"):
        for part in item.split(","):
            k, v = part.split("=", 1)
            out[k] = v
    return out


# ---- the data ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A collector database: two devices with MINUTES minutes each, one with interval records; and the raw
    minute records as the devices sent them."""
    path = tmp_path_factory.mktemp("hj212") / "fleet.sqlite"
    collector = Collector(open_db(str(path)))
    raw = {}
    for i, device in enumerate(STATIONS, start=1):
        rng = random.Random(i)
        raw[device] = [minute(i, n, rng) for n in range(MINUTES)]
        for rec in raw[device]:
            collector.handle(topic(device, "minute"), json.dumps(rec).encode(), rec["utc"])
    ivals = [interval(1, n, random.Random(9)) for n in range(3)]
    for rec in ivals:
        collector.handle(topic(device_id(1), "interval"), json.dumps(rec).encode(), rec["utc"])
    collector.commit()
    collector.db.close()
    return path, raw, ivals


def slm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm.cli", *args], capture_output=True, text=True, timeout=timeout)


def send_args(db, platform: Platform, state, *extra: str) -> list[str]:
    mns = [a for device, mn in STATIONS.items() for a in ("--mn", f"{device}={mn}")]
    return ["hj212", "--db", str(db), "--to", f"127.0.0.1:{platform.port}", *mns, "--pw", "100000",
            "--state", str(state), "--once", "--json", *extra]


def local(utc_text: str) -> datetime:
    return datetime.strptime(utc_text[:19], "%Y-%m-%dT%H:%M:%S") + CST


def valid(rec: dict) -> bool:
    return rec["LAeq"] is not None and rec["s"] > 0 and not rec["overload"]


def leq(recs: list[dict]) -> float | None:
    recs = [r for r in recs if valid(r)]
    if not recs:
        return None
    return 10 * math.log10(sum(r["s"] * 10 ** (r["LAeq"] / 10) for r in recs) / sum(r["s"] for r in recs))


def expected_hours(recs: list[dict]) -> dict[str, dict[str, float]]:
    """Every clock hour (local) that a later minute closes: Leq, L10/50/90 (seconds-weighted mean), LMx."""
    hours: dict[datetime, list[dict]] = {}
    for r in recs:
        hours.setdefault(local(r["start"]).replace(minute=0), []).append(r)
    last = local(recs[-1]["start"])
    out = {}
    for h, rs in hours.items():
        good = [r for r in rs if valid(r)]
        if h + timedelta(hours=1) > last or not good:
            continue
        out[h.strftime("%Y%m%d%H%M%S")] = {
            "Leq-Data": leq(good), "LMx-Data": max(r["LAFmax"] for r in good),
            "LMn-Data": min((r["LAFmin"] for r in good if r["LAFmin"] is not None), default=None),
            **{f"L{p}-Data": sum(r[f"LA{p}"] * r["s"] for r in good) / sum(r["s"] for r in good)
               for p in (10, 50, 90)}}
    return out


def expected_days(recs: list[dict]) -> dict[str, dict[str, float]]:
    """Days of 24 h from 06:00 local closed by a later minute: Ld (06-22), Ln (22-06), Ldn (+10 dB at night)."""
    last = local(recs[-1]["start"])
    day0 = (local(recs[0]["start"]) - timedelta(hours=6)).replace(hour=0, minute=0)
    out = {}
    while day0 + timedelta(hours=30) <= last:
        rs = [r for r in recs if day0 + timedelta(hours=6) <= local(r["start"]) < day0 + timedelta(hours=30)]
        ld = leq([r for r in rs if 6 <= local(r["start"]).hour < 22])
        ln = leq([r for r in rs if not 6 <= local(r["start"]).hour < 22])
        ldn = 10 * math.log10((16 * 10 ** (ld / 10) + 8 * 10 ** ((ln + 10) / 10)) / 24)
        out[day0.strftime("%Y%m%d%H%M%S")] = {"Ld-Data": ld, "Ln-Data": ln, "Ldn-Data": ldn,
                                              "LMx-Data": max(r["LAFmax"] for r in rs if valid(r)),
                                              "LMn-Data": min(r["LAFmin"] for r in rs
                                                              if valid(r) and r["LAFmin"] is not None)}
        day0 += timedelta(days=1)
    return out


def assert_levels(got: dict[str, str], want: dict[str, float | None]):
    for key, v in want.items():
        if v is None:
            assert key not in got
        else:
            assert re.fullmatch(r"-?\d+\.\d", got[key]), (key, got[key])
            assert abs(float(got[key]) - v) <= 0.05 + 1e-9, (key, got[key], v)


def delivered(platform: Platform, cn: str) -> list[dict]:
    """Packets of a CN that were acknowledged (the last copy of each QN: copies are resends)."""
    by_qn = {p["QN"]: p for p in platform.packets if p["CN"] == cn}
    return list(by_qn.values())


# ---- the tests -----------------------------------------------------------------------------------------------

def test_sends_minutes_hours_days_and_realtime_equal_to_the_collectors_data(fleet, tmp_path):
    db, raw, ivals = fleet
    platform = Platform()
    try:
        r = slm(*send_args(db, platform, tmp_path / "state.json"))
        assert r.returncode == 0, r.stderr
        counts = json.loads(r.stdout)
    finally:
        platform.close()
    assert platform.bad == 0
    for p in platform.packets:
        assert p["ST"] == "23" and p["PW"] == "100000" and p["Flag"] == "5"
        assert re.fullmatch(r"\d{17}", p["QN"])
    qns = [p["QN"] for p in platform.packets]
    assert len(set(qns)) == len(qns) and qns == sorted(qns)  # unique, rising
    # QN is the sending time in China Standard Time
    now_cst = datetime.now(timezone.utc).replace(tzinfo=None) + CST
    assert abs(datetime.strptime(qns[-1][:14], "%Y%m%d%H%M%S") - now_cst) < timedelta(minutes=10)

    for device, mn in STATIONS.items():
        mine = [p for p in platform.packets if p["MN"] == mn]
        minutes = [values(p) for p in mine if p["CN"] == "2051"]
        assert [m["DataTime"] for m in minutes] == [local(r["start"]).strftime("%Y%m%d%H%M%S") for r in raw[device]]
        for got, rec in zip(minutes, raw[device]):
            assert_levels(got, {"Leq-Data": rec["LAeq"], "L10-Data": rec["LA10"], "L50-Data": rec["LA50"],
                                "L90-Data": rec["LA90"], "LMx-Data": rec["LAFmax"], "LMn-Data": rec["LAFmin"]})
            assert got["Leq-Flag"] == ("T" if rec["overload"] else "N")
        hours = {values(p)["DataTime"]: values(p) for p in mine if p["CN"] == "2061"}
        want_hours = expected_hours(raw[device])
        assert sorted(hours) == sorted(want_hours) and len(hours) == 10
        for t, want in want_hours.items():
            assert_levels(hours[t], want)
        days = {values(p)["DataTime"]: values(p) for p in mine if p["CN"] == "2031"}
        want_days = expected_days(raw[device])
        assert sorted(days) == sorted(want_days) == ["20260715000000"]
        for t, want in want_days.items():
            assert_levels(days[t], want)
    rtd = [values(p) for p in platform.packets if p["CN"] == "2011"]
    assert rtd == [{"DataTime": local(ivals[-1]["utc"]).strftime("%Y%m%d%H%M%S"),
                    "LA-Rtd": f"{ivals[-1]['LAeq']:.1f}", "LA-Flag": "N"}]
    assert counts["sent"] == {"2011": 1, "2051": 2 * MINUTES, "2061": 20, "2031": 2} and counts["resent"] == 0

    # run again: nothing is due, nothing is sent
    platform = Platform()
    try:
        r = slm(*send_args(db, platform, tmp_path / "state.json"))
    finally:
        platform.close()
    assert r.returncode == 0, r.stderr
    assert platform.packets == []


def test_missing_replies_resend_then_a_restart_goes_on_after_the_last_acknowledged(fleet, tmp_path):
    db, raw, _ = fleet
    state = tmp_path / "state.json"
    silent_after = 25

    def first_platform(packet, n):
        if n == 1 and len(platform.packets) % 7 == 3:
            return []  # no reply to this one's first send: it comes again with the same QN
        return "ack" if len({p["QN"] for p in platform.packets}) <= silent_after else []

    platform = Platform(first_platform)
    try:
        r = slm(*send_args(db, platform, state, "--timeout", "0.5", "--retries", "2", "--rtd-interval", "0"))
    finally:
        platform.close()
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no data reply" in r.stderr, r.stderr
    first = platform.packets
    by_qn: dict[str, list[dict]] = {}
    for p in first:
        by_qn.setdefault(p["QN"], []).append(p)
    resent = [qn for qn, ps in by_qn.items() if len(ps) > 1]
    assert resent and all(ps[0] == ps[1] for ps in by_qn.values() if len(ps) > 1)  # the same packet again
    assert len(by_qn[first[-1]["QN"]]) == 3  # the unanswered one: sent, then 2 resends
    acked_first = [p for qn, ps in by_qn.items() for p in ps[:1] if qn != first[-1]["QN"]]
    assert len(acked_first) == silent_after

    second = Platform()
    try:
        r = slm(*send_args(db, second, state, "--rtd-interval", "0"))
    finally:
        second.close()
    assert r.returncode == 0, r.stderr
    minute_times = [(p["MN"], values(p)["DataTime"]) for p in acked_first + second.packets if p["CN"] == "2051"]
    want = [(mn, local(rec["start"]).strftime("%Y%m%d%H%M%S")) for d, mn in STATIONS.items() for rec in raw[d]]
    assert sorted(minute_times) == sorted(want)  # every minute acknowledged exactly once over both runs
    assert values(second.packets[0])["DataTime"] == values(first[-1])["DataTime"]  # the unacknowledged one again


def test_malformed_replies_do_not_crash_and_a_bad_crc_reply_is_no_acknowledgement(fleet, tmp_path):
    db, raw, _ = fleet
    garbage = [b"\x00\xff garbage ##", b"##abcd", b"##0500 cut short\r\n", b"##9999" + b"x" * 50 + b"\r\n", b"#", b"#\r\n",
               "##0010ééééé\r\n".encode()]

    def replies(packet, n):
        out = list(garbage)
        other = dict(packet, QN="20000101000000000")
        out.append(Platform.ack(other))  # a reply to another QN
        if n == 1 and len({p["QN"] for p in platform.packets}) <= 3:
            out.append(Platform.ack(packet, crc_ok=False))  # not valid: must be sent again
        else:
            out.append("ack")
        return out

    platform = Platform(replies)
    try:
        r = slm(*send_args(db, platform, tmp_path / "state.json", "--timeout", "0.5", "--rtd-interval", "0"),
                "--mn", "x=1")  # a second --mn for an unknown device: nothing to send for it
    finally:
        platform.close()
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)
    assert len(delivered(platform, "2051")) == 2 * MINUTES
    qns = [p["QN"] for p in platform.packets]
    assert qns[:6] == [qns[0], qns[0], qns[2], qns[2], qns[4], qns[4]]  # the first three, sent again
    assert len(set(qns[6:])) == len(qns[6:])
    assert counts["resent"] == 3
    assert counts["bad_reply_bytes"] > 0 and counts["failures"] == 0


def test_without_acknowledgement_flag_4_nothing_is_awaited(fleet, tmp_path):
    db, _, _ = fleet
    platform = Platform()
    try:
        r = slm(*send_args(db, platform, tmp_path / "state.json", "--no-ack", "--rtd-interval", "0"))
    finally:
        platform.close()
    assert r.returncode == 0, r.stderr
    assert {p["Flag"] for p in platform.packets} == {"4"}
    assert json.loads(r.stdout)["sent"]["2051"] == 2 * MINUTES


@pytest.mark.parametrize("change, message", [
    (("--to", "127.0.0.1"), "--to 127.0.0.1: expected HOST:PORT"),
    (("--to", "127.0.0.1:99999"), "expected HOST:PORT"),
    (("--mn", "010000A89"), "expected DEVICE=MN"),
    (("--mn", "dev=MN WITH SPACE"), "expected DEVICE=MN"),
    (("--pw", "a;b"), "--pw: 1-9 letters and digits"),
    (("--utc-offset", "8"), "--utc-offset 8: expected +HH:MM"),
    (("--db", "/nonexistent/fleet.sqlite"), "no such database file"),
    (("--state", "/nonexistent/dir/state.json"), "does not exist"),
])
def test_bad_options_exit_2_with_one_line(fleet, tmp_path, change, message):
    db, _, _ = fleet
    args = ["hj212", "--db", str(db), "--to", "127.0.0.1:1", "--mn", f"{device_id(1)}=MN1", "--pw", "1",
            "--state", str(tmp_path / "s.json"), "--once"]
    if change[0] in args:
        args[args.index(change[0]) + 1] = change[1]
    else:
        args += change
    r = slm(*args, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr


def test_a_corrupt_state_file_and_an_unreachable_platform_are_one_line(fleet, tmp_path):
    db, _, _ = fleet
    state = tmp_path / "s.json"
    state.write_text("{not json")
    base = ["hj212", "--db", str(db), "--mn", f"{device_id(1)}=MN1", "--pw", "1", "--once", "--state", str(state)]
    r = slm(*base, "--to", "127.0.0.1:1", timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "move it away" in r.stderr, r.stderr
    assert state.read_text() == "{not json"  # left as it was
    state.unlink()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = slm(*base, "--to", f"127.0.0.1:{port}", timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "cannot connect" in r.stderr, r.stderr


def test_from_postgresql(tmp_path):
    """The same sender on the collector's PostgreSQL: 70 minutes of one device, one complete hour."""
    from tests.services import Postgres

    device, mn = device_id(1), STATIONS[device_id(1)]
    rng = random.Random(5)
    raw = [minute(1, n, rng) for n in range(70)]
    with Postgres() as pg:
        collector = Collector(open_db(pg.url))
        for rec in raw:
            collector.handle(topic(device, "minute"), json.dumps(rec).encode(), rec["utc"])
        collector.commit()
        collector.db.close()
        platform = Platform()
        try:
            r = slm("hj212", "--db", pg.url, "--to", f"127.0.0.1:{platform.port}", "--mn", f"{device}={mn}",
                    "--pw", "100000", "--state", str(tmp_path / "state.json"), "--once", "--json")
        finally:
            platform.close()
    assert r.returncode == 0, r.stderr
    minutes = [values(p) for p in platform.packets if p["CN"] == "2051"]
    assert [m["DataTime"] for m in minutes] == [local(rec["start"]).strftime("%Y%m%d%H%M%S") for rec in raw]
    hours = {values(p)["DataTime"]: values(p) for p in platform.packets if p["CN"] == "2061"}
    want = expected_hours(raw)
    assert sorted(hours) == sorted(want) == ["20260715200000"]
    assert_levels(hours["20260715200000"], want["20260715200000"])
