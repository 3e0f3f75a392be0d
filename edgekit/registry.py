"""One registry of named units, as the runtime and task-family axes use it.

Rules:
1. `register` is a class decorator: the class's `name` maps to one instance of it; a later registration of
   the same name replaces the earlier one. A class without a name is a TypeError (a bug in the unit).
2. The first read (`get`, `find`, `names`, `units`) imports every module of the unit package except
   `base` and private ones, then every entry point of the registry's group: a unit is one module.
3. `get(name)` of an unknown name is a usage error that lists the registered names.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata
from pathlib import Path
from typing import Generic, TypeVar

from .errors import UsageError

Unit = TypeVar("Unit")


class Registry(Generic[Unit]):
    def __init__(self, what: str, package: str, folder: Path, entry_points: str | None = None):
        self.what, self._package, self._folder, self._group = what, package, folder, entry_points
        self._units: dict[str, Unit] = {}
        self._discovered = False

    def register(self, cls: type) -> type:
        """Class decorator (rule 1)."""
        if not getattr(cls, "name", ""):
            raise TypeError(f"{cls.__name__}: a {self.what} needs a name")
        self._units[cls.name] = cls()
        return cls

    def unregister(self, name: str) -> None:
        self._units.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for module in pkgutil.iter_modules([str(self._folder)]):
            if module.name != "base" and not module.name.startswith("_"):
                importlib.import_module(f"{self._package}.{module.name}")
        if self._group:
            for entry in metadata.entry_points(group=self._group):
                entry.load()

    def get(self, name: str) -> Unit:
        found = self.find(name)
        if found is None:
            raise UsageError(f"unknown {self.what} '{name}' (registered: {', '.join(self.names())})")
        return found

    def find(self, name: str) -> Unit | None:
        self._discover()
        return self._units.get(name)

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._units)

    def units(self) -> list[Unit]:
        return [self._units[name] for name in self.names()]
