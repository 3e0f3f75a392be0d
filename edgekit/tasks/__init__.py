"""Task families: one module each, registered by decorator; the contract is `base.py`."""

from .base import TaskFamily, for_task, get, names, register, unregister

__all__ = ["TaskFamily", "for_task", "get", "names", "register", "unregister"]
