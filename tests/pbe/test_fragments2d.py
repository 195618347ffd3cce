"""PSD_opt's 2-D fragment distribution (fragments spread over both components) against
quadrature of the published densities, conservation, and its config."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.integrate import dblquad

from hpcopt.problems.pbe.fragments2d import SpreadFragmentOperator
from hpcopt.problems.pbe.grid import Grid
from hpcopt.problems.pbe.sections import PBEModel
from hpcopt.problems.pbe.solver import Model, Solver

# b(s, u) per unit s = x1 / y1 and u = x3 / y3, from PSD_opt's breakage_func_2d (theta)
DENSITIES = {
    "binary": lambda s, u, v: 2.0,
    "power_law": lambda s, u, v: v * (v + 1) * (s * u) ** (v - 1),
    "parabolic_power_law": lambda s, u, v: (v + 2) * (v + 1) * (s * u) ** (v - 1)
    * (1 - s * u) * v / 2,
}  # fmt: skip
CASES = [("binary", 1.0, 2.0), ("power_law", 1.5, 2.5 / 1.5), ("parabolic_power_law", 2.0, 20 / 12)]


def hat(pivots: np.ndarray, k: int, w: float) -> float:
    """The fixed-pivot share of pivot ``k`` of a particle of volume ``w``."""
    return float(np.interp(w, pivots, np.eye(len(pivots))[k]))


@pytest.mark.parametrize(("fragments", "v", "count"), CASES)
def test_spread_fragments_equal_quadrature_of_the_density(fragments, v, count) -> None:
    grid = Grid.geometric(2, 4, 2.0, (1.0, 1.0))
    u1, u2 = grid.components
    F = SpreadFragmentOperator.build(grid).matrices(fragments, {"pl_v": np.array([v])}, 1)[0]
    parent = 3 * 4 + 2  # (4, 2) of component volume
    a1, a2 = u1[3], u2[2]
    for k1 in range(4):
        for k2 in range(3):
            expected, _ = dblquad(
                lambda u, s, k1=k1, k2=k2: DENSITIES[fragments](s, u, v)
                * hat(u1, k1, s * a1)
                * hat(u2, k2, u * a2),
                0, 1, 0, 1, epsabs=1e-11,
            )  # fmt: skip
            assert F[k1 * 4 + k2, parent] == pytest.approx(expected, abs=1e-8)
    assert F[:, parent].sum() == pytest.approx(count, rel=1e-12)


@pytest.mark.parametrize(("fragments", "v", "count"), CASES)
def test_spread_fragments_keep_both_components_volumes(fragments, v, count) -> None:
    grid = Grid.geometric(2, 7, 2.0, (1.0, 3.0))
    F = SpreadFragmentOperator.build(grid).matrices(fragments, {"pl_v": np.array([v])}, 1)[0]
    volumes = grid.volumes()
    np.testing.assert_allclose(F.T @ volumes, volumes, rtol=1e-12, atol=1e-12)
    mixed = np.all(volumes > 0, axis=1)
    np.testing.assert_allclose(F[:, mixed].sum(axis=0), count, rtol=1e-12)


@pytest.mark.parametrize(("fragments", "v", "count"), CASES)
def test_spread_fragments_into_cells_equal_quadrature_and_keep_both_volumes(
    fragments, v, count
) -> None:
    grid = Grid.geometric(2, 5, 2.0, (1.0, 1.0))
    (e1, e2), n = grid.edges, grid.n
    op = SpreadFragmentOperator.build(grid, cell_average=True)
    F = op.matrices(fragments, {"pl_v": np.array([v])}, 1)[0]
    number, v1, v2 = F[:n], F[n : 2 * n], F[2 * n :]
    parent = 4 * 5 + 3  # component volumes (8, 4)
    a1, a2 = grid.volumes()[parent]
    for k1, k2 in ((0, 0), (1, 2), (3, 1), (4, 3)):
        s_lo, s_hi = min(e1[k1] / a1, 1), min(e1[k1 + 1] / a1, 1)
        u_lo, u_hi = min(e2[k2] / a2, 1), min(e2[k2 + 1] / a2, 1)
        expected, _ = dblquad(
            lambda u, s: DENSITIES[fragments](s, u, v), s_lo, s_hi, u_lo, u_hi, epsabs=1e-11
        )
        assert number[k1 * 5 + k2, parent] == pytest.approx(expected, abs=1e-8)
    volumes = grid.volumes()
    np.testing.assert_allclose(v1.sum(axis=0), volumes[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v2.sum(axis=0), volumes[:, 1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(number[:, op.mixed()].sum(axis=0), count, rtol=1e-12)
    cells = np.indices(grid.shape).reshape(2, -1)  # each fragment lands in its own cell
    for c, volume in enumerate((v1, v2)):
        low, high = grid.edges[c][cells[c]], grid.edges[c][cells[c] + 1]
        assert np.all(volume >= low[:, None] * number - 1e-12)
        assert np.all(volume <= high[:, None] * number + 1e-12)


def test_pure_parents_break_as_in_1d_and_stay_pure() -> None:
    grid = Grid.geometric(2, 6, 2.0, (1.0, 1.0))
    params = {"pl_v": np.array([1.5])}
    spread = SpreadFragmentOperator.build(grid)
    F = spread.matrices("power_law", params, 1)[0]
    pure = ~spread.mixed()
    np.testing.assert_array_equal(
        F[:, pure], spread.parent.matrices("power_law", params, 1)[0][:, pure]
    )


@pytest.mark.parametrize("discretisation", ["fixed_pivot", "cell_average"])
def test_a_solve_with_spread_fragments_keeps_volumes_and_counts_every_break(
    discretisation: str,
) -> None:
    grid = Grid.geometric(2, 7, 2.0, (1.0, 1.0))
    n0 = np.zeros(grid.n)
    n0[[6 * 7 + 6, 3 * 7 + 5, 6]] = 1.0
    model = Model(
        grid, None, "linear", "binary", v_ref=1.0, discretisation=discretisation,
        fragment_composition="spread",
    )  # fmt: skip
    t = np.array([0.0, 0.2, 1.0])
    sol = Solver(model, n0, rtol=1e-9, atol=1e-13).solve({"pl_P1": 0.1}, t)
    per_component = sol.N[0] @ grid.volumes()
    np.testing.assert_allclose(per_component, per_component[[0, 0, 0]], rtol=1e-11)
    m1 = per_component.sum(axis=1)[0]
    np.testing.assert_allclose(sol.N[0].sum(axis=1), 3.0 + 0.1 * m1 * t, rtol=1e-7)
    plain = Model(grid, None, "linear", "binary", v_ref=1.0, discretisation=discretisation)
    kept = Solver(plain, n0).solve({"pl_P1": 0.1}, t)
    assert not np.allclose(sol.N[0][-1], kept.N[0][-1], rtol=1e-3)  # compositions spread


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dim": 1}, "spread is for 2-D runs"),
        ({"fragments": "four_fragments"}, "spread takes fragments binary, power_law"),
        ({"fragments": "product_power_law"}, "not 'product_power_law'"),
    ],
)
def test_spread_fragments_are_refused_where_they_mean_nothing(changes, message) -> None:
    section = {
        "dim": 2,
        "grid": {"classes": 6, "x0_um": [1.0, 1.0]},
        "fragments": "power_law",
        "fragment_composition": "spread",
    }
    section.update(changes)
    if section["dim"] == 1:
        section["grid"] = {"classes": 6, "x0_um": 1.0}
        section["initial"] = {"kind": "primary"}
    with pytest.raises(ValidationError, match=message):
        PBEModel(**section)
    PBEModel(**{**section, "fragment_composition": "parent"})
