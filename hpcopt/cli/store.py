"""``hpcopt check``: verify every file of a campaign folder and say what resume would do."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hpcopt.store.campaign_store import CampaignStore

EXIT_INTACT, EXIT_RECOVERABLE, EXIT_DAMAGED = 0, 1, 2
_STYLE = {"ok": "green", "note": "dim", "recoverable": "yellow", "damaged": "bold red"}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``check`` to the ``hpcopt`` command line."""
    p = sub.add_parser(
        "check",
        help="verify every file of a campaign against its checksum",
        description="Read every file of the campaign in DIR, verify its checksum and the "
        "chain of each trial's checkpoints, and list what was found: intact files, "
        "leftovers resume removes, damage after a trial's last intact checkpoint (resume "
        "sets it aside into quarantine/ and continues from that checkpoint), and damage "
        "that stops resume until you act. Changes nothing. Exit status: 0 intact, 1 "
        "recoverable damage, 2 damage resume cannot get past.",
    )
    p.add_argument("dir", help="campaign folder")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--all", action="store_true", help="also list the intact files")
    p.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    store = CampaignStore(Path(args.dir))
    if not store.campaign_file.is_file():
        CampaignStore.open(args.dir)  # raises the StoreError that says what is missing
    found = store.check()  # a damaged campaign.h5 is a finding, not an error, here
    if args.json:
        print(json.dumps([asdict(f) for f in found], indent=2))
    else:
        table = Table(show_edge=False)
        for col in ("file", "state", "what"):
            table.add_column(col, overflow="fold")
        for f in found:
            if args.all or f.severity != "ok":
                style = _STYLE[f.severity]
                table.add_row(f.path, f"[{style}]{f.severity}[/{style}]", f.message)
        console = Console() if sys.stdout.isatty() else Console(width=200)
        counts = {s: sum(f.severity == s for f in found) for s in _STYLE}
        console.print(f"{args.dir}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        if table.row_count:
            console.print(table)
    severities = {f.severity for f in found}
    if "damaged" in severities:
        return EXIT_DAMAGED
    return EXIT_RECOVERABLE if "recoverable" in severities else EXIT_INTACT
