"""The report.json of a bundle as review reads it: typed records, validated and converted once, at load.

Rules:
1. The structure every renderer relies on is required; a report without it is one `UsageError` naming the
   key (`not an edgekit report (missing or malformed 'targets[0].latency_ms')`): `targets` a list,
   `original` a table, each target a table with a string `target`, each entry (the original and every
   target) a `latency_ms` table or, when its latency was not measured, `latency_ms` null with
   `latency_measured` false; `accuracy`, `source`, `data` and `benchmark` a table or null; `budgets` and
   `notes` a list or null.
2. A figure (`Figure`) that is missing, not a number (a string, a boolean) or not finite reads None, here
   and nowhere else: the renderers print None as a dash. Latency samples keep only finite figures >= 0.
3. An entry whose latency was not measured (`latency_measured` false, or no `latency_ms`) has
   `measured` false and no latency figures, samples or noisy flag.
4. A text (`Label`) is the value as written, as a string; None where the report lacks it (the renderers
   print it as the report had it). A flag (`Truthy`) is the value's truth.
5. Everything else in report.json is not read here: the JSON output writes the report as written.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ..errors import UsageError


def figure(value: Any) -> float | None:
    """A number from the report, or None (rule 2)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def malformed(key: str = "") -> PydanticCustomError:
    """Rule 1's error; `key` is added to where the error stands (a field of a table, or the table itself)."""
    return PydanticCustomError("edgekit_report", "missing or malformed", {"key": key})


def _table(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed()
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise malformed()
    return value


def _samples(value: Any) -> list[float]:
    figures = [figure(x) for x in value] if isinstance(value, list) else []
    return [v for v in figures if v is not None and v >= 0]


Figure = Annotated[Optional[float], BeforeValidator(figure)]
Label = Annotated[Optional[str], BeforeValidator(lambda v: None if v is None else str(v))]
Truthy = Annotated[bool, BeforeValidator(bool)]
Labels = Annotated[list[Label], BeforeValidator(_list)]
Samples = Annotated[list[float], BeforeValidator(_samples)]
Settings = Annotated[dict[str, Any], BeforeValidator(lambda v: v if isinstance(v, dict) else {})]


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class LatencyFigures(Record):
    """Batch-1 latency in ms (None: not in the report, or not measured)."""

    p50: Figure = None
    p90: Figure = None
    p95: Figure = None
    p99: Figure = None
    min: Figure = None
    max: Figure = None


class Entry(Record):
    """What the original and every target share: how it runs, its size and its latency (rule 3)."""

    runtime: Label = None
    precision: Label = None
    size_bytes: Figure = None
    measured: bool = False
    latency: LatencyFigures = Field(default_factory=LatencyFigures)
    samples: Samples = Field(default_factory=list)  # every timed run, in the order timed
    noisy: bool = False

    @classmethod
    def _check(cls, data: Any) -> None:
        """What the entry must hold besides its latency (the first thing rule 1 checks of it)."""
        if not isinstance(data, dict):
            raise malformed("latency_ms")

    @model_validator(mode="before")
    @classmethod
    def _latency(cls, data: Any) -> Any:
        cls._check(data)
        given = data.get("latency_ms")
        if not isinstance(given, dict) and not (given is None and data.get("latency_measured") is False):
            raise malformed("latency_ms")
        measured = isinstance(given, dict) and data.get("latency_measured") is not False
        return {**data, "measured": measured, "latency": given if measured else {},
                "samples": data.get("latency_samples_ms") if measured else [],
                "noisy": measured and bool(data.get("latency_noisy"))}


class AccuracyFigures(Record):
    """The figures review compares, and the table as written (less `per_output`) for the HTML details."""

    cosine_min: Figure = None
    top1_agreement: Figure = None
    written: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _written(cls, data: Any) -> Any:
        given = _table(data)
        return {**given, "written": {k: v for k, v in given.items() if k != "per_output"}}


class BudgetCheck(Record):
    budget: Label = None
    limit: Figure = None
    measured: Figure = None
    passed: Truthy = False
    applicable: bool = True  # only an explicit false makes a check not applicable
    not_checked: Truthy = False
    reason: Label = None

    @model_validator(mode="before")
    @classmethod
    def _applicable(cls, data: Any) -> Any:
        return {**data, "applicable": data.get("applicable") is not False}


def _checks(value: Any) -> list[Any]:
    return [c for c in _list(value) if isinstance(c, dict)]  # an entry that is not a table is no check


class TargetRecord(Entry):
    target: str
    profile: Label = None
    device: Label = None
    verdict: Label = None
    speedup_p50: Figure = None
    accuracy: AccuracyFigures = Field(default_factory=AccuracyFigures)
    budgets: Annotated[list[BudgetCheck], BeforeValidator(_checks)] = Field(default_factory=list)
    quantization: Settings = Field(default_factory=dict)
    runtime_settings: Settings = Field(default_factory=dict)
    notes: Labels = Field(default_factory=list)
    not_measured: Label = Field(None, validation_alias="latency_not_measured")  # why latency was not measured

    @classmethod
    def _check(cls, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("target"), str):
            raise malformed("target")

    def budget_limit(self, name: str) -> float | None:
        """The limit of the first budget check named `name`."""
        return next((c.limit for c in self.budgets if c.budget == name), None)


class Source(Record):
    location: Label = None


class Data(Record):
    origin: Label = None
    eval_samples: Label = None
    synthetic: Truthy = False


class Machine(Record):
    cpu: Label = None
    cores: Label = None


class Benchmark(Record):
    batch: Label = "1"
    input: Label = None
    threads: Label = None
    machine: Annotated[Machine, BeforeValidator(_table)] = Field(default_factory=Machine)


class ReportRecord(Record):
    """A report.json as review reads it (rules 1-5)."""

    edgekit_version: Label = None
    source: Annotated[Source, BeforeValidator(_table)] = Field(default_factory=Source)
    task: Label = None
    profile: Label = None
    verdict: Label = None  # as written (the JSON output and every renderer show the report's own verdict)
    data: Annotated[Data, BeforeValidator(_table)] = Field(default_factory=Data)
    benchmark: Annotated[Benchmark, BeforeValidator(_table)] = Field(default_factory=Benchmark)
    original: Entry
    targets: list[TargetRecord]
    notes: Labels = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("targets"), list):
            raise malformed("targets")
        if not isinstance(data.get("original"), dict):
            raise malformed("original.latency_ms")
        return data

    @property
    def model(self) -> str:
        """The model's name: the last part of the source location ("" when the report has none)."""
        location = self.source.location or ""
        return location.rstrip("/").rsplit("/", 1)[-1] or location


def read_report(report: Any, where: Any) -> ReportRecord:
    """`report` (report.json as parsed) as a ReportRecord, or one UsageError naming `where` and the key (rule 1)."""
    try:
        return ReportRecord.model_validate(report)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
        extra = (error.get("ctx") or {}).get("key") or ""
        key = ".".join(p for p in (key.lstrip("."), extra) if p)
        raise UsageError(f"{where}: not an edgekit report (missing or malformed '{key}')") from None
