"""benchmarks/gpu_check.py: without CUDA it says so and exits 0 at once; its CPU dry run
runs every section's code and each passes (the torch dPBE section may instead say that its
backend is missing, while hpcopt.problems.pbe.torch_solver is)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ("torch dPBE", "Sionna RT", "Ray GPUs")
NO_BACKEND = "torch dPBE: backend not available (hpcopt.problems.pbe.torch_solver missing)"


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    # CUDA_VISIBLE_DEVICES="" hides the GPUs of a machine that has some; this hpcopt
    # first, not one the venv may have installed
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=path)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def summary(stdout: str) -> dict[str, list[str]]:
    """The summary table's row per section: its status and the rest of the row's words."""
    _, _, table = stdout.partition("\n== summary")
    rows = {}
    for line in table.splitlines()[2:]:
        for name in SECTIONS:
            if line.startswith(name):
                rows[name] = line[len(name) :].split()
    return rows


def test_without_cuda_it_says_so_names_what_it_skipped_and_exits_0_at_once():
    start = time.monotonic()
    done = run_script(timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("CUDA absent: ")
    assert "skipped: torch dPBE, Sionna RT, Ray GPUs" in done.stdout
    assert "==" not in done.stdout  # no section started
    assert time.monotonic() - start < 20


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.sionna
def test_the_cpu_dry_run_runs_every_section_and_each_passes():
    done = run_script("--cpu-dry-run", timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    rows = summary(done.stdout)
    assert rows["Sionna RT"][0] == "PASS", output
    assert rows["Ray GPUs"][0] == "PASS", output
    if (ROOT / "hpcopt" / "problems" / "pbe" / "torch_solver.py").exists():
        assert rows["torch dPBE"][0] == "PASS", output
    else:
        assert rows["torch dPBE"][0] == "SKIPPED", output
        assert NO_BACKEND in done.stdout
