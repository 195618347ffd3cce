"""Several experiments per fit: what each one inherits and where its parameters come from.

Without ``experiments`` the section is one experiment. With it, each entry is an
experiment with its own data, and the top-level keys are the defaults every experiment
starts from; the searched ``parameters`` are shared, and the cost is the ``weight``-ed sum
of the experiments' costs::

    parameters: [{name: corr_beta, ...}, {name: pl_P1, ...}]
    known: {alpha: 1.0, pl_P2: 0.5, pl_v: 1.5}
    synthetic: {parameters: {corr_beta: 1.0, pl_P1: 1.0e-4}, times_s: [0, 300, 600]}
    experiments:
      - {name: fast, known: {G: 100.0}}
      - {name: slow, known: {G: 10.0}, weight: 2.0}

An experiment may set any model key (``dim``, ``grid``, ``agglomeration``, ``breakage``,
``fragments``, ``fluid``, ``initial``, ``v_ref_um``, ``solver``) and ``data`` or
``synthetic``, ``cost``, ``smoothing`` and ``kde_bandwidth``. Sections (``grid``,
``initial``, ``synthetic``, ...) merge key by key into the top-level one, except that an
``initial`` of another ``kind`` replaces it; other values replace. An experiment's ``data``
replaces the top-level data source, its ``synthetic`` merges into the top-level
``synthetic``. ``size_correction`` is a model key too and merges like ``initial``.

Parameters are matched by name. An experiment's model needs its own names (``needed``);
each is taken from, in order: the experiment's ``known`` (its own fixed value, which must
not be a searched name), else the fit's name for it (itself, or ``rename[name]``) among the
searched ``parameters`` or the top-level ``known``. ``synthetic.parameters`` give the true
values of the searched parameters in the fit's names.

``rename`` is how a 1-D pure-component run assists a 2-D fit (PSD_opt's "multi"
optimisation): particles of component 1 alone collide with ``alpha_11`` and break at
``G pl_P1 V^pl_P2``, which is the 1-D model with ``alpha = alpha_11``; component 2 alone
has ``alpha_22``, ``pl_P3`` and ``pl_P4``. ``corr_beta``, ``G`` and ``pl_v`` mean the same
in both. So a component-1 run writes ``rename: {alpha: alpha_11}`` and a component-2 run
``rename: {alpha: alpha_22, pl_P1: pl_P3, pl_P2: pl_P4}``; nothing is mapped unless
written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from hpcopt.problems.pbe.cost import CostTerm, parse_cost
from hpcopt.problems.pbe.kernels import (
    AgglomerationKernel,
    BreakageRate,
    FragmentComposition,
    FragmentDistribution,
    range_error,
)
from hpcopt.problems.pbe.psd import Quantity
from hpcopt.problems.pbe.sections import (
    MODEL_KEYS,
    DataFile,
    PBEModel,
    Section,
    Synthetic,
)

if TYPE_CHECKING:
    from hpcopt.problems.pbe.config import PBEConfig


class ExperimentSection(Section):
    """One entry of ``experiments``: what differs from the top level (module docstring).

    Unset keys (None) take the top-level value; ``known`` holds this experiment's own
    fixed values in its model's names; ``rename`` maps its model's names to the fit's.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    rename: dict[str, str] = Field(default_factory=dict)
    data: DataFile | None = None
    synthetic: dict[str, Any] | None = None
    cost: list[list[Any]] | None = None
    smoothing: Literal["none", "kde"] | None = None
    kde_bandwidth: float | None = Field(None, gt=0)
    dim: Literal[1, 2] | None = None
    grid: dict[str, Any] | None = None
    agglomeration: AgglomerationKernel | Literal["none"] | None = None
    breakage: BreakageRate | None = None
    fragments: FragmentDistribution | None = None
    fluid: dict[str, Any] | None = None
    initial: dict[str, Any] | None = None
    v_ref_um: float | None = Field(None, gt=0, allow_inf_nan=False)
    discretisation: Literal["fixed_pivot", "cell_average"] | None = None
    fragment_composition: FragmentComposition | None = None
    size_correction: dict[str, Any] | None = None
    known: dict[str, float] = Field(default_factory=dict)
    solver: dict[str, Any] | None = None


@dataclass(frozen=True)
class Experiment:
    """One experiment as the problem runs it, every inherited key resolved.

    ``model.known`` holds every fixed value the run uses, in its model's names;
    ``searched`` maps each of its other parameters to the searched parameter it takes and
    ``shared`` each of its fixed ones that came from the top-level ``known`` to that name.
    ``synthetic.parameters`` are in the fit's names. ``name`` is ``""`` for the one
    experiment of a section without ``experiments``.
    """

    name: str
    weight: float
    model: PBEModel
    searched: dict[str, str]
    shared: dict[str, str]
    data: DataFile | None
    synthetic: Synthetic | None
    cost: list[list[Any]]
    smoothing: Literal["none", "kde"]
    kde_bandwidth: float | None

    @property
    def data_quantity(self) -> Quantity | None:
        """The measured quantity when the config says it (else the data file does)."""
        if self.synthetic is not None:
            return self.synthetic.quantity
        return self.data.quantity if self.data else None


def check_synthetic(config: PBEConfig, syn: Synthetic, where: str) -> None:
    """Refuse synthetic truths out of range or not exactly the searched parameters."""
    for name, value in syn.parameters.items():
        if error := range_error(name, value, value):
            raise ValueError(f"{where}.parameters.{name}: {error}; got {value}")
    searched = [p.name for p in config.parameters]
    absent = sorted(set(searched) - set(syn.parameters))
    extra = sorted(set(syn.parameters) - set(searched))
    if absent or extra:
        raise ValueError(
            f"{where}.parameters must give exactly the searched parameters "
            f"{searched}; missing {absent}, not searched {extra}"
        )


def check_experiments(config: PBEConfig, check_files: bool = True) -> None:
    """Refuse repeated names, searched or known values no experiment uses, and data an
    experiment cannot use (:func:`check_measured`)."""
    names = [e.name for e in config.experiments]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"experiments: the names {repeated} repeat; each names its cost (cost_<name>)"
        )
    runs = config.resolved_experiments()
    for where, run in zip(_wheres(runs), runs):
        check_measured(run, where + ".", check_files)
    used = {f for run in runs for f in (*run.searched.values(), *run.shared.values())}
    for spec in config.parameters:
        if spec.name not in used:
            raise ValueError(
                f"parameters.{spec.name}: used by no experiment (each takes the "
                "parameters its mechanisms need, by name or through its rename)"
            )
    for name in config.known:
        if name not in used:
            raise ValueError(f"known.{name}: used by no experiment's mechanisms")
    truths = [(w, r.synthetic.parameters) for w, r in zip(_wheres(runs), runs) if r.synthetic]
    for where, truth in truths[1:]:
        if truth != truths[0][1]:
            raise ValueError(
                f"{where}.synthetic.parameters: {truth} differ from {truths[0][0]}'s "
                f"{truths[0][1]}: the experiments of one fit share the true parameters"
            )


def resolve(config: PBEConfig, i: int, e: ExperimentSection) -> Experiment:
    """Experiment ``i`` of ``config`` with every inherited key resolved."""
    where = f"experiments[{i}]"
    base = config.model().model_dump()
    raw = {
        key: base[key] if getattr(e, key) is None else _override(base[key], getattr(e, key))
        for key in MODEL_KEYS
        if key != "known"
    }
    needed = _validated(PBEModel, raw, where).needed()
    known, searched, shared = sources(config, where, e, needed)
    model = _validated(PBEModel, {**raw, "known": known}, where)
    if e.data is not None and e.synthetic is not None:
        raise ValueError(f"{where}: give one of 'data' (a file) and 'synthetic', not both")
    data, synthetic = config.data, config.synthetic
    if e.data is not None:
        data, synthetic = e.data, None
    elif e.synthetic is not None:
        top = config.synthetic.model_dump() if config.synthetic else {}
        data = None
        synthetic = _validated(Synthetic, _override(top, e.synthetic), f"{where}.synthetic")
        check_synthetic(config, synthetic, f"{where}.synthetic")
    if data is None and synthetic is None:
        raise ValueError(
            f"{where}: no data: give {where}.data (a file) or {where}.synthetic, or "
            "a top-level 'data' or 'synthetic' every experiment shares"
        )
    cost = config.cost if e.cost is None else e.cost
    try:
        parse_cost(cost)
    except ValueError as error:
        raise ValueError(f"{where}.{error}") from None
    return Experiment(
        name=e.name,
        weight=e.weight,
        model=model,
        searched=searched,
        shared=shared,
        data=data,
        synthetic=synthetic,
        cost=cost,
        smoothing=config.smoothing if e.smoothing is None else e.smoothing,
        kde_bandwidth=config.kde_bandwidth if e.kde_bandwidth is None else e.kde_bandwidth,
    )


def sources(
    config: PBEConfig, where: str, e: ExperimentSection, needed: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """Where each parameter of experiment ``e``'s model comes from: its fixed values,
    the searched ones and the top-level known ones (module docstring)."""
    searched_names = {p.name for p in config.parameters}
    for name, target in e.rename.items():
        if name not in needed:
            raise ValueError(
                f"{where}.rename.{name}: not a parameter of this experiment's model; it "
                f"needs {list(needed)}"
            )
        if name in e.known:
            raise ValueError(f"{where}.rename.{name}: also fixed in {where}.known; give one")
        if target not in searched_names | set(config.known):
            raise ValueError(
                f"{where}.rename.{name}: {target!r} is neither searched (parameters) nor "
                "in the top-level known"
            )
    unused = sorted(set(e.known) - set(needed))
    if unused:
        raise ValueError(
            f"{where}.known: {unused} are not used by this experiment's mechanisms; it "
            f"needs {list(needed)}"
        )
    known, searched, shared, missing = {}, {}, {}, []
    for name in needed:
        source = e.rename.get(name, name)
        if name in e.known:
            if name in searched_names:
                raise ValueError(
                    f"{where}.known.{name}: {name} is searched (parameters); an "
                    "experiment cannot fix a searched parameter"
                )
            known[name] = e.known[name]
        elif source in searched_names:
            searched[name] = source
        elif source in config.known:
            known[name], shared[name] = config.known[source], source
        else:
            missing.append(f"{where}.known.{name}")
    if missing:
        raise ValueError(
            f"{', '.join(missing)}: needed by this experiment's mechanisms; give it in "
            f"{where}.known, in the top-level known or in parameters (searched), or map "
            f"it to a fit parameter with {where}.rename (as a 1-D pure-component run of a "
            "2-D fit maps alpha to alpha_11)"
        )
    return known, searched, shared


def _wheres(runs: tuple[Experiment, ...]) -> list[str]:
    return [f"experiments[{i}]" for i in range(len(runs))]


def check_measured(run: Experiment, prefix: str, check_files: bool = True) -> None:
    """What the trial needs of the measured data, checked now: the data file as the trial
    reads it (when ``check_files``), KDE smoothing against the data's quantity and the
    cost's targets, and for ``initial: {kind: data}`` a data file that starts at t = 0.
    Errors start with ``prefix`` (``experiments[i].``, or ``""``)."""
    data = run.data.read() if run.data is not None and check_files else None
    quantity = data.quantity if data is not None else run.data_quantity
    if quantity is not None:
        check_kde(run.smoothing, parse_cost(run.cost), quantity, prefix)
    if run.model.initial.kind != "data":
        return
    if run.data is None:
        raise ValueError(
            f"{prefix}initial.kind: data starts from measured data at t = 0; give "
            f"{prefix}data (a file), not synthetic data"
        )
    if data is not None and data.t[0] != 0.0:
        raise ValueError(
            f"{prefix}initial.kind: data starts from the data at t = 0, but {run.data.path} "
            f"starts at t = {data.t[0]:g} s"
        )


def check_kde(smoothing: str, terms: tuple[CostTerm, ...], quantity: str, prefix: str = "") -> None:
    """With ``smoothing: kde`` the comparison is on the data's grid, in the data's basis:
    refuse cumulative data and cost targets in another basis."""
    if smoothing != "kde":
        return
    if quantity.startswith("Q"):
        raise ValueError(f"{prefix}smoothing: kde compares densities: give q0 or q3 data")
    for term in terms:
        basis = "3" if term.target.startswith("x_") else term.target[1]
        if basis not in ("x", quantity[1]):
            raise ValueError(
                f"{prefix}cost: target {term.target!r} is in another basis than the "
                f"{quantity} data; with smoothing: kde use qx, Qx (or x_* with q3 data)"
            )


def _override(base: Any, value: Any) -> Any:
    """``value`` over ``base``: mappings merge key by key (recursively), unless they name
    another ``kind`` (another initial state), which replaces; everything else replaces."""
    if not (isinstance(base, Mapping) and isinstance(value, Mapping)):
        return value
    if "kind" in value and base.get("kind") != value["kind"]:
        return dict(value)
    return {**base, **{k: _override(base.get(k), v) for k, v in value.items()}}


def _validated(cls: type[BaseModel], raw: Mapping[str, Any], where: str) -> Any:
    """``cls(**raw)``, its first error restated under the key path ``where``."""
    try:
        return cls(**raw)
    except ValidationError as error:
        first = error.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if loc:
            raise ValueError(f"{where}.{loc}: {message}") from None
        key = re.match(r"(\w+)[.:]", message)
        joined = "." if key and key.group(1) in cls.model_fields else ": "
        raise ValueError(f"{where}{joined}{message}") from None
