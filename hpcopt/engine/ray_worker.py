"""The Ray engine's actor: one worker process, holding the problems it set up."""

from __future__ import annotations

import os

import numpy as np

from hpcopt.core.evaluation import Evaluation
from hpcopt.engine.base import SetUpProblems
from hpcopt.problems.base import Problem, ProblemConfig


class RayWorker:
    """The actor: holds set-up problems by config, evaluates chunks of points."""

    def __init__(
        self, threads: int = 1, max_problems: int | None = None, memory_mb: float | None = None
    ) -> None:
        import ray

        ctx = ray.get_runtime_context()
        self.actor_id = ctx.get_actor_id()
        node_id = ctx.get_node_id()
        self.node = next(
            (n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), "?"
        )
        self.gpu_ids = ",".join(str(g) for g in ray.get_gpu_ids())
        self.name = f"{self.actor_id[:8]}:{os.getpid()}"
        self._evicted: list[str] = []
        self._problems = SetUpProblems(threads, max_problems, memory_mb, self._evicted.append)

    def info(self) -> dict[str, str]:
        """Who and where this worker is (also its readiness check)."""
        return {
            "worker": self.name,
            "node": self.node,
            "gpu_ids": self.gpu_ids,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "pid": str(os.getpid()),
        }

    def evaluate(
        self,
        problem: tuple[type[Problem], ProblemConfig],
        points: np.ndarray,
        gradient: bool | np.ndarray,
    ) -> tuple[list[Evaluation], list[str]]:
        """Evaluate ``points`` ``(k, d)`` of ``problem``, an ``(implementation, config)``
        pair: built as ``implementation(config)`` and set up on first use. Also returns the
        labels of the problems this worker dropped from its cache meanwhile."""
        built = self._problems.get(*problem)
        evaluations = built.evaluate_batch(points, gradient)
        for ev in evaluations:
            ev.worker, ev.node, ev.gpu_ids = self.name, self.node, self.gpu_ids
        evicted = self._evicted[:]
        self._evicted.clear()
        return evaluations, evicted
