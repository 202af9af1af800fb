"""``f="auto"``: estimate the number of outlying clients from the distance matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import check_f, check_positive
from .distances import resolve_distances, row_lower_medians

__all__ = ["estimate_f", "estimate_outliers", "OutlierEstimate"]

_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class OutlierEstimate:
    """Result of :func:`estimate_outliers`: ``f`` and which rows were flagged."""

    f: int
    flagged: np.ndarray  # bool (n,)
    scores: np.ndarray  # lower-median distance to the other rows
    threshold: float


#: The spread used by the cut is at least this fraction of the median score.
REL_SPREAD_FLOOR = 0.1


def robust_cut(scores: np.ndarray, k: float) -> float:
    """``median + k · max(1.4826 · MAD, 0.1 · median)`` of ``scores``.

    The relative floor keeps a few honest rows from being cut when the scores are tightly
    concentrated (high dimension, where the MAD of a small sample understates the tail): a
    row must be at least ``1 + 0.1·k`` times the median (1.3× for k = 3) to be cut."""
    med = float(np.median(scores))
    mad = float(np.median(np.abs(scores - med))) * _MAD_TO_SIGMA
    return med + k * max(mad, REL_SPREAD_FLOOR * med)


def estimate_outliers(
    distances: np.ndarray | None = None,
    *,
    gram: np.ndarray | None = None,
    k: float = 3.0,
    max_f: int | None = None,
) -> OutlierEstimate:
    """Flag far outliers and count them (see :func:`estimate_f`)."""
    D = resolve_distances(None, distances=distances, gram_matrix=gram)
    n = D.shape[0]
    k = check_positive(k, "k")
    cap = (n - 1) // 2 if max_f is None else min(check_f(max_f, "max_f"), (n - 1) // 2)
    if n <= 2:
        return OutlierEstimate(0, np.zeros(n, bool), np.zeros(n), 0.0)
    scores = np.sqrt(row_lower_medians(D))
    thr = robust_cut(scores, k)
    flagged = scores > thr
    if flagged.sum() > cap:
        keep = np.argsort(-scores, kind="stable")[:cap]
        flagged = np.zeros(n, bool)
        flagged[keep] = True
    return OutlierEstimate(int(flagged.sum()), flagged, scores, thr)


def estimate_f(
    distances: np.ndarray | None = None,
    *,
    gram: np.ndarray | None = None,
    k: float = 3.0,
    max_f: int | None = None,
) -> int:
    """Estimate how many rows are outliers, from the (n, n) squared-distance matrix (or a
    Gram matrix of the rows, ``gram=``).

    Each row gets a robust score, the lower median of its Euclidean distances to the other
    rows. With fewer than n/2 outliers, an honest row's score is an honest–honest distance
    while a far outlier's score is a distance to the honest cluster (also when the
    outliers collude at one point). Rows whose score exceeds
    ``median + k · max(1.4826 · MAD, 0.1 · median)`` of the scores are counted (so with
    k = 3 a row must be at least 1.3× as far as the typical row). The count is capped at
    ``max_f`` (pass the largest f the target rule accepts, e.g. ``(n−3)//2`` for Krum,
    ``(n−3)//4`` for Bulyan) and always so that n > 2f.

    Limits — read before relying on it:
      * It only sees attackers that are *far* from the honest spread. Attacks designed to
        hide inside it (ALIE, IPM with small ε, mimic) are not counted, and then the rule
        runs with too small an f. Use a known bound on f when you have one.
      * With non-IID honest clients, honest outliers are counted too (conservative: a
        larger f makes robust rules discard more).
      * Many colluding attackers placed together (close to n/2) can shift the median and
        MAD; the estimate is only meaningful well below n/2.
      * Attackers less than ~1.3× the typical distance away are never counted.
      * With identical honest rows (median score 0) any row off the cluster is counted.

    Raises :class:`InputShapeError` for a malformed matrix, :class:`ParameterError`.
    """
    return estimate_outliers(distances, gram=gram, k=k, max_f=max_f).f
