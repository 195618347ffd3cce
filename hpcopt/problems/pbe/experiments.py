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
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from hpcopt.problems.pbe.cost import CostTerm, parse_cost
from hpcopt.problems.pbe.kernels import (
    AgglomerationKernel,
    BreakageRate,
    FragmentComposition,
    FragmentDistribution,
)
from hpcopt.problems.pbe.psd import Quantity
from hpcopt.problems.pbe.sections import (
    DataFile,
    PBEModel,
    Section,
    Synthetic,
)


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


def override(base: Any, value: Any) -> Any:
    """``value`` over ``base``: mappings merge key by key (recursively), unless they name
    another ``kind`` (another initial state), which replaces; everything else replaces."""
    if not (isinstance(base, Mapping) and isinstance(value, Mapping)):
        return value
    if "kind" in value and base.get("kind") != value["kind"]:
        return dict(value)
    return {**base, **{k: override(base.get(k), v) for k, v in value.items()}}


def validated(cls: type[BaseModel], raw: Mapping[str, Any], where: str) -> Any:
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
