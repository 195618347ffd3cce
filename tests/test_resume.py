"""Resume equivalence: a campaign SIGKILLed at several points and resumed ends with exactly
the histories of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from hpcopt.core import plain
from hpcopt.store.campaign_store import CampaignStore
from tests.helpers import evaluations

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "resume",
    "shared": {"problem": {"name": "analytic", "function": "branin", "delay_s": 0.004}},
    "trials": [
        {"name": "gd", "method": {"name": "gd", "starts": 4, "steps": 30}},
        {"name": "ga", "seed": 3, "problem": {"function": "rastrigin"},
         "method": {"name": "ga", "population": 16, "generations": 8}},
        {"name": "gs", "method": {"name": "gs", "resolution": 17, "batch_size": 20}},
        {"name": "bo", "seed": 5, "method": {"name": "bo", "sampler": "tpe", "n_trials": 40,
                                             "max_concurrent": 4}},
    ],
}  # fmt: skip
COMPARED = ("x", "value", "status", "error", "iteration", "batch", "gradient")


def hpcopt(*args):
    return [sys.executable, "-m", "hpcopt", *args]


def env():
    return dict(os.environ, PYTHONPATH=os.getcwd())


def run_and_kill_at(cmd, root, at):
    proc = subprocess.Popen(cmd, env=env(), stderr=subprocess.DEVNULL)
    while proc.poll() is None and evaluations(root) < at:
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkilled_campaign_resumes_to_the_uninterrupted_result(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(hpcopt("run", str(config), "-o", str(whole), "-q"), env=env(), check=True)
    kill_and_resume(config, cut, evaluations(whole))
    assert_same_campaign(whole, cut)


def test_interleaved_trials_sigkilled_resume_to_the_sequential_result(tmp_path):
    sequential, interleaved = tmp_path / "sequential.yaml", tmp_path / "interleaved.yaml"
    sequential.write_text(yaml.safe_dump({**CONFIG, "max_concurrent_trials": 1}))
    interleaved.write_text(yaml.safe_dump({**CONFIG, "max_concurrent_trials": 4}))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(hpcopt("run", str(sequential), "-o", str(whole), "-q"), env=env(), check=True)
    kill_and_resume(interleaved, cut, evaluations(whole))
    assert_same_campaign(whole, cut)


def kill_and_resume(config, cut, total):
    """Run ``config`` into ``cut``, SIGKILLed at 10 % of ``total`` evaluations and resumed
    and killed again at 30, 55 and 80 %, then resumed to the end."""
    run_and_kill_at(hpcopt("run", str(config), "-o", str(cut), "-q"), cut, 0.1 * total)
    for fraction in (0.3, 0.55, 0.8):
        run_and_kill_at(hpcopt("resume", str(cut), "-q"), cut, fraction * total)
    assert evaluations(cut) < total, "the kills came too late to interrupt anything"
    subprocess.run(hpcopt("resume", str(cut), "-q"), env=env(), check=True)


def assert_same_campaign(whole, cut):
    a, b = CampaignStore.open(whole), CampaignStore.open(cut)
    for name in a.trial_names():
        ra, rb = a.read_trial(name), b.read_trial(name)
        assert ra.status == rb.status == "completed"
        for field in COMPARED:
            va, vb = getattr(ra.history, field), getattr(rb.history, field)
            assert (va is None) == (vb is None), (name, field)
            if va is not None and va.dtype == object:
                assert list(va) == list(vb), (name, field)
            elif va is not None:
                assert va.dtype == vb.dtype and va.tobytes() == vb.tobytes(), (name, field)
        assert ra.history.extras.keys() == rb.history.extras.keys()
        for key in ra.history.extras:
            np.testing.assert_array_equal(ra.history.extras[key], rb.history.extras[key])
        assert plain.dumps(ra.method_state) == plain.dumps(rb.method_state), name
    assert a.summary()[0]["best_value"] == b.summary()[0]["best_value"]
