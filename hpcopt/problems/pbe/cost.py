"""Cost terms comparing the model's particle-size distributions with measured ones.

A cost is a weighted sum of terms, each a ``(target, metric)`` pair: ``target`` is what is
compared (a quantity on the solver's cells, or a characteristic size over time) and
``metric`` how model and data differ. ``qx`` / ``Qx`` stand for the density / cumulative in
the basis the data were measured in. Configs write terms as lists::

    cost: [["qx", "MSE"], ["x_50", "RMSE", 0.5]]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from hpcopt.problems.pbe.psd import Quantity

Metric = Literal["MSE", "RMSE", "MAE", "KL"]
Target = Literal["qx", "Qx", "q0", "q3", "Q0", "Q3", "x_10", "x_50", "x_90"]
METRICS: tuple[str, ...] = get_args(Metric)
TARGETS: tuple[str, ...] = get_args(Target)
DENSITY_TARGETS = ("qx", "q0", "q3")
# Floor added to probabilities in KL so that empty classes give finite logarithms.
KL_EPS = 1e-12


@dataclass(frozen=True)
class CostTerm:
    """One term of the cost: ``weight * metric(model target, data target)``."""

    target: Target
    metric: Metric
    weight: float = 1.0


def parse_cost(spec: Sequence) -> tuple[CostTerm, ...]:
    """Cost terms from a config list of ``[target, metric]`` or ``[target, metric, weight]``.

    Raises ValueError naming the bad item, its index and the allowed values. ``KL`` is only
    allowed on densities (``qx``, ``q0``, ``q3``); weights are finite and >= 0.
    """
    if isinstance(spec, str) or not isinstance(spec, Sequence) or not spec:
        raise ValueError(f"cost must be a non-empty list of [target, metric(, weight)]: {spec!r}")
    return tuple(_parse_term(i, item) for i, item in enumerate(spec))


def _parse_term(i: int, item: object) -> CostTerm:
    where = f"cost[{i}] = {item!r}"
    if isinstance(item, str) or not isinstance(item, Sequence) or len(item) not in (2, 3):
        raise ValueError(f"{where}: expected [target, metric] or [target, metric, weight]")
    target, name, *rest = item
    if target not in TARGETS:
        raise ValueError(f"{where}: unknown target {target!r}; allowed: {', '.join(TARGETS)}")
    if name not in METRICS:
        raise ValueError(f"{where}: unknown metric {name!r}; allowed: {', '.join(METRICS)}")
    if name == "KL" and target not in DENSITY_TARGETS:
        raise ValueError(
            f"{where}: KL compares distributions, so it is only allowed for the densities "
            f"{', '.join(DENSITY_TARGETS)}"
        )
    weight = rest[0] if rest else 1.0
    is_number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
    if not (is_number and math.isfinite(weight) and weight >= 0):
        raise ValueError(f"{where}: the weight must be a finite number >= 0, got {weight!r}")
    return CostTerm(target=target, metric=name, weight=float(weight))


def resolve(term: CostTerm, data_quantity: Quantity) -> str:
    """The target ``term`` compares, given the data's quantity: ``qx`` becomes the data's
    density (``q0`` for ``q0``/``Q0`` data, ``q3`` for ``q3``/``Q3``), ``Qx`` the
    cumulative of that basis; other targets are returned unchanged."""
    if term.target in ("qx", "Qx"):
        return f"{term.target[0]}{data_quantity[1]}"
    return term.target


def metric(model: np.ndarray, data: np.ndarray, name: Metric) -> np.ndarray:
    """How ``model`` (..., T, n) differs from ``data`` (broadcastable, usually (T, n)).

    Reduces the last two axes (time, size) and keeps the leading batch axes: returns (...,).
    ``MSE``, ``RMSE`` and ``MAE`` average over all entries. ``KL`` treats each time row as
    a discrete distribution (clipped at 0, plus 1e-12, normalised to sum 1) and averages
    ``KL(data || model)`` over rows; for densities on unequal cells this weighs each class
    by 1 / cell width on both sides alike, and it is 0 only when the rows agree.

    The rows may repeat a time (repeated samples, each row beside the model at its time):
    every row counts once, so with as many samples per time the MSE, MAE and KL are the
    mean of the per-sample ones (the MSE's floor is then the samples' variance, its
    minimiser the fit to their mean).
    """
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; allowed: {', '.join(METRICS)}")
    model = np.asarray(model, dtype=float)
    data = np.asarray(data, dtype=float)
    if model.ndim < 2 or data.ndim < 2:
        raise ValueError(
            f"metric needs (..., T, n) arrays, got shapes {model.shape} and {data.shape}"
        )
    if name == "KL":
        p, q = _as_distribution(data), _as_distribution(model)
        return np.mean(np.sum(p * np.log(p / q), axis=-1), axis=-1)
    diff = model - data
    if name == "MAE":
        return np.mean(np.abs(diff), axis=(-2, -1))
    mse = np.mean(diff**2, axis=(-2, -1))
    return np.sqrt(mse) if name == "RMSE" else mse


def total_cost(
    terms: Sequence[CostTerm],
    model_on_grid: Callable[[str], np.ndarray],
    data_on_grid: Callable[[str], np.ndarray],
    data_quantity: Quantity | None = None,
) -> np.ndarray:
    """Weighted sum of the terms' metrics, shape (...,) (the model's batch axes).

    ``model_on_grid(target)`` and ``data_on_grid(target)`` return the resolved target
    (``q0``, ``q3``, ``Q0``, ``Q3``: (..., T, n); ``x_10``, ``x_50``, ``x_90``: (..., T)) for
    the model and the data. ``qx`` / ``Qx`` terms are resolved with ``data_quantity``, which
    they require.
    """
    total = np.zeros(())
    for term in terms:
        target = term.target
        if target in ("qx", "Qx"):
            if data_quantity is None:
                raise ValueError(f"cost target {target!r} depends on the data: pass data_quantity")
            target = resolve(term, data_quantity)
        model, data = model_on_grid(target), data_on_grid(target)
        if target.startswith("x_"):
            model, data = np.asarray(model)[..., None], np.asarray(data)[..., None]
        total = total + term.weight * metric(model, data, term.metric)
    return total


def _as_distribution(rows: np.ndarray) -> np.ndarray:
    """Rows clipped at 0, floored by ``KL_EPS`` and normalised to sum 1 along the last axis."""
    p = np.clip(rows, 0.0, None) + KL_EPS
    return p / p.sum(axis=-1, keepdims=True)
