"""Who a process is: whether a pid exists, when it started, which boot this is.

A pid alone does not name a process for long: it is reused. Locks and owner files record
the pid with its start (clock ticks since boot, ``/proc/<pid>/stat`` field 22) and the boot
id, so that a pid now held by an unrelated process is not taken for the one that wrote it.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_BOOT_ID = _PROC / "sys/kernel/random/boot_id"
HAS_PROC = (_PROC / "self/stat").exists()
"""Whether this system has a Linux /proc (macOS has none: only the pid can be checked)."""


def process_start(pid: int) -> int | None:
    """Start of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22);
    None when there is no such process, it has ended (a zombie its parent has not yet
    waited for) or it is not ours to read."""
    try:
        stat = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: count fields after its last ")";
    # the state (field 3) comes first, the start (field 22) 20th
    fields = stat[stat.rindex(b")") + 2 :].split()
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def visible(pid: int) -> bool:
    """Whether this process may read ``/proc/<pid>/stat`` (false for a pid that does not
    exist, and for another user's process where /proc is mounted with ``hidepid``)."""
    try:
        (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return False
    return True


def started_at(ticks: int) -> float:
    """Unix time of a process start given in clock ticks since boot."""
    boot = next(
        float(line.split()[1])
        for line in (_PROC / "stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def boot_id() -> str | None:
    """This boot's id (None where the system does not say)."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
