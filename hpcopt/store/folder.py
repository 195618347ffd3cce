"""Every path inside a campaign folder, and who writes it, when.

A campaign folder (``output_dir``) holds::

    campaign.h5                   the config as written and as validated, the version and
                                  creation time: CampaignStore.create, once
    trials/                       CampaignStore.create
      <trial>.h5                  the trial's consolidated history, latest checkpoint,
                                  status and confirmation: its driver, when the journal's
                                  packs hold as many batches as it does, and at the end
      <trial>.journal/            what was checkpointed since (hpcopt.store.journal):
        started                   its driver, with the first checkpoint; never removed (a
                                  lost trial file is noticed by it)
        00000065-00000128.h5      a pack of folded batches: its driver, every
                                  consolidate_every batches
        00000129.h5               a segment, one batch and the method state after it (or
                                  the confirmation so far): its driver, after every batch
    quarantine/                   damaged files set aside, at their relative paths (a
                                  ".<n>" suffix where one was set aside before): resume
    events.jsonl                  the engine's progress events, appended as they come: the
                                  driver (events-<trial>.jsonl: a job-array task's driver)
    summary.csv, summary.json     the best (and confirmed) result per trial: the driver at
                                  its end, and 'hpcopt summary'
    driver.json                   the lock of the running driver (driver-<trial>.json: a
                                  job-array task's): the driver, while it runs
    slurm.json                    the Slurm jobs submitted for it: 'hpcopt submit', and
                                  'hpcopt resume --submit'
    slurm/<job id>/               submitit's files of each job (scripts, pickles, logs):
                                  submitit, at submission and in the job
    cluster/<job>.<restart>/      a Slurm job's rendezvous, one per (re)start:
                                  rank 0 and the other ranks of the job (hpcopt.cluster.slurm)
      rank-<rank>.json            where each rank's Ray node lives: that rank, at its start
      ray-token                   the Ray cluster's auth token (mode 0600): rank 0
      head.json                   the Ray head's address and token file: rank 0, once up
      done                        rank 0, when its driver is done: the others then stop
    plots/<figure>.png            'hpcopt plot' (unless -o names another folder)
    .<name>.<host>-<pid>.<random>.tmp
                                  a file being written (hpcopt.core.files.atomic_path), in
                                  the folder of the file it becomes; the next driver
                                  removes those of writers that died
    .driver.<pid>.<ns>.stale      a driver lock being removed (hpcopt.store.lock)

A private Ray's folder, with its ``owner`` file, is not in the campaign folder: it is a
short node-local ``/tmp/hr-*`` (:mod:`hpcopt.engine.private_ray`), as Ray's sockets need.

Every writer takes its paths from :class:`CampaignFolder` (code below the store, which
cannot import it, is handed them), so this list is complete: ``tests/test_folder.py``
walks real campaign folders and fails on any entry it does not name.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

STARTED = "started"
_SEGMENT = re.compile(r"^(\d{8})\.h5$")
_PACK = re.compile(r"^(\d{8})-(\d{8})\.h5$")

# The entries above as patterns of their path relative to the root (names of trials and
# Slurm jobs have no "/"), in the docstring's order; the first that matches names a path.
_NAME = r"[^/]+"
_ENTRIES = [
    ("campaign config", r"campaign\.h5"),
    ("trials folder", r"trials"),
    ("trial file", rf"trials/{_NAME}\.h5"),
    ("trial journal", rf"trials/{_NAME}\.journal"),
    ("journal started", rf"trials/{_NAME}\.journal/{STARTED}"),
    ("journal pack", rf"trials/{_NAME}\.journal/\d{{8}}-\d{{8}}\.h5"),
    ("journal segment", rf"trials/{_NAME}\.journal/\d{{8}}\.h5"),
    ("quarantine", r"quarantine(/.+)?"),
    ("event log", rf"events(-{_NAME})?\.jsonl"),
    ("summary", r"summary\.(csv|json)"),
    ("driver lock", rf"driver(-{_NAME})?\.json"),
    ("Slurm jobs", r"slurm\.json"),
    ("submitit folder", r"slurm(/.+)?"),
    ("rendezvous folders", r"cluster"),
    ("rendezvous", rf"cluster/{_NAME}\.\d+"),
    ("rendezvous entry", rf"cluster/{_NAME}\.\d+/(rank-\d+\.json|ray-token|head\.json|done)"),
    ("figures", rf"plots(/{_NAME}\.png)?"),
    ("temporary file", rf"(.+/)?\.{_NAME}\.tmp"),  # also older ones, not named by writer
    ("lock being removed", rf"\.driver(-{_NAME})?\.\d+\.\d+\.stale"),
]
_MATCHERS = [(entry, re.compile(pattern)) for entry, pattern in _ENTRIES]


@dataclass(frozen=True)
class TrialFiles:
    """Where a trial's files live; ``checksums``: whether every file must carry one (false
    for campaigns written before they did)."""

    name: str
    trial_file: Path
    journal: Path
    checksums: bool = True

    @property
    def started(self) -> Path:
        """The journal's marker that the trial has checkpoints."""
        return self.journal / STARTED

    def segment(self, seq: int) -> Path:
        """The journal file of batch ``seq`` alone."""
        return self.journal / f"{seq:08d}.h5"

    def pack(self, first: int, last: int) -> Path:
        """The journal file of batches ``first..last`` folded."""
        return self.journal / f"{first:08d}-{last:08d}.h5"


def journal_batches(name: str) -> tuple[int, int, bool] | None:
    """``(first, last, is_segment)`` of a journal file by its name; None for other names."""
    if m := _SEGMENT.match(name):
        return int(m[1]), int(m[1]), True
    if m := _PACK.match(name):
        return int(m[1]), int(m[2]), False
    return None


@dataclass(frozen=True)
class Rendezvous:
    """A Slurm job's rendezvous folder for one (re)start (see the module docstring)."""

    folder: Path

    def rank(self, rank: int) -> Path:
        """Where rank ``rank``'s Ray node lives (JSON)."""
        return self.folder / f"rank-{rank}.json"

    @property
    def head(self) -> Path:
        """The Ray head's address and token file (JSON)."""
        return self.folder / "head.json"

    @property
    def done(self) -> Path:
        """Exists once rank 0's driver is done."""
        return self.folder / "done"


class CampaignFolder:
    """The paths of the campaign folder ``root`` (see the module docstring for who writes
    each, when). It names paths and writes nothing; :meth:`driver_locks` lists the locks
    there are."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def campaign_file(self) -> Path:
        return self.root / "campaign.h5"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    def trial_files(self, trial: str, checksums: bool = True) -> TrialFiles:
        """Trial ``trial``'s file and journal."""
        return TrialFiles(
            trial, self.trials / f"{trial}.h5", self.trials / f"{trial}.journal", checksums
        )

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def events(self, trial: str | None = None) -> Path:
        """The event log of the campaign's driver, or of the driver of ``trial`` alone."""
        return self.root / ("events.jsonl" if trial is None else f"events-{trial}.jsonl")

    def event_logs(self) -> list[Path]:
        """Every event log there is (the campaign's and those of job-array tasks), in name
        order."""
        return sorted(self.root.glob("events*.jsonl"))

    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    def driver_lock(self, trial: str | None = None) -> Path:
        """The lock of the campaign's driver, or of the driver of ``trial`` alone."""
        return self.root / ("driver.json" if trial is None else f"driver-{trial}.json")

    def driver_locks(self) -> list[Path]:
        """Every driver lock there is, in name order."""
        return sorted(self.root.glob("driver*.json"))

    @staticmethod
    def lock_aside(lock: Path) -> Path:
        """A unique name for ``lock`` while it is being removed (this process, now)."""
        return lock.with_name(f".{lock.stem}.{os.getpid()}.{time.monotonic_ns()}.stale")

    @property
    def slurm_jobs(self) -> Path:
        return self.root / "slurm.json"

    @property
    def submitit(self) -> Path:
        """submitit's folder for each job (``%j``: submitit puts in the job id)."""
        return self.job_logs / "%j"

    @property
    def job_logs(self) -> Path:
        """The folder of submitit's job folders: scripts, pickles and logs, one per job."""
        return self.root / "slurm"

    def rendezvous(self, job: str, restart: int) -> Rendezvous:
        """The rendezvous of Slurm job ``job`` (``<array job>_<task>`` in an array) at its
        ``restart``-th (re)start."""
        return Rendezvous(self.root / "cluster" / f"{job}.{restart}")

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def entry(self, path: str | Path) -> str | None:
        """Which entry of the layout ``path`` (in the folder) is; None for a path the
        layout does not name (or one outside the folder)."""
        try:
            relative = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        return next((entry for entry, m in _MATCHERS if m.fullmatch(relative)), None)
