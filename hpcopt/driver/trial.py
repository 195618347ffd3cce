"""One trial, in small steps: its metadata, its method resumed from the last checkpoint,
its budget, and one batch at a time, in two halves so that the driver can keep several
trials' batches in flight on one engine::

    submit:    batch = method.ask()                      # unit-cube points
               engine.submit(problem, x)                 # natural units
    complete:  method.tell(batch, losses, gradients)     # losses: minimised, NaN if failed
               writer.checkpoint(rows, method.state_dict())

A trial's own asks, tells and checkpoints happen in the same order whatever else runs
beside it, so its history does not depend on what it shared the engine with.

When the budget is spent, a problem with a confirmation has its best points re-scored
(an interrupted confirmation continues). A trial that raises is recorded as failed; a
store that cannot be written stops the campaign instead, the trial left at its last
checkpoint.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from hpcopt import config as cfg
from hpcopt.config.registry import build_method
from hpcopt.core.evaluation import Evaluation, describe_exception
from hpcopt.core.space import Space
from hpcopt.driver.reporters import Reporter, TrialOutcome
from hpcopt.engine.base import Engine, Finished
from hpcopt.methods.base import Batch, Method
from hpcopt.problems.base import ProblemConfig
from hpcopt.store.campaign_store import CampaignStore, History, StoreError, TrialRecord, TrialWriter
from hpcopt.store.confirm import ConfirmationRecord, confirm


def open_trial(
    trial: cfg.TrialConfig,
    store: CampaignStore,
    engine: Engine,
    reporter: Reporter,
    retry_failed: bool = False,
) -> TrialRun | TrialOutcome:
    """The trial resumed from its last checkpoint, ready for its next batch; or, for a
    trial that ended before this run (completed, or failed and not retried), its outcome."""
    record, set_aside = store.recover(trial.name)
    for message in set_aside:
        engine.on_event("trial_warning", trial=trial.name, message=message)
        reporter.trial_warning(trial.name, message)
    if record.status == "completed" or (record.status == "failed" and not retry_failed):
        return _outcome(record, trial.problem.direction)
    run = TrialRun(trial, store, record, engine, reporter)
    reporter.trial_started(trial.name, run.done, run.expected)
    return run


def trial_meta(trial: cfg.TrialConfig, space: Space) -> dict[str, Any]:
    """What the store keeps about a trial beside its history (names, config, direction)."""
    return {
        "trial": trial.name,
        "method": trial.method.name,
        "problem": trial.problem.label,
        "seed": trial.seed,
        "direction": trial.problem.direction,
        "parameters": list(space.names),
        "config": trial.model_dump(mode="json", exclude_unset=True),
    }


def resume_method(trial: cfg.TrialConfig, space: Space, record: TrialRecord) -> Method:
    """The trial's method, built from its config and seed and given its last checkpoint."""
    problem = trial.problem
    method = build_method(
        trial.method,
        space,
        trial.seed,
        feasible=lambda u: problem.feasible(space.decode(u)),
        has_gradient=problem.gradient_mask(),
    )
    if record.method_state is not None:
        method.load_state_dict(record.method_state)
    return method


def budget(trial: cfg.TrialConfig, method: Method) -> int | None:
    """How many evaluations the trial will take: the method's own count, capped by the
    trial's ``max_evaluations``; None when neither knows."""
    expected = method.expected_evaluations
    if trial.max_evaluations is not None:
        expected = min(expected or trial.max_evaluations, trial.max_evaluations)
    return expected


class TrialRun:
    """A trial under way: its method, its writer, and what it has done so far."""

    def __init__(
        self,
        trial: cfg.TrialConfig,
        store: CampaignStore,
        record: TrialRecord,
        engine: Engine,
        reporter: Reporter,
    ) -> None:
        self.trial = trial
        self.root = store.root
        self.engine = engine
        self.reporter = reporter
        self.space = trial.problem.space()
        self.method = resume_method(trial, self.space, record)
        self.sign = -1.0 if trial.problem.direction == "maximize" else 1.0
        self.done = len(record.history)
        self.best = _best(record.history, trial.problem.direction)
        self.expected = budget(trial, self.method)
        self.warnings = list(record.meta.get("warnings", []))
        meta = trial_meta(trial, self.space)
        self.writer = store.writer(
            trial.name, {**meta, "expected_evaluations": self.expected, "warnings": self.warnings}
        )
        self._asked: tuple[Batch, np.ndarray] | None = None  # submitted, not yet complete
        self.outcome: TrialOutcome | None = None  # set when the trial has ended

    @property
    def finished(self) -> bool:
        """True when the method is done or the trial's evaluation budget is spent."""
        cap = self.trial.max_evaluations
        return self.method.done or (cap is not None and self.done >= cap)

    def submit(self) -> int:
        """Ask the method for its next batch and submit it to the engine; its id."""
        batch = self.method.ask()
        x = self.space.decode(batch.points)
        self._asked = (batch, x)
        return self.engine.submit(self.trial.problem, x, batch.gradient, trial=self.trial.name)

    def complete(self, finished: Finished) -> None:
        """Tell the method the submitted batch's results and checkpoint them (raises what
        stopped the batch: a problem that could not be set up fails the trial)."""
        if finished.error is not None:
            raise finished.error
        trial, space, problem = self.trial, self.space, self.trial.problem
        (batch, x), self._asked = self._asked, None
        evaluations = finished.evaluations
        losses, gradients = _losses(evaluations, x, space, self.sign, batch.gradient)
        self.method.tell(batch, losses, gradients)
        rows = History.from_evaluations(x, evaluations, batch.iteration, self.writer.seq + 1)
        _record_gradients_used(rows, self.method.gradients_used(), space, self.sign)
        _warn_once(trial.name, evaluations, self.warnings, self.engine, self.reporter)
        self.writer.checkpoint(rows, self.method.state_dict())
        self.done += len(rows)
        self.best = _better(self.best, rows, problem.direction)
        self.reporter.batch_done(trial.name, self.done, self.expected, self.best)

    def finish(self) -> TrialOutcome:
        """Confirm the best points if the problem asks for it, record the trial completed
        and report it."""
        confirmed = _confirm(self.trial.problem, self.writer, self.engine)
        _finish(self.writer, "completed", "")
        confirmed_fields = _confirmed(confirmed)
        return self._ended(TrialOutcome(self.trial.name, "completed", self.done, self.best,
                                        **confirmed_fields))  # fmt: skip

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run a step of the trial: an exception fails the trial (``outcome`` is then set)
        and the campaign goes on, except a store that cannot be written, which stops it
        with every trial at its last checkpoint."""
        try:
            yield
        except StoreError as exc:
            raise StoreError(
                f"{exc}. Every checkpoint before it is kept: make room and continue with "
                f"'hpcopt resume {self.root}'"
            ) from exc
        except Exception as exc:
            error = describe_exception(exc)
            _finish(self.writer, "failed", error)
            self._ended(TrialOutcome(self.trial.name, "failed", self.done, self.best, error))

    def _ended(self, outcome: TrialOutcome) -> TrialOutcome:
        self.outcome = outcome
        self.reporter.trial_finished(outcome)
        return outcome


def _confirm(
    problem: ProblemConfig, writer: TrialWriter, engine: Engine
) -> ConfirmationRecord | None:
    """The trial's confirmation, continued from what the writer holds; None if it has none."""
    confirmation = problem.confirmation()
    if confirmation is None:
        return None
    empty = History.empty(len(writer.meta["parameters"]))
    return confirm(
        confirmation, writer.history(), problem.direction, engine,
        save=lambda record: writer.checkpoint(empty, None, confirmation=record),
        stored=writer.confirmation,
    )  # fmt: skip


def _confirmed(record: ConfirmationRecord | None) -> dict[str, float | None]:
    """The confirmed best's mean and SE as :class:`TrialOutcome` fields (none if none)."""
    confirmed = None if record is None else record.confirmed()
    if confirmed is None:
        return {}
    return {"confirmed_value": confirmed[0], "confirmed_se": confirmed[1]}


def _finish(writer: TrialWriter, status: str, error: str) -> None:
    writer.checkpoint(
        History.empty(len(writer.meta["parameters"])), None, status=status, error=error
    )
    writer.consolidate()


def _record_gradients_used(
    rows: History, used: np.ndarray | None, space: Space, sign: float
) -> None:
    """Put the gradients a method moved by (loss, unit coordinates) into the rows' gradient
    column as what they are to the user: ``d value / d x`` in natural units."""
    if used is None or not np.isfinite(used).any():
        return
    if rows.gradient is None:
        rows.gradient = np.full(rows.x.shape, np.nan)
    moved = np.isfinite(used).all(axis=1)
    rows.gradient[moved] = sign * space.gradient_from_unit(rows.x[moved], used[moved])


def _warn_once(
    trial: str,
    evaluations: list[Evaluation],
    warnings: list[str],
    engine: Engine,
    reporter: Reporter,
) -> None:
    """Report each kind of evaluation warning once per trial (two warnings are of a kind
    when they differ only in their numbers), in the event log and the progress output;
    ``warnings`` is the trial's metadata list, checkpointed with the next batch."""
    seen = {_warning_kind(w) for w in warnings}
    for ev in evaluations:
        if ev.warning and _warning_kind(ev.warning) not in seen:
            seen.add(_warning_kind(ev.warning))
            warnings.append(ev.warning)
            engine.on_event("trial_warning", trial=trial, message=ev.warning)
            reporter.trial_warning(trial, ev.warning)


def _warning_kind(message: str) -> str:
    return re.sub(r"[-+]?[0-9][0-9.eE+-]*%?", "#", message)


def _losses(
    evaluations: list[Evaluation],
    x: np.ndarray,
    space: Space,
    sign: float,
    want_gradient: bool | np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Minimised losses (NaN where failed) and unit-cube loss gradients (NaN rows if none)."""
    losses = np.array([sign * ev.value if ev.ok else np.nan for ev in evaluations], dtype=float)
    if not np.any(want_gradient):
        return losses, None
    grads = np.full(x.shape, np.nan)
    for i, ev in enumerate(evaluations):
        if ev.ok and ev.gradient is not None:
            grads[i] = sign * space.gradient_to_unit(x[i], ev.gradient)
    return losses, grads


def _best(history: History, direction: str) -> float | None:
    row = history.best(direction)
    return None if row is None else float(history.value[row])


def _better(best: float | None, rows: History, direction: str) -> float | None:
    new = _best(rows, direction)
    if best is None or new is None:
        return new if best is None else best
    return max(best, new) if direction == "maximize" else min(best, new)


def _outcome(record: TrialRecord, direction: str) -> TrialOutcome:
    """The outcome of a trial that ended before this run, as the store holds it."""
    h, best = record.history, _best(record.history, direction)
    confirmed = _confirmed(record.confirmation)
    return TrialOutcome(record.name, record.status, len(h), best, record.error, **confirmed)
