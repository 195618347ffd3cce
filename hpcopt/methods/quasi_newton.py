"""BFGS steps for multi-start gradient descent (:mod:`.gd`'s ``optimizer: bfgs``).

Each start keeps an accepted point with its loss and gradient, an inverse-Hessian
estimate and a search direction; each step evaluates one trial point per start on that
direction (Nocedal & Wright 2006, algorithm 6.1, with a backtracking line search instead of
a Wolfe one: a start takes one evaluation a step, so a batch stays one point per start).
A trial point that lowers the loss enough (Armijo's condition) is accepted and updates
the estimate; one that does not, or whose evaluation failed, is retried closer along the
same direction. Directions stop at the unit cube's faces they would leave by.

Everything here is a pure function of arrays, so a resumed method steps bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ARMIJO = 1e-4  # the share of the first-order decrease a step must achieve
SHRINK_LEAST, SHRINK_MOST = 0.1, 0.5  # a retried step is this share of the last, at most
SHORTEST = 1e-10  # a step fraction below which the start restarts from steepest descent


def start(n: int, d: int) -> dict[str, Any]:
    """The BFGS part of the state of ``n`` starts in ``d`` dimensions: no accepted point
    yet (``base_loss`` inf), identity inverse Hessians, no curvature seen (``updates``)."""
    return {
        "base": np.zeros((n, d)),
        "base_loss": np.full(n, np.inf),
        "base_grad": np.zeros((n, d)),
        "H": np.broadcast_to(np.eye(d), (n, d, d)).copy(),
        "updates": np.zeros(n, dtype=np.int64),
        "direction": np.zeros((n, d)),
        "alpha": np.ones(n),
    }


def step(
    state: dict[str, Any],
    x: np.ndarray,
    losses: np.ndarray,
    grad: np.ndarray,
    valid: np.ndarray,
    lr: np.ndarray,
    periodic: np.ndarray,
) -> np.ndarray:
    """Tell the starts' trial points ``x`` (N, d) their ``losses`` (N,) and gradients
    ``grad`` (N, d) (``valid``: both finite); updates ``state`` in place and returns the
    next trial points (N, d), in the unit cube. ``lr`` (d,) is the length of a start's
    first step along each parameter (0 freezes it); ``periodic`` (d,) marks the
    parameters that go round (angles) instead of stopping at a face."""
    free = lr > 0
    grad = np.where(free, grad, 0.0)
    s = state
    fresh = valid & ~np.isfinite(s["base_loss"])
    moved = np.where(periodic, np.mod(x - s["base"] + 0.5, 1.0) - 0.5, x - s["base"])
    enough = losses <= s["base_loss"] + ARMIJO * np.einsum("nd,nd->n", s["base_grad"], moved)
    accepted = fresh | (valid & np.isfinite(s["base_loss"]) & enough)
    curvature = accepted & ~fresh
    change = grad - s["base_grad"]
    s["H"][curvature] = _bfgs_update(
        s["H"][curvature],
        moved[curvature],
        change[curvature],
        first=s["updates"][curvature] == 0,
    )
    s["updates"] = s["updates"] + (curvature & _curved(moved, change))
    s["base"] = np.where(accepted[:, None], x, s["base"])
    s["base_loss"] = np.where(accepted, losses, s["base_loss"])
    s["base_grad"] = np.where(accepted[:, None], grad, s["base_grad"])
    retry = np.isfinite(s["base_loss"]) & ~accepted
    s["alpha"] = np.where(retry, _shorter(s, moved, losses), s["alpha"])
    restart = retry & (s["alpha"] < SHORTEST)
    s["H"][restart] = np.eye(x.shape[1])
    s["updates"] = np.where(restart, 0, s["updates"])
    renew = accepted | restart
    direction, alpha = _direction(s, free, lr, periodic)
    s["direction"] = np.where(renew[:, None], direction, s["direction"])
    s["alpha"] = np.where(renew, alpha, s["alpha"])
    has_base = np.isfinite(s["base_loss"])
    proposed = s["base"] + s["alpha"][:, None] * s["direction"]
    proposed = np.where(periodic, np.mod(proposed, 1.0), np.clip(proposed, 0.0, 1.0))
    # a start whose first point failed has nothing to step from: it stays put
    return np.where(has_base[:, None], proposed, x)


def _curved(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether each pair of step and gradient change has the positive curvature an update
    needs (relative to their sizes, so that round-off does not count)."""
    sy = np.einsum("nd,nd->n", s, y)
    return sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(y, axis=1)


def _bfgs_update(H: np.ndarray, s: np.ndarray, y: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The BFGS update of inverse Hessians ``H`` (k, d, d) by steps ``s`` and gradient
    changes ``y`` (k, d); before a start's first update its identity is scaled by
    ``s.y / y.y`` (Nocedal & Wright eq. 6.20). Pairs without positive curvature leave
    their ``H`` as it was."""
    ok = _curved(s, y)
    sy = np.einsum("kd,kd->k", s, y)
    safe = np.where(ok, sy, 1.0)
    scale = np.where(first & ok, safe / np.maximum(np.einsum("kd,kd->k", y, y), 1e-300), 1.0)
    H = H * scale[:, None, None]
    rho = 1.0 / safe
    d = H.shape[1]
    V = np.eye(d) - rho[:, None, None] * y[:, None, :] * s[:, :, None]
    updated = V @ H @ V.transpose(0, 2, 1) + rho[:, None, None] * s[:, :, None] * s[:, None, :]
    return np.where(ok[:, None, None], updated, H)


def _shorter(state: dict[str, Any], moved: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """The next step fraction of starts whose trial was refused: the minimum of the
    quadratic through the base's loss and slope and the trial's loss, kept within
    [SHRINK_LEAST, SHRINK_MOST] of the last fraction (SHRINK_MOST after a failure)."""
    alpha = state["alpha"]
    slope = np.einsum("nd,nd->n", state["base_grad"], moved)
    rise = losses - state["base_loss"] - slope
    with np.errstate(divide="ignore", invalid="ignore"):
        quadratic = alpha * -slope / (2.0 * rise)
    quadratic = np.where(np.isfinite(quadratic) & (rise > 0), quadratic, SHRINK_MOST * alpha)
    return np.clip(quadratic, SHRINK_LEAST * alpha, SHRINK_MOST * alpha)


def _direction(
    state: dict[str, Any], free: np.ndarray, lr: np.ndarray, periodic: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each start's search direction from its base, ``-H g`` stopped at the faces it would
    leave the cube by (steepest descent where that is not downhill), and its first step
    fraction: 1 once curvature is known, else the one that moves a parameter by ``lr``."""
    base, g = state["base"], state["base_grad"]
    leaving = (((base <= 0.0) & (g > 0)) | ((base >= 1.0) & (g < 0))) & ~periodic | ~free
    g = np.where(leaving, 0.0, g)
    p = -np.einsum("nij,nj->ni", state["H"], g)
    p = np.where(leaving, 0.0, p)
    downhill = np.einsum("nd,nd->n", p, g) < 0
    p = np.where(downhill[:, None], p, -g)
    curved = state["updates"] > 0
    unscaled = np.where(curved[:, None], p, p * lr)
    size = np.abs(np.where(curved[:, None], unscaled, p)).max(axis=1)
    alpha = np.where(curved, 1.0, 1.0 / np.where(size > 0, size, 1.0))
    return unscaled, alpha
