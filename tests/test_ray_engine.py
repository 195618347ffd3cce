"""The Ray engine on real Ray clusters started on this machine (CPU-only; GPUs declared)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from hpcopt import config as cfg
from hpcopt.config.registry import build_engine
from hpcopt.core.events import EventLog, read_events
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.engine.ray_node import new_token_file, processes_using, short_temp_dir, start_node
from hpcopt.engine.ray_pool import EngineError, RayEngineConfig
from hpcopt.problems.analytic import AnalyticConfig
from hpcopt.problems.custom import CustomConfig
from hpcopt.store.campaign_store import STATUS_FAILED, STATUS_OK
from tests.conftest import node_env
from tests.helpers import task_spans

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPHERE = {"name": "analytic", "function": "sphere"}


def engine_config(cluster, **kw):
    address, token = cluster
    return {"kind": "ray", "address": address, "token_file": str(token), **kw}


def custom(target, **options):
    params = [{"name": "a", "low": -1, "high": 1}, {"name": "b", "low": -1, "high": 1}]
    return {"name": "custom", "target": f"tests.problems:{target}", "parameters": params,
            "options": options}  # fmt: skip


def run_campaign(tmp_path, engine, trials, shared=None, **top):
    doc = {
        "name": "ray",
        "output_dir": str(tmp_path / "c"),
        "engine": engine,
        "shared": shared or {"problem": SPHERE},
        "trials": trials,
        **top,
    }
    campaign = cfg.parse(doc)
    store = drv.create(campaign)
    outcomes = drv.run(campaign, store, reporter=reporters.SilentReporter())
    return store, outcomes


def test_half_gpu_workers_run_four_at_once_on_two_declared_gpus(ray_cluster):
    config = RayEngineConfig(**engine_config(ray_cluster, num_workers=4, gpu_fraction=0.5,
                                             cpus_per_worker=1))  # fmt: skip
    events = []
    with build_engine(config) as engine:
        engine.on_event = lambda kind, **f: events.append((kind, f))
        problem = AnalyticConfig(name="analytic", function="sphere", delay_s=0.2)
        results = engine.map(problem, np.zeros((8, 2)))
    up = [f for kind, f in events if kind == "worker_up"]
    assert len(up) == 4
    assert Counter(f["gpu_ids"] for f in up) == {"0": 2, "1": 2}
    assert all(f["cuda_visible_devices"] == f["gpu_ids"] for f in up)
    assert {ev.gpu_ids for ev in results} == {"0", "1"}
    assert len({ev.worker for ev in results}) == 4


def test_ray_engine_gives_the_serial_engine_results(tmp_path, ray_cluster):
    trials = [
        {"name": "ga", "seed": 2, "problem": {"function": "rastrigin"},
         "method": {"name": "ga", "population": 12, "generations": 4}},
        {"name": "bo", "method": {"name": "bo", "sampler": "tpe", "n_trials": 12,
                                  "max_concurrent": 4}},
        {"name": "gd", "method": {"name": "gd", "starts": 3, "steps": 5, "gradient": "fd"}},
    ]  # fmt: skip
    local, _ = run_campaign(tmp_path / "local", {"kind": "local"}, trials)
    ray, _ = run_campaign(tmp_path / "ray", engine_config(ray_cluster, num_workers=3), trials)
    for name in ("ga", "bo", "gd"):
        a, b = local.read_trial(name).history, ray.read_trial(name).history
        assert a.x.tobytes() == b.x.tobytes() and a.value.tobytes() == b.value.tobytes(), name
        assert set(b.node) == {"127.0.0.2"}


def test_a_sigkilled_worker_is_replaced_and_its_point_runs_again(tmp_path, ray_cluster):
    marker = tmp_path / "killed"
    problem = custom("KillOnce", kill_above=0.5, marker=str(marker))
    store, (outcome,) = run_campaign(
        tmp_path, engine_config(ray_cluster, num_workers=2),
        [{"name": "g", "problem": problem, "method": {"name": "gs", "resolution": 5}}],
    )  # fmt: skip
    h = store.read_trial("g").history
    assert marker.exists(), "no worker was killed"
    assert outcome.status == "completed" and len(h) == 25 and (h.status == STATUS_OK).all()
    killed = marker.read_text()
    assert killed not in {w.split(":")[1] for w in h.worker[h.x[:, 0] > 0.5]}
    kinds = Counter(e["kind"] for e in read_events(store.root / "events.jsonl"))
    assert kinds["worker_down"] == 1 and kinds["task_retried"] == 1


def test_the_worker_that_replaces_a_dead_one_is_logged_up(tmp_path, ray_cluster):
    marker = tmp_path / "killed"
    problem = custom("KillOnce", kill_above=0.5, marker=str(marker))
    store, _ = run_campaign(
        tmp_path, engine_config(ray_cluster, num_workers=1),
        [{"name": "g", "problem": problem, "method": {"name": "gs", "resolution": 5}}],
    )  # fmt: skip
    events = read_events(store.root / "events.jsonl")
    up = [e for e in events if e["kind"] == "worker_up"]
    (down,) = [e for e in events if e["kind"] == "worker_down"]
    assert len(up) == 2 and down["worker"] == up[0]["worker"]
    assert up[1]["pid"] != marker.read_text() and up[1]["node"] == "127.0.0.2"
    assert set(store.read_trial("g").history.worker) == {e["worker"] for e in up}


def test_every_recycled_workers_successor_is_logged_up(tmp_path, ray_cluster):
    store, _ = run_campaign(
        tmp_path, engine_config(ray_cluster, num_workers=2, max_tasks_per_worker=2,
                                points_per_task=1),
        [{"name": "g", "method": {"name": "gs", "resolution": 4}}],
    )  # fmt: skip
    up = {e["worker"]: e for e in read_events(store.root / "events.jsonl")
          if e["kind"] == "worker_up"}  # fmt: skip
    workers = set(store.read_trial("g").history.worker)
    assert len(workers) >= 8 and workers <= set(up)
    assert all(up[w]["pid"] == w.split(":")[1] for w in workers)


def test_raising_points_are_retried_then_recorded_as_failed(tmp_path, ray_cluster):
    problem = custom("Flaky", fail_above=0.5)
    store, (outcome,) = run_campaign(
        tmp_path, engine_config(ray_cluster, num_workers=2, max_retries=2, points_per_task=1),
        [{"name": "g", "problem": problem, "method": {"name": "gs", "resolution": 5}}],
    )  # fmt: skip
    h = store.read_trial("g").history
    failed = h.status == STATUS_FAILED
    assert outcome.status == "completed" and failed.sum() == 5 and (~failed).sum() == 20
    assert all("past fail_above" in e for e in h.error[failed])
    retried = [e for e in read_events(store.root / "events.jsonl") if e["kind"] == "task_retried"]
    assert len(retried) == 2 * 5


def test_a_hanging_task_times_out_and_the_campaign_completes(tmp_path, ray_cluster):
    problem = custom("Hang", hang_above=0.5)
    store, (outcome,) = run_campaign(
        tmp_path, engine_config(ray_cluster, num_workers=2, task_timeout_s=2),
        [{"name": "g", "problem": problem, "method": {"name": "gs", "resolution": 3}}],
    )  # fmt: skip
    h = store.read_trial("g").history
    failed = h.status == STATUS_FAILED
    assert outcome.status == "completed" and failed.sum() == 3 and (~failed).sum() == 6
    assert all("timed out after 2 s" in e for e in h.error[failed])
    np.testing.assert_array_equal(h.value[~failed], (h.x[~failed] ** 2).sum(axis=1))


def test_workers_are_replaced_after_max_tasks_per_worker(tmp_path, ray_cluster):
    store, _ = run_campaign(
        tmp_path, engine_config(ray_cluster, num_workers=2, max_tasks_per_worker=2,
                                points_per_task=1),
        [{"name": "g", "method": {"name": "gs", "resolution": 4}}],
    )  # fmt: skip
    per_worker = Counter(store.read_trial("g").history.worker)
    assert len(per_worker) >= 8 and max(per_worker.values()) <= 2


def test_a_problem_that_cannot_be_set_up_fails_its_trial(tmp_path, ray_cluster):
    broken = custom("BrokenSetup")
    _, (outcome, after) = run_campaign(
        tmp_path, engine_config(ray_cluster, num_workers=1),
        [{"name": "b", "problem": broken, "method": {"name": "gs", "resolution": 2}},
         {"name": "ok", "method": {"name": "gs", "resolution": 2}}],
    )  # fmt: skip
    assert outcome.status == "failed" and "measurements.csv not found" in outcome.error
    assert after.status == "completed"


def test_workers_that_cannot_fit_fail_with_a_clear_error(ray_cluster):
    config = RayEngineConfig(**engine_config(ray_cluster, num_workers=2, cpus_per_worker=64,
                                             start_timeout_s=3))  # fmt: skip
    with (
        build_engine(config) as engine,
        pytest.raises(EngineError, match="only 0 of 2 Ray workers"),
    ):
        engine.map(AnalyticConfig(name="analytic", function="sphere"), np.zeros((2, 2)))


def test_address_auto_starts_a_private_ray_and_removes_it(ray_home):
    engine = build_engine(RayEngineConfig(kind="ray", num_workers=2, num_cpus=2))
    private = engine._session.private_dir
    try:
        results = engine.map(AnalyticConfig(name="analytic", function="sphere"), np.ones((4, 2)))
        assert [ev.value for ev in results] == [2.0] * 4
        assert len(str(private)) < 30 and (private / "ray-token").stat().st_mode & 0o077 == 0
    finally:
        engine.close()
    assert not private.exists() and not processes_using(private)


def test_two_node_cluster_places_workers_on_both_nodes(tmp_path, ray_home):
    temp = short_temp_dir()
    token = new_token_file(temp)
    nodes = []
    try:
        kw = {"num_cpus": 2, "num_gpus": 1, "token_file": token, "env": node_env()}
        nodes.append(start_node(node_ip="127.0.0.4", temp_dir=temp / "h", **kw))
        nodes.append(start_node(node_ip="127.0.0.5", temp_dir=temp / "w",
                                head_address=nodes[0].address, **kw))  # fmt: skip
        engine = {"kind": "ray", "address": nodes[0].address, "token_file": str(token),
                  "num_workers": 4, "cpus_per_worker": 1, "gpu_fraction": 0.5}  # fmt: skip
        store, _ = run_campaign(
            tmp_path, engine, [{"name": "g", "method": {"name": "gs", "resolution": 4}}]
        )
        h = store.read_trial("g").history
        assert set(h.node) == {"127.0.0.4", "127.0.0.5"}
        assert set(h.gpu_ids) == {"0"}
    finally:
        for node in reversed(nodes):
            node.stop(grace_s=5)
    assert not processes_using(temp)


def test_a_client_without_the_token_is_refused(ray_cluster, tmp_path):
    address, _ = ray_cluster
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    code = f"import ray; ray.init(address={address!r}); print('connected')"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode != 0 and "connected" not in done.stdout
    assert "auth" in (done.stdout + done.stderr).lower()


def test_each_worker_limits_blas_to_its_cpus_and_the_serial_engine_to_the_machines(
    ray_cluster,
):
    from threadpoolctl import threadpool_limits

    from hpcopt.engine.base import available_cpus
    from hpcopt.engine.local import LocalEngineConfig

    problem = CustomConfig(**custom("BlasThreads"))
    config = RayEngineConfig(**engine_config(ray_cluster, num_workers=1, cpus_per_worker=1))
    with build_engine(config) as engine:
        (ev,) = engine.map(problem, np.zeros((1, 2)))
    assert ev.extras["blas_threads"] == 1

    def serial_blas_threads() -> float:
        with build_engine(LocalEngineConfig()) as serial:
            (ev,) = serial.map(problem, np.zeros((1, 2)))
        return ev.extras["blas_threads"]

    # the driver's pools come down to the CPUs it may use; one someone set lower
    # (OMP_NUM_THREADS=1, say) stays as it is
    with threadpool_limits(limits=available_cpus() + 1):
        assert serial_blas_threads() == available_cpus() > 1
    with threadpool_limits(limits=1):
        assert serial_blas_threads() == 1


def run_two_trials(ray_cluster, path, sizes):
    """Submit a batch of trial ``a`` and one of ``b`` (``sizes`` points, each sleeping 0.3 s)
    to a pool of two workers, one point per task; their results and task spans."""
    config = RayEngineConfig(**engine_config(ray_cluster, num_workers=2, points_per_task=1))
    problem = AnalyticConfig(name="analytic", function="sphere", delay_s=0.3)
    log = EventLog(path)
    with build_engine(config) as engine:
        engine.on_event = log
        batches = {engine.submit(problem, np.full((n, 2), i + 1.0), trial=name): name
                   for i, (name, n) in enumerate(zip("ab", sizes))}  # fmt: skip
        finished = []
        while engine.pending():
            finished += engine.wait()
    log.close()
    results = {batches[f.batch]: [ev.value for ev in f.evaluations] for f in finished}
    return results, task_spans(path)


def test_two_trials_batches_are_in_flight_at_once(tmp_path, ray_cluster):
    results, spans = run_two_trials(ray_cluster, tmp_path / "events.jsonl", (2, 2))
    assert results == {"a": [2.0, 2.0], "b": [8.0, 8.0]}
    a = [(start, end) for trial, _, start, end in spans if trial == "a"]
    b = [(start, end) for trial, _, start, end in spans if trial == "b"]
    assert len(a) == len(b) == 2
    assert any(sa < eb and sb < ea for sa, ea in a for sb, eb in b)


def test_trials_take_turns_so_a_large_batch_does_not_hold_up_a_small_one(tmp_path, ray_cluster):
    path = tmp_path / "events.jsonl"
    results, _ = run_two_trials(ray_cluster, path, (6, 2))
    assert results == {"a": [2.0] * 6, "b": [8.0] * 2}
    starts = [e["trial"] for e in read_events(path) if e["kind"] == "task_started"]
    # a's first two went out at its submission; then a and b take turns: a b a b a a
    assert starts == ["a", "a", "a", "b", "a", "b", "a", "a"]


def test_a_batch_whose_problem_cannot_be_set_up_fails_alone(ray_cluster):
    config = RayEngineConfig(**engine_config(ray_cluster, num_workers=2, points_per_task=1))
    fine = AnalyticConfig(name="analytic", function="sphere", delay_s=0.1)
    with build_engine(config) as engine:
        ok = engine.submit(fine, np.ones((6, 2)), trial="ok")
        broken = engine.submit(CustomConfig(**custom("BrokenSetup")), np.zeros((4, 2)),
                               trial="broken")  # fmt: skip
        finished = {}
        while engine.pending():
            finished.update((f.batch, f) for f in engine.wait())
        assert isinstance(finished[broken].error, EngineError)
        assert "measurements.csv not found" in str(finished[broken].error)
        assert finished[ok].error is None
        assert [ev.value for ev in finished[ok].evaluations] == [2.0] * 6
        assert [ev.value for ev in engine.map(fine, np.ones((2, 2)))] == [2.0, 2.0]


def test_a_worker_drops_its_least_recently_used_problem_and_sets_it_up_again(ray_cluster):
    config = RayEngineConfig(**engine_config(ray_cluster, num_workers=1,
                                             max_problems_per_worker=1))  # fmt: skip
    problems = [CustomConfig(**custom("CountedSetup", tag=tag)) for tag in (1, 2)]
    events = []
    with build_engine(config) as engine:
        engine.on_event = lambda kind, **f: events.append((kind, f))
        runs = [engine.map(problems[i % 2], np.full((2, 2), i)) for i in range(4)]
    assert [[ev.value for ev in run] for run in runs] == [[2.0 * i * i] * 2 for i in range(4)]
    assert [run[0].extras["tag"] for run in runs] == [1.0, 2.0, 1.0, 2.0]
    assert [run[0].extras["setups"] for run in runs] == [1.0, 2.0, 3.0, 4.0]
    evicted = [f for kind, f in events if kind == "problem_evicted"]
    assert len(evicted) == 3 and all(f["problem"] == "custom" and f["worker"] for f in evicted)


def test_auto_grouping_packs_fast_evaluations_and_sends_slow_ones_one_a_task(ray_cluster):
    config = RayEngineConfig(**engine_config(ray_cluster, num_workers=2))
    fast = AnalyticConfig(name="analytic", function="sphere")
    slow = AnalyticConfig(name="analytic", function="sphere", delay_s=0.1)
    events = []
    with build_engine(config) as engine:
        engine.on_event = lambda kind, **f: events.append((kind, f))
        engine.map(fast, np.ones((40, 2)))  # not timed yet: four tasks a worker
        engine.map(fast, np.ones((40, 2)))  # timed, fast: one task a worker
        engine.map(slow, np.ones((2, 2)))  # its evaluation time is now known
        engine.map(slow, np.ones((16, 2)))
    sizes = Counter(
        (f["batch"], f["points"]) for kind, f in events if kind == "task_started"
    )  # fmt: skip
    assert sizes == {(0, 5): 8, (1, 20): 2, (2, 1): 2, (3, 1): 16}


def test_queued_counts_waiting_tasks_after_taking_in_results_already_back(ray_cluster):
    config = RayEngineConfig(**engine_config(ray_cluster, num_workers=2, points_per_task=1))
    slow = AnalyticConfig(name="analytic", function="sphere", delay_s=0.3)
    with build_engine(config) as engine:
        engine.map(slow, np.ones((2, 2)))  # both workers up
        first = engine.submit(slow, np.ones((3, 2)), trial="t")
        assert engine.queued() == 1 and engine.pending() == 1  # two run, one waits
        second = engine.submit(slow, np.ones((1, 2)), trial="u")
        assert engine.queued() == 2
        time.sleep(1.0)  # the first two are back, though nobody called wait()
        assert engine.queued() == 0 and engine.pending() == 2
        done = [f.batch for f in engine.wait()]
        done += [f.batch for f in engine.wait()] if len(done) < 2 else []
        assert sorted(done) == [first, second]


def test_by_default_trials_start_until_a_workers_worth_of_tasks_waits(tmp_path, ray_cluster):
    # 2 workers, batches of one point: two trials run, two more wait, the fifth does not start
    trials = [{"name": f"bo{i}", "seed": i, "method": {"name": "bo", "sampler": "random",
               "n_trials": 3, "max_concurrent": 1}} for i in range(6)]  # fmt: skip
    config = engine_config(ray_cluster, num_workers=2, points_per_task=1)
    shared = {"problem": {**SPHERE, "delay_s": 0.3}}
    store, outcomes = run_campaign(tmp_path, config, trials, shared)
    assert [o.status for o in outcomes] == ["completed"] * 6
    events = read_events(store.root / "events.jsonl")
    started = [e["trial"] for e in events if e["kind"] == "task_started"]
    # bo2 and bo3 were submitted while bo0 and bo1 ran, so their tasks are next in turn
    assert started[:4] == ["bo0", "bo1", "bo2", "bo3"]


def test_trials_in_flight_on_ray_give_their_sequential_histories(tmp_path, ray_cluster):
    from tests.test_concurrent_trials import MIXED, assert_same_trials

    names = [t["name"] for t in MIXED["trials"]]
    shared = MIXED["shared"]
    alone, _ = run_campaign(tmp_path / "alone", {"kind": "local"}, MIXED["trials"], shared)
    store, outcomes = run_campaign(
        tmp_path / "ray", engine_config(ray_cluster, num_workers=3), MIXED["trials"], shared,
        max_concurrent_trials=4,
    )  # fmt: skip
    assert [o.status for o in outcomes] == ["completed"] * len(names)
    events = [e for e in read_events(store.root / "events.jsonl") if e["kind"] == "task_started"]
    assert len({e["trial"] for e in events[:12]}) > 1  # trials' tasks interleave on the pool
    assert_same_trials(alone, store, names)
