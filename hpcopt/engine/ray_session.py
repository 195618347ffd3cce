"""A campaign's connection to Ray: a private Ray started on this machine, or a running
cluster joined, with token authentication set up for it, and all of it undone at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from hpcopt.engine import private_ray
from hpcopt.engine.ray_node import auth_env, new_token_file


class RaySession:
    """``ray.init`` for a campaign; :meth:`close` ends it.

    ``address: auto`` starts a private Ray (short temp dir, no dashboard, token
    authentication, ``num_cpus``/``num_gpus`` declared, default: all CPUs and no GPU) whose
    folder is watched from before Ray starts (see :mod:`hpcopt.engine.private_ray`):
    whatever ends this process, its Ray ends too. ``host:port`` joins a running cluster,
    authenticating with ``token_file`` when given.
    """

    def __init__(
        self,
        address: str,
        token_file: str | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
    ) -> None:
        import ray

        self._ray = ray
        self.private_dir: Path | None = None
        self._watchdog: private_ray.Watchdog | None = None
        self._saved_env = dict(os.environ)
        try:
            with _own_sigterm_handler():
                self._init(address, token_file, num_cpus, num_gpus)
        except BaseException:
            self.close()
            raise

    def _init(
        self, address: str, token_file: str | None, num_cpus: int | None, num_gpus: int | None
    ) -> None:
        ray = self._ray
        if address == "auto":
            self.private_dir = private_ray.make()
            self._watchdog = private_ray.Watchdog(self.private_dir)
            _set_auth_env(auth_env(new_token_file(self.private_dir)))
            ray.init(
                address="local",
                num_cpus=num_cpus or os.cpu_count(),
                num_gpus=num_gpus or 0,
                include_dashboard=False,
                _temp_dir=str(self.private_dir / "r"),
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            if token_file:
                _set_auth_env(auth_env(token_file))
            ray.init(address=address, log_to_driver=False, configure_logging=False)

    def close(self) -> None:
        """Shut Ray down, restore this process's auth settings, remove a private Ray."""
        if self._ray.is_initialized():
            self._ray.shutdown()
        if self._saved_env:
            _set_auth_env(self._saved_env)
            self._saved_env = {}
        self._remove_private_dir()

    def _remove_private_dir(self) -> None:
        """Have the watchdog end what Ray's shutdown left and remove the folder and token."""
        directory, watchdog = self.private_dir, self._watchdog
        self.private_dir = self._watchdog = None
        if directory is None:
            return
        try:
            if watchdog is not None:
                watchdog.stop()
        finally:
            private_ray.end(directory)  # nothing is left to end unless the watchdog failed


def _set_auth_env(env: dict[str, str]) -> None:
    """Make ``env``'s Ray auth settings this process's, and have Ray read them again.

    Ray caches the auth mode (RayConfig) and the token (its token loader) per process, so
    a process that talks to several clusters in turn, as the tests do, must refresh both.
    """
    # Private Ray, on purpose: Ray (2.52 to 2.60, read in 2.60's source and docs) has no
    # public call that re-reads RAY_AUTH_* in a running process; its own test helper
    # (ray._private.authentication_test_utils.reset_auth_token_state) does these two
    # calls, in this order: the config first, or a draining gRPC thread reloads the
    # token under the old mode. Kept to this one function so a Ray upgrade breaks here.
    from ray._raylet import AuthenticationTokenLoader, Config

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def _own_sigterm_handler() -> Iterator[None]:
    """Keep this process's SIGTERM handler across ``ray.init``, which sets one that exits at
    once (``sys.exit(15)``): where the caller set its own (``hpcopt run`` stops as on
    Ctrl-C, a Slurm rank stops cleanly), that one is put back."""
    if threading.current_thread() is not threading.main_thread():
        yield  # ray.init sets no handler there either
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(before):
            signal.signal(signal.SIGTERM, before)
