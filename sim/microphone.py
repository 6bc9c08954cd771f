"""MEMS microphone model: sound pressure (Pa) in, the 32-bit I2S words an ESP32 reads out, chunk by chunk.

The chain, per the datasheets of the microphones the project supports:
    p · 10^(e/20)          per-unit sensitivity error e (dB) - what calibration has to find
    -> response            the microphone's typical frequency response (minimum-phase FIR from the table)
    -> + self-noise        white noise with the datasheet's A-weighted equivalent input noise (94 dB - SNR)
    -> / full scale        the full-scale-sine convention: a sine at 94 - sensitivity_dbfs dB SPL peaks at 1.0
    -> + DC offset, + start-up transient (a decaying offset and noise during the first startup_s)
    -> clip at ±1          digital full scale = acoustic overload point
    -> data bits           24 (INMP441, ICS-43434) or 18 (SPH0645) two's complement, in the top of a 24-bit slot
    -> I2S word            (s24 << 8) | garbage low byte; the SPH0645 on an ESP32 arrives shifted left one bit
``ideal=True`` keeps only the conversion (scale, clip, bits, word): no error, response, noise, offset or transient.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

from slm.sim.weighting import design_goal_db

REFERENCE_PA = 20e-6


@dataclass(frozen=True)
class MicrophoneSpec:
    """Datasheet figures of a MEMS microphone (typical values; the response is read off the typical plot)."""

    model: str
    sensitivity_dbfs: float  # dBFS for a 94 dB SPL 1 kHz sine, full-scale-sine convention
    self_noise_dba: float  # 94 dB - SNR (A-weighted)
    aop_db: float  # acoustic overload point, dB SPL
    data_bits: int
    word_left_shift: int  # extra left shift of the data in the I2S word as an ESP32 reads it
    dc_offset_fs: float  # DC offset as a fraction of full scale
    startup_s: float  # start-up transient to discard
    response: tuple[tuple[float, float], ...]  # (Hz, dB re 1 kHz), the same table as the board profiles

    source: str


MIC_MODELS: dict[str, MicrophoneSpec] = {
    "INMP441": MicrophoneSpec(
        model="INMP441", sensitivity_dbfs=-26.0, self_noise_dba=33.0, aop_db=120.0, data_bits=24,
        word_left_shift=0, dc_offset_fs=-0.0005, startup_s=0.3,
        response=((20, -11.5), (30, -8.0), (40, -6.0), (50, -4.4), (60, -3.3), (80, -2.4), (100, -1.8), (150, -1.0),
                  (200, -0.5), (300, -0.1), (500, 0.0), (1000, 0.0), (2000, 0.0), (3000, -0.1), (4000, -0.4),
                  (5000, -0.7), (6000, -1.0), (8000, -1.7), (10000, -2.3), (12000, -2.7), (14000, -2.9),
                  (16000, -3.5), (18000, -4.5), (20000, -6.0)),
        source="InvenSense INMP441 datasheet rev 1.1: -26 dBFS, SNR 61 dBA, AOP 120 dB SPL, 24-bit, 60 Hz-15 kHz"),
    "ICS-43434": MicrophoneSpec(
        model="ICS-43434", sensitivity_dbfs=-26.0, self_noise_dba=29.0, aop_db=120.0, data_bits=24,
        word_left_shift=0, dc_offset_fs=-0.0002, startup_s=0.3,
        response=((20, -12.0), (30, -8.0), (40, -5.5), (50, -4.0), (60, -3.1), (80, -2.2), (100, -1.7), (150, -1.0),
                  (200, -0.6), (300, -0.25), (500, -0.05), (1000, 0.0), (2000, 0.1), (3000, 0.35), (4000, 0.7),
                  (5000, 1.1), (6000, 1.5), (8000, 2.4), (10000, 3.1), (12000, 4.2), (14000, 5.5), (16000, 7.0),
                  (18000, 9.0), (20000, 12.0)),
        source="TDK InvenSense ICS-43434 datasheet v1.1: -26 dBFS, SNR 65 dBA, AOP 120 dB SPL, 24-bit, 50 Hz-20 kHz"),
    "SPH0645LM4H-B": MicrophoneSpec(
        model="SPH0645LM4H-B", sensitivity_dbfs=-26.0, self_noise_dba=29.0, aop_db=120.0, data_bits=18,
        word_left_shift=1, dc_offset_fs=-0.03, startup_s=2.5,
        response=((20, -7.5), (30, -5.2), (40, -3.6), (50, -2.8), (60, -2.2), (80, -1.4), (100, -1.0), (150, -0.5),
                  (200, -0.3), (300, -0.1), (500, 0.0), (1000, 0.0), (2000, 0.0), (3000, 0.15), (4000, 0.3),
                  (5000, 0.5), (6000, 0.7), (8000, 0.9), (10000, 1.0), (12000, 0.85), (14000, 0.5), (16000, 0.0),
                  (18000, -2.0), (20000, -5.5)),
        source="Knowles SPH0645LM4H-B datasheet rev C: -26 dBFS, SNR 65 dBA, AOP 120 dB SPL, 18-bit; one-bit "
               "shift on ESP32 I2S (reported by users); large DC offset"),
}


RESPONSE_TAPS = 4095


def full_scale_pa(sensitivity_dbfs: float) -> float:
    """Peak pressure (Pa) of the sine that reads 0 dBFS: that sine's level is 94 - sensitivity_dbfs dB SPL."""
    return REFERENCE_PA * 10 ** ((94.0 - sensitivity_dbfs) / 20.0) * math.sqrt(2.0)


def _a_weighting_power_gain(f: np.ndarray) -> np.ndarray:
    return 10 ** (design_goal_db("A", f) / 10.0)


@functools.lru_cache(maxsize=16)
def response_fir(spec: MicrophoneSpec, rate: int, taps: int = RESPONSE_TAPS) -> np.ndarray:
    """Minimum-phase FIR with the microphone's typical magnitude response (interpolated in log frequency).

    4095 taps on a 1.5 Hz grid follow the table within 0.07 dB from 50 Hz to fs/3 (255 taps on a 12 Hz grid were
    0.55-0.66 dB off at 50-125 Hz, an error the meter's equaliser was then blamed for). The homomorphic step uses
    a 2**17-point FFT (32 times the filter: the same response as scipy's default 2**21 points, in 10 ms and without
    its 100 MB of temporaries). Read-only: the array is shared."""
    f_pts = np.array([p[0] for p in spec.response], dtype=float)
    db_pts = np.array([p[1] for p in spec.response], dtype=float)
    grid = np.linspace(0.0, rate / 2, 16385)
    db = np.interp(np.log10(np.maximum(grid, 1.0)), np.log10(f_pts), db_pts)
    # firwin2 on the squared magnitude, then minimum_phase (homomorphic) halves it back to the magnitude
    linear = signal.firwin2(2 * taps - 1, grid, 10 ** (db / 10.0), fs=rate)
    h = signal.minimum_phase(linear, method="homomorphic", n_fft=2**17)
    h.setflags(write=False)
    return h


class StreamingFIR:
    """FIR filtering in chunks (overlap-add): the output of any chunking equals one-shot convolution (to rounding).

    Long chunks go through the FFT with the filter's spectrum kept per FFT length (a scene's chunks all have one
    length), which halves the cost of a 4095-tap response against scipy's oaconvolve."""

    def __init__(self, taps: np.ndarray):
        self.h = np.asarray(taps, dtype=float)
        self.tail = np.zeros(len(self.h) - 1)
        self._spectra: dict[int, np.ndarray] = {}

    def _convolve(self, x: np.ndarray) -> np.ndarray:
        m = len(x) + len(self.h) - 1
        if len(x) <= 256:
            return np.convolve(x, self.h)
        nfft = sp_fft.next_fast_len(m, real=True)
        spectrum = self._spectra.get(nfft)
        if spectrum is None:
            spectrum = self._spectra[nfft] = sp_fft.rfft(self.h, nfft)
        return sp_fft.irfft(sp_fft.rfft(x, nfft) * spectrum, nfft)[:m]

    def process(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        y = self._convolve(np.asarray(x, dtype=float))  # n + len(h) - 1 samples
        y[:len(self.tail)] += self.tail
        self.tail = y[n:].copy()
        return y[:n]


class Microphone:
    """One microphone unit: ``words(p)`` turns a chunk of sound pressure (Pa) into int32 I2S words."""

    def __init__(self, spec: MicrophoneSpec, rate: int, seed: int, sensitivity_error_db: float = 0.0,
                 ideal: bool = False):
        self.spec, self.rate, self.ideal = spec, rate, ideal
        self.rng = np.random.default_rng(seed)
        self.gain = (1.0 if ideal else 10 ** (sensitivity_error_db / 20.0)) / full_scale_pa(spec.sensitivity_dbfs)
        self.fir = None if ideal else StreamingFIR(response_fir(spec, rate))
        self.noise_fs = 0.0
        if not ideal:
            f = np.linspace(0.0, rate / 2, 8193)[1:]
            a_bandwidth = np.trapezoid(_a_weighting_power_gain(f), f)  # Hz: A-weighted power of unit-PSD white noise
            noise_pa_rms = REFERENCE_PA * 10 ** (spec.self_noise_dba / 20.0) * math.sqrt((rate / 2) / a_bandwidth)
            self.noise_fs = noise_pa_rms / full_scale_pa(spec.sensitivity_dbfs)
        self.samples_done = 0
        self.full = 2 ** (spec.data_bits - 1)

    def full_scale_fs_samples(self, p: np.ndarray) -> np.ndarray:
        """The microphone's output in full-scale units (before clipping and quantisation): a new array."""
        v = np.asarray(p, dtype=float) * self.gain
        if self.ideal:
            return v
        v = self.fir.process(v)  # a new array: updated in place from here on (the same arithmetic, fewer copies)
        noise = self.rng.standard_normal(len(v))
        noise *= self.noise_fs
        v += noise
        v += self.spec.dc_offset_fs
        start = self.spec.startup_s
        if self.samples_done / self.rate < start:
            t = (self.samples_done + np.arange(len(v))) / self.rate
            settle = np.exp(-t / (start / 10.0))  # gone (below -100 dBFS) once the firmware's discard is over
            v += settle * (0.2 + 0.02 * self.rng.standard_normal(len(v)))
        return v

    def words(self, p: np.ndarray) -> np.ndarray:
        v = self.full_scale_fs_samples(p)
        self.samples_done += len(v)
        v *= self.full
        np.floor(v, out=v)
        np.clip(v, -self.full, self.full - 1, out=v)
        word = v.astype(np.int64)
        word <<= 24 - self.spec.data_bits + 8  # data bits at the top of the 24-bit slot, the slot in the word
        word |= self.rng.integers(0, 256, len(word))  # the low byte: garbage
        word <<= self.spec.word_left_shift
        word &= 0xFFFFFFFF
        return word.astype(np.uint32).view(np.int32)
