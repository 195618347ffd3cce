"""The driver lock, with real processes: exclusive, not fooled by reused pids, breakable."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcopt import config as cfg
from hpcopt.cli import main
from hpcopt.core.processes import boot_id, process_start
from hpcopt.driver import campaign as drv
from hpcopt.store.campaign_store import StoreError
from hpcopt.store.lock import driver_lock, read_drivers
from tests.helpers import fill_disk, tmpfs

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
HERE = socket.gethostname()

# Holds the lock until killed or its stdin ends: a driver, as other processes see it.
HOLDER = """
import sys
from hpcopt.store.lock import driver_lock
with driver_lock(sys.argv[1], sys.argv[2] or None):
    print("held", flush=True)
    sys.stdin.read()
"""

# Waits for a start time and folders on stdin; at start + k * PERIOD_S it tries to take the
# lock of folder k, holds it HOLD_S, and prints "held" or "refused".
RACER = """
import sys, time
from hpcopt.store.lock import driver_lock
from hpcopt.store.campaign_store import StoreError
print("ready", flush=True)
start, *folders = sys.stdin.readline().split()
for k, folder in enumerate(folders):
    at = float(start) + k * PERIOD_S
    while time.time() < at:
        pass
    try:
        with driver_lock(folder):
            time.sleep(HOLD_S)
        print("held", flush=True)
    except StoreError:
        print("refused", flush=True)
"""
PERIOD_S, HOLD_S = 0.3, 0.2


@pytest.fixture
def holders():
    """Start driver processes that hold a lock: ``start(folder, trial="")`` (a trial: the
    lock of a job-array task's driver)."""
    started = []

    def start(folder: Path, trial: str = "") -> subprocess.Popen:
        proc = python(HOLDER, str(folder), trial)
        started.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def sleeper():
    """A running process that has nothing to do with any lock."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def campaign_dir(tmp_path) -> Path:
    doc = {
        "name": "t",
        "output_dir": str(tmp_path / "c"),
        "shared": {"problem": {"name": "analytic", "function": "sphere"}},
        "trials": [{"name": "g", "method": {"name": "gs", "resolution": 3}}],
    }
    return drv.create(cfg.parse(doc)).root


def take(folder: Path) -> None:
    """Take the lock of ``folder`` and leave it again."""
    with driver_lock(folder):
        pass


def python(code: str, *args: str) -> subprocess.Popen:
    """Run ``code`` in a Python process that talks over pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip


def write_lock(folder: Path, record: dict, name: str = "driver") -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record))
    return path


def holder_of(folder: Path, name: str = "driver") -> int:
    return json.loads((folder / f"{name}.json").read_text())["pid"]


def race(folders: list[Path]) -> list[tuple[str, str]]:
    """Two racers try each folder's lock at the same instant; their answers per folder."""
    code = f"PERIOD_S, HOLD_S = {PERIOD_S}, {HOLD_S}\n" + RACER
    racers = [python(code), python(code)]
    try:
        for r in racers:
            assert r.stdout.readline().strip() == "ready"
        line = " ".join([str(time.time() + 0.5), *map(str, folders)]) + "\n"
        for r in racers:
            r.stdin.write(line)
            r.stdin.flush()
        answers = [r.communicate(timeout=60)[0].split() for r in racers]
    finally:
        for r in racers:
            r.kill()
            r.wait()
    assert [r.returncode for r in racers] == [0, 0]
    return list(zip(*answers))


@pytest.mark.slow
def test_two_drivers_started_at_the_same_instant_never_both_hold_the_lock(tmp_path):
    folders = [tmp_path / f"c{k}" for k in range(30)]
    for folder in folders:
        folder.mkdir()
    rounds = race(folders)
    assert len(rounds) == len(folders)
    assert [sorted(r) for r in rounds] == [["held", "refused"]] * len(folders)


@pytest.mark.slow
def test_two_drivers_breaking_the_same_stale_lock_never_both_hold_it(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = {"host": HERE, "pid": dead.pid, "started_at": time.time(), "process_start": 0}
    folders = [tmp_path / f"c{k}" for k in range(20)]
    for folder in folders:
        folder.mkdir()
        write_lock(folder, stale)
    rounds = race(folders)
    assert [sorted(r) for r in rounds] == [["held", "refused"]] * len(folders)


def test_the_lock_of_a_live_driver_is_refused_naming_its_pid(tmp_path, holders):
    holder = holders(tmp_path)
    with pytest.raises(StoreError, match=f"already being run by pid {holder.pid} on {HERE}"):
        take(tmp_path)
    assert os.listdir(tmp_path) == ["driver.json"]


def test_a_lock_left_by_a_killed_driver_is_taken_over(tmp_path, holders):
    holder = holders(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with driver_lock(tmp_path):
        assert holder_of(tmp_path) == os.getpid()
    assert os.listdir(tmp_path) == []


def test_a_lock_whose_pid_now_names_an_unrelated_process_is_taken_over(tmp_path, sleeper):
    record = {"host": HERE, "pid": sleeper.pid, "started_at": time.time() - 5}
    write_lock(tmp_path, {**record, "boot_id": boot_id(), "process_start": 0})
    with driver_lock(tmp_path):
        assert holder_of(tmp_path) == os.getpid()


def test_a_lock_whose_driver_ended_but_was_not_reaped_is_taken_over(tmp_path):
    driver = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(driver.pid)
    os.waitid(os.P_PID, driver.pid, os.WEXITED | os.WNOWAIT)  # ended, left a zombie
    try:
        record = {"host": HERE, "pid": driver.pid, "started_at": time.time() - 5}
        write_lock(tmp_path, {**record, "boot_id": boot_id(), "process_start": start})
        with driver_lock(tmp_path):
            assert holder_of(tmp_path) == os.getpid()
    finally:
        driver.wait()


def test_a_lock_from_before_this_boot_is_taken_over(tmp_path):
    record = {"host": HERE, "pid": os.getpid(), "started_at": time.time() - 5}
    write_lock(tmp_path, {**record, "boot_id": "another-boot"})
    with driver_lock(tmp_path):
        assert holder_of(tmp_path) == os.getpid()


def test_an_old_format_lock_of_a_younger_process_is_taken_over(tmp_path, sleeper):
    write_lock(tmp_path, {"host": HERE, "pid": sleeper.pid, "started_at": time.time() - 3600})
    with driver_lock(tmp_path):
        assert holder_of(tmp_path) == os.getpid()


def test_an_old_format_lock_of_a_running_driver_is_refused(tmp_path, sleeper):
    write_lock(tmp_path, {"host": HERE, "pid": sleeper.pid, "started_at": time.time()})
    with pytest.raises(StoreError, match=f"pid {sleeper.pid}"):
        take(tmp_path)


def test_a_lock_held_on_another_host_is_refused_and_names_unlock(tmp_path):
    write_lock(tmp_path, {"host": "elsewhere.invalid", "pid": 1234, "started_at": time.time()})
    message = r"pid 1234 on elsewhere.invalid .*hpcopt unlock .* --force"
    with pytest.raises(StoreError, match=message):
        take(tmp_path)


def test_a_driver_leaves_a_lock_that_is_no_longer_its_own(tmp_path):
    other = {"host": "elsewhere.invalid", "pid": 1234, "started_at": time.time()}
    with driver_lock(tmp_path):
        write_lock(tmp_path, other)
    assert json.loads((tmp_path / "driver.json").read_text()) == other


def test_read_drivers_lists_every_driver_lock_with_its_liveness(tmp_path, holders):
    live = holders(tmp_path, "a")
    gone = holders(tmp_path, "b")
    gone.kill()
    gone.wait()
    drivers = [(d["pid"], d["host"], d["alive"]) for d in read_drivers(tmp_path)]
    assert drivers == [(live.pid, HERE, True), (gone.pid, HERE, False)]


def test_unlock_without_force_keeps_a_lock_of_another_host_and_exits_2(campaign_dir, capsys):
    path = write_lock(campaign_dir, {"host": "far.invalid", "pid": 7, "started_at": time.time()})
    assert main(["unlock", str(campaign_dir)]) == 2
    assert "on another host" in capsys.readouterr().err and path.exists()


def test_unlock_force_removes_a_lock_of_another_host(campaign_dir, capsys):
    path = write_lock(campaign_dir, {"host": "far.invalid", "pid": 7, "started_at": time.time()})
    assert main(["unlock", str(campaign_dir), "--force"]) == 0
    assert f"removed {path}: pid 7 on far.invalid" in capsys.readouterr().out
    assert not path.exists()


def test_unlock_removes_a_stale_local_lock_without_force(campaign_dir, holders):
    holder = holders(campaign_dir, "g")
    holder.kill()
    holder.wait()
    assert main(["unlock", str(campaign_dir)]) == 0
    assert not (campaign_dir / "driver-g.json").exists()


def test_unlock_never_removes_a_live_local_lock(campaign_dir, holders, capsys):
    holder = holders(campaign_dir)
    assert main(["unlock", str(campaign_dir), "--force"]) == 2
    assert f"pid {holder.pid} on {HERE}" in capsys.readouterr().err
    assert holder_of(campaign_dir) == holder.pid


def test_a_full_disk_gives_a_store_error_and_leaves_no_temporary_file():
    with tmpfs("size=64k") as folder:
        fill_disk(folder)
        with pytest.raises(StoreError, match=r"cannot write .*driver\.json: No space left"):
            take(folder)
        assert os.listdir(folder) == ["filler"]


def test_a_read_only_folder_gives_a_store_error():
    with tmpfs("ro,size=64k") as folder:
        with pytest.raises(StoreError, match=r"cannot write .*driver\.json: Read-only"):
            take(folder)
        assert os.listdir(folder) == []
