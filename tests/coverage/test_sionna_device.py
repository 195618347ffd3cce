"""Where Sionna RT runs: the GPU, the CPU, or an error that says why — never a quiet CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpcopt.problems.coverage import device
from hpcopt.problems.coverage.device import CUDA, LLVM, DeviceError, choose

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = [LLVM, CUDA]


def no_gpu() -> str:
    return "this process was given no GPU (CUDA_VISIBLE_DEVICES='')"


def a_gpu() -> str:
    return ""


def driver_says() -> str:
    return "cuInit() returned CUDA_ERROR_SYSTEM_DRIVER_MISMATCH (803)"


def test_auto_takes_the_gpu_when_cuda_starts():
    chosen = choose("auto", VARIANTS, cuda_started=lambda: True, absent=a_gpu)
    assert chosen.variant == CUDA and chosen.gpu


def test_auto_without_a_gpu_runs_on_the_cpu_and_says_why():
    chosen = choose("auto", VARIANTS, cuda_started=lambda: False, absent=no_gpu)
    assert chosen.variant == LLVM and not chosen.gpu
    assert chosen.why == f"HPCOPT_SIONNA_DEVICE=auto and {no_gpu()}"


def test_auto_with_a_gpu_that_does_not_start_is_an_error_naming_the_driver():
    with pytest.raises(DeviceError, match="CUDA_ERROR_SYSTEM_DRIVER_MISMATCH") as err:
        choose("auto", VARIANTS, lambda: False, absent=a_gpu, driver_error=driver_says)
    assert "HPCOPT_SIONNA_DEVICE=cpu" in str(err.value)  # how to choose the CPU on purpose


def test_auto_with_a_gpu_and_a_mitsuba_without_cuda_is_an_error():
    with pytest.raises(DeviceError, match=f"no {CUDA} variant"):
        choose("auto", [LLVM], cuda_started=lambda: False, absent=a_gpu)


def test_cuda_asked_where_there_is_no_gpu_is_an_error_naming_the_reason():
    with pytest.raises(DeviceError, match=r"HPCOPT_SIONNA_DEVICE=cuda\): this process was"):
        choose("cuda", VARIANTS, cuda_started=lambda: False, absent=no_gpu)


def test_cpu_asked_never_tries_cuda():
    def tried() -> bool:
        raise AssertionError("CUDA was started")

    assert choose("cpu", VARIANTS, cuda_started=tried).variant == LLVM


def test_an_unknown_device_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("HPCOPT_SIONNA_DEVICE", "gpu")
    with pytest.raises(DeviceError, match="HPCOPT_SIONNA_DEVICE='gpu': must be one of auto, cuda"):
        device.wanted()


def test_an_empty_cuda_visible_devices_means_no_gpu_was_given(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "was given no GPU" in device.no_gpu_given()


def run_coverage(asked: str) -> subprocess.CompletedProcess:
    """Set up (and evaluate once) a 1-AP coverage problem in a fresh process: Mitsuba's
    variant is chosen once per process."""
    code = textwrap.dedent("""
        import logging
        import numpy as np
        from hpcopt.problems.coverage.config import CoverageConfig
        from hpcopt.problems.coverage.problem import CoverageProblem, sionna_device

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        radio = {"samples_per_tx": 10_000, "cell_size_m": 1.0}
        problem = CoverageProblem(CoverageConfig(name="coverage", mode="1ap", radio=radio))
        problem.setup()
        ev = problem.evaluate(np.array([4.0, 3.0]))
        print("variant", sionna_device().variant, "on_gpu", ev.extras["radio_map_on_gpu"])
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HPCOPT_SIONNA_DEVICE=asked)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.sionna
@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this machine has a GPU")
def test_without_a_gpu_auto_runs_on_the_cpu_and_records_it():
    done = run_coverage("auto")
    assert done.returncode == 0, done.stderr
    assert f"variant {LLVM} on_gpu 0.0" in done.stdout
    assert f"Sionna RT runs on {LLVM}: HPCOPT_SIONNA_DEVICE=auto and " in done.stderr


@pytest.mark.sionna
@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this machine has a GPU")
def test_without_a_gpu_cuda_asked_fails_at_setup_naming_the_reason():
    done = run_coverage("cuda")
    assert done.returncode == 1
    assert "DeviceError: Sionna RT cannot run on the GPU (HPCOPT_SIONNA_DEVICE=cuda): " in (
        done.stderr
    )
    assert "no NVIDIA GPU (no /dev/nvidiactl)" in done.stderr or "CUDA_VISIBLE" in done.stderr
