"""Run a campaign on a Slurm allocation: one task per node, Ray brought up and down by us.

Rank 0 starts the Ray head, publishes its address in the campaign folder (atomically),
waits until every node has joined, then runs the driver with the Ray engine pointed at
that head. Every other rank waits for the address, starts a Ray worker node that joins
it, and keeps it up until the driver is done. Node addresses come from Slurm
(``scontrol show node``'s NodeAddr); CPUs and GPUs from the allocation. Each (re)start
of a job gets a fresh rendezvous folder and a fresh token, so a requeued job never reads
a stale address.

Stopping: on SIGTERM (``scancel``, a requeue, the end of the time limit) every rank ends
its Ray node and exits; the store needs nothing more, since the driver checkpoints after
every batch. Under submitit, USR2 (sent ``signal_delay_s`` before the time limit, or on
preemption) makes rank 0 requeue the job through submitit's checkpointing; without
submitit (``slurm/hpcopt.sbatch``) rank 0 requeues it with ``scontrol requeue``.

The same entry point serves both: submitit calls :class:`CampaignJob`, and the sbatch
template runs ``python -m hpcopt.cluster.slurm CONFIG_OR_DIR`` under ``srun``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcopt import config as cfg
from hpcopt.cluster.container import launcher
from hpcopt.config.cluster import SlurmConfig
from hpcopt.config.registry import build_engine
from hpcopt.core.files import StoreError, write_text
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.engine import private_ray
from hpcopt.engine.ray_node import ClusterError, new_token_file, short_temp_dir, start_node
from hpcopt.store.folder import CampaignFolder, Rendezvous
from hpcopt.store.jobs import jobs_of, record_jobs

# Seconds a stopping Ray node gives its processes before SIGKILL: well inside Slurm's
# KillWait (30 s by default; 5 s in the tests' cluster) after a cancel's SIGTERM.
_STOP_GRACE_S = 3.0


def check_submittable(campaign: cfg.Campaign) -> None:
    """Refuse a campaign that cannot run on an allocation (its engine must be Ray)."""
    if campaign.engine.kind != "ray":
        raise ClusterError(
            "a campaign on Slurm needs 'engine: {kind: ray}': its evaluations run on Ray "
            "workers across the allocation's nodes"
        )


def sbatch_parameters(slurm: SlurmConfig, name: str) -> dict[str, Any]:
    """submitit's ``SlurmExecutor`` parameters for a campaign: one task per node."""
    params: dict[str, Any] = {
        "job_name": slurm.job_name or f"hpcopt-{name}",
        "nodes": slurm.nodes,
        "ntasks_per_node": 1,
        "time": slurm.minutes,
        "signal_delay_s": slurm.signal_delay_s,
        "stderr_to_stdout": True,
        "setup": ["export HDF5_USE_FILE_LOCKING=FALSE", *slurm.setup],
        "additional_parameters": {"requeue": True},
    }
    if slurm.gpus_per_node:
        params["gpus_per_node"] = slurm.gpus_per_node
    for key in ("cpus_per_task", "partition", "account", "qos", "constraint", "mem"):
        value = getattr(slurm, key)
        if value is not None:
            params[key] = value
    return params


def executor(root: Path, slurm: SlurmConfig, name: str):  # -> submitit.SlurmExecutor
    """A submitit executor that logs into ``root/slurm/``."""
    import submitit

    ex = submitit.SlurmExecutor(
        folder=CampaignFolder(root).submitit,
        max_num_timeout=slurm.max_num_timeout,
        python=launcher(slurm.container, root),
    )
    ex.update_parameters(**sbatch_parameters(slurm, name))
    return ex


def render_sbatch(root: Path, slurm: SlurmConfig, name: str) -> str:
    """The sbatch script ``hpcopt submit`` would submit (for ``--dry-run`` and review)."""
    ex = executor(root, slurm, name)
    return ex._make_submission_file_text(ex._submitit_command_str, uid="dry-run")


class CampaignJob:
    """The callable submitit runs on every task of the allocation (checkpointable).

    ``trial`` limits the job to one trial (job arrays: one Ray cluster per trial).
    """

    def __init__(self, root: str, trial: str | None = None) -> None:
        self.root = root
        self.trial = trial

    def __call__(self) -> int:

        _, campaign = drv.reopen(self.root)
        return run_on_allocation(Path(self.root), campaign.slurm.join_timeout_s, self.trial)

    def checkpoint(self, *args: Any, **kwargs: Any):  # -> submitit.helpers.DelayedSubmission
        """Requeue the same job: it resumes from the store (checkpointed every batch)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def submit(root: Path, slurm: SlurmConfig, name: str, trials: list[str]) -> list[str]:
    """Submit the campaign in ``root``; return the job ids (one per trial with arrays)."""
    jobs_of(root)  # a damaged slurm.json refuses the submission before sbatch, not after it
    ex = executor(root, slurm, name)
    if slurm.array_per_trial:
        with ex.batch():
            jobs = [ex.submit(CampaignJob(str(root), trial)) for trial in trials]
    else:
        jobs = [ex.submit(CampaignJob(str(root)))]
    ids = [str(job.job_id) for job in jobs]
    record_jobs(root, ids)
    return ids


@dataclass
class Allocation:
    """What Slurm tells a task about itself."""

    job_key: str  # the job id; ``123_4`` for task 4 of array job 123
    rank: int
    nodes: int
    node_name: str
    cpus: int
    gpus: int
    restart: int

    @classmethod
    def from_env(cls) -> Allocation:
        """This task's allocation. Job id, rank and node count come from submitit's
        ``JobEnvironment``; what it does not hold is read from Slurm's variables here: the
        node's Slurm name (``SLURMD_NODENAME``: emulated nodes share one hostname), its
        CPUs, its GPUs (``CUDA_VISIBLE_DEVICES``) and the requeue count."""
        e = os.environ
        if "SLURM_JOB_ID" not in e:
            raise ClusterError("not inside a Slurm job (SLURM_JOB_ID is not set)")
        job = job_environment()
        visible = [d for d in e.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        return cls(
            job_key=job.job_id,
            rank=job.global_rank,
            nodes=job.num_nodes,
            node_name=e.get("SLURMD_NODENAME", ""),
            cpus=int(e.get("SLURM_CPUS_ON_NODE", os.cpu_count() or 1)),
            gpus=len(visible),
            restart=int(e.get("SLURM_RESTART_COUNT", "0")),
        )


def job_environment():  # -> submitit.JobEnvironment
    """submitit's view of this Slurm task. Under submitit's launcher ``JobEnvironment()``
    finds it (the launcher sets ``SUBMITIT_EXECUTOR=slurm``); under plain ``srun``
    (``slurm/hpcopt.sbatch``) nothing sets that, so its Slurm class is named directly:
    the same class, reading the same ``SLURM_*`` variables."""
    import submitit

    if os.environ.get("SUBMITIT_EXECUTOR"):
        return submitit.JobEnvironment()
    from submitit.slurm.slurm import SlurmJobEnvironment

    return SlurmJobEnvironment()


def node_address(node_name: str) -> str:
    """The node's NodeAddr from ``scontrol show node`` (emulated nodes have their own)."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "node", node_name, "-o"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
    except FileNotFoundError:
        raise ClusterError(
            "scontrol is not found: the job needs Slurm's client (to find node addresses "
            "and to requeue itself). In a container, use an image that has it (the hpcopt "
            "image does) and bind the site's Slurm config and munge socket "
            "(container: {binds: [/etc/slurm, /run/munge]})"
        ) from None
    except subprocess.CalledProcessError as exc:
        raise ClusterError(
            f"scontrol show node {node_name} failed: {exc.stderr.strip() or exc}"
        ) from None
    match = re.search(r"\bNodeAddr=(\S+)", out)
    if not match:
        raise ClusterError(f"scontrol shows no NodeAddr for node {node_name!r}")
    return match.group(1)


def _wait_for(path: Path, timeout_s: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} did not appear within {timeout_s:g} s ({path})")
        time.sleep(0.2)
    return json.loads(path.read_text())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data))


class Stopped(SystemExit):
    """SIGTERM arrived: unwind, tearing Ray down on the way out."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Stopped(128 + signum)


def run_on_allocation(root: Path, join_timeout_s: float, trial: str | None = None) -> int:
    """This task's part of the campaign: the head and the driver on rank 0, a Ray worker
    node elsewhere. Returns the driver's exit status on rank 0, 0 elsewhere.

    ``join_timeout_s`` bounds both the wait of the workers for the head's address and the
    wait of the head for every node to join."""
    alloc = Allocation.from_env()
    signal.signal(signal.SIGTERM, _on_sigterm)
    store_root = Path(root)
    rendezvous = CampaignFolder(store_root).rendezvous(alloc.job_key, alloc.restart)
    rendezvous.folder.mkdir(parents=True, exist_ok=True)
    node_ip = node_address(alloc.node_name) if alloc.node_name else "127.0.0.1"
    temp = short_temp_dir()
    log = _Log(alloc)
    log(f"node {alloc.node_name} at {node_ip}: {alloc.cpus} CPUs, {alloc.gpus} GPUs")
    log(f"python {sys.executable}")
    # Where each rank's Ray lives, for `hpcopt status` and for checking the teardown.
    _write_json(
        rendezvous.rank(alloc.rank),
        {
            "node": alloc.node_name,
            "ip": node_ip,
            "pid": os.getpid(),
            "temp_dir": str(temp),
            "python": sys.executable,
        },
    )
    # Ray's daemons leave this task's process tree (Slurm's linuxproc tracking loses them),
    # and a rank can end without its finally (Ray's driver aborting under a requeue's
    # SIGTERM was seen): the watchdog ends whatever uses this rank's folder once the rank
    # is gone, however it went.
    private_ray.claim(temp)
    watchdog = private_ray.Watchdog(temp)
    try:
        if alloc.rank == 0:
            return _head(store_root, rendezvous, node_ip, temp, alloc, join_timeout_s, trial, log)
        _worker(rendezvous, node_ip, temp, alloc, join_timeout_s, log)
        return 0
    finally:
        watchdog.stop()


class _Log:
    def __init__(self, alloc: Allocation) -> None:
        self.prefix = f"[hpcopt rank {alloc.rank}/{alloc.nodes} job {alloc.job_key}]"

    def __call__(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {self.prefix} {text}", file=sys.stderr, flush=True)


def _head(
    root: Path,
    rendezvous: Rendezvous,
    node_ip: str,
    temp: Path,
    alloc: Allocation,
    join_timeout_s: float,
    trial: str | None,
    log: _Log,
) -> int:

    token = new_token_file(rendezvous.folder)
    head = start_node(
        node_ip=node_ip, num_cpus=alloc.cpus, num_gpus=alloc.gpus, temp_dir=temp / "ray",
        token_file=token,
    )  # fmt: skip
    log(f"ray head up at {head.address}")
    try:
        _write_json(rendezvous.head, {"address": head.address, "token_file": str(token)})
        store, campaign = drv.reopen(root)
        engine_config = campaign.engine.model_copy(
            update={"address": head.address, "token_file": str(token), "num_cpus": None,
                    "num_gpus": None}
        )  # fmt: skip
        with build_engine(engine_config) as engine:
            _wait_for_nodes(alloc.nodes, join_timeout_s, log)
            outcomes = drv.run(
                campaign, store, engine=engine, reporter=reporters.LineReporter(sys.stderr),
                only=trial,
            )  # fmt: skip
        failed = [o.name for o in outcomes if o.status == "failed"]
        log(f"driver done; failed trials: {failed or 'none'}")
        return 1 if failed else 0
    finally:
        with contextlib.suppress(StoreError):
            write_text(rendezvous.done, "")
        head.stop(grace_s=_STOP_GRACE_S)
        log("ray head stopped")


def _wait_for_nodes(expected: int, timeout_s: float, log: _Log) -> None:
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        alive = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
        if len(alive) >= expected:
            log(f"all {expected} nodes joined: {sorted(alive)}")
            return
        if time.monotonic() > deadline:
            raise ClusterError(
                f"only {len(alive)} of {expected} nodes joined the Ray cluster within "
                f"{timeout_s:g} s (joined: {sorted(alive)}); see the other ranks' lines in "
                "this log, and raise slurm.join_timeout_s if nodes are slow to start"
            )
        time.sleep(0.5)


def _worker(
    rendezvous: Rendezvous,
    node_ip: str,
    temp: Path,
    alloc: Allocation,
    join_timeout_s: float,
    log: _Log,
) -> None:
    head = _wait_for(rendezvous.head, join_timeout_s, "the Ray head's address")
    node = start_node(
        node_ip=node_ip, num_cpus=alloc.cpus, num_gpus=alloc.gpus, temp_dir=temp / "ray",
        token_file=head["token_file"], head_address=head["address"],
    )  # fmt: skip
    log(f"ray worker node joined {head['address']}")
    try:
        while not rendezvous.done.exists() and node.process.poll() is None:
            time.sleep(0.5)
    finally:
        node.stop(grace_s=_STOP_GRACE_S)
        log("ray worker node stopped")


def main(argv: list[str] | None = None) -> int:
    """``python -m hpcopt.cluster.slurm CONFIG_OR_DIR`` under ``srun``, one task per node.

    A config file makes (on rank 0) or finds the campaign folder; a folder is resumed.
    """

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hpcopt.cluster.slurm CONFIG_OR_CAMPAIGN_DIR", file=sys.stderr)
        return 2
    target = Path(args[0])
    alloc = Allocation.from_env()
    if target.is_dir():
        _, campaign = drv.reopen(target)
        root = target
    else:
        campaign = cfg.load(target)
        root = Path(campaign.output_dir)
        if alloc.rank == 0 and not CampaignFolder(root).campaign_file.exists():
            drv.create(campaign)
    check_submittable(campaign)
    if alloc.rank == 0:
        signal.signal(signal.SIGUSR2, _requeue_on_usr2)
    return run_on_allocation(root.resolve(), campaign.slurm.join_timeout_s)


def _requeue_on_usr2(signum: int, frame: Any) -> None:
    """Time limit or preemption without submitit: requeue this job, then stop."""
    job = Allocation.from_env().job_key
    subprocess.run(["scontrol", "requeue", job], check=False, timeout=60)
    raise Stopped(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
