"""Issue 18, a CI matrix: a project's models split into N deterministic shards of whole models; `--list-shards N
--json` is the plan a CI file builds its matrix from; `--shard I/N` builds one; `edgekit report --junit` merges."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error

from edgekit.cli import main
from edgekit.errors import UsageError
from edgekit.project import ModelEntry, Project
from edgekit.shards import LOAD_SLACK, model_cost, parse_shard, plan, select

from test_project import project  # noqa: F401  (the fixture: bert and cnn for cpu and intel-cpu)


def fake(names, tmp_path: Path, sizes=None) -> Project:  # noqa: D103
    """Models whose sources are files of the given sizes (their cost estimates)."""
    models = []
    for i, name in enumerate(names):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(b"\0" * ((sizes or {}).get(name, 1000 * (i + 1))))
        models.append(ModelEntry(name, path, tmp_path / "out" / name, ("cpu", "intel-cpu")))
    return Project(tmp_path / "edgekit.toml", tuple(models))


def test_every_model_is_in_exactly_one_shard_and_the_plan_repeats(tmp_path):
    proj = fake([f"m{i}" for i in range(11)], tmp_path)
    for count in (1, 2, 3, 5, 11, 14):
        shards = plan(proj, count)
        placed = [m for s in shards for m in s.models]
        assert sorted(placed) == sorted(m.name for m in proj.models) and len(placed) == len(set(placed))
        assert [s.models for s in plan(proj, count)] == [s.models for s in shards]  # deterministic
        assert [s.index for s in shards] == list(range(1, count + 1))


def test_the_plan_does_not_depend_on_the_order_models_are_listed(tmp_path):
    names = [f"m{i}" for i in range(8)]
    a = plan(fake(names, tmp_path), 3)
    b = plan(Project(tmp_path / "edgekit.toml", tuple(reversed(fake(names, tmp_path).models))), 3)
    assert [sorted(s.models) for s in a] == [sorted(s.models) for s in b]


def test_adding_a_model_moves_few_others(tmp_path):
    names = [f"model-{i}" for i in range(12)]
    sizes = {n: 10_000 for n in names + ["new"]}  # equal costs: only the hash decides, loads permitting
    before = {m: s.index for s in plan(fake(names, tmp_path, sizes), 4) for m in s.models}
    after = {m: s.index for s in plan(fake(names + ["new"], tmp_path, sizes), 4) for m in s.models}
    moved = [n for n in names if before[n] != after[n]]
    assert len(moved) <= 3, moved  # a round-robin would move most of them


def test_shards_are_balanced_by_cost(tmp_path):
    sizes = {"huge": 900_000_000, **{f"s{i}": 20_000_000 for i in range(9)}}
    proj = fake(list(sizes), tmp_path, sizes)
    shards = plan(proj, 3)
    total = sum(model_cost(m) for m in proj.models)
    huge = next(s for s in shards if "huge" in s.models)
    assert huge.models == ["huge"]  # the expensive model gets a shard of its own; the small ones share the others
    for s in shards:
        assert s.cost <= max(LOAD_SLACK * total / 3, model_cost(proj.models[0]))


def test_shard_arguments_are_checked():
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", "-1/2"):
        with pytest.raises(UsageError, match="expected I/N"):
            parse_shard(bad)


def run(*args: str):
    return CliRunner().invoke(main, [*args], catch_exceptions=False)


def test_list_shards_prints_the_plan_a_ci_matrix_uses(project):  # noqa: F811
    result = run("compile", "--project", str(project / "edgekit.toml"), "--list-shards", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["matrix"] == [1, 2] and sorted(data["models"]) == ["bert", "cnn"]
    assert sorted(m for s in data["shards"] for m in s["models"]) == ["bert", "cnn"]
    table = run("compile", "--project", str(project / "edgekit.toml"), "--list-shards", "2")
    assert table.exit_code == 0 and "| 1/2 |" in table.stdout
    assert_usage_error(run("compile", "--list-shards", "2"), "project file")
    assert_usage_error(run("compile", "--project", str(project / "edgekit.toml"), "--json"), "--list-shards")
    assert_usage_error(run("compile", "--project", str(project / "edgekit.toml"), "--shard", "3/2"), "expected I/N")


@pytest.mark.slow
def test_shards_build_each_model_once_and_report_merges_them(project, tmp_path):  # noqa: F811
    plan_data = json.loads(run("compile", "--project", str(project / "edgekit.toml"), "--list-shards", "2", "--json").stdout)
    built = {}
    for shard in plan_data["matrix"]:
        result = run("compile", "--project", str(project / "edgekit.toml"), "--shard", f"{shard}/2", "--no-bench",
                     "--no-cache", "-q")
        assert result.exit_code == 0, result.output
        for name in plan_data["shards"][shard - 1]["models"]:
            built[name] = shard
    assert built == plan_data["models"]
    bundles = sorted((project / "build" / "edgekit").iterdir())
    assert [b.name for b in bundles] == ["bert", "cnn"]
    machine = json.loads((bundles[0] / "report.json").read_text())["benchmark"]["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and "onnxruntime" in machine["runtimes"]
    junit = tmp_path / "junit.xml"
    result = run("report", *map(str, bundles), "--junit", str(junit))
    assert result.exit_code == 0, result.output
    assert "timed on" in result.stdout
    suites = [s.get("name") for s in ET.parse(junit).getroot()]
    assert suites == ["edgekit.bert.cpu", "edgekit.bert.intel-cpu", "edgekit.cnn.cpu", "edgekit.cnn.intel-cpu"]


def test_select_keeps_the_project_order(tmp_path):
    proj = fake([f"m{i}" for i in range(6)], tmp_path)
    for i in (1, 2):
        kept = [m.name for m in select(proj, (i, 2)).models]
        assert kept == [m.name for m in proj.models if m.name in kept]
