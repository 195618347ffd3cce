"""The serial engine: evaluations run one after another in this process."""

from __future__ import annotations

import os
import socket
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from hpcopt.core.evaluation import Evaluation
from hpcopt.engine.base import ProblemClass, SerialEngine, SetUpProblems, available_cpus
from hpcopt.problems.base import ProblemConfig


class LocalEngineConfig(BaseModel):
    """``engine: {kind: local}``: evaluations run serially in the driver process."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["local"] = "local"


class LocalEngine(SerialEngine):
    """Evaluates in the calling process. Problems are built and set up once per config."""

    def __init__(self, config: LocalEngineConfig, problem_class: ProblemClass) -> None:
        super().__init__(problem_class)
        self._problems = SetUpProblems(available_cpus())
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def evaluate(
        self, problem: ProblemConfig, points: np.ndarray, gradient: np.ndarray
    ) -> list[Evaluation]:
        built = self._problems.get(self.problem_class(problem), problem)
        evaluations = built.evaluate_batch(points, gradient)
        for ev in evaluations:
            ev.worker = self.worker
        return evaluations

    def close(self) -> None:
        self._problems.clear()
