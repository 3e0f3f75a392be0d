"""The step contract: a build is a plain list of steps, each one typed transformation of a graph.

Rules:
1. A step has a `name` and `run(StepInput) -> StepResult`. It reads `StepInput.path` and writes its result
   either into the work folder or, when it produces the artifact, to `StepInput.artifact`; it returns the
   path it wrote (or the path it read, unchanged, when it had nothing to do), the settings it applied (for
   report.json's `quantization`) and notes for the report.
2. A runtime's `recipe(inputs)` returns the list of steps for a target, a precision and a profile; the
   recipe is data a reader sees in one screen. `run_recipe` threads the path from step to step.
3. Pre- and post-conditions are typed errors: `StepInputMissing` (the file a step reads is not there) and
   `ArtifactNotWritten` (the recipe ended without writing the artifact). Both are bugs in edgekit (exit 3).
4. The steps that ran are recorded in the settings as `steps`, in order, so the report lists them.
5. What a step learns that a later step of the same recipe needs (besides the graph) goes into
   `StepInput.state`, one typed object per kind (`inp.state.get(QdqPlan)`); it lives for one recipe run.
6. Progress: `run_recipe` reports each step as it starts (`BuildInputs.progress.step`); a step that runs
   long reports item k of n through `BuildInputs.progress.task(label, n, target=...)` (calibration sample
   k of n, recovery attempt k of n with its figure), so no step runs for minutes without a sign of life.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from ..errors import InternalError
from ..progress import NullProgress

if TYPE_CHECKING:
    from ..config import Profile, Target
    from ..runtimes.base import Feed
    from .static_shapes import StaticShapes


class StepInputMissing(InternalError):
    """A step was given a graph that does not exist."""


class ArtifactNotWritten(InternalError):
    """A recipe ended without writing the artifact."""


@dataclass(frozen=True)
class BuildInputs:
    """What one target's build reads: the FP32 graph, the calibration samples and the choices that apply."""

    target: "Target"
    profile: "Profile"
    precision: str  # what the target builds under the profile (config rule 5)
    onnx: Path  # the FP32 ONNX graph (a static-shape target's fixed one)
    original_onnx: Path  # the FP32 export as prepared (recovery rebuilds from it)
    calibration: list["Feed"]
    transformer: bool  # a transformer encoder (the quantisers' transformer recipes)
    model_config: dict | None  # the Hugging Face config.json, None for an ONNX source
    static: "StaticShapes | None"
    workdir: Path  # this target's own work folder
    artifact: Path  # where the artifact goes
    keep_fp32: tuple[str, ...] = ()  # nodes the quantiser leaves FP32 (accuracy recovery rebuilds with them)
    generative: bool = False  # a KV-cache decoder: weight-only recipes (stages/weights.py)
    source_dir: Path | None = None  # the Hugging Face model folder (None for an ONNX source)
    trust_remote_code: bool = False
    progress: Any = field(default_factory=NullProgress, compare=False)  # where steps report (edgekit/progress.py)


T = TypeVar("T")


class RecipeState:
    """What a recipe's steps hand on to later ones (rule 5): one object per type, made on first use."""

    def __init__(self) -> None:
        self._items: dict[type, Any] = {}

    def get(self, kind: type[T]) -> T:
        if kind not in self._items:
            self._items[kind] = kind()
        return self._items[kind]


@dataclass(frozen=True)
class StepInput:
    path: Path  # the graph this step reads
    build: BuildInputs
    state: RecipeState = field(default_factory=RecipeState)

    @property
    def artifact(self) -> Path:
        return self.build.artifact

    @property
    def work(self) -> Path:
        return self.build.workdir


@dataclass
class StepResult:
    path: Path  # what the step wrote (or read, when it changed nothing)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Step(Protocol):
    name: str

    def run(self, inp: StepInput) -> StepResult: ...


@dataclass(frozen=True)
class FunctionStep:
    """A step made of a function: the simplest way to write one."""

    name: str
    fn: Callable[[StepInput], StepResult]

    def run(self, inp: StepInput) -> StepResult:
        return self.fn(inp)


def step(name: str) -> Callable[[Callable[[StepInput], StepResult]], FunctionStep]:
    """Decorator: `@step("fold biases")` over `def fold(inp: StepInput) -> StepResult`."""
    return lambda fn: FunctionStep(name, fn)


@step("copy")
def copy_to_artifact(inp: StepInput) -> StepResult:
    """Write the graph as it is: the artifact is the FP32 graph."""
    shutil.copyfile(inp.path, inp.artifact)
    return StepResult(inp.artifact, {"format": "FP32 ONNX"})


@dataclass
class RecipeResult:
    artifact: Path
    settings: dict[str, Any]
    notes: list[str]
    steps: list[str]


def run_recipe(steps: list[Step], inputs: BuildInputs) -> RecipeResult:
    """Run `steps` in order from `inputs.onnx` (rules 1-4); the artifact must exist at the end."""
    path, settings, notes, ran, state = inputs.onnx, {}, [], [], RecipeState()
    for unit in steps:
        if not path.is_file():
            raise StepInputMissing(f"step '{unit.name}': its input {path.name} does not exist")
        inputs.progress.step(unit.name, getattr(inputs.target, "name", ""))
        result = unit.run(StepInput(path, inputs, state))
        path = result.path
        settings.update(result.settings)
        notes += result.notes
        ran.append(unit.name)
    if path != inputs.artifact or not path.is_file():
        raise ArtifactNotWritten(f"the recipe ({', '.join(ran) or 'no steps'}) did not write {inputs.artifact.name}")
    return RecipeResult(path, settings, notes, ran)
