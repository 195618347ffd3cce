"""Measured PSD data: validation, CSV / HDF5 files and synthetic noise."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.stats import norm

from hpcopt.problems.pbe.data import PSDData, PSDDataError, add_noise, load_psd, save_psd

X = np.geomspace(1.0, 100.0, 40)
T = np.array([0.0, 60.0, 120.0])
MEDIANS = np.array([5.0, 10.0, 20.0])
Q3 = norm.cdf(np.log(X), np.log(MEDIANS)[:, None], 0.6)
q3 = norm.pdf(np.log(X), np.log(MEDIANS)[:, None], 0.6) / X
HEADER = "# quantity: q3\n# size_unit: um\nt,1.0,2.0,4.0\n"
NOISE_MODELS = ("gaussian", "uniform", "poisson", "multiplicative")


def density() -> PSDData:
    return PSDData(t=T, x=X, values=q3, quantity="q3")


def cumulative() -> PSDData:
    return PSDData(t=T, x=X, values=Q3 / Q3[:, -1:], quantity="Q3")


def write(tmp_path, text: str, name: str = "psd.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def trapezoid(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.sum(0.5 * (q[..., 1:] + q[..., :-1]) * np.diff(x), axis=-1)


@pytest.mark.parametrize("name", ["psd.csv", "psd.h5", "psd.hdf5"])
def test_files_round_trip_exactly(tmp_path, name):
    data = PSDData(t=T, x=X, values=q3 * 1.2345, quantity="q3", size_unit="mm")
    save_psd(tmp_path / name, data)
    back = load_psd(tmp_path / name)
    for field in ("t", "x", "values"):
        np.testing.assert_array_equal(getattr(back, field), getattr(data, field))
    assert (back.quantity, back.size_unit) == ("q3", "mm")


def test_the_documented_csv_example_loads(tmp_path):
    data = load_psd(write(tmp_path, HEADER + "0,0.1,0.5,0.2\n60,0.05,0.4,0.3\n"))
    np.testing.assert_array_equal(data.x, [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(data.t, [0.0, 60.0])
    np.testing.assert_array_equal(data.values[1], [0.05, 0.4, 0.3])


def test_csv_header_may_say_time_in_any_case(tmp_path):
    data = load_psd(write(tmp_path, "Time,1,2\n0,0.5,0.5\n"), quantity="q0", size_unit="um")
    assert data.quantity == "q0"


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("psd.csv", "", "empty file"),
        ("psd.csv", "# quantity: q3\n\n", "empty file"),
        ("psd.csv", "# quantity: q3\nsize,1,2\n0,1,1\n", "header must start with 't'"),
        ("psd.csv", HEADER, "no data rows"),
        ("psd.csv", HEADER + "0,0.1,abc,0.2\n", "line 4, column 3: 'abc' is not a number"),
        ("psd.csv", HEADER.replace("2.0", "two") + "0,1,1,1\n", "line 3, column 3: 'two'"),
        ("psd.csv", HEADER + "0,0.1,0.5\n", "line 4: ragged row with 3 cells, the header has 4"),
        ("psd.csv", HEADER.replace("4.0", "1.5") + "0,1,1,1\n", "sizes must be strictly incr"),
        ("psd.csv", HEADER + "60,1,1,1\n0,1,1,1\n", "times must not decrease"),
        ("psd.csv", HEADER + "-1,1,1,1\n", r"times must be finite and >= 0: t\[0\] = -1.0"),
        (
            "psd.csv",
            HEADER + "0,1,-0.5,1\n",
            r"values\[0, 1\] \(t = 0 s, x = 2 um\) = -0.5 is negative",
        ),
        (
            "psd.csv",
            HEADER + "0,1,nan,1\n",
            r"values\[0, 1\] \(t = 0 s, x = 2 um\) = nan is not finite",
        ),
        ("psd.txt", HEADER + "0,1,1,1\n", r"unknown file extension '.txt'; supported: .csv, .h5"),
    ],
)
def test_bad_files_name_the_problem_after_the_path(tmp_path, name, text, match):
    path = write(tmp_path, text, name)
    with pytest.raises(PSDDataError, match=match) as error:
        load_psd(path)
    assert str(error.value).startswith(str(path))


def test_a_decreasing_cumulative_is_rejected(tmp_path):
    path = write(tmp_path, HEADER.replace("q3", "Q3") + "0,0.2,0.6,0.5\n")
    with pytest.raises(
        PSDDataError,
        match=r"values\[0, 2\] \(t = 0 s, x = 4 um\) = 0.5 is below the value before it",
    ):
        load_psd(path)


def test_a_cumulative_above_one_is_rejected(tmp_path):
    path = write(tmp_path, HEADER.replace("q3", "Q3") + "0,0.2,0.6,1.01\n")
    with pytest.raises(PSDDataError, match=r"= 1\.01 exceeds 1"):
        load_psd(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(PSDDataError, match=r"nothere\.csv: no such file"):
        load_psd(tmp_path / "nothere.csv")


def test_a_missing_hdf5_dataset_is_named(tmp_path):
    with h5py.File(tmp_path / "psd.h5", "w") as f:
        f["t"], f["x"] = T, X
        f.attrs["quantity"], f.attrs["size_unit"] = "q3", "um"
    with pytest.raises(PSDDataError, match=r"missing dataset 'values' \(found: t, x\)"):
        load_psd(tmp_path / "psd.h5")


def test_an_hdf5_shape_mismatch_is_reported(tmp_path):
    with h5py.File(tmp_path / "psd.h5", "w") as f:
        f["t"], f["x"], f["values"] = T, X, q3[:2]
        f.attrs["quantity"], f.attrs["size_unit"] = "q3", "um"
    with pytest.raises(PSDDataError, match=r"shape mismatch: values have shape \(2, 40\)"):
        load_psd(tmp_path / "psd.h5")


def test_a_file_that_is_not_hdf5_is_reported(tmp_path):
    with pytest.raises(PSDDataError, match="not a readable HDF5 file"):
        load_psd(write(tmp_path, "hello", "psd.h5"))


def test_arguments_disagreeing_with_the_file_name_both(tmp_path):
    path = write(tmp_path, HEADER + "0,1,1,1\n")
    with pytest.raises(PSDDataError, match="quantity 'Q3' passed as argument disagrees with 'q3'"):
        load_psd(path, quantity="Q3")
    with pytest.raises(PSDDataError, match="size_unit 'mm' passed as argument disagrees with 'um'"):
        load_psd(path, size_unit="mm")


def test_arguments_that_agree_with_the_file_are_accepted(tmp_path):
    data = load_psd(write(tmp_path, HEADER + "0,1,1,1\n"), quantity="q3", size_unit="um")
    assert (data.quantity, data.size_unit) == ("q3", "um")


def test_undeclared_metadata_says_how_to_declare_it(tmp_path):
    path = write(tmp_path, "t,1,2\n0,1,1\n")
    with pytest.raises(PSDDataError, match=r"no quantity declared: add a '# quantity: \.\.\.'"):
        load_psd(path, size_unit="um")
    with pytest.raises(PSDDataError, match="no size_unit declared"):
        load_psd(path, quantity="q0")


def test_metadata_from_arguments_fills_a_bare_file(tmp_path):
    data = load_psd(write(tmp_path, "t,1,2\n0,1,1\n"), quantity="q0", size_unit="nm")
    assert (data.quantity, data.size_unit) == ("q0", "nm")


def test_an_unknown_quantity_lists_the_allowed_ones():
    with pytest.raises(PSDDataError, match="allowed: q0, q3, Q0, Q3"):
        PSDData(t=T, x=X, values=q3, quantity="q2")


@pytest.mark.parametrize("model", NOISE_MODELS)
def test_noise_changes_the_values(model):
    noisy = add_noise(
        density(), model, 0.1 if model != "poisson" else 100, np.random.default_rng(0)
    )
    assert not np.allclose(noisy.values, q3)


@pytest.mark.parametrize("model", NOISE_MODELS)
def test_noise_is_reproducible_with_a_seeded_rng(model):
    first = add_noise(cumulative(), model, 50, np.random.default_rng(3))
    second = add_noise(cumulative(), model, 50, np.random.default_rng(3))
    np.testing.assert_array_equal(first.values, second.values)


@pytest.mark.parametrize("model", NOISE_MODELS)
def test_noisy_densities_stay_non_negative_and_keep_their_integral(model):
    noisy = add_noise(density(), model, 0.5 if model != "poisson" else 20, np.random.default_rng(1))
    assert (noisy.values >= 0).all()
    np.testing.assert_allclose(trapezoid(X, noisy.values), trapezoid(X, q3))


@pytest.mark.parametrize("model", NOISE_MODELS)
def test_noisy_cumulatives_stay_monotone_and_end_at_one(model):
    noisy = add_noise(
        cumulative(), model, 0.5 if model != "poisson" else 20, np.random.default_rng(2)
    )
    assert (noisy.values >= 0).all() and (np.diff(noisy.values, axis=1) >= 0).all()
    np.testing.assert_allclose(noisy.values[:, -1], 1.0)


def test_multiplicative_noise_has_the_requested_relative_std():
    x = np.linspace(1.0, 2.0, 5000)
    data = PSDData(t=T, x=x, values=np.ones((3, x.size)), quantity="q0")
    noisy = add_noise(data, "multiplicative", 0.1, np.random.default_rng(4))
    assert np.std(noisy.values - 1.0) == pytest.approx(0.1, rel=0.05)


def test_poisson_noise_shrinks_as_more_particles_are_counted():
    def error(level: float) -> float:
        noisy = add_noise(density(), "poisson", level, np.random.default_rng(5))
        return float(np.abs(noisy.values - q3).mean())

    assert error(1e6) < 0.1 * error(1e3)


def test_noise_rejects_an_unknown_model_and_a_bad_level():
    with pytest.raises(ValueError, match="allowed: gaussian, uniform, poisson, multiplicative"):
        add_noise(density(), "pink", 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="poisson noise level must be finite and > 0"):
        add_noise(density(), "poisson", 0, np.random.default_rng(0))


def test_repeated_times_are_samples_of_one_time_point(tmp_path):
    data = load_psd(write(tmp_path, HEADER + "0,0.1,0.5,0.2\n60,0.05,0.4,0.3\n60,0.07,0.38,0.31\n"))
    np.testing.assert_array_equal(data.t, [0.0, 60.0, 60.0])
    np.testing.assert_array_equal(data.times, [0.0, 60.0])
    np.testing.assert_array_equal(data.time_index, [0, 1, 1])
    np.testing.assert_array_equal(data.values[2], [0.07, 0.38, 0.31])


@pytest.mark.parametrize("name", ["psd.csv", "psd.h5"])
def test_repeated_samples_round_trip(tmp_path, name):
    data = PSDData(t=np.repeat(T, 2), x=X, values=np.repeat(q3, 2, axis=0), quantity="q3")
    save_psd(tmp_path / name, data)
    back = load_psd(tmp_path / name)
    np.testing.assert_array_equal(back.t, data.t)
    np.testing.assert_array_equal(back.values, data.values)


def test_samples_of_one_time_must_be_adjacent(tmp_path):
    path = write(tmp_path, HEADER + "0,1,1,1\n60,1,1,1\n0,1,1,1\n")
    with pytest.raises(
        PSDDataError,
        match=r"times must not decrease \(repeated samples of one time are adjacent rows\): "
        r"t\[2\] = 0 follows t\[1\] = 60",
    ):
        load_psd(path)
