"""A batched variable-order BDF integrator in torch: SciPy's ``BDF`` (Shampine & Reichelt's
NDF form, orders 1 to 5, the difference array of Byrne & Hindmarsh) run on every member of
a batch at once, each member with its own order, step size, difference array, Jacobian and
Newton matrix, as if it were integrated alone.

Every pass of the loop makes one attempt at a step for each member still running: a
simplified Newton iteration (at most four right-hand sides) with the member's Jacobian and
the inverse of its Newton matrix ``I - c J``, ``c = h / alpha_order``. As in SciPy, the
Jacobian is evaluated again only for a member whose Newton iteration failed with a stale
one, and the Newton matrix is inverted again only for the members whose ``c`` changed
(a new step size or order) or whose Jacobian is new: one inversion costs a few right-hand
sides, so most steps reuse the last. Output times are not landed on: each member's
interpolant (the difference array's polynomial) is read at the output times its step
passed.

The Newton iterations with a reused Jacobian are not the derivative of anything smooth,
so solves to be differentiated use a Rosenbrock method (:mod:`.torch_solver`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

MAX_ORDER = 5
NEWTON_MAXITER = 4
MIN_FACTOR, MAX_FACTOR = 0.2, 10.0
_KAPPA = np.array([0, -0.1850, -1 / 9, -0.0823, -0.0415, 0])
_GAMMA = np.hstack((0, np.cumsum(1 / np.arange(1, MAX_ORDER + 1))))
_ALPHA = (1 - _KAPPA) * _GAMMA
_ERROR_CONST = _KAPPA * _GAMMA + 1 / np.arange(1, MAX_ORDER + 2)

Rhs = Callable[[torch.Tensor], torch.Tensor]
Jacobian = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Tables:
    """SciPy's BDF coefficients as tensors on one device, indexed by order (1 to 5).

    ``predict`` ``(6, 2, 8)``: the prediction and ``psi`` as rows over the difference
    array ``D`` ``(8, n)`` (summing ``D[:order + 1]``, and ``gamma_k D_k / alpha_order``
    over ``k = 1..order``); ``update`` ``(6, 8, 8)`` and ``update_d`` ``(6, 8)``: after an
    accepted step with correction ``d``, ``D <- update D + update_d d`` (SciPy's ``D[o +
    2] = d - D[o + 1]; D[o + 1] = d; D[i] += D[i + 1]`` for ``i <= o``); ``alpha`` and
    ``error_const`` ``(6,)``; ``i``, ``j``, ``inside``, ``eye`` and ``U`` the pieces of
    SciPy's ``R(order, factor)`` and ``U(order) = R(order, 1)``."""

    predict: torch.Tensor
    update: torch.Tensor
    update_d: torch.Tensor
    alpha: torch.Tensor
    error_const: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    inside: torch.Tensor
    eye: torch.Tensor
    U: torch.Tensor


@functools.cache
def tables(device: torch.device) -> Tables:
    """The :class:`Tables` on ``device``, made once per device."""
    rows = MAX_ORDER + 3
    predict = np.zeros((MAX_ORDER + 1, 2, rows))
    A = np.zeros((MAX_ORDER + 1, rows, rows))
    b = np.zeros((MAX_ORDER + 1, rows))
    for o in range(1, MAX_ORDER + 1):
        predict[o, 0, : o + 1] = 1.0
        predict[o, 1, 1 : o + 1] = _GAMMA[1 : o + 1] / _ALPHA[o]
        A[o] = np.eye(rows)
        A[o, : o + 1, : o + 1] = np.triu(np.ones((o + 1, o + 1)))
        A[o, o + 1] = 0.0
        A[o, o + 2] = 0.0
        A[o, o + 2, o + 1] = -1.0
        b[o, : o + 3] = 1.0
    k = np.arange(MAX_ORDER + 1)
    # each order's (order + 1)-square block
    inside = (k[None, :, None] <= k[:, None, None]) & (k[None, None, :] <= k[:, None, None])
    arrays = {
        "predict": predict,
        "update": A,
        "update_d": b,
        "alpha": _ALPHA,
        "error_const": _ERROR_CONST,
        "i": np.arange(1.0, MAX_ORDER + 1)[:, None],
        "j": np.arange(1.0, MAX_ORDER + 1)[None, :],
        "inside": inside,
        "eye": np.eye(MAX_ORDER + 1),
    }
    partial = {k: torch.as_tensor(a, device=device) for k, a in arrays.items()}
    partial["U"] = torch.eye(MAX_ORDER + 1, dtype=torch.float64, device=device)
    with_u = Tables(**partial)
    orders = torch.arange(MAX_ORDER + 1, device=device)
    U = _R(orders, torch.ones(MAX_ORDER + 1, dtype=torch.float64, device=device), with_u)
    return dataclasses.replace(with_u, U=U)


def rms(x: torch.Tensor) -> torch.Tensor:
    """SciPy's error norm, per member: the RMS over the last axis, ``(W, n)`` to ``(W,)``."""
    return torch.linalg.vector_norm(x, dim=-1) / x.shape[-1] ** 0.5


def _R(order: torch.Tensor, factor: torch.Tensor, tab: Tables) -> torch.Tensor:
    """SciPy's ``R(order, factor)`` per member, ``(W, 6, 6)``, the identity beyond each
    member's order."""
    M = (tab.i - 1 - factor[:, None, None] * tab.j) / tab.i
    # row 0 all ones, column 0 zero below it: cumprod over rows then gives R
    M = torch.nn.functional.pad(M, (1, 0, 1, 0))
    M[:, 0] = 1.0
    return torch.where(tab.inside[order], torch.cumprod(M, dim=1), tab.eye)


def step_change(order: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """SciPy's ``R(order, factor) @ U(order)`` per member, ``(W, 6, 6)``, the identity
    beyond each member's order: ``D[:6] <- RU^T D[:6]`` re-expresses the difference array
    for a step ``factor`` times the last."""
    tab = tables(factor.device)
    return _R(order, factor, tab) @ tab.U[order]


class BatchedBDF:
    """SciPy's BDF for a batch of ``B`` systems of ``n`` states stepped each alone.

    ``rhs(y)`` and ``jacobian(y, which)`` give ``dy/dt`` ``(W, n)`` and ``d rhs / dy``
    ``(len(which), n, n)`` for the members ``which`` (indices into the current working set,
    whose members :meth:`run` passes to ``select`` whenever the set shrinks). ``atol`` is
    per state ``(n,)``; each member is held to ``rtol`` and it in SciPy's RMS norm.
    """

    def __init__(self, rtol: float, atol: torch.Tensor, max_rhs_evals: int) -> None:
        self.rtol, self.atol, self.max_rhs_evals = rtol, atol, max_rhs_evals
        self.tab = tables(atol.device)
        self.newton_tol = max(10 * np.finfo(float).eps / rtol, min(0.03, rtol**0.5))

    def run(
        self,
        select: Callable[[torch.Tensor], tuple[Rhs, Jacobian]],
        y0: torch.Tensor,
        t: np.ndarray,
        deadline: float,
        budget_reason: str,
        failures: dict[str, str],
    ) -> tuple[torch.Tensor, list[str], int, list[int]]:
        """Integrate the states ``y0`` ``(B, n)`` from time 0 to each of the times ``t``
        (s, increasing, ``t[-1] > 0``). ``select(members)`` gives the right-hand side and
        Jacobian of the working set ``members``. Returns the states ``(B, T, n)`` (NaN where
        a member failed or before it got there), each member's failure (``""`` when it ran
        through; the words in ``failures`` under "not_finite", "too_small" and "singular", or
        ``budget_reason``), the number of batched right-hand-side evaluations and each
        member's accepted steps."""
        B, n = y0.shape
        T, f64 = len(t), torch.float64
        dev = y0.device
        times = torch.as_tensor(t, dtype=f64, device=dev)
        t_end = float(t[-1])
        first = int(np.searchsorted(t, 0.0, side="right"))
        out = y0.new_full((B, T, n), np.nan)
        out[:, :first] = y0[:, None]
        errors = [""] * B
        members = torch.arange(B, device=dev)
        rhs, jacobian = select(members)
        self.members, self.rhs, self.jacobian = members, rhs, jacobian
        calls = 2
        f0 = rhs(y0)
        h = self._first_step(y0, f0, t_end)
        finite = torch.isfinite(h)
        for b in torch.nonzero(~finite)[:, 0].tolist():
            errors[b] = failures["not_finite"]
        self.state = {
            "t": torch.zeros(B, dtype=f64, device=dev),
            "h": torch.where(finite, h, 1.0),
            "order": torch.ones(B, dtype=torch.long, device=dev),
            "equal": torch.zeros(B, dtype=torch.long, device=dev),
            "D": torch.zeros(B, MAX_ORDER + 3, n, dtype=f64, device=dev),
            "k_next": torch.full((B,), first, dtype=torch.long, device=dev),
            "evals": torch.full((B,), 2, dtype=torch.long, device=dev),
            "steps": torch.zeros(B, dtype=torch.long, device=dev),
            "lu_ok": torch.zeros(B, dtype=torch.bool, device=dev),
            "jac_new": torch.ones(B, dtype=torch.bool, device=dev),
            "singular": torch.zeros(B, dtype=torch.bool, device=dev),
            "alive": finite,
        }
        s = self.state
        s["D"][:, 0] = y0
        s["D"][:, 1] = torch.where(finite[:, None], f0 * s["h"][:, None], 0.0)
        s["J"] = jacobian(y0, members)
        s["inverse"] = torch.zeros_like(s["J"])
        steps = np.zeros(B, dtype=int)
        while bool(s["alive"].any()):
            if time.monotonic() > deadline:
                for b in self.members[s["alive"]].tolist():
                    errors[b] = budget_reason
                break
            if not bool(s["alive"].all()):
                # the members about to leave the working set keep their step counts
                steps[self.members.cpu().numpy()] = s["steps"].cpu().numpy()
                self._keep(s["alive"], select)
            calls += self._attempt(times, out, t_end)
            s = self.state
            min_step = 10 * (torch.nextafter(s["t"], s["t"].new_tensor(np.inf)) - s["t"])
            small = s["alive"] & (s["h"] < min_step)
            over = s["alive"] & (s["evals"] > self.max_rhs_evals)
            singular = s["alive"] & s["singular"]
            done = s["alive"] & (s["k_next"] == T)
            ends = (
                (small, failures["too_small"]),
                (over, budget_reason),
                (singular, failures["singular"]),
            )
            for mask, why in ends:
                for b in self.members[mask].tolist():
                    errors[b] = why
            s["alive"] = s["alive"] & ~(small | over | singular | done)
        steps[self.members.cpu().numpy()] = self.state["steps"].cpu().numpy()
        failed = torch.as_tensor([bool(e) for e in errors], device=dev)
        return torch.where(failed[:, None, None], np.nan, out), errors, calls, steps.tolist()

    def _keep(self, alive: torch.Tensor, select: Callable) -> None:
        """Drop the members that finished or failed from the working set."""
        self.state = {k: v[alive] for k, v in self.state.items()}
        self.members = self.members[alive]
        self.rhs, self.jacobian = select(self.members)

    def _first_step(self, y0: torch.Tensor, f0: torch.Tensor, t_end: float) -> torch.Tensor:
        """SciPy's first step for order 1, per member ``(B,)``; NaN where not finite."""
        scale = self.atol + self.rtol * y0.abs()
        d0, d1 = rms(y0 / scale), rms(f0 / scale)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1).clamp_max(t_end)
        f1 = self.rhs(y0 + h0[:, None] * f0)
        d2 = rms((f1 - f0) / scale) / h0
        tiny = (d1 <= 1e-15) & (d2 <= 1e-15)
        h1 = torch.where(tiny, (h0 * 1e-3).clamp_min(1e-6), (0.01 / torch.maximum(d1, d2)) ** 0.5)
        h = torch.minimum(torch.minimum(100 * h0, h1), h0.new_tensor(t_end))
        return torch.where(torch.isfinite(h) & torch.isfinite(d2), h, np.nan)

    def _rescale(self, mask: torch.Tensor, factor: torch.Tensor, reset_lu: torch.Tensor) -> None:
        """Steps ``factor`` times longer for the members ``mask``: their difference arrays
        re-expressed, their equal-step count and (where ``reset_lu``) Newton matrix reset.
        Every member is computed and the others kept by ``where``: cheaper on small
        batches than picking the few out by a mask and writing them back."""
        s = self.state
        if not bool(mask.any()):
            return
        factor = torch.where(mask, factor, 1.0)
        s["h"] = s["h"] * factor
        RU = step_change(s["order"], factor)
        D = s["D"][:, : MAX_ORDER + 1]
        D.copy_(torch.where(mask[:, None, None], RU.transpose(1, 2) @ D, D))
        s["equal"] = torch.where(mask, 0, s["equal"])
        s["lu_ok"] = s["lu_ok"] & ~reset_lu

    def _attempt(self, times: torch.Tensor, out: torch.Tensor, t_end: float) -> int:
        """One attempt at a step for every member of the working set; returns the number
        of batched right-hand-side evaluations it took."""
        s = self.state
        alive = s["alive"]
        past = alive & (s["t"] + s["h"] > t_end)
        self._rescale(past, (t_end - s["t"]) / s["h"], past)
        t_new = torch.where(past, t_end, s["t"] + s["h"])
        s["h"] = torch.where(alive, t_new - s["t"], s["h"])
        order, D = s["order"], s["D"]
        y_predict, psi = (self.tab.predict[order] @ D).unbind(dim=1)
        scale = self.atol + self.rtol * y_predict.abs()
        c = s["h"] / self.tab.alpha[order]
        stale = alive & ~s["lu_ok"]
        if bool(stale.any()):
            eye = torch.eye(D.shape[2], dtype=D.dtype, device=D.device)
            inverse, info = torch.linalg.inv_ex(eye - c[stale, None, None] * s["J"][stale])
            s["inverse"][stale] = inverse
            s["singular"][stale] = s["singular"][stale] | (info != 0)
            s["lu_ok"] = s["lu_ok"] | stale
        converged, n_iter, y_new, d, calls = self._newton(y_predict, c, psi, scale)
        failed = alive & ~converged
        refresh = failed & ~s["jac_new"]
        if bool(refresh.any()):
            which = torch.nonzero(refresh)[:, 0]
            s["J"][which] = self.jacobian(y_predict[which], which)
            s["jac_new"] = s["jac_new"] | refresh
            s["lu_ok"] = s["lu_ok"] & ~refresh
        halve = failed & ~refresh
        safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + n_iter)
        scale = self.atol + self.rtol * y_new.abs()
        error_norm = rms(self.tab.error_const[order][:, None] * d / scale)
        accept = converged & (error_norm <= 1)
        reject = converged & ~accept
        shrink = (safety * error_norm ** (-1.0 / (order + 1))).nan_to_num(MIN_FACTOR)
        factor = torch.where(halve, 0.5, shrink.clamp_min(MIN_FACTOR))
        change = torch.zeros_like(accept)
        if bool(accept.any()):
            change, grow = self._accept(accept, t_new, y_new, d, scale, error_norm, safety)
            factor = torch.where(change, grow, factor)
        # the members halved, shrunk and given a new order are apart, so one rescale
        # serves them all; as SciPy, a rejected step (its Newton iteration converged)
        # keeps its Newton matrix
        self._rescale(halve | reject | change, factor, halve | change)
        if bool(accept.any()):
            self._sample(accept, times, out)
        return calls

    def _newton(
        self, y_predict: torch.Tensor, c: torch.Tensor, psi: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """SciPy's simplified Newton iteration for the BDF system, every member at once
        (a member stops at its own convergence or divergence): whether it converged, its
        iterations, the new states and their correction ``d`` ``(W, n)``, and the batched
        right-hand sides it took."""
        s = self.state
        running = s["alive"].clone()
        converged = torch.zeros_like(running)
        n_iter = torch.zeros_like(s["order"])
        y, d = y_predict.clone(), torch.zeros_like(y_predict)
        norm_old = torch.full_like(c, np.nan)
        calls = 0
        for k in range(NEWTON_MAXITER):
            if not bool(running.any()):
                break
            f = self.rhs(y)
            calls += 1
            s["evals"] = s["evals"] + running.long()
            running = running & torch.isfinite(f).all(dim=1)
            g = c[:, None] * f - psi - d
            dy = (s["inverse"] @ g[:, :, None])[:, :, 0]
            norm = rms(dy / scale)
            rate = norm / norm_old
            if k > 0:
                slow = (rate >= 1) | (
                    rate ** (NEWTON_MAXITER - k) / (1 - rate) * norm > self.newton_tol
                )
                running = running & ~slow
            y = torch.where(running[:, None], y + dy, y)
            d = torch.where(running[:, None], d + dy, d)
            done = norm == 0
            if k > 0:
                done = done | (rate / (1 - rate) * norm < self.newton_tol)
            done = running & done
            converged = converged | done
            n_iter = torch.where(done, k + 1, n_iter)
            running = running & ~done
            norm_old = norm
        return converged, n_iter, y, d, calls

    def _accept(
        self,
        accept: torch.Tensor,
        t_new: torch.Tensor,
        y_new: torch.Tensor,
        d: torch.Tensor,
        scale: torch.Tensor,
        error_norm: torch.Tensor,
        safety: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The accepted members move to ``t_new``: their difference arrays updated, and,
        after ``order + 1`` equal steps, a new order (SciPy's choice). Returns which
        members changed order and the factor on their step size, for :meth:`_rescale`."""
        s = self.state
        D, order = s["D"], s["order"]
        s["t"] = torch.where(accept, t_new, s["t"])
        s["steps"] = s["steps"] + accept.long()
        s["jac_new"] = s["jac_new"] & ~accept
        rows = torch.arange(D.shape[0], device=D.device)
        updated = self.tab.update[order] @ D + self.tab.update_d[order][:, :, None] * d[:, None, :]
        D = s["D"] = torch.where(accept[:, None, None], updated, D)
        s["equal"] = s["equal"] + accept.long()
        change = accept & (s["equal"] >= order + 1)
        if not bool(change.any()):
            return change, error_norm
        error_const = self.tab.error_const
        lower = rms(error_const[(order - 1).clamp_min(0)][:, None] * D[rows, order] / scale)
        lower = torch.where(order > 1, lower, np.inf)
        higher = rms(
            error_const[(order + 1).clamp_max(MAX_ORDER)][:, None]
            * D[rows, (order + 2).clamp_max(MAX_ORDER + 2)]
            / scale
        )
        higher = torch.where(order < MAX_ORDER, higher, np.inf)
        norms = torch.stack([lower, error_norm, higher], dim=1)
        powers = -1.0 / (order[:, None] + torch.arange(3, device=D.device)[None, :]).to(D.dtype)
        factors = norms**powers
        best = torch.argmax(factors, dim=1)
        s["order"] = torch.where(change, order + best - 1, order)
        return change, (safety * factors.max(dim=1).values).clamp_max(MAX_FACTOR)

    def _sample(self, accept: torch.Tensor, times: torch.Tensor, out: torch.Tensor) -> None:
        """Read each accepted member's interpolant at the output times its step passed."""
        s = self.state
        T = len(times)
        t, h, order, D = s["t"], s["h"], s["order"], s["D"]
        j = torch.arange(MAX_ORDER, dtype=D.dtype, device=D.device)
        while True:
            k = s["k_next"]
            hit = accept & (k < T) & (times[k.clamp_max(T - 1)] <= t)
            if not bool(hit.any()):
                return
            w = torch.nonzero(hit)[:, 0]
            tq = times[k[w]]
            x = (tq[:, None] - (t[w, None] - h[w, None] * j)) / (h[w, None] * (1 + j))
            p = torch.cumprod(x, dim=1) * (j[None, :] < order[w, None])
            y = D[w, 0] + (p[:, None, :] @ D[w, 1 : MAX_ORDER + 1])[:, 0]
            out[self.members[w], k[w]] = y
            s["k_next"] = s["k_next"] + hit.long()
