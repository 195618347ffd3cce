"""PNG figures of a campaign folder: how every trial converged, how each method does on
average, and the physics at each trial's best point (coverage radio maps, PBE fits).

Figures are drawn on :class:`matplotlib.figure.Figure` objects and saved with the Agg
renderer, without pyplot: nothing global changes, so importing this module in a notebook
leaves its plotting backend alone, and no figure outlives its file.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from pydantic import ValidationError

from hpcopt.config import TrialConfig
from hpcopt.config.registry import build_problem
from hpcopt.core.files import atomic_path
from hpcopt.core.text import duration
from hpcopt.problems.coverage.office import HEIGHT, boxes
from hpcopt.store.campaign_store import STATUS_OK, CampaignStore, TrialRecord

__all__ = ["FiguresFailed", "plot_campaign"]

DPI = 120
WIDTH_IN = 10.0
METHOD_COLOURS = {"gd": "Blues", "gs": "Oranges", "ga": "Greens", "bo": "Purples"}
"""A colour map per method: its trials get shades of it, its median the dark end."""
MINUTES_ABOVE_S = 300.0
LEGEND_TRIALS_MAX = 24
"""With more trials than this the legend lists methods, not trials."""
PBE_PANELS_MAX = 12


@dataclass
class _Trace:
    """One trial's convergence: ``evaluation`` (k,) 1-based numbers of its successful
    evaluations in the order they were made and ``best`` (k,) the best value so far by its
    direction; ``batch_elapsed_s`` (b,) the seconds from its first batch to the end of each
    batch with a success (the store times batches, not evaluations) and ``batch_best`` (b,)
    the best value so far then."""

    record: TrialRecord
    evaluation: np.ndarray
    best: np.ndarray
    batch_elapsed_s: np.ndarray
    batch_best: np.ndarray

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def method(self) -> str:
        return str(self.record.meta.get("method", "?"))

    @property
    def problem(self) -> str:
        return str(self.record.meta.get("problem", "?"))

    def best_at_every_evaluation(self, length: int) -> np.ndarray:
        """Best so far after evaluation ``1 .. length`` ``(length,)``: NaN before the first
        success, held after a failure and after the trial's last evaluation."""
        out = np.full(length, np.nan)
        for start, value in zip(self.evaluation - 1, self.best):
            out[start:] = value
        return out


class FiguresFailed(RuntimeError):
    """Figures that were asked for could not be made (the others were): ``failed`` maps
    each one's file name to why; ``written`` lists the figures that were made."""

    def __init__(self, failed: dict[str, str], written: list[Path]) -> None:
        self.failed, self.written = failed, written
        reasons = "; ".join(f"{name}: {why}" for name, why in failed.items())
        super().__init__(f"{len(failed)} figure(s) could not be made: {reasons}")


def plot_campaign(
    root: str | Path,
    out_dir: str | Path | None = None,
    trials: list[str] | None = None,
    physics: bool = True,
) -> list[Path]:
    """Write the campaign's figures as PNG files; return their paths in a stable order.

    ``convergence.png`` (best so far of every trial against evaluations and wall time) and
    ``convergence-by-method.png`` (median, min and max over each method's trials) first;
    then, if ``physics``, ``coverage-<trial>.png`` (the radio map at the trial's best point,
    recomputed with Sionna RT) and ``pbe-<trial>.png`` (fitted and measured size
    distributions) in trial order. ``out_dir`` defaults to ``root/plots``; ``trials``
    restricts the figures to those trials (``ValueError`` naming unknown ones). A trial
    without a successful evaluation is left out with a note on stderr. A physics figure
    that cannot be made (Sionna missing, a data file gone, a solver error) does not stop
    the others: once they are written, :class:`FiguresFailed` names each that failed and
    why. Raises ``StoreError`` if ``root`` is not a campaign folder or a figure cannot be
    written.
    """
    store = CampaignStore.open(root)
    names = store.trial_names()
    if trials is not None:
        unknown = [t for t in trials if t not in names]
        if unknown:
            raise ValueError(f"no trial {unknown} in {store.root}; it has {names}")
        names = [n for n in names if n in trials]
    traces = []
    for name in names:
        trace = _trace(store.read_trial(name))
        if trace is None:
            print(f"plot: trial {name} has no successful evaluation; left out", file=sys.stderr)
        else:
            traces.append(trace)
    out = Path(out_dir) if out_dir is not None else store.folder.plots
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    failed: dict[str, str] = {}
    if traces:
        title = str(store.attrs().get("name", store.root.name))
        written.append(_save(_convergence_figure(traces, title), out / "convergence.png"))
        by_method = _by_method_figure(traces, title)
        written.append(_save(by_method, out / "convergence-by-method.png"))
    for trace in traces if physics else []:
        kind = trace.record.meta.get("config", {}).get("problem", {}).get("name")
        draw = _PHYSICS.get(kind)
        if draw is None:
            continue
        path = out / f"{kind}-{trace.name}.png"
        try:
            figure = draw(trace)
        except Exception as exc:  # Sionna missing, a bad scene, a solver error: say so below
            failed[path.name] = f"trial {trace.name}: {_one_line(exc)}"
            continue
        written.append(_save(figure, path))
    if failed:
        raise FiguresFailed(failed, written)
    return written


def _one_line(exc: Exception) -> str:
    """What went wrong, on one line; a config that no longer validates (a data file that
    has gone, say) by its messages rather than pydantic's multi-line report."""
    if isinstance(exc, ValidationError):
        return "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _trace(record: TrialRecord) -> _Trace | None:
    h = record.history
    ok = np.flatnonzero((h.status == STATUS_OK) & np.isfinite(h.value))
    if not len(ok):
        return None
    accumulate = np.fmax if record.meta.get("direction") == "maximize" else np.fmin
    best = accumulate.accumulate(h.value[ok])
    finished = np.maximum.accumulate(h.finished_at[ok])  # clocks of resumed runs may differ
    ends = np.unique(finished)
    last_of_batch = np.searchsorted(finished, ends, side="right") - 1
    return _Trace(
        record=record,
        evaluation=ok + 1,
        best=best,
        batch_elapsed_s=ends - h.finished_at[0],
        batch_best=best[last_of_batch],
    )


def _save(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")
    return path


def _trial_colours(traces: list[_Trace]) -> list[tuple[float, ...]]:
    """A shade of its method's colour map for each trace; other methods in grey."""
    colours = []
    for trace in traces:
        same = [t for t in traces if t.method == trace.method]
        cmap = matplotlib.colormaps[METHOD_COLOURS.get(trace.method, "Greys")]
        shade = 0.75 if len(same) == 1 else 0.45 + 0.5 * same.index(trace) / (len(same) - 1)
        colours.append(cmap(shade))
    return colours


def _method_colour(method: str) -> tuple[float, ...]:
    return to_rgba(matplotlib.colormaps[METHOD_COLOURS.get(method, "Greys")](0.8))


def _log_if_wide(ax: Any, values: np.ndarray) -> None:
    """Log y-scale when every value is > 0 and they span more than two decades."""
    v = values[np.isfinite(values)]
    if len(v) and v.min() > 0 and v.max() / v.min() > 100:
        ax.set_yscale("log")


def _objective_label(traces: list[_Trace]) -> str:
    directions = {t.record.meta.get("direction", "minimize") for t in traces}
    if len(directions) > 1:
        return "best objective so far"
    return {"maximize": "best (highest) objective so far"}.get(
        directions.pop(), "best (lowest) objective so far"
    )


def _problems_title(traces: list[_Trace]) -> str:
    problems = sorted({t.problem for t in traces})
    return problems[0] if len(problems) == 1 else f"{len(problems)} problems"


def _convergence_figure(traces: list[_Trace], campaign: str) -> Figure:
    """Best so far of every trial against evaluation number (left) and wall time (right):
    one line per trial, coloured by method."""
    many = len(traces) > LEGEND_TRIALS_MAX
    columns = min(len(traces), 6)
    legend_rows = 1 if many else -(-len(traces) // columns)
    figure = Figure(figsize=(WIDTH_IN, 4.6 + 0.22 * legend_rows), layout="constrained")
    by_count, by_time = figure.subplots(1, 2, sharey=True)
    longest = max(float(t.batch_elapsed_s[-1]) for t in traces)
    scale, unit = (60.0, "min") if longest > MINUTES_ABOVE_S else (1.0, "s")
    for trace, colour in zip(traces, _trial_colours(traces)):
        label = trace.name if trace.method in trace.name else f"{trace.name} ({trace.method})"
        style = {"color": colour, "lw": 1.6, "where": "post", "label": label}
        by_count.step(trace.evaluation, trace.best, **style)
        by_time.step(trace.batch_elapsed_s / scale, trace.batch_best, marker=".", **style)
    _log_if_wide(by_count, np.concatenate([t.best for t in traces]))
    by_count.set(xlabel="evaluation", ylabel=_objective_label(traces))
    by_count.set_title("against evaluations")
    by_time.set(xlabel=f"wall time since the first batch ended ({unit})")
    by_time.set_title("against wall time (a dot per batch)")
    for ax in (by_count, by_time):
        ax.grid(alpha=0.3)
    if many:
        methods = sorted({t.method for t in traces})
        handles = [Line2D([], [], color=_method_colour(m), lw=2) for m in methods]
        counts = [sum(t.method == m for t in traces) for m in methods]
        labels = [f"{m} ({c} trials)" for m, c in zip(methods, counts)]
        figure.legend(handles, labels, loc="outside lower center", ncols=len(methods))
    else:
        handles, labels = by_count.get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize="small")
    trials = f"{len(traces)} trial{'s' if len(traces) > 1 else ''}"
    figure.suptitle(f"{campaign}: convergence of {trials}, {_problems_title(traces)}")
    return figure


def _by_method_figure(traces: list[_Trace], campaign: str) -> Figure:
    """Per method, the median best so far over its trials against evaluation number, with
    the min-max band; one panel per problem. A trial that stopped early keeps its final
    best for the longer trials' remaining evaluations."""
    problems = sorted({t.problem for t in traces})
    figure = Figure(figsize=(WIDTH_IN, 4.8), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(problems), squeeze=False)[0])
    for ax, problem in zip(axes, problems):
        mine = [t for t in traces if t.problem == problem]
        shown = []
        for method in sorted({t.method for t in mine}):
            group = [t for t in mine if t.method == method]
            length = max(int(t.evaluation[-1]) for t in group)
            best = np.array([t.best_at_every_evaluation(length) for t in group])
            median, low, high = _median_band(best)
            n = np.arange(1, length + 1)
            colour = _method_colour(method)
            ax.fill_between(n, low, high, color=colour, alpha=0.2, step="post", lw=0)
            ax.step(n, median, where="post", color=colour, lw=2, label=f"{method} ({len(group)})")
            shown += [low, high]
        _log_if_wide(ax, np.concatenate(shown))
        ax.set(xlabel="evaluation", ylabel=_objective_label(mine))
        ax.set_title(problem if len(problems) > 1 else "median over trials, band: min to max")
        ax.grid(alpha=0.3)
        ax.legend(title="method (trials)", fontsize="small")
    figure.suptitle(f"{campaign}: convergence by method, {_problems_title(traces)}")
    return figure


def _median_band(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, min and max over the rows ``(trials, n)``, ignoring NaN; NaN where a
    column has no value at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: no success yet
        return np.nanmedian(rows, axis=0), np.nanmin(rows, axis=0), np.nanmax(rows, axis=0)


def _best_point(trace: _Trace) -> tuple[TrialConfig, np.ndarray, float]:
    row = trace.record.best_index()
    config = TrialConfig.model_validate(trace.record.meta["config"])
    h = trace.record.history
    return config, h.x[row], float(h.value[row])


def _coverage_figure(trace: _Trace) -> Figure:
    """The combined radio map (best server per cell, dBm) at the trial's best point, with
    the APs, the reflector and its focus, and the shipped office's walls."""
    trial, x, _ = _best_point(trace)
    config = trial.problem
    problem = build_problem(config)
    problem.setup()
    per_ap, placed = problem.radio_map(x)
    combined = per_ap.max(axis=0)
    floor = config.objective.floor_dbm
    shown = np.ma.masked_where(~np.isfinite(combined) | (combined <= floor), combined)
    x0, y0, x1, y1 = config.area()
    # The map keeps its aspect: size the figure so the colorbar fits it, legend below.
    height = (WIDTH_IN - 1.9) * (y1 - y0) / (x1 - x0) + 1.5
    figure = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    ax = figure.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.75")
    image = ax.imshow(shown, origin="lower", extent=(x0, x1, y0, y1), cmap=cmap)
    figure.colorbar(image, cax=ax.inset_axes((1.02, 0.0, 0.025, 1.0)), label="RSS (dBm)")
    if config.scene == "office":
        _draw_office_walls(ax)
    for i in range(1, len(per_ap) + 1):
        ap = placed[f"ap{i}_position"]
        label = "AP" if i == 1 else "_nolegend_"
        ax.plot(*ap[:2], "^", ms=11, mfc="white", mec="black", clip_on=False, label=label)
        ax.annotate(
            f"AP{i}", ap[:2], xytext=(0, -16), textcoords="offset points", ha="center",
            fontsize="small", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.8},
        )  # fmt: skip
    if "reflector_position" in placed:
        centre, normal = placed["reflector_position"], placed["reflector_normal"]
        ax.plot(*centre[:2], "s", ms=9, mfc="red", mec="black", clip_on=False, label="reflector")
        ax.annotate(
            "", xy=centre[:2] + 1.5 * normal[:2], xytext=centre[:2],
            arrowprops={"arrowstyle": "->", "color": "red", "lw": 1.8},
        )  # fmt: skip
        p = dict(zip(trial.problem.space().names, x))
        focus = (p["focus_x"], p["focus_y"])
        ax.plot(*focus, "x", ms=10, mew=2.5, color="red", clip_on=False, label="focus")
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x (m)", ylabel="y (m)")
    handles, labels = ax.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    # P5 as the objective takes it: over every floor cell, dark ones at floor_dbm
    v = np.maximum(np.where(np.isfinite(combined), combined, floor), floor)[problem.floor]
    lit = float(np.mean(np.isfinite(combined[problem.floor])))
    ax.set_title(
        f"{trace.name}: best-server RSS at the best point, P5 = {np.percentile(v, 5):.1f} dBm "
        f"({lit:.0%} of the floor lit)"
    )
    return figure


def _draw_office_walls(ax: Any) -> None:
    """The shipped office's walls (not its floor slab or ceiling) as dark rectangles."""
    for mesh in boxes().values():
        for (bx0, by0, bz0), (bx1, by1, bz1) in mesh:
            if bz0 >= 0.0 and bz1 <= HEIGHT:
                ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, color="0.1", lw=0.5))


def _pbe_figure(trace: _Trace) -> Figure:
    """Measured and fitted size distributions at the data's times (at most
    ``PBE_PANELS_MAX`` of them, evenly picked), at the trial's best point, on the grid the
    cost compares them on."""
    trial, x, value = _best_point(trace)
    problem = build_problem(trial.problem)
    problem.setup()
    solution = problem.simulate(x[None])
    if solution.error[0]:
        raise ValueError(f"the best point no longer solves: {solution.error[0]}")
    data, sizes = problem.data, problem.sizes
    quantity = data.quantity
    measured = problem.data_target(quantity)
    fitted = problem.model_target(sizes.numbers(solution.N[0]), quantity)
    if trial.problem.smoothing == "kde":
        size = data.x
    else:
        size = sizes.edges[1:] if quantity.startswith("Q") else sizes.x
    times = np.unique(np.linspace(0, len(data.t) - 1, min(len(data.t), PBE_PANELS_MAX)).round())
    cols = min(len(times), 4)
    rows = -(-len(times) // cols)
    figure = Figure(figsize=(WIDTH_IN, 1.2 + 2.4 * rows), layout="constrained")
    axes = figure.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, k in zip(axes, times.astype(int)):
        ax.plot(size, measured[k], "o", ms=3.5, color="black", label="data")
        ax.plot(size, fitted[k], "-", lw=1.8, color="tab:red", label="model")
        ax.set_xscale("log")
        # PSDs often span about a decade: label 1-2-5 sizes plainly, not crowded 2x10^0
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"t = {duration(float(data.t[k]), significant=3)}", fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes[len(times) :]:
        ax.set_visible(False)
    unit = "µm" if data.size_unit == "um" else data.size_unit
    ylabel = f"{quantity} (-)" if quantity.startswith("Q") else f"{quantity} (1/{unit})"
    for ax in axes[::cols]:
        ax.set_ylabel(ylabel)
    for ax in axes[(rows - 1) * cols :]:
        ax.set_xlabel(f"size ({unit})")
    axes[0].legend(fontsize="small")
    figure.suptitle(f"{trace.name}: {quantity} fit at the best point (cost {value:.3g})")
    return figure


_PHYSICS: dict[str, Callable[[_Trace], Figure]] = {"coverage": _coverage_figure, "pbe": _pbe_figure}
