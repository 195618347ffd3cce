"""Coverage pieces that need no ray tracing: reflector geometry, objective, config."""

from __future__ import annotations

import numpy as np
import pytest

from hpcopt.problems.coverage.config import CoverageConfig, Objective
from hpcopt.problems.coverage.problem import objective, to_dbm
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
    return CoverageConfig(name="coverage", region=(0, 0, 10, 6), scene="box", **kw)


def test_p5_is_numpys_percentile_of_the_cells_above_the_floor():
    rss = np.array([[-200.0, -80.0, -60.0], [-70.0, -np.inf, -50.0]])
    mask = np.isfinite(rss)
    cfg = config(objective=Objective(floor_dbm=-150))
    cells = np.array([-80.0, -60.0, -70.0, -50.0])
    assert objective(rss, mask, cfg) == np.percentile(cells, 5)


def test_softmin_lies_between_the_minimum_and_the_mean():
    rss = np.array([-80.0, -60.0, -70.0])
    value = objective(rss, np.ones(3, bool), config(objective=Objective(kind="softmin")))
    assert -80.0 < value < rss.mean()


def test_coverage_is_the_fraction_at_or_above_the_threshold():
    rss = np.array([-80.0, -65.0, -60.0, -50.0])
    cfg = config(objective=Objective(kind="coverage", threshold_dbm=-65.0))
    assert objective(rss, np.ones(4, bool), cfg) == 0.75


def test_watts_convert_to_dbm():
    np.testing.assert_allclose(to_dbm(np.array([1e-3, 1.0])), [0.0, 30.0])


def test_each_mode_has_its_parameters():
    names = {m: config(mode=m).space().names for m in ("1ap", "2ap")}
    assert names["1ap"] == ("ap1_x", "ap1_y")
    assert names["2ap"] == ("ap1_x", "ap1_y", "ap2_x", "ap2_y")
    directional = config(mode="1ap", radio={"pattern": "tr38901"}).space().names
    assert directional == ("ap1_x", "ap1_y", "ap1_yaw")
    wall = ((0.0, 6.0, 0.0), (4.0, 6.0, 3.0))
    refl = config(mode="2ap_reflector", reflector={"wall": wall}).space().names
    assert refl[-4:] == ("refl_u", "refl_v", "focus_x", "focus_y")


def test_two_aps_closer_than_the_minimum_separation_are_infeasible():
    cfg = config(mode="2ap", min_separation_m=3.0)
    points = np.array([[1, 1, 2, 1], [1, 1, 5, 1]], dtype=float)
    assert cfg.feasible(points).tolist() == [False, True]


def test_a_scene_other_than_the_office_needs_a_region():
    with pytest.raises(ValueError, match="region is required"):
        CoverageConfig(name="coverage", scene="box")
