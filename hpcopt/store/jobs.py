"""The campaign's record of its Slurm submissions: ``slurm.json``, a list of
``{submitted_at, job_ids}``, oldest first."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hpcopt.core.files import write_text
from hpcopt.store.folder import CampaignFolder


def record_jobs(root: Path, ids: list[str]) -> None:
    """Append submitted job ids to ``root/slurm.json`` (atomically)."""
    known = jobs_of(root)
    known.append({"submitted_at": time.time(), "job_ids": ids})
    write_text(CampaignFolder(root).slurm_jobs, json.dumps(known, indent=1))


def jobs_of(root: Path) -> list[dict[str, Any]]:
    """Every submission recorded for the campaign, oldest first."""
    try:
        return json.loads((root / "slurm.json").read_text())
    except FileNotFoundError:
        return []
