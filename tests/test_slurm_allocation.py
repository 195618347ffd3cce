"""What a task of the allocation learns about itself (no Slurm: the variables srun sets)."""

from __future__ import annotations

import pytest

from hpcopt.cluster.slurm import Allocation
from hpcopt.engine.ray_node import ClusterError

TASK = {  # rank 1 of a two-node job, as srun sets it
    "SLURM_JOB_ID": "57",
    "SLURM_PROCID": "1",
    "SLURM_NTASKS": "2",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NODEID": "1",
    "SLURMD_NODENAME": "n2",
    "SLURM_CPUS_ON_NODE": "16",
    "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    "SLURM_RESTART_COUNT": "2",
}


@pytest.fixture
def task_env(monkeypatch):
    for key in ("SUBMITIT_EXECUTOR", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", *TASK):
        monkeypatch.delenv(key, raising=False)

    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)

    return set_env


@pytest.mark.parametrize("launcher", ["srun", "submitit"])
def test_a_task_knows_its_job_rank_nodes_cpus_gpus_and_restart(task_env, launcher):
    task_env(**TASK, **({"SUBMITIT_EXECUTOR": "slurm"} if launcher == "submitit" else {}))
    assert Allocation.from_env() == Allocation(
        job_key="57", rank=1, nodes=2, node_name="n2", cpus=16, gpus=4, restart=2
    )


@pytest.mark.parametrize("launcher", ["srun", "submitit"])
def test_an_array_task_is_known_by_array_job_and_task(task_env, launcher):
    task_env(**TASK, SLURM_ARRAY_JOB_ID="50", SLURM_ARRAY_TASK_ID="3")
    if launcher == "submitit":
        task_env(SUBMITIT_EXECUTOR="slurm")
    assert Allocation.from_env().job_key == "50_3"


def test_a_first_start_without_gpus_has_none_and_restart_0(task_env):
    task_env(SLURM_JOB_ID="9", SLURM_PROCID="0", SLURM_JOB_NUM_NODES="1")
    alloc = Allocation.from_env()
    assert (alloc.rank, alloc.nodes, alloc.gpus, alloc.restart) == (0, 1, 0, 0)


def test_outside_a_slurm_job_it_says_so(task_env):
    with pytest.raises(ClusterError, match="not inside a Slurm job"):
        Allocation.from_env()
