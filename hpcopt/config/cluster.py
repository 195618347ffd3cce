"""The ``slurm:`` section of a campaign config and its ``container:``: schema only.

Values go into a job script, so each is checked here, before a campaign folder exists.
This module imports pydantic and nothing else of hpcopt's runtime.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IMAGE_PYTHON = "/opt/hpcopt/venv/bin/python"


class ContainerConfig(BaseModel):
    """``container:`` inside ``slurm:``: where the job's processes run."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    runtime: Literal["none", "apptainer", "charliecloud"] = Field(
        "none", description="run the job's processes in an image: apptainer, charliecloud or none"
    )
    image: str | None = Field(
        None, description="the image: a .sif file (apptainer) or an image folder/squashfs"
    )
    binds: list[str] = Field(
        default_factory=list, description="folders bound into the image: SRC or SRC:DST[:OPTIONS]"
    )
    gpu: bool = Field(True, description="bring the host's NVIDIA driver in (apptainer --nv)")
    python: str = Field(IMAGE_PYTHON, description="the image's Python interpreter")
    options: list[str] = Field(
        default_factory=list, description="more words for apptainer exec or ch-run"
    )

    @model_validator(mode="after")
    def _image(self) -> ContainerConfig:
        if self.runtime != "none" and not self.image:
            raise ValueError(f"runtime {self.runtime!r} needs 'image': a .sif file or folder")
        for bind in self.binds:
            if not bind or bind.count(":") > 2 or not bind.startswith("/"):
                raise ValueError(
                    f"binds: {bind!r} must be SRC or SRC:DST[:OPTIONS] with absolute paths"
                )
        return self

    @property
    def enabled(self) -> bool:
        return self.runtime != "none"


_TIME = re.compile(
    r"""^(?:
        (?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?  # D-HH[:MM[:SS]]
      | (?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?                   # MM[:SS], HH:MM:SS
    )$""",
    re.VERBOSE,
)
TIME_FORMS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
# Values of sbatch options that go into the script's #SBATCH lines as they are.
_WORD = re.compile(r"^\S+$")
_MEM = re.compile(r"^\d+[KMGTkmgt]?$")


class SlurmConfig(BaseModel):
    """``slurm:`` section of a campaign config; ``hpcopt submit`` flags override it.
    Values go into the job script: each is checked here, before a campaign folder exists,
    so that sbatch does not refuse a job whose folder is already made."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    nodes: int = Field(
        1, ge=1, description="nodes, one Ray node each (rank 0 also runs the driver)"
    )
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node")
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs per node (one task per node)")
    partition: str | None = Field(None, description="Slurm partition")
    time: str = Field("01:00:00", description=f"time limit: {TIME_FORMS}")
    account: str | None = Field(None, description="Slurm account")
    qos: str | None = Field(None, description="Slurm quality of service")
    constraint: str | None = Field(None, description="node features, e.g. a100")
    mem: str | None = Field(None, description="memory per node, e.g. 64G")
    job_name: str | None = Field(None, description="job name, one word (default hpcopt-NAME)")
    max_num_timeout: int = Field(3, ge=0, description="requeues allowed after the time limit")
    signal_delay_s: int = Field(
        120, ge=10, description="seconds before the time limit that Slurm sends USR2"
    )
    join_timeout_s: float = Field(300.0, gt=0, description="how long nodes may take to join Ray")
    array_per_trial: bool = Field(
        False, description="one array task (and one Ray cluster) per trial"
    )
    setup: list[str] = Field(
        default_factory=list, description="shell lines run before the tasks start"
    )
    container: ContainerConfig = Field(
        ContainerConfig(), description="where the job's processes run"
    )

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        time_seconds(value)
        return value

    @field_validator("partition", "account", "qos", "constraint", "job_name")
    @classmethod
    def _word(cls, value: str | None) -> str | None:
        if value is not None and not _WORD.match(value):
            raise ValueError("must be one word without spaces")
        return value

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is not None and not _MEM.match(value):
            raise ValueError(
                "must be a whole number with an optional unit K, M, G or T (megabytes "
                "without one), e.g. 64G"
            )
        return value

    @property
    def minutes(self) -> int:
        """The time limit in whole minutes, seconds rounded up (at least 1)."""
        return max(1, -(-time_seconds(self.time) // 60))


def time_seconds(value: str) -> int:
    """The seconds of a Slurm time limit; ``ValueError`` naming the allowed forms unless
    it is one of them (:data:`TIME_FORMS`), minutes and seconds below 60 where hours come
    before them, hours below 24 after days, and more than 0 (Slurm's 0 means no limit)."""
    match = _TIME.match(value)
    if match is None:
        raise ValueError(f"not a Slurm time limit; give {TIME_FORMS}")
    g = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    if "days" in g:
        hours, minutes, seconds = g["dh"], g.get("dm", 0), g.get("ds", 0)
        over = [("hours", hours, 24), ("minutes", minutes, 60), ("seconds", seconds, 60)]
        total = ((g["days"] * 24 + hours) * 60 + minutes) * 60 + seconds
    elif "c" in g:  # HH:MM:SS
        over = [("minutes", g["b"], 60), ("seconds", g["c"], 60)]
        total = (g["a"] * 60 + g["b"]) * 60 + g["c"]
    else:  # MM or MM:SS
        over = [("seconds", g.get("b", 0), 60)]
        total = g["a"] * 60 + g.get("b", 0)
    for name, number, limit in over:
        if number >= limit:
            raise ValueError(
                f"{name} must be below {limit}, got {number}; the forms are {TIME_FORMS}"
            )
    if total == 0:
        raise ValueError("give a limit above 0 (Slurm reads 0 as no limit)")
    return total
