"""A real, private Slurm cluster on this one machine, started and stopped by the tests.

Debian's ``slurm-wlm`` (22.05) and ``munge`` run unmodified; what is emulated is the
hardware. One ``munged``, one ``slurmctld`` and two ``slurmd`` (``-N n1`` and ``-N n2``)
run on this machine, every file of theirs (munge key, socket and seed, state, spool, logs,
pid files, ``slurm.conf``, ``gres.conf``, fake GPU devices) under one base folder, every
port chosen free at start time: several such clusters can run side by side, and none of
them touches ``/etc/slurm``, ``/etc/munge`` or a system Slurm.

Emulation and its limits:

- The nodes ``n1`` and ``n2`` (2 CPUs, 8000 MB, 2 GPUs each) are two ``slurmd`` on the same
  kernel. Both report the same ``hostname``; inside a job tell them apart by
  ``SLURMD_NODENAME``. Each node has its own loopback address (``NodeAddr`` 127.0.0.2 and
  127.0.0.3, see :attr:`SlurmCluster.nodes`) so that services started inside jobs (Ray
  nodes) get distinct IPs, but nothing stops a job from binding any address.
- The CPU and memory counts are bookkeeping only: there are no cgroups
  (``proctrack/linuxproc``, ``task/none``), so a job may use every core and all memory.
- The GPUs are ``gres`` backed by symlinks to ``/dev/null``: a job asking ``--gres=gpu:1``
  gets ``CUDA_VISIBLE_DEVICES=0`` and no GPU.
- No accounting (no ``slurmdbd``): ``sacct`` fails; ``scontrol show job`` keeps finished
  jobs for ``MinJobAge`` (300 s). Finished jobs are also logged to ``log/jobcomp.txt``.
- Timing: a submitted job starts at the controller's next one-second tick (the scheduler
  and backfill both run every second: ``sched_interval=1``, ``bf_interval=1``). A requeued
  job is held for ``cred_expire`` + 1 s, so ``cred_expire=10`` makes it start again after
  about 12 s (with Slurm's defaults, 2-3 minutes).
- Time limits: slurmctld checks them every 30 s (its own period; no slurm.conf key sets it), so a
  1-minute job (the shortest limit) is ended about 60-90 s after its start (SIGTERM,
  SIGKILL ``KillWait=5`` s later; ``OverTimeLimit`` is 0), and ``--signal=USR2@N`` comes
  at the first check at or after ``end - N - 30 s``: with N=10, 20-50 s after the start.
  That signal goes to the job's steps (``srun``), not to the batch shell (``B:`` for that).
- A node's slurmd may take up to ~10 s to exit if slurmctld is gone while it still has
  messages for it: stop the nodes first (:meth:`SlurmCluster.stop` does).
- Everything runs as root (``SlurmUser=root``), as on the CI machine.

Each daemon runs in the foreground under a tiny supervisor (this file run as a script). The
supervisor is a child subreaper: the ``slurmstepd`` processes that ``slurmd`` double-forks,
and the job processes they leave behind, become its children (not PID 1's), so when its
daemon exits it ends them too: a stopped cluster leaves no job running. It also stops its
daemon if the process that started it dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

SLURM_BINARIES = ("slurmctld", "slurmd", "munged", "mungekey", "sbatch")

NODES = {"n1": "127.0.0.2", "n2": "127.0.0.3"}
"""Emulated node name -> its ``NodeAddr`` (a loopback address of its own)."""

_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # daemons live here; not always on PATH
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])
    return shutil.which(name, path=path)


def _missing() -> list[str]:
    return [name for name in SLURM_BINARIES if not _which(name)]


def available() -> bool:
    """Whether the Slurm and munge programs this module runs are installed."""
    return not _missing()


@dataclass
class _Daemon:
    name: str
    proc: subprocess.Popen  # the supervisor
    pid_file: Path

    def daemon_pid(self) -> int | None:
        """The PID in the pid file, if it is the supervisor's child (never a stale PID)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError, IndexError):
            return None
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        return pid if ppid == self.proc.pid else None


@dataclass
class SlurmCluster:
    """A running private Slurm cluster (see the module docstring); :meth:`stop` ends it.

    ``env`` is what a Slurm client needs on top of ``os.environ`` (``SLURM_CONF``; the
    munge socket is found through ``AuthInfo=socket=`` in that file). ``nodes`` maps each
    node name to its ``NodeAddr``.
    """

    base: Path
    env: dict[str, str]
    nodes: dict[str, str]
    _daemons: list[_Daemon] = field(default_factory=list, repr=False)

    def stop(self, grace_s: float = 10) -> None:
        """Stop the daemons in reverse start order, by the PIDs in their pid files.

        Each gets SIGTERM, then SIGKILL after ``grace_s``; returns once all have exited
        (with the job processes they left behind). Safe to call twice.
        """
        while self._daemons:
            daemon = self._daemons.pop()
            if daemon.proc.poll() is not None:
                continue
            pid = daemon.daemon_pid()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid or daemon.proc.pid, signal.SIGTERM)  # the supervisor forwards it
            try:
                daemon.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                for target in (pid, daemon.proc.pid):
                    if target:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(target, signal.SIGKILL)
                daemon.proc.wait()

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free right now (the kernel picks them; bound, then freed)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _accepts(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1):
            return True
    except OSError:
        return False


def _slurm_conf(base: Path, ctld_port: int, node_ports: dict[str, int]) -> str:
    host = socket.gethostname().split(".")[0]
    default_port = min(node_ports.values())
    nodes = "\n".join(
        f"NodeName={name} NodeHostname={host} NodeAddr={NODES[name]} Port={port} "
        "CPUs=2 RealMemory=8000 Gres=gpu:2 State=UNKNOWN"
        for name, port in node_ports.items()
    )
    return f"""\
ClusterName=hpcopt-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge/run/munge.socket.2,cred_expire=10
SlurmctldPort={ctld_port}
SlurmdPort={default_port}
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool/slurmd-%n
SlurmctldPidFile={base}/run/slurmctld.pid
SlurmdPidFile={base}/run/slurmd-%n.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd-%n.log
PlugStackConfig={base}/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
PreemptMode=OFF
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={base}/log/jobcomp.txt
GresTypes=gpu
MailProg=/bin/true
KillWait=5
InactiveLimit=0
Waittime=0
SlurmdParameters=config_overrides
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _log_tails(base: Path, lines: int = 15) -> str:
    """The last lines of each log; a daemon's console output (``.out``, mostly a copy of its
    log) only when its log is empty."""
    parts = []
    for log in sorted((base / "log").glob("*")):
        own_log = log.with_suffix(".log")
        if log.suffix == ".out" and own_log.exists() and own_log.stat().st_size:
            continue
        text = log.read_text(errors="replace").splitlines()[-lines:]
        if text:
            parts.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(parts)


def start(base: Path, timeout_s: float = 60) -> SlurmCluster:
    """Write the configuration under ``base`` and start munged, slurmctld and two slurmd.

    Returns once ``sinfo`` shows both nodes idle and each slurmd accepts connections at its
    ``NodeAddr``. On failure or after ``timeout_s``, stops what it started and raises
    :class:`RuntimeError` with the tail of the logs. ``base`` should be short (under
    ``/tmp``): the munge socket path must fit in 107 bytes.
    """
    if missing := _missing():
        raise RuntimeError(f"Slurm is not installed (missing: {', '.join(missing)})")
    deadline = time.monotonic() + timeout_s
    base = Path(base).resolve()
    spools = [f"spool/slurmd-{name}" for name in NODES]
    for sub in ("etc", "state", "run", "log", "dev", "munge/run", *spools):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for folder in (base, base / "munge", base / "munge/run"):
        folder.chmod(0o755)  # munged refuses a socket others cannot reach (the key is 0600)

    ports = _free_ports(1 + len(NODES))
    ctld_port, node_ports = ports[0], dict(zip(NODES, ports[1:]))
    conf = base / "etc/slurm.conf"
    conf.write_text(_slurm_conf(base, ctld_port, node_ports))
    (base / "etc/plugstack.conf").write_text("")  # no SPANK plugins from /etc/slurm
    for i in range(2):  # gres needs device files; regular files are refused
        (base / f"dev/nvidia{i}").symlink_to("/dev/null")
    (base / "etc/gres.conf").write_text(
        f"AutoDetect=off\nNodeName={','.join(NODES)} Name=gpu File={base}/dev/nvidia[0-1]\n"
    )
    key = base / "munge/munge.key"
    subprocess.run(
        [_which("mungekey"), "-c", "-k", str(key)], check=True, capture_output=True, text=True
    )
    env = {"SLURM_CONF": str(conf)}
    cluster = SlurmCluster(base=base, env=env, nodes=dict(NODES))
    # The daemons stop if this process dies; not if it is another thread that ends (the
    # kernel's parent-death signal follows the thread that started them).
    watch = os.getpid() if threading.current_thread() is threading.main_thread() else 0

    def launch(name: str, pid_file: Path, *cmd: str) -> None:
        out = (base / "log" / f"{name}.out").open("ab")
        with out:
            proc = subprocess.Popen(
                [sys.executable, "-I", __file__, str(watch), "--", *cmd],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                cwd=base,
                start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not Slurm
            )
        cluster._daemons.append(_Daemon(name, proc, pid_file))

    def wait_until(what: str, ready: Callable[[], bool]) -> None:
        while not ready():
            for daemon in cluster._daemons:
                if daemon.proc.poll() is not None:
                    raise RuntimeError(f"{daemon.name} exited ({daemon.proc.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.05)

    try:
        socket_path = base / "munge/run/munge.socket.2"
        launch(
            "munged",
            base / "munge/run/munged.pid",
            _which("munged"), "--foreground", f"--key-file={key}",
            f"--socket={socket_path}", f"--pid-file={base}/munge/run/munged.pid",
            f"--log-file={base}/log/munged.log", f"--seed-file={base}/munge/munged.seed",
        )  # fmt: skip
        wait_until("munged", socket_path.exists)
        launch("slurmctld", base / "run/slurmctld.pid", _which("slurmctld"), "-D", "-f", str(conf))
        wait_until("slurmctld", lambda: _accepts("127.0.0.1", ctld_port))
        for name in NODES:
            launch(
                f"slurmd-{name}",
                base / f"run/slurmd-{name}.pid",
                _which("slurmd"), "-D", "-f", str(conf), "-N", name,
            )  # fmt: skip
        sinfo = [_which("sinfo"), "-h", "-N", "-o", "%N %T"]
        idle = {f"{name} idle" for name in NODES}

        def nodes_idle() -> bool:
            try:
                out = subprocess.run(
                    sinfo, env={**os.environ, **env}, capture_output=True, text=True, timeout=10
                ).stdout
            except subprocess.TimeoutExpired:
                return False
            return set(out.splitlines()) == idle

        wait_until("both nodes idle", nodes_idle)
        # slurmctld contacts each slurmd at its NodeAddr. (These probes, like the one of
        # slurmctld's port, leave "Zero Bytes were transmitted or received" in the logs.)
        for name, addr in NODES.items():
            port = node_ports[name]
            wait_until(f"{name} at {addr}:{port}", lambda a=addr, p=port: _accepts(a, p))
    except BaseException as exc:
        cluster.stop(grace_s=5)
        if not isinstance(exc, Exception):
            raise
        raise RuntimeError(f"Slurm test cluster did not start: {exc}\n{_log_tails(base)}") from exc
    return cluster


def slurm_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Session fixture body: a private Slurm cluster, stopped and removed at the end.

    Skips when Slurm is not installed, unless ``HPCOPT_REQUIRE_SLURM=1`` (CI), where it fails.
    The daemons' logs are copied to a pytest temporary folder before the cluster's own
    folder (a short one under ``/tmp``) is removed.
    """
    import pytest

    if missing := _missing():
        message = (
            f"Slurm is not installed (missing: {', '.join(missing)}; "
            "apt-get install slurm-wlm munge)"
        )
        if os.environ.get("HPCOPT_REQUIRE_SLURM") == "1":
            pytest.fail(f"{message}, and HPCOPT_REQUIRE_SLURM=1 requires it")
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))
    try:
        cluster = start(base)
        try:
            yield cluster
        finally:
            cluster.stop()
            shutil.copytree(base / "log", tmp_path_factory.mktemp("slurm-logs"), dirs_exist_ok=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- the supervisor each daemon runs under (this file run as a script) ---


def _children() -> list[int]:
    me, kids = os.getpid(), []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                kids.append(int(entry.name))
    return kids


def _end_children(grace_s: float) -> None:
    """SIGTERM every remaining child (orphans keep arriving: we are a subreaper), SIGKILL
    after ``grace_s``; return when there is no child left."""
    first_seen: dict[int, float] = {}
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        now = time.monotonic()
        for kid in _children():
            since = now - first_seen.setdefault(kid, now)
            sig = signal.SIGTERM if since == 0 else signal.SIGKILL if since > grace_s else None
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kid, sig)
        time.sleep(0.05)


def _supervise(parent: int, cmd: list[str], grace_s: float = 1) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if parent:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the starter died before the signal was armed
            return 1
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(cmd[0], cmd)
        finally:
            os._exit(127)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        done, status = os.wait()
        if done == pid:
            break
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # finish the clean-up; the starter may SIGKILL
    _end_children(grace_s)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(_supervise(int(sys.argv[1]), sys.argv[3:]))
