"""The engine interface: batches submitted, collected as they finish, in order within each."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from hpcopt.config.registry import problem_class
from hpcopt.engine import base
from hpcopt.engine.base import SetUpProblems
from hpcopt.engine.local import LocalEngine, LocalEngineConfig
from hpcopt.problems.analytic import AnalyticConfig
from hpcopt.problems.custom import CustomConfig
from tests.problems import SETUPS, CountedSetup

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


def counted(tag, hold_mb=0):
    return CustomConfig(
        name="custom", target="tests.problems:CountedSetup",
        parameters=[{"name": "x0", "low": -1, "high": 1}],
        options={"tag": tag, "hold_mb": hold_mb},
    )  # fmt: skip


def cache(**bounds):
    """A problem cache with ``bounds``, a ``get(tag, hold_mb)`` of its CountedSetup
    problems, and the labels it evicts."""
    evicted = []
    problems = SetUpProblems(1, on_evict=evicted.append, **bounds)
    SETUPS.clear()

    def get(tag, hold_mb=0):
        return problems.get(CountedSetup, counted(tag, hold_mb))

    return problems, get, evicted


def test_the_problem_cache_drops_the_least_recently_used_beyond_its_count():
    problems, get, evicted = cache(max_problems=2)
    first = get(1)
    get(2)
    assert get(1) is first  # 1 is now more recent than 2
    get(3)
    assert evicted == ["custom"] and len(problems) == 2
    assert get(1) is first and get(3) is not None and SETUPS == [1, 2, 3]
    get(2)  # dropped, so set up again; 1, the least recent now, goes
    get(3)
    assert SETUPS == [1, 2, 3, 2] and len(evicted) == 2


def test_the_problem_cache_drops_the_least_recently_used_beyond_its_memory(monkeypatch):
    rss = iter(range(0, 10**12, 30 * 2**20))  # each build and setup grows the process 30 MB
    monkeypatch.setattr(base, "resident_bytes", lambda: next(rss))
    problems, get, evicted = cache(memory_mb=70)
    get(1), get(2)
    assert len(problems) == 2 and problems.memory_bytes() == 60 * 2**20 and not evicted
    get(3)
    assert len(problems) == 2 and len(evicted) == 1
    get(2)
    assert SETUPS == [1, 2, 3]  # 2 was kept: 1 was the least recent


def test_a_problem_over_the_memory_budget_alone_is_kept_while_it_is_used():
    problems, get, evicted = cache(memory_mb=1)
    held = get(1, hold_mb=64)
    assert problems.memory_bytes() > 32 * 2**20  # measured from the resident set
    assert get(1, hold_mb=64) is held and len(problems) == 1 and not evicted
    get(2, hold_mb=64)
    assert len(problems) == 1 and len(evicted) == 1


def test_an_unbounded_problem_cache_keeps_every_problem():
    problems, get, evicted = cache()
    for tag in range(100):
        get(tag)
    assert len(problems) == 100 and not evicted


def test_a_worker_lowers_its_thread_pools_to_its_cpus_and_never_raises_them():
    with threadpool_limits(limits=3):
        base.limit_threads(2)
        assert {pool["num_threads"] for pool in threadpool_info()} == {2}
    with threadpool_limits(limits=1):
        base.limit_threads(2)
        assert {pool["num_threads"] for pool in threadpool_info()} == {1}
