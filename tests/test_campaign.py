import csv
import json

import numpy as np
import pytest

from hpcopt import config as cfg
from hpcopt.config.registry import build_engine
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.engine import LocalEngineConfig
from hpcopt.store.campaign_store import STATUS_FAILED, StoreError


def build(tmp_path, trials, shared=None):
    doc = {
        "name": "t",
        "output_dir": str(tmp_path / "c"),
        "shared": shared or {"problem": {"name": "analytic", "function": "sphere"}},
        "trials": trials,
    }
    campaign = cfg.parse(doc)
    return campaign, drv.create(campaign)


FLAKY = {
    "name": "custom",
    "target": "tests.problems:Flaky",
    "parameters": [{"name": "a", "low": -1, "high": 1}, {"name": "b", "low": -1, "high": 1}],
    "options": {"fail_above": 0.5},
}


def test_every_evaluation_is_recorded_with_its_iteration_and_worker(tmp_path):
    campaign, store = build(tmp_path, [{"name": "g", "method": {"name": "gs", "resolution": 5}}])
    (outcome,) = drv.run(campaign, store, reporter=reporters.SilentReporter())
    rec = store.read_trial("g")
    assert outcome.status == rec.status == "completed"
    assert len(rec.history) == 25 and outcome.best_value == 0.0
    assert set(rec.history.worker) == {build_engine(LocalEngineConfig()).worker}
    assert (rec.history.wall_time_s >= 0).all() and "norm" in rec.history.extras


def test_failed_evaluations_are_recorded_and_the_trial_goes_on(tmp_path):
    trials = [{"name": "g", "problem": FLAKY, "method": {"name": "gs", "resolution": 5}}]
    campaign, store = build(tmp_path, trials)
    (outcome,) = drv.run(campaign, store, reporter=reporters.SilentReporter())
    h = store.read_trial("g").history
    failed = h.status == STATUS_FAILED
    assert outcome.status == "completed" and failed.sum() == 5  # the a=1.0 column
    assert np.isnan(h.value[failed]).all()
    assert all("x0=1.000 is past fail_above" in e for e in h.error[failed])


def test_a_failing_trial_is_recorded_and_the_next_trial_runs(tmp_path):
    broken = dict(FLAKY, target="tests.problems:BrokenSetup")
    trials = [
        {"name": "broken", "problem": broken, "method": {"name": "gs", "resolution": 3}},
        {"name": "fine", "method": {"name": "gs", "resolution": 3}},
    ]
    campaign, store = build(tmp_path, trials)
    outcomes = drv.run(campaign, store, reporter=reporters.SilentReporter())
    assert [o.status for o in outcomes] == ["failed", "completed"]
    assert "FileNotFoundError: measurements.csv not found" in outcomes[0].error
    assert store.read_trial("broken").error == outcomes[0].error


def test_maximised_objectives_report_their_largest_value(tmp_path):
    shared = {"problem": {"name": "analytic", "function": "sphere", "maximize": True}}
    campaign, store = build(
        tmp_path, [{"name": "g", "method": {"name": "gs", "resolution": 3}}], shared
    )
    (outcome,) = drv.run(campaign, store, reporter=reporters.SilentReporter())
    assert outcome.best_value == 0.0  # -x.x is largest at the origin
    assert store.summary()[0]["best_value"] == 0.0


def test_max_evaluations_caps_a_trial_between_batches(tmp_path):
    method = {"name": "gs", "resolution": 11, "batch_size": 10}
    campaign, store = build(tmp_path, [{"name": "g", "max_evaluations": 25, "method": method}])
    drv.run(campaign, store, reporter=reporters.SilentReporter())
    assert len(store.read_trial("g").history) == 30


def test_completed_trials_are_not_run_again(tmp_path):
    campaign, store = build(tmp_path, [{"name": "g", "method": {"name": "gs", "resolution": 3}}])
    drv.run(campaign, store, reporter=reporters.SilentReporter())
    before = store.read_trial("g")
    (outcome,) = drv.run(campaign, store, reporter=reporters.SilentReporter())
    assert outcome.status == "completed" and store.read_trial("g").batches == before.batches


def test_summary_files_are_exported_at_the_end(tmp_path):
    trials = [
        {"name": "g", "method": {"name": "gs", "resolution": 3}},
        {"name": "f", "problem": FLAKY, "method": {"name": "gs", "resolution": 4}},
    ]
    campaign, store = build(tmp_path, trials)
    drv.run(campaign, store, reporter=reporters.SilentReporter())
    rows = json.loads((store.root / "summary.json").read_text())
    assert rows == store.summary()
    for row in rows:  # against the histories themselves, not only the store's summary
        h = store.read_trial(row["trial"]).history
        ok = h.status != STATUS_FAILED
        best = int(np.flatnonzero(ok)[np.argmin(h.value[ok])])
        assert row["status"] == "completed" and row["evaluations"] == len(h)
        assert row["failed"] == int((~ok).sum()) and row["best_evaluation"] == best
        assert row["best_value"] == h.value[best]
        assert [v for k, v in row.items() if k.startswith("best.")] == list(h.x[best])
    assert [(r["trial"], r["evaluations"], r["failed"]) for r in rows] == [
        ("g", 9, 0),
        ("f", 16, 4),
    ]
    with open(store.root / "summary.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    columns = list(dict.fromkeys(k for row in rows for k in row))  # the union, in order
    assert list(lines[0]) == columns
    assert lines == [{k: str(row.get(k, "")) for k in columns} for row in rows]


def test_a_second_driver_on_a_live_campaign_is_refused(tmp_path):
    campaign, store = build(tmp_path, [{"name": "g", "method": {"name": "gs", "resolution": 3}}])
    with drv.driver_lock(store.root), pytest.raises(StoreError, match="already being run by pid"):
        drv.run(campaign, store, reporter=reporters.SilentReporter())
