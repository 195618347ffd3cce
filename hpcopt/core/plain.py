"""Exact JSON for plain data: numbers, strings, lists, dicts and numpy arrays.

Method checkpoints go through this. Floats survive bit for bit (Python's ``repr`` round
trip, and arrays as raw bytes), Python ints of any size survive (RNG states hold 128-bit
integers), NaN and infinities survive.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

_ARRAY = "__ndarray__"


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("object arrays are not plain data")
        arr = np.ascontiguousarray(obj)
        return {
            _ARRAY: base64.b64encode(arr.tobytes()).decode("ascii"),
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, str):
                raise TypeError(f"plain-data dict keys must be str, got {k!r}")
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"{type(obj).__name__} is not plain data")


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if _ARRAY in obj:
            raw = base64.b64decode(obj[_ARRAY])
            return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Serialise plain data to a JSON string (``TypeError`` on anything else)."""
    return json.dumps(_encode(obj), allow_nan=True, separators=(",", ":"))


def loads(text: str) -> Any:
    """Inverse of :func:`dumps`; tuples come back as lists."""
    return _decode(json.loads(text))
