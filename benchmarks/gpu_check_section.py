"""What the GPU check's sections share (``benchmarks/gpu_check.py`` runs them): a section's
run within its time budget, its result, the failure it raises, and the ``PYTHONPATH`` under
which its child processes and Ray workers import the check's modules."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


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


def python_path() -> str:
    """``PYTHONPATH`` for a child process or Ray worker: this folder (the check's modules,
    which they import by name) and this hpcopt first (a venv may install another hpcopt)."""
    return os.pathsep.join(p for p in (str(HERE), str(ROOT), os.environ.get("PYTHONPATH")) if p)
