"""The campaign's record of its Slurm submissions: ``slurm.json``, a list of
``{submitted_at, job_ids}``, oldest first."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def record_jobs(root: Path, ids: list[str]) -> None:
    """Append submitted job ids to ``root/slurm.json`` (atomically)."""
    path = root / "slurm.json"
    known = jobs_of(root)
    known.append({"submitted_at": time.time(), "job_ids": ids})
    tmp = path.with_name(f".slurm.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1))
    os.replace(tmp, path)


def jobs_of(root: Path) -> list[dict[str, Any]]:
    """Every submission recorded for the campaign, oldest first."""
    try:
        return json.loads((root / "slurm.json").read_text())
    except FileNotFoundError:
        return []
