"""Exact integer sketches ``s = P·x`` with a random ±1 matrix ``P`` derived from a 32-byte seed.

The sketch is what the filter of a secure round reads instead of the update (DESIGN.md, round
steps 4, 5 and 7): each client sends ``s_i = P·x_i`` of its *signed* fixed-point update
``x_i ∈ Z^d`` (``FixedPointEncoder.to_signed`` of its encoding, before masking), and after
unmasking the server checks ``P·(Σ_A x_i) == Σ_A s_i``. Both sides call :func:`sketch`.

The projection
--------------
``P`` is a ``k × d`` matrix with entries in ``{-1, +1}``. Its sign bits are the keystream of
AES-256-CTR keyed by the seed, zero initial counter (as :mod:`secagg.prg`): columns are taken
in groups of 8, and keystream byte ``g·k + l`` holds row ``l`` of columns ``8g .. 8g+7``, bit
``t`` (least significant first) for column ``8g + t``; bit 1 means ``+1``, bit 0 means ``-1``.
So ``P[:, j]`` depends only on ``(seed, k, j)``: never on ``d``, the chunking or the number of
worker threads, and a vector's sketch is the same whichever party computes it.

Why dense ±1 (and not CountSketch or an integer SRHT)
------------------------------------------------------
For a fixed vector all three have the same variance of the squared norm, ``Var(‖Px‖²/k) =
(2/k)(‖x‖⁴ − Σ x_j⁴)``, so a relative error of about ``√(2/k)``. They differ in the tails, and
the tails are what the norm bound and the distance rules rely on for *every* input, including
an attacker's:

* dense ±1: each ``(P x)_l`` is a Rademacher sum, sub-Gaussian with variance ``‖x‖²`` whatever
  the shape of ``x``; ``‖Px‖²/‖x‖²`` is dominated by a χ²_k variable (see
  :mod:`secagg.sketch_bounds`), so failure probabilities are ``exp(-Θ(k ε²))`` for any ``x``;
* CountSketch: ``O(d)`` work, but a vector with few heavy coordinates collides with probability
  about ``1/k`` (``x = a(e_1 − e_2)`` sketches to 0 with probability ``1/(2k)``), so no false
  rejection or false acceptance rate below ``~1/k`` can be promised;
* integer SRHT: ``O(d log d)`` work independent of ``k``, but its rows are dependent (sampled
  from one orthogonal transform), its tail bounds carry extra ``log d`` factors, ``d`` must be
  padded to a power of two, and entries of ``H·D·x`` reach ``d·max|x|``.

Dense ±1 costs ``k·d`` sign bits, made cheap here by 8-column lookup tables (below): at
``d = 10^6``, ``k = 128`` it is the measured time in ``benchmarks/results/sketch_cost.md``.

How it is computed (never a dense k×d matrix)
----------------------------------------------
``P·x = 2·(B·x) − (Σ x)·1`` with ``B ∈ {0, 1}^{k×d}`` the sign bits. For a chunk of column
groups, each group ``g`` gets a table ``T_g[v] = Σ_{t ∈ v} x_{8g+t}`` of its 256 subset sums;
then ``(B·x)_l`` is the sum over groups of ``T_g[byte(g, l)]``: one table lookup per 8 entries
of ``P``. The keystream of a chunk is written into a reused buffer (``update_into``); threads
take contiguous ranges of chunks, each with its own AES-CTR stream positioned at its range, and
the per-thread partial sketches are added at the end (integer addition: the result is identical
for any worker count or chunk size).

Exactness
---------
Every intermediate value (table entries, per-chunk and per-thread partial sums, ``2·B·x``) is a
sum over a subset of the columns, so its magnitude is at most ``2·d·max|x|``. When
``2·d·max|x| < 2**63`` the computation runs in int64 and cannot wrap. Otherwise :func:`sketch`
raises :class:`SketchOverflowError`, or with ``wide=True`` splits ``x`` into two 32-bit limbs,
sketches both exactly and combines them into Python ints (an object array). Nothing ever wraps.

Distance error for each k
-------------------------
The relative error of a squared distance ``‖P(x−y)‖²/k`` against ``‖x−y‖²`` has standard
deviation ``≈ √(2/k)``: 0.177, 0.125, 0.088 for k = 64, 128, 256 (measured table: to come).

Use
---
Client (step 4): ``s_i = sketch(encoder.to_signed(q_i), seed, k)`` on its quantised update
``q_i`` (before masking), with ``seed = projection_seed(transcript_digest, round_context)``.
Server (step 7): ``sketch(encoder.to_signed(unmasked_sum), seed, k, wide=True)`` and compare with
``Σ_A s_i`` as Python ints. Linearity is exact (``P·(x+y) = P·x + P·y`` over the integers), so the
check passes for honest clients. Soundness against a lone liar: if the committed input and the
sketched vector differ by a non-zero integer vector ``w`` fixed before ``P`` is known, then
``Pr[P·w = 0] <= 2**-k`` (each row's Rademacher sum ``p_l·w`` is zero with probability at most
1/2: flipping the sign at one non-zero coordinate of ``w`` changes it, and rows are
independent). The same holds for a sum that wrapped modulo ``2**bits`` (``w`` is then a
non-zero multiple of ``2**bits``).

Errors raised: :class:`SketchParameterError` (a ``SecAggParameterError``) for a wrong dtype,
shape, ``k``, ``workers`` or seed; :class:`SketchOverflowError` when int64 cannot hold the
result and ``wide`` is off.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import SketchOverflowError, SketchParameterError

__all__ = [
    "PROJECTION_SEED_BYTES",
    "MAX_SKETCH_DIM",
    "Sketcher",
    "sketch",
    "projection_seed",
    "projection_matrix",
]

PROJECTION_SEED_BYTES = 32
#: Largest supported sketch dimension (buffers grow with k; 4096 is far beyond any useful k).
MAX_SKETCH_DIM = 4096
_BLOCK = 16  # AES block size: chunk starts must be block aligned in the keystream
_GROUP = 8  # columns per sign byte
_TABLE = 1 << _GROUP  # subset sums per group
#: Target number of keystream bytes (= table lookups) per chunk: idx/gather buffers of
#: 8 bytes each then stay in a core's L2 cache.
_CHUNK_LOOKUPS = 1 << 15
_INT64_LIMIT = (1 << 63) - 1
_LIMB_BITS = 32
_DOMAIN = b"fortis/secagg/sketch-projection-seed/v1"
_MAX_DENSE_ENTRIES = 1 << 24


def _check_seed(seed: bytes) -> bytes:
    if not isinstance(seed, (bytes, bytearray, memoryview)):
        raise SketchParameterError(f"seed must be bytes, got {type(seed).__name__}")
    seed = bytes(seed)
    if len(seed) != PROJECTION_SEED_BYTES:
        raise SketchParameterError(f"seed must be {PROJECTION_SEED_BYTES} bytes, got {len(seed)}")
    return seed


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_SKETCH_DIM:
        raise SketchParameterError(f"k must be an int in [1, {MAX_SKETCH_DIM}], got {k!r}")
    return int(k)


def _check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise SketchParameterError(f"workers must be an int >= 1, got {workers!r}")
    return int(workers)


def _check_input(x: np.ndarray) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise SketchParameterError(
            f"x must be a numpy array of signed integers, got {type(x).__name__}"
        )
    if x.dtype.kind != "i":
        hint = (
            " (ring elements: pass FixedPointEncoder.to_signed(y), the signed fixed-point values)"
            if x.dtype.kind == "u"
            else ""
        )
        raise SketchParameterError(
            f"x must have a signed integer dtype (int8/16/32/64), got {x.dtype}{hint}"
        )
    if x.ndim not in (1, 2) or x.shape[-1] < 1:
        raise SketchParameterError(
            f"x must have shape (d,) or (m, d) with d >= 1, got shape {x.shape}"
        )
    return x


def projection_seed(transcript_digest: bytes, round_context: bytes) -> bytes:
    """The 32-byte seed of the round's projection ``P``, from the committed transcript.

    ``SHA-256(domain ‖ len(digest) ‖ digest ‖ len(context) ‖ context)`` with a fixed domain tag
    ``fortis/secagg/sketch-projection-seed/v1`` and 8-byte big-endian lengths, so no other hash
    in fortis can collide with it and the two fields cannot be re-split.

    Property the protocol relies on: ``transcript_digest`` is a hash of *all* committed masked
    inputs ``y_i`` of the round (and ``round_context`` fixes the round: configuration, round id,
    the set of committed clients). ``P`` is therefore a deterministic function of inputs that
    are already fixed, so no client can know ``P`` before it commits, every party can recompute
    and check it, and the server cannot pick it. Each client's effective input ``x_i`` is fixed
    by ``y_i`` before ``P`` exists; that is what makes the check ``P·Σ_A x_i = Σ_A s_i`` of
    DESIGN.md ("Why the verification step is sound") meaningful. The only way to influence
    ``P`` is to change a committed input, which needs every other ``y_j`` (a client that
    colludes with the server could grind its own ``y_i``; the protocol's threat model excludes
    that collusion).

    Raises :class:`SketchParameterError` if ``transcript_digest`` is not 32 to 64 bytes
    (a collision-resistant hash) or either argument is not bytes.
    """
    for name, value in (("transcript_digest", transcript_digest), ("round_context", round_context)):
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise SketchParameterError(f"{name} must be bytes, got {type(value).__name__}")
    digest = bytes(transcript_digest)
    context = bytes(round_context)
    if not 32 <= len(digest) <= 64:
        raise SketchParameterError(
            f"transcript_digest must be a 32- to 64-byte hash, got {len(digest)} bytes"
        )
    h = hashlib.sha256()
    h.update(_DOMAIN)
    h.update(len(digest).to_bytes(8, "big"))
    h.update(digest)
    h.update(len(context).to_bytes(8, "big"))
    h.update(context)
    return h.digest()


def _encryptor_at(seed: bytes, byte_offset: int):
    """AES-256-CTR keystream of ``seed`` starting ``byte_offset`` (block aligned) bytes in."""
    counter = (byte_offset // _BLOCK).to_bytes(_BLOCK, "big")
    return Cipher(algorithms.AES(seed), modes.CTR(counter)).encryptor()


def projection_matrix(seed: bytes, k: int, d: int) -> np.ndarray:
    """The dense ``k × d`` matrix ``P`` (int8, entries ±1) for ``seed``: for tests and audits.

    Never used by :func:`sketch`. Limited to ``k·d <= 2**24`` entries.

    Raises :class:`SketchParameterError` for a bad seed, ``k``, ``d < 1`` or a matrix larger
    than the limit.
    """
    seed = _check_seed(seed)
    k = _check_k(k)
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise SketchParameterError(f"d must be an int >= 1, got {d!r}")
    if k * d > _MAX_DENSE_ENTRIES:
        raise SketchParameterError(
            f"projection_matrix is for small sizes: k*d = {k * d} > {_MAX_DENSE_ENTRIES}"
        )
    groups = -(-int(d) // _GROUP)
    stream = _encryptor_at(seed, 0).update(bytes(groups * k))
    bytes_ = np.frombuffer(stream, dtype=np.uint8).reshape(groups, k)
    bits = np.unpackbits(bytes_[:, :, None], axis=2, bitorder="little")  # (groups, k, 8)
    b = bits.transpose(1, 0, 2).reshape(k, groups * _GROUP)[:, :d]
    return (2 * b.astype(np.int8) - 1).astype(np.int8)


class _Workspace:
    """Buffers of one worker thread for chunks of ``groups`` column groups and ``k`` rows."""

    def __init__(self, k: int, groups: int, rows: int):
        n = groups * k
        self.zeros = np.zeros(n, dtype=np.uint8)
        self.stream = np.empty(n + _BLOCK - 1, dtype=np.uint8)
        self.idx = np.empty((groups, k), dtype=np.intp)
        self.gathered = np.empty((groups, k), dtype=np.int64)
        self.partial = np.empty(k, dtype=np.int64)
        # table[v, g]: subset sum v of group g; groups contiguous so that every doubling step
        # of _subset_sums is one long vector add
        self.table = np.empty((_TABLE, groups), dtype=np.int64)
        self.xpad = np.zeros((rows, groups * _GROUP), dtype=np.int64)
        self.xt = np.empty((_GROUP, groups), dtype=np.int64)
        self.group_ids = np.arange(groups, dtype=np.intp)
        self.acc = np.zeros((rows, k), dtype=np.int64)


class Sketcher:
    """Computes exact sketches ``P·x`` for one sketch dimension ``k``, reusing its buffers.

    Parameters
    ----------
    k:
        Sketch dimension (rows of ``P``), in ``[1, MAX_SKETCH_DIM]``.
    workers:
        Threads over contiguous ranges of columns (AES-CTR and numpy release the GIL). The
        result is identical for any value.
    chunk_groups:
        Column groups (of 8 columns) per chunk, a power of two >= 16; ``None`` picks about
        ``2**15 / k`` (so the per-chunk buffers fit a core's L2 cache). The result does not
        depend on it.

    Not thread-safe: use one ``Sketcher`` per calling thread (:func:`sketch` caches one per
    thread). Raises :class:`SketchParameterError` for bad parameters.
    """

    def __init__(self, k: int, *, workers: int = 1, chunk_groups: int | None = None):
        self.k = _check_k(k)
        self.workers = _check_workers(workers)
        if chunk_groups is None:
            chunk_groups = 1 << max(4, (_CHUNK_LOOKUPS // self.k).bit_length() - 1)
        if (
            isinstance(chunk_groups, bool)
            or not isinstance(chunk_groups, (int, np.integer))
            or not 16 <= chunk_groups <= 1 << 20
            or chunk_groups & (chunk_groups - 1)
        ):
            raise SketchParameterError(
                f"chunk_groups must be a power of two in [16, 2**20], got {chunk_groups!r}"
            )
        # A multiple of 16 makes every chunk start (chunk * chunk_groups * k bytes) a multiple
        # of the AES block size, so each worker can seek its stream to its range; a power of
        # two makes the table index a shift and an or.
        self.chunk_groups = int(chunk_groups)
        self._shift = self.chunk_groups.bit_length() - 1
        self._spaces: dict[tuple[int, int], _Workspace] = {}

    def __repr__(self) -> str:
        return f"Sketcher(k={self.k}, workers={self.workers}, chunk_groups={self.chunk_groups})"

    def _space(self, worker: int, rows: int) -> _Workspace:
        key = (worker, rows)
        space = self._spaces.get(key)
        if space is None:
            if len(self._spaces) >= 4 * self.workers:
                self._spaces.clear()
            space = self._spaces[key] = _Workspace(self.k, self.chunk_groups, rows)
        return space

    def sketch(self, x: np.ndarray, seed: bytes, *, wide: bool = False) -> np.ndarray:
        """Return ``P·x`` exactly, for ``P`` derived from ``seed`` (see the module docstring).

        ``x`` is a signed integer array of shape ``(d,)`` (result shape ``(k,)``) or ``(m, d)``
        (result ``(m, k)``, every row sketched with the same ``P``, one keystream pass).

        Returns int64 when ``wide`` is false. With ``wide=True`` the result is an object array
        of Python ints, for inputs whose sketch may exceed int64 (e.g. a server's sum of 64-bit
        fixed-point vectors).

        Raises
        ------
        SketchParameterError
            ``x`` is not a numpy array with a signed integer dtype (unsigned ring elements are
            refused: pass ``FixedPointEncoder.to_signed(y)``) and shape ``(d,)``/``(m, d)``,
            ``d >= 1``; or ``seed`` is not 32 bytes.
        SketchOverflowError
            ``2·d·max|x| >= 2**63`` and ``wide`` is false (int64 could not hold every
            intermediate sum); or ``d >= 2**30`` with ``wide=True``.
        """
        x = _check_input(x)
        seed = _check_seed(seed)
        rows = np.ascontiguousarray(x[None, :] if x.ndim == 1 else x)
        m, d = rows.shape
        if m == 0:
            out = np.zeros((0, self.k), dtype=object if wide else np.int64)
            return out
        bound = 2 * d * _max_abs(rows)
        if bound <= _INT64_LIMIT:
            s = self._sketch_int64(rows, seed)
            result = s.astype(object) if wide else s
        elif not wide:
            raise SketchOverflowError(
                f"2*d*max|x| = 2*{d}*{_max_abs(rows)} = {bound} exceeds int64 (2**63 - 1): the "
                "sketch's entries or its intermediate sums could wrap; pass wide=True for "
                "Python-int results"
            )
        else:
            if 2 * d * (1 << _LIMB_BITS) > _INT64_LIMIT:
                raise SketchOverflowError(f"d = {d} is too large for the wide sketch (< 2**30)")
            lo = rows & np.int64((1 << _LIMB_BITS) - 1)  # in [0, 2**32)
            hi = rows.astype(np.int64) >> np.int64(_LIMB_BITS)  # in [-2**31, 2**31)
            s = self._sketch_int64(np.concatenate([lo.astype(np.int64), hi]), seed)
            result = s[m:].astype(object) * (1 << _LIMB_BITS) + s[:m].astype(object)
        return result[0] if x.ndim == 1 else result

    def _sketch_int64(self, rows: np.ndarray, seed: bytes) -> np.ndarray:
        """``P·rows.T`` as an (m, k) int64 array; the caller proved it cannot wrap."""
        m, d = rows.shape
        width = self.chunk_groups * _GROUP
        chunks = -(-d // width)
        workers = min(self.workers, chunks)
        cuts = [chunks * w // workers for w in range(workers + 1)]

        def run(w: int) -> tuple[np.ndarray, np.ndarray]:
            return self._run_range(w, rows, seed, cuts[w], cuts[w + 1])

        if workers == 1:
            parts = [run(0)]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                parts = list(pool.map(run, range(workers)))
        out = np.zeros((m, self.k), dtype=np.int64)
        for acc, colsum in parts:
            # P·x = 2·B·x − (Σx)·1 over this worker's columns; a partial sketch, so bounded
            out += 2 * acc - colsum[:, None]
        return out

    def _run_range(
        self, worker: int, rows: np.ndarray, seed: bytes, first: int, stop: int
    ) -> tuple[np.ndarray, np.ndarray]:
        m, d = rows.shape
        k, groups = self.k, self.chunk_groups
        width = groups * _GROUP
        ws = self._space(worker, m)
        ws.acc.fill(0)
        enc = _encryptor_at(seed, first * groups * k)
        flat = ws.table.reshape(-1)
        for c in range(first, stop):
            a = c * width
            b = min(d, a + width)
            ng = -(-(b - a) // _GROUP)
            if b - a == ng * _GROUP:
                xs = rows[:, a:b]  # whole groups: a view, no copy
            else:  # the last chunk ends inside a group: zero-padded copy
                xs = ws.xpad[:, : ng * _GROUP]
                xs[:, : b - a] = rows[:, a:b]
                xs[:, b - a :] = 0
            n = ng * k
            enc.update_into(ws.zeros[:n], ws.stream)
            signs = ws.stream[:n].reshape(ng, k)
            # flat index of table[v, g] in the (256, groups) table: v * groups + g
            idx = ws.idx[:ng]
            np.left_shift(signs, self._shift, out=idx, dtype=np.intp)
            np.bitwise_or(idx, ws.group_ids[:ng, None], out=idx)
            gathered = ws.gathered[:ng]
            xt = ws.xt[:, :ng]
            for r in range(m):
                np.copyto(xt, xs[r].reshape(ng, _GROUP).T)
                _subset_sums(xt, ws.table[:, :ng])
                np.take(flat, idx, out=gathered, mode="clip")
                np.add.reduce(gathered, axis=0, out=ws.partial)
                ws.acc[r] += ws.partial
        colsum = rows[:, first * width : min(d, stop * width)].sum(axis=1, dtype=np.int64)
        return ws.acc.copy(), colsum


def _subset_sums(xt: np.ndarray, table: np.ndarray) -> None:
    """In place: ``table[v, g] = Σ_{t: bit t of v} xt[t, g]`` for ``v`` in 0..255.

    Doubling: the sums over the first ``t`` columns are copied shifted by ``xt[t]`` into the
    rows ``2**t .. 2**(t+1)-1``; eight vector adds over all groups at once.
    """
    table[0] = 0
    for t in range(_GROUP):
        w = 1 << t
        np.add(table[:w], xt[t], out=table[w : 2 * w])


def _max_abs(rows: np.ndarray) -> int:
    """``max |x|`` as a Python int (no int64 overflow for ``-2**63``)."""
    return max(abs(int(rows.max())), abs(int(rows.min())))


_local = threading.local()


def _cached_sketcher(k: int, workers: int) -> Sketcher:
    cache: dict[tuple[int, int], Sketcher] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    key = (k, workers)
    sk = cache.pop(key, None)
    if sk is None:
        sk = Sketcher(k, workers=workers)
    cache[key] = sk  # most recently used last
    while len(cache) > 4:
        cache.pop(next(iter(cache)))
    return sk


def sketch(
    x: np.ndarray, seed: bytes, k: int, *, workers: int = 1, wide: bool = False
) -> np.ndarray:
    """``P·x`` exactly, for the ``k × d`` ±1 matrix ``P`` derived from ``seed``.

    Convenience wrapper over :meth:`Sketcher.sketch` with a per-thread cached
    :class:`Sketcher` (buffers reused across calls). Same guarantees and errors; also raises
    :class:`SketchParameterError` for a bad ``k`` or ``workers``.
    """
    return _cached_sketcher(_check_k(k), _check_workers(workers)).sketch(x, seed, wide=wide)
