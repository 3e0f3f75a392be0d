"""The runtimes: one module each, registered by decorator; the contract is `base.py`.

`get(name)` returns a registered runtime (an unknown name fails with the registered ones); `names()` lists
them. The session classes live in their runtime's module and are importable from here too.
"""

from __future__ import annotations

from typing import Any

from .base import (Availability, Feed, LazySession, RecoveryInputs, Runtime, RuntimeDevices, RuntimeRecord, Session, all_runtimes,
                   default_threads, find, get, names, open_artifact, open_recorded, register, unregister)

# Names importable from `edgekit.runtimes` that live in a runtime's module (imported when first asked for,
# so `from edgekit.runtimes import Feed` loads no runtime library).
_LAZY = {
    "OrtSession": "onnxruntime", "ort_options": "onnxruntime", "DISABLE_OPTIMIZERS_KEY": "onnxruntime",
    "recorded_disabled_optimizers": "onnxruntime",
    "OpenVinoSession": "openvino", "BucketPlan": "openvino", "plan_buckets": "openvino", "recorded_buckets": "openvino",
    "TorchSession": "pytorch", "ModuleSession": "pytorch", "torch_settings": "pytorch",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["Availability", "Feed", "LazySession", "RecoveryInputs", "Runtime", "RuntimeDevices", "RuntimeRecord", "Session",
           "all_runtimes",
           "default_threads", "find", "get", "names", "open_artifact", "open_recorded", "register", "unregister", *_LAZY]
