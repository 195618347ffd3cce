"""The parameter-free sparse operators of the fixed-pivot dPBE, built once per grid.

- :class:`PairOperator`: the colliding class pairs ``p = (i <= j)`` whose product stays
  on the grid, ``M`` (``n x P``: births at the fixed pivots minus the two partners'
  deaths, per unit collision rate) and ``Z`` (``n^2 x 2P``: the same entries placed so
  that ``Z @ [beta y_j, beta y_i]`` is the flattened Jacobian of ``M r``).
- :class:`FragmentOperator`: for every parent class, the stretches of ``x = fragment /
  parent volume`` over which a fragment falls in one grid cell, with each corner's
  fixed-pivot share there as a polynomial in ``x`` (degree <= 2, bilinear in 2-D). With
  the antiderivatives of a fragment distribution this gives the exact fragment matrices.

The cell-average technique (:mod:`.cat`) builds the same two kinds of operator with other
rows: what lands in each cell, by number and by volume, instead of births at pivots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from hpcopt.problems.pbe.grid import Grid, pivot_weights
from hpcopt.problems.pbe.kernels import FragmentDistribution, fragment_moments


@dataclass(frozen=True)
class PairOperator:
    first: np.ndarray  # (P,) class index of the first partner
    second: np.ndarray  # (P,) and of the second (first <= second)
    M: sp.csr_matrix  # (m, P): m = n rows of rates of change (m = 3 n for the cell average)
    Z: sp.csr_matrix  # (m * n, 2 P)

    @classmethod
    def build(cls, grid: Grid) -> PairOperator:
        """The fixed-pivot operator: births at the pivots around each product, deaths."""
        first, second, landing = pairs_on_grid(grid)
        P = len(first)
        rows, cols = [np.concatenate([first, second])], [np.tile(np.arange(P), 2)]
        vals = [-np.ones(2 * P)]
        for dest, weight in corners(grid, landing):
            nz = weight != 0
            rows.append(dest[nz])
            cols.append(np.arange(P)[nz])
            vals.append(weight[nz])
        return cls.assemble(grid.n, first, second, rows, cols, vals, grid.n)

    @classmethod
    def assemble(
        cls,
        n: int,
        first: np.ndarray,
        second: np.ndarray,
        rows: list[np.ndarray],
        cols: list[np.ndarray],
        vals: list[np.ndarray],
        m: int,
    ) -> PairOperator:
        """``M`` (``m x P``) from its entries (row, pair, value), and ``Z`` from ``M``:
        entry ``(row, p)`` is placed at ``row * n + partner`` for each partner of ``p``."""
        P = len(first)
        M = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, P)
        )
        coo = M.tocoo()
        Z = sp.csr_matrix(
            (
                np.concatenate([coo.data, coo.data]),
                (
                    np.concatenate([coo.row * n + first[coo.col], coo.row * n + second[coo.col]]),
                    np.concatenate([coo.col, P + coo.col]),
                ),
            ),
            shape=(m * n, 2 * P),
        )
        return cls(first, second, M, Z)


def pairs_on_grid(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The colliding pairs ``(first <= second)`` whose product stays below the grid's
    ``product_limit`` in every component, and the product's component volumes ``(P, dim)``
    (m^3). The fines class collides with nothing."""
    vols = grid.volumes()
    active = np.flatnonzero(grid.active())
    ii, jj = np.triu_indices(len(active))
    first, second = active[ii], active[jj]
    landing = vols[first] + vols[second]
    keep = np.all(landing < np.array(grid.product_limit), axis=1)
    return first[keep], second[keep], landing[keep]


def corners(grid: Grid, w: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed-pivot destinations of particles with component volumes ``w`` ``(m, dim)``:
    a list of (flat class index, share) per corner of the enclosing cell."""
    per_comp = []
    for c, u in enumerate(grid.components):
        lower, a = pivot_weights(u, w[:, c])
        upper = np.minimum(lower + 1, len(u) - 1)
        per_comp.append(((lower, a), (upper, np.where(upper > lower, 1.0 - a, 0.0))))
    if grid.dim == 1:
        return list(per_comp[0])
    n2 = grid.shape[1]
    out = []
    for i1, a1 in per_comp[0]:
        for i2, a2 in per_comp[1]:
            flat = i1 * n2 + i2
            out.append((flat, a1 * a2))
    return out


@dataclass(frozen=True)
class FragmentOperator:
    x: np.ndarray  # (E, 2) stretch [x_a, x_b] of each entry
    coef: np.ndarray  # (3, E) the share polynomial c0 + c1 x + c2 x^2 on it
    assemble: sp.csr_matrix  # (rows * n, E) entry -> F[row, parent]; rows = n (2 n for CAT)
    n: int

    @classmethod
    def build(cls, grid: Grid) -> FragmentOperator:
        n, volumes = grid.n, grid.volumes()
        parents, dests, xa, xb, coef = [], [], [], [], []
        for q in np.flatnonzero(grid.active()):
            a = volumes[q]
            cuts = [np.array([0.0, 1.0])]
            for c, u in enumerate(grid.components):
                if a[c] > 0:
                    cuts.append(u[(u > 0) & (u <= a[c])] / a[c])
            x = np.unique(np.clip(np.concatenate(cuts), 0.0, 1.0))
            lo, hi = x[:-1], x[1:]
            mid = 0.5 * (lo + hi)
            factors = [linear_shares(u, a[c], mid) for c, u in enumerate(grid.components)]
            if grid.dim == 1:
                entries = [(i, c0, c1, np.zeros_like(c0)) for i, c0, c1 in factors[0]]
            else:
                n2 = grid.shape[1]
                entries = []
                for i1, a0, a1 in factors[0]:
                    for i2, b0, b1 in factors[1]:
                        products = (a0 * b0, a0 * b1 + a1 * b0, a1 * b1)
                        entries.append((i1 * n2 + i2, *products))
            for dest, p0, p1, p2 in entries:
                parents.append(np.full(len(mid), q))
                dests.append(dest)
                xa.append(lo)
                xb.append(hi)
                coef.append(np.stack([p0, p1, p2]))
        parents, dests = np.concatenate(parents), np.concatenate(dests)
        E = len(parents)
        assemble = sp.csr_matrix(
            (np.ones(E), (dests * n + parents, np.arange(E))), shape=(n * n, E)
        )
        x = np.stack([np.concatenate(xa), np.concatenate(xb)], axis=1)
        return cls(x, np.concatenate(coef, axis=1), assemble, n)

    def matrices(
        self, fragments: FragmentDistribution, params: dict[str, np.ndarray], B: int
    ) -> np.ndarray:
        """Fragment matrices ``F[b, k, q]`` (fragments class ``q`` sends to row ``k``),
        ``(B, rows, n)``, for ``B`` sets of the distribution's parameters."""
        m = fragment_moments(fragments, self.x, params)
        delta = np.broadcast_to(m[..., 1] - m[..., 0], (3, B, len(self.x)))
        shares = np.einsum("mbe,me->be", delta, self.coef)
        rows = self.assemble.shape[0] // self.n
        # C order: the batched matrix-vector products of every right-hand side want it
        return np.ascontiguousarray((self.assemble @ shares.T).T.reshape(B, rows, self.n))


def linear_shares(
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
    span = np.where(inside, pivots[upper] - pivots[lower], 1.0)
    c0 = np.where(inside, pivots[upper] / span, 1.0)
    c1 = np.where(inside, -a / span, 0.0)
    return [
        (lower, c0, c1),
        (upper, np.where(inside, 1.0 - c0, 0.0), np.where(inside, -c1, 0.0)),
    ]
