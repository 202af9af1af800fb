"""Pairwise squared Euclidean distances between client updates, computed precisely.

Why not ``‖x‖² + ‖y‖² − 2x·y`` on the raw rows? Model updates are often close to each
other compared with their norms. In float32 at d = 10⁶ the cancellation in that formula
destroys the result (distances off by orders of magnitude, negative self-distances). This
module therefore

1. **centres** the rows on a common point ``c`` before forming inner products
   (distances are invariant to the choice of ``c``), and
2. **accumulates the Gram matrix in float64**, column chunk by column chunk, so float32
   input is promoted chunk-wise (bounded extra memory: one ``n × chunk`` float64 buffer) and
   the inner products go through BLAS ``syrk``.

The default centre is the column mean. A Byzantine row far away (say 10³⁰) drags the mean
with it, and then the honest rows are again far from the centre and their mutual distances
cancel. ``center="auto"`` (the default) detects this case — the median squared norm of the
centred rows exceeds 10⁶ times the typical honest distance (the smallest per-row lower
median distance, :func:`row_lower_medians`) — and recomputes the Gram centred on the most
central row (the one whose lower-median distance to the others is smallest), at most three
times. Each pass costs one Gram.

Guarantees: the returned distance matrix is float64, symmetric, has a zero diagonal and no
negative entries (tiny negatives from rounding are clamped to 0).
"""

from __future__ import annotations

import numpy as np

from ._rows import RowSet
from ._validate import as_matrix, check_square, check_vector
from .errors import InputShapeError

__all__ = [
    "gram",
    "pairwise_sq_distances",
    "distances_from_gram",
    "gram_from_distances",
    "sq_distances_to",
    "resolve_distances",
    "given_for_rows",
    "given_distances",
    "finite_matrix_rows",
]

#: Recentre when the median squared norm of centred rows exceeds this × typical distance.
_RECENTRE_RATIO = 1e6
#: The same for the float32-product Gram (``fast=True``), whose entries are ~1e-6 precise.
_RECENTRE_RATIO_FAST = 10.0
_MAX_RECENTRES = 3


def distances_from_gram(G: np.ndarray) -> np.ndarray:
    """Squared distances ``D[i, j] = G[i, i] + G[j, j] − 2 G[i, j]`` from a Gram matrix.

    ``G`` may be the Gram of the rows centred on any common point (distances do not depend
    on it); the precision is best when that point is close to the rows. Negative rounding
    residue is clamped to 0 and the diagonal is set to exactly 0.

    Raises :class:`InputShapeError` if ``G`` is not a finite symmetric square matrix.
    """
    G = check_square(G, "gram")
    diag = np.diag(G).copy()
    D = diag[:, None] + diag[None, :] - 2.0 * G
    D = 0.5 * (D + D.T)
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D


def gram_from_distances(D: np.ndarray, center_row: int | None = None) -> np.ndarray:
    """Gram matrix of the rows centred on row ``center_row`` from squared distances:
    ``G[i, j] = ½ (D[i, r] + D[j, r] − D[i, j])``. By default ``r`` is the most central row
    (smallest median distance to the others), which keeps the entries among central rows
    small and precise. Note that inner products with a row far from the centre can only be
    as precise as that row's (large) distances allow."""
    D = np.asarray(D, dtype=np.float64)
    r = int(np.argmin(row_lower_medians(D))) if center_row is None else int(center_row)
    G = 0.5 * (D[:, r][:, None] + D[r, :][None, :] - D)
    return 0.5 * (G + G.T)


def row_lower_medians(D: np.ndarray) -> np.ndarray:
    """Per row, the lower median of its distances to the other rows (the
    ``⌊(n−2)/2⌋``-th smallest of the n−1). With at most f < n/2 Byzantine rows, at least
    half of an honest row's n−1 others are honest, so this value is an honest–honest
    distance even when f = (n−1)/2."""
    n = D.shape[0]
    if n == 1:
        return np.zeros(1)
    off = D[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    k = (n - 2) // 2
    return np.partition(off, k, axis=1)[:, k]


def gram(X: np.ndarray, center: str | np.ndarray | int = "auto") -> np.ndarray:
    """Float64 Gram matrix ``C Cᵀ`` of the rows centred on a common point ``c``.

    ``center``:
      * ``"auto"`` (default): column mean, then recentre on the most central row when the
        mean is far from most rows (see module docstring);
      * ``"mean"``: column mean only;
      * an ``int``: row ``X[center]``;
      * a length-d vector.

    Memory: O(n² + n·chunk) beyond ``X``. ``X`` is not modified.
    Raises :class:`InputShapeError` for a malformed ``X``/``center``.
    """
    X = as_matrix(X)
    n, d = X.shape
    rs = RowSet(X)
    if isinstance(center, str):
        if center == "auto":
            return auto_gram(rs)
        if center == "mean":
            return rs.gram(None)
        raise InputShapeError(
            f"center must be 'auto', 'mean', a row index or a vector, got {center!r}"
        )
    if isinstance(center, (int, np.integer)) and not isinstance(center, bool):
        if not 0 <= int(center) < n:
            raise InputShapeError(f"center row index must be in [0, {n}), got {center}")
        return rs.gram(X[int(center)].astype(np.float64))
    return rs.gram(check_vector(center, d, "center"))


def auto_gram(rs: RowSet, *, fast: bool = False) -> np.ndarray:
    """Mean-centred float64 Gram of ``rs``, recentred on the most central row while the
    mean is far from most rows (see the module docstring). Internal entry point.

    ``fast=True`` uses float32 products for float32 rows (see
    :meth:`robust._rows.RowSet.gram`) and recentres as soon as the median squared norm of
    the centred rows exceeds :data:`_RECENTRE_RATIO_FAST` times the typical distance, which
    bounds the relative error of the typical distances to about 1e-5."""
    ratio = _RECENTRE_RATIO_FAST if fast and rs.dtype == np.float32 else _RECENTRE_RATIO
    G = rs.gram(None, fast=fast)
    for _ in range(_MAX_RECENTRES):
        if rs.n < 3:
            break
        D = distances_from_gram(G)
        row_med = row_lower_medians(D)
        typical = float(row_med.min())
        if not float(np.median(np.diag(G))) > ratio * typical:
            break
        r = int(np.argmin(row_med))
        G = rs.gram(np.asarray(rs.row(r), dtype=np.float64), fast=fast)
    return G


def pairwise_sq_distances(X: np.ndarray, center: str | np.ndarray | int = "auto") -> np.ndarray:
    """Precise (n, n) float64 matrix of squared Euclidean distances between rows of ``X``.

    Equivalent to ``distances_from_gram(gram(X, center))``: centred, float64-accumulated,
    clamped at 0, zero diagonal. Precise for near-duplicate float32 rows at d = 10⁶.
    Raises :class:`InputShapeError` for a malformed ``X``.
    """
    return distances_from_gram(gram(X, center))


def sq_distances_to(X: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Squared distances ``‖x_i − z‖²`` (float64, shape (n,)), computed directly in float64
    column chunks (no cancellation). Raises :class:`InputShapeError` for bad shapes."""
    X = as_matrix(X)
    return RowSet(X).sq_dist_to(check_vector(z, X.shape[1], "z"))


def _check_distance_matrix(D: object, n: int | None) -> np.ndarray:
    D = check_square(D, "distances", n)
    scale = float(D.max()) if D.size else 0.0
    tol = 1e-12 * max(scale, 1e-300)
    if (D < -tol).any():
        raise InputShapeError("distances must be non-negative squared distances")
    if (np.abs(np.diag(D)) > tol).any():
        raise InputShapeError("distances must have a zero diagonal (squared distance to self)")
    D = np.maximum(D, 0.0)
    np.fill_diagonal(D, 0.0)
    return D


def resolve_distances(
    X: np.ndarray | None,
    distances: object = None,
    gram_matrix: object = None,
    n: int | None = None,
) -> np.ndarray:
    """Squared distance matrix from exactly one source: ``distances`` (squared, n×n),
    ``gram_matrix`` (Gram of rows centred on any common point) or ``X``.

    Raises :class:`InputShapeError` if none or both precomputed forms are given, or if a
    given matrix is malformed or does not match ``n``.
    """
    if distances is not None and gram_matrix is not None:
        raise InputShapeError("pass either distances= or gram=, not both")
    if distances is not None:
        return _check_distance_matrix(distances, n)
    if gram_matrix is not None:
        G = check_square(gram_matrix, "gram", n)
        return distances_from_gram(G)
    if X is None:
        raise InputShapeError("X is required when neither distances= nor gram= is given")
    return pairwise_sq_distances(X)


def given_for_rows(
    distances: object, gram: object, n: int, keep: np.ndarray | None = None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(D, G)``: the caller's precomputed squared ``distances`` or ``gram`` matrix (at
    most one; both None when neither is given) of the ``n`` rows of ``X``, restricted to
    the rows ``keep`` (for example the finite rows; all rows when None) and then validated.

    The matrix must be (n, n) before restriction; entries of dropped rows are never read,
    so a non-finite row's NaN distances do no harm. Raises :class:`InputShapeError` if both
    are given, for a wrong shape, or for a malformed restricted matrix.
    """
    if distances is not None and gram is not None:
        raise InputShapeError("pass either distances= or gram=, not both")
    if distances is None and gram is None:
        return None, None
    name = "distances" if distances is not None else "gram"
    M = np.asarray(distances if distances is not None else gram)
    if M.shape != (n, n):
        raise InputShapeError(f"{name} must be ({n}, {n}) to match X with n={n}, got {M.shape}")
    if keep is not None and len(keep) < n:
        M = M[np.ix_(keep, keep)]
    if distances is not None:
        return _check_distance_matrix(M, None), None
    return None, check_square(M, "gram")


def given_distances(
    distances: object, gram: object, n: int, keep: np.ndarray | None = None
) -> np.ndarray | None:
    """Like :func:`given_for_rows`, as squared distances (None when neither is given)."""
    D, G = given_for_rows(distances, gram, n, keep)
    return D if G is None else distances_from_gram(G)


def finite_matrix_rows(M: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows (and columns) of a square distance or Gram matrix to keep
    so that the kept block is finite: greedily drop the row with the most non-finite
    entries until none is left. Used when only the matrix is known (no ``X``)."""
    keep = np.ones(M.shape[0], bool)
    while True:
        bad = (~np.isfinite(M[np.ix_(keep, keep)])).sum(axis=1)
        if not bad.any():
            return keep
        idx = np.flatnonzero(keep)
        keep[idx[int(np.argmax(bad))]] = False
