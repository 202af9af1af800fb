"""Sign-majority / super-majority vote on the update direction.

"Redundancy and voting": each client votes, per coordinate, with the sign of its update.
With ``threshold = τ`` the output coordinate is ``+1`` if strictly more than ``τ·n`` clients
voted ``+``, ``−1`` if strictly more than ``τ·n`` voted ``−``, and ``0`` (no decision)
otherwise. ``τ = 0.5`` is a strict majority of all n voters, which is signSGD with majority
vote (Bernstein et al. 2019) except that a tie (or a coordinate where many clients send an
exact 0, an abstention) gives 0. ``τ > 0.5`` is a super-majority: the server only moves
where clients agree strongly.

Robustness: f Byzantine voters can decide a coordinate on their own only if f > τ·n; for
τ >= 1/2 and f < n/2 they never can. They can block a decision (force 0) where the honest
margin is smaller than f, and flip one only where honest clients are split within f votes.
"""

from __future__ import annotations

import numpy as np

from ._common import MAJORITY, prepare
from ._rows import RowSet
from .params import SCALE_OR_MEDIAN_NORM, SUPER_MAJORITY, Param
from .result import RuleOutput

__all__ = ["sign_vote"]

_CHUNK = 1 << 16

THRESHOLD = Param(
    "threshold", SUPER_MAJORITY, "output +-1 where strictly more than threshold x n agree"
)
SCALE = Param(
    "scale",
    SCALE_OR_MEDIAN_NORM,
    "multiply the sign vector by this, or 'median_norm' (median client norm)",
)


def sign_vote_core(
    rs: RowSet,
    f: int,
    *,
    threshold: float,
    scale: float | str,
    detailed: bool = False,
    **_: object,
) -> RuleOutput:
    n, d = rs.n, rs.d
    need = threshold * n
    out = np.zeros(d, dtype=rs.dtype)
    agree = np.zeros(n, dtype=np.int64) if detailed else None
    for a in range(0, d, _CHUNK):
        b = min(a + _CHUNK, d)
        ch = rs.chunk(a, b)
        pos = (ch > 0).sum(axis=0)
        neg = (ch < 0).sum(axis=0)
        o = np.where(pos > need, 1, np.where(neg > need, -1, 0)).astype(rs.dtype)
        out[a:b] = o
        if agree is not None:
            agree += ((np.sign(ch) == o) & (o != 0)).sum(axis=1)
    decided = int(np.count_nonzero(out))
    if scale == "median_norm":
        if decided:
            out *= rs.dtype.type(np.median(np.sqrt(rs.sq_norms())) / np.sqrt(decided))
    elif scale != 1.0:
        out *= rs.dtype.type(scale)
    info: dict[str, object] = {"decided_fraction": decided / d, "threshold": threshold}
    scores = None
    if agree is not None:
        scores = agree / max(decided, 1)
        info["score_kind"] = "fraction of decided coordinates where the row voted with the outcome"
    return RuleOutput(out, np.ones(n, bool), scores, info)


def sign_vote(
    X: np.ndarray, threshold: float = 0.5, scale: float | str = 1.0, *, f: int = 0
) -> np.ndarray:
    """Per-coordinate (super-)majority vote on the sign of the updates (module docstring).

    Args:
        threshold: τ in [0.5, 1). Output ±1 where strictly more than τ·n clients agree.
        scale: multiply the {−1, 0, +1} vector by this positive float, or ``"median_norm"``
            to give the result the median of the client norms (a robust step size).
        f: only checked against n >= 2f+1.

    Non-finite rows are removed first (they do not vote). Returns a length-d vector (dtype
    of ``X``). Raises :class:`InputShapeError`, :class:`ParameterError`,
    :class:`InsufficientClientsError`.
    """
    t, sc = THRESHOLD.check(threshold), SCALE.check(scale)
    p = prepare(X, f, "sign_vote", MAJORITY)
    return sign_vote_core(p.rows, p.f, threshold=t, scale=sc).vector
