"""Bad input on the command line: exit 2, a message naming the key, flag or file and what
is allowed, and nothing written (no campaign folder, no export)."""

from __future__ import annotations

import os

import pytest
import yaml

from hpcopt.cli import main

SPHERE = {"name": "analytic", "function": "sphere"}
GS = {"name": "gs", "resolution": 3}


def config(tmp_path, **top):
    """A one-trial campaign config writing to ``tmp_path/c``, with ``top`` merged in."""
    doc = {"name": "c", "output_dir": str(tmp_path / "c"),
           "trials": [{"name": "g", "problem": SPHERE, "method": GS}], **top}  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def refused(argv, capsys) -> str:
    """Run ``hpcopt argv``; assert exit 2 without a traceback; return stderr."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_an_infinite_bound_is_refused_before_the_campaign_folder_exists(tmp_path, capsys):
    problem = {**SPHERE, "bounds": {"x0": [0, float("inf")]}}
    path = config(tmp_path, trials=[{"name": "g", "problem": problem, "method": GS}])
    err = refused(["run", path, "-q"], capsys)
    assert "trials[0].problem.bounds.x0[1]: Input should be a finite number (got inf)" in err
    assert not (tmp_path / "c").exists()


def test_bounds_whose_width_overflows_are_refused(tmp_path, capsys):
    problem = {**SPHERE, "bounds": {"default": [-1e308, 1e308]}}
    path = config(tmp_path, trials=[{"name": "g", "problem": problem, "method": GS}])
    err = refused(["run", path, "-q"], capsys)
    assert "bounds.default: the width high - low of [-1e+308, 1e+308] is beyond the largest" in err
    assert not (tmp_path / "c").exists()


def test_a_grid_key_through_a_value_is_refused(tmp_path, capsys):
    group = {"name": "s", "base": {"problem": {**SPHERE, "function": "rastrigin"}, "method": GS},
             "grid": {"problem.function.x": [1, 2]}}  # fmt: skip
    err = refused(["run", config(tmp_path, trials=[], sweep_groups=[group]), "-q"], capsys)
    assert (
        "sweep_groups[0].grid.problem.function.x: problem.function is a value ('rastrigin'), "
        "not a mapping" in err
    )
    assert not (tmp_path / "c").exists()


def test_an_empty_grid_list_is_refused_naming_it(tmp_path, capsys):
    group = {"name": "s", "base": {"problem": SPHERE, "method": {"name": "ga"}},
             "grid": {"method.population": []}}  # fmt: skip
    err = refused(["run", config(tmp_path, trials=[], sweep_groups=[group]), "-q"], capsys)
    assert "sweep_groups[0].grid.method.population: an empty list makes no trials" in err
    assert "the campaign has no trials" not in err
    assert not (tmp_path / "c").exists()


def test_a_config_that_is_not_utf8_is_refused_naming_the_offset(tmp_path, capsys):
    path = config(tmp_path)
    path.write_bytes(path.read_bytes() + b"# \xff\n")
    err = refused(["run", path, "-q"], capsys)
    assert f"invalid campaign config {path}:" in err
    assert "not UTF-8 text: byte 0xff at offset" in err
    assert not (tmp_path / "c").exists()


def test_trials_given_twice_are_refused_naming_the_lines(tmp_path, capsys):
    path = config(tmp_path)
    path.write_text(path.read_text() + "trials: []\n")
    err = refused(["run", path, "-q"], capsys)
    assert "trials: given 2 times in one mapping, at lines" in err
    assert not (tmp_path / "c").exists()


def test_a_coverage_scene_file_that_does_not_exist_is_refused(tmp_path, capsys):
    scene = tmp_path / "nothere.xml"
    problem = {"name": "coverage", "scene": str(scene), "region": [0, 0, 10, 10]}
    path = config(tmp_path, trials=[{"name": "g", "problem": problem, "method": GS}])
    err = refused(["run", path, "-q"], capsys)
    assert f"trials[0].problem: scene: scene '{scene}': no such file" in err
    assert not (tmp_path / "c").exists()


@pytest.fixture
def campaign(tmp_path):
    """A finished campaign folder without its summary files."""
    assert main(["run", str(config(tmp_path)), "-q"]) == 0
    for name in ("summary.csv", "summary.json"):
        (tmp_path / "c" / name).unlink()
    return tmp_path / "c"


def test_summary_to_a_missing_folder_writes_nothing(campaign, tmp_path, capsys):
    csv, json = tmp_path / "no" / "such" / "x.csv", tmp_path / "x.json"
    err = refused(["summary", campaign, "--json", json, "--csv", csv], capsys)
    assert f"--csv {csv}: the folder {csv.parent} does not exist" in err
    assert not json.exists()


def test_summary_to_a_folder_instead_of_a_file_writes_nothing(campaign, tmp_path, capsys):
    csv = tmp_path / "x.csv"
    err = refused(["summary", campaign, "--csv", csv, "--json", tmp_path], capsys)
    assert f"--json {tmp_path} is a folder; give a file name" in err
    assert not csv.exists()


def test_summary_into_a_read_only_campaign_folder_writes_nothing(campaign, capsys):
    campaign.chmod(0o555)
    try:
        if os.access(campaign, os.W_OK):
            pytest.skip("this user may write anywhere (root with CAP_DAC_OVERRIDE)")
        err = refused(["summary", campaign], capsys)
    finally:
        campaign.chmod(0o755)
    assert f"{campaign / 'summary.csv'}: no permission to write in {campaign}" in err
    assert not (campaign / "summary.json").exists()


def test_plot_into_a_file_is_refused(campaign, tmp_path, capsys):
    out = tmp_path / "c.yaml"
    err = refused(["plot", campaign, "-o", out, "--no-physics"], capsys)
    assert f"-o {out}: {out} is a file, not a folder" in err


def test_pbe_simulate_to_a_missing_folder_is_refused(tmp_path, capsys):
    spec = tmp_path / "pbe.yaml"
    spec.write_text(yaml.safe_dump({"name": "pbe", "grid": {"classes": 10}}))
    out = tmp_path / "no" / "sim.h5"
    err = refused(["pbe", "simulate", spec, "-o", out, "--times", "0,60"], capsys)
    assert f"-o {out}: the folder {out.parent} does not exist" in err


def test_pbe_simulate_to_an_unknown_kind_of_file_is_refused(tmp_path, capsys):
    spec = tmp_path / "pbe.yaml"
    spec.write_text(yaml.safe_dump({"name": "pbe", "grid": {"classes": 10}}))
    err = refused(["pbe", "simulate", spec, "-o", tmp_path / "sim.txt"], capsys)
    assert "unknown file extension '.txt'; give .csv, .h5, .hdf5" in err


RAY = {"kind": "ray", "num_workers": 2}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--time", "01:99:99"], "--time: minutes must be below 60, got 99; the forms are MM, "
                                 "MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (got '01:99:99')"),
        (["--time", "1-24"], "--time: hours must be below 24, got 24"),
        (["--time", "90:60"], "--time: seconds must be below 60, got 60"),
        (["--time", "0"], "--time: give a limit above 0"),
        (["--nodes", "-1"], "--nodes: Input should be greater than or equal to 1 (got -1)"),
        (["--gpus-per-node", "-1"], "--gpus-per-node: Input should be greater than or equal to 0"),
        (["--cpus-per-task", "0"], "--cpus-per-task: Input should be greater than or equal to 1"),
        (["--max-num-timeout", "-1"], "--max-num-timeout: Input should be greater than or equal"),
        (["--join-timeout-s", "nan"], "--join-timeout-s: Input should be a finite number"),
        (["--mem", "64 GB"], "--mem: must be a whole number with an optional unit K, M, G or T"),
        (["--partition", "gpu debug"], "--partition: must be one word without spaces"),
    ],
)  # fmt: skip
def test_a_bad_submit_flag_is_refused_before_the_campaign_folder_exists(
    tmp_path, capsys, flags, message
):
    err = refused(["submit", config(tmp_path, engine=RAY), *flags], capsys)
    assert message in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("limit", ["90", "45:30", "48:00:00", "1-2", "1-02:30", "2-23:59:59"])
def test_every_slurm_time_form_is_accepted(tmp_path, capsys, limit):
    assert main(["submit", str(config(tmp_path, engine=RAY)), "--time", limit, "--dry-run"]) == 0
