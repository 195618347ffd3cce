"""Multi-start gradient descent (Adam, AdamW or BFGS) over the unit cube.

Every start advances in lockstep: one batch per step holds each start's current point and,
when the gradient is estimated, its probes. Gradients come from the problem, from central
finite differences, or from SPSA (simultaneous perturbation along random sign vectors) —
or mixed: the problem's exact derivatives for the parameters it has them for (asked at
the starts' points only), finite differences or SPSA along the others. Learning rates are
in unit-cube coordinates, per parameter when given as a mapping.

``ask`` only reads the state; ``tell`` rebuilds the same plan from it (probe layout, SPSA
directions) and then advances, so a resumed method asks exactly what it would have asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from scipy.stats import qmc

from hpcopt.methods import quasi_newton
from hpcopt.methods.base import Batch, Method, MethodConfig

_START_DRAWS = 100  # Latin-hypercube draws of `starts` points tried before giving up

# Options that only mean something under some setting: changing them otherwise is a mistake.
_ONLY_WITH: dict[str, tuple[str, tuple[str, ...]]] = {
    "betas": ("optimizer", ("adam", "adamw")),
    "eps": ("optimizer", ("adam", "adamw")),
    "weight_decay": ("optimizer", ("adamw",)),
    "lr_schedule": ("optimizer", ("adam", "adamw")),
    "lr_final_fraction": ("lr_schedule", ("cosine",)),
    "fd_step": ("gradient", ("auto", "fd")),
    "spsa_c": ("gradient", ("spsa",)),
    "spsa_averages": ("gradient", ("spsa",)),
}


class GDConfig(MethodConfig):
    """``method: {name: gd}``: multi-start gradient descent in unit-cube coordinates.

    ``lr`` is one learning rate or per-parameter groups ``{x0: 0.1, default: 0.01}`` (0
    freezes a parameter). ``lr_schedule: cosine`` decays every rate to ``lr_final_fraction``
    of itself by the last step. ``gradient: auto`` takes the problem's exact gradient when
    has one for every parameter; for a problem that has them for some (a coverage AP's
    yaw), those, and central finite differences along the others. ``fd`` and ``spsa``
    estimate every parameter, unless ``exact_gradients: true``: then only those the
    problem has no exact derivative for.

    ``optimizer: bfgs`` steps along quasi-Newton directions with a backtracking line search
    (:mod:`.quasi_newton`): fast on smooth, ill-conditioned losses such as a least-squares
    fit; ``lr`` is then the length of each start's first step, the later ones come from
    the curvature it has seen.
    """

    name: Literal["gd"]
    starts: int = Field(8, ge=1)
    steps: int = Field(100, ge=1)
    optimizer: Literal["adam", "adamw", "bfgs"] = "adam"
    lr: float | dict[str, float] = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.01, ge=0)  # adamw: pulls unit coordinates toward 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_final_fraction: float = Field(0.01, ge=0, le=1)
    gradient: Literal["auto", "problem", "fd", "spsa"] = "auto"
    fd_step: float = Field(1e-4, gt=0, lt=0.5)  # unit coordinates
    spsa_c: float = Field(0.01, gt=0, lt=0.5)  # probe offset per coordinate, unit coordinates
    spsa_averages: int = Field(1, ge=1)  # direction pairs per start and step
    exact_gradients: bool | None = None  # None: yes with auto, no with fd and spsa
    backtracks: int = Field(10, ge=0)  # halvings of an infeasible step before staying put

    @field_validator("lr")
    @classmethod
    def _lr_positive(cls, lr: float | dict[str, float]) -> float | dict[str, float]:
        if isinstance(lr, dict):
            negative = {k: v for k, v in lr.items() if v < 0}
            if negative:
                raise ValueError(f"learning rates must be >= 0; negative: {negative}")
            if not any(lr.values()):
                raise ValueError("every learning rate is 0, nothing would move")
        elif lr <= 0:
            raise ValueError("must be > 0")
        return lr

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError("each must be in [0, 1)")
        return betas

    @field_validator(*_ONLY_WITH)
    @classmethod
    def _used_by_the_setting(cls, value: float, info: ValidationInfo) -> float:
        setting, allowed = _ONLY_WITH[info.field_name]
        chosen = info.data.get(setting)  # None when the setting itself was invalid
        # Compared with the default: a config dumped with every field must load again.
        changed = value != cls.model_fields[info.field_name].default
        if changed and chosen is not None and chosen not in allowed:
            raise ValueError(
                f"only used with {setting}: {' or '.join(allowed)}; "
                f"this config has {setting}: {chosen}"
            )
        return value


@dataclass
class _Plan:
    """One step's batch: the N current points, then the usable probes in start-major order.

    ``directions`` (N, p, d) are the probe directions (unit vectors for finite differences,
    sign vectors for SPSA), probed at ``x ± offset * direction``; ``usable`` (N, p, 2) marks
    the (+, -) probes inside the cube and feasible, the ones in the batch; ``rng`` is the
    generator state after drawing the directions.
    """

    points: np.ndarray
    directions: np.ndarray | None = None
    usable: np.ndarray | None = None
    offset: float = 0.0
    rng: dict[str, Any] | None = None


class GradientDescent(Method[GDConfig]):
    """Multi-start Adam, AdamW or BFGS descent; all starts step in lockstep, one batch per
    step.

    State: ``step``; per start the current points ``x`` (N, d), Adam moments ``m`` and
    ``v`` (N, d) and update counts ``t`` (N,) (with BFGS instead: its accepted points,
    losses and gradients, inverse Hessians, directions and step fractions,
    :func:`.quasi_newton.start`); the best evaluated point ``best_u`` (d,) and
    ``best_loss`` (inf until one succeeds); ``rng``, the PCG64 state that draws SPSA
    directions.
    """

    def setup(self) -> None:
        config, space = self.config, self.space
        self._lr = space.per_param(config.lr, "method.lr")
        # The parameters whose derivative the problem gives; the rest are estimated.
        use_exact = config.exact_gradients
        if use_exact is None:
            use_exact = config.gradient in ("auto", "problem")
        self._exact = self.gradient_mask & use_exact
        self._gradient = config.gradient
        if config.gradient == "auto":
            self._gradient = "problem" if self._exact.all() else "fd"
        if self._gradient == "problem" and not self.has_gradient:
            raise ValueError(
                "method.gradient: 'problem' needs a problem with exact gradients for every "
                "parameter and this one has "
                + (f"them only for {[n for n, e in zip(space.names, self._exact) if e]}"
                   if self._exact.any() else "none")
                + "; use 'fd' or 'spsa' (the exact ones are used where there are any)"
            )  # fmt: skip
        if self._gradient == "problem" or self._exact.all():
            self._exact = np.ones(space.dim, dtype=bool)
            self._gradient = "problem"
        self._used: np.ndarray | None = None
        rng = np.random.Generator(np.random.PCG64(self.seed))
        x = self._draw_starts(rng)
        n, d = x.shape
        if config.optimizer == "bfgs":
            steps = quasi_newton.start(n, d)
        else:
            moments = np.zeros((n, d))
            steps = {"m": moments, "v": moments.copy(), "t": np.zeros(n, dtype=np.int64)}
        self.state = {
            "step": 0,
            "x": x,
            **steps,
            **self.start_best(),
            "rng": rng.bit_generator.state,
        }

    @property
    def done(self) -> bool:
        """True once ``steps`` steps have been told."""
        return self.state["step"] >= self.config.steps

    @property
    def expected_evaluations(self) -> int:
        """Upper bound: every start and every probe, every step (unusable probes are skipped)."""
        pairs = {
            "problem": 0,
            "fd": int((~self._exact).sum()),
            "spsa": self.config.spsa_averages,
        }
        return self.config.steps * self.config.starts * (1 + 2 * pairs[self._gradient])

    def ask(self) -> Batch:
        """This step's batch: the N current points, then their probes (fd, spsa)."""
        if self.done:
            raise RuntimeError("gradient descent is done: all steps were taken")
        plan = self._plan()
        n = self.config.starts
        # Exact derivatives at the starts' points, never at the probes.
        gradient: bool | np.ndarray = bool(self._exact.any())
        if gradient and len(plan.points) > n:
            gradient = np.arange(len(plan.points)) < n
        return Batch(plan.points, gradient=gradient, iteration=self.state["step"])

    def tell(self, batch: Batch, losses: np.ndarray, gradients: np.ndarray | None = None) -> None:
        """Losses (n,) of this step's batch and, for ``gradient: problem``, gradients (n, d)
        in unit coordinates; then every start whose loss and gradient are finite moves."""
        plan = self._plan()
        losses = np.asarray(losses, dtype=float)
        step, n = self.state["step"], self.config.starts
        if batch.iteration != step or losses.shape != (len(plan.points),):
            raise ValueError(
                f"tell: expected {len(plan.points)} losses for step {step}, got shape "
                f"{losses.shape} for step {batch.iteration}"
            )
        self.record_best(plan.points, losses)
        valid = np.isfinite(losses[:n])
        grad = np.zeros((n, self.space.dim))
        if plan.directions is not None:
            grad = self._estimate(plan, losses)
        if self._exact.any():
            if gradients is None:
                raise ValueError("tell: this batch asked for gradients and none were given")
            exact = np.asarray(gradients, dtype=float)[:n, self._exact]
            valid &= np.isfinite(exact).all(axis=1)
            grad[:, self._exact] = np.where(np.isfinite(exact), exact, 0.0)
        self._used = np.full((len(plan.points), self.space.dim), np.nan)
        self._used[:n][valid] = grad[valid]
        x = self.state["x"]
        if self.config.optimizer == "bfgs":
            s = self.state
            proposed = quasi_newton.step(
                s, x, losses[:n], grad, valid, self._lr, self.space.periodic
            )
            # an infeasible trial is shortened toward the point it steps from
            x = np.where(np.isfinite(s["base_loss"])[:, None], s["base"], x)
        else:
            proposed = self._adam(grad, valid)
        self.state["x"] = self._keep_feasible(x, proposed)
        if plan.rng is not None:
            self.state["rng"] = plan.rng
        self.state["step"] = step + 1

    def gradients_used(self) -> np.ndarray | None:
        """The loss gradients ``(n, d)`` (unit coordinates) the last step took for each
        start, in the rows of its points (a step the constraints then shortened or undid
        included); NaN in the probes' rows and for starts without a valid gradient."""
        return None if self._used is None else self._used.copy()

    def _draw_starts(self, rng: np.random.Generator) -> np.ndarray:
        n = self.config.starts
        # `seed=` (not `rng=`) keeps scipy 1.10-1.14 working; it accepts a Generator too.
        lhs = qmc.LatinHypercube(d=self.space.dim, seed=rng)
        found = np.empty((0, self.space.dim))
        for _ in range(_START_DRAWS):
            u = lhs.random(n)
            found = np.concatenate([found, u[self.feasible(u)]])[:n]
            if len(found) == n:
                return found
        raise ValueError(
            f"method.starts: only {len(found)} of {n} starting points were feasible after "
            f"{_START_DRAWS} Latin-hypercube draws; the constraints leave too little room"
        )

    def _plan(self) -> _Plan:
        x = self.state["x"]
        n, d = x.shape
        if self._gradient == "problem":
            return _Plan(points=x.copy())
        rng_state = None
        estimated = ~self._exact
        if self._gradient == "fd":
            offset = self.config.fd_step
            axes = np.eye(d)[estimated]
            directions = np.broadcast_to(axes, (n, len(axes), d))
        else:
            offset = self.config.spsa_c
            rng = np.random.Generator(np.random.PCG64(0))
            rng.bit_generator.state = self.state["rng"]
            k = self.config.spsa_averages
            directions = (rng.integers(0, 2, size=(n, k, d)) * 2.0 - 1.0) * estimated
            rng_state = rng.bit_generator.state
        signs = np.array([1.0, -1.0])[:, None]
        probes = self._wrap(x[:, None, None, :] + offset * signs * directions[:, :, None, :])
        inside = ((probes >= 0.0) & (probes <= 1.0)).all(axis=-1)
        probes = probes.reshape(-1, d)
        usable = inside.reshape(-1)
        usable[usable] = self.feasible(probes[usable])
        return _Plan(
            points=np.concatenate([x, probes[usable]]),
            directions=directions,
            usable=usable.reshape(inside.shape),
            offset=offset,
            rng=rng_state,
        )

    def _estimate(self, plan: _Plan, losses: np.ndarray) -> np.ndarray:
        """Gradient (N, d) from probe losses: central difference where both probes of a
        pair were evaluated, one-sided where one was, nothing from a pair with neither."""
        n = self.config.starts
        probed = np.full(plan.usable.shape, np.nan)
        probed[plan.usable] = losses[n:]
        plus, minus = probed[..., 0], probed[..., 1]
        centre = losses[:n, None]
        has_plus, has_minus = np.isfinite(plus), np.isfinite(minus)
        h = plan.offset
        slope = np.select(
            [has_plus & has_minus, has_plus, has_minus],
            [(plus - minus) / (2.0 * h), (plus - centre) / h, (centre - minus) / h],
            0.0,
        )
        if self._gradient == "fd":
            return np.einsum("np,npd->nd", slope, plan.directions)
        # SPSA: average the pairs that gave a slope; for sign vectors 1/delta = delta (and
        # the exactly known parameters' components are zero).
        pairs = np.maximum((has_plus | has_minus).sum(axis=1), 1)
        return np.einsum("np,npd->nd", slope, plan.directions) / pairs[:, None]

    def _adam(self, grad: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Adam/AdamW update of the starts with a valid gradient; returns proposed points."""
        s, c = self.state, self.config
        b1, b2 = c.betas
        keep = valid[:, None]
        s["m"] = np.where(keep, b1 * s["m"] + (1.0 - b1) * grad, s["m"])
        s["v"] = np.where(keep, b2 * s["v"] + (1.0 - b2) * grad * grad, s["v"])
        s["t"] = s["t"] + valid
        # Starts that never moved have t = 0 and zero moments; t >= 1 avoids 0/0 for them.
        t = np.maximum(s["t"], 1)[:, None]
        direction = (s["m"] / (1.0 - b1**t)) / (np.sqrt(s["v"] / (1.0 - b2**t)) + c.eps)
        if c.optimizer == "adamw":
            direction = direction + c.weight_decay * s["x"]
        proposed = np.clip(self._wrap(s["x"] - self._lr * self._lr_factor() * direction), 0, 1)
        return np.where(keep, proposed, s["x"])

    def _wrap(self, u: np.ndarray) -> np.ndarray:
        """Periodic parameters (angles) go round instead of stopping at their bounds."""
        if not self.space.periodic.any():
            return u
        return np.where(self.space.periodic, np.mod(u, 1.0), u)

    def _lr_factor(self) -> float:
        c = self.config
        if c.lr_schedule == "constant":
            return 1.0
        progress = self.state["step"] / max(c.steps - 1, 1)
        f = c.lr_final_fraction
        return f + (1.0 - f) * 0.5 * (1.0 + np.cos(np.pi * progress))

    def _keep_feasible(self, x: np.ndarray, proposed: np.ndarray) -> np.ndarray:
        """Halve infeasible steps up to ``backtracks`` times; a start still out stays put."""
        out = proposed.copy()
        moved = np.flatnonzero((proposed != x).any(axis=1))
        bad = moved[~self.feasible(proposed[moved])]
        for halvings in range(1, self.config.backtracks + 1):
            if not len(bad):
                break
            trial = x[bad] + (proposed[bad] - x[bad]) * 0.5**halvings
            ok = self.feasible(trial)
            out[bad[ok]] = trial[ok]
            bad = bad[~ok]
        out[bad] = x[bad]
        return out
