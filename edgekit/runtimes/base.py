"""The runtime contract: one module per runtime under `edgekit/runtimes/`, registered by decorator.

A runtime answers every question about the artifacts it builds and runs; the compiler asks the registry
and never branches on a runtime's name. Rules:
1. A runtime is a subclass of `Runtime` decorated with `@register`. Every module in this package is
   imported when the registry is first read, and so is every `edgekit.runtimes` entry point of an
   installed distribution: adding a runtime is one module plus a target TOML file that names it.
2. `get(name)` returns the registered runtime; an unknown name is a usage error that lists the
   registered ones. Nothing falls through to a default runtime.
3. Its data: `name` (what a target's `runtime` key says), `label` (what messages say), `suffix` (its
   artifact file's suffix), `reads` (the file suffixes it loads), `target_keys` (the runtime-specific
   target keys it accepts; config rejects the others for it), `runtime_only_keys` (keys that change how
   an artifact runs, not its bytes: kept out of the build-cache key) and `extra_target_keys` (a schema
   for keys of its own, stored in `Target.options`).
4. Its questions: `files(artifact)` (the files that make the artifact), `probe()` (what it can run on
   here), `placement(target)` / `recorded_placement(settings)` (the device or provider a probe lists),
   `availability(placement, found)`, `open_settings(target, profile, present)` (how compile opens an
   artifact, in runtime.json's keys), `open(artifact, settings, threads)` (a session from those
   settings, or from a runtime.json), `absent_settings(target)` (runtime.json's device part when the
   device is not here), `recipe(inputs)` (the build steps, a plain list: stages/base.py) and
   `recover(inputs)` (layer fallback when an INT8 artifact misses an accuracy budget; None where the
   runtime has none; every candidate it scores is opened with `inputs.open_settings`, the settings the
   artifact ships with, so no figure comes from settings other than runtime.json's),
   `float_alternatives(settings)` (rule 7) and `how_it_runs(settings)` (the report's lines on settings that change how it runs).
5. A session takes a feed `{input name: numpy array}` and returns its outputs as numpy arrays in
   `output_names` order; `settings` records what a figure measured with it needs to be reproduced.
6. `RuntimeRecord` is a target's `runtime.json`, typed: written by compile (`RuntimeRecord.of`), read back
   (`RuntimeRecord.read`, one usage error naming the file) by verify, bench, embed through the bundle
   reader (bundle.read_bundle). It keeps its keys in the order they came, so it is written back byte for
   byte; `settings()` is what the artifact ran with, `open()` opens it here, `length_buckets()` asks its
   runtime.
7. The precision of the layers left in float is chosen per model, by measurement: a runtime that lets the CPU
   run them in a lower precision (OpenVINO's bf16) offers the f32 settings as `float_alternatives`, compile
   measures both and ships the lower precision unless it misses an accuracy budget f32 meets or costs more
   than FLOAT_TOLERANCE of the figure that gates (build.py); runtime.json records the choice.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Mapping, Optional, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from ..errors import UsageError
from ..registry import Registry
from ..schema import Flag, Key, Text, validate

if TYPE_CHECKING:
    from ..config import Profile, Target
    from ..stages.base import BuildInputs, Step

Feed = dict[str, np.ndarray]


class Session(Protocol):
    runtime: str
    output_names: list[str]
    settings: dict[str, Any]

    def run(self, feed: Feed) -> list[np.ndarray]: ...


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RuntimeDevices:
    """What one runtime can run on here."""

    runtime: str
    version: str
    devices: tuple[str, ...]  # ONNX Runtime: execution providers; OpenVINO: device names
    problems: dict[str, str] = field(default_factory=dict)  # device -> why it is not usable, in the runtime's words


@dataclass(frozen=True)
class Availability:
    present: bool
    reason: str = ""  # why not, when not present


def first_line(text: object, limit: int = 200) -> str:
    """A runtime's message without its source locations and library paths."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip() and not line.strip().startswith("Exception from")]
    line = lines[-1] if lines else str(text).strip()
    return re.sub(r'Cannot load library "(?:[^"]*/)?([^"/]+)"', r"\1", line)[:limit]


class LazySession:
    """A session opened on its first run: the original PyTorch model when the build cache already holds
    everything it would compute (a `--no-bench` rebuild never loads it)."""

    def __init__(self, opener: Callable[[], Session], runtime: str, output_names: list[str], settings: dict[str, Any]):
        self._opener, self._session = opener, None
        self.runtime, self.output_names, self.settings = runtime, list(output_names), dict(settings)

    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def opened(self) -> Session | None:
        """The session itself, once a run opened it."""
        return self._session

    def run(self, feed: Feed) -> list[np.ndarray]:
        if self._session is None:
            self._session = self._opener()
            self.settings = dict(self._session.settings)
        return self._session.run(feed)


@dataclass
class RecoveryInputs:
    """What a runtime's accuracy recovery needs (rule 4): the build it repairs and how to score a candidate."""

    build: "BuildInputs"  # the inputs the artifact was built from
    artifact: Path  # the artifact that missed the budget; the best one found is written over it
    before: float  # its cosine_min
    evaluation: list[Feed]
    expected: list  # the original's outputs on `evaluation`
    threads: int
    score: Callable[[Session], tuple[float, bool]]  # (cosine_min, every accuracy budget met) of a session
    note: Callable[[str], None]  # one line of progress per attempt
    settings: dict[str, Any]  # the artifact's quantisation settings, updated where recovery changes them
    open_settings: Mapping[str, Any] = field(default_factory=dict)  # how the artifact ships: candidates are scored so
    metric: str = "cosine_min"  # the figure that gates (the task family's): `before` and `score` are in it
    measure: Callable[[list, list], float] | None = None  # (original's outputs, candidate's) -> that figure
    limit: float | None = None  # the budget on that figure


class Runtime:
    """One runtime: how its artifacts are built, found, loaded, probed and recovered (module docstring)."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    suffix: ClassVar[str] = ".onnx"
    reads: ClassVar[tuple[str, ...]] = (".onnx",)
    target_keys: ClassVar[frozenset[str]] = frozenset()
    runtime_only_keys: ClassVar[frozenset[str]] = frozenset()
    extra_target_keys: ClassVar[Mapping[str, tuple[tuple[type, ...], Any]]] = {}
    builds_artifacts: ClassVar[bool] = True  # False: it runs the original only, and no target may name it

    @property
    def artifact_name(self) -> str:
        return "model" + self.suffix

    def files(self, artifact: Path) -> list[Path]:
        return [artifact]

    def check_target(self, path: Path, data: dict[str, Any]) -> None:
        """Cross-key checks on a target file's validated keys (a usage error naming the file)."""

    def probe(self) -> RuntimeDevices:
        raise NotImplementedError

    def placement(self, target: "Target") -> str:
        return target.device

    def recorded_placement(self, settings: Mapping[str, Any]) -> str:
        return str(settings.get("device", "CPU"))

    def availability(self, placement: str, found: RuntimeDevices) -> Availability:
        device = placement.split(".")[0]
        if any(d.split(".")[0] == device for d in found.devices):
            return Availability(True)
        problem = found.problems.get(device)
        return Availability(False, f"{self.label} {found.version} sees no {device} here "
                                   f"(devices: {', '.join(found.devices) or 'none'})" + (f": {problem}" if problem else ""))

    def open_settings(self, target: "Target", profile: "Profile", present: bool) -> dict[str, Any]:
        """How compile opens the target's artifact, in runtime.json's keys: on the target's device when it is
        here, else on its verify device."""
        return {"device": target.device if present else target.verify_device}

    def open(self, artifact: Path, settings: Mapping[str, Any], threads: int) -> Session:
        raise NotImplementedError

    def absent_settings(self, target: "Target") -> dict[str, Any]:
        return {}

    def float_alternatives(self, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Other settings to measure the artifact with, for the precision of the layers left in float (rule 7):
        compile keeps the first settings unless they cost accuracy these do not. None by default."""
        return []

    def recipe(self, inputs: "BuildInputs") -> "list[Step]":
        raise NotImplementedError

    def recover(self, inputs: RecoveryInputs):
        """A `stages.recovery.Recovery`, or None where the runtime has no layer fallback."""
        return None

    def how_it_runs(self, settings: Mapping[str, Any]) -> list[str]:
        """Lines for the report: what in these (runtime.json) settings changes how the artifact runs."""
        return []

    def length_buckets(self, settings: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """(the sequence lengths these settings run in, the inputs padded to them); ((), ()): as built."""
        return (), ()


REGISTRY: Registry[Runtime] = Registry("runtime", __name__.rpartition(".")[0], Path(__file__).parent, "edgekit.runtimes")
register, unregister, get, find, names = REGISTRY.register, REGISTRY.unregister, REGISTRY.get, REGISTRY.find, REGISTRY.names
all_runtimes = REGISTRY.units


def open_artifact(path: Path, runtime: str, threads: int, **settings: Any) -> Session:
    """Open an artifact on `runtime` with runtime.json-style `settings` (each runtime's defaults otherwise)."""
    return get(runtime).open(Path(path), settings, threads)


def open_recorded(artifact: Path, settings: Mapping[str, Any], threads: int) -> Session:
    """Open an artifact with the runtime settings a runtime.json records for it."""
    return get(settings["runtime"]).open(Path(artifact), settings, threads)


class RuntimeRecord(BaseModel):
    """A target's runtime.json (rule 6): the settings its artifact ran with, or, where its device was absent,
    the device's settings, why it was not measured and the verify device's settings (`verified_with`)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    target: Text
    artifact: Text  # the artifact's file name, inside the target's folder (checked by the bundle reader)
    runtime: Text
    device: Text = None
    measured: Flag = None  # False: the target's device was not here
    not_measured: Text = None
    verified_with: Annotated[Optional[dict[str, Any]], Key((dict,))] = None
    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler: Any) -> "RuntimeRecord":
        record = handler(data)
        if isinstance(data, Mapping):
            record._order = tuple(data)
        return record

    @classmethod
    def of(cls, target: str, artifact: str, settings: Mapping[str, Any], absent: Mapping[str, Any] | None = None,
           reason: str = "") -> "RuntimeRecord":
        """Compile's record: `settings` as run, or with `absent` (the device part) as verified (build rule 2)."""
        if absent is None:
            return cls.model_validate({"target": target, "artifact": artifact, **settings})
        return cls.model_validate({"target": target, "artifact": artifact, **absent, "measured": False, "not_measured": reason,
                                   "verified_with": dict(settings)})

    @classmethod
    def read(cls, path: Path) -> "RuntimeRecord":
        """A runtime.json, checked: one usage error naming the file (an unknown runtime included)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}: not readable JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path}: not a runtime record (a JSON object)")
        record = validate(cls, data, path)
        try:
            get(record.runtime)
        except UsageError as exc:
            raise UsageError(f"{path}: {exc}") from None
        return record

    def as_dict(self) -> dict[str, Any]:
        """The record as written, keys in their order."""
        values = {**{k: getattr(self, k) for k in self.model_fields_set}, **(self.model_extra or {})}
        return {k: values[k] for k in self._order if k in values}

    @property
    def unit(self) -> Runtime:
        return get(self.runtime)

    def settings(self) -> dict[str, Any]:
        """What the artifact ran with: each setting as recorded, else as verified (`verified_with`)."""
        return {**(self.verified_with or {}), **{k: v for k, v in self.as_dict().items() if v}}

    def load_settings(self, present: bool) -> dict[str, Any]:
        """The settings to open it with here: the target's own where its device is `present`, else those of the
        verify device compile used, on the CPU."""
        if present:
            return self.as_dict()
        return {**(self.verified_with or {}), "runtime": self.runtime, "execution_provider": "CPUExecutionProvider"}

    def availability(self) -> Availability:
        """Is the device this record names present here?"""
        runtime = self.unit
        return runtime.availability(runtime.recorded_placement(self.as_dict()), runtime.probe())

    def open(self, artifact: Path, threads: int, settings: Mapping[str, Any] | None = None) -> Session:
        return self.unit.open(Path(artifact), self.as_dict() if settings is None else settings, threads)

    def length_buckets(self) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """(the sequence lengths it ran in, the inputs padded to them), as its runtime reads them."""
        return self.unit.length_buckets(self.settings())
