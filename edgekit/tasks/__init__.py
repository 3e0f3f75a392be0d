"""Task families: one module each, registered by decorator; the contract is `base.py`."""

from .base import REGISTRY, TaskFamily, for_model, for_task, get, names, register, unregister

__all__ = ["REGISTRY", "TaskFamily", "for_model", "for_task", "get", "names", "register", "unregister"]
