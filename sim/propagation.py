"""Sound propagation from a point source to a microphone over an open square, as a streaming filter.

A source signal is the free-field sound pressure at 1 m from the source. At the microphone it arrives twice: along
the direct path (length r1) and reflected by the ground plane z = 0, as from the image source (x, y, -z) (length r2).
Each arrival k is delayed by r_k / c, spread spherically (1 / r_k), absorbed by the air (ISO 9613-1, alpha(f) r_k)
and, for the reflection, multiplied by the ground's plane-wave reflection coefficient Q(f) (Delany-Bazley impedance
for soft ground). The two arrivals of one source add coherently:

    H(f) = sum_k Q_k(f) / r_k * 10^(-alpha(f) r_k / 20) * exp(-j 2 pi f r_k / c),   Q_direct = 1

A path runs this as a bulk integer delay (a ring buffer of D samples) followed by an FIR (the rest: the fractional
part of the direct delay, the reflection's extra delay, absorption, 1/r and Q), designed by sampling H on a fine
frequency grid, inverse FFT and a flat-top window round the arrivals, and applied by FFT overlap-save. The FIR
follows H within -60 dB of the direct sound from 50 Hz to 0.42 fs (20.2 kHz at 48 kHz) and rolls off smoothly above;
it has ~100-500 taps over hard ground or none (up to ~1000 at 300 m in dry air). Over soft ground the reflection's
slow low-frequency tail gets up to ~2700 taps and the error at 50 Hz reaches -55 dB at 10 m, -40 dB at 100 m and
-31 dB at 300 m near grazing incidence (`design_error` says, per path). Memory is fixed when the path is made: D + N - 1
samples of state. Cost: one real FFT pair per block, ~6-16 ns per sample for chunks of 4800+ samples (see
bench/bench_propagation.py); `PropagationFan` runs one source to several microphones and shares the input's FFT.

Limits: a homogeneous, still atmosphere (no wind or temperature gradients, no turbulence), a flat infinite ground,
fixed positions (no Doppler), a point source without directivity, the plane-wave reflection coefficient (no ground
wave: too much cancellation over soft ground at grazing incidence), no barriers, facades or diffraction.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import scipy.fft as sfft
from scipy.special import erfc

REFERENCE_PRESSURE_KPA = 101.325  # p_r, ISO 9613-1 (standard atmosphere)
REFERENCE_TEMPERATURE_K = 293.15  # T_0, ISO 9613-1 (20 °C)
TRIPLE_POINT_K = 273.16  # T_01, ISO 9613-1 Annex B (triple-point isotherm of water)
KELVIN_OFFSET = 273.15
GROUNDS = ("hard", "soft", "none")
HARD_GROUND_REFLECTION = 1.0  # paving: ISO 9613-2 ground factor G = 0 (a perfect reflector)
GRASS_FLOW_RESISTIVITY_KPA_S_M2 = 200.0  # typical lawn (Embleton, Piercy & Daigle 1983: grass 150-300 kPa·s/m²)

TAPER_HALF_WIDTHS = (32, 48, 64, 96, 128, 192, 256, 384, 512)  # window half widths tried in turn
TAIL_FACTOR_SOFT = 4  # soft ground: the reflection coefficient's causal tail needs a longer trailing taper
DESIGN_TOLERANCE = 1e-3  # |FIR - H| <= 1e-3 / r1 (-60 dB re the direct sound) ...
DESIGN_LOW_HZ = 50.0  # ... from 50 Hz to BAND_EDGE · fs (soft ground's Q(f) ~ 1 - c f^0.75 has a slow tail below)
BAND_EDGE = 0.42  # the path passes 0 .. 0.42 fs (20.2 kHz at 48 kHz) within 0.005 dB of the model ...
EDGE_CENTRE, EDGE_SIGMA = 0.46, 0.0121  # ... and rolls off as a Gaussian-smoothed step (3.3 sigma each side)
DESIGN_GRID_MIN = 1 << 14  # frequency grid (irfft length) of the design: at least this and 8× the FIR
DIRECT_CONVOLUTION_MAX = 131072  # chunk length × taps up to which np.convolve beats an FFT block
FFT_BLOCK_MAX = 1 << 13  # longest overlap-save block (4 N if longer): 64 KB buffers stay in cache
FFT_CACHE_SIZE = 4  # tap spectra kept for different block lengths (bounded: chunk sizes may vary)
FFT_BATCH_BLOCKS = 8  # blocks transformed in one batched FFT call (bounded memory for long inputs)
DELAY_SCRATCH_SAMPLES = 4096  # the delay line swaps through a scratch of at most this many samples


def speed_of_sound(temperature_c: float) -> float:
    """Speed of sound in air (m/s): c = 343.2 · sqrt(T / T_0), T in kelvin, T_0 = 293.15 K (as in ISO 9613-1)."""
    return 343.2 * math.sqrt((temperature_c + KELVIN_OFFSET) / REFERENCE_TEMPERATURE_K)


def water_vapour_molar_concentration(temperature_c: float, humidity_pct: float,
                                     pressure_kpa: float = REFERENCE_PRESSURE_KPA) -> float:
    """Molar concentration of water vapour h (%) from relative humidity h_r (%) (ISO 9613-1 Annex B):

        h = h_r · (p_sat / p_r) / (p_a / p_r),   p_sat / p_r = 10^C,   C = -6.8346 · (T_01 / T)^1.261 + 4.6151
    """
    temperature_k = temperature_c + KELVIN_OFFSET
    c_exponent = -6.8346 * (TRIPLE_POINT_K / temperature_k) ** 1.261 + 4.6151
    return humidity_pct * 10.0 ** c_exponent / (pressure_kpa / REFERENCE_PRESSURE_KPA)


def air_absorption_db_per_m(f, temperature_c: float, humidity_pct: float,
                            pressure_kpa: float = REFERENCE_PRESSURE_KPA):
    """Pure-tone atmospheric absorption coefficient alpha (dB/m) at frequency f (Hz), ISO 9613-1:1993.

    Relaxation frequencies of oxygen and nitrogen (equations 3 and 4), h the molar concentration of water vapour (%):

        f_rO = (p_a/p_r) · (24 + 4.04e4 · h · (0.02 + h) / (0.391 + h))
        f_rN = (p_a/p_r) · (T/T_0)^(-1/2) · (9 + 280 · h · exp(-4.170 · ((T/T_0)^(-1/3) - 1)))

    and the coefficient (equation 5):

        alpha = 8.686 f² · [1.84e-11 (p_a/p_r)^-1 (T/T_0)^(1/2)
                            + (T/T_0)^(-5/2) · (0.01275 e^(-2239.1/T) / (f_rO + f²/f_rO)
                                                + 0.1068 e^(-3352.0/T) / (f_rN + f²/f_rN))]

    The standard states ±10 % accuracy for 50 Hz-10 kHz, -20 to +50 °C, 10-100 % RH at up to 200 kPa. f may be an
    array; the result has its shape.
    """
    f = np.asarray(f, dtype=np.float64)
    temperature_k = temperature_c + KELVIN_OFFSET
    t_ratio = temperature_k / REFERENCE_TEMPERATURE_K
    p_ratio = pressure_kpa / REFERENCE_PRESSURE_KPA
    h = water_vapour_molar_concentration(temperature_c, humidity_pct, pressure_kpa)
    f_ro = p_ratio * (24.0 + 4.04e4 * h * (0.02 + h) / (0.391 + h))
    f_rn = p_ratio * t_ratio ** -0.5 * (9.0 + 280.0 * h * math.exp(-4.170 * (t_ratio ** (-1.0 / 3.0) - 1.0)))
    f2 = f * f
    return 8.686 * f2 * (1.84e-11 / p_ratio * t_ratio ** 0.5
                         + t_ratio ** -2.5 * (0.01275 * math.exp(-2239.1 / temperature_k) / (f_ro + f2 / f_ro)
                                              + 0.1068 * math.exp(-3352.0 / temperature_k) / (f_rn + f2 / f_rn)))


def delany_bazley_impedance(f, flow_resistivity_kpa_s_m2: float = GRASS_FLOW_RESISTIVITY_KPA_S_M2):
    """Normalised characteristic impedance Z_c / (rho_0 c) of a porous ground (Delany & Bazley 1970, Appl. Acoust. 3,
    105-116, in the usual form with sigma in kPa·s/m², e.g. Embleton, Piercy & Daigle 1983, JASA 74, 1239), time
    convention e^(+j omega t) (the one under which the reflection is causal):

        Z = 1 + 9.08 (f / sigma)^-0.75 - j 11.9 (f / sigma)^-0.73,   f in Hz, sigma in kPa·s/m²

    A semi-infinite layer is taken as locally reacting, so Z is also its surface impedance. The fit holds for
    0.01 < rho_0 f / sigma < 1 (sigma in Pa·s/m²): 1.7 kHz-170 kHz at 200 kPa·s/m²; below that it is the usual
    extrapolation (Z grows without bound as f -> 0, so the ground becomes hard). f = 0 gives Z = inf.
    """
    f = np.asarray(f, dtype=np.float64)
    ratio = np.where(f > 0, f, 1.0) / flow_resistivity_kpa_s_m2
    z = 1.0 + 9.08 * ratio ** -0.75 - 1j * 11.9 * ratio ** -0.73
    return np.where(f > 0, z, np.inf + 0j)


def plane_wave_reflection_coefficient(f, grazing_angle_rad: float,
                                      flow_resistivity_kpa_s_m2: float = GRASS_FLOW_RESISTIVITY_KPA_S_M2):
    """Plane-wave reflection coefficient of a locally reacting ground at grazing angle psi (angle to the ground):

        R_p = (Z sin psi - 1) / (Z sin psi + 1),   Z from `delany_bazley_impedance`

    R_p -> 1 as f -> 0 (and is 1 at f = 0); R_p -> -1 at grazing incidence (psi -> 0). |R_p| <= 1 (passive ground).
    """
    z = delany_bazley_impedance(f, flow_resistivity_kpa_s_m2)
    finite = np.isfinite(z)
    z_sin = np.where(finite, z, 1.0) * math.sin(grazing_angle_rad)
    return np.where(finite, (z_sin - 1.0) / (z_sin + 1.0), 1.0 + 0j)


def _band_edge(f_over_fs) -> np.ndarray:
    """The design's band limit: 1 to BAND_EDGE · fs, then a Gaussian-smoothed step centred at EDGE_CENTRE · fs
    (E = erfc((f - f_c) / (sigma sqrt 2)) / 2): smooth everywhere, so the target's impulse response decays like a
    Gaussian (sigma_t = 1 / (2 pi sigma) = 13 samples) and short windows capture it."""
    return 0.5 * erfc((np.asarray(f_over_fs) - EDGE_CENTRE) / (EDGE_SIGMA * math.sqrt(2.0)))


def _flat_top_window(n: np.ndarray, start: float, stop: float, ramp: float) -> np.ndarray:
    """1 on [start + ramp, stop - ramp], half-Hann ramps to 0 at start and stop."""
    rise = np.clip((n - start) / ramp, 0.0, 1.0)
    fall = np.clip((stop - n) / ramp, 0.0, 1.0)
    return np.sin(0.5 * np.pi * np.minimum(rise, fall)) ** 2


class PropagationPath:
    """Propagation from a point source to a microphone as a streaming, stateful filter.

    source_pos, mic_pos: (x, y, z) in metres, z up, ground plane z = 0 (z >= 0 unless ground = "none").
    The input is the free-field sound pressure 1 m from the source; the output, the pressure at the microphone:
    ``process(x)`` returns as many samples as it is given, continuing from the previous call, and holds only
    D + N - 1 samples of state (D = `bulk_delay_samples`, N = len(`fir`)).

    ground: "hard" (paving: Q = 1, ISO 9613-2 G = 0), "soft" (plane-wave reflection coefficient of a Delany-Bazley
    ground of the given flow resistivity, at the path's grazing angle) or "none" (free field, no reflection).
    air_absorption=False leaves the ISO 9613-1 absorption out (for tests of spreading alone).
    """

    def __init__(self, source_pos: Sequence[float], mic_pos: Sequence[float], rate: int, temperature_c: float = 20.0,
                 humidity_pct: float = 70.0, ground: str = "hard", pressure_kpa: float = REFERENCE_PRESSURE_KPA,
                 flow_resistivity_kpa_s_m2: float = GRASS_FLOW_RESISTIVITY_KPA_S_M2, air_absorption: bool = True):
        if ground not in GROUNDS:
            raise ValueError(f"ground must be one of {GROUNDS}, not {ground!r}")
        self.source_pos = np.asarray(source_pos, dtype=np.float64).reshape(3)
        self.mic_pos = np.asarray(mic_pos, dtype=np.float64).reshape(3)
        if ground != "none" and (self.source_pos[2] < 0 or self.mic_pos[2] < 0):
            raise ValueError("source and microphone must be on or above the ground (z >= 0)")
        self.rate = int(rate)
        self.temperature_c = float(temperature_c)
        self.humidity_pct = float(humidity_pct)
        self.pressure_kpa = float(pressure_kpa)
        self.ground = ground
        self.flow_resistivity_kpa_s_m2 = float(flow_resistivity_kpa_s_m2)
        self.air_absorption = bool(air_absorption)
        self.speed_of_sound_m_s = speed_of_sound(self.temperature_c)

        self.distance_m = float(np.linalg.norm(self.mic_pos - self.source_pos))
        if self.distance_m <= 0.0:
            raise ValueError("source and microphone are at the same point")
        image = self.source_pos * np.array([1.0, 1.0, -1.0])
        self.reflected_distance_m = float(np.linalg.norm(self.mic_pos - image))
        # angle between the reflected ray and the ground: sin psi = (z_s + z_m) / r2
        self.grazing_angle_rad = math.asin(min(1.0, (self.source_pos[2] + self.mic_pos[2])
                                               / self.reflected_distance_m))
        self.delay_s = self.distance_m / self.speed_of_sound_m_s
        self.reflected_delay_s = self.reflected_distance_m / self.speed_of_sound_m_s

        self.bulk_delay_samples, self.fir = self._design()
        self._convolver: _OverlapSave | None = None  # the streaming state, made on the first process()
        self._delay_line: _DelayLine | None = None

    # -- model ---------------------------------------------------------------------------------------------------
    def _arrivals(self):
        """(distance m, delay s, reflection coefficient function of f) for each arrival."""
        arrivals = [(self.distance_m, self.delay_s, None)]
        if self.ground == "hard":
            arrivals.append((self.reflected_distance_m, self.reflected_delay_s, HARD_GROUND_REFLECTION))
        elif self.ground == "soft":
            arrivals.append((self.reflected_distance_m, self.reflected_delay_s, "soft"))
        return arrivals

    def _reflection(self, f, kind):
        if kind is None:
            return 1.0
        if kind == "soft":
            return plane_wave_reflection_coefficient(f, self.grazing_angle_rad, self.flow_resistivity_kpa_s_m2)
        return kind

    def _absorption(self, f):
        if not self.air_absorption:
            return np.zeros_like(np.asarray(f, dtype=np.float64))
        return air_absorption_db_per_m(f, self.temperature_c, self.humidity_pct, self.pressure_kpa)

    def response(self, f, delay_s: float = 0.0) -> np.ndarray:
        """The model's exact transfer function H(f) (complex, source pressure at 1 m -> microphone pressure),
        with delay_s taken out of the phase:

            H(f) = sum_k Q_k(f) / r_k · 10^(-alpha(f) r_k / 20) · exp(-j 2 pi f (tau_k - delay_s))
        """
        f = np.asarray(f, dtype=np.float64)
        alpha = self._absorption(f)
        h = np.zeros(f.shape, dtype=np.complex128)
        for r, tau, kind in self._arrivals():
            h += (self._reflection(f, kind) / r * 10.0 ** (-alpha * r / 20.0)
                  * np.exp(-2j * np.pi * f * (tau - delay_s)))
        return h

    def _design(self):
        """Bulk delay D (samples) and FIR taps h[0..N-1] with D + h = H sampled at the rate, within
        DESIGN_TOLERANCE (relative to the direct sound) from DESIGN_LOW_HZ to BAND_EDGE · fs.

        The target H · E (E the smooth band edge) is sampled on a grid of >= 8 N bins and inverse-transformed; the
        impulse response is kept from `half` taps before the first arrival to `half` (soft ground: TAIL_FACTOR_SOFT
        × `half`) after the last, under a flat-top window with half-Hann ends. `half` starts at 32 and widens until
        the error is within tolerance: the absorption's zero-phase response (a nitrogen-relaxation tail of
        ~1 / (2 pi f_rN)) and soft ground's reflection (a causal tail) need more taps at long range."""
        fs = self.rate
        arrival_samples = [tau * fs for _, tau, _ in self._arrivals()]
        first, last = min(arrival_samples), max(arrival_samples)
        tail_factor = TAIL_FACTOR_SOFT if self.ground == "soft" else 1
        for half in TAPER_HALF_WIDTHS:
            tail = half * tail_factor
            bulk = max(0, int(math.floor(first)) - half)
            first_tap, last_tap = first - bulk, last - bulk
            n_taps = int(math.ceil(last_tap)) + tail + 1
            grid = max(DESIGN_GRID_MIN, 1 << int(math.ceil(math.log2(8 * n_taps))))
            f = np.fft.rfftfreq(grid, 1.0 / fs)
            target = self.response(f, delay_s=bulk / fs) * _band_edge(f / fs)
            impulse = np.fft.irfft(target, grid)[:n_taps]
            n = np.arange(n_taps, dtype=np.float64)
            fir = impulse * _flat_top_window(n, first_tap - half - 1, last_tap + tail + 1, max(8.0, half / 2))
            band = (f >= DESIGN_LOW_HZ) & (f <= BAND_EDGE * fs)
            error = float(np.max(np.abs(np.fft.rfft(fir, grid)[band] - target[band]))) * self.distance_m
            if error <= DESIGN_TOLERANCE:
                break
        self.design_error = error
        return bulk, fir

    # -- what the filter does ------------------------------------------------------------------------------------
    def gain_at(self, f) -> np.ndarray | float:
        """Magnitude of the filter actually applied (bulk delay + FIR) at f (Hz); compare with |response(f)|."""
        f = np.asarray(f, dtype=np.float64)
        n = np.arange(len(self.fir))
        g = np.abs(np.exp(-2j * np.pi * np.outer(f.reshape(-1), n) / self.rate) @ self.fir)
        return g.reshape(f.shape) if f.ndim else float(g[0])

    @property
    def buffer_samples(self) -> int:
        """Samples of signal state the path holds while streaming (delay line + FIR history): D + N - 1, fixed."""
        return self.bulk_delay_samples + len(self.fir) - 1

    def process(self, x: np.ndarray) -> np.ndarray:
        """Propagate the next chunk of the source signal (pressure at 1 m); returns the same number of samples."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if self._convolver is None or self._delay_line is None:
            self._convolver = _OverlapSave(self.fir[None, :])
            self._delay_line = _DelayLine(self.bulk_delay_samples)
        return self._delay_line.process_in_place(self._convolver.process(x)[0])

    def reset(self) -> None:
        """Forget the signal history (silence before the next chunk)."""
        self._convolver = None
        self._delay_line = None


class PropagationFan:
    """One source to several microphones: `PropagationPath`s that share the FFT of the source signal.

    ``process(x)`` returns an array (n_mics, len(x)); row i equals ``PropagationPath(source_pos, mic_positions[i],
    ...).process(x)`` (to rounding). Keyword arguments are those of PropagationPath; `paths` holds the designs
    (for delay_s, gain_at, response ...), the fan holds the streaming state. The FIRs are zero-padded to the longest.
    """

    def __init__(self, source_pos: Sequence[float], mic_positions: Sequence[Sequence[float]], rate: int, **kwargs):
        self.paths = [PropagationPath(source_pos, mic, rate, **kwargs) for mic in mic_positions]
        n_taps = max(len(p.fir) for p in self.paths)
        taps = np.zeros((len(self.paths), n_taps))
        for i, p in enumerate(self.paths):
            taps[i, :len(p.fir)] = p.fir
        self._convolver = _OverlapSave(taps)
        self._delay_lines = [_DelayLine(p.bulk_delay_samples) for p in self.paths]

    @property
    def buffer_samples(self) -> int:
        """Samples of signal state: the delay lines and one shared FIR history."""
        return sum(d.size for d in self._delay_lines) + self._convolver.history_samples

    def process(self, x: np.ndarray) -> np.ndarray:
        """Propagate the next chunk of the source signal to every microphone: (n_mics, len(x))."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        filtered = self._convolver.process(x)
        for delay_line, row in zip(self._delay_lines, filtered):
            delay_line.process_in_place(row)
        return filtered

    def reset(self) -> None:
        self._convolver.reset()
        for d in self._delay_lines:
            d.reset()


class _OverlapSave:
    """Streaming FIR filters (k × N taps) on one input: y_i[n] = sum_m taps[i, m] x[n - m].

    FFT overlap-save in blocks of n_fft samples overlapping by N - 1; up to FFT_BATCH_BLOCKS blocks go through one
    2-D FFT call (pocketfft transforms several rows together: bit for bit the result of one block at a time, with
    less per-call and per-block cost), so a call allocates its output and work arrays for at most that many blocks;
    np.convolve for tiny chunks.  State: the last N - 1 input samples."""

    def __init__(self, taps: np.ndarray):
        self.taps = np.ascontiguousarray(taps, dtype=np.float64)
        self.n_taps = self.taps.shape[1]
        self.history_samples = self.n_taps - 1
        self._history = np.zeros(self.history_samples)
        self._spectra: dict[int, np.ndarray] = {}

    def reset(self) -> None:
        self._history[:] = 0.0

    def _taps_spectra(self, n_fft: int) -> np.ndarray:
        """Spectra of the taps for blocks of n_fft (a few block lengths kept)."""
        spectra = self._spectra.get(n_fft)
        if spectra is None:
            if len(self._spectra) >= FFT_CACHE_SIZE:
                self._spectra.pop(next(iter(self._spectra)))
            spectra = self._spectra[n_fft] = np.fft.rfft(self.taps, n_fft, axis=1)
        return spectra

    def process(self, x: np.ndarray) -> np.ndarray:
        n_out, n_hist, k = len(x), self.history_samples, self.taps.shape[0]
        out = np.empty((k, n_out))
        if n_out == 0:
            return out
        if n_out * self.n_taps <= DIRECT_CONVOLUTION_MAX:
            extended = np.concatenate([self._history, x])
            for i, taps in enumerate(self.taps):
                out[i] = np.convolve(extended, taps, mode="valid")
        else:
            # equal blocks, as few as fit in block_max samples: frame b is (history ++ x)[b·step : b·step + n_fft];
            # all frames go through one batched FFT (bit for bit the same as one at a time, and faster)
            block_max = max(FFT_BLOCK_MAX, _block_length(4 * self.n_taps))
            n_blocks = -(-n_out // (block_max - n_hist))
            n_fft = _block_length(-(-n_out // n_blocks) + n_hist)
            step = n_fft - n_hist
            n_blocks = -(-n_out // step)
            taps_spectra = self._taps_spectra(n_fft)
            extended = np.zeros((n_blocks - 1) * step + n_fft)
            extended[:n_hist] = self._history
            extended[n_hist:n_hist + n_out] = x
            frames = np.lib.stride_tricks.as_strided(extended, (n_blocks, n_fft), (step * 8, 8), writeable=False)
            for b0 in range(0, n_blocks, FFT_BATCH_BLOCKS):
                b1 = min(n_blocks, b0 + FFT_BATCH_BLOCKS)
                spectra = np.fft.rfft(frames[b0:b1], axis=1)  # (blocks, bins)
                lo, hi = b0 * step, min(n_out, b1 * step)
                for i in range(k):
                    spectra_i = spectra * taps_spectra[i]
                    blocks = np.fft.irfft(spectra_i, n_fft, axis=1)  # (blocks, n_fft)
                    out[i, lo:hi] = blocks[:, n_hist:].reshape(-1)[:hi - lo]
        if n_hist:  # keep the last N - 1 samples of history ++ x
            if n_out >= n_hist:
                self._history[:] = x[n_out - n_hist:]
            else:
                self._history[:n_hist - n_out] = self._history[n_out:]
                self._history[n_hist - n_out:] = x
        return out


def _block_length(n: int) -> int:
    """The smallest FFT-friendly length >= n (2^a 3^b 5^c)."""
    return sfft.next_fast_len(n, real=True)


class _DelayLine:
    """Integer delay by a ring buffer of exactly `size` samples, applied in place (through a small scratch)."""

    def __init__(self, size: int):
        self.size = int(size)
        self._buffer = np.zeros(self.size)
        self._scratch = np.empty(min(self.size, DELAY_SCRATCH_SAMPLES))
        self._pos = 0

    def reset(self) -> None:
        self._buffer[:] = 0.0
        self._pos = 0

    def process_in_place(self, y: np.ndarray) -> np.ndarray:
        """y[n] <- y[n - size] (the samples before the first call are 0); returns y."""
        size, n = self.size, len(y)
        if size == 0:
            return y
        buffer, scratch = self._buffer, self._scratch
        start, pos = 0, self._pos
        while start < n:  # swap y[start:start+m] with the ring's oldest m samples (ring semantics, piece by piece)
            m = min(n - start, size - pos, len(scratch))
            scratch[:m] = y[start:start + m]
            y[start:start + m] = buffer[pos:pos + m]
            buffer[pos:pos + m] = scratch[:m]
            start += m
            pos = (pos + m) % size
        self._pos = pos
        return y
