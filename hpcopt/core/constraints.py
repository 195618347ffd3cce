"""Constraints that prune points before they are evaluated, declared in a problem config.

Each constraint is checked on the driver, in natural units, so a violating point is
never sent to a worker: grid search skips it, GA gives it a penalty, GD backs off, BO
asks again.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpcopt.core.space import Space


class LinearConstraint(BaseModel):
    """``lower <= sum(coefficients[name] * x[name]) <= upper`` (either side optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["linear"]
    coefficients: dict[str, float]
    lower: float | None = None
    upper: float | None = None

    @model_validator(mode="after")
    def _one_side(self) -> LinearConstraint:
        if self.lower is None and self.upper is None:
            raise ValueError("a linear constraint needs 'lower', 'upper' or both")
        if not self.coefficients:
            raise ValueError("a linear constraint needs at least one coefficient")
        return self

    def names(self) -> list[str]:
        return list(self.coefficients)

    def satisfied(self, space: Space, points: np.ndarray) -> np.ndarray:
        cols = space.indices(self.coefficients)
        s = np.atleast_2d(points)[:, cols] @ np.array(list(self.coefficients.values()))
        ok = np.ones(len(s), dtype=bool)
        if self.lower is not None:
            ok &= s >= self.lower
        if self.upper is not None:
            ok &= s <= self.upper
        return ok


class MinDistanceConstraint(BaseModel):
    """Two points given by parameter names stay at least ``distance`` apart (e.g. two APs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["min_distance"]
    a: list[str] = Field(min_length=1)
    b: list[str] = Field(min_length=1)
    distance: float = Field(gt=0)

    @model_validator(mode="after")
    def _same_length(self) -> MinDistanceConstraint:
        if len(self.a) != len(self.b):
            raise ValueError(f"'a' {self.a} and 'b' {self.b} must name as many coordinates")
        return self

    def names(self) -> list[str]:
        return [*self.a, *self.b]

    def satisfied(self, space: Space, points: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(points)
        d = p[:, space.indices(self.a)] - p[:, space.indices(self.b)]
        return np.sqrt((d * d).sum(axis=1)) >= self.distance


Constraint = Annotated[LinearConstraint | MinDistanceConstraint, Field(discriminator="kind")]


def check_names(constraints: list[Constraint], space: Space) -> None:
    """Raise ``ValueError`` naming the constraint whose parameter is not in the space."""
    for i, c in enumerate(constraints):
        unknown = [n for n in c.names() if n not in space.names]
        if unknown:
            raise ValueError(
                f"constraints[{i}] ({c.kind}) names unknown parameter(s) {unknown}; "
                f"the space has {list(space.names)}"
            )


def all_satisfied(constraints: list[Constraint], space: Space, points: np.ndarray) -> np.ndarray:
    """Mask ``(n,)`` of points that satisfy every constraint."""
    ok = np.ones(len(np.atleast_2d(points)), dtype=bool)
    for c in constraints:
        ok &= c.satisfied(space, points)
    return ok
