"""The Method interface: ask for points, be told their losses. Pure: no Ray, no IO.

A method searches the unit cube ``[0, 1]^d`` of a :class:`~hpcopt.core.space.Space` and always
*minimises* a loss; the driver turns a maximised objective into a loss by negation and
maps points to natural units. Its whole state is plain data (numbers, strings, lists,
dicts and numpy arrays) returned by :meth:`Method.state_dict`, so that a method rebuilt
from the same config and seed, then given that state, continues bit for bit.

Drive one by hand::

    method = GradientDescent(config, space, seed=0)   # or registry.build_method(...)
    while not method.done:
        batch = method.ask()
        losses = np.array([f(u) for u in batch.points])
        method.tell(batch, losses)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from hpcopt.core.space import Space

Feasible = Callable[[np.ndarray], np.ndarray]
"""Maps unit-cube points ``(n, d)`` to a boolean mask ``(n,)`` of those that may be evaluated."""


@dataclass
class Batch:
    """Points to evaluate next: ``points`` of shape ``(n, d)`` in the unit cube.

    ``gradient`` asks the problem for ``d loss / d u`` with every point, or, as a mask
    ``(n,)``, with some. ``iteration`` is the method's own counter (GD step, GA generation,
    GS sweep, BO batch) for the history.
    """

    points: np.ndarray
    gradient: bool | np.ndarray = False
    iteration: int = 0

    def __len__(self) -> int:
        return len(self.points)


class MethodConfig(BaseModel):
    """Base of every method's config section. Subclasses set ``name`` to a Literal."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str


C = TypeVar("C", bound=MethodConfig)


class Method(ABC, Generic[C]):
    """Ask/tell search over the unit cube, configured by a ``C`` (``Method[GDConfig]``).

    Subclasses keep all state in ``self.state``, which :meth:`setup` starts; methods that
    track their best point keep ``best_u`` and ``best_loss`` there (:meth:`record_best`).
    """

    def __init__(
        self,
        config: C,
        space: Space,
        seed: int,
        feasible: Feasible | None = None,
        has_gradient: bool | np.ndarray = False,
    ) -> None:
        self.config = config
        self.space = space
        self.seed = int(seed)
        self._feasible = feasible
        # One flag for the whole space, or a mask (d,) of the parameters it is exact for.
        self.gradient_mask = np.broadcast_to(np.asarray(has_gradient, dtype=bool), (space.dim,))
        self.has_gradient = bool(self.gradient_mask.all())
        self.state: dict[str, Any] = {}
        self.setup()

    @abstractmethod
    def setup(self) -> None:
        """Check the config against the space (``ValueError`` naming the ``method.`` key)
        and start ``self.state``; called once, by ``__init__``."""

    def feasible(self, u: np.ndarray) -> np.ndarray:
        """Mask ``(n,)`` of the unit-cube points ``u`` ``(n, d)`` that may be evaluated."""
        if self._feasible is None or not len(u):
            return np.ones(len(u), dtype=bool)
        return np.asarray(self._feasible(u), dtype=bool)

    @abstractmethod
    def ask(self) -> Batch:
        """The next batch. Only valid while ``not done``; never contains infeasible points.

        Asking again before ``tell`` gives the same batch, so a checkpoint taken between
        ``ask`` and ``tell`` resumes exactly.
        """

    @abstractmethod
    def tell(self, batch: Batch, losses: np.ndarray, gradients: np.ndarray | None = None) -> None:
        """Losses ``(n,)`` of the batch just asked (NaN where the evaluation failed) and,
        if the batch asked for them, gradients ``(n, d)`` of the loss in unit coordinates."""

    @property
    @abstractmethod
    def done(self) -> bool:
        """True when the method's budget is spent or it has nothing left to try."""

    @property
    def best(self) -> tuple[np.ndarray, float] | None:
        """The best evaluated point (unit cube, shape ``(d,)``) and its loss; None before any.

        Methods that track it keep ``best_u`` and ``best_loss`` in their state; others
        override this.
        """
        if self.state.get("best_loss", np.inf) == np.inf:
            return None
        return self.state["best_u"].copy(), float(self.state["best_loss"])

    def start_best(self) -> dict[str, Any]:
        """``best_u`` (NaN, shape ``(d,)``) and ``best_loss`` (inf), none found yet: for
        :meth:`setup` to start the state with."""
        return {"best_u": np.full(self.space.dim, np.nan), "best_loss": float("inf")}

    def record_best(self, points: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, float]:
        """Keep the lowest of ``losses`` ``(n,)`` (NaN: failed) and its point of ``points``
        ``(n, d)`` as ``best_u`` and ``best_loss`` if it beats them; return that point and
        loss (inf when every one failed)."""
        candidates = np.where(np.isnan(losses), np.inf, losses)
        i = int(np.argmin(candidates))
        point, loss = points[i], float(candidates[i])
        if loss < self.state["best_loss"]:
            self.state["best_u"], self.state["best_loss"] = point.copy(), loss
        return point, loss

    def gradients_used(self) -> np.ndarray | None:
        """The loss gradients ``(n, d)`` in unit coordinates that the last ``tell`` moved
        by, one row per point of its batch (NaN rows where none was used); None for
        methods that use no gradients."""
        return None

    @property
    def expected_evaluations(self) -> int | None:
        """How many evaluations the whole run will take, when known in advance."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The whole state as plain data (copied, safe to serialise)."""
        return _copy_plain(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` of the same config and seed."""
        self.state = _copy_plain(state)


def _copy_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _copy_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_copy_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.copy()
    return obj
