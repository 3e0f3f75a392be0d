"""Which targets' devices are present on this machine, and if not, why: each runtime probes once.

Rules:
1. Each runtime's `probe()` (edgekit/runtimes/) lists what it can really run on here and records why a
   device is missing, in the runtime's own words where it gives any.
2. `availability(target)` says whether a target's device is present and, when it is not, one line
   saying why, e.g. "OpenVINO 2026.4.1 sees no NPU here (devices: CPU): ...". A runtime.json's
   `RuntimeRecord.availability()` asks the same of the device it records.
3. `edgekit targets` and `compile` use these same functions; tests fake a device list by replacing a
   runtime's probe, never by pretending hardware exists elsewhere.
4. Every report records the machine it was timed on (`benchmark.machine`): bundles built on different machines
   (a CI matrix) are reviewed together, each marked with its own; speedups are only ever within one bundle.
"""

from __future__ import annotations

from . import runtimes
from .config import Target
from .runtimes.base import Availability, RuntimeDevices

__all__ = ["Availability", "RuntimeDevices", "availability", "machine", "probe", "probe_all"]


def machine() -> dict:
    """Rule 4: the machine a bundle was timed on: CPU model, cores, system and runtime versions."""
    import os
    import platform
    from importlib import metadata

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                    if line.startswith("model name")), "")
    except OSError:
        pass
    versions = {}
    for name in ("onnxruntime", "onnxruntime-gpu", "openvino", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"cpu": cpu or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version(), "runtimes": versions}


def probe(runtime: str) -> RuntimeDevices:
    return runtimes.get(runtime).probe()


def availability(target: Target, found: RuntimeDevices | None = None) -> Availability:
    """Is `target`'s device present here? `found`: the runtime's probe (probed now when None)."""
    runtime = runtimes.get(target.runtime)
    return runtime.availability(runtime.placement(target), found or runtime.probe())


def probe_all(targets: list[Target]) -> dict[str, Availability]:
    """Target name -> availability, probing each runtime once."""
    found = {name: probe(name) for name in {t.runtime for t in targets}}
    return {t.name: availability(t, found[t.runtime]) for t in targets}
