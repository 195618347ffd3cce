"""``hpcopt show``: a campaign's state and its trials, as a table or JSON."""

from __future__ import annotations

import json
import sys
import time

from rich.console import Console
from rich.table import Table

from hpcopt.store.campaign_store import CampaignStore
from hpcopt.store.confirm import format_confirmed
from hpcopt.store.lock import read_drivers


def show(root: str, as_json: bool = False) -> int:
    """Print the campaign at ``root``: its state and a table of trials (``as_json``: the
    summary rows as JSON). Returns the exit status, 0."""
    store = CampaignStore.open(root)
    rows = store.summary()
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    attrs = store.attrs()
    alive = [d for d in read_drivers(store.root) if d["alive"]]
    if alive:
        state = "running (" + ", ".join(f"pid {d['pid']} on {d['host']}" for d in alive) + ")"
    elif any(r["status"] in ("running", "pending") for r in rows):
        state = "stopped before the end: continue with 'hpcopt resume'"
    else:
        state = "finished"
    for r in rows:
        if "damaged" in r:
            print(f"hpcopt: warning: trial {r['trial']}: {r['damaged']}", file=sys.stderr)
    out = console()
    out.print(f"[bold]{attrs['name']}[/bold]  {store.root}")
    out.print(f"created {time.ctime(attrs['created_at'])}  ·  {state}")
    # the confirmed columns only where some trial confirms its winners: others look as before
    confirmed = any("confirmed_value" in r for r in rows)
    table = Table(show_edge=False)
    for col in (
        "trial",
        "method",
        "problem",
        "seed",
        "status",
        "evaluations",
        "failed",
        "best value",
        "best point",
        *(("confirmed", "confirmed point") if confirmed else ()),
    ):
        table.add_column(
            col, justify="right" if col in ("evaluations", "failed", "seed") else "left"
        )
    for r in rows:
        best = "-" if r["best_value"] is None else f"{r['best_value']:.6g}"
        status = r["status"] + (f" ({r['error'][:60]})" if r["error"] else "")
        cells = [r["trial"], r["method"], r["problem"], str(r["seed"]), status,
                 str(r["evaluations"]), str(r["failed"]), best, _point(r, "best.")]  # fmt: skip
        if confirmed:
            value = format_confirmed(r.get("confirmed_value"), r.get("confirmed_se"))
            cells += [value, _point(r, "confirmed.")]
        table.add_row(*cells)
    out.print(table)
    return 0


def _point(row: dict, prefix: str) -> str:
    """``a=0.5, b=1`` from a summary row's ``<prefix><parameter>`` keys."""
    return ", ".join(f"{k[len(prefix) :]}={v:.4g}" for k, v in row.items() if k.startswith(prefix))


def console() -> Console:
    """A console that does not squeeze tables to 80 columns when piped or logged."""
    console = Console()
    return console if console.is_terminal else Console(width=200)
