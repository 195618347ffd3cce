"""PBE fits over several experiments: config resolution and validation, scoring, the
1-D pure-component mapping of a 2-D fit, and parameters only two experiments identify."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from scipy.optimize import minimize

from hpcopt.cli import main
from hpcopt.config.registry import build_problem
from hpcopt.problems.pbe.config import PBEConfig
from hpcopt.problems.pbe.data import load_psd, save_psd
from hpcopt.problems.pbe.problem import simulate

TRUTH = {"corr_beta": 1.0, "pl_P1": 1e-4}
# Shear agglomeration and power-law breakage both scale with G, so G is a clock: at
# G = 100 s^-1 the PSD has settled by the first measurement (20 min) into the steady state
# that only the ratio corr_beta / pl_P1 fixes; at G = 1 s^-1 the same minutes show the
# start of the approach, where breakage dominates.
FAST, SLOW = {"name": "fast", "known": {"G": 100.0}}, {"name": "slow", "known": {"G": 1.0}}
SECTION: dict[str, Any] = {
    "name": "pbe",
    "dim": 1,
    "grid": {"classes": 20, "ratio": 2.0, "x0_um": 1.0},
    "agglomeration": "shear",
    "breakage": "power_law",
    "fragments": "power_law",
    "initial": {"kind": "lognormal", "x50_um": 5.0, "sigma_g": 1.6},
    "known": {"alpha": 1.0, "pl_P2": 0.5, "pl_v": 1.5},
    "parameters": [
        {"name": "corr_beta", "low": 0.1, "high": 10.0, "log": True},
        {"name": "pl_P1", "low": 1e-6, "high": 1e-2, "log": True},
    ],
    "synthetic": {"parameters": TRUTH, "times_s": [0, 1200, 1800, 2400], "quantity": "Q0"},
    "cost": [["Q0", "MSE"]],
    "experiments": [FAST, SLOW],
}
TWO_D_KNOWN = {"alpha_22": 0.5, "G": 100.0, "pl_P2": 0.5, "pl_P3": 3e-4, "pl_P4": 0.7}
TWO_D: dict[str, Any] = {
    **SECTION,
    "dim": 2,
    "grid": {"classes": 9, "ratio": 2.0, "x0_um": [1.0, 1.0]},
    "initial": {"kind": "primary"},
    "known": {**TWO_D_KNOWN, "pl_v": 1.5},
    "parameters": [
        {"name": "corr_beta", "low": 0.1, "high": 10.0, "log": True},
        {"name": "alpha_11", "low": 0.1, "high": 1.0, "log": True},
        {"name": "alpha_12", "low": 0.1, "high": 1.0, "log": True},
        {"name": "pl_P1", "low": 1e-6, "high": 1e-2, "log": True},
    ],
    "synthetic": {
        "parameters": {"corr_beta": 1.0, "alpha_11": 0.7, "alpha_12": 0.3, "pl_P1": 1e-4},
        "times_s": [0, 300, 600],
        "quantity": "Q3",
    },
    "cost": [["Q3", "MSE"]],
    "experiments": [
        {"name": "mixed"},
        {
            "name": "pure1",
            "dim": 1,
            "grid": {"classes": 9, "x0_um": 1.0},
            "rename": {"alpha": "alpha_11"},
        },
    ],
}


def section(base: dict[str, Any] = SECTION, **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out.update(changes)
    return out


def problem(base: dict[str, Any] = SECTION, **changes: Any):
    p = build_problem(PBEConfig(**section(base, **changes)))
    p.setup()
    return p


def log_point(problem, log_values: np.ndarray) -> np.ndarray:
    return np.exp(np.log([TRUTH[n] for n in problem.space.names]) + log_values)


def test_a_section_without_experiments_is_its_one_experiment() -> None:
    single = section(experiments=None, known={**SECTION["known"], "G": 100.0})
    (run,) = PBEConfig(**single).resolved_experiments()
    assert run.name == "" and run.weight == 1.0
    assert run.model.known == single["known"]
    assert run.searched == {"corr_beta": "corr_beta", "pl_P1": "pl_P1"}


def test_an_experiments_keys_override_the_top_level_ones() -> None:
    slow = {
        **SLOW,
        "grid": {"classes": 24},
        "initial": {"kind": "monodisperse", "class_index": 3},
        "solver": {"batch_size": 2},
        "synthetic": {"times_s": [0, 60], "noise": {"level": 0.1}},
        "cost": [["x_50", "RMSE"]],
    }
    fast, other = PBEConfig(**section(experiments=[FAST, slow])).resolved_experiments()
    # sections merge key by key; an initial of another kind replaces the top-level one
    assert other.model.grid.classes == 24 and other.model.grid.ratio == 2.0
    assert other.model.initial.kind == "monodisperse" and other.model.initial.class_index == 3
    assert other.model.solver.batch_size == 2 and fast.model.solver.batch_size == 16
    assert other.synthetic.times_s == [0, 60] and other.synthetic.quantity == "Q0"
    assert other.synthetic.noise.level == 0.1 and other.synthetic.noise.model == "multiplicative"
    assert other.cost == [["x_50", "RMSE"]] and fast.cost == [["Q0", "MSE"]]
    assert fast.model.known == {"alpha": 1.0, "G": 100.0, "pl_P2": 0.5, "pl_v": 1.5}
    assert other.model.known["G"] == 1.0


def test_every_model_key_can_be_set_per_experiment() -> None:
    from hpcopt.problems.pbe.experiments import ExperimentSection
    from hpcopt.problems.pbe.sections import MODEL_KEYS

    assert set(MODEL_KEYS) <= set(ExperimentSection.model_fields)


def experiments(*changes: dict[str, Any]) -> list[dict[str, Any]]:
    """FAST and SLOW, each updated by the matching entry of ``changes``."""
    return [{**e, **c} for e, c in zip([FAST, SLOW], changes)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"experiments": experiments({}, {"known": {}})},
         r"experiments\[1\]\.known\.G: needed by this experiment's mechanisms"),
        ({"experiments": experiments({}, {"known": {"G": -1.0}})},
         r"experiments\[1\]\.known\.G: G must lie in \(0, inf\)"),
        ({"experiments": experiments({}, {"known": {"G": 1.0, "corr_beta": 2.0}})},
         r"experiments\[1\]\.known\.corr_beta: corr_beta is searched"),
        ({"experiments": experiments({}, {"known": {"G": 1.0, "pl_P3": 2.0}})},
         r"experiments\[1\]\.known: \['pl_P3'\] are not used by this experiment"),
        ({"experiments": experiments({"breakage": "none"}, {"breakage": "none"})},
         r"parameters\.pl_P1: used by no experiment"),
        ({"known": {**SECTION["known"], "G": 5.0}}, r"known\.G: used by no experiment"),
        ({"experiments": experiments({}, {"rename": {"alpha": "alpha_99"}})},
         r"experiments\[1\]\.rename\.alpha: 'alpha_99' is neither searched"),
        ({"experiments": experiments({}, {"rename": {"alpha_11": "corr_beta"}})},
         r"experiments\[1\]\.rename\.alpha_11: not a parameter of this experiment's model"),
        ({"experiments": experiments({}, {"dim": 2})},
         r"experiments\[1\]\.grid\.x0_um: give 2 size\(s\) for dim 2"),
        ({"experiments": experiments({}, {"grid": {"classes": 2}})},
         r"experiments\[1\]\.grid\.classes: Input should be greater than or equal to 3"),
        ({"experiments": experiments({}, {"cost": [["d50", "MSE"]]})},
         r"experiments\[1\]\.cost\[0\] = \['d50', 'MSE'\]: unknown target"),
        ({"experiments": experiments({}, {"synthetic": {"parameters": {"pl_P1": 2e-4}}})},
         r"experiments\[1\]\.synthetic\.parameters: .* differ from experiments\[0\]'s"),
        ({"experiments": experiments({}, {"name": "fast"})}, r"the names \['fast'\] repeat"),
        ({"synthetic": None}, r"experiments\[0\]: no data: give experiments\[0\]\.data"),
        ({"experiments": experiments({}, {"weight": 0.0})}, r"experiments\.1\.weight"),
        ({"experiments": []}, "at least 1 item"),
    ],
)  # fmt: skip
def test_bad_experiments_are_refused_naming_the_key_path(changes, message) -> None:
    with pytest.raises(ValidationError, match=message):
        PBEConfig(**section(**changes))


def test_the_cost_is_the_weighted_sum_over_experiments_each_recorded() -> None:
    p = problem(experiments=experiments({"weight": 2.0}, {"weight": 0.5}))
    (ev,) = p.evaluate_batch(log_point(p, np.array([0.2, -0.1]))[None])
    fast, slow = ev.extras["cost_fast"], ev.extras["cost_slow"]
    assert fast > 0 and slow > 0
    assert ev.value == pytest.approx(2.0 * fast + 0.5 * slow)
    assert ev.extras["max_log_error"] == pytest.approx(0.2)


def test_each_experiment_has_its_own_solver_built_once() -> None:
    p = problem()
    solvers = [e.solver for e in p.experiments]
    p.evaluate_batch(log_point(p, np.zeros((3, 2))))
    assert solvers[0] is not solvers[1]
    assert [e.solver for e in p.experiments] == solvers


def test_an_evaluation_fails_when_one_experiment_fails_and_says_which() -> None:
    p = problem()
    p.experiments[1].solver.max_rhs_evals = 100
    (ev,) = p.evaluate_batch(log_point(p, np.zeros(2))[None])
    assert not ev.ok and np.isnan(ev.value)
    assert ev.error.startswith("experiment 'slow': ") and "'fast'" not in ev.error
    assert ev.extras["cost_fast"] < 1e-20 and np.isnan(ev.extras["cost_slow"])


def test_a_one_d_pure_component_run_is_the_two_d_model_with_renamed_parameters() -> None:
    mixed, pure = PBEConfig(**TWO_D).resolved_experiments()
    assert pure.searched == {"corr_beta": "corr_beta", "alpha": "alpha_11", "pl_P1": "pl_P1"}
    assert pure.shared == {"G": "G", "pl_P2": "pl_P2", "pl_v": "pl_v"}
    assert pure.model.grid.x0_um == 1.0 and pure.model.grid.ratio == 2.0
    values = {"corr_beta": 1.0, "alpha_11": 0.7, "alpha_12": 0.3, "pl_P1": 1e-4}
    one = simulate(pure.model, {own: values[fit] for own, fit in pure.searched.items()}, [0, 600])
    # both grids start at the zero pivot: the 2-D classes (.., 0) are the 1-D ones, (0, 0)
    # the fines class of both
    pure_one = mixed.model.model_copy(update={"initial": mixed.model.initial.model_copy(
        update={"composition": 1.0})})  # fmt: skip
    two = simulate(pure_one, values, [0, 600])
    N2 = two.N.reshape(2, 9, 9)
    np.testing.assert_allclose(N2[:, :, 0], one.N, rtol=1e-5, atol=1e-6 * one.N.max())


def test_a_per_component_rate_maps_a_one_d_run_onto_its_component() -> None:
    # with constant_by_component, particles of component 2 alone break at pl_P3: the 1-D
    # constant rate with pl_P1 renamed
    pure2 = {"name": "pure2", "dim": 1, "breakage": "constant", "grid": {"classes": 9,
             "x0_um": 1.0}, "rename": {"alpha": "alpha_22", "pl_P1": "pl_P3"}}  # fmt: skip
    doc = section(
        TWO_D,
        breakage="constant_by_component",
        known={"alpha_22": 0.5, "G": 100.0, "pl_P3": 3e-4, "pl_v": 1.5},
        experiments=[{"name": "mixed"}, pure2],
    )
    mixed, pure = PBEConfig(**doc).resolved_experiments()
    assert mixed.model.needed() == (
        "corr_beta", "alpha_11", "alpha_12", "alpha_22", "G", "pl_P1", "pl_P3", "pl_v",
    )  # fmt: skip
    assert pure.shared == {"alpha": "alpha_22", "G": "G", "pl_P1": "pl_P3", "pl_v": "pl_v"}
    one = simulate(pure.model, {"corr_beta": 1.0}, [0, 600])
    values = {"corr_beta": 1.0, "alpha_11": 0.7, "alpha_12": 0.3, "pl_P1": 1e-4}
    pure_two = mixed.model.model_copy(update={"initial": mixed.model.initial.model_copy(
        update={"composition": 0.0})})  # fmt: skip
    N2 = simulate(pure_two, values, [0, 600]).N.reshape(2, 9, 9)
    np.testing.assert_allclose(N2[:, 0, :], one.N, rtol=1e-5, atol=1e-6 * one.N.max())


def test_a_two_d_only_rate_inherited_by_a_one_d_run_is_refused_naming_it() -> None:
    doc = section(TWO_D, breakage="power_law_total", known={**TWO_D["known"]})
    del doc["known"]["pl_P3"], doc["known"]["pl_P4"]
    with pytest.raises(
        ValidationError, match=r"experiments\[1\]\.breakage: power_law_total is 2-D"
    ):
        PBEConfig(**doc)


def test_a_two_d_fit_with_a_one_d_run_scores_both_and_is_exact_at_the_truth() -> None:
    p = problem(TWO_D)
    truth = np.array([TWO_D["synthetic"]["parameters"][n] for n in p.space.names])
    (at_truth,) = p.evaluate_batch(truth[None])
    assert at_truth.value < 1e-12
    off = truth * np.where(np.array(p.space.names) == "alpha_11", 1.5, 1.0)
    (ev,) = p.evaluate_batch(off[None])
    assert ev.extras["cost_pure1"] > 1e-6 and ev.extras["cost_mixed"] > 1e-6


def along_and_across(p, step: float = np.log(1.3)) -> tuple[float, float]:
    """The cost a step along the common scale of corr_beta and pl_P1, and across it."""
    along = p.evaluate(log_point(p, np.array([step, step]))).value
    across = p.evaluate(log_point(p, np.array([step, -step]))).value
    return along, across


def test_one_fast_experiment_leaves_a_valley_that_a_second_removes() -> None:
    along, across = along_and_across(problem(experiments=[FAST]))
    assert along < 1e-6 * across
    along, across = along_and_across(problem())
    assert along > 0.1 * across


def fit(p) -> tuple[np.ndarray, float]:
    """Nelder-Mead on ln-parameters from a start 3x off in both: (found, its cost)."""
    start = np.log([3.0, 3e-5])
    result = minimize(
        lambda z: p.evaluate(np.exp(z)).value,
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-4, "fatol": 1e-14, "maxfev": 400},
    )
    return np.exp(result.x), float(result.fun)


def test_two_experiments_recover_what_one_cannot() -> None:
    one = problem(experiments=[FAST])
    found, cost = fit(one)
    errors = np.abs(np.log(found / [TRUTH[n] for n in one.space.names]))
    # fits the data as well as the truth does, far from it: the valley
    assert cost < 1e-9 and errors.max() > 0.2
    two = problem()
    found, _ = fit(two)
    errors = np.abs(np.log(found / [TRUTH[n] for n in two.space.names]))
    assert errors.max() < 0.01


def test_repeated_samples_are_each_scored_and_averaged(tmp_path: Path) -> None:
    noisy = {"samples": 3, "noise": {"model": "multiplicative", "level": 0.2, "seed": 4}}
    p = problem(experiments=[{**FAST, "synthetic": noisy}])
    data = p.data
    assert data.t.tolist() == [t for t in SECTION["synthetic"]["times_s"] for _ in range(3)]
    assert not np.allclose(data.values[1], data.values[2])  # each sample its own noise
    x = log_point(p, np.array([0.1, 0.0]))
    (ev,) = p.evaluate_batch(x[None])
    # the mean of the per-sample costs: each sample alone, as a file of its own
    alone = []
    for k in range(3):
        path = tmp_path / f"sample{k}.csv"
        save_psd(path, replace(data, t=data.t[k::3], values=data.values[k::3]))
        single = problem(experiments=[{**FAST, "data": {"path": str(path)}}], synthetic=None)
        alone.append(single.evaluate(x).value)
    assert ev.value == pytest.approx(np.mean(alone), rel=1e-9)


def test_cli_simulates_the_named_experiment(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "pbe.yaml"
    spec.write_text(yaml.safe_dump(SECTION))
    out = tmp_path / "slow.h5"
    assert main(["pbe", "simulate", str(spec), "-o", str(out), "--experiment", "slow"]) == 0
    expected = simulate(
        {**SECTION, "known": {**SECTION["known"], "G": 1.0}}, TRUTH, [0, 1200, 1800, 2400]
    )
    np.testing.assert_allclose(load_psd(out).values, expected.psd("q3").values)
    assert main(["pbe", "simulate", str(spec), "-o", str(out)]) == 2
    assert "give one of the section's experiments ['fast', 'slow']" in capsys.readouterr().err
