"""The private Slurm cluster of the tests (tests/slurm_cluster.py) behaves like real Slurm."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import slurm_cluster
from tests.slurm_cluster import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def run(cluster: SlurmCluster, *args: str, cwd: Path | None = None) -> str:
    """Run a Slurm command against ``cluster``; its stdout."""
    done = subprocess.run(
        args, env={**os.environ, **cluster.env}, cwd=cwd, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def submit(cluster: SlurmCluster, folder: Path, script: str, *options: str) -> str:
    """Submit a bash batch script running in ``folder``; the job id."""
    path = folder / "job.sh"
    path.write_text("#!/bin/bash\n" + script)
    out = run(
        cluster, "sbatch", "--parsable", f"--chdir={folder}", f"--output={folder}/slurm-%j.out",
        *options, str(path),
    )  # fmt: skip
    return out.strip().split(";")[0]


def job_state(cluster: SlurmCluster, job: str) -> str:
    out = run(cluster, "scontrol", "-o", "show", "job", job)
    return re.search(r"\bJobState=(\S+)", out).group(1)


def wait_for(what: str, ready: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.1)


def wait_ended(cluster: SlurmCluster, job: str, timeout_s: float = 30) -> str:
    """Wait until ``job`` has ended; its final state."""
    deadline = time.monotonic() + timeout_s
    while (state := job_state(cluster, job)) not in ENDED:
        assert time.monotonic() < deadline, f"job {job} still {state} after {timeout_s} s"
        time.sleep(0.1)
    return state


def ports(cluster: SlurmCluster) -> set[int]:
    """The TCP ports in the cluster's slurm.conf."""
    text = Path(cluster.env["SLURM_CONF"]).read_text()
    return {int(port) for port in re.findall(r"Port=(\d+)", text)}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_gpu_job_sees_its_gpu(slurm, tmp_path):
    script = 'echo "${CUDA_VISIBLE_DEVICES-unset}" > gpus.txt\n'
    job = submit(slurm, tmp_path, script, "--gres=gpu:1")
    assert wait_ended(slurm, job) == "COMPLETED"
    assert lines(tmp_path / "gpus.txt") == ["0"]


def test_two_node_job_runs_one_task_per_node(slurm, tmp_path):
    assert slurm.nodes == {"n1": "127.0.0.2", "n2": "127.0.0.3"}
    job = submit(
        slurm, tmp_path, "srun bash -c 'echo $SLURMD_NODENAME' > nodes.txt\n",
        "-N", "2", "--ntasks-per-node=1",
    )  # fmt: skip
    assert wait_ended(slurm, job) == "COMPLETED", (tmp_path / f"slurm-{job}.out").read_text()
    assert sorted(lines(tmp_path / "nodes.txt")) == ["n1", "n2"]
    for name, addr in slurm.nodes.items():
        assert f"NodeAddr={addr} " in run(slurm, "scontrol", "-o", "show", "node", name)


def test_requeue_runs_the_job_again(slurm, tmp_path):
    starts = tmp_path / "starts.txt"
    script = 'echo "start ${SLURM_RESTART_COUNT:-0}" >> starts.txt\nexec sleep 300\n'
    job = submit(slurm, tmp_path, script)
    try:
        wait_for("the first start", lambda: lines(starts), 30)
        assert job_state(slurm, job) == "RUNNING"
        run(slurm, "scontrol", "requeue", job)
        wait_for("the start after requeue", lambda: len(lines(starts)) >= 2, 60)  # ~12 s
        assert lines(starts) == ["start 0", "start 1"]
    finally:
        run(slurm, "scancel", job)
    assert wait_ended(slurm, job) == "CANCELLED"


def test_scancel_ends_a_running_job(slurm, tmp_path):
    pid_file = tmp_path / "pid.txt"
    job = submit(slurm, tmp_path, "echo $$ > pid.txt\nexec sleep 300\n")
    wait_for("the job to start", lambda: lines(pid_file), 30)
    pid = int(lines(pid_file)[0])
    assert alive(pid)
    run(slurm, "scancel", job)
    assert wait_ended(slurm, job) == "CANCELLED"
    wait_for(f"the job's process {pid} to end", lambda: not alive(pid), 15)


def test_second_cluster_runs_alongside_and_stops_cleanly(slurm, tmp_path):
    """Ports are chosen free (no clash with the session's cluster), and ``stop`` ends every
    process the cluster started, including a job still running."""
    base = Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))
    try:
        other = slurm_cluster.start(base)
        try:
            submit(other, tmp_path, "echo $$ > pid.txt\nexec sleep 300\n")
            wait_for("the job to start", lambda: lines(tmp_path / "pid.txt"), 30)
            pids = [int(lines(tmp_path / "pid.txt")[0])]
            pids += [int(p.read_text().split()[0]) for p in base.rglob("*.pid")]
            pids += [daemon.proc.pid for daemon in other._daemons]  # their supervisors
            assert len(pids) == 1 + 4 + 4
            assert all(alive(pid) for pid in pids)
            assert ports(other) and not ports(other) & ports(slurm)
        finally:
            other.stop()
        assert not [pid for pid in pids if alive(pid)]
        assert "idle" in run(slurm, "sinfo", "-h", "-o", "%T")  # the session cluster still up
    finally:
        shutil.rmtree(base, ignore_errors=True)
