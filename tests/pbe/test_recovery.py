"""Parameter recovery from synthetic 1-D data with the shipped configs/pbe-1d.yaml.

"Within x % in log space" is measured two ways (both are recorded per evaluation):
``max_range_error``, the largest error as a share of each parameter's log range, and
``max_log_error``, the largest ``|ln(found / true)|``. The figures over seeds are in
benchmarks/pbe_recovery.py; this test runs the config's own trials (seed 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpcopt import config as cfg
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "pbe-1d.yaml"


def best_errors(tmp_path: Path, trial: str) -> dict[str, float]:
    campaign = cfg.load(CONFIG, output_dir=str(tmp_path / trial))
    campaign = campaign.model_copy(
        update={"trials": [t for t in campaign.trials if t.name == trial]}
    )
    store = drv.create(campaign)
    (outcome,) = drv.run(campaign, store, reporter=reporters.SilentReporter())
    assert outcome.status == "completed"
    record = store.read_trial(trial)
    history, best = record.history, record.best_index()
    assert len(history) <= 300
    return {k: float(history.extras[k][best]) for k in ("max_log_error", "max_range_error")}


@pytest.mark.slow
def test_bo_recovers_four_parameters_from_noise_free_data_within_5_percent_of_their_range(
    tmp_path,
):
    # over 12 seeds (benchmarks/pbe_recovery.py): 8 within 5 % of the range, the median
    # |ln ratio| 11 %; seed 0 is one of the eight (2.8 %, |ln ratio| 9.3 %)
    errors = best_errors(tmp_path, "bo-cmaes")
    assert errors["max_range_error"] <= 0.05
    assert errors["max_log_error"] <= 0.15


@pytest.mark.slow
def test_bo_recovers_four_parameters_from_noisy_data_within_20_percent_of_their_range(
    tmp_path,
):
    errors = best_errors(tmp_path, "bo-cmaes-noisy")
    assert errors["max_range_error"] <= 0.20


@pytest.mark.slow
def test_gd_on_exact_gradients_recovers_four_parameters_within_5_percent(tmp_path):
    # BFGS on the torch solver's exact gradients, 4 starts x 37 steps (148 evaluations);
    # over 12 seeds in benchmarks/pbe_recovery.py. With Adam (6 x 25) seed 0 ended 20 % off.
    errors = best_errors(tmp_path, "gd-exact")
    assert errors["max_log_error"] <= np.log1p(0.05)
