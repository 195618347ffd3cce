"""``processes_using`` finds a folder's processes by what Ray's own processes keep of it:
their command line, their environment, their open files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpcopt.engine.ray_node import end_processes_using, processes_using

SLEEP = "import sys, time; sys.stdout.write('up\\n'); sys.stdout.flush(); time.sleep(300)"


@pytest.fixture
def started():
    """Start ``python -c SLEEP`` processes; end them after the test."""
    processes = []

    def start(code: str = SLEEP, env: dict[str, str] | None = None, cwd=None) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", code], env=env, cwd=cwd, stdout=subprocess.PIPE
        )
        processes.append(process)
        assert process.stdout is not None and process.stdout.readline() == b"up\n"
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


def test_a_process_with_the_folder_in_its_environment_uses_it(tmp_path, started):
    # a ray:: process has its title as command line, but the private token path in its env
    process = started(env=dict(os.environ, RAY_AUTH_TOKEN_PATH=str(tmp_path / "ray-token")))
    assert processes_using(tmp_path) == [process.pid]


def test_a_process_with_a_file_open_in_the_folder_uses_it(tmp_path, started):
    # a relative name: the folder is in neither its command line nor its environment
    process = started(f"f = open('worker.out', 'w'); {SLEEP}", cwd=tmp_path)
    assert processes_using(tmp_path) == [process.pid]


def test_a_process_that_does_not_mention_the_folder_is_not_using_it(tmp_path, started):
    started()
    assert processes_using(tmp_path) == []


def test_ending_the_processes_using_a_folder_spares_those_kept(tmp_path, started):
    env = dict(os.environ, RAY_AUTH_TOKEN_PATH=str(tmp_path / "ray-token"))
    ended, kept = started(env=env), started(env=env)
    assert end_processes_using(tmp_path, keep={kept.pid}) == []
    assert ended.wait(timeout=5) == -15 and kept.poll() is None
