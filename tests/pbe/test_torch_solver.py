"""The torch dPBE solver against closed forms, against the SciPy solver and alone per member."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

pytest.importorskip("torch")

import torch

from hpcopt.problems.pbe import torch_bdf
from hpcopt.problems.pbe.forward import build_solver, solver_backend
from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.sections import MODEL_KEYS, SOLVER_METHODS, PBEModel
from hpcopt.problems.pbe.solver import Model, Solver
from hpcopt.problems.pbe.torch_solver import METHODS, NOT_FINITE, TorchSolver

from .test_problem import expand_with_problem
from .test_solver import ALL_1D, ALL_2D, TIMES, exponential_start, moments, primary_2d

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DISCRETISATIONS = ["fixed_pivot", "cell_average"]


def both(model: Model, n0: np.ndarray, params: dict, t: np.ndarray, method: str, **kw):
    """The SciPy and the torch (``method``) solution of one model, with the same
    tolerances."""
    scipy_sol = Solver(model, n0, **kw).solve(params, t)
    torch_sol = TorchSolver(model, n0, method=method, **kw).solve(params, t)
    assert scipy_sol.error == [""] * len(scipy_sol.error)
    assert torch_sol.error == [""] * len(torch_sol.error)
    return scipy_sol.N, torch_sol.N


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("discretisation", DISCRETISATIONS)
def test_constant_kernel_number_follows_closed_form(discretisation: str, method: str) -> None:
    grid = Grid.geometric(1, 40, 2**0.5, (1e-3,))
    n0 = exponential_start(grid)
    model = Model(grid, "constant", v_ref=1.0, discretisation=discretisation)
    solver = TorchSolver(model, n0, rtol=1e-9, atol=1e-13, method=method)
    sol = solver.solve({"corr_beta": 1.0, "alpha": 1.0}, TIMES)
    assert sol.error == [""]
    m0, m1, m2 = moments(sol.N[0], grid.total_volumes())
    np.testing.assert_allclose(m0, n0.sum() / (1 + n0.sum() * TIMES / 2), rtol=1e-7)
    np.testing.assert_allclose(m1, m1[0], rtol=1e-12)
    scipy_N = Solver(model, n0, rtol=1e-9, atol=1e-13).solve({"corr_beta": 1, "alpha": 1}, TIMES).N
    # the discretisation's own M2 (not the closed form's) is what both integrate
    np.testing.assert_allclose(m2, moments(scipy_N[0], grid.total_volumes())[2], rtol=1e-7)


@pytest.mark.parametrize("method", ["BDF", "Rodas4"])
@pytest.mark.parametrize("discretisation", DISCRETISATIONS)
def test_2d_constant_kernel_total_number_matches_closed_form(
    discretisation: str, method: str
) -> None:
    grid = Grid.geometric(2, 12, 2.0, (1.0, 1.0))  # long enough to keep every collision
    n0 = primary_2d(grid) * 1e-14
    params = {"corr_beta": 0.5, "alpha_11": 1.0, "alpha_12": 1.0, "alpha_22": 1.0}
    model = Model(grid, "constant", discretisation=discretisation)
    ref, sol = both(model, n0, params, TIMES, method, rtol=1e-9, atol=1e-13)
    tau = 0.5 * n0.sum() * TIMES
    np.testing.assert_allclose(sol[0].sum(axis=1), n0.sum() / (1 + tau / 2), rtol=1e-6)
    np.testing.assert_allclose(sol, ref, rtol=0, atol=1e-7 * n0.sum())


@pytest.mark.parametrize("method", ["BDF", "Rodas4"])
@pytest.mark.parametrize("discretisation", DISCRETISATIONS)
@pytest.mark.parametrize("dim", [1, 2])
def test_agrees_with_scipy_with_agglomeration_and_breakage(
    dim: int, discretisation: str, method: str
) -> None:
    if dim == 1:
        grid = Grid.geometric(1, 20, 2.0, (5e-19,))
        n0 = np.zeros(grid.n)
        n0[1] = 2e14
        params = ALL_1D
    else:
        grid = Grid.geometric(2, 6, 2.0, (5e-19, 5e-19))
        n0 = primary_2d(grid)
        params = ALL_2D
    model = Model(grid, "shear", "power_law", "power_law", discretisation=discretisation)
    t = np.linspace(0, 600, 7)
    ref, sol = both(model, n0, params, t, method, rtol=1e-8, atol=1e-12)
    # both are 1e-8 solves of the same system: they agree to a few times that
    np.testing.assert_allclose(sol, ref, rtol=0, atol=5e-8 * n0.sum())
    volume = sol[0] @ grid.volumes()
    np.testing.assert_allclose(volume, np.broadcast_to(volume[0], volume.shape), rtol=1e-10)


def config_solver(name: str, discretisation: str, **settings: object):
    """The solver of a shipped config's model (its ``solver`` settings changed by
    ``settings``), the true parameters of its synthetic data and their times."""
    problem = yaml.safe_load((CONFIGS / name).read_text())["shared"]["problem"]
    model = {k: v for k, v in problem.items() if k in MODEL_KEYS}
    model["solver"] = {**model.get("solver", {}), **settings}
    config = PBEModel(**{**model, "discretisation": discretisation})
    solver, _ = build_solver(config)
    truth = {**config.known, **problem["synthetic"]["parameters"]}
    params = {k: truth[k] for k in solver.model.parameters()}
    return solver, params, np.asarray(problem["synthetic"]["times_s"], dtype=float)


@pytest.mark.parametrize("method", ["BDF", "Rodas4"])
@pytest.mark.parametrize("discretisation", DISCRETISATIONS)
@pytest.mark.parametrize("name", ["pbe-1d.yaml", "pbe-2d.yaml"])
def test_agrees_with_scipy_on_the_shipped_configs(
    name: str, discretisation: str, method: str
) -> None:
    solver, params, t = config_solver(name, discretisation, backend="torch", method=method)
    assert isinstance(solver, TorchSolver)
    sol = solver.solve(params, t)
    scipy_solver, _, _ = config_solver(name, discretisation)
    ref = scipy_solver.solve(params, t)
    tight = config_solver(name, discretisation, rtol=1e-11, atol=1e-14)[0].solve(params, t)
    assert sol.error == ref.error == tight.error == [""]
    # each time's classes against the largest of them, both backends at the configs'
    # rtol 1e-6 against a 1e-11 solve: within ten times that tolerance
    scale = tight.N.max(axis=-1, keepdims=True)
    assert (np.abs(sol.N - tight.N) / scale).max() < 1e-5
    assert (np.abs(ref.N - tight.N) / scale).max() < 1e-5
    np.testing.assert_allclose(sol.top_mass_fraction, ref.top_mass_fraction, atol=1e-6)
    np.testing.assert_allclose(sol.fines_fraction, ref.fines_fraction, atol=1e-6)


def small_1d() -> tuple[Model, np.ndarray]:
    grid = Grid.geometric(1, 20, 2.0, (5e-19,))
    n0 = np.zeros(grid.n)
    n0[1] = 2e14
    return Model(grid, "shear", "power_law", "power_law"), n0


@pytest.mark.parametrize("method", ["BDF", "Rodas4"])
def test_each_member_of_a_batch_steps_as_it_would_alone(method: str) -> None:
    model, n0 = small_1d()
    solver = TorchSolver(model, n0, rtol=1e-7, method=method)
    batch = {k: np.array([v, v * 3.0, v * 0.3]) for k, v in ALL_1D.items()}
    t = np.linspace(0, 600, 5)
    together = solver.solve(batch, t)
    for b in range(3):
        alone = solver.solve({k: v[b] for k, v in batch.items()}, t)
        assert together.steps[b] == alone.steps[0]
        np.testing.assert_allclose(together.N[b], alone.N[0], rtol=1e-12, atol=1e-12 * n0[1])
    assert len(set(together.steps)) > 1  # the members took different steps


@pytest.mark.parametrize("method", ["BDF", "Rodas4"])
def test_a_failing_member_fails_alone_with_its_reason(method: str) -> None:
    model, n0 = small_1d()
    solver = TorchSolver(model, n0, method=method)
    batch = {k: np.array([v, v, v]) for k, v in ALL_1D.items()}
    batch["pl_P2"] = np.array([0.7, np.nan, 0.5])
    t = np.linspace(0, 600, 5)
    sol = solver.solve(batch, t)
    assert sol.error == ["", NOT_FINITE, ""]
    assert np.all(np.isnan(sol.N[1]))
    for b in (0, 2):
        alone = solver.solve({k: v[b] for k, v in batch.items()}, t)
        np.testing.assert_allclose(sol.N[b], alone.N[0], rtol=1e-12, atol=1e-12 * n0[1])


@pytest.mark.parametrize(
    ("method", "factor", "lu_from"),
    [("BDF", "inv_ex", None), ("BDF", "lu_factor_ex", 1), ("Rodas4", "lu_factor_ex", None)],
)
def test_a_member_whose_newton_matrix_is_singular_fails_alone_with_the_numpy_words(
    monkeypatch: pytest.MonkeyPatch, method: str, factor: str, lu_from: int | None
) -> None:
    # LAPACK reports the singular member (info > 0) rather than raising for the batch
    real = getattr(torch.linalg, factor)
    if lu_from is not None:  # the BDF factorises this small system's matrices
        monkeypatch.setattr(torch_bdf, "LU_FROM_STATES", lu_from)

    def second_member_singular(A: torch.Tensor):
        *out, info = real(A)
        if len(info) == 3:  # the first factorisation, of every member's matrix
            info = info.clone()
            info[1] = 1
        return (*out, info)

    model, n0 = small_1d()
    solver = TorchSolver(model, n0, method=method)
    batch = {k: np.array([v, v, v]) for k, v in ALL_1D.items()}
    t = np.linspace(0, 600, 5)
    with monkeypatch.context() as patch:
        patch.setattr(torch.linalg, factor, second_member_singular)
        sol = solver.solve(batch, t)
    assert sol.error == ["", "the integrator failed: LinAlgError: Singular matrix", ""]
    assert np.all(np.isnan(sol.N[1]))
    alone = solver.solve({k: v[0] for k, v in batch.items()}, t)
    np.testing.assert_allclose(sol.N[2], alone.N[0], rtol=1e-12, atol=1e-12 * n0[1])


def test_a_member_over_the_budget_fails_alone_with_the_numpy_solvers_words() -> None:
    model, n0 = small_1d()
    t = np.linspace(0, 600, 5)
    easy = {**ALL_1D, "corr_beta": 0.01, "pl_P1": 1e-7}
    hard = {**ALL_1D, "corr_beta": 30.0, "pl_P1": 1e-2}
    counts = [TorchSolver(model, n0, method="Rodas4").solve(p, t).steps[0] for p in (easy, hard)]
    assert counts[0] < counts[1]
    budget = 6 * (counts[0] + counts[1]) // 2  # Rodas4: six evaluations a step
    solver = TorchSolver(model, n0, max_rhs_evals=budget, method="Rodas4")
    sol = solver.solve({k: np.array([easy[k], hard[k]]) for k in ALL_1D}, t)
    assert sol.error[0] == ""
    assert sol.error[1] == Solver(model, n0, max_rhs_evals=budget).budget_reason()
    assert f"gave up after {budget} right-hand-side evaluations" in sol.error[1]
    assert np.all(np.isfinite(sol.N[0])) and np.all(np.isnan(sol.N[1]))


def test_outputs_at_time_zero_are_the_start_and_bad_times_are_refused() -> None:
    model, n0 = small_1d()
    solver = TorchSolver(model, n0)
    sol = solver.solve(ALL_1D, np.array([0.0, 10.0]))
    np.testing.assert_array_equal(sol.N[0, 0], n0)
    with pytest.raises(ValueError, match="increasing"):
        solver.solve(ALL_1D, np.array([10.0, 5.0]))
    with pytest.raises(ValueError, match="method must be one of Rodas3, Rodas4, BDF"):
        TorchSolver(model, n0, method="Radau")


def test_the_backend_setting_is_checked_and_auto_picks_numpy_without_cuda() -> None:
    import torch

    expected = "torch" if torch.cuda.is_available() else "numpy"
    assert solver_backend("auto") == expected
    assert solver_backend("numpy") == "numpy"
    assert solver_backend("torch") == "torch"


def test_a_bad_backend_is_a_config_error_naming_the_allowed_ones(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValidationError, match="'numpy', 'torch' or 'auto'"):
        PBEModel(solver={"backend": "jax"})
    code, err = expand_with_problem(tmp_path, capsys, "{name: pbe, solver: {backend: jax}}")
    assert code == 2
    assert "backend" in err


@pytest.mark.parametrize(
    ("backend", "method", "allowed"),
    [("torch", "Radau", "BDF, Rodas4, Rodas3"), ("numpy", "Rodas4", "BDF, Radau"),
     ("auto", "Rodas4", "BDF")],
)  # fmt: skip
def test_a_method_the_backend_lacks_is_a_config_error_naming_the_allowed_ones(
    tmp_path: Path, capsys, backend: str, method: str, allowed: str
) -> None:
    with pytest.raises(
        ValidationError, match=f"not a method of backend {backend}; allowed: {allowed}"
    ):
        PBEModel(solver={"backend": backend, "method": method})
    section = f"{{name: pbe, solver: {{backend: {backend}, method: {method}}}}}"
    code, err = expand_with_problem(tmp_path, capsys, section)
    assert code == 2
    assert f"allowed: {allowed}" in err


def test_the_config_offers_exactly_the_torch_solvers_methods() -> None:
    # written twice: the config must not import torch to check a setting
    assert set(SOLVER_METHODS["torch"]) == set(METHODS)


@pytest.mark.parametrize("method", ["BDF", "Rodas4"])
def test_the_problem_solves_with_the_configured_torch_method(method: str) -> None:
    from .test_problem import problem

    assert problem(solver={"backend": "torch", "method": method}).solver.method == method


def test_a_gradient_evaluation_with_bdf_configured_agrees_with_the_plain_one() -> None:
    # the gradient's solve is Rodas4 whatever the method, its value Rodas4's: 5.5e-7 apart
    from .test_problem import TRUTH, problem

    p = problem(solver={"backend": "torch", "method": "BDF"})
    x = np.array([[TRUTH[k] * 1.2 for k in p.space.names]])
    plain, with_gradient = p.evaluate_batch(x)[0], p.evaluate_batch(x, gradient=True)[0]
    assert plain.value != with_gradient.value
    assert plain.value == pytest.approx(with_gradient.value, rel=1e-5)


def test_the_problem_scores_a_whole_batch_with_the_torch_backend_as_with_numpy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from .test_problem import TRUTH, problem

    torch_problem = problem(solver={"backend": "torch", "batch_size": 2})
    numpy_problem = problem()
    assert isinstance(torch_problem.solver, TorchSolver)
    names = torch_problem.space.names
    points = np.array([[TRUTH[k] * f for k in names] for f in (1.0, 1.3, 0.8)])
    sizes = []
    solve = torch_problem.solver.solve

    def counted(params: dict, t: np.ndarray):
        sizes.append(len(params["corr_beta"]))
        return solve(params, t)

    monkeypatch.setattr(torch_problem.solver, "solve", counted)
    got = torch_problem.evaluate_batch(points)
    assert sizes == [3]  # one batch, not batch_size at a time
    want = numpy_problem.evaluate_batch(points)
    assert [e.ok for e in got] == [True] * 3
    np.testing.assert_allclose(
        [e.value for e in got], [e.value for e in want], rtol=1e-3, atol=1e-9
    )
    assert got[0].value < 1e-9 < got[1].value
