"""Coverage radio maps at the defaults, measured side by side in one run:

- maps per second for 1 and 2 APs on the serial engine, bit-reproducible (one Dr.Jit
  thread, the default) beside Dr.Jit's own thread pool (``radio.deterministic: false``);
- the same 2-AP maps on a Ray pool of 1 and 2 one-thread workers (one per core gets the
  cores back);
- the lit share of the floor (cells a ray reached) over a grid of AP positions, at the
  default ``max_depth`` and at 5 for comparison;
- the store's share of the time.

    python benchmarks/coverage_eval.py [--evaluations 20] [--samples 100000] [--no-ray]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hpcopt.config.registry import build_engine
from hpcopt.engine.local import LocalEngineConfig
from hpcopt.problems.coverage.config import CoverageConfig
from hpcopt.store.campaign_store import CampaignStore
from hpcopt.store.history import History


def rate(engine, problem: CoverageConfig, points: np.ndarray) -> tuple[float, float, list]:
    """Seconds for the first (set-up) call and radio maps per second after it."""
    start = time.perf_counter()
    engine.map(problem, points[:2])
    first = time.perf_counter() - start
    start = time.perf_counter()
    evaluations = engine.map(problem, points)
    return first, len(points) / (time.perf_counter() - start), evaluations


def config(mode: str, samples: int, **radio) -> CoverageConfig:
    return CoverageConfig(name="coverage", mode=mode, radio={"samples_per_tx": samples, **radio})


def lit_share(samples: int, depth: int | None) -> np.ndarray:
    """Lit share of the floor for one AP at 9 x 5 positions over the floor."""
    radio = {} if depth is None else {"max_depth": depth}
    with build_engine(LocalEngineConfig()) as engine:
        points = np.array(
            [(x, y) for x in np.linspace(0.5, 19.5, 9) for y in np.linspace(0.5, 11.5, 5)]
        )
        evaluations = engine.map(config("1ap", samples, **radio), points)
    return np.array([ev.extras["lit_fraction"] for ev in evaluations])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=20)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray pool")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    default_depth = CoverageConfig.model_fields["radio"].default.max_depth
    print(f"office floor, {args.samples:,} samples per AP, 0.5 m cells, max_depth "
          f"{default_depth}, {args.evaluations} maps per figure")  # fmt: skip
    print(f"{'':24} {'1 AP maps/s':>12} {'2 AP maps/s':>12}")
    rates: dict[bool, list[float]] = {}
    last = []
    for deterministic in (True, False):
        rates[deterministic] = []
        for mode in ("1ap", "2ap"):
            problem = config(mode, args.samples, deterministic=deterministic)
            space = problem.space()
            points = space.decode(rng.random((args.evaluations, space.dim)))
            with build_engine(LocalEngineConfig()) as serial:
                _, r, last = rate(serial, problem, points)
            rates[deterministic].append(r)
        label = "serial, 1 thread (bits)" if deterministic else "serial, all threads"
        print(f"{label:24} {rates[deterministic][0]:>12.2f} {rates[deterministic][1]:>12.2f}")
    ratio = [a / b for a, b in zip(rates[True], rates[False])]
    print(f"{'reproducible / threads':24} {ratio[0]:>11.2f}x {ratio[1]:>11.2f}x")

    if not args.no_ray:
        from hpcopt.engine.ray_pool import RayEngineConfig

        problem = config("2ap", args.samples)
        space = problem.space()
        points = space.decode(rng.random((args.evaluations, space.dim)))
        for workers in (1, 2):
            ray_config = RayEngineConfig(kind="ray", num_workers=workers, num_cpus=2)
            with build_engine(ray_config) as engine:
                first, r, _ = rate(engine, problem, points)
            label = f"ray, {workers} worker{'s' if workers > 1 else ''} (bits)"
            print(f"{label:24} {'':>12} {r:>12.2f}   {r / rates[False][1]:4.2f}x all-thread "
                  f"serial (first call {first:.1f} s)")  # fmt: skip

    for depth in (None, 5):
        lit = lit_share(args.samples, depth)
        print(f"lit share of the floor, max_depth {depth or default_depth}, 45 AP positions: "
              f"min {lit.min():.4f}, mean {lit.mean():.4f}, "
              f"below 0.99 at {(lit < 0.99).sum()}")  # fmt: skip

    space = config("2ap", args.samples).space()
    points = space.decode(rng.random((len(last), space.dim)))
    with tempfile.TemporaryDirectory() as tmp:
        store = CampaignStore.create(Path(tmp) / "c", "bench", {}, [{"name": "t"}])
        writer = store.writer("t", {"parameters": list(space.names), "direction": "maximize"})
        start = time.perf_counter()
        writer.checkpoint(History.from_evaluations(points, last, 0, 1), {"step": 1})
        store_s = time.perf_counter() - start
    maps_s = sum(ev.extras["radio_map_time_s"] for ev in last)
    print(f"store: {store_s * 1e3:.1f} ms for a batch of {len(last)} ({store_s / maps_s:.2%} of "
          "its radio maps' time)")  # fmt: skip


if __name__ == "__main__":
    main()
