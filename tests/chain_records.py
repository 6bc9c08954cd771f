"""Signed records for the verification tests and bench, made with the firmware's own chain code (firmware/chain.py
on CPython) as a device with a key makes them, and written to each source kind by the host's own writers: a pulled
folder (slm.pull), a monitor log (slm.record_log), a collector database (slm.collect's Collector)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from slm.collect import Collector
from slm.fleet_db import open_db
from slm.firmware import chain
from slm.firmware import record_ring as rr
from slm.pull import PullStore
from slm.record_log import RecordLog

BASE_MS = rr.parse_time("2026-07-15T11:00:00.000Z")[0]  # 19:00 in Beijing


class Signer:
    """A device's chains: ``sign(kind, rec)`` gives rec its n and mac, as the device does before sending it."""

    def __init__(self, device: str, key: bytes | None = None):
        self.device = device
        self.key = key if key is not None else os.urandom(32)
        self.n = {"minute": 0, "event": 0, "audit": 0}
        self.prev = {k: bytes(chain.MAC_BYTES) for k in self.n}
        self.seq = 0

    def sign(self, kind: str, rec: dict) -> dict:
        self.n[kind] += 1
        rec = dict(rec, t=kind, n=self.n[kind])
        rec.setdefault("seq", self.seq)
        self.seq += 1
        mac = chain.link(self.key, self.device, kind, rec["n"], self.prev[kind], chain.body(kind, rec))
        self.prev[kind] = mac
        rec["mac"] = mac.hex()
        return rec

    def write_key(self, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        (folder / f"{self.device}.key").write_text(self.key.hex() + "\n")


def minute(t_ms: int, ms: int, laeq: float, limit: int | None = 55, late_ms: int = 0) -> dict:
    """The minute starting at t_ms (a whole minute), closed ``late_ms`` after its end."""
    start = t_ms - t_ms % 60000
    return {"utc": rr.format_time(start + 60000 + late_ms), "ms": ms, "start": rr.format_time(start),
            "local": "%02d:%02d" % ((start // 3600000 + 8) % 24, start // 60000 % 60), "s": 60, "LAeq": laeq,
            "LAFmax": round(laeq + 12.25, 2), "LA10": round(laeq + 2.5, 2), "LA50": round(laeq - 0.5, 2),
            "LA90": round(laeq - 4, 2), "LCpeak": round(laeq + 20.01, 2), "overload": False, "band": "evening",
            "limit": limit, "over": None if limit is None else laeq > limit}


def audit(t_ms: int, ms: int, what: str, **fields) -> dict:
    return dict({"utc": rr.format_time(t_ms), "ms": ms, "what": what}, **fields)


def evening(signer: Signer, minutes: int = 90, reboot_every: int = 40, rollback_at: int | None = None) -> list[dict]:
    """An evening's records of one device, in the order it sends them: a boot, minutes (an exceedance episode from
    minute 20 to 30, its events), a reboot (audit boot, power_loss) every ``reboot_every`` minutes (device ms starts
    again), a calibration check, and a clock step back of 2 s with its clock_step audit record. ``rollback_at``: the
    RTC was set back three hours before that minute while the device was off, with no clock_step record
    (tampering)."""
    out = [signer.sign("audit", audit(BASE_MS, 500, "boot", cause="power_on"))]
    out.append(signer.sign("audit", audit(BASE_MS + 1000, 1500, "calibration", kind="check", before=-26.0,
                                          after=-26.0, reference="94 dB 1 kHz", drift_db=0.12)))
    boot_ms = 0
    offset = 0
    for i in range(minutes):
        if i and i % reboot_every == 0:
            boot_ms = i * 60000
            out.append(signer.sign("audit", audit(BASE_MS + i * 60000 + offset + 800, 800, "boot", cause="reset")))
        if i == minutes // 2:
            frm = BASE_MS + i * 60000 + 30000 + offset
            offset -= 2000
            out.append(signer.sign("audit", audit(frm - 2000, i * 60000 - boot_ms + 30000, "clock_step",
                                                  **{"from": rr.format_time(frm), "to": rr.format_time(frm - 2000),
                                                     "step_s": -2.0})))
        if rollback_at is not None and i == rollback_at:
            offset -= 3 * 3600000
        t = BASE_MS + i * 60000 + (offset if offset < -60000 else 0)
        laeq = 62.5 if 20 <= i < 30 else round(48 + (i % 7) * 0.75, 2)
        late = offset if -60000 < offset < 0 else 0  # after the small step the minutes close 2 s "early"
        out.append(signer.sign("minute", minute(t, (i + 1) * 60000 - boot_ms, laeq, late_ms=late)))
        if i == 20:
            out.append(signer.sign("event", {"utc": rr.format_time(t + 60000), "ms": (i + 1) * 60000 - boot_ms,
                                             "kind": "exceedance_start", "start": rr.format_time(t),
                                             "limit": 55, "band": "evening", "LAeq": 62.5}))
        if i == 30:
            out.append(signer.sign("event", {"utc": rr.format_time(t + 60000), "ms": (i + 1) * 60000 - boot_ms,
                                             "kind": "exceedance_end", "start": rr.format_time(t - 600000),
                                             "end": rr.format_time(t), "duration_s": 600, "LAeq": 62.5,
                                             "LAFmax": 74.75, "limit": 55, "band": "evening", "minutes_over": 10,
                                             "interrupted": False}))
    return out


def honest_devices(keys: Path, a_id: str, b_id: str) -> dict:
    """Two devices' honest evenings (reboots, a clock step with its audit record, an episode), their keys written
    into ``keys``: {"keys", "signers", "records"}."""
    a, b = Signer(a_id), Signer(b_id)
    a.write_key(keys)
    b.write_key(keys)
    return {"keys": keys, "signers": {a_id: a, b_id: b}, "records": {a_id: evening(a), b_id: evening(b)}}


# -- the three source kinds, written by the host's own writers ----------------------------------------------------
def write_pulled(folder: Path, device: str, records: list[dict]) -> Path:
    store = PullStore(folder)
    try:
        store.claim(device)
        for kind in ("minute", "event", "audit"):
            recs = [r for r in records if r["t"] == kind]
            if recs:
                store.outputs[kind].append(recs)
    finally:
        store.close()
    return folder


def write_log(path: Path, devices: dict[str, list[dict]]) -> Path:
    """A monitor log of several boards (one port each), interleaved as they arrive."""
    with RecordLog(path) as log:
        for i, (device, records) in enumerate(devices.items()):
            log.write({"t": "hello", "serial": device, "proto": 1, "seq": 0, "ms": 0}, f"/dev/pts/{i}", device)
        longest = max(len(r) for r in devices.values())
        for j in range(longest):
            for i, (device, records) in enumerate(devices.items()):
                if j < len(records):
                    log.write(records[j], f"/dev/pts/{i}", device)
    return path


def write_db(url: str, devices: dict[str, list[dict]], keys: dict[str, bytes] | None = None,
             batch: int = 50) -> Collector:
    """The records as the collector stores them from the broker (its Collector: validation, marks)."""
    collector = Collector(open_db(url), keys)
    when = "2026-07-15T12:00:00.000Z"
    pending = 0
    for device, records in devices.items():
        collector.handle(f"slm/square/{device}/hello", json.dumps({"t": "hello", "proto": 1, "serial": device,
                                                                   "seq": 0, "ms": 0}).encode(), when)
        for rec in records:
            collector.handle(f"slm/square/{device}/{rec['t']}", json.dumps(rec).encode(), when)
            pending += 1
            if pending % batch == 0:
                collector.commit()
    collector.commit()
    collector.db.close()
    return collector
