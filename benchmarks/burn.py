"""A problem that burns a fixed amount of CPU time per evaluation (for engine benchmarks)."""

from __future__ import annotations

import time

import numpy as np

from hpcopt.core.evaluation import Evaluation
from hpcopt.problems.base import Problem


class Burn(Problem):
    """Spins until ``options.cpu_s`` seconds of this process's CPU time have passed."""

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        end = time.process_time() + self.config.options.get("cpu_s", 0.2)
        while time.process_time() < end:
            pass
        return Evaluation(value=float(x @ x))
