"""Several trials in flight on one engine: each trial's history is what it is alone."""

from __future__ import annotations

import copy
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from hpcopt import config as cfg
from hpcopt.core import plain
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.engine.ray_node import processes_using
from hpcopt.store.campaign_store import CampaignStore

MIXED = {
    "name": "mixed",
    "shared": {"problem": {"name": "analytic", "function": "branin"}},
    "trials": [
        {"name": "gd", "method": {"name": "gd", "starts": 3, "steps": 12}},
        {"name": "ga", "seed": 3, "problem": {"function": "rastrigin"},
         "method": {"name": "ga", "population": 12, "generations": 5}},
        {"name": "gs", "method": {"name": "gs", "resolution": 9, "batch_size": 10}},
        {"name": "bo", "seed": 5, "method": {"name": "bo", "sampler": "tpe", "n_trials": 16,
                                             "max_concurrent": 4}},
    ],
}  # fmt: skip
COMPARED = ("x", "value", "status", "error", "iteration", "batch")


class Recorder(reporters.SilentReporter):
    """Which trial each checkpointed batch belonged to, in order."""

    def __init__(self) -> None:
        self.batches: list[str] = []

    def batch_done(self, trial, done, expected, best):
        self.batches.append(trial)


def run(tmp_path, name, doc):
    doc = copy.deepcopy(doc)
    campaign = cfg.parse(doc, output_dir=str(tmp_path / name))
    recorder = Recorder()
    outcomes = drv.run(campaign, drv.create(campaign), reporter=recorder)
    return CampaignStore.open(tmp_path / name), outcomes, recorder


def assert_same_trials(a: CampaignStore, b: CampaignStore, names) -> None:
    for name in names:
        ra, rb = a.read_trial(name), b.read_trial(name)
        assert ra.status == rb.status, name
        for field in COMPARED:
            va, vb = getattr(ra.history, field), getattr(rb.history, field)
            if va.dtype == object:
                assert list(va) == list(vb), (name, field)
            else:
                assert va.tobytes() == vb.tobytes(), (name, field)
        assert plain.dumps(ra.method_state) == plain.dumps(rb.method_state), name


def switches(batches: list[str]) -> int:
    return sum(a != b for a, b in itertools.pairwise(batches))


def test_interleaved_trials_give_the_histories_they_give_one_after_another(tmp_path):
    alone, _, seq = run(tmp_path, "alone", {**MIXED, "max_concurrent_trials": 1})
    together, outcomes, con = run(tmp_path, "together", {**MIXED, "max_concurrent_trials": 4})
    assert [o.status for o in outcomes] == ["completed"] * 4
    assert switches(seq.batches) == 3  # one trial after another
    assert switches(con.batches) > 10  # batches of the four trials alternate
    assert_same_trials(alone, together, ["gd", "ga", "gs", "bo"])


def test_the_serial_engine_runs_trials_one_after_another_by_default(tmp_path):
    _, _, recorder = run(tmp_path, "default", MIXED)
    assert switches(recorder.batches) == 3


def test_a_failing_trial_ends_alone_and_the_others_finish(tmp_path):
    problem = {"name": "custom", "target": "tests.problems:BrokenSetup",
               "parameters": [{"name": "x0", "low": 0, "high": 1}]}  # fmt: skip
    broken = {"name": "broken", "problem": problem, "method": {"name": "gs", "resolution": 3}}
    doc = {**MIXED, "trials": [broken, *MIXED["trials"]], "max_concurrent_trials": 3}
    together, outcomes, _ = run(tmp_path, "together", doc)
    assert [o.status for o in outcomes] == ["failed"] + ["completed"] * 4
    assert "measurements.csv not found" in outcomes[0].error
    alone, _, _ = run(tmp_path, "alone", {**MIXED, "max_concurrent_trials": 1})
    assert_same_trials(alone, together, ["gd", "ga", "gs", "bo"])


@pytest.mark.parametrize("cap", [0, -1])
def test_max_concurrent_trials_must_be_at_least_one(cap):
    with pytest.raises(cfg.ConfigError, match="max_concurrent_trials"):
        cfg.parse({**MIXED, "max_concurrent_trials": cap})


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_trials_in_flight_on_ray_each_at_its_checkpoint(
    tmp_path, ray_home, sig, code
):
    problem = {**MIXED["shared"]["problem"], "delay_s": 0.05}  # slow enough to stop midway
    doc = {**MIXED, "shared": {"problem": problem}}
    names = [t["name"] for t in doc["trials"]]
    alone, _, _ = run(tmp_path, "alone", {**doc, "max_concurrent_trials": 1})
    ray_tmp = Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))
    engine = {"kind": "ray", "num_workers": 2, "num_cpus": 2}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**doc, "output_dir": str(tmp_path / "c"), "engine": engine}))
    env = dict(os.environ, PYTHONPATH=os.getcwd(), HPCOPT_RAY_TMP=str(ray_tmp))
    hpcopt = [sys.executable, "-m", "hpcopt"]
    proc = subprocess.Popen([*hpcopt, "run", str(path), "-q"], env=env, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    journals = tmp_path / "c" / "trials"
    deadline = time.monotonic() + 120
    while sum(any(j.glob("*.h5")) for j in journals.glob("*.journal")) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and f"hpcopt resume {tmp_path / 'c'}" in err
    # the private Ray was shut down before the driver exited, not later by its watchdog
    assert not list(ray_tmp.iterdir()) and not processes_using(ray_tmp)
    stopped = CampaignStore.open(tmp_path / "c")
    assert "running" in {stopped.read_trial(n).status for n in names}
    done = subprocess.run([*hpcopt, "resume", str(tmp_path / "c"), "-q"], env=env, timeout=300)
    assert done.returncode == 0
    assert_same_trials(alone, CampaignStore.open(tmp_path / "c"), names)
    ray_tmp.rmdir()
