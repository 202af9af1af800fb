"""A read-only view of a subset of the rows of a client matrix (internal).

Rules drop non-finite rows before running. Copying the surviving rows of a (100, 10⁶)
matrix costs 400 MB and ~0.1 s, so instead every heavy kernel here works column chunk by
column chunk and gathers only the selected rows of each chunk, on worker threads. The
caller's array is never written to (except by ``scaled`` into an ``out`` the caller names).

Where robust's compiled kernels are enabled (:mod:`robust._native`), column ranking,
squared distances and the centring of the float32 Gram run in C; each has a numpy path
here that gives the same results.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _native, _ranking
from ._blas import blas_threads_controllable, single_threaded_blas

_CHUNK_BYTES = 16 << 20  # gather buffers
_GRAM_CHUNK_BYTES = 1 << 20  # per-thread float64 Gram work buffer (cache-sized)
_GRAM32_CHUNK_BYTES = 1 << 20  # per-thread float32 Gram work buffer (cache-sized)
_SORT_CHUNK_BYTES = 1 << 20  # transposed chunk for column sorts (cache-sized)
_RANK_CHUNK_COLS = 8192  # columns per call of the compiled ranking kernel
_SQDIST_MIN_COLS = 1 << 16  # min columns per worker of streaming kernels (distances, sums)
_SCALE_MIN_VALUES = 1 << 18  # values per worker thread of a row scaling


def num_threads() -> int:
    """Worker threads for column-parallel kernels: ``$FORTIS_NUM_THREADS`` or the number of
    CPUs this process may run on (at most 8). numpy's sort and BLAS release the GIL, so
    threads give real parallelism."""
    env = os.environ.get("FORTIS_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


class NonFiniteSeen(Exception):
    """A kernel met a non-finite value in a row set marked ``unchecked`` (internal: the
    public rules catch it and rerun after removing non-finite rows)."""


class RowSet:
    """Rows ``X[idx]`` (all rows when ``idx`` is None) of a validated float matrix.

    ``unchecked`` marks rows not yet screened for non-finite values: the fused kernels
    (column ranking, float32 Gram) then check as they go and raise :class:`NonFiniteSeen`
    instead of returning a meaningless result.
    """

    __slots__ = ("X", "idx", "n", "d", "dtype", "unchecked")

    def __init__(
        self, X: np.ndarray, idx: np.ndarray | None = None, *, unchecked: bool = False
    ) -> None:
        self.X = X
        self.unchecked = unchecked
        if idx is not None and len(idx) == X.shape[0]:
            idx = None
        self.idx = None if idx is None else np.asarray(idx, dtype=np.intp)
        self.n = X.shape[0] if idx is None else len(self.idx)
        self.d = X.shape[1]
        self.dtype = X.dtype

    # -- access ---------------------------------------------------------------------------
    def chunk(self, a: int, b: int) -> np.ndarray:
        """Rows of columns ``a:b`` (a view when no subset is selected)."""
        if self.idx is None:
            return self.X[:, a:b]
        return self.X[self.idx, a:b]

    def row_indices(self) -> np.ndarray:
        """Indices into ``X`` of the rows of this set (int64, as the compiled kernels take)."""
        return np.arange(self.n, dtype=np.int64) if self.idx is None else self.idx.astype(np.int64)

    def row(self, i: int) -> np.ndarray:
        return self.X[i if self.idx is None else self.idx[i]]

    def subset(self, local: np.ndarray) -> RowSet:
        """Rows ``local`` (indices into this set)."""
        local = np.asarray(local, dtype=np.intp)
        base = local if self.idx is None else self.idx[local]
        return RowSet(self.X, base, unchecked=self.unchecked)

    def materialize(self) -> np.ndarray:
        return self.X if self.idx is None else self.X[self.idx]

    def _width(self, bytes_per: int, per_elem: int = 8) -> int:
        return int(max(256, min(self.d, bytes_per // (per_elem * max(self.n, 1)))))

    # -- kernels --------------------------------------------------------------------------
    def weighted_sum(self, w: np.ndarray) -> np.ndarray:
        """``Σ w_i x_i`` in the input dtype. With ``w`` normalised to sum 1 every partial
        sum is a sub-convex combination, so finite rows cannot overflow. Memory-bound: the
        columns are split between worker threads, each running a single-threaded gemv."""
        w = np.asarray(w, dtype=self.dtype)
        out = np.empty(self.d, dtype=self.dtype)
        if self.idx is None:  # one contiguous column range per worker, no gather
            width = max(_SQDIST_MIN_COLS, -(-self.d // num_threads()))
        else:
            width = self._width(_CHUNK_BYTES, self.X.itemsize)

        def part(starts: list[int], c: int) -> None:
            for a in starts:
                b = min(a + c, self.d)
                np.matmul(w, self.chunk(a, b), out=out[a:b])

        self._column_parallel(width, part)
        return out

    def weighted_sum_of(self, local: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``Σ_k w_k x_{local_k}`` (``w`` normalised). Rows of a RowSet are finite, so when
        the set is all of ``X`` one zero-padded BLAS gemv beats gathering the rows."""
        local = np.asarray(local, dtype=np.intp)
        if self.idx is None:
            full = np.zeros(self.n)
            full[local] = w
            return self.weighted_sum(full)
        return self.subset(local).weighted_sum(w)

    def scaled(self, factors: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``factors[i] · x_i`` for every row, in the input dtype, into ``out`` (a new
        array when None; may be ``X`` itself when the set is all of ``X``). Row by row on
        worker threads: each row is one contiguous scalar multiply."""
        f = np.asarray(factors, dtype=self.dtype)
        if out is None:
            out = np.empty((self.n, self.d), dtype=self.dtype)
        workers = max(1, min(num_threads(), self.n, (self.n * self.d) // _SCALE_MIN_VALUES))

        def part(i0: int) -> None:
            for i in range(i0, self.n, workers):
                np.multiply(self.row(i), f[i], out=out[i])

        if workers == 1:
            part(0)
        else:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                list(ex.map(part, range(workers)))
        return out

    def mix(self, S: np.ndarray) -> np.ndarray:
        """``S @ rows`` for a small (k, n) mixing matrix, in the input dtype."""
        S = np.asarray(S, dtype=self.dtype)
        out = np.empty((S.shape[0], self.d), dtype=self.dtype)

        def part(starts: list[int], c: int) -> None:
            for a in starts:
                b = min(a + c, self.d)
                np.matmul(S, self.chunk(a, b), out=out[:, a:b])

        self._column_parallel(self._width(_CHUNK_BYTES // 4, self.X.itemsize), part)
        return out

    def _column_parallel(self, width: int, fn: Callable[[list[int], int], object]) -> list[object]:
        """Split the column chunks of ``width`` between worker threads. Each worker gets
        its chunk starts (interleaved) and returns a partial result. BLAS runs
        single-threaded meanwhile (see :mod:`robust._blas`)."""
        starts = list(range(0, self.d, width))
        workers = min(num_threads(), len(starts))
        if not blas_threads_controllable():
            return [fn(starts, width)]
        if workers <= 1:  # still single-threaded BLAS: its threading of skinny products
            with single_threaded_blas():  # is what made the column split necessary
                return [fn(starts, width)]
        parts = [starts[i::workers] for i in range(workers)]
        with single_threaded_blas(), ThreadPoolExecutor(max_workers=workers) as ex:
            return list(ex.map(lambda p: fn(p, width), parts))

    def gram(self, center: np.ndarray | None, *, fast: bool = False) -> np.ndarray:
        """Float64 Gram of the rows minus ``center`` (column mean when None).

        Exact path (default, and always for float64 rows): float64 copies of cache-sized
        column chunks through BLAS syrk; products of float32 input are exact.

        ``fast=True`` with float32 rows: each chunk is centred in float32 and multiplied in
        float32, and the chunk Grams are added in float64, about twice as fast. Each entry
        then carries a relative error of order 1e-7·√chunk of the centred rows' scale
        (measured ≤ 1e-6 of the largest centred squared norm); callers keep the centre
        near the rows (:func:`robust.distances.auto_gram`). If the result is not finite,
        raises :class:`NonFiniteSeen` for an ``unchecked`` set, and otherwise (finite rows
        whose float32 products overflow) recomputes on the exact path.
        """
        if fast and self.dtype == np.float32:
            G = self._gram_float32(center)
            if np.isfinite(G).all():
                return G
            if self.unchecked:
                raise NonFiniteSeen
        elif self.unchecked:
            raise NonFiniteSeen  # only the float32 path checks as it goes
        return self._gram_float64(center)

    def _gram_float32(self, center: np.ndarray | None) -> np.ndarray:
        n, d = self.n, self.d
        avg = np.full(n, 1.0 / n, dtype=np.float32)

        native = _native.enabled() and self.X.flags.c_contiguous
        rows = self.row_indices()
        z = None if center is None else np.ascontiguousarray(center, dtype=np.float64)
        empty = np.empty(0, dtype=np.float64)

        def part(starts: list[int], c: int) -> np.ndarray:
            G = np.zeros((n, n), dtype=np.float64)
            buf = np.empty((n, c), dtype=np.float32)
            with np.errstate(over="ignore", invalid="ignore"):
                for a in starts:
                    b = min(a + c, d)
                    work = buf[:, : b - a]
                    if native:  # one pass: float64 column mean, centred float32 copy
                        zc = empty if z is None else z[a:b]
                        _native.kernels.center_rows(self.X, rows, a, b - a, zc, buf)
                    else:
                        ch = self.chunk(a, b)
                        work[...] = ch
                        work -= avg @ work if z is None else z[a:b].astype(np.float32)
                    G += work @ work.T  # float32 syrk, accumulated in float64
            return G

        G = np.sum(self._column_parallel(self._width(_GRAM32_CHUNK_BYTES, 4), part), axis=0)
        G += G.T
        G *= 0.5
        return G

    def _gram_float64(self, center: np.ndarray | None) -> np.ndarray:
        n, d = self.n, self.d

        avg = np.full(n, 1.0 / n)

        def part(starts: list[int], c: int) -> np.ndarray:
            G = np.zeros((n, n), dtype=np.float64)
            buf = np.empty((n, c), dtype=np.float64)
            for a in starts:
                b = min(a + c, d)
                work = buf[:, : b - a]
                work[...] = self.chunk(a, b)  # float64 copy (exact for float32 input)
                # column mean by a float64 gemv on the copy: cheaper than ch.mean(axis=0)
                work -= avg @ work if center is None else center[a:b]
                G += work @ work.T  # numpy dispatches A @ A.T to BLAS syrk
            return G

        G = np.sum(self._column_parallel(self._width(_GRAM_CHUNK_BYTES), part), axis=0)
        G += G.T
        G *= 0.5
        return G

    def sq_dist_to(self, z: np.ndarray | None) -> np.ndarray:
        """``‖x_i − z‖²`` (``z`` None: the origin) in float64, computed directly (no
        cancellation): each difference and the sum are float64. Uses the compiled
        ``sq_dists`` kernel when enabled (see :mod:`robust._native`), numpy otherwise;
        the two agree to float64 rounding."""
        zz = None if z is None else np.ascontiguousarray(z, dtype=np.float64)
        if _native.enabled() and self.X.flags.c_contiguous:
            return self._sq_dist_native(zz)

        def part(starts: list[int], c: int) -> np.ndarray:
            acc = np.zeros(self.n, dtype=np.float64)
            buf = np.empty((self.n, c), dtype=np.float64)
            for a in starts:
                b = min(a + c, self.d)
                work = buf[:, : b - a]
                work[...] = self.chunk(a, b)  # float64 copy, then an exact-input subtract
                if zz is not None:
                    work -= zz[a:b]
                acc += np.einsum("ij,ij->i", work, work)
            return acc

        return np.sum(self._column_parallel(self._width(_GRAM_CHUNK_BYTES), part), axis=0)

    def _sq_dist_native(self, z: np.ndarray | None) -> np.ndarray:
        n, d = self.n, self.d
        rows = self.row_indices()
        workers = max(1, min(num_threads(), d // _SQDIST_MIN_COLS))
        bounds = np.linspace(0, d, workers + 1).astype(np.int64)
        empty = np.empty(0, dtype=np.float64)

        def part(i: int) -> np.ndarray:
            a, b = int(bounds[i]), int(bounds[i + 1])
            out = np.zeros(n, dtype=np.float64)
            if b > a:
                zc = empty if z is None else z[a:b]
                _native.kernels.sq_dists(self.X, rows, a, b - a, zc, out)
            return out

        if workers == 1:
            return part(0)
        with ThreadPoolExecutor(max_workers=workers) as ex:
            return np.sum(list(ex.map(part, range(workers))), axis=0)

    def sq_norms(self) -> np.ndarray:
        return self.sq_dist_to(None)

    def ranked_columns_apply(
        self,
        ranks: Sequence[int],
        fn: Callable[[np.ndarray, np.ndarray | None, int, int], object],
        *,
        sum_ranks: range | None = None,
    ) -> list[object]:
        """Column order statistics, chunk by chunk.

        For each column chunk ``a:b`` calls ``fn(R, s, a, b)``: ``R[q, j]`` is the
        ``ranks[q]``-th smallest (0-based) value of column ``a + j`` over the rows, and
        ``s[j]`` is the float64 sum of the values of ranks ``sum_ranks`` (a contiguous
        range; ``s`` is None when not asked for). ``R`` and ``s`` are scratch buffers
        reused for the next chunk: ``fn`` must copy what it keeps. Returns ``fn``'s results
        in chunk order. Runs on worker threads; the backend (compiled comparator network or
        numpy sort, identical results) is chosen by :func:`robust._ranking.backend`.
        Rows must be finite.
        """
        ranks = np.asarray(ranks, dtype=np.int64)
        if ranks.ndim != 1 or (ranks.size and (ranks.min() < 0 or ranks.max() >= self.n)):
            raise ValueError(f"ranks must lie in [0, {self.n}), got {ranks.tolist()}")
        if sum_ranks is not None and (
            sum_ranks.step != 1 or sum_ranks.start < 0 or sum_ranks.stop > self.n
        ):
            raise ValueError(f"sum_ranks must be a contiguous range in [0, {self.n}]")
        use_network = _ranking.backend(self.n) == "network" and self.X.flags.c_contiguous
        if use_network:
            return self._ranked_network(ranks, fn, sum_ranks)
        return self._ranked_sort(ranks, fn, sum_ranks)

    def _ranked_network(self, ranks, fn, sum_ranks) -> list[object]:
        n, d = self.n, self.d
        summed = () if sum_ranks is None else tuple(sum_ranks)
        pairs = _ranking.network(n, tuple(int(r) for r in ranks), summed)
        sum_arr = np.asarray(summed, dtype=np.int64)
        rows = self.row_indices()
        c = int(min(d, _RANK_CHUNK_COLS))
        starts = list(range(0, d, c))
        workers = min(num_threads(), len(starts))

        def work(mine: list[int]) -> list[tuple[int, object]]:
            R = np.empty((len(ranks), c), dtype=self.dtype)
            s = np.empty(c if summed else 1, dtype=np.float64)
            scratch = _ranking.scratch_for(n)
            done = []
            for a in mine:
                b = min(a + c, d)
                ok = _ranking.rank_chunk_network(
                    self.X, rows, a, b, pairs, ranks, sum_arr, R, s, scratch
                )
                if not ok and self.unchecked:
                    raise NonFiniteSeen
                w = b - a
                done.append((a, fn(R[:, :w], s[:w] if summed else None, a, b)))
            return done

        if workers <= 1:
            parts = [work(starts)]
        else:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                parts = list(ex.map(work, [starts[i::workers] for i in range(workers)]))
        return [r for _, r in sorted((p for part in parts for p in part), key=lambda t: t[0])]

    def _ranked_sort(self, ranks, fn, sum_ranks) -> list[object]:
        n, d = self.n, self.d
        c = self._width(_SORT_CHUNK_BYTES, 4)
        starts = list(range(0, d, c))

        def work(a: int) -> object:
            b = min(a + c, d)
            t = np.empty((b - a, n), dtype=self.dtype)
            t[...] = self.chunk(a, b).T
            t.sort(axis=1)
            # sorted, a column's extremes are non-finite iff any value is (NaN sorts last)
            if self.unchecked and not np.isfinite(t[:, [0, n - 1]]).all():
                raise NonFiniteSeen
            R = t.T[ranks]
            s = None
            if sum_ranks is not None:
                s = t[:, sum_ranks.start : sum_ranks.stop].sum(axis=1, dtype=np.float64)
            return fn(R, s, a, b)

        workers = min(num_threads(), len(starts))
        if workers <= 1:
            return [work(a) for a in starts]
        with ThreadPoolExecutor(max_workers=workers) as ex:
            return list(ex.map(work, starts))
