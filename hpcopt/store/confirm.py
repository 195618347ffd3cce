"""Confirmed winners: a trial's best distinct points re-scored by independent problem variants.

When a trial's method is done and its problem has a
:class:`~hpcopt.problems.base.Confirmation`, the driver calls :func:`confirm`: the
``top_k`` best distinct successful points of the whole history are evaluated by every
variant problem (other Monte Carlo seeds, more rays), one ``engine.map`` per variant, and a
:class:`ConfirmationRecord` is saved after each variant, so an interrupted confirmation
continues where it stopped. The confirmed best is the candidate with the best mean.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from hpcopt.core.evaluation import Evaluation
from hpcopt.problems.base import Confirmation
from hpcopt.store.history import STATUS_OK, STRING_DTYPE, History

if TYPE_CHECKING:
    from hpcopt.engine.base import Engine


@dataclass
class ConfirmationRecord:
    """A trial's confirmation, complete or under way.

    Row ``i`` is candidate ``i``, best raw value first: ``evaluation`` is its row in the
    trial's history, ``x`` its point (natural units, shape ``(k, d)``), ``raw_value`` its
    value there. Column ``j`` of ``variant_value`` (shape ``(k, j)``, NaN where that
    evaluation failed, ``variant_error`` saying why) comes from variant ``problems[j]``
    (each variant's config as plain JSON data); there are fewer columns than ``problems``
    while the confirmation is under way. ``direction`` and ``top_k`` are the trial's.
    """

    direction: str
    top_k: int
    problems: list[dict[str, Any]]
    evaluation: np.ndarray
    x: np.ndarray
    raw_value: np.ndarray
    variant_value: np.ndarray
    variant_error: np.ndarray

    @classmethod
    def start(
        cls, history: History, confirmation: Confirmation, direction: str
    ) -> ConfirmationRecord:
        """The candidates of ``history`` for ``confirmation``, no variant evaluated yet."""
        if confirmation.top_k < 1:
            raise ValueError(f"confirmation.top_k must be >= 1, got {confirmation.top_k}")
        rows = best_distinct(history, confirmation.top_k, direction)
        return cls(
            direction=direction,
            top_k=confirmation.top_k,
            problems=[p.model_dump(mode="json") for p in confirmation.problems],
            evaluation=rows,
            x=history.x[rows],
            raw_value=history.value[rows],
            variant_value=np.empty((len(rows), 0)),
            variant_error=np.empty((len(rows), 0), dtype=object),
        )

    def describes(self, confirmation: Confirmation) -> bool:
        """Whether this record is (part of) the confirmation that ``confirmation`` asks for."""
        variants = [p.model_dump(mode="json") for p in confirmation.problems]
        return self.top_k == confirmation.top_k and self.problems == variants

    @property
    def variants_done(self) -> int:
        return self.variant_value.shape[1]

    @property
    def complete(self) -> bool:
        """Whether every variant has evaluated every candidate."""
        return self.variants_done == len(self.problems)

    def add_variant(self, evaluations: list[Evaluation]) -> ConfirmationRecord:
        """This record with the next variant's evaluations (one per candidate) as a column."""
        values = np.array([ev.value if ev.ok else np.nan for ev in evaluations], dtype=float)
        errors = np.array([ev.error for ev in evaluations], dtype=object)
        k = len(self.evaluation)
        return ConfirmationRecord(
            direction=self.direction,
            top_k=self.top_k,
            problems=self.problems,
            evaluation=self.evaluation,
            x=self.x,
            raw_value=self.raw_value,
            variant_value=np.column_stack([self.variant_value, values.reshape(k)]),
            variant_error=np.column_stack([self.variant_error, errors.reshape(k)]),
        )

    @property
    def n(self) -> np.ndarray:
        """``(k,)`` int64: successful variant evaluations per candidate."""
        return np.sum(~np.isnan(self.variant_value), axis=1).astype(np.int64)

    @property
    def mean(self) -> np.ndarray:
        """``(k,)``: mean over each candidate's successful variant values (NaN if none)."""
        return np.array([v.mean() if v.size else np.nan for v in self._successful()])

    @property
    def standard_error(self) -> np.ndarray:
        """``(k,)``: std (ddof=1) of the successful variant values over sqrt(n); NaN if n < 2."""
        return np.array(
            [v.std(ddof=1) / np.sqrt(v.size) if v.size >= 2 else np.nan for v in self._successful()]
        )

    def _successful(self) -> list[np.ndarray]:
        return [row[~np.isnan(row)] for row in self.variant_value]

    def best(self) -> int | None:
        """The candidate with the best mean (first of equals), once complete; else None."""
        mean = self.mean
        scored = np.flatnonzero(~np.isnan(mean))
        if not self.complete or not len(scored):
            return None
        pick = np.argmax if self.direction == "maximize" else np.argmin
        return int(scored[pick(mean[scored])])

    def confirmed(self) -> tuple[float, float] | None:
        """The confirmed best's mean and standard error (NaN when n < 2), once complete."""
        best = self.best()
        if best is None:
            return None
        return float(self.mean[best]), float(self.standard_error[best])

    def summary(self, parameters: list[str]) -> dict[str, Any]:
        """The summary columns of a complete confirmation (``{}`` while under way):
        ``confirmed_value``, ``confirmed_se``, ``confirmed_n``, ``confirmed_evaluation``
        and ``confirmed.<parameter>`` (None where there is no confirmed best or no SE)."""
        if not self.complete:
            return {}
        best = self.best()
        if best is None:
            return {"confirmed_value": None, "confirmed_se": None, "confirmed_n": 0}
        row: dict[str, Any] = {
            "confirmed_value": float(self.mean[best]),
            "confirmed_se": _number(float(self.standard_error[best])),
            "confirmed_n": int(self.n[best]),
            "confirmed_evaluation": int(self.evaluation[best]),
        }
        row.update({f"confirmed.{p}": float(v) for p, v in zip(parameters, self.x[best])})
        return row

    def write(self, group: h5py.Group) -> None:
        """The record under ``group`` (the layout the store's docstring documents)."""
        group.attrs["direction"] = self.direction
        group.attrs["top_k"] = self.top_k
        group.attrs["problems"] = json.dumps(self.problems)
        best = self.best()
        if best is not None:
            group.attrs["best"] = best
        for name in ("evaluation", "x", "raw_value", "variant_value", "mean", "standard_error"):
            group.create_dataset(name, data=getattr(self, name))
        group.create_dataset("n", data=self.n)
        group.create_dataset("variant_error", data=self.variant_error, dtype=STRING_DTYPE)

    @classmethod
    def read(cls, group: h5py.Group) -> ConfirmationRecord:
        """Inverse of :meth:`write`."""
        return cls(
            direction=str(group.attrs["direction"]),
            top_k=int(group.attrs["top_k"]),
            problems=json.loads(group.attrs["problems"]),
            evaluation=group["evaluation"][()],
            x=group["x"][()],
            raw_value=group["raw_value"][()],
            variant_value=group["variant_value"][()],
            variant_error=np.array(group["variant_error"].asstr()[()], dtype=object).reshape(
                group["variant_error"].shape
            ),
        )


def best_distinct(history: History, top_k: int, direction: str) -> np.ndarray:
    """Rows (int64) of the ``top_k`` best successful evaluations whose points differ,
    best first; of equal values the earlier row, of equal points the better one."""
    ok = np.flatnonzero(history.status == STATUS_OK)
    key = -history.value[ok] if direction == "maximize" else history.value[ok]
    rows: list[int] = []
    seen: set[tuple[float, ...]] = set()
    for row in ok[np.argsort(key, kind="stable")]:
        point = tuple(history.x[row].tolist())
        if point not in seen:
            seen.add(point)
            rows.append(int(row))
            if len(rows) == top_k:
                break
    return np.array(rows, dtype=np.int64)


def confirm(
    confirmation: Confirmation,
    history: History,
    direction: str,
    engine: Engine,
    save: Callable[[ConfirmationRecord], None],
    stored: ConfirmationRecord | None = None,
) -> ConfirmationRecord:
    """Evaluate the best distinct points of ``history`` with every variant of
    ``confirmation``, through ``engine``; ``save`` durably records the record after each
    variant. A ``stored`` record of the same confirmation (from an interrupted run) is
    continued with the variants it lacks; the complete record is returned."""
    # a record of another confirmation (the problem's code changed since) does not mix in
    if stored is not None and stored.describes(confirmation):
        record = stored
    else:
        record = ConfirmationRecord.start(history, confirmation, direction)
        save(record)  # the candidates, readable (by the dashboard) before any variant ends
    for variant in confirmation.problems[record.variants_done :]:
        evaluations = engine.map(variant, record.x) if len(record.x) else []
        record = record.add_variant(evaluations)
        save(record)
    return record


def format_confirmed(value: float | None, se: float | None) -> str:
    """``-62.31 ± 0.12`` (value to 6, SE to 2 significant digits); ``-`` without a value."""
    if value is None or np.isnan(value):
        return "-"
    if se is None or np.isnan(se):
        return f"{value:.6g}"
    return f"{value:.6g} ± {se:.2g}"


def _number(value: float) -> float | None:
    """A float for the summary files, None for NaN (JSON has no NaN)."""
    return None if np.isnan(value) else float(value)
