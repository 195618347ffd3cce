"""cmaes is an extra (``hpcopt[cmaes]``): only BO's CMA-ES sampler needs it."""

import sys

import pytest

from hpcopt import config as cfg


def campaign(sampler: str) -> dict:
    method = {"name": "bo", "sampler": sampler, "n_trials": 4}
    problem = {"name": "analytic", "function": "sphere"}
    return {"name": "c", "trials": [{"name": "t", "problem": problem, "method": method}]}


def test_bo_cmaes_without_cmaes_is_a_config_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cmaes", None)
    extra = r"trials\[0\]\.method.*pip install 'hpcopt\[cmaes\]'"
    with pytest.raises(cfg.ConfigError, match=extra):
        cfg.parse(campaign("cmaes"))
    cfg.parse(campaign("tpe"))  # the other samplers do not need it
