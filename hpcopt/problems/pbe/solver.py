"""The dPBE solver: fixed-pivot or cell-average discretisation, vectorised right-hand side,
analytic Jacobian, batched over parameter sets, integrated by SciPy's stiff solvers.

The state is ``y = N / N_ref`` (number concentrations over the initial total), shape
``(B, n)`` for ``B`` parameter sets integrated together as one system whose Jacobian is
block-diagonal. Agglomeration is written over the list of colliding class pairs ``p =
(i <= j)``: the collision rate ``r_p = beta_p y_i y_j`` (halved for ``i = j``) feeds one
sparse matrix ``M`` (births at the fixed pivots minus the two partners' deaths), so the
right-hand side is ``M r`` and the Jacobian ``M dr/dy`` is one sparse-times-dense product
for the whole batch. Breakage is linear: ``F (S y) - S y`` with ``F[k, q]`` the fragments
class ``q`` sends to class ``k``, integrated exactly from the fragment distribution's
antiderivatives. Both operators are built once per grid (:mod:`.operators`).

With the cell-average technique (``Model.discretisation = "cell_average"``, :mod:`.cat`,
:mod:`.cat2d`) the same two operators write the deaths and losses directly and, in ``(1 +
dim) n`` more rows, the number and each component's volume born in each cell (collisions
and fragments pooled); each cell's births are then placed at their mean on two pivots
(four in 2-D, bilinear). The Jacobian is the chain rule through that placement.

Collisions whose product would lie beyond the grid's ``product_limit`` (its last pivot,
or with PSD_opt's layout its last cell) are not counted (neither partner dies): nothing
leaves the grid, so number-weighted volume is conserved to round-off. Particles born
below the first non-zero pivot go, by number, to the grid's zero-volume fines class
(:mod:`.grid`), so the number of particles is kept too. Check that the grid is wide
enough at the top and fine enough at the bottom with the volume in its top classes and
the number in its fines class, which :class:`Solution` reports.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from hpcopt.problems.pbe.cat import (
    DISCRETISATIONS,
    CellAverage,
    Discretisation,
    cell_average_fragments,
    cell_average_pairs,
    namespace,
)
from hpcopt.problems.pbe.cat2d import BilinearCellAverage
from hpcopt.problems.pbe.fragments2d import SpreadFragmentOperator
from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.integrate import block_diagonal, march
from hpcopt.problems.pbe.kernels import (
    V_REF,
    AgglomerationKernel,
    BreakageRate,
    FragmentComposition,
    FragmentDistribution,
    SizeCorrection,
    breakage_rate,
    efficiency_weights,
    kernel_shape,
    parameter_array,
    parameter_names,
    rate_dimension_error,
    spread_error,
)
from hpcopt.problems.pbe.operators import FragmentOperator, PairOperator


@dataclass(frozen=True)
class Model:
    """What is simulated: the grid, the mechanisms and how they are discretised (no
    parameter values). ``discretisation``: ``"fixed_pivot"`` (Kumar & Ramkrishna 1996, 1-D
    and 2-D) or ``"cell_average"`` (Kumar et al. 2006, 2008; 1-D and 2-D).
    ``fragment_composition`` (2-D): fragments keep their ``"parent"``'s composition, or
    ``"spread"`` over both components as in PSD_opt (:mod:`.fragments2d`).
    ``size_correction`` multiplies every agglomeration kernel (None: no correction)."""

    grid: Grid
    agglomeration: AgglomerationKernel | None = "constant"
    breakage: BreakageRate = "none"
    fragments: FragmentDistribution = "binary"
    temperature_k: float = 298.15
    viscosity_pa_s: float = 1.0e-3
    v_ref: float = V_REF  # m^3: the reference volume of dimensionless kernels and rates
    discretisation: Discretisation = "fixed_pivot"
    fragment_composition: FragmentComposition = "parent"
    size_correction: SizeCorrection | None = None

    def __post_init__(self) -> None:
        if error := rate_dimension_error(self.breakage, self.grid.dim):
            raise ValueError(error)
        if self.discretisation not in DISCRETISATIONS:
            raise ValueError(
                f"discretisation must be one of {', '.join(DISCRETISATIONS)}, "
                f"got {self.discretisation!r}"
            )
        if self.fragment_composition == "spread" and self.breakage != "none":
            error = spread_error(self.grid.dim, self.fragments)
            if error:
                raise ValueError(error)

    def parameters(self) -> tuple[str, ...]:
        """The names of the parameters this model needs, in a fixed order."""
        return parameter_names(self.agglomeration, self.breakage, self.fragments, self.grid.dim)


@dataclass
class Solution:
    """Number concentrations ``N`` (#/m^3), shape ``(B, T, n)``, at times ``t`` (s).

    ``error[b]`` is empty when parameter set ``b`` solved, else the reason it failed (its
    rows of ``N`` are then NaN). ``top_mass_fraction[b]`` is the largest share of the
    volume held by the grid's top classes over time (those whose particles cannot merge
    with their equals, :meth:`.grid.Grid.on_top_edge`): near 1 means the grid is too short.
    ``fines_fraction[b]`` is the largest share of the particles' number in the zero-volume
    fines class over time: what a grid whose first pivot is too large loses from its size
    distributions.
    """

    t: np.ndarray
    N: np.ndarray
    error: list[str]
    top_mass_fraction: np.ndarray
    fines_fraction: np.ndarray
    rhs_evals: int = 0
    wall_time_s: float = 0.0
    steps: list[int] = field(default_factory=list)

    @property
    def ok(self) -> np.ndarray:
        return np.array([not e for e in self.error])


# the largest share of non-zero entries of the breakage operator read as a sparse one
SPARSE_BREAKAGE_DENSITY = 0.25


class _Budget(Exception):
    pass


class Solver:
    """A dPBE on one grid from one initial state, for any batch of parameter sets.

    ``n0`` is the initial number concentration per class (#/m^3, ``(n,)``). Set-up cost
    (pair lists, sparse operators, fragment integrals' geometry) is paid once here.
    """

    # whether each parameter set of a batch has its own steps (then a batch of any size
    # costs about its hardest member); SciPy steps a batch as one system
    members_step_alone = False

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
        volume0 = float(self.y0 @ self.v)
        if volume0 <= 0:
            raise ValueError("the initial state holds only fines (no particle of any volume)")
        # Absolute tolerance in volume share: a class matters as much as the volume it holds.
        with np.errstate(divide="ignore"):
            self.atol = np.where(self.v > 0, atol * volume0 / self.v, atol)
        self.cell_average = model.discretisation == "cell_average"
        # rows of the gains (what the operators write): the rates of change, and with the
        # cell average the number and each component's volume born in each cell after them
        n = self.grid.n
        self.rows = (2 + self.grid.dim) * n if self.cell_average else n
        self.fragment_rows = slice(n, self.rows) if self.cell_average else slice(0, n)
        if self.cell_average and self.grid.dim == 1:
            self.cells = CellAverage.build(self.grid.components[0])
        elif self.cell_average:
            self.cells = BilinearCellAverage.build(self.grid)
        if model.agglomeration is not None:
            build_pairs = cell_average_pairs if self.cell_average else PairOperator.build
            self.pairs = build_pairs(self.grid)
            m = model
            shape = kernel_shape(
                m.agglomeration,
                self.v[self.pairs.first],
                self.v[self.pairs.second],
                m.v_ref,
                m.temperature_k,
                m.viscosity_pa_s,
            )
            if m.size_correction is not None:
                shape = shape * m.size_correction.factor(
                    self.v[self.pairs.first], self.v[self.pairs.second]
                )
            self.pair_shape = np.where(self.pairs.first == self.pairs.second, 0.5, 1.0) * shape
            if self.grid.dim == 2:
                self.pair_efficiency = efficiency_weights(
                    self.volumes[self.pairs.first], self.volumes[self.pairs.second]
                )
        if model.breakage != "none":
            if model.fragment_composition == "spread":
                self.fragments = SpreadFragmentOperator.build(self.grid, self.cell_average)
            elif self.cell_average:
                self.fragments = cell_average_fragments(self.grid)
            else:
                self.fragments = FragmentOperator.build(self.grid)

    # -- rates for a batch of parameter sets -------------------------------------------

    def rates(self, params: Mapping[str, np.ndarray]) -> _Rates:
        """Scaled pair rates, breakage rates and fragment matrices for ``(B,)`` parameters."""
        missing = [k for k in self.model.parameters() if k not in params]
        if missing:
            raise ValueError(f"missing parameter values: {', '.join(missing)}")
        p = {k: np.atleast_1d(parameter_array(v)) for k, v in params.items()}
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
            # pair-major (P, B): gathering a state's partners then copies whole rows
            rates.beta = np.ascontiguousarray((scale * alpha * self.pair_shape[None, :]).T)
        if m.breakage != "none":
            rates.S = breakage_rate(m.breakage, self.volumes, m.v_ref, p) * self.grid.active()
            rates.F = self.fragments.matrices(m.fragments, p, B)
            rates.L = self.breakage_operator(rates.S, rates.F)
            rates.breakage = self.sparse_breakage(rates.L)
        return rates

    def breakage_operator(self, S: np.ndarray, F: np.ndarray) -> np.ndarray:
        """Breakage is linear in the state: its gains are ``L @ y``, ``L`` ``(B, rows, n)``
        from the breakage rates ``S`` ``(B, n)`` and fragment matrices ``F``: the
        fragments born (``F S``) and, in the first ``n`` rows, the parents lost (``-S``)."""
        B, n = S.shape
        L = np.zeros((B, self.rows, n), dtype=np.result_type(S, F))
        L[:, self.fragment_rows] = F * S[:, None, :]
        diagonal = np.arange(n)
        L[:, diagonal, diagonal] -= S
        return L

    def sparse_breakage(self, L: np.ndarray) -> SparseBreakage | None:
        """``L`` at the entries where any member's is non-zero, for a batch whose ``L``
        is at most a quarter non-zero: its gains ``L @ y`` then read that fraction of
        ``L`` (15 % in 2-D with 10 classes a side, 6 % with the cell average), summed into
        the rows by a sparse product as the collisions are. A denser ``L`` (half of it in
        1-D) is faster read whole, and so is one member's, where the sparse product's
        fixed cost is most of a right-hand side (measured, benchmarks/pbe_solver.py)."""
        rows, cols = np.nonzero((L != 0).any(axis=0))
        nnz = len(rows)
        if L.shape[0] == 1 or nnz > SPARSE_BREAKAGE_DENSITY * L.shape[1] * L.shape[2]:
            return None
        add = sp.csr_matrix((np.ones(nnz), (rows, np.arange(nnz))), shape=(self.rows, nnz))
        return SparseBreakage(np.ascontiguousarray(L[:, rows, cols].T), cols, add)

    def rhs(self, y: np.ndarray, rates: _Rates) -> np.ndarray:
        """``dy/dt`` for states ``y`` of shape ``(B, n)``."""
        gains = self._gains(y, rates)
        if not self.cell_average:
            return gains
        n = self.grid.n
        return gains[:, :n] + self.cells.births(gains[:, n:])

    def jacobian(self, y: np.ndarray, rates: _Rates) -> np.ndarray:
        """``d rhs / d y`` per parameter set, shape ``(B, n, n)``."""
        d_gains = self._gain_jacobian(y, rates)
        if not self.cell_average:
            return d_gains
        n = self.grid.n
        # the pivots each cell's births go to are chosen by the cell sums at y
        cells = self._gains(y, rates)[:, n:]
        return d_gains[:, :n] + self.cells.births_jacobian(cells, d_gains[:, n:])

    # The methods below run on numpy arrays and, in :mod:`.torch_solver`, on torch tensors with
    # the operators converted: one description of the discretisation for both backends.
    def _gains(self, y: np.ndarray, rates: _Rates) -> np.ndarray:
        """What the operators write for states ``y`` ``(B, n)``: ``(B, rows)``."""
        if rates.breakage is not None:
            # by rows, (rows, B), to add the collisions' before one transpose
            yT = transposed(y)
            b = take_rows(yT, rates.breakage.cols)
            b *= rates.breakage.values
            by_rows = rates.breakage.add @ b
            if rates.beta is not None:
                by_rows = by_rows + self.pairs.M @ self._collisions(yT, rates.beta)
            return transposed(by_rows)
        if rates.L is None:
            out = zeros_like_shape(y, (y.shape[0], self.rows))
        else:
            out = (rates.L @ y[:, :, None])[:, :, 0]
        if rates.beta is not None:
            collisions = self._collisions(transposed(y), rates.beta)
            out = out + transposed(self.pairs.M @ collisions)
        return out

    def _collisions(self, yT: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """The collision rates ``beta_p y_i y_j`` of the pairs, ``(P, B)``, from the states
        by class ``yT`` ``(n, B)``: in place on the fresh gather, without a third (P, B)
        array (a quarter of a small batch's right-hand side)."""
        r = take_rows(yT, self.pairs.first)
        r *= beta
        r *= take_rows(yT, self.pairs.second)
        return r

    def _gain_jacobian(self, y: np.ndarray, rates: _Rates) -> np.ndarray:
        """``d gains / d y``, ``(B, rows, n)`` (breakage's part is ``rates.L`` itself)."""
        B, n = y.shape
        jac = zeros_like_shape(y, (B, self.rows, n)) if rates.L is None else rates.L
        if rates.beta is not None:
            pairs = self.pairs
            yT = transposed(y)
            xp = namespace(y)
            first, second = take_rows(yT, pairs.first), take_rows(yT, pairs.second)
            X = xp.concatenate([rates.beta * second, rates.beta * first])
            jac = jac + transposed(pairs.Z @ X).reshape(B, self.rows, n)
        return jac

    # -- integration -------------------------------------------------------------------

    def solve(self, params: Mapping[str, np.ndarray | float], t: np.ndarray) -> Solution:
        """Integrate every parameter set from the initial state to the times ``t`` (s).

        Parameter sets are integrated together; when that fails, each is re-run alone so
        that one diverging set fails only itself.
        """
        t = checked_times(t)
        rates = self.rates(params)
        start = time.perf_counter()
        y, error, evals, steps = self._integrate(rates, t)
        if rates.B > 1 and error:
            parts = [self._integrate(rates.members(np.array([b])), t) for b in range(rates.B)]
            y = np.concatenate([p[0] for p in parts])
            errors = [p[1] for p in parts]
            evals += sum(p[2] for p in parts)
            steps = [p[3][0] for p in parts]
        else:
            errors = [error] * rates.B
        return self.solution(t, y, errors, evals, steps, start)

    def solution(
        self,
        t: np.ndarray,
        y: np.ndarray,
        errors: list[str],
        evals: int,
        steps: list[int],
        start: float,
    ) -> Solution:
        """The :class:`Solution` of scaled states ``y`` ``(B, T, n)`` at times ``t`` (s),
        each member's integrator error (``""`` when it ran through) then checked by
        :meth:`check`; ``start`` is the :func:`time.perf_counter` the solve began at."""
        errors = [e or self.check(y[b]) for b, e in enumerate(errors)]
        N = np.where(np.array([not e for e in errors])[:, None, None], y * self.n_ref, np.nan)
        volume = np.where(np.isfinite(y), y, 0.0) * self.v
        top = volume[..., self.grid.on_top_edge()].sum(axis=-1)
        share = top / np.maximum(volume.sum(axis=-1), 1e-300)
        number = np.where(np.isfinite(y), y, 0.0)
        fines = number[..., self.grid.fines()].sum(axis=-1)
        fines_share = fines / np.maximum(number.sum(axis=-1), 1e-300)
        return Solution(
            t=t,
            N=N,
            error=errors,
            top_mass_fraction=share.max(axis=-1),
            fines_fraction=fines_share.max(axis=-1),
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
            return blocks[0] if B == 1 else block_diagonal(blocks)

        y0 = np.tile(self.y0, B)
        try:
            with np.errstate(all="ignore"):
                marched = march(self.method, fun, jac, y0, t, B, self.rtol, self.atol)
        except _Budget:
            return np.full((B, len(t), n), np.nan), self.budget_reason(), counter["rhs"], [0]
        except (RuntimeError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            # LAPACK and SuperLU refuse singular or non-finite Jacobians this way
            why = f"the integrator failed: {type(exc).__name__}: {exc}"
            return np.full((B, len(t), n), np.nan), why, counter["rhs"], [0]
        if isinstance(marched, str):
            return np.full((B, len(t), n), np.nan), marched, counter["rhs"], [0]
        y, steps = marched
        return y, "", counter["rhs"], [steps]

    def budget_reason(self) -> str:
        """Why a solve that ran out of right-hand-side evaluations or time failed."""
        return (
            f"the solver gave up after {self.max_rhs_evals} right-hand-side evaluations "
            f"or {self.max_wall_s:g} s (a stiff or diverging parameter set)"
        )

    def check(self, y: np.ndarray) -> str:
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


def checked_times(t: np.ndarray) -> np.ndarray:
    """Output times (s) as a float array; ValueError unless increasing from ``t >= 0``."""
    t = np.asarray(t, dtype=float)
    if t.ndim != 1 or len(t) == 0 or t[0] < 0 or np.any(np.diff(t) <= 0):
        raise ValueError("times must be a non-empty increasing sequence from t >= 0")
    return t


def zeros_like_shape(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Zeros of ``shape`` in ``a``'s library, dtype and (for torch) device."""
    if isinstance(a, np.ndarray):
        return np.zeros(shape, dtype=a.dtype)
    return a.new_zeros(shape)


def transposed(a: np.ndarray) -> np.ndarray:
    """A 2-D array's transpose, contiguous: states ``(B, n)`` as ``(n, B)`` (gathering a
    pair's partners then copies whole rows), products ``(rows, B)`` as ``(B, rows)``."""
    return np.ascontiguousarray(a.T) if isinstance(a, np.ndarray) else a.T.contiguous()


def take_rows(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``a[index]`` for an index array: torch's ``index_select``, faster there than
    advanced indexing."""
    return a[index] if isinstance(a, np.ndarray) else a.index_select(0, index)


@dataclass
class _Rates:
    B: int
    beta: np.ndarray | None = None  # (P, B): pair-major
    S: np.ndarray | None = None  # (B, n)
    F: np.ndarray | None = None  # (B, n, n); with the cell average (B, (1 + dim) n, n)
    L: np.ndarray | None = None  # (B, rows, n): breakage's gains are L @ y
    # L's non-zero entries, for the right-hand side; without it (rates made to be
    # differentiated) the right-hand side reads L whole
    breakage: SparseBreakage | None = None

    def members(self, idx: np.ndarray) -> _Rates:
        """The rates of the batch members ``idx`` (an index array, numpy or torch, as the
        rates are), copied: ``beta`` stays pair-major and contiguous."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        lean = self.for_rhs(idx)
        lean.S, lean.F = pick(self.S), pick(self.F)
        if lean.L is None:  # left out where breakage holds its entries
            lean.L = pick(self.L)
        return lean

    def for_rhs(self, idx: np.ndarray) -> _Rates:
        """The rates of the members ``idx`` that :meth:`Solver.rhs` reads, copied: not
        ``S`` and ``F``, nor ``L`` when ``breakage`` holds its entries (for the Jacobian,
        take :meth:`members`)."""
        whole = None if self.L is None or self.breakage is not None else self.L[idx]
        beta = None if self.beta is None else self.beta[:, idx]
        breakage = None if self.breakage is None else self.breakage.members(idx)
        return _Rates(B=len(idx), beta=beta, L=whole, breakage=breakage)


@dataclass(frozen=True)
class SparseBreakage:
    """The breakage operator ``L`` ``(B, rows, n)`` at the entries ``(rows_k, cols_k)``
    where any member's is non-zero: ``L @ y`` is ``add @ (values * y[cols])`` with ``add``
    the sparse ``(rows, nnz)`` matrix that sums entry ``k`` into row ``rows_k``."""

    values: np.ndarray  # (nnz, B): entry-major, as beta
    cols: np.ndarray  # (nnz,)
    add: sp.csr_matrix  # (rows, nnz)

    def members(self, idx: np.ndarray) -> SparseBreakage:
        return SparseBreakage(self.values[:, idx], self.cols, self.add)
