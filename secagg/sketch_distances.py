"""Exact Gram matrices, squared norms and squared distances of integer sketches.

Given ``n`` exact integer sketches (an ``n × k`` array, int64 or Python ints), these return
``⟨s_i, s_j⟩``, ``‖s_i‖²`` and ``‖s_i − s_j‖²`` *exactly*: the plaintext reference for what the
masked distance protocol gives the server, and what a plaintext-mode filter uses.

Sketch entries of real updates are large (``|s_l|`` up to ``d·max|x|``, typically
``√d·max|x|``), so squared distances usually exceed int64. The Gram matrix is computed with
int64 matrix products on limbs: each entry is split into ``w``-bit limbs with
``k·2^(2w) < 2^63`` (``w = 26`` for ``k = 256``), every limb product is exact in int64, and the
products are shifted and added as Python ints. Results are object arrays of Python ints by
default; ``int64=True`` returns int64 and raises :class:`SketchOverflowError` if an entry does
not fit (never a wrapped value).
"""

from __future__ import annotations

import numpy as np

from .errors import SketchOverflowError, SketchParameterError

__all__ = ["sketch_gram", "sketch_squared_norms", "sketch_squared_distances"]

_INT64_LIMIT = (1 << 63) - 1


def _as_sketches(sketches: np.ndarray) -> tuple[np.ndarray, int]:
    """Validate an ``(n, k)`` integer array (int dtype or object of ints); return it with
    ``max |entry|`` as a Python int."""
    if not isinstance(sketches, np.ndarray):
        raise SketchParameterError(
            f"sketches must be a numpy array of shape (n, k), got {type(sketches).__name__}"
        )
    if sketches.ndim != 2 or sketches.shape[1] < 1:
        raise SketchParameterError(
            f"sketches must have shape (n, k) with k >= 1, got {sketches.shape}"
        )
    if sketches.dtype.kind in "iu" and sketches.dtype != np.uint64:
        s = sketches.astype(np.int64)
        return s, (max(abs(int(s.max())), abs(int(s.min()))) if s.size else 0)
    if sketches.dtype == np.uint64 or sketches.dtype == object:
        s = sketches.astype(object)
    else:
        raise SketchParameterError(
            f"sketches must hold integers (int dtype or Python ints), got dtype {sketches.dtype}"
        )
    biggest = 0
    for pos, v in np.ndenumerate(s):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise SketchParameterError(f"sketches{list(pos)} is not an integer: {v!r}")
        biggest = max(biggest, abs(int(v)))
    s = np.frompyfunc(int, 1, 1)(s) if s.size else s.astype(object)
    if biggest <= _INT64_LIMIT:
        return s.astype(np.int64), biggest
    return s, biggest


def _limbs(s: np.ndarray, biggest: int, w: int) -> list[np.ndarray]:
    """Split ``s`` into int64 limbs ``L_a`` with ``s = Σ_a L_a·2^(a·w)`` and ``|L_a| < 2^w``:
    the low limbs are in ``[0, 2^w)``, the top one is signed."""
    count = max(1, -(-(biggest.bit_length() + 1) // w))
    mask = (1 << w) - 1
    out = []
    for a in range(count):
        shifted = s >> (a * w)
        limb = shifted if a == count - 1 else shifted & mask
        out.append(np.asarray(limb).astype(np.int64))
    return out


def _to_output(values: np.ndarray, int64: bool, what: str) -> np.ndarray:
    if not int64:
        return values
    if values.size and max(abs(int(v)) for v in values.reshape(-1)) > _INT64_LIMIT:
        raise SketchOverflowError(
            f"{what} does not fit int64; call without int64=True for Python-int results"
        )
    return values.astype(np.int64)


def sketch_gram(sketches: np.ndarray, *, int64: bool = False) -> np.ndarray:
    """The exact Gram matrix ``G[i, j] = ⟨s_i, s_j⟩`` of ``n × k`` integer sketches.

    Returns an ``(n, n)`` object array of Python ints (or int64 with ``int64=True``).

    Raises :class:`SketchParameterError` if ``sketches`` is not a 2-D array of integers
    (an integer dtype, or object holding ints) with ``k >= 1``; :class:`SketchOverflowError` if
    ``int64=True`` and an entry does not fit.
    """
    s, biggest = _as_sketches(sketches)
    n, k = s.shape
    if s.dtype == np.int64 and k * biggest * biggest <= _INT64_LIMIT:
        g = s @ s.T  # every partial sum is at most k·max|s|², so nothing wraps
        return g if int64 else g.astype(object)
    w = (62 - k.bit_length()) // 2  # k·(2^w)² < 2^63: every limb product sum fits int64
    limbs = _limbs(s, biggest, w)
    g = np.zeros((n, n), dtype=object)
    for a, la in enumerate(limbs):
        for b in range(a, len(limbs)):
            prod = la @ limbs[b].T
            term = prod.astype(object) if a == b else prod.astype(object) + prod.T.astype(object)
            g += term * (1 << ((a + b) * w))
    return _to_output(g, int64, "the Gram matrix")


def sketch_squared_norms(sketches: np.ndarray, *, int64: bool = False) -> np.ndarray:
    """Exact ``‖s_i‖²`` of each row: an ``(n,)`` object array of Python ints (or int64 with
    ``int64=True``). Errors as :func:`sketch_gram`."""
    s, biggest = _as_sketches(sketches)
    n, k = s.shape
    if s.dtype == np.int64 and k * biggest * biggest <= _INT64_LIMIT:
        sq = np.einsum("ij,ij->i", s, s)
        return sq if int64 else sq.astype(object)
    obj = s.astype(object)
    return _to_output((obj * obj).sum(axis=1), int64, "a squared norm")


def sketch_squared_distances(sketches: np.ndarray, *, int64: bool = False) -> np.ndarray:
    """Exact ``D[i, j] = ‖s_i − s_j‖²``: an ``(n, n)`` symmetric object array of Python ints
    with a zero diagonal (or int64 with ``int64=True``).

    Computed as ``G_ii + G_jj − 2·G_ij`` from :func:`sketch_gram`. Errors as
    :func:`sketch_gram`.
    """
    s, biggest = _as_sketches(sketches)
    n, k = s.shape
    if s.dtype == np.int64 and 4 * k * biggest * biggest <= _INT64_LIMIT:
        g = s @ s.T  # |G_ii + G_jj - 2 G_ij| and every intermediate are <= 4·k·max|s|²
        diag = np.diagonal(g)
        d = diag[:, None] + diag[None, :] - 2 * g
        return d if int64 else d.astype(object)
    g = sketch_gram(s)
    diag = np.array([g[i, i] for i in range(n)], dtype=object)
    d = diag[:, None] + diag[None, :] - 2 * g
    return _to_output(d, int64, "a squared distance")
