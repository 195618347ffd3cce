"""The engine interface: batches submitted, collected as they finish, in order within each."""

from __future__ import annotations

import numpy as np
import pytest

from hpcopt.config.registry import problem_class
from hpcopt.engine.local import LocalEngine, LocalEngineConfig
from hpcopt.problems.analytic import AnalyticConfig
from hpcopt.problems.custom import CustomConfig

SPHERE = AnalyticConfig(name="analytic", function="sphere", dim=2)
BROKEN = CustomConfig(
    name="custom", target="tests.problems:BrokenSetup",
    parameters=[{"name": "x0", "low": -1, "high": 1}],
)  # fmt: skip


def values(evaluations):
    return [ev.value for ev in evaluations]


def test_submitted_batches_finish_in_submission_order_with_points_in_order():
    engine = LocalEngine(LocalEngineConfig(), problem_class)
    first = engine.submit(SPHERE, np.array([[1.0, 0.0], [0.0, 2.0]]), trial="a")
    second = engine.submit(SPHERE, np.array([[3.0, 0.0]]), trial="b")
    assert engine.pending() == 2
    finished = engine.wait() + engine.wait()
    assert [f.batch for f in finished] == [first, second]
    assert [values(f.evaluations) for f in finished] == [[1.0, 4.0], [9.0]]
    assert engine.pending() == 0 and engine.wait() == []


def test_map_keeps_the_batches_of_others_that_finish_before_its_own():
    engine = LocalEngine(LocalEngineConfig(), problem_class)
    other = engine.submit(SPHERE, np.array([[2.0, 0.0]]))
    assert values(engine.map(SPHERE, np.array([[0.0, 1.0]]))) == [1.0]
    (kept,) = engine.wait()
    assert kept.batch == other and values(kept.evaluations) == [4.0]


def test_a_problem_that_cannot_be_set_up_fails_its_batch_only():
    engine = LocalEngine(LocalEngineConfig(), problem_class)
    broken = engine.submit(BROKEN, np.array([[0.5]]))
    fine = engine.submit(SPHERE, np.array([[1.0, 1.0]]))
    first, second = engine.wait() + engine.wait()
    assert first.batch == broken and isinstance(first.error, FileNotFoundError)
    assert second.batch == fine and values(second.evaluations) == [2.0]
    with pytest.raises(FileNotFoundError, match=r"measurements\.csv"):
        engine.map(BROKEN, np.array([[0.5]]))
