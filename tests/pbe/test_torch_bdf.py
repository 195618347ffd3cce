"""The torch solver's batched BDF: SciPy's BDF for each member, as if stepped alone."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("torch")

import torch
from scipy.integrate import BDF
from scipy.integrate._ivp.bdf import change_D

from hpcopt.problems.pbe import torch_bdf
from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.solver import Model, Solver
from hpcopt.problems.pbe.torch_bdf import BatchedBDF, step_change, tables
from hpcopt.problems.pbe.torch_solver import (
    NOT_FINITE,
    SINGULAR,
    STEP_TOO_SMALL,
    TorchSolver,
)

from .test_solver import ALL_1D, ALL_2D, TIMES, exponential_start, primary_2d

DISCRETISATIONS = ["fixed_pivot", "cell_average"]
TABLES = tables()


def model_1d(discretisation: str = "fixed_pivot") -> tuple[Model, np.ndarray]:
    grid = Grid.geometric(1, 20, 2.0, (5e-19,))
    n0 = np.zeros(grid.n)
    n0[1] = 2e14
    return Model(grid, "shear", "power_law", "power_law", discretisation=discretisation), n0


def model_2d(discretisation: str) -> tuple[Model, np.ndarray]:
    grid = Grid.geometric(2, 6, 2.0, (5e-19, 5e-19))
    model = Model(grid, "shear", "power_law", "power_law", discretisation=discretisation)
    return model, primary_2d(grid)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_a_step_size_change_rewrites_the_differences_as_scipy_does(order: int) -> None:
    rng = np.random.default_rng(order)
    D = rng.normal(size=(8, 3))
    want = D.copy()
    change_D(want, order, 0.37)
    RU = step_change(np.array([order]), np.array([0.37]))[0]
    got = D.copy()
    got[:6] = RU.T @ D[:6]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_an_accepted_step_updates_the_differences_as_scipy_does(order: int) -> None:
    rng = np.random.default_rng(order)
    D, d = rng.normal(size=(8, 3)), rng.normal(size=3)
    want = D.copy()
    want[order + 2] = d - want[order + 1]
    want[order + 1] = d
    for i in reversed(range(order + 1)):
        want[i] += want[i + 1]
    got = TABLES.update[order] @ D + TABLES.update_d[order][:, None] * d
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(TABLES.predict[order, 0] @ D, D[: order + 1].sum(axis=0))


@pytest.mark.parametrize("newton", ["inverted", "factorised"])
@pytest.mark.parametrize("discretisation", DISCRETISATIONS)
def test_a_member_takes_the_steps_scipys_bdf_takes_alone(
    monkeypatch: pytest.MonkeyPatch, discretisation: str, newton: str
) -> None:
    # the Newton matrices of this small system are inverted unless LU is asked for
    if newton == "factorised":
        monkeypatch.setattr(torch_bdf, "LU_FROM_STATES", 1)
    model, n0 = model_1d(discretisation)
    t = np.linspace(0, 600, 5)
    scipy_sol = Solver(model, n0).solve(ALL_1D, t)
    torch_sol = TorchSolver(model, n0, method="BDF").solve(ALL_1D, t)
    assert torch_sol.steps == scipy_sol.steps
    assert torch_sol.rhs_evals == scipy_sol.rhs_evals
    np.testing.assert_allclose(torch_sol.N, scipy_sol.N, rtol=0, atol=1e-10 * n0.sum())


@pytest.mark.parametrize("discretisation", DISCRETISATIONS)
@pytest.mark.parametrize("dim", [1, 2])
def test_agrees_with_scipys_bdf_to_round_off(dim: int, discretisation: str) -> None:
    model, n0 = model_1d(discretisation) if dim == 1 else model_2d(discretisation)
    params = ALL_1D if dim == 1 else ALL_2D
    t = np.linspace(0, 600, 7)
    ref = Solver(model, n0, rtol=1e-8, atol=1e-12).solve(params, t)
    sol = TorchSolver(model, n0, rtol=1e-8, atol=1e-12, method="BDF").solve(params, t)
    assert sol.error == ref.error == [""]
    scale = np.abs(ref.N).max(axis=-1, keepdims=True)
    # the same algorithm on the same steps: round-off apart (~1e-12), far inside the 1e-8
    assert np.abs((sol.N - ref.N) / scale).max() < 1e-9


@pytest.mark.parametrize("discretisation", DISCRETISATIONS)
def test_constant_kernel_number_follows_the_closed_form(discretisation: str) -> None:
    grid = Grid.geometric(1, 40, 2**0.5, (1e-3,))
    n0 = exponential_start(grid)
    model = Model(grid, "constant", v_ref=1.0, discretisation=discretisation)
    solver = TorchSolver(model, n0, rtol=1e-9, atol=1e-13, method="BDF")
    sol = solver.solve({"corr_beta": 1.0, "alpha": 1.0}, TIMES)
    assert sol.error == [""]
    exact = n0.sum() / (1 + n0.sum() * TIMES / 2)
    np.testing.assert_allclose(sol.N[0].sum(axis=1), exact, rtol=1e-7)


def test_a_member_over_the_budget_fails_alone_with_the_numpy_solvers_words() -> None:
    model, n0 = model_1d()
    t = np.linspace(0, 600, 5)
    easy = {**ALL_1D, "corr_beta": 0.01, "pl_P1": 1e-7}
    hard = {**ALL_1D, "corr_beta": 30.0, "pl_P1": 1e-2}
    evals = [TorchSolver(model, n0, method="BDF").solve(p, t).rhs_evals for p in (easy, hard)]
    assert evals[0] < evals[1]
    # each member counts its own evaluations: three easy ones each take the whole budget
    budget = evals[0]
    solver = TorchSolver(model, n0, max_rhs_evals=budget, method="BDF")
    sol = solver.solve({k: np.array([easy[k]] * 3 + [hard[k]]) for k in ALL_1D}, t)
    assert sol.error == ["", "", "", Solver(model, n0, max_rhs_evals=budget).budget_reason()]
    assert np.all(np.isfinite(sol.N[:3])) and np.all(np.isnan(sol.N[3]))
    alone = TorchSolver(model, n0, method="BDF").solve(easy, t)
    np.testing.assert_allclose(sol.N[0], alone.N[0], rtol=1e-12, atol=1e-12 * n0[1])


def blow_up(rate: torch.Tensor) -> Callable:
    """``select`` for ``dy/dt = a y^2`` per member (``y = 1 / (1 - a t)`` from 1: infinite
    at ``t = 1 / a``), two states each."""

    def select(members: torch.Tensor) -> tuple[Callable, Callable]:
        a = rate[members]
        return (
            lambda y: a[:, None] * y**2,
            lambda y, which: torch.diag_embed(2 * a[which, None] * y),
        )

    return select


def test_a_member_whose_step_falls_below_round_off_fails_alone_with_scipys_words() -> None:
    # a = 1 blows up at t = 1, inside the span: SciPy's BDF fails there with these words
    scipy_bdf = BDF(lambda t, y: y**2, 0.0, np.ones(2), 2.0, jac=lambda t, y: np.diag(2 * y))
    while scipy_bdf.status == "running":
        message = scipy_bdf.step()
    assert scipy_bdf.status == "failed" and 0.99 < scipy_bdf.t < 1.0
    assert f"the integrator failed: {message}" == STEP_TOO_SMALL
    rate = torch.tensor([0.1, 1.0], dtype=torch.float64)
    bdf = BatchedBDF(1e-3, torch.full((2,), 1e-6, dtype=torch.float64), 10**6)
    t = np.array([0.0, 0.5, 2.0])
    failures = {"not_finite": NOT_FINITE, "too_small": STEP_TOO_SMALL, "singular": SINGULAR}
    args = (t, time.monotonic() + 60, "budget", failures)
    out, errors, _, _ = bdf.run(blow_up(rate), torch.ones(2, 2, dtype=torch.float64), *args)
    assert errors == ["", STEP_TOO_SMALL]
    np.testing.assert_allclose(out[0, :, 0].numpy(), 1 / (1 - 0.1 * t), rtol=1e-2)
    assert torch.isnan(out[1]).all()
