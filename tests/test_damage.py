"""A damaged campaign folder: every kind of damage to every kind of file the store writes,
and what ``check``, ``show`` and ``resume`` then do.

The campaign is interrupted after 200 of its 225 batches, so it holds every kind of file:
the trial file (batches 1-128), a pack (129-192) and segments (193-200). Damage after the
last intact checkpoint is set aside and the trial resumes to the uninterrupted result,
bit for bit; any other damage stops ``show`` and ``resume`` with exit 2, a message naming
the file, and nothing changed. No case may raise (a traceback).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from hpcopt import config as cfg
from hpcopt.cli import main
from hpcopt.core.files import digest
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.store.campaign_store import CampaignStore

TRIAL = "g"
DOC = {
    "name": "dmg",
    "trials": [
        {
            "name": TRIAL,
            "problem": {"name": "analytic", "function": "branin"},
            "method": {"name": "gs", "resolution": 15, "batch_size": 1},
        }
    ],
}
STOP_AFTER = 200


class _StopAfter(reporters.SilentReporter):
    def batch_done(self, trial, done, expected, best):
        if done >= STOP_AFTER:
            raise KeyboardInterrupt


def _run(root: Path, reporter) -> None:
    campaign = cfg.parse({**DOC, "output_dir": str(root)})
    with contextlib.suppress(KeyboardInterrupt):  # _StopAfter's way to stop it
        drv.run(campaign, drv.create(campaign), reporter=reporter)


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory):
    """An uninterrupted campaign and one interrupted after 200 batches."""
    base = tmp_path_factory.mktemp("damage")
    _run(base / "whole", reporters.SilentReporter())
    _run(base / "partial", _StopAfter())
    journal = base / "partial" / "trials" / f"{TRIAL}.journal"
    assert (journal / "00000129-00000192.h5").exists() and (journal / "00000200.h5").exists()
    return base


def _trial_file(root: Path) -> Path:
    return root / "trials" / f"{TRIAL}.h5"


def _segment(root: Path, seq: int) -> Path:
    return root / "trials" / f"{TRIAL}.journal" / f"{seq:08d}.h5"


def _pack(root: Path) -> Path:
    return root / "trials" / f"{TRIAL}.journal" / "00000129-00000192.h5"


FILES = {
    "campaign.h5": lambda root: root / "campaign.h5",
    "trial file": _trial_file,
    "pack": _pack,
    "middle segment": lambda root: _segment(root, 196),
    "last segment": lambda root: _segment(root, 200),
}


def _data_offset(path: Path) -> int:
    """Where in the file a byte of a ``value`` column lies (a string of the config, for
    campaign.h5, whose datasets are all strings)."""
    with h5py.File(path, "r") as f:
        if "rows" in f:
            ds = f["rows"]
            return ds.id.get_offset() + ds.dtype.fields["value"][1] + 3
        if "history" in f:
            return f["history/value"].id.get_offset() + 8 * 5 + 3
    raw = path.read_bytes()
    return raw.index(b"branin") + 2


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[_data_offset(path)] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "emptied": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(np.random.default_rng(1).bytes(p.stat().st_size)),
    "bit flipped": _flip_bit,
    "deleted": lambda p: p.unlink(),
}

# What each damage leads to: "recovered" (set aside, resumed to the uninterrupted result),
# "earlier" (a checkpoint that is simply not there yet: resumed, nothing to set aside) or
# "stopped" (exit 2, nothing changed).
OUTCOME = {
    **{("campaign.h5", d): "stopped" for d in DAMAGE},
    **{("trial file", d): "stopped" for d in DAMAGE},
    **{("pack", d): "stopped" for d in DAMAGE},
    **{("middle segment", d): "stopped" for d in DAMAGE},
    **{("last segment", d): "recovered" for d in DAMAGE if d != "deleted"},
    ("last segment", "deleted"): "earlier",
}


def _stray_copy(root: Path) -> None:
    shutil.copy(_segment(root, 195), _segment(root, 201))


def _stray_far_ahead(root: Path) -> None:
    shutil.copy(_segment(root, 200), _segment(root, 250))


def _stray_garbage(root: Path) -> None:
    _segment(root, 201).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(600))


def _last_replaced(root: Path) -> None:
    shutil.copy(_segment(root, 194), _segment(root, 200))


def _middle_replaced(root: Path) -> None:
    shutil.copy(_segment(root, 194), _segment(root, 197))


def _from_another_trial(root: Path) -> None:
    with h5py.File(_segment(root, 200), "a") as f:  # a consistent file, of another trial
        f.attrs["header"] = f.attrs["header"].replace('"trial": "g"', '"trial": "other"')
        f.attrs["sha256"] = digest(f)


OTHER = {
    "stray copy after the last segment": (_stray_copy, "recovered"),
    "stray copy far after the last segment": (_stray_far_ahead, "recovered"),
    "stray garbage segment": (_stray_garbage, "recovered"),
    "last segment replaced by another": (_last_replaced, "recovered"),
    "middle segment replaced by another": (_middle_replaced, "stopped"),
    "last segment from another trial": (_from_another_trial, "recovered"),
}

CASES = [(f"{kind} {how}", kind, how, OUTCOME[kind, how]) for kind in FILES for how in DAMAGE]


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "events.jsonl"
    }


def _history(root: Path):
    return CampaignStore.open(root).read_trial(TRIAL).history


def _damaged_copy(campaigns: Path, tmp_path: Path, damage) -> Path:
    root = tmp_path / "c"
    shutil.copytree(campaigns / "partial", root)
    damage(root)
    return root


def _expect(root: Path, campaigns: Path, outcome: str, named: str, capfd) -> None:
    before = _snapshot(root)
    code = main(["check", str(root)])
    assert code == {"recovered": 1, "earlier": 0, "stopped": 2}[outcome]
    capfd.readouterr()
    shown = main(["show", str(root)])
    err = capfd.readouterr().err
    assert _snapshot(root) == before, "show or check changed the folder"
    if outcome == "stopped":
        assert shown == 2 and named in err
        assert main(["resume", str(root), "-q"]) == 2
        err = capfd.readouterr().err
        assert named in err and "Nothing was changed" in err
        assert _snapshot(root) == before
        return
    assert shown == 0
    assert (named in err) == (outcome == "recovered")
    assert main(["resume", str(root)]) == 0
    err = capfd.readouterr().err
    assert ("set aside" in err and named in err) == (outcome == "recovered")
    whole, resumed = _history(campaigns / "whole"), _history(root)
    for column in ("x", "value", "status", "iteration", "batch"):
        np.testing.assert_array_equal(getattr(resumed, column), getattr(whole, column))
    quarantined = list((root / "quarantine").rglob("*.h5*"))
    assert bool(quarantined) == (outcome == "recovered")
    assert main(["check", str(root)]) == 0


@pytest.mark.parametrize(("kind", "how", "outcome"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_damaged_file(campaigns, tmp_path, capfd, kind, how, outcome):
    root = _damaged_copy(campaigns, tmp_path, lambda root: DAMAGE[how](FILES[kind](root)))
    named = "batch 129" if (kind, how) == ("pack", "deleted") else FILES[kind](root).name
    _expect(root, campaigns, outcome, named, capfd)


@pytest.mark.parametrize("case", list(OTHER))
def test_misplaced_file(campaigns, tmp_path, capfd, case):
    damage, outcome = OTHER[case]
    root = _damaged_copy(campaigns, tmp_path, damage)
    named = "00000197.h5" if outcome == "stopped" else ".h5"
    _expect(root, campaigns, outcome, named, capfd)


def test_a_completed_trial_whose_file_disappeared_is_reported_not_rerun(campaigns, tmp_path, capfd):
    root = tmp_path / "c"
    shutil.copytree(campaigns / "whole", root)
    _trial_file(root).unlink()
    assert main(["resume", str(root), "-q"]) == 2
    err = capfd.readouterr().err
    assert f"{TRIAL}.h5 is missing" in err and "run trial g again from scratch" in err
    assert not _trial_file(root).exists()


def test_a_flipped_bit_is_never_read_as_a_value(campaigns, tmp_path, capfd):
    root = tmp_path / "c"
    shutil.copytree(campaigns / "whole", root)
    _flip_bit(_trial_file(root))
    assert main(["show", str(root), "--json"]) == 2
    out, err = capfd.readouterr()
    assert "checksum does not match" in err and out == ""


def test_check_lists_every_file_and_changes_nothing(campaigns, tmp_path, capfd):
    root = _damaged_copy(campaigns, tmp_path, _stray_garbage)
    before = _snapshot(root)
    assert main(["check", str(root), "--json", "--all"]) == 1
    found = yaml.safe_load(capfd.readouterr().out)
    states = {Path(f["path"]).name: f["severity"] for f in found}
    assert states["campaign.h5"] == "ok" and states[f"{TRIAL}.h5"] == "ok"
    assert states["00000129-00000192.h5"] == "ok" and states["00000201.h5"] == "recoverable"
    assert _snapshot(root) == before


def test_stale_temporary_files_of_dead_writers_are_removed_by_resume(campaigns, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(campaigns / "partial", root)
    journal = root / "trials" / f"{TRIAL}.journal"
    host = socket.gethostname().split(".")[0]
    stale = [journal / ".00000201.h5.host-999999.abcdefgh.tmp",
             root / "trials" / f".{TRIAL}.h5.q7x2k9a1.tmp",
             root / f".summary.csv.{host}-999999.abcdefgh.tmp"]  # fmt: skip
    for path in stale:
        path.write_bytes(b"\x89HDF half a file")
    assert main(["resume", str(root), "-q"]) == 0
    assert not any(path.exists() for path in stale)


def test_the_digest_of_a_file_is_what_version_0_4_wrote(tmp_path):
    # pinned from 0.4.0's item-by-item hashing: files written then must still verify
    path = tmp_path / "pinned.h5"
    with h5py.File(path, "w") as f:
        f.attrs["name"] = "trial"
        f.create_dataset("x", data=np.arange(6.0).reshape(3, 2))
        strings = h5py.string_dtype()
        f.create_dataset("worker", data=np.array(["w1", "", "wörker"], dtype=strings))
        f.create_group("state").create_dataset("error", data=np.array(["boom"] * 2, dtype=strings))
    with h5py.File(path, "r") as f:
        assert digest(f) == "c01ee57cb82a0b42a5643fc457bcb87e61fc7eb6dc43b9ead54a7f5d05833d54"
