"""``hpcopt watch``: a live view of a campaign, read from its folder.

The dashboard owns no state: every frame is drawn from a :class:`CampaignView` that
:func:`snapshot` reads from the store (read-only: trial files are replaced atomically by
the writer and re-read on a torn read), the driver locks, the event logs and, when the
campaign was submitted, Slurm. It works on a login node while the job writes on a compute
node, and on a finished or interrupted campaign alike.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hpcopt.cluster.queue import LIVE, QueueError, job_states
from hpcopt.core.events import GarbledEvents, read_events
from hpcopt.core.files import StoreError
from hpcopt.core.text import duration
from hpcopt.store.campaign_store import CampaignStore
from hpcopt.store.confirm import ConfirmationRecord, format_confirmed
from hpcopt.store.folder import CampaignFolder
from hpcopt.store.history import STATUS_FAILED
from hpcopt.store.jobs import job_ids
from hpcopt.store.lock import read_drivers

RECENT_S = 60.0  # the window of the "recent" throughput
SHOW_FAILURES = 5


@dataclass
class TrialView:
    """One trial as the store holds it now."""

    name: str
    method: str
    problem: str
    status: str
    done: int
    expected: int | None
    failed: int
    best: float | None
    best_at: float | None  # Unix s of the evaluation that set the best
    finished_at: np.ndarray  # Unix s of every evaluation
    failures: list[tuple[float, str]]  # (time, error) of the latest failed evaluations
    error: str = ""  # why the trial failed, if it did
    confirmation: ConfirmationRecord | None = None  # when its problem confirms winners


@dataclass
class CampaignView:
    """Everything one frame shows."""

    name: str
    root: Path
    created_at: float
    now: float
    trials: list[TrialView]
    drivers: list[dict[str, Any]]
    jobs: dict[str, str]  # Slurm job id -> state
    engine: dict[str, Any]
    workers: dict[str, dict[str, Any]]  # alive workers by name, from the event logs
    events: list[dict[str, Any]] = field(default_factory=list)  # retries and task failures
    jobs_unknown: str = ""  # why Slurm could not be asked about the jobs, if it could not
    garbled_events: list[str] = field(default_factory=list)  # event-log lines skipped

    @property
    def running(self) -> bool:
        live_job = any(state.split()[0] in LIVE for state in self.jobs.values() if state)
        return any(t.status == "running" for t in self.trials) and (
            any(d.get("alive", True) for d in self.drivers) or live_job
        )

    def throughput(self) -> tuple[float | None, float | None]:
        """Evaluations per second: over the last minute, and since the first evaluation;
        None where no time has passed to measure over (every evaluation finished at one
        instant, as the rows of one batch may have been)."""
        times = np.sort(np.concatenate([t.finished_at for t in self.trials] or [np.zeros(0)]))
        span = float(times[-1] - times[0]) if len(times) else 0.0
        if span <= 0:
            return None, None
        end = self.now if self.running else times[-1]
        window = min(RECENT_S, end - times[0])  # a young campaign has less than a minute
        recent = float(np.sum(times > end - window)) / window
        return recent, len(times) / span

    def eta_s(self) -> float | None:
        """Seconds until every trial's budget is spent at the recent rate (when known)."""
        left = [
            t.expected - t.done
            for t in self.trials
            if t.status in ("running", "pending") and t.expected is not None
        ]
        recent, _ = self.throughput()
        if not left or not recent or not self.running:
            return None
        return sum(left) / recent


def snapshot(root: str | Path, slurm: bool = True) -> CampaignView:
    """Read the campaign in ``root`` as it is now (never writes, never locks)."""
    store = CampaignStore.open(root)
    attrs = store.attrs()
    document = store.document()
    trials = []
    for name in store.trial_names():
        rec = store.read_trial(name)
        h, best = rec.history, rec.best_index()
        failed = np.flatnonzero(h.status == STATUS_FAILED)
        trials.append(
            TrialView(
                name=name,
                method=rec.meta.get("method") or _configured(store, name, "method"),
                problem=rec.meta.get("problem") or _configured(store, name, "problem"),
                status=rec.status,
                done=len(h),
                expected=rec.meta.get("expected_evaluations"),
                failed=len(failed),
                best=None if best is None else float(h.value[best]),
                best_at=None if best is None else float(h.finished_at[best]),
                finished_at=np.asarray(h.finished_at, dtype=float),
                failures=[
                    (float(h.finished_at[i]), str(h.error[i])) for i in failed[-SHOW_FAILURES:]
                ],
                error=rec.error,
                confirmation=rec.confirmation,
            )
        )
    events, garbled = _events(store.root)
    jobs, jobs_unknown = _jobs(store.root) if slurm else ({}, "")
    return CampaignView(
        name=str(attrs.get("name", store.root.name)),
        root=store.root,
        created_at=float(attrs.get("created_at", 0.0)),
        now=time.time(),
        trials=trials,
        drivers=read_drivers(store.root),
        jobs=jobs,
        jobs_unknown=jobs_unknown,
        garbled_events=garbled,
        engine=dict(document.get("engine", {"kind": "local"})),
        workers=_alive_workers(events),
        events=[e for e in events if e["kind"] in ("task_retried", "task_failed", "worker_down")],
    )


def _configured(store: CampaignStore, trial: str, what: str) -> str:
    """The method or problem name of a trial that has not started, from its config."""
    for t in store.stored_trials():
        if t.get("name") == trial:
            return str(t.get(what, {}).get("name", ""))
    return ""


def _events(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every event of the campaign's event logs in time order, and what was garbled in
    them (lines that were skipped, one message per log): shown, not printed as warnings
    under the live view."""
    events: list[dict[str, Any]] = []
    garbled: list[str] = []
    for path in CampaignFolder(root).event_logs():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", GarbledEvents)
            events += read_events(path)
        garbled += [str(w.message) for w in caught if issubclass(w.category, GarbledEvents)]
    return sorted(events, key=lambda e: e.get("time", 0.0)), garbled


def _alive_workers(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    alive: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["kind"] == "worker_up":
            alive[e["worker"]] = e
        elif e["kind"] == "worker_down":
            alive.pop(e.get("worker", ""), None)
    return alive


def _jobs(root: Path) -> tuple[dict[str, str], str]:
    """``(states, why_unknown)``: the Slurm states of the campaign's jobs, or why they are
    not known (``slurm.json`` damaged; squeue missing, as on a laptop reading a copied
    folder, failing or hung). Both empty when no job was submitted."""
    try:
        ids = job_ids(root)
    except StoreError as exc:
        return {}, str(exc)
    try:
        return job_states(ids), ""
    except QueueError as exc:
        return {}, f"cannot ask about job {', '.join(ids)}: {exc}"


# -- drawing ------------------------------------------------------------------------------


def render(view: CampaignView) -> RenderableType:
    """One frame: header, trials, throughput and workers, latest failures."""
    parts: list[RenderableType] = [_header(view), _trials(view), _activity(view)]
    failures = _failures(view)
    if failures is not None:
        parts.append(failures)
    return Group(*parts)


def _header(view: CampaignView) -> Panel:
    state = "running" if view.running else _overall(view)
    where = ", ".join(
        f"pid {d['pid']} on {d['host']}" + ("" if d.get("alive", True) else " (gone)")
        for d in view.drivers
    )
    ends = [t.finished_at.max() for t in view.trials if len(t.finished_at)]
    until = view.now if view.running or not ends else max(ends)
    lines = [
        Text.assemble((view.name, "bold"), f"  {view.root}"),
        Text(f"{state}; created {time.ctime(view.created_at)}; "
             f"{'elapsed' if view.running else 'ran for'} {duration(until - view.created_at)}"),
    ]  # fmt: skip
    counts = Counter(t.status for t in view.trials)
    order = ["running", "pending", "completed", "failed"]
    shown = sorted(counts, key=lambda s: order.index(s) if s in order else len(order))
    if shown:
        lines.append(Text("trials: " + ", ".join(f"{counts[s]} {s}" for s in shown)))
    if where:
        lines.append(Text(f"driver: {where}"))
    if view.jobs:
        lines.append(Text("slurm: " + "; ".join(f"job {j}: {s}" for j, s in view.jobs.items())))
    if view.jobs_unknown:
        lines.append(Text(f"slurm: {view.jobs_unknown}", style="yellow"))
    for message in view.garbled_events:
        lines.append(Text(f"event log: {message}", style="yellow"))
    eta = view.eta_s()
    if eta is not None:
        lines.append(Text(f"eta: {duration(eta)} at the recent rate"))
    return Panel(Group(*lines), title="hpcopt campaign", border_style="blue")


def _overall(view: CampaignView) -> str:
    statuses = {t.status for t in view.trials}
    if statuses <= {"completed"}:
        return "finished"
    if "failed" in statuses and statuses <= {"completed", "failed"}:
        return "finished with failed trials"
    return "stopped (resume with hpcopt resume)"


def _trials(view: CampaignView) -> Table:
    table = Table(title="trials", expand=True)
    # on a narrow terminal the names give way, the numbers keep their width
    table.add_column("trial", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("method", no_wrap=True)
    table.add_column("problem", no_wrap=True, overflow="ellipsis", max_width=28)
    table.add_column("status", no_wrap=True)
    table.add_column("progress", min_width=10, no_wrap=True)
    # a confirmed column only where some trial confirms its winners: others look as before
    confirming = any(t.confirmation is not None for t in view.trials)
    for col in ("evaluations", "failed", "best", *(("confirmed",) if confirming else ()),
                "improved"):  # fmt: skip
        table.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    styles = {"completed": "green", "failed": "red", "running": "yellow", "pending": "dim"}
    for t in view.trials:
        # a budget is an upper bound (a GA does not evaluate a clone twice): a trial that
        # has completed is full
        total = max(t.done, 1) if t.status == "completed" else (t.expected or max(t.done, 1))
        bar = ProgressBar(total=total, completed=min(t.done, total), width=10)
        count = f"{t.done}/{t.expected}" if t.expected else str(t.done)
        improved = "-"
        if t.best_at is not None:
            improved = time.strftime("%H:%M:%S", time.localtime(t.best_at))
            if t.status == "running":
                improved += f" ({duration(view.now - t.best_at)} ago)"
        best = "-" if t.best is None else f"{t.best:.6g}"
        table.add_row(
            t.name, t.method, t.problem, Text(t.status, style=styles.get(t.status, "")), bar,
            count, str(t.failed), best, *((_confirmed(t),) if confirming else ()), improved,
        )  # fmt: skip
    return table


def _confirmed(trial: TrialView) -> str:
    """The confirmed best ``value ± SE``, or how far its confirmation has come."""
    record = trial.confirmation
    if record is None:
        return "-"
    if not record.complete:
        return f"{record.variants_done}/{len(record.problems)} variants"
    confirmed = record.confirmed()
    return "-" if confirmed is None else format_confirmed(*confirmed)


def _rate(per_s: float | None) -> str:
    return "-" if per_s is None else f"{per_s:.3g}"


def _activity(view: CampaignView) -> Table:
    recent, overall = view.throughput()
    table = Table.grid(padding=(0, 2))
    table.add_row(
        Text("throughput", style="bold"),
        f"{_rate(recent)} evaluations/s over the last minute, {_rate(overall)}/s overall",
    )
    gpu = float(view.engine.get("gpu_fraction", 0.0) or 0.0)
    if view.engine.get("kind") == "ray" and not view.running:
        table.add_row(Text("workers", style="bold"), "none (the campaign is not running)")
    elif view.engine.get("kind") == "ray":
        nodes: dict[str, int] = {}
        for w in view.workers.values():
            nodes[w.get("node", "?")] = nodes.get(w.get("node", "?"), 0) + 1
        where = ", ".join(f"{n} on {node}" for node, n in sorted(nodes.items())) or "none"
        share = f", {gpu:g} GPU each" if gpu else ""
        table.add_row(Text("workers", style="bold"), f"{len(view.workers)} alive: {where}{share}")
    else:
        table.add_row(Text("workers", style="bold"), "the driver itself (local engine)")
    return table


def _failures(view: CampaignView) -> Table | None:
    rows = [(when, t.name, err) for t in view.trials for when, err in t.failures]
    for t in view.trials:
        if t.status == "failed" and t.error:
            when = float(t.finished_at.max()) if len(t.finished_at) else view.created_at
            rows.append((when, f"{t.name} (trial)", t.error))
    for e in view.events:
        what = e.get("reason") or e.get("error") or ""
        rows.append(
            (float(e["time"]), e["kind"].replace("_", " "), f"{e.get('worker', '')} {what}")
        )
    if not rows:
        return None
    table = Table(title="latest failures and retries", expand=True, show_lines=False)
    table.add_column("when", no_wrap=True)
    table.add_column("what", no_wrap=True)
    table.add_column("why", overflow="fold")
    for when, what, why in sorted(rows)[-SHOW_FAILURES:]:
        table.add_row(time.strftime("%H:%M:%S", time.localtime(when)), what, why.strip())
    return table


def watch(
    root: str | Path, once: bool = False, interval_s: float = 2.0, console: Console | None = None
) -> int:
    """Show the campaign in ``root``, redrawn every ``interval_s`` until Ctrl-C (or one
    frame with ``once``; appended frames when the output is not a terminal). Returns the
    exit status (0)."""
    console = console or Console()
    if once:
        console.print(render(snapshot(root)))
        return 0
    try:
        if not console.is_terminal:  # a log file cannot be redrawn: append frames to it
            while True:
                console.rule(time.strftime("%H:%M:%S"))
                console.print(render(snapshot(root)))
                console.file.flush()
                time.sleep(interval_s)
        with Live(render(snapshot(root)), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval_s)
                live.update(render(snapshot(root)), refresh=True)
    except KeyboardInterrupt:
        return 0
