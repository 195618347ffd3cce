"""The cell-average technique (CAT) of the dPBE: Kumar, Kumar, Warnecke, Tsotsas & Peglow
(2006) for agglomeration, Kumar et al. (2008) for breakage. This module pools the births
per cell in 1-D and 2-D (:func:`cell_average_pairs`, :func:`cell_average_fragments`) and
places them along one axis (:class:`CellAverage`); :mod:`.cat2d` places 2-D cells.

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
from types import ModuleType
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.operators import FragmentOperator, PairOperator, pairs_on_grid

Discretisation = Literal["fixed_pivot", "cell_average"]
DISCRETISATIONS: tuple[Discretisation, ...] = ("fixed_pivot", "cell_average")


def namespace(a: Any) -> ModuleType:
    """The array library of ``a``: torch for a torch tensor (imported only then), else
    numpy. The placement of births runs on both, so that the torch solver
    (:mod:`.torch_solver`) uses this module's arithmetic rather than a copy of it."""
    if type(a).__module__.startswith("torch"):
        import torch

        return torch
    return np


def cell_of(edges: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The cell of ``edges`` each volume ``w`` (m^3) falls in, ``(m,)`` indices; the last
    cell takes everything above its lower edge."""
    return np.clip(np.searchsorted(edges, w, side="right") - 1, 0, len(edges) - 2)


def cells_of(grid: Grid, w: np.ndarray) -> np.ndarray:
    """The (flat) cell that particles of component volumes ``w`` ``(m, dim)`` fall in:
    the product of each component's cell (rectangles in 2-D), ``(m,)`` indices."""
    flat = np.zeros(len(w), dtype=int)
    for c, e in enumerate(grid.edges):
        flat = flat * (len(e) - 1) + cell_of(e, w[:, c])
    return flat


def cell_average_pairs(grid: Grid) -> PairOperator:
    """The collision operator of CAT: ``M`` is ``(2 + dim) n x P``, its rows ``[0, n)`` the
    two partners' deaths, ``[n, 2n)`` the number and ``[(2 + c) n, (3 + c) n)`` the volume
    of component ``c`` (m^3) landing in each cell per unit collision rate."""
    n, dim = grid.n, grid.dim
    first, second, landing = pairs_on_grid(grid)
    cell = cells_of(grid, landing)
    P = len(first)
    pair = np.arange(P)
    rows = [first, second, n + cell] + [(2 + c) * n + cell for c in range(dim)]
    vals = [-np.ones(P), -np.ones(P), np.ones(P)] + [landing[:, c] for c in range(dim)]
    return PairOperator.assemble(n, first, second, rows, [pair] * len(rows), vals, (2 + dim) * n)


def cell_average_fragments(grid: Grid) -> FragmentOperator:
    """The fragment operator of CAT: its matrices are ``(B, (1 + dim) n, n)``, the number
    (rows ``[0, n)``) and the volume of each component ``c`` (rows ``[(1 + c) n, (2 + c)
    n)``, m^3) of the fragments of one parent of each class (column) that land in each
    cell, integrated exactly over the cell. In 2-D a fragment keeps its parent's
    composition: a fragment ``x`` of parent ``(a1, a2)`` is ``(x a1, x a2)``."""
    n, dim, volumes = grid.n, grid.dim, grid.volumes()
    inner = [e[1:-1] for e in grid.edges]
    parents, dests, xa, xb, coef = [], [], [], [], []
    for q in np.flatnonzero(grid.active()):
        a = volumes[q]
        # x at which a fragment crosses a cell edge in some component
        cuts = [e[e < a_c] / a_c for e, a_c in zip(inner, a) if a_c > 0]
        x = np.unique(np.concatenate([[0.0, 1.0], *cuts]))
        lo, hi = x[:-1], x[1:]
        cell = cells_of(grid, 0.5 * (lo + hi)[:, None] * a[None, :])
        one, zero = np.ones_like(lo), np.zeros_like(lo)
        # number: the integral of b; volume: the parent's component volume times that of x b
        shares = [(cell, (one, zero, zero))]
        shares += [((1 + c) * n + cell, (zero, a[c] * one, zero)) for c in range(dim)]
        for dest, share in shares:
            parents.append(np.full(len(lo), q))
            dests.append(dest)
            xa.append(lo)
            xb.append(hi)
            coef.append(np.stack(share))
    parents, dests = np.concatenate(parents), np.concatenate(dests)
    E = len(parents)
    assemble = sp.csr_matrix(
        (np.ones(E), (dests * n + parents, np.arange(E))), shape=((1 + dim) * n * n, E)
    )
    x = np.stack([np.concatenate(xa), np.concatenate(xb)], axis=1)
    return FragmentOperator(x, np.concatenate(coef, axis=1), assemble, n)


@dataclass(frozen=True)
class CellAverage:
    """The placement of each cell's births on the pivots along one axis (m^3).

    ``pivots`` (``(n,)``) is each cell's pivot on that axis, ``stride`` how far apart the
    flat indices of neighbours along it are (1 on a 1-D grid). ``upper`` and ``lower``
    (``(4, n)``) hold, for the neighbour above and below, the coefficients ``(a, b, c,
    e)``: ``a B_c + b V_c`` particles go to the cell's own pivot and ``c B_c + e V_c`` to
    the neighbour. Cells in ``only_up`` (``(n,)``) have no pivot below, those in
    ``only_down`` none above (the zero-volume class 0 shares only upwards).
    """

    pivots: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    only_up: np.ndarray
    only_down: np.ndarray
    stride: int = 1

    @classmethod
    def build(cls, pivots: np.ndarray) -> CellAverage:
        """The placement on a 1-D grid of ``pivots`` (the first the zero-volume class's)."""
        above = np.concatenate([pivots[1:], [np.inf]])  # none above the top
        below = np.concatenate([[-np.inf], pivots[:-1]])  # none below the fines class
        index = np.arange(len(pivots))
        return cls.along(pivots, above, below, index == 0, index == len(pivots) - 1, 1)

    @classmethod
    def along(
        cls,
        pivots: np.ndarray,
        above: np.ndarray,
        below: np.ndarray,
        only_up: np.ndarray,
        only_down: np.ndarray,
        stride: int,
    ) -> CellAverage:
        """The placement along an axis with each cell's pivot and its neighbours' above
        and below (``(n,)`` each; those of ``only_down`` and ``only_up`` cells unused)."""
        # placeholders where there is no neighbour: never used, they keep d non-zero
        above = np.where(only_down, 2.0 * pivots + 1.0, above)
        below = np.where(only_up, pivots - 1.0, below)

        def coefficients(xm: np.ndarray) -> np.ndarray:
            d = xm - pivots
            return np.stack([xm / d, -1.0 / d, -pivots / d, 1.0 / d])

        return cls(pivots, coefficients(above), coefficients(below), only_up, only_down, stride)

    def births(self, cells: np.ndarray) -> np.ndarray:
        """Births at the pivots ``(B, n)`` from the cells' birth numbers and volumes
        ``(B, 2n)`` (numbers, then volumes in m^3), each cell placed at its mean volume."""
        n = len(self.pivots)
        number, volume = cells[:, :n], cells[:, n:]
        up, (a, b, c, e) = self.branches(number, volume)
        return a * number + b * volume + move(c * number + e * volume, up, self.stride)

    def births_jacobian(self, cells: np.ndarray, d_cells: np.ndarray) -> np.ndarray:
        """``d births / d y`` ``(B, n, n)`` from the cell sums ``(B, 2n)`` and their
        derivatives ``d_cells`` ``(B, 2n, n)`` (the branches are those at ``cells``)."""
        n = len(self.pivots)
        up, (a, b, c, e) = self.branches(cells[:, :n], cells[:, n:])
        d_number, d_volume = d_cells[:, :n], d_cells[:, n:]
        own = a[..., None] * d_number + b[..., None] * d_volume
        neighbour = c[..., None] * d_number + e[..., None] * d_volume
        return own + move(neighbour, up, self.stride)

    def branches(self, number: np.ndarray, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each cell ``(B, n)`` shares with the pivot above, from its birth number
        and volume ``(B, n)``, and the coefficients ``(4, B, n)`` of its side."""
        # comparing volumes, not vbar, keeps an empty cell well defined (both sides give 0)
        up = volume >= self.pivots * number
        # nothing lands above the last pivot but by round-off (or in a Newton iterate):
        # shared with the pivot below, such a birth keeps its volume and number
        up = (up | self.only_up) & ~self.only_down
        xp = namespace(number)
        return up, xp.where(up[None], self.upper[:, None, :], self.lower[:, None, :])


def move(values: np.ndarray, up: np.ndarray, stride: int) -> np.ndarray:
    """Each cell's ``values`` (axis 1, ``(B, n, ...)``) moved to the class ``stride`` above
    where ``up`` (``(B, n)``), else to the one ``stride`` below; what would leave the
    classes is dropped (nothing is placed there: see ``only_up`` and ``only_down``)."""
    mask = up.reshape(up.shape + (1,) * (values.ndim - up.ndim))
    upward = namespace(values).where(mask, values, 0.0)
    return shift(upward, stride) + shift(values - upward, -stride)


def shift(values: np.ndarray, offset: int) -> np.ndarray:
    """``values`` moved by ``offset`` classes along axis 1, what leaves dropped."""
    out = namespace(values).zeros_like(values)
    if offset > 0:
        out[:, offset:] = values[:, :-offset]
    elif offset < 0:
        out[:, :offset] = values[:, -offset:]
    else:
        out[:] = values
    return out
