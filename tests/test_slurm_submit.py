"""hpcopt submit without a cluster: the rendered sbatch scripts (golden files), flags, errors.

Regenerate the golden files after an intended change with HPCOPT_UPDATE_GOLDEN=1 and
review the diff.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from hpcopt.cli import main
from hpcopt.cluster.slurm import render_sbatch
from hpcopt.config.cluster import ContainerConfig, SlurmConfig

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path("/campaigns/demo")

CASES = {
    "one_cpu_node": SlurmConfig(),
    "two_gpu_nodes": SlurmConfig(
        nodes=2,
        gpus_per_node=4,
        partition="gpu",
        time="24:00:00",
        account="proj",
        qos="high",
        constraint="a100",
        mem="64G",
        cpus_per_task=16,
        setup=["module load cuda/12.4"],
    ),
    "long_preemptible": SlurmConfig(
        nodes=4,
        gpus_per_node=8,
        time="2-00:00:00",
        max_num_timeout=20,
        signal_delay_s=300,
        job_name="coverage-paper",
    ),
    "apptainer_gpu_nodes": SlurmConfig(
        nodes=2,
        gpus_per_node=4,
        container=ContainerConfig(
            runtime="apptainer",
            image="/images/hpcopt-0.1.sif",
            binds=["/scratch/data", "/software:/software:ro"],
        ),
    ),
    "charliecloud": SlurmConfig(
        container=ContainerConfig(
            runtime="charliecloud", image="/var/tmp/hpcopt.sqfs", binds=["/data:/mnt/data"]
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_sbatch_matches_the_recorded_one(case):
    text = render_sbatch(ROOT, CASES[case], "demo").replace(sys.executable, "PYTHON")
    path = GOLDEN / f"{case}.sbatch"
    if os.environ.get("HPCOPT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_time_limits_convert_to_minutes():
    minutes = {t: SlurmConfig(time=t).minutes for t in ("90", "01:30:00", "45:30", "1-02:00")}
    assert minutes == {"90": 90, "01:30:00": 90, "45:30": 46, "1-02:00": 1560}


def config_file(tmp_path, **top):
    doc = {
        "name": "s",
        "output_dir": str(tmp_path / "s"),
        "engine": {"kind": "ray", "num_workers": 2},
        "trials": [{"name": "g", "problem": {"name": "analytic", "function": "sphere"},
                    "method": {"name": "gs", "resolution": 3}}],
        **top,
    }  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_dry_run_prints_the_script_with_flags_over_the_config_and_writes_nothing(tmp_path, capsys):
    path = config_file(tmp_path, slurm={"nodes": 1, "partition": "cpu"})
    assert main(["submit", str(path), "--dry-run", "--nodes", "2", "--gpus-per-node", "2"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in out and "#SBATCH --gpus-per-node=2" in out
    assert "#SBATCH --partition=cpu" in out
    assert not (tmp_path / "s").exists()


def test_submit_refuses_a_campaign_with_the_local_engine(tmp_path, capsys):
    path = config_file(tmp_path, engine={"kind": "local"})
    assert main(["submit", str(path), "--dry-run"]) == 2
    assert "needs 'engine: {kind: ray}'" in capsys.readouterr().err


def test_a_bad_time_flag_is_a_usage_error(tmp_path, capsys):
    assert main(["submit", str(config_file(tmp_path)), "--time", "soon", "--dry-run"]) == 2
    assert "--time: not a Slurm time limit; give MM, MM:SS, HH:MM:SS" in capsys.readouterr().err


def test_a_bad_slurm_key_in_the_config_names_it(tmp_path, capsys):
    path = config_file(tmp_path, slurm={"gpus": 4})
    assert main(["submit", str(path), "--dry-run"]) == 2
    assert (
        "slurm.gpus: unknown key; allowed keys: account, array_per_trial" in capsys.readouterr().err
    )


def test_a_container_needs_an_image_and_absolute_binds():
    with pytest.raises(ValueError, match="runtime 'apptainer' needs 'image'"):
        ContainerConfig(runtime="apptainer")
    with pytest.raises(ValueError, match="must be SRC or SRC:DST"):
        ContainerConfig(runtime="charliecloud", image="/i", binds=["data:/data"])


def test_container_flags_override_the_config(tmp_path, capsys):
    path = config_file(tmp_path)
    argv = ["submit", str(path), "--dry-run", "--container-runtime", "apptainer"]
    assert main([*argv, "--image", "/img/h.sif"]) == 0
    assert "apptainer exec --nv --bind" in capsys.readouterr().out
    assert main(argv) == 2
    assert "needs 'image'" in capsys.readouterr().err
