"""Small test helpers shared by the method tests: drive a method on a problem in-process."""

from __future__ import annotations

import numpy as np

from hpcopt import plain
from hpcopt.methods.base import Method
from hpcopt.problems.base import ProblemConfig


def losses_of(problem: ProblemConfig, points_u: np.ndarray, gradient: bool):
    """Evaluate unit-cube points serially; return (losses, gradients in unit coords or None)."""
    space = problem.space()
    built = problem.build()
    built.setup()
    x = space.decode(points_u)
    evs = built.evaluate_batch(x, gradient=gradient)
    sign = -1.0 if problem.direction == "maximize" else 1.0
    losses = np.array([sign * ev.value for ev in evs])
    if not gradient:
        return losses, None
    grads = np.array(
        [
            sign * space.gradient_to_unit(xi, ev.gradient)
            if ev.gradient is not None
            else np.full(space.dim, np.nan)
            for xi, ev in zip(x, evs)
        ]
    )
    return losses, grads


def drive(method: Method, problem: ProblemConfig, max_batches: int = 100_000) -> list:
    """Run ``method`` to completion on ``problem``; return the list of (batch, losses)."""
    seen = []
    for _ in range(max_batches):
        if method.done:
            break
        batch = method.ask()
        losses, grads = losses_of(problem, batch.points, batch.gradient)
        method.tell(batch, losses, grads)
        seen.append((batch, losses))
    return seen


def roundtrip(state: dict) -> dict:
    """A method state as it comes back from the store."""
    return plain.loads(plain.dumps(state))
