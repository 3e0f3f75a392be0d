"""Progress: what a compile or a benchmark is doing, as events, for people and for pipelines.

Rules:
1. The library talks to a `Progress`: `stage(text)` (a stage line), `step(name, target)` (a build step
   starts), `note(text)` and `task(label, total, target=...)`, a context that yields
   `advance(k, figure=None, total=None)`: item k of `total` is done (attempt k of n with its figure,
   calibration sample k of n, benchmark round k of n). `total` may be None (not known yet) and revised
   by `advance`. Leaving the context is the task's `done` event.
2. `NullProgress` (the default for the Python API) says nothing; the library changes no process-wide state.
3. `ConsoleProgress` (the CLI's default) writes to stderr: on a terminal a live bar per task (rich) with
   elapsed time and an estimate of the time left; otherwise one line per event, progress lines at most
   one a second per task (the first, the last and any with a figure always), so CI logs stay readable.
4. `JsonProgress` (`--progress json`) writes one JSON object per line per event (`Event`, schema in
   docs/cli.md), progress events at most one per 0.25 s per task on the same terms.
5. Time left is the mean time per item times the items left, and never beyond the task's `bound_s`
   (a time bound the step itself keeps, as recovery's).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Protocol

Advance = Callable[..., None]  # advance(k, figure=None, total=None)
INDENT = " " * 10


class Progress(Protocol):
    def stage(self, text: str) -> None: ...

    def step(self, name: str, target: str | None = None) -> None: ...

    def note(self, text: str) -> None: ...

    def task(self, label: str, total: int | None, target: str | None = None, figure: str | None = None,
             bound_s: float | None = None) -> Any: ...


class NullProgress:
    def stage(self, text: str) -> None:
        pass

    def step(self, name: str, target: str | None = None) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    @contextmanager
    def task(self, label: str, total: int | None, target: str | None = None, figure: str | None = None,
             bound_s: float | None = None) -> Iterator[Advance]:
        yield lambda k, figure=None, total=None: None


@dataclass
class Event:
    """One event (docs/cli.md, "Progress events"); None fields are left out of the JSON line."""

    event: str  # stage, step, note, progress, done
    t_s: float  # seconds since the run started
    stage: str | None = None  # the latest stage line
    step: str | None = None  # the build step running, if any
    target: str | None = None
    task: str | None = None  # what is counted: "calibration", "recovery attempt", "benchmark round", ...
    k: int | None = None
    n: int | None = None
    elapsed_s: float | None = None  # since the task started
    eta_s: float | None = None
    figure: float | None = None
    figure_name: str | None = None
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value if not isinstance(value, float) or math.isfinite(value) else str(value)  # "nan": JSON has none
                for key, value in asdict(self).items() if value is not None}


def eta(elapsed: float, k: int, total: int | None, bound_s: float | None = None, since_first: float | None = None
        ) -> float | None:
    """Seconds left (rule 5): None when nothing is done yet or the total is unknown. From the second item on,
    the time per item is measured from the first one (what ran before it, set-up, is not an item)."""
    if k <= 0 or not total:
        return None if bound_s is None else max(0.0, bound_s - elapsed)
    per_item = since_first / (k - 1) if k > 1 and since_first is not None else elapsed / k
    left = per_item * max(0, total - k)
    return left if bound_s is None else max(0.0, min(left, bound_s - elapsed))


class _Task:
    """One running task's bookkeeping: its label, counts and when it last reported."""

    def __init__(self, label: str, total: int | None, target: str | None, figure: str | None, bound_s: float | None):
        self.label, self.total, self.target, self.figure_name, self.bound_s = label, total, target, figure, bound_s
        self.started = time.monotonic()
        self.first: float | None = None  # when the first item was done
        self.k, self.figure, self.shown_at = 0, None, None  # shown_at: when a progress event last went out

    def update(self, k: int, figure: float | None, total: int | None) -> None:
        self.k = k
        if self.first is None:
            self.first = time.monotonic()
        if total is not None:
            self.total = total
        if figure is not None:
            self.figure = figure

    def due(self, interval: float, figure: float | None) -> bool:
        """Whether this advance is reported (rules 3, 4): the first, the last, one with a figure, or `interval` on."""
        now = time.monotonic()
        last = self.total is not None and self.k >= self.total
        if self.shown_at is None or last or figure is not None or now - self.shown_at >= interval:
            self.shown_at = now
            return True
        return False

    def event(self, kind: str, t_s: float, stage: str | None, step: str | None) -> Event:
        now = time.monotonic()
        left = eta(now - self.started, self.k, self.total, self.bound_s, None if self.first is None else now - self.first)
        return Event(kind, t_s, stage, step, self.target, self.label, self.k, self.total, round(now - self.started, 3),
                     None if kind == "done" else _rounded(left), self.figure,
                     self.figure_name if self.figure is not None else None)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class EventProgress(NullProgress):
    """Turns the calls of rule 1 into `Event`s for `emit`; what each subclass writes is its own."""

    interval = 1.0

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._stage: str | None = None
        self._step: str | None = None

    def emit(self, event: Event) -> None:
        raise NotImplementedError

    def _now(self) -> float:
        return round(time.monotonic() - self._start, 3)

    def stage(self, text: str) -> None:
        self._stage, self._step = text, None
        self.emit(Event("stage", self._now(), stage=text))

    def step(self, name: str, target: str | None = None) -> None:
        self._step = name
        self.emit(Event("step", self._now(), self._stage, name, target))

    def note(self, text: str) -> None:
        self.emit(Event("note", self._now(), self._stage, self._step, text=text))

    @contextmanager
    def task(self, label: str, total: int | None, target: str | None = None, figure: str | None = None,
             bound_s: float | None = None) -> Iterator[Advance]:
        state = _Task(label, total, target, figure, bound_s)

        def advance(k: int, figure: float | None = None, total: int | None = None) -> None:
            state.update(k, figure, total)
            self.advanced(state, figure)

        self.begin(state)
        try:
            yield advance
        finally:
            self.end(state)
            self.emit(state.event("done", self._now(), self._stage, self._step))

    def advanced(self, state: _Task, figure: float | None) -> None:
        """A task moved: a progress event when one is due (rules 3, 4)."""
        if state.due(self.interval, figure):
            self.emit(state.event("progress", self._now(), self._stage, self._step))

    def begin(self, state: _Task) -> None:
        """A task starts (the bar's hook)."""

    def end(self, state: _Task) -> None:
        """A task ends, before its `done` event (the bar's hook)."""


class JsonProgress(EventProgress):
    """One JSON object per line per event (rule 4)."""

    interval = 0.25

    def __init__(self, stream=None, interval: float | None = None):
        super().__init__()
        self.stream = stream or sys.stderr
        if interval is not None:
            self.interval = interval

    def emit(self, event: Event) -> None:
        print(json.dumps(event.to_dict(), allow_nan=False), file=self.stream, flush=True)


def plain_line(event: Event) -> str:
    """The line a `progress` or `done` event is shown as when no bar is drawn."""
    who = f"{event.target}: " if event.target else ""
    if event.event == "done":
        count = f"{event.k} of {event.n}" if event.n is not None else f"{event.k}"
        return f"{INDENT}{who}{event.task} done: {count} in {event.elapsed_s:.1f} s"
    count = f"{event.k} of {event.n}" if event.n is not None else f"{event.k}"
    left = f", about {event.eta_s:.0f} s left" if event.eta_s is not None else ""
    figure = f", {event.figure_name or 'figure'} {_figure(event.figure)}" if event.figure is not None else ""
    return f"{INDENT}{who}{event.task} {count}: {event.elapsed_s:.1f} s{left}{figure}"


def _figure(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else str(value)


class ConsoleProgress(EventProgress):
    """Stage lines on stderr; a live bar per task on a terminal, one line per event otherwise (rule 3)."""

    def __init__(self, stream=None, tty: bool | None = None, interval: float | None = None):
        super().__init__()
        self.stream = stream or sys.stderr
        self.tty = (hasattr(self.stream, "isatty") and self.stream.isatty()) if tty is None else tty
        if interval is not None:
            self.interval = interval
        self._bars = _Bars(self.stream) if self.tty else None

    def _echo(self, text: str) -> None:
        if self._bars is not None and self._bars.live:
            self._bars.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def emit(self, event: Event) -> None:
        if event.event == "stage":
            self._echo(f"[{event.t_s:6.1f}s] {event.stage}")
        elif event.event == "note":
            self._echo(f"{INDENT}note: {event.text}")
        elif event.event == "step":
            self._echo(f"{INDENT}{event.target + ': ' if event.target else ''}step: {event.step}")
        elif self._bars is None:
            self._echo(plain_line(event))

    def advanced(self, state: _Task, figure: float | None) -> None:
        if self._bars is not None:
            self._bars.show(state)
        else:
            super().advanced(state, figure)

    def begin(self, state: _Task) -> None:
        if self._bars is not None:
            self._bars.begin(state)

    def end(self, state: _Task) -> None:
        if self._bars is not None:
            self._bars.end(state)


class _Bars:
    """Live bars drawn by rich on a terminal: one per running task, the outermost left on screen when done."""

    def __init__(self, stream):
        from rich.console import Console

        self.console = Console(file=stream, force_terminal=True, highlight=False, soft_wrap=True)
        self.rich = None
        self.ids: dict[int, Any] = {}

    @property
    def live(self) -> bool:
        return self.rich is not None

    def print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def begin(self, state: _Task) -> None:
        from rich import progress as rp

        if self.rich is None:
            self.rich = rp.Progress(
                rp.TextColumn(INDENT + "{task.description}"), rp.BarColumn(bar_width=30), rp.MofNCompleteColumn(),
                rp.TimeElapsedColumn(), rp.TextColumn("elapsed,"), rp.TimeRemainingColumn(), rp.TextColumn("left"), rp.TextColumn("{task.fields[figure]}"),
                console=self.console, redirect_stdout=False, redirect_stderr=False, refresh_per_second=4)
            self.rich.start()
        who = f"{state.target}: " if state.target else ""
        self.ids[id(state)] = self.rich.add_task(f"{who}{state.label}", total=state.total, figure="")

    def show(self, state: _Task) -> None:
        figure = f"{state.figure_name or 'figure'} {_figure(state.figure)}" if state.figure is not None else ""
        self.rich.update(self.ids[id(state)], completed=state.k, total=state.total, figure=figure)  # drawn 4 times a second

    def end(self, state: _Task) -> None:
        task_id = self.ids.pop(id(state))
        if self.ids:  # a nested task: its bar goes, its parent's stays
            self.rich.remove_task(task_id)
            return
        self.rich.update(task_id, completed=state.k, total=state.total if state.total else max(state.k, 1))
        self.rich.stop()
        self.rich = None


def task_if(progress, wanted: bool, label: str, total: int | None, target: str | None = None):
    """`progress.task(label, total, target)` when `wanted`, else a context that yields None (nothing counted)."""
    return progress.task(label, total, target) if wanted else nullcontext(None)


@contextmanager
def rounds(progress, label: str, target: str | None = None) -> Iterator[Callable[[float], None]]:
    """A task fed with the fraction done (0..1) once a round, as the benchmark harness reports it: round k of
    about k / fraction."""
    with progress.task(label, None, target) as advance:
        k = 0

        def on_fraction(fraction: float) -> None:
            nonlocal k
            k += 1
            advance(k, total=max(k, math.ceil(k / fraction)) if fraction > 0 else None)

        yield on_fraction


def make_progress(mode: str, quiet: bool = False, stream=None) -> NullProgress:
    """The CLI's `--progress auto|plain|json|none` and `-q` (no output for people; a JSON stream asked for stays)."""
    if mode == "json":
        return JsonProgress(stream)
    if quiet or mode == "none":
        return NullProgress()
    return ConsoleProgress(stream, tty=False if mode == "plain" else None)


def quiet_libraries(debug: bool) -> None:
    """The command owns the process: libraries' own warnings are held to errors unless --debug. (The library
    itself changes no process-wide state.)"""
    if debug:
        return
    for name in ("nncf", "optimum", "transformers", "torch.onnx", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # edgekit's own warnings (a damaged cache entry, a bundle put back) still reach the user: held at the root's
    # ERROR they were silent
    logging.getLogger("edgekit").setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()
