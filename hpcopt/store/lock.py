"""The driver lock: at most one driver per lock file, safe on NFS, not fooled by reused pids.

A driver holds its lock file (``driver.json``, ``driver-<trial>.json`` for a job-array
task: :class:`~hpcopt.store.folder.CampaignFolder` names them) while it runs. The file is
written complete under a unique temporary name, fsync'ed, and hard-linked to the lock's
name (:func:`~hpcopt.core.files.atomic_path` with ``exclusive``): ``link`` fails when the
name exists, atomically on NFS too (as Optuna's journal file lock does), so of two drivers
started at the same instant one holds the lock and the other is refused. The lock records
its holder::

    host, pid, started_at (Unix s), boot_id, process_start (clock ticks from boot)

On the holder's host a lock is stale when the machine was rebooted since, the pid is gone,
or the pid now names another process (its start differs): the next driver removes it.
From another host nothing tells whether the holder is alive, so it is taken as alive;
``hpcopt unlock DIR --force`` (:func:`break_locks`) removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from hpcopt.core.files import os_reason, write_bytes
from hpcopt.core.processes import HAS_PROC, boot_id, pid_exists, process_start, started_at, visible
from hpcopt.store.campaign_store import StoreError
from hpcopt.store.folder import CampaignFolder

_CLOCK_SLACK_S = 60.0
_Ident = tuple[int, int, bytes]


@contextlib.contextmanager
def driver_lock(root: str | Path, trial: str | None = None) -> Iterator[None]:
    """Hold the driver lock of campaign folder ``root`` (of the driver of ``trial`` alone,
    with ``trial``) while the body runs; ``StoreError`` if a live driver does.

    A stale lock (see the module docstring) is removed and taken over. Any ``OSError`` while
    creating the lock (disk full, read-only folder) becomes a ``StoreError``.
    """
    path = CampaignFolder(root).driver_lock(trial)
    me = _holder()
    _acquire(path, me)
    try:
        yield
    finally:
        _release(path, me)


def read_drivers(root: str | Path) -> list[dict[str, Any]]:
    """Who drives the campaign: ``{host, pid, started_at, alive, ...}`` per driver lock.

    ``alive`` is checked on the holder's host only; from elsewhere it is assumed true.
    Unreadable lock files are left out.
    """
    found = []
    for path in CampaignFolder(root).driver_locks():
        with contextlib.suppress(OSError, ValueError):
            info, _ = _load(path)
            found.append({**info, "alive": _alive(info)})
    return found


def break_locks(
    root: str | Path, force: bool = False
) -> tuple[list[tuple[Path, dict[str, Any] | None]], list[str]]:
    """Remove the driver locks of campaign folder ``root`` that no running driver holds.

    Stale locks of this host are removed; a live one of this host is kept; one of another
    host, or an unreadable one, is removed only with ``force``. Returns ``(removed, kept)``:
    the removed paths with their records (None when unreadable) and, per lock kept, why.
    """
    removed, kept = [], []
    for path in CampaignFolder(root).driver_locks():
        try:
            info, ident = _load(path)
        except FileNotFoundError:
            continue  # its driver just ended
        except (OSError, ValueError) as exc:
            if not force:
                kept.append(f"{path} is not a readable lock ({exc}): remove it with --force")
            elif _remove(path, None):
                removed.append((path, None))
            continue
        here = info["host"] == socket.gethostname()
        if here and _alive(info):
            kept.append(f"{path}: {describe(info)} is alive; stop it first (kill {info['pid']})")
        elif not here and not force:
            kept.append(
                f"{path}: {describe(info)} is on another host, where this one cannot check "
                "it; once you are sure that driver is gone, use --force"
            )
        elif _remove(path, ident):
            removed.append((path, info))
    return removed, kept


def describe(info: dict[str, Any]) -> str:
    """``pid N on HOST (started <date>)`` for a lock's record."""
    return f"pid {info['pid']} on {info['host']} (started {time.ctime(info['started_at'])})"


def _acquire(path: Path, me: dict[str, Any]) -> None:
    """Create the lock ``path`` holding ``me``, taking over a stale one once."""
    record = json.dumps(me).encode()
    try:
        for attempt in range(2):
            with contextlib.suppress(FileExistsError):
                write_bytes(path, record, exclusive=True)
                return
            try:
                holder, ident = _load(path)
            except FileNotFoundError:
                continue  # released in between: try again
            except ValueError as exc:
                raise StoreError(
                    f"{path} is not a readable driver lock ({exc}); if no driver runs on "
                    f"{path.parent}, remove it with 'hpcopt unlock {path.parent} --force'"
                ) from exc
            if attempt or _alive(holder):
                raise StoreError(_held_message(path, holder))
            _remove(path, ident)
        raise StoreError(f"{path} changed hands twice while this driver tried to take it")
    except OSError as exc:
        raise StoreError(f"cannot read the driver lock {path}: {os_reason(exc)}") from exc


def _held_message(path: Path, holder: dict[str, Any]) -> str:
    root = path.parent
    text = f"{root} is already being run by {describe(holder)}"
    if holder["host"] == socket.gethostname():
        return f"{text}; wait for it to end or stop it (kill {holder['pid']})"
    return (
        f"{text}; from {socket.gethostname()} it cannot be checked whether it is alive: "
        f"once you are sure that driver is gone, run 'hpcopt unlock {root} --force'"
    )


def _release(path: Path, me: dict[str, Any]) -> None:
    """Remove the lock if it is still ours: someone may have broken it and taken over."""
    try:
        holder, ident = _load(path)
    except (OSError, ValueError):
        return
    if (holder["pid"], holder.get("process_start")) == (me["pid"], me["process_start"]):
        _remove(path, ident)


def _remove(path: Path, ident: _Ident | None) -> bool:
    """Remove the lock ``path`` if it is still the file ``ident`` was read from (any if None).

    It is renamed aside first: of two drivers removing the same stale lock, only one gets
    it; the other, or one that would take a lock created since, finds another file there
    and puts it back.
    """
    aside = CampaignFolder.lock_aside(path)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    with open(aside, "rb") as f:
        taken = _ident(f)
    if ident is not None and taken != ident:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        os.unlink(aside)
        return False
    os.unlink(aside)
    return True


def _load(path: Path) -> tuple[dict[str, Any], _Ident]:
    """A lock's record and the identity of the file it was read from.

    ``FileNotFoundError`` when there is none, ``ValueError`` when it is not a lock record.
    """
    with open(path, "rb") as f:
        ident = _ident(f)
    info = json.loads(ident[2])
    if not (
        isinstance(info, dict)
        and isinstance(info.get("host"), str)
        and isinstance(info.get("pid"), int)
        and isinstance(info.get("started_at"), (int, float))
    ):
        raise ValueError("no host, pid and started_at")
    return info, ident


def _ident(f: BinaryIO) -> _Ident:
    """What tells one lock file from another: device, inode (reused once freed) and bytes."""
    st = os.fstat(f.fileno())
    return st.st_dev, st.st_ino, f.read()


def _holder() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "started_at": time.time(),
        "boot_id": boot_id(),
        "process_start": process_start(pid),
    }


def _alive(info: dict[str, Any]) -> bool:
    """Whether a lock's holder may still run: checked on its own host, assumed elsewhere."""
    if info["host"] != socket.gethostname():
        return True
    boot = boot_id()
    if info.get("boot_id") and boot and info["boot_id"] != boot:
        return False
    if not HAS_PROC:  # no /proc (macOS): the pid is all there is
        return pid_exists(info["pid"])
    start = process_start(info["pid"])
    if start is None:  # gone, ended (a zombie), or hidden (/proc mounted hidepid)
        return not visible(info["pid"]) and pid_exists(info["pid"])
    if info.get("process_start") is not None:
        return start == info["process_start"]
    # a lock of hpcopt <= 0.3.0 has no process_start: a process started after it was written
    # is not its holder (the slack covers clock steps since, which move the computed start)
    return started_at(start) <= info["started_at"] + _CLOCK_SLACK_S
