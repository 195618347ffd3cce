"""The HDF5 campaign store: every evaluation, the method's checkpoint, status and summary.

Layout of a campaign folder (see the README for every dataset)::

    campaign.h5                 config as written and as validated, version, creation time
    trials/<trial>.h5           consolidated history, latest checkpoint, status, confirmation
    trials/<trial>.journal/     segments appended since the last consolidation:
        00000042.h5             one batch: its evaluations + the method state after it,
                                or (its method done) the trial's confirmation so far
    summary.csv, summary.json   best (and confirmed) result per trial, rewritten at the end

A trial whose problem has a confirmation (``ProblemConfig.confirmation``) re-scores its
best distinct points once its method is done (:mod:`hpcopt.confirm`), into the group
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

Crash safety comes from never modifying a file in place: every file is written under a
temporary name, flushed and fsync'ed, then atomically renamed. A checkpoint is one
segment: the batch's evaluations and the method state written together, so a ``kill -9``
at any instant leaves either the old or the new segment, never half of one. Every
``consolidate_every`` segments they are folded into ``trials/<trial>.h5`` (written the
same way), which records the last segment it holds; readers skip segments at or below it,
so a crash between the rename and the deletion of the folded segments is harmless.
Readers never see a file that is open for writing, so a live dashboard on another node of
a shared filesystem can read while the campaign writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcopt import __version__, plain
from hpcopt.confirm import ConfirmationRecord
from hpcopt.history import STATUS_FAILED, STATUS_OK, STRING_DTYPE, History

__all__ = ["STATUS_FAILED", "STATUS_OK", "CampaignStore", "History", "StoreError", "TrialRecord"]

_SEGMENT = re.compile(r"^(\d{8})\.h5$")
# Some NFS/Lustre mounts refuse HDF5's file locks; our atomic renames make them unneeded.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")


class StoreError(RuntimeError):
    """The campaign folder is missing, not a campaign, or cannot be written."""


@dataclass
class TrialRecord:
    """What the store holds for one trial: status, history, the latest checkpoint and, when
    its problem confirms winners, the confirmation (complete or under way)."""

    name: str
    status: str  # pending | running | completed | failed
    history: History
    method_state: dict[str, Any] | None
    meta: dict[str, Any]
    error: str = ""
    batches: int = 0  # number of checkpointed batches
    confirmation: ConfirmationRecord | None = None

    def best_index(self) -> int | None:
        """Row of the best successful evaluation, by the trial's direction."""
        return self.history.best(self.meta.get("direction", "minimize"))


def _atomic_h5(path: Path, fill) -> None:
    """Write an HDF5 file by ``fill(h5file)`` under a temporary name, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w", locking=False) as f:
            fill(f)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_h5(path: Path):
    return h5py.File(path, "r", locking=False)


class _TornRead(FileNotFoundError):
    """A read that interleaved with a consolidation (``read_trial`` retries it)."""


class CampaignStore:
    """A campaign folder. Create it once with :meth:`create`; open it with :meth:`open`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def campaign_file(self) -> Path:
        return self.root / "campaign.h5"

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
            (store.root / "trials").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {store.root}: {exc.strerror}") from exc

        def fill(f: h5py.File) -> None:
            f.attrs["name"] = name
            f.attrs["hpcopt_version"] = __version__
            f.attrs["created_at"] = time.time()
            f.attrs["format"] = "hpcopt-campaign-1"
            names = [t["name"] for t in trials]
            f.create_dataset("config/document", data=json.dumps(document), dtype=STRING_DTYPE)
            f.create_dataset("config/trials", data=json.dumps(trials), dtype=STRING_DTYPE)
            f.create_dataset("config/trial_names", data=names, dtype=STRING_DTYPE)

        _atomic_h5(store.campaign_file, fill)
        return store

    @classmethod
    def open(cls, root: str | Path) -> CampaignStore:
        """Open an existing campaign folder (``StoreError`` saying what is missing)."""
        store = cls(Path(root))
        if not store.root.is_dir():
            raise StoreError(f"{store.root} does not exist")
        if not store.campaign_file.is_file():
            raise StoreError(f"{store.root} is not a campaign folder (no campaign.h5)")
        return store

    def document(self) -> dict[str, Any]:
        """The campaign config as the user wrote it (before expansion)."""
        with _read_h5(self.campaign_file) as f:
            return json.loads(f["config/document"].asstr()[()])

    def attrs(self) -> dict[str, Any]:
        with _read_h5(self.campaign_file) as f:
            return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}

    def stored_trials(self) -> list[dict[str, Any]]:
        """The expanded, validated trial configs as written at creation."""
        with _read_h5(self.campaign_file) as f:
            return json.loads(f["config/trials"].asstr()[()])

    def trial_names(self) -> list[str]:
        with _read_h5(self.campaign_file) as f:
            return list(f["config/trial_names"].asstr()[()])

    def trial_path(self, name: str) -> Path:
        return self.root / "trials" / f"{name}.h5"

    def journal_path(self, name: str) -> Path:
        return self.root / "trials" / f"{name}.journal"

    def writer(self, name: str, meta: dict[str, Any], consolidate_every: int = 64) -> TrialWriter:
        """A writer for trial ``name``, positioned after whatever it already holds."""
        return TrialWriter(self, name, meta, consolidate_every)

    def read_trial(self, name: str, attempts: int = 5) -> TrialRecord:
        """Everything checkpointed for ``name`` (status ``pending`` if nothing yet).

        Safe while a writer runs: if a consolidation removes segments under our feet, the
        read starts again.
        """
        for attempt in range(attempts - 1):
            try:
                return self._read_trial(name)
            except FileNotFoundError:
                time.sleep(0.01 * (attempt + 1))
        return self._read_trial(name)

    def _read_trial(self, name: str) -> TrialRecord:
        base_meta: dict[str, Any] = {}
        parts: list[History] = []
        state_json = None
        confirmation = None
        status, error, last_seq = "pending", "", 0
        path = self.trial_path(name)
        if path.exists():
            with _read_h5(path) as f:
                base_meta = json.loads(f.attrs["meta"])
                parts.append(History.read(f["history"]))
                status, error = str(f.attrs["status"]), str(f.attrs["error"])
                last_seq = int(f.attrs["last_seq"])
                if "checkpoint/method_state" in f:
                    state_json = f["checkpoint/method_state"].asstr()[()]
                if "confirmation" in f:
                    confirmation = ConfirmationRecord.read(f["confirmation"])
        for seq, seg in self._segments(name, after=last_seq):
            if seq != last_seq + 1:
                # the writer consolidated between our reads: the batches in between are in
                # a trial file we did not read; read again rather than return a gap
                raise _TornRead(f"{name}: segment {seq} follows batch {last_seq}")
            with _read_h5(seg) as f:
                header = json.loads(f.attrs["header"])
                base_meta = header["meta"]  # the newest: it may have gained warnings
                parts.append(History.from_records(f["rows"][()], header))
                status, error = header["status"], header["error"]
                if "method_state" in f:
                    state_json = f["method_state"].asstr()[()]
                if "confirmation" in f:
                    confirmation = ConfirmationRecord.read(f["confirmation"])
            last_seq = seq
        dim = len(base_meta.get("parameters", [])) or (parts[0].x.shape[1] if parts else 0)
        return TrialRecord(
            name=name,
            status=status,
            history=History.concat(parts, dim),
            method_state=plain.loads(state_json) if state_json else None,
            meta=base_meta,
            error=error,
            batches=last_seq,
            confirmation=confirmation,
        )

    def _segments(self, name: str, after: int) -> Iterator[tuple[int, Path]]:
        journal = self.journal_path(name)
        if not journal.is_dir():
            return
        found = []
        for entry in os.scandir(journal):
            m = _SEGMENT.match(entry.name)
            if m and int(m.group(1)) > after:
                found.append((int(m.group(1)), Path(entry.path)))
        yield from sorted(found)

    def summary(self) -> list[dict[str, Any]]:
        """One row per trial: status, evaluations, failures, best value and point; and for
        a trial with a complete confirmation, the confirmed best (``confirmed_*`` keys)."""
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
            rows.append(row)
        return rows

    def export_summary(self) -> list[dict[str, Any]]:
        """Write ``summary.json`` and ``summary.csv`` (atomically) and return the rows."""
        rows = self.summary()
        write_summary(rows, self.root / "summary.csv", self.root / "summary.json")
        return rows


def write_summary(
    rows: list[dict[str, Any]], csv_path: str | Path | None, json_path: str | Path | None
) -> None:
    """Write summary rows as CSV and/or JSON (each atomically) where paths are given."""
    if json_path is not None:
        _atomic_text(Path(json_path), json.dumps(rows, indent=2) + "\n")
    if csv_path is not None:
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        _atomic_text(Path(csv_path), buf.getvalue())


class TrialWriter:
    """Appends checkpoints (one batch of evaluations + the method state) to a trial.

    The writer is the trial's only writer, so it keeps what the trial holds in memory and
    consolidation writes it out without reading the journal back.
    """

    def __init__(
        self, store: CampaignStore, name: str, meta: dict[str, Any], consolidate_every: int
    ) -> None:
        self.store = store
        self.name = name
        self.meta = meta
        self.consolidate_every = max(1, consolidate_every)
        rec = store.read_trial(name)
        self.seq = rec.batches
        self.status, self._error = rec.status, rec.error
        self._state_json = plain.dumps(rec.method_state) if rec.method_state is not None else None
        self._parts = [rec.history]
        self.confirmation = rec.confirmation  # the latest one checkpointed, if any
        self._consolidated_seq = self._read_consolidated_seq()

    def _read_consolidated_seq(self) -> int:
        path = self.store.trial_path(self.name)
        if not path.exists():
            return 0
        with _read_h5(path) as f:
            return int(f.attrs["last_seq"])

    def checkpoint(
        self,
        rows: History,
        method_state: dict[str, Any] | None,
        status: str = "running",
        error: str = "",
        confirmation: ConfirmationRecord | None = None,
    ) -> None:
        """Durably record ``rows`` and the method state after them, as one segment.

        ``method_state=None`` keeps the previous checkpoint's state (a status change);
        ``confirmation=None`` keeps the previous confirmation (or none).
        """
        seq = self.seq + 1
        state_json = plain.dumps(method_state) if method_state is not None else None
        records, strings = rows.to_records()
        header = {"seq": seq, "status": status, "error": error, "meta": self.meta}
        header.update(strings, written_at=time.time())

        def fill(f: h5py.File) -> None:
            f.attrs["header"] = json.dumps(header)
            f.create_dataset("rows", data=records)
            if state_json is not None:
                f.create_dataset("method_state", data=state_json, dtype=STRING_DTYPE)
            if confirmation is not None:
                confirmation.write(f.create_group("confirmation"))

        path = self.store.journal_path(self.name) / f"{seq:08d}.h5"
        _atomic_h5(path, fill)
        self.seq, self.status, self._error = seq, status, error
        self._state_json = state_json or self._state_json
        if confirmation is not None:
            self.confirmation = confirmation
        self._parts.append(rows)
        if seq - self._consolidated_seq >= self.consolidate_every:
            self.consolidate()

    def history(self) -> History:
        """Every evaluation the trial holds: what it held when opened and every checkpoint."""
        history = History.concat(self._parts, len(self.meta.get("parameters", [])))
        self._parts = [history]
        return history

    def consolidate(self) -> None:
        """Fold the journal into ``trials/<name>.h5`` (one dataset per column, as the README
        documents) and delete the folded segments."""
        path = self.store.trial_path(self.name)
        if self.seq == self._consolidated_seq and path.exists():
            return
        history = self.history()
        seq, best = self.seq, history.best(self.meta.get("direction", "minimize"))
        confirmation = self.confirmation

        def fill(f: h5py.File) -> None:
            f.attrs["last_seq"] = seq
            f.attrs["status"] = self.status
            f.attrs["error"] = self._error
            f.attrs["meta"] = json.dumps(self.meta)  # it may have gained warnings
            f.attrs["written_at"] = time.time()
            history.write(f.create_group("history"))
            if self._state_json is not None:
                state = self._state_json
                f.create_dataset("checkpoint/method_state", data=state, dtype=STRING_DTYPE)
            if best is not None:
                f.attrs["best_evaluation"] = best
                f.attrs["best_value"] = history.value[best]
            if confirmation is not None:
                confirmation.write(f.create_group("confirmation"))

        _atomic_h5(path, fill)
        self._consolidated_seq = seq
        for _, seg in self.store._segments(self.name, after=-1):
            if int(seg.stem) <= seq:
                seg.unlink(missing_ok=True)
        if self.status != "running":
            with contextlib.suppress(OSError):
                self.store.journal_path(self.name).rmdir()
