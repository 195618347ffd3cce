"""The HDF5 campaign store: every evaluation, the method's checkpoint, status and summary.

The files of a campaign folder, and who writes each when: :mod:`hpcopt.store.folder`; the
datasets of each: the README.

A trial whose problem has a confirmation (``ProblemConfig.confirmation``) re-scores its
best distinct points once its method is done (:mod:`hpcopt.store.confirm`), into the group
``confirmation`` of the trial file and of the segments written meanwhile (the latest holds
all so far); ``k`` candidates, ``j`` variants evaluated so far (``len(problems)`` at the end)::

    confirmation/      attrs: direction, top_k, problems (JSON: each variant's config), and
                       best (the candidate with the best mean) once complete
        evaluation     (k,) int64: the candidates' rows in history, best raw value first
        x, raw_value   (k, d), (k,) float64: their points (natural units) and history values
        variant_value  (k, j) float64: column j by variant problems[j], NaN where it failed
        variant_error  (k, j) str: why it failed (empty when ok)
        mean, standard_error, n   (k,): over the successful variant values; SE is their
                       std (ddof=1) over sqrt(n), NaN when n < 2

Crash safety comes from never modifying a file in place (:mod:`hpcopt.core.files`): every file
is written under a temporary name, checksummed, fsync'ed and atomically renamed. A
checkpoint is one segment, so a ``kill -9`` at any instant leaves either the old or the new
segment, never half of one. Readers never see a file that is open for writing, so a live
dashboard on another node of a shared filesystem can read while the campaign writes, and
every file is verified against its checksum when read.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcopt import __version__
from hpcopt.core import plain
from hpcopt.core.files import DamagedFile, StoreError, open_verified, stale_temporaries, write_h5
from hpcopt.core.files import write_text as _write_text
from hpcopt.store.confirm import ConfirmationRecord
from hpcopt.store.folder import CampaignFolder, TrialFiles
from hpcopt.store.history import STATUS_FAILED, STATUS_OK, STRING_DTYPE, History
from hpcopt.store.journal import Chain, TornRead, latest, read_chain, set_aside
from hpcopt.store.writer import TrialWriter

__all__ = [
    "STATUS_FAILED",
    "STATUS_OK",
    "CampaignStore",
    "Finding",
    "History",
    "StoreError",
    "TrialRecord",
    "TrialWriter",
]

FORMAT = "hpcopt-campaign-2"  # 2: every file carries a checksum; packs in the journal


@dataclass
class TrialRecord:
    """What the store holds for one trial: status, history, the latest checkpoint and, when
    its problem confirms winners, the confirmation (complete or under way); ``damaged``
    says which files after the last intact checkpoint are damaged (``resume`` sets them
    aside and continues from that checkpoint)."""

    name: str
    status: str  # pending | running | completed | failed
    history: History
    method_state: dict[str, Any] | None
    meta: dict[str, Any]
    error: str = ""
    batches: int = 0  # number of checkpointed batches
    confirmation: ConfirmationRecord | None = None
    damaged: list[str] = field(default_factory=list)

    def best_index(self) -> int | None:
        """Row of the best successful evaluation, by the trial's direction."""
        return self.history.best(self.meta.get("direction", "minimize"))


@dataclass
class Finding:
    """One thing ``hpcopt check`` found: ``severity`` is ``ok``, ``note`` (harmless:
    leftovers resume removes, files set aside earlier), ``recoverable`` (resume sets the
    file aside and continues from the checkpoint before it) or ``damaged`` (resume and
    show stop until the user acts)."""

    path: str
    severity: str
    message: str


class CampaignStore:
    """A campaign folder. Create it once with :meth:`create`; open it with :meth:`open`."""

    def __init__(self, root: Path) -> None:
        self.folder = CampaignFolder(root)
        self.root = self.folder.root
        self._campaign: dict[str, Any] | None = None

    @property
    def campaign_file(self) -> Path:
        return self.folder.campaign_file

    @property
    def quarantine(self) -> Path:
        return self.folder.quarantine

    @classmethod
    def create(
        cls, root: str | Path, name: str, document: dict[str, Any], trials: list[dict]
    ) -> CampaignStore:
        """Make a new campaign folder holding the config (``StoreError`` if one exists)."""
        store = cls(Path(root))
        if store.campaign_file.exists():
            raise StoreError(
                f"{store.root} already holds a campaign; continue it with "
                f"'hpcopt resume {store.root}', or choose another output_dir"
            )
        try:
            store.folder.trials.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {store.root}: {exc.strerror}") from exc
        for path in stale_temporaries(store.root):
            path.unlink(missing_ok=True)

        def fill(f: h5py.File) -> None:
            f.attrs["name"] = name
            f.attrs["hpcopt_version"] = __version__
            f.attrs["created_at"] = time.time()
            f.attrs["format"] = FORMAT
            names = [t["name"] for t in trials]
            f.create_dataset("config/document", data=json.dumps(document), dtype=STRING_DTYPE)
            f.create_dataset("config/trials", data=json.dumps(trials), dtype=STRING_DTYPE)
            f.create_dataset("config/trial_names", data=names, dtype=STRING_DTYPE)

        write_h5(store.campaign_file, fill)
        return store

    @classmethod
    def open(cls, root: str | Path) -> CampaignStore:
        """Open an existing campaign folder, reading and verifying ``campaign.h5``
        (``StoreError`` saying what is missing or damaged and what to do)."""
        store = cls(Path(root))
        if not store.root.is_dir():
            raise StoreError(f"{store.root} does not exist")
        if not store.campaign_file.is_file():
            if store.folder.trials.is_dir():
                raise StoreError(
                    f"{store.campaign_file} is missing, though {store.folder.trials} holds "
                    "trial files: it held the campaign's config, without which they cannot be "
                    "resumed; restore it from a backup, or run the config again into a new "
                    "folder ('hpcopt run CONFIG -o NEWDIR'). Nothing was changed."
                )
            raise StoreError(f"{store.root} is not a campaign folder (no campaign.h5)")
        store._read_campaign()
        return store

    def _read_campaign(self) -> dict[str, Any]:
        if self._campaign is None:
            try:
                with open_verified(self.campaign_file, require_digest=False) as f:
                    attrs = {
                        k: (v.item() if isinstance(v, np.generic) else v)
                        for k, v in f.attrs.items()
                    }
                    if "sha256" not in attrs and attrs.get("format") != "hpcopt-campaign-1":
                        raise DamagedFile(self.campaign_file, "it has no checksum")
                    self._campaign = {
                        "attrs": attrs,
                        "document": json.loads(f["config/document"].asstr()[()]),
                        "trials": json.loads(f["config/trials"].asstr()[()]),
                        "names": list(f["config/trial_names"].asstr()[()]),
                    }
            except DamagedFile as exc:
                raise StoreError(
                    f"{exc.path} is damaged: {exc.why}. It holds the campaign's config, "
                    "without which its trials can be neither shown nor resumed: restore it "
                    "from a backup, or run the config again into a new folder ('hpcopt run "
                    "CONFIG -o NEWDIR'). Nothing was changed."
                ) from None
            except FileNotFoundError:
                raise StoreError(f"{self.root} is not a campaign folder (no campaign.h5)") from None
        return self._campaign

    def document(self) -> dict[str, Any]:
        """The campaign config as the user wrote it (before expansion)."""
        return self._read_campaign()["document"]

    def attrs(self) -> dict[str, Any]:
        """``campaign.h5``'s attributes: name, hpcopt_version, created_at, format."""
        return {k: v for k, v in self._read_campaign()["attrs"].items() if k != "sha256"}

    def stored_trials(self) -> list[dict[str, Any]]:
        """The expanded, validated trial configs as written at creation."""
        return self._read_campaign()["trials"]

    def trial_names(self) -> list[str]:
        return list(self._read_campaign()["names"])

    def trial_path(self, name: str) -> Path:
        return self.folder.trial_files(name).trial_file

    def journal_path(self, name: str) -> Path:
        return self.folder.trial_files(name).journal

    def trial_files(self, name: str) -> TrialFiles:
        """Where trial ``name``'s files live, and whether they must carry checksums."""
        checksums = self._read_campaign()["attrs"].get("format") != "hpcopt-campaign-1"
        return self.folder.trial_files(name, checksums)

    def writer(self, name: str, meta: dict[str, Any], consolidate_every: int = 64) -> TrialWriter:
        """A writer for trial ``name``, positioned after whatever it already holds."""
        return TrialWriter(self.trial_files(name), meta, consolidate_every)

    def read_trial(self, name: str, attempts: int = 5) -> TrialRecord:
        """Everything checkpointed for ``name`` (status ``pending`` if nothing yet).

        Safe while a writer runs: if it folds files under our feet, the read starts again.
        Damage after the last intact checkpoint is listed in ``damaged``; damage that
        cannot be recovered raises ``StoreError``.
        """
        return _record(name, self._chain(name, attempts))

    def _chain(self, name: str, attempts: int = 5) -> Chain:
        files = self.trial_files(name)
        for attempt in range(attempts - 1):
            try:
                return read_chain(files, final=False)
            except FileNotFoundError:
                time.sleep(0.01 * (attempt + 1))
        try:
            return read_chain(files, final=True)
        except TornRead as exc:  # pragma: no cover - a writer faster than five reads
            raise StoreError(f"{exc}: the journal kept changing while it was read") from None

    def recover(self, name: str) -> tuple[TrialRecord, list[str]]:
        """Make trial ``name`` resumable (its driver calls this, holding the lock): set
        aside damage after its last intact checkpoint into ``quarantine/``, remove files a
        later one covers and temporary files of dead writers. Returns what the trial holds
        then, and what was set aside."""
        chain = self._chain(name)
        chain.temporaries += _trial_temporaries(self.folder.trials, name)
        said = set_aside(chain, self.root, self.quarantine)
        chain.damaged = []
        return _record(name, chain), said

    def remove_stale_temporaries(self) -> None:
        """Remove the temporary files that writers on this host left when they died (a
        driver holding the campaign's lock calls this; trials' own go in :meth:`recover`)."""
        for folder in (self.root, self.folder.trials):
            for path in stale_temporaries(folder):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot remove {path}: {exc.strerror}") from exc

    def check(self) -> list[Finding]:
        """Verify every file of the campaign (read-only): what is intact, what resume would
        set aside or remove, and what stops it."""
        try:
            self._read_campaign()
        except StoreError as exc:
            return [Finding(str(self.campaign_file), "damaged", str(exc))]
        found = [Finding(str(self.campaign_file), "ok", "config intact")]
        for name in self.trial_names():
            found += self._check_trial(name)
        for folder in (self.root, self.folder.trials):
            for path in stale_temporaries(folder):
                found.append(
                    Finding(str(path), "note", "temporary file of a dead writer; resume removes it")
                )
        if self.quarantine.is_dir():
            for path in sorted(p for p in self.quarantine.rglob("*") if p.is_file()):
                found.append(Finding(str(path), "note", "set aside earlier (kept for you)"))
        return found

    def _check_trial(self, name: str) -> list[Finding]:
        try:
            chain = self._chain(name)
        except StoreError as exc:
            return [Finding(str(self.trial_path(name)), "damaged", str(exc))]
        found = [
            Finding(str(p.path), "ok", f"{p.kind}, batches {p.first}-{p.last}")
            for p in chain.pieces
        ]
        if not chain.pieces:
            found.append(Finding(str(self.trial_path(name)), "ok", "not started"))
        for exc in chain.damaged:
            found.append(
                Finding(
                    str(exc.path),
                    "recoverable",
                    f"{exc.why}; resume sets it aside and continues trial "
                    f"{name} from batch {chain.last}",
                )
            )
        for path in chain.obsolete:
            found.append(Finding(str(path), "note", "folded into a later file; resume removes it"))
        temporaries = chain.temporaries + _trial_temporaries(self.folder.trials, name)
        for path in temporaries:
            found.append(
                Finding(str(path), "note", "temporary file of a dead writer; resume removes it")
            )
        return found

    def summary(self) -> list[dict[str, Any]]:
        """One row per trial: status, evaluations, failures, best value and point; for a
        trial with a complete confirmation, the confirmed best (``confirmed_*`` keys); for
        one with damage after its last intact checkpoint, ``damaged`` (what and where)."""
        rows = []
        for name in self.trial_names():
            rec = self.read_trial(name)
            h = rec.history
            best = rec.best_index()
            row: dict[str, Any] = {
                "trial": name,
                "method": rec.meta.get("method", ""),
                "problem": rec.meta.get("problem", ""),
                "seed": rec.meta.get("seed", ""),
                "status": rec.status,
                "evaluations": len(h),
                "failed": int(np.sum(h.status == STATUS_FAILED)),
                "best_value": float(h.value[best]) if best is not None else None,
                "best_evaluation": best,
                "wall_time_s": float(h.wall_time_s.sum()),
                "error": rec.error,
            }
            for pname, v in zip(
                rec.meta.get("parameters", []), h.x[best] if best is not None else []
            ):
                row[f"best.{pname}"] = float(v)
            if rec.confirmation is not None:
                row.update(rec.confirmation.summary(rec.meta.get("parameters", [])))
            if rec.damaged:
                row["damaged"] = "; ".join(rec.damaged)
            rows.append(row)
        return rows

    def export_summary(self) -> list[dict[str, Any]]:
        """Write ``summary.json`` and ``summary.csv`` (atomically) and return the rows."""
        rows = self.summary()
        write_summary(rows, self.folder.summary_csv, self.folder.summary_json)
        return rows


def _trial_temporaries(trials: Path, name: str) -> list[Path]:
    """Temporary files of trial ``name``'s trial file (its driver is their only writer)."""
    own = re.compile(rf"^\.{re.escape(name)}\.h5\.([^.]+\.)?[^.]+\.tmp$")
    return [p for p in stale_temporaries(trials, mine_only_if_dead=False) if own.match(p.name)]


def _record(name: str, chain: Chain) -> TrialRecord:
    pieces = chain.pieces
    meta = pieces[-1].meta if pieces else {}  # the newest: it may have gained warnings
    state_json = latest(pieces, "state_json")
    dim = len(meta.get("parameters", [])) or (pieces[0].history.x.shape[1] if pieces else 0)
    damaged = [
        f"{exc.path}: {exc.why}; resume sets it aside and continues from batch {chain.last}"
        for exc in chain.damaged
    ]
    return TrialRecord(
        name=name,
        status=pieces[-1].status if pieces else "pending",
        history=History.concat([p.history for p in pieces], dim),
        method_state=plain.loads(state_json) if state_json else None,
        meta=meta,
        error=pieces[-1].error if pieces else "",
        batches=chain.last,
        confirmation=latest(pieces, "confirmation"),
        damaged=damaged,
    )


def write_summary(
    rows: list[dict[str, Any]], csv_path: str | Path | None, json_path: str | Path | None
) -> None:
    """Write summary rows as CSV and/or JSON (each atomically) where paths are given."""
    if json_path is not None:
        _write_text(Path(json_path), json.dumps(rows, indent=2) + "\n")
    if csv_path is not None:
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        _write_text(Path(csv_path), buf.getvalue())
