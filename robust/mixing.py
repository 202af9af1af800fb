"""Pre-aggregators that mix clients: nearest-neighbour mixing and bucketing.

Both return new rows that are averages of input rows, computed as one small mixing matrix
times ``X`` (BLAS), so memory is O(n² + n·d): no (n, n−f, d) gather is ever formed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._common import MAJORITY, require_all_finite
from ._rows import RowSet
from ._validate import as_matrix, check_f
from .distances import auto_gram, distances_from_gram, resolve_distances
from .params import RNG, SEED, Param, integer

if TYPE_CHECKING:
    from .flow import Flow

__all__ = ["nnm", "bucketing", "nnm_matrix", "bucket_assignment"]

S = Param("s", integer(1), "bucket size: ceil(n/s) buckets of s rows (the last may be smaller)")
BUCKET_SEED = Param("seed", SEED, "seed of the shuffle (random when neither seed nor rng)")
BUCKET_RNG = Param("rng", RNG, "a numpy Generator or seed for the shuffle (overrides seed)")


def nnm_matrix(D: np.ndarray, f: int) -> np.ndarray:
    """Row-stochastic (n, n) mixing matrix of NNM: row i has weight 1/(n−f) on the n−f
    rows nearest to row i (itself included; ties broken towards the lower index)."""
    n = D.shape[0]
    k = n - f
    S = np.zeros((n, n))
    idx = np.arange(n)
    for i in range(n):
        order = np.lexsort((idx, idx != i, D[i]))
        S[i, order[:k]] = 1.0 / k
    return S


def nnm_rows(rs: RowSet, f: int, D: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    if D is None:
        D = distances_from_gram(auto_gram(rs, fast=True))
    S = nnm_matrix(D, f)
    return rs.mix(S), S


def nnm(
    X: np.ndarray,
    *,
    f: int,
    distances: np.ndarray | None = None,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    """Nearest-neighbour mixing (Allouah et al. 2023, "Fixing by Mixing"): replace each row
    by the average of its n − f nearest rows (Euclidean, itself included).

    Computed as ``S @ X`` with a row-stochastic n×n selection matrix ``S``: memory
    O(n² + n·d), never an (n, n−f, d) temporary. Requires n >= 2f+1. ``distances``/``gram``
    skip the distance computation.

    Returns an (n, d) array (dtype of ``X``); row i is client i's mixed update.
    Raises :class:`InputShapeError` (also for non-finite rows; drop them first),
    :class:`ParameterError`, :class:`InsufficientClientsError`.
    """
    X = as_matrix(X)
    f = check_f(f)
    MAJORITY.check("nnm", X.shape[0], f)
    require_all_finite(X, "nnm")
    D = None
    if distances is not None or gram is not None:
        D = resolve_distances(None, distances=distances, gram_matrix=gram, n=X.shape[0])
    return nnm_rows(RowSet(X), f, D)[0]


def nnm_stage(flow: Flow) -> None:
    """Pipeline stage ``nnm``: row i becomes client i's mixed update (f unchanged)."""
    Y, _ = nnm_rows(flow.rows, flow.f, flow.D)
    flow.replace(Y)
    flow.record("nnm", f=flow.f, neighbours=flow.count - flow.f)


def bucket_assignment(n: int, s: int, rng: np.random.Generator | int | None) -> list[np.ndarray]:
    """Random permutation of range(n) cut into ⌈n/s⌉ buckets of size s (the last smaller)."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    perm = gen.permutation(n)
    return [np.sort(perm[a : a + s]) for a in range(0, n, s)]


def bucket_rows(
    rs: RowSet, s: int, rng: np.random.Generator | int | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    buckets = bucket_assignment(rs.n, s, rng)
    S = np.zeros((len(buckets), rs.n))
    for b, members in enumerate(buckets):
        S[b, members] = 1.0 / len(members)
    return rs.mix(S), buckets


def bucketing(
    X: np.ndarray,
    s: int = 2,
    rng: np.random.Generator | int | None = None,
    *,
    seed: int | None = None,
    return_buckets: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """Bucketing (Karimireddy, He, Jaggi 2022): shuffle the rows at random, cut them into
    ⌈n/s⌉ buckets of s rows (the last may be smaller) and return the bucket means.

    Each Byzantine row contaminates at most one bucket, so at most f of the ⌈n/s⌉ outputs
    are Byzantine; the rule run afterwards must satisfy its bound for ⌈n/s⌉ rows and f.
    ``rng`` (a Generator or seed) or ``seed`` fixes the shuffle. The default ``s=2`` is the
    bucket size of the paper's experiments.

    Returns a (⌈n/s⌉, d) array (dtype of ``X``), plus the member indices of each bucket if
    ``return_buckets``. Raises :class:`InputShapeError` (also for non-finite rows),
    :class:`ParameterError` (``s`` < 1, a negative seed, an ``rng`` that is neither a
    Generator nor a seed).
    """
    X = as_matrix(X)
    s = S.check(s)
    rng = BUCKET_RNG.check(rng) if rng is not None else None
    seed = BUCKET_SEED.check(seed) if seed is not None else None
    require_all_finite(X, "bucketing")
    Y, buckets = bucket_rows(RowSet(X), s, rng if rng is not None else seed)
    return (Y, buckets) if return_buckets else Y


def bucketing_stage(flow: Flow, *, s: int, rng: object, seed: int | None) -> None:
    """Pipeline stage ``bucketing``: each client's update goes into its bucket's row; the
    report lists the clients of each bucket. f is kept: at most f buckets hold a Byzantine
    client."""
    Y, buckets = bucket_rows(flow.rows, s, rng if rng is not None else seed)
    bucket_of_row = np.empty(flow.count, dtype=np.intp)
    for b, members in enumerate(buckets):
        bucket_of_row[members] = b
    flow.replace(Y, bucket_of_row)
    owner = flow.owner  # -1 for a dropped client: in no bucket
    members = [np.flatnonzero(owner == b).tolist() for b in range(len(buckets))]
    flow.record("bucketing", s=s, buckets=members)
