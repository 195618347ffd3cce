"""Problems from the user's own code: ``problem: {name: custom, target: "pkg.mod:MyProblem"}``.

``target`` is a :class:`~hpcopt.problems.base.Problem` subclass, importable wherever the
campaign runs; it receives this config (``config.options`` holds its own settings).
:class:`CustomProblem` builds it where the campaign evaluates and hands every call on.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpcopt.core.constraints import Constraint, all_satisfied, check_names
from hpcopt.core.evaluation import Direction, Evaluation
from hpcopt.core.space import Param, Space, bounds_error
from hpcopt.problems.base import Problem, ProblemConfig


class ParamSpec(BaseModel):
    """One parameter as a config writes it, ``{name: x, low: 0.0, high: 1.0, log: false}``:
    what makes a valid :class:`~hpcopt.core.space.Param`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> ParamSpec:
        error = bounds_error(self.low, self.high, self.log)
        if error:
            raise ValueError(f"{self.name}: {error}")
        return self

    def param(self) -> Param:
        """This parameter of a space."""
        return Param(self.name, self.low, self.high, self.log)


class CustomConfig(ProblemConfig):
    """A user-defined problem class with a space declared in the config."""

    name: Literal["custom"]
    target: str
    parameters: list[ParamSpec] = Field(min_length=1)
    objective_direction: Direction = "minimize"
    gradient: bool = False
    constraints: list[Constraint] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("target")
    @classmethod
    def _importable(cls, target: str) -> str:
        _resolve(target)
        return target

    @model_validator(mode="after")
    def _names(self) -> CustomConfig:
        check_names(self.constraints, self.space())
        return self

    def space(self) -> Space:
        return Space(p.param() for p in self.parameters)

    @property
    def direction(self) -> Direction:
        return self.objective_direction

    @property
    def has_gradient(self) -> bool:
        return self.gradient

    def feasible(self, points: np.ndarray) -> np.ndarray:
        return all_satisfied(self.constraints, self.space(), points)


class CustomProblem(Problem):
    """The user's problem: the class ``target`` names, built from the same config; every
    call is handed on to it."""

    config: CustomConfig

    def __init__(self, config: CustomConfig) -> None:
        super().__init__(config)
        self.target = _resolve(config.target)(config)

    def setup(self) -> None:
        self.target.setup()

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        return self.target.evaluate(x, gradient=gradient)

    def evaluate_batch(
        self, points: np.ndarray, gradient: bool | np.ndarray = False
    ) -> list[Evaluation]:
        return self.target.evaluate_batch(points, gradient)


def _resolve(target: str) -> type[Problem]:
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"target must look like 'package.module:ProblemClass', got {target!r}")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {target!r}: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, Problem)):
        raise ValueError(f"{target!r} is not a subclass of hpcopt.problems.base.Problem")
    return obj
