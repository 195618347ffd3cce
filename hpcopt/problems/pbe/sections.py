"""The sections of a ``pbe`` problem that describe the simulated system: grid, fluid,
initial state, size correction, data sources and the integrator (:class:`PBEModel`).

Cheap to import: the driver validates configs with it; the solver runs on the workers.
"""

from __future__ import annotations

import functools
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from hpcopt.problems.pbe.data import NoiseModel, PSDData, PSDDataError, load_psd
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

SizeUnit = Literal["m", "mm", "um", "nm"]
MAX_CLASSES_2D = 40
METRES_PER_UNIT = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "nm": 1e-9}


class Section(BaseModel):
    """A config section: unknown keys refused, numbers finite, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GridSettings(Section):
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


class Fluid(Section):
    """The suspending fluid, for the Brownian kernel."""

    temperature_k: float = Field(298.15, gt=0)
    viscosity_pa_s: float = Field(1.0e-3, gt=0)


class Initial(Section):
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


class SizeCorrectionSettings(Section):
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


class DataFile(Section):
    """Measured PSDs in a CSV or HDF5 file (see :mod:`hpcopt.problems.pbe.data`).

    When a campaign is created the path is made absolute and the file is read as a trial
    reads it (:meth:`read`), so that a file the trial could not use refuses the config
    before anything is written. A campaign reopened from its store (``check_files:
    False``) keeps the path it stored; its trials read the file when they start."""

    path: str
    quantity: Quantity | None = None
    size_unit: SizeUnit | None = None

    @field_validator("path")
    @classmethod
    def _exists(cls, path: str, info: ValidationInfo) -> str:
        if not checks_files(info):
            return path
        resolved = Path(path).expanduser()
        if not resolved.is_file():
            raise ValueError(f"no such data file: {path}")
        return str(resolved.resolve())

    @model_validator(mode="after")
    def _readable(self, info: ValidationInfo) -> DataFile:
        if checks_files(info):
            self.read()
        return self

    def read(self) -> PSDData:
        """The measured PSDs, checked as the solver needs them (shapes, finite, sorted,
        non-negative, a size unit in :data:`METRES_PER_UNIT`). Read once per version of
        the file: every trial of a sweep validates its data. Raises :class:`PSDDataError`
        starting with the path."""
        try:
            stat = Path(self.path).stat()
        except OSError as exc:
            raise PSDDataError(f"{self.path}: cannot read the file: {exc.strerror}") from None
        return _read(self.path, stat.st_mtime_ns, stat.st_size, self.quantity, self.size_unit)


@functools.lru_cache(maxsize=32)
def _read(
    path: str, mtime_ns: int, size: int, quantity: Quantity | None, size_unit: str | None
) -> PSDData:
    data = load_psd(path, quantity, size_unit)
    if data.size_unit not in METRES_PER_UNIT:
        raise PSDDataError(
            f"{path}: size_unit {data.size_unit!r} is not one of {sorted(METRES_PER_UNIT)}"
        )
    return data


def checks_files(info: ValidationInfo) -> bool:
    """Whether this validation reads the files a config names (``context: {check_files:
    False}`` for a campaign reopened from its store)."""
    return info.context is None or info.context.get("check_files", True)


class Noise(Section):
    model: NoiseModel = "multiplicative"
    level: float = Field(0.0, ge=0)
    seed: int = 0


class Synthetic(Section):
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


SOLVER_METHODS = {"numpy": ("BDF", "Radau"), "torch": ("BDF", "Rodas4", "Rodas3")}


class SolverSettings(Section):
    """The integrator and its limits; ``batch_size`` parameter sets are integrated
    together. ``backend``: ``numpy`` (SciPy's stiff ``method``, BDF or Radau, the batch
    one block-diagonal system), ``torch`` (:mod:`.torch_solver` on the worker's GPU when
    torch sees one, else its CPU: its own batched ``BDF``, or ``Rodas4``/``Rodas3``; exact
    gradients always come from a Rodas4 solve) or ``auto`` (torch where CUDA is
    available, else numpy; ``method`` then one both have: BDF)."""

    backend: Literal["numpy", "torch", "auto"] = "numpy"
    method: Literal["BDF", "Radau", "Rodas4", "Rodas3"] = "BDF"
    rtol: float = Field(1e-6, gt=0, lt=1)
    atol: float = Field(1e-9, gt=0, lt=1)
    max_rhs_evals: int = Field(20000, ge=100)
    max_wall_s: float = Field(300.0, gt=0)
    batch_size: int = Field(16, ge=1)  # the numpy backend's; torch solves a whole batch

    @model_validator(mode="after")
    def _method_of_the_backend(self) -> SolverSettings:
        if self.backend == "auto":
            allowed = [m for m in SOLVER_METHODS["numpy"] if m in SOLVER_METHODS["torch"]]
        else:
            allowed = SOLVER_METHODS[self.backend]
        if self.method not in allowed:
            raise ValueError(
                f"method: {self.method} is not a method of backend {self.backend}; "
                f"allowed: {', '.join(allowed)}"
            )
        return self


class PBEModel(Section):
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
            error = spread_error(self.dim, self.fragments)
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
