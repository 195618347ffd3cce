"""Coverage pieces that need no ray tracing: reflector geometry, objective, config."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from hpcopt.problems.coverage import objective as ob
from hpcopt.problems.coverage.config import CoverageConfig, Objective
from hpcopt.problems.coverage.floor import cell_centres, inside_boxes
from hpcopt.problems.coverage.reflector import WallFrame, plate_mesh

WALL = WallFrame.from_corners((0.0, 10.0, 0.0), (4.0, 10.0, 3.0), towards=(2.0, 5.0, 1.5))


def test_wall_normal_points_towards_the_room():
    np.testing.assert_allclose(WALL.normal, [0.0, -1.0, 0.0])


def test_plate_placement_spans_the_wall_without_overhang():
    np.testing.assert_allclose(WALL.place(0, 0, 1.0, 1.0, 0.0), [0.5, 10.0, 0.5])
    np.testing.assert_allclose(WALL.place(1, 1, 1.0, 1.0, 0.0), [3.5, 10.0, 2.5])
    np.testing.assert_allclose(WALL.place(0.5, 0.5, 1.0, 1.0, 0.1), [2.0, 9.9, 1.5])


def test_corners_that_do_not_span_a_vertical_rectangle_are_refused():
    with pytest.raises(ValueError, match="do not span a vertical rectangle"):
        WallFrame.from_corners((0, 0, 0), (4, 4, 0), towards=(1, 1, 1))


def test_plate_mesh_is_a_closed_box_of_twelve_triangles(tmp_path):
    text = plate_mesh(1.0, 0.5, folder=tmp_path).read_text()
    assert "element vertex 8" in text and "element face 12" in text


def config(**kw) -> CoverageConfig:
    return CoverageConfig(name="coverage", region=(-2, -2, 2, 2), scene="box", **kw)


def obj(**kw) -> Objective:
    return Objective(**kw)


def test_p5_counts_unlit_and_weak_floor_cells_at_the_floor_level():
    rss = np.array([-200.0, -80.0, -60.0, -70.0, -np.inf, -50.0])
    cells = np.array([-120.0, -80.0, -60.0, -70.0, -120.0, -50.0])
    assert ob.value(rss, obj(floor_dbm=-120)) == np.percentile(cells, 5)


def test_an_unlit_floor_lowers_p5_where_dropping_it_would_not():
    lit = np.linspace(-70.0, -50.0, 70)
    dark = np.full(30, -np.inf)
    assert ob.value(np.concatenate([lit, dark]), obj()) == -120.0
    assert ob.value(lit, obj()) > -70.0


def test_softmin_lies_between_the_minimum_and_the_mean():
    rss = np.array([-80.0, -60.0, -70.0])
    value = ob.value(rss, obj(kind="softmin"))
    assert -80.0 < value < rss.mean()


def test_the_masked_softmin_leaves_unlit_cells_out_and_the_plain_one_does_not():
    rss = np.array([-80.0, -60.0, -np.inf])
    assert ob.value(rss, obj(kind="softmin_lit")) > -80.0
    assert ob.value(rss, obj(kind="softmin")) < -110.0


def test_coverage_is_the_fraction_of_the_floor_at_or_above_the_threshold():
    rss = np.array([-80.0, -65.0, -60.0, -np.inf])
    assert ob.value(rss, obj(kind="coverage", threshold_dbm=-65.0)) == 0.5


def test_soft_coverage_tends_to_coverage_at_a_low_temperature():
    rss = np.array([-80.0, -64.0, -60.0, -np.inf])
    hard = ob.value(rss, obj(kind="coverage", threshold_dbm=-65.0))
    soft = ob.value(rss, obj(kind="soft_coverage", threshold_dbm=-65.0, temperature_db=0.01))
    assert abs(soft - hard) < 1e-9


@pytest.mark.parametrize("kind", ["p5", "softmin", "softmin_lit", "soft_coverage"])
def test_cell_weights_are_the_derivative_of_the_objective(kind):
    rng = np.random.default_rng(0)
    rss = np.concatenate([rng.uniform(-90, -40, 200), np.full(5, -np.inf)])
    o = obj(kind=kind)
    w = ob.cell_weights(rss, o)
    h = 1e-5
    for i in [*rng.choice(200, 20, replace=False).tolist(), int(np.argmax(w))]:
        up, down = rss.copy(), rss.copy()
        up[i] += h
        down[i] -= h
        fd = (ob.value(up, o) - ob.value(down, o)) / (2 * h)
        assert abs(fd - w[i]) < 1e-6, (kind, i, fd, w[i])
    assert (w[200:] == 0).all()


def test_the_hard_coverage_has_no_derivative():
    with pytest.raises(ValueError, match="step function"):
        ob.cell_weights(np.array([-60.0]), obj(kind="coverage"))


def test_repulsion_falls_with_the_distance_between_aps():
    o = obj(repulsion_weight=2.0, repulsion_length_m=1.0)
    near = ob.repulsion(np.array([[0.0, 0.0], [0.5, 0.0]]), o)
    assert near == pytest.approx(2.0 * np.exp(-0.25))
    assert ob.repulsion(np.array([[0.0, 0.0], [5.0, 0.0]]), o) < 1e-9 < near
    assert ob.repulsion(np.array([[0.0, 0.0]]), o) == 0.0


def test_watts_convert_to_dbm():
    np.testing.assert_allclose(ob.to_dbm(np.array([1e-3, 1.0])), [0.0, 30.0])


def test_cell_centres_are_sionnas_layout():
    c = cell_centres((0.0, 0.0, 20.0, 12.0), 0.5, 1.5)
    assert c.shape == (24, 40, 3)
    np.testing.assert_allclose(c[0, 0], [0.25, 0.25, 1.5])
    np.testing.assert_allclose(c[-1, -1], [19.75, 11.75, 1.5])
    # a size that is not a whole number of cells grows about the centre
    odd = cell_centres((0.0, 0.0, 1.2, 1.0), 0.5, 1.0)
    assert odd.shape == (2, 3, 3)
    np.testing.assert_allclose(odd[0, :, 0], [0.1, 0.6, 1.1])


def test_a_cell_centre_inside_a_wall_is_not_floor():
    boxes = [((0.9, 0.0, 0.0), (1.1, 2.0, 3.0))]
    c = cell_centres((0.0, 0.0, 2.0, 2.0), 0.2, 1.5)
    inside = inside_boxes(c, boxes)
    assert inside[:, 5].all() and not inside[:, [3, 6]].any()


def test_each_mode_has_its_parameters():
    names = {m: config(mode=m).space().names for m in ("1ap", "2ap")}
    assert names["1ap"] == ("ap1_x", "ap1_y")
    assert names["2ap"] == ("ap1_x", "ap1_y", "ap2_x", "ap2_y")
    wall = ((-2.0, 2.0, 0.0), (2.0, 2.0, 1.0))
    refl = config(mode="2ap_reflector", reflector={"wall": wall}).space().names
    assert refl[-4:] == ("refl_u", "refl_v", "focus_x", "focus_y")


def test_a_yaw_is_searched_only_where_it_changes_the_map():
    def names(**radio):
        return config(radio=radio).space().names

    assert names(pattern="tr38901") == ("ap1_x", "ap1_y", "ap1_yaw")
    assert names(pattern="iso", array_cols=2)[-1] == "ap1_yaw"
    for pattern in ("iso", "dipole", "hw_dipole"):
        assert names(pattern=pattern) == ("ap1_x", "ap1_y")


def test_a_tilt_is_searched_when_asked_and_refused_where_it_does_nothing():
    tilted = config(radio={"pattern": "dipole"}, tilt_deg=(0, 30)).space()
    # a tilted dipole leans one way: its yaw says which
    assert tilted.names[-2:] == ("ap1_yaw", "ap1_tilt") and tilted.high[-1] == 30
    with pytest.raises(ValueError, match="tilting it changes nothing"):
        config(tilt_deg=(0, 30))


def test_the_yaw_is_periodic_so_grids_leave_its_upper_end_out():
    space = config(radio={"pattern": "tr38901"}).space()
    assert space.periodic.tolist() == [False, False, True]


def test_only_the_angles_have_exact_gradients_and_not_for_hard_coverage():
    c = config(radio={"pattern": "tr38901"}, tilt_deg=(0, 20))
    assert c.gradient_mask().tolist() == [False, False, True, True]
    hard = config(radio={"pattern": "tr38901"}, objective={"kind": "coverage"})
    assert not hard.gradient_mask().any()


def test_two_aps_closer_than_the_minimum_separation_are_infeasible():
    cfg = config(mode="2ap", min_separation_m=3.0)
    points = np.array([[-1, -1, 0, -1], [-1, -1, 1.5, 1], [-1, -1, 1, -1]], dtype=float)
    assert cfg.feasible(points).tolist() == [False, True, False]


def test_a_focus_behind_the_reflectors_wall_is_infeasible():
    wall = ((-1.0, 0.0, 0.5), (1.0, 0.0, 1.5))  # the normal points towards the centre
    cfg = CoverageConfig(
        name="coverage", scene="box", region=(-2, 0.5, 2, 2), mode="2ap_reflector",
        min_separation_m=0, reflector={"wall": wall, "focus_region": (-2, 0.5, 2, 2)},
    )  # fmt: skip
    assert cfg.wall().normal[1] > 0
    front = np.array([0, 1, 0, 1.5, 0.5, 0.5, 0.0, 1.0])
    behind = front.copy()
    behind[-1] = -0.5
    assert cfg.feasible(np.array([front])).tolist() == [True]
    cfg_wide = cfg.model_copy(update={"region": (-2, -2, 2, 2)})
    assert cfg_wide.feasible(np.array([front, behind])).tolist() == [True, False]


def test_the_confirmation_rescores_with_more_rays_and_other_seeds():
    c = config(confirm={"top_k": 3, "samples_per_tx": 500_000, "seeds": [7, 8]})
    plan = c.confirmation()
    assert plan.top_k == 3
    assert [p.radio.seed for p in plan.problems] == [7, 8]
    assert {p.radio.samples_per_tx for p in plan.problems} == {500_000}
    assert all(p.confirmation() is None for p in plan.problems)
    assert config().confirmation() is None


def test_a_scene_other_than_the_office_needs_a_region():
    with pytest.raises(ValueError, match="region is required"):
        CoverageConfig(name="coverage", scene="box")


def office(**kw) -> CoverageConfig:
    return CoverageConfig(name="coverage", **kw)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"scene": "no/such/scene.xml", "region": (0, 0, 4, 4)}, "scene.*no such file"),
        ({"scene": "nonsense", "region": (0, 0, 4, 4)}, "neither 'office'"),
        ({"region": (-5, 0, 10, 10)}, "reaches outside the scene"),
        ({"ap_height_m": 3.5}, "between the scene's floor and ceiling"),
        ({"ap_height_m": 1.0}, "must be above radio.plane_height_m"),
        ({"scene": "box", "region": (30, 30, 40, 40)}, "reaches outside the scene"),
        (
            {"mode": "2ap_reflector", "reflector": {"wall": "kitchen"}},
            "unknown wall 'kitchen'",
        ),
        (
            {"mode": "2ap_reflector", "reflector": {"wall": ((3, 3, 0.5), (4, 3, 2.5))}},
            "does not lie on a wall face",
        ),
        (
            {"mode": "2ap_reflector", "reflector": {"focus_region": (-1, 0, 5, 5)}},
            "focus_region",
        ),
    ],
)
def test_bad_scene_settings_are_refused_naming_the_key(kw, message):
    with pytest.raises(ValueError, match=message):
        office(**kw)


def test_corners_on_a_face_of_an_office_wall_are_a_wall():
    wall = ((6.0, 12.0, 0.5), (10.0, 12.0, 2.5))
    assert office(mode="2ap_reflector", reflector={"wall": wall}).wall().normal[1] < 0


def test_a_missing_scene_is_refused_before_a_campaign_folder_exists(tmp_path):
    doc = {
        "name": "c",
        "output_dir": str(tmp_path / "c"),
        "trials": [
            {
                "name": "gs",
                "problem": {"name": "coverage", "scene": str(tmp_path / "none.xml"),
                            "region": [0, 0, 4, 4]},
                "method": {"name": "gs", "resolution": 3},
            }
        ],
    }  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [sys.executable, "-m", "hpcopt", "run", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "no such file" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "c").exists()


def test_corners_on_a_face_take_that_faces_side_not_the_regions_centre():
    # room N2's side of the corridor wall (y 6.95..7.05): its face looks north, +y
    wall = ((4.0, 7.05, 0.5), (7.0, 7.05, 2.5))
    frame = office(mode="2ap_reflector", reflector={"wall": wall}).wall()
    assert frame.normal[1] > 0.99


def test_a_scene_without_a_ceiling_takes_aps_above_its_meshes():
    flat = CoverageConfig(name="coverage", scene="simple_reflector", region=(-2, -2, 2, 2))
    assert flat.ap_height_m == 2.5


def test_a_missing_scene_is_named_before_its_missing_region():
    with pytest.raises(ValueError, match="scene: scene 'nope'"):
        CoverageConfig(name="coverage", scene="nope")


def test_a_ragged_ascii_mesh_is_a_scene_error(tmp_path):
    from hpcopt.problems.coverage.scene import SceneError, ply_vertices

    mesh = tmp_path / "m.ply"
    mesh.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n0 0 0\n1 1\n"
    )
    with pytest.raises(SceneError, match="ragged"):
        ply_vertices(mesh)
