"""``hpcopt pbe simulate``: a forward dPBE run written to HDF5 (or CSV), optionally noised.

The output holds ``t``, ``x`` and ``values`` with ``quantity`` and ``size_unit`` attributes
(the measured-data format, so it can be fitted as ``data: {path: ...}``), and, in HDF5,
the raw class concentrations ``N`` (#/m^3), ``class_volumes_m3`` and the parameters.
A section with ``experiments`` runs the one named by ``--experiment``, with its own model,
known values and synthetic parameters (mapped to its model's names by its ``rename``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pydantic import ValidationError

from hpcopt import config as cfg
from hpcopt.core.outputs import cannot_write_file
from hpcopt.problems.pbe.config import PBEConfig
from hpcopt.problems.pbe.data import (
    CSV_SUFFIXES,
    HDF5_SUFFIXES,
    NOISE_MODELS,
    add_noise,
    save_psd,
)
from hpcopt.problems.pbe.problem import simulate
from hpcopt.problems.pbe.psd import QUANTITIES
from hpcopt.problems.pbe.sections import PBEModel


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``pbe simulate``."""
    pbe = sub.add_parser("pbe", help="dPBE tools: forward simulation")
    pbe_sub = pbe.add_subparsers(dest="pbe_command", required=True, metavar="COMMAND")
    p = pbe_sub.add_parser(
        "simulate",
        help="run the dPBE at given parameters and write the PSD over time",
        description="Run the dPBE of SPEC's pbe problem (a campaign config: its first pbe "
        "trial or --trial; or a file holding just the problem section) at the parameter "
        "values of its synthetic.parameters and known, each overridden by --set. A section "
        "with experiments runs the one --experiment names; --set then names that "
        "experiment's own parameters (after its rename).",
    )
    p.add_argument("spec", help="campaign config or pbe problem section (YAML or JSON)")
    p.add_argument("-o", "--output", required=True, help="output file (.h5, .hdf5 or .csv)")
    p.add_argument("--trial", help="which trial of a campaign config")
    p.add_argument("--experiment", help="which experiment of a section with experiments")
    p.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a parameter value"
    )
    p.add_argument("--times", help="output times in s, comma-separated (default: the section's)")
    p.add_argument("--quantity", choices=QUANTITIES, default="q3", help="what to write")
    p.add_argument("--noise", metavar="MODEL:LEVEL", help=f"add noise: {', '.join(NOISE_MODELS)}")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:

    try:
        _check_output(args.output)
        section = _section(args.spec, args.trial)
        model, values, synthetic_times, start = _experiment(section, args.experiment)
        values.update(_assignments(args.set))
        times = _times(args.times, synthetic_times)
        noise = _noise(args.noise)
        sim = simulate(model, values, times, start)
        data = sim.psd(args.quantity)
        if noise:
            data = add_noise(data, noise[0], noise[1], np.random.default_rng(args.seed))
    except (ValueError, ValidationError) as exc:
        print(f"hpcopt pbe simulate: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output)
    try:
        save_psd(out, data)
    except (OSError, ValueError) as exc:
        print(f"hpcopt pbe simulate: {exc}", file=sys.stderr)
        return 2
    if out.suffix.lower() in (".h5", ".hdf5"):
        with h5py.File(out, "a") as f:
            f.create_dataset("N", data=sim.N)
            f.create_dataset("class_volumes_m3", data=sim.class_volumes_m3)
            f.attrs["parameters"] = json.dumps(sim.parameters)
            f.attrs["top_mass_fraction"] = sim.top_mass_fraction
            f.attrs["fines_fraction"] = sim.fines_fraction
    print(
        f"wrote {out}: {data.quantity} at {len(data.t)} times x {len(data.x)} sizes; "
        f"largest volume share in the last class {sim.top_mass_fraction:.2g}, "
        f"largest number share in the fines class {sim.fines_fraction:.2g}"
    )
    return 0


def _check_output(path: str) -> None:
    """``-o`` names a file of a known kind that can be written (before the run, not after)."""
    suffix = Path(path).suffix.lower()
    if suffix not in CSV_SUFFIXES + HDF5_SUFFIXES:
        raise ValueError(
            f"-o {path}: unknown file extension {suffix or '(none)'!r}; give "
            f"{', '.join(CSV_SUFFIXES + HDF5_SUFFIXES)}"
        )
    if reason := cannot_write_file(path):
        raise ValueError(f"-o {reason}")


def _section(path: str, trial: str | None) -> dict[str, Any]:
    try:
        doc = cfg.load_document(path)
    except cfg.ConfigError as exc:
        raise ValueError(str(exc)) from None
    if doc.get("name") == "pbe":
        return doc
    campaign = cfg.parse(doc, source=path)
    pbe = [t for t in campaign.trials if t.problem.name == "pbe"]
    if trial is not None:
        pbe = [t for t in pbe if t.name == trial]
    if not pbe:
        which = f"a pbe trial named {trial!r}" if trial else "a pbe trial"
        raise ValueError(f"{path} has no {which}")
    return pbe[0].problem.model_dump()


def _experiment(
    section: dict[str, Any], name: str | None
) -> tuple[PBEModel | dict[str, Any], dict[str, float], list[float] | None, str | None]:
    """What to run: the model (a section without experiments is its own), the parameter
    values of its synthetic data in the model's names, their times (None: not given), and
    the data file an ``initial: {kind: data}`` run starts from (None: the section's)."""
    if not section.get("experiments"):
        if name is not None:
            raise ValueError(f"--experiment {name!r}: the section has no experiments")
        synthetic = section.get("synthetic") or {}
        return section, dict(synthetic.get("parameters", {})), synthetic.get("times_s"), None
    config = PBEConfig.model_validate(section, context={"check_files": False})
    runs = {run.name: run for run in config.resolved_experiments()}
    if name not in runs:
        raise ValueError(f"--experiment: give one of the section's experiments {list(runs)}")
    run = runs[name]
    start = run.data.path if run.data else None
    if run.synthetic is None:
        return run.model, {}, None, start
    truth = run.synthetic.parameters
    values = {own: truth[source] for own, source in run.searched.items()}
    return run.model, values, run.synthetic.times_s, start


def _assignments(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--set {item!r}: expected NAME=NUMBER")
    return out


def _times(text: str | None, synthetic_times: list[float] | None) -> list[float]:
    if text:
        try:
            times = [float(t) for t in text.split(",")]
        except ValueError:
            times = []
        if not times or not all(math.isfinite(t) for t in times):
            raise ValueError(f"--times {text!r}: expected finite numbers separated by commas")
        return times
    if synthetic_times:
        return list(synthetic_times)
    raise ValueError("give --times (the section has no synthetic.times_s)")


def _noise(text: str | None) -> tuple[str, float] | None:
    if not text:
        return None
    model, _, level = text.partition(":")
    try:
        value = float(level)
    except ValueError:
        value = -1.0
    if model not in NOISE_MODELS or value < 0:
        raise ValueError(f"--noise {text!r}: expected MODEL:LEVEL with MODEL in {NOISE_MODELS}")
    return model, value
