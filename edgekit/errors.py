"""Typed failures, each with the exit code the CLI uses for it.

1. `UsageError` (exit 2): the user gave something edgekit cannot use — a missing path, an unknown
   target, a malformed TOML file, a model with free dimensions and no `--shape`. The message is one
   line that says what to do.
2. `ExportMismatchError` (exit 3): the exported graph does not compute what the original computes.
3. `InternalError` (exit 3): anything else that went wrong inside edgekit or a runtime.

A missed budget is not an error: the bundle is written and the verdict says `fail` (exit 1).
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 3


class UsageError(EdgekitError):
    """Bad usage or bad input: the user can fix it."""

    exit_code = 2


class InternalError(EdgekitError):
    """A stage failed for a reason the user did not cause."""

    exit_code = 3


class ExportMismatchError(InternalError):
    """The exported ONNX graph disagrees with the PyTorch model beyond tolerance."""


EXIT_OK = 0
EXIT_BUDGET_MISSED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
