"""How the driver reports progress: plain lines (logs, pipes), nothing (tests), or rich
progress bars (a terminal). Each receives the same four calls."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpcopt.store.confirm import format_confirmed


@dataclass
class TrialOutcome:
    """How a trial ended: ``completed``, ``failed`` (with ``error``) or ``skipped``; for a
    trial whose problem confirms winners, the confirmed best's mean and standard error."""

    name: str
    status: str
    evaluations: int
    best_value: float | None
    error: str = ""
    confirmed_value: float | None = None
    confirmed_se: float | None = None


class Reporter(Protocol):
    """Receives progress from the driver (the CLI prints it; tests may record it)."""

    def trial_started(self, trial: str, done: int, expected: int | None) -> None: ...

    def batch_done(
        self, trial: str, done: int, expected: int | None, best: float | None
    ) -> None: ...

    def trial_finished(self, outcome: TrialOutcome) -> None: ...

    def trial_warning(self, trial: str, message: str) -> None: ...


class LineReporter:
    """Plain progress lines, at most one per ``every_s`` seconds per trial (log-file friendly)."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.stream = stream if stream is not None else sys.stderr  # as it is now, not at import
        self.every_s = every_s
        self._last: dict[str, float] = {}  # per trial: several trials run at once

    def _say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def trial_started(self, trial: str, done: int, expected: int | None) -> None:
        resumed = f", resuming after {done} evaluations" if done else ""
        self._say(f"{trial}: started (expects {expected or '?'} evaluations{resumed})")
        self._last[trial] = time.monotonic()

    def batch_done(self, trial: str, done: int, expected: int | None, best: float | None) -> None:
        if time.monotonic() - self._last.get(trial, 0.0) >= self.every_s:
            self._last[trial] = time.monotonic()
            self._say(f"{trial}: {done}/{expected or '?'} evaluations, best {_fmt(best)}")

    def trial_finished(self, outcome: TrialOutcome) -> None:
        tail = f": {outcome.error}" if outcome.error else ""
        if outcome.confirmed_value is not None:
            tail = f", confirmed {format_confirmed(outcome.confirmed_value, outcome.confirmed_se)}"
        self._say(
            f"{outcome.name}: {outcome.status} after {outcome.evaluations} evaluations, "
            f"best {_fmt(outcome.best_value)}{tail}"
        )

    def trial_warning(self, trial: str, message: str) -> None:
        self._say(f"{trial}: warning: {message}")


class SilentReporter:
    """Reports nothing (``--quiet``)."""

    def trial_started(self, trial: str, done: int, expected: int | None) -> None:
        pass

    def batch_done(self, trial: str, done: int, expected: int | None, best: float | None) -> None:
        pass

    def trial_finished(self, outcome: TrialOutcome) -> None:
        pass

    def trial_warning(self, trial: str, message: str) -> None:
        pass


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


class ProgressReporter:
    """``hpcopt run`` in a terminal: one progress bar per trial, with its best value.

    (Output that is not a terminal, such as a Slurm log, gets the driver's plain
    :class:`LineReporter` lines instead.)
    """

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
            console=console or Console(stderr=True),
        )  # fmt: skip
        self._tasks: dict[str, Any] = {}

    def trial_started(self, trial: str, done: int, expected: int | None) -> None:
        if not self._tasks:
            self.progress.start()
        self._tasks[trial] = self.progress.add_task(trial, total=expected, completed=done, best="-")

    def batch_done(self, trial: str, done: int, expected: int | None, best: float | None) -> None:
        best_text = "-" if best is None else f"{best:.6g}"
        self.progress.update(self._tasks[trial], completed=done, total=expected, best=best_text)

    def trial_finished(self, outcome: TrialOutcome) -> None:
        task = self._tasks.get(outcome.name)
        if task is not None:
            style = "green" if outcome.status == "completed" else "red"
            text = f"[{style}]{outcome.name} {outcome.status}"
            if outcome.confirmed_value is not None:
                confirmed = format_confirmed(outcome.confirmed_value, outcome.confirmed_se)
                text += f"[/{style}], confirmed {confirmed}"
            self.progress.update(task, description=text)
        if outcome.error:
            self.progress.console.print(f"[red]{outcome.name}: {outcome.error}")

    def trial_warning(self, trial: str, message: str) -> None:
        self.progress.console.print(f"[yellow]{trial}: warning: {message}")

    def close(self) -> None:
        if self._tasks:
            self.progress.stop()
