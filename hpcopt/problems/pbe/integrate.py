"""Stepping SciPy's stiff integrators over a batch of dPBE systems at once.

``B`` parameter sets are one system of ``B * n`` states whose Jacobian is block-diagonal:
the Newton matrices ``I - c J`` are inverted block by block in one batched LAPACK call
instead of by a general sparse LU (:class:`BlockInverse`), and the error is controlled so
that each member keeps the tolerance it would have alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.integrate import BDF, Radau

METHODS = {"BDF": BDF, "Radau": Radau}


def march(
    method: str,
    fun: Callable,
    jac: Callable,
    y0: np.ndarray,
    t: np.ndarray,
    B: int,
    rtol: float,
    atol: np.ndarray,
) -> tuple[np.ndarray, int] | str:
    """Step SciPy's ``method`` from ``y0`` (``(B * n,)``, ``B`` systems of ``n`` states
    integrated together) to ``t[-1]``, sampling its interpolant at ``t``. Returns the
    states ``(B, len(t), n)`` and the number of steps, or why the integrator failed.
    ``atol`` is per state of one system ``(n,)``; each system is held to ``rtol`` and it.

    With a batch, the Newton matrices ``I - c J`` are block-diagonal: they are inverted
    block by block in one batched LAPACK call instead of by a general sparse LU.
    """
    n = len(y0) // B
    # SciPy controls the RMS error over all B * n components: a batch member's own error
    # would be diluted by sqrt(B), so tighten the tolerances to keep each member's
    scale = 1.0 / np.sqrt(B)
    rtol = rtol * scale
    out = np.empty((len(t), B * n))
    k = int(np.searchsorted(t, 0.0, side="right"))
    out[:k] = y0
    if k == len(t):
        return out.reshape(len(t), B, n).transpose(1, 0, 2), 0
    solver = METHODS[method](
        fun, 0.0, y0, float(t[-1]), rtol=rtol, atol=np.tile(atol, B) * scale, jac=jac
    )
    if B > 1:
        solver.lu = lambda A: BlockInverse(A, B, n)
        solver.solve_lu = lambda inverse, b: inverse.solve(b)
    steps = 0
    while k < len(t):
        message = solver.step()
        steps += 1
        if solver.status == "failed":
            return f"the integrator failed: {message}"
        interpolant = solver.dense_output()
        while k < len(t) and t[k] <= solver.t:
            out[k] = interpolant(t[k])
            k += 1
    return out.reshape(len(t), B, n).transpose(1, 0, 2), steps


class BlockInverse:
    """The inverse of a block-diagonal sparse matrix with ``B`` blocks of ``n x n``."""

    def __init__(self, A: sp.spmatrix, B: int, n: int) -> None:
        A = sp.csc_matrix(A)
        cols = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
        blocks = np.zeros((B, n, n), dtype=A.dtype)
        blocks[cols // n, A.indices % n, cols % n] = A.data
        self.B, self.n = B, n
        self.inverse = np.linalg.inv(blocks)

    def solve(self, b: np.ndarray) -> np.ndarray:
        return np.matmul(self.inverse, b.reshape(self.B, self.n, 1)).ravel()


BLOCK_PATTERNS_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def block_diagonal(blocks: np.ndarray) -> sp.csc_matrix:
    """A block-diagonal CSC matrix from dense blocks ``(B, n, n)`` (pattern cached)."""
    B, n, _ = blocks.shape
    if (B, n) not in BLOCK_PATTERNS_CACHE:
        rows = (np.arange(B)[:, None, None] * n + np.arange(n)[None, :, None]).repeat(n, axis=2)
        indices = rows.transpose(0, 2, 1).ravel()
        indptr = np.arange(0, B * n * n + 1, n)
        BLOCK_PATTERNS_CACHE[(B, n)] = (indices, indptr)
    indices, indptr = BLOCK_PATTERNS_CACHE[(B, n)]
    data = blocks.transpose(0, 2, 1).ravel()
    return sp.csc_matrix((data, indices, indptr), shape=(B * n, B * n))
