"""Which targets' devices are present on this machine, and if not, why: one probe per runtime.

Rules:
1. `probe_onnxruntime()` lists the execution providers ONNX Runtime can really use here: a listed
   provider other than the CPU's counts only when a one-node session actually runs on it
   (onnxruntime-gpu lists CUDA even where no GPU or driver is). `probe_openvino()` lists
   `openvino.Core().available_devices`. Each probe also records why a device is missing, in the
   runtime's own words where it gives any (a plugin that cannot load, a driver that is absent).
2. `availability(target)` says whether a target's device is present and, when it is not, one line
   saying why, e.g. "OpenVINO 2026.4.1 sees no NPU here (devices: CPU): ...".
3. `edgekit targets` and `compile` use these same functions; tests fake a device list by replacing
   a probe, never by pretending hardware exists elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import Target

# What `pip install edgekit[gpu]` brings; named in the reasons so the fix is one line away.
GPU_EXTRA = "install onnxruntime-gpu in place of onnxruntime (pip install edgekit[gpu]; see the README)"


@dataclass(frozen=True)
class RuntimeDevices:
    """What one runtime can run on here."""

    runtime: str  # "onnxruntime" | "openvino"
    version: str
    devices: tuple[str, ...]  # ONNX Runtime: execution providers; OpenVINO: device names
    problems: dict[str, str] = field(default_factory=dict)  # device -> why it is not usable, in the runtime's words


@dataclass(frozen=True)
class Availability:
    present: bool
    reason: str = ""  # why not, when not present


def _first_line(text: object, limit: int = 200) -> str:
    """The runtime's message without its source locations and library paths."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip() and not line.strip().startswith("Exception from")]
    line = lines[-1] if lines else str(text).strip()
    return re.sub(r'Cannot load library "(?:[^"]*/)?([^"/]+)"', r"\1", line)[:limit]


def _attaches(provider: str) -> str:
    """'' when a one-node model runs on `provider`, else why not."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=[provider, "CPUExecutionProvider"])
        session.run(None, {"x": np.zeros(1, dtype=np.float32)})
    except Exception as exc:
        return _first_line(exc)
    if provider not in session.get_providers():
        return f"it is listed, but a session could not start on it (no device or driver); it fell back to {', '.join(session.get_providers())}"
    return ""


def probe_onnxruntime() -> RuntimeDevices:
    import onnxruntime as ort

    usable, problems = [], {}
    for provider in ort.get_available_providers():
        if provider == "CPUExecutionProvider":
            usable.append(provider)
            continue
        why = _attaches(provider)
        if why:
            problems[provider] = why
        else:
            usable.append(provider)
    return RuntimeDevices("onnxruntime", ort.__version__, tuple(usable), problems)


def probe_openvino() -> RuntimeDevices:
    import openvino as ov

    core = ov.Core()
    devices = tuple(core.available_devices)
    problems = {}
    for device in ("GPU", "NPU"):
        if any(d.split(".")[0] == device for d in devices):
            continue
        try:
            found = core.get_property(device, "AVAILABLE_DEVICES")
            problems[device] = f"its {device} plugin finds no device" if not found else f"its {device} plugin lists {found}"
            if device == "NPU" and not found:
                try:
                    core.get_property("NPU", "NPU_DRIVER_VERSION")
                except Exception as exc:
                    problems[device] += f" ({_first_line(exc)}: no NPU driver)"
        except Exception as exc:
            problems[device] = f"its {device} plugin cannot load ({_first_line(exc)})"
    return RuntimeDevices("openvino", ov.get_version().split("-")[0], devices, problems)


def probe(runtime: str) -> RuntimeDevices:
    return probe_onnxruntime() if runtime == "onnxruntime" else probe_openvino()


def availability(target: Target, found: RuntimeDevices | None = None) -> Availability:
    """Is `target`'s device present here? `found`: the runtime's probe (probed now when None)."""
    found = found or probe(target.runtime)
    if target.runtime == "onnxruntime":
        provider = target.execution_provider or "CPUExecutionProvider"
        if provider in found.devices:
            return Availability(True)
        problem = found.problems.get(provider)
        if problem:
            return Availability(False, f"onnxruntime {found.version} cannot use {provider} here: {problem}")
        hint = f"; {GPU_EXTRA}" if provider == "CUDAExecutionProvider" else ""
        return Availability(False, f"onnxruntime {found.version} has no {provider} here "
                                   f"(providers: {', '.join(found.devices) or 'none'}){hint}")
    device = target.device.split(".")[0]
    if any(d.split(".")[0] == device for d in found.devices):
        return Availability(True)
    problem = found.problems.get(device)
    return Availability(False, f"OpenVINO {found.version} sees no {device} here (devices: {', '.join(found.devices) or 'none'})"
                               + (f": {problem}" if problem else ""))


def probe_all(targets: list[Target]) -> dict[str, Availability]:
    """Target name -> availability, probing each runtime once."""
    found = {runtime: probe(runtime) for runtime in {t.runtime for t in targets}}
    return {t.name: availability(t, found[t.runtime]) for t in targets}
