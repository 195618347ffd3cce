"""Every method, problem and engine by name: the config section that selects it and the
class that runs it.

The campaign schema (:mod:`hpcopt.config`) is built from these tables, and so are
:func:`build_method`, :func:`build_problem` and :func:`build_engine`. A new method is one
new file (its config, a :class:`~hpcopt.methods.base.MethodConfig` whose ``name`` is a
``Literal``, and its :class:`~hpcopt.methods.base.Method`) and one line in :data:`METHODS`;
a problem or an engine likewise. A key is the ``name`` (engines: ``kind``) its config
section is selected by.

Importing this module imports every implementation module: those keep their heavy
libraries (Ray, Sionna, Optuna) to the functions that use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, Union

import numpy as np
from pydantic import BaseModel, Field

from hpcopt.core.space import Space
from hpcopt.engine.base import Engine
from hpcopt.engine.local import LocalEngine, LocalEngineConfig
from hpcopt.engine.ray_pool import RayEngine, RayEngineConfig
from hpcopt.methods.base import Feasible, Method, MethodConfig
from hpcopt.methods.bo import BayesianOptimization, BOConfig
from hpcopt.methods.ga import GAConfig, GeneticAlgorithm
from hpcopt.methods.gd import GDConfig, GradientDescent
from hpcopt.methods.gs import GridSearch, GSConfig
from hpcopt.problems.analytic import AnalyticConfig, AnalyticProblem
from hpcopt.problems.base import Problem, ProblemConfig
from hpcopt.problems.coverage.config import CoverageConfig
from hpcopt.problems.coverage.problem import CoverageProblem
from hpcopt.problems.custom import CustomConfig, CustomProblem
from hpcopt.problems.pbe.config import PBEConfig
from hpcopt.problems.pbe.problem import PBEProblem

C = TypeVar("C", bound=BaseModel)
I = TypeVar("I")  # noqa: E741 - the implementation, beside C the config


@dataclass(frozen=True)
class Plugin(Generic[C, I]):
    """A method, problem or engine: its config section and the class that runs it."""

    config: type[C]
    implementation: type[I]


METHODS: dict[str, Plugin[MethodConfig, Method]] = {
    "gd": Plugin(GDConfig, GradientDescent),
    "gs": Plugin(GSConfig, GridSearch),
    "ga": Plugin(GAConfig, GeneticAlgorithm),
    "bo": Plugin(BOConfig, BayesianOptimization),
}
PROBLEMS: dict[str, Plugin[ProblemConfig, Problem]] = {
    "analytic": Plugin(AnalyticConfig, AnalyticProblem),
    "coverage": Plugin(CoverageConfig, CoverageProblem),
    "custom": Plugin(CustomConfig, CustomProblem),
    "pbe": Plugin(PBEConfig, PBEProblem),
}
ENGINES: dict[str, Plugin[Any, Engine]] = {
    "local": Plugin(LocalEngineConfig, LocalEngine),
    "ray": Plugin(RayEngineConfig, RayEngine),
}
"""Engine classes are built as ``implementation(config, problem_class)``."""


def section(plugins: dict[str, Plugin[Any, Any]], tag: str) -> Any:
    """The type of a config section that may be any of ``plugins``' configs, told apart by
    their ``tag`` key (``name``, or ``kind`` for engines)."""
    members = tuple(p.config for p in plugins.values())
    return Annotated[Union[members], Field(discriminator=tag)]  # noqa: UP007 - a runtime tuple


def build_method(
    config: MethodConfig,
    space: Space,
    seed: int,
    feasible: Feasible | None = None,
    has_gradient: bool | np.ndarray = False,
) -> Method:
    """The method a config section names, over ``space``; ``has_gradient`` is one flag or a
    mask ``(d,)`` of the parameters the problem differentiates exactly."""
    method = _plugin(METHODS, config.name, "method").implementation
    return method(config, space, seed, feasible=feasible, has_gradient=has_gradient)


def problem_class(config: ProblemConfig) -> type[Problem]:
    """The :class:`Problem` subclass that implements a problem config section."""
    return _plugin(PROBLEMS, config.name, "problem").implementation


def build_problem(config: ProblemConfig) -> Problem:
    """The problem a config section names, built but not yet set up."""
    return problem_class(config)(config)


def build_engine(config: BaseModel) -> Engine:
    """The engine an ``engine`` config section names; it builds problems by
    :func:`problem_class`."""
    engine = _plugin(ENGINES, config.kind, "engine").implementation
    return engine(config, problem_class)


def _plugin(plugins: dict[str, Plugin[C, I]], name: str, what: str) -> Plugin[C, I]:
    try:
        return plugins[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; the registry has {list(plugins)}") from None
