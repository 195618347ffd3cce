import numpy as np
import pytest

from hpcopt.core import plain


def test_floats_survive_bit_for_bit():
    values = [0.1, 1 / 3, np.nextafter(1.0, 2.0), 1e-308, float("inf"), -0.0]
    back = plain.loads(plain.dumps(values))
    assert [v.hex() for v in back] == [float(v).hex() for v in values]


def test_nan_survives():
    assert np.isnan(plain.loads(plain.dumps({"v": float("nan")}))["v"])


def test_arrays_keep_dtype_shape_and_bits():
    arr = np.random.default_rng(1).random((3, 4)).astype(np.float32)
    back = plain.loads(plain.dumps({"a": arr, "i": np.arange(5, dtype=np.uint8)}))
    assert back["a"].dtype == np.float32 and back["a"].shape == (3, 4)
    assert back["a"].tobytes() == arr.tobytes()
    np.testing.assert_array_equal(back["i"], np.arange(5))


def test_numpy_rng_state_round_trips():
    rng = np.random.default_rng(7)
    rng.random(3)
    state = plain.loads(plain.dumps(rng.bit_generator.state))
    other = np.random.default_rng()
    other.bit_generator.state = state
    assert other.random() == rng.random()


def test_objects_are_refused():
    with pytest.raises(TypeError, match="not plain data"):
        plain.dumps({"f": object()})
