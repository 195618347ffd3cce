"""The ``hpcopt unlock`` command: remove a campaign's driver locks that no driver holds."""

from __future__ import annotations

import argparse

from hpcopt.store.campaign_store import CampaignStore, StoreError
from hpcopt.store.lock import break_locks, describe


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``unlock``."""
    p = sub.add_parser(
        "unlock",
        help="remove a campaign's stale driver locks (--force: one held on another host)",
        description="Remove the driver locks (driver*.json) of DIR whose driver is gone. A "
        "driver on this host is checked (a dead pid, or a pid now used by another process, "
        "is gone) and a live one is never removed. A lock held on another host cannot be "
        "checked from here: it is removed only with --force, once you are sure that driver "
        "is gone (two drivers on one campaign would duplicate work).",
    )
    p.add_argument("dir", help="campaign folder")
    p.add_argument(
        "--force",
        action="store_true",
        help="also remove locks held on other hosts, and unreadable ones",
    )
    p.set_defaults(func=_unlock)


def _unlock(args: argparse.Namespace) -> int:
    store = CampaignStore.open(args.dir)
    removed, kept = break_locks(store.root, force=args.force)
    for path, info in removed:
        print(f"removed {path}: " + (describe(info) if info else "not a readable lock"))
    if kept:
        raise StoreError("kept " + "; ".join(kept))
    if not removed:
        print(f"{store.root}: no driver lock")
    return 0
