"""An independent reference of PSD_opt's 1-D dPBE on its geometric grid (``disc: 'geo'``).

Written from the formulas of PSD_opt (github.com/pdhs-group/PSD_opt, ``optframework``), not
from its code, so that hpcopt's solver can be checked against what a PSD_opt user gets. Plain
numpy/scipy, clarity over speed. Names and units are PSD_opt's: volumes in m^3, radii in m,
``N`` in particles per ``V_unit``, kernels in PSD_opt's keyword names (``COLEVAL``, ``pl_v``...).

Which PSD_opt function each piece follows:

- :func:`geo_grid` -- ``DPBECore.calc_R`` (1-D, geo): edges ``V_e[0] = -v01``,
  ``V_e[i+1] = S**i v01`` with ``v01 = 4/3 pi R01**3``; pivots ``V[i]`` are the cell middles,
  so ``V[0] = 0`` is a class of zero volume and the primary particle is
  ``V[1] = (1+S)/2 v01``; ``R[0] = 0``.
- :func:`agglomeration_limit` -- ``calc_R``'s ``aggl_crit_id``: ``aggl_crit + 1`` when that
  lies in ``(0, NS)``, else ``NS - 1``; PSD_opt's default ``aggl_crit = 1e3`` gives ``NS-1``.
- :func:`collision_frequency`, :func:`agglomeration_matrix` -- ``jit_kernel_agg.calc_beta``
  and ``calc_F_M_1D_jit`` (what ``calc_F_M`` runs, ``JIT_FM = True`` by default), divided by
  ``V_unit`` as ``calc_F_M`` does. ``F_M`` is ``(NS-1, NS-1)``; row and column 0 are 0.
  ``alpha_prim`` is given, as PSD_opt's optimiser gives it (``calc_alpha_prim``'s DLVO
  integral is not reproduced).
- :func:`breakage_rates` -- ``jit_kernel_break.calc_B_R_1d_jit``; class 0 has rate 0.
- :func:`fragment_density`, :func:`fragment_integrals` -- ``breakage_func_1d`` and the cells
  of ``calc_init_B_F_1D_quad`` (``V_e[0]`` taken as 0, the parent's own cell integrated up
  to its pivot); here from closed-form antiderivatives instead of ``quad``.
- :meth:`Model.cell_births`, :func:`place_births` -- ``jit_dpbe_rhs.calc_1d_agglomeration``,
  ``calc_1d_breakage`` and the pivot assignment of ``get_dNdt_1d_geo`` (``lam``,
  ``heaviside(0) = 1/2``); :meth:`Model.dNdt` is ``get_dNdt_1d_geo``.
- :func:`initial_state` -- ``init_N`` with ``USE_PSD = False``.
- :func:`solve_psd_opt` -- ``solve_PBE`` with ``solve_ivp``, but at tight tolerances.

PSD_opt behaviours reproduced here that a migrating user may not expect. Figures were
measured against PSD_opt's own ``DPBECore`` and numba kernels (numba 0.68) on nine cases:

1. ``dNdt[0] = 0.0`` in ``get_dNdt_1d_geo`` comes before ``dNdt = B + D`` and so does
   nothing. Class 0 (volume 0) receives the share that placement gives it of the births in
   cell 0, i.e. of fragments smaller than ``v01``: particles that count but carry no volume.
   It is inert (``F_M`` row 0 and ``B_R[0]`` are 0), so it does not feed back, but once class
   1 breaks it grows without bound: 98.6 % of all particles after 20 s in a breakage case,
   0.2 % in PSD_opt's example config. PSD_opt's post-processing (``return_N_t``,
   ``calc_mom_t``, ``return_distribution``) zeroes or drops class 0, so compare ``N[:, 1:]``;
   pivots ``V[1:]`` are geometric, ``(1+S)/2 v01 S**k``.
2. The agglomeration cut-off: a pair ``(i, j)`` agglomerates only if ``V[i] + V[j]`` falls in
   a cell ``1 <= e < agg_crit``, so the cut is the cell edge ``V_e[agg_crit]``; the code's
   ``>= V[agg_crit]`` test never binds. A pair beyond it does not agglomerate at all (no
   birth, no death), and class ``NS-1`` never agglomerates (``F_M`` has ``NS-1`` rows).
3. ``COLEVAL = 1`` in ``calc_beta`` is ``CORR_BETA G (r1+r2)**3``, without the 2.3 of the
   non-JIT branch of ``calc_F_M``; ``SIZEEVAL = 2`` in the JIT kernel divides by ``R[1]**2``
   (the primary particle), the non-JIT branch by ``R01**2``. PSD_opt runs the JIT one.
4. ``BREAKFVAL = 1`` (``4/y``, "four fragments, hypervolume conserved") is meant for 2-D; in
   1-D each break makes 4 fragments of total volume ``2 y`` (measured in PSD_opt: 4.000000000
   and 2.000000000 for every parent), so at rate 1/s the volume grows as ``e**t``.
   ``BREAKRVAL = 4`` equals ``BREAKRVAL = 3`` in 1-D.
5. Placement at the grid's ends uses ``V_p_ex``, the pivots with a pseudo-pivot ``-1`` (in
   the grid's absolute units) at index ``NS``, and so at index ``-1``: a cell mean above the
   last pivot, or below 0, would be weighted against it and its remainder lost. Physical
   states never put one there.
6. ``solve_PBE`` integrates with ``Radau, rtol = 1e-1, first_step = 0.1`` and scipy's default
   ``atol = 1e-6``; its N(t) differs from a tight solve by 1.7e-7 to 1.1e-3 of max N in the
   nine cases. An end time below 0.1 s makes ``first_step`` invalid, and any exception
   returns ``N = -1`` everywhere.
7. ``calc_init_B_F_1D_quad`` calls ``quad`` with its default ``epsabs = 1.49e-8``, far above
   ``intx_B_F`` in SI units (~1e-18 m^3), so ``quad`` stops after its first 21-point
   Gauss-Kronrod pass: exact for polynomial densities, not for singular ones. With
   ``BREAKFVAL 4, pl_v = 0.6`` the fragment volume of a parent is off by up to 1.8e-6 of it,
   PSD_opt's total volume drifts 4e-8 (7e-7 with ``BREAKFVAL 3, pl_q = 1.5``) and its N(t)
   differs from this reference's (exact antiderivatives) by up to 1.1e-6 of max N.
8. In 2-D (not reproduced here) ``breakage_func_2d`` with ``BREAKFVAL = 4`` divides by
   ``y1 * y3`` twice: its fragment count is ``(v+1)/v / (y1 y3)`` (measured 3, 0.75 and 3e12
   for ``y1 = y3 = 1, 2, 1e-6``), not ``(v+1)/v``; ``BREAKFVAL = 5`` is right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy.integrate import solve_ivp
from scipy.special import betainc

PROCESSES = ("agglomeration", "breakage", "mix")
K_T = 1.38e-23 * 293  # PSD_opt's k T in calc_beta [J]
MU_W = 1e-3  # PSD_opt's water viscosity in calc_beta [Pa s]
PSEUDO_PIVOT = -1.0  # V_p_ex's entry beyond both ends of the grid in get_dNdt_1d_geo


class Grid(NamedTuple):
    """PSD_opt's 1-D geometric grid: edges ``V_e`` (NS+1,), pivots ``V`` and radii ``R`` (NS,)."""

    V_e: np.ndarray
    V: np.ndarray
    R: np.ndarray


class Solution(NamedTuple):
    """Pivot volumes ``V`` (NS,), edges ``V_e`` (NS+1,) [m^3] and ``N`` (T, NS) at the times.

    ``N[:, 0]`` is PSD_opt's zero-volume class (see the module's note 1).
    """

    V: np.ndarray
    V_e: np.ndarray
    N: np.ndarray


@dataclass(frozen=True)
class Kernels:
    """PSD_opt's kernel parameters, with the defaults of its ``BaseSolver``."""

    COLEVAL: int = 1
    CORR_BETA: float = 1.0
    G: float = 1.0
    alpha_prim: float = 1.0
    SIZEEVAL: int = 1
    X_SEL: float = 0.310601
    Y_SEL: float = 1.06168
    BREAKRVAL: int = 3
    BREAKFVAL: int = 3
    pl_v: float = 2.0
    pl_q: float = 1.0
    pl_P1: float = 1e10
    pl_P2: float = 1.0
    aggl_crit: float = 1e3
    V_unit: float = 1.0


def geo_grid(NS: int, S: float, R01: float) -> Grid:
    """PSD_opt's grid: ``V_e = [-v01, v01, S v01, ..., S**(NS-1) v01]``, ``V`` the cell middles."""
    v01 = 4.0 / 3.0 * math.pi * R01**3
    V_e = np.concatenate([[-v01], v01 * S ** np.arange(NS, dtype=float)])
    V = (V_e[:-1] + V_e[1:]) / 2
    R = np.cbrt(3 * V / (4 * math.pi))
    return Grid(V_e, V, R)


def agglomeration_limit(NS: int, aggl_crit: float = 1e3) -> int:
    """``agg_crit``: classes below it agglomerate, into cells ``1 .. agg_crit-1``."""
    candidate = aggl_crit + 1
    return int(candidate) if 0 < candidate < NS else NS - 1


def collision_frequency(COLEVAL: int, CORR_BETA: float, G: float, r1: float, r2: float) -> float:
    """beta(r1, r2) [m^3/s] as ``calc_beta``; 0 if either radius is 0 (class 0)."""
    if r1 <= 0 or r2 <= 0:
        return 0.0
    if COLEVAL == 1:  # shear, Chin 1998, without the 2.3 of the non-JIT branch
        return CORR_BETA * G * (r1 + r2) ** 3
    if COLEVAL == 2:  # Brownian, Tsouris 1995
        return CORR_BETA * 2 * K_T * (r1 + r2) ** 2 / (3 * MU_W * r1 * r2)
    if COLEVAL == 3:  # constant
        return CORR_BETA
    if COLEVAL == 4:  # sum of volumes
        return CORR_BETA * 4 * math.pi * (r1**3 + r2**3) / 3
    raise ValueError(f"COLEVAL must be 1, 2, 3 or 4, got {COLEVAL}")


def agglomeration_matrix(R: np.ndarray, k: Kernels) -> np.ndarray:
    """``F_M[a, i] = beta alpha_prim corr_size / V_unit`` for classes ``1 <= a, i <= NS-2``.

    Shape (NS-1, NS-1); index 0 is the zero-volume class and stays 0. ``SIZEEVAL = 2`` is
    Soos et al. 2007 with ``lam`` the smaller over the larger radius, normalised by ``R[1]``.
    """
    if k.SIZEEVAL not in (1, 2):
        raise ValueError(f"SIZEEVAL must be 1 or 2, got {k.SIZEEVAL}")
    n = len(R) - 1
    F_M = np.zeros((n, n))
    for a in range(1, n):
        for i in range(1, n):
            beta = collision_frequency(k.COLEVAL, k.CORR_BETA, k.G, R[a], R[i])
            corr_size = 1.0
            if k.SIZEEVAL == 2:
                lam = min(R[a], R[i]) / max(R[a], R[i])
                corr_size = math.exp(-k.X_SEL * (1 - lam) ** 2) / (
                    (R[a] * R[i] / R[1] ** 2) ** k.Y_SEL
                )
            F_M[a, i] = beta * k.alpha_prim * corr_size / k.V_unit
    return F_M


def breakage_rates(V: np.ndarray, k: Kernels) -> np.ndarray:
    """Selection rate ``B_R`` [1/s] per class (NS,); class 0 (volume 0) does not break."""
    if k.BREAKRVAL == 1:
        rate = np.full_like(V, k.pl_P1)
    elif k.BREAKRVAL == 2:
        rate = k.pl_P1 * V
    elif k.BREAKRVAL in (3, 4):  # Pandya & Spielman power law; 4 is the same in 1-D
        rate = k.pl_P1 * k.G * np.where(V > 0, V, 1.0) ** k.pl_P2
    else:
        raise ValueError(f"BREAKRVAL must be 1, 2, 3 or 4, got {k.BREAKRVAL}")
    return np.where(V > 0, rate, 0.0)


def _check_fragments(BREAKFVAL: int, pl_v: float, pl_q: float) -> None:
    if BREAKFVAL == 3 and not (pl_v > 1 and pl_q > 0):
        raise ValueError(f"BREAKFVAL 3 needs pl_v > 1 and pl_q > 0, got {pl_v}, {pl_q}")
    if BREAKFVAL == 4 and not 0 < pl_v <= 1:  # calc_int_B_F raises the same
        raise ValueError(f"BREAKFVAL 4 needs pl_v in (0, 1], got {pl_v}")
    if BREAKFVAL == 5 and not pl_v > 0:
        raise ValueError(f"BREAKFVAL 5 needs pl_v > 0, got {pl_v}")
    if BREAKFVAL not in (1, 2, 3, 4, 5):
        raise ValueError(f"BREAKFVAL must be 1 to 5, got {BREAKFVAL}")


def fragment_density(x: float, y: float, BREAKFVAL: int, pl_v: float, pl_q: float) -> float:
    """b(x | y): fragments of volume x per unit volume from a parent of volume y [1/m^3]."""
    _check_fragments(BREAKFVAL, pl_v, pl_q)
    z, v, q = x / y, pl_v, pl_q
    theta = {
        1: lambda: 4.0,
        2: lambda: 2.0,
        3: lambda: v * z ** (q - 1) * (1 - z) ** (q * (v - 1) - 1) / _beta(q, q * (v - 1)),
        4: lambda: (v + 1) * z ** (v - 1),
        5: lambda: (v + 2) * (v + 1) * z ** (v - 1) * (1 - z),
    }[BREAKFVAL]()
    return theta / y


def _beta(a: float, b: float) -> float:
    return math.gamma(a) * math.gamma(b) / math.gamma(a + b)


def _fragments_below(z: float, y: float, BREAKFVAL: int, v: float, q: float) -> tuple:
    """Number and volume of the fragments of a parent ``y`` smaller than ``z y``."""
    if BREAKFVAL in (1, 2):
        theta = 4.0 if BREAKFVAL == 1 else 2.0
        return theta * z, theta * y * z**2 / 2
    if BREAKFVAL == 3:
        return v * betainc(q, q * (v - 1), z), y * betainc(q + 1, q * (v - 1), z)
    if BREAKFVAL == 4:
        return (v + 1) / v * z**v, y * z ** (v + 1)
    c = (v + 2) * (v + 1)
    return c * (z**v / v - z ** (v + 1) / (v + 1)), c * y * (
        z ** (v + 1) / (v + 1) - z ** (v + 2) / (v + 2)
    )


def fragment_integrals(
    V: np.ndarray, V_e: np.ndarray, BREAKFVAL: int, pl_v: float, pl_q: float
) -> tuple[np.ndarray, np.ndarray]:
    """``int_B_F[a, i]``, ``intx_B_F[a, i]``: fragments of parent class ``i`` in cell ``a``.

    The integrals of ``b(x | V[i])`` and ``x b(x | V[i])`` over cell ``a <= i``, the lowest
    cell starting at 0 and the parent's own cell ending at its pivot. Shapes (NS, NS),
    upper triangular, column 0 zero.
    """
    _check_fragments(BREAKFVAL, pl_v, pl_q)
    NS = len(V)
    lower = np.maximum(V_e[:-1], 0.0)
    int_B_F, intx_B_F = np.zeros((NS, NS)), np.zeros((NS, NS))
    for i in range(1, NS):
        for a in range(i + 1):
            upper = V[i] if a == i else V_e[a + 1]
            n_hi, x_hi = _fragments_below(upper / V[i], V[i], BREAKFVAL, pl_v, pl_q)
            n_lo, x_lo = _fragments_below(lower[a] / V[i], V[i], BREAKFVAL, pl_v, pl_q)
            int_B_F[a, i], intx_B_F[a, i] = n_hi - n_lo, x_hi - x_lo
    return int_B_F, intx_B_F


def initial_state(NS: int, process: str, N01: float) -> np.ndarray:
    """``init_N``'s monodisperse start: ``N01`` in class 1, the last or ``1 + (NS-1)//2``."""
    N0 = np.zeros(NS)
    N0[{"agglomeration": 1, "breakage": NS - 1, "mix": 1 + (NS - 1) // 2}[process]] = N01
    return N0


def heaviside(x: float) -> float:
    """PSD_opt's step with ``heaviside(0) = 1/2``."""
    return 0.0 if x < 0 else 1.0 if x > 0 else 0.5


def place_births(B_c: np.ndarray, M_c: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Births per class (NS,) from each cell's birth count ``B_c`` and volume ``M_c`` (NS,).

    A cell's births sit at their mean volume ``m``; if ``m`` is below the cell's pivot they
    are shared with the pivot below, if above with the pivot above, in the proportions that
    keep their number and volume. On the pivot, heaviside(0) = 1/2 gives each side half,
    both into the cell's own class.
    """
    NS = len(V)
    pivot = np.append(V, PSEUDO_PIVOT)  # pivot[-1] and pivot[NS] are V_p_ex's -1
    B = np.zeros(NS)
    for e in range(NS):
        if B_c[e] == 0:
            continue
        m = M_c[e] / B_c[e]
        for share, k in ((heaviside(V[e] - m), e - 1), (heaviside(m - V[e]), e + 1)):
            B[e] += share * B_c[e] * (m - pivot[k]) / (V[e] - pivot[k])
            if 0 <= k < NS:
                B[k] += share * B_c[e] * (m - V[e]) / (pivot[k] - V[e])
    return B


@dataclass(frozen=True)
class Model:
    """Everything ``get_dNdt_1d_geo`` is given, for one grid, process and set of kernels."""

    grid: Grid
    process: str
    F_M: np.ndarray  # (NS-1, NS-1)
    B_R: np.ndarray  # (NS,)
    int_B_F: np.ndarray  # (NS, NS)
    intx_B_F: np.ndarray  # (NS, NS)
    agg_crit: int
    # cell of the product of each ordered pair (i, j) below agg_crit, -1 where it is not counted
    product_cell: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        V, V_e, c = self.grid.V, self.grid.V_e, self.agg_crit
        product = V[:c, None] + V[None, :c]
        cell = np.searchsorted(V_e, product, side="right") - 1  # V_e[e] <= product < V_e[e+1]
        counted = (cell >= 1) & (cell < c) & (product < V[c])
        object.__setattr__(self, "product_cell", np.where(counted, cell, -1))

    def cell_births(self, N: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Births ``B_c`` and their volume ``M_c`` per cell, and deaths ``D`` per class (NS,)."""
        NS, V, c = len(N), self.grid.V, self.agg_crit
        B_c, M_c, D = np.zeros(NS), np.zeros(NS), np.zeros(NS)
        if self.process in ("agglomeration", "mix"):
            rate = self.F_M[:c, :c] * np.outer(N[:c], N[:c])  # ordered pairs (i, j)
            counted = self.product_cell >= 0
            cells = self.product_cell[counted]
            product = (V[:c, None] + V[None, :c])[counted]
            B_c += np.bincount(cells, weights=rate[counted] / 2, minlength=NS)
            M_c += np.bincount(cells, weights=rate[counted] * product / 2, minlength=NS)
            D[:c] -= np.where(counted, rate, 0.0).sum(axis=0)
        if self.process in ("breakage", "mix"):
            breaking = self.B_R * N
            B_c += self.int_B_F @ breaking
            M_c += self.intx_B_F @ breaking
            D -= breaking
        return B_c, M_c, D

    def dNdt(self, N: np.ndarray) -> np.ndarray:
        """``get_dNdt_1d_geo``: births placed on the pivots plus deaths, class 0 included."""
        B_c, M_c, D = self.cell_births(N)
        return place_births(B_c, M_c, self.grid.V) + D


def build_model(NS: int, S: float, R01: float, process: str = "mix", **kernels) -> Model:
    """PSD_opt's ``full_init(calc_alpha=False)`` for the 1-D geo grid.

    ``kernels``: the fields of :class:`Kernels`. As in PSD_opt, ``F_M`` is zero for pure
    breakage and ``B_R``, ``int_B_F`` for pure agglomeration.
    """
    if process not in PROCESSES:
        raise ValueError(f"process must be one of {PROCESSES}, got {process!r}")
    k = Kernels(**kernels)
    grid = geo_grid(NS, S, R01)
    F_M = np.zeros((NS - 1, NS - 1))
    B_R, int_B_F, intx_B_F = np.zeros(NS), np.zeros((NS, NS)), np.zeros((NS, NS))
    if process != "breakage":
        F_M = agglomeration_matrix(grid.R, k)
    if process != "agglomeration":
        B_R = breakage_rates(grid.V, k)
        int_B_F, intx_B_F = fragment_integrals(grid.V, grid.V_e, k.BREAKFVAL, k.pl_v, k.pl_q)
    limit = agglomeration_limit(NS, k.aggl_crit)
    return Model(grid, process, F_M, B_R, int_B_F, intx_B_F, limit)


def solve_psd_opt(
    NS: int,
    S: float,
    R01: float,
    t: np.ndarray,
    N0: np.ndarray | float,
    process: str = "mix",
    *,
    method: str = "Radau",
    rtol: float = 1e-10,
    atol: float | None = None,
    **kernels,
) -> Solution:
    """N(t) of PSD_opt's 1-D geo dPBE, solved tightly (PSD_opt itself uses rtol = 0.1).

    ``N0``: an array (NS,) of numbers per class, or a number ``N01`` placed where ``init_N``
    places it for ``process``. ``t``: output times [s], starting at the start. ``kernels``:
    the fields of :class:`Kernels`. ``atol`` defaults to ``rtol * 1e-3 * sum(N0)``.
    """
    model = build_model(NS, S, R01, process, **kernels)
    start = np.asarray(N0, dtype=float)
    if start.ndim == 0:
        start = initial_state(NS, process, float(start))
    if start.shape != (NS,):
        raise ValueError(f"N0 must be a number or have shape ({NS},), got {start.shape}")
    t = np.asarray(t, dtype=float)
    tol = rtol * 1e-3 * start.sum() if atol is None else atol
    sol = solve_ivp(
        lambda _, N: model.dNdt(N),
        (t[0], t[-1]),
        start,
        method=method,
        t_eval=t,
        rtol=rtol,
        atol=tol,
    )
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return Solution(model.grid.V, model.grid.V_e, sol.y.T)
