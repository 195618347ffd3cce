"""Agglomeration kernels, breakage rates and fragment distributions of the dPBE.

All functions are vectorised: kernels over pairs of classes, rates over classes, and over
a leading batch axis of parameter sets where a parameter enters (arrays of shape ``(B,)``
broadcast against ``(B, P)`` or ``(B, n)``).

Agglomeration: ``beta = corr_beta * alpha * shape(u, v)`` (m^3/s), with shapes

- ``constant``: 1; ``sum``: ``(u + v) / v_ref``; ``product``: ``u v / v_ref**2``
  (dimensionless, so ``corr_beta`` carries m^3/s);
- ``shear`` (orthokinetic, Smoluchowski): ``4/3 G (r_u + r_v)^3``;
- ``brownian`` (perikinetic): ``2 k T / (3 mu) (1/r_u + 1/r_v)(r_u + r_v)``
  (``corr_beta`` is then dimensionless).

``alpha`` is the collision efficiency: one number in 1-D; in 2-D ``alpha_11, alpha_12,
alpha_22`` per pair of components, weighted by the colliding particles' volume fractions.
A :class:`SizeCorrection` (Soos et al. 2007) may multiply every kernel by a
parameter-free factor of the partners' sizes.

Breakage rate ``S(v)`` (1/s), with ``V = v / v_ref`` (total volume) and ``V_c`` the volume of
component ``c`` over ``v_ref``: ``constant``: ``pl_P1``; ``linear``: ``pl_P1 V``;
``power_law``: ``pl_P1 G V^pl_P2`` and, in 2-D, ``pl_P1 G V_1^pl_P2 + pl_P3 G V_2^pl_P4``.
Three more are 2-D only (PSD_opt's 2-D ``BREAKRVAL`` 1-3): ``constant_by_component``:
``k``, and ``linear_by_component``: ``k V``, where ``k`` is ``pl_P1`` for particles of
component 1 alone, ``pl_P3`` for component 2 alone and ``(pl_P1 + pl_P3) / 2`` for mixed
ones; ``power_law_total``: ``pl_P1 G V^pl_P2`` on the total volume for every class.

``v_ref`` is an explicit reference volume (m^3), by default :data:`V_REF` (a sphere of
1 µm diameter), never the grid's: the same parameter values mean the same physics on
every grid.

Fragment distributions ``b(x)``: the number of fragments per unit ``x = w / v`` (fragment
over parent volume, ``0 < x <= 1``), each with ``∫ x b dx = 1`` (volume is conserved):

- ``binary``: ``2`` (two fragments, uniform);
- ``four_fragments``: ``12 (1 - x)^2`` (four fragments, small ones favoured);
- ``power_law``: ``(pl_v + 1) x^(pl_v - 1)``, ``(pl_v + 1) / pl_v`` fragments (many fines
  for ``pl_v < 1``, binary uniform at ``pl_v = 1``);
- ``parabolic``: ``2 (1 + parabolic_c (12 (x - 1/2)^2 - 1))``, binary, for
  ``-1/2 <= parabolic_c <= 1`` (negative: halves favoured; positive: unequal pieces);
- ``product_power_law`` (Diemer & Olson 2002's product function, PSD_opt's BREAKFVAL 3):
  ``pl_v x^(q-1) (1-x)^(q (pl_v-1) - 1) / B(q, q (pl_v-1))`` with ``q = pl_q``, ``pl_v``
  fragments, for ``pl_v > 1``, ``pl_q > 0`` (a beta density);
- ``parabolic_power_law`` (Diemer & Olson's parabolic function, PSD_opt's BREAKFVAL 5):
  ``(pl_v + 2)(pl_v + 1) x^(pl_v - 1) (1 - x)``, ``(pl_v + 2) / pl_v`` fragments.

In 2-D a fragment keeps its parent's composition, or (``fragment_composition: spread``)
is spread over both components (:mod:`.fragments2d`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import beta, betainc

AgglomerationKernel = Literal["constant", "sum", "product", "shear", "brownian"]
BreakageRate = Literal[
    "none", "constant", "linear", "power_law", "constant_by_component", "linear_by_component",
    "power_law_total",
]  # fmt: skip
TWO_D_RATES = ("constant_by_component", "linear_by_component", "power_law_total")
"""Breakage rates defined only in 2-D (PSD_opt's 2-D ``BREAKRVAL`` 1-3)."""
FragmentDistribution = Literal[
    "binary", "four_fragments", "power_law", "parabolic", "product_power_law",
    "parabolic_power_law",
]  # fmt: skip

BOLTZMANN = 1.380649e-23  # J/K
V_REF = float(np.pi / 6 * 1e-18)
"""The default reference volume of the dimensionless kernel and rate forms, m^3: a sphere
of 1 µm diameter."""


PARAMETER_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    # name: (low, high, low included, high included)
    "corr_beta": (0.0, np.inf, False, False),
    "alpha": (0.0, 1.0, True, True),
    "alpha_11": (0.0, 1.0, True, True),
    "alpha_12": (0.0, 1.0, True, True),
    "alpha_22": (0.0, 1.0, True, True),
    "G": (0.0, np.inf, False, False),
    "pl_P1": (0.0, np.inf, True, False),
    "pl_P2": (-np.inf, np.inf, False, False),
    "pl_P3": (0.0, np.inf, True, False),
    "pl_P4": (-np.inf, np.inf, False, False),
    "pl_v": (0.0, np.inf, False, False),
    "pl_q": (0.0, np.inf, False, False),
    "parabolic_c": (-0.5, 1.0, True, True),
}
"""Where each parameter means something: rates and efficiencies are not negative, a
collision efficiency is at most 1, ``pl_v > 0`` (the power-law fragments' number
``(pl_v + 1) / pl_v`` is finite), and ``-1/2 <= parabolic_c <= 1`` (every fragment share
``b(x)`` is non-negative)."""


def range_error(name: str, low: float, high: float) -> str:
    """Why values of ``name`` from ``low`` to ``high`` leave its allowed range, or ``""``."""
    if name not in PARAMETER_RANGES:
        return ""
    lo, hi, lo_in, hi_in = PARAMETER_RANGES[name]
    below = low < lo or (low == lo and not lo_in)
    above = high > hi or (high == hi and not hi_in)
    if not (below or above) and np.isfinite(low) and np.isfinite(high):
        return ""
    left, right = ("[" if lo_in else "("), ("]" if hi_in else ")")
    return f"{name} must lie in {left}{lo:g}, {hi:g}{right}"


def kernel_parameters(kernel: AgglomerationKernel | None, dim: int) -> tuple[str, ...]:
    """Parameter names an agglomeration kernel needs (none without agglomeration)."""
    if kernel is None:
        return ()
    alphas = ("alpha",) if dim == 1 else ("alpha_11", "alpha_12", "alpha_22")
    shear = ("G",) if kernel == "shear" else ()
    return ("corr_beta", *alphas, *shear)


def rate_parameters(rate: BreakageRate, dim: int) -> tuple[str, ...]:
    """Parameter names a breakage rate needs."""
    if rate == "none":
        return ()
    if rate in ("constant", "linear"):
        return ("pl_P1",)
    if rate in ("constant_by_component", "linear_by_component"):
        return ("pl_P1", "pl_P3")
    if rate == "power_law_total":
        return ("pl_P1", "pl_P2", "G")
    return ("pl_P1", "pl_P2", "G") + (("pl_P3", "pl_P4") if dim == 2 else ())


def rate_dimension_error(rate: BreakageRate, dim: int) -> str:
    """Why ``rate`` cannot be used in ``dim`` dimensions, or ``""``."""
    if dim != 1 or rate not in TWO_D_RATES:
        return ""
    if rate == "power_law_total":
        return f"breakage: {rate} is 2-D only; in 1-D, power_law is already on the total volume"
    plain = rate.removesuffix("_by_component")
    return f"breakage: {rate} is 2-D only (a rate per component); in 1-D use {plain}"


def fragment_parameters(fragments: FragmentDistribution, rate: BreakageRate) -> tuple[str, ...]:
    """Parameter names a fragment distribution needs (none when nothing breaks)."""
    if rate == "none":
        return ()
    return {
        "power_law": ("pl_v",),
        "parabolic": ("parabolic_c",),
        "product_power_law": ("pl_v", "pl_q"),
        "parabolic_power_law": ("pl_v",),
    }.get(fragments, ())


def fragment_range_error(fragments: FragmentDistribution, name: str, low: float) -> str:
    """A fragment distribution's own limit beyond :data:`PARAMETER_RANGES`, or ``""``:
    the product power law is a beta density only for ``pl_v > 1``."""
    if fragments == "product_power_law" and name == "pl_v" and low <= 1.0:
        return "pl_v must be > 1 for fragments: product_power_law (pl_v is the fragment count)"
    return ""


def parameter_names(
    agglomeration: AgglomerationKernel | None,
    breakage: BreakageRate,
    fragments: FragmentDistribution,
    dim: int,
) -> tuple[str, ...]:
    """Every parameter these mechanisms need, in a fixed order."""
    names = (
        kernel_parameters(agglomeration, dim)
        + rate_parameters(breakage, dim)
        + fragment_parameters(fragments, breakage)
    )
    return tuple(dict.fromkeys(names))


def kernel_shape(
    kernel: AgglomerationKernel,
    u: np.ndarray,
    v: np.ndarray,
    v_ref: float,
    temperature_k: float,
    viscosity_pa_s: float,
) -> np.ndarray:
    """The parameter-free part of the kernel for pairs of total volumes ``u, v`` (m^3).

    ``v_ref`` (m^3) makes the ``sum`` and ``product`` forms dimensionless. For ``shear``
    the shear rate ``G`` is left out (it is a parameter): multiply by it.
    """
    if kernel == "constant":
        return np.ones_like(u)
    if kernel == "sum":
        return (u + v) / v_ref
    if kernel == "product":
        return u * v / v_ref**2
    ru = np.cbrt(3.0 * u / (4.0 * np.pi))
    rv = np.cbrt(3.0 * v / (4.0 * np.pi))
    if kernel == "shear":
        return 4.0 / 3.0 * (ru + rv) ** 3
    if kernel == "brownian":
        return (
            2.0 * BOLTZMANN * temperature_k / (3.0 * viscosity_pa_s) * (1 / ru + 1 / rv) * (ru + rv)
        )
    raise ValueError(f"unknown agglomeration kernel {kernel!r}")


SOOS_X_SEL = 0.310601
SOOS_Y_SEL = 1.06168
"""PSD_opt's constants of the Soos et al. (2007) size correction (dimensionless)."""


@dataclass(frozen=True)
class SizeCorrection:
    """Soos et al. (2007)'s size correction of the collision efficiency (developed from
    Selomulya et al. 2003; PSD_opt's ``SIZEEVAL: 2``), a factor on every kernel::

        corr = exp(-x_sel (1 - lam)^2) / (d_u d_v / d_ref^2)^y_sel,
        lam = min(d_u, d_v) / max(d_u, d_v)

    ``d_u, d_v`` are the partners' volume-equivalent diameters (m; PSD_opt writes the same
    with radii), ``d_ref`` (m) a fixed reference diameter, never the grid's (PSD_opt takes
    its grid's first radius): equal partners of diameter ``d_ref`` are not corrected.
    ``x_sel`` weighs unequal sizes, ``y_sel`` large ones; both dimensionless, ``>= 0``.
    """

    x_sel: float = SOOS_X_SEL
    y_sel: float = SOOS_Y_SEL
    d_ref: float = 1e-6

    def __post_init__(self) -> None:
        if not (math.isfinite(self.x_sel) and self.x_sel >= 0):
            raise ValueError(f"x_sel must be finite and >= 0, got {self.x_sel}")
        if not (math.isfinite(self.y_sel) and self.y_sel >= 0):
            raise ValueError(f"y_sel must be finite and >= 0, got {self.y_sel}")
        if not (math.isfinite(self.d_ref) and self.d_ref > 0):
            raise ValueError(f"d_ref must be finite and > 0 (m), got {self.d_ref}")

    def factor(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The correction for pairs of total volumes ``u, v`` (m^3, both ``> 0``)."""
        du = np.cbrt(6.0 / np.pi * np.asarray(u, dtype=float))
        dv = np.cbrt(6.0 / np.pi * np.asarray(v, dtype=float))
        lam = np.minimum(du, dv) / np.maximum(du, dv)
        return np.exp(-self.x_sel * (1.0 - lam) ** 2) / (du * dv / self.d_ref**2) ** self.y_sel


def efficiency_weights(vol_i: np.ndarray, vol_j: np.ndarray) -> np.ndarray:
    """Weights of ``(alpha_11, alpha_12, alpha_22)`` for 2-D pairs, ``(P, 3)``.

    ``vol_i, vol_j`` are the component volumes of the two partners, ``(P, 2)``; the
    efficiency of a pair is ``sum_ab phi_a(i) phi_b(j) alpha_ab`` over volume fractions.
    """
    fi = vol_i / vol_i.sum(axis=1, keepdims=True)
    fj = vol_j / vol_j.sum(axis=1, keepdims=True)
    w11 = fi[:, 0] * fj[:, 0]
    w22 = fi[:, 1] * fj[:, 1]
    return np.stack([w11, 1.0 - w11 - w22, w22], axis=1)


def parameter_array(values: object) -> np.ndarray:
    """Parameter values as a float array, or a complex one where they are complex: the
    complex-step derivatives of :mod:`.gradient` pass through every kernel that allows it
    (``product_power_law``'s incomplete beta function does not, and says so)."""
    a = np.asarray(values)
    return a.astype(complex if np.iscomplexobj(a) else float)


def breakage_rate(
    rate: BreakageRate, volumes: np.ndarray, v_ref: float, params: dict[str, np.ndarray]
) -> np.ndarray:
    """Breakage rate (1/s) of every class, ``(B, n)`` (``rate`` is not ``"none"``).

    ``volumes`` are the classes' component volumes ``(n, dim)`` (m^3), ``v_ref`` the
    reference volume (m^3), ``params`` arrays of shape ``(B,)``. The zero-volume fines
    class has rate 0.
    """
    if error := rate_dimension_error(rate, volumes.shape[1]):
        raise ValueError(error)
    total = volumes.sum(axis=1)
    V = (total / v_ref)[None, :]
    p = {k: parameter_array(v)[:, None] for k, v in params.items()}
    if rate == "constant":
        return np.broadcast_to(p["pl_P1"], (p["pl_P1"].shape[0], len(total))) * (V > 0)
    if rate == "linear":
        return p["pl_P1"] * V
    if rate in ("constant_by_component", "linear_by_component"):
        alone_1 = (volumes[:, 1] == 0)[None, :]
        alone_2 = (volumes[:, 0] == 0)[None, :]
        mixed = (p["pl_P1"] + p["pl_P3"]) / 2
        k = np.where(alone_1, p["pl_P1"], np.where(alone_2, p["pl_P3"], mixed))
        return k * (V > 0) if rate == "constant_by_component" else k * V
    if volumes.shape[1] == 1 or rate == "power_law_total":
        with np.errstate(divide="ignore"):
            return p["pl_P1"] * p["G"] * np.where(V > 0, V ** p["pl_P2"], 0.0)
    V1 = (volumes[:, 0] / v_ref)[None, :]
    V2 = (volumes[:, 1] / v_ref)[None, :]
    with np.errstate(divide="ignore"):
        first = np.where(V1 > 0, V1 ** p["pl_P2"], 0.0)
        second = np.where(V2 > 0, V2 ** p["pl_P4"], 0.0)
    return p["G"] * (p["pl_P1"] * first + p["pl_P3"] * second)


def fragment_moments(
    fragments: FragmentDistribution, x: np.ndarray, params: dict[str, np.ndarray]
) -> np.ndarray:
    """Antiderivatives ``∫_0^x s^m b(s) ds`` for ``m = 0, 1, 2``, shape ``(3, B, *x.shape)``.

    ``x`` holds fragment-to-parent volume ratios in ``[0, 1]``; parameters are ``(B,)``.
    """
    x = np.asarray(x, dtype=float)[None, ...]
    if fragments in ("binary", "four_fragments"):
        m = 2 if fragments == "binary" else 4
        y = 1.0 - x
        # ∫ s^k m (m-1) (1-s)^(m-2) ds, written in y = 1 - s and shifted to vanish at 0
        p0 = m * (1.0 - y ** (m - 1))
        p1 = -m * y ** (m - 1) + (m - 1) * y**m + 1.0
        p2 = -m * (m - 1) * (y ** (m - 1) / (m - 1) - 2 * y**m / m + y ** (m + 1) / (m + 1)) + m * (
            m - 1
        ) * (1 / (m - 1) - 2 / m + 1 / (m + 1))
        shape = (1, *x.shape[1:])
        return np.stack([np.broadcast_to(p, shape) for p in (p0, p1, p2)])
    if fragments == "power_law":
        nu = parameter_array(params["pl_v"]).reshape((-1,) + (1,) * (x.ndim - 1))
        return np.stack(
            [
                (nu + 1) / nu * x**nu,
                x ** (nu + 1),
                (nu + 1) / (nu + 2) * x ** (nu + 2),
            ]
        )
    if fragments == "parabolic_power_law":
        nu = parameter_array(params["pl_v"]).reshape((-1,) + (1,) * (x.ndim - 1))
        k = (nu + 2) * (nu + 1)
        return np.stack(
            [k * (x ** (nu + m) / (nu + m) - x ** (nu + m + 1) / (nu + m + 1)) for m in range(3)]
        )
    if fragments == "product_power_law":
        shape = (-1,) + (1,) * (x.ndim - 1)
        nu = parameter_array(params["pl_v"]).reshape(shape)
        q = parameter_array(params["pl_q"]).reshape(shape)
        a, b = q, q * (nu - 1)
        # ∫_0^x s^m nu s^(a-1) (1-s)^(b-1) / B(a, b) ds = nu I_x(a+m, b) B(a+m, b) / B(a, b)
        return np.stack([nu * betainc(a + m, b, x) * beta(a + m, b) / beta(a, b) for m in range(3)])
    if fragments == "parabolic":
        c = parameter_array(params["parabolic_c"]).reshape((-1,) + (1,) * (x.ndim - 1))
        z, z0 = x - 0.5, -0.5
        p0 = 2 * (1 - c) * x + 8 * c * (z**3 - z0**3)
        p1 = (1 - c) * x**2 + 6 * c * (z**4 - z0**4) + 4 * c * (z**3 - z0**3)
        p2 = 2 * (1 - c) * x**3 / 3 + 24 * c * (
            (z**5 - z0**5) / 5 + (z**4 - z0**4) / 4 + (z**3 - z0**3) / 12
        )
        return np.stack([p0, p1, p2])
    raise ValueError(f"unknown fragment distribution {fragments!r}")


FragmentComposition = Literal["parent", "spread"]
"""In 2-D, whether a fragment keeps its parent's composition or is spread over both
components (:mod:`.fragments2d`)."""
SPREAD_FRAGMENTS: tuple[FragmentDistribution, ...] = (
    "binary",
    "power_law",
    "parabolic_power_law",
)


def spread_error(dim: int, fragments: FragmentDistribution) -> str:
    """Why fragments cannot be spread over both components here, or ``""``."""
    if dim != 2:
        return "fragment_composition: spread is for 2-D runs (1-D fragments have one component)"
    if fragments not in SPREAD_FRAGMENTS:
        return (
            f"fragment_composition: spread takes fragments {', '.join(SPREAD_FRAGMENTS)} "
            f"(PSD_opt's 2-D BREAKFVAL 2, 4, 5), not {fragments!r}"
        )
    return ""
