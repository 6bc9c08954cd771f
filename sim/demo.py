"""A 60-second demo recording of a square in the evening, for `make demo` (until the full scene simulator exists).

Background traffic-like pink noise all along; a drum team (impulsive hits) from 10 s; dance music with a strong
beat and bass from 25 s; the drums stop at 45 s. Deterministic. Levels as a meter at the edge of the teams' area
would see them (dB re 20 µPa, -26 dBFS microphone).

    python -m slm.sim.demo OUT.wav
"""

from __future__ import annotations

import sys

import numpy as np

from slm.sim import signals

RATE = 48000
DURATION_S = 60.0


def demo_square(rate: int = RATE, duration_s: float = DURATION_S, seed: int = 7) -> np.ndarray:
    n = int(rate * duration_s)
    t = np.arange(n) / rate
    x = signals.pink_noise(55.0, duration_s, rate, seed=seed, f_low=20.0, f_high=8000.0)
    rng = np.random.default_rng(seed)
    # drum team: decaying low noise bursts on a 120 bpm pattern with accents
    drums = np.zeros(n)
    hit_len = int(0.12 * rate)
    env = np.exp(-np.arange(hit_len) / (0.025 * rate))
    for k, start in enumerate(np.arange(10.0, 45.0, 0.25)):
        i = int(start * rate)
        accent = 1.0 if k % 4 == 0 else 0.45
        burst = rng.standard_normal(hit_len) * env + np.sin(2 * np.pi * 90 * np.arange(hit_len) / rate) * env * 2
        drums[i:i + hit_len] += accent * burst[: max(0, min(hit_len, n - i))]
    drums *= signals.sine_amplitude(88.0) / np.sqrt(np.mean(drums[int(10 * rate):int(45 * rate)] ** 2))
    # dance music: bass line + chord + beat envelope
    music = (np.sin(2 * np.pi * 55 * t) + 0.6 * np.sin(2 * np.pi * 110 * t) + 0.3 * np.sin(2 * np.pi * 440 * t)
             + 0.2 * np.sin(2 * np.pi * 660 * t) + 0.1 * np.sin(2 * np.pi * 2200 * t))
    beat = 0.55 + 0.45 * np.exp(-((t * 2.0) % 1.0) / 0.15)
    music *= beat * (t >= 25.0)
    music *= signals.sine_amplitude(84.0) / np.sqrt(np.mean(music[int(25 * rate):] ** 2))
    return np.clip(x + drums + music, -1.0, 1.0)


def main(argv: list[str]) -> int:
    from slm.wav_io import write_wav

    if len(argv) != 2:
        print("usage: python -m slm.sim.demo OUT.wav", file=sys.stderr)
        return 2
    write_wav(argv[1], demo_square(), RATE, bits=24)
    print(f"wrote {argv[1]}: {DURATION_S:.0f} s demo recording of a square at {RATE} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
