"""Progress events (worker up/down, task started/finished/failed/retried) as JSON lines.

The engine emits events; the driver appends them to ``events.jsonl`` in the campaign
folder, one line each, flushed as they come, so a dashboard on another node can follow
them. A reader skips a last line that is still being written.
"""

from __future__ import annotations

import contextlib
import json
import time
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
        self.path = Path(path)
        try:
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


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every complete event in ``path`` (none if the file does not exist yet)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line still being written
    return events
