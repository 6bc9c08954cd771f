"""A scenario brought to life: sources, propagation to each meter, the microphones, and the ground truth, in chunks.

``SceneStream`` produces, chunk after chunk with bounded memory, each meter's sound pressure and the I2S words
its microphone delivers; it is what `slm sim` writes to files and what a virtual board streams from.
``simulate`` runs a whole scenario into WAV files (32-bit PCM: the I2S words as the ESP32 reads them) and
truth.json (what a perfect class 1 meter at each microphone reports, and each source's contribution).

The output folder is always consistent: the files are written into a hidden staging folder inside it and moved into
place only when the run has succeeded (an interrupted or failed run, Ctrl-C or a full disk, leaves the folder as it
was); a run that needs more disk than is free is refused before it starts.

Randomness: one master seed (the scenario's, or --seed) gives every source, path and microphone its own
deterministic generator, so the same command writes the same files.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from slm.sim.microphone import MIC_MODELS, Microphone
from slm.sim.propagation import PropagationFan
from slm.sim.scenario import Scenario, ScenarioError, id_problem
from slm.sim.sources import make_source
from slm.sim.truth import LeqMeter, TruthMeter
from slm.sim.wav_writer import WavWriter

CHUNK_S = 0.5
STAGING_PREFIX = ".slm-sim-"  # hidden folder inside --out where a run writes until it has succeeded
TRUTH_FILE = "truth.json"
WAV_HEADER_BYTES = 44
TRUTH_BYTES_PER_INTERVAL = 420  # truth.json per meter and interval (13 levels, indent 1), measured: ~330
CONTRIBUTION_BYTES_PER_INTERVAL = 12  # per meter, source and interval
SPACE_MARGIN_BYTES = 1 << 20
CALIBRATION_S = 20.0
LEVEL_KEYS = ("LAeq", "LCeq", "LZeq", "LAFmax", "LAFmin", "LASmax", "LASmin", "LCpeak", "LZpeak", "LAE",
              "LA10", "LA50", "LA90")


def _child_seed(master: int, *names: str) -> int:
    """A stable 32-bit seed for one part of the scene (independent of Python's hash randomisation)."""
    h = 2166136261 ^ master
    for ch in "/".join(names).encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


def source_gain(kind: str, params: dict, rate: int, seed: int, level_dba_at_1m: float) -> float:
    """Scale that makes a source's long-term A-weighted level at 1 m equal level_dba_at_1m: measured on a
    calibration render of an independent instance of the same kind (different seed, same statistics)."""
    probe = make_source(kind, rate, seed ^ 0x5A5A5A5A, **params)
    truth = TruthMeter(rate, interval_s=CALIBRATION_S)
    n = int(CALIBRATION_S * rate)
    step = rate
    for i in range(0, n, step):
        truth.process(probe.render(min(step, n - i)))
    la = truth.overall()["LAeq"]
    if la is None:
        raise ValueError(f"source kind {kind!r} rendered silence")
    return 10 ** ((level_dba_at_1m - la) / 20.0)


def schedule_envelope(active, fade_s: float, t: np.ndarray, span_gains_db=()) -> np.ndarray:
    """1 (or the span's gain) inside the active spans, 0 outside, raised-cosine fades of fade_s inside each span.
    ``t`` is increasing (a chunk's sample times); only the samples within a fade are computed."""
    env = np.zeros_like(t)
    gains = [10 ** (g / 20.0) for g in span_gains_db] or [1.0] * len(active)
    for (a, b), g in zip(active, gains):
        i0, i1 = np.searchsorted(t, a), np.searchsorted(t, b)  # t[i0:i1] are the samples with a <= t < b
        if i0 >= i1:
            continue
        env[i0:i1] = g
        if fade_s > 0:
            head_end = np.searchsorted(t, a + fade_s, side="right")
            tail_start = max(np.searchsorted(t, b - fade_s), head_end)
            for lo, hi in ((i0, min(head_end, i1)), (tail_start, i1)):
                if lo < hi:
                    tt = t[lo:hi]
                    rise = np.clip((tt - a) / fade_s, 0, 1)
                    fall = np.clip((b - tt) / fade_s, 0, 1)
                    env[lo:hi] = g * (0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall)))
    return env


def constant_envelope(active, fade_s: float, t0: float, t1: float, span_gains_db=()) -> float | None:
    """The value of ``schedule_envelope`` when it is the same for every sample time in [t0, t1] (0 outside every
    span, the span's gain well inside one, away from its fades), else None."""
    gains = [10 ** (g / 20.0) for g in span_gains_db] or [1.0] * len(active)
    touching = [(a, b, g) for (a, b), g in zip(active, gains) if a <= t1 and t0 < b]
    if not touching:
        return 0.0
    if len(touching) == 1:
        a, b, g = touching[0]
        if (t0 > a + fade_s and t1 < b - fade_s) if fade_s > 0 else (a <= t0 and t1 < b):
            return g
    return None


@dataclass
class MeterChunk:
    pressure_pa: np.ndarray  # sound pressure at the microphone (all sources)
    words: np.ndarray  # int32 I2S words from the microphone
    contributions: dict[str, np.ndarray]  # pressure from each source


class SceneStream:
    """Chunks of a scenario for the chosen meters. ``next_chunk(n)`` advances time by n samples.

    repeat=True (a virtual board): after the scenario's duration its schedule starts again, while the sources, the
    propagation paths and the microphones run on.  A tone keeps its phase, noise its filter state, the paths their
    delay lines and the microphone its settled state (its start-up transient happens once), so what the meter hears
    at the wrap is exactly what the schedule says and nothing else.  Without repeat, time runs on past the duration
    with every source outside its active spans (silence at the microphone)."""

    def __init__(self, scenario: Scenario, rate: int | None = None, seed: int | None = None,
                 meter_ids: Iterable[str] | None = None, repeat: bool = False):
        self.scenario = scenario
        self.rate = rate or scenario.sample_rate
        self.seed = scenario.seed if seed is None else seed
        self.period_n = int(round(scenario.duration_s * self.rate)) if repeat else 0  # 0: no repeat
        ids = list(meter_ids) if meter_ids else [m.id for m in scenario.meters]
        self.meters = [scenario.meter(i) for i in ids]
        self.sources = []
        for s in scenario.sources:
            seed_s = _child_seed(self.seed, "source", s.id)
            gain = source_gain(s.kind, s.params, self.rate, seed_s, s.level_dba_at_1m)
            self.sources.append((s, make_source(s.kind, self.rate, seed_s, **s.params), gain))
        # one fan per source: its spectrum is computed once for all meters
        self.fans = {s.id: PropagationFan(s.position_m, [m.position_m for m in self.meters], self.rate,
                                          temperature_c=scenario.temperature_c, humidity_pct=scenario.humidity_pct,
                                          ground=scenario.ground)
                     for s in scenario.sources}
        self.mics = {m.id: Microphone(MIC_MODELS[m.microphone], self.rate, _child_seed(self.seed, "mic", m.id),
                                      sensitivity_error_db=m.sensitivity_error_db, ideal=m.ideal)
                     for m in self.meters}
        self.samples_done = 0

    @property
    def time_s(self) -> float:
        return self.samples_done / self.rate

    def _schedule_pieces(self, n: int) -> list[tuple[int, np.ndarray]]:
        """The next n samples as (offset in the chunk, increasing scenario times): one piece, or one per repeat of
        the scenario that the chunk touches."""
        if not self.period_n:
            return [(0, (self.samples_done + np.arange(n)) / self.rate)]
        pieces, i = [], 0
        while i < n:
            pos = (self.samples_done + i) % self.period_n
            m = min(n - i, self.period_n - pos)
            pieces.append((i, (pos + np.arange(m)) / self.rate))
            i += m
        return pieces

    def next_chunk(self, n: int) -> dict[str, MeterChunk]:
        pieces = self._schedule_pieces(n)
        rendered = []
        for s, src, gain in self.sources:
            x = src.render(n) * gain
            for i, t in pieces:
                g = constant_envelope(s.active, s.fade_s, t[0], t[-1], s.span_gains_db)
                if g is None:
                    x[i:i + len(t)] *= schedule_envelope(s.active, s.fade_s, t, s.span_gains_db)
                elif g != 1.0:
                    x[i:i + len(t)] *= g
            rendered.append((s.id, x))
        at_meters = {sid: self.fans[sid].process(x) for sid, x in rendered}  # (meters, n) per source
        out = {}
        for k, m in enumerate(self.meters):
            contributions = {sid: y[k] for sid, y in at_meters.items()}
            rows = list(contributions.values())
            p = rows[0].copy() if rows else np.zeros(n)
            for y in rows[1:]:  # the sum in source order, as np.sum(axis=0) adds (without stacking the rows)
                p += y
            out[m.id] = MeterChunk(pressure_pa=p, words=self.mics[m.id].words(p), contributions=contributions)
        self.samples_done += n
        return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 3)


def _clean(levels: dict) -> dict:
    return {k: _round(levels.get(k)) for k in LEVEL_KEYS}


class NotEnoughSpaceError(OSError):
    """The output folder's file system has less free space than the run needs (nothing was written)."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def output_bytes(scenario: Scenario, n_meters: int, duration_s: float, rate: int, contributions: bool = True) -> int:
    """Disk space a run of ``simulate`` needs: the WAVs (4 bytes per sample) and truth.json (an upper estimate)."""
    samples = int(round(duration_s * rate))
    intervals = math.ceil(samples / round(scenario.interval_s * rate))
    per_interval = TRUTH_BYTES_PER_INTERVAL + (CONTRIBUTION_BYTES_PER_INTERVAL * len(scenario.sources)
                                               if contributions else 0)
    return n_meters * (WAV_HEADER_BYTES + 4 * samples + per_interval * intervals) + 64 * 1024


def check_space(out: Path, needed: int) -> None:
    """Raise NotEnoughSpaceError if the file system of ``out`` (an existing folder) has less than ``needed`` bytes
    (plus a margin) free."""
    free = shutil.disk_usage(out).free
    if free < needed + SPACE_MARGIN_BYTES:
        raise NotEnoughSpaceError(f"{out}: the run needs {_megabytes(needed)} and only {_megabytes(free)} is free "
                                  "(shorten it with --duration or --meter, or free some space)")


def _megabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _replace_outputs(staging: Path, out: Path, wavs: list[str]) -> None:
    """Move a finished run from ``staging`` into ``out``: truth.json goes last, and until then the folder has no
    truth.json (incomplete) rather than an old one beside new WAVs; WAVs the previous truth.json listed and this run
    did not write are removed."""
    truth = out / TRUTH_FILE
    stale: set[str] = set()
    try:
        previous = json.loads(truth.read_text())
        stale = {m.get("wav") for m in previous.get("meters", {}).values() if isinstance(m, dict)}
    except (OSError, ValueError, AttributeError):
        pass
    stale = {w for w in stale if isinstance(w, str) and w.endswith(".wav") and not id_problem(w[:-4])} - set(wavs)
    truth.unlink(missing_ok=True)
    for name in wavs:
        os.replace(staging / name, out / name)
    for name in stale:
        (out / name).unlink(missing_ok=True)
    os.replace(staging / TRUTH_FILE, truth)


def simulate(scenario: Scenario, out_dir: str | Path, duration_s: float | None = None, seed: int | None = None,
             meter_ids: Iterable[str] | None = None, rate: int | None = None, contributions: bool = True,
             progress: Callable[[float, float], None] | None = None, space_check: bool = True) -> dict:
    """Write <meter>.wav for each meter and truth.json into out_dir; return the truth dict.

    The files appear together when the run succeeds; an exception (KeyboardInterrupt included) leaves out_dir as it
    was. Raises NotEnoughSpaceError before any work when the disk is too small (unless space_check is False)."""
    out = Path(out_dir)
    ids = list(meter_ids) if meter_ids else [m.id for m in scenario.meters]
    meters = [scenario.meter(i) for i in ids]
    for m in meters:
        if id_problem(m.id):
            raise ScenarioError(f"{scenario.path}: meter id {id_problem(m.id)}")
    rate = rate or scenario.sample_rate
    duration = scenario.duration_s if duration_s is None else duration_s
    out.mkdir(parents=True, exist_ok=True)
    if space_check:
        check_space(out, output_bytes(scenario, len(meters), duration, rate, contributions))
    stream = SceneStream(scenario, rate=rate, seed=seed, meter_ids=ids)
    total = int(round(duration * rate))
    truth = {m.id: TruthMeter(rate, interval_s=scenario.interval_s) for m in stream.meters}
    per_source = {(s.id, m.id): LeqMeter(rate, interval_s=scenario.interval_s)
                  for s in scenario.sources for m in stream.meters} if contributions else {}
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        writers = {m.id: WavWriter(staging / f"{m.id}.wav", rate) for m in stream.meters}
        try:
            chunk = int(CHUNK_S * rate)
            while stream.samples_done < total:
                n = min(chunk, total - stream.samples_done)
                for mid, c in stream.next_chunk(n).items():
                    writers[mid].write(c.words)
                    truth[mid].process(c.pressure_pa)
                    for sid, p in c.contributions.items():
                        if (sid, mid) in per_source:
                            per_source[(sid, mid)].process(p)
                if progress:
                    progress(stream.time_s, duration)
        except BaseException:
            for w in writers.values():
                try:
                    w.close()
                except OSError:
                    pass
            raise
        for w in writers.values():
            w.close()
        result = _truth_document(scenario, stream, total, truth, per_source)
        (staging / TRUTH_FILE).write_text(json.dumps(result, indent=1))
        _replace_outputs(staging, out, [f"{m.id}.wav" for m in stream.meters])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _truth_document(scenario: Scenario, stream: SceneStream, total: int, truth: dict, per_source: dict) -> dict:
    rate = stream.rate
    result = {"scenario": scenario.name, "description": scenario.description, "sample_rate": rate,
              "duration_s": total / rate, "seed": stream.seed, "interval_s": scenario.interval_s,
              "reference": "what an ideal class 1 meter at the microphone position reads (sound pressure before the "
                           "microphone model), dB re 20 uPa",
              "sources": {s.id: {"kind": s.kind, "position_m": list(s.position_m), "level_dba_at_1m": s.level_dba_at_1m,
                                 "active": [list(a) for a in s.active], "params": s.params}
                          for s in scenario.sources},
              "meters": {}}
    for m in stream.meters:
        tm = truth[m.id]
        tm.finish()
        spec = MIC_MODELS[m.microphone]
        entry = {"wav": f"{m.id}.wav", "position_m": list(m.position_m), "microphone": m.microphone,
                 "sensitivity_dbfs": spec.sensitivity_dbfs, "sensitivity_error_db": m.sensitivity_error_db,
                 "ideal": m.ideal, "self_noise_dba": None if m.ideal else spec.self_noise_dba, "note": m.note,
                 "distances_m": {s.id: round(math.dist(s.position_m, m.position_m), 3) for s in scenario.sources},
                 "overall": _clean(tm.overall()),
                 "intervals": [{"start_s": i["start_s"], "end_s": i["end_s"], **_clean(i)} for i in tm.intervals()]}
        if per_source:
            entry["contributions_LAeq"] = {}
            for s in scenario.sources:
                ps = per_source[(s.id, m.id)]
                ps.finish()
                entry["contributions_LAeq"][s.id] = {"overall": _round(ps.overall()),
                                                     "intervals": [_round(v) for v in ps.intervals()]}
        result["meters"][m.id] = entry
    return result
