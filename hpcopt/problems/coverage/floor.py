"""Which cells of a radio map are floor: geometry, decided once per scene, never power.

A radio map covers the region with square cells at the measurement height. A cell is
*floor* when its centre does not lie inside a wall or another solid of the scene: every
floor cell counts in the objective, whether or not a ray reached it. For the shipped
office this follows from the office's own description (its boxes); for any other scene
from ray casts against its meshes (:func:`inside_solids`), and the two agree on the
office (a test checks it).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def cell_centres(
    area: tuple[float, float, float, float], cell_size: float, height: float
) -> np.ndarray:
    """Centres ``(ny, nx, 3)`` of the cells of a radio map over ``area`` (metres).

    As Sionna RT's planar radio map lays them out: the region's size is rounded up to a
    whole number of cells about its centre, row ``i`` is ``y``, column ``j`` is ``x``.
    """
    x0, y0, x1, y1 = area
    # Sionna counts cells in float32 (dr.ceil of a Point2f): count them the same way
    c = np.float32(cell_size)
    nx, ny = (int(np.ceil(np.float32(s) / c)) for s in (x1 - x0, y1 - y0))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    xs = cx + (np.arange(nx) + 0.5) * cell_size - 0.5 * nx * cell_size
    ys = cy + (np.arange(ny) + 0.5) * cell_size - 0.5 * ny * cell_size
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy, np.full_like(gx, height)], axis=-1)


def inside_boxes(points: np.ndarray, boxes: list) -> np.ndarray:
    """Mask ``(...)`` of the points ``(..., 3)`` inside any axis-aligned box
    ``((x0, y0, z0), (x1, y1, z1))`` (a point on a box face is inside)."""
    p = np.asarray(points, dtype=float)
    inside = np.zeros(p.shape[:-1], dtype=bool)
    for lo, hi in boxes:
        inside |= np.all((p >= np.asarray(lo)) & (p <= np.asarray(hi)), axis=-1)
    return inside


_DIRECTIONS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float
)


def inside_solids(
    mi: Any, mi_scene: Any, points: np.ndarray, max_thickness_m: float = 1.0
) -> np.ndarray:
    """Mask ``(...)`` of the points ``(..., 3)`` that lie inside a wall-like solid of a
    Mitsuba scene: from inside a solid, the first surface a ray meets faces away from it.

    Rays go both ways along each axis; a point is inside when, along some axis, both rays
    first meet a back face (the meshes' normals point out of their solids, as Sionna's
    scenes and the shipped office have them) less than ``max_thickness_m`` apart. Asking
    for both rays of one axis, not all six, keeps a point inside a wall inside where the
    wall touches or overlaps another solid (the floor slab, a crossing wall), whose face a
    third ray may meet first. The thickness limit keeps the inside of a closed room shell
    (a scene that is one box) floor. Rays that escape the scene count as outside.
    """
    p = np.asarray(points, dtype=float)
    flat = p.reshape(-1, 3)
    origin = mi.Point3f(*(mi.Float(flat[:, k].astype(np.float32)) for k in range(3)))
    back, distance = [], []
    for d in _DIRECTIONS:
        ray = mi.Ray3f(origin, mi.Vector3f(*(float(c) for c in d)))
        si = mi_scene.ray_intersect(ray)
        valid = np.asarray(si.is_valid(), dtype=bool)
        normal = np.stack([np.asarray(si.n[k]) for k in range(3)], axis=-1)
        back.append(valid & ((normal @ d) > 0))
        distance.append(np.where(valid, np.asarray(si.t, dtype=float), np.inf))
    both = np.array(back).reshape(3, 2, -1).all(axis=1)
    thin = np.array(distance).reshape(3, 2, -1).sum(axis=1) < max_thickness_m
    return (both & thin).any(axis=0).reshape(p.shape[:-1])
