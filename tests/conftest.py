"""Shared fixtures: a real Ray cluster on this machine, with token authentication."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.slurm_cluster import slurm_fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_home(tmp_path_factory):
    """Ray reads and writes ~/.ray (auth tokens): give the tests a HOME of their own."""
    home = tmp_path_factory.mktemp("home")
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    yield home
    os.environ["HOME"] = saved or ""


def node_env() -> dict[str, str]:
    """Environment for Ray nodes: workers must import the tests' own problems."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="session")
def ray_cluster(ray_home):
    """A one-node Ray cluster with 4 CPUs and 2 declared GPUs, token auth on.

    Yields ``(address, token_file)``.
    """
    from hpcopt.engine.ray_node import new_token_file, short_temp_dir, start_node

    temp = short_temp_dir()
    token = new_token_file(temp)
    head = start_node(
        node_ip="127.0.0.2", num_cpus=4, num_gpus=2, temp_dir=temp / "h", token_file=token,
        env=node_env(),
    )  # fmt: skip
    yield head.address, token
    head.stop(grace_s=5)
    shutil.rmtree(temp, ignore_errors=True)


slurm = pytest.fixture(scope="session", name="slurm")(slurm_fixture)
