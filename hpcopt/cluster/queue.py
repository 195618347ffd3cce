"""What Slurm says about a campaign's jobs (``squeue``, then ``sacct``): used by
``hpcopt status``, ``hpcopt cancel`` and the dashboard.

The parsers are pure functions of the commands' text (tested on canned output);
:func:`job_states` runs the commands. ``squeue`` is the authority on which jobs are
queued or running: when it cannot be asked, that is a :class:`QueueError`, never "the job
ended". ``sacct`` only says how an ended job ended, and is often absent (no accounting
configured): then the state says so.
"""

from __future__ import annotations

import re
import shlex
import subprocess

from hpcopt.engine.ray_node import ClusterError

LIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "SUSPENDED", "REQUEUE_HOLD"}
TIMEOUT_S = 60
SQUEUE_FORMAT = "%i|%T|%M|%R"
SACCT_FIELDS = "JobID,State,Elapsed"
# squeue's answer when none of the ids is known any more (ended jobs leave its memory
# after MinJobAge): no job of these is queued, not a failure to ask.
_UNKNOWN_IDS = "Invalid job id specified"
_MISSING = {
    "squeue": "this machine has no Slurm client",
    "sacct": "this machine has no Slurm accounting client",
}
# A pending array's tasks not yet split off: 123_[0-3,7%2] (%2: at most 2 at a time).
_ARRAY = re.compile(r"^(?P<job>\d+)_\[(?P<tasks>[^\]%]*)(?:%\d+)?\]$")


class QueueError(ClusterError):
    """Slurm could not be asked about the jobs: squeue is missing, failed or hung."""


def job_states(ids: list[str]) -> dict[str, str]:
    """``{job id: state}`` for ``ids``: from squeue, then sacct for jobs squeue no longer
    knows, else a line saying why no more is known. Each state starts with Slurm's state
    word (``RUNNING``, ``PENDING``, ``COMPLETED``, ...; ``ended`` when only that is known),
    so ``state.split()[0] in LIVE`` tells a queued or running job.

    Raises :class:`QueueError` when squeue cannot be asked (it says which command, its exit
    status and its error output); a missing or failing sacct is stated, not raised.
    """
    if not ids:
        return {}
    states = queued_states(ids)
    missing = [i for i in ids if i not in states]
    if missing:
        ended, why_not = accounted_states(missing)
        for job in missing:
            states[job] = ended.get(job) or f"ended (not in squeue; {why_not})"
    return {job: states[job] for job in ids}


def queued_states(ids: list[str]) -> dict[str, str]:
    """``{job id: state}`` of the jobs of ``ids`` that squeue knows; :class:`QueueError`
    when squeue cannot be asked."""
    cmd = ["squeue", "-h", "-j", ",".join(ids), "-o", SQUEUE_FORMAT]
    done = _run(cmd)
    if done.returncode != 0:
        if _UNKNOWN_IDS in done.stderr:
            return {}
        raise QueueError(f"`{shlex.join(cmd)}` {_failure(done)}")
    return {job: state for job, state in parse_squeue(done.stdout).items() if job in ids}


def accounted_states(ids: list[str]) -> tuple[dict[str, str], str]:
    """``({job id: state}, why_not)`` from sacct for ended jobs: ``why_not`` says why a
    job has no state there (sacct missing, no accounting configured, job not recorded)."""
    cmd = ["sacct", "-n", "-X", "-P", "-j", ",".join(ids), "-o", SACCT_FIELDS]
    try:
        done = _run(cmd)
    except QueueError as exc:
        return {}, f"no accounting to say how: {exc}"
    if done.returncode != 0:
        return {}, f"no accounting to say how: sacct {_failure(done)}"
    return parse_sacct(done.stdout), "not in sacct either"


def parse_squeue(text: str) -> dict[str, str]:
    """``{job id: "STATE for ELAPSED (REASON or NODES)"}`` from the lines of
    ``squeue -h -o '%i|%T|%M|%R'``. A pending array's tasks that squeue shows as one line
    (``123_[0-3]``) get one entry each (``123_0`` ... ``123_3``)."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        job, state, elapsed, where = line.split("|", 3)
        where = where.strip().removeprefix("(").removesuffix(")")
        text_state = f"{state} for {elapsed}" + (f" ({where})" if where else "")
        for one in expand_array_id(job.strip()):
            states[one] = text_state
    return states


def parse_sacct(text: str) -> dict[str, str]:
    """``{job id: "STATE after ELAPSED"}`` from the lines of
    ``sacct -n -P -o JobID,State,Elapsed``. Job steps (``123.batch``, ``123.0``) are
    skipped; of repeated rows of one job (a requeued job) the last one counts."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        job, state, elapsed = line.split("|")[:3]
        if "." in job:
            continue
        for one in expand_array_id(job.strip()):
            states[one] = f"{state} after {elapsed}"
    return states


def expand_array_id(job: str) -> list[str]:
    """``123_[0-2,5%2]`` -> ``['123_0', '123_1', '123_2', '123_5']``; any other id as is."""
    match = _ARRAY.match(job)
    if match is None:
        return [job]
    out = []
    for part in match["tasks"].split(","):
        first, _, last = part.partition("-")
        out += [f"{match['job']}_{t}" for t in range(int(first), int(last or first) + 1)]
    return out


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        raise QueueError(f"{cmd[0]} is not found on PATH: {_MISSING[cmd[0]]}") from None
    except subprocess.TimeoutExpired:
        raise QueueError(f"`{shlex.join(cmd)}` did not answer within {TIMEOUT_S} s") from None


def _failure(done: subprocess.CompletedProcess[str]) -> str:
    said = done.stderr.strip() or done.stdout.strip() or "no output"
    return f"exited with status {done.returncode}: {said}"
