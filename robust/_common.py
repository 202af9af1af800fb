"""Shared preamble of every public rule: validation and non-finite row removal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ._rows import NonFiniteSeen, RowSet
from ._validate import as_matrix, check_f, check_weights, finite_rows, require_n
from .distances import given_distances, given_for_rows
from .errors import InputShapeError, InsufficientClientsError

T = TypeVar("T")


@dataclass(frozen=True)
class Bound:
    """``n >= min_n(f)``, written as ``text`` in error messages."""

    text: str
    min_n: Callable[[int], int]

    def check(self, rule: str, n: int, f: int) -> None:
        require_n(rule, n, f, self.text, self.min_n)

    def max_f(self, n: int) -> int:
        f = 0
        while self.min_n(f + 1) <= n:
            f += 1
        return f


ANY = Bound("1", lambda f: 1)
MAJORITY = Bound("2f+1", lambda f: 2 * f + 1)
KRUM = Bound("2f+3", lambda f: 2 * f + 3)
BULYAN = Bound("4f+3", lambda f: 4 * f + 3)


@dataclass
class Prepared:
    X: np.ndarray
    rows: RowSet  # finite rows
    finite: np.ndarray  # bool mask over the original rows
    f: int  # f for the finite rows: max(f - removed, 0)
    removed: int

    def weights(self, weights: object) -> np.ndarray | None:
        """The caller's trusted ``weights`` (one per row of ``X``), validated, for the
        finite rows. Raises :class:`WeightsError`."""
        w = check_weights(weights, self.X.shape[0])
        return w[self.finite] if w is not None and self.removed else w

    def given(self, distances: object, gram: object) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The caller's precomputed distances or Gram matrix of the rows of ``X``, for the
        finite rows (see :func:`robust.distances.given_for_rows`)."""
        return given_for_rows(distances, gram, self.X.shape[0], self._keep())

    def given_distances(self, distances: object, gram: object) -> np.ndarray | None:
        """:meth:`given` as squared distances (None when neither is given)."""
        return given_distances(distances, gram, self.X.shape[0], self._keep())

    def _keep(self) -> np.ndarray | None:
        return np.flatnonzero(self.finite) if self.removed else None


def prepare(X: object, f: object, rule: str, bound: Bound, *, optimistic: bool = False) -> Prepared:
    """Validate ``X`` and ``f``, check the rule's bound on (n, f), drop non-finite rows.

    Non-finite rows are Byzantine by definition, so each one removed lowers the f that the
    rule must tolerate among the remaining rows: ``f' = max(f − removed, 0)``. If more rows
    than f are non-finite, the rule still runs (with f' = 0) on the finite rows, provided
    they satisfy its bound for f' = 0.

    ``optimistic=True`` with float32 ``X`` skips the finiteness pass and returns all rows as
    an ``unchecked`` RowSet; use it through :func:`run_finite`.
    """
    X = as_matrix(X)
    f = check_f(f)
    n = X.shape[0]
    bound.check(rule, n, f)
    if optimistic and X.dtype == np.float32:
        return Prepared(X, RowSet(X, None, unchecked=True), np.ones(n, bool), f, 0)
    mask = finite_rows(X)
    removed = int(n - mask.sum())
    if removed == n:
        raise InsufficientClientsError(f"{rule}: all {n} rows of X are non-finite")
    f_eff = max(f - removed, 0)
    if removed:
        bound.check(rule + f" (after removing {removed} non-finite rows)", n - removed, f_eff)
    rows = RowSet(X, np.flatnonzero(mask) if removed else None)
    return Prepared(X, rows, mask, f_eff, removed)


def run_finite(
    X: object,
    f: object,
    rule: str,
    bound: Bound,
    call: Callable[[Prepared], T],
    *,
    optimistic: bool = True,
) -> T:
    """``call(prepare(X, f, rule, bound))``, saving the separate finiteness pass when the
    rule's kernels check as they go.

    With ``optimistic`` (and float32 ``X``), ``call`` first runs on all rows, unchecked;
    the fused kernels (column ranking, float32 Gram) raise :class:`NonFiniteSeen` on the
    first non-finite value, and ``call`` then runs again on the finite rows. A Byzantine
    NaN row therefore costs a second pass, never a wrong result. ``call`` must do nothing
    irreversible before its kernels have run.
    """
    p = prepare(X, f, rule, bound, optimistic=optimistic)
    if not p.rows.unchecked:
        return call(p)
    try:
        return call(p)
    except NonFiniteSeen:
        return call(prepare(p.X, f, rule, bound))


def require_all_finite(X: np.ndarray, who: str) -> None:
    mask = finite_rows(X)
    if not mask.all():
        bad = np.flatnonzero(~mask)[:10].tolist()
        raise InputShapeError(
            f"{who}: rows {bad} of X are non-finite; drop them first (robust.aggregate does)"
        )
