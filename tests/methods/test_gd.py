"""Multi-start gradient descent: convergence, gradient modes, failures, constraints, resume."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
from pydantic import ValidationError

from hpcopt.config import registry
from hpcopt.config.registry import build_method
from hpcopt.core import plain
from hpcopt.core.constraints import LinearConstraint
from hpcopt.core.evaluation import Evaluation
from hpcopt.core.space import Param, Space
from hpcopt.methods.gd import GDConfig, GradientDescent
from hpcopt.problems.analytic import KNOWN_MINIMUM, AnalyticConfig
from hpcopt.problems.base import Problem, ProblemConfig
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


def make(problem: AnalyticConfig, seed: int = 0, **options) -> GradientDescent:
    """A GD method on ``problem`` whose feasibility is the problem's constraints."""
    return build(problem, GDConfig(name="gd", **options), seed)


def build(problem: AnalyticConfig, config: GDConfig, seed: int = 0) -> GradientDescent:
    """A GD method from ``config`` on ``problem``, as the driver builds it."""
    space = problem.space()
    return GradientDescent(
        config,
        space,
        seed,
        feasible=lambda u: problem.feasible(space.decode(u)),
        has_gradient=problem.has_gradient,
    )


def test_gd_reaches_branin_minimum_with_exact_gradients():
    method = make(BRANIN, steps=300, lr=0.02, lr_schedule="cosine", gradient="problem")
    seen = drive(method, BRANIN)
    assert all(batch.gradient and len(batch) == 8 for batch, _ in seen)
    assert method.best[1] == pytest.approx(KNOWN_MINIMUM["branin"], abs=1e-3)


def test_gd_reaches_branin_minimum_with_finite_differences():
    method = make(BRANIN, steps=300, lr=0.02, lr_schedule="cosine", gradient="fd")
    seen = drive(method, BRANIN)
    assert not any(batch.gradient for batch, _ in seen)
    assert method.best[1] == pytest.approx(KNOWN_MINIMUM["branin"], abs=1e-3)


def test_gd_spsa_improves_the_best_loss_on_a_sphere():
    problem = AnalyticConfig(name="analytic", function="sphere", dim=10)
    method = make(problem, steps=60, lr=0.02, gradient="spsa", spsa_averages=2)
    seen = drive(method, problem)
    first_best = np.nanmin(seen[0][1][: method.config.starts])
    assert method.best[1] < 0.1 * first_best


def test_gd_auto_gradient_asks_the_problem_when_it_has_gradients():
    method = make(SPHERE)
    batch = method.ask()
    assert batch.gradient
    assert len(batch) == method.config.starts


def test_gd_auto_gradient_falls_back_to_central_finite_differences():
    space = SPHERE.space()
    method = GradientDescent(GDConfig(name="gd"), space, 0, has_gradient=False)
    batch = method.ask()
    assert not batch.gradient
    assert len(batch) == method.config.starts * (1 + 2 * space.dim)


def test_gd_starts_form_a_latin_hypercube():
    method = make(SPHERE, starts=8)
    strata = np.floor(method.ask().points * 8).astype(int)
    for column in strata.T:
        assert sorted(column) == list(range(8))


def test_gd_same_seed_same_starts_other_seed_other_starts():
    first = make(SPHERE, seed=3).ask().points
    assert np.array_equal(first, make(SPHERE, seed=3).ask().points)
    assert not np.array_equal(first, make(SPHERE, seed=4).ask().points)


def test_gd_batch_iteration_counts_steps_and_ends_after_the_budget():
    method = make(SPHERE, steps=5, gradient="fd")
    seen = drive(method, SPHERE)
    assert [batch.iteration for batch, _ in seen] == [0, 1, 2, 3, 4]
    assert method.done
    assert sum(len(batch) for batch, _ in seen) <= method.expected_evaluations
    with pytest.raises(RuntimeError, match="done"):
        method.ask()


def test_gd_parameter_with_zero_learning_rate_never_moves():
    method = make(SPHERE, steps=30, lr={"x1": 0.0, "default": 0.05}, gradient="fd")
    seen = drive(method, SPHERE)
    starts = method.config.starts
    centres = np.array([batch.points[:starts] for batch, _ in seen])
    assert np.all(centres[:, :, 1] == centres[0, :, 1])
    assert np.all(centres[-1, :, 0] != centres[0, :, 0])


@pytest.mark.parametrize("failure", ["loss", "gradient"])
def test_gd_failed_evaluation_leaves_its_start_in_place(failure):
    method = make(SPHERE, gradient="problem")
    drive(method, SPHERE, max_batches=3)
    batch = method.ask()
    losses, grads = losses_of(SPHERE, batch.points, gradient=True)
    if failure == "loss":
        losses[2] = np.nan
    else:
        grads[2] = np.nan
    method.tell(batch, losses, grads)
    after = method.ask().points
    assert np.array_equal(after[2], batch.points[2])
    assert np.all(np.any(after != batch.points, axis=1)[[0, 1, 3, 4, 5, 6, 7]])


def test_gd_finite_differences_are_one_sided_at_a_bound():
    method = make(SPHERE, starts=1, gradient="fd")
    state = method.state_dict()
    state["x"] = np.array([[0.0, 0.7, 1.0]])
    method.load_state_dict(state)
    batch = method.ask()
    # Below 0 and above 1 there is nothing to probe: 1 centre + 6 probes - 2.
    assert len(batch) == 5
    assert np.all((batch.points >= 0.0) & (batch.points <= 1.0))
    losses, _ = losses_of(SPHERE, batch.points, gradient=False)
    method.tell(batch, losses)
    _, exact = losses_of(SPHERE, np.array([[0.0, 0.7, 1.0]]), gradient=True)
    estimate = method.state["m"][0] / (1.0 - method.config.betas[0])
    np.testing.assert_allclose(estimate, exact[0], rtol=1e-3)


def test_gd_probe_direction_without_any_usable_probe_gets_zero_gradient():
    # x0 may only stay within 0.5 of 1: probes 1.024 away on either side are infeasible.
    plane = AnalyticConfig(
        name="analytic",
        function="sphere",
        dim=2,
        constraints=[LinearConstraint(kind="linear", coefficients={"x0": 1}, lower=0.5, upper=1.5)],
    )
    method = make(plane, starts=1, gradient="fd", fd_step=0.1)
    state = method.state_dict()
    state["x"] = plane.space().encode(np.array([[1.0, 3.0]]))
    method.load_state_dict(state)
    batch = method.ask()
    assert len(batch) == 3
    losses, _ = losses_of(plane, batch.points, gradient=False)
    method.tell(batch, losses)
    assert method.state["m"][0, 0] == 0.0
    assert method.state["m"][0, 1] > 0.0


@pytest.mark.parametrize("optimizer", ["adam", "bfgs"])
@pytest.mark.parametrize("gradient", ["problem", "fd", "spsa"])
def test_gd_never_asks_an_infeasible_point(gradient, optimizer):
    method = make(CUT_SPHERE, steps=40, lr=0.05, gradient=gradient, optimizer=optimizer)
    seen = drive(method, CUT_SPHERE)
    space = CUT_SPHERE.space()
    x = space.decode(np.concatenate([batch.points for batch, _ in seen]))
    assert CUT_SPHERE.feasible(x).all()
    # The descent pressed against the constraint: it backed off, it did not stop short.
    assert (x[:, 0] + x[:, 1] - 2.0).min() < 1e-3


@pytest.mark.parametrize("optimizer", ["adam", "bfgs"])
def test_gd_points_stay_in_the_unit_cube(optimizer):
    problem = AnalyticConfig(name="analytic", function="sphere", dim=2, bounds={"x0": (1, 5)})
    method = make(problem, steps=40, lr=0.1, gradient="problem", optimizer=optimizer)
    seen = drive(method, problem)
    points = np.concatenate([batch.points for batch, _ in seen])
    assert points.min() >= 0.0 and points.max() <= 1.0
    assert method.best[0][0] == 0.0


def test_gd_raises_when_constraints_leave_no_feasible_start():
    with pytest.raises(ValueError, match=r"method\.starts: only 0 of 8 starting points"):
        GradientDescent(
            GDConfig(name="gd"), SPHERE.space(), 0, feasible=lambda u: np.zeros(len(u), bool)
        )


def test_gd_cosine_schedule_decays_the_step_to_the_final_fraction():
    method = make(SPHERE, starts=1, steps=11, lr=0.01, lr_schedule="cosine", gradient="problem")
    method.load_state_dict({**method.state_dict(), "x": np.full((1, 3), 0.5)})
    moves = []
    while not method.done:
        batch = method.ask()
        # A constant gradient makes every Adam direction exactly 1: the move is the rate.
        method.tell(batch, np.zeros(1), np.full((1, 3), -1.0))
        moves.append(method.state["x"][0, 0] - batch.points[0, 0])
    assert moves[0] == pytest.approx(0.01, rel=1e-6)
    assert moves[5] == pytest.approx(0.01 * (0.01 + 0.99 * 0.5), rel=1e-6)
    assert moves[-1] == pytest.approx(0.01 * 0.01, rel=1e-6)


def test_gd_adamw_decays_coordinates_toward_zero():
    method = make(SPHERE, starts=1, optimizer="adamw", weight_decay=0.5, lr=0.1)
    method.load_state_dict({**method.state_dict(), "x": np.full((1, 3), 0.5)})
    method.tell(method.ask(), np.zeros(1), np.zeros((1, 3)))
    np.testing.assert_allclose(method.state["x"][0], 0.5 - 0.1 * 0.5 * 0.5)


def test_gd_tell_rejects_losses_of_another_batch():
    method = make(SPHERE, gradient="fd")
    batch = method.ask()
    with pytest.raises(ValueError, match="tell: expected 56 losses for step 0"):
        method.tell(batch, np.zeros(8))


ADAMW = {"optimizer": "adamw", "lr_schedule": "cosine"}


@pytest.mark.parametrize("optimizer", [ADAMW, {"optimizer": "bfgs"}], ids=["adamw", "bfgs"])
@pytest.mark.parametrize("gradient", ["problem", "fd", "spsa"])
@pytest.mark.parametrize("interrupt", [0, 1, 7, 19])
def test_gd_resumes_bit_identically(optimizer, gradient, interrupt):
    options = dict(steps=20, lr={"x0": 0.08, "default": 0.03}, gradient=gradient, **optimizer)

    def run(method, restart_at=None):
        asked = []
        for k in range(20):
            if k == restart_at:
                rebuilt = build(CUT_SPHERE, method.config)
                rebuilt.load_state_dict(roundtrip(method.state_dict()))
                method = rebuilt
            batch = method.ask()
            losses, grads = losses_of(CUT_SPHERE, batch.points, batch.gradient)
            losses[k % len(losses)] = np.nan  # failures are part of the state too
            method.tell(batch, losses, grads)
            asked.append(batch.points)
        return asked, method

    straight, straight_end = run(make(CUT_SPHERE, **options))
    resumed, resumed_end = run(make(CUT_SPHERE, **options), restart_at=interrupt)
    for a, b in zip(straight, resumed, strict=True):
        assert np.array_equal(a, b)
    assert resumed_end.done
    assert plain.dumps(straight_end.state_dict()) == plain.dumps(resumed_end.state_dict())


def test_gd_is_built_from_its_config_section():
    method = build_method(GDConfig(name="gd"), SPHERE.space(), 0, has_gradient=True)
    assert isinstance(method, GradientDescent)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lr": {"x9": 0.1, "default": 0.01}}, r"method\.lr: unknown parameter\(s\) \['x9'\]"),
        ({"lr": {"x0": 0.1}}, r"method\.lr: no value for \['x1', 'x2'\] and no 'default'"),
        ({"gradient": "problem"}, r"method\.gradient: 'problem' needs a problem with exact"),
    ],
)
def test_gd_rejects_a_config_that_does_not_fit_the_problem(options, message):
    with pytest.raises(ValueError, match=message):
        GradientDescent(GDConfig(name="gd", **options), SPHERE.space(), 0, has_gradient=False)


def test_gd_config_survives_a_dump_and_reload():
    config = GDConfig(name="gd", gradient="spsa", lr={"x0": 0.1, "default": 0.01})
    assert GDConfig.model_validate(config.model_dump()) == config


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"lr": 0.0}, "lr", "must be > 0"),
        ({"lr": {"x0": -1.0, "default": 0.1}}, "lr", "learning rates must be >= 0"),
        ({"lr": {"default": 0.0}}, "lr", "every learning rate is 0"),
        ({"betas": (0.9, 1.0)}, "betas", "each must be in [0, 1)"),
        ({"weight_decay": 0.1}, "weight_decay", "only used with optimizer: adamw; this config"),
        ({"lr_final_fraction": 0.1}, "lr_final_fraction", "only used with lr_schedule: cosine"),
        (
            {"optimizer": "bfgs", "lr_schedule": "cosine"},
            "lr_schedule",
            "only used with optimizer: adam or adamw; this config has optimizer: bfgs",
        ),
        ({"optimizer": "bfgs", "betas": (0.5, 0.9)}, "betas", "only used with optimizer: adam"),
        ({"gradient": "spsa", "fd_step": 1e-3}, "fd_step", "only used with gradient: auto or fd"),
        ({"gradient": "fd", "spsa_c": 0.1}, "spsa_c", "only used with gradient: spsa"),
        ({"steps": 0}, "steps", "greater than or equal to 1"),
        ({"stepz": 10}, "stepz", "Extra inputs are not permitted"),
    ],
)
def test_gd_config_rejects_invalid_options_at_their_key(options, key, message):
    with pytest.raises(ValidationError) as raised:
        GDConfig(name="gd", **options)
    (error,) = raised.value.errors()
    assert error["loc"] == (key,)
    assert message in error["msg"]


class HalfExactConfig(ProblemConfig):
    """A sphere whose problem knows the derivative by ``x0`` only (like an AP's yaw)."""

    name: Literal["half"] = "half"

    def space(self) -> Space:
        return Space([Param("x0", -2.0, 2.0), Param("x1", -2.0, 2.0)])

    def gradient_mask(self) -> np.ndarray:
        return np.array([True, False])


class HalfExact(Problem):
    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        grad = np.array([2.0 * x[0], np.nan]) if gradient else None
        return Evaluation(value=float((x**2).sum()), gradient=grad)


@pytest.fixture
def half_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """:class:`HalfExact` registered, for the helpers that build problems by the registry."""
    monkeypatch.setitem(registry.PROBLEMS, "half", registry.Plugin(HalfExactConfig, HalfExact))


@pytest.mark.usefixtures("half_exact")
def test_mixed_gradients_take_the_exact_part_and_probe_only_the_rest():
    problem = HalfExactConfig()
    space = problem.space()
    method = GradientDescent(
        GDConfig(name="gd", starts=3, steps=80, lr=0.05, gradient="fd", fd_step=1e-3,
                 exact_gradients=True),
        space, 0, has_gradient=problem.gradient_mask(),
    )  # fmt: skip
    x_before = method.state["x"].copy()
    batch = method.ask()
    # the starts ask for the exact derivative; only x1 is probed, one pair per start
    assert len(batch) == 3 + 3 * 2
    assert batch.gradient.tolist() == [True] * 3 + [False] * 6
    assert (batch.points[3:, 0] == np.repeat(x_before[:, 0], 2)).all()
    losses, grads = losses_of(problem, batch.points, batch.gradient)
    method.tell(batch, losses, grads)
    used = method.gradients_used()
    x = space.decode(x_before)
    expected = np.stack([2 * x[:, 0], 2 * x[:, 1]], axis=1) * 4.0  # d/du = d/dx * (high - low)
    np.testing.assert_allclose(used[:3], expected, rtol=1e-6, atol=1e-9)
    assert np.isnan(used[3:]).all()
    drive(method, problem)
    assert method.best[1] < 1e-4


def test_auto_mixes_and_plain_fd_estimates_every_parameter():
    problem = HalfExactConfig()

    def first_batch(**options):
        return GradientDescent(
            GDConfig(name="gd", starts=2, steps=2, **options), problem.space(), 0,
            has_gradient=problem.gradient_mask(),
        ).ask()  # fmt: skip

    mixed = first_batch(gradient="auto")
    assert len(mixed) == 2 + 2 * 2 and mixed.gradient.tolist() == [True] * 2 + [False] * 4
    plain_fd = first_batch(gradient="fd")
    assert len(plain_fd) == 2 + 2 * 4 and plain_fd.gradient is False


def test_gradient_problem_is_refused_when_only_some_parameters_have_one():
    problem = HalfExactConfig()
    with pytest.raises(ValueError, match=r"only for \['x0'\]"):
        GradientDescent(
            GDConfig(name="gd", gradient="problem"), problem.space(), 0,
            has_gradient=problem.gradient_mask(),
        )  # fmt: skip


def test_a_periodic_parameter_goes_round_instead_of_sticking_at_its_bound():
    space = Space([Param("yaw", -180.0, 180.0, periodic=True)])
    method = GradientDescent(GDConfig(name="gd", starts=1, steps=1, lr=0.1), space, 0,
                             has_gradient=True)  # fmt: skip
    method.state["x"] = np.array([[0.02]])
    batch = method.ask()
    method.tell(batch, np.array([0.0]), np.array([[1.0]]))  # downhill is below 0
    assert 0.9 < method.state["x"][0, 0] < 1.0


ROSENBROCK = AnalyticConfig(name="analytic", function="rosenbrock", dim=4)


def test_bfgs_reaches_the_rosenbrock_minimum_in_steps_where_adam_does_not():
    options = dict(starts=4, steps=40, lr=0.1, gradient="problem")
    bfgs = make(ROSENBROCK, optimizer="bfgs", **options)
    adam = make(ROSENBROCK, optimizer="adam", **options)
    drive(bfgs, ROSENBROCK)
    drive(adam, ROSENBROCK)
    assert bfgs.best[1] < 1e-8
    assert adam.best[1] > 1e-2


def bfgs_at(point: list[float]) -> GradientDescent:
    """One BFGS start on the sphere whose first point is ``point`` (unit coordinates)."""
    method = make(SPHERE, starts=1, optimizer="bfgs", lr=0.1, gradient="problem")
    method.load_state_dict({**method.state_dict(), "x": np.array([point])})
    return method


def test_bfgs_first_step_moves_the_steepest_parameter_by_the_learning_rate():
    method = bfgs_at([0.5, 0.5, 0.5])
    method.tell(method.ask(), np.array([1.0]), np.array([[2.0, -1.0, 0.0]]))
    np.testing.assert_allclose(method.ask().points[0], [0.4, 0.55, 0.5])


@pytest.mark.parametrize("loss", [1.5, np.nan], ids=["higher", "failed"])
def test_bfgs_refused_trial_is_retried_closer_along_the_same_direction(loss):
    method = bfgs_at([0.5, 0.5, 0.5])
    method.tell(method.ask(), np.array([1.0]), np.array([[2.0, -1.0, 0.0]]))
    trial = method.ask().points[0]
    method.tell(method.ask(), np.array([loss]), np.array([[0.0, 0.0, 0.0]]))
    retried = method.ask().points[0]
    share = (retried[:2] - 0.5) / (trial[:2] - 0.5)
    # the parabola through loss 1 with slope -0.25 and 1.5 at the trial: its minimum is 1/6
    expected = 1 / 6 if np.isfinite(loss) else 0.5
    np.testing.assert_allclose(share, expected)
    assert retried[2] == 0.5


def test_bfgs_accepted_trial_steps_to_the_minimum_of_a_quadratic_it_has_measured():
    # On a 1-D quadratic the first curvature pair is exact: the next step lands on the minimum.
    space = Space([Param("x", -1.0, 3.0)])
    method = GradientDescent(
        GDConfig(name="gd", starts=1, optimizer="bfgs", lr=0.1, gradient="problem"),
        space,
        0,
        has_gradient=True,
    )
    method.load_state_dict({**method.state_dict(), "x": np.array([[0.9]])})
    for _ in range(2):  # loss (u - 0.3)^2
        u = method.ask().points[:, 0]
        method.tell(method.ask(), (u - 0.3) ** 2, 2 * (u - 0.3)[:, None])
    np.testing.assert_allclose(method.ask().points[0, 0], 0.3, atol=1e-12)
