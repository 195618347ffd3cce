"""Campaigns on a real Slurm cluster (two emulated nodes with 2 declared GPUs each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hpcopt.cli import main
from hpcopt.core import plain
from hpcopt.engine.ray_node import processes_using
from hpcopt.store.campaign_store import STATUS_OK, CampaignStore
from hpcopt.store.jobs import job_ids, jobs_of
from tests.helpers import evaluations, task_spans, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TWO_NODES = {"nodes": 2, "gpus_per_node": 2, "cpus_per_task": 2, "time": "10"}
RAY = {"kind": "ray", "num_workers": 4, "cpus_per_worker": 1, "gpu_fraction": 0.5}


@pytest.fixture
def slurm_env(slurm, monkeypatch, ray_home):
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    return slurm


def write_config(tmp_path, trials, slurm=None, delay_s=0.0, name="s"):
    doc = {
        "name": name,
        "output_dir": str(tmp_path / name),
        "engine": RAY,
        "slurm": {**TWO_NODES, **(slurm or {})},
        "shared": {"problem": {"name": "analytic", "function": "branin", "delay_s": delay_s}},
        "trials": trials,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


GA = {"name": "ga", "seed": 4, "method": {"name": "ga", "population": 16, "generations": 6}}
GS = {"name": "gs", "method": {"name": "gs", "resolution": 9, "batch_size": 8}}


def finished(root: Path) -> bool:
    store = CampaignStore.open(root)
    return all(store.read_trial(n).status in ("completed", "failed") for n in store.trial_names())


def queued(job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout
    return bool(out.strip())


def job_log(root: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((root / "slurm").rglob("*_log.out")))


def ray_dirs(root: Path, start: str = "*") -> list[str]:
    """The Ray temp dirs of every rank of the job starts matching ``start`` (``JOB.RESTART``)."""
    ranks = (root / "cluster").glob(f"{start}/rank-*.json")
    return [json.loads(p.read_text())["temp_dir"] for p in ranks]


def ray_left(dirs: list[str]) -> dict[str, list[int]]:
    """The processes still using each of these Ray temp dirs (none once its node stopped)."""
    return {d: pids for d in dirs if (pids := processes_using(d))}


def test_a_submitted_campaign_runs_on_both_nodes_with_half_gpu_workers(tmp_path, slurm_env, capsys):
    path = write_config(tmp_path, [GS, GA])
    root = tmp_path / "s"
    start = time.monotonic()
    assert main(["submit", str(path)]) == 0
    wait_until(lambda: evaluations(root) > 0, 120, "the first evaluation")
    first = time.monotonic() - start
    wait_until(lambda: finished(root), 300, "the campaign to finish")
    with capsys.disabled():
        print(f"\n[slurm] hpcopt submit -> first evaluation: {first:.1f} s")
    store = CampaignStore.open(root)
    for name in ("gs", "ga"):
        rec = store.read_trial(name)
        assert rec.status == "completed" and (rec.history.status == STATUS_OK).all()
    h = store.read_trial("gs").history
    assert set(h.node) == {"127.0.0.2", "127.0.0.3"}
    assert set(h.gpu_ids) <= {"0", "1"} and all(h.gpu_ids)
    assert "all 2 nodes joined" in job_log(root)
    # the one allocation ran both trials at once, each with the results it has alone
    spans = task_spans(root / "events.jsonl")
    gs = [(start, end) for trial, _, start, end in spans if trial == "gs"]
    ga = [(start, end) for trial, _, start, end in spans if trial == "ga"]
    assert any(s1 < e2 and s2 < e1 for s1, e1 in gs for s2, e2 in ga)
    assert_same_histories(run_locally(tmp_path, path), store, ("gs", "ga"))
    wait_until(lambda: not any(processes_using(d) for d in ray_dirs(root)), 30, "Ray to end")


def run_locally(tmp_path, path):
    """The same campaign run here, uninterrupted, with the local engine and without the
    evaluations' sleep (which changes no value)."""
    doc = yaml.safe_load(path.read_text())
    doc["engine"] = {"kind": "local"}
    doc["shared"]["problem"]["delay_s"] = 0.0
    doc["output_dir"] = str(tmp_path / "local")
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump(doc))
    assert main(["run", str(local), "-q"]) == 0
    return CampaignStore.open(tmp_path / "local")


def test_a_requeued_job_resumes_and_ends_with_the_uninterrupted_result(tmp_path, slurm_env):
    path = write_config(tmp_path, [GA, GS], delay_s=0.1)
    root = tmp_path / "s"
    assert main(["submit", str(path)]) == 0
    (job,) = jobs_of(root)[0]["job_ids"]
    wait_until(lambda: evaluations(root) >= 40, 180, "some evaluations")
    subprocess.run(["scontrol", "requeue", job], check=True)
    wait_until(lambda: (root / "cluster" / f"{job}.1").exists(), 180, "the requeued job to start")
    first_start = ray_dirs(root, f"{job}.0")
    assert len(first_start) == 2
    wait_until(lambda: not ray_left(first_start), 15, "Ray of the first start to end")
    wait_until(lambda: finished(root), 300, "the requeued campaign to finish")
    assert_same_histories(run_locally(tmp_path, path), CampaignStore.open(root), ("ga", "gs"))


def assert_same_histories(reference: CampaignStore, store: CampaignStore, trials) -> None:
    for name in trials:
        a, b = reference.read_trial(name), store.read_trial(name)
        for column in ("x", "value", "status", "iteration"):
            assert getattr(a.history, column).tobytes() == getattr(b.history, column).tobytes(), (
                f"{name}: {column}"
            )
        assert plain.dumps(a.method_state) == plain.dumps(b.method_state), name


def test_a_job_at_its_time_limit_checkpoints_through_submitit_and_finishes_when_requeued(
    tmp_path, slurm_env, capsys
):
    """Slurm's own time limit, not scontrol: a 1-minute job gets USR2 ``signal_delay_s``
    before its end (slurmctld checks limits every 30 s, so USR2 comes 20-50 s after the
    start), submitit calls CampaignJob.checkpoint and requeues it, and the requeued job
    resumes from the store. The campaign (about 50 s of evaluations on four workers)
    outlasts the first start."""
    ga = {"name": "ga", "seed": 4, "method": {"name": "ga", "population": 16, "generations": 25}}
    path = write_config(tmp_path, [ga], slurm={"time": "1", "signal_delay_s": 10}, delay_s=0.5)
    root = tmp_path / "s"
    start = time.monotonic()
    assert main(["submit", str(path)]) == 0
    (job,) = job_ids(root)
    wait_until(lambda: (root / "cluster" / f"{job}.1").exists(), 150, "the job to be requeued")
    requeued = time.monotonic() - start
    first_start = ray_dirs(root, f"{job}.0")
    assert len(first_start) == 2
    wait_until(lambda: not ray_left(first_start), 15, "Ray of the first start to end")
    log = job_log(root)
    # submitit's handler: USR2 read as the time limit, CampaignJob.checkpoint called, then
    # its scontrol requeue, whose SIGTERM may end rank 0 before it logs "Requeued job"
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log, log
    assert "Calling checkpoint method" in log and "DUE TO JOB REQUEUE" in log, log
    wait_until(lambda: finished(root), 240, "the requeued campaign to finish")
    starts = len(list((root / "cluster").glob(f"{job}.*")))
    with capsys.disabled():
        print(f"\n[slurm] time limit: requeued after {requeued:.0f} s, finished after "
              f"{time.monotonic() - start:.0f} s in {starts} starts")  # fmt: skip
    assert_same_histories(run_locally(tmp_path, path), CampaignStore.open(root), ["ga"])


def test_cancel_leaves_no_ray_process_behind(tmp_path, slurm_env):
    path = write_config(tmp_path, [dict(GS, method={"name": "gs", "resolution": 40})], delay_s=0.2)
    root = tmp_path / "s"
    assert main(["submit", str(path)]) == 0
    (job,) = jobs_of(root)[0]["job_ids"]
    wait_until(lambda: evaluations(root) > 0, 120, "the first evaluation")
    dirs = ray_dirs(root)
    assert len(dirs) == 2 and all(processes_using(d) for d in dirs)
    assert main(["cancel", str(root)]) == 0
    wait_until(lambda: not queued(job), 60, "the job to leave the queue")
    wait_until(lambda: not any(processes_using(d) for d in dirs), 30, "every Ray process to end")
    rec = CampaignStore.open(root).read_trial("gs")
    assert rec.status == "running" and 0 < len(rec.history) < 1600


def test_a_node_that_does_not_join_in_time_fails_the_job_with_a_clear_error(tmp_path, slurm_env):
    path = write_config(tmp_path, [GS], slurm={"join_timeout_s": 0.5})
    root = tmp_path / "s"
    assert main(["submit", str(path)]) == 0
    (job,) = jobs_of(root)[0]["job_ids"]
    wait_until(lambda: "nodes joined the Ray cluster" in job_log(root), 120, "the error")
    wait_until(lambda: not queued(job), 60, "the job to end")
    assert "only 1 of 2 nodes joined the Ray cluster within 0.5 s" in job_log(root)
    wait_until(lambda: not any(processes_using(d) for d in ray_dirs(root)), 30, "Ray to end")


def test_job_arrays_run_one_ray_cluster_per_trial_into_one_folder(tmp_path, slurm_env):
    one_node = {"nodes": 1, "array_per_trial": True}
    engine = dict(RAY, num_workers=2)
    path = write_config(tmp_path, [GA, GS], slurm=one_node)
    doc = yaml.safe_load(path.read_text())
    doc["engine"] = engine
    path.write_text(yaml.safe_dump(doc))
    root = tmp_path / "s"
    assert main(["submit", str(path)]) == 0
    assert len(jobs_of(root)[0]["job_ids"]) == 2
    wait_until(lambda: finished(root), 300, "both array tasks")
    store = CampaignStore.open(root)
    assert [r["status"] for r in store.summary()] == ["completed", "completed"]
    assert len(list((root / "cluster").iterdir())) == 2


def test_the_sbatch_template_runs_a_config_without_submitit(tmp_path, slurm_env):
    path = write_config(tmp_path, [GS])
    env = dict(os.environ, HPCOPT_PYTHON=sys.executable)
    done = subprocess.run(
        ["sbatch", "--parsable", "--nodes=2", "--gpus-per-node=2", "--cpus-per-task=2",
         "--time=10", f"--output={tmp_path}/sbatch-%j.out", str(ROOT / "slurm/hpcopt.sbatch"),
         str(path)],
        env=env, capture_output=True, text=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    job = done.stdout.strip().split(";")[0]
    root = tmp_path / "s"
    wait_until(lambda: (root / "campaign.h5").exists() and finished(root), 300, "the campaign")
    h = CampaignStore.open(root).read_trial("gs").history
    assert len(h) == 81 and set(h.node) == {"127.0.0.2", "127.0.0.3"}
    wait_until(lambda: not queued(job), 60, "the job to end")
    np.testing.assert_array_equal(h.status, STATUS_OK)
