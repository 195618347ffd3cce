"""The campaign's record of its Slurm submissions: ``slurm.json``, a list of
``{submitted_at, job_ids}``, oldest first."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hpcopt.core.files import DamagedFile, os_reason, write_text
from hpcopt.store.folder import CampaignFolder

_SHAPE = 'it must be a list of {"submitted_at": seconds, "job_ids": ["123", ...]}'


def record_jobs(root: Path, ids: list[str]) -> None:
    """Append submitted job ids to ``root/slurm.json`` (atomically)."""
    known = jobs_of(root)
    known.append({"submitted_at": time.time(), "job_ids": ids})
    write_text(CampaignFolder(root).slurm_jobs, json.dumps(known, indent=1))


def jobs_of(root: Path) -> list[dict[str, Any]]:
    """Every submission recorded for the campaign, oldest first (``[]`` if none was).

    Raises :class:`DamagedFile` naming ``slurm.json`` and what is wrong when it cannot be
    read, is not JSON, or is not a list of ``{submitted_at: number, job_ids: [str]}``.
    """
    path = CampaignFolder(root).slurm_jobs
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DamagedFile(path, f"cannot be read: {os_reason(exc)}") from None
    try:
        submissions = json.loads(text)
    except ValueError as exc:
        raise DamagedFile(path, f"not JSON ({exc}); {_SHAPE}") from None
    if not isinstance(submissions, list):
        raise DamagedFile(path, f"holds a {type(submissions).__name__}; {_SHAPE}")
    for n, s in enumerate(submissions):
        ok = (
            isinstance(s, dict)
            and isinstance(s.get("submitted_at"), int | float)
            and isinstance(s.get("job_ids"), list)
            and all(isinstance(i, str) and i for i in s["job_ids"])
        )
        if not ok:
            raise DamagedFile(path, f"submission {n} is {json.dumps(s)[:200]}; {_SHAPE}")
    return submissions


def job_ids(root: Path) -> list[str]:
    """The ids of every job submitted for the campaign, oldest first (array tasks as
    ``123_4``); :class:`DamagedFile` as :func:`jobs_of`."""
    return [job for submission in jobs_of(root) for job in submission["job_ids"]]
