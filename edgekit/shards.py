"""Shards: a project's models split over the jobs of a CI matrix, each job building whole models.

Rules:
1. A shard holds whole models: a model's targets and its original are always built and timed together, in one
   run on one machine (speedups are only ever ratios measured side by side).
2. The plan is a function of the model names, their cost estimates and N only: every job of a matrix computes
   the same plan, and `--list-shards N --json` prints it for a CI file to build its matrix from.
3. A model's cost is estimated from its source's size on disk and its targets: (COST_BASE + the source's bytes)
   x the number of targets (a hub id not downloaded yet counts COST_BASE).
4. Placement is rendezvous hashing with bounded loads: each model ranks the shards by a hash of (its name, the
   shard); the models, costliest first, each go to the first shard in their ranking whose load stays within
   LOAD_SLACK of an even share (else the least loaded). A model's shard depends on its own name and on the
   models placed before it, not on list order; adding a model moves only the models a full shard pushes on.
5. Every model is in exactly one shard; a shard may be empty when there are more shards than models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

COST_BASE = 50e6  # bytes-equivalent of a build's fixed work (export, runtimes, benchmark), per target
LOAD_SLACK = 1.25  # a shard's load may reach 1.25 x an even share before a model moves on to its next choice


@dataclass
class Shard:
    index: int  # 1-based, as --shard I/N names it
    of: int
    models: list[str] = field(default_factory=list)
    cost: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "of": self.of, "shard": f"{self.index}/{self.of}", "models": self.models,
                "cost_estimate": round(self.cost)}


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N), 1 <= I <= N; anything else a usage error."""
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not sep or n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. --shard 2/3")
    return i, n


def model_cost(entry) -> float:
    """Rule 3."""
    return (COST_BASE + entry.source_bytes()) * max(1, len(entry.targets))


def _rank(name: str, shard: int) -> str:
    return hashlib.sha256(f"{name}\0{shard}".encode("utf-8")).hexdigest()


def plan(project, count: int) -> list[Shard]:
    """Rules 4, 5: the project's models in `count` shards."""
    if count < 1:
        raise UsageError(f"--list-shards {count}: the number of shards must be at least 1")
    shards = [Shard(i + 1, count) for i in range(count)]
    costs = {entry.name: model_cost(entry) for entry in project.models}
    limit = LOAD_SLACK * sum(costs.values()) / count
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        ranking = sorted(shards, key=lambda s: _rank(name, s.index), reverse=True)
        fits = next((s for s in ranking if s.cost + costs[name] <= limit), None)
        chosen = fits or min(shards, key=lambda s: (s.cost, s.index))
        chosen.models.append(name)
        chosen.cost += costs[name]
    order = {entry.name: i for i, entry in enumerate(project.models)}
    for shard in shards:
        shard.models.sort(key=order.__getitem__)
    return shards


def select(project, shard: tuple[int, int]):
    """The project with only the models of shard I of N (rule 1)."""
    import dataclasses

    index, count = shard
    wanted = set(plan(project, count)[index - 1].models)
    return dataclasses.replace(project, models=tuple(m for m in project.models if m.name in wanted))


def plan_json(project, count: int) -> str:
    shards = plan(project, count)
    return json.dumps({"project": str(project.path), "shards": [s.to_dict() for s in shards],
                       "models": {name: s.index for s in shards for name in s.models},
                       "matrix": [s.index for s in shards]}, indent=2)


def plan_table(project, count: int) -> str:
    lines = ["| shard | models | cost estimate (GB) |", "|---|---|---:|"]
    for s in plan(project, count):
        lines.append(f"| {s.index}/{s.of} | {', '.join(s.models) or '—'} | {s.cost / 1e9:.2f} |")
    return "\n".join(lines) + "\n"
