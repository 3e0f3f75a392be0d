"""Typed failures, each with the exit code the CLI uses for it.

1. `UsageError` (exit 2): the user gave something edgekit cannot use — a missing path, an unknown
   target, a malformed TOML file, a model with free dimensions and no `--shape`. The message is one
   line that says what to do.
2. `ExportMismatchError` (exit 3): the exported graph does not compute what the original computes.
3. `InternalError` (exit 3): anything else that went wrong inside edgekit or a runtime.

4. The environment is the user's to fix too: an `OSError` that says the disk is full, the location is
   read-only or not writable, a part of a path is a file, a name is too long or links loop is a usage
   error (`environment_error`), naming the path.

A missed budget is not an error: the bundle is written and the verdict says `fail` (exit 1).
"""

from __future__ import annotations

import errno


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


# Rule 4: what each environment failure means, and what to do about it.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device: free some space there, or choose a location on another disk",
    errno.EDQUOT: "disk quota exceeded: free some space there, or choose a location on another disk",
    errno.EROFS: "read-only file system: choose a writable location",
    errno.EACCES: "permission denied: give a path you can read and write, or fix its permissions",
    errno.EPERM: "operation not permitted: give a path you can read and write, or fix its permissions",
    errno.ENOTDIR: "a part of this path is a file, not a folder: choose another path",
    errno.EISDIR: "is a folder where a file was expected: choose another path",
    errno.ENAMETOOLONG: "file name too long: use a shorter name",
    errno.ELOOP: "too many levels of symbolic links (a link loop): fix the link or give the real path",
}


def environment_error(exc: BaseException | None) -> UsageError | None:
    """Rule 4: the usage error an environment `OSError` (or one it was raised from) stands for, else None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            where = exc.filename2 if exc.errno in (errno.ENOSPC, errno.EDQUOT) and exc.filename2 else exc.filename
            return UsageError(f"{where or 'a file edgekit writes'}: {ENVIRONMENT_ERRNOS[exc.errno]}")
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def first_line(exc: BaseException) -> str:
    """What a library's exception says, for a one-line message: its first line, else its type's name."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
