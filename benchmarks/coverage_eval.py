"""Coverage radio maps per second: serial engine vs Ray with 1 and 2 workers, and where the
time goes (scene load once per worker, evaluation, store), measured side by side.

    python benchmarks/coverage_eval.py [--evaluations 40] [--samples 100000]

Dr.Jit's LLVM backend already uses every core in one process, so on a 2-core machine two
workers mostly share the same cores; on a cluster each worker holds its own GPU share.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hpcopt.engine.local import LocalEngine
from hpcopt.engine.ray_pool import RayEngine, RayEngineConfig
from hpcopt.history import History
from hpcopt.problems.coverage.config import CoverageConfig
from hpcopt.store import CampaignStore


def rate(engine, problem: CoverageConfig, points: np.ndarray) -> tuple[float, float, list]:
    """Seconds for the first (set-up) call and radio maps per second after it."""
    start = time.perf_counter()
    engine.map(problem, points[:2])
    first = time.perf_counter() - start
    start = time.perf_counter()
    evaluations = engine.map(problem, points)
    return first, len(points) / (time.perf_counter() - start), evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=40)
    parser.add_argument("--samples", type=int, default=100_000)
    args = parser.parse_args()
    problem = CoverageConfig(
        name="coverage", mode="2ap", radio={"samples_per_tx": args.samples, "cell_size_m": 0.5}
    )
    space = problem.space()
    points = space.decode(np.random.default_rng(0).random((args.evaluations, space.dim)))

    with LocalEngine() as serial:
        setup_s, serial_rate, evaluations = rate(serial, problem, points)
    rays = {}
    for workers in (1, 2):
        config = RayEngineConfig(kind="ray", num_workers=workers, num_cpus=2)
        with RayEngine(config) as engine:
            rays[workers] = rate(engine, problem, points)[:2]

    with tempfile.TemporaryDirectory() as tmp:
        store = CampaignStore.create(Path(tmp) / "c", "bench", {}, [{"name": "t"}])
        meta = {"parameters": list(space.names), "direction": "maximize"}
        writer = store.writer("t", meta)
        start = time.perf_counter()
        writer.checkpoint(History.from_evaluations(points, evaluations, 0, 1), {"step": 1})
        store_s = time.perf_counter() - start
    map_s = np.mean([ev.extras["radio_map_time_s"] for ev in evaluations])

    print(f"2-AP radio maps of the office floor, {args.samples:,} samples per AP, 0.5 m cells")
    print(f"  serial engine : {serial_rate:6.2f} maps/s   (first call: {setup_s:.2f} s)")
    for workers, (first, r) in rays.items():
        print(
            f"  ray, {workers} worker{'s' if workers > 1 else ' '}: {r:6.2f} maps/s   "
            f"{r / workers:6.2f} per worker   {r / serial_rate:4.2f}x serial   "
            f"(first call {first:.2f} s)"
        )
    batch = len(points) * map_s
    print(f"time split for a batch of {len(points)}: scene load {setup_s:.2f} s once per worker,"
          f" radio maps {batch:.2f} s, store {store_s * 1e3:.1f} ms "
          f"({store_s / batch:.1%} of the maps)")  # fmt: skip


if __name__ == "__main__":
    main()
