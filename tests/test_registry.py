"""The registry: every method, problem and engine it lists is what the config schema
accepts and what gets built; one registered at run time is accepted and run like them."""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import pytest
from pydantic import Field

from hpcopt import config as cfg
from hpcopt.config import registry
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.engine.local import LocalEngine
from hpcopt.engine.ray_pool import RayEngine
from hpcopt.methods.base import Batch, Method, MethodConfig
from hpcopt.methods.bo import BayesianOptimization, BOConfig
from hpcopt.methods.ga import GAConfig, GeneticAlgorithm
from hpcopt.methods.gd import GDConfig, GradientDescent
from hpcopt.methods.gs import GridSearch, GSConfig
from hpcopt.problems.analytic import AnalyticConfig, AnalyticProblem
from hpcopt.problems.coverage.config import CoverageConfig
from hpcopt.problems.coverage.problem import CoverageProblem
from hpcopt.problems.custom import CustomConfig, CustomProblem
from hpcopt.problems.pbe.config import PBEConfig
from hpcopt.problems.pbe.problem import PBEProblem

METHODS = {
    "gd": (GDConfig, GradientDescent),
    "gs": (GSConfig, GridSearch),
    "ga": (GAConfig, GeneticAlgorithm),
    "bo": (BOConfig, BayesianOptimization),
}
SPHERE = {"name": "analytic", "function": "sphere"}
PARAMETERS = [{"name": "a", "low": -1.0, "high": 1.0}, {"name": "b", "low": -1.0, "high": 1.0}]
PBE = {
    "name": "pbe",
    "dim": 1,
    "grid": {"classes": 12, "ratio": 2.0, "x0_um": 1.0},
    "agglomeration": "shear",
    "breakage": "none",
    "known": {"alpha": 1.0, "G": 100.0},
    "parameters": [{"name": "corr_beta", "low": 0.1, "high": 10.0, "log": True}],
    "synthetic": {"parameters": {"corr_beta": 1.0}, "times_s": [0, 60]},
}
PROBLEMS: dict[str, tuple[dict[str, Any], type, type]] = {
    "analytic": (SPHERE, AnalyticConfig, AnalyticProblem),
    "coverage": ({"name": "coverage", "mode": "1ap"}, CoverageConfig, CoverageProblem),
    "custom": (
        {"name": "custom", "target": "tests.problems:Flaky", "parameters": PARAMETERS},
        CustomConfig,
        CustomProblem,
    ),
    "pbe": (PBE, PBEConfig, PBEProblem),
}
ENGINES = {"local": LocalEngine, "ray": RayEngine}


def campaign(method: dict[str, Any], problem: dict[str, Any] = SPHERE, **top: Any) -> cfg.Campaign:
    doc = {"name": "r", "trials": [{"name": "t", "problem": problem, "method": method}], **top}
    return cfg.parse(doc)


def test_each_key_is_the_name_its_config_section_is_selected_by():
    for plugins, tag in ((registry.METHODS, "name"), (registry.PROBLEMS, "name")):
        for key, plugin in plugins.items():
            assert get_args(plugin.config.model_fields[tag].annotation) == (key,)
    for key, plugin in registry.ENGINES.items():
        assert get_args(plugin.config.model_fields["kind"].annotation) == (key,)


def test_the_registry_lists_the_methods_problems_and_engines_tested_here():
    assert list(registry.METHODS) == list(METHODS)
    assert list(registry.PROBLEMS) == list(PROBLEMS)
    assert list(registry.ENGINES) == list(ENGINES)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_is_accepted_and_built(name):
    config, implementation = METHODS[name]
    trial = campaign({"name": name}).trials[0]
    assert type(trial.method) is config
    method = registry.build_method(trial.method, trial.problem.space(), seed=0)
    assert type(method) is implementation


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_every_registered_problem_is_accepted_and_built(name):
    section, config, implementation = PROBLEMS[name]
    trial = campaign({"name": "gs"}, problem=section).trials[0]
    assert type(trial.problem) is config
    assert registry.problem_class(trial.problem) is implementation
    assert type(registry.build_problem(trial.problem)) is implementation


@pytest.mark.parametrize("kind", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_every_registered_engine_is_accepted_and_built(kind):
    config = campaign({"name": "gs"}, engine={"kind": kind}).engine
    assert config.kind == kind
    with registry.build_engine(config) as engine:
        assert type(engine) is ENGINES[kind]
        assert engine.problem_class is registry.problem_class


class CentreConfig(MethodConfig):
    """``method: {name: centre, rounds: 3}``: the test's own method."""

    name: Literal["centre"]
    rounds: int = Field(3, ge=1)


class Centre(Method[CentreConfig]):
    """Asks the centre of the cube and a point on each side of it, ``rounds`` times."""

    def setup(self) -> None:
        self.state = {"round": 0, **self.start_best()}

    def ask(self) -> Batch:
        step = 0.5 ** (self.state["round"] + 2)
        centre = np.full((1, self.space.dim), 0.5)
        points = np.concatenate([centre, centre - step, centre + step])
        return Batch(points, iteration=self.state["round"])

    def tell(self, batch: Batch, losses: np.ndarray, gradients: np.ndarray | None = None) -> None:
        self.record_best(batch.points, losses)
        self.state["round"] += 1

    @property
    def done(self) -> bool:
        return self.state["round"] >= self.config.rounds


@pytest.fixture
def centre(monkeypatch: pytest.MonkeyPatch) -> None:
    """:class:`Centre` registered: the one line a new method adds to the registry."""
    monkeypatch.setitem(registry.METHODS, "centre", registry.Plugin(CentreConfig, Centre))


@pytest.mark.usefixtures("centre")
def test_a_method_registered_at_run_time_is_accepted_and_runs_a_campaign(tmp_path):
    run = campaign({"name": "centre", "rounds": 2}, output_dir=str(tmp_path / "c"))
    assert run.trials[0].method == CentreConfig(name="centre", rounds=2)
    store = drv.create(run)
    (outcome,) = drv.run(run, store, reporter=reporters.SilentReporter())
    history = store.read_trial("t").history
    assert outcome.status == "completed" and outcome.best_value == 0.0
    assert len(history) == 6 and history.iteration.tolist() == [0, 0, 0, 1, 1, 1]


def test_a_method_is_refused_once_it_is_no_longer_registered(monkeypatch):
    with monkeypatch.context() as patch:
        patch.setitem(registry.METHODS, "centre", registry.Plugin(CentreConfig, Centre))
        campaign({"name": "centre"})
    with pytest.raises(cfg.ConfigError, match="'centre' found using 'name' does not match"):
        campaign({"name": "centre"})


@pytest.mark.parametrize(
    ("section", "value", "allowed"),
    [
        ("method", {"name": "newton"}, "'gd', 'gs', 'ga', 'bo'"),
        ("problem", {"name": "maze"}, "'analytic', 'coverage', 'custom', 'pbe'"),
        ("engine", {"kind": "dask"}, "'local', 'ray'"),
    ],
)
def test_an_unknown_name_is_a_config_error_naming_the_registered_ones(section, value, allowed):
    trial = {"name": "t", "problem": SPHERE, "method": {"name": "gs"}}
    doc = {"name": "r", "trials": [trial]}
    (doc if section == "engine" else trial)[section] = value
    where = "engine" if section == "engine" else f"trials[0].{section}"
    with pytest.raises(cfg.ConfigError) as raised:
        cfg.parse(doc)
    (problem,) = raised.value.problems
    assert problem.startswith(f"{where}: ") and f"expected tags: {allowed}" in problem


@pytest.mark.usefixtures("centre")
def test_an_unknown_method_error_names_one_registered_at_run_time_too():
    with pytest.raises(cfg.ConfigError, match="expected tags: 'gd', 'gs', 'ga', 'bo', 'centre'"):
        campaign({"name": "newton"})


def test_building_an_unregistered_config_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown method 'centre'; the registry has \['gd'"):
        registry.build_method(CentreConfig(name="centre"), campaign({"name": "gs"}).trials[0]
                              .problem.space(), seed=0)  # fmt: skip
