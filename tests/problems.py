"""Problems used by the tests through ``problem: {name: custom, target: tests.problems:...}``."""

from __future__ import annotations

import mmap
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hpcopt.core.evaluation import Evaluation
from hpcopt.problems.base import Confirmation, Problem
from hpcopt.problems.custom import CustomConfig

if TYPE_CHECKING:
    from hpcopt import config as cfg

NOISY = "tests.problems:NoisyQuadratic"


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
        if x[0] > self.config.options["kill_above"]:
            kill_once(Path(self.config.options["marker"]))
        return Evaluation(value=float(x @ x))


def kill_once(marker: Path) -> None:
    """SIGKILL this process unless ``marker`` exists; create it first (it remembers the kill)."""
    try:  # exclusive creation: of two workers meeting such points at once, one dies
        with open(marker, "x") as f:
            f.write(str(os.getpid()))
    except FileExistsError:
        pass
    else:
        os.kill(os.getpid(), signal.SIGKILL)


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


class NoisyQuadratic(Problem):
    """``sum((x - options.center)^2)`` plus Gaussian noise of scale ``options.noise`` drawn
    from ``options.seed`` and the point: a Monte Carlo estimate, deterministic per seed.
    Where ``options.seed`` is ``options.fail_seed`` it raises; ``options.interrupt_seed``,
    it raises KeyboardInterrupt (Ctrl-C); and where it is ``options.kill_seed`` the process
    SIGKILLs itself once (marker file ``options.marker``)."""

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        opts = self.config.options
        seed = opts.get("seed", 0)
        if seed == opts.get("fail_seed"):
            raise RuntimeError(f"seed {seed} always fails")
        if seed == opts.get("interrupt_seed"):
            raise KeyboardInterrupt
        if seed == opts.get("kill_seed"):
            kill_once(Path(opts["marker"]))
        return Evaluation(
            value=noisy_quadratic(x, opts.get("center", 0.0), opts.get("noise", 0.0), seed)
        )


def noisy_quadratic(x: np.ndarray, center: float, noise: float, seed: int) -> float:
    """The :class:`NoisyQuadratic` value of ``x`` (natural units) under ``seed``."""
    rng = np.random.default_rng([seed, *np.frombuffer(np.asarray(x, float).tobytes(), np.uint32)])
    return float(np.sum((x - center) ** 2) + noise * rng.standard_normal())


class NoisyQuadraticConfig(CustomConfig):
    """The ``custom`` config of :class:`NoisyQuadratic` with confirmed winners: the best
    ``options.confirm_top_k`` points re-scored under each of ``options.confirm_seeds``.

    The config schema knows only ``custom``; :func:`confirming` puts this class in.
    """

    def confirmation(self) -> Confirmation | None:
        seeds = self.options.get("confirm_seeds")
        if seeds is None:
            return None
        variants = tuple(
            self.model_copy(update={"options": {**self.options, "seed": s}}) for s in seeds
        )
        return Confirmation(int(self.options["confirm_top_k"]), variants)


def confirming(campaign: cfg.Campaign) -> cfg.Campaign:
    """``campaign`` with the problem of each :class:`NoisyQuadratic` trial as a
    :class:`NoisyQuadraticConfig`."""

    def swap(trial: cfg.TrialConfig) -> cfg.TrialConfig:
        if getattr(trial.problem, "target", "") != NOISY:
            return trial
        problem = NoisyQuadraticConfig.model_validate(trial.problem.model_dump())
        return trial.model_copy(update={"problem": problem})

    trials = tuple(swap(t) for t in campaign.trials)
    return campaign.model_copy(update={"trials": trials})


def drive(root: str) -> None:
    """Run or resume the campaign in ``root`` with its confirmations (the tests start this
    as a subprocess, to kill it)."""
    from hpcopt.driver import campaign as drv
    from hpcopt.driver import reporters

    store, campaign = drv.reopen(root)
    drv.run(confirming(campaign), store, reporter=reporters.SilentReporter())


class BlasThreads(Problem):
    """The sphere, recording how many threads the BLAS libraries it loaded may use."""

    def setup(self) -> None:
        import scipy.linalg  # noqa: F401 - loads SciPy's own BLAS, as a PBE problem does

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        from threadpoolctl import threadpool_info

        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        return Evaluation(value=float(x @ x), extras={"blas_threads": float(max(blas))})


SETUPS: list[float] = []
"""Every :class:`CountedSetup` set up in this process, in order (its ``options.tag``)."""


class CountedSetup(Problem):
    """The sphere; its setup is recorded in :data:`SETUPS` and holds ``options.hold_mb``
    megabytes (written, so resident), and every evaluation says how many setups this
    process has done so far (``extras.setups``) and whose problem it was (``extras.tag``)."""

    def setup(self) -> None:
        SETUPS.append(float(self.config.options.get("tag", 0)))
        # pages of their own, written: memory that malloc kept from earlier frees (after
        # autograd's, a 64 MB np.ones grew the resident set by nothing) would not show
        size = max(1, int(self.config.options.get("hold_mb", 0) * 2**20))
        self.held = mmap.mmap(-1, size)
        np.frombuffer(self.held, dtype=np.uint8)[:] = 1

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        tag = float(self.config.options.get("tag", 0))
        return Evaluation(value=float(x @ x), extras={"setups": float(len(SETUPS)), "tag": tag})
