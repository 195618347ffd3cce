"""Progress events (worker up/down, task started/finished/failed/retried) as JSON lines.

The engine emits events; the driver appends them to its event log in the campaign folder
(``events.jsonl``; see :mod:`hpcopt.store.folder`), one line each, flushed as they come, so
a dashboard on another node can follow them.

A line can be bad in two ways, told apart on purpose. A last line without its newline is
one being written, or what a writer killed mid-line left: readers skip it without a word,
and the next writer (the driver holds the campaign's lock) cuts it off before appending.
Anything else that is not an event — garbage in the middle, from a disk error, a hand
edit or two writers at once — is skipped too, every event around it kept, and reported
as a :class:`GarbledEvents` warning naming the file and the lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpcopt.core.files import StoreError

EventSink = Callable[..., None]
"""``sink(kind, **fields)``: receives one event."""


def ignore(kind: str, **fields: Any) -> None:
    """An event sink that drops everything."""


class EventLog:
    """Appends events to a JSON-lines file: ``{"time": unix_s, "kind": ..., **fields}``."""

    def __init__(self, path: str | Path) -> None:
        """Open ``path`` for appending (its only writer: the caller holds the lock of the
        campaign or of the trial), first cutting off a torn last line a killed writer left."""
        self.path = Path(path)
        try:
            _cut_torn_tail(self.path)
            self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror}") from exc

    def __call__(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"time": time.time(), "kind": kind, **fields}) + "\n"
        try:
            self._file.write(line)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        # A line that could not be written raised StoreError when it was written; closing
        # must not raise again over it (it would hide that error).
        with contextlib.suppress(OSError):
            self._file.close()


class GarbledEvents(UserWarning):
    """An event log has lines in the middle that are not events (they were skipped)."""

    def __init__(self, path: Path, lines: list[int]) -> None:
        self.path, self.lines = path, lines
        shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
        super().__init__(
            f"{path}: {len(lines)} line(s) are not events and were skipped (line {shown})"
        )


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every event in ``path`` (none if the file does not exist yet).

    A torn last line (no newline) is skipped silently; other lines that are not a JSON
    object with a ``kind`` are skipped and reported by one :class:`GarbledEvents` warning
    (see the module docstring), so callers can show it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    # the last piece is b"" after a final newline, else a torn line: left out either way
    lines = data.split(b"\n")[:-1]
    events, garbled = [], []
    for number, line in enumerate(lines, start=1):
        event = _event(line)
        if event is None:
            garbled.append(number)
        else:
            events.append(event)
    if garbled:
        warnings.warn(GarbledEvents(path, garbled), stacklevel=2)
    return events


def _event(line: bytes) -> dict[str, Any] | None:
    """The event a line holds; None if it holds none."""
    try:
        event = json.loads(line)
    except ValueError:  # not UTF-8, or not JSON
        return None
    return event if isinstance(event, dict) and isinstance(event.get("kind"), str) else None


def _cut_torn_tail(path: Path, block: int = 4096) -> None:
    """Cut ``path`` after its last newline (nothing if it ends with one or is missing)."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        at = end
        while at > 0:
            start = max(0, at - block)
            f.seek(start)
            newline = f.read(at - start).rfind(b"\n")
            if newline >= 0:
                at = start + newline + 1
                break
            at = start
        if at < end:
            f.truncate(at)
