"""The Engine interface: map a problem over a batch of points, results in order.

An engine is told which class implements a problem config (``problem_class``) by whoever
builds it: the registry (:mod:`hpcopt.config.registry`) sits above the engines.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
from threadpoolctl import ThreadpoolController

from hpcopt.core.evaluation import Evaluation
from hpcopt.core.events import EventSink, ignore
from hpcopt.problems.base import Problem, ProblemConfig

ProblemClass = Callable[[ProblemConfig], type[Problem]]
"""Which :class:`Problem` subclass implements a problem config (the registry's answer)."""


def limit_threads(threads: int) -> None:
    """Cap the BLAS and OpenMP thread pools of the libraries this process has loaded at
    ``threads`` (at least 1): a worker that asked for N CPUs uses N, not every core of a
    shared node, where oversubscribed numpy/SciPy solves were measured 10x slower. A pool
    already smaller (``OMP_NUM_THREADS=1``, say) is left as it is."""
    threads = max(1, int(threads))
    controller = ThreadpoolController()
    for pool in controller.info():
        if pool["num_threads"] > threads:
            controller.select(filepath=pool["filepath"]).limit(limits=threads)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a Slurm allocation's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident set size now, in bytes (``/proc/self/statm``; 0 where
    there is no such file, which turns the memory budget of :class:`SetUpProblems` off)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


class SetUpProblems:
    """A worker's problems: each built from its config and set up on first use, then kept,
    the least recently used dropped first beyond ``max_problems`` of them or ``memory_mb``
    megabytes (``None``: no bound); a dropped problem is built and set up again when it is
    needed again, and ``on_evict(label)`` is told.

    A problem's memory is the growth of the process's resident set across its build and
    setup. That is an approximation, on purpose cheap: it misses what the problem
    allocates later (caches filled while evaluating), counts what the allocator keeps
    from earlier frees as nothing, counts anything else the process loaded meanwhile (a
    library's first import goes to the first problem that needs it), and knows nothing
    of GPU memory. Freed memory may also stay with the allocator after an eviction. The
    problem being used is never dropped, even when it alone is over the budget.
    """

    def __init__(
        self,
        threads: int,
        max_problems: int | None = None,
        memory_mb: float | None = None,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        self.threads = threads
        self.max_problems = max_problems
        self.memory_mb = memory_mb
        self.on_evict = on_evict
        self._problems: OrderedDict[str, tuple[Problem, int, str]] = OrderedDict()

    def get(self, implementation: type[Problem], config: ProblemConfig) -> Problem:
        """The set-up problem of ``config``, built as ``implementation(config)`` the first
        time (or the first time since it was dropped); the worker's BLAS and OpenMP pools
        are then capped at ``threads``."""
        key = config.model_dump_json()
        if key in self._problems:
            self._problems.move_to_end(key)
            return self._problems[key][0]
        before = resident_bytes()
        problem = implementation(config)
        problem.setup()
        limit_threads(self.threads)  # after setup, once the problem's libraries are loaded
        self._problems[key] = (problem, max(0, resident_bytes() - before), config.label)
        self._evict()
        return problem

    def memory_bytes(self) -> int:
        """The memory charged to the problems kept (see the class docstring)."""
        return sum(grown for _, grown, _ in self._problems.values())

    def __len__(self) -> int:
        return len(self._problems)

    def _evict(self) -> None:
        budget = math.inf if self.memory_mb is None else self.memory_mb * 2**20
        limit = math.inf if self.max_problems is None else self.max_problems
        while len(self._problems) > 1 and (
            len(self._problems) > limit or self.memory_bytes() > budget
        ):
            _, (_, _, label) = self._problems.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(label)

    def clear(self) -> None:
        """Drop every problem."""
        self._problems.clear()


@dataclass
class Finished:
    """A batch an engine finished: its evaluations in the order of its points, or the
    error that stopped it (its problem could not be built or set up; its trial fails)."""

    batch: int
    evaluations: list[Evaluation] = field(default_factory=list)
    error: BaseException | None = None


class Engine(ABC):
    """Runs evaluations. Each worker builds and sets up a problem once, then reuses it.

    ``problem_class`` says which class implements a problem config; engines are built as
    ``Engine(config, problem_class)``.

    Batches are submitted (:meth:`submit`, one id each) and collected as they finish
    (:meth:`wait`), so several trials may have batches in flight at once; :meth:`map` is
    one batch, submitted and waited for. A batch's evaluations come back in the order of
    its points, with ``wall_time_s`` and ``worker`` filled in. A point whose evaluation
    raised comes back as a failed evaluation carrying the error text; it never aborts the
    batch. A problem that cannot be built or set up finishes its batch with an error
    (``map`` raises it: its trial fails).

    ``on_event(kind, **fields)`` receives progress events; the driver points it at the
    campaign's event log.
    """

    on_event: EventSink = staticmethod(ignore)

    def __init__(self, problem_class: ProblemClass) -> None:
        self.problem_class = problem_class
        self._next_batch = 0
        self._finished: dict[int, Finished] = {}  # finished, not yet returned by wait()

    @property
    def workers(self) -> int:
        """How many tasks can run at once (1: one after another)."""
        return 1

    @abstractmethod
    def queued(self) -> int:
        """Tasks submitted and waiting for a worker now (none while a worker is idle).

        The driver starts another trial while fewer tasks wait than there are workers:
        workers freed while the running trials turn their results into their next batches
        then find work, and the serial engine runs one trial after another."""

    @abstractmethod
    def submit(
        self,
        problem: ProblemConfig,
        points: np.ndarray,
        gradient: bool | np.ndarray = False,
        trial: str = "",
    ) -> int:
        """Queue ``points`` (natural units, shape ``(n, d)``) of ``problem``; return the
        batch's id. ``trial`` names whose batch it is, in the events."""

    @abstractmethod
    def wait(self, timeout_s: float | None = None) -> list[Finished]:
        """The batches finished since the last call: at least one, unless none is pending
        or ``timeout_s`` passed first."""

    @abstractmethod
    def pending(self) -> int:
        """Batches submitted and not yet returned by :meth:`wait`."""

    def _new_batch(
        self, points: np.ndarray, gradient: bool | np.ndarray
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """A submitted batch's id, its points ``(n, d)`` and its gradient mask ``(n,)``."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        wanted = np.broadcast_to(np.asarray(gradient, dtype=bool), (len(points),)).copy()
        batch, self._next_batch = self._next_batch, self._next_batch + 1
        return batch, points, wanted

    def map(
        self, problem: ProblemConfig, points: np.ndarray, gradient: bool | np.ndarray = False
    ) -> list[Evaluation]:
        """Evaluate ``points`` (natural units, shape ``(n, d)``) of ``problem`` and wait for
        them; batches of others that finish meanwhile are kept for their :meth:`wait`."""
        batch = self.submit(problem, points, gradient)
        others: list[Finished] = []
        try:
            while True:
                for done in self.wait():
                    if done.batch != batch:
                        others.append(done)
                    elif done.error is not None:
                        raise done.error
                    else:
                        return done.evaluations
        finally:
            self._finished.update((f.batch, f) for f in others)

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing here
        """Release workers and other resources."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SerialEngine(Engine):
    """An engine that runs batches one at a time, in submission order, in :meth:`wait`,
    through :meth:`evaluate`."""

    def __init__(self, problem_class: ProblemClass) -> None:
        super().__init__(problem_class)
        self._queued: deque[tuple[int, ProblemConfig, np.ndarray, np.ndarray]] = deque()

    def queued(self) -> int:
        return len(self._queued)

    def submit(
        self,
        problem: ProblemConfig,
        points: np.ndarray,
        gradient: bool | np.ndarray = False,
        trial: str = "",
    ) -> int:
        batch, points, wanted = self._new_batch(points, gradient)
        self._queued.append((batch, problem, points, wanted))
        return batch

    def wait(self, timeout_s: float | None = None) -> list[Finished]:
        """The batches finished since the last call; runs the oldest queued batch now."""
        if not self._finished and self._queued:
            batch, problem, points, wanted = self._queued.popleft()
            try:
                self._finished[batch] = Finished(batch, self.evaluate(problem, points, wanted))
            except Exception as exc:  # the problem could not be built or set up
                self._finished[batch] = Finished(batch, error=exc)
        done, self._finished = list(self._finished.values()), {}
        return done

    def pending(self) -> int:
        return len(self._queued) + len(self._finished)

    @abstractmethod
    def evaluate(
        self, problem: ProblemConfig, points: np.ndarray, gradient: np.ndarray
    ) -> list[Evaluation]:
        """Evaluate one batch now, here; ``gradient`` is a mask ``(n,)``."""
