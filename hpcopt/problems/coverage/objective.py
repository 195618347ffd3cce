"""The coverage objective over the whole floor, and its derivative per cell.

Every floor cell counts. A cell that no ray reached, or whose received power is below
``floor_dbm``, counts *at* ``floor_dbm`` (dark); so a placement that leaves part of the
floor unlit scores what the whole floor says. With ``v_i`` the clipped RSS of floor cell
``i`` (dBm, best server), ``n`` the number of floor cells, ``T`` the temperature (dB) and
``t`` the threshold (dBm):

- ``p5``: the ``percentile``-th percentile of ``v`` (numpy's linear interpolation);
- ``softmin``: ``-T ln( (1/n) sum_i exp(-v_i / T) )`` over all floor cells;
- ``softmin_lit``: the same over the lit cells only (the original study's masked form);
- ``coverage``: the fraction of floor cells with ``v_i >= t``;
- ``soft_coverage``: ``(1/n) sum_i sigmoid((v_i - t) / T)``, a differentiable coverage.

:func:`cell_weights` gives ``d objective / d v_i`` (zero at clipped cells), from which
the derivative with respect to anything the map depends on follows by the chain rule.
"""

from __future__ import annotations

import numpy as np

from hpcopt.problems.coverage.config import Objective


def to_dbm(watts: np.ndarray) -> np.ndarray:
    """Power in W to dBm; zero power is -inf."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(watts) + 30.0


def clipped(rss_dbm: np.ndarray, floor_dbm: float) -> np.ndarray:
    """RSS values (dBm) with unlit (-inf, NaN) and weaker cells raised to ``floor_dbm``."""
    v = np.where(np.isfinite(rss_dbm), rss_dbm, floor_dbm)
    return np.maximum(v, floor_dbm)


def value(rss_dbm: np.ndarray, obj: Objective) -> float:
    """The objective over floor cells ``rss_dbm`` ``(n,)`` (dBm, -inf where unlit)."""
    v = clipped(rss_dbm, obj.floor_dbm)
    t = obj.temperature_db
    if obj.kind == "p5":
        return float(np.percentile(v, obj.percentile))
    if obj.kind in ("softmin", "softmin_lit"):
        if obj.kind == "softmin_lit":
            v = v[np.isfinite(rss_dbm) & (rss_dbm > obj.floor_dbm)]
            if not len(v):
                return float("nan")
        low = v.min()
        return float(low - t * np.log(np.mean(np.exp(-(v - low) / t))))
    if obj.kind == "coverage":
        return float(np.mean(v >= obj.threshold_dbm))
    return float(np.mean(_sigmoid((v - obj.threshold_dbm) / t)))


def cell_weights(rss_dbm: np.ndarray, obj: Objective) -> np.ndarray:
    """``d value / d rss_i`` per floor cell ``(n,)``, 1/dB; zero at clipped cells.

    ``coverage`` (a step function) has none: it raises ``ValueError``.
    """
    lit = np.isfinite(rss_dbm) & (rss_dbm > obj.floor_dbm)
    v = clipped(rss_dbm, obj.floor_dbm)
    n, t = len(v), obj.temperature_db
    w = np.zeros(n)
    if obj.kind == "p5":
        # np.percentile's 'linear' method: rank h = (n - 1) p / 100 between two sorted cells
        order = np.argsort(v, kind="stable")
        h = (n - 1) * obj.percentile / 100.0
        lo = int(np.floor(h))
        hi = min(lo + 1, n - 1)
        w[order[lo]] += 1.0 - (h - lo)
        w[order[hi]] += h - lo
    elif obj.kind in ("softmin", "softmin_lit"):
        use = lit if obj.kind == "softmin_lit" else np.ones(n, dtype=bool)
        if use.any():
            e = np.exp(-(v[use] - v[use].min()) / t)
            w[use] = e / e.sum()
    elif obj.kind == "soft_coverage":
        s = _sigmoid((v - obj.threshold_dbm) / t)
        w = s * (1.0 - s) / (t * n)
    else:
        raise ValueError("the coverage objective is a step function: it has no derivative")
    return np.where(lit, w, 0.0)


def repulsion(positions: np.ndarray, obj: Objective) -> float:
    """The AP repulsion penalty ``w * sum_{a<b} exp(-(d_ab / L)^2)`` in the objective's
    units, for AP positions ``(k, 2)`` in metres (0 for one AP or ``w = 0``)."""
    if obj.repulsion_weight == 0 or len(positions) < 2:
        return 0.0
    p = np.asarray(positions, dtype=float)
    d = np.hypot(*(p[:, None, :] - p[None, :, :]).transpose(2, 0, 1))
    iu = np.triu_indices(len(p), k=1)
    return float(obj.repulsion_weight * np.exp(-((d[iu] / obj.repulsion_length_m) ** 2)).sum())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))
