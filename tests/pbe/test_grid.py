"""Grid layouts, the zero-volume fines class, and what fines do to the number of particles."""

from __future__ import annotations

import numpy as np
import pytest

from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.solver import Model, Solver


def test_the_pivots_layout_puts_a_fines_class_below_geometric_pivots() -> None:
    grid = Grid.geometric(1, 5, 2.0, (1.0,))
    np.testing.assert_array_equal(grid.components[0], [0, 1, 2, 4, 8])
    np.testing.assert_array_equal(grid.edges[0], [0, 0.5, 1.5, 3, 6, 10])
    assert grid.fines().tolist() == [True, False, False, False, False]


def test_the_psd_opt_layout_puts_pivots_midway_between_geometric_edges() -> None:
    # PSD_opt's disc 'geo': V_e = [-v0, v0, S v0, S^2 v0, ...], V = midpoints, V[0] = 0
    grid = Grid.geometric(1, 5, 2.0, (1.0,), "psd_opt")
    np.testing.assert_array_equal(grid.edges[0], [0, 1, 2, 4, 8, 16])
    np.testing.assert_array_equal(grid.components[0], [0, 1.5, 3, 6, 12])
    assert grid.product_limit == (8.0,)  # a product must land below the last cell


def test_a_2d_grid_has_one_fines_class_at_zero_volume() -> None:
    grid = Grid.geometric(2, 4, 2.0, (1.0, 3.0))
    assert grid.shape == (4, 4) and grid.fines().sum() == 1 and grid.fines()[0]
    np.testing.assert_array_equal(grid.components[1], [0, 3, 6, 12])


def test_an_unknown_layout_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="pivots, psd_opt"):
        Grid.geometric(1, 5, 2.0, (1.0,), "uniform")


@pytest.mark.parametrize("discretisation", ["fixed_pivot", "cell_average"])
@pytest.mark.parametrize("layout", ["pivots", "psd_opt"])
def test_fines_keep_the_number_of_particles_in_1d(discretisation: str, layout: str) -> None:
    # every binary break adds one particle: M0 = N0 + (pl_P1 / v_ref) M1 t, also when the
    # fragments fall below the first class (a coarse grid: here most of them do)
    grid = Grid.geometric(1, 8, 2.0, (1.0,), layout)
    n0 = np.zeros(grid.n)
    n0[-1] = 1.0
    model = Model(grid, None, "linear", "binary", v_ref=1.0, discretisation=discretisation)
    t = np.array([0.0, 0.5, 1.0, 3.0])
    sol = Solver(model, n0, rtol=1e-9, atol=1e-13).solve({"pl_P1": 0.3}, t)
    m1 = sol.N[0] @ grid.total_volumes()
    np.testing.assert_allclose(m1, m1[0], rtol=1e-12)
    np.testing.assert_allclose(sol.N[0].sum(axis=1), 1.0 + 0.3 * m1[0] * t, rtol=1e-7)
    assert sol.fines_fraction[0] > 0.1


def test_fines_keep_the_number_of_particles_in_2d() -> None:
    grid = Grid.geometric(2, 6, 2.0, (1.0, 1.0))
    n0 = np.zeros(grid.n)
    n0[[5, 2 * 6 + 3, 4 * 6]] = 1.0  # pure component 2, a mixed class, pure component 1
    model = Model(grid, None, "linear", "binary", v_ref=1.0)
    t = np.array([0.0, 0.5, 1.0, 3.0])
    sol = Solver(model, n0, rtol=1e-9, atol=1e-13).solve({"pl_P1": 0.3}, t)
    per_component = sol.N[0] @ grid.volumes()
    np.testing.assert_allclose(per_component, per_component[[0, 0, 0, 0]], rtol=1e-12)
    m1 = per_component.sum(axis=1)
    np.testing.assert_allclose(sol.N[0].sum(axis=1), 3.0 + 0.3 * m1[0] * t, rtol=1e-7)
    assert sol.N[0][-1, 0] > 0  # the fines class holds particles
