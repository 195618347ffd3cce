"""A campaign's private Ray ends with its driver, however the driver ends, and leaves
neither processes nor its auth token behind."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from hpcopt.core.events import read_events
from hpcopt.core.files import StoreError
from hpcopt.engine import private_ray
from hpcopt.engine.ray_node import new_token_file, processes_using, short_temp_dir
from tests.conftest import ROOT
from tests.helpers import fill_disk, tmpfs, wait_until


@pytest.fixture
def ray_tmp(monkeypatch):
    """A short base folder of its own for private Ray folders (``HPCOPT_RAY_TMP``)."""
    base = Path(tempfile.mkdtemp(prefix="hb-", dir="/tmp"))
    monkeypatch.setenv("HPCOPT_RAY_TMP", str(base))
    yield base
    for path in base.glob("*"):
        private_ray.end(path)
    base.rmdir()


def owner_of(directory: Path) -> dict:
    return json.loads((directory / private_ray.OWNER_FILE).read_text())


def test_a_folder_claimed_by_this_process_has_a_live_owner(ray_tmp):
    directory = short_temp_dir()
    private_ray.claim(directory)
    assert owner_of(directory)["pid"] == os.getpid()
    assert private_ray.owner_alive(directory) is True


def test_a_claim_is_private_and_made_once(ray_tmp):
    directory = short_temp_dir()
    private_ray.claim(directory)
    with pytest.raises(FileExistsError):
        private_ray.claim(directory)
    assert os.listdir(directory) == [private_ray.OWNER_FILE]
    assert stat.S_IMODE((directory / private_ray.OWNER_FILE).stat().st_mode) == 0o600


def test_a_claim_that_cannot_be_written_leaves_no_owner_file():
    # a half-written owner file could never be judged: its folder would be kept forever
    with tmpfs("size=64k") as base:
        directory = base / "hr-full"
        directory.mkdir()
        fill_disk(base)
        with pytest.raises(StoreError, match="No space left"):
            private_ray.claim(directory)
        assert os.listdir(directory) == []


def test_an_owner_pid_now_held_by_another_process_is_dead(ray_tmp):
    directory = short_temp_dir()
    private_ray.claim(directory)
    owner = owner_of(directory)
    (directory / private_ray.OWNER_FILE).write_text(json.dumps({**owner, "start": 1}))
    assert private_ray.owner_alive(directory) is False


def test_an_owner_from_an_earlier_boot_is_dead(ray_tmp):
    directory = short_temp_dir()
    private_ray.claim(directory)
    owner = owner_of(directory)
    (directory / private_ray.OWNER_FILE).write_text(json.dumps({**owner, "boot_id": "x"}))
    assert private_ray.owner_alive(directory) is False


def test_an_owner_that_ended_but_was_not_yet_waited_for_is_dead(ray_tmp):
    directory = short_temp_dir()
    claim = f"from hpcopt.engine.private_ray import claim; claim({str(directory)!r})"
    owner = subprocess.Popen(
        [sys.executable, "-c", claim], env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    try:
        os.waitid(os.P_PID, owner.pid, os.WEXITED | os.WNOWAIT)  # ended, left a zombie
        assert private_ray.owner_alive(directory) is False
    finally:
        owner.wait()


def test_a_folder_without_an_owner_file_is_not_judged(ray_tmp):
    assert private_ray.owner_alive(short_temp_dir()) is None
    assert private_ray.remove_leftovers(ray_tmp) == []


@pytest.mark.ray
@pytest.mark.slow
def test_the_next_start_removes_a_dead_drivers_folder_and_keeps_a_live_ones(ray_home, ray_tmp):
    from hpcopt.config.registry import build_engine
    from hpcopt.engine.ray_pool import RayEngineConfig

    dead, live = short_temp_dir(), short_temp_dir()
    for directory in (dead, live):
        new_token_file(directory)
    private_ray.claim(live)
    claim = f"from hpcopt.engine.private_ray import claim; claim({str(dead)!r})"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", claim], env=env, check=True)
    # a process of the dead driver's Ray that outlived it
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(dead)])
    try:
        engine = build_engine(RayEngineConfig(kind="ray", num_workers=1, num_cpus=1))
        engine.close()
        assert left.wait(timeout=5) is not None
        assert not dead.exists()
        assert (live / "ray-token").exists() and private_ray.owner_alive(live)
    finally:
        left.kill()
        left.wait()


@pytest.mark.ray
@pytest.mark.slow
def test_a_sigkilled_driver_leaves_no_ray_process_and_no_token(tmp_path, ray_home, ray_tmp):
    """The campaign's Ray processes and its folder with the token are gone within 10 s."""
    problem = {"name": "analytic", "function": "sphere", "delay_s": 0.5}
    doc = {"name": "k", "engine": {"kind": "ray", "num_workers": 2, "num_cpus": 2},
           "shared": {"problem": problem},
           "trials": [{"name": "g", "method": {"name": "gs", "resolution": 20}}]}  # fmt: skip
    config, out = tmp_path / "k.yaml", tmp_path / "k"
    config.write_text(yaml.safe_dump(doc))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "hpcopt", "run", str(config), "-o", str(out), "-q"]
    driver = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(workers_up(out)) == 2, 120, "the campaign's Ray workers to start")
        (private,) = ray_tmp.glob("hr-*")
        ray_pids = processes_using(private)
        assert {int(e["pid"]) for e in workers_up(out)} <= set(ray_pids)
        assert (private / "ray-token").exists()
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        wait_until(
            lambda: not processes_using(private) and not private.exists(),
            10,
            "the private Ray's processes to end and its folder to go",
        )
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def workers_up(campaign: Path) -> list[dict]:
    return [e for e in read_events(campaign / "events.jsonl") if e["kind"] == "worker_up"]
