"""The task-family contract: what a kind of model is judged on, decided once per compile.

Rules:
1. A task family is a subclass of `TaskFamily` decorated with `@register`; every module of this package is
   imported when the registry is first read. Adding a family is one module here.
2. `for_task(task)` picks the family for a model's task: the registered family that `handles` it with the
   highest `priority`; the `tensor` family handles every task, at the lowest priority, so any model has one.
3. A family answers: `classifier` (whether labels and class agreement apply), `label_space(source)` (the
   classes `--data` labels are resolved against), `check(samples, reference_outputs, data)` (usage errors
   about the samples, once the original ran on them), `evaluate(expected, outputs, output_names, labels,
   masks)` (the fidelity figures and the task's own metrics of one artifact) and `workload(samples)` (the
   feed the benchmark times: one forward pass, or a prompt a generation session runs its loop on), with
   `prompt_workloads` (more feeds timed after it), `build_precision` (what a target builds for this kind of model)
   and `fixed_shapes` (input shapes every sample shares, for a static-shape target). `for_source(source)` gives
   the family as it judges one model (what it reads beside the model, such as a recogniser's vocabulary).
4. Samples are the family's too: `modality(declared, specs, tokenizer)` decides once what kind of input
   the model takes, and `samples(request)` builds the calibration, evaluation and benchmark feeds
   (by default from `--data` or the fallbacks of `data.py`: text, images, tensors). A family whose
   inputs are none of these (speech, prompts) overrides both.
5. The core (pipeline.py, build.py) asks the family and never branches on a task's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from ..registry import Registry

if TYPE_CHECKING:
    from ..data import LabelSpace, SampleRequest, Samples
    from ..graph import InputSpec
    from ..runtimes.base import Feed
    from ..source import SourceModel
    from ..stages.metrics import TaskMetrics
    from ..stages.verify import Fidelity


class TaskFamily:
    """One kind of model: its samples' checks, its metrics and its benchmark workload (module docstring)."""

    name: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ()  # the Hugging Face tasks it covers
    priority: ClassVar[int] = 0
    classifier: ClassVar[bool] = False
    # Budgets this family reports but does not gate on unless the caller asks for them (judge rule 9).
    secondary: ClassVar[Mapping[str, str]] = {}  # budget -> why it is reported but not gated

    def handles(self, task: str | None) -> bool:
        return task in self.tasks

    def label_space(self, source: "SourceModel") -> "LabelSpace | None":
        return None

    def for_source(self, source: "SourceModel") -> "TaskFamily":
        """The family as it judges this model (a speech recogniser reads its vocabulary); itself by default."""
        return self

    def secondary_for(self, reference_outputs: list, budgets: Any = None) -> Mapping[str, str]:
        """The budgets reported but not gated for this model (judge rule 9), from the original's outputs and the
        profile's budgets."""
        return self.secondary

    def modality(self, declared: str, specs: "list[InputSpec]", tokenizer: Any = None) -> str:
        """The kind of input the model takes, decided once per compile (rule 4)."""
        from ..data import decide_modality

        return decide_modality(declared, specs, tokenizer)

    def samples(self, request: "SampleRequest") -> "Samples":
        """Calibration, evaluation and benchmark feeds (rule 4)."""
        from ..data import samples_for

        return samples_for(request)

    def check(self, samples: "Samples", reference_outputs: list, data: Path | None) -> None:
        """Usage errors about the samples, found once the original ran on them."""

    def task_metrics(self, expected: Sequence[Sequence[np.ndarray]], outputs: Sequence[Sequence[np.ndarray]],
                     output_names: Sequence[str], labels: Sequence[int] | None,
                     masks: Sequence[np.ndarray | None] | None) -> "TaskMetrics":
        raise NotImplementedError

    def evaluate(self, expected: Sequence[Sequence[np.ndarray]], outputs: Sequence[Sequence[np.ndarray]],
                 output_names: Sequence[str], labels: Sequence[int] | None = None,
                 masks: Sequence[np.ndarray | None] | None = None) -> "tuple[Fidelity, dict[str, Any]]":
        """(fidelity with the task's figures added, the figures its budgets are judged on) of one artifact."""
        from ..stages import verify

        fidelity = verify.compare(list(expected), list(outputs), list(output_names), self.classifier,
                                  list(masks) if masks is not None else None)
        task = self.task_metrics(expected, outputs, output_names, labels, masks)
        fidelity.add_task(task)
        return fidelity, task.budget_figures()

    def gating(self, fidelity: "Fidelity") -> tuple[str, float]:
        """(name, value) of the figure that decides this kind of model, for recovery to rank and search by
        (judge rule 9): cosine unless the family says otherwise."""
        return "cosine_min", fidelity.cosine_min

    def fixed_shapes(self, samples: "Samples") -> dict[str, tuple[int, ...]]:
        """Input shapes every sample of this family has, for a static-shape target (static_shapes rule 6)."""
        return {}

    def build_precision(self, precision: str, profile: Any) -> str:
        """What a target builds for this kind of model, given what the profile and target ask (`precision`)."""
        return precision

    def prompt_workloads(self, samples: "Samples", prompt_lengths: tuple[int, ...]) -> "dict[int, Feed]":
        """More workloads timed after the benchmark's own (generative models: prompts of other lengths)."""
        return {}

    def workload(self, samples: "Samples") -> "Feed":
        """What the benchmark times, once per run: one forward pass on the benchmark feed."""
        return samples.benchmark


REGISTRY: Registry[TaskFamily] = Registry("task family", __name__.rpartition(".")[0], Path(__file__).parent)
register, unregister, get, names = REGISTRY.register, REGISTRY.unregister, REGISTRY.get, REGISTRY.names


def for_task(task: str | None) -> TaskFamily:
    """The family for a model's task (rule 2)."""
    return max((f for f in REGISTRY.units() if f.handles(task)), key=lambda f: f.priority)


def for_model(source: "SourceModel", data: Path | None, text_column: str = "text",
              label_column: str | None = None) -> tuple[TaskFamily, str]:
    """The family for a model (rule 2) and, when it was inferred rather than given, a note saying why: an
    ONNX file without a task whose one output is [batch, C] and whose `--data` labels are class ids is a
    classifier (classification.py rule 3)."""
    family = for_task(source.task).for_source(source)
    if not source.is_graph or source.task or family.classifier:
        return family, ""
    from .. import data as samples, graph
    from .classification import Classification

    outputs = graph.output_dims(graph.load(source.path, load_external_data=False))
    if len(outputs) != 1 or len(outputs[0]) != 2 or not isinstance(outputs[0][1], int) or outputs[0][1] < 2:
        return family, ""
    classes = outputs[0][1]
    if not samples.are_class_ids(samples.peek_labels(data, text_column, label_column), classes):
        return family, ""
    return Classification.inferred(classes), (
        f"treated as a classifier: its one output is [batch, {classes}] and the labels in --data are class ids "
        f"0..{classes - 1} (give --task to say otherwise)")
