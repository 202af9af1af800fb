"""Norm clipping and the norm filter (pre-aggregators), and centered clipping (Karimireddy,
He, Jaggi 2021)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._common import MAJORITY, prepare, require_all_finite
from ._rows import RowSet
from ._validate import as_matrix
from .errors import InputShapeError, InsufficientClientsError
from .params import VECTOR, Limits, Param, integer, positive
from .result import RuleOutput

if TYPE_CHECKING:
    from .flow import Flow

__all__ = ["clip", "centered_clipping", "clip_factors", "norm_filter"]

MAX_NORM = Param("max_norm", positive(), "L2 norm bound of a client's update")
CENTER = Param(
    "center",
    VECTOR,
    "the caller's state, e.g. the previous aggregate or the server momentum",
    state=True,
)
TAU = Param("tau", positive(), "clipping radius around the centre (default: median distance)")
ITERS = Param("iters", integer(1), "clipping iterations")


def clip_factors(sq_norms: np.ndarray, max_norm: float) -> np.ndarray:
    """``min(1, max_norm / ‖x_i‖)`` per row (1 for a zero row)."""
    norms = np.sqrt(sq_norms)
    with np.errstate(divide="ignore"):
        return np.where(norms > max_norm, max_norm / np.where(norms > 0, norms, 1.0), 1.0)


def clip_rows(
    rs: RowSet, max_norm: float, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clipped copy of the rows (into ``out`` if given), the factors, and the original
    norms (float64)."""
    sq = rs.sq_norms()
    factors = clip_factors(sq, max_norm)
    return rs.scaled(factors, out), factors, np.sqrt(sq)


def clip(X: np.ndarray, max_norm: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """Scale every row with L2 norm above ``max_norm`` down to norm ``max_norm``.

    Norms are computed in float64. Returns a new array (dtype of ``X``) and leaves ``X``
    unmodified, unless ``out`` is given: a C-contiguous array of the same shape and dtype
    to write into (it may be ``X`` itself, for an explicit in-place clip), which saves
    allocating n×d values per call in a server loop.
    Raises :class:`InputShapeError` (including non-finite rows: drop them first, as
    :func:`robust.aggregate` does, and a bad ``out``), :class:`ParameterError`
    (``max_norm`` not > 0).
    """
    X = as_matrix(X)
    max_norm = MAX_NORM.check(max_norm)
    if out is not None and (
        not isinstance(out, np.ndarray)
        or out.shape != X.shape
        or out.dtype != X.dtype
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise InputShapeError(
            f"clip: out must be a writable C-contiguous {X.dtype} array of shape {X.shape}"
        )
    require_all_finite(X, "clip")
    return clip_rows(RowSet(X), max_norm, out)[0]


def clip_stage(flow: Flow, *, max_norm: float) -> None:
    """Pipeline stage ``clip``: reports whom it clipped (``clipped``) and the largest
    input norm."""
    Y, factors, norms = clip_rows(flow.rows, max_norm)
    clients = flow.clients_in(np.flatnonzero(factors < 1))
    flow.replace(Y)
    flow.record(
        "clip",
        max_norm=max_norm,
        clipped_count=len(clients),
        clipped=clients.tolist(),
        max_input_norm=float(norms.max()),
    )


def norm_filter(X: np.ndarray, max_norm: float) -> np.ndarray:
    """Boolean mask of the rows whose L2 norm (float64) is at most ``max_norm``; non-finite
    rows are outside. In :func:`robust.aggregate` the other rows are rejected with verdict
    ``"rejected:norm"`` (the secure path's norm bound). Raises :class:`InputShapeError`,
    :class:`ParameterError`."""
    X = as_matrix(X)
    max_norm = MAX_NORM.check(max_norm)
    with np.errstate(invalid="ignore", over="ignore"):
        sq = RowSet(X).sq_norms()
    return np.isfinite(sq) & (np.sqrt(sq) <= max_norm)


def norm_filter_stage(flow: Flow, *, max_norm: float) -> None:
    """Pipeline stage ``norm_filter``: rejects the rows above ``max_norm`` (verdict
    ``"rejected:norm"``; each counts against f, since honest clients clip to the bound)."""
    norms = np.sqrt(flow.rows.sq_norms())
    bad = np.flatnonzero(norms > max_norm)
    if len(bad) == flow.count:
        raise InsufficientClientsError(
            f"norm_filter rejected all {flow.count} rows (max_norm={max_norm})"
        )
    flow.record("norm_filter", rejected=flow.reject(bad, "rejected:norm"), max_norm=max_norm)


def centered_clipping_core(
    rs: RowSet,
    f: int,
    *,
    center: np.ndarray,
    tau: float | None,
    iters: int,
    weights: np.ndarray | None = None,
    detailed: bool = False,
    **_: object,
) -> RuleOutput:
    """``tau=None``: :func:`auto_tau`."""
    w = np.full(rs.n, 1.0 / rs.n) if weights is None else weights / weights.sum()
    tau = auto_tau(rs, center) if tau is None else tau
    v = np.asarray(center, dtype=np.float64).copy()
    factors = np.ones(rs.n)
    for _ in range(iters):
        factors = clip_factors(rs.sq_dist_to(v), tau)
        c = w * factors
        # v + Σ c_i (x_i − v) = (1 − Σ c_i) v + Σ c_i x_i ; Σ c_i <= 1 so no overflow.
        v = (1.0 - c.sum()) * v + rs.weighted_sum(c).astype(np.float64)
    info = {
        "iterations": iters,
        "clipped_count": int((factors < 1).sum()),
        "score_kind": "clip factor min(1, tau/||x_i - v||) in the last iteration (1 = unclipped)",
    }
    return RuleOutput(v.astype(rs.dtype), np.ones(rs.n, bool), factors, info)


def auto_tau(rs: RowSet, center: np.ndarray) -> float:
    """Default clipping radius: the median distance of the rows to ``center``.

    With at most f < n/2 Byzantine rows the median distance is at most the largest honest
    distance, so Byzantine rows cannot inflate it. A zero median (most rows equal the centre)
    falls back to the smallest positive distance, then to 1.0.
    """
    dist = np.sqrt(rs.sq_dist_to(np.asarray(center, dtype=np.float64)))
    tau = float(np.median(dist))
    if tau > 0:
        return tau
    positive = dist[dist > 0]
    return float(positive.min()) if positive.size else 1.0


def centered_clipping(
    X: np.ndarray,
    center: np.ndarray,
    tau: float | None = None,
    iters: int = 1,
    *,
    weights: np.ndarray | None = None,
    f: int = 0,
) -> np.ndarray:
    """Centered clipping: ``v ← v + Σ w_i (x_i − v) · min(1, τ / ‖x_i − v‖)``, ``iters``
    times, starting at ``v = center`` (uniform ``w_i = 1/n`` unless trusted weights).

    Stateless: the caller keeps the centre (typically the previous round's aggregate or
    momentum) and passes it in. ``tau=None`` uses :func:`auto_tau` (the median distance to
    the centre). Distances are computed directly in float64. Non-finite rows are removed
    first. ``f`` is only checked against n >= 2f+1.

    Returns a length-d vector (dtype of ``X``). Raises :class:`InputShapeError` (bad shape,
    ``center`` of the wrong length or non-finite), :class:`ParameterError` (``tau`` not > 0,
    ``iters`` < 1), :class:`WeightsError`, :class:`InsufficientClientsError`.
    """
    p = prepare(X, f, "centered_clipping", MAJORITY)
    c = CENTER.check(center, Limits(d=p.X.shape[1]))
    tau = None if tau is None else TAU.check(tau)
    return centered_clipping_core(
        p.rows, p.f, center=c, tau=tau, iters=ITERS.check(iters), weights=p.weights(weights)
    ).vector
