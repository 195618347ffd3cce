"""The serial engine: evaluations run one after another in this process."""

from __future__ import annotations

import os
import socket
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from hpcopt.core.evaluation import Evaluation
from hpcopt.engine.base import Engine, available_cpus, limit_threads
from hpcopt.problems.base import Problem, ProblemConfig


class LocalEngineConfig(BaseModel):
    """``engine: {kind: local}``: evaluations run serially in the driver process."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["local"] = "local"


class LocalEngine(Engine):
    """Evaluates in the calling process. Problems are built and set up once per config."""

    def __init__(self) -> None:
        self._problems: dict[str, Problem] = {}
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def problem(self, config: ProblemConfig) -> Problem:
        """The set-up problem for ``config`` (built on first use, then cached)."""
        key = config.model_dump_json()
        if key not in self._problems:
            problem = config.build()
            problem.setup()
            # after setup: the problem's libraries (SciPy's BLAS) are loaded by then
            limit_threads(available_cpus())
            self._problems[key] = problem
        return self._problems[key]

    def map(
        self, problem: ProblemConfig, points: np.ndarray, gradient: bool | np.ndarray = False
    ) -> list[Evaluation]:
        evaluations = self.problem(problem).evaluate_batch(np.atleast_2d(points), gradient)
        for ev in evaluations:
            ev.worker = self.worker
        return evaluations

    def close(self) -> None:
        self._problems.clear()
