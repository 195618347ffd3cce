"""Problems used by the tests through ``problem: {name: custom, target: tests.problems:...}``."""

from __future__ import annotations

import numpy as np

from hpcopt.problems.base import Evaluation, Problem


class Flaky(Problem):
    """Sphere that raises where ``x0 > options.fail_above``."""

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        if x[0] > self.config.options.get("fail_above", np.inf):
            raise ValueError(f"x0={x[0]:.3f} is past fail_above")
        return Evaluation(value=float(x @ x), extras={"x0_squared": float(x[0] ** 2)})


class BrokenSetup(Problem):
    """A problem whose once-per-worker setup fails (a missing data file, say)."""

    def setup(self) -> None:
        raise FileNotFoundError("measurements.csv not found")

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        return Evaluation(value=0.0)
