"""How hpcopt writes and reads its files: atomically, with a checksum, verified on read.

Every file hpcopt writes — the store's HDF5 files, the summaries, the driver lock, the
Slurm records and addresses, the figures, a private Ray's owner file — is written by
:func:`atomic_path`: under a temporary name in its own folder, flushed, fsync'ed, renamed
into place and its folder fsync'ed, so a reader never sees half of one and a crash never
leaves half of one behind. Each HDF5 file carries the attribute ``sha256``: the SHA-256 of
its content — every dataset (name, type, shape, bytes; strings as UTF-8) and every
attribute, in name order — so a bit flipped on disk, a truncated copy or a file swapped for
another is found when it is read, never used as data.

HDF5 files are opened with ``locking=False``: some NFS and Lustre mounts refuse the POSIX
locks HDF5 takes by default, and atomic renames make them unneeded (no reader ever opens a
file that is being written).

Temporary names say who wrote them (``.<name>.<host>-<pid>.<random>.tmp``) so that the
next driver can remove those of writers that died.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np

from hpcopt.core.processes import pid_exists

DIGEST_ATTR = "sha256"
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


class StoreError(RuntimeError):
    """The campaign folder is missing, not a campaign, damaged, or cannot be written."""


class DamagedFile(StoreError):
    """A store file that cannot be opened, fails its checksum or lacks what it must hold."""

    def __init__(self, path: Path, why: str) -> None:
        self.path, self.why = Path(path), why
        super().__init__(f"{path}: {why}")


def write_h5(path: Path, fill: Callable[[h5py.File], None]) -> None:
    """Write an HDF5 file by ``fill(h5file)``, add its checksum and put it in place
    atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w", locking=False) as f:
        fill(f)
        f.attrs[DIGEST_ATTR] = digest(f)


def write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file atomically (:func:`atomic_path`)."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes, exclusive: bool = False, mode: int = 0o666) -> None:
    """Write a file atomically (:func:`atomic_path`); ``exclusive``: only if ``path`` does
    not exist yet (``FileExistsError`` otherwise)."""
    with atomic_path(path, exclusive, mode) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_path(path: Path, exclusive: bool = False, mode: int = 0o666) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the file at; once the block ends, the
    file is fsync'ed and renamed to ``path``, and the folder fsync'ed (the new name
    survives a crash too). The one way hpcopt writes a file.

    The temporary file exists (empty; ``mode`` less the umask, as ``open`` would make it)
    when the block starts; whatever the block writes must be closed when it ends. If the
    block raises, the temporary file is removed and ``path`` is left as it was.
    ``exclusive`` puts the file in place by ``link`` instead of ``rename``: that fails with
    ``FileExistsError`` when ``path`` exists, atomically on NFS too (the driver lock takes
    itself so). Any other ``OSError``, of the block too (a full disk, a read-only folder),
    becomes a :class:`StoreError` naming ``path`` and why.
    """
    path = Path(path)
    tmp: str | None = None
    linking = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temporary(path, mode)
        yield Path(tmp)
        _fsync(tmp)
        if exclusive:
            linking = True
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
            tmp = None
        _fsync(path.parent)
    except OSError as exc:
        if linking and isinstance(exc, FileExistsError):
            raise  # the name is taken: for the caller to decide
        raise StoreError(f"cannot write {path}: {os_reason(exc)}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _create_temporary(path: Path, mode: int) -> str:
    """An empty new file beside ``path``, named after its writer (not ``mkstemp``: that
    makes every file 0600 whatever the umask)."""
    while True:
        tmp = str(path.with_name(f".{path.name}.{writer_id()}.{secrets.token_hex(4)}.tmp"))
        with contextlib.suppress(FileExistsError):
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            return tmp


def os_reason(exc: OSError) -> str:
    """Why an OSError happened, in the system's words (``No space left on device``), also
    for h5py's errors, which bury the errno in a long message."""
    m = re.search(r"errno = (\d+)", str(exc))
    if m:
        return os.strerror(int(m[1]))
    return exc.strerror or str(exc)


def writer_id() -> str:
    """``<host>-<pid>`` of this process, as temporary names carry it (so the next driver
    can tell a dead writer's leftovers from a live writer's file)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "host"
    return f"{host}-{os.getpid()}"


def _fsync(path: str | Path) -> None:
    """fsync a file or a folder (a folder: so that a new name in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # some file systems cannot sync a folder (EINVAL): there the rename is all there is
        if exc.errno != errno.EINVAL or not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def digest(f: h5py.File) -> str:
    """SHA-256 of the file's datasets and attributes (all but the checksum itself)."""
    h = hashlib.sha256()
    _hash_attrs(h, f.attrs, skip=DIGEST_ATTR)
    _hash_group(h, f, "")
    return h.hexdigest()


def _hash_group(h: hashlib._Hash, group: h5py.Group, prefix: str) -> None:
    # a plain walk in name order: half again as fast as visititems on a segment's few objects
    for name in group:
        obj, path = group[name], prefix + name
        h.update(b"\0obj\0" + path.encode())
        _hash_attrs(h, obj.attrs)
        if isinstance(obj, h5py.Dataset):
            _hash_value(h, obj.asstr()[()] if _is_string(obj.dtype) else obj[()])
        else:
            _hash_group(h, obj, path + "/")


def _hash_attrs(h: hashlib._Hash, attrs: h5py.AttributeManager, skip: str = "") -> None:
    for key in sorted(attrs):
        if key != skip:
            h.update(b"\0attr\0" + key.encode())
            _hash_value(h, attrs[key])


def _is_string(dtype: np.dtype) -> bool:
    return h5py.check_string_dtype(dtype) is not None


def _hash_value(h: hashlib._Hash, value: object) -> None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
        h.update(b"s%d:" % len(data) + data)
        return
    array = np.asarray(value)
    if array.dtype == object:
        h.update(b"o%r:" % (array.shape,))
        items = array.reshape(-1).tolist()
        if all(type(item) is str for item in items):
            # a string column: the bytes hashing each item in turn would feed, in one call
            # (a thousand rows' worker, node and error columns dominated a checkpoint)
            data = [item.encode("utf-8", "surrogateescape") for item in items]
            h.update(b"".join([b"s%d:%s" % (len(d), d) for d in data]))
            return
        for item in items:
            _hash_value(h, item)
        return
    h.update(f"{array.dtype.str}{array.dtype.descr}{array.shape}:".encode())
    h.update(np.ascontiguousarray(array).tobytes())


@contextlib.contextmanager
def open_verified(path: Path, require_digest: bool = True) -> Iterator[h5py.File]:
    """Open a store file for reading after checking its checksum.

    Raises :class:`DamagedFile` when it cannot be opened, lacks its checksum (where one is
    required: files written before checksums existed have none) or fails it, and when
    reading it inside the block finds something missing or malformed; ``FileNotFoundError``
    when it does not exist (a concurrent writer may have just removed it).
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r", locking=False)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if not path.exists():
            raise FileNotFoundError(str(path)) from exc
        size = path.stat().st_size
        why = "it is empty" if size == 0 else f"it is not a readable HDF5 file ({size} bytes)"
        raise DamagedFile(path, why) from None
    with f:
        try:
            stored = f.attrs.get(DIGEST_ATTR)
            if stored is None:
                if require_digest:
                    raise DamagedFile(path, "it has no checksum (sha256 attribute)")
            elif digest(f) != (stored.decode() if isinstance(stored, bytes) else stored):
                raise DamagedFile(path, "its checksum does not match its content")
            yield f
        except DamagedFile:
            raise
        except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise DamagedFile(path, f"it cannot be read ({type(exc).__name__}: {exc})") from None


def _alive(pid: int) -> bool:
    return pid == os.getpid() or pid_exists(pid)


def stale_temporaries(folder: Path, mine_only_if_dead: bool = True) -> list[Path]:
    """Temporary files in ``folder`` left by writers that are gone.

    With ``mine_only_if_dead`` only those written on this host by a process that no longer
    exists; without it every temporary file (for a folder whose only writer is the caller).
    """
    found = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    host = writer_id().rsplit("-", 1)[0]
    for entry in entries:
        m = _TEMPORARY.match(entry.name)
        if entry.name.startswith(".") and entry.name.endswith(".tmp") and not m:
            if not mine_only_if_dead:
                found.append(Path(entry.path))  # written before names said who wrote them
            continue
        if m is None:
            continue
        if not mine_only_if_dead or (m["host"] == host and not _alive(int(m["pid"]))):
            found.append(Path(entry.path))
    return found
