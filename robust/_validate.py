"""Input validation shared by every rule (internal)."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from ._blas import single_threaded_blas
from .errors import (
    InputShapeError,
    InsufficientClientsError,
    ParameterError,
    WeightsError,
)


def as_matrix(X: object, name: str = "X") -> np.ndarray:
    """Return ``X`` as a 2-D float32/float64 array without copying float input.

    Integer and boolean arrays are converted to float64. Anything else raises
    :class:`InputShapeError`. The caller's array is never written to.
    """
    if X is None:
        raise InputShapeError(f"{name} is required (got None)")
    arr = np.asarray(X)
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    elif arr.dtype not in (np.float32, np.float64):
        raise InputShapeError(
            f"{name} must be a float32 or float64 array (n clients x d), got dtype {arr.dtype}"
        )
    if arr.ndim != 2:
        raise InputShapeError(
            f"{name} must be 2-D (n clients x d coordinates), got shape {arr.shape}"
        )
    n, d = arr.shape
    if n < 1 or d < 1:
        raise InputShapeError(f"{name} must have at least one row and one column, got {arr.shape}")
    return arr


#: Rows whose squared L2 norm exceeds this cannot be compared in float64 (their Gram entries
#: and pairwise distances overflow); like non-finite rows they are Byzantine by construction.
MAX_SQ_NORM = 1e300


def finite_rows(X: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``X`` whose entries are all finite and whose squared norm
    is at most :data:`MAX_SQ_NORM` (only reachable with float64 input: |x| ~ 1e150).

    A BLAS row-sum screens all rows in one pass; only rows whose sum is not finite (a
    non-finite entry, or a float overflow of a finite row) are checked exactly. float64 (and
    wider) input also gets a squared-norm pass, since a row of 1e200 entries can sum to 0.
    """
    ones = np.ones(X.shape[1], dtype=X.dtype)
    # a multithreaded BLAS gemv costs ~10 ms of thread start-up on a loaded machine even
    # when the product itself takes 0.1 ms; it is memory-bound, so one thread loses little
    with np.errstate(over="ignore", invalid="ignore"), single_threaded_blas():
        sums = X @ ones
    ok = np.isfinite(sums)
    for i in np.flatnonzero(~ok):
        ok[i] = bool(np.isfinite(X[i]).all())
    if X.dtype.itemsize >= 8 and ok.any():
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", X, X)
        ok &= sq <= MAX_SQ_NORM  # False for inf/nan too
    return ok


def check_f(f: object, name: str = "f") -> int:
    """``f`` must be a non-negative integer."""
    if isinstance(f, bool) or not isinstance(f, numbers.Integral) or int(f) < 0:
        raise ParameterError(f"{name} must be a non-negative integer, got {f!r}")
    return int(f)


def check_positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A finite positive (or non-negative) real scalar."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ParameterError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def check_int(value: object, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ParameterError(f"{name} must be {rng}, got {v}")
    return v


def require_n(rule: str, n: int, f: int, bound: str, min_n: Callable[[int], int]) -> None:
    """Raise :class:`InsufficientClientsError` naming ``bound`` when ``n < min_n(f)``."""
    need = min_n(f)
    if n < need:
        raise InsufficientClientsError(f"{rule} needs n >= {bound} = {need}, got n={n} (f={f})")


def check_weights(weights: object, n: int, name: str = "weights") -> np.ndarray | None:
    """Validate trusted weights: shape (n,), finite, >= 0, positive sum. Returns float64.
    Raises :class:`WeightsError`."""
    if weights is None:
        return None
    w = _finite_vector(weights, n, name, WeightsError, " (one per client)")
    if (w < 0).any():
        raise WeightsError(f"{name} must be >= 0, got min {w.min()}")
    if w.sum() <= 0:
        raise WeightsError(f"{name} must have a positive sum")
    return w


def normalised_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    """``weights / Σ weights`` (uniform when None). Raises :class:`WeightsError` when the
    weights sum to 0 (the weights of the remaining rows, after non-finite ones were
    dropped, can)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    total = float(weights.sum())
    if total <= 0:
        raise WeightsError("weights of the finite rows sum to 0")
    return weights / total


def check_vector(v: object, d: int, name: str) -> np.ndarray:
    """A finite float64 vector of shape (d,). Raises :class:`InputShapeError`."""
    return _finite_vector(v, d, name, InputShapeError)


def _finite_vector(
    v: object, n: int, name: str, error: type[Exception], whose: str = ""
) -> np.ndarray:
    arr = np.asarray(v)
    if arr.dtype.kind not in "iuf":
        raise error(f"{name} must be a numeric vector, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.shape != (n,):
        raise error(f"{name} must have shape ({n},){whose}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise error(f"{name} must be finite")
    return arr


def check_square(D: object, name: str, n: int | None = None) -> np.ndarray:
    """A square, finite, symmetric float64 matrix (distances or Gram)."""
    arr = np.asarray(D)
    if arr.dtype.kind not in "iuf":
        raise InputShapeError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 1:
        raise InputShapeError(f"{name} must be a square (n x n) matrix, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise InputShapeError(f"{name} must be ({n}, {n}) to match X with n={n}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputShapeError(f"{name} must be finite")
    scale = float(np.abs(arr).max()) if arr.size else 0.0
    if not np.allclose(arr, arr.T, rtol=1e-9, atol=1e-12 * max(scale, 1e-300)):
        raise InputShapeError(f"{name} must be symmetric")
    return arr


def output_dtype(X: np.ndarray) -> np.dtype:
    return X.dtype
