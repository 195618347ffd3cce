"""The PBE problem: config validation, data paths, scoring, failures and the CLI."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from hpcopt.cli import main
from hpcopt.config.registry import build_problem
from hpcopt.problems.pbe.config import PBEConfig
from hpcopt.problems.pbe.data import PSDData, load_psd, save_psd
from hpcopt.problems.pbe.problem import simulate

TRUTH = {"corr_beta": 1.0, "pl_P1": 1e-4, "pl_P2": 0.5, "pl_v": 1.5}
SECTION: dict[str, Any] = {
    "name": "pbe",
    "dim": 1,
    "grid": {"classes": 20, "ratio": 2.0, "x0_um": 1.0},
    "agglomeration": "shear",
    "breakage": "power_law",
    "fragments": "power_law",
    "initial": {"kind": "lognormal", "x50_um": 5.0, "sigma_g": 1.6},
    "known": {"alpha": 1.0, "G": 100.0},
    "parameters": [
        {"name": "corr_beta", "low": 0.1, "high": 10.0, "log": True},
        {"name": "pl_P1", "low": 1e-6, "high": 1e-2, "log": True},
        {"name": "pl_P2", "low": 0.2, "high": 1.2, "log": True},
        {"name": "pl_v", "low": 0.5, "high": 3.0, "log": True},
    ],
    "synthetic": {"parameters": TRUTH, "times_s": [0, 120, 300, 600], "quantity": "Q0"},
    "cost": [["Q0", "MSE"]],
}


def section(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(SECTION)
    out.update(changes)
    return out


def problem(**changes: Any):
    p = build_problem(PBEConfig(**section(**changes)))
    p.setup()
    return p


def point(values: dict[str, float], names: tuple[str, ...]) -> np.ndarray:
    return np.array([[values[n] for n in names]])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"known": {"alpha": 1.0}}, r"give \['G'\] in 'parameters'"),
        ({"known": {"alpha": 1.0, "G": 1.0, "pl_P3": 1.0}}, r"\['pl_P3'\] are not used"),
        ({"known": {"alpha": 1.0, "G": 1.0, "pl_v": 1.0}}, "both searched"),
        ({"synthetic": None}, "exactly one of 'data'"),
        ({"data": {"path": "nowhere.csv"}}, "no such data file: nowhere.csv"),
        ({"synthetic": {"parameters": {"corr_beta": 1.0}, "times_s": [0, 1]}}, "missing"),
        ({"dim": 2, "grid": {"x0_um": [1.0, 1.0]}}, "2-D runs start from 'primary'"),
        ({"grid": {"x0_um": [1.0, 1.0]}}, "give 1 size"),
        ({"cost": [["Q0", "KL"]]}, "KL compares distributions"),
        ({"cost": [["d50", "MSE"]]}, "unknown target 'd50'"),
        ({"agglomeration": "none", "breakage": "none"}, "nothing happens"),
        ({"dim": 2, "grid": {"classes": 41, "x0_um": [1.0, 1.0]}}, "at most 40 per component"),
        (
            {"breakage": "linear_by_component"},
            "breakage: linear_by_component is 2-D only .*; in 1-D use linear",
        ),
        ({"breakage": "power_law_total"}, "power_law_total is 2-D only; in 1-D, power_law"),
        ({"synthetic": {**SECTION["synthetic"], "times_s": [0, float("nan")]}}, "finite number"),
        ({"parameters": [{"name": "corr_beta", "low": 0.1, "high": float("inf")}]}, "finite"),
    ],
)
def test_bad_sections_are_refused_with_what_is_wrong(changes: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PBEConfig(**section(**changes))


def expand_with_problem(tmp_path: Path, capsys, problem: str) -> tuple[int, str]:
    """``hpcopt expand`` of a one-trial campaign whose problem is ``problem`` (YAML flow
    text): its exit code and standard error."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\noutput_dir: out\ntrials:\n  - name: t\n"
        f"    method: {{name: ga}}\n    problem: {problem}\n"
    )
    return main(["expand", str(path)]), capsys.readouterr().err


def test_a_bad_pbe_config_exits_2_naming_the_key(tmp_path: Path, capsys) -> None:
    code, err = expand_with_problem(tmp_path, capsys, "{name: pbe, grids: {}}")
    assert code == 2
    assert "grids" in err


def test_noise_free_synthetic_data_cost_nothing_at_the_truth() -> None:
    p = problem()
    at_truth = p.evaluate_batch(point(TRUTH, p.space.names))[0]
    elsewhere = p.evaluate_batch(point({**TRUTH, "pl_v": 1.6}, p.space.names))[0]
    assert at_truth.value < 1e-20
    assert elsewhere.value > 1e-8
    assert at_truth.extras["max_log_error"] == 0.0
    assert elsewhere.extras["max_log_error"] == pytest.approx(np.log(1.6 / 1.5))


def test_a_batch_is_scored_in_chunks_like_single_points() -> None:
    p = problem(solver={"batch_size": 2})
    pts = p.space.decode(np.random.default_rng(1).random((5, 4)))
    together = [e.value for e in p.evaluate_batch(pts)]
    alone = [p.evaluate_batch(x[None])[0].value for x in pts]
    np.testing.assert_allclose(together, alone, rtol=1e-4)


def test_a_solver_failure_is_a_failed_evaluation_with_its_reason() -> None:
    p = problem()
    p.solver.max_rhs_evals = 100
    ev = p.evaluate_batch(point(TRUTH, p.space.names))[0]
    assert not ev.ok and np.isnan(ev.value)
    assert "gave up after 100 right-hand-side evaluations" in ev.error


@pytest.mark.parametrize("suffix", [".csv", ".h5"])
def test_measured_data_from_a_file_are_fitted_on_the_solver_grid(
    tmp_path: Path, suffix: str
) -> None:
    sim = simulate(section(), TRUTH, [0, 120, 300, 600])
    path = tmp_path / f"psd{suffix}"
    save_psd(path, sim.psd("q3"))
    data_section = section(synthetic=None, data={"path": str(path)}, cost=[["qx", "MSE"]])
    p = build_problem(PBEConfig(**data_section))
    p.setup()
    names = p.space.names
    at_truth = p.evaluate_batch(point(TRUTH, names))[0].value
    off = p.evaluate_batch(point({**TRUTH, "corr_beta": 1.3}, names))[0].value
    # densities given at the pivots are integrated by the trapezoid rule onto the cells:
    # close to the truth on a ratio-2 grid, not exact (cumulatives at the edges are); the
    # first cell's part below the first pivot has no data (4x here)
    assert at_truth < off / 3
    exact = section(synthetic=None, data={"path": str(path)}, cost=[["Q3", "MSE"]])
    save_psd(path, sim.psd("Q3"))
    p = build_problem(PBEConfig(**exact))
    p.setup()
    assert p.evaluate_batch(point(TRUTH, names))[0].value < 1e-12


def test_kde_smoothing_scores_on_the_data_grid(tmp_path: Path) -> None:
    sim = simulate(section(), TRUTH, [0, 120, 300, 600])
    path = tmp_path / "psd.h5"
    save_psd(path, sim.psd("q3"))
    kde_section = section(
        synthetic=None, data={"path": str(path)}, smoothing="kde", cost=[["q3", "MSE"]]
    )
    p = build_problem(PBEConfig(**kde_section))
    p.setup()
    values = [
        p.evaluate_batch(point({**TRUTH, "corr_beta": c}, p.space.names))[0].value
        for c in (0.5, 1.0, 2.0)
    ]
    assert values[1] < min(values[0], values[2])


def test_kde_refuses_another_basis_than_the_data(tmp_path: Path) -> None:
    path = tmp_path / "psd.h5"
    save_psd(path, simulate(section(), TRUTH, [0, 600]).psd("q3"))
    bad = section(synthetic=None, data={"path": str(path)}, smoothing="kde", cost=[["q0", "MSE"]])
    with pytest.raises(ValueError, match="another basis"):
        build_problem(PBEConfig(**bad)).setup()


def test_kde_refuses_another_basis_than_synthetic_data_too() -> None:
    bad = section(synthetic={**SECTION["synthetic"], "quantity": "q3"}, smoothing="kde",
                  cost=[["q0", "MSE"]])  # fmt: skip
    with pytest.raises(ValueError, match="another basis"):
        build_problem(PBEConfig(**bad)).setup()


TRUTH_2D = {"corr_beta": 1.0, "alpha_12": 0.3, "pl_P1": 1e-4, "pl_P3": 3e-4}


def two_component_problem(**changes: Any):
    return problem(
        dim=2,
        grid={"classes": 8, "ratio": 2.0, "x0_um": [1.0, 1.0]},
        initial={"kind": "primary"},
        known={
            "alpha_11": 1.0,
            "alpha_22": 0.5,
            "G": 100.0,
            "pl_P2": 0.5,
            "pl_P4": 0.5,
            "pl_v": 1.5,
        },
        parameters=[
            {
                "name": n,
                "low": v / 10,
                "high": min(v * 10, 1.0) if n.startswith("alpha") else v * 10,
                "log": True,
            }
            for n, v in TRUTH_2D.items()
        ],
        synthetic={"parameters": TRUTH_2D, "times_s": [0, 300, 600], "quantity": "Q3"},
        cost=[["Q3", "MSE"], ["x_50", "RMSE"]],
        **changes,
    )


def test_two_component_problem_scores_and_is_exact_at_the_truth() -> None:
    p = two_component_problem()
    names = p.space.names
    assert p.evaluate_batch(point(TRUTH_2D, names))[0].value < 1e-12
    assert p.evaluate_batch(point({**TRUTH_2D, "alpha_12": 0.6}, names))[0].value > 1e-6


def test_simulate_refuses_missing_parameters() -> None:
    with pytest.raises(ValueError, match=r"missing \['pl_v'\]"):
        simulate(section(), {k: v for k, v in TRUTH.items() if k != "pl_v"}, [0, 60])


def test_cli_simulate_writes_data_that_load_back(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "pbe.yaml"
    import yaml

    spec.write_text(yaml.safe_dump(section()))
    out = tmp_path / "sim.h5"
    argv = ["pbe", "simulate", str(spec), "-o", str(out), "--set", "corr_beta=2"]
    assert main([*argv, "--quantity", "Q3", "--times", "0,60,600"]) == 0
    data = load_psd(out)
    assert data.quantity == "Q3" and data.t.tolist() == [0.0, 60.0, 600.0]
    assert np.all(np.diff(data.values, axis=1) >= 0) and data.values[:, -1] == pytest.approx(1)
    with h5py.File(out) as f:
        assert f["N"].shape == (3, 20)
        assert '"corr_beta": 2.0' in f.attrs["parameters"]
    assert "wrote" in capsys.readouterr().out
    assert main(["pbe", "simulate", str(spec), "-o", str(out), "--set", "pl_X=1"]) == 2
    assert "not used by this model ['pl_X']" in capsys.readouterr().err
    assert main([*argv, "--noise", "loud:1"]) == 2


def test_a_relative_data_path_is_stored_absolute_and_resumes_from_elsewhere(
    tmp_path: Path, monkeypatch
) -> None:
    from hpcopt import config as cfg
    from hpcopt.driver import campaign as drv
    from hpcopt.driver import reporters

    work = tmp_path / "work"
    work.mkdir()
    save_psd(work / "psd.csv", simulate(section(), TRUTH, [0, 300, 600]).psd("Q3"))
    problem_section = section(synthetic=None, data={"path": "psd.csv"}, cost=[["Q3", "MSE"]])
    doc = {
        "name": "rel",
        "output_dir": str(tmp_path / "rel"),
        "trials": [{"name": "ga", "problem": problem_section,
                    "method": {"name": "ga", "population": 4, "generations": 1}}],
    }  # fmt: skip
    monkeypatch.chdir(work)
    store = drv.create(cfg.parse(doc))
    monkeypatch.chdir(tmp_path)
    _, campaign = drv.reopen(store.root)
    assert campaign.trials[0].problem.data.path == str(work / "psd.csv")
    (outcome,) = drv.run(campaign, store, reporter=reporters.SilentReporter())
    assert outcome.status == "completed"


def bounds(name: str, low: float, high: float, log: bool = False) -> list[dict[str, Any]]:
    """SECTION's searched parameters with ``name``'s bounds replaced (or added)."""
    others = [q for q in SECTION["parameters"] if q["name"] != name]
    return [*others, {"name": name, "low": low, "high": high, "log": log}]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"known": {"alpha": 1.5, "G": 100.0}}, r"known.alpha: alpha must lie in \[0, 1\]"),
        ({"known": {"alpha": 1.0, "G": -1.0}}, r"known.G: G must lie in \(0, inf\)"),
        ({"parameters": bounds("pl_v", -0.5, 3.0)}, r"parameters.pl_v: pl_v must lie in \(0,"),
        ({"parameters": bounds("pl_P1", -1.0, 1.0)}, r"pl_P1 must lie in \[0, inf\)"),
        (
            {"fragments": "parabolic",
             "parameters": [*bounds("pl_v", 1, 2)[:-1],
                            {"name": "parabolic_c", "low": 0.0, "high": 2.0}]},
            r"parameters.parabolic_c: parabolic_c must lie in \[-0.5, 1\]",
        ),
        ({"synthetic": {**SECTION["synthetic"], "parameters": {**TRUTH, "pl_P1": -1.0}}},
         r"synthetic.parameters.pl_P1: pl_P1 must lie in"),
    ],
)  # fmt: skip
def test_kernel_parameters_outside_their_range_are_refused_at_config_time(changes, message):
    with pytest.raises(ValueError, match=message):
        PBEConfig(**section(**changes))


@pytest.mark.parametrize("on_limit", ["warn", "fail"])
def test_a_grid_too_short_for_the_run_says_so(on_limit):
    grid = {"classes": 8, "ratio": 2.0, "x0_um": 1.0, "on_limit": on_limit}
    short = problem(grid=grid)
    (ev,) = short.evaluate_batch(point(TRUTH, short.space.names))
    assert ev.extras["top_mass_fraction"] > 1e-3
    if on_limit == "fail":
        assert not ev.ok and "outgrow the grid" in ev.error
    else:
        assert ev.ok and "outgrow the grid" in ev.warning
    long = problem(grid={"classes": 31, "ratio": 2.0, "x0_um": 0.1})
    (ev,) = long.evaluate_batch(point(TRUTH, long.space.names))
    assert ev.ok and ev.warning == "" and ev.extras["top_mass_fraction"] < 1e-3
    assert ev.extras["fines_fraction"] < 1e-2


@pytest.mark.parametrize("on_limit", ["warn", "fail"])
def test_a_grid_too_coarse_at_the_bottom_says_so(on_limit):
    # the fragments of 1 um particles fall below a 1 um first class: most of the
    # particles' number ends in the fines class
    coarse = problem(grid={"classes": 20, "ratio": 2.0, "x0_um": 1.0, "on_limit": on_limit})
    (ev,) = coarse.evaluate_batch(point(TRUTH, coarse.space.names))
    assert ev.extras["fines_fraction"] > 0.5
    if on_limit == "fail":
        assert not ev.ok and "fall below the first class; lower grid.x0_um" in ev.error
    else:
        assert ev.ok and "fall below the first class" in ev.warning


def test_a_monodisperse_start_puts_every_particle_in_one_class():
    by_index = simulate(section(initial={"kind": "monodisperse", "class_index": 5}), TRUTH, [0])
    by_size = simulate(
        section(initial={"kind": "monodisperse", "size_um": 2.0 ** (4 / 3) * 1.05}), TRUTH, [0]
    )
    (n0,) = by_index.N
    assert np.flatnonzero(n0).tolist() == [5]  # class 0 holds the fines
    np.testing.assert_array_equal(by_size.N, by_index.N)
    # scaled to the volume fraction of solids
    assert n0 @ by_index.class_volumes_m3.sum(axis=1) == pytest.approx(1e-4)


def test_a_2d_monodisperse_start_puts_every_particle_in_one_mixed_class():
    two_d = section(
        dim=2,
        grid={"classes": 6, "x0_um": [1.0, 1.0]},
        initial={"kind": "monodisperse", "class_index": [5, 3]},
        known={"alpha_11": 1.0, "alpha_12": 1.0, "alpha_22": 1.0, "G": 100.0, "pl_P3": 1e-4,
               "pl_P4": 0.5},
    )  # fmt: skip
    sim = simulate(two_d, TRUTH, [0, 60])
    assert np.flatnonzero(sim.N[0]).tolist() == [5 * 6 + 3]
    assert np.count_nonzero(sim.N[1]) > 1  # it breaks


@pytest.mark.parametrize(
    ("dim", "index", "message"),
    [
        (2, [0, 0], "above the fines class"),
        (2, 3, r"give \[i, j\]"),
        (1, [2, 3], "give one index in 1-D"),
        (1, 0, "above the fines class"),
    ],
)
def test_a_start_in_no_real_class_is_refused(dim, index, message):
    grid = {"classes": 6, "x0_um": [1.0, 1.0] if dim == 2 else 1.0}
    initial = {"kind": "monodisperse", "class_index": index}
    with pytest.raises(ValidationError, match=message):
        PBEConfig(**section(dim=dim, grid=grid, initial=initial))


def test_an_exponential_start_has_its_mean_volume():
    sim = simulate(
        section(
            grid={"classes": 40, "ratio": 2**0.5, "x0_um": 0.2},
            initial={"kind": "exponential", "x_mean_um": 3.0},
        ),
        TRUTH,
        [0],
    )
    v = sim.class_volumes_m3.sum(axis=1)
    (n0,) = sim.N
    mean = (n0 @ v) / n0.sum()
    assert mean == pytest.approx(np.pi / 6 * (3e-6) ** 3, rel=0.02)


@pytest.mark.parametrize(
    ("initial", "message"),
    [
        ({"kind": "monodisperse"}, "exactly one of size_um and class_index"),
        ({"kind": "monodisperse", "size_um": 2.0, "class_index": 1}, "exactly one"),
        ({"kind": "lognormal", "class_index": 1}, "only used by kind: monodisperse"),
        ({"kind": "monodisperse", "class_index": 20}, "past the grid's last class"),
    ],
)
def test_a_start_that_names_no_single_class_is_refused(initial, message):
    with pytest.raises(ValueError, match=message):
        PBEConfig(**section(initial=initial))


def test_a_start_from_data_with_repeated_samples_starts_from_their_mean(tmp_path):
    Q = simulate(section(), TRUTH, [0, 300, 600]).psd("Q3")
    a, b = Q.values[0], Q.values[2]  # two differently shaped samples at t = 0

    def start(rows: list[np.ndarray]) -> np.ndarray:
        t = [0.0] * len(rows) + [300.0]
        path = tmp_path / f"psd{len(rows)}-{rows[0][3]:.6g}.h5"
        save_psd(path, PSDData(t=t, x=Q.x, values=[*rows, Q.values[1]], quantity="Q3"))
        changes = {"synthetic": None, "data": {"path": str(path)}, "cost": [["Q3", "MSE"]]}
        fit = build_problem(PBEConfig(**section(initial={"kind": "data"}, **changes)))
        fit.setup()
        return fit.solver.y0 * fit.solver.n_ref

    both = start([a, b])
    np.testing.assert_allclose(both, start([(a + b) / 2]))
    assert not np.allclose(both, start([a]))


def test_simulate_starts_from_the_data_file_of_its_section(tmp_path, capsys):
    Q = simulate(section(), TRUTH, [0, 300]).psd("Q3")
    path = tmp_path / "start.h5"
    save_psd(path, Q)
    start = section(synthetic=None, data={"path": str(path)}, initial={"kind": "data"})
    run = simulate(start, TRUTH, [0.0, 300.0])
    # the start is the data's distribution on the same grid (to the interpolation of the
    # cumulative onto numbers per class), and it evolves from there
    np.testing.assert_allclose(run.psd("Q3").values[0], Q.values[0], atol=1e-5)
    assert not np.allclose(run.psd("Q3").values[1], Q.values[0], atol=1e-3)
    np.testing.assert_allclose(simulate(start, TRUTH, [0.0], data=Q).N, run.N[:1])
    with pytest.raises(ValueError, match="starts from measured data: give the section a data"):
        simulate(section(initial={"kind": "data"}), TRUTH, [0.0])
    spec = tmp_path / "section.yaml"
    spec.write_text(yaml.safe_dump({**start, "synthetic": None}))
    sets = [f"--set={k}={v}" for k, v in TRUTH.items()]
    out = str(tmp_path / "out.h5")
    assert main(["pbe", "simulate", str(spec), "-o", out, "--times", "0,300", *sets]) == 0
    assert "fines class" in capsys.readouterr().out


def test_the_cell_average_technique_is_chosen_in_the_config():
    fp = problem()
    cat = problem(discretisation="cell_average")
    assert cat.solver.model.discretisation == "cell_average"
    x = point(TRUTH, fp.space.names)
    (a,), (b,) = fp.evaluate_batch(x), cat.evaluate_batch(x)
    assert a.ok and b.ok and a.value != b.value  # the same data, another discretisation


def test_the_cell_average_technique_is_chosen_in_the_config_in_2d_too():
    p = two_component_problem(discretisation="cell_average")
    assert p.solver.model.discretisation == "cell_average"
    names = p.space.names
    assert p.evaluate_batch(point(TRUTH_2D, names))[0].value < 1e-12
    assert p.evaluate_batch(point({**TRUTH_2D, "alpha_12": 0.6}, names))[0].value > 1e-6


def test_a_product_power_law_needs_more_than_one_fragment():
    doc = section(
        fragments="product_power_law",
        parameters=[*bounds("pl_v", 0.5, 3.0), {"name": "pl_q", "low": 0.5, "high": 2}],
    )
    with pytest.raises(ValueError, match="pl_v must be > 1 for fragments: product_power_law"):
        PBEConfig(**doc)
