"""The Problem interface: what a simulation must offer to be optimised.

A problem is split in two so that the driver never pays for the physics:

- a :class:`ProblemConfig` (pydantic, cheap) is what the campaign config holds. It knows
  the parameter space, the direction and the constraints;
- a :class:`Problem` is built from it once per worker (``setup`` loads a scene or reads
  data) and evaluates batches of points, in natural units.

Which Problem class implements which config is the registry's to say
(:mod:`hpcopt.config.registry`). Neither knows about Ray, Slurm or HDF5.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from hpcopt.core.evaluation import Direction, Evaluation, describe_exception
from hpcopt.core.space import Space

# A problem's author needs one import: the evaluation record is re-exported from here.
__all__ = [
    "Confirmation",
    "Direction",
    "Evaluation",
    "Problem",
    "ProblemConfig",
    "describe_exception",
]


class Problem(ABC):
    """A simulation to optimise. Built on a worker from its config; ``setup`` runs once."""

    def __init__(self, config: ProblemConfig) -> None:
        self.config = config
        self.space = config.space()

    def setup(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Expensive once-per-worker preparation (load a scene, read data)."""

    @abstractmethod
    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        """Evaluate one point ``x`` (natural units, shape ``(d,)``)."""

    def evaluate_batch(
        self, points: np.ndarray, gradient: bool | np.ndarray = False
    ) -> list[Evaluation]:
        """Evaluate ``points`` of shape ``(n, d)``, in order.

        A failing point becomes a failed :class:`Evaluation` and the others go on.
        ``gradient`` asks for gradients at every point, or, as a mask ``(n,)``, at some.
        Problems that can vectorise a batch override this.
        """
        points = np.atleast_2d(points)
        wanted = np.broadcast_to(np.asarray(gradient, dtype=bool), (len(points),))
        out = []
        for x, grad in zip(points, wanted):
            start = time.perf_counter()
            try:
                ev = self.evaluate(np.asarray(x, dtype=float), gradient=bool(grad))
            except Exception as exc:
                ev = Evaluation.failed(describe_exception(exc), raised=True)
            ev.wall_time_s = time.perf_counter() - start
            out.append(ev)
        return out


@dataclass(frozen=True)
class Confirmation:
    """How a trial's winners are re-scored when it ends.

    The ``top_k`` best distinct points of the trial are each evaluated once by every
    problem in ``problems`` (independent, usually higher-fidelity variants of the trial's
    problem: other Monte Carlo seeds, more rays); a point's confirmed value is the mean over
    those evaluations and its standard error their standard deviation over sqrt(n).
    """

    top_k: int
    problems: tuple[ProblemConfig, ...]


class ProblemConfig(BaseModel, ABC):
    """Base of every problem's config section. Subclasses set ``name`` to a Literal.

    Numbers must be finite: YAML's ``.inf`` and ``.nan`` are refused where they are read,
    not met later as NaN points or a sleep that never ends."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str

    @abstractmethod
    def space(self) -> Space:
        """The parameter space, in natural units."""

    @property
    def label(self) -> str:
        """A short description for tables (``analytic (branin, 2-D)``)."""
        return self.name

    @property
    def direction(self) -> Direction:
        return "minimize"

    @property
    def has_gradient(self) -> bool:
        """Whether the built problem returns exact gradients when asked."""
        return False

    def gradient_error(self) -> str:
        """Why a problem that can give exact gradients gives none as configured (a setting
        to change), or ``""`` (it has them, or never has: nothing to change)."""
        return ""

    def gradient_mask(self) -> np.ndarray:
        """Mask ``(d,)`` of the parameters whose derivative the built problem returns
        exactly when asked (the others come back NaN): all or none unless overridden."""
        return np.full(self.space().dim, self.has_gradient)

    def feasible(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask, shape ``(n,)``: which natural-unit points satisfy the constraints.

        Computed on the driver, before any evaluation: violators are never evaluated.
        """
        return np.ones(len(np.atleast_2d(points)), dtype=bool)

    def confirmation(self) -> Confirmation | None:
        """How to re-score the trial's best candidates when it ends; None: not at all."""
        return None
