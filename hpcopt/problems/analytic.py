"""Analytic test functions with exact gradients: sphere, Rosenbrock, Rastrigin, Branin, Ackley.

Fast and deterministic, for tests, demos and benchmarks of the machinery around real
simulations. Parameters are named ``x0 .. x{dim-1}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from hpcopt.core.constraints import Constraint, all_satisfied, check_names
from hpcopt.core.evaluation import Direction, Evaluation
from hpcopt.core.space import Param, Space, bounds_error
from hpcopt.problems.base import Problem, ProblemConfig

Function = Literal["sphere", "rosenbrock", "rastrigin", "branin", "ackley"]


def sphere(x: np.ndarray) -> tuple[float, np.ndarray]:
    return float(x @ x), 2.0 * x


def rosenbrock(x: np.ndarray) -> tuple[float, np.ndarray]:
    a, b = x[:-1], x[1:]
    f = float(np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2))
    g = np.zeros_like(x)
    g[:-1] += -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
    g[1:] += 200.0 * (b - a * a)
    return f, g


def rastrigin(x: np.ndarray) -> tuple[float, np.ndarray]:
    w = 2.0 * np.pi
    f = float(10.0 * len(x) + np.sum(x * x - 10.0 * np.cos(w * x)))
    return f, 2.0 * x + 10.0 * w * np.sin(w * x)


def branin(x: np.ndarray) -> tuple[float, np.ndarray]:
    a, b, c = 1.0, 5.1 / (4.0 * np.pi**2), 5.0 / np.pi
    r, s, t = 6.0, 10.0, 1.0 / (8.0 * np.pi)
    x1, x2 = x
    inner = x2 - b * x1 * x1 + c * x1 - r
    f = a * inner**2 + s * (1.0 - t) * np.cos(x1) + s
    g1 = 2.0 * a * inner * (-2.0 * b * x1 + c) - s * (1.0 - t) * np.sin(x1)
    g2 = 2.0 * a * inner
    return float(f), np.array([g1, g2])


def ackley(x: np.ndarray) -> tuple[float, np.ndarray]:
    d = len(x)
    w = 2.0 * np.pi
    r = np.sqrt(x @ x / d)
    e1 = np.exp(-0.2 * r)
    e2 = np.exp(np.sum(np.cos(w * x)) / d)
    f = float(-20.0 * e1 - e2 + 20.0 + np.e)
    g_r = 4.0 * e1 * x / (d * r) if r > 0 else np.zeros_like(x)
    return f, g_r + e2 * w * np.sin(w * x) / d


FUNCTIONS: dict[str, tuple[Callable[[np.ndarray], tuple[float, np.ndarray]], float, float]] = {
    "sphere": (sphere, -5.12, 5.12),
    "rosenbrock": (rosenbrock, -2.048, 2.048),
    "rastrigin": (rastrigin, -5.12, 5.12),
    "branin": (branin, np.nan, np.nan),  # per-axis bounds below
    "ackley": (ackley, -32.768, 32.768),
}
BRANIN_BOUNDS = ((-5.0, 10.0), (0.0, 15.0))
KNOWN_MINIMUM = {
    "sphere": 0.0,
    "rosenbrock": 0.0,
    "rastrigin": 0.0,
    "branin": 0.397887,
    "ackley": 0.0,
}


class AnalyticConfig(ProblemConfig):
    """``problem: {name: analytic, function: branin}``.

    ``bounds`` overrides the function's default box per parameter (``{x0: [lo, hi]}``, or
    ``default`` for all); ``log`` lists parameters searched on a log scale; ``maximize``
    negates the function (to exercise maximised objectives); ``delay_s`` sleeps in every
    evaluation to mimic an expensive simulation.
    """

    name: Literal["analytic"]
    function: Function
    dim: int = Field(2, ge=1, le=1000)
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    log: list[str] = Field(default_factory=list)
    maximize: bool = False
    constraints: list[Constraint] = Field(default_factory=list)
    delay_s: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> AnalyticConfig:
        if self.function == "branin" and self.dim != 2:
            raise ValueError(f"branin is two-dimensional; got dim={self.dim}")
        names = {f"x{i}" for i in range(self.dim)}
        for key, (lo, hi) in self.bounds.items():
            if key != "default" and key not in names:
                raise ValueError(
                    f"bounds: unknown parameter {key!r}; allowed: {sorted(names)} or 'default'"
                )
            error = bounds_error(lo, hi)
            if error:
                raise ValueError(f"bounds.{key}: {error}")
        for key in self.log:
            if key not in names:
                raise ValueError(f"log: unknown parameter {key!r}; allowed: {sorted(names)}")
        space = self.space()
        check_names(self.constraints, space)
        return self

    def space(self) -> Space:
        params = []
        _, lo, hi = FUNCTIONS[self.function]
        for i in range(self.dim):
            name = f"x{i}"
            default = BRANIN_BOUNDS[i] if self.function == "branin" else (lo, hi)
            low, high = self.bounds.get(name, self.bounds.get("default", default))
            params.append(Param(name, float(low), float(high), log=name in self.log))
        return Space(params)

    @property
    def label(self) -> str:
        return f"analytic ({self.function}, {self.dim}-D)"

    @property
    def direction(self) -> Direction:
        return "maximize" if self.maximize else "minimize"

    @property
    def has_gradient(self) -> bool:
        return True

    def feasible(self, points: np.ndarray) -> np.ndarray:
        return all_satisfied(self.constraints, self.space(), points)


class AnalyticProblem(Problem):
    """Evaluates the configured function; ``extras`` holds the distance to the origin."""

    config: AnalyticConfig

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        if self.config.delay_s:
            time.sleep(self.config.delay_s)
        f, g = FUNCTIONS[self.config.function][0](np.asarray(x, dtype=float))
        sign = -1.0 if self.config.maximize else 1.0
        return Evaluation(
            value=sign * f,
            gradient=sign * g if gradient else None,
            extras={"norm": float(np.linalg.norm(x))},
        )
