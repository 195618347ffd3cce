"""Every config shipped in configs/ is valid (a broken example is a broken manual)."""

from pathlib import Path

import pytest

from hpcopt import config as cfg

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    campaign = cfg.load(path)
    assert campaign.trials
