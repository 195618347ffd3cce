"""Cost terms: parsing config lists, resolving qx / Qx, metrics and their weighted sum."""

from __future__ import annotations

import numpy as np
import pytest

from hpcopt.problems.pbe.cost import CostTerm, metric, parse_cost, resolve, total_cost

MODEL = np.array([[1.0, 2.0], [3.0, 4.0]])
DATA = np.array([[1.0, 1.0], [1.0, 2.0]])


def test_parse_cost_reads_pairs_and_optional_weights():
    terms = parse_cost([["qx", "MSE"], ["x_50", "RMSE", 2]])
    assert terms == (CostTerm("qx", "MSE", 1.0), CostTerm("x_50", "RMSE", 2.0))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ([], "non-empty list"),
        ("qx", "non-empty list"),
        ([["qx", "MSE"], "q3"], r"cost\[1\] = 'q3': expected \[target, metric\]"),
        ([["qx"]], r"cost\[0\].*expected \[target, metric\]"),
        ([["q2", "MSE"]], r"cost\[0\].*unknown target 'q2'; allowed: qx, Qx, q0, q3, Q0, Q3, x_10"),
        ([["qx", "L2"]], r"cost\[0\].*unknown metric 'L2'; allowed: MSE, RMSE, MAE, KL"),
        ([["qx", "MSE"], ["Q3", "KL"]], r"cost\[1\].*KL.*only allowed for the densities qx, q0"),
        ([["x_50", "KL"]], "only allowed for the densities"),
        ([["qx", "MSE", -1]], r"weight must be a finite number >= 0, got -1"),
        ([["qx", "MSE", "1"]], r"weight must be a finite number >= 0, got '1'"),
        ([["qx", "MSE", float("nan")]], "weight must be a finite number"),
    ],
)
def test_parse_cost_names_the_bad_item(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_cost(spec)


@pytest.mark.parametrize(
    ("target", "data_quantity", "expected"),
    [
        ("qx", "q0", "q0"),
        ("qx", "Q0", "q0"),
        ("qx", "Q3", "q3"),
        ("Qx", "q3", "Q3"),
        ("Qx", "Q0", "Q0"),
        ("q3", "Q0", "q3"),
        ("x_50", "q0", "x_50"),
    ],
)
def test_resolve_takes_qx_and_Qx_in_the_datas_basis(target, data_quantity, expected):
    assert resolve(CostTerm(target, "MSE"), data_quantity) == expected


def test_mse_on_a_small_array():
    assert metric(MODEL, DATA, "MSE") == pytest.approx((0 + 1 + 4 + 4) / 4)


def test_rmse_on_a_small_array():
    assert metric(MODEL, DATA, "RMSE") == pytest.approx(1.5)


def test_mae_on_a_small_array():
    assert metric(MODEL, DATA, "MAE") == pytest.approx((0 + 1 + 2 + 2) / 4)


def test_kl_on_a_small_array_is_kl_of_data_from_model():
    model = np.array([[1.0, 1.0], [2.0, 2.0]])
    data = np.array([[1.0, 3.0], [2.0, 2.0]])
    row0 = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)
    assert metric(model, data, "KL") == pytest.approx(row0 / 2)


def test_kl_of_identical_rows_is_zero_even_with_empty_classes():
    rows = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    assert metric(rows, rows, "KL") == 0.0


def test_kl_treats_negative_model_values_as_empty_classes():
    data = np.array([[0.5, 0.5]])
    assert np.isfinite(metric(np.array([[1.0, -1.0]]), data, "KL"))
    assert metric(np.array([[1.0, -1.0]]), data, "KL") > 1.0


def test_metrics_keep_the_batch_axes():
    batch = np.stack([MODEL, DATA, MODEL])[None]
    for name in ("MSE", "RMSE", "MAE", "KL"):
        values = metric(batch, DATA, name)
        assert values.shape == (1, 3)
        assert values[0, 1] == 0.0 and values[0, 0] == values[0, 2] > 0


def test_metric_needs_time_and_size_axes():
    with pytest.raises(ValueError, match=r"needs \(\.\.\., T, n\) arrays"):
        metric(np.ones(3), np.ones(3), "MSE")


def test_total_cost_weighs_and_sums_the_terms():
    grids = {"q3": MODEL, "Q3": MODEL + 1.0}
    terms = parse_cost([["q3", "MSE", 2.0], ["Q3", "MAE", 0.5]])
    cost = total_cost(terms, grids.__getitem__, lambda target: DATA)
    assert cost == pytest.approx(2.0 * 9 / 4 + 0.5 * (1 + 2 + 3 + 3) / 4)


def test_total_cost_compares_x50_series_and_keeps_the_batch():
    model_x50 = np.array([[10.0, 12.0], [10.0, 10.0]])  # (batch 2, T 2)
    data_x50 = np.array([10.0, 10.0])
    terms = parse_cost([["x_50", "RMSE"]])
    cost = total_cost(terms, lambda target: model_x50, lambda target: data_x50)
    np.testing.assert_allclose(cost, [np.sqrt(2.0), 0.0])


def test_total_cost_asks_the_grids_for_the_resolved_target():
    asked = []

    def grid(target: str) -> np.ndarray:
        asked.append(target)
        return DATA

    total_cost(parse_cost([["qx", "MSE"], ["Qx", "MSE"]]), grid, grid, data_quantity="Q0")
    assert asked == ["q0", "q0", "Q0", "Q0"]


def test_total_cost_needs_the_data_quantity_for_qx():
    with pytest.raises(ValueError, match="'qx' depends on the data: pass data_quantity"):
        total_cost(parse_cost([["qx", "MSE"]]), lambda t: DATA, lambda t: DATA)
