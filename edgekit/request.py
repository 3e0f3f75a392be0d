"""A compile request: every option of one compile, in one frozen dataclass, with its defaults in one place.

Rules:
1. `edgekit compile` (cli.py), a project file's model (project.py) and `edgekit.compile(**kwargs)` all
   build a `CompileRequest`; `pipeline.run(request)` compiles it. No other place spells an option's default.
2. `resolve()` checks everything that can be checked before a model is read, once: the targets and the
   profile exist, the overrides are valid, every target can build the profile's precision, the shapes
   parse, `data` exists, `junit` is not a folder, `--no-bench` and `--require-measured` do not clash.
   Each failure is a usage error (exit 2) with one line that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import graph
from .config import Profile, Target, apply_overrides, asked_budgets, load_profile, load_target, resolve_precision
from .errors import UsageError

DEFAULT_TARGETS = ("cpu",)
DEFAULT_PROFILE = "balanced"


def writable(path: Path, option: str) -> None:
    """A usage error now, before any work, when no file can be written at `path` (its folder is made if need be)."""
    import tempfile

    from .errors import environment_error

    below = next((p for p in [path.parent, *path.parent.parents] if p.exists() and not p.is_dir()), None)
    if below is not None:
        raise UsageError(f"{option} {path}: {below} is a file, not a folder; give a path in a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        error = environment_error(exc)
        raise UsageError(f"{option} {path}: cannot be written ({error or exc.strerror or exc})") from None


@dataclass(frozen=True)
class CompileRequest:
    """What to compile and how (see `edgekit.compile` for each option)."""

    model: Any = None  # a Hugging Face folder or id, an .onnx file, a PyTorch nn.Module; None: the embedded default
    targets: Sequence[str] = DEFAULT_TARGETS
    profile: str = DEFAULT_PROFILE
    output: str | Path | None = None
    task: str | None = None
    shapes: Mapping[str, Sequence[int]] | Iterable[str] | None = None
    data: str | Path | None = None
    threads: int | None = None
    text_column: str = "text"
    label_column: str | None = None
    overrides: Mapping[str, Any] | None = None
    junit: str | Path | None = None
    require_measured: bool = False
    trust_remote_code: bool = False
    force: bool = False
    # A PyTorch module given as `model`: its example inputs (a tensor or a tuple), the names of its inputs and
    # outputs, and torch.export's dynamic_shapes (stages/export.py rule 4).
    example_inputs: Any = None
    input_names: Sequence[str] | None = None
    output_names: Sequence[str] | None = None
    dynamic_shapes: Any = None
    no_bench: bool = False
    cache: bool = True
    progress: Any = field(default=None, compare=False)

    def resolve(self) -> "Resolved":
        """The request checked and loaded (rule 2)."""
        if self.no_bench and self.require_measured:
            raise UsageError("--require-measured needs the benchmark: drop --no-bench, or drop --require-measured")
        from .source import is_module

        if is_module(self.model) and self.example_inputs is None:
            raise UsageError("a PyTorch module needs example inputs to be exported: edgekit.compile(module, "
                             "example_inputs=(torch.randn(1, 3, 224, 224),), ...)")
        targets = [load_target(t) for t in dict.fromkeys(self.targets or DEFAULT_TARGETS)]
        profile = apply_overrides(load_profile(self.profile or DEFAULT_PROFILE), self.overrides)
        precisions = {t.name: resolve_precision(t, profile) for t in targets}  # one a target cannot build: exit 2 now
        shapes = _parse_shapes(self.shapes)
        data = Path(self.data) if self.data is not None else None
        if data is not None and not data.exists():
            raise UsageError(f"--data: no such file or folder: {data}")
        junit = Path(self.junit) if self.junit is not None else None
        if junit is not None and junit.is_dir():
            raise UsageError(f"--junit {junit}: is a folder; give a file path, e.g. {junit / 'edgekit.xml'}")
        if junit is not None:
            writable(junit, "--junit")
        return Resolved(self, targets, profile, precisions, shapes, data, junit, asked_budgets(self.overrides))


@dataclass(frozen=True)
class Resolved:
    """A checked request: its targets and profile loaded, its paths and shapes parsed."""

    request: CompileRequest
    targets: list[Target]
    profile: Profile
    precisions: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    data: Path | None
    junit: Path | None
    asked: frozenset[str] = frozenset()  # the budgets the caller asked for (must be measurable)


def _parse_shapes(shapes: Mapping[str, Sequence[int]] | Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    if not shapes:
        return {}
    if isinstance(shapes, Mapping):
        return {k: tuple(int(d) for d in v) for k, v in shapes.items()}
    return dict(graph.parse_shape_option(text) for text in shapes)
