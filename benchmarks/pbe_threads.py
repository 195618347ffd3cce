"""What capping BLAS threads does to one dPBE solve, on an idle and on a loaded machine.

A worker asks for ``cpus_per_worker`` CPUs and hpcopt caps its BLAS/OpenMP pools there
(:func:`hpcopt.engine.base.limit_threads`). This prints, side by side in one run, the wall
time of the 2-D 15-class case of benchmarks/pbe_solver.py (and the 1-D 30-class one) with
the BLAS library's default pool and with one thread, first on an otherwise idle machine,
then while one busy process per core competes for the CPUs (what a worker sees on a
shared node).

    python benchmarks/pbe_threads.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

from pbe_solver import T, case  # beside this script, which runs from benchmarks/
from threadpoolctl import threadpool_info, threadpool_limits

from hpcopt.problems.pbe.solver import Model, Solver


def spin(stop: mp.Event) -> None:
    while not stop.is_set():
        pass


def best_time(dim: int, classes: int, threads: int | None, repeat: int) -> float:
    grid, n0, params = case(dim, classes)
    solver = Solver(Model(grid, "shear", "power_law", "power_law"), n0)
    best = float("inf")
    with threadpool_limits(limits=threads):
        for _ in range(repeat):
            start = time.perf_counter()
            sol = solver.solve(params, T)
            best = min(best, time.perf_counter() - start)
            assert not sol.error[0], sol.error[0]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    pools = ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info())
    print(f"{cores} cores; thread pools by default: {pools}; best of {args.repeat}")
    print(f"{'case':18} {'machine':8} {'default s':>10} {'1 thread s':>11} {'ratio':>7}")
    for label, busy in (("idle", 0), ("loaded", cores)):
        stop = mp.Event()
        load = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(busy)]
        for p in load:
            p.start()
        try:
            for dim, classes in ((1, 30), (2, 15)):
                default = best_time(dim, classes, None, args.repeat)
                one = best_time(dim, classes, 1, args.repeat)
                print(
                    f"{f'{dim}-D, {classes} classes':18} {label:8} {default:10.3f} "
                    f"{one:11.3f} {default / one:6.1f}x"
                )
        finally:
            stop.set()
            for p in load:
                p.join()


if __name__ == "__main__":
    main()
