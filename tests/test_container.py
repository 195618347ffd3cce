"""The hpcopt image, run by Charliecloud: the tests and the quickstart inside it, and a
Slurm campaign whose driver, Ray head and Ray workers all run in it.

The image is the folder ``HPCOPT_TEST_IMAGE`` names, built by ``containers/build-ci.sh``
(CI builds it fresh from the commit under test). Without it these tests are skipped, and
fail instead when ``HPCOPT_REQUIRE_CONTAINER=1`` (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from hpcopt.cli import main
from hpcopt.store.campaign_store import STATUS_OK, CampaignStore

pytestmark = [pytest.mark.container, pytest.mark.slow]

IMAGE_PYTHON = "/opt/hpcopt/venv/bin/python"


@pytest.fixture(scope="session")
def image() -> Path:
    path = os.environ.get("HPCOPT_TEST_IMAGE")
    why = ""
    if not path:
        why = "HPCOPT_TEST_IMAGE is not set (build an image with containers/build-ci.sh)"
    elif not Path(path, "opt/hpcopt/venv").is_dir():
        why = f"HPCOPT_TEST_IMAGE={path} is not an hpcopt image folder"
    elif not shutil.which("ch-run"):
        why = "ch-run (Debian's charliecloud-runtime) is not installed"
    if why:
        if os.environ.get("HPCOPT_REQUIRE_CONTAINER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return Path(path)


def ch_run(image: Path, *command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, USER=os.environ.get("USER", "root"), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        ["ch-run", "--set-env", str(image), "--", *command],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def test_the_fast_tests_pass_inside_the_image(image):
    done = ch_run(
        image, "bash", "-c",
        "cd /opt/hpcopt/src && python -m pytest -q -p no:cacheprovider "
        "-m 'not slow and not ray and not slurm and not container' "
        "tests/pbe tests/methods tests/test_config.py tests/test_space.py tests/test_store.py",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout


def test_the_quickstart_runs_inside_the_image_with_sionna_on_llvm(image, tmp_path):
    done = ch_run(
        image, "hpcopt", "run", "/opt/hpcopt/src/configs/quickstart.yaml",
        "-o", str(tmp_path / "q"), "-q",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert {row["status"] for row in summary} == {"completed"}


@pytest.mark.slurm
def test_a_slurm_campaign_runs_its_driver_and_ray_inside_the_image(
    image, slurm, ray_home, tmp_path, monkeypatch
):
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("USER", os.environ.get("USER", "root"))
    # inside the image, the driver and the Ray workers import tests.problems from the copy
    monkeypatch.setenv("PYTHONPATH", "/opt/hpcopt/src")
    doc = {
        "name": "c",
        "output_dir": str(tmp_path / "c"),
        "engine": {"kind": "ray", "num_workers": 2, "cpus_per_worker": 1},
        "slurm": {
            "nodes": 2,
            "cpus_per_task": 2,
            "time": "10",
            "container": {"runtime": "charliecloud", "image": str(image), "gpu": False},
        },
        "trials": [
            {
                "name": "gs",
                "problem": {
                    "name": "custom",
                    "target": "tests.problems:WhereAmI",
                    "parameters": [{"name": "a", "low": -1, "high": 1}],
                },
                "method": {"name": "gs", "resolution": 8, "batch_size": 4},
            }
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    root = tmp_path / "c"
    assert main(["submit", str(path)]) == 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        store = CampaignStore.open(root)
        if store.read_trial("gs").status in ("completed", "failed"):
            break
        time.sleep(1)
    log = "\n".join(p.read_text() for p in sorted((root / "slurm").rglob("*_log.out")))
    rec = CampaignStore.open(root).read_trial("gs")
    assert rec.status == "completed", log[-4000:]
    assert (rec.history.status == STATUS_OK).all() and len(rec.history) == 8
    assert (rec.history.extras["in_image"] == 1.0).all()  # every Ray worker
    ranks = [json.loads(p.read_text()) for p in (root / "cluster").rglob("rank-*.json")]
    assert sorted(r["python"] for r in ranks) == [IMAGE_PYTHON] * 2  # driver and Ray nodes
    assert f"python {IMAGE_PYTHON}" in log
