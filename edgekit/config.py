"""Targets and profiles: plain data, loaded from TOML and validated on load.

Rules:
1. A target is one TOML file in `targets/`; a profile is one TOML file in `profiles/`. The file's stem
   is its name. A path to a user's own TOML file is accepted wherever a name is.
2. Every key is known: an unknown key is rejected with the nearest valid one, never ignored.
3. Every value has its type and range checked; the error names the file and the key.
4. `list_targets()` / `list_profiles()` read the same folders the compiler uses.
5. Precision: a target without its own `precision` (cpu, intel-cpu) builds the profile's `precision`.
   A target with one (cuda, intel-gpu, intel-npu: what its device executes) builds it, unless the
   profile sets `device_precision`, which must be one of the target's `precisions` (else a usage error
   naming both). `resolve_precision()` applies this rule.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import UsageError

_PACKAGE_DIR = Path(__file__).resolve().parent


def _builtin_dir(kind: str) -> Path:
    """`targets/` or `profiles/`: beside the package in a checkout, inside it in a wheel."""
    for candidate in (_PACKAGE_DIR / "_builtin" / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edgekit's built-in {kind}/ folder is missing from the installation")


# Metrics a `max_drop` / `min_relative` budget may name (see edgekit/stages/metrics.py).
BUDGET_METRICS = ("accuracy", "macro_f1", "top1_agreement", "top5_agreement", "retrieval_agreement_at_5")

PRECISIONS = ("int8", "fp32")
TARGET_PRECISIONS = ("fp16", "int8", "fp32")  # what a device target may build (rule 5)
ACTIVATIONS = ("asymmetric", "symmetric")
FLOAT_PRECISIONS = ("f32", "bf16")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class Target:
    """Where an artifact runs: a runtime and a device."""

    name: str
    description: str
    runtime: str  # a registered runtime's name (edgekit/runtimes/): "onnxruntime", "openvino", ...
    device: str  # "CPU" (ONNX Runtime: the execution provider's device; OpenVINO: the device name)
    execution_provider: str = ""  # ONNX Runtime only
    graph_fusions: bool = False  # apply onnxruntime's transformer fusions before quantising
    performance_hint: str = "LATENCY"  # OpenVINO only
    source: str = ""  # the file it came from
    precision: str | None = None  # the target's own precision (rule 5); None: the profile's
    precisions: tuple[str, ...] = ()  # what a profile's `device_precision` may ask of it
    static_shapes: bool = False  # every input dimension fixed at compile time (NPUs)
    max_opset: int | None = None  # the highest ONNX opset the deployed runtime accepts
    max_ir_version: int | None = None  # the highest ONNX IR version it accepts
    verify_device: str = "CPU"  # where numerics are verified when the target's device is absent
    precompiled_blob: bool = False  # OpenVINO: also export the compiled model when the device is present
    activations: str | None = None  # INT8 activations on this runtime, overriding the profile's (None: the profile's)
    # OpenVINO, text models: sequence lengths the runtime compiles for; each input is padded to the smallest
    # that holds it (the IR itself stays dynamic). () runs every input at its own length.
    length_buckets: tuple[int, ...] = ()
    # ONNX Runtime: the artifact may use its com.microsoft operators where they are faster (False: standard
    # ONNX operators only, for builds without contrib operators)
    contrib_ops: bool = False
    # ONNX Runtime: graph optimizers the session leaves out (its session config entry
    # `optimization.disable_specified_optimizers`), where one makes the artifact slower on this runtime
    disabled_optimizers: tuple[str, ...] = ()
    # keys of the target's runtime's own (its `extra_target_keys`), validated by that schema
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def artifact_name(self) -> str:
        from . import runtimes

        return runtimes.get(self.runtime).artifact_name


@dataclass(frozen=True)
class Budgets:
    """What an artifact must meet for the verdict to be `pass`.

    `max_drop`: metric -> the largest allowed absolute drop (original − artifact), e.g. accuracy 0.01.
    `min_relative`: metric -> the smallest allowed artifact / original, e.g. accuracy 0.99 (MLPerf's form).
    Agreement metrics compare with the original, whose own agreement is 1.
    """

    min_cosine: float = 0.99
    min_top1_agreement: float | None = None
    max_latency_ms: float | None = None  # p90
    max_size_mb: float | None = None
    max_drop: dict[str, float] = field(default_factory=dict)
    min_relative: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """A trade-off: how to quantise, how to measure, and the budgets that decide the verdict."""

    name: str
    description: str
    precision: str  # "int8" | "fp32"
    budgets: Budgets
    device_precision: str | None = None  # asked of targets with their own precision (config rule 5)
    activations: str = "asymmetric"
    float_precision: str = "f32"  # layers left unquantised, where the runtime may choose (OpenVINO CPU: bf16)
    per_channel: bool = True
    calibration_method: str = "minmax"
    split_outliers: bool = True  # ONNX Runtime: MatMuls fed by GELU quantised with their outlier channels FP32
    calibration_samples: int = 64
    eval_samples: int = 32
    seed: int = 0
    sequence_length: int = 128  # text models: the length latency is measured at
    bench_min_runs: int = 50
    bench_min_seconds: float = 2.0
    bench_max_seconds: float = 20.0
    bench_batch_sizes: tuple[int, ...] = (1,)  # throughput is also measured at each size > 1
    recovery: bool = True  # an INT8 artifact that misses an accuracy budget keeps its most sensitive layers FP32
    recovery_max_fp32_fraction: float = 0.5  # at most this share of the quantised layers goes back to FP32
    recovery_seconds: float = 180.0  # wall-time bound of the search, per target
    source: str = ""


def _metric_table(low: float, high: float | None):
    """Validator of a {metric: number} table (max_drop, min_relative): known metrics, finite numbers in range."""

    def check(path, key: str, table: dict) -> dict[str, float]:
        out = {}
        for metric, value in table.items():
            if metric not in BUDGET_METRICS:
                raise UsageError(f"{path}: unknown metric '{metric}' in '{key}'{nearest(metric, list(BUDGET_METRICS), 'metrics')}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"{path}: '{key}.{metric}' must be a finite number, not {value!r}")
            if value < low or (high is not None and value > high):
                raise UsageError(f"{path}: '{key}.{metric}' = {value} is out of range [{low}, {high if high is not None else '∞'}]")
            out[metric] = float(value)
        return out

    return check


# Schema: key -> (expected python types, validator or None). Sections are one level deep.
_TARGET_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "description": ((str,), None),
    "runtime": ((str,), None),  # a registered runtime (checked in load_target)
    "device": ((str,), None),
    "execution_provider": ((str,), None),
    "graph_fusions": ((bool,), None),
    "performance_hint": ((str,), ("LATENCY", "THROUGHPUT")),
    "precision": ((str,), TARGET_PRECISIONS),
    "precisions": ((list,), "precisions"),
    "static_shapes": ((bool,), None),
    "max_opset": ((int,), (1, None)),
    "max_ir_version": ((int,), (1, None)),
    "verify_device": ((str,), ("CPU",)),
    "precompiled_blob": ((bool,), None),
    "activations": ((str,), ACTIVATIONS),
    "length_buckets": ((list,), "length buckets"),
    "contrib_ops": ((bool,), None),
    "disabled_optimizers": ((list,), "optimizer names"),
}
_PROFILE_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "description": ((str,), None),
    "precision": ((str,), PRECISIONS),
    "activations": ((str,), ACTIVATIONS),
    "per_channel": ((bool,), None),
    "calibration_method": ((str,), CALIBRATION_METHODS),
    "device_precision": ((str,), TARGET_PRECISIONS),
    "float_precision": ((str,), FLOAT_PRECISIONS),
    "split_outliers": ((bool,), None),
}
PROFILE_SECTIONS: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "budgets": {
        "min_cosine": ((float, int), (-1.0, 1.0)),
        "min_top1_agreement": ((float, int), (0.0, 1.0)),
        "max_latency_ms": ((float, int), (0.0, None)),
        "max_size_mb": ((float, int), (0.0, None)),
        "max_drop": ((dict,), _metric_table(-1.0, 1.0)),
        "min_relative": ((dict,), _metric_table(0.0, None)),
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
        "batch_sizes": ((list,), "batch sizes"),
    },
    "recovery": {
        "enabled": ((bool,), None),
        "max_fp32_fraction": ((float, int), (0.0, 1.0)),
        "seconds": ((float, int), (0.0, None)),
    },
}


def nearest(key: str, valid: list[str], what: str = "keys") -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else f" (valid {what}: {', '.join(sorted(valid))})"


def check_table(path: Path, where: str, table: dict, schema: dict, required: tuple[str, ...] = ()) -> dict:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in schema:
            raise UsageError(f"{path}: unknown key '{where}{key}'{nearest(key, list(schema))}")
        types, rule = schema[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise UsageError(f"{path}: '{where}{key}' must be {wanted}, not {value!r}")
        if rule == "batch sizes":
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096 for v in value):
                raise UsageError(f"{path}: '{where}{key}' must be a list of batch sizes from 1 to 4096, not {value!r}")
            value = tuple(value)
        if rule == "length buckets":
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65536 for v in value) \
                    or len(set(value)) != len(value):
                raise UsageError(f"{path}: '{where}{key}' must be a list of distinct sequence lengths from 1 to 65536, not {value!r}")
            value = tuple(sorted(value))
        if rule == "optimizer names":  # ONNX Runtime's graph transformer names, e.g. SkipLayerNormFusion
            if not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", v) for v in value) \
                    or len(set(value)) != len(value):
                raise UsageError(f"{path}: '{where}{key}' must be a list of distinct ONNX Runtime optimizer names "
                                 f"(such as \"SkipLayerNormFusion\"), not {value!r}")
            value = tuple(value)
        if rule == "precisions":
            if not value or not all(isinstance(v, str) and v in TARGET_PRECISIONS for v in value) or len(set(value)) != len(value):
                raise UsageError(f"{path}: '{where}{key}' must be a list of distinct precisions from {', '.join(TARGET_PRECISIONS)}, not {value!r}")
            value = tuple(value)
        if callable(rule):
            value = rule(path, f"{where}{key}", value)
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


def read_toml(path: Path) -> dict:
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
    from . import runtimes

    path = _resolve("target", name_or_path)
    raw = read_toml(path)
    try:
        runtime = runtimes.get(raw["runtime"]) if isinstance(raw.get("runtime"), str) else None
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    if runtime is not None and not runtime.builds_artifacts:
        builders = ", ".join(r.name for r in runtimes.all_runtimes() if r.builds_artifacts)
        raise UsageError(f"{path}: runtime '{runtime.name}' runs the original model only; a target needs one that builds "
                         f"artifacts ({builders})")
    extra = dict(runtime.extra_target_keys) if runtime is not None else {}
    options = check_table(path, "", {k: v for k, v in raw.items() if k in extra and k not in _TARGET_KEYS}, extra)
    data = check_table(path, "", {k: v for k, v in raw.items() if k not in options}, _TARGET_KEYS, required=("runtime", "device"))
    _runtime_keys(path, data, runtime)
    if "precisions" in data and "precision" not in data:
        raise UsageError(f"{path}: 'precisions' needs 'precision' (the one the target builds by default)")
    if "precision" in data:
        data.setdefault("precisions", (data["precision"],))
        if data["precision"] not in data["precisions"]:
            raise UsageError(f"{path}: 'precision' = {data['precision']!r} is not one of its 'precisions' ({', '.join(data['precisions'])})")
    runtime.check_target(path, data)
    return Target(name=path.stem, description=data.pop("description", ""), source=str(path), options=options, **data)


def _runtime_keys(path: Path, data: dict, runtime) -> None:
    """A runtime-specific key (some runtime's `target_keys`) set for a target of another runtime is an error."""
    from . import runtimes

    for key, value in data.items():
        owners = [r.label for r in runtimes.all_runtimes() if key in r.target_keys]
        if owners and value and key not in runtime.target_keys:
            raise UsageError(f"{path}: '{key}' is for {' and '.join(owners)} targets only")


def load_profile(name_or_path: str) -> Profile:
    path = _resolve("profile", name_or_path)
    raw = read_toml(path)
    top = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    sections = {k: v for k, v in raw.items() if isinstance(v, dict)}
    for section in sections:
        if section not in PROFILE_SECTIONS:
            raise UsageError(f"{path}: unknown section '[{section}]'{nearest(section, list(PROFILE_SECTIONS))}")
    data = check_table(path, "", top, _PROFILE_KEYS, required=("precision",))
    budgets = check_table(path, "budgets.", sections.get("budgets", {}), PROFILE_SECTIONS["budgets"], required=("min_cosine",))
    dataset = check_table(path, "data.", sections.get("data", {}), PROFILE_SECTIONS["data"])
    bench = {f"bench_{k}" if k != "sequence_length" else k: v
             for k, v in check_table(path, "benchmark.", sections.get("benchmark", {}), PROFILE_SECTIONS["benchmark"]).items()}
    recovery = {("recovery" if k == "enabled" else f"recovery_{k}"): (float(v) if k != "enabled" else v)
                for k, v in check_table(path, "recovery.", sections.get("recovery", {}), PROFILE_SECTIONS["recovery"]).items()}
    floats = {f.name for f in fields(Budgets)}
    budgets = {k: float(v) if k in floats and isinstance(v, (int, float)) else v for k, v in budgets.items()}
    return Profile(
        name=path.stem,
        description=data.pop("description", ""),
        budgets=Budgets(**budgets),
        source=str(path),
        **data,
        **dataset,
        **{k: float(v) if k.endswith("seconds") else v for k, v in bench.items()},
        **recovery,
    )


def resolve_precision(target: Target, profile: Profile) -> str:
    """What `target` builds under `profile` (rule 5); a precision the target cannot build is a usage error."""
    if target.precision is None:
        return profile.precision
    if profile.device_precision is None:
        return target.precision
    if profile.device_precision not in target.precisions:
        raise UsageError(f"profile {profile.name} asks device_precision '{profile.device_precision}', which target {target.name} "
                         f"does not support (it builds: {', '.join(target.precisions)}); choose another profile or target")
    return profile.device_precision


def list_targets() -> list[Target]:
    return [load_target(name) for name in _names("targets")]


def list_profiles() -> list[Profile]:
    return [load_profile(name) for name in _names("profiles")]


# ------------------------------------------------------------------ overrides (the command line's budgets and data sizes)

OVERRIDE_BUDGETS = ("min_cosine", "min_top1_agreement", "max_latency_ms", "max_size_mb", "max_drop", "min_relative")
OVERRIDE_DATA = ("calibration_samples", "eval_samples", "seed")


def option_name(key: str) -> str:
    """The command-line option for an override key: max_drop -> --max-drop."""
    return "--" + key.replace("_", "-")


def parse_metric_option(text: str, option: str) -> tuple[str, float]:
    """`METRIC=X` (e.g. accuracy=0.01) -> ("accuracy", 0.01); the metric is checked later, with the range."""
    name, sep, number = str(text).partition("=")
    name = name.strip()
    try:
        value = float(number)
    except ValueError:
        value = None
    if not sep or not name or value is None:
        raise UsageError(f"{option} {text!r}: expected METRIC=NUMBER, e.g. accuracy=0.01 (metrics: {', '.join(BUDGET_METRICS)})")
    return name, value


def apply_overrides(profile: Profile, overrides: Mapping[str, Any] | None) -> Profile:
    """The profile with `overrides` applied; None values are ignored.

    Keys: min_cosine, min_top1_agreement, max_latency_ms, max_size_mb, calibration_samples, eval_samples,
    seed (numbers), and max_drop, min_relative ({metric: number}, or `METRIC=X` strings), merged over the
    profile's own tables. Every value is checked as strictly as a profile's; errors name the option.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None and not (isinstance(v, (list, tuple)) and not v)}
    for key in given:
        if key not in OVERRIDE_BUDGETS + OVERRIDE_DATA:
            raise UsageError(f"unknown override '{key}'{nearest(key, list(OVERRIDE_BUDGETS + OVERRIDE_DATA))}")
    budgets: dict[str, Any] = {}
    for key in OVERRIDE_BUDGETS:
        if key not in given:
            continue
        value = given[key]
        option = option_name(key)
        if key in ("max_drop", "min_relative"):
            if not isinstance(value, Mapping):
                value = dict(parse_metric_option(item, option) for item in ([value] if isinstance(value, str) else value))
            checked = check_table("command line", "", {option: dict(value)}, {option: PROFILE_SECTIONS["budgets"][key]})[option]
            budgets[key] = {**getattr(profile.budgets, key), **checked}
        else:
            checked = check_table("command line", "", {option: value}, {option: PROFILE_SECTIONS["budgets"][key]})[option]
            budgets[key] = float(checked)
    data = {key: check_table("command line", "", {option_name(key): given[key]},
                        {option_name(key): PROFILE_SECTIONS["data"][key]})[option_name(key)]
            for key in OVERRIDE_DATA if key in given}
    if not budgets and not data:
        return profile
    return replace(profile, budgets=replace(profile.budgets, **budgets), **data)
