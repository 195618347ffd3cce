"""The GPU check's section 3 (``benchmarks/gpu_check.py``): hpcopt's RayEngine on a private
Ray with the machine's GPUs, a share of a GPU per actor; each actor reports the GPU it was
given and multiplies on it, then each computes a coverage radio map."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from gpu_check_section import CheckFailed, Result, Run, python_path
from gpu_check_sionna import coverage_config, placements_of

from hpcopt.core.evaluation import Evaluation
from hpcopt.problems.base import Problem, ProblemConfig

ACTORS_PER_GPU, DRY_GPUS = 4, 4
MATMUL, DRY_MATMUL = 4096, 256  # side of the probe's float32 matrices


class GpuProbe(Problem):
    """Section 3's problem on a Ray worker (``gpu_check_ray:GpuProbe``): the device torch
    gets there and a float32 matmul's rate on it (``options``: ``device``, ``size``)."""

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
    per GPU (see ``gpu_check``'s docstring)."""
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
        target="gpu_check_ray:GpuProbe",
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
    """This process's environment as Ray and its workers inherit it: the check's modules and
    this hpcopt importable, Sionna RT on the GPU (``cuda``: an error where it cannot be) or the
    CPU. Without ``cuda`` the GPUs are declared, not real: Ray would refuse more than
    ``CUDA_VISIBLE_DEVICES`` lists, so it is dropped."""
    saved = dict(os.environ)
    os.environ.update(PYTHONPATH=python_path(), HPCOPT_SIONNA_DEVICE="cuda" if cuda else "cpu")
    if not cuda:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
