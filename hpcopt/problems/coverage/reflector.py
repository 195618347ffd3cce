"""The passive reflector: a thin metal plate on a wall, turned to face a focal point.

Geometry only (numpy, no Sionna), so it is tested on its own: where on its wall the plate
sits for a placement ``(u, v)`` in ``[0, 1]^2``, how Sionna RT's ``SceneObject.look_at``
turns it (mirrored here, checked against Sionna in the tests), how far off the wall its
centre must sit so that no part of it enters the wall, and the plate's mesh.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Point3 = tuple[float, float, float]

_POLE = float(np.finfo(np.float32).eps) * 100
"""Sionna's ``EPSILON_FLOAT``: below this horizontal length a look-at direction is vertical
and its azimuth is pinned to 0."""
_SCAN = 64
"""Offsets tried off the wall before bisection; see :meth:`WallFrame.place_plate`."""


def look_at_orientation(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orientation ``(alpha, beta, gamma)`` in radians (rotations about z, y, x) that
    Sionna RT's ``look_at`` gives an object at ``centre`` facing ``target`` (metres,
    shapes ``(..., 3)``, broadcast): its +x axis points at the target, the world z-axis is
    up, ``gamma = 0``; a vertical direction gets ``alpha = 0``, as in Sionna.
    Returns shape ``(..., 3)``. Raises ValueError where target and centre coincide."""
    d = np.asarray(target, float) - np.asarray(centre, float)
    length = np.linalg.norm(d, axis=-1, keepdims=True)
    if np.any(length < 1e-8):  # Sionna's isclose(norm, 0)
        raise ValueError("the look-at target coincides with the plate's centre")
    d = d / length
    rho = np.hypot(d[..., 0], d[..., 1])
    theta = np.arctan2(rho, d[..., 2])
    alpha = np.where(rho < _POLE, 0.0, np.arctan2(d[..., 1], d[..., 0]))
    return np.stack([alpha, theta - np.pi / 2, np.zeros_like(alpha)], axis=-1)


def rotation_matrix(orientation: np.ndarray) -> np.ndarray:
    """Sionna RT's rotation for ``orientation = (alpha, beta, gamma)`` in radians, shape
    ``(..., 3)``: ``Rz(alpha) Ry(beta) Rx(gamma)``, shape ``(..., 3, 3)``. Its columns are
    the object's x, y, z axes in world coordinates."""
    a, b, c = np.moveaxis(np.asarray(orientation, float), -1, 0)
    sa, ca, sb, cb, sc, cc = np.sin(a), np.cos(a), np.sin(b), np.cos(b), np.sin(c), np.cos(c)
    rows = [
        [ca * cb, ca * sb * sc - sa * cc, ca * sb * cc + sa * sc],
        [sa * cb, sa * sb * sc + ca * cc, sa * sb * cc - ca * sc],
        [-sb, cb * sc, cb * cc],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def _plate_corners(width: float, height: float, thickness: float) -> np.ndarray:
    """The plate's 8 corners ``(8, 3)`` in its own frame (centred, facing +x), in the order
    of its mesh's vertices."""
    hx, hy, hz = thickness / 2, width / 2, height / 2
    return np.array([[x, y, z] for x in (-hx, hx) for y in (-hy, hy) for z in (-hz, hz)])


def plate_vertices(
    centre: np.ndarray, rotation: np.ndarray, width: float, height: float, thickness: float = 0.01
) -> np.ndarray:
    """World vertices ``(8, 3)`` in metres of a ``width`` x ``height`` x ``thickness`` plate
    centred on ``centre`` ``(3,)`` and turned by ``rotation`` ``(3, 3)``, in the order of
    :func:`plate_mesh`'s vertices."""
    corners = _plate_corners(width, height, thickness)
    return np.asarray(centre, float) + corners @ np.asarray(rotation).T


@dataclass(frozen=True)
class PlatePlacement:
    """Where a plate sits and how it is turned, in metres: its ``centre`` ``(3,)``, the unit
    ``normal`` ``(3,)`` from the centre to the focus (the plate's +x axis), the
    ``orientation`` ``(3,)`` in radians and ``rotation`` ``(3, 3)`` that Sionna's
    ``look_at(focus)`` gives it there, and its world ``vertices`` ``(8, 3)``."""

    centre: np.ndarray
    normal: np.ndarray
    orientation: np.ndarray
    rotation: np.ndarray
    vertices: np.ndarray


@dataclass(frozen=True)
class WallFrame:
    """A wall rectangle: ``origin`` (a corner), edge vectors ``along`` (horizontal) and
    ``up`` (vertical), and the unit ``normal`` pointing into the room. Metres."""

    origin: np.ndarray
    along: np.ndarray
    up: np.ndarray
    normal: np.ndarray

    @classmethod
    def from_corners(cls, a: Point3, b: Point3, towards: Point3) -> WallFrame:
        """The rectangle with opposite corners ``a`` and ``b`` on a vertical wall; its normal
        is the horizontal one on the side of the point ``towards`` (e.g. the room's centre)."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        d = b - a
        if abs(d[2]) == 0 or np.hypot(d[0], d[1]) == 0:
            raise ValueError(
                f"wall corners {a.tolist()} and {b.tolist()} do not span a vertical rectangle"
            )
        along = np.array([d[0], d[1], 0.0])
        up = np.array([0.0, 0.0, d[2]])
        normal = np.array([-along[1], along[0], 0.0]) / np.hypot(along[0], along[1])
        if np.dot(np.asarray(towards, float) - a, normal) < 0:
            normal = -normal
        return cls(a, along, up, normal)

    def place(self, u: float, v: float, width: float, height: float, offset: float) -> np.ndarray:
        """Centre of a ``width`` x ``height`` plate at ``(u, v)``: ``(0, 0)`` puts it in the
        corner ``origin``, ``(1, 1)`` in the opposite one; it never overhangs the wall
        (unless it is larger than the wall, then it is centred). ``offset`` off the wall.
        The plate is taken flat against the wall: use :meth:`place_plate` for one turned to
        a focus."""
        centre = self.origin.copy()
        for edge, size, t in ((self.along, width, u), (self.up, height, v)):
            length = float(np.linalg.norm(edge))
            room = max(length - size, 0.0)
            centre += edge / length * ((length - room) / 2 + t * room)
        return centre + offset * self.normal

    def in_front(self, points: np.ndarray) -> np.ndarray:
        """Whether each point lies strictly on the room side of the wall's plane: points
        ``(n, 3)``, or ``(n, 2)`` as ``(x, y)`` at any height (the normal is horizontal).
        Returns a bool mask ``(n,)``; a point on the plane is not in front."""
        p = np.atleast_2d(np.asarray(points, float))
        if p.shape[-1] == 2 and self.normal[2] != 0:
            raise ValueError("points (x, y) at any height need a wall with a horizontal normal")
        k = p.shape[-1]
        return (p - self.origin[:k]) @ self.normal[:k] > 0

    def place_plate(
        self,
        u: float,
        v: float,
        width: float,
        height: float,
        focus: np.ndarray,
        clearance: float,
        thickness: float = 0.01,
    ) -> PlatePlacement:
        """A ``width`` x ``height`` x ``thickness`` plate at ``(u, v)`` on the wall (as in
        :meth:`place`), turned as Sionna's ``look_at(focus)`` turns it, with every vertex at
        least ``clearance`` on the room side of the wall face. Metres; ``focus`` ``(3,)``.

        The centre moves out along the wall's normal from its point on the wall, to the
        least offset ``s`` at which the plate, facing the focus *from there*, clears the
        wall: turning it changes how far it reaches back, and moving it changes where it
        faces, so ``s`` solves ``margin(s) >= clearance`` rather than a closed form. At
        ``s_max = clearance + half the plate's diagonal`` every orientation clears (the
        plate lies in the ball of that radius), so the search is over ``[0, s_max]``: a
        scan of evenly spaced offsets finds the first that clears, and bisection against
        the one before narrows it to 1 nm, always keeping the clearing end. A clearing
        stretch narrower than the scan step (``s_max / 63``) can be stepped over; the plate
        then sits that much further out, never closer. A focus between the wall and the
        plate (closer to the wall than ``s``) leaves the plate facing back towards the wall.

        Raises ValueError where the focus is where the plate's centre has to be."""
        focus = np.asarray(focus, float)
        base = self.place(u, v, width, height, 0.0)
        half = np.array([thickness, width, height]) / 2
        reach_max = float(np.linalg.norm(half))

        def clears(s: np.ndarray) -> np.ndarray:
            centres = base + s[:, None] * self.normal
            apart = np.linalg.norm(focus - centres, axis=-1) >= 1e-8
            rotation = rotation_matrix(look_at_orientation(centres[apart], focus))
            # how far each turned plate reaches back towards the wall from its centre
            reach = np.abs(np.einsum("i,nij->nj", self.normal, rotation)) @ half
            ok = np.zeros(len(s), dtype=bool)
            ok[apart] = s[apart] - reach >= clearance
            return ok

        offsets = np.linspace(0.0, clearance + reach_max, _SCAN)
        ok = clears(offsets)
        if not ok.any():  # only where the focus is the centre at s_max
            raise ValueError(f"the focus {focus.tolist()} lies where the plate must be")
        first = int(np.argmax(ok))
        lo, hi = offsets[max(first - 1, 0)], offsets[first]
        while hi - lo > 1e-9:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if clears(np.array([mid]))[0] else (mid, hi)
        centre = base + hi * self.normal
        orientation = look_at_orientation(centre, focus)
        rotation = rotation_matrix(orientation)
        return PlatePlacement(
            centre=centre,
            normal=rotation[:, 0],
            orientation=orientation,
            rotation=rotation,
            vertices=plate_vertices(centre, rotation, width, height, thickness),
        )


def plate_mesh(
    width: float, height: float, thickness: float = 0.01, folder: Path | None = None
) -> Path:
    """Write a plate (a thin box) as a PLY file and return its path. In its own frame it is
    centred on the origin and faces +x (Sionna's ``look_at`` turns +x to the target)."""
    corners = _plate_corners(width, height, thickness)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    triangles = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    lines = [
        "ply", "format ascii 1.0", f"element vertex {len(corners)}",
        "property float x", "property float y", "property float z",
        f"element face {len(triangles)}", "property list uchar int vertex_indices", "end_header",
        *(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in corners),
        *(f"3 {a} {b} {c}" for a, b, c in triangles),
    ]  # fmt: skip
    folder = Path(folder or tempfile.mkdtemp(prefix="hpcopt-plate-"))
    path = folder / f"plate-{width:g}x{height:g}.ply"
    path.write_text("\n".join(lines) + "\n")
    return path
