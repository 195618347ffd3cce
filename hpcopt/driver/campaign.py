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
from collections.abc import Iterator
from pathlib import Path

from hpcopt import config as cfg
from hpcopt.config.registry import build_engine
from hpcopt.core.events import EventLog
from hpcopt.driver.reporters import LineReporter, Reporter, TrialOutcome
from hpcopt.driver.trial import run_trial
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
