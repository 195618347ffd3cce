"""The shipped office floor: its files, its geometry, and what Sionna RT makes of it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hpcopt.problems.coverage import floorplan as fp

# Dr.Jit's LLVM backend (Sionna RT on the CPU) finds libLLVM only through this variable, read
# when mitsuba is first imported; floorplan itself does not import it. A value already set
# in the environment wins.
os.environ.setdefault("DRJIT_LIBLLVM_PATH", "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1")

TX_ROOM, ACROSS = "south_room_2", ("north_room_1", "north_room_2")
TX_HEIGHT, PLANE_HEIGHT, TX_POWER_DBM = 2.5, 1.5, 20.0


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.*")}


def _in(rect: fp.Rect, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = rect
    return (x > x0) & (x < x1) & (y > y0) & (y < y1)


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    xml = fp.write_office_scene(tmp_path / "office")
    assert xml == tmp_path / "office" / "office.xml"
    fresh, shipped = _tree(xml.parent), _tree(fp.scene_path().parent)
    assert sorted(shipped) == sorted(fresh), "run python -m hpcopt.problems.coverage.floorplan"
    for name, data in fresh.items():
        assert shipped[name] == data, f"{name} is stale: regenerate the shipped scene"
    assert sum(map(len, fresh.values())) < 100_000  # it ships with the package


def test_geometry():
    length, width = fp.FLOOR_SIZE
    assert (0.0, 0.0, length, width) == fp.REGION
    assert fp.CORRIDOR[1] - fp.CORRIDOR[0] == pytest.approx(2.0)
    boxes = fp.boxes()
    assert set(boxes) == set(fp.OBJECTS)
    every = [b for bl in boxes.values() for b in bl]
    vertices, triangles = fp.box_mesh(every)
    assert vertices.shape == (8 * len(every), 3) and triangles.shape == (12 * len(every), 3)
    # Every triangle's normal (from its winding) points out of its box.
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    centres = np.repeat(vertices.reshape(-1, 8, 3).mean(axis=1), 12, axis=0)
    assert (np.einsum("ij,ij->i", np.cross(b - a, c - a), (a + b + c) / 3 - centres) > 0).all()
    # Inside the floor, every wall stands from floor to ceiling.
    inner = [b for name in ("partitions", "glass_wall") for b in boxes[name]]
    assert all(0 <= lo[0] < hi[0] <= length and 0 <= lo[1] < hi[1] <= width for lo, hi in inner)
    assert all(lo[2] in (0.0, fp.DOOR_HEIGHT) and hi[2] in (fp.DOOR_HEIGHT, fp.HEIGHT)
               for lo, hi in inner)  # fmt: skip
    # Rooms of different sizes, each with one door onto the corridor.
    rooms = {k: v for k, v in fp.ROOMS.items() if k != "corridor"}
    assert len(rooms) == 8 and len({round(x1 - x0, 2) for x0, _, x1, _ in rooms.values()}) >= 5
    for doors, side in ((fp.SOUTH_DOORS, "south"), (fp.NORTH_DOORS, "north")):
        for i, d in enumerate(doors, start=1):
            x0, _, x1, _ = fp.ROOMS[f"{side}_room_{i}"]
            assert x0 < d - fp.DOOR_WIDTH / 2 and d + fp.DOOR_WIDTH / 2 < x1


@pytest.mark.parametrize("name", sorted(fp.WALLS_FOR_REFLECTORS))
def test_reflector_walls_are_solid_and_face_their_room(name):
    a, b, normal = (np.array(p) for p in fp.WALLS_FOR_REFLECTORS[name])
    room = name if name in fp.ROOMS else name.rsplit("_", 1)[0]  # corridor_east: corridor
    assert fp.WALLS_FOR_REFLECTORS[name][:2] == (tuple(a), tuple(b))
    assert np.linalg.norm(normal) == pytest.approx(1.0) and normal[2] == 0
    assert abs(np.dot(b - a, normal)) < 1e-12  # the rectangle lies in the wall's plane
    assert np.count_nonzero(b - a) == 2 and b[2] - a[2] >= 1.0
    # Sample the rectangle: every point is on the surface of a solid box (not in a door or
    # window), the box lies behind it, and the room in front of it.
    walls = [box for key in ("outer_walls", "partitions") for box in fp.boxes()[key]]
    i, j = np.flatnonzero(b - a)  # the two in-plane axes
    for t, s in np.stack(np.meshgrid(np.linspace(0, 1, 9), np.linspace(0, 1, 9))).reshape(2, -1).T:
        p = a.copy()
        p[i], p[j] = a[i] + t * (b[i] - a[i]), a[j] + s * (b[j] - a[j])
        behind, front = p - 0.01 * normal, p + 0.01 * normal
        assert any(np.all(behind >= lo) and np.all(behind <= hi) for lo, hi in walls), p
        assert not any(np.all(front > lo) and np.all(front < hi) for lo, hi in walls), p
        assert _in(fp.ROOMS[room], front[0], front[1]), p


@pytest.fixture(scope="module")
def rt():
    """Sionna RT on the CPU (Dr.Jit LLVM), polarised, as the coverage problem runs it."""
    mi = pytest.importorskip("mitsuba")
    mi.set_variant("llvm_ad_mono_polarized")
    return pytest.importorskip("sionna.rt")


@pytest.mark.sionna
@pytest.mark.slow
def test_sionna_loads_the_office(rt):
    scene = rt.load_scene(str(fp.scene_path()))
    assert set(scene.objects) == set(fp.OBJECTS)
    for name, (itu, thickness) in fp.OBJECTS.items():
        material = scene.get(name).radio_material
        assert material.itu_type == itu
        assert float(material.thickness[0]) == pytest.approx(thickness)


@pytest.fixture(scope="module")
def radio_map(rt):
    """One radio map at 5.2 GHz over the whole floor, 0.5 m cells at 1.5 m, from an
    isotropic 20 dBm transmitter 2.5 m up in the middle of ``TX_ROOM``."""
    scene = rt.load_scene(str(fp.scene_path()))
    scene.frequency = 5.2e9
    array = {"num_rows": 1, "num_cols": 1, "pattern": "iso", "polarization": "V"}
    scene.tx_array, scene.rx_array = rt.PlanarArray(**array), rt.PlanarArray(**array)
    x0, y0, x1, y1 = fp.ROOMS[TX_ROOM]
    tx = [(x0 + x1) / 2, (y0 + y1) / 2, TX_HEIGHT]
    scene.add(rt.Transmitter("ap", position=tx, power_dbm=TX_POWER_DBM))
    rx0, ry0, rx1, ry1 = fp.REGION
    rm = rt.RadioMapSolver()(
        scene, center=[(rx0 + rx1) / 2, (ry0 + ry1) / 2, PLANE_HEIGHT], orientation=[0, 0, 0],
        size=[rx1 - rx0, ry1 - ry0], cell_size=[0.5, 0.5], samples_per_tx=10**5, max_depth=3,
    )  # fmt: skip
    return rm, np.array(tx)


@pytest.mark.sionna
@pytest.mark.slow
def test_radio_map_shape_and_units(radio_map):
    rm, tx = radio_map
    rss = rm.rss.numpy()  # W
    assert rss.shape == (1, 24, 40)  # (transmitters, y cells, x cells) over 12 m x 20 m
    centres = rm.cell_centers.numpy()
    assert centres.shape == (24, 40, 3)
    assert np.allclose(centres[0, 0], (0.25, 0.25, PLANE_HEIGHT))
    assert np.allclose(centres[-1, -1], (19.75, 11.75, PLANE_HEIGHT))
    # Units: the cell nearest the transmitter is about free space at ~1 m (Friis: 20 dBm -
    # 46.8 dB = -26.8 dBm at 5.2 GHz); were rss in mW or dBm this would be off by 30 dB.
    with np.errstate(divide="ignore"):
        dbm = 10 * np.log10(rss[0]) + 30
    nearest = np.unravel_index(np.argmin(np.linalg.norm(centres - tx, axis=-1)), dbm.shape)
    d = np.linalg.norm(centres[nearest] - tx)
    friis = TX_POWER_DBM - 20 * np.log10(4 * np.pi * d * 5.2e9 / 299_792_458)
    assert dbm[nearest] == pytest.approx(friis, abs=3.0)


@pytest.mark.sionna
@pytest.mark.slow
def test_radio_map_shows_the_walls(radio_map):
    rm, _ = radio_map
    rss = rm.rss.numpy()[0]
    x, y = rm.cell_centers.numpy()[..., 0], rm.cell_centers.numpy()[..., 1]

    def mean_dbm(room: str) -> float:
        # Mean power over the room's cells (cells no ray reached count as zero).
        return float(10 * np.log10(rss[_in(fp.ROOMS[room], x, y)].mean()) + 30)

    # Lit everywhere in the transmitter's room and through one plasterboard wall.
    for room in (TX_ROOM, "south_room_1", "south_room_3"):
        assert (rss[_in(fp.ROOMS[room], x, y)] > 0).all(), room
    # Across the corridor, behind two walls (or through a door), clearly weaker.
    own = mean_dbm(TX_ROOM)
    for room in ACROSS:
        assert (rss[_in(fp.ROOMS[room], x, y)] > 0).any(), room
        assert mean_dbm(room) < own - 10.0, (room, mean_dbm(room), own)
    # Next door, through one wall, lies in between.
    assert mean_dbm(ACROSS[0]) < mean_dbm("south_room_1") < own
