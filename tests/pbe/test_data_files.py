"""A PBE data file is read while the config is validated: a file the trial could not use
refuses the config (exit 2, naming the file and what is wrong) before a campaign folder
exists; a campaign reopened from its store reads it only when its trials start."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from hpcopt import config as cfg
from hpcopt.cli import main
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.problems.pbe import sections
from hpcopt.problems.pbe.data import save_psd
from hpcopt.problems.pbe.problem import simulate
from tests.pbe.test_problem import TRUTH, section

HEADER = "# quantity: Q3\n# size_unit: um\nt,1.0,2.0,4.0\n"
GOOD_ROWS = "0,0.1,0.5,1.0\n60,0.05,0.4,1.0\n"


def write_config(tmp_path: Path, data_path: Path, **changes) -> Path:
    problem = section(synthetic=None, data={"path": str(data_path)}, cost=[["Q3", "MSE"]])
    problem.update(changes)
    doc = {
        "name": "fit",
        "output_dir": str(tmp_path / "fit"),
        "trials": [{"name": "ga", "problem": problem,
                    "method": {"name": "ga", "population": 4, "generations": 1}}],
    }  # fmt: skip
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_refused(tmp_path: Path, config: Path, capsys) -> str:
    """Run ``config``; assert it is refused before anything is written; return stderr."""
    assert main(["run", str(config), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not (tmp_path / "fit").exists()
    return err


BAD_CSV = {
    "malformed": (HEADER + "0,0.1,abc,1.0\n", "line 4, column 3: 'abc' is not a number"),
    "ragged": (HEADER + "0,0.1,0.5\n", "line 4: ragged row with 3 cells, the header has 4"),
    "negative": (HEADER + "0,0.1,-0.5,1.0\n", r"values\[0, 1\] .* = -0.5 is negative"),
    "unsorted sizes": (HEADER.replace("4.0", "1.5") + GOOD_ROWS, "sizes must be strictly incr"),
    "unsorted times": (HEADER + "60,0.1,0.5,1.0\n0,0.1,0.5,1.0\n", "times must not decrease"),
    "not finite": (HEADER + "0,0.1,inf,1.0\n", r"= inf is not finite"),
    "empty": ("", "empty file"),
    "header only": (HEADER, "no data rows after the header"),
    "unknown size unit": (HEADER.replace("um", "furlong") + GOOD_ROWS,
                          r"size_unit 'furlong' is not one of \['m', 'mm', 'nm', 'um'\]"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_a_bad_csv_data_file_refuses_the_run_naming_the_file(tmp_path, capsys, case):
    text, message = BAD_CSV[case]
    data = tmp_path / "psd.csv"
    data.write_text(text)
    err = run_refused(tmp_path, write_config(tmp_path, data), capsys)
    assert f"trials[0].problem.data: {data}: " in err
    assert re.search(message, err), err


def test_a_csv_data_file_that_is_not_text_names_the_byte(tmp_path, capsys):
    data = tmp_path / "psd.csv"
    data.write_bytes(HEADER.encode() + b"0,0.1,0.5,1.0\xff\n")
    err = run_refused(tmp_path, write_config(tmp_path, data), capsys)
    assert f"{data}: not a CSV text file: byte 0xff at offset 58 (line 4) is not UTF-8" in err


def test_a_data_file_that_is_not_hdf5_refuses_the_run(tmp_path, capsys):
    data = tmp_path / "psd.h5"
    data.write_text(HEADER + GOOD_ROWS)
    err = run_refused(tmp_path, write_config(tmp_path, data), capsys)
    assert f"{data}: not a readable HDF5 file" in err


def test_a_data_file_of_another_kind_refuses_the_run(tmp_path, capsys):
    data = tmp_path / "psd.txt"
    data.write_text(HEADER + GOOD_ROWS)
    err = run_refused(tmp_path, write_config(tmp_path, data), capsys)
    assert f"{data}: unknown file extension '.txt'; supported: .csv, .h5, .hdf5" in err


def test_an_hdf5_data_file_without_rows_refuses_the_run(tmp_path, capsys):
    data = tmp_path / "psd.h5"
    with h5py.File(data, "w") as f:
        f["t"], f["x"], f["values"] = np.zeros(0), [1.0, 2.0], np.zeros((0, 2))
        f.attrs["quantity"], f.attrs["size_unit"] = "Q3", "um"
    err = run_refused(tmp_path, write_config(tmp_path, data), capsys)
    assert f"{data}: t must be a non-empty 1-D array, got shape (0,)" in err


def test_a_missing_data_file_refuses_the_run(tmp_path, capsys):
    err = run_refused(tmp_path, write_config(tmp_path, tmp_path / "nothere.csv"), capsys)
    assert f"trials[0].problem.data.path: no such data file: {tmp_path / 'nothere.csv'}" in err


def test_kde_smoothing_of_a_cumulative_data_file_refuses_the_run(tmp_path, capsys):
    data = tmp_path / "psd.csv"
    data.write_text(HEADER + GOOD_ROWS)
    config = write_config(tmp_path, data, smoothing="kde", cost=[["qx", "MSE"]])
    err = run_refused(tmp_path, config, capsys)
    assert "trials[0].problem: smoothing: kde compares densities: give q0 or q3 data" in err


def test_a_start_from_data_that_do_not_start_at_zero_refuses_the_run(tmp_path, capsys):
    data = tmp_path / "psd.csv"
    data.write_text(HEADER + "30,0.1,0.5,1.0\n60,0.05,0.4,1.0\n")
    err = run_refused(tmp_path, write_config(tmp_path, data, initial={"kind": "data"}), capsys)
    assert f"initial.kind: data starts from the data at t = 0, but {data} starts at t = 30 s" in err


def test_a_start_from_data_with_synthetic_data_is_refused():
    problem = section(initial={"kind": "data"})
    doc = {"name": "fit", "trials": [{"name": "ga", "problem": problem,
                                      "method": {"name": "ga"}}]}  # fmt: skip
    with pytest.raises(cfg.ConfigError, match=r"initial\.kind: data starts from measured data at"):
        cfg.parse(doc)


def test_a_data_file_is_read_once_for_every_trial_of_a_sweep(tmp_path, monkeypatch):
    data = tmp_path / "psd.csv"
    data.write_text(HEADER + GOOD_ROWS)
    reads = []
    real = sections.load_psd
    monkeypatch.setattr(sections, "load_psd", lambda *a: reads.append(a) or real(*a))
    problem = section(synthetic=None, data={"path": str(data)}, cost=[["Q3", "MSE"]])
    doc = {"name": "fit", "sweep_groups": [{
        "name": "ga", "base": {"problem": problem, "method": {"name": "ga"}},
        "seeds": [0, 1, 2]}]}  # fmt: skip
    assert len(cfg.parse(doc).trials) == 3
    assert len(reads) == 1


def test_a_data_file_changed_since_it_was_read_is_read_again(tmp_path):
    data = tmp_path / "psd.csv"
    data.write_text(HEADER + GOOD_ROWS)
    first = sections.DataFile(path=str(data)).read()
    data.write_text(HEADER + GOOD_ROWS + "120,0.0,0.3,1.0\n")
    assert len(sections.DataFile(path=str(data)).read().t) == len(first.t) + 1


def test_a_reopened_campaign_reads_its_data_file_only_when_the_trial_starts(tmp_path):
    data = tmp_path / "psd.csv"
    save_psd(data, simulate(section(), TRUTH, [0, 300, 600]).psd("Q3"))
    store = drv.create(cfg.load(write_config(tmp_path, data)))
    data.write_text(HEADER + "0,0.1,-0.5,1.0\n")
    store, campaign = drv.reopen(store.root)
    (outcome,) = drv.run(campaign, store, reporter=reporters.SilentReporter())
    assert outcome.status == "failed"
    assert "is negative" in store.read_trial("ga").error
