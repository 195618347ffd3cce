"""Behaviour of the DEAP genetic algorithm behind ask/tell."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pydantic import ValidationError

from hpcopt.core import plain
from hpcopt.methods.ga import GAConfig, GeneticAlgorithm
from hpcopt.problems.analytic import AnalyticConfig
from tests.helpers import drive, losses_of, run_interrupted

RASTRIGIN = AnalyticConfig(name="analytic", function="rastrigin", dim=2)
# x0 + x1 <= 2 cuts the upper-right corner off the Rastrigin box.
CONSTRAINED = AnalyticConfig(
    name="analytic",
    function="rastrigin",
    dim=2,
    constraints=[{"kind": "linear", "coefficients": {"x0": 1.0, "x1": 1.0}, "upper": 2.0}],
)


def make(problem: AnalyticConfig = RASTRIGIN, seed: int = 0, **fields) -> GeneticAlgorithm:
    """A GA on ``problem`` with its constraints wired in as the feasibility hook."""
    fields = {"population": 20, "generations": 10, **fields}
    space = problem.space()
    return GeneticAlgorithm(
        GAConfig(name="ga", **fields),
        space,
        seed=seed,
        feasible=lambda u: problem.feasible(space.decode(u)),
    )


def run(method: GeneticAlgorithm, interrupt: tuple[int, str] | None = None):
    """Drive to the end on Rastrigin (see ``run_interrupted``); the asks and final state."""
    asked, method = run_interrupted(method, RASTRIGIN, interrupt)
    return asked, method.state_dict()


def test_ga_reaches_rastrigin_minimum():
    ga = make(population=50, generations=80, sigma=0.3, sigma_decay=0.92, tournament=2, elite=2)
    drive(ga, RASTRIGIN)
    best = ga.state["hall_of_fame"]["losses"][0]
    assert best < 1e-2
    assert np.allclose(RASTRIGIN.space().decode(ga.state["hall_of_fame"]["genes"][0]), 0, atol=1e-2)


def test_ga_best_loss_never_gets_worse():
    ga = make(population=16, generations=25, sigma=0.3, cxpb=0.9, mutpb=0.9)
    generation_best = []
    while not ga.done:
        known = ga.state["losses"][~np.isnan(ga.state["losses"])]
        batch = ga.ask()
        losses, _ = losses_of(RASTRIGIN, batch.points, gradient=False)
        generation_best.append(min([*known, *losses]))
        ga.tell(batch, losses)
    assert np.all(np.diff(generation_best) <= 0)
    assert generation_best[-1] < generation_best[0]


def test_ga_hall_of_fame_joins_each_new_generation():
    ga = make(elite=3)
    while not ga.done:
        batch = ga.ask()
        ga.tell(batch, losses_of(RASTRIGIN, batch.points, gradient=False)[0])
        population = ga.state["population"].tolist()
        for genes in ga.state["hall_of_fame"]["genes"].tolist():
            assert genes in population


def test_ga_runs_one_batch_per_generation():
    seen = drive(make(generations=7), RASTRIGIN)
    assert [batch.iteration for batch, _ in seen] == list(range(7))


def test_ga_asks_only_individuals_with_invalid_fitness():
    # Without crossover or mutation every offspring is a clone that keeps its fitness.
    ga = make(population=30, generations=10, cxpb=0.0, mutpb=0.0)
    seen = drive(ga, RASTRIGIN)
    assert [len(batch) for batch, _ in seen] == [30]
    assert ga.done


def test_ga_evaluations_stay_within_expected_evaluations():
    ga = make(population=20, generations=10, elite=2)
    seen = drive(ga, RASTRIGIN)
    assert ga.expected_evaluations == 20 + 9 * 18
    assert sum(len(batch) for batch, _ in seen) <= ga.expected_evaluations


def test_ga_never_asks_infeasible_individuals():
    ga = make(CONSTRAINED, sigma=0.4, generations=15)
    space = CONSTRAINED.space()
    for batch, _ in drive(ga, CONSTRAINED):
        assert CONSTRAINED.feasible(space.decode(batch.points)).all()


def test_ga_gives_infeasible_individuals_the_penalty():
    ga = make(CONSTRAINED, penalty=1e6)
    infeasible = ~CONSTRAINED.feasible(CONSTRAINED.space().decode(ga.state["population"]))
    assert infeasible.any()
    assert np.all(ga.state["losses"][infeasible] == 1e6)
    assert np.isnan(ga.state["losses"][~infeasible]).all()


def test_ga_gives_failed_evaluations_the_penalty():
    # With elite = population - 1 the hall of fame shows the fitness of almost everyone.
    ga = make(population=4, elite=3, penalty=1e6)
    batch = ga.ask()
    ga.tell(batch, np.array([np.nan, np.nan, 5.0, np.nan]))
    assert ga.state["hall_of_fame"]["losses"].tolist() == [5.0, 1e6, 1e6]


def test_ga_survives_evaluations_that_all_fail():
    ga = make(generations=5)
    while not ga.done:
        batch = ga.ask()
        ga.tell(batch, np.full(len(batch), np.nan))
    assert np.all(ga.state["hall_of_fame"]["losses"] == ga.config.penalty)


def test_ga_keeps_genes_in_unit_cube():
    ga = make(sigma=3.0, blend_alpha=2.0, indpb=1.0, generations=8)
    points = np.concatenate([batch.points for batch, _ in drive(ga, RASTRIGIN)])
    assert points.min() >= 0.0 and points.max() <= 1.0
    # Such wide operators overshoot all the time: the bounds are reached, not avoided.
    assert (points == 0.0).any() and (points == 1.0).any()


def test_ga_per_parameter_sigma_scales_each_gene():
    ga = make(sigma={"x0": 0.3, "default": 1e-9}, cxpb=0.0, mutpb=1.0, indpb=1.0)
    initial_x0, initial_x1 = ga.ask().points.T
    points = np.concatenate([batch.points for batch, _ in drive(ga, RASTRIGIN)])
    drift_x1 = np.abs(points[:, 1, None] - initial_x1[None, :]).min(axis=1)
    drift_x0 = np.abs(points[:, 0, None] - initial_x0[None, :]).min(axis=1)
    assert drift_x1.max() < 1e-6
    assert drift_x0.max() > 0.1


def test_ga_sigma_decay_narrows_mutations():
    def spread(decay: float) -> float:
        ga = make(sigma=0.2, sigma_decay=decay, cxpb=0.0, mutpb=1.0, generations=30)
        last = drive(ga, RASTRIGIN)[-1][0].points
        return float(np.std(last, axis=0).sum())

    assert spread(0.7) < 0.1 * spread(1.0)


@pytest.mark.parametrize(
    "interrupt",
    [(0, "before_ask"), (0, "after_ask"), (1, "before_ask"), (6, "after_ask"), (9, "before_ask")],
)
def test_ga_resumes_bit_identically(interrupt):
    straight_asks, straight_state = run(make(CONSTRAINED, seed=3))
    asks, state = run(make(CONSTRAINED, seed=3), interrupt)
    assert len(asks) == len(straight_asks) == 10
    for a, b in zip(asks, straight_asks):
        assert a.tobytes() == b.tobytes()
    assert plain.dumps(state) == plain.dumps(straight_state)


def test_ga_leaves_callers_random_state_untouched():
    random.seed(1234)
    before = random.getstate()
    drive(make(), RASTRIGIN)
    assert random.getstate() == before


def test_ga_ignores_callers_random_state():
    random.seed(1)
    first = run(make(seed=5))[1]
    random.seed(2)
    second = run(make(seed=5))[1]
    assert plain.dumps(first) == plain.dumps(second)


def test_ga_advances_its_random_stream_every_generation():
    ga = make(generations=6)
    streams = []
    while not ga.done:
        streams.append(plain.dumps(ga.state["random"]))
        batch = ga.ask()
        ga.tell(batch, losses_of(RASTRIGIN, batch.points, gradient=False)[0])
    assert len(set(streams)) == len(streams) == 6


def test_ga_seeds_give_different_runs():
    assert not np.array_equal(make(seed=0).ask().points, make(seed=1).ask().points)


def test_ga_asks_nothing_once_done():
    ga = make(generations=2)
    drive(ga, RASTRIGIN)
    with pytest.raises(RuntimeError, match="generations"):
        ga.ask()


def test_ga_rejects_losses_of_the_wrong_length():
    ga = make()
    batch = ga.ask()
    with pytest.raises(ValueError, match=f"expects {len(batch)} losses"):
        ga.tell(batch, np.zeros(len(batch) + 1))


def test_ga_rejects_sigma_for_unknown_parameter():
    with pytest.raises(ValueError, match=r"method\.sigma: unknown parameter\(s\) \['x9'\]") as err:
        make(sigma={"x9": 0.1, "default": 0.2})
    assert "['x0', 'x1']" in str(err.value)


def test_ga_rejects_sigma_missing_parameters_without_default():
    with pytest.raises(ValueError, match=r"method\.sigma: no value for \['x1'\]"):
        make(sigma={"x0": 0.1})


def test_ga_config_rejects_elite_as_large_as_population():
    with pytest.raises(ValidationError, match=r"elite \(4\) must be smaller than population"):
        GAConfig(name="ga", population=4, elite=4)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("population", 1),
        ("generations", 0),
        ("cxpb", 1.5),
        ("sigma", -0.1),
        ("sigma", {"x0": 0.0}),
        ("sigma_decay", 0.0),
        ("tournament", 0),
        ("penalty", float("nan")),
    ],
)
def test_ga_config_rejects_out_of_range_values(field, value):
    with pytest.raises(ValidationError, match=field):
        GAConfig(name="ga", **{field: value})


def test_ga_config_rejects_unknown_keys():
    with pytest.raises(ValidationError, match="sigmaa"):
        GAConfig(name="ga", sigmaa=0.1)


def test_ga_best_is_the_lowest_loss_told():
    method = make(population=10, generations=3)
    assert method.best is None
    seen = drive(method, RASTRIGIN)
    u, loss = method.best
    assert loss == min(losses.min() for _, losses in seen)
    assert any((batch.points == u).all(axis=1).any() for batch, _ in seen)
