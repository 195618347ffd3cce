"""The cell-average technique (CAT) of the 1-D dPBE: Kumar, Kumar, Warnecke, Tsotsas &
Peglow (2006) for agglomeration, Kumar et al. (2008) for breakage.

The volume axis is cut into cells ``[e_c, e_c+1)`` around the pivots ``x_c`` (the grid's
``edges``, which depend on its layout). Every
particle born in cell ``c``, by a collision or as a fragment, is first collected into the
cell's total number ``B_c`` and total volume ``V_c`` (both per unit time). Only then is
the cell's birth placed on the pivots: at the mean volume ``vbar_c = V_c / B_c``, split
between ``x_c`` and its neighbour ``x_m`` on the side of ``vbar_c`` (``m = c + 1`` when
``vbar_c >= x_c``, else ``c - 1``) so that number and volume are both kept::

    to x_c: (x_m B_c - V_c) / (x_m - x_c)        to x_m: (V_c - x_c B_c) / (x_m - x_c)

These are linear in ``(B_c, V_c)``; only the choice of ``m`` depends on them, and both
choices agree where it switches (``vbar_c = x_c`` puts everything on ``x_c``). So the
births are continuous and piecewise linear in the cell sums, whose own derivatives are
those of the collision and fragment rates: the Jacobian is exact away from the switch.
Fixed-pivot splitting smears each product over the two pivots around it; averaging
first keeps the births of a cell together, which is why CAT spreads the distribution
less (a smaller error in the second moment).

Outside the grid, as with the fixed pivot: collisions whose product lies beyond the
grid's ``product_limit`` are not counted (:func:`.operators.pairs_on_grid`), and no birth
in the last cell lies above its pivot. Class 0 is the zero-volume fines class: births in
its cell (fragments below the first cell edge) lie above its pivot and are shared with
the first non-zero pivot, number and volume kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.operators import FragmentOperator, PairOperator, pairs_on_grid

Discretisation = Literal["fixed_pivot", "cell_average"]
DISCRETISATIONS: tuple[Discretisation, ...] = ("fixed_pivot", "cell_average")


def cell_of(edges: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The cell of ``edges`` each volume ``w`` (m^3) falls in, ``(m,)`` indices; the last
    cell takes everything above its lower edge."""
    return np.clip(np.searchsorted(edges, w, side="right") - 1, 0, len(edges) - 2)


def cell_average_pairs(grid: Grid) -> PairOperator:
    """The 1-D collision operator of CAT: ``M`` is ``3n x P``, its rows ``[0, n)`` the two
    partners' deaths, ``[n, 2n)`` the number and ``[2n, 3n)`` the volume (m^3) landing in
    each cell per unit collision rate."""
    n = grid.n
    first, second, landing = pairs_on_grid(grid)
    w = landing[:, 0]
    cell = cell_of(grid.edges[0], w)
    P = len(first)
    pair = np.arange(P)
    rows = [first, second, n + cell, 2 * n + cell]
    cols = [pair, pair, pair, pair]
    vals = [-np.ones(P), -np.ones(P), np.ones(P), w]
    return PairOperator.assemble(n, first, second, rows, cols, vals, 3 * n)


def cell_average_fragments(grid: Grid) -> FragmentOperator:
    """The 1-D fragment operator of CAT: its matrices are ``(B, 2n, n)``, the number (rows
    ``[0, n)``) and volume (rows ``[n, 2n)``, m^3) of the fragments of one parent of each
    class (column) that land in each cell, integrated exactly over the cell."""
    n, pivots, edges = grid.n, grid.components[0], grid.edges[0]
    inner = edges[1:-1]
    parents, dests, xa, xb, coef = [], [], [], [], []
    for q, a in enumerate(pivots):
        if a == 0:  # fines do not break
            continue
        x = np.unique(np.concatenate([[0.0, 1.0], inner[inner < a] / a]))
        lo, hi = x[:-1], x[1:]
        cell = cell_of(edges, 0.5 * (lo + hi) * a)
        one, zero = np.ones_like(lo), np.zeros_like(lo)
        # number: the integral of b; volume: parent volume times that of x b
        for dest, share in ((cell, (one, zero, zero)), (n + cell, (zero, a * one, zero))):
            parents.append(np.full(len(lo), q))
            dests.append(dest)
            xa.append(lo)
            xb.append(hi)
            coef.append(np.stack(share))
    parents, dests = np.concatenate(parents), np.concatenate(dests)
    E = len(parents)
    assemble = sp.csr_matrix(
        (np.ones(E), (dests * n + parents, np.arange(E))), shape=(2 * n * n, E)
    )
    x = np.stack([np.concatenate(xa), np.concatenate(xb)], axis=1)
    return FragmentOperator(x, np.concatenate(coef, axis=1), assemble, n)


@dataclass(frozen=True)
class CellAverage:
    """The placement of each cell's births on the pivots, for 1-D ``pivots`` (m^3).

    ``upper`` and ``lower`` (``(4, n)``) hold, for the neighbour above and below, the
    coefficients ``(a, b, c, e)``: ``a B_c + b V_c`` particles go to ``x_c`` and ``c B_c +
    e V_c`` to the neighbour. Class 0 (zero volume) has no neighbour below.
    """

    pivots: np.ndarray
    upper: np.ndarray
    lower: np.ndarray

    @classmethod
    def build(cls, pivots: np.ndarray) -> CellAverage:
        above = np.concatenate([pivots[1:], [2.0 * pivots[-1]]])  # never used at the top
        below = np.concatenate([[-pivots[1]], pivots[:-1]])  # never used at class 0

        def coefficients(xm: np.ndarray) -> np.ndarray:
            d = xm - pivots
            return np.stack([xm / d, -1.0 / d, -pivots / d, 1.0 / d])

        return cls(pivots, coefficients(above), coefficients(below))

    def births(self, cells: np.ndarray) -> np.ndarray:
        """Births at the pivots ``(B, n)`` from the cells' birth numbers and volumes
        ``(B, 2n)`` (numbers, then volumes in m^3), each cell placed at its mean volume."""
        n = len(self.pivots)
        up, (a, b, c, e) = self._branches(cells)
        number, volume = cells[:, :n], cells[:, n:]
        return _place(up, a * number + b * volume, c * number + e * volume)

    def births_jacobian(self, cells: np.ndarray, d_cells: np.ndarray) -> np.ndarray:
        """``d births / d y`` ``(B, n, n)`` from the cell sums ``(B, 2n)`` and their
        derivatives ``d_cells`` ``(B, 2n, n)`` (the branches are those at ``cells``)."""
        n = len(self.pivots)
        up, (a, b, c, e) = self._branches(cells)
        d_number, d_volume = d_cells[:, :n], d_cells[:, n:]
        own = a[..., None] * d_number + b[..., None] * d_volume
        neighbour = c[..., None] * d_number + e[..., None] * d_volume
        return _place(up[..., None], own, neighbour)

    def _branches(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each cell ``(B, n)`` shares with the pivot above, and the coefficients
        ``(4, B, n)`` of its side."""
        n = len(self.pivots)
        # comparing volumes, not vbar, keeps an empty cell well defined (both sides give 0)
        up = cells[:, n:] >= self.pivots * cells[:, :n]
        # fines lie above the zero pivot but by round-off (or in a Newton iterate)
        up[:, 0] = True
        # nothing lands above the last pivot but by round-off (or in a Newton iterate):
        # shared with the pivot below, such a birth keeps its volume and number
        up[:, -1] = False
        return up, np.where(up[None], self.upper[:, None, :], self.lower[:, None, :])


def _place(up: np.ndarray, own: np.ndarray, neighbour: np.ndarray) -> np.ndarray:
    """Sum each cell's share on its own pivot and on its neighbour's (axis 1 is the cell)."""
    out = own.copy()
    out[:, 1:] += np.where(up[:, :-1], neighbour[:, :-1], 0.0)
    out[:, :-1] += np.where(up[:, 1:], 0.0, neighbour[:, 1:])
    return out
