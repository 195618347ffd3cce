"""The torch dPBE code puts every tensor it creates on the solver's device.

No machine that runs the tests has CUDA, so a tensor made on the CPU by default (a
``torch.arange`` without ``device=``) would pass every test here and fail on the first
GPU worker. Two checks stand in for a GPU. At run time, a solve (and a gradient) runs with
torch's default device set to ``meta``, where a tensor made without ``device=`` has no
values: it must give the same numbers as a solve without it. In the source, each call of
a torch factory function names its device, or makes its tensor from another one
(``*_like``, ``new_*``), and a tensor goes to numpy only through ``.cpu()`` (a CUDA tensor
has no ``.numpy()``, a CPU one does, so only the source shows that).
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import torch

from hpcopt.problems.pbe import torch_bdf
from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.solver import Model
from hpcopt.problems.pbe.torch_solver import METHODS, TorchSolver

from .test_problem import TRUTH, problem
from .test_solver import ALL_1D, ALL_2D, primary_2d

PBE = Path(__file__).resolve().parents[2] / "hpcopt" / "problems" / "pbe"
MODULES = ["torch_solver.py", "torch_bdf.py", "gradient.py", "problem.py"]
FACTORIES = {
    "arange", "as_tensor", "empty", "eye", "full", "linspace", "ones", "rand", "randn",
    "tensor", "zeros", "sparse_coo_tensor",
}  # fmt: skip


def factory_calls_without_device(source: str) -> list[str]:
    """``torch.<factory>(...)`` calls in ``source`` without a ``device=`` argument, and
    ``.numpy()`` calls not right after ``.cpu()``, as ``"line: call"``."""
    missing = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        func = node.func
        named_torch = isinstance(func.value, ast.Name) and func.value.id == "torch"
        has_device = any(k.arg == "device" for k in node.keywords)
        if named_torch and func.attr in FACTORIES and not has_device:
            missing.append(f"{node.lineno}: {ast.unparse(node)}")
        # a CUDA tensor has no .numpy(): it comes to the host first
        after_cpu = (
            isinstance(func.value, ast.Call) and getattr(func.value.func, "attr", "") == "cpu"
        )
        if func.attr == "numpy" and not after_cpu:
            missing.append(f"{node.lineno}: {ast.unparse(node)}")
    return missing


@pytest.mark.parametrize("module", MODULES)
def test_every_tensor_the_torch_solver_makes_names_its_device(module: str) -> None:
    assert factory_calls_without_device((PBE / module).read_text()) == []


def test_a_factory_call_without_a_device_is_found() -> None:
    source = "import torch\nx = torch.arange(3)\ny = torch.zeros(2, device=d)\nz = y.numpy()\n"
    assert factory_calls_without_device(source) == ["2: torch.arange(3)", "4: y.numpy()"]


# right-hand sides that the first two members need and the stiff third does not get
BUDGET = {"BDF": 600, "Rodas4": 1000, "Rodas3": 1400}


@contextlib.contextmanager
def default_device_meta() -> Iterator[None]:
    """Tensors made without ``device=`` land on ``meta``: no values, so a computation
    that uses one gives other numbers (or fails) where it would fail on a GPU worker."""
    before = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(before)


def solve_small(dim: int, discretisation: str, method: str) -> tuple[np.ndarray, list[str]]:
    """A batch of three parameter sets, the third too stiff for the budget (so members
    finish apart and one fails), solved by a torch solver built inside the call."""
    if dim == 1:
        grid, params = Grid.geometric(1, 12, 2.0, (5e-19,)), ALL_1D
        n0 = np.zeros(grid.n)
        n0[1] = 2e14
    else:
        grid, params = Grid.geometric(2, 5, 2.0, (5e-19, 5e-19)), ALL_2D
        n0 = primary_2d(grid)
    model = Model(grid, "shear", "power_law", "power_law", discretisation=discretisation)
    batch = {k: np.array([v, 1.5 * v, 0.7 * v]) for k, v in params.items()}
    batch["corr_beta"] = np.array([1.0, 1.5, 1e4])
    solver = TorchSolver(model, n0, method=method, max_rhs_evals=BUDGET[method])
    sol = solver.solve(batch, np.linspace(0, 600, 5))
    return sol.N, sol.error


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("discretisation", ["fixed_pivot", "cell_average"])
@pytest.mark.parametrize("dim", [1, 2])
def test_a_solve_makes_no_tensor_on_the_default_device(
    dim: int, discretisation: str, method: str
) -> None:
    N, errors = solve_small(dim, discretisation, method)
    assert errors[0] == errors[1] == "" and "gave up" in errors[2]
    with default_device_meta():
        N_meta, errors_meta = solve_small(dim, discretisation, method)
    assert errors_meta == errors
    np.testing.assert_array_equal(N_meta, N)


@pytest.mark.parametrize("discretisation", ["fixed_pivot", "cell_average"])
def test_a_solve_with_lu_factorised_newton_matrices_makes_no_tensor_on_the_default_device(
    discretisation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the small systems here are inverted unless told otherwise
    monkeypatch.setattr(torch_bdf, "LU_FROM_STATES", 1)
    N, errors = solve_small(2, discretisation, "BDF")
    with default_device_meta():
        N_meta, errors_meta = solve_small(2, discretisation, "BDF")
    assert errors_meta == errors
    np.testing.assert_array_equal(N_meta, N)


def test_an_exact_gradient_makes_no_tensor_on_the_default_device() -> None:
    settings = {"solver": {"backend": "torch"}, "grid": {"classes": 12, "ratio": 2.5, "x0_um": 1.0}}
    p = problem(**settings)
    x = np.array([[TRUTH[k] * f for k, f in zip(p.space.names, (1.3, 0.7, 1.2, 0.9))]])
    ev = p.evaluate_batch(x, gradient=True)[0]
    with default_device_meta():
        ev_meta = problem(**settings).evaluate_batch(x, gradient=True)[0]
    assert ev.ok and ev_meta.ok
    assert ev_meta.value == ev.value
    np.testing.assert_array_equal(ev_meta.gradient, ev.gradient)


def test_a_tensor_made_without_a_device_changes_a_result_under_the_meta_default() -> None:
    values = torch.arange(5.0, device="cpu")

    def pick_two() -> float:
        return float(values[torch.tensor([1, 3])].sum())

    assert pick_two() == 4.0
    with default_device_meta():
        try:
            wrong = pick_two()
        except (RuntimeError, NotImplementedError):
            return  # a torch that refuses to mix the devices serves as well
    assert wrong != 4.0
