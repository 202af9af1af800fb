"""Min-max and min-sum (Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing Model
Poisoning Attacks and Defenses for Federated Learning", NDSS 2021).

The crafted vector is ``m = mean + gamma * p`` where ``p`` is a fixed perturbation direction and
``gamma`` is the largest value for which ``m`` still looks like an honest update:

* min-max: ``max_i ||m - x_i||^2 <= max_{i,j} ||x_i - x_j||^2`` (``m`` is no farther from any
  honest update than the two farthest honest updates are from each other);
* min-sum: ``sum_i ||m - x_i||^2 <= max_i sum_j ||x_i - x_j||^2``.

``x_i`` range over the attacker's view (the honest updates when omniscient, the Byzantine
clients' own honest updates when limited). Perturbations, as in the paper:
``"unit_vec"`` (``-mean / ||mean||``, the inverse unit vector), ``"std"`` (``-std``, the inverse
coordinate-wise standard deviation) and ``"sign"`` (``-sign(mean)``).

Both constraints are convex in ``gamma`` and hold at ``gamma = 0`` (the mean is no farther from
any point than the farthest point is, and it minimises the sum of squared distances), so the
feasible set is an interval ``[0, gamma*]``. The search follows the paper's bisection, with
one change: it first doubles ``gamma`` from ``gamma_init`` until the constraint fails, so the
result is not capped at ``2 * gamma_init`` as in the paper's loop; then it bisects to a relative
precision ``rtol`` (default ``1e-6``; the paper stops at an absolute ``1e-5``). Each test costs
O(rows) after one O(rows^2 * d) precomputation: with ``c_i = x_i - mean``,
``||m - x_i||^2 = ||c_i||^2 - 2 gamma <p, c_i> + gamma^2 ||p||^2``. Pairwise distances come from
the Gram matrix of the *centred* view in float64, which keeps them accurate for near-duplicate
updates.

A view with one row (limited knowledge with ``f == 1``, or independent attackers) has zero
spread, so ``gamma* = 0`` and the attacker sends its own update (``last_info["degenerate"]``).
A zero perturbation (e.g. ``"std"`` on identical rows) also gives ``gamma = 0``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import AttackContext, PerViewAttack, View, check_choice, check_real

__all__ = [
    "PERTURBATIONS",
    "MinMaxAttack",
    "MinSumAttack",
    "gamma_search",
    "pairwise_sq_distances",
    "perturbation_vector",
]

PERTURBATIONS = ("unit_vec", "std", "sign")
_MAX_BISECTIONS = 200  # from gamma_init, 2**-200 relative: far below any useful precision


def perturbation_vector(view: View, kind: str) -> np.ndarray:
    """The paper's perturbation ``p`` (float64, shape ``(d,)``) for a view."""
    check_choice("min_max", "perturbation", kind, PERTURBATIONS)
    if kind == "unit_vec":
        norm = float(np.linalg.norm(view.mean))
        return -view.mean / norm if norm > 0 else np.zeros_like(view.mean)
    if kind == "std":
        return -view.std
    return -np.sign(view.mean)


def pairwise_sq_distances(view: View) -> np.ndarray:
    """Squared Euclidean distances between the view's rows, ``(k, k)`` float64.

    Computed from the Gram matrix of the centred rows, clamped at 0, with a zero diagonal.
    """
    centred = view.centred
    gram = centred @ centred.T
    sq = np.diag(gram)
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def gamma_search(
    feasible: Callable[[float], bool], gamma_init: float = 10.0, rtol: float = 1e-6
) -> float:
    """Largest ``gamma >= 0`` with ``feasible(gamma)``, for a feasible set ``[0, gamma*]``.

    Doubles from ``gamma_init`` until infeasible, then bisects until the bracket is narrower
    than ``rtol`` times its upper end (at most 200 halvings, so a feasible set ``{0}`` returns
    0.0 after ``gamma_init * 2**-200`` is ruled out). Returns the feasible end of the bracket, so
    the result is always feasible and ``result * (1 + rtol)`` (or more) is not, up to floating
    point.
    Returns ``inf`` if the constraint never fails (the caller must exclude that case).
    """
    lo, hi = 0.0, float(gamma_init)
    while feasible(hi):
        lo, hi = hi, hi * 2.0
        if not np.isfinite(hi):
            return float("inf")
    for _ in range(_MAX_BISECTIONS):
        if hi - lo <= rtol * hi:
            break
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:  # floating-point resolution reached
            break
        if feasible(mid):
            lo = mid
        else:
            hi = mid
    return lo


class _GammaSearchAttack(PerViewAttack):
    _aggregate_name: str

    def __init__(
        self, perturbation: str = "unit_vec", gamma_init: float = 10.0, rtol: float = 1e-6
    ) -> None:
        super().__init__()
        self.perturbation = check_choice(self.name, "perturbation", perturbation, PERTURBATIONS)
        self.gamma_init = check_real(self.name, "gamma_init", gamma_init, low=0.0, low_open=True)
        self.rtol = check_real(self.name, "rtol", rtol, low=0.0, high=0.5, low_open=True)

    def params(self) -> dict[str, Any]:
        return {"perturbation": self.perturbation, "gamma_init": self.gamma_init, "rtol": self.rtol}

    @abc.abstractmethod
    def _constraint(
        self, view: View, a: np.ndarray, b: np.ndarray, c: float
    ) -> tuple[Callable[[float], float], float]:
        """``(lhs, threshold)``: the attack is feasible at ``gamma`` iff ``lhs(gamma) <= threshold``."""

    def _craft_vector(self, view: View, ctx: AttackContext, rng: np.random.Generator) -> np.ndarray:
        p = perturbation_vector(view, self.perturbation)
        c = float(p @ p)
        if view.rows < 2 or c == 0.0:
            self.last_info = {"gamma": 0.0, "perturbation": self.perturbation, "degenerate": True}
            return view.mean.copy()
        centred = view.centred
        a = np.einsum("ij,ij->i", centred, centred)
        b = centred @ p
        lhs, threshold = self._constraint(view, a, b, c)
        slack = 1e-12 * max(threshold, 1e-300)

        def feasible(gamma: float) -> bool:
            return bool(lhs(gamma) <= threshold + slack)

        gamma = gamma_search(feasible, self.gamma_init, self.rtol)
        self.last_info = {
            "gamma": gamma,
            "perturbation": self.perturbation,
            "threshold": threshold,
            "degenerate": gamma == 0.0,
        }
        return view.mean + gamma * p


class MinMaxAttack(_GammaSearchAttack):
    """Min-max: the largest ``gamma`` with ``max_i ||m - x_i|| <= max_{i,j} ||x_i - x_j||``.

    Parameters: ``perturbation`` in ``"unit_vec" | "std" | "sign"`` (default ``"unit_vec"``),
    ``gamma_init`` (first trial value, default 10 as in the paper) and ``rtol`` (relative
    precision of ``gamma``). ``last_info["gamma"]`` holds the value found.
    """

    name = "min_max"

    def _constraint(self, view, a, b, c):  # noqa: ANN001, ANN202 - see base
        threshold = float(pairwise_sq_distances(view).max())

        def lhs(gamma: float) -> float:
            return float(np.max(a - 2.0 * gamma * b + gamma * gamma * c))

        return lhs, threshold


class MinSumAttack(_GammaSearchAttack):
    """Min-sum: the largest ``gamma`` with ``sum_i ||m - x_i||^2 <= max_i sum_j ||x_i - x_j||^2``.

    Same parameters as :class:`MinMaxAttack`.
    """

    name = "min_sum"

    def _constraint(self, view, a, b, c):  # noqa: ANN001, ANN202 - see base
        threshold = float(pairwise_sq_distances(view).sum(axis=1).max())
        a_sum, b_sum, k = float(a.sum()), float(b.sum()), view.rows

        def lhs(gamma: float) -> float:
            return a_sum - 2.0 * gamma * b_sum + k * gamma * gamma * c

        return lhs, threshold
