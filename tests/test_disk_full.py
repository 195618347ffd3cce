"""A disk that fills up while a campaign runs: a clear message, nothing lost, and a plain
``resume`` continues once there is room, to the result of an uninterrupted run."""

from __future__ import annotations

import subprocess

import numpy as np
import yaml

from hpcopt.cli import main
from hpcopt.store import CampaignStore

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


def _fill(disk, leave):
    """Fill the disk until ``leave`` bytes are free."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(bytes(65536))
                f.flush()
        except OSError:
            pass
    subprocess.run(["truncate", "-s", f"-{leave}", str(filler)], check=True)


def test_a_full_disk_stops_the_campaign_resumably(tmp_path, small_disk, capfd):
    whole = tmp_path / "whole"
    assert main(["run", str(_config(tmp_path / "w.yaml", whole)), "-q"]) == 0
    root = small_disk / "c"
    _fill(small_disk, leave=200_000)
    assert main(["run", str(_config(tmp_path / "c.yaml", root)), "-q"]) == 2
    err = capfd.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert f"'hpcopt resume {root}'" in err
    record = CampaignStore.open(root).read_trial("g")
    assert record.status == "running" and 0 < record.batches < 1600
    assert not list(root.rglob("*.tmp"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert main(["resume", str(root), "-q"]) == 0
    done, expected = (CampaignStore.open(r).read_trial("g").history for r in (root, whole))
    for column in ("x", "value", "status", "iteration", "batch"):
        np.testing.assert_array_equal(getattr(done, column), getattr(expected, column))
