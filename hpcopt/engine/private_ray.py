"""A campaign's private Ray: its folder, who owns it, and a watchdog that ends it with its
driver, however the driver ends.

Ray's processes of a private Ray (``ray.init`` in the driver) do not all follow their
driver: after a SIGKILL of the driver its dashboard and runtime-env agents were seen alive
a minute later, and the folder with the cluster's auth token stays on disk. So:

- the folder gets an ``owner`` file (driver pid, its start time, the boot id), so that a
  later start can tell a dead owner's leftover from a live campaign's folder;
- a watchdog process in its own session (a group kill of the driver's job leaves it)
  waits for the driver to end, then ends every process using the folder and removes it.
  It learns of the driver's end from a pipe only the driver holds the write end of (EOF
  as soon as the driver is gone or closes it), and checks the driver's pid and start
  time twice a second in case a forked child of the driver kept the pipe open.

Run as ``python -m hpcopt.engine.private_ray <driver_pid> <driver_start> <folder>``, with
the pipe's read end as standard input.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

import hpcopt
from hpcopt.core.files import write_bytes
from hpcopt.core.processes import boot_id, process_start
from hpcopt.engine.ray_node import end_processes_using, short_temp_dir

OWNER_FILE = "owner"
PREFIX = "hr-"


def claim(directory: str | Path) -> None:
    """Record this process as the owner of ``directory`` (its ``owner`` file)."""
    owner = {"pid": os.getpid(), "start": process_start(os.getpid()), "boot_id": boot_id()}
    # complete or absent (a half-written one would keep a dead owner's folder forever);
    # exclusive: never over another's claim
    write_bytes(Path(directory) / OWNER_FILE, json.dumps(owner).encode(), True, mode=0o600)


def owner_alive(directory: str | Path) -> bool | None:
    """Whether the process that claimed ``directory`` still runs; None if no readable
    ``owner`` file says who that is (a folder that was not made by :func:`make`, or one
    being claimed right now)."""
    try:
        owner = json.loads((Path(directory) / OWNER_FILE).read_text())
        pid, start, boot = int(owner["pid"]), int(owner["start"]), owner["boot_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return boot == boot_id() and process_start(pid) == start


def make() -> Path:
    """A fresh private folder (:func:`short_temp_dir`) claimed by this process, after
    removing the leftover folders of owners that are gone."""
    directory = short_temp_dir(PREFIX)
    remove_leftovers(directory.parent)
    claim(directory)
    return directory


def remove_leftovers(base: str | Path) -> list[Path]:
    """End and remove this user's private folders in ``base`` whose owner is gone; keep
    every folder of a live owner, and every folder without an owner file. Returns those
    removed."""
    removed = []
    for path in sorted(Path(base).glob(f"{PREFIX}*")):
        try:
            mine = path.is_dir() and path.stat().st_uid == os.getuid()
        except OSError:
            continue  # removed meanwhile, by its owner or another campaign's start
        if mine and owner_alive(path) is False:
            end(path)
            removed.append(path)
    return removed


def end(directory: str | Path, keep: Collection[int] = ()) -> None:
    """End every process using ``directory`` (but those in ``keep``) and remove it.

    ``RuntimeError`` if some processes would not end (the folder is removed all the same).
    """
    left = end_processes_using(directory, keep)
    shutil.rmtree(directory, onerror=_unless_gone)
    if left:
        raise RuntimeError(f"processes {left} of the private Ray in {directory} would not end")


def _unless_gone(function: object, path: str, exc_info: tuple) -> None:
    """``rmtree``'s error handler: a file that another cleaner removed first is fine."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


class Watchdog:
    """The watchdog process of the private folder ``directory`` for this process.

    :meth:`stop` closes the pipe: the watchdog then removes what is left and exits.
    """

    def __init__(self, directory: str | Path) -> None:
        read_end, self._write_end = os.pipe()  # neither end is inherited by Ray's processes
        pid = os.getpid()
        root = str(Path(hpcopt.__file__).resolve().parents[1])  # this very hpcopt
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(pid), str(process_start(pid)),
                 str(directory)],
                stdin=read_end, stdout=subprocess.DEVNULL, env=env, start_new_session=True,
            )  # fmt: skip
        except BaseException:
            os.close(self._write_end)
            raise
        finally:
            os.close(read_end)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Close the pipe and wait for the watchdog to finish; ``RuntimeError`` if it failed."""
        os.close(self._write_end)
        code = self.process.wait(timeout=timeout_s)
        if code != 0:
            raise RuntimeError(f"the private Ray's watchdog exited with status {code}")


def watch(driver_pid: int, driver_start: int, directory: Path, pipe: int = 0) -> None:
    """Wait until the driver is gone, the pipe at fd ``pipe`` is closed (the driver never
    writes to it) or ``directory`` is removed; then end its processes and remove it."""
    while process_start(driver_pid) == driver_start and directory.exists():
        readable, _, _ = select.select([pipe], [], [], 0.5)
        if readable:
            break
    end(directory, keep={driver_pid})


def main(argv: list[str] | None = None) -> None:
    """The watchdog's command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m hpcopt.engine.private_ray")
    parser.add_argument("driver_pid", type=int)
    parser.add_argument("driver_start", type=int, help="the driver's start (process_start)")
    parser.add_argument("directory", type=Path, help="the private Ray's folder")
    args = parser.parse_args(argv)
    # A group or tree kill meant for the driver (Slurm's SIGTERM to a job's processes) must
    # not end the watchdog before it has ended what the driver leaves: it ends by itself
    # once the driver is gone.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watch(args.driver_pid, args.driver_start, args.directory)


if __name__ == "__main__":
    main()
