"""Genetic algorithm on DEAP: real-valued genes in the unit cube, driven by ask/tell.

DEAP's ``eaSimple`` evaluates with ``toolbox.map(toolbox.evaluate, invalid_ind)``, where
``map`` is the parallel map the user injected. Ask/tell turns that injection inside out:
:meth:`GeneticAlgorithm.ask` returns the individuals whose fitness is invalid (what
``toolbox.map`` would have been given) as a :class:`~hpcopt.methods.base.Batch`, the
driver evaluates it through its engine, and :meth:`GeneticAlgorithm.tell` assigns the
fitnesses and runs the rest of ``eaSimple``'s loop: hall-of-fame update, tournament
selection, ``varAnd`` (blend crossover, Gaussian mutation, genes clamped to ``[0, 1]``)
and the hall of fame joining the offspring (elitism).

Individuals that violate the constraints, and evaluations that failed, get the
``penalty`` loss; the former are never asked. DEAP's operators draw from Python's global
``random``; the GA swaps its own stream in around them and keeps it in its state, so a
run is reproducible, resumable bit for bit, and leaves the caller's ``random`` alone.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
from deap import algorithms, base, tools
from pydantic import Field, PositiveFloat, model_validator

from hpcopt.methods.base import Batch, Method, MethodConfig


class GAConfig(MethodConfig):
    """``method: {name: ga, population: 50, generations: 40, sigma: {x0: 0.2, default: 0.1}}``.

    ``generations`` is the budget, generation 0 being the random initial population.
    ``sigma`` is the standard deviation of the Gaussian mutation in unit-cube units, one
    value or ``{name: sigma, default: sigma}``; it is multiplied by ``sigma_decay`` every
    generation. ``indpb`` is the probability that a mutation touches each gene,
    ``blend_alpha`` the extent of the blend crossover, ``tournament`` the tournament size
    and ``elite`` the size of the hall of fame carried into every new generation.
    ``penalty`` is the loss of infeasible individuals and failed evaluations: it must be
    worse than any real loss.
    """

    name: Literal["ga"]
    population: int = Field(50, ge=2)
    generations: int = Field(50, ge=1)
    cxpb: float = Field(0.7, ge=0.0, le=1.0)
    mutpb: float = Field(0.3, ge=0.0, le=1.0)
    blend_alpha: float = Field(0.5, ge=0.0)
    sigma: PositiveFloat | dict[str, PositiveFloat] = 0.1
    indpb: float = Field(0.5, ge=0.0, le=1.0)
    sigma_decay: float = Field(1.0, gt=0.0, le=1.0)
    tournament: int = Field(3, ge=1)
    elite: int = Field(1, ge=1)
    penalty: float = Field(1e12, allow_inf_nan=False)

    @model_validator(mode="after")
    def _elite_fits(self) -> GAConfig:
        if self.elite >= self.population:
            raise ValueError(
                f"elite ({self.elite}) must be smaller than population ({self.population})"
            )
        return self


class FitnessMin(base.Fitness):
    """A single loss, minimised (module-level so DEAP's global ``creator`` stays clean)."""

    weights = (-1.0,)


class Individual(list):
    """Genes in ``[0, 1]``, one per parameter in space order, with a :class:`FitnessMin`."""

    def __init__(self, genes: Iterable[float] = ()) -> None:
        super().__init__(genes)
        self.fitness = FitnessMin()


def _clone(ind: Individual) -> Individual:
    """What DEAP's default ``clone`` (``copy.deepcopy``) gives, at about a quarter of its
    cost (10 against 34 us a clone, profiled; a GA of population 1,000 spent a quarter of
    the driver's time in ``deepcopy``)."""
    twin = Individual(ind)
    twin.fitness.wvalues = ind.fitness.wvalues
    return twin


def _clamped(operator: Callable[..., tuple[Individual, ...]]) -> Callable[..., tuple]:
    """Decorate a DEAP variation operator so that the genes it returns stay in ``[0, 1]``."""

    @functools.wraps(operator)
    def wrapper(*args: Any, **kwargs: Any) -> tuple[Individual, ...]:
        children = operator(*args, **kwargs)
        for child in children:
            child[:] = [min(max(gene, 0.0), 1.0) for gene in child]
        return children

    return wrapper


class GeneticAlgorithm(Method[GAConfig]):
    """``eaSimple`` with elitism over the unit cube, one generation per batch.

    ``state`` holds ``generation``; ``population`` ``(population, d)`` and its
    ``losses`` ``(population,)`` (NaN while a fitness is invalid, i.e. still to be asked);
    ``hall_of_fame`` with ``genes`` ``(k, d)`` and ``losses`` ``(k,)``, best first; and
    ``random``, the trial's own Python ``random`` state.
    """

    def setup(self) -> None:
        config, space = self.config, self.space
        self._sigma = space.per_param(config.sigma, "method.sigma")
        self.toolbox = base.Toolbox()
        self.toolbox.register("gene", random.random)
        self.toolbox.register(
            "individual", tools.initRepeat, Individual, self.toolbox.gene, n=space.dim
        )
        self.toolbox.register("population", tools.initRepeat, list, self.toolbox.individual)
        self.toolbox.register("mate", tools.cxBlend, alpha=config.blend_alpha)
        self.toolbox.decorate("mate", _clamped)
        self.toolbox.register("select", tools.selTournament, tournsize=config.tournament)
        self.toolbox.register("clone", _clone)
        self.state = {
            "generation": 0,
            "random": _plain_random(random.Random(self.seed).getstate()),
        }
        with self._own_random():
            population = self.toolbox.population(n=config.population)
        self._settle(population, tools.HallOfFame(config.elite))

    def ask(self) -> Batch:
        """The current generation's individuals with an invalid fitness, ``(n, d)``."""
        if self.done:
            raise RuntimeError("the GA has run all its generations; nothing left to ask")
        pending = np.isnan(self.state["losses"])
        return Batch(self.state["population"][pending].copy(), iteration=self.state["generation"])

    def tell(self, batch: Batch, losses: np.ndarray, gradients: np.ndarray | None = None) -> None:
        """Losses ``(n,)`` of the batch just asked (NaN gets the penalty), then evolve.

        ``gradients`` are not used.
        """
        if self.done:
            raise RuntimeError("the GA has run all its generations; nothing left to tell")
        population = self._population()
        invalid = [ind for ind in population if not ind.fitness.valid]
        losses = np.asarray(losses, dtype=float)
        if batch.iteration != self.state["generation"] or losses.shape != (len(invalid),):
            raise ValueError(
                f"tell expects {len(invalid)} losses for generation {self.state['generation']}, "
                f"got {losses.shape} for generation {batch.iteration}"
            )
        for ind, loss in zip(invalid, losses):
            ind.fitness.values = (self.config.penalty if np.isnan(loss) else float(loss),)
        self._settle(population, self._hall_of_fame())

    @property
    def done(self) -> bool:
        """True once the last generation is fully evaluated."""
        last = self.state["generation"] == self.config.generations - 1
        return last and not np.isnan(self.state["losses"]).any()

    @property
    def best(self) -> tuple[np.ndarray, float] | None:
        """The hall of fame's first individual (unit cube) and its loss; None before any."""
        hof = self.state["hall_of_fame"]
        if not len(hof["losses"]):
            return None
        return hof["genes"][0].copy(), float(hof["losses"][0])

    @property
    def expected_evaluations(self) -> int:
        """An upper bound: the initial population, then every offspring but the elite.

        Fewer run when offspring come out of ``varAnd`` unchanged or are infeasible.
        """
        c = self.config
        return c.population + (c.generations - 1) * (c.population - c.elite)

    def _settle(self, population: list[Individual], hof: tools.HallOfFame) -> None:
        """Penalise infeasible newcomers and close every generation with nothing left to
        evaluate, until one needs evaluations or the budget is spent; then save."""
        while True:
            invalid = [ind for ind in population if not ind.fitness.valid]
            if invalid:
                for ind, ok in zip(invalid, self.feasible(np.array(invalid))):
                    if not ok:
                        ind.fitness.values = (self.config.penalty,)
            if not all(ind.fitness.valid for ind in population):
                break
            hof.update(population)
            if self.state["generation"] == self.config.generations - 1:
                break
            self.state["generation"] += 1
            with self._own_random():
                population = self._next_generation(population, hof)
        self._save(population, hof)

    def _next_generation(
        self, population: list[Individual], hof: tools.HallOfFame
    ) -> list[Individual]:
        """``eaSimple``'s loop body; the hall of fame takes the last places (elitism)."""
        c = self.config
        sigma = self._sigma * c.sigma_decay ** self.state["generation"]
        self.toolbox.register(
            "mutate", tools.mutGaussian, mu=0.0, sigma=sigma.tolist(), indpb=c.indpb
        )
        self.toolbox.decorate("mutate", _clamped)
        offspring = self.toolbox.select(population, len(population) - len(hof))
        offspring = algorithms.varAnd(offspring, self.toolbox, c.cxpb, c.mutpb)
        return offspring + [self.toolbox.clone(ind) for ind in hof]

    @contextmanager
    def _own_random(self) -> Iterator[None]:
        """Run DEAP's operators on this trial's ``random`` stream; restore the caller's."""
        caller = random.getstate()
        random.setstate(_python_random(self.state["random"]))
        try:
            yield
            self.state["random"] = _plain_random(random.getstate())
        finally:
            random.setstate(caller)

    def _population(self) -> list[Individual]:
        return _individuals(self.state["population"], self.state["losses"])

    def _hall_of_fame(self) -> tools.HallOfFame:
        hof = tools.HallOfFame(self.config.elite)
        saved = self.state["hall_of_fame"]
        # Inserting worst first puts equal fitnesses back in their saved order.
        for ind in reversed(_individuals(saved["genes"], saved["losses"])):
            hof.insert(ind)
        return hof

    def _save(self, population: list[Individual], hof: tools.HallOfFame) -> None:
        self.state["population"], self.state["losses"] = _arrays(population, self.space.dim)
        genes, losses = _arrays(list(hof), self.space.dim)
        self.state["hall_of_fame"] = {"genes": genes, "losses": losses}


def _individuals(genes: np.ndarray, losses: np.ndarray) -> list[Individual]:
    """Rows of ``genes`` as individuals; a NaN loss leaves the fitness invalid."""
    out = []
    for row, loss in zip(genes, losses):
        ind = Individual(row.tolist())
        if not np.isnan(loss):
            ind.fitness.values = (float(loss),)
        out.append(ind)
    return out


def _arrays(individuals: list[Individual], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Genes ``(n, dim)`` and losses ``(n,)`` (NaN for an invalid fitness)."""
    genes = np.array([list(ind) for ind in individuals], dtype=float).reshape(-1, dim)
    losses = np.array(
        [ind.fitness.values[0] if ind.fitness.valid else np.nan for ind in individuals],
        dtype=float,
    )
    return genes, losses


def _plain_random(state: tuple) -> dict[str, Any]:
    """``random.getstate()`` as plain data (the Mersenne Twister words as ``uint32``)."""
    version, words, gauss_next = state
    return {"version": version, "words": np.array(words, dtype=np.uint32), "gauss_next": gauss_next}


def _python_random(plain: dict[str, Any]) -> tuple:
    """Inverse of :func:`_plain_random`, for ``random.setstate``."""
    return plain["version"], tuple(int(w) for w in plain["words"]), plain["gauss_next"]
