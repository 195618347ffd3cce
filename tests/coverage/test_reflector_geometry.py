"""The reflector plate's pose: Sionna's look-at mirrored in numpy, and a placement that keeps
the plate in front of its wall whatever it faces."""

from __future__ import annotations

import numpy as np
import pytest

from hpcopt.problems.coverage.office import WALLS_FOR_REFLECTORS
from hpcopt.problems.coverage.reflector import (
    WallFrame,
    look_at_orientation,
    plate_mesh,
    plate_vertices,
    rotation_matrix,
)

HEIGHT = 1.5  # the radio map's measurement height, where a focus lies
SIZES = [(1.0, 1.0), (2.0, 0.5)]
CLEARANCES = [0.05, 0.01]


def office_wall(name: str) -> WallFrame:
    a, b, normal = WALLS_FOR_REFLECTORS[name]
    return WallFrame.from_corners(a, b, towards=np.add(a, normal))


def depth(frame: WallFrame, points: np.ndarray) -> np.ndarray:
    """Signed distance (m) of points ``(n, 3)`` from the wall face, positive in the room."""
    return (points - frame.origin) @ frame.normal


def random_foci(frame: WallFrame, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` foci at measurement height in front of the wall: up to 6 m along it either side
    of the rectangle and up to 8 m into the room, half of them within 0.3 m of the wall,
    where the plate has to turn the furthest."""
    length = np.linalg.norm(frame.along)
    along = rng.uniform(-6.0, length + 6.0, n)
    out = np.where(rng.random(n) < 0.5, rng.uniform(1e-3, 0.3, n), rng.uniform(0.3, 8.0, n))
    foci = frame.origin + np.outer(along, frame.along / length) + np.outer(out, frame.normal)
    foci[:, 2] = HEIGHT
    return foci


@pytest.fixture(
    scope="module",
    params=[
        (wall, size, clearance)
        for wall in WALLS_FOR_REFLECTORS
        for size in SIZES
        for clearance in CLEARANCES
    ],
    ids=lambda p: f"{p[0]}-{p[1][0]:g}x{p[1][1]:g}-clear{p[2]:g}",
)
def placed(request):
    """100 random plates on one office wall: (frame, size, clearance, uv, foci, placements)."""
    wall, (width, height), clearance = request.param
    frame = office_wall(wall)
    rng = np.random.default_rng(7)
    uv = rng.random((100, 2))
    foci = random_foci(frame, rng, 100)
    placements = [
        frame.place_plate(u, v, width, height, focus, clearance) for (u, v), focus in zip(uv, foci)
    ]
    return frame, (width, height), clearance, uv, foci, placements


def test_look_at_turns_the_plates_x_axis_to_the_target_keeping_its_y_axis_level():
    rng = np.random.default_rng(1)
    centres, targets = rng.uniform(-5, 5, (2, 200, 3))
    rotations = rotation_matrix(look_at_orientation(centres, targets))
    towards = (targets - centres) / np.linalg.norm(targets - centres, axis=1, keepdims=True)
    np.testing.assert_allclose(rotations[:, :, 0], towards, atol=1e-12)
    np.testing.assert_allclose(rotations[:, 2, 1], 0.0, atol=1e-12)  # world z is up
    assert np.all(rotations[:, 2, 2] >= 0)
    identity = np.broadcast_to(np.eye(3), rotations.shape)
    np.testing.assert_allclose(rotations.transpose(0, 2, 1) @ rotations, identity, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0)


def test_a_nearly_vertical_look_at_direction_has_zero_azimuth_as_in_sionna():
    # 1e-6 m sideways over 3 m down is round-off to Sionna's float32: its azimuth is pinned
    down = look_at_orientation(np.array([1.0, 2.0, 3.0]), np.array([1.0 + 1e-6, 2.0 - 1e-6, 0.0]))
    np.testing.assert_allclose(down, [0.0, np.pi / 2, 0.0], atol=1e-6)


def test_looking_at_the_centre_itself_is_refused():
    with pytest.raises(ValueError, match="coincides"):
        look_at_orientation(np.ones(3), np.ones(3))


def test_plate_vertices_are_the_meshs_vertices_turned_then_moved(tmp_path):
    lines = plate_mesh(2.0, 0.5, folder=tmp_path).read_text().splitlines()
    start = lines.index("end_header") + 1
    mesh = np.array([[float(c) for c in line.split()] for line in lines[start : start + 8]])
    rotation = rotation_matrix(np.array([0.3, -0.2, 0.0]))
    centre = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(
        plate_vertices(centre, rotation, 2.0, 0.5), centre + mesh @ rotation.T, atol=1e-6
    )


def test_every_vertex_of_a_placed_plate_clears_the_wall_face(placed):
    frame, _, clearance, _, _, placements = placed
    for p in placements:
        assert depth(frame, p.vertices).min() >= clearance - 1e-9


def test_a_placed_plate_faces_its_focus(placed):
    _, _, _, _, foci, placements = placed
    for p, focus in zip(placements, foci):
        towards = focus - p.centre
        assert np.dot(p.normal, towards) > 0
        np.testing.assert_allclose(p.normal, towards / np.linalg.norm(towards), atol=1e-12)
        np.testing.assert_allclose(p.rotation[:, 0], p.normal)


def test_a_placed_plate_moves_only_out_along_the_normal_from_its_place_on_the_wall(placed):
    frame, (width, height), _, uv, _, placements = placed
    for (u, v), p in zip(uv, placements):
        shift = p.centre - frame.place(u, v, width, height, 0.0)
        np.testing.assert_allclose(shift, np.dot(shift, frame.normal) * frame.normal, atol=1e-12)
        for edge in (frame.along, frame.up):
            t = np.dot(p.centre - frame.origin, edge) / np.dot(edge, edge)
            assert 0.0 <= t <= 1.0


def test_a_placed_plate_sits_at_the_least_offset_that_clears(placed):
    # brute force: the plate facing the focus from each of 4000 offsets up to its own
    frame, (width, height), clearance, uv, foci, placements = placed
    corners = plate_vertices(np.zeros(3), np.eye(3), width, height)
    for (u, v), focus, p in list(zip(uv, foci, placements))[:20]:
        base = frame.place(u, v, width, height, 0.0)
        offset = np.dot(p.centre - base, frame.normal)
        tried = np.linspace(0.0, offset, 4000)[:-1]
        centres = base + np.outer(tried, frame.normal)
        rotations = rotation_matrix(look_at_orientation(centres, focus))
        vertices = centres[:, None, :] + np.einsum("kj,nij->nki", corners, rotations)
        assert np.all(depth(frame, vertices).min(axis=1) < clearance)


def test_the_plate_that_used_to_cut_into_north_room_2_now_stands_in_front_of_it():
    frame = office_wall("north_room_2")
    focus = np.array([6.5, 9.0, HEIGHT])
    # the old pose: centre 0.05 m off the wall, turned about it
    centre = frame.place(0.5, 0.5, 1.0, 1.0, 0.05)
    old = plate_vertices(centre, rotation_matrix(look_at_orientation(centre, focus)), 1.0, 1.0)
    assert (depth(frame, old) < 0).sum() == 4
    placement = frame.place_plate(0.5, 0.5, 1.0, 1.0, focus, clearance=0.05)
    assert frame.in_front(placement.vertices).all()
    assert depth(frame, placement.vertices).min() == pytest.approx(0.05, abs=1e-6)


@pytest.mark.parametrize("wall", list(WALLS_FOR_REFLECTORS))
def test_in_front_separates_the_room_side_of_the_wall_plane_from_the_rest(wall):
    frame = office_wall(wall)
    rng = np.random.default_rng(3)
    on_plane = frame.origin + np.outer(rng.uniform(-5, 5, 50), frame.along)
    on_plane += np.outer(rng.uniform(-1, 1, 50), frame.up)
    out = rng.uniform(1e-6, 10.0, (50, 1))
    front, behind = on_plane + out * frame.normal, on_plane - out * frame.normal
    assert frame.in_front(front).all() and not frame.in_front(behind).any()
    assert frame.in_front(front[:, :2]).all() and not frame.in_front(behind[:, :2]).any()
    on_wall = frame.place(0.5, 0.5, 1.0, 1.0, 0.0)
    assert not frame.in_front(on_wall)[0]


@pytest.mark.sionna
def test_the_numpy_pose_is_the_one_sionnas_look_at_gives_the_plate():
    from hpcopt.problems.coverage.problem import import_sionna

    mi, rt = import_sionna()
    scene = rt.load_scene()  # empty: only the plate's pose is compared
    material = rt.ITURadioMaterial("plate-material", "metal", thickness=0.01)
    plate = rt.SceneObject(fname=str(plate_mesh(2.0, 0.5)), name="plate", radio_material=material)
    scene.edit(add=plate)
    rng = np.random.default_rng(5)
    poses = []  # (centre, focus, rotation, vertices)
    for wall in WALLS_FOR_REFLECTORS:
        frame = office_wall(wall)
        for (u, v), focus in zip(rng.random((5, 2)), random_foci(frame, rng, 5)):
            p = frame.place_plate(u, v, 2.0, 0.5, focus, 0.05)
            poses.append((p.centre, focus, p.rotation, p.vertices))
    above, below = np.array([3.0, 4.0, 1.5]), np.array([3.0 + 1e-6, 4.0 - 1e-6, 0.5])
    down = rotation_matrix(look_at_orientation(above, below))
    poses.append((above, below, down, plate_vertices(above, down, 2.0, 0.5)))
    # one plate moved and turned again and again, as the problem does per evaluation
    for centre, focus, rotation, vertices in poses:
        plate.position = mi.Point3f(*centre.tolist())
        plate.look_at(mi.Point3f(*focus.tolist()))
        o = plate.orientation
        turned = rotation_matrix(np.array([o.x[0], o.y[0], o.z[0]]))
        np.testing.assert_allclose(turned, rotation, atol=1e-5)
        mesh = np.array(plate.mi_mesh.vertex_positions_buffer()).reshape(-1, 3)
        np.testing.assert_allclose(mesh, vertices, atol=1e-5)
