"""Particle-size distributions: fractions, q / Q on cells, data regridding, KDE, x_50."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import norm

from hpcopt.problems.pbe.psd import (
    characteristic_size,
    class_fractions,
    data_on_cells,
    density_to_cumulative,
    kde,
    on_cells,
    size_to_volume,
    volume_to_size,
)

MEDIAN, SIGMA = 10.0, 0.5
FINE = np.geomspace(0.1, 1000.0, 2000)


def lognormal_q(x: np.ndarray, median: float, sigma: float) -> np.ndarray:
    """Density per unit size of a lognormal with ``median`` and ln-std ``sigma``."""
    return norm.pdf(np.log(x), np.log(median), sigma) / x


def lognormal_Q(x: np.ndarray, median: float, sigma: float) -> np.ndarray:
    return norm.cdf(np.log(x), np.log(median), sigma)


def grid(lo: float, hi: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Geometric cells: pivots (n,) at the geometric mean of edges (n+1,)."""
    edges = np.geomspace(lo, hi, n + 1)
    return np.sqrt(edges[:-1] * edges[1:]), edges


def lognormal_counts(edges: np.ndarray, medians: np.ndarray, sigma: float) -> np.ndarray:
    """Exact number fractions per cell of number lognormals, one row per median."""
    return np.diff(lognormal_Q(edges, np.asarray(medians)[..., None], sigma), axis=-1)


def test_volume_and_size_are_inverse():
    x = np.array([0.5, 1.0, 3.0])
    np.testing.assert_allclose(volume_to_size(size_to_volume(x)), x)
    assert size_to_volume(np.array([2.0]))[0] == pytest.approx(4.0 / 3.0 * np.pi)


def test_number_fractions_sum_to_one():
    N = np.array([[1.0, 3.0, 4.0], [2.0, 0.0, 2.0]])
    f = class_fractions(N, np.array([1.0, 2.0, 3.0]), 0)
    np.testing.assert_allclose(f.sum(axis=-1), 1.0)
    np.testing.assert_allclose(f[0], [0.125, 0.375, 0.5])


def test_volume_fractions_weigh_by_size_cubed():
    f = class_fractions(np.array([1.0, 1.0]), np.array([1.0, 2.0]), 3)
    np.testing.assert_allclose(f, [1.0 / 9.0, 8.0 / 9.0])


def test_zero_rows_give_zeros_without_warnings():
    x, edges = grid(1.0, 10.0, 4)
    N = np.zeros((2, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for quantity in ("q0", "q3", "Q0", "Q3"):
            assert not on_cells(N, x, edges, quantity).any()
        assert not kde(N, x, np.geomspace(1.0, 10.0, 7), 3).any()
        assert not density_to_cumulative(x, np.zeros(4)).any()


def test_q_on_cells_integrates_to_one():
    x, edges = grid(1.0, 100.0, 30)
    N = np.random.default_rng(0).random((2, 5, 30))
    for quantity in ("q0", "q3"):
        q = on_cells(N, x, edges, quantity)
        np.testing.assert_allclose(q @ np.diff(edges), 1.0)


def test_Q_on_cells_is_monotone_and_ends_at_one():
    x, edges = grid(1.0, 100.0, 30)
    N = np.random.default_rng(1).random((4, 30))
    for quantity in ("Q0", "Q3"):
        Q = on_cells(N, x, edges, quantity)
        assert (np.diff(Q, axis=-1) >= 0).all()
        np.testing.assert_allclose(Q[..., -1], 1.0)


def test_data_given_as_density_matches_exact_cell_fractions():
    _, edges = grid(1.0, 100.0, 20)
    exact = np.diff(lognormal_Q(edges, MEDIAN, SIGMA))
    q = data_on_cells(FINE, lognormal_q(FINE, MEDIAN, SIGMA), "q3", edges, "q3")
    np.testing.assert_allclose(q * np.diff(edges), exact / exact.sum(), atol=1e-4)


def test_data_given_as_cumulative_matches_exact_cell_fractions():
    _, edges = grid(1.0, 100.0, 20)
    exact = np.diff(lognormal_Q(edges, MEDIAN, SIGMA))
    q = data_on_cells(FINE, lognormal_Q(FINE, MEDIAN, SIGMA), "Q3", edges, "q3")
    np.testing.assert_allclose(q * np.diff(edges), exact / exact.sum(), atol=1e-4)


def test_number_data_convert_to_the_volume_lognormal_shifted_by_three_sigma_squared():
    _, edges = grid(1.0, 1000.0, 80)
    Q3 = data_on_cells(FINE, lognormal_q(FINE, MEDIAN, SIGMA), "q0", edges, "Q3")
    volume_median = MEDIAN * np.exp(3.0 * SIGMA**2)
    np.testing.assert_allclose(Q3, lognormal_Q(edges[1:], volume_median, SIGMA), atol=3e-3)


def test_volume_data_convert_back_to_number():
    _, edges = grid(1.0, 1000.0, 80)
    volume_median = MEDIAN * np.exp(3.0 * SIGMA**2)
    Q0 = data_on_cells(FINE, lognormal_Q(FINE, volume_median, SIGMA), "Q3", edges, "Q0")
    np.testing.assert_allclose(Q0, lognormal_Q(edges[1:], MEDIAN, SIGMA), atol=3e-3)


def test_data_cumulative_is_interpolated_at_the_edges_and_clamped_outside():
    Q0 = data_on_cells(np.array([1.0, 2.0]), np.array([0.6, 1.0]), "Q0", [0.0, 1.5, 3.0], "Q0")
    np.testing.assert_allclose(Q0, [0.8, 1.0])


def test_basis_conversion_weighs_by_the_pivot_cubed_with_the_upper_edge_after_zero():
    # number fractions [0.5, 0.5]; pivots 1 (lower edge 0) and sqrt(1 * 4) = 2
    Q3 = data_on_cells(np.array([1.0, 4.0]), np.array([0.5, 1.0]), "Q0", [0.0, 1.0, 4.0], "Q3")
    np.testing.assert_allclose(Q3, [1.0 / 9.0, 1.0])


def test_data_on_cells_keeps_batch_axes():
    _, edges = grid(1.0, 100.0, 10)
    rows = np.stack([lognormal_q(FINE, m, SIGMA) for m in (5.0, 20.0)])
    q = data_on_cells(FINE, rows[None], "q0", edges, "q0")
    assert q.shape == (1, 2, 10)
    assert np.argmax(q[0, 0]) < np.argmax(q[0, 1])


def test_density_to_cumulative_ends_at_one():
    Q = density_to_cumulative(FINE, 3.0 * lognormal_q(FINE, MEDIAN, SIGMA))
    assert Q[0] == 0.0 and Q[-1] == pytest.approx(1.0)
    assert np.interp(MEDIAN, FINE, Q) == pytest.approx(0.5, abs=1e-3)


def test_characteristic_size_of_exact_lognormals_is_the_median_for_a_batch():
    _, edges = grid(0.1, 1000.0, 200)
    medians = np.array([2.0, 10.0, 30.0])
    Q_edges = lognormal_Q(edges, medians[:, None], SIGMA)
    np.testing.assert_allclose(characteristic_size(edges, Q_edges, 0.5), medians, rtol=1e-3)


def test_volume_x50_of_a_number_lognormal_is_the_volume_median():
    x, edges = grid(0.1, 1000.0, 200)
    medians = np.array([2.0, 10.0, 30.0])
    Q3 = on_cells(lognormal_counts(edges, medians, SIGMA), x, edges, "Q3")
    Q_edges = np.concatenate([np.zeros((3, 1)), Q3], axis=-1)
    x50 = characteristic_size(edges, Q_edges, 0.5)
    np.testing.assert_allclose(x50, medians * np.exp(3.0 * SIGMA**2), rtol=3e-3)


def test_characteristic_size_interpolates_linearly_between_edges():
    edges = np.array([0.0, 1.0, 2.0, 4.0])
    Q_edges = np.array([[0.0, 0.2, 0.6, 1.0], [0.0, 0.5, 0.5, 1.0]])
    np.testing.assert_allclose(characteristic_size(edges, Q_edges, 0.5), [1.75, 1.0])
    np.testing.assert_allclose(characteristic_size(edges, Q_edges, 0.1), [0.5, 0.2])


def test_characteristic_size_is_nan_for_a_zero_row():
    assert np.isnan(characteristic_size(np.arange(4.0), np.zeros(4), 0.5))


def test_kde_recovers_a_broad_lognormal_roughly():
    x, edges = grid(0.1, 1000.0, 100)
    x_eval = np.geomspace(1.0, 100.0, 300)
    q = kde(lognormal_counts(edges, MEDIAN, SIGMA), x, x_eval, 0)
    true = lognormal_q(x_eval, MEDIAN, SIGMA)
    l1 = np.sum(np.abs(q - true)[:-1] * np.diff(x_eval))
    assert l1 < 0.2
    median = np.interp(0.5, density_to_cumulative(x_eval, q), x_eval)
    assert median == pytest.approx(MEDIAN, rel=0.02)


def test_kde_integrates_to_one_over_x_eval():
    x, edges = grid(0.1, 1000.0, 100)
    x_eval = np.geomspace(0.5, 200.0, 150)
    q = kde(lognormal_counts(edges, [5.0, 20.0], SIGMA), x, x_eval, 3, bandwidth=0.2)
    assert q.shape == (2, 150)
    total = np.sum(0.5 * (q[:, 1:] + q[:, :-1]) * np.diff(x_eval), axis=-1)
    np.testing.assert_allclose(total, 1.0)


def test_kde_flattens_the_peak_of_a_narrow_distribution():
    x, edges = grid(0.1, 1000.0, 100)
    x_eval = np.geomspace(5.0, 20.0, 500)
    narrow = 0.05
    q = kde(lognormal_counts(edges, MEDIAN, narrow), x, x_eval, 0)
    assert q.max() < 0.8 * lognormal_q(x_eval, MEDIAN, narrow).max()


def test_kde_rejects_a_non_positive_bandwidth():
    x, _ = grid(1.0, 10.0, 5)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        kde(np.ones(5), x, x, 0, bandwidth=0.0)


def test_unknown_basis_and_quantity_are_rejected():
    x, edges = grid(1.0, 10.0, 5)
    with pytest.raises(ValueError, match="basis must be 0"):
        class_fractions(np.ones(5), x, 2)
    with pytest.raises(ValueError, match="allowed: q0, q3, Q0, Q3"):
        on_cells(np.ones(5), x, edges, "q2")
