"""hpcopt on PSD_opt's grid against an independent reference of PSD_opt's 1-D dPBE
(tests/pbe/psd_opt_reference.py, itself checked against PSD_opt's code to 1e-11): the same
N(t), class 0 included, with the README's migration table applied."""

from __future__ import annotations

import numpy as np
import pytest

from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.solver import Model, Solver
from tests.pbe import psd_opt_reference as ref

NS, S = 12, 2.0
R01 = (3 / (4 * np.pi)) ** (1 / 3)  # v01 = 1: PSD_opt's pivots 0, 1.5, 3, 6, ...
T = np.array([0.0, 0.5, 2.0, 5.0])

# PSD_opt keys -> hpcopt model and parameters, as the README's migration table says
CASES = {
    "constant agglomeration": (
        "agglomeration",
        {"COLEVAL": 3, "CORR_BETA": 0.4, "alpha_prim": 0.5},
        {"agglomeration": "constant", "breakage": "none"},
        {"corr_beta": 0.4, "alpha": 0.5},
    ),
    "agglomeration up to the last cell": (
        "agglomeration",
        {"COLEVAL": 3, "CORR_BETA": 40.0, "alpha_prim": 1.0},
        {"agglomeration": "constant", "breakage": "none"},
        {"corr_beta": 40.0, "alpha": 1.0},
    ),
    "shear agglomeration": (
        "agglomeration",
        {"COLEVAL": 1, "CORR_BETA": 0.1, "G": 2.0, "alpha_prim": 1.0},
        {"agglomeration": "shear", "breakage": "none"},
        {"corr_beta": 0.75 * 0.1, "alpha": 1.0, "G": 2.0},
    ),
    "power-law breakage": (
        "breakage",
        {"BREAKRVAL": 3, "BREAKFVAL": 4, "pl_P1": 0.05, "pl_P2": 0.6, "G": 1.5, "pl_v": 0.8},
        {"agglomeration": None, "breakage": "power_law", "fragments": "power_law"},
        {"pl_P1": 0.05, "pl_P2": 0.6, "G": 1.5, "pl_v": 0.8},
    ),
    "mix, parabolic fragments": (
        "mix",
        {"COLEVAL": 3, "CORR_BETA": 0.3, "alpha_prim": 1.0, "BREAKRVAL": 2, "pl_P1": 0.02,
         "BREAKFVAL": 5, "pl_v": 1.5},
        {"agglomeration": "constant", "breakage": "linear", "fragments": "parabolic_power_law"},
        {"corr_beta": 0.3, "alpha": 1.0, "pl_P1": 0.02, "pl_v": 1.5},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_hpcopt_on_psd_opts_grid_gives_psd_opts_number_concentrations(case: str) -> None:
    process, psd_opt, mechanisms, params = CASES[case]
    expected = ref.solve_psd_opt(NS, S, R01, T, 1.0, process, rtol=1e-11, **psd_opt)
    grid = Grid.geometric(1, NS, S, (4 / 3 * np.pi * R01**3,), "psd_opt")
    np.testing.assert_allclose(grid.components[0], expected.V, rtol=1e-14)
    np.testing.assert_allclose(grid.edges[0][1:], expected.V_e[1:], rtol=1e-14)
    n0 = expected.N[0]
    # v_ref 1 m^3: PSD_opt's rates are in absolute volumes (here of order 1)
    model = Model(grid, **mechanisms, v_ref=1.0, discretisation="cell_average")
    sol = Solver(model, n0, rtol=1e-10, atol=1e-14).solve(params, T)
    assert sol.error == [""]
    np.testing.assert_allclose(sol.N[0], expected.N, rtol=1e-6, atol=1e-8 * n0.sum())
    if case == "agglomeration up to the last cell":  # where PSD_opt's cut-off decides
        assert sol.top_mass_fraction[0] > 0.1
    if process != "agglomeration":
        assert sol.N[0][-1, 0] > 1e-3  # PSD_opt's class 0 collects fines, as hpcopt's does


def test_the_fixed_pivot_on_psd_opts_grid_differs_by_its_discretisation_error() -> None:
    process, psd_opt, mechanisms, params = CASES["mix, parabolic fragments"]
    expected = ref.solve_psd_opt(NS, S, R01, T, 1.0, process, rtol=1e-11, **psd_opt)
    grid = Grid.geometric(1, NS, S, (1.0,), "psd_opt")
    model = Model(grid, **mechanisms, v_ref=1.0)
    N = Solver(model, expected.N[0], rtol=1e-10, atol=1e-14).solve(params, T).N[0]
    v = grid.total_volumes()
    # the volume as exact as the cell average's; the distribution (and with it the number,
    # whose rates depend on it) within the discretisation error: 1.1 % at t = 5 here
    np.testing.assert_allclose(N @ v, expected.N @ v, rtol=1e-9)
    difference = np.abs(N.sum(axis=1) / expected.N.sum(axis=1) - 1).max()
    assert 1e-3 < difference < 0.05
