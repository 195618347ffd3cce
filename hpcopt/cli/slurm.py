"""The Slurm commands of the ``hpcopt`` CLI: submit, status, cancel (and resume --submit)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from hpcopt import config as cfg
from hpcopt.cli.show import show
from hpcopt.cluster.queue import LIVE, QueueError, job_states
from hpcopt.cluster.slurm import check_submittable, render_sbatch, submit
from hpcopt.config.cluster import ContainerConfig, SlurmConfig
from hpcopt.driver import campaign as drv
from hpcopt.store.folder import CampaignFolder
from hpcopt.store.jobs import job_ids

# The config keys that ``hpcopt submit`` takes as flags, and each flag's name: the rest
# (type, help) comes from the models, so a flag says what its key says.
SLURM_FLAGS = {
    key: "--" + key.replace("_", "-")
    for key in ("nodes", "gpus_per_node", "cpus_per_task", "partition", "time", "account",
                "qos", "constraint", "mem", "max_num_timeout", "join_timeout_s",
                "array_per_trial")
}  # fmt: skip
CONTAINER_FLAGS = {"runtime": "--container-runtime", "image": "--image"}


@dataclass(frozen=True)
class Flag:
    """One ``hpcopt submit`` flag: its name, the ``slurm:`` key it sets (``container.image``
    inside the container section), the type of its value and its help."""

    flag: str
    key: str
    kind: type
    help: str

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


def submit_flags() -> list[Flag]:
    """The flags of ``hpcopt submit`` that override the config's ``slurm:`` section."""
    sections: list[tuple[type[BaseModel], dict[str, str], str]] = [
        (SlurmConfig, SLURM_FLAGS, ""),
        (ContainerConfig, CONTAINER_FLAGS, "container."),
    ]
    return [
        Flag(flag, prefix + key, _value_type(model.model_fields[key].annotation),
             model.model_fields[key].description or "")
        for model, flags, prefix in sections
        for key, flag in flags.items()
    ]  # fmt: skip


def _value_type(annotation: Any) -> type:
    """``int`` of ``int | None``, ``bool`` of ``bool``; ``str`` for strings and literals."""
    if get_origin(annotation) is Literal:
        return str
    kinds = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    return kinds[0] if kinds[0] in (int, float, bool) else str


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``submit``, ``status`` and ``cancel``."""
    p = sub.add_parser(
        "submit",
        help="submit a campaign to Slurm (submitit brings Ray up on the allocation)",
        description="Validate CONFIG, create the campaign folder and submit it to Slurm "
        "through submitit: one task per node, rank 0 runs the Ray head and the driver, the "
        "other ranks Ray workers. Flags override the config's 'slurm:' section. The job "
        "requeues itself on preemption and at the time limit, and resumes from the store.",
    )
    p.add_argument("config", help="campaign config file (its engine must be kind: ray)")
    p.add_argument("-o", "--output-dir", help="campaign folder (overrides output_dir)")
    for f in submit_flags():
        if f.kind is bool:
            p.add_argument(f.flag, action="store_true", default=None, help=f.help)
        else:
            p.add_argument(f.flag, type=f.kind, help=f.help)
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script; write nothing")
    p.set_defaults(func=_submit)

    p = sub.add_parser(
        "status",
        help="Slurm state of a campaign's jobs beside its progress",
        description="Print the Slurm state of the jobs submitted for DIR (squeue, sacct "
        "where accounting is on) and the campaign's trials.",
    )
    p.add_argument("dir", help="campaign folder")
    p.set_defaults(func=_status)

    p = sub.add_parser(
        "cancel",
        help="cancel a campaign's Slurm jobs (Ray is torn down, the store stays)",
        description="scancel the jobs of DIR that are still queued or running. Every rank "
        "stops its Ray node on the way out; evaluations already checkpointed are kept: "
        "continue later with 'hpcopt resume DIR --submit'.",
    )
    p.add_argument("dir", help="campaign folder")
    p.set_defaults(func=_cancel)


def _slurm_for(campaign: cfg.Campaign, args: argparse.Namespace) -> SlurmConfig:
    merged = campaign.slurm.model_dump()
    for f in submit_flags():
        value = getattr(args, f.dest)
        if value is not None:
            *section, key = f.key.split(".")
            (merged[section[0]] if section else merged)[key] = value
    try:
        return SlurmConfig.model_validate(merged)
    except ValidationError as exc:
        raise cfg.ConfigError("(submit flags)", _flag_messages(exc)) from None


def _flag_messages(exc: ValidationError) -> list[str]:
    """One line per problem, named by its flag where it has one, else its ``slurm.`` key."""
    flags = {f.key: f.flag for f in submit_flags()}
    out = []
    for e in exc.errors():
        key = ".".join(map(str, e["loc"]))
        where = flags.get(key, f"slurm.{key}" if key else "slurm")
        got = f" (got {e['input']!r})" if not isinstance(e["input"], dict | list) else ""
        out.append(f"{where}: {e['msg'].removeprefix('Value error, ')}{got}")
    return out


def _submit(args: argparse.Namespace) -> int:
    campaign = cfg.load(args.config, output_dir=args.output_dir)
    slurm = _slurm_for(campaign, args)
    check_submittable(campaign)
    root = Path(campaign.output_dir).resolve()
    if args.dry_run:
        print(render_sbatch(root, slurm, campaign.name))
        return 0
    document = {**campaign.document, "slurm": slurm.model_dump(exclude_defaults=True)}
    campaign = campaign.model_copy(update={"slurm": slurm, "document": document})
    drv.create(campaign)
    ids = submit(root, slurm, campaign.name, [t.name for t in campaign.trials])
    print(f"submitted job {', '.join(ids)} for campaign {root}")
    print(f"follow it with: hpcopt status {root}   (logs in {CampaignFolder(root).job_logs})")
    return 0


def resubmit(root: str) -> int:
    """``hpcopt resume DIR --submit``: submit the campaign again as it was configured."""
    _, campaign = drv.reopen(root)
    check_submittable(campaign)
    ids = submit(
        Path(root).resolve(), campaign.slurm, campaign.name, [t.name for t in campaign.trials]
    )
    print(f"submitted job {', '.join(ids)} to resume {root}")
    return 0


def _status(args: argparse.Namespace) -> int:
    ids = job_ids(Path(args.dir))
    if not ids:
        print(f"{args.dir}: no Slurm job was submitted for this campaign")
    try:
        states = job_states(ids)
    except QueueError as exc:
        show(args.dir)
        print(f"hpcopt: cannot tell the state of job {', '.join(ids)}: {exc}", file=sys.stderr)
        return 2
    for job, state in states.items():
        print(f"slurm job {job}: {state}")
    return show(args.dir)


def _cancel(args: argparse.Namespace) -> int:
    ids = job_ids(Path(args.dir))
    # a QueueError (squeue could not be asked) ends this with status 2: never "nothing to
    # cancel" when the queue was not read
    live = [j for j, state in job_states(ids).items() if state.split()[0] in LIVE]
    if not live:
        print(f"{args.dir}: no queued or running job to cancel")
        return 0
    done = subprocess.run(["scancel", *live], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        print(f"hpcopt: scancel failed: {done.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"cancelled job {', '.join(live)}; the store keeps every checkpointed evaluation")
    return 0
