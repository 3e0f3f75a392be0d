"""Progress for people: stage lines and progress bars on stderr, nothing when quiet.

The library talks to a `Progress`; `NullProgress` (the default for the Python API) says nothing.
Bars are drawn only on a terminal, so logs of build pipelines stay clean.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator


class NullProgress:
    def stage(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    @contextmanager
    def bar(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda n=1: None


class ConsoleProgress(NullProgress):
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._start = time.monotonic()

    def _echo(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def stage(self, text: str) -> None:
        self._echo(f"[{time.monotonic() - self._start:6.1f}s] {text}")

    def note(self, text: str) -> None:
        self._echo(f"          note: {text}")

    @contextmanager
    def bar(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        if not self.tty:
            yield lambda n=1: None
            return
        import click

        with click.progressbar(length=total, label=f"          {label}", file=self.stream, width=30) as bar:
            yield bar.update


@contextmanager
def fraction_bar(progress, label: str) -> Iterator[Callable[[float], None]]:
    """A bar fed with the fraction done (0..1), as the benchmark harness reports it."""
    with progress.bar(label, 100) as update:
        done = 0

        def on_fraction(fraction: float) -> None:
            nonlocal done
            now = int(fraction * 100)
            if now > done:
                update(now - done)
                done = now

        yield on_fraction


def quiet_libraries(debug: bool) -> None:
    """The command owns the process: libraries' own warnings are held to errors unless --debug. (The library
    itself changes no process-wide state.)"""
    if debug:
        return
    for name in ("nncf", "optimum", "transformers", "torch.onnx", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()
