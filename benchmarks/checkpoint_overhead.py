"""Share of a campaign's wall time spent writing the HDF5 store, and the bytes it writes.

Runs grid-search campaigns of 10^4 evaluations of a cheap analytic function through the
real driver and store, with the store's checkpoint (one segment per batch, consolidation
included) timed apart, for several batch sizes and evaluation costs, side by side.

Then writes 10^4 and 10^5 evaluations (batches of 10) through the store's writer twice,
side by side: as the store folds its journal (packs, and the trial file rewritten when
the packs hold as much as it does) and as it did before 0.4 (the whole history rewritten
every 64 batches), counting the bytes each wrote (``wchar`` of /proc/self/io).

    python benchmarks/checkpoint_overhead.py [--evaluations 10000] [--bytes-up-to 100000]

Targets: under 5 % of wall time for batches of >= 100 evaluations of >= 1 ms each; bytes
per evaluation that do not grow with the campaign's length.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hpcopt import config as cfg
from hpcopt.core.evaluation import Evaluation
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.store.campaign_store import CampaignStore, History, TrialWriter

META = {"trial": "t", "direction": "minimize", "parameters": ["a", "b"]}


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
        drv.run(campaign, drv.create(campaign), reporter=reporters.SilentReporter())
        return time.perf_counter() - start, spent
    finally:
        TrialWriter.checkpoint = original


class RewriteEvery64(TrialWriter):
    """The store before 0.4: every ``consolidate_every`` segments, the whole history."""

    def checkpoint(self, rows, method_state, **kwargs) -> None:
        consolidate_every, self.consolidate_every = self.consolidate_every, 10**9
        super().checkpoint(rows, method_state, **kwargs)
        self.consolidate_every = consolidate_every
        if self.seq - self._consolidated >= consolidate_every:
            self.consolidate()


def _written() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


def bytes_written(root: Path, evaluations: int, writer_class: type[TrialWriter]) -> int:
    """Bytes written by checkpointing ``evaluations`` in batches of 10, then finishing."""
    store = CampaignStore.create(root, "bytes", {}, [{"name": "t"}])
    start = _written()
    writer = writer_class(store.trial_files("t"), META, 64)
    rng = np.random.default_rng(0)
    for batch in range(1, evaluations // 10 + 1):
        x = rng.random((10, 2))
        evs = [Evaluation(value=float(v)) for v in x.sum(axis=1)]
        writer.checkpoint(History.from_evaluations(x, evs, batch, batch), {"step": batch})
    writer.checkpoint(History.empty(2), None, status="completed")
    writer.consolidate()
    return _written() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=10_000)
    parser.add_argument("--bytes-up-to", type=int, default=100_000)
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

    print()
    print(f"{'evals':>7} {'folded MB':>10} {'B/eval':>7} {'rewrite-64 MB':>14} {'B/eval':>7} "
          f"{'ratio':>6}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        n = 10_000
        while n <= args.bytes_up_to:
            new = bytes_written(Path(tmp) / f"new{n}", n, TrialWriter)
            old = bytes_written(Path(tmp) / f"old{n}", n, RewriteEvery64)
            print(f"{n:>7} {new / 1e6:>10.1f} {new / n:>7.0f} {old / 1e6:>14.1f} "
                  f"{old / n:>7.0f} {old / new:>5.1f}x")  # fmt: skip
            n *= 10


if __name__ == "__main__":
    main()
