"""The whole floor counts, AP angles have exact derivatives, GS sweeps orientations (real
Sionna RT on the CPU, the shipped office)."""

from __future__ import annotations

import numpy as np
import pytest

from hpcopt.config.registry import build_problem
from hpcopt.problems.coverage.config import CoverageConfig
from hpcopt.problems.coverage.floor import cell_centres, inside_boxes, inside_solids
from hpcopt.problems.coverage.office import boxes

pytestmark = [pytest.mark.sionna, pytest.mark.slow]

CORNER = np.array([16.7, 11.3])  # behind three walls from most of the floor


def built(**kw):
    problem = build_problem(CoverageConfig(name="coverage", **kw))
    problem.setup()
    return problem


@pytest.fixture(scope="module")
def shallow_and_deep():
    radio = {"samples_per_tx": 100_000, "cell_size_m": 0.5}
    return (
        built(mode="1ap", radio={**radio, "max_depth": 5}),
        built(mode="1ap", radio={**radio, "max_depth": 13}),
    )


def test_an_unlit_placement_scores_what_the_whole_floor_says(shallow_and_deep):
    shallow, deep = shallow_and_deep
    dark, lit = shallow.evaluate(CORNER), deep.evaluate(CORNER)
    assert dark.extras["lit_fraction"] < 0.9 and lit.extras["lit_fraction"] >= 0.99
    # Scored over the lit cells only, as before, the corner looked far better than the
    # whole floor is; over the whole floor it cannot look better than where all is lit.
    (per_ap,), _ = shallow.radio_map(CORNER)
    lit_only = np.percentile(per_ap[np.isfinite(per_ap)], 5)
    assert lit_only > lit.value + 5.0
    assert dark.value <= lit.value + 1.0  # 1 dB: the map's noise at 1e5 rays


def test_coverage_fraction_is_the_share_of_the_whole_floor(shallow_and_deep):
    shallow = shallow_and_deep[0]
    (per_ap,), _ = shallow.radio_map(CORNER)
    ev = shallow.evaluate(CORNER)
    assert shallow.floor.sum() == per_ap.size == 960
    assert ev.extras["coverage_fraction"] == np.sum(per_ap >= -65.0) / 960
    assert ev.extras["lit_fraction"] == np.isfinite(per_ap).sum() / 960
    # over the lit cells alone, as before, the share was far higher
    assert np.mean(per_ap[np.isfinite(per_ap)] >= -65.0) > ev.extras["coverage_fraction"] + 0.1


def test_a_dim_floor_warns_and_a_lit_one_does_not(shallow_and_deep):
    shallow, deep = shallow_and_deep
    assert "reached by a ray" in shallow.evaluate(CORNER).warning
    assert deep.evaluate(CORNER).warning == ""


def test_ray_casts_find_the_walls_the_office_describes(shallow_and_deep):
    problem = shallow_and_deep[0]
    # 8 cm cells across a partition (x = 6.0 +- 0.05) and the corridor wall (y = 5.0)
    centres = cell_centres((5.5, 4.5, 6.5, 5.5), 0.08, 1.5)
    solids = [b for group in boxes().values() for b in group]
    expected = inside_boxes(centres, solids)
    found = inside_solids(problem._mi, problem.scene.mi_scene, centres)
    assert expected.any() and (~expected).any()
    assert (found == expected).all()


def test_the_ad_yaw_derivative_agrees_with_central_differences():
    problem = built(
        mode="1ap", radio={"pattern": "tr38901", "samples_per_tx": 1_000_000},
        objective={"kind": "softmin"},
    )  # fmt: skip
    x = np.array([7.0, 6.0, 30.0])
    ev = problem.evaluate(x, gradient=True)
    assert np.isnan(ev.gradient[:2]).all()  # positions: left to the method
    h = np.array([0.0, 0.0, 1.0])  # degrees
    fd = (problem.evaluate(x + h).value - problem.evaluate(x - h).value) / 2.0
    assert ev.gradient[2] == pytest.approx(fd, rel=0.01)
    assert abs(fd) > 0.01  # a yaw that matters


def test_grid_search_keeps_the_best_of_its_per_point_yaws(tmp_path):
    from hpcopt import config as cfg
    from hpcopt.driver import campaign as drv
    from hpcopt.driver import reporters

    problem = {
        "name": "coverage",
        "mode": "1ap",
        "radio": {"pattern": "tr38901", "samples_per_tx": 20_000, "cell_size_m": 1.0},
    }
    doc = {
        "name": "gs",
        "output_dir": str(tmp_path / "gs"),
        "trials": [{"name": "gs", "problem": problem,
                    "method": {"name": "gs", "resolution": {"ap1_x": 2, "ap1_y": 2, "ap1_yaw": 4},
                               "per_point": ["ap1_yaw"]}}],
    }  # fmt: skip
    campaign = cfg.parse(doc)
    store = drv.create(campaign)
    (outcome,) = drv.run(campaign, store, reporter=reporters.SilentReporter())
    h = store.read_trial("gs").history
    assert len(h) == 16 and sorted(set(h.x[:, 2])) == [-180.0, -90.0, 0.0, 90.0]
    best = h.x[int(np.argmax(h.value))]
    separately = built(**{k: v for k, v in problem.items() if k != "name"})
    values = [separately.evaluate(np.array([*best[:2], yaw])).value for yaw in (-180, -90, 0, 90)]
    assert outcome.best_value == pytest.approx(max(values), abs=1e-4)
    assert len({round(v, 3) for v in values}) == 4  # the yaws differ, so the sweep matters


def test_a_dim_floor_is_warned_about_once_per_trial_in_its_log_and_metadata(tmp_path):
    import json

    from hpcopt import config as cfg
    from hpcopt.driver import campaign as drv
    from hpcopt.driver import reporters

    problem = {
        "name": "coverage",
        "mode": "1ap",
        "radio": {"samples_per_tx": 20_000, "cell_size_m": 1.0, "max_depth": 3},
    }
    doc = {"name": "dim", "output_dir": str(tmp_path / "dim"),
           "trials": [{"name": "gs", "problem": problem,
                       "method": {"name": "gs", "resolution": 2}}]}  # fmt: skip
    campaign = cfg.parse(doc)
    store = drv.create(campaign)
    drv.run(campaign, store, reporter=reporters.SilentReporter())
    record = store.read_trial("gs")
    assert (record.history.extras["lit_fraction"] < 0.99).all()
    (warning,) = record.meta["warnings"]
    assert "reached by a ray" in warning
    events = [json.loads(line) for line in (tmp_path / "dim" / "events.jsonl").open()]
    assert [e["message"] for e in events if e["kind"] == "trial_warning"] == [warning]


def test_a_region_that_is_no_whole_number_of_cells_maps_like_sionna():
    problem = built(
        mode="1ap", region=(0.5, 0.5, 9.8, 6.5),
        radio={"samples_per_tx": 10_000, "cell_size_m": 0.3, "max_depth": 3},
    )  # fmt: skip
    (per_ap,), _ = problem.radio_map(np.array([5.0, 3.0]))
    assert per_ap.shape == problem.floor.shape == (20, 31)
    assert problem.evaluate(np.array([5.0, 3.0])).ok


def test_the_inside_of_a_closed_room_scene_is_floor():
    problem = built(mode="1ap", scene="box", region=(-4, -4, 4, 4),
                    radio={"samples_per_tx": 10_000, "max_depth": 3})  # fmt: skip
    assert problem.floor.all()
    assert problem.evaluate(np.array([0.0, 0.0])).ok
