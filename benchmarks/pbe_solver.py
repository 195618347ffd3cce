"""Wall time and accuracy of one dPBE solve, and the throughput of batched solves.

Cases (t = 0..600 s, shear agglomeration with power-law breakage and fragments):
1-D with 30 classes, 2-D with 10 and 15 classes per component. Each solve's accuracy is
printed beside its time: the largest error of the volume-based cumulative Q3 against a
solve with 1000x tighter tolerances, and the drift of each component's total volume. A
constant-kernel 1-D case adds the error of the number of particles against the closed
form. The three cases are then solved with both discretisations side by side (fixed pivot
and cell average), with the constant kernel's second moment against its closed form in
1-D, and the constant kernel's number and second moments in 2-D. Then 64 parameter sets
are solved as one batch and as 64 single solves. Last, the torch backend beside SciPy
(issue 17): 2-D 10 classes at 64 sets against 64 SciPy single solves (target 3x faster),
1-D 30 classes at 256 sets against the SciPy batch (target 2x), with the largest
disagreement between the two.

    python benchmarks/pbe_solver.py [--batch 64] [--repeat 3] [--only torch]

Everything runs on one BLAS thread, as a worker with one CPU does (hpcopt caps its pools
at ``cpus_per_worker``); benchmarks/pbe_threads.py shows what the default pool costs.

The reference solver (cell-average technique, SciPy Radau, Python loops) took 0.043 s
(1-D, 30 classes), 1.9-10.4 s (2-D, 10 classes) and 131 s (2-D, 15 classes) on this kind
of machine; the target is 20x faster on 2-D.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from hpcopt.problems.pbe.cat import DISCRETISATIONS, Discretisation
from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.solver import Model, Solver

T = np.linspace(0.0, 600.0, 11)
REFERENCE_S = {"1-D, 30 classes": "0.043", "2-D, 10 classes": "1.9-10.4", "2-D, 15 classes": "131"}
PARAMS_1D = {"corr_beta": 1.0, "alpha": 1.0, "G": 100.0, "pl_P1": 1e-4, "pl_P2": 0.5, "pl_v": 1.5}
PARAMS_2D = {
    "corr_beta": 1.0,
    "alpha_11": 1.0,
    "alpha_12": 0.5,
    "alpha_22": 0.2,
    "G": 100.0,
    "pl_P1": 1e-4,
    "pl_P2": 0.5,
    "pl_P3": 1e-4,
    "pl_P4": 0.5,
    "pl_v": 1.5,
}


def case(dim: int, classes: int) -> tuple[Grid, np.ndarray, dict[str, float]]:
    """Grid, initial numbers (1 um primaries at 1e-4 volume fraction) and parameters."""
    v0 = np.pi / 6 * 1e-18
    grid = Grid.geometric(dim, classes, 2.0, (v0,) * dim)
    n0 = np.zeros(grid.n)
    if dim == 1:
        n0[1] = 1e-4 / v0
        return grid, n0, PARAMS_1D
    n0[classes] = n0[1] = 0.5e-4 / v0
    return grid, n0, PARAMS_2D


def exponential_start(grid: Grid) -> np.ndarray:
    """n(v, 0) = exp(-v) integrated over the cells of the non-zero classes of a 1-D grid."""
    e = grid.edges[0][1:]
    return np.concatenate([[0.0], np.exp(-e[:-1]) - np.exp(-e[1:])])


def q3_error(grid: Grid, N: np.ndarray, reference: np.ndarray) -> float:
    """Largest difference of the cumulative volume distribution over classes by volume."""
    v = grid.total_volumes()
    order = np.argsort(v)

    def Q3(n: np.ndarray) -> np.ndarray:
        w = (n * v)[..., order]
        return np.cumsum(w, axis=-1) / w.sum(axis=-1, keepdims=True)

    return float(np.abs(Q3(N) - Q3(reference)).max())


def timed(solver: Solver, params: dict, repeat: int) -> tuple[float, np.ndarray]:
    best, N = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        sol = solver.solve(params, T)
        best = min(best, time.perf_counter() - start)
        assert not sol.error[0], sol.error[0]
        N = sol.N[0]
    return best, N


def single_solves(repeat: int) -> None:
    print(f"one solve, t = 0..600 s (best of {repeat})")
    print(
        f"{'case':18} {'time s':>8} {'reference s':>12} {'speed-up':>9} {'Q3 err':>9} "
        f"{'volume drift':>13} {'rhs evals':>9}"
    )
    for dim, classes in ((1, 30), (2, 10), (2, 15)):
        grid, n0, params = case(dim, classes)
        model = Model(grid, "shear", "power_law", "power_law")
        elapsed, N = timed(Solver(model, n0), params, repeat)
        tight = Solver(model, n0, rtol=1e-9, atol=1e-12).solve(params, T)
        vols = N @ grid.volumes()
        drift = float(np.abs(vols / vols[0] - 1).max())
        evals = Solver(model, n0).solve(params, T).rhs_evals
        label = f"{dim}-D, {classes} classes"
        ref = REFERENCE_S[label]
        speedup = float(ref.split("-")[0]) / elapsed
        print(
            f"{label:18} {elapsed:8.3f} {ref:>12} {speedup:8.1f}x "
            f"{q3_error(grid, N, tight.N[0]):9.1e} {drift:13.1e} {evals:9d}"
        )


def constant_kernel_accuracy() -> None:
    grid = Grid.geometric(1, 30, 2.0, (1e-3,))
    n0 = exponential_start(grid)
    t = np.array([0.0, 1.0, 5.0, 20.0])
    start = time.perf_counter()
    sol = Solver(Model(grid, "constant"), n0).solve({"corr_beta": 1.0, "alpha": 1.0}, t)
    elapsed = time.perf_counter() - start
    exact = n0.sum() / (1 + n0.sum() * t / 2)
    err = np.abs(sol.N[0].sum(axis=1) / exact - 1).max()
    print(
        f"\nconstant kernel, 1-D, 30 classes, to tau = 20: {elapsed:.3f} s, "
        f"number vs closed form {err:.1e}"
    )


def discretisations(repeat: int) -> None:
    """Fixed pivot and cell average side by side on the 1-D and 2-D cases: time and
    integrator error against a tight solve of the same discretisation; in 1-D also the
    constant kernel from an exponential start (ratio 2, 30 classes, to tau = 20), whose
    moments have closed forms."""
    print(f"\nby discretisation (best of {repeat})")
    print(
        f"{'case':18} {'discretisation':15} {'time s':>8} {'Q3 err':>9} {'volume drift':>13} "
        f"{'rhs evals':>9} {'const. M0 err':>14} {'const. M2 err':>14}"
    )
    for dim, classes in ((1, 30), (2, 10), (2, 15)):
        grid, n0, params = case(dim, classes)
        for discretisation in DISCRETISATIONS:
            model = Model(grid, "shear", "power_law", "power_law", discretisation=discretisation)
            solver = Solver(model, n0)
            elapsed, N = timed(solver, params, repeat)
            tight = Solver(model, n0, rtol=1e-9, atol=1e-12).solve(params, T)
            vols = N @ grid.volumes()
            drift = float(np.abs(vols / vols[0] - 1).max())
            evals = solver.solve(params, T).rhs_evals
            constant = constant_kernel_1d(discretisation) if dim == 1 else ("", "")
            row = (
                f"{f'{dim}-D, {classes} classes':18} {discretisation:15} {elapsed:8.3f} "
                f"{q3_error(grid, N, tight.N[0]):9.1e} {drift:13.1e} {evals:9d} "
                f"{constant[0]:>14} {constant[1]:>14}"
            )
            print(row.rstrip())


def constant_kernel_1d(discretisation: Discretisation) -> tuple[str, str]:
    """Errors of M0 and M2 against the constant kernel's closed forms, 1-D, 30 classes."""
    grid = Grid.geometric(1, 30, 2.0, (1e-3,))
    n0 = exponential_start(grid)
    t = np.array([0.0, 1.0, 5.0, 20.0])
    v = grid.total_volumes()
    constant = Model(grid, "constant", v_ref=1.0, discretisation=discretisation)
    sol = Solver(constant, n0, rtol=1e-9, atol=1e-13).solve({"corr_beta": 1.0, "alpha": 1.0}, t)
    m0, m1, m2 = sol.N[0].sum(axis=1), sol.N[0] @ v, sol.N[0] @ v**2
    m0_err = np.abs(m0 / (n0.sum() / (1 + n0.sum() * t / 2)) - 1).max()
    m2_err = np.abs(m2 / (m2[0] + m1[0] ** 2 * t) - 1).max()  # dM2/dt = M1^2
    return f"{m0_err:.1e}", f"{m2_err:.1e}"


def constant_kernel_2d() -> None:
    """The constant kernel in 2-D (ratio 2, 14 classes per component, to tau = 5) from
    particles of every composition over six classes per component, against the closed
    forms of the number and the second moments (dM20/dt = M10^2, dM11/dt = M10 M01)."""
    grid = Grid.geometric(2, 14, 2.0, (1 / 8, 1 / 8))
    u1, u2 = grid.components
    n0 = np.zeros(grid.shape)
    n0[:6, :6] = np.exp(-(u1[:6, None] + 2 * u2[None, :6]))
    n0[0, 0] = 0.0
    n0 = n0.ravel()
    t = np.array([0.0, 1.0, 2.0, 5.0])
    v1, v2 = grid.volumes().T
    print("\nconstant kernel, 2-D, 14 classes per component, to tau = 5: errors vs closed form")
    print(f"{'discretisation':15} {'time s':>8} {'M00':>9} {'M20':>9} {'M11':>9} {'M02':>9}")
    for discretisation in DISCRETISATIONS:
        model = Model(grid, "constant", v_ref=1.0, discretisation=discretisation)
        start = time.perf_counter()
        params = {"corr_beta": 1.0, "alpha_11": 1.0, "alpha_12": 1.0, "alpha_22": 1.0}
        N = Solver(model, n0, rtol=1e-9, atol=1e-13).solve(params, t).N[0]
        elapsed = time.perf_counter() - start
        m10, m01 = N[0] @ v1, N[0] @ v2
        exact = {
            "M00": (N.sum(axis=1), n0.sum() / (1 + n0.sum() * t / 2)),
            "M20": (N @ v1**2, N[0] @ v1**2 + m10**2 * t),
            "M11": (N @ (v1 * v2), N[0] @ (v1 * v2) + m10 * m01 * t),
            "M02": (N @ v2**2, N[0] @ v2**2 + m01**2 * t),
        }
        errors = " ".join(f"{np.abs(m / e - 1).max():9.1e}" for m, e in exact.values())
        print(f"{discretisation:15} {elapsed:8.3f} {errors}")


def batched(batch: int) -> None:
    print(f"\n{batch} parameter sets (+-20 % log-normal around the case's parameters)")
    print(
        f"{'case':18} {'one batch s':>12} {f'{batch} singles s':>14} {'ratio':>7} "
        f"{'max rel diff':>13}"
    )
    rng = np.random.default_rng(0)
    for dim, classes in ((1, 30), (2, 10)):
        grid, n0, params = case(dim, classes)
        solver = Solver(Model(grid, "shear", "power_law", "power_law"), n0)
        sets = {k: v * np.exp(rng.normal(0, 0.2, batch)) for k, v in params.items()}
        start = time.perf_counter()
        together = solver.solve(sets, T)
        t_batch = time.perf_counter() - start
        start = time.perf_counter()
        singles = [solver.solve({k: v[b] for k, v in sets.items()}, T) for b in range(batch)]
        t_single = time.perf_counter() - start
        alone = np.stack([s.N[0] for s in singles])
        scale = np.abs(alone).max(axis=-1, keepdims=True)
        diff = float(np.abs((together.N - alone) / scale).max())
        print(
            f"{dim}-D, {classes} classes   {t_batch:12.2f} {t_single:14.2f} "
            f"{t_single / t_batch:6.1f}x {diff:13.1e}"
        )


def torch_beside_scipy(repeat: int) -> None:
    """The torch backend (its default method, the batched BDF; CPU, one thread) beside SciPy
    BDF at rtol 1e-6: wall time of the best of ``repeat``, and the largest difference of a
    class's number over the largest class at that time and set."""
    import torch

    from hpcopt.problems.pbe.torch_solver import TorchSolver

    torch.set_num_threads(1)
    print(f"\ntorch (batched BDF) beside SciPy, CPU, one thread (best of {repeat})")
    print(
        f"{'case':18} {'sets':>5} {'SciPy as':>11} {'SciPy s':>8} {'torch s':>8} "
        f"{'speed-up':>9} {'max diff':>9} {'torch steps':>12}"
    )
    rng = np.random.default_rng(0)
    for dim, classes, batch, singles in ((2, 10, 64, True), (1, 30, 256, False)):
        grid, n0, params = case(dim, classes)
        model = Model(grid, "shear", "power_law", "power_law")
        sets = {k: v * np.exp(rng.normal(0, 0.2, batch)) for k, v in params.items()}
        solver, torch_solver = Solver(model, n0), TorchSolver(model, n0)
        t_scipy, ref = best_of(partial(scipy_solves, solver, sets, singles), repeat)
        t_torch, sol = best_of(partial(torch_solver.solve, sets, T), repeat)
        scale = np.abs(ref).max(axis=-1, keepdims=True)
        diff = float(np.abs((sol.N - ref) / scale).max())
        label = "singles" if singles else "one batch"
        print(
            f"{f'{dim}-D, {classes} classes':18} {batch:5d} {label:>11} {t_scipy:8.2f} "
            f"{t_torch:8.2f} {t_scipy / t_torch:8.2f}x {diff:9.1e} {max(sol.steps):12d}"
        )


def scipy_solves(solver: Solver, sets: dict[str, np.ndarray], singles: bool) -> np.ndarray:
    """SciPy's solution of every set, ``(B, T, n)``: one solve each, or one batch."""
    if not singles:
        return solver.solve(sets, T).N
    B = len(next(iter(sets.values())))
    return np.concatenate([solver.solve({k: v[b] for k, v in sets.items()}, T).N for b in range(B)])


def best_of(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The shortest wall time of ``repeat`` calls of ``run`` and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["torch"], help="run only the torch comparison")
    args = parser.parse_args()
    # after the imports: a BLAS library loaded later would keep its default pool
    with threadpool_limits(limits=1):
        if args.only != "torch":
            single_solves(args.repeat)
            constant_kernel_accuracy()
            discretisations(args.repeat)
            constant_kernel_2d()
            batched(args.batch)
        torch_beside_scipy(args.repeat)


if __name__ == "__main__":
    main()
