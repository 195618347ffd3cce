"""Ray engine throughput: parallel efficiency with 1 and 2 workers, and per-task overhead.

Starts a private Ray on this machine (as ``engine: {kind: ray}`` does) and measures, in
one run, side by side:

- tasks that burn 0.2 s of CPU each, on 1 and on 2 workers: parallel efficiency
  ``T1 / (2 * T2)`` (ideal 1.0; target >= 0.9 on a 2-core machine);
- 1,000 no-op evaluations, one task each, on 1 and 2 workers: overhead per task in ms
  (target < 5 ms), compared with the serial engine;
- both again on 2 workers with ``points_per_task: auto`` (the default): no-op evaluations
  grouped into a few tasks per worker, the 0.2 s ones still one a task;
- the same 1,000 one-point tasks on the same 2 actors through Ray's own
  ``ray.util.ActorPool`` (``map`` and ``map_unordered``), in the same run: the engine's
  overhead against Ray's (target: engine / ``ActorPool.map`` <= 1.1);
- a whole campaign through driver, engine and store: a GA of population 1,000 on a
  function that costs nothing, on 16 workers (CPUs declared to Ray, so two cores can host
  them): evaluations a second from the first ask to the last checkpoint (target >=
  10,000), with the share of that time spent in the store (writing checkpoints, opening
  and finishing the trial) and in the event log.

    python benchmarks/engine_scaling.py [--tasks 20] [--noop 1000] [--workers 16]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hpcopt import config as cfg
from hpcopt.config.registry import build_engine
from hpcopt.core.events import EventLog
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.engine.local import LocalEngineConfig
from hpcopt.engine.ray_pool import RayEngineConfig
from hpcopt.problems.analytic import AnalyticConfig
from hpcopt.problems.custom import CustomConfig
from hpcopt.store.campaign_store import CampaignStore
from hpcopt.store.writer import TrialWriter

HERE = Path(__file__).resolve().parent


def timed_map(engine, problem, points) -> float:
    engine.map(problem, points[:2])  # workers up and problem set up: not what is measured
    start = time.perf_counter()
    engine.map(problem, points)
    return time.perf_counter() - start


def overhead_rounds(engine, problem, points, repeat: int) -> dict[str, float]:
    """Median seconds for ``points``, one task each, through the engine's ``map`` and Ray's
    ``ActorPool.map`` and ``map_unordered`` over the engine's own actors (same processes,
    same problem set up, same call), taken in turns ``repeat`` times so that a load
    beside the benchmark hits all three alike."""
    import ray
    from ray.util import ActorPool

    engine.map(problem, points[:2])  # workers up and problem set up: not what is measured
    pool = ActorPool([slot.actor for slot in engine._slots])
    sent = ray.put((engine.problem_class(problem), problem))  # as the engine sends it

    def task(actor, x):
        return actor.evaluate.remote(sent, x[None], False)

    runs = {
        "hpcopt engine": lambda: engine.map(problem, points),
        "ActorPool.map": lambda: list(pool.map(task, list(points))),
        "ActorPool.map_unordered": lambda: list(pool.map_unordered(task, list(points))),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            assert len(run()) == len(points)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


@contextlib.contextmanager
def clocked(*classes: type) -> Iterator[dict[str, float]]:
    """Seconds spent inside the public methods of ``classes`` (``__call__`` included),
    outermost calls only, per class name, while the context is open."""
    spent = dict.fromkeys((c.__name__ for c in classes), 0.0)
    depth = [0]
    originals = []

    def timed(name: str, method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            if depth[0]:
                return method(*args, **kwargs)
            depth[0] += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
                depth[0] -= 1

        return wrapper

    for c in classes:
        for attr, value in list(vars(c).items()):
            if callable(value) and (attr == "__call__" or not attr.startswith("_")):
                originals.append((c, attr, value))
                setattr(c, attr, timed(c.__name__, value))
    try:
        yield spent
    finally:
        for c, attr, value in originals:
            setattr(c, attr, value)


def campaign_throughput(workers: int, population: int, generations: int) -> dict[str, float]:
    """A GA campaign of no-op evaluations through driver, engine and store on ``workers``
    declared workers: evaluations a second, and seconds in the store and the event log."""
    doc = {
        "name": "throughput",
        "engine": {"kind": "ray", "num_workers": workers, "num_cpus": workers},
        "shared": {"problem": {"name": "analytic", "function": "sphere", "dim": 4}},
        "trials": [{"name": "ga", "seed": 0,
                    "method": {"name": "ga", "population": population,
                               "generations": generations}}],
    }  # fmt: skip
    with (
        build_engine(cfg.parse(doc).engine) as engine,
        tempfile.TemporaryDirectory() as tmp,
    ):
        problem = AnalyticConfig(name="analytic", function="sphere", dim=4)
        engine.map(problem, np.full((64 * workers, 4), 0.5))  # workers up: not measured
        campaign = cfg.parse(doc, output_dir=str(Path(tmp) / "campaign"))
        store = drv.create(campaign)
        with clocked(CampaignStore, TrialWriter, EventLog) as spent:
            start = time.perf_counter()
            drv.run(campaign, store, engine=engine, reporter=reporters.SilentReporter())
            wall = time.perf_counter() - start
        evaluations = len(CampaignStore.open(campaign.output_dir).read_trial("ga").history)
    return {
        "evaluations": evaluations,
        "wall": wall,
        "store": spent["CampaignStore"] + spent["TrialWriter"],
        "events": spent["EventLog"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20, help="CPU-burning tasks per run")
    parser.add_argument("--noop", type=int, default=1000, help="no-op tasks per run")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the overhead comparison")
    parser.add_argument("--workers", type=int, default=16, help="workers of the campaign run")
    parser.add_argument("--population", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=20)
    args = parser.parse_args()
    # Ray workers start from this environment: they must import the Burn problem.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(HERE))
    burn = CustomConfig(
        name="custom",
        target="burn:Burn",
        parameters=[{"name": "a", "low": 0, "high": 1}],
        options={"cpu_s": 0.2},
    )
    noop = AnalyticConfig(name="analytic", function="sphere", dim=1)
    work = np.full((args.tasks, 1), 0.5)
    empty = np.full((args.noop, 1), 0.5)

    with build_engine(LocalEngineConfig()) as serial:
        t_serial_noop = timed_map(serial, noop, empty)
    times = {}
    for workers, grouping in ((1, 1), (2, 1), (2, "auto")):
        config = RayEngineConfig(
            kind="ray", num_workers=workers, num_cpus=2, points_per_task=grouping
        )
        with build_engine(config) as engine:
            times[workers, grouping] = (
                timed_map(engine, burn, work),
                timed_map(engine, noop, empty),
            )
            if (workers, grouping) == (2, 1):
                overhead = overhead_rounds(engine, noop, empty, args.repeat)

    t1, t2, t2_auto = times[1, 1][0], times[2, 1][0], times[2, "auto"][0]
    ideal = args.tasks * 0.2
    print(f"{args.tasks} tasks x 0.2 s CPU (ideal serial {ideal:.1f} s)")
    print(f"  1 worker : {t1:6.2f} s   ({ideal / t1:.2f} of ideal)")
    print(f"  2 workers: {t2:6.2f} s   speed-up {t1 / t2:.2f}")
    print(f"  parallel efficiency T1/(2*T2) = {t1 / (2 * t2):.2f}   (target >= 0.9)")
    print(f"  2 workers, points_per_task auto: {t2_auto:6.2f} s")
    print(f"{args.noop} no-op evaluations, one task each")
    print(f"  serial engine : {1e3 * t_serial_noop / args.noop:6.3f} ms per evaluation")
    for workers in (1, 2):
        per_task = 1e3 * times[workers, 1][1] / args.noop
        print(f"  ray, {workers} worker{'s' if workers > 1 else ' '}: {per_task:6.3f} ms per task"
              f"   (target < 5 ms)")  # fmt: skip
    per_evaluation = 1e3 * times[2, "auto"][1] / args.noop
    print(f"  ray, 2 workers, points_per_task auto: {per_evaluation:6.3f} ms per evaluation")
    print(f"the same {args.noop} one-point tasks on the same 2 actors, median of {args.repeat}")
    for name, seconds in overhead.items():
        print(f"  {name:<24}: {1e3 * seconds / args.noop:6.3f} ms per task")
    ratio = overhead["hpcopt engine"] / overhead["ActorPool.map"]
    print(f"  engine / ActorPool.map = {ratio:.2f}   (target <= 1.1)")
    thr = campaign_throughput(args.workers, args.population, args.generations)
    rate = thr["evaluations"] / thr["wall"]
    print(
        f"a GA campaign, population {args.population}, {thr['evaluations']} no-op "
        f"evaluations on {args.workers} declared workers, driver + engine + store"
    )
    print(f"  {rate:,.0f} evaluations a second ({thr['wall']:.2f} s)   (target >= 10,000)")
    print(
        f"  store {thr['store']:.3f} s ({thr['store'] / thr['wall']:.1%}), "
        f"event log {thr['events']:.3f} s ({thr['events'] / thr['wall']:.1%})"
    )


if __name__ == "__main__":
    main()
