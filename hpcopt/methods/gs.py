"""Grid search over the unit cube: one full Cartesian grid, alternating block sweeps, or an
outer grid with alternating block sweeps nested inside each of its points.

Each parameter's grid is ``linspace(0, 1, r)`` in unit coordinates, so a log parameter gets
a geometric grid in natural units. A *sweep* is the grid over one block's parameters with
every other parameter held at the *incumbent* (the best point so far in this run); a *run*
is up to ``rounds`` passes of sweeps over the blocks, from the start point. Without
``outer`` there is one run; with it, one run per outer grid point, its outer parameters set.

Grid points are made lazily from flat indices, a window at a time, so a grid of any size
costs only what is asked; infeasible points are dropped before they are asked. ``ask``
only reads the state; ``tell`` scans the same chunk again, then advances.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from hpcopt.core.space import Space
from hpcopt.methods.base import Batch, Method, MethodConfig

_WINDOW = 65536  # most grid points built and checked for feasibility at a time
_MAX_GRID = 2**62  # flat indices are int64
_MAX_RESOLUTION = 10**7  # points per parameter: its grid is an array of this many floats


class GSConfig(MethodConfig):
    """``method: {name: gs}``: grid search, whole or block by block.

    ``resolution`` is points per parameter, one number or ``{name: r, default: r}``.
    Without ``blocks``, one full grid (over the parameters not in ``outer``). With
    ``blocks``, up to ``rounds`` passes sweep one block at a time from ``start``
    (``center`` or natural values ``{name: value}``, the others at the center); parameters
    in no block stay at the start. ``outer`` nests: a full grid over these parameters, and
    for each of its points a run over ``blocks``. ``batch_size`` caps a batch; a batch
    never holds points of two sweeps. ``per_point`` parameters (e.g. AP yaws) are swept at
    every point of every sweep, and the point keeps the best of them, as the original
    coverage study swept 8 orientations per AP position; every one is recorded.
    """

    name: Literal["gs"]
    resolution: int | dict[str, int] = 11
    blocks: list[list[str]] | None = None
    rounds: int = Field(3, ge=1)
    start: Literal["center"] | dict[str, float] = "center"
    outer: list[str] | None = None
    per_point: list[str] | None = None
    batch_size: int = Field(256, ge=1)

    @field_validator("resolution")
    @classmethod
    def _points_per_parameter(cls, resolution: int | dict[str, int]) -> int | dict[str, int]:
        values = resolution if isinstance(resolution, dict) else {"": resolution}
        few = {k: r for k, r in values.items() if r < 2}
        many = {k: r for k, r in values.items() if r > _MAX_RESOLUTION}
        named = isinstance(resolution, dict)
        if few:
            raise ValueError(
                "needs at least 2 points per parameter" + (f"; fewer for {few}" if named else "")
            )
        if many:
            raise ValueError(
                f"at most {_MAX_RESOLUTION} points per parameter (each parameter's grid is "
                "held in memory)" + (f"; more for {many}" if named else "")
            )
        return resolution

    @field_validator("blocks")
    @classmethod
    def _blocks_disjoint(cls, blocks: list[list[str]] | None) -> list[list[str]] | None:
        if blocks is None:
            return blocks
        if not blocks:
            raise ValueError("needs at least one block (or leave it out for a full grid)")
        seen: dict[str, int] = {}
        for i, block in enumerate(blocks):
            if not block:
                raise ValueError(f"blocks[{i}] has no parameter")
            for name in block:
                if seen.get(name) == i:
                    raise ValueError(f"blocks[{i}] names {name!r} twice")
                if name in seen:
                    raise ValueError(f"{name!r} is in both blocks[{seen[name]}] and blocks[{i}]")
                seen[name] = i
        return blocks

    @field_validator("outer")
    @classmethod
    def _outer_apart_from_blocks(
        cls, outer: list[str] | None, info: ValidationInfo
    ) -> list[str] | None:
        if outer is None:
            return outer
        if not outer:
            raise ValueError("needs at least one parameter (or leave it out)")
        if len(set(outer)) != len(outer):
            raise ValueError("names a parameter twice")
        for i, block in enumerate(info.data.get("blocks") or []):
            shared = [name for name in outer if name in block]
            if shared:
                raise ValueError(
                    f"{shared[0]!r} is also in blocks[{i}]; the inner rounds must leave the "
                    "outer parameters alone"
                )
        return outer

    @field_validator("per_point")
    @classmethod
    def _per_point_apart(
        cls, per_point: list[str] | None, info: ValidationInfo
    ) -> list[str] | None:
        if per_point is None:
            return per_point
        if not per_point:
            raise ValueError("needs at least one parameter (or leave it out)")
        if len(set(per_point)) != len(per_point):
            raise ValueError("names a parameter twice")
        blocks = info.data.get("blocks") or []
        taken = [*(info.data.get("outer") or []), *(name for block in blocks for name in block)]
        shared = [name for name in per_point if name in taken]
        if shared:
            raise ValueError(
                f"{shared[0]!r} is also in blocks or outer; per_point parameters are swept "
                "at every point of every block by themselves"
            )
        return per_point


class GridSearch(Method[GSConfig]):
    """Grid search and coordinate-alternating sweeps, asked in chunks of ``batch_size``.

    A run stops early once a further sweep would ask the same points again: when every
    other block's sweep since a block's last sweep left the incumbent where it was.

    State: ``outer_index`` (the run's outer grid point), ``sweep`` (counter over the whole
    search, the batches' ``iteration``), ``run_sweep`` (sweep within the run; its block is
    ``run_sweep % len(blocks)``), ``unchanged`` (consecutive sweeps that kept the
    incumbent), ``position`` (next flat index in the sweep's grid), ``skip`` (flat index of
    the incumbent when its loss is known, else -1), ``base_u`` (d,) (the incumbent the
    sweep's grid runs through), incumbent ``inc_u`` (d,) and ``inc_loss``, best over
    everything ``best_u`` (d,) and ``best_loss``. Unknown losses are inf.
    """

    def setup(self) -> None:
        config, space = self.config, self.space
        self._resolution = space.per_param(config.resolution, "method.resolution").astype(int)
        outer = config.outer or []
        per_point = config.per_point or []
        self._outer = _columns(space, "method.outer", outer)
        _columns(space, "method.per_point", per_point)
        if config.blocks is None:
            rest = [n for n in space.names if n not in outer and n not in per_point]
            if not rest:
                raise ValueError(
                    "method.outer and method.per_point name every parameter, leaving none to search"
                )
            blocks = {"method.resolution": [*rest, *per_point]}
        else:
            blocks = {
                f"method.blocks[{i}]": [*block, *per_point] for i, block in enumerate(config.blocks)
            }
        self._blocks = [_columns(space, where, names) for where, names in blocks.items()]
        for where, cols in [("method.outer", self._outer), *zip(blocks, self._blocks)]:
            if self._size(cols) >= _MAX_GRID:
                raise ValueError(f"{where}: a grid of {self._size(cols)} points is too large")
        # A periodic parameter's two ends are one angle: its grid leaves the upper one out.
        self._grids = [
            np.linspace(0.0, 1.0, r, endpoint=not periodic)
            for r, periodic in zip(self._resolution, space.periodic)
        ]
        self._start = self._encode_start()
        self.state = {"outer_index": 0, "sweep": 0, **self.start_best()}
        self._start_run()
        self._settle()

    @property
    def done(self) -> bool:
        """True once the last run (one per outer grid point) has ended."""
        return self.state["outer_index"] >= self._size(self._outer)

    @property
    def expected_evaluations(self) -> int:
        """Upper bound: every grid point of every sweep of every run, none pruned or skipped."""
        # One block has one sweep per run: a second would repeat it.
        rounds = 1 if len(self._blocks) == 1 else self.config.rounds
        sweeps = sum(self._size(cols) for cols in self._blocks)
        return self._size(self._outer) * rounds * sweeps

    def ask(self) -> Batch:
        """The next up to ``batch_size`` feasible points of the current sweep."""
        if self.done:
            raise RuntimeError("grid search is done: every grid point was visited")
        points, _ = self._scan(self.state["position"], self.config.batch_size)
        return Batch(points, iteration=self.state["sweep"])

    def tell(self, batch: Batch, losses: np.ndarray, gradients: np.ndarray | None = None) -> None:
        """Losses (n,) of the batch just asked (NaN where failed); gradients are ignored."""
        s = self.state
        points, end = self._scan(s["position"], self.config.batch_size)
        losses = np.asarray(losses, dtype=float)
        if batch.iteration != s["sweep"] or losses.shape != (len(points),):
            raise ValueError(
                f"tell: expected {len(points)} losses for sweep {s['sweep']}, got shape "
                f"{losses.shape} for sweep {batch.iteration}"
            )
        point, loss = self.record_best(points, losses)
        if loss < s["inc_loss"]:
            s["inc_u"], s["inc_loss"] = point.copy(), loss
        s["position"] = end
        self._settle()

    def _encode_start(self) -> np.ndarray:
        u = np.full(self.space.dim, 0.5)
        if self.config.start == "center":
            return u
        x = self.space.decode(u)
        for name, value in self.config.start.items():
            (j,) = _columns(self.space, "method.start", [name])
            low, high = self.space.low[j], self.space.high[j]
            if not low <= value <= high:
                raise ValueError(f"method.start.{name}: {value} is outside [{low}, {high}]")
            x[j] = value
            u[j] = self.space.encode(x)[j]
        return u

    def _size(self, cols: np.ndarray) -> int:
        return math.prod(int(r) for r in self._resolution[cols])

    def _grid_points(self, cols: np.ndarray, base: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """Points (len(flat), d): ``base`` with columns ``cols`` set to grid point ``flat``."""
        points = np.repeat(base[None, :], len(flat), axis=0)
        for col, index in zip(cols, np.unravel_index(flat, tuple(self._resolution[cols]))):
            points[:, col] = self._grids[col][index]
        return points

    def _scan(self, position: int, count: int) -> tuple[np.ndarray, int]:
        """Up to ``count`` feasible points (n, d) of the current sweep from flat index
        ``position`` on, and the flat index after the last one taken (or the grid's end)."""
        s = self.state
        cols = self._blocks[s["run_sweep"] % len(self._blocks)]
        size = self._size(cols)
        taken: list[np.ndarray] = []
        wanted, window = count, count + 1  # +1: room for the skipped incumbent
        while position < size and wanted:
            flat = np.arange(position, min(size, position + window))
            position = int(flat[-1]) + 1
            flat = flat[flat != s["skip"]]
            points = self._grid_points(cols, s["base_u"], flat)
            ok = np.flatnonzero(self.feasible(points))[:wanted]
            taken.append(points[ok])
            wanted -= len(ok)
            if not wanted:
                position = int(flat[ok[-1]]) + 1
            # Where feasible points are sparse, look further ahead each time (memory-bounded).
            window = max(count, min(2 * window, _WINDOW))
        return np.concatenate(taken or [np.empty((0, self.space.dim))]), position

    def _settle(self) -> None:
        """Move to the next feasible point to ask, ending sweeps and runs that have none."""
        while not self.done:
            points, end = self._scan(self.state["position"], 1)
            if len(points):
                self.state["position"] = end - 1  # the point found, asked next
                return
            self._end_sweep()

    def _end_sweep(self) -> None:
        s = self.state
        n_blocks = len(self._blocks)
        kept = np.array_equal(s["inc_u"], s["base_u"])
        s["unchanged"] = s["unchanged"] + 1 if kept else 0
        s["sweep"] += 1
        s["run_sweep"] += 1
        # If the sweeps of the other blocks since this block's last sweep kept the
        # incumbent, this block's grid is the same as then: the run has converged.
        converged = s["run_sweep"] >= n_blocks and s["unchanged"] >= n_blocks - 1
        if converged or s["run_sweep"] >= self.config.rounds * n_blocks:
            s["outer_index"] += 1
            if not self.done:
                self._start_run()
        else:
            self._start_sweep()

    def _start_run(self) -> None:
        s = self.state
        start = self._start
        if len(self._outer):
            start = self._grid_points(self._outer, start, np.array([s["outer_index"]]))[0]
        s["inc_u"], s["inc_loss"] = start.copy(), float("inf")
        s["run_sweep"], s["unchanged"] = 0, 0
        self._start_sweep()

    def _start_sweep(self) -> None:
        s = self.state
        s["base_u"], s["position"], s["skip"] = s["inc_u"].copy(), 0, -1
        if np.isfinite(s["inc_loss"]):
            cols = self._blocks[s["run_sweep"] % len(self._blocks)]
            at = [np.flatnonzero(self._grids[c] == s["base_u"][c]) for c in cols]
            if all(len(a) for a in at):
                shape = tuple(self._resolution[cols])
                s["skip"] = int(np.ravel_multi_index(tuple(int(a[0]) for a in at), shape))


def _columns(space: Space, where: str, names: list[str]) -> np.ndarray:
    """Column indices of ``names``; ``ValueError`` naming the config key and the space."""
    try:
        return np.array(space.indices(names), dtype=int)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc.args[0]}") from None
