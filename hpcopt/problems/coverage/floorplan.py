"""A small office floor for the coverage problem, generated with numpy as a Sionna RT scene.

The floor is 20 m x 12 m inside, 3 m from floor to ceiling. A corridor 2 m wide runs along
its length; four rooms of different widths lie on each side, each with a 1 m door (2.1 m
high) onto the corridor, and a window in the facade. The meeting room ``north_room_2`` has
a glass wall to the corridor. Plan (y up, 2 characters a metre; ``-`` and ``|`` walls, ``=``
windows, ``:`` glass wall, gaps doors; the north dividers stand at x = 6, 10 and 14.5)::

      12 +-========--+-====--+-=====--+-=======--+
         | north_    | north_| north_ | north_   |
         | room_1    | room_2| room_3 | room_4   |
         |           | (meet)|        |          |
       7 +--------  -+::  :::+  ------+  --------+
         |                corridor               |
       5 +----  -+  -------+----  -+  -----------+
         | south_| south_  | south_| south_      |
         | room_1| room_2  | room_3| room_4      |
         |       |         |       |             |
       0 +-====--+-======--+-====--+-==========--+
         0       4         9       13           20  x (m)

Outer walls (0.25 m), floor slab and ceiling (0.2 m) are concrete, partitions (0.1 m)
plasterboard, windows and the meeting room's wall glass. The interior is ``0 <= x <= 20``,
``0 <= y <= 12``, ``0 <= z <= 3``; outer walls, slab and ceiling lie outside it.

Every wall is a closed box (6 faces), so a ray crossing it meets two surfaces. Sionna RT
models each surface it meets as a slab of its material's ``thickness``; the ``thickness`` in
the XML is therefore that of one face's layer (a 12.5 mm plasterboard sheet, a 6 mm pane,
half a concrete wall or slab), lest the loss through a wall count twice. Each crossing also
costs two of the solver's ``max_depth`` interactions: at ``max_depth=3`` a ray crosses one
wall at most, so a room two walls from the transmitter gets only what comes through doors.

The shipped files (``scenes/office/office.xml`` and ``meshes/*.ply``) are regenerated with
``python -m hpcopt.problems.coverage.floorplan``; a test checks they match this module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

Point3 = tuple[float, float, float]
Box = tuple[Point3, Point3]
"""An axis-aligned box by its lowest and highest corners ``((x0, y0, z0), (x1, y1, z1))``, m."""
Rect = tuple[float, float, float, float]
"""A floor rectangle ``(x0, y0, x1, y1)`` in metres."""

FLOOR_SIZE: tuple[float, float] = (20.0, 12.0)
"""Inside dimensions of the floor along x and y (m)."""
HEIGHT = 3.0
"""Floor to ceiling (m)."""
REGION: Rect = (0.0, 0.0, FLOOR_SIZE[0], FLOOR_SIZE[1])
"""Where coverage is measured, ``(x0, y0, x1, y1)`` in m: the whole interior of the floor."""
CORRIDOR: tuple[float, float] = (5.0, 7.0)
"""The corridor's clear extent in y (m); it runs the floor's full length in x."""

OUTER_WALL = 0.25  # concrete facade and end walls
SLAB = 0.2  # concrete floor slab and ceiling
PARTITION = 0.1  # stud walls: two plasterboard sheets on a frame
GLAZING = 0.024  # a double-glazed window unit: two panes and the gap
DOOR_WIDTH, DOOR_HEIGHT = 1.0, 2.1
SILL, WINDOW_HEAD = 0.9, 2.4  # window heights above the floor
WINDOW_MARGIN = 1.0  # solid facade kept on each side of a room's window

# Room dividers (centre lines, x in m) on each side of the corridor, and the x of the centre
# of each room's door, west to east. Doors sit near a corner, as they usually do.
SOUTH_DIVIDERS = (4.0, 9.0, 13.0)
NORTH_DIVIDERS = (6.0, 10.0, 14.5)
SOUTH_DOORS = (3.2, 4.8, 12.2, 13.8)
NORTH_DOORS = (5.2, 8.0, 10.8, 15.3)
MEETING_ROOM = "north_room_2"  # its corridor wall is glass

OBJECTS: dict[str, tuple[str, float]] = {
    "floor": ("concrete", SLAB / 2),
    "ceiling": ("concrete", SLAB / 2),
    "outer_walls": ("concrete", OUTER_WALL / 2),
    "windows": ("glass", 0.006),
    "partitions": ("plasterboard", 0.0125),
    "glass_wall": ("glass", 0.006),
}
"""Scene objects: their ITU material type and the ``thickness`` (m) Sionna gives each of
their faces. Each has a material of its own, so ``load_scene`` does not merge them."""


def _rooms() -> dict[str, Rect]:
    rooms: dict[str, Rect] = {}
    half = PARTITION / 2
    for side, dividers, (y0, y1) in (
        ("south", SOUTH_DIVIDERS, (0.0, CORRIDOR[0] - PARTITION)),
        ("north", NORTH_DIVIDERS, (CORRIDOR[1] + PARTITION, FLOOR_SIZE[1])),
    ):
        edges = [0.0, *(x + s for x in dividers for s in (-half, half)), FLOOR_SIZE[0]]
        for i, (x0, x1) in enumerate(zip(edges[::2], edges[1::2]), start=1):
            rooms[f"{side}_room_{i}"] = (x0, y0, x1, y1)
    rooms["corridor"] = (0.0, CORRIDOR[0], FLOOR_SIZE[0], CORRIDOR[1])
    return rooms


ROOMS: dict[str, Rect] = _rooms()
"""Clear floor area of each room and of the corridor, ``(x0, y0, x1, y1)`` in m."""


class Wall(NamedTuple):
    """A flat wall rectangle facing into a room: two opposite corners on the wall's surface
    (world coordinates, m; they differ in the two in-plane axes) and the unit normal
    pointing into the room."""

    corner_a: Point3
    corner_b: Point3
    normal: Point3


def _walls_for_reflectors() -> dict[str, Wall]:
    r = ROOMS
    z0, z1, m = 0.5, 2.5, 0.2  # 0.5 m to 2.5 m above the floor, 0.2 m clear of the corners
    x_max = FLOOR_SIZE[0]

    def on_x(x: float, room: Rect, inward: float) -> Wall:
        # A wall of constant x spanning the room's depth in y.
        return Wall((x, room[1] + m, z0), (x, room[3] - m, z1), (inward, 0.0, 0.0))

    return {
        # the meeting room's east divider (plasterboard), seen from inside the room
        "north_room_2": on_x(r["north_room_2"][2], r["north_room_2"], -1.0),
        # the east end wall (concrete) of the north-east room
        "north_room_4": on_x(x_max, r["north_room_4"], -1.0),
        # the west end wall (concrete) of the south-west room
        "south_room_1": on_x(0.0, r["south_room_1"], 1.0),
        # the west divider (plasterboard) of south_room_3
        "south_room_3": on_x(r["south_room_3"][0], r["south_room_3"], 1.0),
        # the east end of the corridor (concrete), facing down the corridor
        "corridor_east": on_x(x_max, r["corridor"], -1.0),
    }


WALLS_FOR_REFLECTORS: dict[str, Wall] = _walls_for_reflectors()
"""Wall rectangles where a passive reflector can hang, keyed by the room (of :data:`ROOMS`)
they face into, or ``corridor_east`` for the corridor's end wall: solid (no door or window),
0.5 m to 2.5 m above the floor. Each is a :class:`Wall` ``(corner_a, corner_b, normal)``,
a plain tuple too: ``WALLS_FOR_REFLECTORS[name][:2]`` are the corners."""


def scene_path() -> Path:
    """The shipped scene file, ``scenes/office/office.xml`` (Mitsuba XML for Sionna RT's
    ``load_scene``)."""
    return Path(__file__).parent / "scenes" / "office" / "office.xml"


def _wall_x(y0: float, y1: float, x0: float, x1: float, openings: list[tuple]) -> list[Box]:
    """A full-height wall along x, between ``y0`` and ``y1``, from ``x0`` to ``x1``, with
    ``openings`` ``(xa, xb, za, zb)`` (doors, windows) cut out; the parts below and above
    an opening (sill, lintel) are boxes of their own."""
    boxes: list[Box] = []
    start = x0
    for xa, xb, za, zb in sorted(openings):
        if xa > start:
            boxes.append(((start, y0, 0.0), (xa, y1, HEIGHT)))
        if za > 0.0:
            boxes.append(((xa, y0, 0.0), (xb, y1, za)))
        if zb < HEIGHT:
            boxes.append(((xa, y0, zb), (xb, y1, HEIGHT)))
        start = xb
    if x1 > start:
        boxes.append(((start, y0, 0.0), (x1, y1, HEIGHT)))
    return boxes


def boxes() -> dict[str, list[Box]]:
    """Every box of the floor, by scene object (the keys of :data:`OBJECTS`), in m."""
    length, width = FLOOR_SIZE
    o, h = OUTER_WALL, HEIGHT
    out: dict[str, list[Box]] = {name: [] for name in OBJECTS}
    out["floor"].append(((-o, -o, -SLAB), (length + o, width + o, 0.0)))
    out["ceiling"].append(((-o, -o, h), (length + o, width + o, h + SLAB)))

    # Facades, with a window centred in each room; the end walls are solid.
    for side, (y0, y1) in (("south", (-o, 0.0)), ("north", (width, width + o))):
        windows = []
        for name, (x0, _, x1, _) in ROOMS.items():
            if name.startswith(side):
                windows.append((x0 + WINDOW_MARGIN, x1 - WINDOW_MARGIN, SILL, WINDOW_HEAD))
        out["outer_walls"] += _wall_x(y0, y1, -o, length + o, windows)
        mid = (y0 + y1) / 2
        for xa, xb, za, zb in windows:
            out["windows"].append(((xa, mid - GLAZING / 2, za), (xb, mid + GLAZING / 2, zb)))
    out["outer_walls"].append(((-o, 0.0, 0.0), (0.0, width, h)))
    out["outer_walls"].append(((length, 0.0, 0.0), (length + o, width, h)))

    # Corridor walls, with the doors; the meeting room's stretch is glass.
    for y0, doors, glass_room in (
        (CORRIDOR[0] - PARTITION, SOUTH_DOORS, None),
        (CORRIDOR[1], NORTH_DOORS, MEETING_ROOM),
    ):
        y1 = y0 + PARTITION
        cuts = [(d - DOOR_WIDTH / 2, d + DOOR_WIDTH / 2, 0.0, DOOR_HEIGHT) for d in doors]
        if glass_room is not None:
            # The glass stretch is a full-height opening in the plasterboard wall, filled
            # with a glass wall that has the room's door in it.
            gx0, _, gx1, _ = ROOMS[glass_room]
            glass = [c for c in cuts if gx0 < c[0] and c[1] < gx1]
            cuts = [c for c in cuts if c not in glass] + [(gx0, gx1, 0.0, h)]
            out["glass_wall"] += _wall_x(y0, y1, gx0, gx1, glass)
        out["partitions"] += _wall_x(y0, y1, 0.0, length, cuts)

    # Room dividers, from the facade to the corridor wall.
    half = PARTITION / 2
    for dividers, (y0, y1) in (
        (SOUTH_DIVIDERS, (0.0, CORRIDOR[0] - PARTITION)),
        (NORTH_DIVIDERS, (CORRIDOR[1] + PARTITION, width)),
    ):
        out["partitions"] += [((x - half, y0, 0.0), (x + half, y1, h)) for x in dividers]
    return out


# The 12 triangles of a box whose 8 corners are numbered i = 4*ix + 2*iy + iz, each quad
# wound counter-clockwise seen from outside, so the face normals point out of the box.
_QUADS = ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3))
_TRIANGLES = np.array([t for a, b, c, d in _QUADS for t in ((a, b, c), (a, c, d))])


def box_mesh(box_list: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(8 n, 3)`` (m) and outward-wound triangles ``(12 n, 3)`` of ``n`` boxes."""
    vertices, faces = [], []
    for i, ((x0, y0, z0), (x1, y1, z1)) in enumerate(box_list):
        if not (x0 < x1 and y0 < y1 and z0 < z1):
            raise ValueError(f"empty box {((x0, y0, z0), (x1, y1, z1))}")
        vertices.append([(x, y, z) for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])
        faces.append(_TRIANGLES + 8 * i)
    return np.array(vertices, float).reshape(-1, 3), np.concatenate(faces)


def _ply(box_list: list[Box]) -> bytes:
    """ASCII PLY of the boxes: small, diffable, and identical wherever it is written."""
    v, f = box_mesh(box_list)
    v = np.round(v, 4) + 0.0  # + 0.0 turns -0.0 into 0.0
    lines = [
        "ply", "format ascii 1.0", "comment hpcopt.problems.coverage.floorplan",
        f"element vertex {len(v)}", "property float x", "property float y", "property float z",
        f"element face {len(f)}", "property list uchar int vertex_indices", "end_header",
        *(f"{x:g} {y:g} {z:g}" for x, y, z in v),
        *(f"3 {a} {b} {c}" for a, b, c in f),
    ]  # fmt: skip
    return ("\n".join(lines) + "\n").encode("ascii")


def _xml() -> bytes:
    lines = ['<scene version="2.1.0">', "", "<!-- Materials: ITU types; thickness = one face's"]
    lines += ["     layer (m), as every wall is a closed box and a ray crosses two faces -->", ""]
    for name, (itu, thickness) in OBJECTS.items():
        lines += [
            f'\t<bsdf type="itu-radio-material" id="mat-{itu}_{name}">',
            f'\t\t<string name="type" value="{itu}"/>',
            f'\t\t<float name="thickness" value="{thickness:g}"/>',
            "\t</bsdf>",
        ]
    lines += ["", "<!-- Shapes -->", ""]
    for name, (itu, _) in OBJECTS.items():
        lines += [
            f'\t<shape type="ply" id="mesh-{name}">',
            f'\t\t<string name="filename" value="meshes/{name}.ply"/>',
            '\t\t<boolean name="face_normals" value="true"/>',
            f'\t\t<ref id="mat-{itu}_{name}" name="bsdf"/>',
            "\t</shape>",
        ]
    return ("\n".join([*lines, "</scene>"]) + "\n").encode("ascii")


def scene_files() -> dict[str, bytes]:
    """The scene's files, by path relative to the scene folder: ``office.xml`` and
    ``meshes/<object>.ply``."""
    files = {"office.xml": _xml()}
    for name, box_list in boxes().items():
        files[f"meshes/{name}.ply"] = _ply(box_list)
    return files


def write_office_scene(folder: Path) -> Path:
    """Write ``office.xml`` and ``meshes/*.ply`` into ``folder`` (created if need be) and
    return the XML's path. Files of other names in ``folder`` are left alone."""
    folder = Path(folder)
    for rel, data in scene_files().items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)  # bytes: no newline translation, identical on every OS
    return folder / "office.xml"


def main() -> int:
    """Regenerate the shipped scene in place, removing meshes it no longer has."""
    folder = scene_path().parent
    xml = write_office_scene(folder)
    keep = {Path(rel).name for rel in scene_files() if rel.startswith("meshes/")}
    for stale in sorted((folder / "meshes").glob("*.ply")):
        if stale.name not in keep:
            stale.unlink()
            print(f"removed {stale}", file=sys.stderr)
    print(xml, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
