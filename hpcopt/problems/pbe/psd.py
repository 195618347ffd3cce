"""Particle-size distributions: fractions, densities, cumulatives and characteristic sizes.

Unit-agnostic: sizes are in whatever unit the caller uses, consistently (densities are then
per that unit). Standard particle-technology notation: basis 0 counts particles (number),
basis 3 weighs them by volume; ``q0``, ``q3`` are densities (fraction per unit size,
integrating to 1), ``Q0``, ``Q3`` cumulatives in ``[0, 1]``.

Every function is vectorised over leading batch axes: a distribution is the last axis.
Rows with no particles (all zeros) give zeros, never NaN or a warning.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

Quantity = Literal["q0", "q3", "Q0", "Q3"]
QUANTITIES: tuple[str, ...] = get_args(Quantity)


def volume_to_size(v: np.ndarray) -> np.ndarray:
    """Volume-equivalent diameter ``x = (6 v / pi)^(1/3)`` of particles of volume ``v``.

    Any shape; ``x`` is in the length unit whose cube is the unit of ``v``.
    """
    return np.cbrt(6.0 * np.asarray(v, dtype=float) / np.pi)


def size_to_volume(x: np.ndarray) -> np.ndarray:
    """Volume ``pi x^3 / 6`` of spheres of diameter ``x``; any shape, in the cube of x's unit."""
    return np.pi / 6.0 * np.asarray(x, dtype=float) ** 3


def class_fractions(N: np.ndarray, x: np.ndarray, basis: int) -> np.ndarray:
    """Fraction of the population in each size class, along the last axis.

    ``N`` (..., n) number concentrations, ``x`` (n,) class sizes. Basis 0: ``N / sum(N)``;
    basis 3: ``N x^3 / sum(N x^3)``. Returns (..., n); a row with zero total gives zeros.
    """
    N = np.asarray(N, dtype=float)
    weights = N if _check_basis(basis) == 0 else N * np.asarray(x, dtype=float) ** 3
    return _normalise_sum(weights)


def on_cells(N: np.ndarray, x: np.ndarray, x_edges: np.ndarray, quantity: Quantity) -> np.ndarray:
    """The model's ``quantity`` on its own cells, (..., n).

    ``N`` (..., n) number concentrations, ``x`` (n,) pivot sizes, ``x_edges`` (n+1,) cell
    edges. ``q0``/``q3``: class fraction / cell width (per unit size); ``Q0``/``Q3``:
    cumulative fraction at each cell's upper edge.
    """
    fractions = class_fractions(N, x, _basis_of(quantity))
    return _from_fractions(fractions, np.asarray(x_edges, dtype=float), quantity)


def data_on_cells(
    data_x: np.ndarray,
    data_values: np.ndarray,
    data_quantity: Quantity,
    x_edges: np.ndarray,
    quantity: Quantity,
) -> np.ndarray:
    """Measured data re-expressed on the solver's cells as ``quantity``, (..., n).

    ``data_x`` (m,) increasing sizes, ``data_values`` (..., m) in ``data_quantity``,
    ``x_edges`` (n+1,) the solver's cell edges. Goes through the cumulative: densities are
    integrated by the trapezoid rule (from 0 at ``data_x[0]``); the cumulative is normalised
    to end at 1 and interpolated linearly at ``x_edges`` (0 below ``data_x[0]``, 1 above
    ``data_x[-1]``, clamped to [0, 1]); its differences are the fractions per cell in the
    data's basis, renormalised over the cells (mass outside the grid is dropped, as the model
    cannot hold it). A change of basis weighs the fractions by ``x_pivot^3`` (or divides by
    it), with ``x_pivot`` the geometric mean of the cell's edges, or its upper edge when the
    lower one is 0. The result is then ``q`` or ``Q`` exactly as in :func:`on_cells`.
    """
    data_x = np.asarray(data_x, dtype=float)
    values = np.asarray(data_values, dtype=float)
    x_edges = np.asarray(x_edges, dtype=float)
    target_basis, data_basis = _basis_of(quantity), _basis_of(data_quantity)
    if data_quantity.startswith("q"):
        cumulative = density_to_cumulative(data_x, values)
    else:
        cumulative = _normalise_end(values)
    at_edges = _cumulative_at(data_x, cumulative, x_edges)
    fractions = _normalise_sum(np.diff(at_edges, axis=-1))
    if target_basis != data_basis:
        lower, upper = x_edges[:-1], x_edges[1:]
        pivot = np.where(lower > 0, np.sqrt(lower * upper), upper)
        fractions = _normalise_sum(fractions * pivot ** (3.0 if target_basis == 3 else -3.0))
    return _from_fractions(fractions, x_edges, quantity)


def kde(
    N: np.ndarray,
    x: np.ndarray,
    x_eval: np.ndarray,
    basis: int,
    bandwidth: float | None = None,
) -> np.ndarray:
    """Kernel-density smoothing of the model output onto another size grid, as a ``q``.

    Gaussian kernels in ``ln x`` sit at the class sizes ``x`` (n,), weighted by the class
    fractions of ``N`` (..., n) in ``basis``. The density in ``ln x`` is divided by
    ``x_eval`` (k,) to give a density per unit size, then renormalised so that its trapezoid
    integral over ``x_eval`` is 1. Returns (..., k); rows with no particles give zeros.

    ``bandwidth`` is in ln-size units; ``None`` takes Scott's rule on the weighted ``ln x``
    samples (weighted std times Kish's effective sample size to the power -1/5) for each
    row, floored at half the mean ln spacing of ``x``.

    Caveat: a KDE flattens and widens peaks. The class fractions are already a density, so
    every kernel adds its width on top of the distribution's own; the effect grows as the
    solver grid gets dense relative to the bandwidth (many classes under one kernel) and as
    the distribution gets narrow relative to the bandwidth (including its floor). Compare
    peak heights and widths with care; :func:`on_cells` has no such bias.
    """
    weights = class_fractions(N, x, basis)
    ln_x = np.log(np.asarray(x, dtype=float))
    ln_eval = np.log(np.asarray(x_eval, dtype=float))
    if bandwidth is None:
        h = _scott_bandwidth(weights, ln_x)
    elif bandwidth > 0:
        h = np.full(weights.shape[:-1], float(bandwidth))
    else:
        raise ValueError(f"kde bandwidth must be > 0 (ln-size units), got {bandwidth}")
    h = h[..., None, None]
    z = (ln_eval[:, None] - ln_x[None, :]) / h
    kernels = np.exp(-0.5 * z**2) / (h * np.sqrt(2.0 * np.pi))
    density_ln = np.einsum("...kn,...n->...k", kernels, weights)
    q = density_ln / np.asarray(x_eval, dtype=float)
    total = _cumtrapz(np.asarray(x_eval, dtype=float), q)[..., -1:]
    return np.divide(q, total, out=np.zeros_like(q), where=total > 0)


def density_to_cumulative(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cumulative of a density ``q`` (..., m) at sizes ``x`` (m,): trapezoid rule from 0 at
    ``x[0]``, normalised to end at 1. Returns (..., m); zero rows give zeros."""
    return _normalise_end(_cumtrapz(np.asarray(x, dtype=float), np.asarray(q, dtype=float)))


def characteristic_size(x_edges: np.ndarray, Q_edges: np.ndarray, p: float) -> np.ndarray:
    """Size where a cumulative reaches ``p`` (0 < p < 1), e.g. ``x_50`` for p = 0.5.

    ``x_edges`` (n+1,) cell edges, ``Q_edges`` (..., n+1) the cumulative at those edges,
    nondecreasing from 0 to 1. Linear interpolation between the edges bracketing ``p``.
    Returns (...,) in the unit of ``x_edges``; NaN for a row that never reaches ``p``
    (e.g. a zero row).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"characteristic_size needs 0 < p < 1, got {p}")
    x_edges = np.asarray(x_edges, dtype=float)
    cumulative = np.asarray(Q_edges, dtype=float)
    reached = cumulative >= p
    upper = np.maximum(np.argmax(reached, axis=-1), 1)
    q_lo = np.take_along_axis(cumulative, (upper - 1)[..., None], axis=-1)[..., 0]
    q_hi = np.take_along_axis(cumulative, upper[..., None], axis=-1)[..., 0]
    step = q_hi - q_lo
    frac = np.divide(p - q_lo, step, out=np.zeros_like(step), where=step > 0)
    x_lo, x_hi = x_edges[upper - 1], x_edges[upper]
    size = x_lo + np.clip(frac, 0.0, 1.0) * (x_hi - x_lo)
    return np.where(reached.any(axis=-1), size, np.nan)


def _check_basis(basis: int) -> int:
    if basis not in (0, 3):
        raise ValueError(f"basis must be 0 (number) or 3 (volume), got {basis!r}")
    return basis


def _basis_of(quantity: str) -> int:
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; allowed: {', '.join(QUANTITIES)}")
    return int(quantity[1])


def _from_fractions(fractions: np.ndarray, x_edges: np.ndarray, quantity: str) -> np.ndarray:
    if quantity.startswith("q"):
        return fractions / np.diff(x_edges)
    return np.cumsum(fractions, axis=-1)


def _normalise_sum(values: np.ndarray) -> np.ndarray:
    total = values.sum(axis=-1, keepdims=True)
    return np.divide(values, total, out=np.zeros_like(values), where=total > 0)


def _normalise_end(cumulative: np.ndarray) -> np.ndarray:
    end = cumulative[..., -1:]
    return np.divide(cumulative, end, out=np.zeros_like(cumulative), where=end > 0)


def _cumtrapz(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid integral of ``q`` (..., m) over ``x`` (m,), starting at 0."""
    increments = 0.5 * (q[..., 1:] + q[..., :-1]) * np.diff(x)
    start = np.zeros((*q.shape[:-1], 1))
    return np.concatenate([start, np.cumsum(increments, axis=-1)], axis=-1)


def _cumulative_at(xp: np.ndarray, cumulative: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A cumulative (..., m) known at ``xp`` (m,), linearly interpolated at ``x`` (k,).

    0 below ``xp[0]``, 1 above ``xp[-1]`` (0 everywhere for an empty row), clamped to [0, 1].
    """
    j = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, len(xp) - 2)
    w = (x - xp[j]) / (xp[j + 1] - xp[j])
    inside = cumulative[..., j] * (1.0 - w) + cumulative[..., j + 1] * w
    outside_value = (cumulative[..., -1:] > 0).astype(float)
    values = np.where(x < xp[0], 0.0, np.where(x > xp[-1], outside_value, inside))
    return np.clip(values, 0.0, 1.0)


def _scott_bandwidth(weights: np.ndarray, ln_x: np.ndarray) -> np.ndarray:
    """Scott's rule per row of ``weights`` (..., n) (summing to 1 or 0) over ``ln_x`` (n,)."""
    mean = (weights * ln_x).sum(axis=-1, keepdims=True)
    std = np.sqrt((weights * (ln_x - mean) ** 2).sum(axis=-1))
    sum_sq = (weights**2).sum(axis=-1)
    n_eff = np.divide(1.0, sum_sq, out=np.ones_like(sum_sq), where=sum_sq > 0)
    floor = 0.5 * np.mean(np.diff(ln_x))
    return np.maximum(std * n_eff ** (-0.2), floor)
