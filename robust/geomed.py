"""Geometric median: smoothed Weiszfeld, and the RFA form (Pillutla, Kakade, Harchaoui 2022).

The geometric median ``z* = argmin_z Σ w_i ‖z − x_i‖`` has breakdown point 1/2: fewer than
half the (weighted) rows cannot move it arbitrarily far.

:func:`geometric_median` runs the smoothed Weiszfeld iteration
``z ← Σ β_i x_i / Σ β_i`` with ``β_i = w_i / max(ν, ‖z − x_i‖)`` (ν = ``eps``), starting from
the weighted mean. Every iterate is a convex combination ``z = Σ α_i x_i``, and for
``Σ α = 1`` the distances follow from a Gram matrix ``G`` of the rows (centred on any
common point): ``‖x_i − z‖² = G_ii − 2 (Gα)_i + αᵀGα``. So the whole iteration
(:func:`robust.weiszfeld.weiszfeld`) runs on the n×n matrix (O(n²) per step) after one
precise Gram pass (:func:`robust.gram`, centred on a robust point, so a 10³⁰ outlier does
not spoil the honest entries), and the vector is formed once at the end with one BLAS
matrix-vector product. It stops when the step ``‖z_{t+1} − z_t‖`` (bounded above by its
rounding error) is at most ``tol`` times the median distance of the rows to ``z``
(scale-free, and not inflated by far outliers), or after ``max_iter`` steps.

:func:`rfa` is the same algorithm expressed only through weighted means of the client
updates and each client's own distance to the broadcast iterate, as in RFA. Pass a
``weighted_mean`` callable (e.g. backed by secure aggregation) and a ``distances_to``
callable (each client computes ``‖z − x_i‖`` locally) to run it without ever holding ``X``.

Weights are uniform unless trusted weights are passed; self-reported example counts are
attacker-controlled and must not be used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._common import MAJORITY, prepare
from ._rows import RowSet
from ._validate import check_int, check_square, check_weights, normalised_weights
from .distances import auto_gram, gram_from_distances, resolve_distances
from .errors import AggregationError, InputShapeError
from .params import FUNCTION, Param, integer, non_negative, positive
from .result import RuleOutput
from .weiszfeld import weiszfeld

__all__ = ["geometric_median", "rfa", "weiszfeld_coefficients"]

EPS = Param("eps", positive(), "smoothing: distances below eps are floored at eps (data units)")
NU = Param("nu", positive(), "smoothing: distances below nu are floored at nu (data units)")
TOL = Param("tol", non_negative(), "stop when the step is at most tol x the median distance")
MAX_ITER = Param("max_iter", integer(1), "iteration cap")
WEIGHTED_MEAN = Param(
    "weighted_mean", FUNCTION, "c -> sum c_i x_i / sum c_i, e.g. by secure aggregation"
)
DISTANCES_TO = Param(
    "distances_to", FUNCTION, "z -> the clients' distances ||z - x_i|| (computed by them)"
)


def weiszfeld_coefficients(
    distances: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    *,
    gram: np.ndarray | None = None,
    eps: float = 1e-8,
    tol: float = 1e-7,
    max_iter: int = 1000,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Smoothed Weiszfeld from a squared-distance matrix or a Gram matrix only.

    Returns ``(alpha, info)``: the geometric median is ``Σ alpha_i x_i`` (``alpha >= 0``,
    sums to 1), and ``info`` has ``iterations``, ``converged``, ``objective``
    (``Σ w_i ‖z − x_i‖`` with normalised w) and ``distances`` (``‖x_i − z‖``, shape (n,)).
    A Gram matrix computed from the coordinates (:func:`robust.gram`) is more precise than
    one rebuilt from distances when some rows are extremely far away.
    Raises :class:`InputShapeError`, :class:`WeightsError`, :class:`ParameterError`.
    """
    if gram is not None and distances is not None:
        raise InputShapeError("pass either distances= or gram=, not both")
    if gram is not None:
        G = check_square(gram, "gram")
    else:
        G = gram_from_distances(resolve_distances(None, distances=distances))
    n = G.shape[0]
    return weiszfeld(
        G,
        normalised_weights(check_weights(weights, n), n),
        eps=EPS.check(eps),
        tol=TOL.check(tol),
        max_iter=MAX_ITER.check(max_iter),
    )


def geometric_median_core(
    rs: RowSet | None,
    f: int,
    *,
    D: np.ndarray | None = None,
    G: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    eps: float,
    tol: float,
    max_iter: int,
    detailed: bool = False,
    **_: object,
) -> RuleOutput:
    if G is None:
        G = auto_gram(rs) if D is None else gram_from_distances(D)
    n = G.shape[0]
    alpha, info = weiszfeld(G, normalised_weights(weights, n), eps=eps, tol=tol, max_iter=max_iter)
    vec = None if rs is None else rs.weighted_sum(alpha)
    dist = info.pop("distances")
    info.update(
        coefficients=alpha, score_kind="distance to the geometric median (lower is more central)"
    )
    return RuleOutput(vec, np.ones(n, bool), dist, info)


def geometric_median(
    X: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    eps: float = 1e-8,
    tol: float = 1e-7,
    max_iter: int = 1000,
    f: int = 0,
    distances: np.ndarray | None = None,
    gram: np.ndarray | None = None,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """Geometric median of the rows by smoothed Weiszfeld (see the module docstring).

    Args:
        weights: trusted, non-negative weights (never self-reported counts); uniform if None.
        eps: smoothing ν, in the units of the data: distances below ν are floored at ν.
        tol: relative step tolerance; ``max_iter``: iteration cap.
        f: only checked against n >= 2f+1 (breakdown point 1/2).
        distances / gram: precomputed squared distances / Gram for the rows of ``X``.
        return_info: also return ``{"iterations", "converged", "objective", "coefficients"}``.

    Non-finite rows are removed first. Returns a length-d vector (dtype of ``X``).
    Raises :class:`InputShapeError`, :class:`WeightsError`, :class:`ParameterError`,
    :class:`InsufficientClientsError`.
    """
    p = prepare(X, f, "geometric_median", MAJORITY)
    D, G = p.given(distances, gram)
    out = geometric_median_core(
        p.rows,
        p.f,
        D=D,
        G=G,
        weights=p.weights(weights),
        eps=EPS.check(eps),
        tol=TOL.check(tol),
        max_iter=MAX_ITER.check(max_iter),
    )
    if return_info:
        info = {k: out.info[k] for k in ("iterations", "converged", "objective", "coefficients")}
        return out.vector, info
    return out.vector


def rfa_core(
    rs: RowSet | None,
    f: int,
    *,
    weights: np.ndarray | None = None,
    nu: float,
    tol: float,
    max_iter: int,
    weighted_mean: Callable[[np.ndarray], np.ndarray] | None = None,
    distances_to: Callable[[np.ndarray], np.ndarray] | None = None,
    n: int | None = None,
    detailed: bool = False,
    **_: object,
) -> RuleOutput:
    if rs is not None:
        n = rs.n
        if weighted_mean is None:

            def weighted_mean(c: np.ndarray) -> np.ndarray:
                return rs.weighted_sum(c / c.sum())

        if distances_to is None:

            def distances_to(z: np.ndarray) -> np.ndarray:
                return np.sqrt(rs.sq_dist_to(z))

    if weighted_mean is None or distances_to is None or n is None:
        raise InputShapeError(
            "rfa without X needs weighted_mean=, distances_to= and n= (or weights=)"
        )
    alpha = normalised_weights(weights, n)

    def dists(z: np.ndarray) -> np.ndarray:
        r = np.asarray(distances_to(z), dtype=np.float64)
        if r.shape != (n,) or not np.isfinite(r).all() or (r < 0).any():
            raise AggregationError(f"distances_to must return {n} finite non-negative distances")
        return r

    def wmean(c: np.ndarray) -> np.ndarray:
        z = np.asarray(weighted_mean(c))
        if z.ndim != 1 or not np.isfinite(z).all():
            raise AggregationError("weighted_mean must return a finite vector")
        return z

    z0 = wmean(alpha)
    out_dtype = z0.dtype if z0.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    z = z0.astype(np.float64)
    calls = 1
    r = dists(z)
    obj = float(alpha @ r)
    history = [obj]
    converged = False
    for _ in range(max_iter):
        beta = alpha / np.maximum(nu, r)
        z_new = wmean(beta)
        calls += 1
        r_new = dists(z_new)
        obj_new = float(alpha @ r_new)
        history.append(obj_new)
        step = float(np.sqrt(np.sum((np.asarray(z_new, np.float64) - z) ** 2)))
        z, r, obj = np.asarray(z_new, np.float64), r_new, obj_new
        if step <= tol * float(np.median(r[alpha > 0])):
            converged = True
            break
    info = {
        "iterations": calls - 1,
        "weighted_mean_calls": calls,
        "converged": converged,
        "objective": obj,
        "objective_history": history,
        "score_kind": "distance to the RFA aggregate (lower is more central)",
    }
    return RuleOutput(z.astype(out_dtype), np.ones(n, bool), r, info)


def rfa(
    X: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    *,
    nu: float = 1e-6,
    tol: float = 1e-6,
    max_iter: int = 100,
    weighted_mean: Callable[[np.ndarray], np.ndarray] | None = None,
    distances_to: Callable[[np.ndarray], np.ndarray] | None = None,
    n: int | None = None,
    f: int = 0,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """Robust Federated Aggregation (Pillutla et al. 2022, Algorithm "RFA").

    The server only ever asks for weighted means: ``z_0 = weighted_mean(α)``, then
    ``z_{t+1} = weighted_mean(β)`` with ``β_i = α_i / max(ν, ‖z_t − x_i‖)``, where each
    client reports its own distance ``‖z_t − x_i‖``. It stops when the step
    ``‖z_{t+1} − z_t‖`` is at most ``tol`` times the median reported distance (or after
    ``max_iter`` steps). (Pillutla et al. stop on the relative objective decrease; one far
    outlier dominates that objective and stops the iteration early, so the step rule is
    used here.)

    Args:
        X: the client updates; if None, ``weighted_mean``, ``distances_to`` and ``n`` (or
            ``weights``) must be given and nothing else is read.
        weights: trusted weights α (uniform if None; never self-reported counts).
        weighted_mean: ``c -> Σ c_i x_i / Σ c_i`` (e.g. via secure aggregation).
        distances_to: ``z -> array of ‖z − x_i‖`` (computed by the clients).
        return_info: also return iterations, converged, objective history.

    Returns the aggregate vector (dtype of ``X`` by default). Raises
    :class:`InputShapeError`, :class:`WeightsError`, :class:`AggregationError` (a callable
    returned something malformed), :class:`InsufficientClientsError`.
    """
    nu, tol, max_iter = NU.check(nu), TOL.check(tol), MAX_ITER.check(max_iter)
    for param, value in ((WEIGHTED_MEAN, weighted_mean), (DISTANCES_TO, distances_to)):
        if value is not None:
            param.check(value)
    if X is not None:
        p = prepare(X, f, "rfa", MAJORITY)
        w = p.weights(weights)
        rs: RowSet | None = p.rows
        if p.removed and (weighted_mean is not None or distances_to is not None):
            raise InputShapeError("rfa: X has non-finite rows; callables cannot be re-indexed")
    else:
        if n is None and weights is not None:
            n = len(np.asarray(weights))
        if n is None:
            raise InputShapeError("rfa without X needs n= or weights=")
        n = check_int(n, "n", 1)
        w = check_weights(weights, n)
        rs = None
    out = rfa_core(
        rs,
        0,
        weights=w,
        nu=nu,
        tol=tol,
        max_iter=max_iter,
        weighted_mean=weighted_mean,
        distances_to=distances_to,
        n=n,
    )
    if return_info:
        return out.vector, {k: v for k, v in out.info.items() if k != "score_kind"}
    return out.vector
