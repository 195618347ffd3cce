"""The record of one evaluation, shared by problems, engines and the store."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Direction = Literal["minimize", "maximize"]


@dataclass
class Evaluation:
    """The outcome of evaluating one point.

    ``value`` is the objective in the problem's own units and direction (NaN when the
    evaluation failed, with ``error`` saying why). ``gradient`` is ``d value / d x`` in
    natural units, shape ``(d,)``, when it was asked for and the problem has one.
    ``extras`` are named scalars or fixed-shape arrays recorded beside the value.
    ``raised`` marks a failure that came from an exception (an engine may retry those),
    as opposed to a result the problem itself declared failed (a diverging solve).
    ``warning`` says that a successful value is less trustworthy than usual, and why.
    ``wall_time_s``, ``worker``, ``node`` and ``gpu_ids`` are filled in by whoever ran it.
    """

    value: float
    extras: dict[str, Any] = field(default_factory=dict)
    gradient: np.ndarray | None = None
    error: str = ""
    raised: bool = False
    warning: str = ""
    wall_time_s: float = 0.0
    worker: str = ""
    node: str = ""
    gpu_ids: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @classmethod
    def failed(cls, error: str, raised: bool = False) -> Evaluation:
        """A failed evaluation: NaN value and the reason."""
        return cls(value=float("nan"), error=error, raised=raised)


def describe_exception(exc: BaseException) -> str:
    """A one-paragraph error text for the store: type, message and the innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
