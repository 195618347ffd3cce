"""The cell-average technique (CAT) on a 2-D grid: Kumar, Peglow, Warnecke & Heinrich
(2008), "The cell average technique for solving multi-dimensional aggregation population
balance equations".

Cells are the rectangles around the pivots, with each component's edges from the grid
(a component's first cell is that of its zero pivot). Collision
products and fragments are pooled per cell by number ``B`` and by the volume of each
component ``V1``, ``V2`` (:func:`.cat.cell_average_pairs`,
:func:`.cat.cell_average_fragments`). Only then is each cell's birth placed, at its mean
``(V1 / B, V2 / B)``, on the four pivots of the rectangle spanned by its own pivot and, in
each component, the neighbour on the mean's side, with bilinear weights.

Along each component, the split is the 1-D one (:class:`.cat.CellAverage`): ``L1 = a B +
b V1`` particles go to the own pivot of component 1, ``B - L1`` to its neighbour, linear
in the cell sums. These two marginals fix the four corners up to one number, the share
``t`` at both own pivots::

    (own, own): t     (own, next): L1 - t     (next, own): L2 - t     (next, next): B - L1 - L2 + t

so that any ``t`` keeps the number and both component volumes. Bilinear weights take
``t = B s1 s2`` with the shares ``s_c = L_c / B``, i.e. ``t = L1 L2 / B``: not linear in
the cell sums, so the Jacobian is the chain rule through it. With non-negative numbers
the mean lies in its cell and ``s_c`` in ``[0, 1]``. In a Newton iterate with negative
numbers, ``B`` can pass through 0 while ``L_c`` does not; there ``s_c`` is clipped to
``[0, 1]``, which keeps ``|t| <= |B|`` and the births continuous, number and volumes still
exact. An empty cell places nothing; its Jacobian is that of a mean at its pivot
(``s_c = 1``).

Edges: a component's zero pivot has no neighbour below (its cell's births share with the
pivot above) and its last pivot none above (a mean beyond it, by round-off or in a
Newton iterate, shares with the pivot below and keeps number and volumes; nothing is
placed beyond the grid). Class ``(0, 0)`` has zero volume: the shares of fine fragments
placed there are kept, so that the number of particles is exact; the class takes part
in no collision or breakage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcopt.problems.pbe.cat import CellAverage, move, namespace, shift
from hpcopt.problems.pbe.grid import Grid


@dataclass(frozen=True)
class BilinearCellAverage:
    """The placement of each cell's births on the classes of a 2-D grid: one
    :class:`.cat.CellAverage` per component, along the flattened classes."""

    axes: tuple[CellAverage, CellAverage]

    @classmethod
    def build(cls, grid: Grid) -> BilinearCellAverage:
        index = np.indices(grid.shape).reshape(2, -1)  # each class's pivot per component
        axes = []
        for u, i, stride in zip(grid.components, index, (grid.shape[1], 1)):
            last = len(u) - 1
            above, below = u[np.minimum(i + 1, last)], u[np.maximum(i - 1, 0)]
            axes.append(CellAverage.along(u[i], above, below, i == 0, i == last, stride))
        return cls((axes[0], axes[1]))

    def births(self, cells: np.ndarray) -> np.ndarray:
        """Births at the classes ``(B, n)`` from the cells' birth numbers and component
        volumes ``(B, 3n)`` (numbers, then volumes of component 1 and 2, m^3)."""
        number, (up1, _, _, own1), (up2, _, _, own2) = self._marginals(cells)
        t = number * _share(own1, number)[0] * _share(own2, number)[0]
        return self._place(up1, up2, t, own1 - t, own2 - t, number - own1 - own2 + t)

    def births_jacobian(self, cells: np.ndarray, d_cells: np.ndarray) -> np.ndarray:
        """``d births / d y`` ``(B, n, n)`` from the cell sums ``(B, 3n)`` and their
        derivatives ``d_cells`` ``(B, 3n, n)`` (the branches are those at ``cells``)."""
        number, (up1, a1, b1, own1), (up2, a2, b2, own2) = self._marginals(cells)
        s1, in1 = _share(own1, number)
        s2, in2 = _share(own2, number)
        # t = B s1 s2 with s_c = L_c / B where not clipped: B ds_c = dL_c - s_c dB
        on_number = s1 * s2 + in1 * s2 * (a1 - s1) + in2 * s1 * (a2 - s2)
        on_v1, on_v2 = in1 * s2 * b1, in2 * s1 * b2
        n = number.shape[1]
        d_number, d_v1, d_v2 = d_cells[:, :n], d_cells[:, n : 2 * n], d_cells[:, 2 * n :]
        d_own1 = a1[..., None] * d_number + b1[..., None] * d_v1
        d_own2 = a2[..., None] * d_number + b2[..., None] * d_v2
        d_t = on_number[..., None] * d_number + on_v1[..., None] * d_v1 + on_v2[..., None] * d_v2
        return self._place(
            up1, up2, d_t, d_own1 - d_t, d_own2 - d_t, d_number - d_own1 - d_own2 + d_t
        )

    def _marginals(self, cells: np.ndarray) -> tuple[np.ndarray, tuple, tuple]:
        """The cells' numbers ``B`` and, per component, the side of each cell's neighbour
        (:meth:`.cat.CellAverage.branches`), the coefficients ``(a, b)`` of that side and
        the particles at the cell's own pivot in that component, ``L = a B + b V``, all
        ``(B, n)``."""
        n = cells.shape[1] // 3
        number = cells[:, :n]
        out = []
        for c, axis in enumerate(self.axes):
            volume = cells[:, (1 + c) * n : (2 + c) * n]
            up, (a, b, _, _) = axis.branches(number, volume)
            out.append((up, a, b, a * number + b * volume))
        return number, out[0], out[1]

    def _place(
        self,
        up1: np.ndarray,
        up2: np.ndarray,
        own: np.ndarray,
        next2: np.ndarray,
        next1: np.ndarray,
        both: np.ndarray,
    ) -> np.ndarray:
        """Sum the four corners of each cell (axis 1, ``(B, n, ...)``) on their classes:
        ``own`` at the cell's, ``next1`` at its neighbour in component 1, ``next2`` in
        component 2, ``both`` at the neighbour in both."""
        s1, s2 = self.axes[0].stride, self.axes[1].stride
        mask = up1.reshape(up1.shape + (1,) * (both.ndim - up1.ndim))
        upward = namespace(both).where(mask, both, 0.0)
        # moved along component 2 first, while the side in component 1 is still the cell's
        corner = shift(move(upward, up2, s2), s1) + shift(move(both - upward, up2, s2), -s1)
        return own + move(next1, up1, s1) + move(next2, up2, s2) + corner


def _share(own: np.ndarray, number: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The share ``own / number`` clipped to ``[0, 1]`` (1 for an empty cell), and where it
    was not clipped (as 0 or 1, to weigh derivatives). Clipping only acts on sums no
    non-negative state gives; it keeps the births bounded where ``number`` nears 0."""
    xp = namespace(number)
    empty = number == 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        raw = xp.where(empty, 1.0, own / xp.where(empty, 1.0, number))
    inside = (raw >= 0.0) & (raw <= 1.0)
    return xp.clip(raw, 0.0, 1.0), xp.where(inside, 1.0, 0.0)
