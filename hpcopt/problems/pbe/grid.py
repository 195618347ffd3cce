"""Geometric volume grids for the dPBE, in one or two components, and fixed-pivot weights.

Every component's pivots start with a zero pivot: in 1-D class 0 is a class of zero
volume, and in 2-D class ``(i, j)`` holds particles made of ``u1[i]`` of component 1 and
``u2[j]`` of component 2, so ``(i, 0)`` and ``(0, j)`` are pure and ``(0, 0)`` has zero
volume. Classes are flattened row-major (``k = i * n2 + j``); ``classes`` counts the zero
class, as PSD_opt's ``NS`` does.

The zero-volume class collects *fines*: a particle born below the first non-zero pivot is
split between it and that pivot, which keeps its number and its volume (a fragment of
volume ``w < v_1`` counts ``w / v_1`` of a particle at ``v_1`` and the rest at zero
volume). Fines neither collide nor break; their number share is what a grid too coarse at
the bottom loses from its size distributions (:meth:`Grid.fines`).

Two layouts of the non-zero pivots, each with the cell edges the cell-average technique
pools births over:

- ``pivots`` (hpcopt's): pivots ``v0 * ratio**k``; edges 0, the midpoints between pivots
  (``v0 / 2`` below the first) and a last edge as far above the last pivot as the midpoint
  below it.
- ``psd_opt`` (PSD_opt's ``disc: geo``): edges ``v0 * ratio**k`` (``k = 0 .. classes-1``,
  and 0 below), pivots at the midpoints between edges, so the first non-zero pivot is
  ``v0 (1 + ratio) / 2``. As there, a collision counts only if its product lands below the
  last cell (the lower edge of the last cell in each component).

A particle whose volumes fall between pivots is split over the neighbouring pivots with
the fixed-pivot weights of Kumar & Ramkrishna (1996) — bilinear in 2-D — which preserve
its number and the volume of each component.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Layout = Literal["pivots", "psd_opt"]
LAYOUTS: tuple[Layout, ...] = ("pivots", "psd_opt")


@dataclass(frozen=True)
class Grid:
    """Pivot volumes per component (m^3), each starting at 0, and the cell edges around
    them (``len(pivots) + 1`` per component). ``product_limit`` holds, per component, the
    volume a collision product must stay below to be counted."""

    components: tuple[np.ndarray, ...]
    edges: tuple[np.ndarray, ...]
    product_limit: tuple[float, ...]

    @classmethod
    def geometric(
        cls,
        dim: int,
        classes: int,
        ratio: float,
        v0: tuple[float, ...],
        layout: Layout = "pivots",
    ) -> Grid:
        """A grid of ``classes`` classes per component (the zero class included); ``v0``
        is the first non-zero pivot (``pivots``) or edge (``psd_opt``) per component."""
        if dim not in (1, 2) or len(v0) != dim:
            raise ValueError(f"dim must be 1 or 2 with one v0 per component, got {dim}, {v0}")
        if ratio <= 1.0 or classes < 3:
            raise ValueError(f"need ratio > 1 and classes >= 3, got {ratio}, {classes}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        comps, edges, limits = [], [], []
        for v in v0:
            if layout == "pivots":
                u = np.concatenate([[0.0], v * ratio ** np.arange(classes - 1)])
                e = cell_edges(u)
                limits.append(u[-1] * (1 + 1e-12))
            else:
                e = np.concatenate([[0.0], v * ratio ** np.arange(classes)])
                u = np.concatenate([[0.0], 0.5 * (e[1:-1] + e[2:])])
                limits.append(e[-2])
            comps.append(u)
            edges.append(e)
        return cls(tuple(comps), tuple(edges), tuple(limits))

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
        """Total particle volume of every class, ``(n,)`` (0 for the fines class)."""
        return self.volumes().sum(axis=1)

    def active(self) -> np.ndarray:
        """Which classes hold particles of some volume (all but the fines class): the
        ones that collide and break."""
        return self.total_volumes() > 0

    def fines(self) -> np.ndarray:
        """Which class is the zero-volume fines class, ``(n,)`` booleans."""
        return ~self.active()

    def on_top_edge(self) -> np.ndarray:
        """Which classes sit at the top of the grid in some component, ``(n,)`` booleans:
        those whose particles cannot merge with their equals (a pivot of at least half the
        ``product_limit``), where particles pile up when collisions beyond the grid are
        not counted."""
        top = [u >= 0.5 * limit for u, limit in zip(self.components, self.product_limit)]
        mesh = np.meshgrid(*top, indexing="ij")
        return np.any([m.ravel() for m in mesh], axis=0)

    def smallest(self) -> np.ndarray:
        """The smallest non-zero pivot of each component, ``(dim,)``."""
        return np.array([u[1] for u in self.components])


def pivot_weights(pivots: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-D fixed-pivot split of volumes ``w`` (``(m,)``, within ``[pivots[0], pivots[-1]]``).

    Returns ``(lower, a)``: the lower pivot index and the share of the particle it gets;
    the pivot above (``lower + 1``) gets ``1 - a`` (nothing at the last pivot).
    """
    w = np.asarray(w, dtype=float)
    lower = np.clip(np.searchsorted(pivots, w, side="right") - 1, 0, len(pivots) - 1)
    top = lower == len(pivots) - 1
    lo = pivots[lower]
    hi = pivots[np.minimum(lower + 1, len(pivots) - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(top, 1.0, (hi - w) / np.where(top, 1.0, hi - lo))
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
    has_upper = active & (lower + 1 < m)
    np.add.at(R, (upper[has_upper], cols[has_upper]), 1.0 - a[has_upper])
    return pivots, R


def cell_edges(pivots: np.ndarray) -> np.ndarray:
    """Volume edges of the cells around 1-D pivots: 0, the midpoints, and a last edge as
    far above the last pivot as the midpoint below it, ``(m + 1,)``."""
    mid = 0.5 * (pivots[1:] + pivots[:-1])
    last = pivots[-1] + (pivots[-1] - mid[-1])
    return np.concatenate([[0.0], mid, [last]])
