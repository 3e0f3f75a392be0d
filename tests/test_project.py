"""Project files: `edgekit compile` builds every model x target listed in edgekit.toml (or [tool.edgekit])."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error

from edgekit.cli import main
from edgekit.errors import UsageError
from edgekit.project import ModelEntry, Project, find_project, load_project, plan_jobs, project_to_build

MATRIX = """\
[defaults]
targets = ["cpu", "intel-cpu"]
profile = "quick.toml"
output = "build/edgekit"

[[models]]
name = "bert"
source = "models/bert"

[[models]]
name = "cnn"
source = "models/cnn.onnx"
shape = {{ input = [1, 3, 32, 32] }}
{extra}"""


def run(*args: str):
    return CliRunner().invoke(main, ["compile", *args], catch_exceptions=False)


@pytest.fixture
def project(tmp_path, bert_dir, cnn_onnx, quick_profile) -> Path:
    """A project folder: models/bert, models/cnn.onnx, quick.toml and an edgekit.toml of both for cpu and intel-cpu."""
    root = tmp_path / "proj"
    (root / "models").mkdir(parents=True)
    shutil.copytree(bert_dir, root / "models" / "bert")
    shutil.copy2(cnn_onnx, root / "models" / "cnn.onnx")
    shutil.copy2(quick_profile, root / "quick.toml")
    (root / "edgekit.toml").write_text(MATRIX.format(extra=""))
    return root


def table_rows(output: str) -> list[list[str]]:
    rows = [line for line in output.splitlines() if line.startswith("| ") and not line.startswith("| model ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def check_matrix(result, root: Path) -> None:
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert [(r[0], r[1], r[2]) for r in rows] == [("bert", "cpu", "pass"), ("bert", "intel-cpu", "pass"),
                                                 ("cnn", "cpu", "pass"), ("cnn", "intel-cpu", "pass")]
    assert all(r[4] == "not measured" for r in rows)
    for name in ("bert", "cnn"):
        bundle = root / "build" / "edgekit" / name
        report = json.loads((bundle / "report.json").read_text())
        assert [t["target"] for t in report["targets"]] == ["cpu", "intel-cpu"]
        assert report["profile"] == "quick"
        assert all(r[6] == str(bundle) for r in rows if r[0] == name)


def test_project_builds_the_matrix_from_another_folder(project, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # every relative path is the project file's, not the working directory's
    result = run("--project", str(project / "edgekit.toml"), "--no-bench", "--no-cache", "-q")
    check_matrix(result, project)
    assert not (elsewhere / "build").exists()


@pytest.mark.slow
def test_jobs_builds_the_same_matrix_in_processes(project, monkeypatch):
    monkeypatch.chdir(project)
    result = run("--jobs", "2", "--no-bench", "--no-cache")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert len(rows) == 4 and all(r[2] == "pass" for r in rows)
    assert {r[6] for r in rows} == {"build/edgekit/bert", "build/edgekit/cnn"}  # shown relative to the working folder
    finished = [line for line in result.stderr.splitlines() if " -> build/edgekit/" in line]
    assert len(finished) == 2  # one line per model as it finishes, and no stage lines from the workers
    assert "export" not in result.stderr


def test_one_failing_model_does_not_stop_the_others(project, monkeypatch):
    (project / "models" / "broken.onnx").write_bytes(b"\x08\x07not a protobuf at all")
    (project / "edgekit.toml").write_text(
        '[defaults]\nprofile = "quick.toml"\noutput = "out"\n'
        '[[models]]\nname = "broken"\nsource = "models/broken.onnx"\n'
        '[[models]]\nname = "cnn"\nsource = "models/cnn.onnx"\nshape = { input = [1, 3, 32, 32] }\n')
    monkeypatch.chdir(project)  # no MODEL, no --project: the folder's edgekit.toml
    result = run("--no-bench", "--no-cache", "-q")
    assert result.exit_code == 2, result.output
    rows = table_rows(result.stdout)
    assert rows[0][:3] == ["broken", "cpu", "**error**"] and "broken.onnx" in rows[0][6]
    assert rows[1][:3] == ["cnn", "cpu", "pass"]
    assert (project / "out" / "cnn" / "report.json").is_file()
    assert not (project / "out" / "broken").exists()
    assert [line for line in result.stderr.splitlines() if line.startswith("error: broken: ")]
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ validation: exit 2 before anything is built


def write(root: Path, text: str, name: str = "edgekit.toml") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "cnn.onnx").write_bytes(b"")  # validation checks existence only
    (root / name).write_text(text)
    return root / name


@pytest.mark.parametrize(("text", "fragments"), [
    ('[defaults]\nprofle = "fast"\n[[models]]\nname = "a"\nsource = "models/cnn.onnx"\n',
     ("unknown key 'defaults.profle'", "did you mean 'profile'")),
    ('[[models]]\nname = "a"\nsource = "models/cnn.onnx"\nshap = { input = [1, 3] }\n',
     ("model 'a'", "unknown key 'shap'", "did you mean 'shape'")),
    ('[[models]]\nname = "a"\nsource = "models/cnn.onnx"\n[[models]]\nname = "A"\nsource = "models/cnn.onnx"\n',
     ("model 'A'", "duplicate name", "model 'a'")),
    ('[[models]]\nname = "a"\nsource = "models/missing.onnx"\n', ("model 'a'", "source 'models/missing.onnx'", "no such file")),
    ('[[models]]\nname = "a"\nsource = "models/missing"\n', ("model 'a'", "source 'models/missing'", "no such file")),
    ('[[models]]\nname = "../a"\nsource = "models/cnn.onnx"\n', ("'name' must be usable as a folder name",)),
    ('[[models]]\nname = "a"\n', ("model 'a'", "missing required key 'source'")),
    ('[[models]]\nname = "a"\nsource = "models/cnn.onnx"\ntargets = "cpu"\n', ("model 'a'", "'targets' must be list")),
    ('[[models]]\nname = "a"\nsource = "models/cnn.onnx"\nmin_cosine = "high"\n', ("'min_cosine' must be float or int",)),
    ('[[models]]\nname = "a"\nsource = "models/cnn.onnx"\nshape = { input = [1, 0] }\n', ("'shape.input' must be a list of positive",)),
    ('[[models]]\nname = "a"\nsource = "models/cnn.onnx"\ntargets = ["cpu", "intel-cpx"]\n', ("model 'a'", "unknown target 'intel-cpx'")),
    ('[[models]]\nname = "a"\nsource = "models/cnn.onnx"\nmax_drop = { acuracy = 0.01 }\n', ("model 'a'", "did you mean 'accuracy'")),
    ('[[models]]\nname = "a"\nsource = "models/cnn.onnx"\noutput = "x"\n', ("'output' is set in [defaults] only",)),
    ('[default]\n[[models]]\nname = "a"\nsource = "models/cnn.onnx"\n', ("unknown key 'default'", "did you mean 'defaults'")),
    ('[defaults]\ntargets = ["cpu"]\n', ("no models",)),
])
def test_a_bad_project_file_is_one_usage_error(tmp_path, monkeypatch, text, fragments):
    path = write(tmp_path / "proj", text)
    monkeypatch.chdir(tmp_path)
    assert_usage_error(run("--project", str(path)), str(path), *fragments)


def test_pyproject_tool_edgekit_is_found(tmp_path):
    root = tmp_path / "proj"
    path = write(root, '[project]\nname = "app"\n[tool.edgekit.defaults]\ntargets = ["intel-cpu"]\nmin_cosine = 0.98\n'
                       '[[tool.edgekit.models]]\nname = "cnn"\nsource = "models/cnn.onnx"\nseed = 3\n', "pyproject.toml")
    assert find_project(root) == path
    project = load_project(path)
    assert [(m.name, m.targets, m.overrides) for m in project.models] == [
        ("cnn", ("intel-cpu",), {"min_cosine": 0.98, "seed": 3})]
    (root / "edgekit.toml").write_text('[[models]]\nname = "x"\nsource = "default"\n')
    assert find_project(root) == root / "edgekit.toml"  # edgekit.toml comes first
    with pytest.raises(UsageError, match="unknown key 'tool.edgekit.model'.*did you mean 'models'"):
        load_project(write(tmp_path / "other", '[[tool.edgekit.model]]\nname = "a"\n', "pyproject.toml"))
    write(tmp_path / "plain", '[project]\nname = "app"\n', "pyproject.toml")
    assert find_project(tmp_path / "plain") is None


def test_paths_are_relative_to_the_project_file(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "data" / "crops.txt").write_text("a\nb\n")
    path = write(root, '[defaults]\noutput = "build"\ndata = "data/crops.txt"\n'
                       '[[models]]\nname = "cnn"\nsource = "models/cnn.onnx"\ntargets = ["cpu"]\n'
                       '[[models]]\nname = "hub"\nsource = "someone/some-model"\nprofile = "fast"\n'
                       '[[models]]\nname = "embedded"\nsource = "default"\n')
    monkeypatch.chdir(tmp_path)
    cnn, hub, embedded = load_project(Path("proj/edgekit.toml")).models
    assert cnn.source == root / "models" / "cnn.onnx"
    assert cnn.data == hub.data == root / "data" / "crops.txt"
    assert cnn.output == root / "build" / "cnn"
    assert (hub.source, hub.profile, hub.targets) == ("someone/some-model", "fast", ("cpu",))  # a hub id stays one
    assert embedded.source is None  # the embedded default model


def test_what_compile_builds(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert project_to_build(None, None, empty) is None  # no MODEL, no project file: the embedded default
    path = write(tmp_path / "proj", '[[models]]\nname = "a"\nsource = "models/cnn.onnx"\n')
    assert project_to_build(None, None, path.parent) == path
    assert project_to_build("model.onnx", None, path.parent) is None  # MODEL wins over the folder's project
    assert project_to_build(None, str(path.parent), empty) == path
    with pytest.raises(UsageError, match="not both"):
        project_to_build("model.onnx", str(path), empty)


def test_command_line_and_project(tmp_path, monkeypatch):
    path = write(tmp_path / "proj", '[[models]]\nname = "a"\nsource = "models/cnn.onnx"\n')
    monkeypatch.chdir(path.parent)
    assert_usage_error(run("models/cnn.onnx", "--project", str(path)), "MODEL or --project, not both")
    assert_usage_error(run("--shape", "input=1,3,8,8"), "--shape describes one model", "set 'shape' in edgekit.toml")
    assert_usage_error(run("--target", "cpu", "--no-bench"), "--target describes one model", "set 'targets'")
    assert_usage_error(run("--junit", "x.xml"), "--junit is not available with a project file")
    assert_usage_error(run("--project", str(tmp_path / "nope.toml")), "no such file")
    assert_usage_error(CliRunner().invoke(main, ["compile", "model.onnx", "--jobs", "2"]), "--jobs works on the models of a project file")


def test_jobs_are_capped_by_memory(tmp_path):
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * 1_000_000)
    models = tuple(ModelEntry(name=f"m{i}", source=big, output=tmp_path / f"m{i}") for i in range(4))
    project = Project(tmp_path / "edgekit.toml", models)
    per_model = 4 * 1_000_000 + 1.5e9
    plan = plan_jobs(project, 4, None, available=int(2.5 * per_model), cores=8)
    assert (plan.jobs, plan.threads) == (2, 4)
    assert "--jobs 4 reduced to 2" in plan.reduced and "m0" in plan.reduced
    assert plan_jobs(project, 3, 2, available=int(10 * per_model), cores=8) == plan_jobs(project, 3, 2, 10**12, 8)
    assert plan_jobs(project, 3, None, available=int(10 * per_model), cores=8).threads == 2
    assert plan_jobs(project, 9, None, available=10**12, cores=2).jobs == 4  # no more jobs than models
    assert plan_jobs(project, 4, None, available=0, cores=8).jobs == 1


def test_compile_project_from_python(project, tmp_path, monkeypatch):
    import edgekit

    outcomes = edgekit.compile_project(project / "edgekit.toml", no_bench=True, cache=False)
    assert [(o.name, [t.verdict for t in o.results]) for o in outcomes] == [("bert", ["pass", "pass"]), ("cnn", ["pass", "pass"])]
    assert all(o.exit_code == 0 for o in outcomes)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(edgekit.errors.UsageError, match="no project file here"):
        edgekit.compile_project()
