"""Targets and profiles: plain data, loaded from TOML and validated on load.

Rules:
1. A target is one TOML file in `targets/`; a profile is one TOML file in `profiles/`. The file's stem
   is its name. A path to a user's own TOML file is accepted wherever a name is.
2. Every key is known: an unknown key is rejected with the nearest valid one, never ignored.
3. Every value has its type and range checked; the error names the file and the key.
4. `list_targets()` / `list_profiles()` read the same folders the compiler uses.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError

_PACKAGE_DIR = Path(__file__).resolve().parent


def _builtin_dir(kind: str) -> Path:
    """`targets/` or `profiles/`: beside the package in a checkout, inside it in a wheel."""
    for candidate in (_PACKAGE_DIR / "_builtin" / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edgekit's built-in {kind}/ folder is missing from the installation")


RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("int8", "fp32")
ACTIVATIONS = ("asymmetric", "symmetric")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class Target:
    """Where an artifact runs: a runtime and a device."""

    name: str
    description: str
    runtime: str  # "onnxruntime" | "openvino"
    device: str  # "CPU" (ONNX Runtime: the execution provider's device; OpenVINO: the device name)
    execution_provider: str = ""  # ONNX Runtime only
    graph_fusions: bool = False  # apply onnxruntime's transformer fusions before quantising
    performance_hint: str = "LATENCY"  # OpenVINO only
    source: str = ""  # the file it came from

    @property
    def artifact_name(self) -> str:
        return "model.onnx" if self.runtime == "onnxruntime" else "model.xml"


@dataclass(frozen=True)
class Budgets:
    """What an artifact must meet for the verdict to be `pass`."""

    min_cosine: float = 0.99
    min_top1_agreement: float | None = None
    max_latency_ms: float | None = None  # p90
    max_size_mb: float | None = None


@dataclass(frozen=True)
class Profile:
    """A trade-off: how to quantise, how to measure, and the budgets that decide the verdict."""

    name: str
    description: str
    precision: str  # "int8" | "fp32"
    budgets: Budgets
    activations: str = "asymmetric"
    per_channel: bool = True
    calibration_method: str = "minmax"
    calibration_samples: int = 64
    eval_samples: int = 32
    seed: int = 0
    sequence_length: int = 128  # text models: the length latency is measured at
    bench_min_runs: int = 50
    bench_min_seconds: float = 2.0
    bench_max_seconds: float = 20.0
    source: str = ""


# Schema: key -> (expected python types, validator or None). Sections are one level deep.
_TARGET_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "description": ((str,), None),
    "runtime": ((str,), RUNTIMES),
    "device": ((str,), None),
    "execution_provider": ((str,), None),
    "graph_fusions": ((bool,), None),
    "performance_hint": ((str,), ("LATENCY", "THROUGHPUT")),
}
_PROFILE_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "description": ((str,), None),
    "precision": ((str,), PRECISIONS),
    "activations": ((str,), ACTIVATIONS),
    "per_channel": ((bool,), None),
    "calibration_method": ((str,), CALIBRATION_METHODS),
}
_PROFILE_SECTIONS: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "budgets": {
        "min_cosine": ((float, int), (-1.0, 1.0)),
        "min_top1_agreement": ((float, int), (0.0, 1.0)),
        "max_latency_ms": ((float, int), (0.0, None)),
        "max_size_mb": ((float, int), (0.0, None)),
    },
    "data": {
        "calibration_samples": ((int,), (1, None)),
        "eval_samples": ((int,), (1, None)),
        "seed": ((int,), (0, None)),
    },
    "benchmark": {
        "sequence_length": ((int,), (1, None)),
        "min_runs": ((int,), (1, None)),
        "min_seconds": ((float, int), (0.0, None)),
        "max_seconds": ((float, int), (0.0, None)),
    },
}


def _nearest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else f" (valid keys: {', '.join(sorted(valid))})"


def _check(path: Path, where: str, table: dict, schema: dict, required: tuple[str, ...] = ()) -> dict:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in schema:
            raise UsageError(f"{path}: unknown key '{where}{key}'{_nearest(key, list(schema))}")
        types, rule = schema[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise UsageError(f"{path}: '{where}{key}' must be {wanted}, not {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{path}: '{where}{key}' must be a finite number, not {value!r}")
        if isinstance(rule, tuple) and rule and isinstance(rule[0], str):
            if value not in rule:
                raise UsageError(f"{path}: '{where}{key}' must be one of {', '.join(rule)}, not {value!r}")
        elif isinstance(rule, tuple):
            low, high = rule
            if (low is not None and value < low) or (high is not None and value > high):
                raise UsageError(f"{path}: '{where}{key}' = {value} is out of range [{low}, {high if high is not None else '∞'}]")
        out[key] = value
    missing = [k for k in required if k not in out]
    if missing:
        raise UsageError(f"{path}: missing required key '{where}{missing[0]}'")
    return out


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: malformed TOML: {exc}") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc


def _resolve(kind: str, name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.parent != Path("."):
        if not candidate.is_file():
            raise UsageError(f"{kind} file not found: {name_or_path}")
        return candidate
    path = _builtin_dir(kind + "s") / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(_names(kind + "s"))
        raise UsageError(f"unknown {kind} '{name_or_path}': known {kind}s are {known} (or give a path to a .toml file)")
    return path


def _names(folder: str) -> list[str]:
    return sorted(p.stem for p in _builtin_dir(folder).glob("*.toml"))


def load_target(name_or_path: str) -> Target:
    path = _resolve("target", name_or_path)
    data = _check(path, "", _read_toml(path), _TARGET_KEYS, required=("runtime", "device"))
    if data["runtime"] == "onnxruntime":
        data.setdefault("execution_provider", "CPUExecutionProvider")
    return Target(name=path.stem, description=data.pop("description", ""), source=str(path), **data)


def load_profile(name_or_path: str) -> Profile:
    path = _resolve("profile", name_or_path)
    raw = _read_toml(path)
    top = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    sections = {k: v for k, v in raw.items() if isinstance(v, dict)}
    for section in sections:
        if section not in _PROFILE_SECTIONS:
            raise UsageError(f"{path}: unknown section '[{section}]'{_nearest(section, list(_PROFILE_SECTIONS))}")
    data = _check(path, "", top, _PROFILE_KEYS, required=("precision",))
    budgets = _check(path, "budgets.", sections.get("budgets", {}), _PROFILE_SECTIONS["budgets"], required=("min_cosine",))
    dataset = _check(path, "data.", sections.get("data", {}), _PROFILE_SECTIONS["data"])
    bench = {f"bench_{k}" if k != "sequence_length" else k: v
             for k, v in _check(path, "benchmark.", sections.get("benchmark", {}), _PROFILE_SECTIONS["benchmark"]).items()}
    floats = {f.name for f in fields(Budgets)}
    budgets = {k: float(v) if k in floats and v is not None else v for k, v in budgets.items()}
    return Profile(
        name=path.stem,
        description=data.pop("description", ""),
        budgets=Budgets(**budgets),
        source=str(path),
        **data,
        **dataset,
        **{k: float(v) if k.endswith("seconds") else v for k, v in bench.items()},
    )


def list_targets() -> list[Target]:
    return [load_target(name) for name in _names("targets")]


def list_profiles() -> list[Profile]:
    return [load_profile(name) for name in _names("profiles")]
