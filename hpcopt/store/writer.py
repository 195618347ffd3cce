"""Appending a trial's checkpoints: segments, folded into packs and the trial file.

See :mod:`hpcopt.store.journal` for the chain of files and why it is folded the way it is.
"""

from __future__ import annotations

import json
import time
from typing import Any

import h5py

from hpcopt.core import plain
from hpcopt.core.files import StoreError, write_bytes, write_h5
from hpcopt.store.confirm import ConfirmationRecord
from hpcopt.store.folder import TrialFiles
from hpcopt.store.history import STRING_DTYPE, History
from hpcopt.store.journal import is_segment, latest, list_journal, read_chain


class TrialWriter:
    """Appends checkpoints (one batch of evaluations + the method state) to a trial.

    The writer is the trial's only writer, so it keeps what the trial holds in memory and
    folds files without reading them back.
    """

    def __init__(self, files: TrialFiles, meta: dict[str, Any], consolidate_every: int) -> None:
        self.files = files
        self.name = files.name
        self.meta = meta
        self.consolidate_every = max(1, consolidate_every)
        chain = read_chain(files)
        if chain.damaged:
            raise StoreError(f"trial {self.name}: set its damaged files aside first")
        last = chain.pieces[-1] if chain.pieces else None
        self.seq = chain.last
        self.status, self._error = (last.status, last.error) if last else ("pending", "")
        self._state_json = latest(chain.pieces, "state_json")
        self.confirmation = latest(chain.pieces, "confirmation")
        self._consolidated = (
            chain.pieces[0].last if chain.pieces and chain.pieces[0].kind == "trial file" else 0
        )
        packs = [p for p in chain.pieces if p.kind != "segment"]
        self._packed = packs[-1].last if packs else 0
        self._parts = [p.history for p in chain.pieces if p.last <= self._packed]
        self._unpacked = [p.history for p in chain.pieces if p.last > self._packed]
        self._started = files.started.exists()

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
        ``confirmation=None`` keeps the previous confirmation (or none). Raises
        ``StoreError`` if the segment cannot be written (the trial holds what it held).
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

        write_h5(self.files.segment(seq), fill)
        if not self._started:
            write_bytes(self.files.started, b"")
            self._started = True
        self.seq, self.status, self._error = seq, status, error
        self._state_json = state_json or self._state_json
        if confirmation is not None:
            self.confirmation = confirmation
        self._unpacked.append(rows)
        if seq - self._packed >= self.consolidate_every:
            self._pack()
            if self._packed - self._consolidated >= max(self._consolidated, 1):
                self.consolidate()

    def history(self) -> History:
        """Every evaluation the trial holds: what it held when opened and every checkpoint."""
        dim = len(self.meta.get("parameters", []))
        packed = History.concat(self._parts, dim)
        self._parts = [packed]
        return History.concat([packed, *self._unpacked], dim)

    def _pack(self) -> None:
        """Fold the segments since the last pack into one pack, then remove them."""
        first, dim = self._packed + 1, len(self.meta.get("parameters", []))
        rows = History.concat(self._unpacked, dim)
        write_h5(self.files.pack(first, self.seq), self._fill(rows, first))
        self._remove(lambda f, last, path: first <= f and last <= self.seq and is_segment(path))
        self._parts.append(rows)
        self._unpacked, self._packed = [], self.seq

    def consolidate(self) -> None:
        """Fold everything into ``trials/<name>.h5`` (one dataset per column, as the README
        documents) and remove the packs and segments it now holds."""
        if self.seq == self._consolidated and self.files.trial_file.exists():
            return
        history = self.history()
        write_h5(self.files.trial_file, self._fill(history, 1))
        self._parts, self._unpacked = [history], []
        self._consolidated = self._packed = seq = self.seq
        self._remove(lambda first, last, path: last <= seq)

    def _fill(self, history: History, first: int):
        seq, status, error, meta = self.seq, self.status, self._error, json.dumps(self.meta)
        state, confirmation = self._state_json, self.confirmation
        best = history.best(self.meta.get("direction", "minimize"))

        def fill(f: h5py.File) -> None:
            f.attrs["first_seq"], f.attrs["last_seq"] = first, seq
            f.attrs["status"], f.attrs["error"] = status, error
            f.attrs["meta"] = meta  # it may have gained warnings
            f.attrs["written_at"] = time.time()
            history.write(f.create_group("history"))
            if state is not None:
                f.create_dataset("checkpoint/method_state", data=state, dtype=STRING_DTYPE)
            if best is not None:
                f.attrs["best_evaluation"] = best
                f.attrs["best_value"] = history.value[best]
            if confirmation is not None:
                confirmation.write(f.create_group("confirmation"))

        return fill

    def _remove(self, covered) -> None:
        """Remove the journal files ``covered(first, last, path)`` says a durable file now
        holds."""
        entries, _ = list_journal(self.files.journal)
        for first, last, path in entries:
            if covered(first, last, path):
                path.unlink(missing_ok=True)
