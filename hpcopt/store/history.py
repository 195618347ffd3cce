"""A trial's history: every evaluation as columns of arrays, and its two HDF5 layouts.

The consolidated trial file has one dataset per column (documented in the README); a
journal segment packs the numeric columns into one compound dataset, because creating
one HDF5 object is much cheaper than creating a dozen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import h5py
import numpy as np

from hpcopt.core.evaluation import Evaluation

STATUS_OK, STATUS_FAILED = 0, 1
STRING_DTYPE = h5py.string_dtype()

_NUMBERS = {
    "value": np.float64,
    "status": np.uint8,
    "iteration": np.int64,
    "batch": np.int64,
    "wall_time_s": np.float64,
    "finished_at": np.float64,
}
_STRINGS = ("error", "worker", "node", "gpu_ids")


@dataclass
class History:
    """Every evaluation of a trial, in the order they were made. Row ``i`` of each array is
    evaluation ``i``; ``x`` and ``gradient`` have shape ``(n, d)``; the string columns
    (``error``, ``worker``, ``node``, ``gpu_ids``) are object arrays of ``str``."""

    x: np.ndarray
    value: np.ndarray
    status: np.ndarray
    iteration: np.ndarray
    batch: np.ndarray
    wall_time_s: np.ndarray
    finished_at: np.ndarray
    error: np.ndarray
    worker: np.ndarray
    node: np.ndarray
    gpu_ids: np.ndarray
    gradient: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.value)

    def best(self, direction: str) -> int | None:
        """Row of the best successful evaluation (first of equals), or None."""
        ok = np.flatnonzero(self.status == STATUS_OK)
        if not len(ok):
            return None
        values = self.value[ok]
        return int(ok[np.argmax(values) if direction == "maximize" else np.argmin(values)])

    @classmethod
    def empty(cls, dim: int) -> History:
        return cls(
            x=np.empty((0, dim)),
            **{c: np.empty(0, t) for c, t in _NUMBERS.items()},
            **{c: np.empty(0, object) for c in _STRINGS},
        )

    @classmethod
    def from_evaluations(
        cls, x: np.ndarray, evaluations: list[Evaluation], iteration: int, batch: int
    ) -> History:
        """One batch's rows. Extras missing from a (failed) evaluation are NaN."""
        n = len(evaluations)
        extras = {}
        for name in sorted({k for ev in evaluations for k in ev.extras}):
            shape = next(np.shape(ev.extras[name]) for ev in evaluations if name in ev.extras)
            col = np.full((n, *shape), np.nan)
            for i, ev in enumerate(evaluations):
                if name in ev.extras:
                    col[i] = ev.extras[name]
            extras[name] = col
        gradient = None
        if any(ev.gradient is not None for ev in evaluations):
            gradient = np.full((n, x.shape[1]), np.nan)
            for i, ev in enumerate(evaluations):
                if ev.gradient is not None:
                    gradient[i] = ev.gradient
        return cls(
            x=np.asarray(x, dtype=float).reshape(n, -1),
            value=np.array([ev.value for ev in evaluations], dtype=float),
            status=np.array(
                [STATUS_OK if ev.ok else STATUS_FAILED for ev in evaluations], np.uint8
            ),
            iteration=np.full(n, iteration, np.int64),
            batch=np.full(n, batch, np.int64),
            wall_time_s=np.array([ev.wall_time_s for ev in evaluations], dtype=float),
            finished_at=np.full(n, time.time()),
            **{c: np.array([getattr(ev, c) for ev in evaluations], dtype=object) for c in _STRINGS},
            gradient=gradient,
            extras=extras,
        )

    @classmethod
    def concat(cls, parts: list[History], dim: int) -> History:
        """Rows of all ``parts`` in order; a column missing from a part is NaN there."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(dim)
        if len(parts) == 1:
            return parts[0]
        gradient = None
        if any(p.gradient is not None for p in parts):
            gradient = np.concatenate(
                [
                    p.gradient if p.gradient is not None else np.full((len(p), dim), np.nan)
                    for p in parts
                ]
            )
        extras = {}
        for name in sorted({k for p in parts for k in p.extras}):
            shape = next(p.extras[name].shape[1:] for p in parts if name in p.extras)
            extras[name] = np.concatenate(
                [p.extras.get(name, np.full((len(p), *shape), np.nan)) for p in parts]
            )
        columns = ("x", *_NUMBERS, *_STRINGS)
        return cls(
            **{c: np.concatenate([getattr(p, c) for p in parts]) for c in columns},
            gradient=gradient,
            extras=extras,
        )

    def write(self, group: h5py.Group) -> None:
        """One dataset per column under ``group`` (the consolidated layout)."""
        for name in ("x", *_NUMBERS):
            group.create_dataset(name, data=getattr(self, name))
        for name in _STRINGS:
            group.create_dataset(name, data=getattr(self, name).astype(object), dtype=STRING_DTYPE)
        if self.gradient is not None:
            group.create_dataset("gradient", data=self.gradient)
        extras = group.create_group("extras")
        for name, col in self.extras.items():
            extras.create_dataset(name, data=col)

    @classmethod
    def read(cls, group: h5py.Group) -> History:
        """Inverse of :meth:`write`."""
        n = len(group["value"])
        return cls(
            **{c: group[c][()] for c in ("x", *_NUMBERS)},
            # Columns added in later versions read as empty strings from older files.
            **{
                c: np.array(group[c].asstr()[()] if c in group else [""] * n, dtype=object)
                for c in _STRINGS
            },
            gradient=group["gradient"][()] if "gradient" in group else None,
            extras={k: v[()] for k, v in group["extras"].items()},
        )

    def to_records(self) -> tuple[np.ndarray, dict[str, list[str]]]:
        """The rows as one compound array (numbers) and their strings, for a segment:
        one dataset is much cheaper to create than a dataset per column."""
        d = self.x.shape[1]
        fields = [("x", "f8", (d,))] + [(c, t) for c, t in _NUMBERS.items()]
        if self.gradient is not None:
            fields.append(("gradient", "f8", (d,)))
        fields += [(f"extras/{k}", "f8", v.shape[1:]) for k, v in self.extras.items()]
        records = np.empty(len(self), dtype=fields)
        for c in ("x", *_NUMBERS):
            records[c] = getattr(self, c)
        if self.gradient is not None:
            records["gradient"] = self.gradient
        for k, v in self.extras.items():
            records[f"extras/{k}"] = v
        return records, {f"rows.{c}": list(getattr(self, c)) for c in _STRINGS}

    @classmethod
    def from_records(cls, records: np.ndarray, strings: dict[str, list[str]]) -> History:
        """Inverse of :meth:`to_records`."""
        names = records.dtype.names
        return cls(
            **{c: records[c].copy() for c in ("x", *_NUMBERS)},
            **{c: np.array(strings[f"rows.{c}"], dtype=object).reshape(-1) for c in _STRINGS},
            gradient=records["gradient"].copy() if "gradient" in names else None,
            extras={n[7:]: records[n].copy() for n in names if n.startswith("extras/")},
        )
