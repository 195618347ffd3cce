"""The dPBE solver in torch: the numpy :class:`.solver.Solver`'s operators on a torch device,
a whole batch of parameter sets integrated at once, each member stepped as if alone.

The discretisation is not written again here: :class:`TorchSolver` is a :class:`.Solver`
whose pair operator (``M``, ``Z``) and cell-average placement (:mod:`.cat`,
:mod:`.cat2d`) are converted to tensors, so its inherited ``rhs`` and ``jacobian`` run the
same code on ``(B, n)`` tensors; rates (kernels, breakage rates, fragment matrices) are
the numpy solver's, converted.

Two kinds of integrator. ``BDF`` (the default, :mod:`.torch_bdf`) is SciPy's variable-order
BDF run on every member at once: two or three right-hand sides a step, the Jacobian and
Newton matrix reused across steps; a member alone takes SciPy's steps. The Rosenbrock
methods, Rodas4 (Hairer & Wanner 1996: six stages, order 4 with an embedded order-3
solution) and Rodas3 (Sandu et al. 1997: four stages, order 3), both L-stable and stiffly
accurate, take one batched LU of ``I / (gamma h) - J`` and six (four) right-hand sides a
step, and land on every output time; their steps are smooth in the rates, so they are the
ones autograd differentiates (:mod:`.gradient` uses Rodas4). On the dPBE at rtol 1e-6
Rodas4 takes about a third of Rodas3's steps.

Each member of the batch has its own time, step size and error control (the RMS over its
classes of the error over ``atol + rtol |y|``, SciPy's norm) and fails alone: a budget
overrun (right-hand-side evaluations or wall time), a non-finite right-hand side, a step
size below round-off, then the numpy solver's checks (negative, non-finite, volume
drift). The step sequence is chosen without gradients, so autograd through a Rosenbrock
solve differentiates the discrete scheme on that sequence.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from hpcopt.problems.pbe.cat import CellAverage
from hpcopt.problems.pbe.cat2d import BilinearCellAverage
from hpcopt.problems.pbe.operators import PairOperator
from hpcopt.problems.pbe.solver import (
    Model,
    Solution,
    Solver,
    SparseBreakage,
    _Rates,
    checked_times,
)
from hpcopt.problems.pbe.torch_bdf import BatchedBDF


@dataclass(frozen=True)
class Rosenbrock:
    """A Rosenbrock method for an autonomous system, in the form of Hairer & Wanner and KPP:
    stage ``i`` solves ``(I / (gamma h) - J) K_i = f(y + sum_j A_ij K_j) + sum_j C_ij K_j / h``
    (``f`` evaluated again only where ``new_f[i]``); ``y_new = y + sum_j M_j K_j`` and the
    error estimate is ``sum_j E_j K_j``, of local order ``order``. ``A`` and ``C`` hold the
    rows below the diagonal."""

    name: str
    gamma: float
    A: tuple[tuple[float, ...], ...]
    C: tuple[tuple[float, ...], ...]
    M: tuple[float, ...]
    E: tuple[float, ...]
    new_f: tuple[bool, ...]
    order: int

    @property
    def rhs_per_step(self) -> int:
        return sum(self.new_f)


# Sandu et al. (1997): 4 stages, order 3 (embedded 2), L-stable, stiffly accurate
RODAS3 = Rosenbrock(
    "Rodas3",
    gamma=0.5,
    A=((), (0.0,), (2.0, 0.0), (2.0, 0.0, 1.0)),
    C=((), (4.0,), (1.0, -1.0), (1.0, -1.0, -8.0 / 3.0)),
    M=(2.0, 0.0, 1.0, 1.0),
    E=(0.0, 0.0, 0.0, 1.0),
    new_f=(True, False, True, True),
    order=3,
)
# Hairer & Wanner (1996): 6 stages, order 4 (embedded 3), L-stable, stiffly accurate
_A6 = (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950)
RODAS4 = Rosenbrock(
    "Rodas4",
    gamma=0.25,
    A=(
        (),
        (1.544,),
        (0.9466785280815826, 0.2557011698983284),
        (3.314825187068521, 2.896124015972201, 0.9986419139977817),
        _A6,
        (*_A6, 1.0),
    ),
    C=(
        (),
        (-5.6688,),
        (-2.430093356833875, -0.2063599157091915),
        (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
        (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160),
        (
            8.083246795921522,
            -7.981132988064893,
            -31.52159432874371,
            16.31930543123136,
            -6.058818238834054,
        ),
    ),
    M=(*_A6, 1.0, 1.0),
    E=(0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    new_f=(True,) * 6,
    order=4,
)
ROSENBROCK = {m.name: m for m in (RODAS3, RODAS4)}
METHODS = (*ROSENBROCK, "BDF")
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 6.0
STEP_TOO_SMALL = "the integrator failed: Required step size is less than spacing between numbers."
NOT_FINITE = "the integrator failed: the right-hand side is not finite at the start"
# the numpy solver's words for a Newton matrix LAPACK cannot invert
SINGULAR = "the integrator failed: LinAlgError: Singular matrix"


class TorchSolver(Solver):
    """A dPBE on one grid from one initial state, solved in torch on ``device`` (float64).

    The same arguments and :class:`.Solution` as :class:`.Solver`, but ``method`` is one
    of ``METHODS`` (``BDF``, the fastest on the CPU, or ``Rodas4``/``Rodas3``); ``rhs``
    and ``jacobian`` take tensors ``(B, n)`` on the device.
    """

    members_step_alone = True

    def __init__(
        self,
        model: Model,
        n0: np.ndarray,
        rtol: float = 1e-6,
        atol: float = 1e-9,
        device: str | torch.device = "cpu",
        max_rhs_evals: int = 20000,
        max_wall_s: float = 600.0,
        method: str = "BDF",
    ) -> None:
        super().__init__(model, n0, rtol, atol, "BDF", max_rhs_evals, max_wall_s)
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        self.device = torch.device(device)
        if hasattr(self, "pairs"):
            self.pairs = PairOperator(
                self.to_device(self.pairs.first),
                self.to_device(self.pairs.second),
                self._sparse(self.pairs.M),
                self._sparse(self.pairs.Z),
            )
        if self.cell_average:
            self.cells = self._placement(self.cells)
        self.y0_t = self.to_device(self.y0)
        self.atol_t = self.to_device(self.atol)

    def to_device(self, a: np.ndarray) -> torch.Tensor:
        a = np.asarray(a)
        dtype = torch.float64 if a.dtype.kind == "f" else None
        return torch.as_tensor(a, dtype=dtype, device=self.device)

    def _sparse(self, a: sp.spmatrix) -> torch.Tensor:
        coo = sp.coo_matrix(a)
        index = torch.as_tensor(np.stack([coo.row, coo.col]), device=self.device)
        values = torch.as_tensor(coo.data, dtype=torch.float64, device=self.device)
        coo = torch.sparse_coo_tensor(
            index, values, coo.shape, check_invariants=True, device=self.device
        )
        with warnings.catch_warnings():
            # CSR products are the fastest sparse ones here; torch calls CSR "beta" once
            warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
            return coo.coalesce().to_sparse_csr()

    def _placement(
        self, cells: CellAverage | BilinearCellAverage
    ) -> CellAverage | BilinearCellAverage:
        if isinstance(cells, BilinearCellAverage):
            return BilinearCellAverage(tuple(self._placement(a) for a in cells.axes))
        arrays = {
            f.name: self.to_device(getattr(cells, f.name))
            for f in dataclasses.fields(cells)
            if isinstance(getattr(cells, f.name), np.ndarray)
        }
        return dataclasses.replace(cells, **arrays)

    def torch_rates(self, params: Mapping[str, np.ndarray | float]) -> _Rates:
        """The numpy solver's :meth:`.Solver.rates` as tensors on the device."""
        rates = self.rates(params)

        def convert(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None else self.to_device(a)

        breakage = rates.breakage
        if breakage is not None:
            breakage = SparseBreakage(
                self.to_device(breakage.values),
                self.to_device(breakage.cols),
                self._sparse(breakage.add),
            )
        return _Rates(
            B=rates.B,
            beta=convert(rates.beta),
            S=convert(rates.S),
            F=convert(rates.F),
            L=convert(rates.L),
            breakage=breakage,
        )

    def solve(self, params: Mapping[str, np.ndarray | float], t: np.ndarray) -> Solution:
        """Integrate every parameter set from the initial state to the times ``t`` (s):
        one batch, each member with its own steps and its own failure."""
        t = checked_times(t)
        start = time.perf_counter()
        rates = self.torch_rates(params)
        with torch.no_grad():
            y, errors, calls, steps = self.integrate(rates, t)
        return self.solution(t, y.cpu().numpy(), errors, calls, steps, start)

    def integrate(
        self, rates: _Rates, t: np.ndarray, method: str | None = None
    ) -> tuple[torch.Tensor, list[str], int, list[int]]:
        """Step every member of the batch to each of the times ``t`` (s) with ``method``
        (the solver's by default). Returns the scaled states ``(B, T, n)`` (NaN for a
        member that failed), each member's failure (``""`` when it ran through), the number
        of batched right-hand-side evaluations and each member's accepted steps. With a
        Rosenbrock method, differentiable in ``rates`` (the step sizes are not)."""
        method = method or self.method
        if method == "BDF":
            return self._integrate_bdf(rates, t)
        scheme = ROSENBROCK[method]
        B, n, T = rates.B, self.grid.n, len(t)
        dev, f64 = self.device, torch.float64
        times = torch.as_tensor(t, dtype=f64, device=dev)
        deadline = time.monotonic() + self.max_wall_s
        y = self.y0_t.expand(B, n).clone()
        first = int(np.searchsorted(t, 0.0, side="right"))  # outputs at t = 0: the start
        out: list[torch.Tensor] = [y if k < first else y.new_full((B, n), np.nan) for k in range(T)]
        errors = [""] * B
        now = torch.zeros(B, dtype=f64, device=dev)
        k_next = torch.full((B,), first, dtype=torch.long, device=dev)
        evals = np.zeros(B, dtype=int)
        steps = np.zeros(B, dtype=int)
        active = np.full(B, first < T)
        h = self._first_step(rates, y, times[-1])
        for b in np.flatnonzero(active & ~np.isfinite(h.cpu().numpy())):
            errors[b], active[b] = NOT_FINITE, False
        calls = 1
        while active.any():
            if time.monotonic() > deadline:
                for b in np.flatnonzero(active):
                    errors[b] = self.budget_reason()
                break
            idx_np = np.flatnonzero(active)
            idx = torch.as_tensor(idx_np, device=dev)
            sub = rates if len(idx_np) == B else rates.members(idx)
            ya, ta, proposed = y[idx], now[idx], h[idx]
            gap = times[k_next[idx]] - ta
            landing = proposed >= gap
            step = torch.where(landing, gap, proposed)
            y_new, error, singular = self._step(scheme, ya, sub, step)
            calls += scheme.rhs_per_step
            evals[idx_np] += scheme.rhs_per_step
            with torch.no_grad():
                scale = self.atol_t + self.rtol * torch.maximum(ya.abs(), y_new.abs())
                norm = torch.sqrt(torch.mean((error / scale) ** 2, dim=1))
                ok = torch.isfinite(norm) & (norm <= 1.0)
                factor = SAFETY * norm.clamp_min(1e-10) ** (-1.0 / scheme.order)
                factor = torch.where(torch.isfinite(factor), factor, MIN_FACTOR)
                grow = factor.clamp(MIN_FACTOR, MAX_FACTOR)
                # a rejected step never grows; an accepted one that landed keeps the step
                # the controller proposed before it was cut to the output time
                h_next = torch.where(ok, step * grow, step * grow.clamp_max(1.0))
                h_next = torch.where(ok & landing, torch.maximum(h_next, proposed), h_next)
                h[idx] = h_next
                now[idx] = torch.where(ok, ta + step, ta)
            y = y.index_put((idx,), torch.where(ok[:, None], y_new, ya))
            arrived = ok & landing
            for k in torch.unique(k_next[idx][arrived]).tolist():
                hit = torch.zeros(B, dtype=torch.bool, device=dev)
                hit[idx[arrived & (k_next[idx] == k)]] = True
                out[k] = torch.where(hit[:, None], y, out[k])
            with torch.no_grad():
                k_next[idx] += arrived.long()
            ok_np, arrived_np = ok.cpu().numpy(), arrived.cpu().numpy()
            steps[idx_np] += ok_np
            done = idx_np[arrived_np & (k_next[idx].cpu().numpy() == T)]
            active[done] = False
            tiny = step.cpu().numpy() <= 16 * np.spacing(ta.cpu().numpy().clip(1e-300))
            for b in idx_np[~ok_np & tiny]:
                errors[b], active[b] = STEP_TOO_SMALL, False
            for b in idx_np[singular.cpu().numpy()]:
                errors[b], active[b] = SINGULAR, False
            for b in np.flatnonzero(active & (evals > self.max_rhs_evals)):
                errors[b], active[b] = self.budget_reason(), False
        states = torch.stack(out, dim=1)
        failed = torch.as_tensor([bool(e) for e in errors], device=dev)
        states = torch.where(failed[:, None, None], np.nan, states)
        return states, errors, calls, steps.tolist()

    def _integrate_bdf(
        self, rates: _Rates, t: np.ndarray
    ) -> tuple[torch.Tensor, list[str], int, list[int]]:
        """:meth:`integrate` by the batched BDF (:mod:`.torch_bdf`), without gradients."""
        B, n, T = rates.B, self.grid.n, len(t)
        y0 = self.y0_t.expand(B, n).clone()
        if t[-1] <= 0.0:
            return y0[:, None].expand(B, T, n).clone(), [""] * B, 0, [0] * B

        def select(members: torch.Tensor) -> tuple[Callable, Callable]:
            # the Jacobian's rates are picked from the whole batch's when it is needed (a
            # few times a solve), so a shrinking working set copies only what rhs reads
            sub = rates if len(members) == B else rates.for_rhs(members)
            return (
                lambda y: self.rhs(y, sub),
                lambda y, which: self.jacobian(y, rates.members(members[which])),
            )

        bdf = BatchedBDF(self.rtol, self.atol_t, self.max_rhs_evals)
        failures = {"not_finite": NOT_FINITE, "too_small": STEP_TOO_SMALL, "singular": SINGULAR}
        deadline = time.monotonic() + self.max_wall_s
        with torch.no_grad():
            return bdf.run(select, y0, t, deadline, self.budget_reason(), failures)

    def _first_step(self, rates: _Rates, y: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """Each member's first step (s), ``(B,)``: 1 % of the time the start state's rate
        of change takes to move it by its own size (SciPy's first estimate); NaN where that
        rate is not finite."""
        with torch.no_grad():
            f0 = self.rhs(y, rates)
            scale = self.atol_t + self.rtol * y.abs()
            d0 = torch.sqrt(torch.mean((y / scale) ** 2, dim=1))
            d1 = torch.sqrt(torch.mean((f0 / scale) ** 2, dim=1))
            h = torch.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
            h = torch.minimum(h, end)
            return torch.where(torch.isfinite(d1), h, np.nan)

    def _step(
        self, m: Rosenbrock, y: torch.Tensor, rates: _Rates, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of method ``m`` of sizes ``h`` ``(B,)`` from states ``y`` ``(B, n)``:
        the new states and the embedded error estimate, both ``(B, n)``, and whether each
        member's matrix ``I / (gamma h) - J`` was singular ``(B,)``."""
        W = -self.jacobian(y, rates)
        W.diagonal(dim1=1, dim2=2).add_((1.0 / (m.gamma * h))[:, None])
        LU, pivots, info = torch.linalg.lu_factor_ex(W)
        inv_h = (1.0 / h)[:, None]
        K: list[torch.Tensor] = []
        for i in range(len(m.M)):
            if m.new_f[i]:
                f = self.rhs(y + sum(a * k for a, k in zip(m.A[i], K) if a), rates)
            g = f + sum(c * k for c, k in zip(m.C[i], K) if c) * inv_h
            K.append(torch.linalg.lu_solve(LU, pivots, g[..., None])[..., 0])
        y_new = y + sum(b * k for b, k in zip(m.M, K) if b)
        return y_new, sum(e * k for e, k in zip(m.E, K) if e), info != 0


def default_device() -> torch.device:
    """The worker's GPU where torch sees one (the first it is given), else its CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
