"""The PBE problem's config: grid, mechanisms, parameters, data and cost.

Cheap to import: the driver validates configs and builds the space with it; the solver
runs on the workers (:mod:`hpcopt.problems.pbe.problem`).

Every parameter the chosen mechanisms need (:meth:`PBEConfig.needed`) is either searched
(``parameters``, natural units, optionally log-scaled) or fixed (``known``). Measured data
come from a file (``data``) or are made from known parameters (``synthetic``).

Several experiments per fit
---------------------------
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
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hpcopt.problems.base import ProblemConfig
from hpcopt.problems.custom import ParamSpec
from hpcopt.problems.pbe.cost import parse_cost
from hpcopt.problems.pbe.data import NoiseModel
from hpcopt.problems.pbe.grid import Layout
from hpcopt.problems.pbe.kernels import (
    SOOS_X_SEL,
    SOOS_Y_SEL,
    AgglomerationKernel,
    BreakageRate,
    FragmentComposition,
    FragmentDistribution,
    SizeCorrection,
    fragment_range_error,
    parameter_names,
    range_error,
    rate_dimension_error,
    spread_error,
)
from hpcopt.problems.pbe.psd import Quantity
from hpcopt.space import Param, Space

SizeUnit = Literal["m", "mm", "um", "nm"]
MAX_CLASSES_2D = 40
METRES_PER_UNIT = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "nm": 1e-9}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridSettings(_Section):
    """``classes`` classes per component, the zero-volume fines class included (as
    PSD_opt's ``NS``), spaced by ``ratio`` in volume. ``layout: pivots``: the first
    non-zero pivot has diameter ``x0_um`` and the cells' edges lie between pivots;
    ``layout: psd_opt``: PSD_opt's geometric grid, the first cell edge has diameter
    ``x0_um`` (PSD_opt's ``2 R01``) and the pivots lie midway between edges (one ``x0_um``
    per component in 2-D).

    A grid too short for a run loses what grows past its last pivot, one too coarse at the
    bottom sends fragments to its zero-volume fines class: when the classes on its upper
    edge ever hold more than ``top_limit`` of the volume, or the fines class more than
    ``bottom_limit`` of the particles' number, the evaluation ``fail``s with that reason
    or (``warn``) is flagged, by ``on_limit``."""

    classes: int = Field(30, ge=3, le=200)
    ratio: float = Field(2.0, gt=1.0, le=4.0)
    x0_um: float | tuple[float, float] = 1.0
    layout: Layout = "pivots"
    top_limit: float = Field(1e-3, gt=0, le=1)
    bottom_limit: float = Field(1e-2, gt=0, le=1)
    on_limit: Literal["fail", "warn"] = "warn"

    @field_validator("x0_um")
    @classmethod
    def _positive(cls, v: float | tuple[float, float]) -> float | tuple[float, float]:
        if any(x <= 0 for x in np.atleast_1d(v)):
            raise ValueError(f"sizes must be > 0, got {v}")
        return v


class Fluid(_Section):
    """The suspending fluid, for the Brownian kernel."""

    temperature_k: float = Field(298.15, gt=0)
    viscosity_pa_s: float = Field(1.0e-3, gt=0)


class Initial(_Section):
    """The state at t = 0, scaled to ``volume_fraction`` of solids (m^3 per m^3).

    ``primary``: every particle in the first non-zero class (2-D: pure particles of each
    component, ``composition`` the volume share of component 1). ``monodisperse``:
    every particle in one class, class ``class_index`` (1 is the first; 0 is the fines
    class, as in PSD_opt) or the class whose pivot is nearest ``size_um`` in volume; in
    2-D ``class_index: [i, j]`` (component 1's pivot ``i``, component 2's ``j``).
    ``exponential`` (1-D): number density ``n(v) ∝ exp(-v / v_mean)`` integrated over each
    cell of a non-zero class, ``v_mean`` the volume of a sphere of diameter ``x_mean_um``.
    ``lognormal`` (1-D): number-based lognormal of median ``x50_um`` and geometric
    standard deviation ``sigma_g``. ``data`` (1-D): the measured
    distribution at t = 0 (the data must start at t = 0).
    """

    kind: Literal["primary", "monodisperse", "exponential", "lognormal", "data"] = "primary"
    volume_fraction: float = Field(1.0e-4, gt=0, lt=1)
    composition: float = Field(0.5, ge=0, le=1)
    x50_um: float = Field(2.0, gt=0)
    sigma_g: float = Field(1.5, gt=1)
    size_um: float | None = Field(None, gt=0)
    class_index: int | tuple[int, int] | None = None
    x_mean_um: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _one_class(self) -> Initial:
        index = np.atleast_1d(self.class_index if self.class_index is not None else 1)
        if np.any(index < 0) or not np.any(index > 0):
            raise ValueError(
                f"class_index must name a class above the fines class (0), got {self.class_index}"
            )
        given = (self.size_um is not None) + (self.class_index is not None)
        if self.kind == "monodisperse" and given != 1:
            raise ValueError("a monodisperse start needs exactly one of size_um and class_index")
        if self.kind != "monodisperse" and given:
            raise ValueError("size_um and class_index are only used by kind: monodisperse")
        return self


class SizeCorrectionSettings(_Section):
    """A size correction of the collision efficiency, on every agglomeration kernel.

    ``soos2007`` (Soos et al. 2007, PSD_opt's ``SIZEEVAL: 2``) multiplies the kernel of
    partners of volume-equivalent diameters ``d_u, d_v`` by
    ``exp(-x_sel (1 - lam)^2) / (d_u d_v / d_ref^2)^y_sel``, ``lam = min(d) / max(d)``.
    ``d_ref_um`` (µm) is a fixed reference, never the grid: equal partners of that size
    are not corrected, so the same ``corr_beta`` means the same kernel on any grid.
    ``x_sel`` and ``y_sel`` (dimensionless, ``>= 0``) are fixed constants, PSD_opt's by
    default; they are not fitted."""

    kind: Literal["none", "soos2007"] = "none"
    x_sel: float = Field(SOOS_X_SEL, ge=0, allow_inf_nan=False)
    y_sel: float = Field(SOOS_Y_SEL, ge=0, allow_inf_nan=False)
    d_ref_um: float = Field(1.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _used(self) -> SizeCorrectionSettings:
        defaults = {k: f.default for k, f in type(self).model_fields.items() if k != "kind"}
        changed = [k for k, v in defaults.items() if getattr(self, k) != v]
        if self.kind == "none" and changed:
            raise ValueError(f"{', '.join(changed)}: only used by kind: soos2007, not none")
        return self

    def correction(self) -> SizeCorrection | None:
        """The solver's correction (None for ``kind: none``)."""
        if self.kind == "none":
            return None
        return SizeCorrection(self.x_sel, self.y_sel, self.d_ref_um * 1e-6)


class DataFile(_Section):
    """Measured PSDs in a CSV or HDF5 file (see :mod:`hpcopt.problems.pbe.data`)."""

    path: str
    quantity: Quantity | None = None
    size_unit: SizeUnit | None = None

    @field_validator("path")
    @classmethod
    def _exists(cls, path: str, info: ValidationInfo) -> str:
        """Checked and made absolute when a campaign is created; a campaign reopened from
        its store (``check_files: False``) keeps the path it stored."""
        if info.context is not None and not info.context.get("check_files", True):
            return path
        resolved = Path(path).expanduser()
        if not resolved.is_file():
            raise ValueError(f"no such data file: {path}")
        return str(resolved.resolve())


class Noise(_Section):
    model: NoiseModel = "multiplicative"
    level: float = Field(0.0, ge=0)
    seed: int = 0


class Synthetic(_Section):
    """Data made by the solver itself from known ``parameters``, at ``times_s``, with
    optional noise: a cumulative ``quantity`` at the upper edges of the solver's cells,
    which noise-free is matched exactly at the true parameters; a density at the pivot
    sizes, which the trapezoid rule maps back onto the cells only approximately.
    ``samples`` rows are measured per time point (repeated samples), each noised on its
    own."""

    parameters: dict[str, float]
    times_s: list[float] = Field(min_length=2)
    quantity: Quantity = "Q3"
    noise: Noise = Noise()
    samples: int = Field(1, ge=1, le=1000)

    @field_validator("times_s")
    @classmethod
    def _increasing(cls, t: list[float]) -> list[float]:
        if t[0] < 0 or any(b <= a for a, b in pairwise(t)):
            raise ValueError(f"times must increase from t >= 0, got {t}")
        return t


class SolverSettings(_Section):
    """SciPy's stiff integrator and its limits; ``batch_size`` parameter sets are
    integrated together as one block-diagonal system."""

    method: Literal["BDF", "Radau"] = "BDF"
    rtol: float = Field(1e-6, gt=0, lt=1)
    atol: float = Field(1e-9, gt=0, lt=1)
    max_rhs_evals: int = Field(20000, ge=100)
    max_wall_s: float = Field(300.0, gt=0)
    batch_size: int = Field(16, ge=1)


class PBEModel(_Section):
    """The simulated system without the fit: grid, mechanisms, initial state, fixed
    parameter values (``known``) and the integrator. Enough for a forward run.

    ``v_ref_um`` is the diameter of the sphere whose volume ``v_ref`` the dimensionless
    kernels (``sum``, ``product``) and breakage rates (``V = v / v_ref``) are relative to:
    fixed physics, not the grid, so fitted values carry over between grids; so is the
    reference size of ``size_correction``."""

    dim: Literal[1, 2] = 1
    grid: GridSettings = GridSettings()
    agglomeration: AgglomerationKernel | Literal["none"] = "shear"
    breakage: BreakageRate = "power_law"
    fragments: FragmentDistribution = "power_law"
    fluid: Fluid = Fluid()
    initial: Initial = Initial()
    v_ref_um: float = Field(1.0, gt=0, allow_inf_nan=False)
    discretisation: Literal["fixed_pivot", "cell_average"] = "fixed_pivot"
    fragment_composition: FragmentComposition = "parent"
    size_correction: SizeCorrectionSettings = SizeCorrectionSettings()
    known: dict[str, float] = Field(default_factory=dict)
    solver: SolverSettings = SolverSettings()

    @model_validator(mode="after")
    def _check_model(self) -> PBEModel:
        x0 = np.atleast_1d(self.grid.x0_um)
        if len(x0) != self.dim:
            raise ValueError(f"grid.x0_um: give {self.dim} size(s) for dim {self.dim}")
        if self.dim == 2 and self.grid.classes > MAX_CLASSES_2D:
            raise ValueError(
                f"grid.classes: at most {MAX_CLASSES_2D} per component in 2-D "
                f"({MAX_CLASSES_2D}^2 classes; the Jacobian is dense per parameter set)"
            )
        if self.dim == 2 and self.initial.kind not in ("primary", "monodisperse"):
            raise ValueError(
                "initial.kind: 2-D runs start from 'primary' particles or one class "
                "('monodisperse' with class_index: [i, j])"
            )
        index = self.initial.class_index
        if self.initial.kind == "monodisperse" and self.dim == 2 and np.ndim(index) != 1:
            raise ValueError("initial.class_index: give [i, j] (one index per component) in 2-D")
        if self.dim == 1 and np.ndim(index) == 1:
            raise ValueError("initial.class_index: give one index in 1-D")
        if index is not None and np.max(index) >= self.grid.classes:
            raise ValueError(
                f"initial.class_index: {index} is past the grid's last class "
                f"({self.grid.classes - 1})"
            )
        if self.fragment_composition == "spread" and self.breakage != "none":
            error = spread_error(self.dim, self.fragments, self.discretisation)
            if error:
                raise ValueError(error)
        if self.agglomeration == "none" and self.breakage == "none":
            raise ValueError("nothing happens: agglomeration and breakage are both 'none'")
        if error := rate_dimension_error(self.breakage, self.dim):
            raise ValueError(error)
        if self.agglomeration == "none" and self.size_correction.kind != "none":
            raise ValueError("size_correction: corrects agglomeration, which is 'none'")
        unused = self._unused_known()
        if unused:
            raise ValueError(
                f"known: {unused} are not used by these mechanisms; they need {list(self.needed())}"
            )
        for name, value in self.known.items():
            error = range_error(name, value, value) or fragment_range_error(
                self.fragments, name, value
            )
            if error:
                raise ValueError(f"known.{name}: {error}; got {value}")
        return self

    def needed(self) -> tuple[str, ...]:
        """The parameters the chosen mechanisms need."""
        agg = None if self.agglomeration == "none" else self.agglomeration
        return parameter_names(agg, self.breakage, self.fragments, self.dim)

    def _unused_known(self) -> list[str]:
        """The ``known`` names these mechanisms do not use."""
        return sorted(set(self.known) - set(self.needed()))


MODEL_KEYS = tuple(PBEModel.model_fields)


class ExperimentSection(_Section):
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


class PBEConfig(ProblemConfig, PBEModel):
    """``problem: {name: pbe}``: fit dPBE kernel parameters to measured PSDs."""

    problem_class = "hpcopt.problems.pbe.problem:PBEProblem"

    name: Literal["pbe"]
    parameters: list[ParamSpec] = Field(min_length=1)
    data: DataFile | None = None
    synthetic: Synthetic | None = None
    smoothing: Literal["none", "kde"] = "none"
    kde_bandwidth: float | None = Field(None, gt=0)
    cost: list[list[Any]] = Field(default_factory=lambda: [["qx", "MSE"]])
    experiments: list[ExperimentSection] | None = Field(None, min_length=1)

    def model(self) -> PBEModel:
        """The forward-model part of this section."""
        return PBEModel(**{k: getattr(self, k) for k in MODEL_KEYS})

    def _unused_known(self) -> list[str]:
        # over experiments, the top-level known serve them all: checked in _check_experiments
        return [] if self.experiments else super()._unused_known()

    @model_validator(mode="after")
    def _check(self) -> PBEConfig:
        searched = [p.name for p in self.parameters]
        if len(set(searched)) != len(searched):
            raise ValueError(f"parameters: a name is repeated in {searched}")
        both = sorted(set(searched) & set(self.known))
        if both:
            raise ValueError(f"{both} are both searched (parameters) and fixed (known)")
        for spec in self.parameters:
            error = range_error(spec.name, spec.low, spec.high) or fragment_range_error(
                self.fragments, spec.name, spec.low
            )
            if error:
                raise ValueError(
                    f"parameters.{spec.name}: {error}; the bounds are [{spec.low}, {spec.high}]"
                )
        if self.synthetic is not None:
            self._check_synthetic(self.synthetic, "synthetic")
        if self.experiments:
            self._check_experiments()
            return self
        if (self.data is None) == (self.synthetic is None):
            raise ValueError("give exactly one of 'data' (a file) and 'synthetic'")
        parse_cost(self.cost)
        needed = set(self.needed())
        unused = sorted((set(searched) | set(self.known)) - needed)
        missing = sorted(needed - set(searched) - set(self.known))
        if unused:
            raise ValueError(
                f"{unused} are not used by these mechanisms; they need {sorted(needed)}"
            )
        if missing:
            raise ValueError(f"give {missing} in 'parameters' (searched) or 'known' (fixed)")
        _check_smoothing(self.resolved_experiments()[0], "")
        return self

    def _check_synthetic(self, syn: Synthetic, where: str) -> None:
        for name, value in syn.parameters.items():
            if error := range_error(name, value, value):
                raise ValueError(f"{where}.parameters.{name}: {error}; got {value}")
        searched = [p.name for p in self.parameters]
        absent = sorted(set(searched) - set(syn.parameters))
        extra = sorted(set(syn.parameters) - set(searched))
        if absent or extra:
            raise ValueError(
                f"{where}.parameters must give exactly the searched parameters "
                f"{searched}; missing {absent}, not searched {extra}"
            )

    def _check_experiments(self) -> None:
        names = [e.name for e in self.experiments]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"experiments: the names {repeated} repeat; each names its cost (cost_<name>)"
            )
        runs = self.resolved_experiments()
        for where, run in zip(_wheres(runs), runs):
            _check_smoothing(run, where + ".")
        used = {f for run in runs for f in (*run.searched.values(), *run.shared.values())}
        for spec in self.parameters:
            if spec.name not in used:
                raise ValueError(
                    f"parameters.{spec.name}: used by no experiment (each takes the "
                    "parameters its mechanisms need, by name or through its rename)"
                )
        for name in self.known:
            if name not in used:
                raise ValueError(f"known.{name}: used by no experiment's mechanisms")
        truths = [(w, r.synthetic.parameters) for w, r in zip(_wheres(runs), runs) if r.synthetic]
        for where, truth in truths[1:]:
            if truth != truths[0][1]:
                raise ValueError(
                    f"{where}.synthetic.parameters: {truth} differ from {truths[0][0]}'s "
                    f"{truths[0][1]}: the experiments of one fit share the true parameters"
                )

    def resolved_experiments(self) -> tuple[Experiment, ...]:
        """The experiments of this fit, every inherited key resolved (one without
        ``experiments``). Raises ``ValueError`` naming the key path of what is wrong."""
        if not self.experiments:
            searched = {p.name: p.name for p in self.parameters}
            one = Experiment(
                name="",
                weight=1.0,
                model=self.model(),
                searched=searched,
                shared={k: k for k in self.known},
                data=self.data,
                synthetic=self.synthetic,
                cost=self.cost,
                smoothing=self.smoothing,
                kde_bandwidth=self.kde_bandwidth,
            )
            return (one,)
        return tuple(self._resolve(i, e) for i, e in enumerate(self.experiments))

    def _resolve(self, i: int, e: ExperimentSection) -> Experiment:
        where = f"experiments[{i}]"
        base = self.model().model_dump()
        raw = {
            key: base[key] if getattr(e, key) is None else _override(base[key], getattr(e, key))
            for key in MODEL_KEYS
            if key != "known"
        }
        needed = _validated(PBEModel, raw, where).needed()
        known, searched, shared = self._sources(where, e, needed)
        model = _validated(PBEModel, {**raw, "known": known}, where)
        if e.data is not None and e.synthetic is not None:
            raise ValueError(f"{where}: give one of 'data' (a file) and 'synthetic', not both")
        data, synthetic = self.data, self.synthetic
        if e.data is not None:
            data, synthetic = e.data, None
        elif e.synthetic is not None:
            top = self.synthetic.model_dump() if self.synthetic else {}
            data = None
            synthetic = _validated(Synthetic, _override(top, e.synthetic), f"{where}.synthetic")
            self._check_synthetic(synthetic, f"{where}.synthetic")
        if data is None and synthetic is None:
            raise ValueError(
                f"{where}: no data: give {where}.data (a file) or {where}.synthetic, or "
                "a top-level 'data' or 'synthetic' every experiment shares"
            )
        cost = self.cost if e.cost is None else e.cost
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
            smoothing=self.smoothing if e.smoothing is None else e.smoothing,
            kde_bandwidth=self.kde_bandwidth if e.kde_bandwidth is None else e.kde_bandwidth,
        )

    def _sources(
        self, where: str, e: ExperimentSection, needed: tuple[str, ...]
    ) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
        """Where each parameter of experiment ``e``'s model comes from: its fixed values,
        the searched ones and the top-level known ones (module docstring)."""
        searched_names = {p.name for p in self.parameters}
        for name, target in e.rename.items():
            if name not in needed:
                raise ValueError(
                    f"{where}.rename.{name}: not a parameter of this experiment's model; it "
                    f"needs {list(needed)}"
                )
            if name in e.known:
                raise ValueError(f"{where}.rename.{name}: also fixed in {where}.known; give one")
            if target not in searched_names | set(self.known):
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
            elif source in self.known:
                known[name], shared[name] = self.known[source], source
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

    def space(self) -> Space:
        return Space(Param(p.name, p.low, p.high, p.log) for p in self.parameters)

    @property
    def label(self) -> str:
        mechanisms = f"{self.agglomeration}/{self.breakage}"
        if not self.experiments:
            return f"pbe ({self.dim}-D, {mechanisms})"
        dims = sorted({run.model.dim for run in self.resolved_experiments()}, reverse=True)
        dim = " + ".join(f"{d}-D" for d in dims)
        return f"pbe ({len(self.experiments)} experiments, {dim}, {mechanisms})"


def _wheres(runs: tuple[Experiment, ...]) -> list[str]:
    return [f"experiments[{i}]" for i in range(len(runs))]


def _check_smoothing(run: Experiment, prefix: str) -> None:
    if run.smoothing == "kde" and run.data_quantity in ("Q0", "Q3"):
        raise ValueError(f"{prefix}smoothing: kde compares densities: give q0 or q3 data")


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
