"""The ``hpcopt`` command line.

Exit status: 0 when every trial completed, 1 when a trial failed (``plot``: when a figure
could not be made), 2 for a bad config, flag or campaign folder, 130 when interrupted by
Ctrl-C and 143 by SIGTERM (resume with ``hpcopt resume DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from rich.table import Table

from hpcopt import __version__
from hpcopt import config as cfg
from hpcopt.cli import lock as cli_lock
from hpcopt.cli import pbe as cli_pbe
from hpcopt.cli import show
from hpcopt.cli import slurm as cli_slurm
from hpcopt.cli import store as cli_store
from hpcopt.cli.show import console
from hpcopt.core.outputs import cannot_write_file, cannot_write_folder
from hpcopt.dashboard import watch
from hpcopt.driver import campaign as drv
from hpcopt.driver import reporters
from hpcopt.engine.ray_node import ClusterError
from hpcopt.store.campaign_store import CampaignStore, StoreError, write_summary

EXIT_OK, EXIT_TRIAL_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended
EXIT_FIGURE_FAILED = 1  # hpcopt plot: a figure that was asked for could not be made

EPILOG = """\
examples:
  hpcopt run configs/quickstart.yaml            run a campaign here, on the CPU
  hpcopt expand configs/quickstart.yaml         list the trials a config expands to
  hpcopt show runs/quickstart                   trials, status and best results
  hpcopt watch runs/quickstart                  a live dashboard (Ctrl-C to leave)
  hpcopt summary runs/quickstart                the results as CSV and JSON
  hpcopt plot runs/quickstart                   convergence and radio-map PNGs
  hpcopt resume runs/quickstart                 continue after Ctrl-C, kill or crash
  hpcopt submit configs/ray-demo.yaml --nodes 2 --gpus-per-node 4 --time 24:00:00
  hpcopt status runs/ray-demo                   Slurm state and progress
  hpcopt pbe simulate configs/pbe-1d.yaml -o psd.h5   a forward dPBE run
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpcopt`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except cfg.ConfigError as exc:
        print(f"hpcopt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, ClusterError) as exc:
        print(f"hpcopt: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpcopt",
        description="Run long optimisation campaigns locally or on a cluster, resumable from HDF5.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hpcopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="validate a campaign config and run it",
        description="Validate CONFIG, create the campaign folder (output_dir) and run every "
        "trial, checkpointing after each batch. Refuses a folder that already holds a "
        "campaign: continue that one with 'hpcopt resume'.",
    )
    p.add_argument("config", help="campaign config file (YAML or JSON)")
    p.add_argument(
        "-o", "--output-dir", help="campaign folder (overrides output_dir in the config)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print no progress lines")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "resume",
        help="continue an interrupted campaign from its store",
        description="Continue the campaign in DIR from each trial's last checkpoint, with "
        "the config stored in DIR. Completed trials are skipped; nothing is evaluated twice "
        "except the batch that was in flight when the campaign stopped.",
    )
    p.add_argument("dir", help="campaign folder")
    p.add_argument("--retry-failed", action="store_true", help="also continue failed trials")
    p.add_argument(
        "--submit", action="store_true", help="resume as a Slurm job, configured as before"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print no progress lines")
    p.set_defaults(func=_resume)

    p = sub.add_parser(
        "show",
        help="print a campaign's trials, status and best results",
        description="Print the trials of the campaign in DIR with their status, evaluations "
        "and best result. Safe to run while the campaign is running.",
    )
    p.add_argument("dir", help="campaign folder")
    p.add_argument("--json", action="store_true", help="print the summary rows as JSON")
    p.set_defaults(func=_show)

    p = sub.add_parser(
        "watch",
        help="a live dashboard of a campaign (running, finished or interrupted)",
        description="Show the campaign in DIR: trials with progress against their budget, "
        "best values and when they last improved, throughput, workers, Slurm jobs and the "
        "latest failures, redrawn from the store until Ctrl-C. Reads only: safe beside a "
        "running driver, also from another node on a shared file system.",
    )
    p.add_argument("dir", help="campaign folder")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    p.set_defaults(func=_watch)

    p = sub.add_parser(
        "summary",
        help="the table of trials and best results, exported to CSV and JSON",
        description="Print the trials of DIR with their best results and write "
        "DIR/summary.csv and DIR/summary.json (or the files --csv and --json name).",
    )
    p.add_argument("dir", help="campaign folder")
    p.add_argument("--csv", help="write the CSV here instead of DIR/summary.csv")
    p.add_argument("--json", help="write the JSON here instead of DIR/summary.json")
    p.set_defaults(func=_summary)

    p = sub.add_parser(
        "plot",
        help="PNG figures: convergence per trial and method, best radio map, PSD fits",
        description="Draw DIR's convergence (best so far against evaluations and wall time, "
        "per trial and per method) and, for coverage trials, the radio map of the best "
        "placement on the floor plan, for PBE trials the fitted against the measured PSDs. "
        "The physics figures recompute the best point (Sionna RT, the dPBE solver). Exit "
        "status: 0; 1 when a figure could not be made (each is named, with why; the others "
        "are written); 2 for a bad folder, flag or trial name.",
    )
    p.add_argument("dir", help="campaign folder")
    p.add_argument("-o", "--out", help="folder for the PNGs (default DIR/plots)")
    p.add_argument("--trial", action="append", help="only this trial (repeatable)")
    p.add_argument("--no-physics", action="store_true", help="convergence only: recompute nothing")
    p.set_defaults(func=_plot)

    p = sub.add_parser(
        "expand",
        help="validate a config and print the trials it expands to, without running",
        description="Validate CONFIG and print its trials after merging 'shared' and "
        "expanding 'sweep_groups'. Writes nothing.",
    )
    p.add_argument("config", help="campaign config file (YAML or JSON)")
    p.add_argument("--json", action="store_true", help="print each trial's full config as JSON")
    p.set_defaults(func=_expand)
    cli_slurm.add_parsers(sub)
    cli_lock.add_parsers(sub)
    cli_pbe.add_parsers(sub)
    cli_store.add_parsers(sub)
    return parser


def _reporter(quiet: bool) -> reporters.Reporter:
    """Progress bars in a terminal, plain lines elsewhere (Slurm logs), nothing if quiet."""
    if quiet:
        return reporters.SilentReporter()
    if sys.stderr.isatty():
        return reporters.ProgressReporter()
    return reporters.LineReporter()


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the campaign stops as on Ctrl-C (every trial at its last
    checkpoint, the engine and its private Ray shut down)."""


# Set when SIGTERM arrives: the exception's type alone can lose it (a SIGTERM once ended
# a Ray run with 130, a plain KeyboardInterrupt, likely re-raised by Ray's own signal
# check inside a blocking call).
_SIGTERM_SEEN = threading.Event()


def _terminated(signum: int, frame: object) -> None:
    _SIGTERM_SEEN.set()
    raise Terminated


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a campaign runs in this process."""
    _SIGTERM_SEEN.clear()
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread: leave the signal alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _drive(campaign: cfg.Campaign, store: CampaignStore, quiet: bool, **kwargs) -> list:
    reporter = _reporter(quiet)
    try:
        with _sigterm_stops():
            return drv.run(campaign, store, reporter=reporter, **kwargs)
    finally:
        close = getattr(reporter, "close", None)
        if close is not None:
            close()


def _finish(outcomes: list[reporters.TrialOutcome], root: str) -> int:
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"campaign folder: {root}", file=sys.stderr)
    if failed:
        print(
            f"{len(failed)} trial(s) failed: {', '.join(o.name for o in failed)}", file=sys.stderr
        )
        return EXIT_TRIAL_FAILED
    return EXIT_OK


def _interrupted(root: str, stop: KeyboardInterrupt) -> int:
    terminated = isinstance(stop, Terminated) or _SIGTERM_SEEN.is_set()
    how = "terminated (SIGTERM)" if terminated else "interrupted"
    print(
        f"\n{how}: every trial's last checkpoint is kept; continue with 'hpcopt resume {root}'",
        file=sys.stderr,
    )
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    campaign = cfg.load(args.config, output_dir=args.output_dir)
    store = drv.create(campaign)
    try:
        outcomes = _drive(campaign, store, args.quiet)
    except KeyboardInterrupt as stop:
        return _interrupted(campaign.output_dir, stop)
    return _finish(outcomes, campaign.output_dir)


def _resume(args: argparse.Namespace) -> int:
    if args.submit:
        return cli_slurm.resubmit(args.dir)
    store, campaign = drv.reopen(args.dir)
    made_with = store.attrs().get("hpcopt_version")
    if made_with != __version__:
        # Stored trials keep only the keys their config set: the others take this
        # version's defaults, which may have changed (coverage's max_depth, floor_dbm).
        print(
            f"hpcopt: warning: {args.dir} was created with hpcopt {made_with}, this is "
            f"{__version__}; settings the config left out now take {__version__}'s "
            "defaults (see the README's notes on changes)",
            file=sys.stderr,
        )
    try:
        outcomes = _drive(campaign, store, args.quiet, retry_failed=args.retry_failed)
    except KeyboardInterrupt as stop:
        return _interrupted(args.dir, stop)
    return _finish(outcomes, args.dir)


def _show(args: argparse.Namespace) -> int:
    return show.show(args.dir, as_json=args.json)


def _watch(args: argparse.Namespace) -> int:

    if args.interval <= 0:
        print("hpcopt watch: --interval must be > 0 seconds", file=sys.stderr)
        return EXIT_USAGE
    return watch(args.dir, once=args.once, interval_s=args.interval)


def _summary(args: argparse.Namespace) -> int:

    store = CampaignStore.open(args.dir)
    if args.csv is None and args.json is None:
        targets = [("", store.folder.summary_csv), ("", store.folder.summary_json)]
    else:
        targets = [
            (f"--{k} ", p) for k, p in (("csv", args.csv), ("json", args.json)) if p is not None
        ]
    for flag, path in targets:  # all checked before either is written
        if reason := cannot_write_file(path):
            print(f"hpcopt summary: {flag}{reason}", file=sys.stderr)
            return EXIT_USAGE
    if args.csv is None and args.json is None:
        store.export_summary()
    else:
        write_summary(store.summary(), csv_path=args.csv, json_path=args.json)
    _show(argparse.Namespace(dir=args.dir, json=False))
    print(f"wrote {', '.join(str(p) for _, p in targets)}", file=sys.stderr)
    return EXIT_OK


def _plot(args: argparse.Namespace) -> int:
    from hpcopt.plots import FiguresFailed, plot_campaign  # matplotlib: only for this command

    out = args.out or CampaignStore.open(args.dir).folder.plots
    if reason := cannot_write_folder(out):
        print(f"hpcopt plot: {'-o ' if args.out else ''}{reason}", file=sys.stderr)
        return EXIT_USAGE
    try:
        paths = plot_campaign(args.dir, out, args.trial, physics=not args.no_physics)
    except ValueError as exc:
        print(f"hpcopt plot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FiguresFailed as exc:
        for path in exc.written:
            print(path)
        for name, why in exc.failed.items():
            print(f"hpcopt plot: no {name}: {why}", file=sys.stderr)
        return EXIT_FIGURE_FAILED
    for path in paths:
        print(path)
    return EXIT_OK


def _expand(args: argparse.Namespace) -> int:
    campaign = cfg.load(args.config)
    if args.json:
        print(json.dumps([t.model_dump(mode="json") for t in campaign.trials], indent=2))
        return EXIT_OK
    table = Table(title=f"{campaign.name}: {len(campaign.trials)} trials -> {campaign.output_dir}")
    for col in ("trial", "method", "problem", "seed"):
        table.add_column(col)
    for t in campaign.trials:
        table.add_row(t.name, t.method.name, t.problem.label, str(t.seed))
    console().print(table)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
