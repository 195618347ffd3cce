"""Parameter spaces: named bounds, optional log scale, and the unit-cube encoding methods use.

Every method searches the unit cube ``[0, 1]^d``; a :class:`Space` maps it to the problem's
natural units (linearly, or geometrically for ``log`` parameters) and back.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


def bounds_error(low: float, high: float, log: bool = False, periodic: bool = False) -> str:
    """Why ``[low, high]`` cannot bound a parameter, or ``""``: the checks of a
    :class:`Param`, for configs to state under their own key.

    Both must be finite with ``low < high``, and the width ``high - low`` must be a float
    too: points in between are ``low + u * (high - low)``. A ``log`` one needs ``low > 0``
    and cannot be ``periodic``.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"low and high must be finite numbers, got [{low}, {high}]"
    if not low < high:
        return f"low ({low}) must be < high ({high})"
    if not math.isfinite(high - low):
        return (
            f"the width high - low of [{low:g}, {high:g}] is beyond the largest float "
            f"({sys.float_info.max:.3g}); narrow the bounds"
        )
    if log and low <= 0:
        return f"log scale needs low > 0, got {low}"
    if log and periodic:
        return "cannot be both log and periodic"
    return ""


@dataclass(frozen=True)
class Param:
    """One named parameter with finite bounds ``low < high`` in natural units (see
    :func:`bounds_error`). A ``periodic`` one (an angle) has ``high`` the same as
    ``low``: grids leave ``high`` out."""

    name: str
    low: float
    high: float
    log: bool = False
    periodic: bool = False

    def __post_init__(self) -> None:
        error = bounds_error(self.low, self.high, self.log, self.periodic)
        if error:
            raise ValueError(f"parameter {self.name!r}: {error}")


class Space:
    """An ordered tuple of :class:`Param` with vectorised encode/decode.

    Arrays of points have shape ``(n, d)`` (or ``(d,)`` for one point); column ``j`` is
    parameter ``params[j]``.
    """

    def __init__(self, params: Iterable[Param]) -> None:
        self.params = tuple(params)
        names = [p.name for p in self.params]
        if not names:
            raise ValueError("a space needs at least one parameter")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names in {names}")
        self.names = tuple(names)
        self.dim = len(names)
        self._log = np.array([p.log for p in self.params])
        self.periodic = np.array([p.periodic for p in self.params])
        self.low = np.array([p.low for p in self.params], dtype=float)
        self.high = np.array([p.high for p in self.params], dtype=float)
        self._a = np.where(self._log, np.log(np.where(self._log, self.low, 1.0)), self.low)
        self._b = np.where(self._log, np.log(np.where(self._log, self.high, 1.0)), self.high)

    def __repr__(self) -> str:
        return f"Space({list(self.params)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.params == other.params

    def __hash__(self) -> int:
        return hash(self.params)

    def decode(self, u: np.ndarray) -> np.ndarray:
        """Unit-cube points -> natural units; ``u`` is clipped to ``[0, 1]`` first."""
        u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
        t = self._a + u * (self._b - self._a)
        x = np.where(self._log, np.exp(t), t)
        # exp/log round-off must neither leave the box the user wrote down nor miss its
        # corners: the ends of the cube are the bounds exactly.
        x = np.where(u == 0.0, self.low, np.where(u == 1.0, self.high, x))
        return np.clip(x, self.low, self.high)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Natural units -> unit cube (values outside the bounds are clamped first)."""
        x = self.clamp(x)
        t = np.where(self._log, np.log(np.where(self._log, x, 1.0)), x)
        return np.clip((t - self._a) / (self._b - self._a), 0.0, 1.0)

    def clamp(self, x: np.ndarray) -> np.ndarray:
        """Clip natural-unit points to the bounds."""
        return np.clip(np.asarray(x, dtype=float), self.low, self.high)

    def gradient_to_unit(self, x: np.ndarray, grad_x: np.ndarray) -> np.ndarray:
        """Chain rule: ``d f / d u = d f / d x * d x / d u`` at natural-unit points ``x``."""
        x = np.asarray(x, dtype=float)
        dx_du = np.where(self._log, x * (self._b - self._a), self._b - self._a)
        return np.asarray(grad_x, dtype=float) * dx_du

    def gradient_from_unit(self, x: np.ndarray, grad_u: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`gradient_to_unit`: ``d f / d x`` from ``d f / d u``."""
        x = np.asarray(x, dtype=float)
        dx_du = np.where(self._log, x * (self._b - self._a), self._b - self._a)
        return np.asarray(grad_u, dtype=float) / dx_du

    def indices(self, names: Iterable[str]) -> list[int]:
        """Column indices of the named parameters (``ValueError`` naming the unknown one)."""
        out = []
        for name in names:
            if name not in self.names:
                raise ValueError(f"unknown parameter {name!r}; the space has {list(self.names)}")
            out.append(self.names.index(name))
        return out

    def as_dict(self, x: np.ndarray) -> dict[str, float]:
        """One natural-unit point as ``{name: value}``."""
        return {name: float(v) for name, v in zip(self.names, np.asarray(x, dtype=float))}

    def per_param(self, value: float | Mapping[str, float], what: str) -> np.ndarray:
        """Expand a scalar or a ``{name: value}`` mapping (others get the default under key
        ``"default"`` or ``ValueError``) into one value per parameter: learning rates, sigmas."""
        if not isinstance(value, Mapping):
            return np.full(self.dim, float(value))
        unknown = set(value) - set(self.names) - {"default"}
        if unknown:
            raise ValueError(
                f"{what}: unknown parameter(s) {sorted(unknown)}; the space has {list(self.names)}"
            )
        if "default" not in value and set(value) != set(self.names):
            missing = sorted(set(self.names) - set(value))
            raise ValueError(f"{what}: no value for {missing} and no 'default'")
        return np.array([float(value.get(n, value.get("default", np.nan))) for n in self.names])
