"""The Ray engine: a pool of persistent actors, each holding problems it set up once.

Each actor asks Ray for ``cpus_per_worker`` CPUs and ``gpu_fraction`` of a GPU, builds a
problem the first time it sees its config (a scene loaded, a grid built) and reuses it for
every later task, keeping at most ``max_problems_per_worker`` problems and
``problem_memory_mb`` of them (least recently used dropped first, set up again when
needed again). The pool is scheduled here rather than by Ray's ``ActorPool``, which keeps
handing work to a dead actor.

Scheduling: every submitted batch is cut into tasks of ``points_per_task`` points
(``auto``: a few tasks per worker per batch). The tasks wait in one queue per trial, and
the trials take turns: every idle actor gets the next task of the next trial as soon as it
is free, so a trial's small batch never waits behind another trial's large one, and no
slow task holds up any other. A batch is finished when each of its points has its final
result; its results go back in the batch's order.

Faults, per task: an actor that dies mid-task (SIGKILL, out of memory, a lost node) is
replaced and its task runs again elsewhere; a point whose evaluation raised is retried up
to ``max_retries`` times, then recorded as failed with its error; a task running longer
than ``task_timeout_s`` has its actor killed and replaced and its points recorded as
failed (a hang is not retried: it would most likely hang again). After
``max_tasks_per_worker`` tasks an actor is retired and a fresh one takes its place, which
bounds what a leaking simulation library can accumulate. A problem that cannot be set up
finishes its own batch with an :class:`EngineError`; other batches go on. Completed
results are never lost or run again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpcopt.core.evaluation import Evaluation
from hpcopt.engine.base import Engine, Finished, ProblemClass
from hpcopt.engine.ray_session import RaySession
from hpcopt.engine.ray_worker import RayWorker
from hpcopt.problems.base import ProblemConfig

TASK_S = 0.05
"""How long a task of ``points_per_task: auto`` should take, in seconds, once its problem's
evaluation time is known: some 40 times the per-task overhead (about 1.3 ms on two cores,
``benchmarks/engine_scaling.py``), short enough that the pool stays balanced."""


class EngineError(RuntimeError):
    """The pool cannot run the batch: workers cannot start, or a problem cannot be set up."""


class RayEngineConfig(BaseModel):
    """``engine: {kind: ray, num_workers: 4, gpu_fraction: 0.5}``.

    ``address: auto`` starts a private Ray on this machine for the campaign (short temp
    dir, no dashboard, token authentication, ``num_cpus``/``num_gpus`` declared, default:
    all CPUs and no GPU); ``host:port`` joins a running cluster, authenticating with
    ``token_file`` when it has token authentication on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["ray"]
    address: str = "auto"
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, ge=0)
    gpu_fraction: float = Field(0.0, ge=0)
    points_per_task: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    max_problems_per_worker: int | None = Field(64, ge=1)
    problem_memory_mb: float | None = Field(None, gt=0)
    max_tasks_per_worker: int | None = Field(None, ge=1)
    task_timeout_s: float | None = Field(None, gt=0)
    max_retries: int = Field(2, ge=0)
    start_timeout_s: float = Field(120.0, gt=0)
    token_file: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    num_gpus: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> RayEngineConfig:
        if importlib.util.find_spec("ray") is None:
            raise ValueError("kind: ray needs Ray installed: pip install 'hpcopt[ray]'")
        if self.gpu_fraction > 1 and self.gpu_fraction != int(self.gpu_fraction):
            raise ValueError(
                f"gpu_fraction above 1 must be a whole number of GPUs, got {self.gpu_fraction}"
            )
        if self.address != "auto" and (self.num_cpus is not None or self.num_gpus is not None):
            raise ValueError("num_cpus and num_gpus declare a private Ray; they need address: auto")
        return self


@dataclass
class _Slot:
    actor: Any
    name: str = ""
    tasks_done: int = 0
    starting: Any = None  # the actor's info() call, until its start is reported


@dataclass
class _Batch:
    id: int
    trial: str
    problem: Any  # ray.put((implementation, config)): sent once, shared by its tasks
    key: str  # the problem config's JSON
    points: np.ndarray
    gradient: np.ndarray | bool  # False where no point wants one (cheaper to send)
    results: list[Evaluation | None]
    missing: int  # points without their final result yet
    failed: bool = False


@dataclass
class _Task:
    batch: _Batch
    indices: np.ndarray
    attempt: int = 0


class RayEngine(Engine):
    """Runs batches over a pool of persistent Ray actors (see the module docstring)."""

    def __init__(self, config: RayEngineConfig, problem_class: ProblemClass) -> None:
        import ray

        super().__init__(problem_class)
        self.config = config
        self._ray = ray
        self._session: RaySession | None = None  # when this engine started or joined Ray
        self._slots: list[_Slot] = []
        self._starting: dict[Any, _Slot] = {}  # info() calls not yet back
        self._idle: deque[_Slot] = deque()
        self._inflight: dict[Any, tuple[_Task, _Slot, float]] = {}  # in start order
        self._batches: dict[int, _Batch] = {}  # submitted, not yet finished
        self._queues: dict[str, deque[_Task]] = {}  # tasks waiting, per trial
        self._turns: deque[str] = deque()  # trials with tasks waiting, next first
        self._evaluation_s: dict[str, tuple[float, int]] = {}  # per problem: seconds, count
        if not ray.is_initialized():
            c = config
            self._session = RaySession(c.address, c.token_file, c.num_cpus, c.num_gpus)
        self._remote = ray.remote(RayWorker)

    @property
    def workers(self) -> int:
        return self.config.num_workers

    def queued(self) -> int:
        """Tasks waiting for a worker (results already back are taken in first, and the
        workers they free handed the next tasks)."""
        self._step(0.0, everything=True)
        return sum(len(queue) for queue in self._queues.values())

    def pending(self) -> int:
        return len(self._batches) + len(self._finished)

    def submit(
        self,
        problem: ProblemConfig,
        points: np.ndarray,
        gradient: bool | np.ndarray = False,
        trial: str = "",
    ) -> int:
        """Queue ``points`` (natural units, shape ``(n, d)``) of ``problem`` and hand its
        first tasks to idle workers at once; return the batch's id. The pool starts on the
        first call (:class:`EngineError` if it cannot)."""
        number, points, wanted = self._new_batch(points, gradient)
        self._ensure_workers()
        try:
            implementation = self.problem_class(problem)  # pickled by reference: its module
        except Exception as exc:  # an unknown custom target: this batch's problem alone
            self._finished[number] = Finished(number, error=exc)
            return number
        if not len(points):
            self._finished[number] = Finished(number, [])
            return number
        batch = _Batch(
            number,
            trial,
            self._ray.put((implementation, problem)),
            problem.model_dump_json(),
            points,
            wanted if wanted.any() else False,
            [None] * len(points),
            len(points),
        )
        self._batches[number] = batch
        step = self._points_per_task(len(points), batch.key)
        for i in range(0, len(points), step):
            self._enqueue(_Task(batch, np.arange(i, min(i + step, len(points)))))
        self._dispatch()
        return number

    def wait(self, timeout_s: float | None = None) -> list[Finished]:
        """The batches finished since the last call, in the order they finished: at least
        one, unless none is pending or ``timeout_s`` passed first. Runs the pool meanwhile:
        results in, retries and replacements, timeouts, the next tasks out."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._finished and self._batches:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._step(left)
            if left == 0.0:
                break
        done, self._finished = list(self._finished.values()), {}
        return done

    def _points_per_task(self, points: int, problem: str) -> int:
        """``points_per_task`` for a batch of ``points`` of ``problem`` (its config's JSON);
        ``auto``: one point per task where ``task_timeout_s`` is set (a hang fails its
        whole task); else about four tasks per worker per batch, and once the problem's
        evaluations were timed, tasks of about :data:`TASK_S`: one task per worker where
        a worker's share of the batch takes no longer (the per-task cost is then most of
        the time), fewer points than four a worker where evaluations are slow (grouping
        saves nothing there and would balance the pool worse)."""
        c = self.config
        if c.points_per_task != "auto":
            return c.points_per_task
        if c.task_timeout_s is not None:
            return 1
        step = math.ceil(points / (4 * c.num_workers))
        seconds, count = self._evaluation_s.get(problem, (0.0, 0))
        if count:
            share = math.ceil(points / c.num_workers)
            if seconds * share <= TASK_S * count:
                return share
            step = min(step, math.floor(TASK_S * count / seconds))
        return max(1, step)

    def _enqueue(self, task: _Task) -> None:
        queue = self._queues.get(task.batch.trial)
        if queue is None:
            queue = self._queues[task.batch.trial] = deque()
            self._turns.append(task.batch.trial)
        queue.append(task)

    def _next_task(self) -> _Task:
        """The first waiting task of the trial whose turn it is; its turn passes on."""
        trial = self._turns.popleft()
        queue = self._queues[trial]
        task = queue.popleft()
        if queue:
            self._turns.append(trial)
        else:
            del self._queues[trial]
        return task

    def _dispatch(self) -> None:
        """Hand waiting tasks to idle workers until one or the other runs out."""
        while self._turns and self._idle:
            task, slot = self._next_task(), self._idle.popleft()
            batch = task.batch
            gradient = batch.gradient
            if gradient is not False:
                gradient = gradient[task.indices]
            ref = slot.actor.evaluate.remote(batch.problem, batch.points[task.indices], gradient)
            self._inflight[ref] = (task, slot, time.monotonic())
            self.on_event(
                "task_started", worker=slot.name, trial=batch.trial, batch=batch.id,
                points=len(task.indices),
            )  # fmt: skip

    def _step(self, wait_s: float | None, everything: bool = False) -> None:
        """Wait up to ``wait_s`` for a result (every result already back, ``everything``),
        take in what came, time out overdue tasks and hand out the next tasks."""
        ray = self._ray
        refs = [*self._inflight, *self._starting]
        if not refs:
            return
        ready, _ = ray.wait(
            refs,
            num_returns=len(refs) if everything else 1,
            timeout=self._until_deadline(wait_s),
        )
        for ref in ready:
            if ref in self._starting:
                self._report_up(self._starting[ref])
            else:
                task, slot, _ = self._inflight.pop(ref)
                self._idle.append(self._collect(ref, task, slot))
        self._time_out()
        self._dispatch()

    def _until_deadline(self, wait_s: float | None) -> float | None:
        """``wait_s``, cut short to the oldest task's deadline (a little after it)."""
        timeout = self.config.task_timeout_s
        if timeout is None or not self._inflight:
            return wait_s
        _, _, oldest = next(iter(self._inflight.values()))
        due = max(0.0, oldest + timeout - time.monotonic()) + 0.01
        return due if wait_s is None else min(wait_s, due)

    def _time_out(self) -> None:
        """Fail the tasks running past ``task_timeout_s`` and replace their workers."""
        timeout = self.config.task_timeout_s
        if timeout is None:
            return
        now = time.monotonic()
        for ref, (task, slot, started) in list(self._inflight.items()):
            if now - started <= timeout:
                break  # the others started later
            del self._inflight[ref]
            error = f"timed out after {timeout:g} s on worker {slot.name}"
            self._fail(task, error, slot)
            self._idle.append(self._replace(slot, "task timed out"))

    def _start(self, count: int) -> list[_Slot]:
        c = self.config
        actor = self._remote.options(
            num_cpus=c.cpus_per_worker, num_gpus=c.gpu_fraction, max_restarts=0
        )
        threads = max(1, math.floor(c.cpus_per_worker))
        bounds = (c.max_problems_per_worker, c.problem_memory_mb)
        slots = [_Slot(actor.remote(threads, *bounds), name="starting") for _ in range(count)]
        for slot in slots:
            slot.starting = slot.actor.info.remote()
            self._starting[slot.starting] = slot
        return slots

    def _report_up(self, slot: _Slot) -> None:
        """Emit ``worker_up`` for ``slot``'s actor once its ``info()`` call is back."""
        ref, slot.starting = slot.starting, None
        del self._starting[ref]
        try:
            info = self._ray.get(ref)
        except self._ray.exceptions.RayActorError:
            return  # it died starting: its next task fails and is retried, as any dead worker's
        slot.name = info["worker"]
        self.on_event("worker_up", **info)

    def _ensure_workers(self) -> None:
        """Start the pool on first use and wait until every worker is up."""
        if self._slots:
            return
        ray, c = self._ray, self.config
        slots = self._start(c.num_workers)
        refs = [s.starting for s in slots]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=c.start_timeout_s)
        if len(ready) < len(refs):
            for s in slots:
                ray.kill(s.actor)
            self._starting.clear()
            raise EngineError(
                f"only {len(ready)} of {c.num_workers} Ray workers started within "
                f"{c.start_timeout_s:g} s; each asks for {c.cpus_per_worker:g} CPU and "
                f"{c.gpu_fraction:g} GPU, and the cluster has {ray.cluster_resources()}"
            )
        for slot in slots:
            self._report_up(slot)
        self._slots = slots
        self._idle.extend(slots)

    def _replace(self, slot: _Slot, reason: str) -> _Slot:
        """Kill ``slot``'s actor (if alive) and put a fresh one in its place; the fresh one's
        ``worker_up`` follows when it has started (see :meth:`_step`)."""
        if slot.starting is not None:
            if self._ray.wait([slot.starting], timeout=0)[0]:
                self._report_up(slot)  # up but not yet reported: its worker_down needs its name
            else:
                del self._starting[slot.starting]
                slot.starting = None
        with contextlib.suppress(Exception):
            self._ray.kill(slot.actor, no_restart=True)
        self.on_event("worker_down", worker=slot.name, reason=reason)
        (fresh,) = self._start(1)
        fresh.name = f"replacing {slot.name}"
        self._slots[self._slots.index(slot)] = fresh
        return fresh

    def _collect(self, ref: Any, task: _Task, slot: _Slot) -> _Slot:
        """Take one finished task's results; return the slot that is now idle."""
        ray, c = self._ray, self.config
        batch = task.batch
        where = {"trial": batch.trial, "batch": batch.id}
        try:
            evaluations, evicted = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            fresh = self._replace(slot, f"died: {type(exc).__name__}")
            if batch.failed:
                return fresh
            if task.attempt < c.max_retries:
                self._enqueue(_Task(batch, task.indices, task.attempt + 1))
                self.on_event("task_retried", worker=slot.name, reason="worker died", **where)
            else:
                error = f"worker died {task.attempt + 1} times while evaluating this point"
                self._fail(task, error, slot)
            return fresh
        except ray.exceptions.RayError as exc:
            # A RayTaskError: the problem could not be built or set up (evaluations that
            # raise come back as failed ones). Anything else (a result lost): the batch
            # cannot finish either. Its batch fails, the others go on.
            cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc
            error = f"worker {slot.name} could not run the problem: {cause!r}"
            self.on_event("task_failed", worker=slot.name, error=error, **where)
            self._fail_batch(batch, EngineError(error))
            return self._done_with(slot)
        if slot.starting is not None:  # back, since the actor ran info() before this task
            self._report_up(slot)
        slot.name = evaluations[0].worker if evaluations else slot.name
        for label in evicted:
            self.on_event("problem_evicted", worker=slot.name, problem=label)
        seconds, count = self._evaluation_s.get(batch.key, (0.0, 0))
        seconds += sum(ev.wall_time_s for ev in evaluations)
        self._evaluation_s[batch.key] = (seconds, count + len(evaluations))
        if not batch.failed:
            retry = []
            for i, ev in zip(task.indices, evaluations):
                if ev.raised and task.attempt < c.max_retries:
                    retry.append(i)
                else:
                    self._settle(batch, i, ev)
            if retry:
                self._enqueue(_Task(batch, np.array(retry), task.attempt + 1))
                self.on_event("task_retried", worker=slot.name, points=len(retry), **where)
        failed = sum(not ev.ok for ev in evaluations)
        self.on_event(
            "task_finished", worker=slot.name, points=len(evaluations), failed=failed, **where
        )
        return self._done_with(slot)

    def _done_with(self, slot: _Slot) -> _Slot:
        """Count a task ``slot`` ran; return it, or its fresh successor once it ran
        ``max_tasks_per_worker``."""
        slot.tasks_done += 1
        limit = self.config.max_tasks_per_worker
        if limit is not None and slot.tasks_done >= limit:
            return self._replace(slot, f"recycled after {slot.tasks_done} tasks")
        return slot

    def _settle(self, batch: _Batch, i: int, ev: Evaluation) -> None:
        """Point ``i`` of ``batch`` has its final result; finish the batch with its last."""
        batch.results[i] = ev
        batch.missing -= 1
        if batch.missing == 0:
            del self._batches[batch.id]
            self._finished[batch.id] = Finished(batch.id, cast(list[Evaluation], batch.results))

    def _fail(self, task: _Task, error: str, slot: _Slot) -> None:
        """Record ``task``'s points as failed with ``error`` (``task_failed``)."""
        batch = task.batch
        self.on_event("task_failed", worker=slot.name, error=error, trial=batch.trial,
                      batch=batch.id)  # fmt: skip
        if batch.failed:
            return
        for i in task.indices:
            ev = Evaluation.failed(error)
            ev.worker = slot.name
            self._settle(batch, i, ev)

    def _fail_batch(self, batch: _Batch, error: EngineError) -> None:
        """Finish ``batch`` with ``error``: its waiting tasks are dropped, its running ones'
        results ignored when they come back; other batches go on."""
        if batch.failed:
            return
        batch.failed = True
        del self._batches[batch.id]
        self._finished[batch.id] = Finished(batch.id, error=error)
        queue = self._queues.get(batch.trial)
        if queue is None:
            return
        kept = deque(task for task in queue if task.batch is not batch)
        if kept:
            self._queues[batch.trial] = kept
        else:
            del self._queues[batch.trial]
            self._turns.remove(batch.trial)

    def close(self) -> None:
        """Kill the actors; leave the Ray this engine started or joined (a private one is
        shut down and removed)."""
        for slot in self._slots:
            with contextlib.suppress(Exception):
                self._ray.kill(slot.actor, no_restart=True)
        self._slots = []
        self._starting.clear()
        self._idle.clear()
        self._inflight.clear()
        self._batches.clear()
        self._queues.clear()
        self._turns.clear()
        if self._session is not None:
            self._session.close()
