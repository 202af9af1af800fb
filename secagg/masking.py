"""Pairwise and self masking of encoded inputs (Bonawitz et al. 2017), and unmasking of the sum.

Client ``i`` sends ``y_i = x_i + PRG(b_i) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)  (mod 2**bits)``
where ``b_i`` is its self-mask seed and ``s_ij = s_ji`` the seed it shares with neighbour ``j``.
Summed over a set of survivors, the pairwise masks between two survivors cancel; what remains
is each survivor's self mask and the pairwise masks between survivors and dropped neighbours,
which :func:`unmask_sum` removes given the reconstructed seeds.

Guarantee: with all seeds correct, ``unmask_sum(sum_i y_i, ...)`` equals ``sum_i x_i mod
2**bits`` exactly. Given only ``y_i`` (without ``b_i``), ``y_i`` is uniform in Z_{2^bits}^d up to
the PRG's security, whatever ``x_i`` is (one-time pad with ``PRG(b_i)``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .encoding import dtype_for_bits
from .errors import SecAggParameterError
from .prg import SEED_BYTES, MaskExpander, add_streams, reduce_bits

__all__ = ["mask_input", "unmask_sum", "pairwise_seed", "self_seed_for_round", "get_expander"]

_PAIRWISE_INFO = b"fortis/secagg/pairwise-mask-seed/v1/round="
_SELF_INFO = b"fortis/secagg/self-mask-seed/v1/round="

_local = threading.local()


def get_expander(d: int, bits: int) -> MaskExpander:
    """A per-thread cached :class:`MaskExpander` for ``(d, bits)`` (buffers reused across calls).

    At most a few expanders are kept per thread (the most recently used shapes).
    """
    cache: dict[tuple[int, int], MaskExpander] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = {}
        _local.cache = cache
    key = (int(d), int(bits))
    exp = cache.pop(key, None)
    if exp is None:
        exp = MaskExpander(d, bits)
    cache[key] = exp  # most recent last
    while len(cache) > 4:
        cache.pop(next(iter(cache)))
    return exp


def _round_bytes(round_id: int) -> bytes:
    if isinstance(round_id, bool) or not isinstance(round_id, (int, np.integer)):
        raise TypeError(f"round_id must be an int, got {type(round_id).__name__}")
    if not 0 <= round_id < 2**64:
        raise SecAggParameterError(f"round_id must be in [0, 2**64), got {round_id}")
    return int(round_id).to_bytes(8, "big")


def pairwise_seed(key: bytes, round_id: int) -> bytes:
    """The 32-byte PRG seed for a pair's mask in round ``round_id``, from their agreed key.

    HKDF-SHA256 with a purpose- and round-specific ``info``, so a pair's masks differ between
    rounds and never equal any other use of the key.
    """
    if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) != 32:
        raise SecAggParameterError("key must be 32 bytes")
    info = _PAIRWISE_INFO + _round_bytes(round_id)
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(
        bytes(key)
    )


def self_seed_for_round(master: bytes, round_id: int) -> bytes:
    """Derive a per-round self-mask seed from a 32-byte master secret (optional helper; a fresh
    ``secrets.token_bytes(32)`` per round is equally valid)."""
    if not isinstance(master, (bytes, bytearray, memoryview)) or len(master) != 32:
        raise SecAggParameterError("master must be 32 bytes")
    info = _SELF_INFO + _round_bytes(round_id)
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(
        bytes(master)
    )


def _as_vector(a: np.ndarray, bits: int, name: str) -> np.ndarray:
    dtype = dtype_for_bits(bits)
    a = np.asarray(a)
    if a.ndim != 1:
        raise SecAggParameterError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype != dtype:
        raise SecAggParameterError(
            f"{name} must have dtype {np.dtype(dtype).name} for bits={bits}, got {a.dtype}"
        )
    if bits < 8 * a.itemsize and a.size and int(a.max()) >> bits:
        raise SecAggParameterError(f"{name} has elements >= 2**{bits}; not reduced modulo 2**bits")
    return a


def default_workers() -> int:
    """Threads for mask (re-)expansion: the machine's cores, at most 8. AES-CTR releases the
    GIL, so on a multi-core host the expansion scales with the threads."""
    return max(1, min(os.cpu_count() or 1, 8))


def _accumulate(
    out: np.ndarray, items: Sequence[tuple[bytes, int]], bits: int, workers: int
) -> None:
    """In place: ``out += sum(sign * PRG(seed))`` modulo ``2**bits`` (cache-blocked and
    threaded by :func:`secagg.prg.add_streams`; identical for any ``workers``)."""
    add_streams(out, list(items), workers=workers)
    reduce_bits(out, bits)


def mask_input(
    encoded: np.ndarray,
    my_id: int,
    self_seed: bytes,
    pairwise_seeds: Mapping[int, bytes],
    bits: int,
    *,
    workers: int = 1,
) -> np.ndarray:
    """Mask an encoded input: ``x + PRG(self_seed) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)``.

    ``pairwise_seeds`` maps each neighbour id ``j`` to the seed shared with it. Returns a new
    array (``encoded`` is not modified), reduced modulo ``2**bits``.

    ``workers`` threads share the mask expansion (same result for any value).

    Raises ``ValueError`` if ``encoded`` is not a 1-D array of the dtype for ``bits`` with
    elements ``< 2**bits``, if ``my_id`` appears among the neighbours, or a seed is not 32 bytes.
    """
    x = _as_vector(encoded, bits, "encoded")
    if my_id in pairwise_seeds:
        raise SecAggParameterError(f"client {my_id} lists itself among its pairwise neighbours")
    items = [(self_seed, +1)] + [
        (seed, +1 if j > my_id else -1) for j, seed in pairwise_seeds.items()
    ]
    out = x.copy()
    _accumulate(out, items, bits, workers)
    return out


def unmask_sum(
    masked_sum: np.ndarray,
    self_seeds: Mapping[int, bytes],
    dropped_pairwise: Mapping[tuple[int, int], bytes],
    bits: int,
    *,
    workers: int = 1,
) -> np.ndarray:
    """Remove the survivors' self masks and the survivor-dropped pairwise masks from a sum.

    ``masked_sum`` is ``sum_{i in survivors} y_i mod 2**bits``; ``self_seeds`` maps every
    survivor ``i`` to ``b_i``; ``dropped_pairwise`` maps ``(survivor i, dropped j)`` to ``s_ij``
    for every edge between a survivor and a dropped neighbour. Returns
    ``sum_{i in survivors} x_i mod 2**bits`` as a new array.

    ``workers`` threads share the mask re-expansion (same result for any value; worthwhile
    for the server when cores are free, since AES-CTR and numpy release the GIL).

    Raises ``ValueError`` if a key of ``dropped_pairwise`` names a survivor as the dropped side
    or a client as its own neighbour, or on malformed arrays/seeds.
    """
    s = _as_vector(masked_sum, bits, "masked_sum")
    for i, j in dropped_pairwise:
        if i == j:
            raise SecAggParameterError(
                f"dropped_pairwise key ({i}, {j}) pairs a client with itself"
            )
        if j in self_seeds:
            raise SecAggParameterError(
                f"dropped_pairwise key ({i}, {j}) names client {j} as dropped, but its self seed "
                "was given as a survivor's"
            )
    items = [(seed, -1) for seed in self_seeds.values()]
    # survivor i added +PRG(s_ij) if j > i else -PRG(s_ij): undo it
    items += [(seed, -1 if j > i else +1) for (i, j), seed in dropped_pairwise.items()]
    out = s.copy()
    _accumulate(out, items, bits, workers)
    return out


def sum_masked(inputs: Iterable[np.ndarray], bits: int) -> np.ndarray:
    """Sum masked inputs modulo ``2**bits`` (what the server computes before unmasking)."""
    dtype = dtype_for_bits(bits)
    acc: np.ndarray | None = None
    for y in inputs:
        y = np.asarray(y)
        if y.dtype != dtype:
            raise SecAggParameterError(
                f"masked input must have dtype {np.dtype(dtype).name}, got {y.dtype}"
            )
        if acc is None:
            acc = y.copy()
        else:
            if y.shape != acc.shape:
                raise SecAggParameterError(
                    f"masked inputs differ in shape: {y.shape} vs {acc.shape}"
                )
            np.add(acc, y, out=acc)
    if acc is None:
        raise SecAggParameterError("sum_masked needs at least one input")
    if bits < 8 * acc.itemsize:
        acc &= dtype((1 << bits) - 1)
    return acc
