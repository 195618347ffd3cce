"""The GPU check's section 1 (``benchmarks/gpu_check.py``): the torch dPBE on CUDA and on
the CPU, the same parameter sets on both, compared for speed and agreement."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from gpu_check_section import CheckFailed, Result, Run

BATCHES, DRY_BATCHES = (64, 256, 1024), (8, 32)
RTOL, ATOL = 1e-6, 1e-9
AGREEMENT = 10 * RTOL
"""Largest relative difference of N between devices: the same float64 method, whose sums
run in another order and may so take other steps, stays within a few ``rtol``."""


def torch_dpbe(run: Run) -> Result:
    """Section 1: the torch dPBE on CUDA and on the CPU (see ``gpu_check``'s docstring)."""
    try:
        from hpcopt.problems.pbe.torch_solver import TorchSolver
    except ModuleNotFoundError as exc:
        if exc.name != "hpcopt.problems.pbe.torch_solver":
            raise  # the module is there but needs something missing: a failure
        print("torch dPBE: backend not available (hpcopt.problems.pbe.torch_solver missing)")
        return Result("SKIPPED", "backend not available")
    import torch
    from pbe_solver import T, case  # beside this module, on the check's path

    from hpcopt.problems.pbe.solver import Model

    grid, n0, params = case(1, 30)
    model = Model(grid, "shear", "power_law", "power_law")
    fast = "cuda" if run.cuda else "cpu"
    name = torch.cuda.get_device_name(0) if run.cuda else "the CPU (dry run)"
    print(
        f"1-D, 30 classes, t = 0..600 s, rtol {RTOL:g}; {fast} is {name}; cpu runs "
        f"{torch.get_num_threads()} torch threads"
    )
    sides = [TorchSolver(model, n0, rtol=RTOL, atol=ATOL, device=d) for d in (fast, "cpu")]
    for solver in sides:  # device start, kernels and caches before the clock
        solver.solve({k: np.full(2, v) for k, v in params.items()}, T)
    print(
        f"{'batch':>6} {fast + ' s':>9} {'sets/s':>9} {'cpu s':>9} {'sets/s':>9} "
        f"{'speed-up':>9} {'solved':>11} {'max rel diff':>13}"
    )
    rng = np.random.default_rng(0)
    problems, measured, worst, last = [], [], 0.0, ""
    for batch in BATCHES if run.cuda else DRY_BATCHES:
        if measured and measured[-1][1] * batch / measured[-1][0] > run.left():
            print(f"{batch:>6} not run: it would not finish within the {run.budget_s:g} s budget")
            break
        sets = {k: v * np.exp(rng.normal(0.0, 0.2, batch)) for k, v in params.items()}
        (a, ta), (b, tb) = (_timed(solver, sets, T) for solver in sides)
        both = a.ok & b.ok
        diff = relative_difference(np.asarray(a.N)[both], np.asarray(b.N)[both])
        worst = max(worst, diff)
        measured.append((batch, ta + tb))
        solved = f"{a.ok.sum()}/{b.ok.sum()}"
        print(
            f"{batch:>6} {ta:9.3f} {batch / ta:9.1f} {tb:9.3f} {batch / tb:9.1f} "
            f"{tb / ta:8.1f}x {solved:>11} {diff:13.1e}"
        )
        last = f"{batch} sets: {batch / ta:.0f} vs {batch / tb:.0f} sets/s ({tb / ta:.1f}x)"
        if not np.array_equal(a.ok, b.ok):
            problems.append(f"batch {batch}: members solved on one device only")
        if not both.any():
            problems.append(f"batch {batch}: no member solved on both devices")
        if diff > AGREEMENT:
            problems.append(f"batch {batch}: N differs by {diff:.1e} (> {AGREEMENT:g})")
    if problems:
        raise CheckFailed("; ".join(problems))
    return Result("PASS", f"{fast} vs cpu, max rel diff {worst:.1e}; {last}")


def _timed(solver: Any, sets: dict[str, np.ndarray], t: np.ndarray) -> tuple[Any, float]:
    start = time.perf_counter()
    solution = solver.solve(sets, t)
    return solution, time.perf_counter() - start


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest ``|a - b|`` relative to the largest class of ``b`` at the same member and
    time; ``a``, ``b``: ``(B, T, n)``. 0 for no members."""
    if not a.size:
        return 0.0
    scale = np.maximum(np.abs(b).max(axis=-1, keepdims=True), 1e-300)
    return float(np.abs((a - b) / scale).max())
