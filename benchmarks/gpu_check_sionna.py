"""The GPU check's section 2 (``benchmarks/gpu_check.py``): Sionna RT radio maps of the
coverage problem on Mitsuba's CUDA and LLVM variants, each in a process of its own (a
process keeps to one Dr.Jit variant), compared for speed and agreement. The child process
is this module run as a script; section 3 borrows its coverage problem and placements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from gpu_check_section import CheckFailed, Result, Run, python_path

from hpcopt.problems.base import ProblemConfig

PLACEMENTS, DRY_PLACEMENTS = 10, 3
P5_TOLERANCE_DB = 0.25
"""Largest P5 difference between the variants at one placement, with the same seed: well
below the 1 dB Monte Carlo noise of P5 at 1e5 rays, so an optimiser would not tell them
apart. A first guess, not yet measured on a GPU."""


def sionna_rt(run: Run) -> Result:
    """Section 2: Sionna RT radio maps on the CUDA and the LLVM variant, each in its own
    process (see ``gpu_check``'s docstring)."""
    from hpcopt.problems.coverage.device import CUDA, LLVM

    placements = PLACEMENTS if run.cuda else DRY_PLACEMENTS
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        fast = _maps_in_process("cuda" if run.cuda else "cpu", Path(tmp) / "a", placements, run)
        llvm = _maps_in_process("cpu", Path(tmp) / "b", placements, run)
    print(
        f"office, 2 APs, {placements} placements, same seed on both"
        + ("" if run.cuda else "; dry run: both on LLVM")
    )
    print(f"{'variant':34} {'set-up s':>9} {'first map s':>12} {'maps/s':>8}")
    for m in (fast, llvm):
        label = m["variant"] + (f" ({m['threads']} threads)" if m["threads"] else "")
        print(f"{label:34} {m['setup_s']:9.2f} {m['first_map_s']:12.2f} {m['maps_per_s']:8.2f}")
    a, b = fast["rss"], llvm["rss"]
    lit_a, lit_b = np.isfinite(a), np.isfinite(b)
    both = lit_a & lit_b
    if not both.any():
        raise CheckFailed("no cell is lit on both variants' maps")
    db = np.abs(a[both] - b[both])
    one_only = float(np.mean(lit_a != lit_b))
    dp5 = float(np.abs(fast["p5"] - llvm["p5"]).max())
    print(
        f"cells lit on both: |dB| max {db.max():.2e}, 99th percentile "
        f"{np.percentile(db, 99):.2e}; lit on one only: {one_only:.2%}; "
        f"P5 max |difference| {dp5:.3f} dB (tolerance {P5_TOLERANCE_DB} dB)"
    )
    wanted = (CUDA if run.cuda else LLVM, LLVM)
    for m, variant in zip((fast, llvm), wanted):
        if m["variant"] != variant:
            raise CheckFailed(f"ran on {m['variant']} ({m['why']}), not {variant}")
    if not dp5 <= P5_TOLERANCE_DB:
        raise CheckFailed(f"P5 differs by {dp5:.3f} dB between the variants")
    rates = " vs ".join(f"{m['variant'].split('_')[0]} {m['maps_per_s']:.1f}" for m in (fast, llvm))
    return Result(
        "PASS", f"{rates} maps/s; P5 within {dp5:.3f} dB, max |dB| {db.max():.1e} on lit cells"
    )


def _maps_in_process(device: str, out: Path, placements: int, run: Run) -> dict[str, Any]:
    """Run :func:`radio_maps` in a child with ``HPCOPT_SIONNA_DEVICE=device``; its output."""
    out.mkdir()
    env = dict(os.environ, HPCOPT_SIONNA_DEVICE=device, PYTHONPATH=python_path())
    command = [sys.executable, __file__, str(out), str(placements)]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=max(1.0, run.left())
    )
    if done.returncode != 0:
        raise CheckFailed(
            f"the radio-map process (HPCOPT_SIONNA_DEVICE={device}) exited with status "
            f"{done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    meta = json.loads((out / "meta.json").read_text())
    return {**meta, "rss": np.load(out / "rss.npy"), "p5": np.load(out / "p5.npy")}


def coverage_config(mode: str, deterministic: bool = True) -> ProblemConfig:
    """The coverage problem at its defaults (office scene)."""
    from hpcopt.problems.coverage.config import CoverageConfig

    return CoverageConfig(name="coverage", mode=mode, radio={"deterministic": deterministic})


def placements_of(config: ProblemConfig, count: int) -> np.ndarray:
    """``count`` feasible placements ``(count, d)``, the same in every process."""
    space = config.space()
    points = space.decode(np.random.default_rng(1).random((50 * count, space.dim)))
    return points[config.feasible(points)][:count]


def radio_maps(out: Path, placements: int) -> None:
    """Section 2's child: ``placements`` radio maps of the two-AP coverage problem on the
    variant ``HPCOPT_SIONNA_DEVICE`` chooses. Writes ``rss.npy`` (per-AP RSS, dBm,
    ``(placements, 2, ny, nx)``), ``p5.npy`` (the objective per placement, dBm) and
    ``meta.json`` (variant, timings, Dr.Jit threads on the CPU)."""
    import drjit as dr

    from hpcopt.problems.coverage import objective as ob
    from hpcopt.problems.coverage.problem import CoverageProblem

    start = time.perf_counter()
    config = coverage_config("2ap", deterministic=False)  # LLVM on all threads
    problem = CoverageProblem(config)
    problem.setup()
    setup_s = time.perf_counter() - start
    points = placements_of(config, placements)
    start = time.perf_counter()
    problem.radio_map(points[0])
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    maps = [problem.radio_map(x)[0] for x in points]
    maps_s = time.perf_counter() - start
    p5 = [ob.value(m.max(axis=0)[problem.floor], config.objective) for m in maps]
    np.save(out / "rss.npy", np.stack(maps))
    np.save(out / "p5.npy", np.array(p5))
    meta = {
        "variant": problem.device.variant,
        "why": problem.device.why,
        "threads": 0 if problem.device.gpu else dr.thread_count(),
        "setup_s": setup_s,
        "first_map_s": first_s,
        "maps_per_s": len(points) / maps_s,
    }
    (out / "meta.json").write_text(json.dumps(meta))


if __name__ == "__main__":  # the child of _maps_in_process: OUT PLACEMENTS
    radio_maps(Path(sys.argv[1]), int(sys.argv[2]))
