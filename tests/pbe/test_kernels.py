"""Fragment distributions written from Diemer & Olson (2002), as PSD_opt names them:
antiderivatives against quadrature of the density, fragment counts, volume."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import beta

from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.kernels import fragment_moments, fragment_range_error
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
