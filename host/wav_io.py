"""WAV files for the meter: read them in chunks as the 32-bit I2S words an ESP32 reads from a MEMS microphone, and write them.

Supported: PCM 16, 24 and 32 bit, IEEE float 32 bit, plain or WAVE_FORMAT_EXTENSIBLE, any channel count.
WAV full scale is the microphone's full scale: a sample of ±1.0 (or the PCM extreme) is the largest 24-bit word.
The I2S word carries the 24-bit sample in its top 24 bits and the low byte is garbage, as on the real bus; here it
is a fixed pseudo-random pattern, which the firmware must (and does) ignore.

The header is parsed here rather than with scipy.io.wavfile because the meter must stream hour-long files in
bounded memory (scipy reads whole 24-bit files) and must refuse truncated files, which other readers pad silently.
"""

from __future__ import annotations

import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from slm.errors import InputError

SUPPORTED_RATES = (48000, 44100, 32000, 16000)
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


class WavError(InputError):
    """The file cannot be measured; the message is one line for the user (exit code 2)."""


@dataclass(frozen=True)
class WavInfo:
    path: Path
    rate: int
    channels: int
    bits: int
    is_float: bool
    frames: int
    data_offset: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate

    @property
    def kind(self) -> str:
        return f"{'float' if self.is_float else 'PCM'} {self.bits}-bit"


def read_header(path: str | Path) -> WavInfo:
    """Parse and check the RIFF/WAVE header; raise WavError with a one-line reason.

    Only regular files: the reader needs the file's size (to refuse a truncated file) and opens it again to stream
    the data, so a FIFO, a terminal or a device is refused at once rather than read (or waited on) in part.
    """
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
                "a device or socket"
            raise WavError(f"{p}: not a regular file ({kind}); slm measure reads WAV files: save the stream to a file "
                           "first")
        size = st.st_size
        with p.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
                raise WavError(f"{p}: not a WAV file (no RIFF/WAVE header)")
            fmt = None
            while True:
                ch = f.read(8)
                if len(ch) < 8:
                    raise WavError(f"{p}: no data chunk (file empty or truncated)")
                cid, clen = ch[:4], struct.unpack("<I", ch[4:])[0]
                if cid == b"fmt ":
                    body = f.read(clen)
                    if len(body) < 16:
                        raise WavError(f"{p}: truncated fmt chunk")
                    fmt = body
                    if clen % 2:
                        f.read(1)
                elif cid == b"data":
                    data_offset = f.tell()
                    break
                else:
                    f.seek(clen + (clen % 2), 1)
    except OSError as e:
        raise WavError(f"{p}: cannot read ({e.strerror or e})") from None
    if fmt is None:
        raise WavError(f"{p}: no fmt chunk before the data")
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE:
        if len(fmt) < 40:
            raise WavError(f"{p}: truncated WAVE_FORMAT_EXTENSIBLE header")
        tag = struct.unpack("<H", fmt[24:26])[0]
    if tag not in (_PCM, _FLOAT):
        raise WavError(f"{p}: unsupported WAV encoding (format tag {tag:#x}); use PCM 16/24/32-bit or float 32-bit")
    is_float = tag == _FLOAT
    if (is_float and bits != 32) or (not is_float and bits not in (16, 24, 32)):
        raise WavError(f"{p}: unsupported {'float' if is_float else 'PCM'} sample size {bits} bits; "
                       "use PCM 16/24/32-bit or float 32-bit")
    if channels < 1 or block_align != channels * bits // 8:
        raise WavError(f"{p}: inconsistent header ({channels} channels, block align {block_align})")
    if rate not in SUPPORTED_RATES:
        raise WavError(f"{p}: sample rate {rate} Hz is not supported; use one of "
                       + ", ".join(str(r) for r in SUPPORTED_RATES))
    declared = struct.unpack("<I", ch[4:])[0]
    available = size - data_offset
    if declared > available and declared != 0xFFFFFFFF:
        raise WavError(f"{p}: truncated: header declares {declared} data bytes, file holds {available}")
    data_bytes = min(declared, available)
    frames = data_bytes // block_align
    if frames == 0:
        raise WavError(f"{p}: no audio (the data chunk is empty)")
    return WavInfo(p, rate, channels, bits, is_float, frames, data_offset)


_GARBAGE = np.random.default_rng(0x61672).integers(0, 256, 4096, dtype=np.int64)


def samples_to_i2s_words(samples: np.ndarray, bits: int, is_float: bool, start: int = 0) -> np.ndarray:
    """One channel's samples -> int32 I2S words: 24-bit two's complement in the top 24 bits, low byte garbage."""
    if is_float:
        x = samples.astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError("float samples must be finite numbers (found NaN or infinity)")
        s24 = np.clip(np.round(x * 2**23), -(2**23), 2**23 - 1).astype(np.int64)
    elif bits == 16:
        s24 = samples.astype(np.int64) << 8
    elif bits == 24:
        s24 = samples.astype(np.int64)
    else:
        s24 = samples.astype(np.int64) >> 8
    garbage = _GARBAGE[(np.arange(len(s24)) + start) % len(_GARBAGE)]
    return ((s24 << 8) | garbage).astype(np.uint32).view(np.int32)


def iter_i2s_words(info: WavInfo, channel: int = 0, chunk_frames: int = 1 << 16,
                   start_frame: int = 0) -> Iterator[np.ndarray]:
    """Yield the chosen channel as I2S words from ``start_frame`` on, chunk by chunk (bounded memory for any file
    length). A float sample that is not a finite number (NaN, infinity: a damaged file) is a WavError."""
    if not 0 <= channel < info.channels:
        raise WavError(f"{info.path}: channel {channel} does not exist (the file has {info.channels})")
    width = info.bits // 8
    frame_bytes = width * info.channels
    done = start_frame
    with info.path.open("rb") as f:
        f.seek(info.data_offset + start_frame * frame_bytes)
        while done < info.frames:
            n = min(chunk_frames, info.frames - done)
            raw = f.read(n * frame_bytes)
            if len(raw) < n * frame_bytes:
                raise WavError(f"{info.path}: truncated while reading")
            if info.is_float:
                samples = np.frombuffer(raw, dtype="<f4").reshape(n, info.channels)[:, channel]
                bad = np.flatnonzero(~np.isfinite(samples))
                if len(bad):
                    k = done + int(bad[0])
                    raise WavError(f"{info.path}: sample {k} ({k / info.rate:.3f} s, channel {channel}) is "
                                   f"{samples[bad[0]]} - not a number; the file is damaged")
            elif width == 3:
                b = np.frombuffer(raw, dtype=np.uint8).reshape(n, info.channels, 3)[:, channel, :].astype(np.int32)
                v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
                samples = (v ^ 0x800000) - 0x800000
            else:
                samples = np.frombuffer(raw, dtype=f"<i{width}").reshape(n, info.channels)[:, channel]
            yield samples_to_i2s_words(samples, info.bits, info.is_float, done)
            done += n


def write_wav(path: str | Path, samples: np.ndarray, rate: int, bits: int = 16, is_float: bool = False) -> None:
    """Write float samples in [-1, 1] (shape (n,) or (n, channels)) as a PCM or float WAV (for tests and demos)."""
    from slm.sim.wav_writer import WavWriter

    x = np.asarray(samples, dtype=np.float64)
    channels = 1 if x.ndim == 1 else x.shape[1]
    with WavWriter(path, rate, bits=32 if is_float else bits, is_float=is_float, channels=channels) as w:
        if is_float:
            w.write(x)
        else:
            full = 2 ** (bits - 1)
            w.write(np.clip(np.round(x * full), -full, full - 1).astype(np.int64))
