"""Exact integer sketches ``s = P·x`` with a random ±1 matrix ``P`` derived from a 32-byte seed.

The sketch is what the filter of a secure round reads instead of the update (DESIGN.md, round
steps 4, 5 and 7): each client sends ``s_i = P·x_i`` of its *signed* fixed-point update
``x_i ∈ Z^d`` (``FixedPointEncoder.to_signed`` of its encoding, before masking), and after
unmasking the server checks ``P·(Σ_A x_i) == Σ_A s_i``. Both sides call :func:`sketch`.

The projection
--------------
``P`` is a ``k × d`` matrix with entries in ``{-1, +1}``. Its sign bits are the keystream of
AES-256-CTR keyed by the seed, zero initial counter (as :mod:`secagg.prg`). Rows are taken 8 at a
time (``kb = ⌈k/8⌉`` row bytes) and columns in blocks of ``BLOCK_COLUMNS = 2**15``: keystream
byte ``c·kb·2**15 + r·2**15 + u`` holds rows ``8r .. 8r+7`` of column ``c·2**15 + u``, bit ``t``
(least significant first) for row ``8r + t`` (bits of rows ``>= k`` are unused); bit 1 means
``+1``, bit 0 means ``-1``. So ``P[:, j]`` depends only on ``(seed, k, j)``: never on ``d``, the
number of worker threads or anything else, and a vector's sketch is the same whichever party
computes it.

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

Dense ±1 costs ``k·d`` sign bits, made cheap here by histograms (below): at ``d = 10^6``,
``k = 128`` it is the measured time in ``benchmarks/results/sketch_cost.md``.

How it is computed (never a dense k×d matrix)
----------------------------------------------
For one row byte ``r`` and one block, the 8 rows ``8r .. 8r+7`` of ``P·x`` only depend on which
of the 256 sign patterns each column has. So ``np.bincount(byte_r, weights=x)`` sums the
coordinates of ``x`` by pattern (one pass, one scatter-add per 8 entries of ``P``), the 256 sums
are accumulated over blocks, and at the end ``(P·x)_{8r+t} = Σ_v H_r[v]·sign_t(v)``: a
``256 × 8`` product per row byte. The keystream of a block is written into a reused buffer
(``update_into``). Threads take contiguous ranges of blocks, each with its own AES-CTR stream
positioned at its range, and their histograms are added at the end. ``np.bincount`` holds the
GIL and is ~90% of the time, so a second worker does not help (measured 15-55% slower on 2
cores); ``workers=1`` is the default and the sketch leaves the other core free, e.g. for the
Paillier encryption that follows it. On one core the histogram kernel measured 2.3-2.6x faster
(d = 10^6, k = 64..256) than the best GIL-releasing numpy formulation tried on two threads
(8-column subset-sum tables read with ``np.take``; commit d74ab3b).

Exactness
---------
The histograms are float64, and every value they and the final products go through is a sum
over a subset of the coordinates (with signs), so its magnitude is at most ``Σ_j |x_j| <=
d·max|x|``. Float64 holds every integer below ``2**53`` exactly and adds such integers exactly
in any order, so when ``d·max|x| < 2**53`` nothing is rounded. Larger inputs are split into
limbs ``x = Σ_a L_a·2**(a·w)`` with ``d·2**w < 2**53``, each limb is sketched exactly, and the
limb sketches are combined as Python ints. The result ``|s_l| <= d·max|x|`` is returned as
int64 when ``d·max|x| < 2**63``; otherwise :func:`sketch` raises :class:`SketchOverflowError`,
or returns Python ints (an object array) with ``wide=True``. Nothing ever wraps or rounds.

Distance error for each k
-------------------------
The relative error of a squared distance, ``‖P(x−y)‖²/(k·‖x−y‖²) − 1``, has mean 0 and standard
deviation ``√((2/k)(1 − Σ w_j⁴/‖w‖⁴)) ≤ √(2/k)`` for ``w = x − y``. Measured on random Gaussian
differences (d = 10^5, 400 rounds per k with a fresh ``P`` each; ``benchmarks/sketch_cost.py``,
table in ``benchmarks/results/sketch_cost.md``; ``tests/test_secagg_sketch_stats.py`` checks the
RMS column at d = 4096):

======  =======  ============  =================  ====================
k       √(2/k)   measured RMS  measured 99th pct  norm-bound ε (δ=1e-6)
======  =======  ============  =================  ====================
64      0.177    0.173         0.440              0.496
128     0.125    0.126         0.316              0.345
256     0.088    0.091         0.250              0.241
======  =======  ============  =================  ====================

(99th pct: of the absolute relative error. ε: :func:`secagg.norm_bound_epsilon`, the slack of
the norm bound for a false-rejection rate of 10^-6.) A distance is therefore known to about
±12.5% at k = 128, and 1 round in 100 sees an error above 32%: distance-based rules should be
configured with margins of that order.

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
from .prg import SEED_BYTES, check_seed

__all__ = [
    "PROJECTION_SEED_BYTES",
    "MAX_SKETCH_DIM",
    "BLOCK_COLUMNS",
    "Sketcher",
    "sketch",
    "projection_seed",
    "projection_matrix",
]

PROJECTION_SEED_BYTES = SEED_BYTES
#: Largest supported sketch dimension (buffers grow with k; 4096 is far beyond any useful k).
MAX_SKETCH_DIM = 4096
#: Columns per keystream block (part of the definition of ``P``, see the module docstring).
BLOCK_COLUMNS = 1 << 15
#: Largest supported vector length.
MAX_DIMENSION = 1 << 40
_AES_BLOCK = 16
_INT64_LIMIT = (1 << 63) - 1
_FLOAT_EXACT = 1 << 53  # float64 holds every integer of magnitude < 2**53
_MAX_DENSE_ENTRIES = 1 << 24
_DOMAIN = b"fortis/secagg/sketch-projection-seed/v1"


def _check_seed(seed: bytes) -> bytes:
    return check_seed(seed, error=SketchParameterError, type_error=SketchParameterError)


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
    if x.ndim not in (1, 2) or not 1 <= x.shape[-1] <= MAX_DIMENSION:
        raise SketchParameterError(
            f"x must have shape (d,) or (m, d) with 1 <= d <= 2**40, got shape {x.shape}"
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
    counter = (byte_offset // _AES_BLOCK).to_bytes(_AES_BLOCK, "big")
    return Cipher(algorithms.AES(seed), modes.CTR(counter)).encryptor()


def _row_bytes(k: int) -> int:
    return -(-k // 8)


#: _SIGNS[v, t] = +1 if bit t of v is set else -1: the 8 signs of sign pattern v.
_SIGNS = np.where((np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1, 1.0, -1.0)


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
    kb, blocks = _row_bytes(k), -(-int(d) // BLOCK_COLUMNS)
    stream = _encryptor_at(seed, 0).update(bytes(blocks * kb * BLOCK_COLUMNS))
    b = np.frombuffer(stream, dtype=np.uint8).reshape(blocks, kb, BLOCK_COLUMNS)
    bits = np.unpackbits(b[:, :, :, None], axis=3, bitorder="little")  # (blocks, kb, cols, 8)
    rows = bits.transpose(1, 3, 0, 2).reshape(kb * 8, blocks * BLOCK_COLUMNS)
    return (2 * rows[:k, :d].astype(np.int8) - 1).astype(np.int8)


class _Workspace:
    """Reused buffers of one worker: a block's keystream and one limb of it as float64."""

    def __init__(self, kb: int):
        n = kb * BLOCK_COLUMNS
        self.zeros = np.zeros(n, dtype=np.uint8)
        self.stream = np.empty(n + _AES_BLOCK - 1, dtype=np.uint8)
        self.limb = np.empty(BLOCK_COLUMNS, dtype=np.float64)
        self.scratch = np.empty(BLOCK_COLUMNS, dtype=np.int64)


class Sketcher:
    """Computes exact sketches ``P·x`` for one sketch dimension ``k``, reusing its buffers.

    Parameters
    ----------
    k:
        Sketch dimension (rows of ``P``), in ``[1, MAX_SKETCH_DIM]``.
    workers:
        Threads over contiguous ranges of column blocks. The result is identical for any value.
        ``np.bincount`` holds the GIL, so more than one worker does not speed it up (see
        ``benchmarks/results/sketch_cost.md``); the default 1 is the fastest measured.

    Not thread-safe: use one ``Sketcher`` per calling thread (:func:`sketch` caches one per
    thread). Raises :class:`SketchParameterError` for bad parameters.
    """

    def __init__(self, k: int, *, workers: int = 1):
        self.k = _check_k(k)
        self.workers = _check_workers(workers)
        self._kb = _row_bytes(self.k)
        self._spaces: list[_Workspace] = []

    def __repr__(self) -> str:
        return f"Sketcher(k={self.k}, workers={self.workers})"

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
            ``1 <= d <= 2**40``; or ``seed`` is not 32 bytes.
        SketchOverflowError
            ``d·max|x| > 2**63 - 1`` (the sketch's entries are only bounded by that, so int64
            might not hold them) and ``wide`` is false.
        """
        x = _check_input(x)
        seed = _check_seed(seed)
        rows = x[None, :] if x.ndim == 1 else x
        m, d = rows.shape
        if m == 0:
            return np.zeros((0, self.k), dtype=object if wide else np.int64)
        biggest = _max_abs(rows)
        if not wide and d * biggest > _INT64_LIMIT:
            raise SketchOverflowError(
                f"d*max|x| = {d}*{biggest} = {d * biggest} exceeds int64 (2**63 - 1): the "
                "sketch's entries could too; pass wide=True for Python-int results"
            )
        if d * biggest < _FLOAT_EXACT:
            width, limbs = 0, 1  # no split: every sum stays below 2**53
        else:
            width = 53 - d.bit_length()  # d * 2**width < 2**53
            limbs = -(-(biggest.bit_length() + 1) // width)
        hist = self._histograms(rows, seed, width, limbs)  # (m, limbs, kb, 256)
        # (P·L)_{8r+t} = Σ_v H_r[v]·sign_t(v): exact, every partial sum is below 2**53
        sk = (hist @ _SIGNS).reshape(m, limbs, self._kb * 8)[:, :, : self.k]
        if limbs == 1:
            out = sk[:, 0].astype(np.int64)
            out = out.astype(object) if wide else out
        else:
            out = np.zeros((m, self.k), dtype=object)
            for a in range(limbs):
                out += sk[:, a].astype(np.int64).astype(object) * (1 << (a * width))
            if not wide:
                out = out.astype(np.int64)  # |s_l| <= d·max|x| <= 2**63 - 1, checked above
        return out[0] if x.ndim == 1 else out

    def _histograms(self, rows: np.ndarray, seed: bytes, width: int, limbs: int) -> np.ndarray:
        """Sum over workers of their block ranges' histograms, shape (m, limbs, kb, 256)."""
        d = rows.shape[1]
        blocks = -(-d // BLOCK_COLUMNS)
        workers = min(self.workers, blocks)
        while len(self._spaces) < workers:
            self._spaces.append(_Workspace(self._kb))
        cuts = [blocks * w // workers for w in range(workers + 1)]

        def run(w: int) -> np.ndarray:
            return self._run_range(self._spaces[w], rows, seed, width, limbs, cuts[w], cuts[w + 1])

        if workers == 1:
            return run(0)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(run, range(workers)))
        total = parts[0]
        for part in parts[1:]:
            total += part  # sums of subset sums: still below 2**53, exact
        return total

    def _run_range(
        self,
        ws: _Workspace,
        rows: np.ndarray,
        seed: bytes,
        width: int,
        limbs: int,
        first: int,
        stop: int,
    ) -> np.ndarray:
        m, d = rows.shape
        kb = self._kb
        hist = np.zeros((m, limbs, kb, 256), dtype=np.float64)
        enc = _encryptor_at(seed, first * kb * BLOCK_COLUMNS)
        mask = np.int64((1 << width) - 1) if limbs > 1 else None
        for c in range(first, stop):
            a = c * BLOCK_COLUMNS
            n = min(d, a + BLOCK_COLUMNS) - a
            # the whole block's keystream, so the next block starts at the right counter
            enc.update_into(ws.zeros, ws.stream)
            patterns = ws.stream[: kb * BLOCK_COLUMNS].reshape(kb, BLOCK_COLUMNS)[:, :n]
            limb = ws.limb[:n]
            for i in range(m):
                xb = rows[i, a : a + n]
                for al in range(limbs):
                    if limbs == 1:
                        np.copyto(limb, xb)  # |x| < 2**53: exact
                    else:
                        part = ws.scratch[:n]
                        np.right_shift(xb, np.int64(al * width), out=part, casting="unsafe")
                        if al < limbs - 1:
                            np.bitwise_and(part, mask, out=part)  # in [0, 2**width)
                        np.copyto(limb, part)  # |limb| <= 2**width: exact
                    h = hist[i, al]
                    for r in range(kb):
                        h[r] += np.bincount(patterns[r], weights=limb, minlength=256)
        return hist


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
