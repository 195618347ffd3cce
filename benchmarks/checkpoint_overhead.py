"""Share of a campaign's wall time spent writing the HDF5 store.

Runs grid-search campaigns of 10^4 evaluations of a cheap analytic function through the
real driver and store, with the store's checkpoint (one segment per batch, consolidation
included) timed apart, for several batch sizes and evaluation costs, side by side.

    python benchmarks/checkpoint_overhead.py [--evaluations 10000]

Target: under 5 % for batches of >= 100 evaluations of >= 1 ms each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hpcopt import campaign as drv
from hpcopt import config as cfg
from hpcopt.store import TrialWriter


def measure(root: Path, evaluations: int, batch: int, delay_s: float) -> tuple[float, float]:
    """Wall time of the whole run and the part spent in ``TrialWriter.checkpoint``."""
    side = round(evaluations**0.5)
    doc = {
        "name": "bench",
        "output_dir": str(root),
        "trials": [
            {
                "name": "gs",
                "problem": {"name": "analytic", "function": "sphere", "delay_s": delay_s},
                "method": {"name": "gs", "resolution": side, "batch_size": batch},
            }
        ],
    }
    campaign = cfg.parse(doc)
    spent = 0.0
    original = TrialWriter.checkpoint

    def timed(self, *args, **kwargs):
        nonlocal spent
        start = time.perf_counter()
        original(self, *args, **kwargs)
        spent += time.perf_counter() - start

    TrialWriter.checkpoint = timed
    try:
        start = time.perf_counter()
        drv.run(campaign, drv.create(campaign), reporter=drv.SilentReporter())
        return time.perf_counter() - start, spent
    finally:
        TrialWriter.checkpoint = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=10_000)
    args = parser.parse_args()
    header = ("eval cost", "batch", "evals", "wall s", "store s", "store share")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (10, 6, 6, 8, 8, 12))))
    with tempfile.TemporaryDirectory() as tmp:
        for delay_s in (0.0, 0.001):
            for batch in (10, 100, 1000):
                root = Path(tmp) / f"d{delay_s}-b{batch}"
                wall, store = measure(root, args.evaluations, batch, delay_s)
                n = round(args.evaluations**0.5) ** 2
                print(
                    f"{delay_s * 1e3:>8.1f}ms {batch:>6} {n:>6} {wall:>8.2f} {store:>8.3f} "
                    f"{store / wall:>11.1%}"
                )


if __name__ == "__main__":
    main()
