"""Grid search: full grids, alternating block sweeps, nested outer grids, chunks, resume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from hpcopt.config.registry import build_method
from hpcopt.core import plain
from hpcopt.core.constraints import LinearConstraint
from hpcopt.core.space import Param, Space
from hpcopt.methods.gs import GridSearch, GSConfig
from hpcopt.problems.analytic import FUNCTIONS, AnalyticConfig
from tests.helpers import drive, losses_of, roundtrip

BRANIN = AnalyticConfig(name="analytic", function="branin")
SPHERE = AnalyticConfig(name="analytic", function="sphere", dim=3)
# Cuts the sphere's basin: the constrained minimum lies on x0 + x1 = 2.
CUT_SPHERE = AnalyticConfig(
    name="analytic",
    function="sphere",
    dim=3,
    constraints=[LinearConstraint(kind="linear", coefficients={"x0": 1, "x1": 1}, lower=2.0)],
)


def make(problem: AnalyticConfig, **options) -> GridSearch:
    """A grid search on ``problem`` whose feasibility is the problem's constraints."""
    return build(problem, GSConfig(name="gs", **options))


def build(problem: AnalyticConfig, config: GSConfig) -> GridSearch:
    """A grid search from ``config`` on ``problem`` (seed 0: grid search draws nothing)."""
    space = problem.space()
    return GridSearch(config, space, 0, feasible=lambda u: problem.feasible(space.decode(u)))


def full_grid(resolution: int, dim: int) -> np.ndarray:
    """Every point of the unit-cube grid, shape (resolution**dim, dim)."""
    axis = np.linspace(0.0, 1.0, resolution)
    return np.array(list(itertools.product(axis, repeat=dim)))


def asked(seen: list) -> np.ndarray:
    """All points asked in a run, in order."""
    return np.concatenate([batch.points for batch, _ in seen])


def test_gs_full_grid_finds_the_sphere_minimum_exactly_with_odd_resolution():
    method = make(SPHERE, resolution=9)
    drive(method, SPHERE)
    assert method.best[1] == 0.0


def test_gs_full_grid_best_equals_brute_force_minimum_on_branin():
    method = make(BRANIN, resolution=41)
    drive(method, BRANIN)
    x = BRANIN.space().decode(full_grid(41, 2))
    branin = FUNCTIONS["branin"][0]
    assert method.best[1] == min(branin(xi)[0] for xi in x)


def test_gs_full_grid_asks_every_grid_point_once():
    method = make(SPHERE, resolution=6, batch_size=50)
    points = asked(drive(method, SPHERE))
    assert len(points) == method.expected_evaluations == 6**3
    assert {tuple(p) for p in points} == {tuple(p) for p in full_grid(6, 3)}


def test_gs_log_parameter_gets_a_geometric_grid():
    problem = AnalyticConfig(
        name="analytic", function="sphere", dim=1, bounds={"x0": (1.0, 1000.0)}, log=["x0"]
    )
    method = make(problem, resolution=4)
    x = problem.space().decode(method.ask().points)[:, 0]
    np.testing.assert_allclose(x, [1.0, 10.0, 100.0, 1000.0])


def test_gs_alternating_rounds_reach_the_minimum_of_a_separable_function():
    method = make(
        SPHERE,
        resolution=9,
        blocks=[["x0"], ["x1"], ["x2"]],
        rounds=5,
        start={"x0": 4.0, "x1": -3.0, "x2": 2.0},
    )
    seen = drive(method, SPHERE)
    assert method.best[1] == 0.0
    assert len(asked(seen)) < 9**3 // 10


def test_gs_start_fixes_the_other_parameters_of_the_first_sweep():
    method = make(SPHERE, resolution=5, blocks=[["x0"], ["x1", "x2"]], start={"x1": 5.12})
    points = method.ask().points
    assert np.all(points[:, 1] == 1.0)
    assert np.all(points[:, 2] == 0.5)
    np.testing.assert_array_equal(points[:, 0], np.linspace(0.0, 1.0, 5))


def test_gs_sweep_varies_only_its_block_around_the_incumbent():
    method = make(SPHERE, resolution=5, blocks=[["x0", "x1"], ["x2"]], start={"x2": 5.12})
    seen = drive(method, SPHERE)
    first, second = seen[0][0].points, seen[1][0].points
    assert np.all(first[:, 2] == 1.0)
    np.testing.assert_array_equal(second[:, :2], np.full((len(second), 2), 0.5))


def test_gs_sweep_does_not_ask_the_incumbent_again():
    method = make(SPHERE, resolution=5, blocks=[["x0"], ["x1"]], rounds=3, start={"x1": 5.12})
    seen = drive(method, SPHERE)
    # The start is on x0's grid with an unknown loss: asked once, then skipped.
    assert [len(batch) for batch, _ in seen] == [5, 4, 4]


def test_gs_stops_rounds_once_the_other_blocks_change_nothing():
    method = make(SPHERE, resolution=5, blocks=[["x0"], ["x1"], ["x2"]], rounds=10)
    seen = drive(method, SPHERE)
    # From the center (the minimum), each block is swept once and nothing ever moves.
    assert [batch.iteration for batch, _ in seen] == [0, 1, 2]
    assert method.done


def test_gs_alternating_rounds_keep_improving_a_coupled_function():
    method = make(BRANIN, resolution=41, blocks=[["x0"], ["x1"]], rounds=20)
    seen = drive(method, BRANIN)
    assert [batch.iteration for batch, _ in seen] == list(range(len(seen)))
    sweep_best = [np.nanmin(losses) for _, losses in seen]
    # Every sweep improves until one finds nothing better: then the run has converged.
    assert len(sweep_best) > 4
    assert np.all(np.diff(sweep_best[:-1]) < 0)
    assert sweep_best[-1] > sweep_best[-2]


def test_gs_nested_outer_sweep_visits_every_outer_point():
    method = make(SPHERE, resolution=5, outer=["x0"], blocks=[["x1"], ["x2"]], rounds=2)
    points = asked(drive(method, SPHERE))
    assert set(points[:, 0]) == set(np.linspace(0.0, 1.0, 5))
    assert method.best[1] == 0.0


def test_gs_each_outer_point_restarts_its_rounds_from_the_start():
    method = make(SPHERE, resolution=5, outer=["x0"], blocks=[["x1"], ["x2"]], start={"x2": -5.12})
    seen = drive(method, SPHERE)
    firsts = [batch.points for batch, _ in seen if np.all(batch.points[:, 2] == 0.0)]
    assert [p[0, 0] for p in firsts] == list(np.linspace(0.0, 1.0, 5))
    assert all(np.array_equal(p[:, 1], np.linspace(0.0, 1.0, 5)) for p in firsts)


def test_gs_outer_without_blocks_searches_the_rest_on_a_full_grid():
    method = make(SPHERE, resolution=3, outer=["x2"])
    points = asked(drive(method, SPHERE))
    assert len(points) == method.expected_evaluations == 27
    assert {tuple(p) for p in points} == {tuple(p) for p in full_grid(3, 3)}


@pytest.mark.parametrize(
    "options",
    [{}, {"blocks": [["x0"], ["x1", "x2"]], "rounds": 4}, {"outer": ["x1"], "blocks": [["x0"]]}],
    ids=["full", "blocks", "outer"],
)
def test_gs_never_asks_an_infeasible_point(options):
    method = make(CUT_SPHERE, resolution=9, batch_size=16, **options)
    seen = drive(method, CUT_SPHERE)
    assert CUT_SPHERE.feasible(CUT_SPHERE.space().decode(asked(seen))).all()


def test_gs_constrained_full_grid_best_is_the_feasible_brute_force_minimum():
    method = make(CUT_SPHERE, resolution=9)
    drive(method, CUT_SPHERE)
    x = CUT_SPHERE.space().decode(full_grid(9, 3))
    feasible = CUT_SPHERE.feasible(x)
    sphere = FUNCTIONS["sphere"][0]
    assert method.best[1] == min(sphere(xi)[0] for xi in x[feasible])


def test_gs_batches_respect_batch_size_and_never_span_two_sweeps():
    method = make(SPHERE, resolution=7, blocks=[["x0"], ["x1"]], batch_size=3)
    seen = drive(method, SPHERE)
    # Sweep 0 asks 7 points (start unknown), sweep 1 asks 6 (incumbent skipped).
    assert [(batch.iteration, len(batch)) for batch, _ in seen] == [
        (0, 3),
        (0, 3),
        (0, 1),
        (1, 3),
        (1, 3),
    ]


def test_gs_failed_sweep_leaves_the_incumbent_unchanged():
    start = {"x0": 5.12, "x1": 5.12}
    method = make(SPHERE, resolution=5, blocks=[["x0"], ["x1"], ["x2"]], start=start)
    first = method.ask()
    method.tell(first, losses_of(SPHERE, first.points, gradient=False)[0])
    incumbent = method.state["inc_u"].copy()
    failed = method.ask()  # the x1 sweep, which would have moved x1 to 0.5
    method.tell(failed, np.full(len(failed), np.nan))
    assert np.array_equal(method.state["inc_u"], incumbent)
    assert np.all(method.ask().points[:, :2] == [0.5, 1.0])


def test_gs_asks_a_huge_grid_lazily():
    problem = AnalyticConfig(name="analytic", function="sphere", dim=8)
    method = make(problem, resolution=100, batch_size=256)
    batch = method.ask()
    assert method.expected_evaluations == 100**8
    assert len(batch) == 256


def test_gs_tell_rejects_losses_of_another_batch():
    method = make(SPHERE, resolution=5, batch_size=10)
    batch = method.ask()
    with pytest.raises(ValueError, match="tell: expected 10 losses for sweep 0"):
        method.tell(batch, np.zeros(9))


@pytest.mark.parametrize("interrupt", [0, 1, 4, 9, 15, 20])
def test_gs_resumes_bit_identically(interrupt):
    # The constraint empties some sweeps (x0 = -2.048 leaves only x1 = 2.048): resumes
    # must cross those too.
    problem = AnalyticConfig(
        name="analytic",
        function="rosenbrock",
        dim=3,
        constraints=[LinearConstraint(kind="linear", coefficients={"x0": 1, "x1": 1}, lower=0)],
    )
    config = GSConfig(
        name="gs",
        resolution={"x0": 3, "default": 9},
        outer=["x0"],
        blocks=[["x1"], ["x2"]],
        start={"x1": 2.0},
        batch_size=2,
    )

    def run(method, restart_at=None):
        seen = []
        while not method.done:
            if len(seen) == restart_at:
                rebuilt = build(problem, config)
                rebuilt.load_state_dict(roundtrip(method.state_dict()))
                method = rebuilt
            batch = method.ask()
            losses, _ = losses_of(problem, batch.points, gradient=False)
            losses[len(seen) % len(losses)] = np.nan  # failures are part of the state too
            method.tell(batch, losses)
            seen.append(batch)
        return seen, method

    straight, straight_end = run(build(problem, config))
    resumed, resumed_end = run(build(problem, config), restart_at=interrupt)
    assert len(straight) > 20
    for a, b in zip(straight, resumed, strict=True):
        assert a.iteration == b.iteration
        assert np.array_equal(a.points, b.points)
    assert plain.dumps(straight_end.state_dict()) == plain.dumps(resumed_end.state_dict())


def test_gs_config_survives_a_dump_and_reload():
    config = GSConfig(name="gs", resolution={"x0": 3, "default": 5}, outer=["x0"], blocks=[["x1"]])
    assert GSConfig.model_validate(config.model_dump()) == config


def test_gs_is_built_from_its_config_section():
    method = build_method(GSConfig(name="gs"), SPHERE.space(), 0)
    assert isinstance(method, GridSearch)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"blocks": [["x0"], ["x9"]]},
            r"method\.blocks\[1\]: unknown parameter 'x9'; the space has \['x0', 'x1', 'x2'\]",
        ),
        ({"outer": ["y"], "blocks": [["x0"]]}, r"method\.outer: unknown parameter 'y'"),
        ({"start": {"x7": 1.0}}, r"method\.start: unknown parameter 'x7'"),
        ({"start": {"x0": 9.0}}, r"method\.start\.x0: 9\.0 is outside \[-5\.12, 5\.12\]"),
        ({"resolution": {"x5": 3, "default": 4}}, r"method\.resolution: unknown parameter"),
        ({"outer": ["x0", "x1", "x2"]}, r"method\.outer and method\.per_point name every"),
        ({"resolution": 2**21}, r"method\.resolution: a grid of \d+ points is too large"),
    ],
)
def test_gs_rejects_a_config_that_does_not_fit_the_space(options, message):
    with pytest.raises(ValueError, match=message):
        GridSearch(GSConfig(name="gs", **options), SPHERE.space(), 0)


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"blocks": [["x0", "x1"], ["x1"]]}, "blocks", "'x1' is in both blocks[0] and blocks[1]"),
        ({"blocks": [["x0", "x0"]]}, "blocks", "blocks[0] names 'x0' twice"),
        ({"outer": ["x0"], "blocks": [["x1"], ["x0"]]}, "outer", "'x0' is also in blocks[1]"),
        ({"outer": ["x0", "x0"]}, "outer", "names a parameter twice"),
        ({"outer": []}, "outer", "needs at least one parameter"),
        ({"blocks": [["x0"], []]}, "blocks", "blocks[1] has no parameter"),
        ({"blocks": []}, "blocks", "needs at least one block"),
        ({"resolution": 1}, "resolution", "needs at least 2 points per parameter"),
        ({"resolution": {"x0": 1, "default": 3}}, "resolution", "fewer for {'x0': 1}"),
        ({"resolution": 10**13}, "resolution", "at most 10000000 points per parameter"),
        ({"resolution": {"x0": 10**8}}, "resolution", "more for {'x0': 100000000}"),
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"rounds": 0}, "rounds", "greater than or equal to 1"),
    ],
)
def test_gs_config_rejects_invalid_options_at_their_key(options, key, message):
    with pytest.raises(ValidationError) as raised:
        GSConfig(name="gs", **options)
    (error,) = raised.value.errors()
    assert error["loc"] == (key,)
    assert message in error["msg"]


def test_gs_per_point_sweeps_the_orientation_at_every_grid_point_and_keeps_the_best():
    problem = AnalyticConfig(name="analytic", function="rastrigin", dim=3)
    method = make(
        problem, resolution={"x0": 3, "x1": 3, "x2": 8}, per_point=["x2"],
        blocks=[["x0"], ["x1"]], rounds=2,
    )  # fmt: skip
    seen = drive(method, problem)
    points = np.concatenate([b.points for b, _ in seen])
    losses = np.concatenate([loss for _, loss in seen])
    # every (x0, x1) asked is asked with all 8 values of x2
    cells: dict = {}
    for u in points:
        cells.setdefault((u[0], u[1]), set()).add(u[2])
    assert len(cells) > 3
    assert all(c == set(np.linspace(0, 1, 8)) for c in cells.values())
    assert method.best[1] == losses.min()


def test_gs_a_periodic_parameter_grid_leaves_the_upper_end_out():
    from hpcopt.methods.gs import GridSearch

    space = Space([Param("yaw", -180.0, 180.0, periodic=True)])
    method = GridSearch(GSConfig(name="gs", resolution=4), space, 0)
    assert space.decode(method.ask().points)[:, 0].tolist() == [-180.0, -90.0, 0.0, 90.0]


def test_gs_per_point_parameters_may_not_also_be_in_a_block():
    with pytest.raises(ValidationError, match="also in blocks or outer"):
        GSConfig(name="gs", blocks=[["x0", "x1"]], per_point=["x1"])
