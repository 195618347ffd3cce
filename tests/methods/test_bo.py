"""Behaviour of the Optuna-backed Bayesian optimisation behind ask/tell."""

from __future__ import annotations

import base64
import functools
import logging
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from hpcopt.methods.bo import BayesianOptimization, BOConfig
from hpcopt.problems.analytic import KNOWN_MINIMUM, AnalyticConfig
from tests.helpers import drive, losses_of, roundtrip, run_interrupted

SAMPLERS = ["tpe", "gp", "cmaes", "qmc", "random"]
BRANIN = AnalyticConfig(name="analytic", function="branin")
# x0 + x1 <= 14 cuts the upper-right corner (about a quarter) off Branin's box.
CONSTRAINED = AnalyticConfig(
    name="analytic",
    function="branin",
    constraints=[{"kind": "linear", "coefficients": {"x0": 1.0, "x1": 1.0}, "upper": 14.0}],
)


def make(problem: AnalyticConfig = BRANIN, seed: int = 0, **fields) -> BayesianOptimization:
    """A BO on ``problem`` with its constraints wired in as the feasibility hook."""
    fields = {"n_trials": 12, "max_concurrent": 3, **fields}
    if fields.get("sampler") in ("tpe", "gp", "cmaes"):
        fields.setdefault("n_startup_trials", 3)
    space = problem.space()
    return BayesianOptimization(
        BOConfig(name="bo", **fields),
        space,
        seed=seed,
        feasible=lambda u: problem.feasible(space.decode(u)),
    )


def run(method: BayesianOptimization, interrupt: tuple[int, str] | None = None):
    """Drive to the end on ``CONSTRAINED`` (see ``run_interrupted``); asks and trials."""
    asked, method = run_interrupted(method, CONSTRAINED, interrupt)
    return asked, method.state["trials"]


@functools.cache
def straight_run(sampler: str):
    """The uninterrupted run each resumed one is compared with (computed once)."""
    return run(make(CONSTRAINED, seed=7, sampler=sampler))


@pytest.mark.slow
def test_bo_gp_reaches_branin_minimum():
    bo = make(sampler="gp", n_trials=45, max_concurrent=1, n_startup_trials=10, seed=1)
    drive(bo, BRANIN)
    assert np.nanmin(bo.state["trials"]["values"]) == pytest.approx(
        KNOWN_MINIMUM["branin"], abs=1e-3
    )


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bo_sampler_respects_max_concurrent_and_n_trials(sampler):
    bo = make(sampler=sampler, n_trials=10, max_concurrent=4)
    seen = drive(bo, BRANIN)
    assert [len(batch) for batch, _ in seen] == [4, 4, 2]
    assert [batch.iteration for batch, _ in seen] == [0, 1, 2]
    assert bo.done and bo.expected_evaluations == 10
    for batch, _ in seen:
        assert len(np.unique(batch.points, axis=0)) == len(batch)
        assert batch.points.min() >= 0.0 and batch.points.max() <= 1.0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bo_never_asks_infeasible_points(sampler):
    bo = make(CONSTRAINED, sampler=sampler, n_trials=15)
    space = CONSTRAINED.space()
    for batch, _ in drive(bo, CONSTRAINED):
        assert CONSTRAINED.feasible(space.decode(batch.points)).all()
    # The sampler did propose infeasible points: they were told as failed instead.
    assert "FAIL" in bo.state["trials"]["states"]


def test_bo_infeasible_proposals_do_not_count_as_trials():
    bo = make(CONSTRAINED, sampler="random", n_trials=15)
    seen = drive(bo, CONSTRAINED)
    states = bo.state["trials"]["states"]
    assert sum(len(batch) for batch, _ in seen) == 15
    assert states.count("COMPLETE") == 15
    assert len(states) > 15


def test_bo_gives_up_when_nothing_is_feasible():
    space = BRANIN.space()
    bo = BayesianOptimization(
        BOConfig(name="bo", sampler="random", max_infeasible=5),
        space,
        seed=0,
        feasible=lambda u: np.zeros(len(u), dtype=bool),
    )
    with pytest.raises(RuntimeError, match="5 infeasible points in a row in batch 0"):
        bo.ask()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bo_survives_failed_evaluations(sampler):
    bo = make(sampler=sampler, n_trials=12)
    while not bo.done:
        batch = bo.ask()
        losses, _ = losses_of(BRANIN, batch.points, gradient=False)
        losses[0] = np.nan
        bo.tell(batch, losses)
    assert bo.state["trials"]["states"].count("FAIL") == 4
    assert bo.state["evaluated"] == 12


@pytest.mark.parametrize(
    "interrupt", [(0, "after_ask"), (1, "before_ask"), (2, "after_ask"), (3, "before_ask")]
)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bo_resumes_bit_identically(sampler, interrupt):
    straight_asks, straight_trials = straight_run(sampler)
    asks, trials = run(make(CONSTRAINED, seed=7, sampler=sampler), interrupt)
    assert len(asks) == len(straight_asks) == 4
    for a, b in zip(asks, straight_asks):
        assert a.tobytes() == b.tobytes()
    assert trials["params"].tobytes() == straight_trials["params"].tobytes()
    assert trials["values"].tobytes() == straight_trials["values"].tobytes()
    assert trials["states"] == straight_trials["states"]


def test_bo_asks_the_same_batch_until_told():
    bo = make(sampler="tpe")
    first = bo.ask()
    again = bo.ask()
    assert first.points.tobytes() == again.points.tobytes()
    assert first.iteration == again.iteration == 0


def test_bo_resumes_with_fresh_sampler_when_unpickling_fails():
    bo = make(sampler="tpe", n_trials=9)
    drive(bo, BRANIN, max_batches=1)
    state = roundtrip(bo.state_dict())
    state["sampler"] = base64.b64encode(b"not a pickle").decode()
    fresh = BayesianOptimization(bo.config, bo.space, bo.seed)
    with pytest.warns(RuntimeWarning, match="no longer bit-identical"):
        fresh.load_state_dict(state)
    seen = drive(fresh, BRANIN)
    assert sum(len(batch) for batch, _ in seen) == 6
    assert fresh.state["trials"]["states"] == ["COMPLETE"] * 9


def test_bo_resumes_with_fresh_sampler_across_optuna_versions():
    bo = make(sampler="tpe")
    state = roundtrip(bo.state_dict())
    state["optuna_version"] = "0.0.1"
    fresh = BayesianOptimization(bo.config, bo.space, bo.seed)
    with pytest.warns(RuntimeWarning, match="saved with Optuna 0.0.1"):
        fresh.load_state_dict(state)
    assert len(fresh.ask()) == 3


def test_bo_n_startup_trials_sets_when_the_model_takes_over():
    bo = make(sampler="tpe", n_trials=6, max_concurrent=1, n_startup_trials=4)
    drive(bo, BRANIN)
    modelled = ["tpe:relative_params:0" in a for a in bo.state["trials"]["system_attrs"]]
    assert modelled == [False] * 4 + [True] * 2


def test_bo_passes_sampler_options_to_the_sampler():
    sobol = make(sampler="qmc", sampler_options={"qmc_type": "sobol"}).ask().points
    halton = make(sampler="qmc", sampler_options={"qmc_type": "halton"}).ask().points
    assert not np.array_equal(sobol, halton)


def test_bo_rejects_unknown_sampler_options():
    with pytest.raises(
        ValueError,
        match=r"method\.sampler_options: unknown option\(s\) \['n_ei_candidate'\] "
        r"for sampler 'tpe'; allowed: \[.*'n_ei_candidates'",
    ):
        make(sampler="tpe", sampler_options={"n_ei_candidate": 12})


def test_bo_rejects_invalid_sampler_option_values():
    with pytest.raises(ValueError, match=r"method\.sampler_options for sampler 'qmc'.*halton"):
        make(sampler="qmc", sampler_options={"qmc_type": "lattice"})


def test_bo_gp_without_torch_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install 'hpcopt\[torch\]'"):
        make(sampler="gp")


def test_bo_import_does_not_import_optuna():
    code = "import sys, hpcopt.methods.bo; print(sorted({'optuna', 'torch'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_bo_silences_optuna_info_logs(capfd):
    drive(make(sampler="random"), BRANIN)
    assert "[I " not in capfd.readouterr().err


def test_bo_leaves_optuna_log_level_as_it_was():
    logger = logging.getLogger("optuna")
    level = logger.level
    drive(make(sampler="random"), BRANIN)
    assert logger.level == level


def test_bo_asks_nothing_once_done():
    bo = make(sampler="random")
    drive(bo, BRANIN)
    with pytest.raises(RuntimeError, match="told all 12 trials"):
        bo.ask()


def test_bo_rejects_losses_of_the_wrong_length():
    bo = make(sampler="random")
    batch = bo.ask()
    with pytest.raises(ValueError, match="expects 3 losses for batch 0"):
        bo.tell(batch, np.zeros(2))


@pytest.mark.parametrize("key", ["seed", "n_startup_trials"])
def test_bo_config_rejects_sampler_options_hpcopt_sets(key):
    with pytest.raises(ValidationError, match=rf"sampler_options\.{key}: set from"):
        BOConfig(name="bo", sampler_options={key: 1})


@pytest.mark.parametrize("sampler", ["qmc", "random"])
def test_bo_config_rejects_n_startup_trials_without_startup_phase(sampler):
    with pytest.raises(ValidationError, match=f"sampler '{sampler}' has no startup phase"):
        BOConfig(name="bo", sampler=sampler, n_startup_trials=5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sampler", "bogus"),
        ("n_trials", 0),
        ("max_concurrent", 0),
        ("n_startup_trials", -1),
        ("max_infeasible", 0),
        ("sampler_opts", {}),
    ],
)
def test_bo_config_rejects_invalid_values(field, value):
    with pytest.raises(ValidationError, match=field):
        BOConfig(name="bo", **{field: value})


def test_bo_best_is_the_lowest_loss_told():
    method = make(n_trials=8, max_concurrent=2)
    assert method.best is None
    seen = drive(method, BRANIN)
    u, loss = method.best
    assert loss == min(losses.min() for _, losses in seen)
    assert any((batch.points == u).all(axis=1).any() for batch, _ in seen)
