"""Fragment distributions written from Diemer & Olson (2002), as PSD_opt names them:
antiderivatives against quadrature of the density, fragment counts, volume; and the 2-D
breakage rates against PSD_opt's definitions, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import beta

from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.kernels import (
    breakage_rate,
    fragment_moments,
    fragment_range_error,
    parameter_names,
    rate_parameters,
)
from hpcopt.problems.pbe.solver import Model, Solver

DENSITIES = {
    # b(x), fragments per unit x = fragment / parent volume, from the published formulas
    "product_power_law": lambda x, p: (
        p["pl_v"] * x ** (p["pl_q"] - 1) * (1 - x) ** (p["pl_q"] * (p["pl_v"] - 1) - 1)
        / beta(p["pl_q"], p["pl_q"] * (p["pl_v"] - 1))
    ),
    "parabolic_power_law": lambda x, p: (p["pl_v"] + 2) * (p["pl_v"] + 1) * x ** (p["pl_v"] - 1)
    * (1 - x),
}  # fmt: skip
CASES = [
    ("product_power_law", {"pl_v": 2.0, "pl_q": 1.0}, 2.0),
    ("product_power_law", {"pl_v": 4.0, "pl_q": 2.5}, 4.0),
    ("parabolic_power_law", {"pl_v": 2.0}, 2.0),
    ("parabolic_power_law", {"pl_v": 0.7}, 2.7 / 0.7),
]


@pytest.mark.parametrize(("fragments", "params", "count"), CASES)
def test_antiderivatives_equal_quadrature_of_the_density(fragments, params, count):
    arrays = {k: np.array([v]) for k, v in params.items()}
    x = np.array([0.1, 0.35, 0.8, 1.0])
    moments = fragment_moments(fragments, x, arrays)[:, 0]
    for m in range(3):
        expected = [
            quad(lambda s, m=m: s**m * DENSITIES[fragments](s, params), 0, xi)[0] for xi in x
        ]
        np.testing.assert_allclose(moments[m], expected, rtol=1e-7)
    assert moments[0, -1] == pytest.approx(count)  # fragments per parent
    assert moments[1, -1] == pytest.approx(1.0)  # the parent's volume


@pytest.mark.parametrize(("fragments", "params", "count"), CASES)
def test_fragment_matrices_conserve_volume(fragments, params, count):
    grid = Grid.geometric(1, 40, 2**0.5, (1.0,))
    F = (
        Solver(Model(grid, None, "constant", fragments), np.ones(grid.n))
        .rates({"pl_P1": 1.0, **params})
        .F[0]
    )
    v = grid.total_volumes()
    np.testing.assert_allclose(v @ F, v, rtol=1e-12)
    assert F[:, -1].sum() == pytest.approx(count, rel=0.05)


def test_a_product_power_law_with_at_most_one_fragment_is_refused():
    assert "must be > 1" in fragment_range_error("product_power_law", "pl_v", 1.0)
    assert fragment_range_error("product_power_law", "pl_v", 1.5) == ""
    assert fragment_range_error("power_law", "pl_v", 0.5) == ""


# -- 2-D breakage rates: PSD_opt's BREAKRVAL 1-4 -------------------------------------------

# component 1's pivots 0, 1, 2 and component 2's 0, 2, 4 (m^3), over v_ref = 2 m^3: classes
# (i, j) row-major, V = total / v_ref
GRID_2D = Grid.geometric(2, 3, 2.0, (1.0, 2.0))
V_REF_2D = 2.0
RATE_PARAMS = {"pl_P1": 3.0, "pl_P2": 0.5, "pl_P3": 5.0, "pl_P4": 2.0, "G": 10.0}
# written from PSD_opt's calc_B_R_2d_jit: pure component 1 (j = 0), pure component 2
# (i = 0) and mixed classes; the empty class (0, 0) does not break
BY_HAND = {
    # BREAKRVAL 1: pl_P1, pl_P3, mixed (pl_P1 + pl_P3) / 2 = 4
    "constant_by_component": [0, 5, 5, 3, 4, 4, 3, 4, 4],
    # BREAKRVAL 2: pl_P1 V1, pl_P3 V3, mixed 4 (V1 + V3)
    "linear_by_component": [0, 5 * 1, 5 * 2, 3 * 0.5, 4 * 1.5, 4 * 2.5, 3 * 1, 4 * 2, 4 * 3],
    # BREAKRVAL 3: pl_P1 G V^pl_P2 on the total volume, pure or not
    "power_law_total": [30 * v**0.5 for v in (0, 1, 2, 0.5, 1.5, 2.5, 1, 2, 3)],
    # BREAKRVAL 4 (2-D power_law): pl_P1 G V1^pl_P2 + pl_P3 G V3^pl_P4
    "power_law": [30 * v1**0.5 + 50 * v3**2 for v1 in (0, 0.5, 1) for v3 in (0, 1, 2)],
    # hpcopt's own 2-D constant and linear: pl_P1 for every class
    "constant": [0, 3, 3, 3, 3, 3, 3, 3, 3],
    "linear": [3 * v for v in (0, 1, 2, 0.5, 1.5, 2.5, 1, 2, 3)],
}


@pytest.mark.parametrize("rate", BY_HAND)
def test_two_d_breakage_rates_by_hand(rate):
    # a batch of two parameter sets, the second's coefficients pl_P1 and pl_P3 doubled
    batch = {
        k: np.array([v, 2 * v if k in ("pl_P1", "pl_P3") else v]) for k, v in RATE_PARAMS.items()
    }
    S = breakage_rate(rate, GRID_2D.volumes(), V_REF_2D, batch)
    np.testing.assert_allclose(S[0], BY_HAND[rate], rtol=1e-14)
    np.testing.assert_allclose(S[1], 2 * S[0], rtol=1e-14)


@pytest.mark.parametrize(
    ("rate", "names"),
    [
        ("constant", ("pl_P1",)),
        ("linear", ("pl_P1",)),
        ("power_law", ("pl_P1", "pl_P2", "G", "pl_P3", "pl_P4")),
        ("constant_by_component", ("pl_P1", "pl_P3")),
        ("linear_by_component", ("pl_P1", "pl_P3")),
        ("power_law_total", ("pl_P1", "pl_P2", "G")),
    ],
)
def test_each_two_d_rate_needs_its_own_parameters(rate, names):
    assert rate_parameters(rate, 2) == names
    assert parameter_names(None, rate, "binary", 2) == names
    model = Model(GRID_2D, None, rate, "binary")
    assert model.parameters() == names
    Solver(model, np.ones(GRID_2D.n)).rates(dict.fromkeys(names, 1.0))  # nothing else asked


@pytest.mark.parametrize("rate", ["constant_by_component", "linear_by_component"])
def test_a_per_component_rate_is_refused_in_one_d_naming_the_plain_one(rate):
    plain = rate.removesuffix("_by_component")
    with pytest.raises(ValueError, match=f"{rate} is 2-D only .*; in 1-D use {plain}"):
        Model(Grid.geometric(1, 5, 2.0, (1.0,)), None, rate)


def test_the_total_volume_power_law_is_refused_in_one_d_where_power_law_is_it():
    with pytest.raises(ValueError, match="power_law_total is 2-D only; in 1-D, power_law is"):
        Model(Grid.geometric(1, 5, 2.0, (1.0,)), None, "power_law_total")


@pytest.mark.parametrize(
    "rate", ["constant_by_component", "linear_by_component", "power_law_total"]
)
def test_a_solve_with_each_two_d_rate_keeps_each_components_volume(rate):
    grid = Grid.geometric(2, 8, 2.0, (5e-19, 5e-19))
    n0 = np.zeros(grid.n)
    n0[grid.shape[1] * 7] = n0[7] = 1e14  # the largest pure particles of each component
    params = {"pl_P1": 1e-3, "pl_P2": 0.7, "pl_P3": 4e-3, "G": 10.0, "pl_v": 1.5}
    model = Model(grid, None, rate, "power_law")
    sol = Solver(model, n0).solve({k: params[k] for k in model.parameters()}, [0, 60, 600])
    assert sol.error == [""]
    volume = sol.N[0] @ grid.volumes()
    np.testing.assert_allclose(volume, np.broadcast_to(volume[0], (3, 2)), rtol=1e-10)
    assert sol.N[0, -1].sum() > 2 * n0.sum()  # the particles did break
