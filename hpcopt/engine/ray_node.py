"""Start and stop Ray nodes as processes this job owns, safely on shared machines.

What Ray's own recipes get wrong on a shared cluster, and this module does instead:

- no fixed port (two campaigns on one machine never collide): Ray binds its raylet,
  object manager and agents to ports of its own choosing, and the two ports Ray would
  otherwise fix are chosen free here (see :func:`start_node`);
- the temp dir is short (AF_UNIX socket paths are limited to 107 bytes) and private;
- CPUs and GPUs are declared explicitly (``--num-cpus``, ``--num-gpus``);
- token authentication is on, with a fresh token in a file only the user can read;
- no dashboard, and the node is started with ``--block`` in its own process group, so
  stopping it ends exactly this node's processes (never ``ray stop``, which ends every
  Ray on the machine, other users' included).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path


class ClusterError(RuntimeError):
    """A Ray node did not start, or a cluster did not come together in time."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different TCP ports free on ``host`` right now (all are held open until
    all are chosen: ports taken one by one can repeat, which Ray refuses)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                   for _ in range(count)]  # fmt: skip
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]


def short_temp_dir(prefix: str = "hr-") -> Path:
    """A fresh private directory with a short path (``/tmp/hr-<random>``) for Ray's sockets."""
    base = os.environ.get("HPCOPT_RAY_TMP") or ("/tmp" if os.path.isdir("/tmp") else None)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def new_token_file(directory: str | Path) -> Path:
    """Write a fresh random Ray auth token to ``directory/ray-token`` (mode 0600)."""
    path = Path(directory) / "ray-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def auth_env(token_file: str | Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with Ray token authentication on."""
    env = dict(os.environ if base is None else base)
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    env.pop("RAY_AUTH_TOKEN", None)
    return env


@dataclass
class RayNode:
    """A Ray node process started by :func:`start_node`."""

    process: subprocess.Popen
    node_ip: str
    temp_dir: Path
    log: Path
    address: str  # the head's GCS address, host:port

    def stop(self, grace_s: float = 10.0) -> None:
        """End every process of this node — its process group and those outside it (Ray's
        workers make groups of their own): SIGTERM, and SIGKILL to those left ``grace_s``
        later. ``ClusterError`` if some would not end."""
        # one grace period for all: Slurm SIGKILLs a cancelled job's steps KillWait seconds
        # after its SIGTERM, and what is not ended by then is orphaned for good
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        left = end_processes_using(self.temp_dir, grace_s=grace_s)
        _kill_group(self.process, grace_s=0.0)
        if left:
            raise ClusterError(f"processes {left} of the Ray node in {self.temp_dir} would not end")


def start_node(
    *,
    node_ip: str,
    num_cpus: int,
    num_gpus: int,
    temp_dir: str | Path,
    token_file: str | Path,
    head_address: str | None = None,
    resources: str | None = None,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> RayNode:
    """Start a Ray head (``head_address=None``) or a worker joining ``head_address``.

    Returns once the node reports it has started; ``ClusterError`` with the end of its log
    if it exits or takes longer than ``timeout_s``.
    """
    temp_dir = Path(temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray") or "ray"
    cmd = [
        ray, "start", "--block", "--disable-usage-stats",
        "--node-ip-address", node_ip,
        "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus),
        "--temp-dir", str(temp_dir),
    ]  # fmt: skip
    # Ray picks the node manager, object manager, agent gRPC, runtime-env agent and
    # metrics ports itself (their defaults are 0 or "random"). Two it does not: the
    # dashboard agent's HTTP port defaults to a fixed 52365, and the head's GCS port must
    # be known before it starts, to tell the other nodes (`--port 0` lets Ray choose one
    # but then only Ray's session files say which). Those two are chosen free here;
    # between their choice and Ray's bind another process may take one (then the node
    # fails to start, saying so in its log).
    agent_port, port = free_ports(2, node_ip)
    cmd += ["--dashboard-agent-listen-port", str(agent_port)]
    if resources:
        cmd += ["--resources", resources]
    if head_address is None:
        address = f"{node_ip}:{port}"
        cmd += ["--head", "--port", str(port), "--include-dashboard=false"]
    else:
        address = head_address
        cmd += ["--address", head_address]
    log = temp_dir / f"ray-start-{node_ip}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=auth_env(token_file, env),
            start_new_session=True,
        )
    node = RayNode(process, node_ip, temp_dir, log, address)
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            node.stop(grace_s=2)
            late = f"did not start in {timeout_s:g} s"
            why = "exited" if process.returncode is not None else late
            tail = "\n".join(log.read_text().splitlines()[-15:])
            raise ClusterError(f"ray node on {node_ip} {why}; end of {log}:\n{tail}")
        time.sleep(0.1)
    return node


def _kill_group(process: subprocess.Popen, grace_s: float) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    # Ray's own children may outlive the `ray start` process: end the whole group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def processes_using(path: str | Path) -> list[int]:
    """PIDs of live processes whose command line, environment or open files mention ``path``
    (Linux ``/proc``; processes of other users, whose details are unreadable, are skipped).

    The command line alone misses Ray's own ``ray::`` processes (workers, the dashboard and
    runtime-env agents): they overwrite it with their title, but keep their logs open in
    the session dir and the token path of a private Ray in their environment.
    """
    needle = str(path).encode()
    return [
        int(entry.name)
        for entry in os.scandir("/proc")
        if entry.name.isdigit() and int(entry.name) != os.getpid() and _mentions(entry.path, needle)
    ]


def end_processes_using(
    path: str | Path, keep: Collection[int] = (), grace_s: float = 2.0
) -> list[int]:
    """End every process using ``path`` (:func:`processes_using`) but those in ``keep``:
    SIGTERM, then SIGKILL to those left after ``grace_s`` (Ray's agents ignore SIGTERM).
    Returns those still there 5 s after the SIGKILL (none, unless some cannot die)."""
    left = _signal_all(path, keep, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in processes_using(path) if p not in keep]
    deadline = time.monotonic() + 5.0
    while left and time.monotonic() < deadline:
        _signal_all(path, keep, signal.SIGKILL)
        time.sleep(0.05)
        left = [p for p in processes_using(path) if p not in keep]
    return left


def _signal_all(path: str | Path, keep: Collection[int], sig: signal.Signals) -> list[int]:
    pids = [p for p in processes_using(path) if p not in keep]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return pids


def _mentions(proc: str, needle: bytes) -> bool:
    """Whether the process at ``/proc/<pid>`` mentions ``needle`` (False if unreadable)."""
    for name in ("cmdline", "environ"):
        try:
            with open(f"{proc}/{name}", "rb") as f:
                if needle in f.read():
                    return True
        except OSError:
            continue
    try:
        fds = os.listdir(f"{proc}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if needle in os.fsencode(os.readlink(f"{proc}/fd/{fd}")):
                return True
    return False
