"""What Slurm says about a campaign's jobs (``squeue``, then ``sacct``): used by
``hpcopt status``, ``hpcopt cancel`` and the dashboard."""

from __future__ import annotations

import subprocess

LIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "SUSPENDED", "REQUEUE_HOLD"}


def job_states(ids: list[str]) -> dict[str, str]:
    """``{job id: state}`` from squeue, then sacct for jobs squeue no longer knows."""
    states: dict[str, str] = {}
    if not ids:
        return states
    queue = subprocess.run(
        ["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%M|%R"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    for line in queue.stdout.splitlines():
        job, state, elapsed, reason = line.split("|", 3)
        states[job] = f"{state} for {elapsed} ({reason})"
    missing = [i for i in ids if i not in states]
    if missing:
        acct = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-j", ",".join(missing), "-o", "JobID,State,Elapsed"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        for line in acct.stdout.splitlines() if acct.returncode == 0 else []:
            job, state, elapsed = line.split("|")
            states.setdefault(job, f"{state} after {elapsed}")
    for job in ids:
        states.setdefault(job, "ended (not in squeue; no accounting to say how)")
    return states
