"""The Engine interface: map a problem over a batch of points, results in order.

An engine is told which class implements a problem config (``problem_class``) by whoever
builds it: the registry (:mod:`hpcopt.config.registry`) sits above the engines.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType

import numpy as np
from threadpoolctl import threadpool_limits

from hpcopt.core.evaluation import Evaluation
from hpcopt.core.events import EventSink, ignore
from hpcopt.problems.base import Problem, ProblemConfig

ProblemClass = Callable[[ProblemConfig], type[Problem]]
"""Which :class:`Problem` subclass implements a problem config (the registry's answer)."""


def limit_threads(threads: int) -> None:
    """Cap the BLAS and OpenMP thread pools of the libraries this process has loaded at
    ``threads`` (at least 1): a worker that asked for N CPUs uses N, not every core of a
    shared node, where oversubscribed numpy/SciPy solves were measured 10x slower."""
    threadpool_limits(limits=max(1, int(threads)))


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a Slurm allocation's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class SetUpProblems:
    """A worker's problems: each built from its config and set up on first use, then kept."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._problems: dict[str, Problem] = {}

    def get(self, implementation: type[Problem], config: ProblemConfig) -> Problem:
        """The set-up problem of ``config``, built as ``implementation(config)`` the first
        time; the worker's BLAS and OpenMP pools are then capped at ``threads``."""
        key = config.model_dump_json()
        if key not in self._problems:
            problem = implementation(config)
            problem.setup()
            limit_threads(self.threads)  # after setup, once the problem's libraries are loaded
            self._problems[key] = problem
        return self._problems[key]

    def clear(self) -> None:
        """Drop every problem."""
        self._problems.clear()


class Engine(ABC):
    """Runs evaluations. Each worker builds and sets up a problem once, then reuses it.

    ``problem_class`` says which class implements a problem config; engines are built as
    ``Engine(config, problem_class)``.

    ``map`` returns one :class:`Evaluation` per point, in the order of ``points``, with
    ``wall_time_s`` and ``worker`` filled in. A point whose evaluation raised comes back as
    a failed evaluation carrying the error text; it never aborts the batch. A problem that
    cannot be built or set up raises from ``map`` (its trial fails).

    ``on_event(kind, **fields)`` receives progress events; the driver points it at the
    campaign's event log.
    """

    on_event: EventSink = staticmethod(ignore)

    def __init__(self, problem_class: ProblemClass) -> None:
        self.problem_class = problem_class

    @abstractmethod
    def map(
        self, problem: ProblemConfig, points: np.ndarray, gradient: bool | np.ndarray = False
    ) -> list[Evaluation]:
        """Evaluate ``points`` (natural units, shape ``(n, d)``) of ``problem``."""

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
