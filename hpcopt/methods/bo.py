"""Sampler-based Bayesian optimisation through Optuna's ask/tell: TPE, GP, CMA-ES, QMC, random.

Each parameter is a ``FloatDistribution(0, 1)`` named after the space's parameters, so
Optuna searches the unit cube (the :class:`~hpcopt.core.space.Space` already did any log
encoding). A batch is ``max_concurrent`` trials asked before any is told: TPE (constant
liar) and GP (q-EI) account for the running trials, CMA-ES, QMC and random draw distinct
points anyway.

The study lives in memory and is rebuilt on :meth:`~BayesianOptimization.load_state_dict`:
the state keeps every trial (parameters, value, Optuna state and system attributes), the
study's system attributes, and the sampler itself pickled as Optuna documents for
resuming a sampler, so finished evaluations are told back, never run again, and the run
continues bit for bit. Loading a state unpickles its sampler, so load only checkpoints
from the campaign's own store. Optuna is imported lazily: importing this module is cheap.
"""

from __future__ import annotations

import base64
import importlib.util
import inspect
import logging
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from hpcopt.methods.base import Batch, Method, MethodConfig

if TYPE_CHECKING:
    from optuna import Study
    from optuna.samplers import BaseSampler

Sampler = Literal["tpe", "gp", "cmaes", "qmc", "random"]

SAMPLER_CLASSES: dict[str, str] = {
    "tpe": "TPESampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "random": "RandomSampler",
}
"""Optuna sampler class (in ``optuna.samplers``) behind each ``sampler`` name."""

_WITH_STARTUP = ("tpe", "gp", "cmaes")
# hpcopt sets these itself; sampler_options may not.
_OWNED_OPTIONS = {"seed": "the trial seed", "n_startup_trials": "method.n_startup_trials"}


class BOConfig(MethodConfig):
    """``method: {name: bo, sampler: gp, n_trials: 80, max_concurrent: 4}``.

    ``n_trials`` is the budget of evaluations (failed ones count, infeasible points never
    evaluated do not); ``max_concurrent`` the points per batch; ``n_startup_trials`` the
    random trials before the model takes over (``tpe``, ``gp`` and ``cmaes`` only; unset
    keeps Optuna's default); ``sampler_options`` further keyword arguments of the Optuna
    sampler; ``max_infeasible`` how many infeasible points in a row one batch slot may
    draw before the run gives up.
    """

    name: Literal["bo"]
    sampler: Sampler = "tpe"
    n_trials: int = Field(100, gt=0)
    max_concurrent: int = Field(1, gt=0)
    n_startup_trials: int | None = Field(None, ge=0)
    sampler_options: dict[str, Any] = Field(default_factory=dict)
    max_infeasible: int = Field(100, gt=0)

    @model_validator(mode="after")
    def _check(self) -> BOConfig:
        if self.n_startup_trials is not None and self.sampler not in _WITH_STARTUP:
            raise ValueError(
                f"n_startup_trials: sampler {self.sampler!r} has no startup phase; "
                f"it applies to {list(_WITH_STARTUP)}"
            )
        if self.sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
            # an extra: only this sampler uses it
            raise ValueError("sampler 'cmaes' needs cmaes: pip install 'hpcopt[cmaes]'")
        owned = sorted(_OWNED_OPTIONS.keys() & self.sampler_options.keys())
        if owned:
            raise ValueError(
                "; ".join(f"sampler_options.{k}: set from {_OWNED_OPTIONS[k]}" for k in owned)
            )
        return self


class BayesianOptimization(Method[BOConfig]):
    """Ask/tell over an in-memory Optuna study, ``max_concurrent`` trials per batch.

    Infeasible proposals are told to Optuna as failed, never evaluated, and the slot is
    asked again; NaN losses are told as failed. ``state`` holds ``batch`` (the number of
    the batch being asked or evaluated), ``evaluated`` (evaluations told), ``pending``
    (trial numbers asked but not yet told), ``trials`` (``params`` ``(n, d)``, ``values``
    ``(n,)``, ``states`` and ``system_attrs`` of every trial in order),
    ``study_system_attrs``, ``sampler`` (the pickled sampler, base64) and
    ``optuna_version``.
    """

    def setup(self) -> None:
        import optuna

        self._distributions = {
            n: optuna.distributions.FloatDistribution(0.0, 1.0) for n in self.space.names
        }
        self._study = self._new_study(self._new_sampler(self.seed))
        self.state = {"batch": 0, "evaluated": 0, "pending": []}
        self._snapshot()

    def ask(self) -> Batch:
        """Up to ``max_concurrent`` feasible points ``(k, d)``; the same batch until told."""
        if self.done:
            raise RuntimeError(f"BO has told all {self.config.n_trials} trials; nothing to ask")
        if not self.state["pending"]:
            size = min(self.config.n_trials - self.state["evaluated"], self.config.max_concurrent)
            with _quiet_optuna():
                self.state["pending"] = self._ask_batch(size)
            self._snapshot()
        points = self.state["trials"]["params"][self.state["pending"]]
        return Batch(points.copy(), iteration=self.state["batch"])

    def tell(self, batch: Batch, losses: np.ndarray, gradients: np.ndarray | None = None) -> None:
        """Losses ``(k,)`` of the pending batch; NaN (failed evaluation) is told as FAIL."""
        import optuna

        pending = self.state["pending"]
        losses = np.asarray(losses, dtype=float)
        if batch.iteration != self.state["batch"] or losses.shape != (len(pending),):
            raise ValueError(
                f"tell expects {len(pending)} losses for batch {self.state['batch']}, "
                f"got {losses.shape} for batch {batch.iteration}"
            )
        with _quiet_optuna():
            for number, loss in zip(pending, losses):
                if np.isnan(loss):
                    self._study.tell(number, state=optuna.trial.TrialState.FAIL)
                else:
                    self._study.tell(number, float(loss))
        self.state["pending"] = []
        self.state["evaluated"] += len(pending)
        self.state["batch"] += 1
        self._snapshot()

    @property
    def done(self) -> bool:
        """True once ``n_trials`` evaluations have been told."""
        return self.state["evaluated"] >= self.config.n_trials and not self.state["pending"]

    @property
    def best(self) -> tuple[np.ndarray, float] | None:
        """The best completed trial (unit cube) and its loss; None before any."""
        values = self.state["trials"]["values"]
        if not np.isfinite(values).any():
            return None
        i = int(np.nanargmin(values))
        return self.state["trials"]["params"][i].copy(), float(values[i])

    @property
    def expected_evaluations(self) -> int:
        """``n_trials``: infeasible proposals are never evaluated and do not count."""
        return self.config.n_trials

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state: rebuild the study from its trials and unpickle the sampler.

        If the sampler cannot be restored (another Optuna version), a fresh one takes
        over with a warning: the finished trials still count, but the continuation is no
        longer bit-identical.
        """
        super().load_state_dict(state)
        self._study = self._new_study(self._restored_sampler())
        self._replay()

    def _ask_batch(self, size: int) -> list[int]:
        """Trial numbers of ``size`` feasible trials; infeasible ones are told as failed.

        Infeasible trials stay running until the batch is full: samplers that account for
        running trials (TPE's constant liar, GP's q-EI) then steer away from them, where a
        failed trial alone teaches them nothing and they would propose the same region again.
        """
        import optuna

        feasible, infeasible = [], []
        while len(feasible) < size:
            for _ in range(self.config.max_infeasible):
                trial = self._study.ask(self._distributions)
                point = np.array([[trial.params[n] for n in self.space.names]])
                if self.feasible(point)[0]:
                    feasible.append(trial.number)
                    break
                infeasible.append(trial.number)
            else:
                raise RuntimeError(
                    f"BO sampler {self.config.sampler!r} proposed {self.config.max_infeasible} "
                    f"infeasible points in a row in batch {self.state['batch']}; the "
                    "constraints leave too little room (raise method.max_infeasible or relax "
                    "them)"
                )
        for number in infeasible:
            self._study.tell(number, state=optuna.trial.TrialState.FAIL)
        return feasible

    def _new_sampler(self, seed: int) -> BaseSampler:
        """The configured sampler, seeded from ``seed``; options checked against its signature."""
        import optuna

        name = self.config.sampler
        if name == "gp" and importlib.util.find_spec("torch") is None:
            raise ImportError("BO sampler 'gp' needs torch: pip install 'hpcopt[torch]'")
        cls = getattr(optuna.samplers, SAMPLER_CLASSES[name])
        allowed = sorted(set(inspect.signature(cls).parameters) - _OWNED_OPTIONS.keys())
        unknown = sorted(set(self.config.sampler_options) - set(allowed))
        if unknown:
            raise ValueError(
                f"method.sampler_options: unknown option(s) {unknown} for sampler {name!r}; "
                f"allowed: {allowed}"
            )
        kwargs = dict(self.config.sampler_options)
        if self.config.n_startup_trials is not None:
            kwargs["n_startup_trials"] = self.config.n_startup_trials
        # Optuna seeds numpy's 32-bit RandomState; this maps any trial seed into it.
        kwargs["seed"] = int(np.random.SeedSequence(seed).generate_state(1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return cls(**kwargs)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"method.sampler_options for sampler {name!r}: {exc}") from None

    def _new_study(self, sampler: BaseSampler) -> Study:
        import optuna

        self._storage = optuna.storages.InMemoryStorage()
        with _quiet_optuna():
            study = optuna.create_study(
                storage=self._storage, sampler=sampler, direction="minimize"
            )
        self._study_id = self._storage.get_study_id_from_name(study.study_name)
        return study

    def _restored_sampler(self) -> BaseSampler:
        import optuna

        if self.state["optuna_version"] == optuna.__version__:
            try:
                return pickle.loads(base64.b64decode(self.state["sampler"]))
            # Unpickling foreign bytes can fail in any way; all mean the same here.
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
        else:
            reason = (
                f"saved with Optuna {self.state['optuna_version']}, running {optuna.__version__}"
            )
        warnings.warn(
            f"BO: cannot restore the {self.config.sampler!r} sampler ({reason}); continuing "
            "with a fresh sampler, so the continuation is no longer bit-identical",
            RuntimeWarning,
            stacklevel=3,
        )
        return self._new_sampler(self.seed + len(self.state["trials"]["states"]))

    def _replay(self) -> None:
        """Add the saved trials, in order, to the fresh study, with their system attrs."""
        import optuna

        trials = self.state["trials"]
        for params, value, state, attrs in zip(
            trials["params"], trials["values"], trials["states"], trials["system_attrs"]
        ):
            self._study.add_trial(
                optuna.trial.create_trial(
                    state=optuna.trial.TrialState[state],
                    value=None if np.isnan(value) else float(value),
                    params=dict(zip(self.space.names, params.tolist())),
                    distributions=self._distributions,
                    system_attrs=attrs,
                )
            )
        for key, value in self.state["study_system_attrs"].items():
            self._storage.set_study_system_attr(self._study_id, key, value)

    def _snapshot(self) -> None:
        """Copy the study's trials and attributes and the pickled sampler into ``state``."""
        import optuna

        trials = self._study.get_trials(deepcopy=False)
        self.state["trials"] = {
            "params": np.array(
                [[t.params[n] for n in self.space.names] for t in trials], dtype=float
            ).reshape(len(trials), self.space.dim),
            "values": np.array(
                [np.nan if t.value is None else t.value for t in trials], dtype=float
            ),
            "states": [t.state.name for t in trials],
            "system_attrs": [dict(t.system_attrs) for t in trials],
        }
        self.state["study_system_attrs"] = self._storage.get_study_system_attrs(self._study_id)
        self.state["sampler"] = base64.b64encode(pickle.dumps(self._study.sampler)).decode()
        self.state["optuna_version"] = optuna.__version__


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Hide Optuna's INFO lines (study created, trial finished) for the duration."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
