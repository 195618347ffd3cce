"""The driver: run a campaign's trials through an engine, checkpointing after every batch.

For each trial the loop is::

    method = build_method(...)   # then load the trial's last checkpoint, if any
    while not method.done:
        batch = method.ask()                       # unit-cube points
        evaluations = engine.map(problem, x)       # natural units, in order
        method.tell(batch, losses, gradients)      # losses: minimised, NaN if failed
        writer.checkpoint(rows, method.state_dict())
    confirm(...)   # if the problem has a confirmation: its best points re-scored

Trials run one after another, in config order: the serial engine has one worker, and a
trial's batches already fill a pool of workers. A trial that raises is recorded as
failed and the campaign goes on; the run's exit status says whether any failed. A store
that cannot be written (a full disk) stops the campaign instead, with every trial left at
its last checkpoint, so a plain ``resume`` continues once there is room.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hpcopt import config as cfg
from hpcopt.config.registry import build_engine, build_method
from hpcopt.core.evaluation import Evaluation, describe_exception
from hpcopt.core.events import EventLog
from hpcopt.core.space import Space
from hpcopt.driver.reporters import LineReporter, Reporter, TrialOutcome
from hpcopt.engine import Engine
from hpcopt.problems.base import ProblemConfig
from hpcopt.store.campaign_store import CampaignStore, History, StoreError, TrialRecord, TrialWriter
from hpcopt.store.confirm import ConfirmationRecord, confirm
from hpcopt.store.lock import driver_lock


def create(campaign: cfg.Campaign) -> CampaignStore:
    """Create the campaign folder and write the validated config into it."""
    trials = [t.model_dump(mode="json", exclude_unset=True) for t in campaign.trials]
    return CampaignStore.create(campaign.output_dir, campaign.name, campaign.document, trials)


def reopen(root: str | Path) -> tuple[CampaignStore, cfg.Campaign]:
    """Open a campaign folder and rebuild its campaign from the config stored in it.

    The expanded trials stored at creation are used as they were, so an edit of the config
    file cannot change a running campaign (only the keys the user set are stored).
    """
    store = CampaignStore.open(root)
    campaign = cfg.parse(
        store.document(),
        source=str(store.campaign_file),
        output_dir=str(store.root),
        check_files=False,
    )
    trials = tuple(
        cfg.TrialConfig.model_validate(t, context={"check_files": False})
        for t in store.stored_trials()
    )
    return store, campaign.model_copy(update={"trials": trials})


def run(
    campaign: cfg.Campaign,
    store: CampaignStore,
    engine: Engine | None = None,
    reporter: Reporter | None = None,
    retry_failed: bool = False,
    only: str | None = None,
) -> list[TrialOutcome]:
    """Run (or continue) the trials of ``campaign`` into ``store``; return their outcomes.

    ``only`` runs one trial, as a job-array task does: drivers of different trials may then
    share the campaign folder (each has its own lock and event log).
    """
    reporter = reporter or LineReporter()
    trials = campaign.trials if only is None else (campaign.trial(only),)
    suffix = "" if only is None else f"-{only}"
    outcomes = []
    with (
        driver_lock(store.root, f"driver{suffix}"),
        _engine_for(campaign, engine, store.root / f"events{suffix}.jsonl") as eng,
    ):
        store.remove_stale_temporaries()
        for trial in trials:
            outcomes.append(run_trial(trial, store, eng, reporter, retry_failed))
        store.export_summary()
    return outcomes


@contextlib.contextmanager
def _engine_for(campaign: cfg.Campaign, engine: Engine | None, events: Path) -> Iterator[Engine]:
    """The given engine, or the campaign's own, reporting to the event log ``events``."""
    log = EventLog(events)
    try:
        if engine is not None:
            engine.on_event = log
            yield engine
            return
        with build_engine(campaign.engine) as own:
            own.on_event = log
            yield own
    finally:
        log.close()


def run_trial(
    trial: cfg.TrialConfig,
    store: CampaignStore,
    engine: Engine,
    reporter: Reporter,
    retry_failed: bool = False,
) -> TrialOutcome:
    """Run one trial from its last checkpoint to the end of its budget, then, if its problem
    has a confirmation, re-score its best points (continuing an interrupted confirmation)."""
    problem = trial.problem
    space = problem.space()
    meta = {
        "trial": trial.name,
        "method": trial.method.name,
        "problem": problem.label,
        "seed": trial.seed,
        "direction": problem.direction,
        "parameters": list(space.names),
        "config": trial.model_dump(mode="json", exclude_unset=True),
    }
    record, set_aside = store.recover(trial.name)
    history = record.history
    for message in set_aside:
        engine.on_event("trial_warning", trial=trial.name, message=message)
        reporter.trial_warning(trial.name, message)
    if record.status == "completed" or (record.status == "failed" and not retry_failed):
        return _outcome(record, problem.direction)
    method = build_method(
        trial.method,
        space,
        trial.seed,
        feasible=lambda u: problem.feasible(space.decode(u)),
        has_gradient=problem.gradient_mask(),
    )
    if record.method_state is not None:
        method.load_state_dict(record.method_state)
    sign = -1.0 if problem.direction == "maximize" else 1.0
    done = len(history)
    best = _best(history, problem.direction)
    expected = method.expected_evaluations
    if trial.max_evaluations is not None:
        expected = min(expected or trial.max_evaluations, trial.max_evaluations)
    warnings = list(record.meta.get("warnings", []))
    writer = store.writer(
        trial.name, {**meta, "expected_evaluations": expected, "warnings": warnings}
    )
    reporter.trial_started(trial.name, done, expected)
    try:
        while not method.done and (trial.max_evaluations is None or done < trial.max_evaluations):
            batch = method.ask()
            x = space.decode(batch.points)
            evaluations = engine.map(problem, x, gradient=batch.gradient)
            losses, gradients = _losses(evaluations, x, space, sign, batch.gradient)
            method.tell(batch, losses, gradients)
            rows = History.from_evaluations(x, evaluations, batch.iteration, writer.seq + 1)
            _record_gradients_used(rows, method.gradients_used(), space, sign)
            _warn_once(trial.name, evaluations, warnings, engine, reporter)
            writer.checkpoint(rows, method.state_dict())
            done += len(rows)
            best = _better(best, rows, problem.direction)
            reporter.batch_done(trial.name, done, expected, best)
        confirmed = _confirm(problem, writer, engine)
    except StoreError as exc:  # the store cannot be written: stop, the trial stays resumable
        raise StoreError(
            f"{exc}. Every checkpoint before it is kept: make room and continue with "
            f"'hpcopt resume {store.root}'"
        ) from exc
    except Exception as exc:
        error = describe_exception(exc)
        _finish(writer, "failed", error)
        outcome = TrialOutcome(trial.name, "failed", done, best, error)
    else:
        _finish(writer, "completed", "")
        outcome = TrialOutcome(trial.name, "completed", done, best, **_confirmed(confirmed))
    reporter.trial_finished(outcome)
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
