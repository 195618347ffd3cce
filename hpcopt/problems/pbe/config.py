"""The PBE problem's config: grid, mechanisms, parameters, data and cost.

Cheap to import: the driver validates configs and builds the space with it; the solver
runs on the workers (:mod:`hpcopt.problems.pbe.problem`).

Every parameter the chosen mechanisms need (:meth:`PBEConfig.needed`) is either searched
(``parameters``, natural units, optionally log-scaled) or fixed (``known``). Measured data
come from a file (``data``) or are made from known parameters (``synthetic``).

Several experiments per fit (``experiments``) are resolved here, by the rules of
:mod:`.experiments`; the sections that describe the simulated system are in
:mod:`.sections`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from hpcopt.core.space import Space
from hpcopt.problems.base import ProblemConfig
from hpcopt.problems.custom import ParamSpec
from hpcopt.problems.pbe.cost import parse_cost
from hpcopt.problems.pbe.experiments import (
    Experiment,
    ExperimentSection,
    check_measured,
    override,
    validated,
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
        return Space(p.param() for p in self.parameters)

    @property
    def has_gradient(self) -> bool:
        """Exact gradients (:mod:`.gradient`) with the torch backend and a differentiable
        model and cost in every experiment (:meth:`gradient_error`)."""
        return not self.gradient_error()

    def gradient_error(self) -> str:
        """Why this fit has no exact gradients, or ``""``."""
        if self.solver.backend != "torch":
            return "exact gradients need solver.backend: torch (the autograd of its solve)"
        for run in self.resolved_experiments():
            where = f"experiment {run.name!r}: " if run.name else ""
            if run.smoothing == "kde":
                return f"{where}smoothing: kde has no torch version to differentiate; use none"
            m = run.model
            if m.breakage != "none" and m.fragments == "product_power_law":
                return (
                    f"{where}fragments: product_power_law has no exact derivative here "
                    "(SciPy's incomplete beta function takes no complex step)"
                )
            if m.breakage != "none" and m.dim == 2 and m.fragment_composition == "spread":
                return f"{where}fragment_composition: spread has no exact derivative here"
        return ""

    @property
    def label(self) -> str:
        mechanisms = f"{self.agglomeration}/{self.breakage}"
        if not self.experiments:
            return f"pbe ({self.dim}-D, {mechanisms})"
        dims = sorted({run.model.dim for run in self.resolved_experiments()}, reverse=True)
        dim = " + ".join(f"{d}-D" for d in dims)
        return f"pbe ({len(self.experiments)} experiments, {dim}, {mechanisms})"


def check_synthetic(config: PBEConfig, syn: Synthetic, where: str) -> None:
    """Refuse synthetic truths out of range or not exactly the searched parameters."""
    for name, value in syn.parameters.items():
        if error := range_error(name, value, value):
            raise ValueError(f"{where}.parameters.{name}: {error}; got {value}")
    searched = [p.name for p in config.parameters]
    absent = sorted(set(searched) - set(syn.parameters))
    extra = sorted(set(syn.parameters) - set(searched))
    if absent or extra:
        raise ValueError(
            f"{where}.parameters must give exactly the searched parameters "
            f"{searched}; missing {absent}, not searched {extra}"
        )


def check_experiments(config: PBEConfig, check_files: bool = True) -> None:
    """Refuse repeated names, searched or known values no experiment uses, and data an
    experiment cannot use (:func:`check_measured`)."""
    names = [e.name for e in config.experiments]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"experiments: the names {repeated} repeat; each names its cost (cost_<name>)"
        )
    runs = config.resolved_experiments()
    for where, run in zip(_wheres(runs), runs):
        check_measured(run, where + ".", check_files)
    used = {f for run in runs for f in (*run.searched.values(), *run.shared.values())}
    for spec in config.parameters:
        if spec.name not in used:
            raise ValueError(
                f"parameters.{spec.name}: used by no experiment (each takes the "
                "parameters its mechanisms need, by name or through its rename)"
            )
    for name in config.known:
        if name not in used:
            raise ValueError(f"known.{name}: used by no experiment's mechanisms")
    truths = [(w, r.synthetic.parameters) for w, r in zip(_wheres(runs), runs) if r.synthetic]
    for where, truth in truths[1:]:
        if truth != truths[0][1]:
            raise ValueError(
                f"{where}.synthetic.parameters: {truth} differ from {truths[0][0]}'s "
                f"{truths[0][1]}: the experiments of one fit share the true parameters"
            )


def resolve(config: PBEConfig, i: int, e: ExperimentSection) -> Experiment:
    """Experiment ``i`` of ``config`` with every inherited key resolved."""
    where = f"experiments[{i}]"
    base = config.model().model_dump()
    raw = {
        key: base[key] if getattr(e, key) is None else override(base[key], getattr(e, key))
        for key in MODEL_KEYS
        if key != "known"
    }
    needed = validated(PBEModel, raw, where).needed()
    known, searched, shared = sources(config, where, e, needed)
    model = validated(PBEModel, {**raw, "known": known}, where)
    if e.data is not None and e.synthetic is not None:
        raise ValueError(f"{where}: give one of 'data' (a file) and 'synthetic', not both")
    data, synthetic = config.data, config.synthetic
    if e.data is not None:
        data, synthetic = e.data, None
    elif e.synthetic is not None:
        top = config.synthetic.model_dump() if config.synthetic else {}
        data = None
        synthetic = validated(Synthetic, override(top, e.synthetic), f"{where}.synthetic")
        check_synthetic(config, synthetic, f"{where}.synthetic")
    if data is None and synthetic is None:
        raise ValueError(
            f"{where}: no data: give {where}.data (a file) or {where}.synthetic, or "
            "a top-level 'data' or 'synthetic' every experiment shares"
        )
    cost = config.cost if e.cost is None else e.cost
    try:
        parse_cost(cost)
    except ValueError as error:
        raise ValueError(f"{where}.{error}") from None
    return Experiment(
        name=e.name,
        weight=e.weight,
        model=model,
        searched=searched,
        shared=shared,
        data=data,
        synthetic=synthetic,
        cost=cost,
        smoothing=config.smoothing if e.smoothing is None else e.smoothing,
        kde_bandwidth=config.kde_bandwidth if e.kde_bandwidth is None else e.kde_bandwidth,
    )


def sources(
    config: PBEConfig, where: str, e: ExperimentSection, needed: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """Where each parameter of experiment ``e``'s model comes from: its fixed values,
    the searched ones and the top-level known ones (module docstring)."""
    searched_names = {p.name for p in config.parameters}
    for name, target in e.rename.items():
        if name not in needed:
            raise ValueError(
                f"{where}.rename.{name}: not a parameter of this experiment's model; it "
                f"needs {list(needed)}"
            )
        if name in e.known:
            raise ValueError(f"{where}.rename.{name}: also fixed in {where}.known; give one")
        if target not in searched_names | set(config.known):
            raise ValueError(
                f"{where}.rename.{name}: {target!r} is neither searched (parameters) nor "
                "in the top-level known"
            )
    unused = sorted(set(e.known) - set(needed))
    if unused:
        raise ValueError(
            f"{where}.known: {unused} are not used by this experiment's mechanisms; it "
            f"needs {list(needed)}"
        )
    known, searched, shared, missing = {}, {}, {}, []
    for name in needed:
        source = e.rename.get(name, name)
        if name in e.known:
            if name in searched_names:
                raise ValueError(
                    f"{where}.known.{name}: {name} is searched (parameters); an "
                    "experiment cannot fix a searched parameter"
                )
            known[name] = e.known[name]
        elif source in searched_names:
            searched[name] = source
        elif source in config.known:
            known[name], shared[name] = config.known[source], source
        else:
            missing.append(f"{where}.known.{name}")
    if missing:
        raise ValueError(
            f"{', '.join(missing)}: needed by this experiment's mechanisms; give it in "
            f"{where}.known, in the top-level known or in parameters (searched), or map "
            f"it to a fit parameter with {where}.rename (as a 1-D pure-component run of a "
            "2-D fit maps alpha to alpha_11)"
        )
    return known, searched, shared


def _wheres(runs: tuple[Experiment, ...]) -> list[str]:
    return [f"experiments[{i}]" for i in range(len(runs))]
