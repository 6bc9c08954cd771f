"""Where the meters of each site stand, for the plan `slm serve` draws: `--positions FILE`, a TOML file.

    [sites.square]
    scenario = "square-evening"           # the plan: the scenario's square (size_m) and its sources
    [sites.square.meters]
    virtual-0a1b2c3d4e5f = "dance-edge"   # a device id -> a meter of the scenario (its position_m)
    lamp-12 = [40.0, 10.0]                # or x, y in metres

    [sites.street]
    size_m = [200.0, 30.0]                # a plan without a scenario: a rectangle of this size
    [sites.street.meters]
    pole-1 = [20.0, 5.0]

Coordinates are the scenario's: metres, x to the right, y down the page. A device that is not named is listed
under the plan ("not placed"); a site without an entry has no plan. Errors are one line (exit 2)."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from slm.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")  # as slm.fleet_records: site and device ids


class PositionsError(InputError):
    """The positions file is missing or malformed."""


@dataclass
class Plan:
    """One site's plan: the square (width, depth in metres), named points (sources) and the meters' positions."""

    size_m: tuple[float, float]
    scenario: str | None = None
    sources: list[dict] = field(default_factory=list)  # {"id", "x", "y"}
    meters: dict[str, dict] = field(default_factory=dict)  # device -> {"x", "y", "name"}

    def as_json(self) -> dict:
        xs = [0.0, self.size_m[0]] + [p["x"] for p in list(self.meters.values()) + self.sources]
        ys = [0.0, self.size_m[1]] + [p["y"] for p in list(self.meters.values()) + self.sources]
        return {"size_m": list(self.size_m), "scenario": self.scenario, "sources": self.sources,
                "meters": self.meters, "bounds": [min(xs), min(ys), max(xs), max(ys)]}


def _point(value, where: str) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) not in (2, 3)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise PositionsError(f"{where}: give a meter of the scenario or [x, y] in metres, not {value!r}")
    return float(value[0]), float(value[1])


def load_positions(path: str | None) -> dict[str, Plan]:
    """site -> Plan (empty without a file)."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise PositionsError(f"--positions {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PositionsError(f"--positions {path}: not TOML ({e})") from None
    sites = data.get("sites")
    if not isinstance(sites, dict) or set(data) - {"sites"}:
        raise PositionsError(f"--positions {path}: expected [sites.NAME] tables only")
    plans = {}
    for site, spec in sites.items():
        where = f"--positions {path}: sites.{site}"
        if not ID_RE.match(site) or not isinstance(spec, dict):
            raise PositionsError(f"{where}: a site is 1-64 characters of A-Z a-z 0-9 - _, with a table")
        unknown = set(spec) - {"scenario", "size_m", "meters"}
        if unknown:
            raise PositionsError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        plans[site] = _plan(spec, where)
    return plans


def _plan(spec: dict, where: str) -> Plan:
    scenario = None
    if "scenario" in spec:
        from slm.sim.scenario import ScenarioError, load_scenario

        try:
            scenario = load_scenario(spec["scenario"])
        except ScenarioError as e:
            raise PositionsError(f"{where}.scenario: {e}") from None
    if "size_m" in spec:
        size = _point(spec["size_m"], f"{where}.size_m")
    elif scenario is not None:
        size = (float(scenario.size_m[0]), float(scenario.size_m[1]))
    else:
        raise PositionsError(f"{where}: give a scenario or size_m")
    plan = Plan(size_m=size, scenario=scenario.name if scenario else None,
                sources=[{"id": s.id, "x": s.position_m[0], "y": s.position_m[1]} for s in scenario.sources
                         if 0 <= s.position_m[1] <= 2 * size[1]] if scenario else [])  # far sources (a road) left out
    meters = spec.get("meters", {})
    if not isinstance(meters, dict):
        raise PositionsError(f"{where}.meters: a table of device = position")
    for device, value in meters.items():
        if not ID_RE.match(device):
            raise PositionsError(f"{where}.meters: {device!r} is not a device id")
        if isinstance(value, str):
            if scenario is None:
                raise PositionsError(f"{where}.meters.{device}: a meter name needs the site's scenario")
            try:
                m = scenario.meter(value)
            except ValueError as e:
                raise PositionsError(f"{where}.meters.{device}: {e}") from None
            plan.meters[device] = {"x": m.position_m[0], "y": m.position_m[1], "name": m.id}
        else:
            x, y = _point(value, f"{where}.meters.{device}")
            plan.meters[device] = {"x": x, "y": y, "name": device}
    return plan
