"""The Slurm commands of the ``hpcopt`` CLI: submit, status, cancel (and resume --submit)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from pydantic import ValidationError

from hpcopt import config as cfg
from hpcopt.cli.show import show
from hpcopt.cluster.queue import LIVE, QueueError, job_states
from hpcopt.cluster.slurm import check_submittable, render_sbatch, submit
from hpcopt.config.cluster import TIME_FORMS, SlurmConfig
from hpcopt.driver import campaign as drv
from hpcopt.store.jobs import job_ids

FLAGS = {  # flag -> (SlurmConfig field, type, help)
    "--nodes": ("nodes", int, "nodes, one Ray node each (rank 0 also runs the driver)"),
    "--gpus-per-node": ("gpus_per_node", int, "GPUs per node"),
    "--cpus-per-task": ("cpus_per_task", int, "CPUs per node (one task per node)"),
    "--partition": ("partition", str, "Slurm partition"),
    "--time": ("time", str, f"time limit: {TIME_FORMS}"),
    "--account": ("account", str, "Slurm account"),
    "--qos": ("qos", str, "Slurm quality of service"),
    "--constraint": ("constraint", str, "node features, e.g. a100"),
    "--mem": ("mem", str, "memory per node, e.g. 64G"),
    "--max-num-timeout": ("max_num_timeout", int, "requeues allowed after the time limit"),
    "--join-timeout-s": ("join_timeout_s", float, "how long nodes may take to join Ray"),
}
CONTAINER_FLAGS = {  # flag -> (ContainerConfig field, help)
    "--container-runtime": (
        "runtime",
        "run the job's processes in an image: apptainer, charliecloud or none",
    ),
    "--image": ("image", "the image: a .sif file (apptainer) or an image folder/squashfs"),
}


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
    for flag, (_, kind, text) in FLAGS.items():
        p.add_argument(flag, type=kind, help=text)
    for flag, (_, text) in CONTAINER_FLAGS.items():
        p.add_argument(flag, help=text)
    p.add_argument(
        "--array-per-trial",
        action="store_true",
        default=None,
        help="one array task (and one Ray cluster) per trial",
    )
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
    overrides = {
        field: getattr(args, flag[2:].replace("-", "_"))
        for flag, (field, _, _) in FLAGS.items()
        if getattr(args, flag[2:].replace("-", "_")) is not None
    }
    if args.array_per_trial:
        overrides["array_per_trial"] = True
    container = {
        field: getattr(args, flag[2:].replace("-", "_"))
        for flag, (field, _) in CONTAINER_FLAGS.items()
        if getattr(args, flag[2:].replace("-", "_")) is not None
    }
    base = campaign.slurm.model_dump()
    if container:
        overrides["container"] = {**base["container"], **container}
    try:
        return SlurmConfig.model_validate({**base, **overrides})
    except ValidationError as exc:
        raise cfg.ConfigError("(submit flags)", _flag_messages(exc)) from None


def _flag_messages(exc: ValidationError) -> list[str]:
    """One line per problem, named by its flag where it has one, else its ``slurm.`` key."""
    flags = {field: flag for flag, (field, _, _) in FLAGS.items()}
    flags |= {f"container.{field}": flag for flag, (field, _) in CONTAINER_FLAGS.items()}
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
    print(f"follow it with: hpcopt status {root}   (logs in {root / 'slurm'})")
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
