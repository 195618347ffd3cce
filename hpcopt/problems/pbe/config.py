"""The PBE problem's config: grid, mechanisms, parameters, data and cost.

Cheap to import: the driver validates configs and builds the space with it; the solver
runs on the workers (:mod:`hpcopt.problems.pbe.problem`).

Every parameter the chosen mechanisms need (:meth:`PBEConfig.needed`) is either searched
(``parameters``, natural units, optionally log-scaled) or fixed (``known``). Measured data
come from a file (``data``) or are made from known parameters (``synthetic``).

Several experiments per fit (``experiments``) are resolved in :mod:`.experiments`; the
sections that describe the simulated system are in :mod:`.sections`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from hpcopt.core.space import Param, Space
from hpcopt.problems.base import ProblemConfig
from hpcopt.problems.custom import ParamSpec
from hpcopt.problems.pbe.cost import parse_cost
from hpcopt.problems.pbe.experiments import (
    Experiment,
    ExperimentSection,
    check_experiments,
    check_measured,
    check_synthetic,
    resolve,
)
from hpcopt.problems.pbe.kernels import fragment_range_error, range_error
from hpcopt.problems.pbe.sections import (
    MODEL_KEYS,
    DataFile,
    PBEModel,
    Synthetic,
    checks_files,
)


class PBEConfig(ProblemConfig, PBEModel):
    """``problem: {name: pbe}``: fit dPBE kernel parameters to measured PSDs."""

    problem_class = "hpcopt.problems.pbe.problem:PBEProblem"

    name: Literal["pbe"]
    parameters: list[ParamSpec] = Field(min_length=1)
    data: DataFile | None = None
    synthetic: Synthetic | None = None
    smoothing: Literal["none", "kde"] = "none"
    kde_bandwidth: float | None = Field(None, gt=0)
    cost: list[list[Any]] = Field(default_factory=lambda: [["qx", "MSE"]])
    experiments: list[ExperimentSection] | None = Field(None, min_length=1)

    def model(self) -> PBEModel:
        """The forward-model part of this section."""
        return PBEModel(**{k: getattr(self, k) for k in MODEL_KEYS})

    def _unused_known(self) -> list[str]:
        # over experiments, the top-level known serve them all: checked in _check_experiments
        return [] if self.experiments else super()._unused_known()

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> PBEConfig:
        searched = [p.name for p in self.parameters]
        if len(set(searched)) != len(searched):
            raise ValueError(f"parameters: a name is repeated in {searched}")
        both = sorted(set(searched) & set(self.known))
        if both:
            raise ValueError(f"{both} are both searched (parameters) and fixed (known)")
        for spec in self.parameters:
            error = range_error(spec.name, spec.low, spec.high) or fragment_range_error(
                self.fragments, spec.name, spec.low
            )
            if error:
                raise ValueError(
                    f"parameters.{spec.name}: {error}; the bounds are [{spec.low}, {spec.high}]"
                )
        if self.synthetic is not None:
            check_synthetic(self, self.synthetic, "synthetic")
        if self.experiments:
            check_experiments(self, checks_files(info))
            return self
        if (self.data is None) == (self.synthetic is None):
            raise ValueError("give exactly one of 'data' (a file) and 'synthetic'")
        parse_cost(self.cost)
        needed = set(self.needed())
        unused = sorted((set(searched) | set(self.known)) - needed)
        missing = sorted(needed - set(searched) - set(self.known))
        if unused:
            raise ValueError(
                f"{unused} are not used by these mechanisms; they need {sorted(needed)}"
            )
        if missing:
            raise ValueError(f"give {missing} in 'parameters' (searched) or 'known' (fixed)")
        check_measured(self.resolved_experiments()[0], "", checks_files(info))
        return self

    def resolved_experiments(self) -> tuple[Experiment, ...]:
        """The experiments of this fit, every inherited key resolved (one without
        ``experiments``). Raises ``ValueError`` naming the key path of what is wrong."""
        if not self.experiments:
            searched = {p.name: p.name for p in self.parameters}
            one = Experiment(
                name="",
                weight=1.0,
                model=self.model(),
                searched=searched,
                shared={k: k for k in self.known},
                data=self.data,
                synthetic=self.synthetic,
                cost=self.cost,
                smoothing=self.smoothing,
                kde_bandwidth=self.kde_bandwidth,
            )
            return (one,)
        return tuple(resolve(self, i, e) for i, e in enumerate(self.experiments))

    def space(self) -> Space:
        return Space(Param(p.name, p.low, p.high, p.log) for p in self.parameters)

    @property
    def label(self) -> str:
        mechanisms = f"{self.agglomeration}/{self.breakage}"
        if not self.experiments:
            return f"pbe ({self.dim}-D, {mechanisms})"
        dims = sorted({run.model.dim for run in self.resolved_experiments()}, reverse=True)
        dim = " + ".join(f"{d}-D" for d in dims)
        return f"pbe ({len(self.experiments)} experiments, {dim}, {mechanisms})"
