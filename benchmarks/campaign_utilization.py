"""How busy a campaign keeps its pool: trials one after another against several at once.

A campaign of 8 BO trials (``max_concurrent: 2``, so each asks for 2 points at a time) and
2 GA trials (population 16) runs on a private Ray pool of 8 workers whose evaluations
sleep 0.2 s (so two cores can host 8 busy workers), three times in one run, on one pool
started and warmed beforehand: with ``max_concurrent_trials: 1`` (sequential), unset (the
default: a new trial starts while fewer tasks wait than there are workers) and 5. Printed
for each: wall time and the pool's busy fraction, the evaluations' time over workers x
wall; then the ratio of the default's to the sequential's. Target: at least 0.9 concurrent.

    python benchmarks/campaign_utilization.py [--workers 8] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hpcopt import config as cfg
from hpcopt.config.registry import build_engine
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.engine.base import Engine
from hpcopt.problems.analytic import AnalyticConfig
from hpcopt.store.campaign_store import CampaignStore


def document(workers: int, delay_s: float, cap: int | None) -> dict:
    bo = {"name": "bo", "sampler": "tpe", "n_trials": 8, "max_concurrent": 2}
    ga = {"name": "ga", "population": 16, "generations": 3}
    doc = {
        "name": "utilization",
        "engine": {"kind": "ray", "num_workers": workers, "cpus_per_worker": 2 / workers,
                   "num_cpus": 2},
        "shared": {"problem": {"name": "analytic", "function": "branin", "delay_s": delay_s}},
        "trials": [{"name": f"bo{i}", "seed": i, "method": bo} for i in range(8)]
        + [{"name": f"ga{i}", "seed": i, "method": ga} for i in range(2)],
    }  # fmt: skip
    if cap is not None:
        doc["max_concurrent_trials"] = cap
    return doc


def measure(
    engine: Engine, folder: Path, workers: int, delay_s: float, cap: int | None
) -> tuple[float, float]:
    """Wall seconds of the campaign on the started ``engine`` and the pool's busy fraction."""
    campaign = cfg.parse(document(workers, delay_s, cap), output_dir=str(folder))
    store = drv.create(campaign)
    start = time.perf_counter()
    drv.run(campaign, store, engine=engine, reporter=reporters.SilentReporter())
    wall = time.perf_counter() - start
    store = CampaignStore.open(folder)
    busy = sum(float(store.read_trial(t).history.wall_time_s.sum()) for t in store.trial_names())
    return wall, busy / (workers * wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per evaluation")
    args = parser.parse_args()
    engine_config = cfg.parse(document(args.workers, args.delay, None)).engine
    # one pool for both runs, started and warmed first: its start-up is not what is measured
    with build_engine(engine_config) as engine, tempfile.TemporaryDirectory() as tmp:
        warm = AnalyticConfig(name="analytic", function="branin")
        engine.map(warm, np.full((4 * args.workers, 2), 0.5))
        seq = measure(engine, Path(tmp) / "seq", args.workers, args.delay, cap=1)
        con = measure(engine, Path(tmp) / "con", args.workers, args.delay, cap=None)
        five = measure(engine, Path(tmp) / "five", args.workers, args.delay, cap=5)
    print(f"8 BO (2 points a batch) + 2 GA (16 a batch) trials, {args.workers} workers, "
          f"{args.delay:g} s an evaluation")  # fmt: skip
    print(f"  one trial at a time : {seq[0]:6.2f} s wall, pool busy {seq[1]:.2f}")
    print(f"  trials in flight    : {con[0]:6.2f} s wall, pool busy {con[1]:.2f}"
          "   (target >= 0.9)")  # fmt: skip
    print(f"  max_concurrent: 5   : {five[0]:6.2f} s wall, pool busy {five[1]:.2f}")
    print(f"  busy ratio {con[1] / seq[1]:.2f}x, wall ratio {seq[0] / con[0]:.2f}x")


if __name__ == "__main__":
    main()
