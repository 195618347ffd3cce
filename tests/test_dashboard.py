"""The dashboard, summaries and run progress, drawn from real campaign folders.

Frames are rendered with rich's recording console and checked as text.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from hpcopt import config as cfg
from hpcopt.cli import main
from hpcopt.core.evaluation import Evaluation
from hpcopt.dashboard import CampaignView, TrialView, render, snapshot
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.driver.reporters import ProgressReporter
from hpcopt.store.campaign_store import CampaignStore, History
from hpcopt.store.confirm import ConfirmationRecord, format_confirmed
from tests.helpers import evaluations, wait_until
from tests.problems import confirming

ROOT = Path(__file__).resolve().parents[1]
SLOW_GS = {"name": "slow-gs", "method": {"name": "gs", "resolution": 30, "batch_size": 10}}
LATER = {"name": "later", "method": {"name": "gs", "resolution": 3}}
NOISY = {
    "name": "noisy",
    "method": {"name": "gs", "resolution": 5},
    "problem": {
        "name": "custom",
        "target": "tests.problems:NoisyQuadratic",
        "parameters": [{"name": "a", "low": -1, "high": 1}],
        "options": {"noise": 0.5, "confirm_top_k": 2, "confirm_seeds": [1, 2, 3]},
    },
}


def frame(root: Path) -> str:
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render(snapshot(root, slurm=False)))
    return console.export_text()


def trial_cells(text: str, trial: str) -> dict[str, str]:
    """The cells of ``trial``'s row in a frame's trials table, by column name."""
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("┃ trial "))
    columns = [cell.strip() for cell in header.strip("┃").split("┃")]
    row = next(line for line in lines if line.startswith(f"│ {trial} "))
    return dict(zip(columns, (cell.strip() for cell in row.strip("│").split("│")), strict=True))


def write_config(tmp_path: Path, trials: list, delay_s: float = 0.0) -> Path:
    doc = {
        "name": "dash",
        "output_dir": str(tmp_path / "dash"),
        "shared": {"problem": {"name": "analytic", "function": "sphere", "delay_s": delay_s}},
        "trials": trials,
    }
    path = tmp_path / "dash.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start_writer(path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "hpcopt", "run", str(path), "-q"]
    return subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_a_running_campaign_shows_progress_written_by_another_process(tmp_path):
    path = write_config(tmp_path, [SLOW_GS, LATER], delay_s=0.005)
    root = tmp_path / "dash"
    writer = start_writer(path)
    try:
        wait_until(lambda: evaluations(root) >= 100, 60, "100 evaluations", 0.05)
        text = frame(root)
    finally:
        writer.kill()
        writer.wait()
    assert "dash" in text and "running; created" in text
    assert f"pid {writer.pid} on" in text
    running, later = trial_cells(text, "slow-gs"), trial_cells(text, "later")
    assert running["status"] == "running" and running["evaluations"].endswith("/900")
    assert int(running["evaluations"].split("/")[0]) >= 100
    assert later["status"] == "pending" and later["evaluations"] in ("0/9", "0")
    assert "evaluations/s over the last minute" in text
    assert "the driver itself (local engine)" in text


def test_a_finished_campaign_shows_its_budget_spent_and_best_values(tmp_path):
    campaign = cfg.load(write_config(tmp_path, [LATER]))
    drv.run(campaign, drv.create(campaign), reporter=reporters.SilentReporter())
    text = frame(tmp_path / "dash")
    assert "finished; created" in text and "ran for" in text
    cells = trial_cells(text, "later")
    assert cells["status"] == "completed" and cells["evaluations"] == "9/9"
    assert cells["failed"] == "0"
    assert cells["best"] == "0"  # the sphere's minimum is on the 3 x 3 grid
    assert "confirmed" not in text  # no trial confirms its winners: no such column


def test_a_garbled_event_log_line_is_shown_and_later_events_still_count(tmp_path):
    campaign = cfg.load(write_config(tmp_path, [LATER]))
    drv.run(campaign, drv.create(campaign), reporter=reporters.SilentReporter())
    log = tmp_path / "dash" / "events.jsonl"
    later = '{"kind": "worker_up", "worker": "w9", "node": "n1", "time": 1.0}\n'
    log.write_text(log.read_text() + "not an event\n" + later)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the live view must not print Python warnings
        view = snapshot(tmp_path / "dash", slurm=False)
    (message,) = view.garbled_events
    assert "events.jsonl: 1 line(s) are not events" in message
    assert "w9" in view.workers  # the event after the garbled line is read
    assert "event log: " in frame(tmp_path / "dash")


def test_a_failed_trial_and_failed_evaluations_are_listed(tmp_path):
    flaky = {
        "name": "custom",
        "target": "tests.problems:Flaky",
        "parameters": [{"name": "a", "low": -1, "high": 1}, {"name": "b", "low": -1, "high": 1}],
        "options": {"fail_above": 0.5},
    }
    trials = [
        {"name": "flaky", "problem": flaky, "method": {"name": "gs", "resolution": 4}},
        {"name": "broken", "problem": dict(flaky, target="tests.problems:BrokenSetup"),
         "method": {"name": "gs", "resolution": 3}},
    ]  # fmt: skip
    campaign = cfg.load(write_config(tmp_path, trials))
    drv.run(campaign, drv.create(campaign), reporter=reporters.SilentReporter())
    text = frame(tmp_path / "dash")
    assert "finished with failed trials" in text
    assert "latest failures and retries" in text
    assert "is past fail_above" in text  # the Flaky problem's own error text
    assert "FileNotFoundError: measurements.csv not found" in text  # the broken trial's
    store = CampaignStore.open(tmp_path / "dash")
    failed = int((store.read_trial("flaky").history.status == 1).sum())
    assert failed > 0 and trial_cells(text, "flaky")["failed"] == str(failed)
    assert trial_cells(text, "broken")["status"] == "failed"


def test_a_confirmed_trial_shows_its_confirmed_value_and_standard_error(tmp_path):
    campaign = confirming(cfg.load(write_config(tmp_path, [NOISY, LATER])))
    store = drv.create(campaign)
    drv.run(campaign, store, reporter=reporters.SilentReporter())
    text = frame(tmp_path / "dash")
    shown = format_confirmed(*store.read_trial("noisy").confirmation.confirmed())
    assert " ± " in shown and trial_cells(text, "noisy")["confirmed"] == shown
    assert trial_cells(text, "later")["confirmed"] == "-"


def test_a_confirmation_under_way_shows_how_many_variants_are_done(tmp_path):
    campaign = confirming(cfg.load(write_config(tmp_path, [NOISY])))
    store = drv.create(campaign)
    history = History.from_evaluations(np.array([[0.5]]), [Evaluation(value=1.0)], 0, 1)
    confirmation = campaign.trials[0].problem.confirmation()
    record = ConfirmationRecord.start(history, confirmation, "minimize")
    meta = {"trial": "noisy", "direction": "minimize", "parameters": ["a"]}
    writer = store.writer("noisy", meta)
    writer.checkpoint(history, {"step": 1})
    writer.checkpoint(History.empty(1), None, confirmation=record.add_variant([Evaluation(1.2)]))
    assert trial_cells(frame(tmp_path / "dash"), "noisy")["confirmed"] == "1/3 variants"


@pytest.mark.slow
def test_the_dashboard_keeps_reading_while_the_writer_is_killed(tmp_path):
    path = write_config(tmp_path, [SLOW_GS, LATER], delay_s=0.002)
    root = tmp_path / "dash"
    writer = start_writer(path)
    wait_until(lambda: evaluations(root) > 0, 60, "an evaluation", 0.05)
    frames = 0
    killed_at = time.monotonic() + 1.0
    while time.monotonic() < killed_at + 1.0:
        if writer.poll() is None and time.monotonic() > killed_at:
            os.kill(writer.pid, signal.SIGKILL)  # mid-write, most likely
            writer.wait()
        frame(root)
        frames += 1
    text = frame(root)
    assert frames > 5
    assert "stopped (resume with hpcopt resume)" in text
    assert "(gone)" in text  # the driver lock names a dead process


def test_watch_once_prints_a_frame(tmp_path, capsys):
    campaign = cfg.load(write_config(tmp_path, [LATER]))
    drv.run(campaign, drv.create(campaign), reporter=reporters.SilentReporter())
    assert main(["watch", str(tmp_path / "dash"), "--once"]) == 0
    assert "hpcopt campaign" in capsys.readouterr().out
    assert main(["watch", str(tmp_path / "dash"), "--interval", "0"]) == 2


@pytest.mark.slow
def test_watch_refreshes_until_ctrl_c_and_exits_cleanly(tmp_path):
    campaign = cfg.load(write_config(tmp_path, [LATER]))
    drv.run(campaign, drv.create(campaign), reporter=reporters.SilentReporter())
    cmd = [sys.executable, "-m", "hpcopt", "watch", str(tmp_path / "dash"), "--interval", "0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stdout), daemon=True)
    reader.start()
    wait_until(lambda: sum("hpcopt campaign" in x for x in seen) >= 2, 60, "a second frame")
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=20)[1]
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_summary_writes_csv_and_json(tmp_path, capsys):
    campaign = cfg.load(write_config(tmp_path, [LATER]))
    drv.run(campaign, drv.create(campaign), reporter=reporters.SilentReporter())
    root = tmp_path / "dash"
    csv_path, json_path = tmp_path / "out.csv", tmp_path / "out.json"
    assert main(["summary", str(root), "--csv", str(csv_path), "--json", str(json_path)]) == 0
    rows = json.loads(json_path.read_text())
    assert rows == CampaignStore.open(root).summary()
    assert rows[0]["trial"] == "later" and rows[0]["evaluations"] == 9
    assert rows[0]["best_value"] == 0.0 and rows[0]["best.x0"] == rows[0]["best.x1"] == 0.0
    (line,) = csv.DictReader(io.StringIO(csv_path.read_text()))
    assert list(line) == list(rows[0]) and line == {k: str(v) for k, v in rows[0].items()}
    shown = [line.split("│") for line in capsys.readouterr().out.splitlines() if "│" in line]
    assert [cells[0].strip() for cells in shown] == ["later"]  # the show table follows
    (root / "summary.csv").unlink()
    assert main(["summary", str(root)]) == 0
    assert (root / "summary.csv").read_text() == csv_path.read_text()
    assert json.loads((root / "summary.json").read_text()) == rows


def test_run_progress_bars_show_each_trial_and_its_best(tmp_path):
    console = Console(width=120, record=True, force_terminal=True, file=open(os.devnull, "w"))  # noqa: SIM115
    campaign = cfg.load(write_config(tmp_path, [LATER, dict(LATER, name="again")]))
    reporter = ProgressReporter(console=console)
    drv.run(campaign, drv.create(campaign), reporter=reporter)
    reporter.close()
    text = console.export_text()
    assert "later completed" in text and "again completed" in text
    assert "9/9" in text and re.search(r"best 0\s", text)


def test_run_prints_plain_lines_when_its_output_is_not_a_terminal(tmp_path):
    path = write_config(tmp_path, [LATER])
    done = subprocess.run(
        [sys.executable, "-m", "hpcopt", "run", str(path)], capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0
    assert "later: completed after 9 evaluations" in done.stderr
    assert "\x1b[" not in done.stderr  # no terminal escapes in a log file


def test_plain_progress_lines_are_kept_apart_per_trial_in_flight():
    stream = io.StringIO()
    reporter = reporters.LineReporter(stream=stream, every_s=0.2)
    reporter.trial_started("a", 0, 10)
    reporter.trial_started("b", 0, 10)
    time.sleep(0.25)
    for done in (2, 4):  # both trials' batches land within the same period
        reporter.batch_done("a", done, 10, 1.0)
        reporter.batch_done("b", done, 10, 2.0)
    lines = [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines[2:] == ["a: 2/10 evaluations, best 1", "b: 2/10 evaluations, best 2"]


@pytest.mark.slow
@pytest.mark.ray
def test_watch_shows_the_trials_in_flight_on_a_ray_pool(tmp_path, ray_home):
    trials = [{"name": n, "method": {"name": "gs", "resolution": 12, "batch_size": 2}}
              for n in "abcde"]  # fmt: skip
    path = write_config(tmp_path, trials, delay_s=0.05)
    doc = yaml.safe_load(path.read_text())
    doc["engine"] = {"kind": "ray", "num_workers": 2, "num_cpus": 2}
    path.write_text(yaml.safe_dump(doc))
    root = tmp_path / "dash"

    def in_flight() -> list[dict[str, str]]:
        if not (root / "campaign.h5").exists():
            return []
        text = frame(root)
        rows = [trial_cells(text, n) for n in "abcde"]
        return [r for r in rows if r["status"] == "running" and r["evaluations"][0] != "0"]

    writer = start_writer(path)
    try:
        # two trials' batches of two points fill the two workers' queue (see run_trials)
        wait_until(lambda: len(in_flight()) >= 2, 90, "two trials with evaluations", 0.1)
        text = frame(root)
    finally:
        writer.kill()
        writer.wait()
    running = [n for n in "abcde" if trial_cells(text, n)["status"] == "running"]
    assert len(running) >= 2
    assert re.search(rf"trials: {len(running)} running, \d+ pending", text)
    assert "workers     2 alive" in text


def test_throughput_is_unknown_when_every_evaluation_finished_at_one_instant():
    one_batch = TrialView(
        name="t", method="gs", problem="analytic", status="completed", done=3, expected=3,
        failed=0, best=0.0, best_at=5.0, finished_at=np.full(3, 5.0), failures=[],
    )  # fmt: skip
    view = CampaignView(
        name="c", root=Path("."), created_at=0.0, now=10.0, trials=[one_batch], drivers=[],
        jobs={}, engine={"kind": "local"}, workers={},
    )  # fmt: skip
    assert view.throughput() == (None, None)
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render(view))
    assert "- evaluations/s over the last minute, -/s overall" in console.export_text()
