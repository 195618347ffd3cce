"""The campaign folder's layout (every path in it is one CampaignFolder names) and the one
atomic write every writer uses."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from hpcopt.cli.main import main
from hpcopt.cluster.slurm import _write_json
from hpcopt.core.files import StoreError, atomic_path, write_bytes, write_text
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.engine.ray_node import new_token_file
from hpcopt.store.campaign_store import CampaignStore
from hpcopt.store.folder import CampaignFolder
from hpcopt.store.jobs import record_jobs
from hpcopt.store.lock import driver_lock
from tests.helpers import fill_disk, tmpfs

SPHERE = {"name": "analytic", "function": "sphere"}
CONFIG = {
    "name": "layout",
    "shared": {"problem": SPHERE},
    "trials": [
        {"name": "gs", "method": {"name": "gs", "resolution": 3, "rounds": 2}},
        {"name": "ga", "method": {"name": "ga", "population": 4, "generations": 3}},
    ],
}


def unknown_entries(root: Path) -> list[str]:
    """The paths under ``root`` that CampaignFolder does not name."""
    folder = CampaignFolder(root)
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if folder.entry(p) is None]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    """A campaign folder as 'hpcopt run', 'summary' and 'plot' leave it, with a trial run
    again by a job-array driver (its own lock and event log)."""
    base = tmp_path_factory.mktemp("layout")
    config = base / "layout.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    root = base / "c"
    assert main(["run", str(config), "-o", str(root), "-q"]) == 0
    assert main(["summary", str(root)]) == 0
    assert main(["plot", str(root)]) == 0
    store, job = drv.reopen(root)
    drv.run(job, store, reporter=reporters.SilentReporter(), only="ga", retry_failed=True)
    return root


def test_every_entry_of_a_campaign_folder_after_a_run_is_named_by_campaign_folder(campaign):
    folder = CampaignFolder(campaign)
    found = {folder.entry(p) for p in campaign.rglob("*")}
    assert unknown_entries(campaign) == []
    assert {"campaign config", "trial file", "event log", "summary", "figures"} <= found


def test_a_held_driver_lock_is_named_by_campaign_folder(campaign):
    with driver_lock(campaign), driver_lock(campaign, "gs"):
        assert unknown_entries(campaign) == []
        held = [p.name for p in CampaignFolder(campaign).driver_locks()]
    assert held == ["driver-gs.json", "driver.json"]


def test_the_slurm_records_are_named_by_campaign_folder(tmp_path):
    # what 'hpcopt submit' and a job's ranks write (hpcopt.cluster.slurm), without Slurm
    root = tmp_path / "c"
    record_jobs(root, ["41", "42"])
    rendezvous = CampaignFolder(root).rendezvous("41_3", 1)
    _write_json(rendezvous.rank(0), {"node": "n0"})
    _write_json(rendezvous.rank(1), {"node": "n1"})
    new_token_file(rendezvous.folder)
    _write_json(rendezvous.head, {"address": "10.0.0.1:6379"})
    write_text(rendezvous.done, "")
    (CampaignFolder(root).root / "slurm" / "41").mkdir(parents=True)
    (CampaignFolder(root).root / "slurm" / "41" / "41_0_log.out").write_text("")
    assert unknown_entries(root) == []


def test_a_quarantined_file_and_a_dying_writers_temporary_are_named(campaign, tmp_path):
    folder = CampaignFolder(campaign)
    assert folder.entry(folder.quarantine / "trials" / "ga.journal" / "00000003.h5.1")
    with atomic_path(folder.trial_files("gs").segment(9)) as tmp:
        assert folder.entry(tmp) == "temporary file"
    aside = CampaignFolder.lock_aside(folder.driver_lock("gs"))
    assert folder.entry(aside) == "lock being removed"


def test_every_path_campaign_folder_builds_is_the_entry_it_says(tmp_path):
    folder = CampaignFolder(tmp_path)
    files = folder.trial_files("t-1")
    rendezvous = folder.rendezvous("7", 0)
    expected = {
        folder.campaign_file: "campaign config",
        folder.trials: "trials folder",
        files.trial_file: "trial file",
        files.journal: "trial journal",
        files.started: "journal started",
        files.segment(12): "journal segment",
        files.pack(1, 64): "journal pack",
        folder.quarantine: "quarantine",
        folder.events(): "event log",
        folder.events("t-1"): "event log",
        folder.summary_csv: "summary",
        folder.summary_json: "summary",
        folder.driver_lock(): "driver lock",
        folder.driver_lock("t-1"): "driver lock",
        folder.slurm_jobs: "Slurm jobs",
        folder.submitit: "submitit folder",
        rendezvous.folder: "rendezvous",
        rendezvous.rank(3): "rendezvous entry",
        rendezvous.head: "rendezvous entry",
        rendezvous.done: "rendezvous entry",
        rendezvous.folder / "ray-token": "rendezvous entry",  # hpcopt.engine.ray_node's name
        folder.plots: "figures",
        folder.plots / "convergence.png": "figures",
    }
    assert {path: folder.entry(path) for path in expected} == expected


def test_a_path_the_layout_does_not_name_is_no_entry(tmp_path):
    folder = CampaignFolder(tmp_path)
    assert folder.entry(tmp_path / "notes.txt") is None
    assert folder.entry(tmp_path / "trials" / "t.journal" / "12.h5") is None
    assert folder.entry(tmp_path.parent / "campaign.h5") is None


def test_the_store_takes_its_paths_from_campaign_folder(campaign):
    store = CampaignStore.open(campaign)
    assert store.trial_files("gs") == CampaignFolder(campaign).trial_files("gs")
    assert (store.campaign_file, store.quarantine) == (
        CampaignFolder(campaign).campaign_file,
        CampaignFolder(campaign).quarantine,
    )


# -- the atomic write --------------------------------------------------------------------


def test_an_atomic_write_leaves_the_file_and_no_temporary(tmp_path):
    write_text(tmp_path / "a.json", "new")
    assert os.listdir(tmp_path) == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "new"


def test_an_atomic_write_gives_the_file_the_mode_open_would(tmp_path):
    umask = os.umask(0o027)
    try:
        write_text(tmp_path / "a.png", "new")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o640


def test_an_atomic_write_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError, match="half way"), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("ne")
        raise RuntimeError("half way")
    assert os.listdir(tmp_path) == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "old"


def test_an_atomic_write_into_a_full_folder_keeps_the_old_file_and_leaves_no_temporary():
    with tmpfs("size=64k") as folder:
        write_text(folder / "summary.csv", "old")
        fill_disk(folder, leave=4096)
        with pytest.raises(StoreError, match=r"cannot write .*summary\.csv: No space left"):
            write_text(folder / "summary.csv", "x" * 100_000)
        assert sorted(os.listdir(folder)) == ["filler", "summary.csv"]
        assert (folder / "summary.csv").read_text() == "old"


def test_an_atomic_write_into_a_read_only_folder_keeps_the_old_file():
    with tmpfs("size=64k") as folder:
        write_text(folder / "slurm.json", "old")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        with pytest.raises(StoreError, match=r"cannot write .*slurm\.json: Read-only"):
            write_text(folder / "slurm.json", "new")
        assert os.listdir(folder) == ["slurm.json"]
        assert (folder / "slurm.json").read_text() == "old"


def test_an_exclusive_write_refuses_an_existing_file_and_leaves_no_temporary(tmp_path):
    write_bytes(tmp_path / "owner", b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_bytes(tmp_path / "owner", b"second", exclusive=True)
    assert os.listdir(tmp_path) == ["owner"]
    assert (tmp_path / "owner").read_bytes() == b"first"


def test_an_atomic_write_syncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    write_text(tmp_path / "a.json", "new")
    assert synced == [(tmp_path / "a.json").stat().st_ino, tmp_path.stat().st_ino]
