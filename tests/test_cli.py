import importlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from hpcopt.cli import main
from hpcopt.store.campaign_store import CampaignStore

SPHERE = {"name": "analytic", "function": "sphere"}


def write_config(tmp_path, trials, name="c"):
    path = tmp_path / f"{name}.yaml"
    doc = {"name": name, "output_dir": str(tmp_path / name), "shared": {"problem": SPHERE}}
    path.write_text(yaml.safe_dump({**doc, "trials": trials}))
    return path


GS = [{"name": "g", "method": {"name": "gs", "resolution": 3}}]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables in ``text``, each a list of its stripped cells."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if "│" in line
    ]


def test_bad_config_exits_2_names_the_key_and_writes_nothing(tmp_path, capsys):
    path = write_config(tmp_path, [{"name": "g", "method": {"name": "gs", "resolution": 1}}])
    assert main(["run", str(path)]) == 2
    assert "trials[0].method.resolution" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_run_refuses_to_overwrite_a_campaign(tmp_path, capsys):
    path = write_config(tmp_path, GS)
    assert main(["run", str(path), "-q"]) == 0
    assert main(["run", str(path), "-q"]) == 2
    assert "already holds a campaign" in capsys.readouterr().err


def test_output_dir_flag_overrides_the_config(tmp_path):
    path = write_config(tmp_path, GS)
    assert main(["run", str(path), "-q", "-o", str(tmp_path / "elsewhere")]) == 0
    assert CampaignStore.open(tmp_path / "elsewhere").read_trial("g").status == "completed"


def test_a_failed_trial_makes_the_exit_status_1(tmp_path):
    broken = {"name": "custom", "target": "tests.problems:BrokenSetup",
              "parameters": [{"name": "a", "low": 0, "high": 1}]}  # fmt: skip
    trials = [{"name": "b", "problem": broken, "method": {"name": "gs", "resolution": 2}}, *GS]
    assert main(["run", str(write_config(tmp_path, trials)), "-q"]) == 1


def test_resume_of_a_folder_that_is_no_campaign_exits_2(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 2
    assert "not a campaign folder" in capsys.readouterr().err


def test_expand_lists_the_trials_without_writing(tmp_path, capsys):
    path = write_config(tmp_path, GS)
    assert main(["expand", str(path)]) == 0
    assert table_rows(capsys.readouterr().out) == [["g", "gs", "analytic (sphere, 2-D)", "0"]]
    assert not (tmp_path / "c").exists()


def test_expand_json_gives_each_trial_config(tmp_path, capsys):
    assert main(["expand", str(write_config(tmp_path, GS)), "--json"]) == 0
    (trial,) = json.loads(capsys.readouterr().out)
    assert trial["method"]["resolution"] == 3 and trial["problem"]["function"] == "sphere"


def test_show_prints_status_and_best_result(tmp_path, capsys):
    path = write_config(tmp_path, GS)
    main(["run", str(path), "-q"])
    capsys.readouterr()
    assert main(["show", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].endswith("·  finished")
    cells = ["g", "gs", "analytic (sphere, 2-D)", "0", "completed", "9", "0", "0", "x0=0, x1=0"]
    assert table_rows(out) == [cells]


def test_show_json_gives_the_summary_rows(tmp_path, capsys):
    main(["run", str(write_config(tmp_path, GS)), "-q"])
    capsys.readouterr()
    main(["show", str(tmp_path / "c"), "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["evaluations"] == 9 and row["best_value"] == 0.0


@pytest.mark.slow
def test_ctrl_c_keeps_the_last_checkpoint_and_resume_finishes(tmp_path):
    problem = dict(SPHERE, delay_s=0.01)
    trials = [{"name": "g", "problem": problem, "method": {"name": "gs", "resolution": 30,
                                                          "batch_size": 10}}]  # fmt: skip
    path = write_config(tmp_path, trials)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcopt", "run", str(path), "-q"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    journal = tmp_path / "c" / "trials" / "g.journal"
    while not (journal.exists() and len(list(journal.glob("*.h5"))) >= 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "hpcopt resume" in err
    rec = CampaignStore.open(tmp_path / "c").read_trial("g")
    assert rec.status == "running" and 30 <= len(rec.history) < 900
    assert main(["resume", str(tmp_path / "c"), "-q"]) == 0
    assert len(CampaignStore.open(tmp_path / "c").read_trial("g").history) == 900


def test_resume_warns_when_the_campaign_was_made_by_another_version(tmp_path, capsys):
    import h5py

    from hpcopt.core.files import digest

    path = write_config(tmp_path, GS)
    assert main(["run", str(path), "-q"]) == 0
    assert main(["resume", str(tmp_path / "c"), "-q"]) == 0
    assert "created with hpcopt" not in capsys.readouterr().err
    with h5py.File(tmp_path / "c" / "campaign.h5", "a") as f:
        f.attrs["hpcopt_version"] = "0.1.0"
        f.attrs["sha256"] = digest(f)  # an edit, not damage: the file stays verifiable
    assert main(["resume", str(tmp_path / "c"), "-q"]) == 0
    assert "created with hpcopt 0.1.0" in capsys.readouterr().err


def test_a_sigterm_is_reported_as_one_when_a_plain_keyboardinterrupt_carries_it(capsys):
    cli = importlib.import_module("hpcopt.cli.main")  # the package exports main() itself
    cli._SIGTERM_SEEN.clear()
    assert cli._interrupted("c", KeyboardInterrupt()) == 130
    cli._SIGTERM_SEEN.set()
    try:
        assert cli._interrupted("c", KeyboardInterrupt()) == 143
    finally:
        cli._SIGTERM_SEEN.clear()
    assert "terminated (SIGTERM)" in capsys.readouterr().err
