"""A project file: every model, target, profile, data set and budget of a repository, built with one command.

Rules:
1. The project file is `edgekit.toml` in the folder, else the `[tool.edgekit]` table of its `pyproject.toml`
   (`find_project`). It holds an optional `[defaults]` table and one `[[models]]` table per model.
2. Every key is known and every value has its type checked (as for targets and profiles): an unknown key
   is a usage error naming the nearest valid one. A model's key replaces the default's, tables whole.
3. A model needs a `name` (unique, ignoring case, and usable as a folder name: letters, digits, `.`, `_`
   and `-`, not starting with `.`) and a `source`: a model folder, an `.onnx` file, a hub id, or `default`
   (the embedded all-MiniLM-L6-v2).
4. Paths (`source` when it names a path, `data`, `output`, a target or profile given as a `.toml` file)
   are relative to the project file's folder, not to the working directory. A `source` that looks like a
   path (it ends in `.onnx`, starts with `.`, `/` or `~`, is not shaped like a hub id, or its first
   folder exists) and does not exist is a usage error naming the model.
5. `load_project` validates the whole file, loading every target and profile and applying every budget,
   before `build_project` builds anything: a typo stops the run at once with exit 2.
6. `build_project` compiles each model into `<output>/<name>`; a model that fails does not stop the
   others. Its exit code is the worst of the models': 3 internal error, 2 usage error, 1 budget missed.
7. With `jobs` > 1 the models are built in separate processes (spawned, never forked: ONNX Runtime,
   OpenVINO and PyTorch do not survive a fork), as many at once as memory allows (`plan_jobs`), each with
   its share of the cores.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import multiprocessing
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .config import (OVERRIDE_DATA, BudgetKeys, DataKeys, apply_overrides, load_profile, load_target, read_toml,
                     resolve_precision)
from .errors import EXIT_INTERNAL, EXIT_OK, EdgekitError, UsageError
from .progress import NullProgress
from .schema import KEY, OneOf, Rule, Schema, Text, extend, fields_of, invalid, nearest, validate
from .report import _mb
from .request import DEFAULT_PROFILE, DEFAULT_TARGETS, CompileRequest
from .source import _HUB_ID, SUPPORTED_TASKS, default_model_path

log = logging.getLogger(__name__)

PROJECT_FILE = "edgekit.toml"
PYPROJECT_FILE = "pyproject.toml"
DEFAULT_SOURCE = "default"  # `source = "default"`: the embedded all-MiniLM-L6-v2
DEFAULT_OUTPUT = "edgekit-out"  # as `edgekit compile`: one bundle per model, <output>/<name>

# Memory a build takes, estimated: MEMORY_FACTOR x the source's size on disk (the original, its export,
# the artifacts and their sessions) plus MEMORY_BASE (the runtimes themselves).
MEMORY_FACTOR = 4
MEMORY_BASE = 1.5e9

_NAME = re.compile(r"^\w[\w.-]*$")


def _string_list(value: list) -> tuple[str, ...]:
    if not value or not all(isinstance(v, str) and v for v in value):
        raise invalid(f"'{KEY}' must be a non-empty list of names, not {value!r}")
    return tuple(dict.fromkeys(value))


def _shape_table(value: dict) -> dict[str, tuple[int, ...]]:
    for name, dims in value.items():
        if not isinstance(dims, list) or not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise invalid(f"'{KEY}.{name}' must be a list of positive integers, e.g. [1, 3, 224, 224], not {dims!r}")
    return {name: tuple(dims) for name, dims in value.items()}


class _ModelOwnKeys(Schema):
    targets: Rule(tuple[str, ...], (list,), _string_list) = None
    profile: Text = None
    data: Text = None
    task: OneOf(*SUPPORTED_TASKS) = None
    shape: Rule(dict[str, tuple[int, ...]], (dict,), _shape_table) = None
    text_column: Text = None
    label_column: Text = None


# A model's keys: its own, and the budgets and data sizes it may override, as a profile's (config.BudgetKeys, DataKeys).
OVERRIDE_BUDGET_KEYS = ("min_cosine", "max_latency_ms", "max_size_mb", "min_speedup", "max_drop")
OVERRIDE_KEYS = OVERRIDE_BUDGET_KEYS + OVERRIDE_DATA
ModelKeys = extend(_ModelOwnKeys, {**fields_of(BudgetKeys, *OVERRIDE_BUDGET_KEYS), **fields_of(DataKeys, *OVERRIDE_DATA)},
                   "ModelKeys")


class DefaultsKeys(ModelKeys):
    """`[defaults]`: every model's keys, and where the bundles go."""

    output: Text = None


class EntryKeys(ModelKeys):
    """One `[[models]]` entry."""

    name: Text
    source: Text


_TOP_KEYS = ("defaults", "models")


@dataclass(frozen=True)
class ModelEntry:
    """One `[[models]]` entry with the defaults applied and every path resolved (absolute)."""

    name: str
    source: Path | str | None  # a path, a hub id, or None for the embedded default
    output: Path  # the bundle folder: <output>/<name>
    targets: tuple[str, ...] = DEFAULT_TARGETS
    profile: str = DEFAULT_PROFILE
    task: str | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    data: Path | None = None
    text_column: str = "text"
    label_column: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # budgets and data sizes, as compile's `overrides`

    def source_bytes(self) -> int:
        """The source's size on disk (a hub id not yet downloaded: 0)."""
        path = default_model_path() if self.source is None else self.source
        if not isinstance(path, Path) or not path.exists():
            return 0
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass(frozen=True)
class Project:
    path: Path  # the project file
    models: tuple[ModelEntry, ...]

    @property
    def root(self) -> Path:
        return self.path.parent


@dataclass(frozen=True)
class TargetOutcome:
    target: str
    verdict: str
    cosine_min: float
    speedup_p50: float | None
    not_measured: str  # why there is no speedup ("" when there is one)
    size_bytes: int
    missed: tuple[str, ...]  # the budgets it missed


@dataclass(frozen=True)
class ModelOutcome:
    """What became of one model: its bundle and per-target figures, or the error that stopped it."""

    name: str
    targets: tuple[str, ...]
    bundle: Path | None = None
    results: tuple[TargetOutcome, ...] = ()
    error: str = ""  # one line; "" when the bundle was written
    exit_code: int = EXIT_OK
    detail: str = ""  # the traceback of the error
    seconds: float = 0.0

    def line(self) -> str:
        """One line for the log as the model finishes."""
        if self.error:
            return f"{_error_prefix(self.exit_code)}: {self.name}: {self.error}"
        verdicts = ", ".join(f"{t.target} {t.verdict}" for t in self.results)
        return f"{self.name}: {'pass' if self.exit_code == EXIT_OK else 'fail'} ({verdicts}) in {self.seconds:.1f}s -> {_shown(self.bundle)}"


@dataclass(frozen=True)
class JobPlan:
    jobs: int
    threads: int | None  # per job; None: the runtimes' default (all cores)
    reduced: str = ""  # why fewer jobs than asked run at once ("" when not)


# ------------------------------------------------------------------ finding and loading


def find_project(folder: str | os.PathLike) -> Path | None:
    """`edgekit.toml` in `folder`, else its `pyproject.toml` when that has a `[tool.edgekit]` table, else None."""
    folder = Path(folder)
    if (folder / PROJECT_FILE).is_file():
        return folder / PROJECT_FILE
    pyproject = folder / PYPROJECT_FILE
    if pyproject.is_file():
        try:
            has_table = "edgekit" in read_toml(pyproject).get("tool", {})
        except UsageError:
            # someone else's broken pyproject.toml is not ours to judge, unless it meant to hold a project
            if "tool.edgekit" in pyproject.read_text(errors="replace"):
                raise
            return None
        if has_table:
            return pyproject
    return None


def project_to_build(model: str | None, project: str | os.PathLike | None, folder: str | os.PathLike = ".") -> Path | None:
    """What `edgekit compile` builds: a project file's path, or None for one model (MODEL, or the embedded default).

    `project` (--project) names the file; without it and without MODEL, `folder`'s project file if it has one.
    """
    if project is not None:
        if model is not None:
            raise UsageError(f"give MODEL or --project, not both: the models of {project} are listed in it")
        path = Path(project)
        if path.is_dir():
            found = find_project(path)
            if found is None:
                raise UsageError(f"--project {project}: no {PROJECT_FILE}, nor a {PYPROJECT_FILE} with [tool.edgekit], in that folder")
            return found
        if not path.is_file():
            raise UsageError(f"--project {project}: no such file")
        return path
    if model is not None:
        return None
    return find_project(folder)


def load_project(path: str | os.PathLike) -> Project:
    """Read and validate a project file (rules 1-5); raises UsageError naming the file, the model and the key."""
    path = Path(path)
    raw = read_toml(path)
    prefix = ""
    if path.name == PYPROJECT_FILE:
        raw, prefix = raw.get("tool", {}).get("edgekit"), "tool.edgekit."
        if not isinstance(raw, dict):
            raise UsageError(f"{path}: no [tool.edgekit] table")
    for key in raw:
        if key not in _TOP_KEYS:
            raise UsageError(f"{path}: unknown key '{prefix}{key}'{nearest(key, list(_TOP_KEYS))}")
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"{path}: '{prefix}defaults' must be a table ([{prefix}defaults]), not {defaults!r}")
    defaults = validate(DefaultsKeys, defaults, path, f"{prefix}defaults.").given()
    entries = raw.get("models")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise UsageError(f"{path}: no models: add one [[{prefix}models]] table per model, with a name and a source")
    root = path.resolve().parent
    output = _resolve(root, defaults.pop("output", DEFAULT_OUTPUT))
    if output.resolve() in (Path(output.resolve().anchor), Path.home().resolve()):  # as -o is (bundle rule 3)
        raise UsageError(f"{path}: output = {str(output)!r} is the file system root or your home folder; give a "
                         "folder of its own, e.g. output = \"edgekit-out\"")
    models: list[ModelEntry] = []
    seen: dict[str, str] = {}
    for number, entry in enumerate(entries, 1):
        label = f"model '{entry['name']}'" if isinstance(entry.get("name"), str) else f"[[{prefix}models]] entry {number}"
        where = f"{path}: {label}"
        if "output" in entry:
            raise UsageError(f"{where}: 'output' is set in [{prefix}defaults] only: each bundle goes to <output>/<name>")
        values = {**defaults, **validate(EntryKeys, entry, where).given()}
        name = values["name"]
        if not _NAME.fullmatch(name) or name in (".", ".."):
            raise UsageError(f"{where}: 'name' must be usable as a folder name (letters, digits, '.', '_', '-'; "
                             f"not starting with '.'), not {name!r}")
        if name.casefold() in seen:
            raise UsageError(f"{where}: duplicate name (also used by model '{seen[name.casefold()]}'); each model needs its own")
        seen[name.casefold()] = name
        models.append(_entry(where, root, output, values))
    return Project(path=path, models=tuple(models))


def _resolve(root: Path, text: str) -> Path:
    return (root / Path(text).expanduser()).resolve()


def _config_ref(root: Path, name: str) -> str:
    """A target or profile: a name stays a name; a .toml file is relative to the project file."""
    return str(_resolve(root, name)) if name.endswith(".toml") or "/" in name else name


def _source(where: str, root: Path, text: str) -> Path | str | None:
    if text == DEFAULT_SOURCE:
        return None
    path = _resolve(root, text)
    first = Path(text).parts[0] if Path(text).parts else ""
    looks_like_path = (text.lower().endswith(".onnx") or text.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(text)
                       or (root / first).is_dir())
    if path.exists():
        return path
    if looks_like_path:
        raise UsageError(f"{where}: source {text!r}: no such file or folder ({path})")
    return text  # a hub id


def _entry(where: str, root: Path, output: Path, values: dict) -> ModelEntry:
    entry = ModelEntry(
        name=values["name"],
        source=_source(where, root, values["source"]),
        output=output / values["name"],
        targets=tuple(_config_ref(root, t) for t in values.get("targets", DEFAULT_TARGETS)),
        profile=_config_ref(root, values.get("profile", DEFAULT_PROFILE)),
        task=values.get("task"),
        shapes=values.get("shape", {}),
        data=_resolve(root, values["data"]) if "data" in values else None,
        text_column=values.get("text_column", "text"),
        label_column=values.get("label_column"),
        overrides={k: values[k] for k in OVERRIDE_KEYS if k in values},
    )
    if entry.data is not None and not entry.data.exists():
        raise UsageError(f"{where}: data {values['data']!r}: no such file or folder ({entry.data})")
    try:  # everything compile checks before it builds: targets, profile, budgets, precisions
        profile = apply_overrides(load_profile(entry.profile), entry.overrides)
        for target in entry.targets:
            resolve_precision(load_target(target), profile)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from exc
    return entry


# ------------------------------------------------------------------ the command line with a project


# compile's options that describe one model -> the project key that holds them (None: no project equivalent)
COMMAND_LINE_KEYS = {"targets": "targets", "profile": "profile", "output": "output", "task": "task", "shapes": "shape",
                     "data": "data", "text_column": "text_column", "label_column": "label_column", "junit": None,
                     **{k: k for k in OVERRIDE_KEYS}}


def reject_model_options(given: Mapping[str, str], path: Path) -> None:
    """`given`: the per-model options on the command line (parameter -> flag); with a project file each is an error."""
    for parameter, flag in given.items():
        key = COMMAND_LINE_KEYS.get(parameter, parameter)
        if key is None:
            raise UsageError(f"{flag} is not available with a project file ({path}); each bundle's report.json holds every check")
        table = "[defaults]" if key == "output" else "[defaults] or the model's [[models]] entry"
        raise UsageError(f"{flag} describes one model: with a project file, set '{key}' in {path} ({table}), "
                         "or name the MODEL to compile it alone")


# ------------------------------------------------------------------ building


def plan_jobs(project: Project, jobs: int, threads: int | None, available: int | None = None,
              cores: int | None = None) -> JobPlan:
    """How many models to build at once, and the threads each gets (rule 7).

    Each build is estimated at MEMORY_FACTOR x its source's size on disk + MEMORY_BASE; as many run at
    once as the largest estimate fits into the available memory (at least one). Threads per job:
    `threads` when given, else the cores divided among the jobs.
    """
    wanted = max(1, min(jobs, len(project.models)))
    if wanted == 1:
        return JobPlan(1, threads)
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    if cores is None:
        from .runtimes import default_threads

        cores = default_threads()
    largest = max(project.models, key=ModelEntry.source_bytes)
    per_model = MEMORY_FACTOR * largest.source_bytes() + MEMORY_BASE
    fits = max(1, int(available // per_model))
    reduced = ""
    if fits < wanted:
        reduced = (f"--jobs {jobs} reduced to {fits}: {available / 1e9:.1f} GB of memory available, a build is estimated at "
                   f"{per_model / 1e9:.1f} GB ({MEMORY_FACTOR} x the size of {largest.name}'s source + {MEMORY_BASE / 1e9:g} GB)")
    planned = min(wanted, fits)
    return JobPlan(planned, threads if threads is not None else max(1, cores // planned), reduced)


@dataclass(frozen=True)
class BuildOptions:
    """compile's settings shared by every model of a project."""

    no_bench: bool = False
    cache: bool = True
    threads: int | None = None
    force: bool = False
    require_measured: bool = False
    trust_remote_code: bool = False


class _Named(NullProgress):
    """Progress lines prefixed with the model's name, so interleaved builds can be told apart."""

    def __init__(self, inner, name: str):
        self.inner, self.name = inner, name

    def stage(self, text: str) -> None:
        self.inner.stage(f"{self.name}: {text}")

    def note(self, text: str) -> None:
        self.inner.note(f"{self.name}: {text}")

    def step(self, name: str, target: str | None = None) -> None:
        self.inner.step(name, f"{self.name}: {target}" if target else self.name)

    def task(self, label: str, total: int | None, target: str | None = None, figure: str | None = None,
             bound_s: float | None = None):
        return self.inner.task(label, total, f"{self.name}: {target}" if target else self.name, figure, bound_s)


def _error_prefix(code: int) -> str:
    return "error" if code == 2 else "internal error"


def build_model(entry: ModelEntry, options: BuildOptions, progress=None) -> ModelOutcome:
    """Compile one project model into its bundle; any failure is recorded in the outcome, not raised."""
    from . import pipeline

    started = time.monotonic()
    try:
        report = pipeline.run(CompileRequest(
            None if entry.source is None else _shown(entry.source), targets=entry.targets, profile=entry.profile,
            output=entry.output, task=entry.task, shapes=entry.shapes, data=entry.data, threads=options.threads,
            progress=_Named(progress or NullProgress(), entry.name), text_column=entry.text_column,
            label_column=entry.label_column, overrides=entry.overrides, require_measured=options.require_measured,
            trust_remote_code=options.trust_remote_code, force=options.force, no_bench=options.no_bench, cache=options.cache))
    except Exception as exc:  # a model's failure is its outcome; the other models go on
        code = exc.exit_code if isinstance(exc, EdgekitError) else EXIT_INTERNAL
        first = str(exc).splitlines()[0] if str(exc) else ""
        message = first if isinstance(exc, EdgekitError) else f"{type(exc).__name__}: {first}"
        return ModelOutcome(entry.name, entry.targets, error=message, exit_code=code, detail=traceback.format_exc(),
                            seconds=time.monotonic() - started)
    results = tuple(TargetOutcome(t.target, t.verdict, t.accuracy.cosine_min, t.speedup_p50, t.not_measured, t.size_bytes,
                                  tuple(c.budget for c in t.checks if c.passed is False)) for t in report.targets)
    results += tuple(TargetOutcome(f.target, f"not built: {f.error}", math.nan, None, "not built", 0, ())
                     for f in report.failed)  # a target that failed: its row, the others kept (issue 19)
    return ModelOutcome(entry.name, entry.targets, report.bundle, results,
                        exit_code=report.exit_code, seconds=time.monotonic() - started)


def _shown(path: Path | str) -> str:
    """A path relative to the working directory when it lies inside it (manifests, tables), else as it is."""
    if isinstance(path, str):
        return path
    try:
        return Path(path).relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _init_worker(level: int) -> None:
    from .progress import quiet_libraries

    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries(level <= logging.INFO)


def build_project(project: Project, jobs: int = 1, options: BuildOptions | None = None, progress=None,
                  say: Callable[[str], None] | None = None) -> list[ModelOutcome]:
    """Build every model of `project` (rules 6, 7); outcomes in the project's order.

    `progress`: where the builds report (in-process builds stage by stage, parallel ones a line per model
    as it finishes). `say`: told when fewer jobs run than asked, and why (default: the log).
    """
    options = options or BuildOptions()
    progress = progress or NullProgress()
    plan = plan_jobs(project, jobs, options.threads)
    if plan.reduced:
        (say or log.warning)(plan.reduced)
    if plan.jobs == 1:
        outcomes = []
        for entry in project.models:
            outcomes.append(build_model(entry, options, progress))
            progress.stage(outcomes[-1].line())
        return outcomes
    shared = BuildOptions(**{**options.__dict__, "threads": plan.threads})
    done: dict[str, ModelOutcome] = {}
    with concurrent.futures.ProcessPoolExecutor(plan.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker, initargs=(logging.getLogger().getEffectiveLevel(),)) as pool:
        futures = {pool.submit(build_model, entry, shared): entry for entry in project.models}
        try:
            for future in concurrent.futures.as_completed(futures):
                entry = futures[future]
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker itself died (out of memory, a crash in a runtime)
                    outcome = ModelOutcome(entry.name, entry.targets, error=f"the build process failed: {type(exc).__name__}: {exc}",
                                           exit_code=EXIT_INTERNAL, detail=traceback.format_exc())
                done[entry.name] = outcome
                progress.stage(outcome.line())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [done[entry.name] for entry in project.models]


# ------------------------------------------------------------------ the summary


def compile_project(path: str | os.PathLike | None = None, jobs: int = 1, progress=None, **options: Any) -> list[ModelOutcome]:
    """What `edgekit compile --project PATH` does, from Python: every model of the project file, each into its
    bundle; one outcome per model (a failed model does not stop the others).

    `path`: the project file (None: edgekit.toml, else pyproject.toml's [tool.edgekit], in this folder).
    `options`: BuildOptions' fields (no_bench, cache, threads, force, require_measured, trust_remote_code).
    Raises UsageError when there is no project file or it is invalid.
    """
    found = Path(path) if path is not None else find_project(".")
    if found is None:
        raise UsageError("no project file here: give its path, or add edgekit.toml (see docs/project-file.md)")
    return build_project(load_project(found), jobs, BuildOptions(**options), progress)


def exit_code(outcomes: Iterable[ModelOutcome]) -> int:
    """The worst outcome: 3 internal error, 2 usage error, 1 budget missed, 0 every model passed."""
    return max((o.exit_code for o in outcomes), default=EXIT_OK)


def summary_markdown(outcomes: Iterable[ModelOutcome]) -> str:
    """One table, a row per model and target (a failed model: one row with its error)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| model | target | verdict | cosine min | speedup p50 | size MB | bundle |", "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        if o.error:
            targets = ", ".join(Path(t).stem for t in o.targets)
            lines.append(f"| {o.name} | {targets} | **{_error_prefix(o.exit_code)}** | — | — | — | {cell(o.error)} |")
            continue
        for t in o.results:
            speedup = f"{t.speedup_p50:.2f}×" if t.speedup_p50 is not None else "not measured"
            cosine = f"{t.cosine_min:.4f}" if math.isfinite(t.cosine_min) else str(t.cosine_min)
            lines.append(f"| {o.name} | {t.target} | {t.verdict} | {cosine} | {speedup} | {_mb(t.size_bytes)} | {cell(_shown(o.bundle))} |")
    return "\n".join(lines) + "\n"
