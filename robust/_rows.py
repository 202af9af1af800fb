"""A read-only view of a subset of the rows of a client matrix (internal).

Rules drop non-finite rows before running. Copying the surviving rows of a (100, 10⁶)
matrix costs 400 MB and ~0.1 s, so instead every heavy kernel here works column chunk by
column chunk and gathers only the selected rows of each chunk. The caller's array is never
written to.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._blas import blas_threads_controllable, single_threaded_blas

_CHUNK_BYTES = 16 << 20  # gather buffers
_GRAM_CHUNK_BYTES = 1 << 20  # per-thread float64 Gram work buffer (cache-sized)
_SORT_CHUNK_BYTES = 1 << 20  # transposed chunk for column sorts (cache-sized)


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


class RowSet:
    """Rows ``X[idx]`` (all rows when ``idx`` is None) of a validated float matrix."""

    __slots__ = ("X", "idx", "n", "d", "dtype")

    def __init__(self, X: np.ndarray, idx: np.ndarray | None = None) -> None:
        self.X = X
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

    def row(self, i: int) -> np.ndarray:
        return self.X[i if self.idx is None else self.idx[i]]

    def subset(self, local: np.ndarray) -> RowSet:
        """Rows ``local`` (indices into this set)."""
        local = np.asarray(local, dtype=np.intp)
        base = local if self.idx is None else self.idx[local]
        return RowSet(self.X, base)

    def materialize(self) -> np.ndarray:
        return self.X if self.idx is None else self.X[self.idx]

    def _width(self, bytes_per: int, per_elem: int = 8) -> int:
        return int(max(256, min(self.d, bytes_per // (per_elem * max(self.n, 1)))))

    # -- kernels --------------------------------------------------------------------------
    def weighted_sum(self, w: np.ndarray) -> np.ndarray:
        """``Σ w_i x_i`` in the input dtype. With ``w`` normalised to sum 1 every partial
        sum is a sub-convex combination, so finite rows cannot overflow."""
        w = np.asarray(w, dtype=self.dtype)
        with single_threaded_blas():  # memory-bound gemv: see finite_rows
            if self.idx is None:
                return w @ self.X
            out = np.empty(self.d, dtype=self.dtype)
            c = self._width(_CHUNK_BYTES, self.X.itemsize)
            for a in range(0, self.d, c):
                b = min(a + c, self.d)
                out[a:b] = w @ self.chunk(a, b)
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

    def gram(self, center: np.ndarray | None) -> np.ndarray:
        """Float64 Gram of the rows minus ``center`` (column mean when None), chunked
        float64 accumulation through BLAS syrk."""
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

    def sq_dist_to(self, z: np.ndarray) -> np.ndarray:
        """``‖x_i − z‖²`` in float64, computed directly (no cancellation)."""
        z = np.asarray(z, dtype=np.float64)

        def part(starts: list[int], c: int) -> np.ndarray:
            acc = np.zeros(self.n, dtype=np.float64)
            buf = np.empty((self.n, c), dtype=np.float64)
            for a in starts:
                b = min(a + c, self.d)
                work = buf[:, : b - a]
                work[...] = self.chunk(a, b)  # float64 copy, then an exact-input subtract
                work -= z[a:b]
                acc += np.einsum("ij,ij->i", work, work)
            return acc

        return np.sum(self._column_parallel(self._width(_GRAM_CHUNK_BYTES), part), axis=0)

    def sq_norms(self) -> np.ndarray:
        return self.sq_dist_to(np.zeros(self.d))

    def sorted_columns_apply(
        self, fn: Callable[[np.ndarray, np.ndarray, int, int], object], out: np.ndarray
    ) -> list[object]:
        """For each column chunk, sort a transposed (chunk, n) copy along its rows and call
        ``fn(sorted_T, original_chunk, a, b)``; ``fn`` writes ``out[a:b]`` and may return
        a per-chunk partial result, collected in chunk order. Runs on worker threads
        (numpy's SIMD sort releases the GIL)."""
        n, d = self.n, self.d
        c = self._width(_SORT_CHUNK_BYTES, 4)
        starts = list(range(0, d, c))

        def work(a: int) -> object:
            b = min(a + c, d)
            ch = self.chunk(a, b)
            t = np.empty((b - a, n), dtype=self.dtype)
            t[...] = ch.T
            t.sort(axis=1)
            return fn(t, ch, a, b)

        workers = min(num_threads(), len(starts))
        if workers <= 1:
            return [work(a) for a in starts]
        with ThreadPoolExecutor(max_workers=workers) as ex:
            return list(ex.map(work, starts))
