"""Confirmed winners: a finished trial's best distinct points re-scored by its problem's
variants, stored in the trial's HDF5 file, reported, and resumed exactly after a kill.

The problem is :class:`tests.problems.NoisyQuadratic`, whose noise is drawn from
``options.seed``; its confirmation re-scores the ``confirm_top_k`` best points under each
of ``confirm_seeds``. Expected values are computed here from the formula, not the driver.
"""

from __future__ import annotations

import io
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcopt import config as cfg
from hpcopt.cli import main
from hpcopt.core.evaluation import Evaluation
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.problems.base import Confirmation
from hpcopt.store.campaign_store import STATUS_OK, CampaignStore, History
from hpcopt.store.confirm import ConfirmationRecord, best_distinct, format_confirmed
from tests.problems import NoisyQuadraticConfig, confirming, noisy_quadratic

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [11, 12, 13, 14]
OPTIONS = {"center": 0.2, "noise": 0.5, "seed": 0, "confirm_top_k": 3, "confirm_seeds": SEEDS}


def noisy(**options) -> dict:
    return {
        "name": "custom",
        "target": "tests.problems:NoisyQuadratic",
        "parameters": [{"name": "a", "low": -1, "high": 1}, {"name": "b", "low": -1, "high": 1}],
        "options": {**OPTIONS, **options},
    }


def campaign_of(root: Path, problem: dict) -> cfg.Campaign:
    doc = {
        "name": "confirm",
        "output_dir": str(root),
        "trials": [{"name": "g", "problem": problem, "method": {"name": "gs", "resolution": 5}}],
    }
    return confirming(cfg.parse(doc))


def build(root: Path, problem: dict) -> tuple[cfg.Campaign, CampaignStore]:
    campaign = campaign_of(root, problem)
    return campaign, drv.create(campaign)


def run(root: Path, problem: dict) -> CampaignStore:
    campaign, store = build(root, problem)
    drv.run(campaign, store, reporter=reporters.SilentReporter())
    return store


def top_distinct(history: History, k: int, maximize: bool = False) -> list[int]:
    """The rows of the k best successful values at distinct points (earlier of equals)."""
    ok = [i for i in range(len(history)) if history.status[i] == STATUS_OK]
    ok.sort(key=lambda i: (-history.value[i] if maximize else history.value[i], i))
    rows: list[int] = []
    for i in ok:
        if all(tuple(history.x[i]) != tuple(history.x[j]) for j in rows) and len(rows) < k:
            rows.append(i)
    return rows


def expected_variants(x: np.ndarray, options: dict) -> list[float]:
    """The value of each confirmation seed at ``x``, NaN for the seed that fails."""
    return [
        math.nan
        if s == options.get("fail_seed")
        else noisy_quadratic(x, options["center"], options["noise"], s)
        for s in options["confirm_seeds"]
    ]


def mean_and_se(values: list[float]) -> tuple[float, float]:
    ok = [v for v in values if not math.isnan(v)]
    return statistics.fmean(ok), statistics.stdev(ok) / math.sqrt(len(ok))


def test_a_finished_trial_stores_its_top_k_points_rescored_by_every_variant(tmp_path):
    rec = run(tmp_path / "c", noisy()).read_trial("g")
    conf = rec.confirmation
    assert rec.status == "completed" and conf is not None and conf.complete
    rows = top_distinct(rec.history, 3)
    assert list(conf.evaluation) == rows
    np.testing.assert_array_equal(conf.x, rec.history.x[rows])
    np.testing.assert_array_equal(conf.raw_value, rec.history.value[rows])
    for i, row in enumerate(rows):
        values = expected_variants(rec.history.x[row], OPTIONS)
        assert list(conf.variant_value[i]) == values
        mean, se = mean_and_se(values)
        assert conf.mean[i] == pytest.approx(mean, rel=1e-12)
        assert conf.standard_error[i] == pytest.approx(se, rel=1e-12)
        assert conf.n[i] == 4
    assert conf.best() == int(np.argmin([mean_and_se(list(v))[0] for v in conf.variant_value]))


def test_the_top_k_points_are_distinct_best_first_and_successful_only():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 2.0], [3.0, 3.0], [1.0, 1.0]])
    evs = [Evaluation(value=v) for v in (1.0, 0.5, 1.0, 0.1, 0.7, 0.5)]
    evs[3] = Evaluation.failed("diverged")
    history = History.from_evaluations(x, evs, iteration=0, batch=1)
    assert list(best_distinct(history, 3, "minimize")) == [1, 4, 0]
    assert list(best_distinct(history, 3, "maximize")) == [0, 4, 1]
    assert list(best_distinct(history, 10, "minimize")) == [1, 4, 0]


def test_a_failed_variant_is_nan_and_left_out_of_mean_and_n(tmp_path):
    options = {**OPTIONS, "fail_seed": 13}
    conf = run(tmp_path / "c", noisy(fail_seed=13)).read_trial("g").confirmation
    assert np.isnan(conf.variant_value[:, 2]).all() and list(conf.n) == [3, 3, 3]
    assert all("seed 13 always fails" in e for e in conf.variant_error[:, 2])
    values = expected_variants(conf.x[0], options)
    assert conf.mean[0] == pytest.approx(mean_and_se(values)[0], rel=1e-12)
    assert conf.standard_error[0] == pytest.approx(mean_and_se(values)[1], rel=1e-12)


def test_a_maximised_objective_confirms_its_largest_values(tmp_path):
    problem = dict(noisy(), objective_direction="maximize")
    rec = run(tmp_path / "c", problem).read_trial("g")
    conf = rec.confirmation
    assert list(conf.evaluation) == top_distinct(rec.history, 3, maximize=True)
    assert conf.best() == int(np.argmax(conf.mean))


def test_show_and_summary_print_the_confirmed_value_with_its_standard_error(tmp_path, capsys):
    root = tmp_path / "c"
    conf = run(root, noisy()).read_trial("g").confirmation
    best = conf.best()
    mean, se = mean_and_se(expected_variants(conf.x[best], OPTIONS))
    shown = f"{mean:.6g} ± {se:.2g}"
    capsys.readouterr()
    assert main(["show", str(root)]) == 0
    out = capsys.readouterr().out
    assert "confirmed" in out and shown in out
    assert main(["summary", str(root)]) == 0
    assert shown in capsys.readouterr().out
    (row,) = json.loads((root / "summary.json").read_text())
    assert row["confirmed_value"] == pytest.approx(mean, rel=1e-12)
    assert row["confirmed_se"] == pytest.approx(se, rel=1e-12)
    assert row["confirmed_n"] == 4 and row["confirmed_evaluation"] == conf.evaluation[best]
    assert [row["confirmed.a"], row["confirmed.b"]] == list(conf.x[best])
    header = (root / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"confirmed_value", "confirmed_se", "confirmed.a"} <= set(header)


def test_the_end_of_run_line_names_the_confirmed_value(tmp_path):
    campaign, store = build(tmp_path / "c", noisy())
    stream = io.StringIO()
    (outcome,) = drv.run(campaign, store, reporter=reporters.LineReporter(stream=stream))
    confirmed = store.read_trial("g").confirmation.confirmed()
    assert (outcome.confirmed_value, outcome.confirmed_se) == confirmed
    assert f"confirmed {format_confirmed(*confirmed)}" in stream.getvalue()


def test_a_problem_without_confirmation_stores_none_and_reports_as_before(tmp_path, capsys):
    root = tmp_path / "c"
    options = {k: v for k, v in OPTIONS.items() if not k.startswith("confirm_")}
    store = run(root, dict(noisy(), options=options))
    rec = store.read_trial("g")
    assert rec.status == "completed" and rec.confirmation is None
    with h5py.File(store.trial_path("g"), "r") as f:
        assert "confirmation" not in f
    (row,) = store.summary()
    assert not any(k.startswith("confirmed") for k in row)
    main(["show", str(root)])
    assert "confirmed" not in capsys.readouterr().out


def test_a_completed_trial_is_not_confirmed_again(tmp_path):
    campaign, store = build(tmp_path / "c", noisy())
    drv.run(campaign, store, reporter=reporters.SilentReporter())
    before = store.read_trial("g")
    (outcome,) = drv.run(campaign, store, reporter=reporters.SilentReporter())
    after = store.read_trial("g")
    assert after.batches == before.batches
    assert (outcome.confirmed_value, outcome.confirmed_se) == before.confirmation.confirmed()


def test_a_stored_confirmation_of_other_variants_is_started_over(tmp_path):
    campaign, store = build(tmp_path / "c", noisy(interrupt_seed=13))
    with pytest.raises(KeyboardInterrupt):
        drv.run(campaign, store, reporter=reporters.SilentReporter())
    assert store.read_trial("g").confirmation.variants_done == 2
    changed = campaign_of(tmp_path / "c", noisy(confirm_seeds=[21, 22]))  # the code changed
    drv.run(changed, store, reporter=reporters.SilentReporter())
    rec = store.read_trial("g")
    conf = rec.confirmation
    assert rec.status == "completed" and [p["options"]["seed"] for p in conf.problems] == [21, 22]
    assert list(conf.evaluation) == top_distinct(rec.history, 3)
    options = {**OPTIONS, "confirm_seeds": [21, 22]}
    for i, x in enumerate(conf.x):
        assert list(conf.variant_value[i]) == expected_variants(x, options)


def test_a_confirmation_reads_back_exactly_from_a_segment_and_the_trial_file(tmp_path):
    store = CampaignStore.create(tmp_path / "c", "demo", {"name": "demo"}, [{"name": "t"}])
    meta = {"trial": "t", "direction": "minimize", "parameters": ["a", "b"]}
    x = np.array([[0.5, 0.0], [0.0, 0.5], [0.5, 0.5]])
    history = History.from_evaluations(x, [Evaluation(value=v) for v in (3.0, 1.0, 2.0)], 0, 1)
    problem = NoisyQuadraticConfig.model_validate(noisy())
    record = ConfirmationRecord.start(history, problem.confirmation(), "minimize")
    failed = Evaluation.failed("no rays arrived")
    record = record.add_variant([Evaluation(value=1.5), failed, Evaluation(value=2.5)])
    w = store.writer("t", meta, consolidate_every=100)
    w.checkpoint(history, {"step": 1})
    w.checkpoint(History.empty(2), None, confirmation=record)
    for read in (store.read_trial, lambda name: (w.consolidate(), store.read_trial(name))[1]):
        got = read("t").confirmation
        assert got.problems == record.problems and got.top_k == 3 and not got.complete
        for name in ("evaluation", "x", "raw_value", "variant_value", "mean", "n"):
            a, b = getattr(got, name), getattr(record, name)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
        assert got.variant_error.tolist() == [[""], ["no rays arrived"], [""]]
    assert store.read_trial("t").method_state == {"step": 1}


def test_a_trial_without_successful_points_stores_an_empty_confirmation():
    history = History.from_evaluations(np.zeros((2, 2)), [Evaluation.failed("x")] * 2, 0, 1)
    problem = NoisyQuadraticConfig.model_validate(noisy())
    record = ConfirmationRecord.start(history, problem.confirmation(), "minimize")
    for _ in SEEDS:
        record = record.add_variant([])
    assert record.complete and record.x.shape == (0, 2) and record.best() is None
    assert record.summary(["a", "b"]) == {
        "confirmed_value": None,
        "confirmed_se": None,
        "confirmed_n": 0,
    }


def test_a_top_k_below_one_is_refused():
    problem = NoisyQuadraticConfig.model_validate(noisy())
    history = History.empty(2)
    with pytest.raises(ValueError, match="top_k must be >= 1, got 0"):
        ConfirmationRecord.start(history, Confirmation(0, problem.confirmation().problems), "x")


def drive(root: Path) -> subprocess.CompletedProcess:
    """Run or resume the campaign in ``root`` in another process (the one that is killed)."""
    code = "import sys; from tests.problems import drive; drive(sys.argv[1])"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, str(root)], env=env, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(("kill_seed", "variants_done"), [(11, 0), (13, 2)])
def test_a_driver_killed_during_confirmation_resumes_to_the_uninterrupted_one(
    tmp_path, kill_seed, variants_done
):
    # both campaigns name the same marker: the kill happens in the first, never in the second
    problem = noisy(kill_seed=kill_seed, marker=str(tmp_path / "killed"))
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    build(cut, problem)
    assert drive(cut).returncode == -9
    stopped = CampaignStore.open(cut).read_trial("g")
    assert stopped.status == "running" and stopped.confirmation is not None
    assert stopped.confirmation.variants_done == variants_done
    assert drive(cut).returncode == 0
    run(whole, problem)

    a, b = CampaignStore.open(whole), CampaignStore.open(cut)
    assert a.read_trial("g").status == b.read_trial("g").status == "completed"
    with h5py.File(a.trial_path("g"), "r") as fa, h5py.File(b.trial_path("g"), "r") as fb:
        ga, gb = fa["confirmation"], fb["confirmation"]
        assert dict(ga.attrs) == dict(gb.attrs)
        assert set(ga) == set(gb)
        for name in ga:
            va, vb = ga[name][()], gb[name][()]
            assert va.dtype == vb.dtype and va.shape == vb.shape, name
            if va.dtype == object:  # strings
                assert va.tolist() == vb.tolist(), name
            else:
                assert va.tobytes() == vb.tobytes(), name
