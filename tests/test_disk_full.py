"""A disk that fills up while a campaign runs: a clear message, nothing lost, and a plain
``resume`` continues once there is room, to the result of an uninterrupted run."""

from __future__ import annotations

import subprocess

import numpy as np
import yaml

from hpcopt.cli import main
from hpcopt.store.campaign_store import CampaignStore
from tests.helpers import fill_disk, tmpfs

TRIALS = [
    {
        "name": "g",
        "problem": {"name": "analytic", "function": "branin"},
        "method": {"name": "gs", "resolution": 40, "batch_size": 1},
    }
]


def _config(path, output_dir):
    path.write_text(yaml.safe_dump({"name": "full", "output_dir": str(output_dir),
                                    "trials": TRIALS}))  # fmt: skip
    return path


def test_a_full_disk_stops_the_campaign_resumably(tmp_path, capfd):
    whole = tmp_path / "whole"
    assert main(["run", str(_config(tmp_path / "w.yaml", whole)), "-q"]) == 0
    with tmpfs("size=1m") as disk:
        root = disk / "c"
        fill_disk(disk, leave=200_000)
        assert main(["run", str(_config(tmp_path / "c.yaml", root)), "-q"]) == 2
        err = capfd.readouterr().err
        assert "No space left on device" in err and "Traceback" not in err
        assert f"'hpcopt resume {root}'" in err
        record = CampaignStore.open(root).read_trial("g")
        assert record.status == "running" and 0 < record.batches < 1600
        assert not list(root.rglob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert main(["resume", str(root), "-q"]) == 0
        done = CampaignStore.open(root).read_trial("g").history
    expected = CampaignStore.open(whole).read_trial("g").history
    for column in ("x", "value", "status", "iteration", "batch"):
        np.testing.assert_array_equal(getattr(done, column), getattr(expected, column))
