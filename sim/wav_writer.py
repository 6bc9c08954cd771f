"""Streaming WAV writer: PCM 16/24/32-bit or float 32-bit, any length, written chunk by chunk.

The header is written with placeholder sizes and patched on close, so an hour-long file never sits in memory.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_PCM, _FLOAT = 1, 3


def pcm_bytes(x: np.ndarray, bits: int) -> bytes:
    """Integer samples (already scaled to the sample size) as little-endian PCM bytes."""
    q = np.asarray(x, dtype=np.int64)
    if bits == 24:
        q = q & 0xFFFFFF
        return np.stack([q & 0xFF, (q >> 8) & 0xFF, (q >> 16) & 0xFF], axis=-1).astype(np.uint8).tobytes()
    return q.astype(f"<i{bits // 8}").tobytes()


class WavWriter:
    """``write(samples)`` appends frames: int arrays for PCM (already in the sample size's range), floats for float
    files; shape (n,) or (n, channels). ``close()`` patches the sizes. Usable as a context manager."""

    def __init__(self, path: str | Path, rate: int, bits: int = 32, is_float: bool = False, channels: int = 1):
        if (is_float and bits != 32) or (not is_float and bits not in (16, 24, 32)):
            raise ValueError(f"unsupported WAV sample format: {'float' if is_float else 'PCM'} {bits}-bit")
        self.path, self.rate, self.bits, self.is_float, self.channels = Path(path), rate, bits, is_float, channels
        self.f = self.path.open("wb")
        self.data_bytes = 0
        self._header()

    def _header(self) -> None:
        block_align = self.channels * self.bits // 8
        fmt = struct.pack("<HHIIHH", _FLOAT if self.is_float else _PCM, self.channels, self.rate,
                          self.rate * block_align, block_align, self.bits)
        self.f.seek(0)
        self.f.write(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + self.data_bytes) + b"WAVE")
        self.f.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
        self.f.write(b"data" + struct.pack("<I", self.data_bytes))

    def write(self, samples: np.ndarray) -> None:
        x = np.asarray(samples)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[1]}")
        data = x.astype("<f4").tobytes() if self.is_float else pcm_bytes(x.reshape(-1), self.bits)
        self.f.write(data)
        self.data_bytes += len(data)

    def close(self) -> None:
        if self.f.closed:
            return
        if self.data_bytes % 2:
            self.f.write(b"\0")
        self._header()
        self.f.close()

    def __enter__(self) -> "WavWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
