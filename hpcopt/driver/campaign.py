"""The driver: run a campaign's trials through an engine, checkpointing after every batch.

Each trial runs from its last checkpoint in steps (:mod:`hpcopt.driver.trial`).
Trials run one after another, in config order: the serial engine has one worker, and a
trial's batches already fill a pool of workers. A trial that raises is recorded as
failed and the campaign goes on; the run's exit status says whether any failed. A store
that cannot be written (a full disk) stops the campaign instead, with every trial left at
its last checkpoint, so a plain ``resume`` continues once there is room.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from hpcopt import config as cfg
from hpcopt.config.registry import build_engine
from hpcopt.core.events import EventLog
from hpcopt.driver.reporters import LineReporter, Reporter, TrialOutcome
from hpcopt.driver.trial import TrialRun, open_trial
from hpcopt.engine import Engine
from hpcopt.store.campaign_store import CampaignStore
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
    outcomes = []
    with (
        driver_lock(store.root, only),
        _engine_for(campaign, engine, store.folder.events(only)) as eng,
    ):
        store.remove_stale_temporaries()
        cap = campaign.max_concurrent_trials
        outcomes = run_trials(trials, store, eng, reporter, retry_failed, cap)
        store.export_summary()
    return outcomes


def run_trials(
    trials: Sequence[cfg.TrialConfig],
    store: CampaignStore,
    engine: Engine,
    reporter: Reporter,
    retry_failed: bool = False,
    max_concurrent: int | None = None,
) -> list[TrialOutcome]:
    """Run ``trials`` over one engine, several at once; their outcomes in ``trials`` order.

    Trials start in order: with ``max_concurrent`` given, while fewer than that many are
    running; without it, while fewer of the engine's tasks wait for a worker than it has
    workers (so the serial engine runs one trial after another, and a pool's workers
    find work while the running trials turn results into their next batches). Each running
    trial has one batch in flight; whichever batch finishes first is told to its method and
    checkpointed, and the trial submits its next. A trial that fails ends alone; a store
    that cannot be written stops them all, each at its last checkpoint.
    """
    waiting = deque(trials)
    in_flight: dict[int, TrialRun] = {}
    outcomes: dict[str, TrialOutcome] = {}

    def advance(run: TrialRun) -> None:
        with run.guard():
            if run.finished:
                run.finish()
            else:
                in_flight[run.submit()] = run
        if run.outcome is not None:
            outcomes[run.trial.name] = run.outcome

    def wants_another() -> bool:
        if not waiting:
            return False
        if max_concurrent is not None:
            return len(in_flight) < max_concurrent
        return engine.queued() < engine.workers

    while waiting or in_flight:
        while wants_another():
            trial = waiting.popleft()
            opened = open_trial(trial, store, engine, reporter, retry_failed)
            if isinstance(opened, TrialOutcome):
                outcomes[trial.name] = opened
            else:
                advance(opened)
        for finished in engine.wait() if in_flight else []:
            run = in_flight.pop(finished.batch)
            with run.guard():
                run.complete(finished)
            if run.outcome is not None:
                outcomes[run.trial.name] = run.outcome
            else:
                advance(run)
    return [outcomes[t.name] for t in trials]


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
