"""The Problem interface: what a simulation must offer to be optimised.

A problem is split in two so that the driver never pays for the physics:

- a :class:`ProblemConfig` (pydantic, cheap) is what the campaign config holds. It knows
  the parameter space, the direction, the constraints, and how to build the problem;
- a :class:`Problem` is built from it once per worker (``setup`` loads a scene or reads
  data) and evaluates batches of points, in natural units.

Neither knows about Ray, Slurm or HDF5.
"""

from __future__ import annotations

import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from hpcopt.space import Space

Direction = Literal["minimize", "maximize"]


@dataclass
class Evaluation:
    """The outcome of evaluating one point.

    ``value`` is the objective in the problem's own units and direction (NaN when the
    evaluation failed, with ``error`` saying why). ``gradient`` is ``d value / d x`` in
    natural units, shape ``(d,)``, when it was asked for and the problem has one.
    ``extras`` are named scalars or fixed-shape arrays recorded beside the value.
    ``raised`` marks a failure that came from an exception (an engine may retry those),
    as opposed to a result the problem itself declared failed (a diverging solve).
    ``warning`` says that a successful value is less trustworthy than usual, and why.
    ``wall_time_s``, ``worker``, ``node`` and ``gpu_ids`` are filled in by whoever ran it.
    """

    value: float
    extras: dict[str, Any] = field(default_factory=dict)
    gradient: np.ndarray | None = None
    error: str = ""
    raised: bool = False
    warning: str = ""
    wall_time_s: float = 0.0
    worker: str = ""
    node: str = ""
    gpu_ids: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @classmethod
    def failed(cls, error: str, raised: bool = False) -> Evaluation:
        """A failed evaluation: NaN value and the reason."""
        return cls(value=float("nan"), error=error, raised=raised)


def describe_exception(exc: BaseException) -> str:
    """A one-paragraph error text for the store: type, message and the innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


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

    problem_class: ClassVar[str] = ""  # "module:Class", imported only when built

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

    def build(self) -> Problem:
        """Construct the problem (not yet set up); heavy imports happen here only."""
        import importlib

        module, _, cls = self.problem_class.partition(":")
        return getattr(importlib.import_module(module), cls)(self)
