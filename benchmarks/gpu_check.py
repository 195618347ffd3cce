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
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcopt.core.evaluation import Evaluation, describe_exception
from hpcopt.problems.base import Problem, ProblemConfig

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

BATCHES, DRY_BATCHES = (64, 256, 1024), (8, 32)
RTOL, ATOL = 1e-6, 1e-9
AGREEMENT = 10 * RTOL
"""Largest relative difference of N between devices: the same float64 method, whose sums
run in another order and may so take other steps, stays within a few ``rtol``."""
PLACEMENTS, DRY_PLACEMENTS = 10, 3
P5_TOLERANCE_DB = 0.25
"""Largest P5 difference between the variants at one placement, with the same seed: well
below the 1 dB Monte Carlo noise of P5 at 1e5 rays, so an optimiser would not tell them
apart. A first guess, not yet measured on a GPU."""
ACTORS_PER_GPU, DRY_GPUS = 4, 4
MATMUL, DRY_MATMUL = 4096, 256  # side of the probe's float32 matrices
BUDGET_S = {"torch dPBE": 80.0, "Sionna RT": 80.0, "Ray GPUs": 100.0}


class CheckFailed(RuntimeError):
    """A section ran, but what it measured is not what a working GPU node gives."""


@dataclass(frozen=True)
class Run:
    """One section's run: on CUDA or the dry run, and its time budget (s)."""

    cuda: bool
    budget_s: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.budget_s - (time.monotonic() - self.start)


@dataclass(frozen=True)
class Result:
    """A section's outcome: ``PASS``, ``FAIL`` or ``SKIPPED``, and one line on it."""

    status: str
    summary: str


# -- 1. torch dPBE ------------------------------------------------------------------------


def torch_dpbe(run: Run) -> Result:
    """Section 1: the torch dPBE on CUDA and on the CPU (see the module docstring)."""
    try:
        from hpcopt.problems.pbe.torch_solver import TorchSolver
    except ModuleNotFoundError as exc:
        if exc.name != "hpcopt.problems.pbe.torch_solver":
            raise  # the module is there but needs something missing: a failure
        print("torch dPBE: backend not available (hpcopt.problems.pbe.torch_solver missing)")
        return Result("SKIPPED", "backend not available")
    import torch
    from pbe_solver import T, case  # beside this script, which runs from benchmarks/

    from hpcopt.problems.pbe.solver import Model

    grid, n0, params = case(1, 30)
    model = Model(grid, "shear", "power_law", "power_law")
    fast = "cuda" if run.cuda else "cpu"
    name = torch.cuda.get_device_name(0) if run.cuda else "the CPU (dry run)"
    print(
        f"1-D, 30 classes, t = 0..600 s, rtol {RTOL:g}; {fast} is {name}; cpu runs "
        f"{torch.get_num_threads()} torch threads"
    )
    sides = [TorchSolver(model, n0, rtol=RTOL, atol=ATOL, device=d) for d in (fast, "cpu")]
    for solver in sides:  # device start, kernels and caches before the clock
        solver.solve({k: np.full(2, v) for k, v in params.items()}, T)
    print(
        f"{'batch':>6} {fast + ' s':>9} {'sets/s':>9} {'cpu s':>9} {'sets/s':>9} "
        f"{'speed-up':>9} {'solved':>11} {'max rel diff':>13}"
    )
    rng = np.random.default_rng(0)
    problems, measured, worst, last = [], [], 0.0, ""
    for batch in BATCHES if run.cuda else DRY_BATCHES:
        if measured and measured[-1][1] * batch / measured[-1][0] > run.left():
            print(f"{batch:>6} not run: it would not finish within the {run.budget_s:g} s budget")
            break
        sets = {k: v * np.exp(rng.normal(0.0, 0.2, batch)) for k, v in params.items()}
        (a, ta), (b, tb) = (_timed(solver, sets, T) for solver in sides)
        both = a.ok & b.ok
        diff = relative_difference(np.asarray(a.N)[both], np.asarray(b.N)[both])
        worst = max(worst, diff)
        measured.append((batch, ta + tb))
        solved = f"{a.ok.sum()}/{b.ok.sum()}"
        print(
            f"{batch:>6} {ta:9.3f} {batch / ta:9.1f} {tb:9.3f} {batch / tb:9.1f} "
            f"{tb / ta:8.1f}x {solved:>11} {diff:13.1e}"
        )
        last = f"{batch} sets: {batch / ta:.0f} vs {batch / tb:.0f} sets/s ({tb / ta:.1f}x)"
        if not np.array_equal(a.ok, b.ok):
            problems.append(f"batch {batch}: members solved on one device only")
        if not both.any():
            problems.append(f"batch {batch}: no member solved on both devices")
        if diff > AGREEMENT:
            problems.append(f"batch {batch}: N differs by {diff:.1e} (> {AGREEMENT:g})")
    if problems:
        raise CheckFailed("; ".join(problems))
    return Result("PASS", f"{fast} vs cpu, max rel diff {worst:.1e}; {last}")


def _timed(solver: Any, sets: dict[str, np.ndarray], t: np.ndarray) -> tuple[Any, float]:
    start = time.perf_counter()
    solution = solver.solve(sets, t)
    return solution, time.perf_counter() - start


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest ``|a - b|`` relative to the largest class of ``b`` at the same member and
    time; ``a``, ``b``: ``(B, T, n)``. 0 for no members."""
    if not a.size:
        return 0.0
    scale = np.maximum(np.abs(b).max(axis=-1, keepdims=True), 1e-300)
    return float(np.abs((a - b) / scale).max())


# -- 2. Sionna RT -------------------------------------------------------------------------


def sionna_rt(run: Run) -> Result:
    """Section 2: Sionna RT radio maps on the CUDA and the LLVM variant, each in its own
    process (see the module docstring)."""
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
    env = dict(os.environ, HPCOPT_SIONNA_DEVICE=device, PYTHONPATH=_python_path())
    command = [sys.executable, __file__, "--radio-maps", str(out), "--placements", str(placements)]
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


# -- 3. Ray with GPUs ---------------------------------------------------------------------


class GpuProbe(Problem):
    """Section 3's problem on a Ray worker (``gpu_check:GpuProbe``): the device torch gets
    there and a float32 matmul's rate on it (``options``: ``device``, ``size``)."""

    def setup(self) -> None:
        import torch

        self._torch = torch
        self._device = torch.device(self.config.options["device"])
        n = self.config.options["size"]
        self._a = torch.randn(n, n, device=self._device) / n**0.5
        self._multiply()  # the library's start before the clock

    def _multiply(self, repeat: int = 1) -> float:
        b = self._a
        for _ in range(repeat):
            b = self._a @ b
        return float(b[0, 0])  # waits for the device

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        torch, device = self._torch, self._device
        repeat = 10
        start = time.perf_counter()
        value = self._multiply(repeat)
        tflops = 2 * self._a.shape[0] ** 3 * repeat / (time.perf_counter() - start) / 1e12
        extras: dict[str, Any] = {
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "tflops": tflops,
        }
        if device.type == "cuda":
            index = torch.cuda.current_device()
            extras["torch_device"] = f"cuda:{index}"
            extras["device_count"] = torch.cuda.device_count()
            extras["device_name"] = torch.cuda.get_device_name(index)
            extras["device_uuid"] = str(torch.cuda.get_device_properties(index).uuid)
        else:
            extras.update(torch_device="cpu", device_count=0, device_name="cpu", device_uuid="")
        return Evaluation(value=value, extras=extras)


def ray_gpus(run: Run) -> Result:
    """Section 3: hpcopt's RayEngine on a private Ray with the machine's GPUs, four actors
    per GPU (see the module docstring)."""
    from hpcopt.config.registry import build_engine
    from hpcopt.engine.ray_pool import RayEngineConfig
    from hpcopt.problems.custom import CustomConfig

    if run.cuda:
        import torch

        gpus = torch.cuda.device_count()
    else:
        gpus = DRY_GPUS
    if gpus == 0:
        raise CheckFailed("torch sees no GPU to give Ray")
    workers, cpus = ACTORS_PER_GPU * gpus, os.cpu_count() or 1
    engine_config = RayEngineConfig(
        kind="ray",
        num_workers=workers,
        cpus_per_worker=min(1.0, cpus / workers),
        gpu_fraction=1 / ACTORS_PER_GPU,
        points_per_task=1,
        max_retries=0,
        num_cpus=cpus,
        num_gpus=gpus,
        start_timeout_s=max(1.0, min(90.0, run.left())),
    )
    probe = CustomConfig(
        name="custom",
        target="gpu_check:GpuProbe",
        parameters=[{"name": "x", "low": 0.0, "high": 1.0}],
        options={
            "device": "cuda" if run.cuda else "cpu",
            "size": MATMUL if run.cuda else DRY_MATMUL,
        },
    )
    coverage = coverage_config("1ap")
    up: list[dict[str, str]] = []

    def on_event(kind: str, **fields: Any) -> None:
        if kind == "worker_up":
            up.append(fields)

    with _worker_env(run.cuda), build_engine(engine_config) as engine:
        engine.on_event = on_event
        probes = _map_within(engine, probe, np.zeros((workers, 1)), run)
        maps = _map_within(
            engine, coverage, placements_of(coverage, workers if run.cuda else 1), run
        )
    print(
        f"{gpus} GPU(s){' declared (dry run)' if not run.cuda else ''}, {workers} actors at "
        f"gpu_fraction {engine_config.gpu_fraction:g}, {engine_config.cpus_per_worker:g} CPU each"
    )
    print(f"{'worker':18} {'ray gpu':>7} {'CUDA_VISIBLE':>12} {'torch':>7} {'TFLOP/s':>8}  device")
    for ev in sorted(probes, key=lambda e: (e.gpu_ids, e.worker)):
        x = ev.extras
        if ev.ok:
            print(
                f"{ev.worker:18} {ev.gpu_ids:>7} {x['cuda_visible_devices']:>12} "
                f"{x['torch_device']:>7} {x['tflops']:8.2f}  {x['device_name']} {x['device_uuid']}"
            )
        else:
            print(f"{ev.worker:18} {ev.gpu_ids:>7} failed: {ev.error}")
    on_gpu = sum(ev.extras.get("radio_map_on_gpu", 0.0) == 1.0 for ev in maps)
    print(
        f"coverage radio maps: {sum(ev.ok for ev in maps)} of {len(maps)} ok, {on_gpu} on a GPU,"
        f" by {len({ev.worker for ev in maps})} actors"
    )
    problems = ray_problems(gpus, up, probes, maps, run.cuda)
    if problems:
        raise CheckFailed("; ".join(problems))
    return Result(
        "PASS",
        f"{workers} actors on {gpus} GPU(s), each saw its own; "
        f"{len(maps)} radio maps, {on_gpu} on a GPU",
    )


def ray_problems(
    gpus: int,
    up: list[dict[str, str]],
    probes: list[Evaluation],
    maps: list[Evaluation],
    cuda: bool,
) -> list[str]:
    """What is wrong with section 3's actors (``worker_up`` events), probe evaluations and
    radio maps; empty when nothing is."""
    problems = []
    want = Counter({str(g): ACTORS_PER_GPU for g in range(gpus)})
    if Counter(f["gpu_ids"] for f in up) != want:
        problems.append(
            f"actors per GPU {dict(Counter(f['gpu_ids'] for f in up))}, want {dict(want)}"
        )
    problems += [f"{ev.worker}: {ev.error}" for ev in probes + maps if not ev.ok]
    ok = [ev for ev in probes if ev.ok]
    if len({ev.worker for ev in ok}) != ACTORS_PER_GPU * gpus:
        problems.append(
            f"{len({ev.worker for ev in ok})} actors evaluated, not {ACTORS_PER_GPU * gpus}"
        )
    for ev in ok:
        if ev.extras["cuda_visible_devices"] != ev.gpu_ids:
            problems.append(
                f"{ev.worker}: CUDA_VISIBLE_DEVICES={ev.extras['cuda_visible_devices']!r} "
                f"but Ray gave it GPU {ev.gpu_ids!r}"
            )
        if cuda and ev.extras["device_count"] != 1:
            problems.append(f"{ev.worker}: torch sees {ev.extras['device_count']} GPUs, not 1")
    if cuda:
        problems += _uuid_problems(ok)
        if any(ev.extras.get("radio_map_on_gpu") != 1.0 for ev in maps if ev.ok):
            problems.append("a radio map on a worker with a GPU share ran on the CPU")
    return problems


def _uuid_problems(probes: list[Evaluation]) -> list[str]:
    """Each Ray GPU id one physical GPU (by UUID), a different one per id, and one that
    ``nvidia-smi`` lists."""
    by_id: dict[str, set[str]] = {}
    for ev in probes:
        by_id.setdefault(ev.gpu_ids, set()).add(_plain_uuid(ev.extras["device_uuid"]))
    problems = [
        f"Ray GPU {g} is several devices: {sorted(u)}" for g, u in by_id.items() if len(u) > 1
    ]
    seen = set().union(*by_id.values()) if by_id else set()
    if len(seen) != len(by_id):
        problems.append(f"{len(by_id)} Ray GPU ids but {len(seen)} devices")
    listed = _nvidia_smi_uuids()
    if listed and not seen <= listed:
        problems.append(
            f"devices {sorted(seen - listed)} are not among nvidia-smi's {sorted(listed)}"
        )
    return problems


def _plain_uuid(uuid: str) -> str:
    """A GPU UUID as nvidia-smi (``GPU-xxxxxxxx-...``) or torch writes it, compared plain."""
    return uuid.strip().lower().removeprefix("gpu-").replace("-", "")


def _nvidia_smi_uuids() -> set[str]:
    """The UUIDs nvidia-smi lists (empty without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return set()
    listed = subprocess.run(
        ["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return {_plain_uuid(line) for line in listed.stdout.split() if line.strip()}


def _map_within(
    engine: Any, problem: ProblemConfig, points: np.ndarray, run: Run
) -> list[Evaluation]:
    """``engine.map`` that gives up when ``run``'s budget is spent."""
    engine.submit(problem, points)
    while run.left() > 0:
        for done in engine.wait(timeout_s=run.left()):
            if done.error is not None:
                raise done.error
            return done.evaluations
    raise CheckFailed(f"{problem.label} not evaluated within the {run.budget_s:g} s budget")


@contextmanager
def _worker_env(cuda: bool) -> Iterator[None]:
    """This process's environment as Ray and its workers inherit it: this script and this
    hpcopt importable, Sionna RT on the GPU (``cuda``: an error where it cannot be) or the
    CPU. Without ``cuda`` the GPUs are declared, not real: Ray would refuse more than
    ``CUDA_VISIBLE_DEVICES`` lists, so it is dropped."""
    saved = dict(os.environ)
    os.environ.update(PYTHONPATH=_python_path(), HPCOPT_SIONNA_DEVICE="cuda" if cuda else "cpu")
    if not cuda:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _python_path() -> str:
    """This script's folder and this hpcopt first (a venv may install another hpcopt)."""
    return os.pathsep.join(p for p in (str(HERE), str(ROOT), os.environ.get("PYTHONPATH")) if p)


# -- the run ------------------------------------------------------------------------------

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
    parser.add_argument("--radio-maps", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--placements", type=int, default=PLACEMENTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.radio_maps is not None:
        radio_maps(args.radio_maps, args.placements)
        return 0
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
