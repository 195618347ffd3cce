"""Soos et al. (2007)'s size correction of the collision efficiency (PSD_opt's SIZEEVAL 2):
hand-computed values, every kernel and discretisation, grid independence, conservation
and the config section."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from hpcopt.config.registry import build_problem
from hpcopt.problems.pbe.config import PBEConfig
from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.kernels import SizeCorrection
from hpcopt.problems.pbe.solver import Model, Solver

X, Y = 0.310601, 1.06168  # PSD_opt's X_SEL and Y_SEL
UM3 = np.pi / 6 * 1e-18  # the volume of a sphere of 1 µm diameter, m^3
SOOS = SizeCorrection(X, Y, d_ref=1e-6)


def psd_opt_correction(r_u: float, r_v: float, r_ref: float) -> float:
    """PSD_opt's corr_size, written from its formula: radii, the reference a radius."""
    lam = min(r_u, r_v) / max(r_u, r_v)
    return np.exp(-X * (1 - lam) ** 2) / (r_u * r_v / r_ref**2) ** Y


def kernels(grid: Grid, correction: SizeCorrection | None, **model: Any) -> dict:
    """The solver's kernel per colliding pair of classes, both ways round, by the pair's
    component volumes in 1 µm spheres (alpha = 1, corr_beta = 1, G = 1; over N_ref and
    without the half of equal partners)."""
    params = {"corr_beta": 1.0, "alpha": 1.0, "alpha_11": 1.0, "alpha_12": 1.0, "alpha_22": 1.0,
              "G": 1.0}  # fmt: skip
    kw = {"agglomeration": "constant", **model}
    solver = Solver(Model(grid, size_correction=correction, **kw), np.ones(grid.n))
    rates = solver.rates({k: params[k] for k in solver.model.parameters()})
    pairs = solver.pairs
    beta = rates.beta[:, 0] / solver.n_ref / np.where(pairs.first == pairs.second, 0.5, 1.0)
    vols = [tuple(v) for v in np.round(solver.volumes / UM3, 9)]
    out = {(vols[i], vols[j]): b for i, j, b in zip(pairs.first, pairs.second, beta)}
    return out | {(v, u): b for (u, v), b in out.items()}


def one_d(x0_um: float = 1.0, ratio: float = 8.0, classes: int = 6) -> Grid:
    return Grid.geometric(1, classes, ratio, (x0_um**3 * UM3,))


def test_the_correction_of_one_d_pairs_is_psd_opts_formula_by_hand():
    # pivots of 1, 2, 4, 8, ... µm; reference 1 µm (r_ref = 0.5 µm)
    beta = kernels(one_d(), SOOS)
    by_hand = {
        (1, 1): 1.0,  # equal partners of the reference size: no correction
        (1, 8): np.exp(-X * 0.25) / 2**Y,  # 1 and 2 µm: lam = 1/2, r_u r_v / r_ref^2 = 2
        (8, 512): np.exp(-X * 0.5625) / 16**Y,  # 2 and 8 µm: lam = 1/4, product 16
        (64, 64): 1 / 16**Y,  # 4 and 4 µm: lam = 1, product 16
        (1, 512): np.exp(-X * (7 / 8) ** 2) / 8**Y,  # 1 and 8 µm
    }
    for (u, v), expected in by_hand.items():
        assert beta[((u,), (v,))] == pytest.approx(expected, rel=1e-12, abs=0)
    assert by_hand[(1, 8)] == pytest.approx(0.443281, rel=1e-5)  # the formula, evaluated
    assert by_hand[(1, 8)] == pytest.approx(psd_opt_correction(0.5, 1.0, 0.5), rel=1e-12, abs=0)


def test_the_correction_of_two_d_pairs_uses_the_total_volumes_radii():
    # each component's pivots: none, a 1 µm, a 2 µm and a 4 µm sphere
    beta = kernels(Grid.geometric(2, 4, 8.0, (UM3, UM3)), SOOS)
    r1, r2 = 0.5, 0.5 * 2 ** (1 / 3)  # a 1 µm sphere; one of each component (2 µm^3-spheres)
    r9 = 0.5 * 9 ** (1 / 3)  # 8 of component 1 and 1 of component 2
    by_hand = {
        ((1, 0), (0, 1)): psd_opt_correction(r1, r1, 0.5),  # the two pure primaries: 1
        ((1, 0), (1, 1)): np.exp(-X * (1 - r1 / r2) ** 2) / (r1 * r2 / 0.25) ** Y,
        ((0, 8), (8, 1)): np.exp(-X * (1 - 1.0 / r9) ** 2) / (1.0 * r9 / 0.25) ** Y,
        ((1, 1), (8, 1)): np.exp(-X * (1 - r2 / r9) ** 2) / (r2 * r9 / 0.25) ** Y,
    }
    assert by_hand[((1, 0), (0, 1))] == pytest.approx(1.0)
    for pair, expected in by_hand.items():
        assert beta[pair] == pytest.approx(expected, rel=1e-12, abs=0)


CASES = [
    (1, "fixed_pivot"),
    (1, "cell_average"),
    (2, "fixed_pivot"),
]
KERNELS = ["constant", "sum", "product", "shear", "brownian"]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("dim", "discretisation"), CASES)
def test_every_kernel_is_multiplied_by_the_correction(kernel, dim, discretisation):
    if dim == 1:
        grid = one_d(0.7, 2.0, 12)
    else:
        grid = Grid.geometric(2, 5, 2.0, (0.7**3 * UM3, 1.3**3 * UM3))
    model = {"agglomeration": kernel, "discretisation": discretisation}
    corrected, plain = kernels(grid, SOOS, **model), kernels(grid, None, **model)
    assert corrected.keys() == plain.keys() and len(plain) > 10
    for (u, v), beta in corrected.items():
        r_u, r_v = (np.cbrt(sum(w)) / 2 for w in (u, v))  # µm
        expected = plain[(u, v)] * psd_opt_correction(r_u, r_v, 0.5)
        assert beta == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize("dim", [1, 2])
def test_the_same_pair_of_sizes_has_the_same_kernel_on_any_grid(dim):
    # the fine grid starts half a volume below the coarse one and holds all its pivots
    if dim == 1:
        coarse, fine = one_d(1.0, 2.0, 10), one_d(0.5 ** (1 / 3), 2**0.5, 22)
    else:
        coarse = Grid.geometric(2, 6, 2.0, (UM3, 2 * UM3))
        fine = Grid.geometric(2, 13, 2**0.5, (UM3 / 2, UM3))
    a = kernels(coarse, SOOS, agglomeration="shear")
    b = kernels(fine, SOOS, agglomeration="shear")
    shared = a.keys() & b.keys()
    assert len(shared) == len(a)
    for pair in shared:
        assert b[pair] == pytest.approx(a[pair], rel=1e-12, abs=0)
    # PSD_opt's reference, the grid's first radius, would move the kernel with the grid
    first = [np.cbrt(g.smallest().min() / UM3) / 2 for g in (coarse, fine)]
    (u, v) = next(iter(shared))
    r_u, r_v = (np.cbrt(sum(w)) / 2 for w in (u, v))
    moved = psd_opt_correction(r_u, r_v, first[0]) / psd_opt_correction(r_u, r_v, first[1])
    assert abs(moved - 1) > 0.3


def test_the_reference_diameter_scales_every_kernel_by_its_power():
    # the factor corr_beta must absorb when PSD_opt's reference is not d_ref
    a = kernels(one_d(), SOOS)
    b = kernels(one_d(), SizeCorrection(X, Y, d_ref=3e-6))
    for pair in a:
        assert b[pair] == pytest.approx(a[pair] * 3 ** (2 * Y), rel=1e-12, abs=0)


@pytest.mark.parametrize(("dim", "discretisation"), CASES)
def test_a_solve_with_the_correction_conserves_volume(dim, discretisation):
    t = np.linspace(0, 600, 7)
    if dim == 1:
        grid = Grid.geometric(1, 30, 2.0, (5e-19,))
        params = {"alpha": 0.8}
    else:
        grid = Grid.geometric(2, 8, 2.0, (5e-19, 5e-19))
        params = {"alpha_11": 0.8, "alpha_12": 0.5, "alpha_22": 1.0, "pl_P3": 2e-4, "pl_P4": 0.4}
    params |= {"corr_beta": 1.0, "G": 100.0, "pl_P1": 1e-4, "pl_P2": 0.7, "pl_v": 0.6}
    n0 = np.zeros(grid.n)
    n0[[1] if dim == 1 else [1, grid.shape[1]]] = 1e14  # primary particles
    runs = [
        Solver(
            Model(grid, "shear", "power_law", "power_law", discretisation=discretisation,
                  size_correction=correction),
            n0,
        ).solve(params, t)
        for correction in (SizeCorrection(d_ref=2e-6), None)
    ]  # fmt: skip
    corrected, plain = (run.N[0] for run in runs)
    assert runs[0].error == [""]
    volume = corrected @ grid.volumes()  # per component
    np.testing.assert_allclose(volume, np.broadcast_to(volume[0], volume.shape), rtol=1e-10)
    assert not np.allclose(corrected, plain, rtol=1e-2)  # the correction did something


def test_a_size_correction_is_refused_with_bad_constants():
    with pytest.raises(ValueError, match="x_sel must be finite and >= 0"):
        SizeCorrection(x_sel=-0.1)
    with pytest.raises(ValueError, match="d_ref must be finite and > 0"):
        SizeCorrection(d_ref=0.0)


# -- the config ---------------------------------------------------------------------------

SECTION: dict[str, Any] = {
    "name": "pbe",
    "dim": 1,
    "grid": {"classes": 12, "ratio": 2.0, "x0_um": 1.0},
    "agglomeration": "shear",
    "breakage": "power_law",
    "fragments": "power_law",
    "initial": {"kind": "lognormal", "x50_um": 3.0, "sigma_g": 1.6},
    "known": {"alpha": 1.0, "G": 100.0, "pl_P2": 0.5, "pl_v": 1.5},
    "parameters": [
        {"name": "corr_beta", "low": 0.1, "high": 10.0, "log": True},
        {"name": "pl_P1", "low": 1e-6, "high": 1e-2, "log": True},
    ],
    "synthetic": {"parameters": {"corr_beta": 1.0, "pl_P1": 1e-4}, "times_s": [0, 60, 300]},
    "size_correction": {"kind": "soos2007", "d_ref_um": 2.0},
}


def section(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(SECTION)
    out.update(changes)
    return out


def test_the_config_section_reaches_the_solver_with_psd_opts_constants_by_default():
    p = build_problem(PBEConfig(**section()))
    p.setup()
    assert p.experiments[0].solver.model.size_correction == SizeCorrection(X, Y, 2e-6)
    (outcome,) = p.evaluate_batch(np.array([[1.0, 1e-4]]))
    assert outcome.ok and outcome.value < 1e-20
    none = PBEConfig(**section(size_correction={"kind": "none"}))
    assert none.size_correction.correction() is None
    default = {k: v for k, v in SECTION.items() if k != "size_correction"}
    assert PBEConfig(**default).size_correction == none.size_correction


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "selomulya"}, r"size_correction\.kind\n.*'none' or 'soos2007'"),
        ({"x_sel": -0.1}, r"size_correction\.x_sel\n.*greater than or equal to 0"),
        ({"y_sel": -1.0}, r"size_correction\.y_sel\n.*greater than or equal to 0"),
        ({"d_ref_um": 0.0}, r"size_correction\.d_ref_um\n.*greater than 0"),
        ({"d_ref_um": float("inf")}, r"size_correction\.d_ref_um\n.*finite number"),
        ({"x_sel_typo": 1.0}, r"size_correction\.x_sel_typo\n.*Extra inputs"),
    ],
)
def test_bad_size_corrections_are_refused_naming_the_key(changes, message):
    with pytest.raises(ValidationError, match=message):
        PBEConfig(**section(size_correction={**SECTION["size_correction"], **changes}))


def test_constants_without_the_correction_are_refused_as_unused():
    with pytest.raises(ValidationError, match=r"size_correction\n.*x_sel: only used by kind"):
        PBEConfig(**section(size_correction={"kind": "none", "x_sel": 0.5}))


def test_a_size_correction_without_agglomeration_is_refused():
    doc = section(
        agglomeration="none",
        known={"G": 100.0, "pl_P2": 0.5, "pl_v": 1.5},
        parameters=[SECTION["parameters"][1]],
        synthetic={"parameters": {"pl_P1": 1e-4}, "times_s": [0, 60]},
    )
    with pytest.raises(ValidationError, match="size_correction: corrects agglomeration"):
        PBEConfig(**doc)


def test_an_experiment_merges_or_replaces_the_size_correction():
    experiments = [
        {"name": "top"},
        {"name": "finer", "size_correction": {"d_ref_um": 0.5}},
        {"name": "plain", "size_correction": {"kind": "none"}},
    ]
    top, finer, plain = PBEConfig(**section(experiments=experiments)).resolved_experiments()
    assert top.model.size_correction.correction() == SizeCorrection(X, Y, 2e-6)
    assert finer.model.size_correction.correction() == SizeCorrection(X, Y, 0.5e-6)
    assert plain.model.size_correction.correction() is None
    only = {k: v for k, v in SECTION.items() if k != "size_correction"}
    only["experiments"] = [{"name": "a", "size_correction": {"kind": "soos2007", "y_sel": 1.0}}]
    (a,) = PBEConfig(**only).resolved_experiments()
    assert a.model.size_correction.correction() == SizeCorrection(X, 1.0, 1e-6)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"size_correction": {"x_sel": -1.0}},
         r"experiments\[1\]\.size_correction\.x_sel: Input should be greater than or equal"),
        ({"size_correction": {"kind": "none", "d_ref_um": 3.0}},
         r"experiments\[1\]\.size_correction: d_ref_um: only used by kind: soos2007"),
    ],
)  # fmt: skip
def test_a_bad_experiment_size_correction_is_refused_naming_its_path(entry, message):
    experiments = [{"name": "a"}, {"name": "b", **entry}]
    with pytest.raises(ValidationError, match=message):
        PBEConfig(**section(experiments=experiments))
