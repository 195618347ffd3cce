"""The indoor floor shipped with hpcopt: a 20 m x 12 m office, generated here.

A corridor 2 m wide runs along the floor's length; four rooms of different widths lie on
each side of it, each with a 1 m door onto the corridor. Outer walls, floor slab and
ceiling are concrete, room partitions plasterboard. Every wall is a closed box, so a ray
crossing it meets two surfaces. The region of interest is the whole floor,
``(0, 0)``-``(20, 12)`` m; the walls of a few rooms are named for reflectors.

Plan (y up; ``|`` and ``-`` are walls, gaps are doors)::

    12 +-------+--------+------+----------+
       | N1    | N2     | N3   | N4       |
     7 +--- ---+--- ----+-- ---+---- -----+
       |              corridor            |
     5 +--- ---+--- -+--- ---+---- -------+
       | S1    | S2  | S3    | S4         |
     0 +-------+-----+-------+------------+
       0       6     10      15           20

Regenerate the shipped files with ``python -m hpcopt.problems.coverage.office``.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

LENGTH, WIDTH, HEIGHT = 20.0, 12.0, 3.0
REGION = (0.0, 0.0, LENGTH, WIDTH)
"""The region of interest ``(x0, y0, x1, y1)`` in metres: the whole floor."""
CORRIDOR = (5.0, 7.0)
OUTER, PARTITION, SLAB, DOOR = 0.2, 0.1, 0.2, 1.0
SOUTH_ROOMS = (0.0, 6.0, 10.0, 15.0, LENGTH)  # x of the partitions, ends included
NORTH_ROOMS = (0.0, 5.5, 11.0, 14.5, LENGTH)
MATERIALS = {"concrete": OUTER / 2, "plasterboard": PARTITION / 2}
"""ITU materials and the thickness (m) Sionna gives each *surface* a ray crosses. Every wall
is a closed box, so a ray through it crosses two surfaces: each carries half the wall."""
MESHES = {"structure": "concrete", "partitions": "plasterboard"}
"""Each mesh (scene object) and its material."""

Point3 = tuple[float, float, float]
WALLS_FOR_REFLECTORS: dict[str, tuple[Point3, Point3, Point3]] = {
    # name: (corner, opposite corner, inward normal); 0.5 m to 2.5 m above the floor
    "north_room_2": ((6.0, WIDTH, 0.5), (10.5, WIDTH, 2.5), (0.0, -1.0, 0.0)),
    "south_room_4": ((15.5, 0.0, 0.5), (19.5, 0.0, 2.5), (0.0, 1.0, 0.0)),
    "corridor_east": ((LENGTH, CORRIDOR[0] + 0.2, 0.5), (LENGTH, CORRIDOR[1] - 0.2, 2.5),
                      (-1.0, 0.0, 0.0)),
}  # fmt: skip
"""Flat wall rectangles facing into a room, for a passive reflector."""


def wall_face_normal(a: Point3, b: Point3, tol: float = 1e-3) -> tuple[float, float, float] | None:
    """The outward normal of the vertical face of an office wall that the rectangle with
    opposite corners ``a`` and ``b`` lies on (within ``tol`` metres), or None."""
    lo_r, hi_r = np.minimum(a, b), np.maximum(a, b)
    for box_list in boxes().values():
        for lo, hi in box_list:
            for axis in (0, 1):
                other = 1 - axis
                for face, side in ((lo[axis], -1.0), (hi[axis], 1.0)):
                    flat = abs(lo_r[axis] - face) < tol and abs(hi_r[axis] - face) < tol
                    within = (
                        lo[other] - tol <= lo_r[other] and hi_r[other] <= hi[other] + tol
                        and lo[2] - tol <= lo_r[2] and hi_r[2] <= hi[2] + tol
                    )  # fmt: skip
                    if flat and within:
                        normal = [0.0, 0.0, 0.0]
                        normal[axis] = side
                        return (normal[0], normal[1], normal[2])
    return None


def scene_path() -> Path:
    """The shipped scene file (Mitsuba XML read by Sionna RT's ``load_scene``)."""
    return Path(__file__).parent / "scenes" / "office" / "office.xml"


def _box(
    lo: tuple[float, float, float], hi: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(8, 3)`` and outward-wound triangles ``(12, 3)`` of an axis-aligned box."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    v = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return v, np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])


def _wall_x(y: float, x0: float, x1: float, t: float, doors: list[float]) -> list:
    """A wall along x at ``y`` from ``x0`` to ``x1``, thickness ``t``, with door gaps centred
    at ``doors``."""
    cuts = [x0] + [c for d in doors for c in (d - DOOR / 2, d + DOOR / 2)] + [x1]
    return [((a, y - t / 2, 0.0), (b, y + t / 2, HEIGHT)) for a, b in zip(cuts[::2], cuts[1::2])]


def boxes() -> dict[str, list]:
    """The floor's boxes ``((x0, y0, z0), (x1, y1, z1))`` by mesh."""
    concrete = [
        ((-OUTER, -OUTER, -SLAB), (LENGTH + OUTER, WIDTH + OUTER, 0.0)),  # floor slab
        ((-OUTER, -OUTER, HEIGHT), (LENGTH + OUTER, WIDTH + OUTER, HEIGHT + SLAB)),  # ceiling
        ((-OUTER, -OUTER, 0.0), (LENGTH + OUTER, 0.0, HEIGHT)),  # south
        ((-OUTER, WIDTH, 0.0), (LENGTH + OUTER, WIDTH + OUTER, HEIGHT)),  # north
        ((-OUTER, 0.0, 0.0), (0.0, WIDTH, HEIGHT)),  # west
        ((LENGTH, 0.0, 0.0), (LENGTH + OUTER, WIDTH, HEIGHT)),  # east
    ]
    partitions = []
    for (y_lo, y_hi), xs, y_door in (
        ((0.0, CORRIDOR[0]), SOUTH_ROOMS, CORRIDOR[0]),
        ((CORRIDOR[1], WIDTH), NORTH_ROOMS, CORRIDOR[1]),
    ):
        doors = [(a + b) / 2 for a, b in itertools.pairwise(xs)]
        partitions += _wall_x(y_door, 0.0, LENGTH, PARTITION, doors)
        for x in xs[1:-1]:
            partitions.append(((x - PARTITION / 2, y_lo, 0.0), (x + PARTITION / 2, y_hi, HEIGHT)))
    return {"structure": concrete, "partitions": partitions}


def _ply(box_list: list) -> str:
    vertices, faces = [], []
    for lo, hi in box_list:
        v, f = _box(lo, hi)
        faces.append(f + 8 * len(vertices))
        vertices.append(v)
    v, f = np.concatenate(vertices), np.concatenate(faces)
    head = [
        "ply", "format ascii 1.0", f"element vertex {len(v)}", "property float x",
        "property float y", "property float z", f"element face {len(f)}",
        "property list uchar int vertex_indices", "end_header",
    ]  # fmt: skip
    rows = [f"{x:g} {y:g} {z:g}" for x, y, z in v] + [f"3 {a} {b} {c}" for a, b, c in f]
    return "\n".join(head + rows) + "\n"


def write_office_scene(folder: Path) -> Path:
    """Write ``office.xml`` and its meshes into ``folder``; return the XML's path."""
    folder = Path(folder)
    (folder / "meshes").mkdir(parents=True, exist_ok=True)
    xml = ['<scene version="2.1.0">']
    for material, thickness in MATERIALS.items():
        xml += [
            f'  <bsdf type="itu-radio-material" id="mat-{material}">',
            f'    <string name="type" value="{material}"/>',
            f'    <float name="thickness" value="{thickness:g}"/>',
            "  </bsdf>",
        ]
    for mesh, box_list in boxes().items():
        (folder / "meshes" / f"{mesh}.ply").write_text(_ply(box_list))
        xml += [
            f'  <shape type="ply" id="mesh-{mesh}">',
            f'    <string name="filename" value="meshes/{mesh}.ply"/>',
            '    <boolean name="face_normals" value="true"/>',
            f'    <ref id="mat-{MESHES[mesh]}" name="bsdf"/>',
            "  </shape>",
        ]
    path = folder / "office.xml"
    path.write_text("\n".join([*xml, "</scene>"]) + "\n")
    return path


def main() -> int:
    """Regenerate the shipped scene files in place."""
    print(write_office_scene(scene_path().parent), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
