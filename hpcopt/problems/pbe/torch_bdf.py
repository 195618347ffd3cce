"""A batched variable-order BDF integrator in torch: SciPy's ``BDF`` (Shampine & Reichelt's
NDF form, orders 1 to 5, the difference array of Byrne & Hindmarsh) run on every member of
a batch at once, each member with its own order, step size, difference array, Jacobian and
Newton matrix, as if it were integrated alone.

Every pass of the loop makes one attempt at a step for each member still running: a
simplified Newton iteration (at most four right-hand sides) with the member's Jacobian and
its Newton matrix ``I - c J``, ``c = h / alpha_order``, LU-factorised as SciPy's, or
inverted when it has fewer than ``LU_FROM_STATES`` states (a small batched LU solve costs
several times a product with the inverse; from about 45 states on one CPU core the
cheaper factorisation wins). As in SciPy, the Jacobian is evaluated again only for a
member whose Newton iteration failed with a stale one, and the Newton matrix is factorised
again only for the members whose ``c`` changed (a new step size or order) or whose
Jacobian is new: one factorisation costs a few right-hand sides, so most steps reuse the
last. Output times are not landed on: each member's
interpolant (the difference array's polynomial) is read at the output times its step
passed.

The work is split by size. What is one number per member (time, step size, order, Newton
norms, error norms, counters and the decisions made from them) lives on the host in
numpy; the states, difference arrays, Jacobians and Newton matrices live on the device in
torch. A member-sized torch operation costs a few microseconds of dispatch on the CPU and
a kernel launch on a GPU, numpy's a fraction of that, and the decisions need those
numbers on the host anyway: each Newton iteration brings its ``W`` norms over once.

The Newton iterations with a reused Jacobian are not the derivative of anything smooth,
so solves to be differentiated use a Rosenbrock method (:mod:`.torch_solver`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

MAX_ORDER = 5
# the smallest system whose Newton matrices are LU-factorised rather than inverted
# (benchmarks/pbe_solver.py: 2-D with 100 states 7 % faster, 1-D with 30 8 % slower)
LU_FROM_STATES = 48
NEWTON_MAXITER = 4
MIN_FACTOR, MAX_FACTOR = 0.2, 10.0
_KAPPA = np.array([0, -0.1850, -1 / 9, -0.0823, -0.0415, 0])
_GAMMA = np.hstack((0, np.cumsum(1 / np.arange(1, MAX_ORDER + 1))))
_ALPHA = (1 - _KAPPA) * _GAMMA
_ERROR_CONST = _KAPPA * _GAMMA + 1 / np.arange(1, MAX_ORDER + 2)

# what the host holds per member of the working set
MEMBER_STATE = (
    "members", "t", "h", "order", "equal", "k_next", "evals", "steps",
    "lu_ok", "jac_new", "singular", "alive", "retry",
)  # fmt: skip

Rhs = Callable[[torch.Tensor], torch.Tensor]
Jacobian = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Tables:
    """SciPy's BDF coefficients (numpy, on the host), indexed by order (1 to 5).

    ``predict`` ``(6, 2, 8)``: the prediction and ``psi`` as rows over the difference
    array ``D`` ``(8, n)`` (summing ``D[:order + 1]``, and ``gamma_k D_k / alpha_order``
    over ``k = 1..order``); ``update`` ``(6, 8, 8)`` and ``update_d`` ``(6, 8)``: after an
    accepted step with correction ``d``, ``D <- update D + update_d d`` (SciPy's ``D[o +
    2] = d - D[o + 1]; D[o + 1] = d; D[i] += D[i + 1]`` for ``i <= o``); ``alpha`` and
    ``error_const`` ``(6,)``; ``U`` ``(6, 6, 6)`` SciPy's ``U(order) = R(order, 1)``."""

    predict: np.ndarray
    update: np.ndarray
    update_d: np.ndarray
    alpha: np.ndarray
    error_const: np.ndarray
    U: np.ndarray


_I = np.arange(1.0, MAX_ORDER + 1)[:, None]
_J = np.arange(1.0, MAX_ORDER + 1)[None, :]
_K = np.arange(MAX_ORDER + 1)
# each order's (order + 1)-square block of R
_INSIDE = (_K[None, :, None] <= _K[:, None, None]) & (_K[None, None, :] <= _K[:, None, None])


@functools.cache
def tables() -> Tables:
    """The :class:`Tables`, made once."""
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
    U = _R(_K, np.ones(MAX_ORDER + 1))
    return Tables(predict, A, b, _ALPHA, _ERROR_CONST, U)


def rms(x: torch.Tensor) -> torch.Tensor:
    """SciPy's error norm, per member: the RMS over the last axis, ``(W, n)`` to ``(W,)``."""
    return torch.linalg.vector_norm(x, dim=-1) / x.shape[-1] ** 0.5


def _R(order: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """SciPy's ``R(order, factor)`` per member, ``(W, 6, 6)``, the identity beyond each
    member's order."""
    M = np.zeros((len(order), MAX_ORDER + 1, MAX_ORDER + 1))
    M[:, 1:, 1:] = (_I - 1 - factor[:, None, None] * _J) / _I
    # row 0 all ones, column 0 zero below it: cumprod over rows then gives R
    M[:, 0] = 1.0
    return np.where(_INSIDE[order], np.cumprod(M, axis=1), np.eye(MAX_ORDER + 1))


def step_change(order: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """SciPy's ``R(order, factor) @ U(order)`` per member, ``(W, 6, 6)``, the identity
    beyond each member's order: ``D[:6] <- RU^T D[:6]`` re-expresses the difference array
    for a step ``factor`` times the last."""
    return _R(order, factor) @ tables().U[order]


class BatchedBDF:
    """SciPy's BDF for a batch of ``B`` systems of ``n`` states stepped each alone.

    ``rhs(y)`` and ``jacobian(y, which)`` give ``dy/dt`` ``(W, n)`` and ``d rhs / dy``
    ``(len(which), n, n)`` for the members ``which`` (indices into the current working set,
    whose members :meth:`run` passes to ``select`` whenever the set shrinks). ``atol`` is
    per state ``(n,)``; each member is held to ``rtol`` and it in SciPy's RMS norm.
    """

    def __init__(self, rtol: float, atol: torch.Tensor, max_rhs_evals: int) -> None:
        self.rtol, self.atol, self.max_rhs_evals = rtol, atol, max_rhs_evals
        self.device = atol.device
        self.tab = tables()
        self.newton_tol = max(10 * np.finfo(float).eps / rtol, min(0.03, rtol**0.5))

    def _dev(self, a: np.ndarray) -> torch.Tensor:
        """A host array on the device (no copy on the CPU)."""
        return torch.as_tensor(a, device=self.device)

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
        T = len(t)
        t_end = float(t[-1])
        first = int(np.searchsorted(t, 0.0, side="right"))
        out = y0.new_full((B, T, n), np.nan)
        out[:, :first] = y0[:, None]
        errors = [""] * B
        self.members = np.arange(B)
        self.rhs, self.jacobian = select(self._dev(self.members))
        calls = 2
        f0 = self.rhs(y0)
        h = self._first_step(y0, f0, t_end)
        finite = np.isfinite(h)
        for b in np.flatnonzero(~finite):
            errors[b] = failures["not_finite"]
        self.t = np.zeros(B)
        self.h = np.where(finite, h, 1.0)
        self.order = np.ones(B, dtype=int)
        self.equal = np.zeros(B, dtype=int)
        self.k_next = np.full(B, first)
        self.evals = np.full(B, 2)
        self.steps = np.zeros(B, dtype=int)
        self.lu_ok = np.zeros(B, dtype=bool)
        self.jac_new = np.ones(B, dtype=bool)
        self.singular = np.zeros(B, dtype=bool)
        self.alive = finite
        self.retry = np.zeros(B, dtype=bool)
        self.D = y0.new_zeros((B, MAX_ORDER + 3, n))
        self.D[:, 0] = y0
        self.D[:, 1] = torch.where(self._dev(finite)[:, None], f0 * self._dev(self.h)[:, None], 0.0)
        self.J = self.jacobian(y0, self._dev(self.members))
        # the Newton matrices: inverses, or LU factors with their pivots, by columns as
        # LAPACK writes and reads them (by rows, every solve would copy them first)
        self.newton, self.pivots = torch.zeros_like(self.J), None
        if n >= LU_FROM_STATES:
            self.newton = self.newton.mT
            self.pivots = torch.zeros((B, n), dtype=torch.int32, device=self.device)
        steps = np.zeros(B, dtype=int)
        with np.errstate(all="ignore"):
            while self.alive.any():
                if time.monotonic() > deadline:
                    for b in self.members[self.alive]:
                        errors[b] = budget_reason
                    break
                if not self.alive.all():
                    # the members about to leave the working set keep their step counts
                    steps[self.members] = self.steps
                    self._keep(select)
                calls += self._attempt(t, out, t_end)
                ends = (
                    (self.retry & (self.h < self._min_step()), failures["too_small"]),
                    (self.evals > self.max_rhs_evals, budget_reason),
                    (self.singular, failures["singular"]),
                )
                for mask, why in ends:  # the last that applies is the reason given
                    for b in self.members[mask]:
                        errors[b] = why
                    self.alive = self.alive & ~mask
                self.alive = self.alive & (self.k_next < T)
        steps[self.members] = self.steps
        failed = self._dev(np.array([bool(e) for e in errors]))
        return torch.where(failed[:, None, None], np.nan, out), errors, calls, steps.tolist()

    def _keep(self, select: Callable) -> None:
        """Drop the members that finished or failed from the working set."""
        keep = np.flatnonzero(self.alive)
        for name in MEMBER_STATE:
            setattr(self, name, getattr(self, name)[keep])
        rows = self._dev(keep)
        self.D, self.J, self.newton = self.D[rows], self.J[rows], self.newton[rows]
        if self.pivots is not None:
            self.pivots = self.pivots[rows]
        self.rhs, self.jacobian = select(self._dev(self.members))

    def _first_step(self, y0: torch.Tensor, f0: torch.Tensor, t_end: float) -> np.ndarray:
        """SciPy's first step for order 1, per member ``(B,)``; NaN where not finite."""
        scale = self.atol + self.rtol * y0.abs()
        d0, d1 = rms(y0 / scale), rms(f0 / scale)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1).clamp_max(t_end)
        f1 = self.rhs(y0 + h0[:, None] * f0)
        d2 = rms((f1 - f0) / scale) / h0
        tiny = (d1 <= 1e-15) & (d2 <= 1e-15)
        h1 = torch.where(tiny, (h0 * 1e-3).clamp_min(1e-6), (0.01 / torch.maximum(d1, d2)) ** 0.5)
        h = torch.minimum(torch.minimum(100 * h0, h1), h0.new_tensor(t_end))
        return torch.where(torch.isfinite(h) & torch.isfinite(d2), h, np.nan).cpu().numpy()

    def _rescale(self, mask: np.ndarray, factor: np.ndarray, reset_lu: np.ndarray) -> None:
        """Steps ``factor`` times longer for the members ``mask``: their difference arrays
        re-expressed, their equal-step count and (where ``reset_lu``) Newton matrix reset."""
        which = np.flatnonzero(mask)
        self.h[which] *= factor[which]
        RU = self._dev(step_change(self.order[which], factor[which]))
        rows = self._dev(which)
        self.D[rows, : MAX_ORDER + 1] = RU.transpose(1, 2) @ self.D[rows, : MAX_ORDER + 1]
        self.equal[which] = 0
        self.lu_ok = self.lu_ok & ~reset_lu

    def _min_step(self) -> np.ndarray:
        """SciPy's smallest step at each member's time: ten spacings of its float."""
        return 10 * (np.nextafter(self.t, np.inf) - self.t)

    def _attempt(self, t: np.ndarray, out: torch.Tensor, t_end: float) -> int:
        """One attempt at a step for every member of the working set (all alive); returns
        the number of batched right-hand-side evaluations it took."""
        # as SciPy: a new step starts at least at the smallest step; a member that retries
        # a step below it has failed (:meth:`run`)
        low = ~self.retry & (self.h < self._min_step())
        if low.any():
            self._rescale(low, self._min_step() / self.h, np.zeros_like(low))
        past = self.t + self.h > t_end
        if past.any():
            self._rescale(past, (t_end - self.t) / self.h, past)
        t_new = np.where(past, t_end, self.t + self.h)
        self.h = t_new - self.t
        order = self.order
        y_predict, psi = (self._dev(self.tab.predict[order]) @ self.D).unbind(dim=1)
        scale = self.atol + self.rtol * y_predict.abs()
        c = self.h / self.tab.alpha[order]
        stale = ~self.lu_ok
        if stale.any():
            self._factorise(stale, c)
        converged, n_iter, y_new, d, calls = self._newton(y_predict, c, psi, scale)
        failed = ~converged
        refresh = failed & ~self.jac_new
        if refresh.any():
            rows = self._dev(np.flatnonzero(refresh))
            self.J[rows] = self.jacobian(y_predict[rows], rows)
            self.jac_new = self.jac_new | refresh
            self.lu_ok = self.lu_ok & ~refresh
        halve = failed & ~refresh
        safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + n_iter)
        scale = self.atol + self.rtol * y_new.abs()
        error_const = self._dev(self.tab.error_const[order])
        error_norm = rms(error_const[:, None] * d / scale).cpu().numpy()
        accept = converged & (error_norm <= 1)
        reject = converged & ~accept
        shrink = np.nan_to_num(safety * error_norm ** (-1.0 / (order + 1)), nan=MIN_FACTOR)
        factor = np.where(halve, 0.5, np.maximum(shrink, MIN_FACTOR))
        change = np.zeros_like(accept)
        if accept.any():
            change, grow = self._accept(accept, t_new, d, scale, error_norm, safety)
            factor = np.where(change, grow, factor)
        # the members halved, shrunk and given a new order are apart, so one rescale
        # serves them all; as SciPy, a rejected step (its Newton iteration converged)
        # keeps its Newton matrix
        self.retry = halve | reject
        if (halve | reject | change).any():
            self._rescale(halve | reject | change, factor, halve | change)
        if accept.any():
            self._sample(accept, t, out)
        return calls

    def _factorise(self, stale: np.ndarray, c: np.ndarray) -> None:
        """The Newton matrices ``I - c J`` of the members ``stale`` factorised (or
        inverted); LAPACK's report of a singular one marks that member."""
        every = stale.all()
        rows = slice(None) if every else self._dev(np.flatnonzero(stale))
        # I - c J, made in place on one copy of J
        minus_c = self._dev(-c[stale])[:, None, None]
        matrix = self.J * minus_c if every else self.J[rows].mul_(minus_c)
        matrix.diagonal(dim1=1, dim2=2).add_(1.0)
        if self.pivots is None:
            self.newton[rows], info = torch.linalg.inv_ex(matrix)
        else:
            self.newton[rows], self.pivots[rows], info = torch.linalg.lu_factor_ex(matrix)
        self.singular[stale] |= info.cpu().numpy() != 0
        self.lu_ok = np.ones_like(stale)

    def _newton_solve(self, r: torch.Tensor) -> torch.Tensor:
        """``(I - c J)^-1 r`` per member, ``(W, n)``."""
        if self.pivots is None:
            return (self.newton @ r[:, :, None])[:, :, 0]
        return torch.linalg.lu_solve(self.newton, self.pivots, r[:, :, None])[:, :, 0]

    def _newton(
        self, y_predict: torch.Tensor, c: np.ndarray, psi: torch.Tensor, scale: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor, int]:
        """SciPy's simplified Newton iteration for the BDF system, every member at once
        (a member stops at its own convergence or divergence): whether it converged, its
        iterations, the new states and their correction ``d`` ``(W, n)``, and the batched
        right-hand sides it took."""
        W = len(c)
        c_dev = self._dev(c)[:, None]
        running = np.ones(W, dtype=bool)
        converged = np.zeros(W, dtype=bool)
        n_iter = np.zeros(W, dtype=int)
        y, d = y_predict, torch.zeros_like(y_predict)
        norm_old = rate = np.full(W, np.nan)
        calls = 0
        for k in range(NEWTON_MAXITER):
            if not running.any():
                break
            f = self.rhs(y)
            calls += 1
            self.evals += running
            dy = self._newton_solve(c_dev * f - psi - d)
            # one copy to the host: each member's norm and whether its f is finite
            both = torch.stack([rms(dy / scale), torch.isfinite(f).all(dim=1)]).cpu().numpy()
            norm, running = both[0], running & (both[1] > 0)
            if k > 0:
                rate = norm / norm_old
                slow = (rate >= 1) | (
                    rate ** (NEWTON_MAXITER - k) / (1 - rate) * norm > self.newton_tol
                )
                running = running & ~slow
            if running.all():
                y, d = y + dy, d + dy
            else:
                moving = self._dev(running)[:, None]
                y, d = torch.where(moving, y + dy, y), torch.where(moving, d + dy, d)
            done = norm == 0
            if k > 0:
                done = done | (rate / (1 - rate) * norm < self.newton_tol)
            done = running & done
            converged = converged | done
            n_iter[done] = k + 1
            running = running & ~done
            norm_old = norm
        return converged, n_iter, y, d, calls

    def _accept(
        self,
        accept: np.ndarray,
        t_new: np.ndarray,
        d: torch.Tensor,
        scale: torch.Tensor,
        error_norm: np.ndarray,
        safety: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The accepted members move to ``t_new``: their difference arrays updated, and,
        after ``order + 1`` equal steps, a new order (SciPy's choice). Returns which
        members changed order and the factor on their step size, for :meth:`_rescale`."""
        order = self.order
        self.t = np.where(accept, t_new, self.t)
        self.steps += accept
        self.jac_new = self.jac_new & ~accept
        update = self._dev(self.tab.update[order])
        update_d = self._dev(self.tab.update_d[order])[:, :, None]
        if accept.all():
            self.D = update @ self.D + update_d * d[:, None, :]
        else:
            which = np.flatnonzero(accept)
            rows = self._dev(which)
            self.D[rows] = update[rows] @ self.D[rows] + update_d[rows] * d[rows, None, :]
        self.equal += accept
        change = accept & (self.equal >= order + 1)
        if not change.any():
            return change, error_norm
        which = np.flatnonzero(change)
        o = order[which]
        rows = self._dev(which)
        D, scale = self.D[rows], scale[rows]
        pick = torch.arange(len(which), device=self.device)
        error_const = self.tab.error_const
        lower = error_const[np.maximum(o - 1, 0)]
        higher = error_const[np.minimum(o + 1, MAX_ORDER)]
        norms_lh = (
            torch.stack(
                [
                    rms(self._dev(lower)[:, None] * D[pick, self._dev(o)] / scale),
                    rms(
                        self._dev(higher)[:, None]
                        * D[pick, self._dev(np.minimum(o + 2, 7))]
                        / scale
                    ),
                ]
            )
            .cpu()
            .numpy()
        )
        norms = np.stack(
            [
                np.where(o > 1, norms_lh[0], np.inf),
                error_norm[which],
                np.where(o < MAX_ORDER, norms_lh[1], np.inf),
            ],
            axis=1,
        )
        factors = norms ** (-1.0 / (o[:, None] + np.arange(3)[None, :]))
        self.order[which] = o + np.argmax(factors, axis=1) - 1
        grow = np.ones_like(error_norm)
        grow[which] = np.minimum(safety[which] * factors.max(axis=1), MAX_FACTOR)
        return change, grow

    def _sample(self, accept: np.ndarray, times: np.ndarray, out: torch.Tensor) -> None:
        """Read each accepted member's interpolant at the output times its step passed."""
        T = len(times)
        j = np.arange(MAX_ORDER)
        while True:
            k = self.k_next
            hit = accept & (k < T) & (times[np.minimum(k, T - 1)] <= self.t)
            if not hit.any():
                return
            w = np.flatnonzero(hit)
            t, h = self.t[w, None], self.h[w, None]
            x = (times[k[w]][:, None] - (t - h * j)) / (h * (1 + j))
            p = np.cumprod(x, axis=1) * (j[None, :] < self.order[w, None])
            rows = self._dev(w)
            D = self.D[rows]
            y = D[:, 0] + (self._dev(p)[:, None, :] @ D[:, 1 : MAX_ORDER + 1])[:, 0]
            out[self._dev(self.members[w]), self._dev(k[w])] = y
            self.k_next[w] += 1
