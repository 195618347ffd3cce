"""GPU readiness: what hpcopt does on one CUDA machine, checked in under five minutes.

    python benchmarks/gpu_check.py                 # on a CUDA machine (one H100/H200)
    python benchmarks/gpu_check.py --cpu-dry-run   # every section on the CPU: code paths only

Three sections, each within its own time budget; one that fails prints why (with its
traceback) and the others still run:

1. **torch dPBE, CUDA vs CPU** (``hpcopt.problems.pbe.torch_solver.TorchSolver``): 1-D,
   30 classes, shear agglomeration and power-law breakage (``benchmarks/pbe_solver.py``'s
   case), parameter sets +-20 % log-normal around its parameters, batches of 64, 256 and
   1024: seconds and sets/s on each device, the CUDA speed-up, members solved on each and
   the largest difference of N between the devices (relative to each time's largest
   class). Without the module it says "backend not available" and goes on.
2. **Sionna RT, Mitsuba's CUDA variant vs LLVM**, each in a process of its own (a process
   keeps to one Dr.Jit variant): the coverage problem's office at its defaults, two APs,
   the same placements and seed on both: set-up, first map (compilation) and maps/s per
   variant (LLVM on all of the process's threads); over cells lit on both the largest and
   99th-percentile |dB| difference, the share of cells lit on one only, and the largest
   difference of the objective (P5 of the floor, dBm).
3. **A private Ray with the machine's GPUs**, driven by hpcopt's own RayEngine at
   ``gpu_fraction: 0.25``: four actors per GPU, each reporting the GPU Ray gave it,
   ``CUDA_VISIBLE_DEVICES``, the device torch sees there (name, UUID) and a matmul's
   TFLOP/s on it; then one coverage radio map per actor, on the GPU.

Then a summary table, PASS / FAIL / SKIPPED per section; exit status 1 if a section
failed, else 0. Without CUDA (torch sees none, and there is no ``nvidia-smi`` or
``CUDA_VISIBLE_DEVICES`` hides every GPU) it says so, names the sections it skipped and
exits 0 without starting anything. ``--cpu-dry-run`` runs the same code on the CPU: torch
on cpu vs cpu at batches of 8 and 32, LLVM vs LLVM at 3 placements, a Ray with 4 declared
(logical) GPUs whose 16 actors multiply on the CPU, and one radio map on LLVM.

Each section is a module beside this one (``gpu_check_dpbe``, ``gpu_check_sionna``,
``gpu_check_ray``), sharing ``gpu_check_section``'s run, result and failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

from gpu_check_dpbe import torch_dpbe
from gpu_check_ray import ray_gpus
from gpu_check_section import Result, Run
from gpu_check_sionna import sionna_rt

from hpcopt.core.evaluation import describe_exception

BUDGET_S = {"torch dPBE": 80.0, "Sionna RT": 80.0, "Ray GPUs": 100.0}

SECTIONS: dict[str, Callable[[Run], Result]] = {
    "torch dPBE": torch_dpbe,
    "Sionna RT": sionna_rt,
    "Ray GPUs": ray_gpus,
}


def cuda_absent() -> str:
    """Why this machine has no CUDA to check; '' when it has."""
    import torch

    from hpcopt.problems.coverage.device import no_gpu_given

    if torch.cuda.is_available():
        return ""
    if shutil.which("nvidia-smi") is None:
        return "torch.cuda.is_available() is False and there is no nvidia-smi"
    hidden = no_gpu_given()
    return f"torch.cuda.is_available() is False and {hidden}" if hidden else ""


def run_section(name: str, check: Callable[[Run], Result], cuda: bool) -> tuple[Result, float]:
    """Run one section within its budget; a failure is its result, printed with why."""
    print(f"\n== {name} ==", flush=True)
    run = Run(cuda, BUDGET_S[name])
    try:
        result = check(run)
    except Exception as exc:  # a section's failure is reported, and the others still run
        traceback.print_exc(file=sys.stdout)
        result = Result("FAIL", describe_exception(exc))
    seconds = time.monotonic() - run.start
    print(f"-> {result.status} in {seconds:.1f} s: {result.summary}", flush=True)
    return result, seconds


def main(argv: list[str] | None = None) -> int:
    """Run the check (see the module docstring); return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="run every section on the CPU, to exercise the code",
    )
    args = parser.parse_args(argv)
    if not args.cpu_dry_run:
        absent = cuda_absent()
        if absent:
            print(f"CUDA absent: {absent}.")
            print(f"skipped: {', '.join(SECTIONS)} (--cpu-dry-run runs them on the CPU)")
            return 0
    start = time.monotonic()
    budgets = ", ".join(f"{name} {s:g} s" for name, s in BUDGET_S.items())
    mode = " (CPU dry run)" if args.cpu_dry_run else ""
    print(f"GPU check{mode}: {os.cpu_count()} CPUs; budgets {budgets}", flush=True)
    if not args.cpu_dry_run and shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version"]
        subprocess.run([*query, "--format=csv,noheader"], timeout=30)
    results = {
        name: run_section(name, check, not args.cpu_dry_run) for name, check in SECTIONS.items()
    }
    print(f"\n== summary ({time.monotonic() - start:.0f} s) ==")
    print(f"{'section':12} {'status':8} {'time s':>7}  result")
    for name, (result, seconds) in results.items():
        print(f"{name:12} {result.status:8} {seconds:7.1f}  {result.summary}")
    return int(any(result.status == "FAIL" for result, _ in results.values()))


if __name__ == "__main__":
    sys.exit(main())
