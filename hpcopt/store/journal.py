"""A trial's checkpoints on disk: the chain of files that holds them, read and written.

A trial's batches are numbered 1, 2, ... (``seq``); every batch is in exactly one file of
the chain, and the chain has no gap: the trial file holds batches ``1..last_seq``, each
pack of its journal a run of batches after them, each segment one batch (their names and
places: :mod:`hpcopt.store.folder`).

After every batch the writer adds a segment. Every ``consolidate_every`` segments it
folds them into one pack, and when the packs hold as many batches as the trial file, it
rewrites the trial file with everything (and once more when the trial ends). Every batch
is thus written about five times over a campaign however long it runs — O(n) bytes, where
rewriting the whole history every 64 batches wrote O(n^2).

A file is replaced or removed only after the file that supersedes it is durable, so a crash
at any instant leaves a complete chain, perhaps with leftovers that a later file covers
(ignored, removed by the next writer). Damage found when reading (see
:mod:`hpcopt.core.files`) is recoverable only after the last intact checkpoint: files there
are set aside into ``quarantine/`` and the trial continues from that checkpoint. Anything
else — a damaged trial file or pack, a missing or damaged batch with intact ones after it,
a trial file that disappeared — stops with a :class:`StoreError` naming the file, what is
wrong and what the user can do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from hpcopt.core.files import DamagedFile, StoreError, open_verified, stale_temporaries
from hpcopt.store.confirm import ConfirmationRecord
from hpcopt.store.folder import TrialFiles, journal_batches
from hpcopt.store.history import History


class TornRead(FileNotFoundError):
    """A read that interleaved with the writer's folding of files (read again)."""


@dataclass
class Piece:
    """What one file of the chain holds: batches ``first..last`` and the trial after them.

    ``state_json``/``confirmation`` are None where the file leaves them as they were."""

    first: int
    last: int
    path: Path
    kind: str  # trial file | pack | segment
    meta: dict[str, Any]
    history: History
    status: str
    error: str
    state_json: str | None
    confirmation: ConfirmationRecord | None


@dataclass
class Chain:
    """A trial's intact chain, and what lies beside it: damage after its last checkpoint
    (to set aside), files a later one covers, and temporary files of dead writers."""

    pieces: list[Piece]
    damaged: list[DamagedFile] = field(default_factory=list)
    obsolete: list[Path] = field(default_factory=list)
    temporaries: list[Path] = field(default_factory=list)

    @property
    def last(self) -> int:
        return self.pieces[-1].last if self.pieces else 0


def read_chain(files: TrialFiles, final: bool = True) -> Chain:
    """Read the trial's chain of files (``TornRead`` if the writer folded files meanwhile
    and ``final`` is false; ``StoreError`` for damage that cannot be recovered)."""
    pieces: list[Piece] = []
    try:
        pieces.append(_read_consolidated(files, files.trial_file, "trial file"))
    except FileNotFoundError:
        pass
    except DamagedFile as exc:
        raise StoreError(
            f"{exc.path} is damaged: {exc.why}. It holds trial {files.name}'s checkpoints "
            "folded from its journal, which exist nowhere else: restore the file from a "
            f"backup, or move it and {files.journal} aside to run trial {files.name} again "
            "from scratch. Nothing was changed."
        ) from None
    start = pieces[-1].last if pieces else 0
    entries, temporaries = list_journal(files.journal)
    chain = Chain(pieces, temporaries=temporaries)
    chain.obsolete = [path for first, last, path in entries if last <= start]
    ahead = [(first, last, path) for first, last, path in entries if last > start]
    failed: dict[Path, DamagedFile] = {}
    while True:
        at = chain.last + 1
        # a pack before the segments it folded (both exist after a crash in between)
        candidates = sorted((e for e in ahead if e[0] == at), key=lambda e: -e[1])
        for first, last, path in candidates:
            try:
                piece = _read_piece(files, first, last, path)
            except DamagedFile as exc:
                failed[path] = exc
                continue
            chain.pieces.append(piece)
            break
        else:
            break
    rest = [e for e in ahead if e[0] > chain.last]
    intact_after = [e for e in rest if e[2] not in failed and _readable(files, *e)]
    if intact_after or _lost_start(files, chain, rest):
        if not final:
            raise TornRead(files.journal)
        raise StoreError(_gap_message(files, chain, failed, intact_after))
    used = {piece.path for piece in chain.pieces}
    for _, last, path in ahead:
        if last <= chain.last and path not in used:  # folded into a file of the chain
            if path in failed:
                chain.damaged.append(failed[path])
            else:
                chain.obsolete.append(path)
    for first, last, path in rest:
        chain.damaged.append(failed.get(path) or _why_not(files, first, last, path))
    return chain


def _lost_start(files: TrialFiles, chain: Chain, rest: list) -> bool:
    """The trial had checkpoints (its journal says so) but none of them is left."""
    return not chain.pieces and not rest and files.started.exists()


def _gap_message(
    files: TrialFiles, chain: Chain, failed: dict[Path, DamagedFile], intact_after: list
) -> str:
    at = chain.last + 1
    if not intact_after:
        return (
            f"{files.trial_file} is missing: trial {files.name} had checkpoints "
            f"({files.started} records it) but no file holds batch 1 any more. "
            f"Restore the file from a backup, or delete {files.journal} to run trial "
            f"{files.name} again from scratch. Nothing was changed."
        )
    damaged = [exc for exc in failed.values() if exc.path.name.startswith(f"{at:08d}")]
    if damaged:
        why = f"{damaged[0].path}: {damaged[0].why}"
    else:
        why = f"{files.trial_file if at == 1 else files.segment(at)} does not exist"
    later = ", ".join(str(p.name) for _, _, p in sorted(intact_after)[:3])
    more = ", ..." if len(intact_after) > 3 else ""
    return (
        f"trial {files.name}: batch {at} is missing or damaged ({why}) but later "
        f"batches are intact ({later}{more}): the journal has a gap. Restore the missing "
        f"file from a backup, or move every file of {files.journal} after batch {at - 1} "
        f"into quarantine/ to continue the trial from batch {at - 1}. Nothing was changed."
    )


def _readable(files: TrialFiles, first: int, last: int, path: Path) -> bool:
    try:
        _read_piece(files, first, last, path)
    except (DamagedFile, FileNotFoundError):
        return False
    return True


def _why_not(files: TrialFiles, first: int, last: int, path: Path) -> DamagedFile:
    try:
        _read_piece(files, first, last, path)
    except DamagedFile as exc:
        return exc
    return DamagedFile(path, f"it does not follow batch {first - 1} of the chain (a stray)")


def list_journal(journal: Path) -> tuple[list[tuple[int, int, Path]], list[Path]]:
    """The journal's segments and packs as ``(first, last, path)``, and its temporaries."""
    try:
        names = os.listdir(journal)
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    entries = []
    for name in names:
        if batches := journal_batches(name):
            entries.append((batches[0], batches[1], journal / name))
    return sorted(entries), stale_temporaries(journal, mine_only_if_dead=False)


def _read_piece(files: TrialFiles, first: int, last: int, path: Path) -> Piece:
    if first == last and is_segment(path):
        piece = _read_segment(files, path)
    else:
        piece = _read_consolidated(files, path, "pack")
    trial = piece.meta.get("trial", files.name)
    if (piece.first, piece.last) != (first, last) or trial != files.name:
        raise DamagedFile(
            path,
            f"it holds batches {piece.first}-{piece.last} of trial {trial}, "
            f"not batches {first}-{last} of trial {files.name} as its name says",
        )
    return piece


def _read_consolidated(files: TrialFiles, path: Path, kind: str) -> Piece:
    with open_verified(path, files.checksums) as f:
        state = f["checkpoint/method_state"].asstr()[()] if "checkpoint" in f else None
        return Piece(
            first=int(f.attrs.get("first_seq", 1)),
            last=int(f.attrs["last_seq"]),
            path=path,
            kind=kind,
            meta=json.loads(f.attrs["meta"]),
            history=History.read(f["history"]),
            status=str(f.attrs["status"]),
            error=str(f.attrs["error"]),
            state_json=state,
            confirmation=_confirmation(f),
        )


def _read_segment(files: TrialFiles, path: Path) -> Piece:
    with open_verified(path, files.checksums) as f:
        header = json.loads(f.attrs["header"])
        return Piece(
            first=int(header["seq"]),
            last=int(header["seq"]),
            path=path,
            kind="segment",
            meta=header["meta"],
            history=History.from_records(f["rows"][()], header),
            status=header["status"],
            error=header["error"],
            state_json=f["method_state"].asstr()[()] if "method_state" in f else None,
            confirmation=_confirmation(f),
        )


def _confirmation(f: h5py.File) -> ConfirmationRecord | None:
    return ConfirmationRecord.read(f["confirmation"]) if "confirmation" in f else None


def latest(pieces: list[Piece], attr: str) -> Any:
    """The newest value of ``attr`` (``state_json`` or ``confirmation``) the pieces set."""
    return next((getattr(p, attr) for p in reversed(pieces) if getattr(p, attr) is not None), None)


def set_aside(chain: Chain, campaign_root: Path, quarantine: Path) -> list[str]:
    """Move the chain's recoverable damage into ``quarantine`` (same relative paths, never
    overwriting) and remove its obsolete and temporary files; say what was done."""
    said = []
    for exc in chain.damaged:
        target = quarantine / exc.path.relative_to(campaign_root)
        n = 1
        while target.exists():
            target = target.with_name(f"{exc.path.name}.{n}")
            n += 1
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(exc.path, target)
        except OSError as err:
            raise StoreError(f"cannot move {exc.path} into {quarantine}: {err.strerror}") from err
        said.append(f"set aside {exc.path} ({exc.why}) as {target}")
    for path in [*chain.obsolete, *chain.temporaries]:
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            raise StoreError(f"cannot remove {path}: {err.strerror}") from err
    return said


def is_segment(path: Path) -> bool:
    """Whether ``path`` is named as a segment (one batch), not a pack."""
    batches = journal_batches(path.name)
    return batches is not None and batches[2]
