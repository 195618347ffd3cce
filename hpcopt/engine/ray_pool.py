"""The Ray engine: a pool of persistent actors, each holding problems it set up once.

Each actor asks Ray for ``cpus_per_worker`` CPUs and ``gpu_fraction`` of a GPU, builds a
problem the first time it sees its config (a scene loaded, a grid built) and reuses it for
every later task. The pool is scheduled here rather than by Ray's ``ActorPool``, which
keeps handing work to a dead actor: a batch is cut into tasks of ``points_per_task``
points; every idle actor gets the next task as soon as it is free (no head-of-line
blocking behind a slow task); results go back in the batch's order.

Faults: an actor that dies mid-task (SIGKILL, out of memory, a lost node) is replaced and
its task runs again elsewhere; a point whose evaluation raised is retried up to
``max_retries`` times, then recorded as failed with its error; a task running longer than
``task_timeout_s`` has its actor killed and replaced and its points recorded as failed
(a hang is not retried: it would most likely hang again). After
``max_tasks_per_worker`` tasks an actor is retired and a fresh one takes its place, which
bounds what a leaking simulation library can accumulate. Completed results are never
lost or run again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpcopt.core.evaluation import Evaluation
from hpcopt.engine import private_ray
from hpcopt.engine.base import Engine, ProblemClass, SetUpProblems
from hpcopt.engine.private_ray import Watchdog
from hpcopt.engine.ray_node import auth_env, new_token_file
from hpcopt.problems.base import Problem, ProblemConfig


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
    points_per_task: int = Field(1, ge=1)
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


class RayWorker:
    """The actor: holds set-up problems by config, evaluates chunks of points."""

    def __init__(self, threads: int = 1) -> None:
        import ray

        ctx = ray.get_runtime_context()
        self.actor_id = ctx.get_actor_id()
        node_id = ctx.get_node_id()
        self.node = next(
            (n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), "?"
        )
        self.gpu_ids = ",".join(str(g) for g in ray.get_gpu_ids())
        self.name = f"{self.actor_id[:8]}:{os.getpid()}"
        self._problems = SetUpProblems(threads)

    def info(self) -> dict[str, str]:
        """Who and where this worker is (also its readiness check)."""
        return {
            "worker": self.name,
            "node": self.node,
            "gpu_ids": self.gpu_ids,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "pid": str(os.getpid()),
        }

    def evaluate(
        self,
        implementation: type[Problem],
        config: ProblemConfig,
        points: np.ndarray,
        gradient: bool | np.ndarray,
    ) -> list[Evaluation]:
        """Evaluate ``points`` ``(k, d)`` of ``config``'s problem, built as
        ``implementation(config)`` and set up on first use."""
        problem = self._problems.get(implementation, config)
        evaluations = problem.evaluate_batch(points, gradient)
        for ev in evaluations:
            ev.worker, ev.node, ev.gpu_ids = self.name, self.node, self.gpu_ids
        return evaluations


@dataclass
class _Slot:
    actor: Any
    name: str = ""
    tasks_done: int = 0
    starting: Any = None  # the actor's info() call, until its start is reported


@dataclass
class _Task:
    indices: np.ndarray
    attempt: int = 0


class RayEngine(Engine):
    """Maps batches over a pool of persistent Ray actors (see the module docstring)."""

    def __init__(self, config: RayEngineConfig, problem_class: ProblemClass) -> None:
        import ray

        super().__init__(problem_class)
        self.config = config
        self._ray = ray
        self._private_dir: Path | None = None
        self._watchdog: Watchdog | None = None
        self._saved_env: dict[str, str] = {}
        self._slots: list[_Slot] = []
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                self._connect()
            except BaseException:
                self.close()
                raise
        self._remote = ray.remote(RayWorker)

    def _connect(self) -> None:
        """``ray.init`` for this campaign, with token authentication set up for it.

        A private Ray's folder is watched from before Ray starts (see
        :mod:`hpcopt.engine.private_ray`): whatever ends this process, its Ray ends too.
        """
        c = self.config
        self._saved_env = dict(os.environ)
        if c.address == "auto":
            self._private_dir = private_ray.make()
            self._watchdog = private_ray.Watchdog(self._private_dir)
            _set_auth_env(auth_env(new_token_file(self._private_dir)))
            self._ray.init(
                address="local",
                num_cpus=c.num_cpus or os.cpu_count(),
                num_gpus=c.num_gpus or 0,
                include_dashboard=False,
                _temp_dir=str(self._private_dir / "r"),
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            if c.token_file:
                _set_auth_env(auth_env(c.token_file))
            self._ray.init(address=c.address, log_to_driver=False, configure_logging=False)

    def _start(self, count: int) -> list[_Slot]:
        c = self.config
        actor = self._remote.options(
            num_cpus=c.cpus_per_worker, num_gpus=c.gpu_fraction, max_restarts=0
        )
        threads = max(1, math.floor(c.cpus_per_worker))
        slots = [_Slot(actor.remote(threads), name="starting") for _ in range(count)]
        for slot in slots:
            slot.starting = slot.actor.info.remote()
        return slots

    def _report_up(self, slot: _Slot) -> None:
        """Emit ``worker_up`` for ``slot``'s actor once its ``info()`` call is back."""
        ref, slot.starting = slot.starting, None
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
            raise EngineError(
                f"only {len(ready)} of {c.num_workers} Ray workers started within "
                f"{c.start_timeout_s:g} s; each asks for {c.cpus_per_worker:g} CPU and "
                f"{c.gpu_fraction:g} GPU, and the cluster has {ray.cluster_resources()}"
            )
        for slot in slots:
            self._report_up(slot)
        self._slots = slots

    def _replace(self, slot: _Slot, reason: str) -> _Slot:
        """Kill ``slot``'s actor (if alive) and put a fresh one in its place; the fresh one's
        ``worker_up`` follows when it has started (see :meth:`map`)."""
        if slot.starting is not None and self._ray.wait([slot.starting], timeout=0)[0]:
            self._report_up(slot)  # up but not yet reported: its worker_down needs its name
        with contextlib.suppress(Exception):
            self._ray.kill(slot.actor, no_restart=True)
        self.on_event("worker_down", worker=slot.name, reason=reason)
        (fresh,) = self._start(1)
        fresh.name = f"replacing {slot.name}"
        self._slots[self._slots.index(slot)] = fresh
        return fresh

    def evaluate(
        self, problem: ProblemConfig, points: np.ndarray, gradient: np.ndarray
    ) -> list[Evaluation]:
        """One batch over the whole pool (the base's submit/wait run batches one at a time)."""
        return self.map(problem, points, gradient)

    def map(
        self, problem: ProblemConfig, points: np.ndarray, gradient: bool | np.ndarray = False
    ) -> list[Evaluation]:
        ray, c = self._ray, self.config
        points = np.atleast_2d(np.asarray(points, dtype=float))
        wanted = np.broadcast_to(np.asarray(gradient, dtype=bool), (len(points),))
        self._ensure_workers()
        results: list[Evaluation | None] = [None] * len(points)
        step = c.points_per_task
        queue = deque(
            _Task(np.arange(i, min(i + step, len(points)))) for i in range(0, len(points), step)
        )
        idle = deque(self._slots)
        inflight: dict[Any, tuple[_Task, _Slot, float]] = {}
        implementation = self.problem_class(problem)  # pickled by reference: its module's name
        config_ref = ray.put(problem)
        while queue or inflight:
            while queue and idle:
                task, slot = queue.popleft(), idle.popleft()
                ref = slot.actor.evaluate.remote(
                    implementation, config_ref, points[task.indices], wanted[task.indices]
                )
                inflight[ref] = (task, slot, time.monotonic())
                self.on_event("task_started", worker=slot.name, points=len(task.indices))
            starting = {s.starting: s for s in self._slots if s.starting is not None}
            ready, _ = ray.wait(
                [*inflight, *starting], num_returns=1, timeout=self._wait_s(inflight)
            )
            for ref in ready:
                if ref in starting:
                    self._report_up(starting[ref])
                    continue
                task, slot, _ = inflight.pop(ref)
                idle.append(self._collect(ref, task, slot, queue, results))
            for ref, (task, slot, started) in list(inflight.items()):
                if c.task_timeout_s is not None and time.monotonic() - started > c.task_timeout_s:
                    del inflight[ref]
                    error = f"timed out after {c.task_timeout_s:g} s on worker {slot.name}"
                    self._fail(task, error, results, slot)
                    self.on_event("task_failed", worker=slot.name, error=error)
                    idle.append(self._replace(slot, "task timed out"))
        return [ev for ev in results if ev is not None]

    def _wait_s(self, inflight: dict[Any, tuple[_Task, _Slot, float]]) -> float | None:
        """How long to wait for a result before checking the task deadlines."""
        if self.config.task_timeout_s is None:
            return None
        oldest = min(started for _, _, started in inflight.values())
        return max(0.0, oldest + self.config.task_timeout_s - time.monotonic()) + 0.01

    def _collect(
        self,
        ref: Any,
        task: _Task,
        slot: _Slot,
        queue: deque[_Task],
        results: list[Evaluation | None],
    ) -> _Slot:
        """Take one finished task's results; return the slot that is now idle."""
        ray, c = self._ray, self.config
        try:
            evaluations = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            fresh = self._replace(slot, f"died: {type(exc).__name__}")
            if task.attempt < c.max_retries:
                queue.append(_Task(task.indices, task.attempt + 1))
                self.on_event("task_retried", worker=slot.name, reason="worker died")
            else:
                error = f"worker died {task.attempt + 1} times while evaluating this point"
                self._fail(task, error, results, slot)
                self.on_event("task_failed", worker=slot.name, error=error)
            return fresh
        except ray.exceptions.RayTaskError as exc:
            raise EngineError(
                f"worker {slot.name} could not run the problem: {exc.cause!r}"
            ) from exc
        if slot.starting is not None:  # back, since the actor ran info() before this task
            self._report_up(slot)
        slot.name = evaluations[0].worker if evaluations else slot.name
        retry = []
        for i, ev in zip(task.indices, evaluations):
            if ev.raised and task.attempt < c.max_retries:
                retry.append(i)
            else:
                results[i] = ev
        if retry:
            queue.append(_Task(np.array(retry), task.attempt + 1))
            self.on_event("task_retried", worker=slot.name, points=len(retry))
        failed = sum(not ev.ok for ev in evaluations)
        self.on_event("task_finished", worker=slot.name, points=len(evaluations), failed=failed)
        slot.tasks_done += 1
        if c.max_tasks_per_worker is not None and slot.tasks_done >= c.max_tasks_per_worker:
            return self._replace(slot, f"recycled after {slot.tasks_done} tasks")
        return slot

    def _fail(self, task: _Task, error: str, results: list[Evaluation | None], slot: _Slot) -> None:
        for i in task.indices:
            results[i] = Evaluation.failed(error)
            results[i].worker = slot.name

    def close(self) -> None:
        """Kill the actors; shut down and remove a private Ray."""
        for slot in self._slots:
            with contextlib.suppress(Exception):
                self._ray.kill(slot.actor, no_restart=True)
        self._slots = []
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        if self._saved_env:
            _set_auth_env(self._saved_env)
            self._saved_env = {}
        self._remove_private_dir()

    def _remove_private_dir(self) -> None:
        """Have the watchdog end what Ray's shutdown left and remove the folder and token."""
        directory, watchdog = self._private_dir, self._watchdog
        self._private_dir = self._watchdog = None
        if directory is None:
            return
        try:
            if watchdog is not None:
                watchdog.stop()
        finally:
            private_ray.end(directory)  # nothing is left to end unless the watchdog failed


def _set_auth_env(env: dict[str, str]) -> None:
    """Make ``env``'s Ray auth settings this process's, and have Ray read them again.

    Ray caches the auth mode (RayConfig) and the token (its token loader) per process, so
    a process that talks to several clusters in turn, as the tests do, must refresh both.
    """
    # Private Ray, on purpose: Ray (2.52 to 2.60, read in 2.60's source and docs) has no
    # public call that re-reads RAY_AUTH_* in a running process; its own test helper
    # (ray._private.authentication_test_utils.reset_auth_token_state) does these two
    # calls, in this order: the config first, or a draining gRPC thread reloads the
    # token under the old mode. Kept to this one function so a Ray upgrade breaks here.
    from ray._raylet import AuthenticationTokenLoader, Config

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
