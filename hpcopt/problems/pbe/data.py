"""Measured particle-size distributions: validation, CSV / HDF5 files and noise models.

A :class:`PSDData` holds ``R`` measured rows at times ``t`` (seconds) of one quantity
(``q0``, ``q3``, ``Q0`` or ``Q3``, see :mod:`hpcopt.problems.pbe.psd`) at ``m`` sizes ``x``
(in ``size_unit``, default ``um``). Rows that share a time are repeated samples of that
time point (replicate measurements); they must be adjacent, so times never decrease. Every
check names what is wrong (which row, which size column) in a :class:`PSDDataError`;
errors about a file start with its path.

File formats
------------
CSV (``.csv``): optional leading comment lines ``# quantity: q3`` and ``# size_unit: um``
declare the metadata (other ``#`` lines are free comments); then a header row whose first
cell is ``t`` (or ``time``, any case) and whose other cells are the sizes; then one row per
time point: the time, then the values::

    # quantity: q3
    # size_unit: um
    t,1.0,2.0,4.0
    0,0.1,0.5,0.2
    60,0.05,0.4,0.3

Repeated samples repeat the time::

    t,1.0,2.0,4.0
    0,0.1,0.5,0.2
    60,0.05,0.4,0.3
    60,0.07,0.38,0.31

HDF5 (``.h5``, ``.hdf5``): datasets ``t`` (R,), ``x`` (m,) and ``values`` (R, m);
attributes ``quantity`` and ``size_unit`` on the file root.

Both ``quantity`` and ``size_unit`` must be known: from the file, or from the arguments of
:func:`load_psd`. When both give one, they must agree.

Noise models (:func:`add_noise`)
--------------------------------
Values are noised as densities or fractions: ``q`` rows as they are; ``Q`` rows through
their increments (the first value counts as the increment from size 0), re-accumulated
afterwards so that rows stay monotone. With ``r`` the row's maximum:

- ``gaussian``: add ``N(0, (level * r)^2)``;
- ``uniform``: add ``U(-level, level) * r``;
- ``multiplicative``: multiply by ``1 + level * N(0, 1)``;
- ``poisson``: ``level`` particles are counted per time point; each size gets
  ``Poisson(level * its fraction)`` counts (a ``q`` value's fraction is its trapezoid share
  of the row's integral), scaled back to the row's normalisation.

Results are clipped at 0 and renormalised: ``q`` rows keep their trapezoid integral over
``x``, ``Q`` rows end at 1. The result depends only on the data and the generator's state.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import h5py
import numpy as np

from hpcopt.problems.pbe.psd import QUANTITIES, Quantity

NoiseModel = Literal["gaussian", "uniform", "poisson", "multiplicative"]
NOISE_MODELS: tuple[str, ...] = get_args(NoiseModel)
CSV_SUFFIXES = (".csv",)
HDF5_SUFFIXES = (".h5", ".hdf5")
METADATA_KEYS = ("quantity", "size_unit")
# Cumulatives may overshoot 1 by rounding in the file they came from.
CUMULATIVE_SLACK = 1e-6


class PSDDataError(ValueError):
    """Invalid particle-size data; when it came from a file, the message starts with its path."""


@dataclass(frozen=True)
class PSDData:
    """Measured PSDs: ``values`` (R, m) of ``quantity`` at times ``t`` (R,) in seconds and
    sizes ``x`` (m,) in ``size_unit``; rows with equal times are repeated samples of one
    time point (:attr:`times` lists the distinct ones, :attr:`time_index` maps rows to them).

    Checked on construction: ``t`` nondecreasing and >= 0; ``x`` strictly increasing
    and > 0 (at least two sizes); ``values`` finite and >= 0, and for ``Q`` data every row
    nondecreasing and at most 1 (+1e-6). Arrays are stored as float copies.
    """

    t: np.ndarray
    x: np.ndarray
    values: np.ndarray
    quantity: Quantity
    size_unit: str = "um"

    def __post_init__(self) -> None:
        for name in ("t", "x", "values"):
            object.__setattr__(self, name, _float_array(name, getattr(self, name)))
        if self.quantity not in QUANTITIES:
            raise PSDDataError(
                f"unknown quantity {self.quantity!r}; allowed: {', '.join(QUANTITIES)}"
            )
        if not isinstance(self.size_unit, str) or not self.size_unit.strip():
            raise PSDDataError(f"size_unit must be a non-empty string, got {self.size_unit!r}")
        self._check_shapes()
        _check_axis("t", self.t, "time", strictly_positive=False, repeats=True)
        _check_axis("x", self.x, "size", strictly_positive=True, repeats=False)
        self._check_values()

    @property
    def times(self) -> np.ndarray:
        """The distinct measurement times (T,), s, increasing."""
        return np.unique(self.t)

    @property
    def time_index(self) -> np.ndarray:
        """For each row, the index of its time in :attr:`times`, (R,) ints."""
        return np.searchsorted(self.times, self.t)

    def _check_shapes(self) -> None:
        if self.t.ndim != 1 or self.t.size == 0:
            raise PSDDataError(f"t must be a non-empty 1-D array, got shape {self.t.shape}")
        if self.x.ndim != 1 or self.x.size < 2:
            raise PSDDataError(f"x must be a 1-D array of at least 2 sizes, got {self.x.shape}")
        expected = (self.t.size, self.x.size)
        if self.values.shape != expected:
            raise PSDDataError(
                f"shape mismatch: values have shape {self.values.shape}, expected {expected} "
                f"({self.t.size} rows in t, {self.x.size} sizes in x)"
            )

    def _check_values(self) -> None:
        v = self.values
        self._first_bad(~np.isfinite(v), "is not finite")
        self._first_bad(v < 0, "is negative")
        if self.quantity.startswith("Q"):
            self._first_bad(v > 1.0 + CUMULATIVE_SLACK, "exceeds 1 (cumulatives end at 1)")
            drops = np.zeros(v.shape, dtype=bool)
            drops[:, 1:] = np.diff(v, axis=1) < 0
            self._first_bad(drops, "is below the value before it (cumulatives are monotone)")

    def _first_bad(self, bad: np.ndarray, what: str) -> None:
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise PSDDataError(
                f"{self.quantity} values[{i}, {j}] (t = {self.t[i]:g} s, x = {self.x[j]:g} "
                f"{self.size_unit}) = {float(self.values[i, j])!r} {what}"
            )


def load_psd(
    path: str | Path, quantity: Quantity | None = None, size_unit: str | None = None
) -> PSDData:
    """Read measured PSDs from a CSV or HDF5 file (formats in the module docstring).

    ``quantity`` and ``size_unit``, when given, must agree with the file's metadata; they
    are required when the file has none. Raises :class:`PSDDataError` starting with the path.
    """
    path = Path(path)
    try:
        t, x, values, meta = _read(path)
        return PSDData(
            t=t,
            x=x,
            values=values,
            quantity=_agree("quantity", quantity, meta.get("quantity")),
            size_unit=_agree("size_unit", size_unit, meta.get("size_unit")),
        )
    except PSDDataError as error:
        raise PSDDataError(f"{path}: {error}") from None


def save_psd(path: str | Path, data: PSDData) -> None:
    """Write ``data`` to a CSV or HDF5 file (chosen by the suffix); values round-trip exactly."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        lines = [f"# {key}: {getattr(data, key)}" for key in METADATA_KEYS]
        lines.append(",".join(["t", *map(repr, data.x.tolist())]))
        for time, row in zip(data.t.tolist(), data.values.tolist()):
            lines.append(",".join(map(repr, [time, *row])))
        path.write_text("\n".join(lines) + "\n")
    elif suffix in HDF5_SUFFIXES:
        with h5py.File(path, "w") as f:
            for name in ("t", "x", "values"):
                f.create_dataset(name, data=getattr(data, name))
            for key in METADATA_KEYS:
                f.attrs[key] = getattr(data, key)
    else:
        raise PSDDataError(f"{path}: {_unsupported(suffix)}")


def add_noise(data: PSDData, model: NoiseModel, level: float, rng: np.random.Generator) -> PSDData:
    """A copy of ``data`` with synthetic measurement noise (models in the module docstring).

    ``level`` is a relative amplitude (>= 0) for ``gaussian``, ``uniform`` and
    ``multiplicative``, and the number of particles counted per time point (> 0) for
    ``poisson``. The result stays valid ``PSDData`` of the same quantity.
    """
    if model not in NOISE_MODELS:
        raise ValueError(f"unknown noise model {model!r}; allowed: {', '.join(NOISE_MODELS)}")
    lowest = "> 0" if model == "poisson" else ">= 0"
    if not math.isfinite(level) or level < 0 or (model == "poisson" and level == 0):
        raise ValueError(f"{model} noise level must be finite and {lowest}, got {level}")
    cumulative = data.quantity.startswith("Q")
    v = np.diff(data.values, axis=1, prepend=0.0) if cumulative else data.values
    weights = np.ones_like(data.x) if cumulative else _trapezoid_weights(data.x)
    noisy = np.clip(_noised(v, weights, model, level, rng), 0.0, None)
    if cumulative:
        values = _rescale(np.cumsum(noisy, axis=1), 1.0, noisy.sum(axis=1))
    else:
        values = _rescale(noisy, v @ weights, noisy @ weights)
    return dataclasses.replace(data, values=values)


def _noised(
    v: np.ndarray, weights: np.ndarray, model: str, level: float, rng: np.random.Generator
) -> np.ndarray:
    """Noise on densities or fractions ``v`` (T, m) whose integral is ``v @ weights``."""
    row_max = v.max(axis=1, keepdims=True)
    if model == "gaussian":
        return v + rng.normal(0.0, 1.0, v.shape) * level * row_max
    if model == "uniform":
        return v + rng.uniform(-level, level, v.shape) * row_max
    if model == "multiplicative":
        return v * (1.0 + level * rng.normal(0.0, 1.0, v.shape))
    mass = v * weights
    total = mass.sum(axis=1, keepdims=True)
    share = np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)
    counts = rng.poisson(level * share)
    return counts / level * total / weights


def _rescale(values: np.ndarray, target: np.ndarray | float, current: np.ndarray) -> np.ndarray:
    """``values`` (T, m) with each row scaled by ``target / current`` (T,); a row whose
    ``current`` is 0 (everything clipped away) becomes 0."""
    factor = np.divide(target, current, out=np.zeros_like(current), where=current > 0)
    return values * factor[:, None]


def _trapezoid_weights(x: np.ndarray) -> np.ndarray:
    """``w`` (m,) with ``q @ w`` the trapezoid integral of ``q`` over ``x``."""
    dx = np.diff(x)
    return 0.5 * (np.concatenate([dx, [0.0]]) + np.concatenate([[0.0], dx]))


def _float_array(name: str, value: object) -> np.ndarray:
    try:
        return np.array(value, dtype=float)
    except (TypeError, ValueError) as error:
        raise PSDDataError(f"{name} is not numeric: {error}") from None


def _check_axis(
    name: str, a: np.ndarray, what: str, strictly_positive: bool, repeats: bool
) -> None:
    """``a`` finite, > 0 (or >= 0), and increasing: strictly, or (``repeats``) never falling."""
    bad = np.flatnonzero(~np.isfinite(a) | ((a <= 0) if strictly_positive else (a < 0)))
    if bad.size:
        sign = "> 0" if strictly_positive else ">= 0"
        raise PSDDataError(
            f"{what}s must be finite and {sign}: {name}[{bad[0]}] = {float(a[bad[0]])!r}"
        )
    steps = np.diff(a)
    drops = np.flatnonzero(steps < 0 if repeats else steps <= 0)
    if drops.size:
        i = drops[0] + 1
        order = (
            "must not decrease (repeated samples of one time are adjacent rows)"
            if repeats
            else "must be strictly increasing"
        )
        raise PSDDataError(
            f"{what}s {order}: {name}[{i}] = {a[i]:g} follows {name}[{i - 1}] = {a[i - 1]:g}"
        )


def _agree(key: str, argument: str | None, from_file: str | None) -> str:
    if argument is not None and from_file is not None and argument != from_file:
        raise PSDDataError(
            f"{key} {argument!r} passed as argument disagrees with {from_file!r} in the file"
        )
    if argument is None and from_file is None:
        raise PSDDataError(
            f"no {key} declared: add a '# {key}: ...' line before the CSV header (or a "
            f"'{key}' attribute on the HDF5 root), or pass {key}=..."
        )
    return argument if argument is not None else from_file


def _unsupported(suffix: str) -> str:
    supported = ", ".join(CSV_SUFFIXES + HDF5_SUFFIXES)
    return f"unknown file extension {suffix or '(none)'!r}; supported: {supported}"


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    if not path.is_file():
        raise PSDDataError("no such file")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _read_csv(path)
    if suffix in HDF5_SUFFIXES:
        return _read_hdf5(path)
    raise PSDDataError(_unsupported(suffix))


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    meta: dict[str, str] = {}
    rows: list[tuple[int, list[str]]] = []
    for number, line in enumerate(_text_of(path).splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#") and not rows:
            key, sep, value = text[1:].partition(":")
            if sep and key.strip().lower() in METADATA_KEYS:
                meta[key.strip().lower()] = value.strip()
            continue
        rows.append((number, [cell.strip() for cell in text.split(",")]))
    if not rows:
        raise PSDDataError("empty file: expected a header row 't,<size>,<size>,...' and data")
    header_line, header = rows[0]
    if header[0].lower() not in ("t", "time"):
        raise PSDDataError(
            f"line {header_line}: the header must start with 't' (or 'time'), found {header[0]!r}"
        )
    if len(rows) == 1:
        raise PSDDataError("no data rows after the header")
    x = [_number(cell, header_line, column) for column, cell in enumerate(header[1:], start=2)]
    table = []
    for number, cells in rows[1:]:
        if len(cells) != len(header):
            raise PSDDataError(
                f"line {number}: ragged row with {len(cells)} cells, the header has {len(header)}"
            )
        table.append([_number(cell, number, column) for column, cell in enumerate(cells, 1)])
    table_array = np.array(table)
    return table_array[:, 0], np.array(x), table_array[:, 1:], meta


def _text_of(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PSDDataError(f"cannot read the file: {error.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise PSDDataError(
            f"not a CSV text file: byte 0x{data[error.start]:02x} at offset {error.start} "
            f"(line {line}) is not UTF-8"
        ) from None


def _number(cell: str, line: int, column: int) -> float:
    try:
        return float(cell)
    except ValueError:
        raise PSDDataError(f"line {line}, column {column}: {cell!r} is not a number") from None


def _read_hdf5(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    try:
        f = h5py.File(path, "r", locking=False)  # a read-only input: NFS may refuse locks
    except OSError as error:
        raise PSDDataError(f"not a readable HDF5 file ({error})") from None
    with f:
        arrays = []
        for name in ("t", "x", "values"):
            if not isinstance(f.get(name), h5py.Dataset):
                found = ", ".join(sorted(f.keys())) or "nothing"
                raise PSDDataError(f"missing dataset {name!r} (found: {found})")
            arrays.append(f[name][()])
        meta = {key: _text(f.attrs[key]) for key in METADATA_KEYS if key in f.attrs}
    return arrays[0], arrays[1], arrays[2], meta


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
