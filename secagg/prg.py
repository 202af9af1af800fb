"""Pseudo-random mask expansion: 32-byte seed -> vector in Z_{2^bits}^d.

The PRG is AES-256 in CTR mode keyed by the seed, with an all-zero initial counter block; the
keystream bytes are read as little-endian ``uint32``/``uint64`` words and reduced modulo
``2**bits`` by masking the top bits. Distinct seeds give independent-looking streams; equal seeds
give equal masks on every party (that is what makes pairwise masks cancel).

A seed is used as an AES key only for this one stream. Callers must never reuse a seed for two
different purposes (``masking.pairwise_seed`` derives a fresh seed per round).

Performance: the keystream is written with ``encryptor.update_into`` into a buffer allocated once
per :class:`MaskExpander`; nothing is allocated per call. ``update_into`` may require the output
buffer to be ``block_size - 1`` bytes longer than the input (older ``cryptography`` versions do),
so the buffer carries 15 spare bytes.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .encoding import dtype_for_bits
from .errors import SecAggParameterError

__all__ = ["MaskExpander", "SEED_BYTES", "add_streams"]

SEED_BYTES = 32
_BLOCK = 16
_ZERO_IV = bytes(_BLOCK)
#: Bytes of every stream generated per step of :func:`add_streams`: the accumulator slice and
#: the keystream stay in the core's cache while every seed's stream is added to it.
STREAM_CHUNK_BYTES = 1 << 17


def check_seed(
    seed: bytes,
    *,
    error: type[Exception] = SecAggParameterError,
    type_error: type[Exception] = TypeError,
) -> bytes:
    """``seed`` as ``bytes`` of :data:`SEED_BYTES`; raises ``type_error`` if it is not bytes-like
    and ``error`` for another length (callers choose their module's error types)."""
    if not isinstance(seed, (bytes, bytearray, memoryview)):
        raise type_error(f"seed must be bytes, got {type(seed).__name__}")
    seed = bytes(seed)
    if len(seed) != SEED_BYTES:
        raise error(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return seed


_check_seed = check_seed


def reduce_bits(acc: np.ndarray, bits: int) -> None:
    """In place: reduce an unsigned ``acc`` modulo ``2**bits`` (a no-op at the dtype width)."""
    if bits < 8 * acc.dtype.itemsize:
        acc &= acc.dtype.type((1 << bits) - 1)


class MaskExpander:
    """Expands 32-byte seeds into masks of ``d`` elements of Z_{2^bits}, reusing its buffers.

    Not thread-safe: one expander per thread (the returned arrays alias an internal buffer).

    Raises ``ValueError`` for ``d < 0`` or ``bits`` outside [2, 64].
    """

    def __init__(self, d: int, bits: int):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise SecAggParameterError(f"d must be an int >= 0, got {d!r}")
        self.d = int(d)
        self.bits = int(bits)
        self.dtype = dtype_for_bits(bits)
        self._itemsize = np.dtype(self.dtype).itemsize
        self._nbytes = self.d * self._itemsize
        width = 8 * self._itemsize
        self._top_mask = None if self.bits == width else self.dtype((1 << self.bits) - 1)
        # input plaintext: zeros, so the ciphertext is the raw keystream
        self._zeros = np.zeros(self._nbytes, dtype=np.uint8)
        self._out = np.empty(self._nbytes + _BLOCK - 1, dtype=np.uint8)
        # explicit little-endian words, so every platform derives the same mask from a seed
        self._mask_view = self._out[: self._nbytes].view(np.dtype(self.dtype).newbyteorder("<"))

    def _keystream(self, seed: bytes) -> np.ndarray:
        """Fill the buffer with raw keystream words (top bits NOT masked) and return the view."""
        enc = Cipher(algorithms.AES(_check_seed(seed)), modes.CTR(_ZERO_IV)).encryptor()
        if self._nbytes:
            written = enc.update_into(self._zeros, self._out)
            if written != self._nbytes:  # pragma: no cover - CTR is a stream mode
                raise RuntimeError(f"AES-CTR wrote {written} bytes, expected {self._nbytes}")
        return self._mask_view

    def expand(self, seed: bytes) -> np.ndarray:
        """Return ``PRG(seed)`` as ``d`` elements of :attr:`dtype`, each in ``[0, 2**bits)``.

        The result is a view of an internal buffer: it is overwritten by the next call on this
        expander. Copy it if it must outlive that.

        Raises ``TypeError``/``ValueError`` if ``seed`` is not 32 bytes.
        """
        m = self._keystream(seed)
        if self._top_mask is not None:
            m &= self._top_mask
        return m

    def add_into(self, acc: np.ndarray, seed: bytes, sign: int) -> None:
        """In place: ``acc = (acc + sign * PRG(seed)) mod 2**bits``; ``sign`` is +1 or -1.

        ``acc`` must be a writable 1-D array of :attr:`dtype` and length ``d``; it is left reduced
        modulo ``2**bits``.
        """
        self._add_raw(acc, seed, sign)
        if self._top_mask is not None:
            acc &= self._top_mask

    def _add_raw(self, acc: np.ndarray, seed: bytes, sign: int) -> None:
        """``acc += sign * keystream`` modulo 2**width, without reducing to ``bits``.

        Arithmetic modulo 2**width is compatible with modulo 2**bits, so callers that add many
        masks can reduce once at the end.
        """
        self._check_acc(acc)
        if sign not in (1, -1):
            raise SecAggParameterError(f"sign must be +1 or -1, got {sign!r}")
        m = self._keystream(seed)
        if sign == 1:
            np.add(acc, m, out=acc)
        else:
            np.subtract(acc, m, out=acc)

    def reduce(self, acc: np.ndarray) -> None:
        """In place: reduce ``acc`` modulo ``2**bits`` (a no-op when bits is the dtype width)."""
        reduce_bits(acc, self.bits)

    def _check_acc(self, acc: np.ndarray) -> None:
        if not isinstance(acc, np.ndarray) or acc.dtype != self.dtype or acc.shape != (self.d,):
            got = f"{acc.dtype}{acc.shape}" if isinstance(acc, np.ndarray) else type(acc).__name__
            raise SecAggParameterError(
                f"acc must be a {np.dtype(self.dtype).name} array of shape ({self.d},), got {got}"
            )
        if not acc.flags.writeable:
            raise SecAggParameterError("acc must be writable")


def _encryptor_at(seed: bytes, byte_offset: int):
    """An AES-256-CTR keystream for ``seed`` positioned ``byte_offset`` bytes in (a multiple of
    the block size): the initial counter block is the block index, as in :meth:`MaskExpander`
    (which starts at block 0)."""
    return Cipher(
        algorithms.AES(_check_seed(seed)), modes.CTR((byte_offset // _BLOCK).to_bytes(16, "big"))
    ).encryptor()


def add_streams(acc: np.ndarray, items: list[tuple[bytes, int]], *, workers: int = 1) -> None:
    """In place: ``acc += sum(sign * PRG(seed))`` modulo ``2**width`` of ``acc``'s dtype, for
    ``(seed, sign)`` in ``items`` (``PRG`` is :meth:`MaskExpander.expand` before its top-bit
    reduction, so the caller reduces to ``2**bits`` once at the end).

    The vector is processed in slices of :data:`STREAM_CHUNK_BYTES`: every seed's keystream
    for one slice is added while the slice is in cache, instead of streaming each whole mask
    through memory. ``workers`` threads take contiguous, block-aligned ranges of the vector
    (AES-CTR and numpy release the GIL), each with its own keystreams positioned at its range;
    no partial sums are needed. The result is identical for any ``workers``.

    Raises :class:`SecAggParameterError` for a non-contiguous, read-only or non-uint32/uint64
    ``acc``, a sign other than +-1, or ``workers < 1``; ``TypeError``/``SecAggParameterError``
    for a seed that is not 32 bytes.
    """
    if not isinstance(acc, np.ndarray) or acc.ndim != 1 or acc.dtype not in (np.uint32, np.uint64):
        raise SecAggParameterError("acc must be a 1-D uint32 or uint64 array")
    if not (acc.flags.c_contiguous and acc.flags.writeable):
        raise SecAggParameterError("acc must be contiguous and writable")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SecAggParameterError(f"workers must be an int >= 1, got {workers!r}")
    for _, sign in items:
        if sign not in (1, -1):
            raise SecAggParameterError(f"sign must be +1 or -1, got {sign!r}")
    seeds = [(_check_seed(seed), sign) for seed, sign in items]
    size = acc.dtype.itemsize
    nbytes = acc.size * size
    if not seeds or not nbytes:
        return
    le = acc.dtype.newbyteorder("<")
    blocks = -(-nbytes // _BLOCK)
    # contiguous, block-aligned ranges; at least one chunk of work per thread
    workers = max(1, min(workers, blocks * _BLOCK // STREAM_CHUNK_BYTES))
    cuts = [(blocks * w // workers) * _BLOCK for w in range(workers)] + [nbytes]

    def run(lo: int, hi: int) -> None:
        streams = [(_encryptor_at(seed, lo), sign) for seed, sign in seeds]
        step = min(STREAM_CHUNK_BYTES, hi - lo)
        zeros = np.zeros(step, dtype=np.uint8)
        buf = np.empty(step + _BLOCK - 1, dtype=np.uint8)
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            n = b - a
            part = acc[a // size : b // size]
            for enc, sign in streams:
                enc.update_into(zeros[:n], buf)
                ks = buf[:n].view(le)
                if sign == 1:
                    np.add(part, ks, out=part)
                else:
                    np.subtract(part, ks, out=part)

    if workers == 1:
        run(0, nbytes)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, cuts[:-1], cuts[1:]))
