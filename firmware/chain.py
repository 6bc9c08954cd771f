"""Tamper evidence for the device's records (docs/evidence.md): HMAC-SHA256 in a few lines over hashlib (MicroPython
has no hmac module), a record's canonical bytes (record_ring's own packer) and the link of a per-kind hash chain.

Runs unchanged on MicroPython (unix port, ESP32) and CPython; the host verifies with exactly these functions.
"""

import hashlib

try:
    import record_ring
except ImportError:  # CPython, imported as slm.firmware.chain
    from slm.firmware import record_ring  # type: ignore

MAC_BYTES = 16  # a record carries HMAC-SHA256 cut to 128 bits (RFC 2104 s.5, NIST SP 800-107)
ZERO_MAC = bytes(MAC_BYTES)  # prev_mac of the first record of a chain
_BLOCK = 64  # SHA-256's block size
_WORK = bytearray(512)  # body() packs here


_pads = [None, b"", b""]  # the last key and its inner and outer pads: a device signs with one key


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) of bytes ``msg`` under bytes ``key``: 32 bytes."""
    if _pads[0] != key:
        k = hashlib.sha256(key).digest() if len(key) > _BLOCK else bytes(key)
        k = k + bytes(_BLOCK - len(k))
        _pads[1] = bytes(b ^ 0x36 for b in k)
        _pads[2] = bytes(b ^ 0x5C for b in k)
        _pads[0] = bytes(key)
    inner = hashlib.sha256(_pads[1])
    inner.update(msg)
    outer = hashlib.sha256(_pads[2])
    outer.update(inner.digest())
    return outer.digest()


def body(kind, rec):
    """The canonical bytes of record ``rec`` of ``kind`` (minute, event, audit): exactly what the device's ring packs
    for it (schema fields and extras, without ``t``, ``n``, ``mac``). ValueError when it cannot be packed."""
    end, _ = record_ring.pack(kind, rec, _WORK)
    return bytes(_WORK[record_ring.STATES_AT:end])


def link(key, device_id, kind, n, prev_mac, body):
    """The mac of record ``n`` of ``kind``'s chain on device ``device_id``: HMAC-SHA256 over b"slm1", the device id,
    the kind, n (u32 big-endian), the previous record's mac (ZERO_MAC for the first of a chain) and the body; cut to
    MAC_BYTES."""
    msg = (b"slm1" + device_id.encode() + b"\0" + kind.encode() + b"\0" + n.to_bytes(4, "big") + bytes(prev_mac)
           + bytes(body))
    return hmac_sha256(key, msg)[:MAC_BYTES]


def key_id(key):
    """The key's public name: the first 8 hex digits of its SHA-256 (never the key)."""
    h = hashlib.sha256(key).digest()
    return "%02x%02x%02x%02x" % (h[0], h[1], h[2], h[3])
