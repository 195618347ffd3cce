import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from hpcopt.core.evaluation import Evaluation
from hpcopt.store import journal
from hpcopt.store.campaign_store import STATUS_FAILED, STATUS_OK, CampaignStore, History, StoreError
from tests.conftest import ROOT

META = {"trial": "t", "method": "gd", "problem": "analytic", "seed": 0,
        "direction": "minimize", "parameters": ["a", "b"]}  # fmt: skip


def make_store(tmp_path):
    return CampaignStore.create(tmp_path / "c", "demo", {"name": "demo"}, [{"name": "t"}])


def batch_rows(seq, n=3):
    x = np.arange(n * 2, dtype=float).reshape(n, 2) + 10 * seq
    evs = [Evaluation(value=float(seq * 10 + i), extras={"p5": 1.5 * i, "pos": [i, 2.0, 3.0]})
           for i in range(n)]  # fmt: skip
    evs[-1] = Evaluation.failed("ValueError: boom")
    evs[-1].worker, evs[-1].node, evs[-1].gpu_ids = "w1", "127.0.0.2", "0,1"
    return History.from_evaluations(x, evs, iteration=seq, batch=seq)


def test_create_refuses_a_folder_that_holds_a_campaign(tmp_path):
    make_store(tmp_path)
    with pytest.raises(StoreError, match=r"already holds a campaign.*hpcopt resume"):
        make_store(tmp_path)


def test_open_names_a_folder_that_is_not_a_campaign(tmp_path):
    with pytest.raises(StoreError, match="not a campaign folder"):
        CampaignStore.open(tmp_path)


def test_unwritten_trial_reads_as_pending(tmp_path):
    rec = make_store(tmp_path).read_trial("t")
    assert rec.status == "pending" and len(rec.history) == 0 and rec.method_state is None


def test_checkpoints_read_back_exactly(tmp_path):
    store = make_store(tmp_path)
    w = store.writer("t", META)
    written = [batch_rows(s) for s in (1, 2)]
    for s, rows in enumerate(written, start=1):
        w.checkpoint(rows, {"step": s, "u": np.full(2, 0.1 * s)})
    rec = store.read_trial("t")
    assert rec.status == "running" and rec.batches == 2
    np.testing.assert_array_equal(rec.history.x, np.concatenate([r.x for r in written]))
    np.testing.assert_array_equal(rec.history.value, np.concatenate([r.value for r in written]))
    assert list(rec.history.status) == [STATUS_OK, STATUS_OK, STATUS_FAILED] * 2
    assert rec.history.error[2] == "ValueError: boom" and rec.history.worker[2] == "w1"
    assert rec.history.node[2] == "127.0.0.2" and rec.history.gpu_ids[2] == "0,1"
    assert rec.history.extras["pos"].shape == (6, 3)
    assert np.isnan(rec.history.extras["p5"][2])
    assert rec.method_state["step"] == 2
    np.testing.assert_array_equal(rec.method_state["u"], [0.2, 0.2])


def test_consolidation_folds_the_journal_without_changing_what_is_read(tmp_path):
    store = make_store(tmp_path)
    w = store.writer("t", META, consolidate_every=3)
    for s in range(1, 8):
        w.checkpoint(batch_rows(s), {"step": s})
    assert store.trial_path("t").exists()
    assert store.read_trial("t").history.node[2] == "127.0.0.2"
    segments = sorted(p.name for p in store.journal_path("t").glob("*.h5"))
    assert segments == ["00000007.h5"]
    rec = store.read_trial("t")
    assert len(rec.history) == 21 and rec.method_state == {"step": 7}
    np.testing.assert_array_equal(rec.history.batch, np.repeat(np.arange(1, 8), 3))


def test_segments_left_behind_by_a_crash_during_consolidation_are_not_read_twice(tmp_path):
    store = make_store(tmp_path)
    w = store.writer("t", META, consolidate_every=100)
    for s in (1, 2):
        w.checkpoint(batch_rows(s), {"step": s})
    saved = tmp_path / "seg"
    shutil.copytree(store.journal_path("t"), saved)
    w.consolidate()
    shutil.copytree(saved, store.journal_path("t"), dirs_exist_ok=True)
    rec = store.read_trial("t")
    assert len(rec.history) == 6 and rec.method_state == {"step": 2}


def test_a_half_written_temporary_file_is_ignored(tmp_path):
    store = make_store(tmp_path)
    store.writer("t", META).checkpoint(batch_rows(1), {"step": 1})
    (store.journal_path("t") / ".00000002.h5.abc.tmp").write_bytes(b"\x89HDF\r\n garbage")
    assert store.read_trial("t").method_state == {"step": 1}


def test_a_new_writer_continues_after_what_the_trial_holds(tmp_path):
    store = make_store(tmp_path)
    store.writer("t", META, consolidate_every=2).checkpoint(batch_rows(1), {"step": 1})
    w = store.writer("t", META, consolidate_every=2)
    w.checkpoint(batch_rows(2), {"step": 2})
    w.checkpoint(batch_rows(3), {"step": 3})
    rec = store.read_trial("t")
    assert rec.batches == 3 and len(rec.history) == 9


def test_summary_export_writes_csv_and_json(tmp_path):
    store = make_store(tmp_path)
    w = store.writer("t", META)
    w.checkpoint(batch_rows(1), {"step": 1})
    w.checkpoint(History.empty(2), None, status="completed")
    rows = store.export_summary()
    assert rows[0]["best_value"] == 10.0 and rows[0]["status"] == "completed"
    assert rows[0]["best.a"] == 10.0 and rows[0]["failed"] == 1
    header = (store.root / "summary.csv").read_text().splitlines()[0]
    assert header.startswith("trial,method,problem,seed,status,evaluations,failed,best_value")
    assert '"best_value": 10.0' in (store.root / "summary.json").read_text()


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from hpcopt.core.evaluation import Evaluation
    from hpcopt.store.campaign_store import CampaignStore, History
    store = CampaignStore.open(sys.argv[1])
    meta = {"trial": "t", "direction": "minimize", "parameters": ["a", "b"]}
    w = store.writer("t", meta, consolidate_every=4)
    s = w.seq
    while True:
        s += 1
        x = np.full((5, 2), float(s))
        rows = History.from_evaluations(x, [Evaluation(value=float(s))] * 5, s, s)
        w.checkpoint(rows, {"step": s, "pad": np.zeros(2000)})
        print(s, flush=True)
    """
)


@pytest.mark.slow
def test_kill_9_at_any_instant_leaves_a_readable_store_with_every_checkpoint(tmp_path):
    store = make_store(tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store.root)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline()  # it has started writing
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        acknowledged = [int(line) for line in proc.stdout.read().split()]
        proc.wait()
        rec = store.read_trial("t")
        steps = rec.method_state["step"]
        # every acknowledged checkpoint is there; the state matches the rows exactly
        assert steps >= (acknowledged[-1] if acknowledged else 1)
        assert len(rec.history) == 5 * steps
        np.testing.assert_array_equal(rec.history.batch, np.repeat(np.arange(1, steps + 1), 5))


def test_a_read_that_interleaves_with_a_consolidation_is_repeated(tmp_path, monkeypatch):
    store = make_store(tmp_path)
    w = store.writer("t", META, consolidate_every=1000)
    for s in (1, 2):
        w.checkpoint(batch_rows(s), {"step": s})
    w.consolidate()  # the trial file holds batches 1-2
    for s in (3, 4):
        w.checkpoint(batch_rows(s), {"step": s})
    listing = journal.list_journal
    raced = []

    def consolidate_between_reads(folder):
        if not raced:  # after the reader read the trial file, before it lists the journal
            raced.append(True)
            w.consolidate()  # batches 3-4 move into the trial file, their segments go
            w.checkpoint(batch_rows(5), {"step": 5})
        return listing(folder)

    monkeypatch.setattr(journal, "list_journal", consolidate_between_reads)
    rec = store.read_trial("t")
    assert rec.batches == 5 and list(rec.history.batch[::3]) == [1, 2, 3, 4, 5]


def test_metadata_that_grows_during_a_trial_is_read_from_the_newest_checkpoint(tmp_path):
    store = CampaignStore.create(tmp_path / "c", "c", {}, [{"name": "t"}])
    meta = {"parameters": ["x0"], "direction": "minimize", "warnings": []}
    writer = store.writer("t", meta, consolidate_every=100)
    x = np.array([[0.5]])
    writer.checkpoint(History.from_evaluations(x, [Evaluation(value=1.0)], 0, 1), {"s": 1})
    writer.meta["warnings"].append("the floor is dark")
    writer.checkpoint(History.from_evaluations(x, [Evaluation(value=2.0)], 1, 2), {"s": 2})
    assert store.read_trial("t").meta["warnings"] == ["the floor is dark"]
    writer.consolidate()
    assert store.read_trial("t").meta["warnings"] == ["the floor is dark"]


def _as_written_by_0_3(root):
    """Strip the checksums and mark the campaign as 0.3 wrote it (format 1)."""
    for path in root.rglob("*.h5"):
        with h5py.File(path, "a") as f:
            del f.attrs["sha256"]
            if path.name == "campaign.h5":
                f.attrs["format"] = "hpcopt-campaign-1"


def test_a_campaign_written_before_checksums_is_read_and_continued(tmp_path):
    store = make_store(tmp_path)
    w = store.writer("t", META, consolidate_every=2)
    for s in (1, 2, 3):
        w.checkpoint(batch_rows(s), {"step": s})
    _as_written_by_0_3(store.root)
    old = CampaignStore.open(store.root)
    w = old.writer("t", META, consolidate_every=2)
    w.checkpoint(batch_rows(4), {"step": 4})
    rec = old.read_trial("t")
    assert rec.batches == 4 and rec.method_state == {"step": 4} and len(rec.history) == 12


def test_a_file_without_its_checksum_is_refused_in_a_campaign_that_has_them(tmp_path):
    store = make_store(tmp_path)
    store.writer("t", META).checkpoint(batch_rows(1), {"step": 1})
    with h5py.File(store.journal_path("t") / "00000001.h5", "a") as f:
        del f.attrs["sha256"]
    assert "has no checksum" in store.read_trial("t").damaged[0]


# HDF5 locks files by default; some NFS and Lustre mounts refuse those locks. Another
# process holding one stands in for such a mount: a campaign must be read and written
# through it, with HDF5_USE_FILE_LOCKING unset, and importing hpcopt must not set it.
NO_HDF5_LOCKS = """
import fcntl, os, subprocess, sys
import h5py, numpy as np
import hpcopt.cli.main
from hpcopt.core.evaluation import Evaluation
from hpcopt.store.campaign_store import CampaignStore, History
assert "HDF5_USE_FILE_LOCKING" not in os.environ, "importing hpcopt set it"
store = CampaignStore.open(sys.argv[1])
path = store.trial_files("t").segment(1)
holder = subprocess.Popen(
    [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'rb'); "
     "fcntl.flock(f, fcntl.LOCK_EX); print(flush=True); sys.stdin.read()", str(path)],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
)
holder.stdout.readline()
try:
    h5py.File(path, "r").close()
    print("HDF5 took no lock")  # then the test proves nothing
except OSError as exc:
    assert "unable to lock file" in str(exc), exc
print(len(store.read_trial("t").history))
rows = History.from_evaluations(np.zeros((1, 2)), [Evaluation(value=1.0)], iteration=2, batch=2)
store.writer("t", {"trial": "t", "parameters": ["a", "b"]}).checkpoint(rows, {"step": 2})
print(store.read_trial("t").batches)
holder.stdin.close()
holder.wait()
"""


def test_a_campaign_is_read_and_written_without_hdf5_file_locks(tmp_path):
    store = make_store(tmp_path)
    store.writer("t", META).checkpoint(batch_rows(1), {"step": 1})
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", NO_HDF5_LOCKS, str(store.root)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "2"]
