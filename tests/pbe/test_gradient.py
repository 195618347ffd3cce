"""Exact gradients of the PBE cost through the torch solver, against central differences."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")

import torch

from hpcopt.config import ConfigError, parse
from hpcopt.problems.pbe import cost, gradient, psd
from hpcopt.problems.pbe.config import PBEConfig
from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.solver import Model
from hpcopt.problems.pbe.torch_solver import TorchSolver

from .test_problem import SECTION, TRUTH, TRUTH_2D, problem, section, two_component_problem
from .test_solver import ALL_1D, ALL_2D
from .test_torch_solver import CONFIGS

# Rodas4: the differences are then of the scheme the gradient differentiates
TIGHT = {"backend": "torch", "method": "Rodas4", "rtol": 1e-10, "atol": 1e-13}


def central_differences(p, x: np.ndarray, relative: float = 1e-4) -> np.ndarray:
    """d value / d x by central differences of the same (torch) cost, ``(d,)``: the ``2 d``
    points in one batch (each member steps alone, as it would in its own solve)."""
    h = relative * x[0]
    steps = np.diag(h)
    values = np.array([ev.value for ev in p.evaluate_batch(np.concatenate([x + steps, x - steps]))])
    d = x.shape[1]
    return (values[:d] - values[d:]) / (2 * h)


@pytest.mark.parametrize(
    "grid",
    [
        {"classes": 12, "ratio": 2.5, "x0_um": 1.0},
        pytest.param(SECTION["grid"], marks=pytest.mark.slow),
    ],
)
def test_1d_gradient_matches_central_differences(grid: dict) -> None:
    p = problem(solver=TIGHT, grid=grid)
    names = p.space.names
    x = np.array([[TRUTH[k] * f for k, f in zip(names, (1.3, 0.7, 1.2, 0.9))]])
    ev = p.evaluate_batch(x, gradient=True)[0]
    assert ev.ok and ev.value == p.evaluate_batch(x)[0].value
    np.testing.assert_allclose(ev.gradient, central_differences(p, x), rtol=1e-5)


@pytest.mark.slow
def test_2d_gradient_with_a_characteristic_size_matches_central_differences() -> None:
    p = two_component_problem(solver=TIGHT)
    names = p.space.names
    x = np.array([[TRUTH_2D[k] * f for k, f in zip(names, (1.2, 0.8, 1.1, 0.9))]])
    ev = p.evaluate_batch(x, gradient=True)[0]
    np.testing.assert_allclose(ev.gradient, central_differences(p, x), rtol=1e-5)


def test_a_batch_gives_each_member_its_own_gradient() -> None:
    p = problem(solver={"backend": "torch"})
    names = p.space.names
    x = np.array([[TRUTH[k] * f for k in names] for f in (1.2, 0.8)])
    together = p.evaluate_batch(x, gradient=np.array([True, False]))
    alone = p.evaluate_batch(x[:1], gradient=True)[0]
    np.testing.assert_allclose(together[0].gradient, alone.gradient, rtol=1e-12)
    assert together[1].gradient is None and together[1].ok


@pytest.mark.parametrize(
    ("dim", "mechanisms", "discretisation"),
    [
        (1, ("shear", "power_law", "power_law"), "fixed_pivot"),
        (1, ("brownian", "linear", "parabolic"), "cell_average"),
        (1, ("sum", "constant", "parabolic_power_law"), "fixed_pivot"),
        (2, ("shear", "power_law", "power_law"), "cell_average"),
    ],
)
def test_the_rates_complex_step_derivatives_match_central_differences(
    dim: int, mechanisms: tuple[str, str, str], discretisation: str
) -> None:
    grid = Grid.geometric(dim, 6, 2.0, (5e-19,) * dim)
    model = Model(grid, *mechanisms, discretisation=discretisation)
    solver = TorchSolver(model, np.ones(grid.n))
    base = {**ALL_1D, **ALL_2D, "parabolic_c": 0.3}
    values = {k: np.array([base[k], base[k] * 1.3]) for k in model.parameters()}
    for name in model.parameters():
        d_beta, d_L = gradient._complex_step(solver, values, name)
        h = 1e-6 * values[name]
        up = solver.rates({**values, name: values[name] + h})
        down = solver.rates({**values, name: values[name] - h})
        for exact, u, d in ((d_beta, up.beta, down.beta), (d_L, up.L, down.L)):
            if exact is None:
                continue
            fd = (u - d) / (2 * (h[None, :] if u.ndim == 2 else h[:, None, None]))
            scale = np.abs(fd).max() + 1e-300
            np.testing.assert_allclose(exact.numpy(), fd, rtol=0, atol=1e-7 * scale)


@pytest.mark.parametrize("target", ["q0", "q3", "Q0", "Q3", "x_10", "x_50", "x_90"])
@pytest.mark.parametrize("metric", ["MSE", "RMSE", "MAE", "KL"])
def test_the_torch_cost_equals_the_numpy_cost(target: str, metric: str) -> None:
    if metric == "KL" and target not in cost.DENSITY_TARGETS:
        pytest.skip("KL is for densities only")
    rng = np.random.default_rng(1)
    x = np.geomspace(1.0, 100.0, 12)
    edges = np.concatenate([[0.8], np.sqrt(x[1:] * x[:-1]), [120.0]])
    N = rng.random((3, 4, 12)) * 1e12
    data = {t: v[0] for t, v in _targets(N * 1.1 + 1e10, x, edges).items()}
    terms = cost.parse_cost([[target, metric, 0.7]])
    want = cost.total_cost(terms, lambda t: _targets(N, x, edges)[t], data.__getitem__, "q3")
    got = gradient.total_cost(
        terms, lambda t: _torch_targets(torch.tensor(N), x, edges, t), data.__getitem__, "q3"
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def _targets(N: np.ndarray, x: np.ndarray, edges: np.ndarray) -> dict[str, np.ndarray]:
    out = {q: psd.on_cells(N, x, edges, q) for q in ("q0", "q3", "Q0", "Q3")}
    Q = np.concatenate([np.zeros((*N.shape[:-1], 1)), out["Q3"]], axis=-1)
    for p in (10, 50, 90):
        out[f"x_{p}"] = psd.characteristic_size(edges, Q, p / 100)
    return out


def _torch_targets(N, x: np.ndarray, edges: np.ndarray, target: str):
    if target.startswith("x_"):
        Q = gradient.on_cells(N, x, edges, "Q3")
        Q = torch.cat([torch.zeros_like(Q[..., :1]), Q], dim=-1)
        return gradient.characteristic_size(edges, Q, int(target[2:]) / 100)
    return gradient.on_cells(N, x, edges, target)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, "solver.backend: torch"),
        ({"solver": {"backend": "torch"}, "smoothing": "kde"}, "smoothing: kde"),
        (
            {"solver": {"backend": "torch"}, "fragments": "product_power_law"},
            "product_power_law",
        ),
    ],
)
def test_a_fit_without_exact_gradients_says_why(changes: dict, reason: str) -> None:
    spec = section(**changes)
    if spec.get("smoothing") == "kde":
        spec["synthetic"] = {**SECTION["synthetic"], "quantity": "q0"}
        spec["cost"] = [["q0", "MSE"]]
    if spec.get("fragments") == "product_power_law":
        spec["known"] = {**SECTION["known"], "pl_q": 2.0}
        spec["parameters"] = [
            {**p, "low": 1.5} if p["name"] == "pl_v" else p for p in SECTION["parameters"]
        ]
    config = PBEConfig(**spec)
    assert not config.has_gradient
    assert reason in config.gradient_error()


def test_gd_on_exact_gradients_of_a_numpy_backend_fit_is_a_config_error_saying_why() -> None:
    trial = {"name": "gd", "problem": section(), "method": {"name": "gd", "gradient": "problem"}}
    with pytest.raises(ConfigError, match=r"method.gradient: 'problem' needs exact gradients, "
                       r"but exact gradients need solver.backend: torch"):  # fmt: skip
        parse({"name": "c", "trials": [trial]})
    torch_fit = {**trial, "problem": section(solver={"backend": "torch"})}
    assert parse({"name": "c", "trials": [torch_fit]}).trials[0].problem.has_gradient


def test_asking_a_numpy_backend_fit_for_gradients_is_an_error() -> None:
    p = problem()
    x = np.array([[TRUTH[k] for k in p.space.names]])
    with pytest.raises(ValueError, match="gradient asked for, but exact gradients need"):
        p.evaluate_batch(x, gradient=True)


@pytest.mark.parametrize("name", ["pbe-1d.yaml", "pbe-2d.yaml"])
def test_the_shipped_fits_have_exact_gradients_with_the_torch_backend(name: str) -> None:
    spec = yaml.safe_load((CONFIGS / name).read_text())["shared"]["problem"]
    assert not PBEConfig(**spec).has_gradient
    assert PBEConfig(**{**spec, "solver": {"backend": "torch"}}).has_gradient
