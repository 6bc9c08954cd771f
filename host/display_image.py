"""The public display's image on the host: read the ``display.ppm`` a virtual board writes (firmware/display_standin.py)
and turn it into a PNG a person can look at (``slm virtual --display out/display.png``).

PNG is written and read with the standard library (zlib): 8-bit RGB, no dependency. ``to_png`` enlarges each panel
pixel to a square; LED panels (WS2812, MAX7219) get a dark gap between LEDs and are brightened so that the
brightest channel is 255 (the WS2812 is driven dim, e.g. 32 of 255), an OLED is drawn as it is.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from slm.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFAULT_SCALE = 6


class DisplayImageError(InputError):
    """A display image that cannot be read; the message is one line."""


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    rgb: bytes  # row by row, 3 bytes per pixel
    relay: int | None = None  # the warning light's pin (None: no relay, or unknown)

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        i = 3 * (y * self.width + x)
        return self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]


def read_ppm(path: str | os.PathLike) -> Image:
    """A binary PPM (P6, maxval 255) with an optional ``# relay N`` comment line."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DisplayImageError(f"{path}: cannot read the display image: {e.strerror}") from None
    fields: list[bytes] = []
    relay = None
    pos = 0
    while len(fields) < 4:
        end = data.find(b"\n", pos)
        if end < 0:
            raise DisplayImageError(f"{path}: not a display image (truncated PPM header)")
        line = data[pos:end]
        pos = end + 1
        if line.startswith(b"#"):
            words = line[1:].split()
            if len(words) == 2 and words[0] == b"relay" and words[1].lstrip(b"-").isdigit():
                v = int(words[1])
                relay = v if v >= 0 else None
            continue
        fields += line.split()
    if fields[0] != b"P6" or not all(f.isdigit() for f in fields[1:4]) or fields[3] != b"255":
        raise DisplayImageError(f"{path}: not a display image (expected a P6 PPM with maxval 255)")
    w, h = int(fields[1]), int(fields[2])
    rgb = data[pos:pos + 3 * w * h]
    if len(rgb) != 3 * w * h or w == 0 or h == 0:
        raise DisplayImageError(f"{path}: not a display image ({len(rgb)} pixel bytes for {w}x{h})")
    return Image(w, h, bytes(rgb), relay)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(image: Image) -> bytes:
    """The image as an 8-bit RGB PNG (every row with filter type 0)."""
    stride = 3 * image.width
    raw = b"".join(b"\x00" + image.rgb[y * stride:(y + 1) * stride] for y in range(image.height))
    ihdr = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def write_png(image: Image, path: str | os.PathLike) -> None:
    """Write atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(png_bytes(image))
        os.replace(tmp, path)
    except OSError as e:
        raise DisplayImageError(f"{path}: cannot write the display image: {e.strerror}") from None


def read_png(path: str | os.PathLike) -> Image:
    """An 8-bit RGB PNG without interlace (what ``png_bytes`` writes; all five row filters are undone)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DisplayImageError(f"{path}: cannot read: {e.strerror}") from None
    if not data.startswith(PNG_SIGNATURE):
        raise DisplayImageError(f"{path}: not a PNG file")
    pos, idat, header = len(PNG_SIGNATURE), b"", None
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        elif kind == b"IEND":
            break
    if header is None or header[2:5] != (8, 2, 0) or header[6] != 0:
        raise DisplayImageError(f"{path}: only 8-bit RGB PNG without interlace is read here")
    w, h = header[0], header[1]
    raw = zlib.decompress(idat)
    stride = 3 * w
    out = bytearray(stride * h)
    prev = bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        row = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - 3] if i >= 3 else 0
            b = prev[i]
            c = prev[i - 3] if i >= 3 else 0
            if f == 1:
                row[i] = (row[i] + a) & 255
            elif f == 2:
                row[i] = (row[i] + b) & 255
            elif f == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y * stride:(y + 1) * stride] = row
        prev = row
    return Image(w, h, bytes(out))


def enlarge(image: Image, scale: int = DEFAULT_SCALE, leds: bool | None = None) -> Image:
    """Each pixel as a ``scale`` x ``scale`` square. ``leds`` (default: the panel is 8 pixels high, an LED sign):
    a dark one-pixel gap around each LED and the brightest channel scaled to 255."""
    if leds is None:
        leds = image.height == 8
    gain_num, gain_den = 1, 1
    if leds:
        top = max(image.rgb) if image.rgb else 0
        if top:
            gain_num, gain_den = 255, top
    w, h = image.width * scale, image.height * scale
    out = bytearray(3 * w * h)
    unlit = (24, 24, 24) if leds else (0, 0, 0)
    for y in range(h):
        py, iy = divmod(y, scale)
        for x in range(w):
            px, ix = divmod(x, scale)
            r, g, b = image.pixel(px, py)
            if leds:
                if ix == scale - 1 or iy == scale - 1:
                    r = g = b = 0
                elif r == g == b == 0:
                    r, g, b = unlit
                else:
                    r, g, b = r * gain_num // gain_den, g * gain_num // gain_den, b * gain_num // gain_den
            i = 3 * (y * w + x)
            out[i], out[i + 1], out[i + 2] = r, g, b
    return Image(w, h, bytes(out), image.relay)


def to_png(ppm: str | os.PathLike, png: str | os.PathLike, scale: int = DEFAULT_SCALE) -> Image:
    """Read a virtual board's display.ppm and write it enlarged as a PNG; returns the panel's image (unscaled)."""
    image = read_ppm(ppm)
    write_png(enlarge(image, scale), png)
    return image


class DisplayMirror:
    """Keeps ``png`` up to date with a virtual board's ``display.ppm``: ``poll()`` converts it when it changed
    (``slm virtual --display``); ``written`` counts the PNGs written. An image older than the mirror (left in a
    kept device folder by an earlier run) is not shown."""

    def __init__(self, ppm: str | os.PathLike, png: str | os.PathLike, scale: int = DEFAULT_SCALE,
                 since_ns: int | None = None):
        import time

        self.ppm = Path(ppm)
        self.png = Path(png)
        self.scale = scale
        self.since_ns = time.time_ns() if since_ns is None else since_ns
        self.seen: tuple[int, int] | None = None
        self.written = 0

    def poll(self) -> bool:
        try:
            st = self.ppm.stat()
        except OSError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self.seen or st.st_mtime_ns < self.since_ns:
            return False
        to_png(self.ppm, self.png, self.scale)
        self.seen = stamp
        self.written += 1
        return True
