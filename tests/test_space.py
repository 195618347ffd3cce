import numpy as np
import pytest

from hpcopt.core.space import Param, Space


def make_space():
    return Space([Param("a", -2.0, 6.0), Param("rate", 1e-4, 1e2, log=True)])


def test_decode_maps_unit_cube_corners_to_bounds():
    s = make_space()
    x = s.decode(np.array([[0.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_array_equal(x, [[-2.0, 1e-4], [6.0, 1e2]])


def test_log_parameter_is_geometric_in_unit_space():
    s = make_space()
    x = s.decode(np.array([[0.5, 0.5]]))
    assert x[0, 0] == 2.0
    np.testing.assert_allclose(x[0, 1], 1e-1, rtol=1e-12)


def test_encode_inverts_decode():
    s = make_space()
    u = np.random.default_rng(0).random((50, 2))
    np.testing.assert_allclose(s.encode(s.decode(u)), u, atol=1e-12)


def test_decode_clips_points_outside_the_cube():
    s = make_space()
    np.testing.assert_array_equal(s.decode(np.array([[-0.5, 1.5]])), [[-2.0, 1e2]])


def test_gradient_to_unit_matches_finite_differences():
    s = make_space()

    def f(x):
        return x[0] ** 2 + np.log(x[1]) * x[0]

    def grad(x):
        return np.array([2 * x[0] + np.log(x[1]), x[0] / x[1]])

    u = np.array([0.3, 0.6])
    h = 1e-6
    fd = [(f(s.decode(u + h * e)) - f(s.decode(u - h * e))) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(s.gradient_to_unit(s.decode(u), grad(s.decode(u))), fd, rtol=1e-6)


def test_param_with_low_not_below_high_is_refused():
    with pytest.raises(ValueError, match=r"low .* must be < high"):
        Param("a", 1.0, 1.0)


def test_log_param_needs_positive_low():
    with pytest.raises(ValueError, match="log scale needs low > 0"):
        Param("a", 0.0, 1.0, log=True)


def test_per_param_expands_mapping_with_default():
    s = make_space()
    np.testing.assert_array_equal(s.per_param({"rate": 0.5, "default": 0.1}, "lr"), [0.1, 0.5])


def test_per_param_names_unknown_parameter():
    with pytest.raises(ValueError, match=r"lr: unknown parameter\(s\) \['b'\]"):
        make_space().per_param({"b": 1.0}, "lr")
