"""Exact gradients of a dPBE fit's cost with respect to its searched parameters, by autograd
through the torch solver (:mod:`.torch_solver`).

Three links, each exact: the rates' derivatives with respect to each parameter (the numpy
solver's own kernels, by the complex step: ``d rates / d p = Im rates(p + i h) / h`` with no
cancellation, so to round-off); the solve (autograd through every Rodas4 step, LU included,
on the step sequence the controller chose: the derivative of the discrete solution; Rodas4
whatever the solver's forward method); and the cost (the targets and metrics of :mod:`.psd`
and :mod:`.cost` written again in torch, checked equal to them). ``x_10``, ``x_50``,
``x_90`` interpolate linearly between cell edges, so their derivative jumps where the size
crosses an edge; ``MAE`` at a zero difference likewise. What cannot be differentiated is
said by :func:`gradient_error`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from hpcopt.problems.pbe.cost import KL_EPS, CostTerm, resolve
from hpcopt.problems.pbe.psd import Quantity
from hpcopt.problems.pbe.solver import Solution, _Rates
from hpcopt.problems.pbe.torch_solver import TorchSolver

STEP = 1e-20  # the complex step, relative to each value


def rates_with_gradient(
    solver: TorchSolver, params: Mapping[str, np.ndarray], searched: Mapping[str, torch.Tensor]
) -> _Rates:
    """The rates of ``params`` (arrays ``(B,)``) as tensors whose derivatives with respect to
    the leaf tensors ``searched`` (``(B,)`` each, named as in ``params``) are exact: the
    value is the numpy solver's, the derivative its complex-step one."""
    rates = solver.torch_rates(params)
    beta, L = rates.beta, rates.L
    for name, leaf in searched.items():
        d_beta, d_L = _complex_step(solver, params, name)
        shift = leaf - leaf.detach()  # zero, with the derivative 1
        if beta is not None:
            beta = beta + d_beta * shift[None, :]
        if L is not None:
            L = L + d_L * shift[:, None, None]
    return _Rates(B=rates.B, beta=beta, S=rates.S, F=rates.F, L=L)


def _complex_step(
    solver: TorchSolver, params: Mapping[str, np.ndarray], name: str
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``d beta / d p`` ``(P, B)`` and ``d L / d p`` ``(B, rows, n)`` for parameter ``name``."""
    value = np.asarray(params[name], dtype=float)
    h = STEP * np.where(value != 0, np.abs(value), 1.0)
    shifted = {k: np.asarray(v, dtype=complex) for k, v in params.items()}
    shifted[name] = value + 1j * h
    with warnings.catch_warnings():
        # a kernel that drops the imaginary part would give a zero derivative silently
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        rates = solver.rates(shifted)
    d_beta = None if rates.beta is None else solver.to_device(rates.beta.imag / h[None, :])
    d_L = None if rates.L is None else solver.to_device(rates.L.imag / h[:, None, None])
    return d_beta, d_L


def solve_with_gradient(
    solver: TorchSolver,
    params: Mapping[str, np.ndarray],
    searched: Mapping[str, torch.Tensor],
    t: np.ndarray,
) -> tuple[Solution, torch.Tensor]:
    """Solve ``params`` at times ``t`` (s) keeping the graph: the :class:`.Solution` and the
    number concentrations ``(B, T, n)`` (#/m^3) as a tensor differentiable in ``searched``
    (NaN rows for the members that failed)."""
    start = time.perf_counter()
    rates = rates_with_gradient(solver, params, searched)
    # Rodas4 whatever the solver's forward method: its steps are smooth in the rates, while
    # BDF's Newton iterations with a reused Jacobian are not
    y, errors, calls, steps = solver.integrate(rates, t, method="Rodas4")
    sol = solver.solution(t, y.detach().cpu().numpy(), errors, calls, steps, start)
    return sol, y * solver.n_ref


def on_cells(N: torch.Tensor, x: np.ndarray, edges: np.ndarray, quantity: Quantity) -> torch.Tensor:
    """:func:`.psd.on_cells` in torch: ``quantity`` on the cells from numbers ``(..., n)``."""
    weights = N if quantity[1] == "0" else N * N.new_tensor(x) ** 3
    total = weights.sum(dim=-1, keepdim=True)
    fractions = torch.where(total > 0, weights / torch.where(total > 0, total, 1.0), 0.0)
    if quantity.startswith("q"):
        return fractions / N.new_tensor(np.diff(edges))
    return torch.cumsum(fractions, dim=-1)


def characteristic_size(edges: np.ndarray, Q: torch.Tensor, p: float) -> torch.Tensor:
    """:func:`.psd.characteristic_size` in torch: the size where cumulatives ``Q`` at the
    ``edges`` ``(..., n + 1)`` reach ``p``, linear between the edges around it."""
    x = Q.new_tensor(edges)
    reached = p <= Q
    upper = torch.argmax(reached.to(torch.uint8), dim=-1).clamp_min(1)
    q_lo = torch.gather(Q, -1, (upper - 1)[..., None])[..., 0]
    q_hi = torch.gather(Q, -1, upper[..., None])[..., 0]
    step = q_hi - q_lo
    frac = torch.where(step > 0, (p - q_lo) / torch.where(step > 0, step, 1.0), 0.0)
    size = x[upper - 1] + frac.clamp(0.0, 1.0) * (x[upper] - x[upper - 1])
    return torch.where(reached.any(dim=-1), size, torch.nan)


def metric(model: torch.Tensor, data: torch.Tensor, name: str) -> torch.Tensor:
    """:func:`.cost.metric` in torch: over the last two axes (time, size), ``(...,)``."""
    if name == "KL":
        p, q = _as_distribution(data), _as_distribution(model)
        return torch.mean(torch.sum(p * torch.log(p / q), dim=-1), dim=-1)
    diff = model - data
    if name == "MAE":
        return torch.mean(diff.abs(), dim=(-2, -1))
    mse = torch.mean(diff**2, dim=(-2, -1))
    return torch.sqrt(mse) if name == "RMSE" else mse


def _as_distribution(rows: torch.Tensor) -> torch.Tensor:
    p = rows.clamp_min(0.0) + KL_EPS
    return p / p.sum(dim=-1, keepdim=True)


def total_cost(
    terms: Sequence[CostTerm],
    model_target: Callable[[str], torch.Tensor],
    data_target: Callable[[str], np.ndarray],
    data_quantity: Quantity,
) -> torch.Tensor:
    """:func:`.cost.total_cost` in torch, ``(B,)``: model targets as tensors, the data's
    as arrays."""
    parts = []
    for term in terms:
        target = resolve(term, data_quantity)
        model = model_target(target)
        data = model.new_tensor(data_target(target))
        if target.startswith("x_"):
            model, data = model[..., None], data[..., None]
        parts.append(term.weight * metric(model, data, term.metric))
    return torch.stack(parts).sum(dim=0)
