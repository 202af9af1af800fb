"""Distance-to-centre filter: a distance-only rule for the secure path.

The robust centre is the geometric median of the rows, computed from the pairwise squared
distances alone (Weiszfeld in coefficient space, see :mod:`robust.geomed`). Each row's
distance to it is ``r_i = sqrt((Dα)_i − ½ αᵀDα)``. Rows with ``r_i`` above
``median(r) + k · max(1.4826 · MAD(r), 0.1 · median(r))`` (or above an absolute
``max_distance``) are rejected;
if ``f`` is given, at most the f farthest flagged rows are rejected. The aggregate is the
mean of the accepted rows (trusted-weighted if weights are given), so a secure pipeline
can compute it as a masked sum over the accepted set.
"""

from __future__ import annotations

import numpy as np

from ._common import MAJORITY, prepare
from ._rows import RowSet
from ._validate import check_square
from .auto_f import robust_cut
from .distances import auto_gram, gram_from_distances, resolve_distances
from .errors import InsufficientClientsError
from .params import Param, non_negative, positive
from .result import RuleOutput
from .weiszfeld import weiszfeld

__all__ = ["distance_filter", "distance_filter_select"]

K = Param("k", positive(), "reject above median + k x max(1.4826 MAD, 0.1 median) of the distances")
MAX_DISTANCE = Param(
    "max_distance", non_negative(), "absolute distance cut instead of the k rule (if given)"
)


def _select(
    G: np.ndarray,
    f: int | None,
    k: float,
    max_distance: float | None,
    weights: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, float, dict]:
    n = G.shape[0]
    w = np.full(n, 1.0 / n) if weights is None or weights.sum() <= 0 else weights / weights.sum()
    alpha, info = weiszfeld(G, w, eps=1e-12, tol=1e-9, max_iter=1000)
    r = info["distances"]
    thr = float(max_distance) if max_distance is not None else robust_cut(r, k)
    flagged = r > thr
    if f is not None and flagged.sum() > f:
        keep = np.argsort(-np.where(flagged, r, -np.inf), kind="stable")[:f]
        flagged = np.zeros(n, bool)
        flagged[keep] = True
    if flagged.all():
        raise InsufficientClientsError(
            f"distance_filter rejected all {n} rows (threshold {thr:g}); nothing to aggregate"
        )
    return ~flagged, r, thr, {"centre_coefficients": alpha, "centre_iterations": info["iterations"]}


def distance_filter_select(
    distances: np.ndarray | None = None,
    *,
    f: int | None = None,
    gram: np.ndarray | None = None,
    k: float = 3.0,
    max_distance: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distance-only form: boolean accepted mask and each row's distance to the centre.
    Pass squared ``distances`` or a ``gram`` matrix (more precise for extreme rows)."""
    if gram is not None and distances is None:
        G = check_square(gram, "gram")
        D = None
    else:
        D = resolve_distances(None, distances=distances, gram_matrix=gram)
        G = gram_from_distances(D)
    k = K.check(k)
    if max_distance is not None:
        max_distance = MAX_DISTANCE.check(max_distance)
    acc, r, _, _ = _select(G, f or None, k, max_distance, None)
    return acc, r


def distance_filter_core(
    rs: RowSet | None,
    f: int | None,
    *,
    D: np.ndarray | None = None,
    k: float,
    max_distance: float | None,
    weights: np.ndarray | None = None,
    detailed: bool = False,
    **_: object,
) -> RuleOutput:
    if D is None:
        assert rs is not None
        G = auto_gram(rs)
    else:
        G = gram_from_distances(D)
    acc, r, thr, info = _select(G, f, k, max_distance, weights)
    vec = None
    if rs is not None:
        sel = np.flatnonzero(acc)
        w = np.ones(len(sel)) if weights is None else weights[sel]
        if w.sum() <= 0:
            w = np.ones(len(sel))
        vec = rs.weighted_sum_of(sel, w / w.sum())
    info.update(
        threshold=thr, score_kind="distance to the geometric median (lower is more central)"
    )
    return RuleOutput(vec, acc, r, info)


def distance_filter(
    X: np.ndarray,
    *,
    f: int | None = None,
    k: float = 3.0,
    max_distance: float | None = None,
    distances: np.ndarray | None = None,
    gram: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Mean of the rows whose distance to the robust centre (the geometric median) is at
    most ``median + k·max(1.4826·MAD, 0.1·median)`` of those distances, or
    ``max_distance`` if given.

    ``f``: if positive, at most f rows are rejected (the farthest) and n >= 2f+1 is
    checked; None or 0 means no cap (the same as ``aggregate(..., f=0)``).
    ``distances``/``gram``: precomputed; ``X`` is then only used for the final mean.
    ``weights``: trusted weights only (never self-reported counts).
    Non-finite rows are removed first and count against f.

    Returns a length-d vector (dtype of ``X``). Raises :class:`InputShapeError`,
    :class:`ParameterError`, :class:`WeightsError`, :class:`InsufficientClientsError`.
    """
    k = K.check(k)
    if max_distance is not None:
        max_distance = MAX_DISTANCE.check(max_distance)
    p = prepare(X, 0 if f is None else f, "distance_filter", MAJORITY)
    w = p.weights(weights)
    D = p.given_distances(distances, gram)
    return distance_filter_core(
        p.rows, None if not f else p.f, D=D, k=k, max_distance=max_distance, weights=w
    ).vector
