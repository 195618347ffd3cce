"""Forward runs of the dPBE: the solver and size axis a ``pbe`` section describes, its
initial state, and :func:`simulate`, a run at given parameter values.

The size axis leaves out the zero-volume fines class (it has no size); each run reports
how many particles it holds (``fines_fraction``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from hpcopt.problems.pbe.data import PSDData, load_psd
from hpcopt.problems.pbe.grid import Grid, cell_edges, total_volume_grid
from hpcopt.problems.pbe.psd import Quantity, data_on_cells, on_cells, volume_to_size
from hpcopt.problems.pbe.sections import METRES_PER_UNIT, MODEL_KEYS, DataFile, PBEModel
from hpcopt.problems.pbe.solver import Model, Solver


@dataclass(frozen=True)
class Sizes:
    """The size axis distributions are reported on, in the data's unit: the solver's
    non-zero classes (1-D) or a 1-D total-volume grid the 2-D classes are mapped onto.
    The zero-volume fines class has no size and is left out (``Solution.fines_fraction``
    says how many particles it holds)."""

    x: np.ndarray  # (m,) pivot sizes
    edges: np.ndarray  # (m + 1,) cell edges
    R: np.ndarray  # (m, n) class numbers -> size classes
    unit: str = "um"

    def numbers(self, N: np.ndarray) -> np.ndarray:
        """Number concentrations per size class, ``(..., m)``, from the solver's ``(..., n)``."""
        return N @ self.R.T


def build_grid(config: PBEModel) -> Grid:
    """The solver grid of ``config``."""
    x0 = np.atleast_1d(config.grid.x0_um) * 1e-6
    v0 = tuple(np.pi / 6 * x0**3)
    return Grid.geometric(
        config.dim, config.grid.classes, config.grid.ratio, v0, config.grid.layout
    )


def build_solver(config: PBEModel, data: PSDData | None = None) -> tuple[Solver, Sizes]:
    """The solver for ``config`` and the size axis of its output (in ``size_unit``)."""
    grid = build_grid(config)
    unit_name = data.size_unit if data else "um"
    unit = METRES_PER_UNIT[unit_name]
    if grid.dim == 1:
        pivots, edges, R = grid.components[0][1:], grid.edges[0][1:], np.eye(grid.n)[1:]
    else:
        pivots, R = total_volume_grid(grid, config.grid.ratio)
        edges = cell_edges(pivots)
    sizes = Sizes(volume_to_size(pivots) / unit, volume_to_size(edges) / unit, R, unit_name)
    model = Model(
        grid=grid,
        agglomeration=None if config.agglomeration == "none" else config.agglomeration,
        breakage=config.breakage,
        fragments=config.fragments,
        temperature_k=config.fluid.temperature_k,
        viscosity_pa_s=config.fluid.viscosity_pa_s,
        v_ref=float(np.pi / 6 * (config.v_ref_um * 1e-6) ** 3),
        discretisation=config.discretisation,
        fragment_composition=config.fragment_composition,
        size_correction=config.size_correction.correction(),
    )
    s = config.solver
    n0 = initial_numbers(config, grid, sizes, data)
    limits = {"max_rhs_evals": s.max_rhs_evals, "max_wall_s": s.max_wall_s}
    if solver_backend(s.backend) == "numpy":
        solver = Solver(model, n0, rtol=s.rtol, atol=s.atol, method=s.method, **limits)
    else:
        from hpcopt.problems.pbe.torch_solver import TorchSolver, default_device

        device = default_device()
        solver = TorchSolver(
            model, n0, rtol=s.rtol, atol=s.atol, device=device, method=s.method, **limits
        )
    return solver, sizes


def solver_backend(backend: str) -> str:
    """The backend ``solver.backend`` names on this machine: ``auto`` is torch where torch
    sees a CUDA device, else numpy. ImportError when torch is asked for and missing."""
    if backend == "numpy":
        return "numpy"
    if importlib.util.find_spec("torch") is None:
        if backend == "auto":
            return "numpy"
        raise ImportError("solver.backend: torch needs torch installed (pip install hpcopt[torch])")
    if backend == "torch":
        return "torch"
    import torch

    return "torch" if torch.cuda.is_available() else "numpy"


def initial_numbers(config: PBEModel, grid: Grid, sizes: Sizes, data: PSDData | None) -> np.ndarray:
    """Number concentrations (#/m^3) per class at t = 0, scaled to the volume fraction;
    the fines class starts empty."""
    init, v = config.initial, grid.total_volumes()
    n0 = np.zeros(grid.n)
    sized = np.zeros(grid.n - 1)  # 1-D: the classes above the fines class
    if init.kind == "primary":
        if grid.dim == 1:
            n0[1] = 1.0
        else:
            n2 = grid.shape[1]
            n0[1 * n2 + 0] = init.composition / v[n2]
            n0[1] = (1.0 - init.composition) / v[1]
    elif init.kind == "monodisperse":
        index = init.class_index
        if index is None:
            target = np.pi / 6 * (init.size_um * 1e-6) ** 3
            index = 1 + int(np.argmin(np.abs(np.log(v[1:] / target))))
        elif grid.dim == 2:
            index = index[0] * grid.shape[1] + index[1]
        n0[index] = 1.0
    elif init.kind == "exponential":
        v_mean = np.pi / 6 * (init.x_mean_um * 1e-6) ** 3
        e = grid.edges[0][1:] / v_mean
        sized = np.exp(-e[:-1]) - np.exp(-e[1:])
    elif init.kind == "lognormal":
        x_m = volume_to_size(grid.edges[0][1:])
        z = np.log(x_m / (init.x50_um * 1e-6)) / np.log(init.sigma_g)
        sized = np.diff(norm.cdf(z))
    else:
        if data is None or data.t[0] != 0.0:
            raise ValueError("initial.kind: data needs measured data that start at t = 0")
        # repeated samples at t = 0: start from their mean
        first = data.values[data.t == 0.0].mean(axis=0)
        sized = data_on_cells(data.x, first, data.quantity, sizes.edges, "q0")
        sized = sized * np.diff(sizes.edges)
    if grid.dim == 1:
        n0[1:] += sized
    total = float(n0 @ v)
    if total <= 0:
        raise ValueError("the initial distribution holds no particles on the grid")
    return n0 * init.volume_fraction / total


@dataclass
class Simulation:
    """A forward run: number concentrations ``N`` (#/m^3, ``(T, n)`` over the solver's
    classes) at times ``t`` (s), and the size axis they are reported on."""

    t: np.ndarray
    N: np.ndarray
    sizes: Sizes
    parameters: dict[str, float]
    class_volumes_m3: np.ndarray  # (n, dim)
    top_mass_fraction: float
    fines_fraction: float

    def psd(self, quantity: Quantity = "q3") -> PSDData:
        """The distribution over time as ``quantity`` on the size classes (in the unit of
        the data the run started from, else um): densities at the pivot sizes, cumulatives
        at the cells' upper edges."""
        N = np.clip(self.sizes.numbers(self.N), 0.0, None)
        values = on_cells(N, self.sizes.x, self.sizes.edges, quantity)
        if quantity.startswith("Q"):
            values = np.clip(np.maximum.accumulate(values, axis=-1), 0.0, 1.0)
            x = self.sizes.edges[1:]
        else:
            x = self.sizes.x
        return PSDData(t=self.t, x=x, values=values, quantity=quantity, size_unit=self.sizes.unit)


def simulate(
    problem: PBEModel | Mapping[str, Any],
    parameters: Mapping[str, float],
    times_s: np.ndarray | list[float],
    data: PSDData | str | Path | None = None,
) -> Simulation:
    """Run the dPBE of a ``pbe`` problem section at the given parameter values.

    ``problem`` is a :class:`PBEModel` (a :class:`PBEConfig` is one) or the mapping a
    config file holds under ``problem:`` (keys other than the model's and ``data`` are
    ignored); ``parameters`` gives the values of every parameter not in the section's
    ``known`` (which they may override); ``times_s`` are the output times (s). ``data``
    (measured PSDs, or the path of a data file) is what an ``initial: {kind: data}`` run
    starts from, by default the section's own ``data`` file; the output's sizes are then
    in its unit. Raises ``ValueError`` naming missing or unknown parameters, missing
    start data, or the solver's failure.
    ``simulate(section, values, [0, 60, 600]).psd("q3").values`` is the volume density at
    the three times, shape ``(3, classes - 1)`` (the fines class has no size).
    """
    if isinstance(problem, PBEModel):
        config = problem
    else:
        config = PBEModel(**{k: v for k, v in problem.items() if k in MODEL_KEYS})
    needed = config.needed()
    values = {**config.known, **parameters}
    unknown = sorted(set(parameters) - set(needed))
    missing = sorted(set(needed) - set(values))
    if unknown or missing:
        raise ValueError(
            f"parameters: missing {missing}, not used by this model {unknown}; "
            f"it needs {list(needed)}"
        )
    start = _start_data(problem, data) if config.initial.kind == "data" else None
    solver, sizes = build_solver(config, start)
    sol = solver.solve({k: values[k] for k in needed}, np.asarray(times_s, dtype=float))
    if sol.error[0]:
        raise ValueError(f"the simulation failed: {sol.error[0]}")
    return Simulation(
        t=sol.t,
        N=sol.N[0],
        sizes=sizes,
        parameters={k: float(values[k]) for k in needed},
        class_volumes_m3=solver.volumes,
        top_mass_fraction=float(sol.top_mass_fraction[0]),
        fines_fraction=float(sol.fines_fraction[0]),
    )


def _start_data(
    problem: PBEModel | Mapping[str, Any], data: PSDData | str | Path | None
) -> PSDData:
    """The measured PSDs an ``initial: {kind: data}`` run starts from: ``data``, else the
    file the section's ``data`` names."""
    if isinstance(data, PSDData):
        return data
    if data is not None:
        return load_psd(data)
    source = problem.get("data") if isinstance(problem, Mapping) else getattr(problem, "data", None)
    if isinstance(source, Mapping):
        source = DataFile.model_validate(source, context={"check_files": False})
    if source is None:
        raise ValueError(
            "initial.kind: data starts from measured data: give the section a data file "
            "(data: {path: ...}) or pass data to simulate()"
        )
    return source.read()
