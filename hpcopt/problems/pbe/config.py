"""The PBE problem's config: grid, mechanisms, parameters, data and cost.

Cheap to import: the driver validates configs and builds the space with it; the solver
runs on the workers (:mod:`hpcopt.problems.pbe.problem`).

Every parameter the chosen mechanisms need (:meth:`PBEConfig.needed`) is either searched
(``parameters``, natural units, optionally log-scaled) or fixed (``known``). Measured data
come from a file (``data``) or are made from known parameters (``synthetic``).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hpcopt.problems.base import ProblemConfig
from hpcopt.problems.custom import ParamSpec
from hpcopt.problems.pbe.cost import parse_cost
from hpcopt.problems.pbe.data import NoiseModel
from hpcopt.problems.pbe.kernels import (
    AgglomerationKernel,
    BreakageRate,
    FragmentDistribution,
    parameter_names,
    range_error,
)
from hpcopt.problems.pbe.psd import Quantity
from hpcopt.space import Param, Space

SizeUnit = Literal["m", "mm", "um", "nm"]
MAX_CLASSES_2D = 40
METRES_PER_UNIT = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "nm": 1e-9}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridSettings(_Section):
    """``classes`` pivots (per component in 2-D) spaced by ``ratio`` in volume, the first
    of diameter ``x0_um`` (one per component in 2-D).

    A grid too short for a run loses what grows past its last pivot: when the classes on
    its upper edge ever hold more than ``top_limit`` of the volume, the evaluation
    ``fail``s with that reason or (``warn``) is flagged, by ``on_limit``."""

    classes: int = Field(30, ge=3, le=200)
    ratio: float = Field(2.0, gt=1.0, le=4.0)
    x0_um: float | tuple[float, float] = 1.0
    top_limit: float = Field(1e-3, gt=0, le=1)
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

    ``primary``: every particle in the first class (2-D: pure particles of each component,
    ``composition`` the volume share of component 1). ``monodisperse`` (1-D): every
    particle in one class, class ``class_index`` (0 is the first) or the class whose pivot
    is nearest ``size_um`` in volume. ``exponential`` (1-D): number density
    ``n(v) ∝ exp(-v / v_mean)`` integrated over each cell, ``v_mean`` the volume of a sphere
    of diameter ``x_mean_um``. ``lognormal`` (1-D): number-based lognormal of median
    ``x50_um`` and geometric standard deviation ``sigma_g``. ``data`` (1-D): the measured
    distribution at t = 0 (the data must start at t = 0).
    """

    kind: Literal["primary", "monodisperse", "exponential", "lognormal", "data"] = "primary"
    volume_fraction: float = Field(1.0e-4, gt=0, lt=1)
    composition: float = Field(0.5, ge=0, le=1)
    x50_um: float = Field(2.0, gt=0)
    sigma_g: float = Field(1.5, gt=1)
    size_um: float | None = Field(None, gt=0)
    class_index: int | None = Field(None, ge=0)
    x_mean_um: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _one_class(self) -> Initial:
        given = (self.size_um is not None) + (self.class_index is not None)
        if self.kind == "monodisperse" and given != 1:
            raise ValueError("a monodisperse start needs exactly one of size_um and class_index")
        if self.kind != "monodisperse" and given:
            raise ValueError("size_um and class_index are only used by kind: monodisperse")
        return self


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
    sizes, which the trapezoid rule maps back onto the cells only approximately."""

    parameters: dict[str, float]
    times_s: list[float] = Field(min_length=2)
    quantity: Quantity = "Q3"
    noise: Noise = Noise()

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
    fixed physics, not the grid, so fitted values carry over between grids."""

    dim: Literal[1, 2] = 1
    grid: GridSettings = GridSettings()
    agglomeration: AgglomerationKernel | Literal["none"] = "shear"
    breakage: BreakageRate = "power_law"
    fragments: FragmentDistribution = "power_law"
    fluid: Fluid = Fluid()
    initial: Initial = Initial()
    v_ref_um: float = Field(1.0, gt=0, allow_inf_nan=False)
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
        if self.dim == 2 and self.initial.kind != "primary":
            raise ValueError("initial.kind: 2-D runs start from 'primary' particles")
        index = self.initial.class_index
        if index is not None and index >= self.grid.classes:
            raise ValueError(
                f"initial.class_index: {index} is past the grid's last class "
                f"({self.grid.classes - 1})"
            )
        if self.agglomeration == "none" and self.breakage == "none":
            raise ValueError("nothing happens: agglomeration and breakage are both 'none'")
        unused = sorted(set(self.known) - set(self.needed()))
        if unused:
            raise ValueError(
                f"known: {unused} are not used by these mechanisms; they need {list(self.needed())}"
            )
        for name, value in self.known.items():
            if error := range_error(name, value, value):
                raise ValueError(f"known.{name}: {error}; got {value}")
        return self

    def needed(self) -> tuple[str, ...]:
        """The parameters the chosen mechanisms need."""
        agg = None if self.agglomeration == "none" else self.agglomeration
        return parameter_names(agg, self.breakage, self.fragments, self.dim)


MODEL_KEYS = tuple(PBEModel.model_fields)


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

    def model(self) -> PBEModel:
        """The forward-model part of this section."""
        return PBEModel(**{k: getattr(self, k) for k in MODEL_KEYS})

    @model_validator(mode="after")
    def _check(self) -> PBEConfig:
        if (self.data is None) == (self.synthetic is None):
            raise ValueError("give exactly one of 'data' (a file) and 'synthetic'")
        parse_cost(self.cost)
        needed = set(self.needed())
        searched = [p.name for p in self.parameters]
        both = sorted(set(searched) & set(self.known))
        unused = sorted((set(searched) | set(self.known)) - needed)
        missing = sorted(needed - set(searched) - set(self.known))
        if len(set(searched)) != len(searched):
            raise ValueError(f"parameters: a name is repeated in {searched}")
        if both:
            raise ValueError(f"{both} are both searched (parameters) and fixed (known)")
        if unused:
            raise ValueError(
                f"{unused} are not used by these mechanisms; they need {sorted(needed)}"
            )
        if missing:
            raise ValueError(f"give {missing} in 'parameters' (searched) or 'known' (fixed)")
        for spec in self.parameters:
            if error := range_error(spec.name, spec.low, spec.high):
                raise ValueError(
                    f"parameters.{spec.name}: {error}; the bounds are [{spec.low}, {spec.high}]"
                )
        if self.synthetic is not None:
            for name, value in self.synthetic.parameters.items():
                if error := range_error(name, value, value):
                    raise ValueError(f"synthetic.parameters.{name}: {error}; got {value}")
        if self.synthetic is not None:
            absent = sorted(set(searched) - set(self.synthetic.parameters))
            extra = sorted(set(self.synthetic.parameters) - set(searched))
            if absent or extra:
                raise ValueError(
                    f"synthetic.parameters must give exactly the searched parameters "
                    f"{searched}; missing {absent}, not searched {extra}"
                )
        if self.smoothing == "kde" and self.data_quantity in ("Q0", "Q3"):
            raise ValueError("smoothing: kde compares densities: give q0 or q3 data")
        return self

    @property
    def data_quantity(self) -> Quantity | None:
        if self.synthetic is not None:
            return self.synthetic.quantity
        return self.data.quantity if self.data else None

    def space(self) -> Space:
        return Space(Param(p.name, p.low, p.high, p.log) for p in self.parameters)

    @property
    def label(self) -> str:
        return f"pbe ({self.dim}-D, {self.agglomeration}/{self.breakage})"
