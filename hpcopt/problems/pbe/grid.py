"""Geometric volume grids for the dPBE, in one or two components, and fixed-pivot weights.

1-D: ``classes`` pivots ``v_i = v0 * ratio**i`` (m^3).

2-D: each component ``c`` has pivots ``[0, v0_c, v0_c * ratio, ...]`` (``classes`` entries,
the zero pivot meaning "none of this component"), and class ``(i, j)`` holds particles
made of ``u1[i]`` of component 1 and ``u2[j]`` of component 2. Classes are flattened
row-major (``k = i * n2 + j``); class ``(0, 0)`` holds nothing and stays empty.

A particle whose volumes fall between pivots is split over the neighbouring pivots with
the fixed-pivot weights of Kumar & Ramkrishna (1996) — bilinear in 2-D — which preserve
its number and the volume of each component. Below the first pivot of a 1-D grid there is
no lower neighbour: the particle is counted in class 0 by volume (``w / v0`` of a
particle), which keeps the volume exact and undercounts the number of such fines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcopt.problems.pbe.psd import volume_to_size


@dataclass(frozen=True)
class Grid:
    """Pivot volumes per component (m^3). ``components`` is a tuple of one or two arrays."""

    components: tuple[np.ndarray, ...]

    @classmethod
    def geometric(cls, dim: int, classes: int, ratio: float, v0: tuple[float, ...]) -> Grid:
        """A 1-D grid of ``classes`` pivots or a 2-D grid of ``classes`` per component."""
        if dim not in (1, 2) or len(v0) != dim:
            raise ValueError(f"dim must be 1 or 2 with one v0 per component, got {dim}, {v0}")
        if ratio <= 1.0 or classes < 2:
            raise ValueError(f"need ratio > 1 and classes >= 2, got {ratio}, {classes}")
        if dim == 1:
            return cls((v0[0] * ratio ** np.arange(classes),))
        comps = tuple(np.concatenate([[0.0], v * ratio ** np.arange(classes - 1)]) for v in v0)
        return cls(comps)

    @property
    def dim(self) -> int:
        return len(self.components)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(u) for u in self.components)

    @property
    def n(self) -> int:
        """Number of (flattened) classes."""
        return int(np.prod(self.shape))

    def volumes(self) -> np.ndarray:
        """Component volumes of every class, shape ``(n, dim)``."""
        mesh = np.meshgrid(*self.components, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def total_volumes(self) -> np.ndarray:
        """Total particle volume of every class, ``(n,)`` (0 for the empty 2-D class)."""
        return self.volumes().sum(axis=1)

    def active(self) -> np.ndarray:
        """Which classes can hold particles (all but the empty 2-D class ``(0, 0)``)."""
        return self.total_volumes() > 0

    def on_top_edge(self) -> np.ndarray:
        """Which classes sit at the top of the grid in some component, ``(n,)`` booleans:
        where particles pile up when collisions beyond the grid are not counted."""
        index = np.meshgrid(*(np.arange(len(u)) for u in self.components), indexing="ij")
        return np.any([i.ravel() == len(u) - 1 for i, u in zip(index, self.components)], axis=0)

    def smallest(self) -> np.ndarray:
        """The smallest non-zero pivot of each component, ``(dim,)``."""
        return np.array([u[u > 0][0] for u in self.components])


def pivot_weights(pivots: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-D fixed-pivot split of volumes ``w`` (``(m,)``, within ``[0, pivots[-1]]``).

    Returns ``(lower, a)``: the lower pivot index and the share of the particle it gets;
    the pivot above (``lower + 1``) gets ``1 - a``. On a grid without a zero pivot, ``w``
    below the first pivot gives ``lower = 0`` and ``a = w / pivots[0]``, and nothing above.
    """
    w = np.asarray(w, dtype=float)
    lower = np.clip(np.searchsorted(pivots, w, side="right") - 1, 0, len(pivots) - 1)
    top = lower == len(pivots) - 1
    lo = pivots[lower]
    hi = pivots[np.minimum(lower + 1, len(pivots) - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(top, 1.0, (hi - w) / np.where(top, 1.0, hi - lo))
    below = w < pivots[0]  # never on a grid with a zero pivot
    a = np.where(below, w / np.where(below, pivots[0], 1.0), a)
    return lower, a


def total_volume_grid(grid: Grid, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """A 1-D geometric grid of total volume that covers every class of ``grid``.

    Returns ``(pivots, R)`` where ``R`` (``(m, n)``) maps class numbers onto it with
    fixed-pivot weights: what the size distributions of a 2-D run are computed from.
    """
    v = grid.total_volumes()
    v0 = grid.smallest().min()
    m = int(np.ceil(np.log(v.max() / v0) / np.log(ratio) - 1e-9)) + 1
    pivots = v0 * ratio ** np.arange(m)
    lower, a = pivot_weights(pivots, v)
    R = np.zeros((m, grid.n))
    cols = np.arange(grid.n)
    active = v > 0
    upper = np.minimum(lower + 1, m - 1)
    np.add.at(R, (lower[active], cols[active]), a[active])
    has_upper = active & (lower + 1 < m) & (v >= pivots[0])
    np.add.at(R, (upper[has_upper], cols[has_upper]), 1.0 - a[has_upper])
    return pivots, R


def cell_edges(pivots: np.ndarray) -> np.ndarray:
    """Volume edges of the cells around 1-D pivots: 0, the midpoints, and a last edge as
    far above the last pivot as the midpoint below it, ``(m + 1,)``."""
    mid = 0.5 * (pivots[1:] + pivots[:-1])
    last = pivots[-1] + (pivots[-1] - mid[-1])
    return np.concatenate([[0.0], mid, [last]])


def size_axis(pivots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Volume-equivalent diameters of 1-D pivots and of their cell edges (m)."""
    return volume_to_size(pivots), volume_to_size(cell_edges(pivots))
