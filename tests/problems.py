"""Problems used by the tests through ``problem: {name: custom, target: tests.problems:...}``."""

from __future__ import annotations

import sys

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


class KillOnce(Problem):
    """Sphere whose worker process SIGKILLs itself the first time it meets ``x0 > kill_above``
    (a marker file at ``options.marker`` remembers that it happened, across processes)."""

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        import os
        import signal
        from pathlib import Path

        marker = Path(self.config.options["marker"])
        if x[0] > self.config.options["kill_above"]:
            try:  # exclusive creation: of two workers meeting such points at once, one dies
                with open(marker, "x") as f:
                    f.write(str(os.getpid()))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return Evaluation(value=float(x @ x))


class Hang(Problem):
    """Sphere that hangs (sleeps for an hour) where ``x0 > options.hang_above``."""

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        import time

        if x[0] > self.config.options["hang_above"]:
            time.sleep(3600)
        return Evaluation(value=float(x @ x))


class WhereAmI(Problem):
    """The sphere, recording whether it ran in the hpcopt image's Python."""

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        return Evaluation(
            value=float(x @ x), extras={"in_image": float(sys.prefix == "/opt/hpcopt/venv")}
        )
