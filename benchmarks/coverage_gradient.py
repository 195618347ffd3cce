"""How good are finite-difference gradients of the coverage objective (1 AP, office)?

A radio map's gradient with respect to an AP's position is exactly zero, so GD takes
central differences of the P5 objective over a step of about a cell. This measures, at
random AP positions, side by side for several steps ``h`` (unit-cube coordinates; 0.025
of the 20 m floor is 0.5 m, one cell):

- agreement: cosine between the gradients from ``h`` and ``2h`` (1.0 = same direction);
- usefulness: how often a step of 0.5 m along the estimated gradient raises the objective,
  and by how much on average.

    python benchmarks/coverage_gradient.py [--points 12] [--objective softmin] [--samples N]
"""

from __future__ import annotations

import argparse

import numpy as np

from hpcopt.problems.coverage.config import CoverageConfig


def gradient(problem, space, u: np.ndarray, h: float) -> np.ndarray:
    """Central differences of the objective in unit coordinates."""
    g = np.zeros_like(u)
    for j in range(len(u)):
        e = np.zeros_like(u)
        e[j] = h
        up = problem.evaluate(space.decode(np.clip(u + e, 0, 1))).value
        down = problem.evaluate(space.decode(np.clip(u - e, 0, 1))).value
        g[j] = (up - down) / (2 * h)
    return g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--objective", default="p5", choices=("p5", "softmin"))
    parser.add_argument("--samples", type=int, default=100_000, help="rays per AP per map")
    parser.add_argument("--pattern", default="iso", help="antenna pattern; not iso adds ap1_yaw")
    args = parser.parse_args()
    config = CoverageConfig(
        name="coverage", mode="1ap", objective={"kind": args.objective},
        radio={"samples_per_tx": args.samples, "pattern": args.pattern},
    )  # fmt: skip
    problem = config.build()
    problem.setup()
    space = config.space()
    rng = np.random.default_rng(0)
    points = rng.uniform(0.1, 0.9, size=(args.points, space.dim))
    metres = (space.high - space.low)[0]
    print(f"{args.points} random AP positions, objective {args.objective}, {args.samples:,} rays;"
          " step along the gradient: 0.5 m")  # fmt: skip
    print(f"{'h (unit)':>9} {'h (m)':>6} {'cos(h, 2h)':>11} {'rises':>9} {'mean gain dB':>13}")
    for h in (0.0125, 0.025, 0.05):
        cosines, gains = [], []
        for u in points:
            g1, g2 = gradient(problem, space, u, h), gradient(problem, space, u, 2 * h)
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


if __name__ == "__main__":
    main()
