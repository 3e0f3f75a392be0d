"""A project built on a Ray cluster: one task per model (`edgekit compile --project F --executor ray`).

Rules:
1. `ray.init(address)`: an existing cluster (`--address`, e.g. `ray://head:10001` or `auto`), else a local one of
   this machine's cores. Each model is one task, whole (its targets and its original timed together on one node),
   asking Ray for `--threads` CPUs (else a whole node's: a build uses all the cores it sees, as on one machine) and
   the memory `--jobs` would give it (the source's size x MEMORY_FACTOR + MEMORY_BASE, at most the cluster's). The
   thread count decides calibration's numerics: a task with the thread count of a local build writes the same bytes.
2. A task builds its model into a temporary folder on its node, in the submitting machine's working directory when
   the node has it (sources are read at the paths the project file gives: a shared file system or the same
   checkout, as for a CI job), and returns the bundle as bytes through Ray's object store with the model's outcome.
   The submitting machine writes each bundle to `<output>/<name>` whole (a temporary folder, then the bundle swap):
   never a folder that is not a bundle.
3. A task whose worker or node dies is retried once by Ray (`max_retries=1`); a model that fails is reported on its
   row with its error, the others go on, and the exit code is the worst of the models', as on one machine.
4. Each model's line is printed as it finishes; the table comes at the end, in the project's order.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
import tempfile
import traceback
from pathlib import Path

from .errors import EXIT_INTERNAL, UsageError
from .progress import NullProgress

MANIFEST = "manifest.json"


def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()


def _build_on_node(entry, options, cwd: str):
    """Rule 2, on the node: (outcome, the bundle as a tar, or None)."""
    from .project import build_model

    if os.path.isdir(cwd):
        os.chdir(cwd)
    with tempfile.TemporaryDirectory(prefix="edgekit-ray-") as tmp:
        local = dataclasses.replace(entry, output=Path(tmp) / entry.name)
        outcome = build_model(local, options)
        data = _pack(local.output) if (local.output / MANIFEST).is_file() else None
    return outcome, data


def _unpack(data: bytes, out: Path) -> None:
    """Rule 2, here: the bundle written to `out` whole, replacing only an earlier bundle."""
    from .bundle import replace_folder

    if out.exists() and not (out / MANIFEST).is_file():
        raise UsageError(f"{out}: exists and is not an edgekit bundle; not replaced")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(tmp, filter="data")  # no absolute paths, links out or devices
        replace_folder(tmp, out)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def build_project(project, options, progress=None, address: str | None = None, say=None):
    """Rules 1-4: every model of `project` as a Ray task; outcomes in the project's order."""
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install edgekit[ray]") from None
    from .project import MEMORY_BASE, MEMORY_FACTOR, ModelOutcome

    progress = progress or NullProgress()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("EDGEKIT_", "XDG_"))}})
    memory = float(ray.cluster_resources().get("memory", 0)) or None
    node_cpus = max((int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1) or 1
    cpus = min(options.threads, node_cpus) if options.threads else node_cpus  # rule 1
    task = ray.remote(max_retries=1)(_build_on_node)
    def need(entry) -> float:  # the estimate --jobs uses, never more than the cluster has (the task would wait forever)
        estimate = MEMORY_FACTOR * entry.source_bytes() + MEMORY_BASE
        return min(estimate, memory) if memory else estimate

    pending = {task.options(num_cpus=cpus, memory=need(entry)).remote(entry, options, os.getcwd()): entry
               for entry in project.models}
    done: dict[str, object] = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        entry = pending.pop(ready[0])
        done[entry.name] = outcome = _collect(ray, ready[0], entry, ModelOutcome)
        progress.stage(outcome.line())
    return [done[entry.name] for entry in project.models]


def _collect(ray, ref, entry, ModelOutcome):
    """One task's outcome, its bundle written here (rule 2); a task that died twice is its model's error (rule 3)."""
    try:
        outcome, data = ray.get(ref)
        if data is not None:
            _unpack(data, entry.output)
        return dataclasses.replace(outcome, bundle=entry.output if data is not None else None)
    except Exception as exc:
        return ModelOutcome(entry.name, entry.targets, error=f"the Ray task failed: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}", exit_code=getattr(exc, "exit_code", EXIT_INTERNAL),
                            detail=traceback.format_exc())
