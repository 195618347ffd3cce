"""Small test helpers: drive a method on a problem in-process; follow a campaign folder
that another process writes."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from hpcopt.config.registry import build_problem
from hpcopt.core import plain
from hpcopt.core.events import read_events
from hpcopt.methods.base import Method
from hpcopt.problems.base import ProblemConfig
from hpcopt.store.campaign_store import CampaignStore


def losses_of(problem: ProblemConfig, points_u: np.ndarray, gradient: bool | np.ndarray):
    """Evaluate unit-cube points serially; return (losses, gradients in unit coords or None)."""
    space = problem.space()
    built = build_problem(problem)
    built.setup()
    x = space.decode(points_u)
    evs = built.evaluate_batch(x, gradient=gradient)
    sign = -1.0 if problem.direction == "maximize" else 1.0
    losses = np.array([sign * ev.value for ev in evs])
    if not np.any(gradient):
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


def resumed(method: Method) -> Method:
    """A new method of the same class, config and seed, given ``method``'s checkpoint."""
    fresh = type(method)(
        method.config,
        method.space,
        method.seed,
        feasible=method.feasible,
        has_gradient=method.gradient_mask,
    )
    fresh.load_state_dict(roundtrip(method.state_dict()))
    return fresh


def run_interrupted(
    method: Method, problem: ProblemConfig, interrupt: tuple[int, str] | None = None
) -> tuple[list[np.ndarray], Method]:
    """Drive ``method`` to the end on ``problem``; at ``(batch, "before_ask" | "after_ask")``
    go on in a method resumed from a round-tripped checkpoint. Returns the asked points of
    every batch and the final method."""
    asked = []
    for i in range(100_000):
        if method.done:
            break
        if interrupt == (i, "before_ask"):
            method = resumed(method)
        batch = method.ask()
        if interrupt == (i, "after_ask"):
            method = resumed(method)
            batch = method.ask()
        asked.append(batch.points)
        method.tell(batch, losses_of(problem, batch.points, gradient=False)[0])
    return asked, method


def evaluations(root: str | Path) -> int:
    """Evaluations stored so far in the campaign at ``root`` (0 before it exists)."""
    try:
        store = CampaignStore.open(root)
        return sum(len(store.read_trial(n).history) for n in store.trial_names())
    except Exception:
        return 0


def wait_until(
    predicate: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.2
) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


@contextlib.contextmanager
def tmpfs(options: str) -> Iterator[Path]:
    """A small tmpfs mounted with ``options`` (``size=1m``, ``ro``), unmounted afterwards.

    Skipped where it cannot be mounted (not root); failed instead when
    ``HPCOPT_REQUIRE_TMPFS=1`` (CI runs as root).
    """
    folder = Path(tempfile.mkdtemp(prefix="hpcopt-tmpfs-"))
    try:
        mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]
        done = shutil.which("mount") and subprocess.run(mount, capture_output=True, text=True)
        if not done or done.returncode != 0:
            why = f"cannot mount a tmpfs: {done.stderr.strip() if done else 'no mount command'}"
            if os.environ.get("HPCOPT_REQUIRE_TMPFS") == "1":
                pytest.fail(why)
            pytest.skip(why)
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=True)
    finally:
        folder.rmdir()


def fill_disk(folder: Path, leave: int = 0) -> None:
    """Fill the file system of ``folder`` up, then free ``leave`` bytes again."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))


def task_spans(path):
    """``(trial, batch, start, end)`` of every task in the event log at ``path``, from its
    ``task_started`` and ``task_finished`` events (a worker runs one task at a time)."""
    started, spans = {}, []
    for e in read_events(path):
        if e["kind"] == "task_started":
            started[e["worker"]] = e
        elif e["kind"] == "task_finished":
            s = started.pop(e["worker"])
            assert (s["trial"], s["batch"]) == (e["trial"], e["batch"])
            spans.append((e["trial"], e["batch"], s["time"], e["time"]))
    return spans
