"""Scenario files: the built-in ones load; every kind of mistake gives one line naming the file and the key."""

from __future__ import annotations

import pytest

from slm.sim.scenario import ScenarioError, list_scenarios, load_scenario

GOOD = """
[scene]
duration_s = 10.0
size_m = [50.0, 40.0]

[[source]]
id = "band"
kind = "music"
position_m = [10.0, 10.0, 1.5]
level_dba_at_1m = 100.0

[[meter]]
id = "m1"
position_m = [20.0, 10.0, 3.0]
"""


def write(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_builtin_scenarios_load():
    names = list_scenarios()
    assert {"square-evening", "quiet-night", "calibrator", "reference-meter"} <= set(names)
    for name in names:
        sc = load_scenario(name)
        assert sc.meters and sc.duration_s > 0


def test_square_evening_matches_the_brief():
    sc = load_scenario("square-evening")
    w, d = sc.size_m
    assert 100 <= w <= 140 and 60 <= d <= 100
    kinds = {s.kind for s in sc.sources}
    assert {"music", "voice", "drums", "babble", "traffic"} <= kinds
    starts = {s.id: s.active[0][0] for s in sc.sources if s.kind in ("music", "voice", "drums")}
    assert len(set(starts.values())) == 3  # the teams start at different times
    facade = sc.meter("facade")
    import math

    teams = [s for s in sc.sources if s.kind in ("music", "voice", "drums")]
    assert all(60 <= math.dist(facade.position_m, s.position_m) <= 150 for s in teams)
    assert facade.position_m[2] >= 1.2


def test_good_minimal_scenario(tmp_path):
    sc = load_scenario(write(tmp_path, GOOD))
    assert sc.sources[0].active == ((0.0, 10.0),) and sc.meters[0].microphone == "INMP441"
    assert sc.start.isoformat() == "2026-07-15T20:00:00+08:00"  # the default clock start


def test_start_is_a_local_time_with_its_offset(tmp_path):
    sc = load_scenario(write(tmp_path, GOOD.replace("duration_s = 10.0", "duration_s = 10.0\nstart = 2026-08-01T21:50:00+08:00")))
    assert sc.start.isoformat() == "2026-08-01T21:50:00+08:00" and sc.start.utcoffset().total_seconds() == 8 * 3600


@pytest.mark.parametrize("change,fragment", [
    (("duration_s = 10.0", "duration_s = -1.0"), "scene.duration_s: must be between"),
    (("duration_s = 10.0", "duration_s = 'long'"), "scene.duration_s: must be float"),
    (("size_m = [50.0, 40.0]", ""), "scene.size_m: missing"),
    (("kind = \"music\"", "kind = \"opera\""), "source 'band'.kind: unknown kind 'opera'"),
    (("level_dba_at_1m = 100.0", "level_dba_at_1m = 200.0"), "source 'band'.level_dba_at_1m: must be between"),
    (("position_m = [10.0, 10.0, 1.5]", "position_m = [10.0, 10.0]"), "source 'band'.position_m: must be [x, y, z]"),
    (("position_m = [10.0, 10.0, 1.5]", "position_m = [5000.0, 10.0, 1.5]"), "outside the"),
    (("position_m = [20.0, 10.0, 3.0]", "position_m = [20.0, 10.0, -3.0]"), "meter 'm1'.position_m: height"),
    (("id = \"m1\"", "id = \"band\""), "meter 'band'.id: duplicate id"),
    (("level_dba_at_1m = 100.0", "level_dba_at_1m = 100.0\nactive = [[5.0, 2.0]]"), "source 'band'.active"),
    (("level_dba_at_1m = 100.0", "level_dba_at_1m = 100.0\nloudness = 3"), "source 'band': unknown key 'loudness'"),
    (("level_dba_at_1m = 100.0", "level_dba_at_1m = 100.0\nparams = { tempo = 3 }"), "source 'band'.params.tempo"),
    (("id = \"m1\"", "id = \"m1\"\nmicrophone = \"XYZ\""), "meter 'm1'.microphone: unknown microphone"),
    (("id = \"m1\"", "id = \"../../escaped\""), "meter[0].id: '../../escaped' is not a name"),
    (("id = \"m1\"", "id = \"/tmp/x\""), "meter[0].id: '/tmp/x' is not a name"),
    (("id = \"m1\"", "id = \"..\""), "meter[0].id: '..' is not a name"),
    (("id = \"m1\"", "id = \"\""), "meter[0].id: '' is not a name"),
    (("id = \"band\"", "id = \"a/b\""), "source[0].id: 'a/b' is not a name"),
    (("duration_s = 10.0", "duration_s = 10.0\nstart = 2026-08-01T21:50:00"), "scene.start: must carry its UTC offset"),
    (("duration_s = 10.0", "duration_s = 10.0\nstart = '21:50'"), "scene.start: must be datetime"),
])
def test_mistakes_are_named(tmp_path, change, fragment):
    old, new = change
    assert old in GOOD
    with pytest.raises(ScenarioError) as e:
        load_scenario(write(tmp_path, GOOD.replace(old, new, 1)))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "s.toml") in msg and fragment in msg, msg


def test_unknown_scenario_lists_the_built_in_ones():
    with pytest.raises(ScenarioError, match="square-evening"):
        load_scenario("no-such-scene")


def test_not_toml(tmp_path):
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(write(tmp_path, "[scene\nduration_s = 1"))


def test_a_meter_id_that_is_a_path_is_refused_by_slm_sim_before_anything_is_written(tmp_path):
    """`slm sim` on a scenario whose meter id is ../../escaped: exit 2, one line, nothing written anywhere."""
    import subprocess
    import sys

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    scenario = write(tmp_path, GOOD.replace('id = "m1"', 'id = "../../escaped"'))
    r = subprocess.run([sys.executable, "-m", "slm.cli", "sim", str(scenario), "--out", "out", "--duration", "1"],
                       capture_output=True, text=True, timeout=120, cwd=work)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "is not a name" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "s.toml"]
