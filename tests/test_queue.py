"""What Slurm says about a campaign's jobs, without Slurm: the squeue and sacct parsers on
canned text (as squeue 22.05 prints it), the commands replaced by small scripts on PATH
(failing, hanging, absent), and what ``hpcopt status``/``cancel`` and the dashboard make
of a queue that cannot be asked or a damaged ``slurm.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from hpcopt.cli import main
from hpcopt.cluster import queue
from hpcopt.cluster.queue import QueueError, job_states, parse_sacct, parse_squeue
from hpcopt.core.files import DamagedFile
from hpcopt.dashboard import render, snapshot
from hpcopt.store.jobs import job_ids, jobs_of, record_jobs

# -- parsers --------------------------------------------------------------------------------


def test_squeue_lines_give_state_elapsed_and_reason_or_nodes():
    text = (
        "17|RUNNING|1:02:03|n[1-2]\n"
        "18|PENDING|0:00|(Resources)\n"
        "19|PENDING|0:00|(Nodes required for job are DOWN, DRAINED or reserved for jobs in "
        "higher priority partitions)\n"
        "20|COMPLETING|12:00|n1\n"
    )
    assert parse_squeue(text) == {
        "17": "RUNNING for 1:02:03 (n[1-2])",
        "18": "PENDING for 0:00 (Resources)",
        "19": "PENDING for 0:00 (Nodes required for job are DOWN, DRAINED or reserved for "
        "jobs in higher priority partitions)",
        "20": "COMPLETING for 12:00 (n1)",
    }


def test_squeue_array_tasks_get_one_entry_each_also_while_pending_together():
    text = "2_[0,3-4]|PENDING|0:00|(JobHeldUser)\n2_1|RUNNING|0:05|n1\n5_[0-2%1]|PENDING|0:00|\n"
    assert parse_squeue(text) == {
        "2_0": "PENDING for 0:00 (JobHeldUser)",
        "2_3": "PENDING for 0:00 (JobHeldUser)",
        "2_4": "PENDING for 0:00 (JobHeldUser)",
        "2_1": "RUNNING for 0:05 (n1)",
        "5_0": "PENDING for 0:00",
        "5_1": "PENDING for 0:00",
        "5_2": "PENDING for 0:00",
    }


@pytest.mark.parametrize("text", ["", "\n", "  \n\n"])
def test_empty_squeue_output_knows_no_job(text):
    assert parse_squeue(text) == {}
    assert parse_sacct(text) == {}


def test_sacct_rows_skip_job_steps_and_keep_the_last_row_of_a_requeued_job():
    text = (
        "30|TIMEOUT|00:01:05\n"
        "30.batch|CANCELLED|00:01:06\n"
        "30.extern|COMPLETED|00:01:05\n"
        "30.0|CANCELLED by 0|00:01:05\n"
        "31_4|CANCELLED by 0|00:00:09\n"
        "31_4.batch|CANCELLED|00:00:09\n"
        "32|REQUEUED|00:00:40\n"
        "32|COMPLETED|00:02:00\n"
    )
    assert parse_sacct(text) == {
        "30": "TIMEOUT after 00:01:05",
        "31_4": "CANCELLED by 0 after 00:00:09",
        "32": "COMPLETED after 00:02:00",
    }


# -- the commands, replaced by scripts on PATH ------------------------------------------------

DOWN = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
SQUEUE_DOWN = f"echo '{DOWN}' >&2; exit 1"


@pytest.fixture
def slurm_bin(tmp_path, monkeypatch):
    """A folder that is all of PATH: ``put(name, script)`` makes a fake Slurm command."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))

    def put(name: str, body: str) -> None:
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    return put


def test_states_come_from_squeue_then_sacct_for_jobs_squeue_no_longer_knows(slurm_bin):
    slurm_bin("squeue", "echo '41|RUNNING|0:10|n1'")
    slurm_bin("sacct", "echo '40|TIMEOUT|00:01:00'; echo '40.batch|CANCELLED|00:01:00'")
    assert job_states(["40", "41", "42"]) == {
        "40": "TIMEOUT after 00:01:00",
        "41": "RUNNING for 0:10 (n1)",
        "42": "ended (not in squeue; not in sacct either)",
    }


def test_a_failing_squeue_is_an_error_naming_command_status_and_message(slurm_bin):
    slurm_bin("squeue", SQUEUE_DOWN)
    slurm_bin("sacct", "echo 'sacct must not be asked' >&2; exit 9")
    with pytest.raises(QueueError) as err:
        job_states(["40", "41"])
    assert str(err.value) == (f"`squeue -h -j 40,41 -o '%i|%T|%M|%R'` exited with status 1: {DOWN}")


def test_squeue_that_knows_none_of_the_ids_means_they_ended(slurm_bin):
    # what squeue says once ended jobs have left its memory (MinJobAge)
    slurm_bin("squeue", "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
    slurm_bin("sacct", "echo 'Slurm accounting storage is disabled' >&2; exit 1")
    assert job_states(["40"]) == {
        "40": "ended (not in squeue; no accounting to say how: sacct exited with status 1: "
        "Slurm accounting storage is disabled)"
    }


def test_without_sacct_an_ended_job_says_there_is_no_accounting(slurm_bin):
    slurm_bin("squeue", "echo '41|PENDING|0:00|(Priority)'")
    assert job_states(["40", "41"]) == {
        "40": "ended (not in squeue; no accounting to say how: sacct is not found on PATH: "
        "this machine has no Slurm accounting client)",
        "41": "PENDING for 0:00 (Priority)",
    }


def test_a_missing_squeue_is_an_error_saying_there_is_no_slurm_client(slurm_bin):
    with pytest.raises(QueueError, match="squeue is not found on PATH: this machine has no Slurm"):
        job_states(["40"])


def test_a_hanging_squeue_is_an_error_after_the_timeout(slurm_bin, monkeypatch):
    monkeypatch.setattr(queue, "TIMEOUT_S", 0.3)
    slurm_bin("squeue", "exec /bin/sleep 5")
    with pytest.raises(QueueError, match=r"`squeue -h -j 40 .*` did not answer within 0.3 s"):
        job_states(["40"])


def test_no_ids_asks_nothing(slurm_bin):
    assert job_states([]) == {}


# -- slurm.json ------------------------------------------------------------------------------


def test_job_ids_are_every_submission_s_ids_oldest_first(tmp_path):
    assert job_ids(tmp_path) == []
    record_jobs(tmp_path, ["7"])
    record_jobs(tmp_path, ["9_0", "9_1"])
    assert job_ids(tmp_path) == ["7", "9_0", "9_1"]
    assert [s["job_ids"] for s in jobs_of(tmp_path)] == [["7"], ["9_0", "9_1"]]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('[{"submitted_at": 1, "job_ids": ["7"]', "not JSON"),
        ('{"job_ids": ["7"]}', "holds a dict"),
        ('[{"submitted_at": 1, "jobs": ["7"]}]', 'submission 0 is {"submitted_at": 1, "jobs"'),
        ('[{"submitted_at": 1, "job_ids": [7]}]', "submission 0 is"),
        ('[{"submitted_at": 1, "job_ids": ["7"]}, 3]', "submission 1 is 3"),
    ],
)
def test_a_damaged_slurm_json_is_an_error_naming_the_file_and_what_is_wrong(tmp_path, text, why):
    (tmp_path / "slurm.json").write_text(text)
    with pytest.raises(DamagedFile) as err:
        job_ids(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'slurm.json'}: ")
    assert why in str(err.value) and '"job_ids": ["123", ...]' in str(err.value)


# -- hpcopt status / cancel and the dashboard --------------------------------------------------


@pytest.fixture
def campaign(tmp_path):
    """A small finished campaign folder that records one submitted job, 40."""
    doc = {
        "name": "q",
        "output_dir": str(tmp_path / "q"),
        "trials": [{"name": "g", "problem": {"name": "analytic", "function": "sphere"},
                    "method": {"name": "gs", "resolution": 3}}],
    }  # fmt: skip
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["run", str(path), "-q"]) == 0
    root = tmp_path / "q"
    record_jobs(root, ["40"])
    return root


def test_cancel_when_squeue_fails_exits_2_and_never_says_nothing_to_cancel(
    campaign, slurm_bin, capsys
):
    slurm_bin("squeue", SQUEUE_DOWN)
    slurm_bin("scancel", "echo cancelled >> scancel.log")
    assert main(["cancel", str(campaign)]) == 2
    out, err = capsys.readouterr()
    assert "Unable to contact slurm controller" in err and "exited with status 1" in err
    assert "cancel" not in out and "Traceback" not in err


def test_cancel_cancels_only_live_jobs(campaign, slurm_bin, capsys, tmp_path):
    record_jobs(campaign, ["41", "42"])
    slurm_bin("squeue", "echo '41|RUNNING|0:10|n1'; echo '42|COMPLETING|0:10|n1'")
    slurm_bin("scancel", f'echo "$@" > {tmp_path}/scancel.args')
    assert main(["cancel", str(campaign)]) == 0
    assert (tmp_path / "scancel.args").read_text().split() == ["41"]
    assert "cancelled job 41" in capsys.readouterr().out


def test_status_when_squeue_fails_shows_progress_then_exits_2_with_the_reason(
    campaign, slurm_bin, capsys
):
    slurm_bin("squeue", SQUEUE_DOWN)
    assert main(["status", str(campaign)]) == 2
    out, err = capsys.readouterr()
    assert "completed" in out and "slurm job" not in out
    assert "hpcopt: cannot tell the state of job 40: `squeue" in err
    assert "Unable to contact slurm controller" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["status", "cancel"])
def test_status_and_cancel_refuse_a_damaged_slurm_json_with_status_2(
    campaign, slurm_bin, capsys, command
):
    (campaign / "slurm.json").write_text("{}")
    assert main([command, str(campaign)]) == 2
    err = capsys.readouterr().err
    assert f"hpcopt: {campaign / 'slurm.json'}: holds a dict" in err and "Traceback" not in err


def frame(root: Path) -> str:
    console = Console(width=300, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render(snapshot(root)))
    return console.export_text()


def test_the_dashboard_says_when_there_is_no_slurm_client(campaign, slurm_bin):
    text = frame(campaign)
    assert "slurm: cannot ask about job 40: squeue is not found on PATH: this machine has no " in (
        text
    )


def test_the_dashboard_says_why_squeue_could_not_be_asked(campaign, slurm_bin):
    slurm_bin("squeue", SQUEUE_DOWN)
    view = snapshot(campaign)
    assert view.jobs == {} and "Unable to contact slurm controller" in view.jobs_unknown
    assert "slurm: cannot ask about job 40: `squeue -h -j 40" in frame(campaign)


def test_the_dashboard_shows_job_states_when_squeue_answers(campaign, slurm_bin):
    slurm_bin("squeue", "echo '40|RUNNING|0:10|n1'")
    assert "slurm: job 40: RUNNING for 0:10 (n1)" in frame(campaign)


def test_the_dashboard_names_a_damaged_slurm_json(campaign, slurm_bin):
    (campaign / "slurm.json").write_text(json.dumps([{"job_ids": ["40"]}]))
    assert f"slurm: {campaign / 'slurm.json'}: submission 0 is" in frame(campaign)
