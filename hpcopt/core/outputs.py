"""Checks of the paths a command is told to write, made before it writes anything.

A command that exports several files (``summary``'s CSV and JSON, ``plot``'s PNGs) or
computes for a while first (``pbe simulate``) checks every output path up front, so that a
typo in the last one neither leaves the first written nor wastes the computation.
"""

from __future__ import annotations

import os
from pathlib import Path


def cannot_write_file(path: str | Path) -> str:
    """Why a file cannot be written at ``path``, or ``""``: it is a folder, its folder is
    missing or is a file, or permissions forbid writing it (or in its folder)."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        return f"{path} is a folder; give a file name"
    if not folder.exists():
        return f"{path}: the folder {folder} does not exist; create it first"
    if not folder.is_dir():
        return f"{path}: {folder} is a file, not a folder"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path}: no permission to overwrite it"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{path}: no permission to write in {folder}"
    return ""


def cannot_write_folder(path: str | Path) -> str:
    """Why files cannot be written into the folder ``path`` (made with its parents when
    missing), or ``""``: it or a parent is a file, or permissions forbid it."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{path}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{path}: no permission to write in {existing}"
    return ""
