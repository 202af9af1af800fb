"""Column order statistics: the r-th smallest value of every column of a row set (internal).

The coordinate-wise rules (median, trimmed mean, Bulyan's second stage) are written once,
against :meth:`robust._rows.RowSet.ranked_columns_apply`, which hands them, column chunk by
column chunk, the values of chosen ranks. Two backends produce those values, with
identical results:

``network``
    The compiled kernel ``rank_columns`` (see :mod:`robust._native`). The rows go through a Batcher odd–even merge sorting network,
    vectorised across adjacent columns (a comparator is one vector min and one vector
    max, with no data-dependent branches). The network is pruned to the outputs asked for
    (:func:`network`), so a median of 100 rows costs 897 comparators instead of the 1104
    of a full sort, and a trimmed sum 935. Used for 2 ≤ n ≤ :data:`MAX_NETWORK_ROWS`.
``sort``
    numpy's SIMD sort of transposed, cache-sized column chunks. Used when the kernel is
    not built, for larger n, and when ``FORTIS_KERNELS=numpy`` is set.

Both require finite input (the rules remove non-finite rows first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from . import _native

#: Above this many rows numpy's sort is used. Measured on 2 cores (median and trimmed mean,
#: float32): the network is 2.5× faster than the sort at n = 100, 2.2× at 512 and still 1.5×
#: at 2048, where its O(n log² n) comparators start to catch up with the sort's O(n log n).
MAX_NETWORK_ROWS = 2048

__all__ = ["backend", "network", "batcher_pairs", "MAX_NETWORK_ROWS"]


def backend(n: int) -> str:
    """The backend used for ``n`` rows: ``"network"`` or ``"sort"`` (see module docstring).
    ``FORTIS_KERNELS=numpy`` forces ``sort``; ``FORTIS_KERNELS=compiled`` forces the
    network for every n >= 2 (see :func:`robust._native.mode`)."""
    mode = _native.mode()
    if n < 2 or mode == "numpy" or not _native.available():
        return "sort"
    return "network" if mode == "compiled" or n <= MAX_NETWORK_ROWS else "sort"


def batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Batcher's odd–even merge sorting network on ``n`` wires, as comparators ``(i, j)``
    with ``i < j`` (``i`` receives the minimum), in an order that respects dependencies.

    Built for the next power of two and cut to ``n`` wires: treating wires ``>= n`` as
    holding +inf, every comparator touching them is a no-op, so dropping them leaves a
    sorting network on ``n`` wires."""
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return [(i, j) for i, j in pairs if j < n]


def _prune(
    pairs: Sequence[tuple[int, int]], n: int, exact: Iterable[int], summed: Iterable[int]
) -> list[tuple[int, int]]:
    """Drop the comparators that cannot change the requested outputs.

    Walking backwards, each wire carries a label saying how the outputs depend on its
    current value: not at all, individually (``exact``), or only through the multiset of
    values on all wires of the ``summed`` group. A comparator whose two wires carry the
    same label only permutes values the outputs cannot tell apart, so it is dropped; a
    kept comparator makes both of its input wires individually needed."""
    label: list[object] = [None] * n
    for w in summed:
        label[w] = "sum"
    for w in exact:
        label[w] = ("exact", w)
    kept: list[tuple[int, int]] = []
    fresh = 0
    for i, j in reversed(pairs):
        if label[i] == label[j]:
            continue
        kept.append((i, j))
        label[i] = ("in", fresh)
        label[j] = ("in", fresh + 1)
        fresh += 2
    kept.reverse()
    return kept


@lru_cache(maxsize=64)
def network(n: int, exact: tuple[int, ...], summed: tuple[int, ...]) -> np.ndarray:
    """Comparators (int32, shape (m, 2)) of the Batcher network on ``n`` wires pruned to
    produce the ranks ``exact`` exactly and the sum over the ranks ``summed``."""
    kept = _prune(batcher_pairs(n), n, exact, summed)
    out = np.asarray(kept, dtype=np.int32).reshape(-1, 2)
    out.setflags(write=False)
    return out


def rank_chunk_network(
    X: np.ndarray,
    rows: np.ndarray,
    a: int,
    b: int,
    pairs: np.ndarray,
    ranks: np.ndarray,
    sum_ranks: np.ndarray,
    out: np.ndarray,
    sums: np.ndarray,
    scratch: np.ndarray | None = None,
) -> bool:
    """Fill ``out[q, :b-a]`` with the ``ranks[q]``-th smallest of columns ``a:b`` of
    ``X[rows]`` and ``sums[:b-a]`` with the float64 sum over ``sum_ranks`` (compiled
    kernel, which checks every buffer's dtype, layout and size and every index).
    ``scratch`` (from :func:`scratch_for`) is reused instead of a per-call allocation.
    Returns whether every value read was finite (the outputs are meaningless otherwise)."""
    assert _native.kernels is not None
    return _native.kernels.rank_columns(
        X, rows, a, b - a, pairs, ranks, out, sum_ranks, sums, scratch
    )


def scratch_for(n: int) -> np.ndarray:
    """A work buffer for :func:`rank_chunk_network` on ``n`` rows, to reuse across calls
    of one thread."""
    assert _native.kernels is not None
    return np.empty(_native.kernels.rank_scratch_bytes(n), dtype=np.uint8)
