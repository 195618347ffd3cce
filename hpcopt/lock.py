"""The driver lock: which process drives a campaign, so that a second driver is refused."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from hpcopt.store import StoreError


@contextlib.contextmanager
def driver_lock(root: Path, name: str = "driver") -> Iterator[None]:
    """Mark the campaign as driven by this process (``<name>.json``); refuse a second driver
    with the same lock on the same host while the first is alive."""
    path = Path(root) / f"{name}.json"
    holder = _read_lock(path)
    if holder and holder["alive"]:
        raise StoreError(
            f"{root} is already being run by pid {holder['pid']} on {holder['host']} "
            f"(started {time.ctime(holder['started_at'])})"
        )
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time()}
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(me))
    os.replace(tmp, path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def read_drivers(root: str | Path) -> list[dict]:
    """Who drives the campaign: ``{host, pid, started_at, alive}`` per driver lock.

    ``alive`` is only known on the same host; elsewhere it is assumed true.
    """
    found = (_read_lock(p) for p in sorted(Path(root).glob("driver*.json")))
    return [d for d in found if d]


def _read_lock(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    info["alive"] = True
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            info["alive"] = False
        except PermissionError:
            pass
    return info
