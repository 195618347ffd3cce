"""The dPBE solver: fixed-pivot discretisation, vectorised right-hand side, analytic Jacobian,
batched over parameter sets, integrated by SciPy's stiff solvers.

The state is ``y = N / N_ref`` (number concentrations over the initial total), shape
``(B, n)`` for ``B`` parameter sets integrated together as one system whose Jacobian is
block-diagonal. Agglomeration is written over the list of colliding class pairs ``p =
(i <= j)``: the collision rate ``r_p = beta_p y_i y_j`` (halved for ``i = j``) feeds one
sparse matrix ``M`` (births at the fixed pivots minus the two partners' deaths), so the
right-hand side is ``M r`` and the Jacobian ``M dr/dy`` is one sparse-times-dense product
for the whole batch. Breakage is linear: ``F (S y) - S y`` with ``F[k, q]`` the fragments
class ``q`` sends to class ``k``, integrated exactly from the fragment distribution's
antiderivatives.

Collisions whose product would lie beyond the grid's last pivot are not counted (neither
partner dies): nothing leaves the grid, so number-weighted volume is conserved to
round-off. Check that the grid is wide enough with the mass in the last class, which
:class:`Solution` reports.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.integrate import solve_ivp

from hpcopt.problems.pbe.grid import Grid, pivot_weights
from hpcopt.problems.pbe.kernels import (
    AgglomerationKernel,
    BreakageRate,
    FragmentDistribution,
    breakage_rate,
    efficiency_weights,
    fragment_moments,
    fragment_parameters,
    kernel_parameters,
    kernel_shape,
    rate_parameters,
)


@dataclass(frozen=True)
class Model:
    """What is simulated: the grid and the mechanisms (no parameter values)."""

    grid: Grid
    agglomeration: AgglomerationKernel | None = "constant"
    breakage: BreakageRate = "none"
    fragments: FragmentDistribution = "binary"
    temperature_k: float = 298.15
    viscosity_pa_s: float = 1.0e-3

    def parameters(self) -> tuple[str, ...]:
        """The names of the parameters this model needs, in a fixed order."""
        names = (
            kernel_parameters(self.agglomeration, self.grid.dim)
            + rate_parameters(self.breakage, self.grid.dim)
            + fragment_parameters(self.fragments, self.breakage)
        )
        return tuple(dict.fromkeys(names))


@dataclass
class Solution:
    """Number concentrations ``N`` (#/m^3), shape ``(B, T, n)``, at times ``t`` (s).

    ``error[b]`` is empty when parameter set ``b`` solved, else the reason it failed (its
    rows of ``N`` are then NaN). ``top_mass_fraction[b]`` is the largest share of the
    volume held by the grid's last class over time: near 1 means the grid is too short.
    """

    t: np.ndarray
    N: np.ndarray
    error: list[str]
    top_mass_fraction: np.ndarray
    rhs_evals: int = 0
    wall_time_s: float = 0.0
    steps: list[int] = field(default_factory=list)

    @property
    def ok(self) -> np.ndarray:
        return np.array([not e for e in self.error])


class _Budget(Exception):
    pass


class Solver:
    """A dPBE on one grid from one initial state, for any batch of parameter sets.

    ``n0`` is the initial number concentration per class (#/m^3, ``(n,)``). Set-up cost
    (pair lists, sparse operators, fragment integrals' geometry) is paid once here.
    """

    def __init__(
        self,
        model: Model,
        n0: np.ndarray,
        rtol: float = 1e-6,
        atol: float = 1e-9,
        method: str = "BDF",
        max_rhs_evals: int = 20000,
        max_wall_s: float = 600.0,
    ) -> None:
        self.model = model
        self.grid = model.grid
        n0 = np.asarray(n0, dtype=float)
        if n0.shape != (self.grid.n,) or not np.all(np.isfinite(n0)) or np.any(n0 < 0):
            raise ValueError(f"n0 must be {self.grid.n} finite non-negative numbers")
        self.n_ref = float(n0.sum())
        if self.n_ref <= 0:
            raise ValueError("the initial state holds no particles")
        self.y0 = n0 / self.n_ref
        self.rtol, self.method = rtol, method
        self.max_rhs_evals, self.max_wall_s = max_rhs_evals, max_wall_s
        self.volumes = self.grid.volumes()
        self.v = self.volumes.sum(axis=1)
        self.v0 = self.grid.smallest()
        volume0 = float(self.y0 @ self.v)
        # Absolute tolerance in volume share: a class matters as much as the volume it holds.
        with np.errstate(divide="ignore"):
            self.atol = np.where(self.v > 0, atol * volume0 / self.v, atol)
        if model.agglomeration is not None:
            self._build_agglomeration()
        if model.breakage != "none":
            self._build_breakage()

    # -- set-up ------------------------------------------------------------------------

    def _build_agglomeration(self) -> None:
        n, vols = self.grid.n, self.volumes
        active = np.flatnonzero(self.grid.active())
        ii, jj = np.triu_indices(len(active))
        first, second = active[ii], active[jj]
        landing = vols[first] + vols[second]
        tops = np.array([u[-1] for u in self.grid.components])
        keep = np.all(landing <= tops * (1 + 1e-12), axis=1)
        first, second, landing = first[keep], second[keep], landing[keep]
        P = len(first)
        self.first, self.second = first, second
        rows, cols, vals = (
            [np.concatenate([first, second])],
            [np.tile(np.arange(P), 2)],
            [-np.ones(2 * P)],
        )
        corners = self._corners(landing)
        for dest, weight in corners:
            nz = weight != 0
            rows.append(dest[nz])
            cols.append(np.arange(P)[nz])
            vals.append(weight[nz])
        self.M = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, P)
        )
        coo = self.M.tocoo()
        self.Z = sp.csr_matrix(
            (
                np.concatenate([coo.data, coo.data]),
                (
                    np.concatenate([coo.row * n + first[coo.col], coo.row * n + second[coo.col]]),
                    np.concatenate([coo.col, P + coo.col]),
                ),
            ),
            shape=(n * n, 2 * P),
        )
        m = self.model
        shape = kernel_shape(
            m.agglomeration,
            self.v[first],
            self.v[second],
            self.v0.min(),
            m.temperature_k,
            m.viscosity_pa_s,
        )
        self.pair_shape = np.where(first == second, 0.5, 1.0) * shape
        if self.grid.dim == 2:
            self.pair_efficiency = efficiency_weights(vols[first], vols[second])

    def _corners(self, w: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Fixed-pivot destinations of particles with component volumes ``w`` ``(m, dim)``:
        a list of (flat class index, share) per corner of the enclosing cell."""
        per_comp = []
        for c, u in enumerate(self.grid.components):
            lower, a = pivot_weights(u, w[:, c])
            upper = np.minimum(lower + 1, len(u) - 1)
            per_comp.append(((lower, a), (upper, np.where(upper > lower, 1.0 - a, 0.0))))
        if self.grid.dim == 1:
            return list(per_comp[0])
        n2 = self.grid.shape[1]
        out = []
        for i1, a1 in per_comp[0]:
            for i2, a2 in per_comp[1]:
                flat = i1 * n2 + i2
                out.append((flat, np.where(flat == 0, 0.0, a1 * a2)))
        return out

    def _build_breakage(self) -> None:
        """Geometry of the fragment integrals: for every parent class, the stretches of
        ``x = fragment / parent volume`` over which a fragment falls in one grid cell, and
        the polynomial in ``x`` (degree <= 2) that is each corner's fixed-pivot share."""
        n = self.grid.n
        parents, dests, xa, xb, coef = [], [], [], [], []
        for q in np.flatnonzero(self.grid.active()):
            a = self.volumes[q]
            cuts = [np.array([0.0, 1.0])]
            for c, u in enumerate(self.grid.components):
                if a[c] > 0:
                    cuts.append(u[(u > 0) & (u <= a[c])] / a[c])
            x = np.unique(np.clip(np.concatenate(cuts), 0.0, 1.0))
            lo, hi = x[:-1], x[1:]
            mid = 0.5 * (lo + hi)
            factors = [_linear_shares(u, a[c], mid) for c, u in enumerate(self.grid.components)]
            if self.grid.dim == 1:
                corners = [(i, c0, c1, np.zeros_like(c0)) for i, c0, c1 in factors[0]]
            else:
                n2 = self.grid.shape[1]
                corners = []
                for i1, a0, a1 in factors[0]:
                    for i2, b0, b1 in factors[1]:
                        flat = i1 * n2 + i2
                        keep = flat != 0
                        products = (a0 * b0, a0 * b1 + a1 * b0, a1 * b1)
                        corners.append((flat, *(p * keep for p in products)))
            for dest, p0, p1, p2 in corners:
                parents.append(np.full(len(mid), q))
                dests.append(dest)
                xa.append(lo)
                xb.append(hi)
                coef.append(np.stack([p0, p1, p2]))
        parents, dests = np.concatenate(parents), np.concatenate(dests)
        self.frag_x = np.stack([np.concatenate(xa), np.concatenate(xb)], axis=1)
        self.frag_coef = np.concatenate(coef, axis=1)
        E = len(parents)
        self.frag_assemble = sp.csr_matrix(
            (np.ones(E), (dests * n + parents, np.arange(E))), shape=(n * n, E)
        )

    # -- rates for a batch of parameter sets -------------------------------------------

    def rates(self, params: Mapping[str, np.ndarray]) -> _Rates:
        """Scaled pair rates, breakage rates and fragment matrices for ``(B,)`` parameters."""
        missing = [k for k in self.model.parameters() if k not in params]
        if missing:
            raise ValueError(f"missing parameter values: {', '.join(missing)}")
        p = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in params.items()}
        B = max(len(v) for v in p.values()) if p else 1
        p = {k: np.broadcast_to(v, (B,)) for k, v in p.items()}
        rates = _Rates(B=B)
        m = self.model
        if m.agglomeration is not None:
            if self.grid.dim == 1:
                alpha = p["alpha"][:, None]
            else:
                a = np.stack([p["alpha_11"], p["alpha_12"], p["alpha_22"]], axis=1)
                alpha = a @ self.pair_efficiency.T
            scale = p["corr_beta"][:, None] * self.n_ref
            if m.agglomeration == "shear":
                scale = scale * p["G"][:, None]
            rates.beta = scale * alpha * self.pair_shape[None, :]
        if m.breakage != "none":
            rates.S = breakage_rate(m.breakage, self.volumes, self.v0, p) * self.grid.active()
            moments = fragment_moments(m.fragments, self.frag_x, p)  # (3, B|1, E, 2)
            delta = moments[..., 1] - moments[..., 0]
            shares = np.einsum(
                "mbe,me->be", np.broadcast_to(delta, (3, B, *delta.shape[2:])), self.frag_coef
            )
            n = self.grid.n
            rates.F = (self.frag_assemble @ shares.T).T.reshape(B, n, n)
        return rates

    def rhs(self, y: np.ndarray, rates: _Rates) -> np.ndarray:
        """``dy/dt`` for states ``y`` of shape ``(B, n)``."""
        out = np.zeros_like(y)
        if rates.beta is not None:
            r = rates.beta * y[:, self.first] * y[:, self.second]
            out += (self.M @ r.T).T
        if rates.S is not None:
            sy = rates.S * y
            out += np.matmul(rates.F, sy[:, :, None])[:, :, 0] - sy
        return out

    def jacobian(self, y: np.ndarray, rates: _Rates) -> np.ndarray:
        """``d rhs / d y`` per parameter set, shape ``(B, n, n)``."""
        B, n = y.shape
        jac = np.zeros((B, n, n))
        if rates.beta is not None:
            X = np.concatenate(
                [rates.beta * y[:, self.second], rates.beta * y[:, self.first]], axis=1
            )
            jac += (self.Z @ X.T).T.reshape(B, n, n)
        if rates.S is not None:
            jac += rates.F * rates.S[:, None, :]
            jac[:, np.arange(n), np.arange(n)] -= rates.S
        return jac

    # -- integration -------------------------------------------------------------------

    def solve(self, params: Mapping[str, np.ndarray | float], t: np.ndarray) -> Solution:
        """Integrate every parameter set from the initial state to the times ``t`` (s).

        Parameter sets are integrated together; when that fails, each is re-run alone so
        that one diverging set fails only itself.
        """
        t = np.asarray(t, dtype=float)
        if t.ndim != 1 or len(t) == 0 or t[0] < 0 or np.any(np.diff(t) <= 0):
            raise ValueError("times must be a non-empty increasing sequence from t >= 0")
        rates = self.rates(params)
        start = time.perf_counter()
        y, error, evals, steps = self._integrate(rates, t)
        if rates.B > 1 and error:
            parts = [self._integrate(rates.select(b), t) for b in range(rates.B)]
            y = np.concatenate([p[0] for p in parts])
            errors = [p[1] for p in parts]
            evals += sum(p[2] for p in parts)
            steps = [p[3][0] for p in parts]
        else:
            errors = [error] * rates.B
        errors = [e or self._check(y[b]) for b, e in enumerate(errors)]
        N = np.where(np.array([not e for e in errors])[:, None, None], y * self.n_ref, np.nan)
        volume = np.where(np.isfinite(y), y, 0.0) * self.v
        share = volume[..., -1] / np.maximum(volume.sum(axis=-1), 1e-300)
        return Solution(
            t=t,
            N=N,
            error=errors,
            top_mass_fraction=share.max(axis=-1),
            rhs_evals=evals,
            wall_time_s=time.perf_counter() - start,
            steps=steps,
        )

    def _integrate(self, rates: _Rates, t: np.ndarray) -> tuple[np.ndarray, str, int, list[int]]:
        B, n = rates.B, self.grid.n
        counter = {"rhs": 0}
        deadline = time.monotonic() + self.max_wall_s

        def fun(_t: float, flat: np.ndarray) -> np.ndarray:
            counter["rhs"] += 1
            if counter["rhs"] > self.max_rhs_evals or time.monotonic() > deadline:
                raise _Budget
            return self.rhs(flat.reshape(B, n), rates).ravel()

        def jac(_t: float, flat: np.ndarray) -> np.ndarray | sp.csc_matrix:
            blocks = self.jacobian(flat.reshape(B, n), rates)
            return blocks[0] if B == 1 else _block_diagonal(blocks)

        y0 = np.tile(self.y0, B)
        t_span = (0.0, float(t[-1]))
        try:
            if t[-1] == 0.0:
                return np.broadcast_to(self.y0, (B, 1, n)).copy(), "", 0, [0]
            with np.errstate(all="ignore"):
                sol = solve_ivp(
                    fun,
                    t_span,
                    y0,
                    method=self.method,
                    t_eval=t,
                    jac=jac,
                    rtol=self.rtol,
                    atol=np.tile(self.atol, B),
                )
        except _Budget:
            why = (
                f"the solver gave up after {self.max_rhs_evals} right-hand-side evaluations "
                f"or {self.max_wall_s:g} s (a stiff or diverging parameter set)"
            )
            return np.full((B, len(t), n), np.nan), why, counter["rhs"], [0]
        except (RuntimeError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            # SuperLU and LAPACK refuse singular or non-finite Jacobians this way
            why = f"the integrator failed: {type(exc).__name__}: {exc}"
            return np.full((B, len(t), n), np.nan), why, counter["rhs"], [0]
        if sol.status != 0 or sol.y.shape[1] != len(t):
            y = np.full((B, len(t), n), np.nan)
            return y, f"the integrator failed: {sol.message}", counter["rhs"], [0]
        y = sol.y.reshape(B, n, len(t)).transpose(0, 2, 1)
        return y, "", counter["rhs"], [len(sol.t)]

    def _check(self, y: np.ndarray) -> str:
        """Why a solved trajectory ``(T, n)`` cannot be trusted, or ``""``."""
        if not np.all(np.isfinite(y)):
            return "the solution is not finite"
        volume = y @ self.v
        if y.min() < -1e-6 * y.sum(axis=1).max():
            return f"the solution went negative (min {y.min() * self.n_ref:.3g} /m^3)"
        drift = abs(volume[-1] - volume[0]) / volume[0]
        if drift > 1e-4:
            return f"total particle volume drifted by {drift:.2g} (integrator inaccuracy)"
        return ""


@dataclass
class _Rates:
    B: int
    beta: np.ndarray | None = None
    S: np.ndarray | None = None
    F: np.ndarray | None = None

    def select(self, b: int) -> _Rates:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[b : b + 1]

        return _Rates(B=1, beta=pick(self.beta), S=pick(self.S), F=pick(self.F))


_BLOCK_PATTERNS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _block_diagonal(blocks: np.ndarray) -> sp.csc_matrix:
    """A block-diagonal CSC matrix from dense blocks ``(B, n, n)`` (pattern cached)."""
    B, n, _ = blocks.shape
    if (B, n) not in _BLOCK_PATTERNS:
        rows = (np.arange(B)[:, None, None] * n + np.arange(n)[None, :, None]).repeat(n, axis=2)
        indices = rows.transpose(0, 2, 1).ravel()
        indptr = np.arange(0, B * n * n + 1, n)
        _BLOCK_PATTERNS[(B, n)] = (indices, indptr)
    indices, indptr = _BLOCK_PATTERNS[(B, n)]
    data = blocks.transpose(0, 2, 1).ravel()
    return sp.csc_matrix((data, indices, indptr), shape=(B * n, B * n))


def _linear_shares(
    pivots: np.ndarray, a: float, x: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The fixed-pivot shares of a fragment of component volume ``x * a`` as linear
    functions of ``x`` on the stretch around each ``x``: ``[(pivot, c0, c1), ...]`` with
    share ``c0 + c1 x``, for the lower and the upper pivot of the enclosing cell."""
    if a == 0:
        return [(np.zeros(len(x), dtype=int), np.ones_like(x), np.zeros_like(x))]
    lower, _ = pivot_weights(pivots, x * a)
    upper = np.minimum(lower + 1, len(pivots) - 1)
    inside = upper > lower
    below = x * a < pivots[0]  # only on 1-D grids: counted in class 0 by volume
    span = np.where(inside, pivots[upper] - pivots[lower], 1.0)
    c0 = np.where(below, 0.0, np.where(inside, pivots[upper] / span, 1.0))
    c1 = np.where(below, a / max(pivots[0], a * 1e-300), np.where(inside, -a / span, 0.0))
    has_upper = inside & ~below
    return [
        (lower, c0, c1),
        (upper, np.where(has_upper, 1.0 - c0, 0.0), np.where(has_upper, -c1, 0.0)),
    ]
