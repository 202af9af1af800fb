"""Mean and the coordinate-wise rules: median and trimmed mean.

Coordinate-wise rules need coordinates: they cannot run from distances (they are in
:data:`robust.COORDINATE_RULES`). Column order statistics come from
:meth:`robust._rows.RowSet.ranked_columns_apply`, chunk by chunk on worker threads: a
compiled comparator network vectorised across columns when it is built, numpy's SIMD sort
otherwise (same results; see :mod:`robust._ranking`). The caller's array is never modified
and no full-size temporary is made.

**What "accepted" means for a coordinate-wise rule.** Every coordinate of the output is a
function of all finite rows, so every finite row is *accepted* (only non-finite rows are
rejected). The per-client ``scores`` of the detailed API are the fraction of coordinates
at which the row lies inside the f-trimmed range ``[v_(f), v_(n−1−f)]`` of that coordinate
(1.0 = never among the f most extreme values on either side).
"""

from __future__ import annotations

import numpy as np

from ._common import ANY, MAJORITY, prepare, run_finite
from ._rows import RowSet
from ._validate import normalised_weights
from .result import RuleOutput

__all__ = ["mean", "median", "trimmed_mean"]


def mean_core(
    rs: RowSet | None,
    f: int,
    *,
    weights: np.ndarray | None = None,
    n: int | None = None,
    detailed: bool = False,
    **_: object,
) -> RuleOutput:
    if rs is None:  # distance-only mode: every row is accepted, the caller sums them
        assert n is not None
        return RuleOutput(None, np.ones(n, bool), None, {"score_kind": None})
    vec = rs.weighted_sum(normalised_weights(weights, rs.n))
    return RuleOutput(vec, np.ones(rs.n, bool), None, {"score_kind": None})


def _ranked_stat(
    rs: RowSet,
    f: int,
    detailed: bool,
    ranks: list[int],
    stat,
    sum_ranks: range | None = None,
) -> RuleOutput:
    """Run ``stat(R, s)`` over the column chunks of ``rs`` (see
    :meth:`RowSet.ranked_columns_apply`); ``R``'s first rows are ``ranks``. In detailed
    mode the ranks f and m−1−f are appended to score each row by the fraction of
    coordinates inside the f-trimmed range."""
    m = rs.n
    out = np.empty(rs.d, dtype=rs.dtype)
    asked = list(ranks) + ([f, m - 1 - f] if detailed else [])

    def fn(R: np.ndarray, s: np.ndarray | None, a: int, b: int):
        out[a:b] = stat(R, s)
        if not detailed:
            return None
        lo, hi = R[len(ranks)], R[len(ranks) + 1]
        ch = rs.chunk(a, b)
        return ((ch >= lo) & (ch <= hi)).sum(axis=1)

    parts = rs.ranked_columns_apply(asked, fn, sum_ranks=sum_ranks)
    scores = None
    info: dict[str, object] = {}
    if detailed:
        scores = np.sum(parts, axis=0) / rs.d
        info["score_kind"] = (
            "fraction of coordinates inside the f-trimmed range (higher is more central)"
        )
    return RuleOutput(out, np.ones(rs.n, bool), scores, info)


def median_core(rs: RowSet, f: int, *, detailed: bool = False, **_: object) -> RuleOutput:
    m = rs.n
    if m % 2:
        return _ranked_stat(rs, f, detailed, [m // 2], lambda R, s: R[0])

    def stat(R: np.ndarray, s: object) -> np.ndarray:
        return 0.5 * R[0].astype(np.float64) + 0.5 * R[1]

    return _ranked_stat(rs, f, detailed, [m // 2 - 1, m // 2], stat)


def trimmed_mean_core(rs: RowSet, f: int, *, detailed: bool = False, **_: object) -> RuleOutput:
    m = rs.n
    keep = m - 2 * f
    return _ranked_stat(rs, f, detailed, [], lambda R, s: s / keep, sum_ranks=range(f, m - f))


def mean(X: np.ndarray, weights: np.ndarray | None = None, *, f: int = 0) -> np.ndarray:
    """Average of the rows (FedAvg), optionally weighted.

    ``weights`` must be *trusted* (e.g. reputation): a client's self-reported example count
    is attacker-controlled, and one Byzantine client reporting 10⁶ examples can move a
    count-weighted mean arbitrarily. Weights are normalised to sum 1, so the result is a
    convex combination and cannot overflow. Non-finite rows are Byzantine: they are dropped
    (with their weights) before averaging. ``mean`` has no robustness: a single finite
    Byzantine row moves it arbitrarily far. ``f`` (keyword, like every rule's) is only
    validated: the mean tolerates no Byzantine row.

    Returns a length-d vector with the dtype of ``X``.
    Raises :class:`InputShapeError`, :class:`WeightsError`, :class:`ParameterError` (bad f),
    :class:`InsufficientClientsError` (every row non-finite).
    """
    p = prepare(X, f, "mean", ANY)
    return mean_core(p.rows, 0, weights=p.weights(weights)).vector


def median(X: np.ndarray, *, f: int = 0) -> np.ndarray:
    """Coordinate-wise median; for an even number of rows the two middle values are averaged.

    Tolerates up to ``f < n/2`` arbitrary rows: each output coordinate lies within the range
    of the honest values of that coordinate. ``f`` is only used to check ``n >= 2f+1``.
    Non-finite rows are dropped first (they count against f).

    Returns a length-d vector with the dtype of ``X``.
    Raises :class:`InputShapeError`, :class:`InsufficientClientsError`.
    """
    return run_finite(X, f, "median", MAJORITY, lambda p: median_core(p.rows, p.f).vector)


def trimmed_mean(X: np.ndarray, *, f: int) -> np.ndarray:
    """Coordinate-wise trimmed mean: per coordinate, drop the f largest and f smallest
    values and average the remaining n − 2f (Yin et al. 2018). Ties are handled exactly
    (the kept values are the middle n − 2f order statistics).

    Non-finite rows are removed first and count against f: with r such rows the rule trims
    f' = max(f − r, 0) per side among the n − r finite rows.

    Returns a length-d vector with the dtype of ``X``.
    Raises :class:`InputShapeError`, :class:`ParameterError` (bad f),
    :class:`InsufficientClientsError` (needs n >= 2f+1).
    """
    return run_finite(
        X, f, "trimmed_mean", MAJORITY, lambda p: trimmed_mean_core(p.rows, p.f).vector
    )
