"""Weiszfeld's geometric-median iteration on a Gram matrix (shared by the geometric median
and the distance filter).

Every iterate is a convex combination ``z = Σ α_i x_i`` (``Σ α = 1``), so it is carried as
its coefficients ``α`` and every distance comes from a Gram matrix ``G`` of the rows
centred on any common point: ``‖x_i − z‖² = G_ii − 2 (Gα)_i + αᵀGα``. One step costs
O(n²); the coordinates are never read. Smoothing: ``β_i = w_i / max(ν, ‖z − x_i‖)``, with
``ν = eps`` in the units of the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["distances_to_combination", "weiszfeld"]


def distances_to_combination(G: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``‖x_i − Σ α_j x_j‖`` for ``Σ α = 1`` from a Gram matrix of rows centred on any
    common point: ``G_ii − 2 (Gα)_i + αᵀGα`` (rounding residue below 0 is clamped)."""
    Ga = G @ alpha
    sq = np.diag(G) - 2.0 * Ga + float(alpha @ Ga)
    return np.sqrt(np.maximum(sq, 0.0))


def weiszfeld(
    G: np.ndarray, w: np.ndarray, *, eps: float, tol: float, max_iter: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Smoothed Weiszfeld from the Gram matrix ``G`` with normalised weights ``w``, starting
    at the weighted mean ``α = w``.

    Returns ``(alpha, info)``: the coefficients of the median and ``iterations``,
    ``converged``, ``objective`` (``Σ w_i ‖z − x_i‖``) and ``distances`` (``‖x_i − z‖``).
    Inputs are trusted (validated by the callers).

    **Stopping rule.** The step ``‖z_{t+1} − z_t‖`` must be at most ``tol`` times the
    median distance of the positively weighted rows to the iterate (a scale that far
    outliers cannot inflate), or at most ``eps · tol``. The step ``sqrt(δᵀGδ)`` is taken as
    an upper bound that includes the rounding error of the quadratic form, about
    ``(n+2)·ε·|δ|ᵀ|G||δ|``. Starting from the mean with rows of norm 1e30, the iterate
    passes through states where a far row keeps a coefficient near 1e-16: its share of the
    iterate (1e14) is far larger than the honest spread, and ``δᵀGδ`` (like the distances)
    cancels to 0 in float64. Read as an exact 0, that step once stopped the iteration at a
    point that depended on the row order; with the bound it goes on until the far
    coefficients are negligible.
    """
    alpha = w.copy()
    dist = distances_to_combination(G, alpha)
    live = w > 0
    abs_g = np.abs(G)
    rounding = (len(w) + 2) * np.finfo(np.float64).eps
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        beta = w / np.maximum(dist, eps)
        new = beta / beta.sum()
        delta = new - alpha
        size = np.abs(delta)
        step_sq = max(float(delta @ (G @ delta)), 0.0) + rounding * float(size @ (abs_g @ size))
        alpha = new
        dist = distances_to_combination(G, alpha)
        step = np.sqrt(step_sq)
        if step <= tol * float(np.median(dist[live])) or step <= eps * tol:
            converged = True
            break
    return alpha, {
        "iterations": it,
        "converged": converged,
        "objective": float(w @ dist),
        "distances": dist,
    }
