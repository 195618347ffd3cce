"""PSD_opt's two-component fragment distribution: fragments spread over both components.

With ``fragment_composition: parent`` (:mod:`.operators`) a fragment keeps its parent's
composition. With ``spread`` a parent of component volumes ``(a1, a2)`` (both non-zero)
breaks into fragments of volumes ``(s a1, u a2)``, ``s`` and ``u`` in ``[0, 1]``, with
the number density per unit ``s`` and ``u``

- ``binary`` (PSD_opt's BREAKFVAL 2): ``b = 2``: two fragments, uniform;
- ``power_law`` (BREAKFVAL 4): ``b = v (v + 1) (s u)^(v - 1)``: ``(v + 1) / v`` fragments;
- ``parabolic_power_law`` (BREAKFVAL 5): ``b = v (v + 1) (v + 2) / 2 (s u)^(v - 1)
  (1 - s u)``,

``v = pl_v``. Each keeps both components' volumes (``∫∫ s b = ∫∫ u b = 1``). PSD_opt's
``breakage_func_2d`` divides its BREAKFVAL 4 density by the parent's ``y1 y3`` twice, so
its fragment count there depends on the parent's size (measured 3, 0.75 and 3e12 for
``y = 1, 2, 1e-6`` where ``(v + 1) / v = 3``); this is the form with one division, as its
BREAKFVAL 2 and 5 have. A pure parent breaks as in 1-D, its fragments pure (as in
PSD_opt).

Each density is a sum of products ``c (s u)^p = c s^p u^p``, and a fixed-pivot share in
2-D is a product of one share per component, so every integral over a cell of the
``(s, u)`` square factorises into two 1-D integrals of powers of ``s`` and ``u``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcopt.problems.pbe.cat import cell_average_fragments, cell_of
from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.kernels import SPREAD_FRAGMENTS, FragmentDistribution
from hpcopt.problems.pbe.operators import FragmentOperator, linear_shares


def spread_terms(
    fragments: FragmentDistribution, params: dict[str, np.ndarray], B: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The density ``b(s, u) = sum_t c_t (s u)^p_t`` as ``[(c_t, p_t), ...]``, each
    ``(B,)``, for ``B`` parameter sets."""
    if fragments == "binary":
        return [(np.full(B, 2.0), np.zeros(B))]
    v = np.broadcast_to(np.asarray(params["pl_v"], dtype=float), (B,))
    if fragments == "power_law":
        return [(v * (v + 1), v - 1)]
    if fragments == "parabolic_power_law":
        k = v * (v + 1) * (v + 2) / 2
        return [(k, v - 1), (-k, v)]
    raise ValueError(
        f"fragment_composition: spread takes fragments {', '.join(SPREAD_FRAGMENTS)}, "
        f"not {fragments!r}"
    )


def power_integrals(lo: np.ndarray, hi: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``∫_lo^hi s^p ds`` for stretches ``(E,)`` and exponents ``p > -1`` ``(B,)``: ``(B, E)``."""
    q = np.asarray(p, dtype=float)[:, None] + 1.0
    return (hi[None, :] ** q - lo[None, :] ** q) / q


def pivot_share_integrals(pivots: np.ndarray, a: float, p: np.ndarray) -> np.ndarray:
    """``∫_0^1 s^p w_i(s a) ds`` for each pivot ``i`` of one component, ``(B, len(pivots))``:
    ``w_i`` the fixed-pivot share pivot ``i`` gets of a fragment of volume ``s a``."""
    cuts = pivots[(pivots > 0) & (pivots < a)] / a
    x = np.concatenate([[0.0], cuts, [1.0]])
    lo, hi = x[:-1], x[1:]
    i0, i1 = power_integrals(lo, hi, p), power_integrals(lo, hi, p + 1)
    out = np.zeros((len(p), len(pivots)))
    for pivot, c0, c1 in linear_shares(pivots, a, 0.5 * (lo + hi)):
        np.add.at(out.T, pivot, (c0 * i0 + c1 * i1).T)
    return out


def cell_integrals(edges: np.ndarray, a: float, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``∫ s^p ds`` and ``a ∫ s^(p+1) ds`` over the ``s`` in ``[0, 1]`` whose fragment
    volume ``s a`` falls in each cell of ``edges`` (one component): the number and the
    volume (m^3) landing there per unit density, each ``(B, len(edges) - 1)``."""
    inner = edges[1:-1]
    x = np.unique(np.concatenate([[0.0, 1.0], inner[inner < a] / a]))
    lo, hi = x[:-1], x[1:]
    cell = cell_of(edges, 0.5 * (lo + hi) * a)
    number = np.zeros((len(p), len(edges) - 1))
    volume = np.zeros_like(number)
    np.add.at(number.T, cell, power_integrals(lo, hi, p).T)
    np.add.at(volume.T, cell, a * power_integrals(lo, hi, p + 1).T)
    return number, volume


@dataclass(frozen=True)
class SpreadFragmentOperator:
    """Fragment matrices with the fragments of mixed parents spread over both components;
    pure parents' columns are those of ``parent``. Fixed pivot: ``(B, n, n)``, fragments
    on pivots; cell average: ``(B, 3n, n)``, the number and each component's volume
    landing in each cell (as :func:`.cat.cell_average_fragments`)."""

    grid: Grid
    parent: FragmentOperator
    cell_average: bool

    @classmethod
    def build(cls, grid: Grid, cell_average: bool = False) -> SpreadFragmentOperator:
        if grid.dim != 2:
            raise ValueError("fragment_composition: spread is for 2-D grids")
        parent = cell_average_fragments(grid) if cell_average else FragmentOperator.build(grid)
        return cls(grid, parent, cell_average)

    def mixed(self) -> np.ndarray:
        """Which classes hold both components, ``(n,)`` booleans."""
        return np.all(self.grid.volumes() > 0, axis=1)

    def matrices(
        self, fragments: FragmentDistribution, params: dict[str, np.ndarray], B: int
    ) -> np.ndarray:
        """``F[b, k, q]``: what the fragments of one parent of class ``q`` put in row ``k``."""
        spread = sum(
            self._spread(c, p) for c, p in spread_terms(fragments, params, B)
        )  # (B, rows, n1, n2, n1, n2): rows per destination, then the parent
        F = self.parent.matrices(fragments, params, B).copy()
        mixed = self.mixed()
        n = self.grid.n
        F[:, :, mixed] = spread.reshape(B, -1, n)[:, :, mixed]
        return F

    def _spread(self, c: np.ndarray, p: np.ndarray) -> np.ndarray:
        """One term ``c (s u)^p`` of the density, every parent at once."""
        (u1, u2), (e1, e2) = self.grid.components, self.grid.edges
        if not self.cell_average:
            # per component and parent pivot: the integral of each pivot's share
            s1 = np.stack([pivot_share_integrals(u1, a, p) for a in u1], axis=1)
            s2 = np.stack([pivot_share_integrals(u2, a, p) for a in u2], axis=1)
            return np.einsum("b,bik,bjl->bklij", c, s1, s2)[:, None]
        n1, v1 = (np.stack(m, axis=1) for m in zip(*(cell_integrals(e1, a, p) for a in u1)))
        n2, v2 = (np.stack(m, axis=1) for m in zip(*(cell_integrals(e2, a, p) for a in u2)))
        rows = [(n1, n2), (v1, n2), (n1, v2)]  # number, component 1's and 2's volume
        return np.stack([np.einsum("b,bik,bjl->bklij", c, x, y) for x, y in rows], axis=1)
