"""The ``slurm:`` section: Slurm's time forms, and the ``hpcopt submit`` flags that are
derived from the config models."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from hpcopt import config as cfg
from hpcopt.cli import main
from hpcopt.cli.main import _parser
from hpcopt.cli.slurm import _slurm_for, submit_flags
from hpcopt.config.cluster import TIME_FORMS, ContainerConfig, SlurmConfig, time_seconds
from tests.test_slurm_submit import config_file

ACCEPTED = {
    "90": 90 * 60,  # MM
    "45:30": 45 * 60 + 30,  # MM:SS
    "01:30:00": 90 * 60,  # HH:MM:SS
    "1-02": 26 * 3600,  # D-HH
    "1-02:30": 26 * 3600 + 30 * 60,  # D-HH:MM
    "1-02:30:15": 26 * 3600 + 30 * 60 + 15,  # D-HH:MM:SS
    "0-00:00:30": 30,
    "2000": 2000 * 60,  # minutes need not be below 60 when nothing comes before them
}


@pytest.mark.parametrize(("value", "seconds"), sorted(ACCEPTED.items()))
def test_each_slurm_time_form_is_read_in_seconds(value, seconds):
    assert time_seconds(value) == seconds


@pytest.mark.parametrize(
    "value", ["soon", "", "1h", "1.5", "-5", "1-", "1--2", "1:2:3:4", "1-2:3:4:5", " 90", "1:"]
)
def test_a_value_in_no_slurm_form_is_refused_naming_the_forms(value):
    with pytest.raises(ValueError, match=f"not a Slurm time limit; give {re.escape(TIME_FORMS)}"):
        time_seconds(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("90:60", "seconds must be below 60, got 60"),
        ("01:60:00", "minutes must be below 60, got 60"),
        ("1-24", "hours must be below 24, got 24"),
        ("1-02:75", "minutes must be below 60, got 75"),
    ],
)
def test_a_number_too_large_for_its_place_is_refused_naming_the_forms(value, why):
    with pytest.raises(ValueError, match=f"{why}; the forms are {re.escape(TIME_FORMS)}"):
        time_seconds(value)


@pytest.mark.parametrize("value", ["0", "00:00", "0-00:00:00"])
def test_a_zero_limit_is_refused_since_slurm_reads_it_as_none(value):
    with pytest.raises(ValueError, match="give a limit above 0"):
        time_seconds(value)


@pytest.mark.parametrize(
    ("value", "minutes"), [("1-02", 1560), ("1-02:30", 1590), ("2-00:00:01", 2881), ("45:30", 46)]
)
def test_submit_time_flag_reaches_the_script_in_minutes(tmp_path, capsys, value, minutes):
    assert main(["submit", str(config_file(tmp_path)), "--time", value, "--dry-run"]) == 0
    assert f"#SBATCH --time={minutes}\n" in capsys.readouterr().out


def test_a_time_in_no_form_in_the_config_names_its_key(tmp_path, capsys):
    path = config_file(tmp_path, slurm={"time": "1-24"})
    assert main(["submit", str(path), "--dry-run"]) == 2
    assert "slurm.time: hours must be below 24, got 24" in capsys.readouterr().err


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_reads_each_form_as_we_do(slurm, tmp_path):
    """Each accepted form, given to sbatch as it is, becomes the limit we compute."""
    env = {**os.environ, **slurm.env}
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    for value in ACCEPTED:
        seconds = time_seconds(value)
        job = subprocess.run(
            ["sbatch", "--parsable", "--hold", f"--time={value}", f"--chdir={tmp_path}",
             str(script)],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        try:
            shown = subprocess.run(
                ["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True,
                check=True,
            ).stdout  # fmt: skip
        finally:
            subprocess.run(["scancel", job], env=env, check=True)
        limit = re.search(r"\bTimeLimit=(\S+)", shown).group(1)
        # Slurm keeps whole minutes, rounding seconds up
        assert limit == _slurm_shows(-(-seconds // 60) * 60), value


def _slurm_shows(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    h, m, s = rest // 3600, rest % 3600 // 60, rest % 60
    return (f"{days}-" if days else "") + f"{h:02d}:{m:02d}:{s:02d}"


# -- the submit flags come from the models ----------------------------------------------------


FLAGS = {  # the flags the README and the tests use, and the keys they set
    "--nodes": "nodes",
    "--gpus-per-node": "gpus_per_node",
    "--cpus-per-task": "cpus_per_task",
    "--partition": "partition",
    "--time": "time",
    "--account": "account",
    "--qos": "qos",
    "--constraint": "constraint",
    "--mem": "mem",
    "--max-num-timeout": "max_num_timeout",
    "--join-timeout-s": "join_timeout_s",
    "--array-per-trial": "array_per_trial",
    "--container-runtime": "container.runtime",
    "--image": "container.image",
}


def test_submit_flags_keep_their_names_and_take_help_from_the_config_fields():
    flags = {f.flag: f for f in submit_flags()}
    assert {name: f.key for name, f in flags.items()} == FLAGS
    for f in flags.values():
        *section, key = f.key.split(".")
        model = ContainerConfig if section else SlurmConfig
        assert f.help and f.help == model.model_fields[key].description, f.flag
    kinds = {name: f.kind for name, f in flags.items()}
    assert kinds["--nodes"] is int and kinds["--cpus-per-task"] is int
    assert kinds["--join-timeout-s"] is float and kinds["--array-per-trial"] is bool
    assert kinds["--time"] is str and kinds["--container-runtime"] is str


def test_every_submit_flag_overrides_its_key(tmp_path):
    values = {
        "--nodes": "3", "--gpus-per-node": "2", "--cpus-per-task": "4", "--partition": "gpu",
        "--time": "1-02", "--account": "proj", "--qos": "high", "--constraint": "a100",
        "--mem": "64G", "--max-num-timeout": "7", "--join-timeout-s": "12.5",
        "--container-runtime": "apptainer", "--image": "/i.sif",
    }  # fmt: skip
    argv = ["submit", str(config_file(tmp_path)), "--array-per-trial"]
    argv += [word for pair in values.items() for word in pair]
    slurm = _slurm_for(cfg.load(config_file(tmp_path)), _parser().parse_args(argv))
    assert slurm.model_dump(exclude={"setup", "container", "signal_delay_s", "job_name"}) == {
        "nodes": 3, "gpus_per_node": 2, "cpus_per_task": 4, "partition": "gpu", "time": "1-02",
        "account": "proj", "qos": "high", "constraint": "a100", "mem": "64G",
        "max_num_timeout": 7, "join_timeout_s": 12.5, "array_per_trial": True,
    }  # fmt: skip
    assert (slurm.container.runtime, slurm.container.image) == ("apptainer", "/i.sif")


def test_a_bad_flag_value_is_named_by_its_flag(tmp_path, capsys):
    argv = ["submit", str(config_file(tmp_path)), "--dry-run", "--nodes", "0", "--mem", "lots"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--nodes: Input should be greater than or equal to 1 (got 0)" in err
    assert "--mem: must be a whole number" in err
