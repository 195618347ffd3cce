"""The PBE problem on a worker: build the solvers, get the data, score parameter batches.

Each experiment (one without ``experiments:``) has its own solver and data. A batch of
points goes to every experiment, integrated ``solver.batch_size`` parameter sets at a time;
each set is scored by the experiment's cost terms on the solver's cells (``smoothing:
none``: the data are interpolated onto the solver grid through their cumulative) or on the
data's own grid (``smoothing: kde``: the model output is smoothed onto it), and the
evaluation's value is the weighted sum over the experiments. A set whose solve fails in
any experiment is a failed evaluation with the solver's reason.

Forward runs (:func:`simulate`, the solver and its size axis) live in :mod:`.forward`.

Repeated samples (data rows sharing a time) are each compared with the model at their
time: the metrics average over rows, so each measured row counts once, and with equal
sample counts per time the cost is the mean of the per-sample costs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from hpcopt.core.evaluation import Evaluation, describe_exception
from hpcopt.core.space import Space
from hpcopt.problems.base import Problem
from hpcopt.problems.pbe.config import PBEConfig
from hpcopt.problems.pbe.cost import parse_cost, total_cost
from hpcopt.problems.pbe.data import PSDData, add_noise
from hpcopt.problems.pbe.experiments import Experiment, check_kde
from hpcopt.problems.pbe.forward import Simulation, Sizes, build_solver, simulate
from hpcopt.problems.pbe.psd import (
    characteristic_size,
    data_on_cells,
    density_to_cumulative,
    kde,
    on_cells,
)
from hpcopt.problems.pbe.sections import GridSettings
from hpcopt.problems.pbe.solver import Solution, Solver


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
            self.data = run.data.read()
            self.solver, self.sizes = build_solver(run.model, self.data)
            self.truth: dict[str, float] | None = None
        else:
            self.solver, self.sizes = build_solver(run.model)
            self.data, self.truth = synthesize(run, self.solver, self.sizes)
        check_kde(run.smoothing, self.terms, self.data.quantity)
        self._data_targets: dict[str, np.ndarray] = {}

    def simulate(self, points: np.ndarray) -> Solution:
        """Solve at the data's times for natural-unit ``points`` ``(B, d)``: ``N`` is
        ``(B, R, n)``, one row per measured row (repeated samples share their time's)."""
        params = parameter_sets(self.run, points, self.space.names)
        sol = self.solver.solve(params, self.data.times)
        return dataclasses.replace(sol, t=self.data.t, N=sol.N[:, self.data.time_index])

    def score(self, points: np.ndarray) -> list[Evaluation]:
        """This experiment's cost at each of ``points`` ``(B, d)``, ``solver.batch_size``
        parameter sets integrated at a time (all of them with the torch backend, whose
        members step alone); ``extras`` hold ``top_mass_fraction`` and
        ``fines_fraction``."""
        size = self.run.model.solver.batch_size
        if self.solver.members_step_alone:
            size = max(len(points), 1)
        out: list[Evaluation] = []
        for start in range(0, len(points), size):
            out += self._score(points[start : start + size])
        return out

    def _score(self, points: np.ndarray) -> list[Evaluation]:
        try:
            sol = self.simulate(points)
        except Exception as exc:  # a parameter set the kernels cannot take, say
            return [Evaluation.failed(describe_exception(exc), raised=True) for _ in points]
        return self._evaluations(sol, len(points))

    def score_with_gradient(self, points: np.ndarray) -> list[Evaluation]:
        """:meth:`score` in one batched torch solve, each successful evaluation with its
        exact ``gradient`` ``(d,)`` (d cost / d natural-unit point; :mod:`.gradient`)."""
        import torch

        from hpcopt.problems.pbe import gradient

        if not isinstance(self.solver, gradient.TorchSolver):
            raise ValueError("exact gradients need solver.backend: torch")
        names = self.space.names
        x = torch.tensor(points, dtype=torch.float64, device=self.solver.device)
        x.requires_grad_(True)
        searched = {k: x[:, names.index(source)] for k, source in self.run.searched.items()}
        try:
            params = parameter_sets(self.run, points, names)
            sol, N = gradient.solve_with_gradient(self.solver, params, searched, self.data.times)
        except Exception as exc:  # a parameter set the kernels cannot take, say
            return [Evaluation.failed(describe_exception(exc), raised=True) for _ in points]
        sol = dataclasses.replace(sol, t=self.data.t, N=sol.N[:, self.data.time_index])
        out = self._evaluations(sol, len(points))
        ok = np.array([ev.ok for ev in out])
        if ok.any():
            R = N.new_tensor(self.sizes.R)
            numbers = N[:, self.data.time_index] @ R.T
            cost = gradient.total_cost(
                self.terms,
                lambda t: self.model_target_torch(numbers, t),
                self.data_target,
                self.data.quantity,
            )
            cost[torch.as_tensor(ok, device=x.device)].sum().backward()
            grads = x.grad.detach().cpu().numpy()
            for b in np.flatnonzero(ok):
                out[b].gradient = grads[b]
        return out

    def _evaluations(self, sol: Solution, B: int) -> list[Evaluation]:
        """The evaluations of a solution's ``B`` members: their cost, or why they failed."""
        ok = sol.ok
        cost = np.full(B, np.nan)
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
        for b in range(B):
            if sol.error[b]:
                ev = Evaluation.failed(sol.error[b])
            elif not np.isfinite(cost[b]):
                ev = Evaluation.failed("the cost is not finite (an empty or degenerate PSD)")
            else:
                ev = Evaluation(value=float(cost[b]))
            top, fines = float(sol.top_mass_fraction[b]), float(sol.fines_fraction[b])
            reason = grid_limit_reason(self.run.model.grid, top, fines) if ev.ok else ""
            if reason and self.run.model.grid.on_limit == "fail":
                ev = Evaluation.failed(reason)
            elif reason:
                ev.warning = reason
            ev.extras = {"top_mass_fraction": top, "fines_fraction": fines}
            out.append(ev)
        return out

    def model_target_torch(self, N: Any, target: str) -> Any:
        """:meth:`model_target` in torch (``smoothing: none``): from class numbers ``N``
        ``(..., R, n)`` on the size axis, a tensor."""
        import torch

        from hpcopt.problems.pbe import gradient

        s = self.sizes
        if target.startswith("x_"):
            Q = gradient.on_cells(N, s.x, s.edges, "Q3")
            Q = torch.cat([torch.zeros_like(Q[..., :1]), Q], dim=-1)
            return gradient.characteristic_size(s.edges, Q, int(target[2:]) / 100)
        return gradient.on_cells(N, s.x, s.edges, target)

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
    ``cost_<name>``; ``top_mass_fraction`` and ``fines_fraction`` are the largest over them."""

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

    def model_target(self, N: np.ndarray, target: str) -> np.ndarray:
        """The first experiment's :meth:`ExperimentFit.model_target`: the model's
        ``target`` (``q3``, ``Q3``, ``x_50``, ...) from class numbers ``N`` ``(..., R, n)``,
        on the grid the cost compares it on."""
        return self.experiments[0].model_target(N, target)

    def data_target(self, target: str) -> np.ndarray:
        """The first experiment's :meth:`ExperimentFit.data_target`: the measured
        ``target``, one row per measured time, on the grid the cost compares it on."""
        return self.experiments[0].data_target(target)

    def evaluate(self, x: np.ndarray, gradient: bool = False) -> Evaluation:
        return self.evaluate_batch(np.atleast_2d(x), gradient)[0]

    def evaluate_batch(
        self, points: np.ndarray, gradient: bool | np.ndarray = False
    ) -> list[Evaluation]:
        points = np.atleast_2d(points)
        wanted = np.broadcast_to(np.asarray(gradient, dtype=bool), (len(points),))
        if wanted.any() and (reason := self.config.gradient_error()):
            raise ValueError(f"gradient asked for, but {reason}")
        start = time.perf_counter()
        if wanted.any():
            parts = [e.score_with_gradient(points) for e in self.experiments]
        else:
            parts = [e.score(points) for e in self.experiments]
        each = (time.perf_counter() - start) / len(points)
        out = []
        for b, x in enumerate(points):
            ev = self._combine([p[b] for p in parts])
            if not wanted[b]:
                ev.gradient = None
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
            if all(p.gradient is not None for p in parts):
                ev.gradient = sum(w * p.gradient for _, w, p in named)
        ev.warning = "; ".join(f"{who}: {p.warning}" for who, _, p in named if p.warning)
        for key in ("top_mass_fraction", "fines_fraction"):
            values = [p.extras[key] for p in parts if key in p.extras]
            if values:
                ev.extras[key] = max(values)
        for e, p in zip(self.experiments, parts):
            ev.extras[f"cost_{e.run.name}"] = p.value
        return ev


def grid_limit_reason(grid: GridSettings, top: float, fines: float) -> str:
    """Why a run's grid was too short or too coarse at the bottom, or ``""``: ``top`` is
    the largest volume share on its upper edge, ``fines`` the largest number share in its
    fines class."""
    reasons = []
    if top > grid.top_limit:
        reasons.append(
            f"the grid's last classes held {top:.3g} of the volume (grid.top_limit "
            f"{grid.top_limit:g}): particles outgrow the grid; add grid.classes or raise "
            "grid.ratio"
        )
    if fines > grid.bottom_limit:
        reasons.append(
            f"the grid's fines class held {fines:.3g} of the particles (grid.bottom_limit "
            f"{grid.bottom_limit:g}): fragments fall below the first class; lower grid.x0_um"
        )
    return "; ".join(reasons)


def _basis(target: str) -> int:
    return 3 if target.startswith("x_") else int(target[1])


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
    sim = Simulation(sol.t, sol.N[0], sizes, truth, solver.volumes, 0.0, 0.0)
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


__all__ = ["ExperimentFit", "PBEProblem", "Simulation", "simulate"]
