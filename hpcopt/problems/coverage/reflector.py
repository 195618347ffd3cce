"""The passive reflector: a thin metal plate on a wall, turned to face a focal point.

Geometry only (numpy, no Sionna), so it is tested on its own: where on its wall the plate
sits for a placement ``(u, v)`` in ``[0, 1]^2``, and the plate's mesh.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Point3 = tuple[float, float, float]


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
        (unless it is larger than the wall, then it is centred). ``offset`` off the wall."""
        centre = self.origin.copy()
        for edge, size, t in ((self.along, width, u), (self.up, height, v)):
            length = float(np.linalg.norm(edge))
            room = max(length - size, 0.0)
            centre += edge / length * ((length - room) / 2 + t * room)
        return centre + offset * self.normal


def plate_mesh(
    width: float, height: float, thickness: float = 0.01, folder: Path | None = None
) -> Path:
    """Write a plate (a thin box) as a PLY file and return its path. In its own frame it is
    centred on the origin and faces +x (Sionna's ``look_at`` turns +x to the target)."""
    hx, hy, hz = thickness / 2, width / 2, height / 2
    corners = np.array([[x, y, z] for x in (-hx, hx) for y in (-hy, hy) for z in (-hz, hz)])
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
