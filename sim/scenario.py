"""Scenario files (TOML) for the simulator: load, validate with errors that name the file and the key.

A scenario is a square (its size, the weather, the ground), sound sources with a position, an A-weighted level at
1 m, a kind (music, voice, drums, babble, traffic, tone, pink) with its parameters and a schedule, and meters with a
position and a microphone. See docs/simulator.md for the format and sim/scenarios/*.toml for examples.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
SAMPLE_RATES = (48000, 44100, 32000, 16000)
GROUNDS = ("hard", "soft", "none")
OUTSIDE_MARGIN_M = 300.0  # sources and meters may stand this far outside the square (roads, façades)
DEFAULT_START = dt.datetime(2026, 7, 15, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))  # a summer evening, Beijing time
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a name (a meter's is its WAV's name), never a path


class ScenarioError(ValueError):
    """A scenario file is missing, malformed or inconsistent; the message is one line naming file and key.

    A ValueError (exit 2 in the CLI): sim/ depends on nothing else in the repository, so it cannot derive from
    slm.errors.InputError."""


@dataclass(frozen=True)
class Source:
    id: str
    kind: str
    position_m: tuple[float, float, float]
    level_dba_at_1m: float
    active: tuple[tuple[float, float], ...]
    params: dict = field(default_factory=dict)
    fade_s: float = 0.5
    span_gains_db: tuple[float, ...] = ()  # one per active span (level steps); empty = 0 dB for all


@dataclass(frozen=True)
class Meter:
    id: str
    position_m: tuple[float, float, float]
    microphone: str = "INMP441"
    sensitivity_error_db: float = 0.0
    ideal: bool = False
    note: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    description: str
    duration_s: float
    sample_rate: int
    interval_s: float
    temperature_c: float
    humidity_pct: float
    ground: str
    seed: int
    size_m: tuple[float, float]
    sources: tuple[Source, ...]
    meters: tuple[Meter, ...]
    start: dt.datetime = DEFAULT_START  # local clock time (with its UTC offset) at scene time 0; a virtual board's clock starts here

    def meter(self, meter_id: str) -> Meter:
        for m in self.meters:
            if m.id == meter_id:
                return m
        raise ScenarioError(f"{self.path}: no meter {meter_id!r}; meters: {', '.join(m.id for m in self.meters)}")


def id_problem(name: str) -> str | None:
    """Why ``name`` cannot be a source or meter id (None if it can): ids are names of 1-64 letters, digits, '_',
    '.' and '-' starting with a letter or digit, so ``<id>.wav`` is a file in the output folder, never a path."""
    if ID_PATTERN.fullmatch(name):
        return None
    return (f"{name!r} is not a name: use 1-64 letters, digits, '_', '.' and '-', starting with a letter or digit "
            "(ids name files, they are not paths)")


def list_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def scenario_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    candidate = SCENARIO_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    raise ScenarioError(f"unknown scenario {str(name_or_path)!r}; built in: {', '.join(list_scenarios())}")


class _Table:
    """Typed access to one TOML table that remembers where it is, for error messages, and its unread keys."""

    def __init__(self, data: dict, where: str, file: Path):
        if not isinstance(data, dict):
            raise ScenarioError(f"{file}: {where}: must be a table")
        self.data, self.where, self.file, self.used = data, where, file, set()

    def fail(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.file}: {self.where}.{key}: {message}")

    def get(self, key: str, kind, default=..., lo=None, hi=None):
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise self.fail(key, "missing")
            return default
        v = self.data[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if kind is not None and (not isinstance(v, kind) or (kind is int and isinstance(v, bool))):
            raise self.fail(key, f"must be {kind.__name__}, got {type(v).__name__} {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise self.fail(key, f"must be finite, got {v!r}")
        if lo is not None and v < lo or hi is not None and v > hi:
            raise self.fail(key, f"must be between {lo:g} and {hi:g}, got {v!r}")
        return v

    def position(self, key: str, size: tuple[float, float]) -> tuple[float, float, float]:
        v = self.get(key, list)
        if len(v) != 3 or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v):
            raise self.fail(key, f"must be [x, y, z] in metres, got {v!r}")
        x, y, z = (float(c) for c in v)
        if not (-OUTSIDE_MARGIN_M <= x <= size[0] + OUTSIDE_MARGIN_M and -OUTSIDE_MARGIN_M <= y <= size[1]
                + OUTSIDE_MARGIN_M):
            raise self.fail(key, f"({x:g}, {y:g}) is more than {OUTSIDE_MARGIN_M:g} m outside the "
                                 f"{size[0]:g} m x {size[1]:g} m square")
        if not 0.0 < z <= 100.0:
            raise self.fail(key, f"height z must be above the ground and at most 100 m, got {z:g}")
        return (x, y, z)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ScenarioError(f"{self.file}: {self.where}: unknown key {unknown[0]!r}")


def _schedule(t: _Table, duration: float) -> tuple[tuple[float, float], ...]:
    v = t.get("active", list, default=[[0.0, duration]])
    spans = []
    last_end = -1.0
    for i, span in enumerate(v):
        if (not isinstance(span, list) or len(span) != 2
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in span)):
            raise t.fail("active", f"entry {i} must be [start_s, stop_s], got {span!r}")
        a, b = float(span[0]), float(span[1])
        if not 0.0 <= a < b <= duration:
            raise t.fail("active", f"entry {i} [{a:g}, {b:g}] must satisfy 0 <= start < stop <= duration_s "
                                   f"({duration:g})")
        if a < last_end:
            raise t.fail("active", f"entry {i} starts before the previous one ends")
        spans.append((a, b))
        last_end = b
    return tuple(spans)


def _check_params(t: _Table, spec: dict, params: dict) -> None:
    """params of a source kind: known names, numbers within (min, max) from sources.SOURCE_KINDS."""
    for name, value in params.items():
        if name not in spec:
            raise t.fail(f"params.{name}", f"unknown parameter; known: {', '.join(sorted(spec))}")
        default, lo, hi = spec[name][:3]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise t.fail(f"params.{name}", f"must be a number, got {value!r}")
            if not lo <= value <= hi:
                raise t.fail(f"params.{name}", f"must be between {lo:g} and {hi:g}, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int):
                raise t.fail(f"params.{name}", f"must be a whole number, got {value!r}")


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Read and validate a scenario (a built-in name or a path). Raises ScenarioError with one line."""
    from slm.sim.microphone import MIC_MODELS
    from slm.sim.sources import SOURCE_KINDS

    path = scenario_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML ({e})") from None
    top = _Table(data, "scenario", path)
    scene = _Table(top.get("scene", dict), "scene", path)
    duration = scene.get("duration_s", float, lo=1.0, hi=7 * 24 * 3600.0)
    rate = scene.get("sample_rate", int, default=48000)
    if rate not in SAMPLE_RATES:
        raise scene.fail("sample_rate", f"must be one of {', '.join(map(str, SAMPLE_RATES))}, got {rate}")
    size = scene.get("size_m", list)
    if len(size) != 2 or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0 for c in size):
        raise scene.fail("size_m", f"must be [width, depth] in metres, got {size!r}")
    size_t = (float(size[0]), float(size[1]))
    ground = scene.get("ground", str, default="hard")
    if ground not in GROUNDS:
        raise scene.fail("ground", f"must be one of {', '.join(GROUNDS)}, got {ground!r}")
    common = dict(
        description=scene.get("description", str, default=""),
        duration_s=duration, sample_rate=rate,
        interval_s=scene.get("interval_s", float, default=1.0, lo=0.1, hi=3600.0),
        temperature_c=scene.get("temperature_c", float, default=20.0, lo=-20.0, hi=50.0),
        humidity_pct=scene.get("humidity_pct", float, default=70.0, lo=10.0, hi=100.0),
        ground=ground, seed=scene.get("seed", int, default=1, lo=0, hi=2**32 - 1), size_m=size_t,
        start=scene.get("start", dt.datetime, default=DEFAULT_START))
    if common["start"].tzinfo is None:
        raise scene.fail("start", "must carry its UTC offset, e.g. 2026-07-15T21:30:00+08:00")
    scene.done()

    sources = []
    ids = set()
    for i, raw in enumerate(top.get("source", list, default=[])):
        t = _Table(raw, f"source[{i}]", path)
        sid = t.get("id", str)
        if id_problem(sid):
            raise t.fail("id", id_problem(sid))
        t.where = f"source {sid!r}"
        if sid in ids:
            raise t.fail("id", "duplicate id")
        ids.add(sid)
        kind = t.get("kind", str)
        if kind not in SOURCE_KINDS:
            raise t.fail("kind", f"unknown kind {kind!r}; kinds: {', '.join(sorted(SOURCE_KINDS))}")
        params = t.get("params", dict, default={})
        _check_params(t, SOURCE_KINDS[kind], params)
        active = _schedule(t, duration)
        gains = t.get("span_gains_db", list, default=[])
        if gains and (len(gains) != len(active) or not all(
                isinstance(g, (int, float)) and not isinstance(g, bool) and -80.0 <= g <= 40.0 for g in gains)):
            raise t.fail("span_gains_db", f"must be {len(active)} numbers (one per active span) between -80 and 40")
        sources.append(Source(id=sid, kind=kind, position_m=t.position("position_m", size_t),
                              level_dba_at_1m=t.get("level_dba_at_1m", float, lo=0.0, hi=140.0),
                              active=active, params=dict(params),
                              fade_s=t.get("fade_s", float, default=0.5, lo=0.0, hi=60.0),
                              span_gains_db=tuple(float(g) for g in gains)))
        t.done()

    meters = []
    for i, raw in enumerate(top.get("meter", list)):
        t = _Table(raw, f"meter[{i}]", path)
        mid = t.get("id", str)
        if id_problem(mid):
            raise t.fail("id", id_problem(mid))
        t.where = f"meter {mid!r}"
        if mid in ids:
            raise t.fail("id", "duplicate id")
        ids.add(mid)
        mic = t.get("microphone", str, default="INMP441")
        if mic not in MIC_MODELS:
            raise t.fail("microphone", f"unknown microphone {mic!r}; known: {', '.join(sorted(MIC_MODELS))}")
        pos = t.position("position_m", size_t)
        for s in sources:
            if math.dist(pos, s.position_m) < 0.5:
                raise t.fail("position_m", f"within 0.5 m of source {s.id!r} (the model is a point source in the "
                                           "far field)")
        meters.append(Meter(id=mid, position_m=pos, microphone=mic,
                            sensitivity_error_db=t.get("sensitivity_error_db", float, default=0.0, lo=-10.0, hi=10.0),
                            ideal=t.get("ideal", bool, default=False), note=t.get("note", str, default="")))
        t.done()
    if not meters:
        raise top.fail("meter", "at least one [[meter]] is needed")
    top.done()
    return Scenario(name=path.stem, path=path, sources=tuple(sources), meters=tuple(meters), **common)
