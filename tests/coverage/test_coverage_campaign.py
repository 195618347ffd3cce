"""A small coverage campaign in all three modes with GS, GA and GD (mixed AD and SPSA
gradients), each trial ending with a confirmed best; run twice, and SIGKILLed and resumed,
it gives the same stores bit for bit (real Sionna RT on the CPU)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import yaml

from hpcopt.config.registry import build_problem
from hpcopt.core import plain
from hpcopt.store.campaign_store import CampaignStore
from tests.helpers import evaluations
from tests.test_resume import env, hpcopt, run_and_kill_at

pytestmark = [pytest.mark.sionna, pytest.mark.slow]

MODES = {
    "1ap": {"gs": {"resolution": {"ap1_x": 3, "ap1_y": 2, "ap1_yaw": 2}}},
    "2ap": {
        "gs": {"resolution": 2, "blocks": [["ap1_x", "ap1_y", "ap1_yaw"],
                                            ["ap2_x", "ap2_y", "ap2_yaw"]], "rounds": 1},
    },
    "2ap_reflector": {
        "gs": {"resolution": 2, "outer": ["refl_u"],
               "blocks": [["ap1_x", "ap1_y", "ap1_yaw"], ["focus_x", "focus_y"]], "rounds": 1},
    },
}  # fmt: skip
METHODS = {
    "ga": {"name": "ga", "population": 6, "generations": 2},
    "gd": {"name": "gd", "starts": 2, "steps": 2, "gradient": "spsa", "exact_gradients": True,
           "spsa_c": 0.05, "lr": 0.05},
}  # fmt: skip
CONFIG = {
    "name": "coverage-modes",
    "shared": {
        "problem": {
            "name": "coverage", "min_separation_m": 2.0,
            "radio": {"pattern": "tr38901", "samples_per_tx": 20_000, "cell_size_m": 1.0,
                      "max_depth": 8},
            "confirm": {"top_k": 2, "samples_per_tx": 40_000, "seeds": [1, 2]},
        }
    },
    "trials": [
        {"name": f"{method}-{mode}", "problem": {"mode": mode},
         "method": {"name": "gs", **MODES[mode]["gs"]} if method == "gs" else METHODS[method]}
        for mode in MODES for method in ("gs", "ga", "gd")
    ],
}  # fmt: skip
VARIES = {"radio_map_time_s"}  # wall-clock time: the one thing allowed to differ


def assert_same_stores(a: CampaignStore, b: CampaignStore) -> None:
    for name in a.trial_names():
        ra, rb = a.read_trial(name), b.read_trial(name)
        assert ra.status == rb.status == "completed", (name, ra.error, rb.error)
        for field in ("x", "value", "status", "error", "iteration", "batch", "gradient"):
            va, vb = getattr(ra.history, field), getattr(rb.history, field)
            assert (va is None) == (vb is None), (name, field)
            if va is not None and va.dtype == object:
                assert list(va) == list(vb), (name, field)
            elif va is not None:
                assert va.tobytes() == vb.tobytes(), (name, field)
        for key in ra.history.extras.keys() - VARIES:
            np.testing.assert_array_equal(ra.history.extras[key], rb.history.extras[key])
        assert plain.dumps(ra.method_state) == plain.dumps(rb.method_state), name
        ca, cb = ra.confirmation, rb.confirmation
        assert ca.x.tobytes() == cb.x.tobytes(), name
        assert ca.variant_value.tobytes() == cb.variant_value.tobytes(), name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coverage-modes")
    config = tmp / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    roots = {}
    for run in ("first", "second"):
        roots[run] = tmp / run
        subprocess.run(hpcopt("run", str(config), "-o", str(roots[run]), "-q"), env=env(),
                       check=True)  # fmt: skip
    total = evaluations(roots["first"])
    roots["cut"] = tmp / "cut"
    run_and_kill_at(hpcopt("run", str(config), "-o", str(roots["cut"]), "-q"), roots["cut"],
                    0.3 * total)  # fmt: skip
    run_and_kill_at(hpcopt("resume", str(roots["cut"]), "-q"), roots["cut"], 0.7 * total)
    killed_at = evaluations(roots["cut"])
    subprocess.run(hpcopt("resume", str(roots["cut"]), "-q"), env=env(), check=True)
    return {name: CampaignStore.open(root) for name, root in roots.items()}, killed_at, total


def test_every_mode_and_method_ends_with_a_confirmed_best(runs):
    stores, _, _ = runs
    first = stores["first"]
    assert len(first.trial_names()) == 9
    for name in first.trial_names():
        record = first.read_trial(name)
        assert record.status == "completed", (name, record.error)
        confirmed = record.confirmation.confirmed()
        assert confirmed is not None and np.isfinite(confirmed[0]), name
        assert record.confirmation.variant_value.shape == (2, 2)


def test_gd_records_the_mixed_gradients_it_moved_by(runs):
    from hpcopt import config as cfg

    first = runs[0]["first"]
    for mode in MODES:
        record = first.read_trial(f"gd-{mode}")
        h = record.history
        trial = cfg.TrialConfig.model_validate(record.meta["config"])
        space = trial.problem.space()
        exact = trial.problem.gradient_mask()
        step0 = np.flatnonzero(h.iteration == 0)
        centres, probes = h.x[step0[:2]], h.x[step0[2:]]
        values = h.value[step0[2:]]
        stored = h.gradient[step0[:2]]
        assert np.isfinite(stored).all(), mode
        # the yaw part is the map's exact AD derivative at the start, recomputed here
        problem = build_problem(trial.problem)
        problem.setup()
        ad = problem.evaluate(centres[0], gradient=True).gradient
        np.testing.assert_allclose(stored[0, exact], ad[exact], rtol=1e-12)
        # the rest is the SPSA estimate from the start's two probes in the history (a
        # probe outside the cube or infeasible is not asked: then a one-sided slope)
        c = trial.method.spsa_c
        u0 = space.encode(centres[0])
        offsets = space.encode(probes) - u0
        mine = np.all(np.isclose(np.abs(offsets[:, ~exact]), c), axis=1)
        mine &= np.all(offsets[:, exact] == 0, axis=1)
        pair = np.flatnonzero(mine)
        delta = np.round(offsets[pair[0]] / c)
        if len(pair) == 2:
            slope = (values[pair[0]] - values[pair[1]]) / (2 * c)
        else:
            slope = (values[pair[0]] - h.value[step0[0]]) / c
        expected = space.gradient_from_unit(centres[0], slope * delta)
        np.testing.assert_allclose(stored[0, ~exact], expected[~exact], rtol=1e-6)


def test_two_runs_give_the_same_stores_bit_for_bit(runs):
    stores, _, _ = runs
    assert_same_stores(stores["first"], stores["second"])


def test_a_killed_and_resumed_run_gives_the_same_stores_bit_for_bit(runs):
    stores, killed_at, total = runs
    assert killed_at < total, "the kills came too late to interrupt anything"
    assert_same_stores(stores["first"], stores["cut"])
