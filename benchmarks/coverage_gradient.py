"""How good are the coverage objective's gradients (1 AP, office, the defaults)?

Two parts, side by side in one run:

1. Positions, by central finite differences of the map (a map's position derivative is
   zero or far too small, so GD takes these). At random AP positions and several steps
   ``h`` (unit-cube coordinates; 0.025 of the 19 m x range is 0.48 m, about a cell):
   agreement, the cosine between the gradients from ``h`` and ``2h`` (1.0 = the same
   direction), and usefulness, how often a 0.5 m step along the estimate raises the
   objective and by how much on average.
2. Orientation (``tr38901`` pattern): Dr.Jit's AD derivative by the yaw against central
   differences over 1 and 0.01 degree at the same rays, and the time of a map with its AD
   derivative against a plain map. P5 is piecewise smooth (its cell changes as the map
   turns), so its exact derivative holds over a far shorter step than the soft forms'.

    python benchmarks/coverage_gradient.py [--points 12] [--objective p5] [--samples N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hpcopt.config.registry import build_problem
from hpcopt.problems.coverage.config import CoverageConfig


def gradient(problem, space, u: np.ndarray, h: float, dims: list[int]) -> np.ndarray:
    """Central differences of the objective in unit coordinates along ``dims``."""
    g = np.zeros_like(u)
    for j in dims:
        e = np.zeros_like(u)
        e[j] = h
        up = problem.evaluate(space.decode(np.clip(u + e, 0, 1))).value
        down = problem.evaluate(space.decode(np.clip(u - e, 0, 1))).value
        g[j] = (up - down) / (2 * h)
    return g


def positions(args: argparse.Namespace) -> None:
    config = CoverageConfig(
        name="coverage", mode="1ap", objective={"kind": args.objective},
        radio={"samples_per_tx": args.samples},
    )  # fmt: skip
    problem = build_problem(config)
    problem.setup()
    space = config.space()
    points = np.random.default_rng(0).uniform(0.1, 0.9, size=(args.points, space.dim))
    metres = (space.high - space.low)[0]
    print(f"positions: {args.points} random AP positions, objective {args.objective}, "
          f"{args.samples:,} rays, max_depth {config.radio.max_depth}; step 0.5 m")  # fmt: skip
    print(f"{'h (unit)':>9} {'h (m)':>6} {'cos(h, 2h)':>11} {'rises':>9} {'mean gain dB':>13}")
    for h in (0.0125, 0.025, 0.05):
        cosines, gains = [], []
        for u in points:
            g1 = gradient(problem, space, u, h, [0, 1])
            g2 = gradient(problem, space, u, 2 * h, [0, 1])
            norm = np.linalg.norm(g1) * np.linalg.norm(g2)
            cosines.append(float(g1 @ g2 / norm) if norm else 0.0)
            step = 0.5 / metres * g1 / (np.linalg.norm(g1) or 1.0)
            before = problem.evaluate(space.decode(u)).value
            after = problem.evaluate(space.decode(np.clip(u + step, 0, 1))).value
            gains.append(after - before)
        gains = np.array(gains)
        print(
            f"{h:>9.4f} {h * metres:>6.2f} {np.mean(cosines):>11.2f} "
            f"{np.mean(gains > 0):>9.0%} {gains.mean():>13.2f}"
        )


def orientation(args: argparse.Namespace) -> None:
    print(f"orientation: yaw of a tr38901 AP, AD vs central differences over 1 and 0.01 "
          f"degree (the maps are bit-reproducible), {args.orientation_samples:,} rays")  # fmt: skip
    print(f"{'objective':>13} {'AD dB/deg':>10} {'FD 1 deg':>10} {'diff':>8} {'FD 0.01':>10} "
          f"{'diff':>8} {'AD map s':>9} {'map s':>6}")  # fmt: skip
    x = np.array([7.0, 6.0, 30.0])
    for kind in ("softmin", "soft_coverage", "p5"):
        config = CoverageConfig(
            name="coverage", mode="1ap", objective={"kind": kind},
            radio={"pattern": "tr38901", "samples_per_tx": args.orientation_samples},
        )  # fmt: skip
        problem = build_problem(config)
        problem.setup()
        problem.evaluate(x, gradient=True)  # compile both loops once
        start = time.perf_counter()
        ad = problem.evaluate(x, gradient=True).gradient[2]
        ad_s = time.perf_counter() - start
        fd = {}
        for h in (1.0, 0.01):
            yaw = np.array([0.0, 0.0, h])
            start = time.perf_counter()
            up = problem.evaluate(x + yaw).value
            plain_s = time.perf_counter() - start
            fd[h] = (up - problem.evaluate(x - yaw).value) / (2 * h)
        rel = {h: abs(ad - g) / max(abs(g), 1e-12) for h, g in fd.items()}
        print(f"{kind:>13} {ad:>10.5f} {fd[1.0]:>10.5f} {rel[1.0]:>8.2%} {fd[0.01]:>10.5f} "
              f"{rel[0.01]:>8.2%} {ad_s:>9.2f} {plain_s:>6.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--objective", default="p5", choices=("p5", "softmin", "soft_coverage"))
    parser.add_argument("--samples", type=int, default=100_000, help="rays per AP per map")
    parser.add_argument("--orientation-samples", type=int, default=1_000_000)
    parser.add_argument("--part", choices=("positions", "orientation"), help="only this part")
    args = parser.parse_args()
    if args.part != "orientation":
        positions(args)
    if args.part != "positions":
        orientation(args)


if __name__ == "__main__":
    main()
