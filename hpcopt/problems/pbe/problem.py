"""The PBE problem on a worker: build the solvers, get the data, score parameter batches.

Each experiment (one without ``experiments:``) has its own solver and data. A batch of
points goes to every experiment, integrated ``solver.batch_size`` parameter sets at a time;
each set is scored by the experiment's cost terms on the solver's cells (``smoothing:
none``: the data are interpolated onto the solver grid through their cumulative) or on the
data's own grid (``smoothing: kde``: the model output is smoothed onto it), and the
evaluation's value is the weighted sum over the experiments. A set whose solve fails in
any experiment is a failed evaluation with the solver's reason.

Repeated samples (data rows sharing a time) are each compared with the model at their
time: the metrics average over rows, so each measured row counts once, and with equal
sample counts per time the cost is the mean of the per-sample costs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcopt.problems.base import Evaluation, Problem, describe_exception
from hpcopt.problems.pbe.config import (
    METRES_PER_UNIT,
    MODEL_KEYS,
    Experiment,
    PBEConfig,
    PBEModel,
)
from hpcopt.problems.pbe.cost import parse_cost, total_cost
from hpcopt.problems.pbe.data import PSDData, add_noise, load_psd
from hpcopt.problems.pbe.grid import Grid, cell_edges, total_volume_grid
from hpcopt.problems.pbe.psd import (
    Quantity,
    characteristic_size,
    data_on_cells,
    density_to_cumulative,
    kde,
    on_cells,
    volume_to_size,
)
from hpcopt.problems.pbe.solver import Model, Solution, Solver
from hpcopt.space import Space


@dataclass(frozen=True)
class Sizes:
    """The size axis distributions are reported on, in the data's unit: the solver's
    classes (1-D) or a 1-D total-volume grid the 2-D classes are mapped onto by ``R``."""

    x: np.ndarray  # (m,) pivot sizes
    edges: np.ndarray  # (m + 1,) cell edges
    R: np.ndarray | None  # (m, n) class numbers -> size classes, 2-D only

    def numbers(self, N: np.ndarray) -> np.ndarray:
        """Number concentrations per size class, ``(..., m)``, from the solver's ``(..., n)``."""
        return N if self.R is None else N @ self.R.T


def build_solver(config: PBEModel, data: PSDData | None = None) -> tuple[Solver, Sizes]:
    """The solver for ``config`` and the size axis of its output (in ``size_unit``)."""
    x0 = np.atleast_1d(config.grid.x0_um) * 1e-6
    v0 = tuple(np.pi / 6 * x0**3)
    grid = Grid.geometric(config.dim, config.grid.classes, config.grid.ratio, v0)
    unit = METRES_PER_UNIT[data.size_unit if data else "um"]
    if grid.dim == 1:
        pivots, R = grid.components[0], None
    else:
        pivots, R = total_volume_grid(grid, config.grid.ratio)
    sizes = Sizes(
        x=volume_to_size(pivots) / unit, edges=volume_to_size(cell_edges(pivots)) / unit, R=R
    )
    model = Model(
        grid=grid,
        agglomeration=None if config.agglomeration == "none" else config.agglomeration,
        breakage=config.breakage,
        fragments=config.fragments,
        temperature_k=config.fluid.temperature_k,
        viscosity_pa_s=config.fluid.viscosity_pa_s,
        v_ref=float(np.pi / 6 * (config.v_ref_um * 1e-6) ** 3),
        discretisation=config.discretisation,
        size_correction=config.size_correction.correction(),
    )
    s = config.solver
    solver = Solver(
        model,
        initial_numbers(config, grid, sizes, data),
        rtol=s.rtol,
        atol=s.atol,
        method=s.method,
        max_rhs_evals=s.max_rhs_evals,
        max_wall_s=s.max_wall_s,
    )
    return solver, sizes


def initial_numbers(config: PBEModel, grid: Grid, sizes: Sizes, data: PSDData | None) -> np.ndarray:
    """Number concentrations (#/m^3) per class at t = 0, scaled to the volume fraction."""
    init, v = config.initial, grid.total_volumes()
    n0 = np.zeros(grid.n)
    if init.kind == "primary":
        if grid.dim == 1:
            n0[0] = 1.0
        else:
            n2 = grid.shape[1]
            n0[1 * n2 + 0] = init.composition / v[n2]
            n0[1] = (1.0 - init.composition) / v[1]
    elif init.kind == "monodisperse":
        index = init.class_index
        if index is None:
            target = np.pi / 6 * (init.size_um * 1e-6) ** 3
            index = int(np.argmin(np.abs(np.log(v / target))))
        n0[index] = 1.0
    elif init.kind == "exponential":
        v_mean = np.pi / 6 * (init.x_mean_um * 1e-6) ** 3
        e = cell_edges(grid.components[0]) / v_mean
        n0 = np.exp(-e[:-1]) - np.exp(-e[1:])
    elif init.kind == "lognormal":
        from scipy.stats import norm

        x_m = volume_to_size(cell_edges(grid.components[0]))
        z = np.log(np.maximum(x_m, 1e-300) / (init.x50_um * 1e-6)) / np.log(init.sigma_g)
        n0 = np.diff(norm.cdf(z))
    else:
        if data is None or data.t[0] != 0.0:
            raise ValueError("initial.kind: data needs measured data that start at t = 0")
        # repeated samples at t = 0: start from their mean
        first = data.values[data.t == 0.0].mean(axis=0)
        n0 = data_on_cells(data.x, first, data.quantity, sizes.edges, "q0")
        n0 = n0 * np.diff(sizes.edges)
    total = float(n0 @ v)
    if total <= 0:
        raise ValueError("the initial distribution holds no particles on the grid")
    return n0 * init.volume_fraction / total


def parameter_sets(
    run: Experiment, points: np.ndarray, names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Arrays ``(B,)`` of every parameter of ``run``'s model, in its own names: the searched
    ones from the columns of ``points`` ``(B, d)`` (named ``names``, the fit's names), the
    known ones fixed."""
    points = np.atleast_2d(points)
    out = {k: np.full(len(points), v, dtype=float) for k, v in run.model.known.items()}
    for name, source in run.searched.items():
        out[name] = points[:, names.index(source)].astype(float)
    return out


class ExperimentFit:
    """One experiment on a worker: its solver (built once), size axis, data and cost terms.

    ``truth`` holds the true searched parameters (the fit's names) of synthetic data, else
    None. Measured rows that repeat a time are scored each against the model at that time
    (:meth:`simulate` repeats the model row), so the metrics' mean over rows is the mean of
    the per-sample costs when every time has as many samples."""

    def __init__(self, run: Experiment, space: Space) -> None:
        self.run = run
        self.space = space
        self.terms = parse_cost(run.cost)
        if run.data is not None:
            self.data = load_psd(run.data.path, run.data.quantity, run.data.size_unit)
            if self.data.size_unit not in METRES_PER_UNIT:
                raise ValueError(
                    f"{run.data.path}: size_unit {self.data.size_unit!r} is not one of "
                    f"{sorted(METRES_PER_UNIT)}"
                )
            self.solver, self.sizes = build_solver(run.model, self.data)
            self.truth: dict[str, float] | None = None
        else:
            self.solver, self.sizes = build_solver(run.model)
            self.data, self.truth = synthesize(run, self.solver, self.sizes)
        _check_kde(run.smoothing, self.terms, self.data.quantity)
        self._data_targets: dict[str, np.ndarray] = {}

    def simulate(self, points: np.ndarray) -> Solution:
        """Solve at the data's times for natural-unit ``points`` ``(B, d)``: ``N`` is
        ``(B, R, n)``, one row per measured row (repeated samples share their time's)."""
        params = parameter_sets(self.run, points, self.space.names)
        sol = self.solver.solve(params, self.data.times)
        return dataclasses.replace(sol, t=self.data.t, N=sol.N[:, self.data.time_index])

    def score(self, points: np.ndarray) -> list[Evaluation]:
        """This experiment's cost at each of ``points`` ``(B, d)``, ``solver.batch_size``
        parameter sets integrated at a time; ``extras`` hold ``top_mass_fraction``."""
        size = self.run.model.solver.batch_size
        out: list[Evaluation] = []
        for start in range(0, len(points), size):
            out += self._score(points[start : start + size])
        return out

    def _score(self, points: np.ndarray) -> list[Evaluation]:
        try:
            sol = self.simulate(points)
        except Exception as exc:  # a parameter set the kernels cannot take, say
            return [Evaluation.failed(describe_exception(exc), raised=True) for _ in points]
        ok = sol.ok
        cost = np.full(len(points), np.nan)
        if ok.any():
            N = self.sizes.numbers(sol.N[ok])
            with np.errstate(all="ignore"):
                cost[ok] = total_cost(
                    self.terms,
                    lambda t: self.model_target(N, t),
                    self.data_target,
                    self.data.quantity,
                )
        out = []
        for b in range(len(points)):
            if sol.error[b]:
                ev = Evaluation.failed(sol.error[b])
            elif not np.isfinite(cost[b]):
                ev = Evaluation.failed("the cost is not finite (an empty or degenerate PSD)")
            else:
                ev = Evaluation(value=float(cost[b]))
            top, g = float(sol.top_mass_fraction[b]), self.run.model.grid
            if ev.ok and top > g.top_limit:
                reason = (
                    f"the grid's last classes held {top:.3g} of the volume (grid.top_limit "
                    f"{g.top_limit:g}): particles outgrow the grid; add grid.classes or raise "
                    "grid.ratio"
                )
                if g.on_limit == "fail":
                    ev = Evaluation.failed(reason)
                else:
                    ev.warning = reason
            ev.extras = {"top_mass_fraction": top}
            out.append(ev)
        return out

    def model_target(self, N: np.ndarray, target: str) -> np.ndarray:
        """The model's ``target`` from class numbers ``N`` ``(..., R, n)``."""
        s = self.sizes
        if self.run.smoothing == "kde":
            q = kde(N, s.x, self.data.x, _basis(target), self.run.kde_bandwidth)
            return _from_density(self.data.x, q, target)
        if target.startswith("x_"):
            Q = on_cells(N, s.x, s.edges, "Q3")
            Q = np.concatenate([np.zeros((*Q.shape[:-1], 1)), Q], axis=-1)
            return characteristic_size(s.edges, Q, int(target[2:]) / 100)
        return on_cells(N, s.x, s.edges, target)

    def data_target(self, target: str) -> np.ndarray:
        """The measured ``target``, one row per measured row (cached)."""
        if target not in self._data_targets:
            d, s = self.data, self.sizes
            if self.run.smoothing == "kde":
                area = np.trapezoid(d.values, d.x, axis=-1)[:, None]
                value = _from_density(d.x, d.values / area, target)
            elif target.startswith("x_"):
                Q = data_on_cells(d.x, d.values, d.quantity, s.edges, "Q3")
                Q = np.concatenate([np.zeros((len(Q), 1)), Q], axis=-1)
                value = characteristic_size(s.edges, Q, int(target[2:]) / 100)
            else:
                value = data_on_cells(d.x, d.values, d.quantity, s.edges, target)
            self._data_targets[target] = value
        return self._data_targets[target]


class PBEProblem(Problem):
    """Fit dPBE kernel parameters: minimise the cost between simulated and measured PSDs,
    the ``weight``-ed sum over the experiments. With several experiments an evaluation
    fails when any of them fails (its error names which) and records each one's cost as
    ``cost_<name>``; ``top_mass_fraction`` is the largest over them."""

    config: PBEConfig

    def setup(self) -> None:
        self.experiments = [
            ExperimentFit(r, self.space) for r in self.config.resolved_experiments()
        ]
        truths = [e.truth for e in self.experiments if e.truth is not None]
        self.truth = truths[0] if truths else None

    # The first experiment's solver, sizes and data (the only ones without experiments):
    # what a single-experiment caller and the fit figure look at.
    @property
    def solver(self) -> Solver:
        return self.experiments[0].solver

    @property
    def sizes(self) -> Sizes:
        return self.experiments[0].sizes

    @property
    def data(self) -> PSDData:
        return self.experiments[0].data

    def simulate(self, points: np.ndarray) -> Solution:
        """The first experiment's :meth:`ExperimentFit.simulate`."""
        return self.experiments[0].simulate(points)

    def _model_target(self, N: np.ndarray, target: str) -> np.ndarray:
        return self.experiments[0].model_target(N, target)

    def _data_target(self, target: str) -> np.ndarray:
        return self.experiments[0].data_target(target)

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        return self.evaluate_batch(np.atleast_2d(x), gradient)[0]

    def evaluate_batch(
        self, points: np.ndarray, gradient: bool | np.ndarray = False
    ) -> list[Evaluation]:
        points = np.atleast_2d(points)
        start = time.perf_counter()
        parts = [e.score(points) for e in self.experiments]
        each = (time.perf_counter() - start) / len(points)
        out = []
        for b, x in enumerate(points):
            ev = self._combine([p[b] for p in parts])
            if self.truth is not None:
                ev.extras.update(recovery_errors(self.space, x, self.truth))
            ev.wall_time_s = each
            out.append(ev)
        return out

    def _combine(self, parts: list[Evaluation]) -> Evaluation:
        """One point's evaluation from its experiments' ``parts``."""
        if len(parts) == 1:
            return parts[0]
        named = [
            (f"experiment {e.run.name!r}", e.run.weight, p) for e, p in zip(self.experiments, parts)
        ]
        failed = [(who, p) for who, _, p in named if not p.ok]
        if failed:
            ev = Evaluation.failed(
                "; ".join(f"{who}: {p.error}" for who, p in failed),
                raised=any(p.raised for _, p in failed),
            )
        else:
            ev = Evaluation(value=float(sum(w * p.value for _, w, p in named)))
        ev.warning = "; ".join(f"{who}: {p.warning}" for who, _, p in named if p.warning)
        tops = [p.extras["top_mass_fraction"] for p in parts if "top_mass_fraction" in p.extras]
        if tops:
            ev.extras["top_mass_fraction"] = max(tops)
        for e, p in zip(self.experiments, parts):
            ev.extras[f"cost_{e.run.name}"] = p.value
        return ev


def _basis(target: str) -> int:
    return 3 if target.startswith("x_") else int(target[1])


def _check_kde(smoothing: str, terms: tuple, quantity: str) -> None:
    """With ``smoothing: kde`` the comparison is on the data's grid, in the data's basis."""
    if smoothing != "kde":
        return
    if quantity.startswith("Q"):
        raise ValueError("smoothing: kde compares densities: give q0 or q3 data")
    for term in terms:
        basis = "3" if term.target.startswith("x_") else term.target[1]
        if basis not in ("x", quantity[1]):
            raise ValueError(
                f"cost target {term.target!r} is in another basis than the {quantity} data; "
                "with smoothing: kde use qx, Qx (or x_* with q3 data)"
            )


def _from_density(x: np.ndarray, q: np.ndarray, target: str) -> np.ndarray:
    """A target on the points ``x`` from densities ``q`` there."""
    if target.startswith("q"):
        return q
    Q = density_to_cumulative(x, q)
    if target.startswith("Q"):
        return Q
    return characteristic_size(x, Q, int(target[2:]) / 100)


def recovery_errors(space: Space, x: np.ndarray, truth: Mapping[str, float]) -> dict[str, float]:
    """How far ``x`` is from the true parameters of a synthetic run, over the searched ones:
    ``max_log_error``, the largest ``|ln(x / x_true)|`` (0.049 is 5 %), and
    ``max_range_error``, the largest distance in the unit cube (the share of each
    parameter's range, measured in log space for log-scaled parameters)."""
    true = np.array([truth[n] for n in space.names])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_error = np.abs(np.log(np.abs(x / true)))
    range_error = np.abs(space.encode(x) - space.encode(true))
    return {
        "max_log_error": float(np.nanmax(log_error)),
        "max_range_error": float(range_error.max()),
    }


def synthesize(run: Experiment, solver: Solver, sizes: Sizes) -> tuple[PSDData, dict]:
    """Measured-like data from ``run.synthetic``: the model at the true parameters, as
    the chosen quantity at the upper edges of the size cells, ``samples`` rows per time,
    plus noise (each row its own). Returns the data and the true searched parameters."""
    syn = run.synthetic
    names = tuple(syn.parameters)
    params = parameter_sets(run, np.array([[syn.parameters[n] for n in names]]), names)
    sol = solver.solve(params, np.asarray(syn.times_s))
    if sol.error[0]:
        where = f"experiment {run.name!r}: " if run.name else ""
        raise ValueError(f"{where}synthetic: the true parameters do not solve: {sol.error[0]}")
    truth = {k: float(v[0]) for k, v in params.items()}
    sim = Simulation(sol.t, sol.N[0], sizes, truth, solver.volumes, 0.0)
    data = sim.psd(syn.quantity)
    if syn.samples > 1:
        data = dataclasses.replace(
            data,
            t=np.repeat(data.t, syn.samples),
            values=np.repeat(data.values, syn.samples, axis=0),
        )
    if syn.noise.level > 0:
        rng = np.random.default_rng(syn.noise.seed)
        data = add_noise(data, syn.noise.model, syn.noise.level, rng)
    return data, dict(syn.parameters)


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

    def psd(self, quantity: Quantity = "q3") -> PSDData:
        """The distribution over time as ``quantity`` on the size classes (in um):
        densities at the pivot sizes, cumulatives at the cells' upper edges."""
        N = np.clip(self.sizes.numbers(self.N), 0.0, None)
        values = on_cells(N, self.sizes.x, self.sizes.edges, quantity)
        if quantity.startswith("Q"):
            values = np.clip(np.maximum.accumulate(values, axis=-1), 0.0, 1.0)
            x = self.sizes.edges[1:]
        else:
            x = self.sizes.x
        return PSDData(t=self.t, x=x, values=values, quantity=quantity, size_unit="um")


def simulate(
    problem: PBEModel | Mapping[str, Any],
    parameters: Mapping[str, float],
    times_s: np.ndarray | list[float],
) -> Simulation:
    """Run the dPBE of a ``pbe`` problem section at the given parameter values.

    ``problem`` is a :class:`PBEModel` (a :class:`PBEConfig` is one) or the mapping a
    config file holds under ``problem:`` (keys other than the model's are ignored);
    ``parameters`` gives the values of every parameter not in the section's ``known``
    (which they may override); ``times_s`` are the output times (s).
    Raises ``ValueError`` naming missing or unknown parameters, or the solver's failure.
    ``simulate(section, values, [0, 60, 600]).psd("q3").values`` is the volume density at
    the three times, shape ``(3, classes)``.
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
    solver, sizes = build_solver(config)
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
    )
