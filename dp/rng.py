"""The noise source: a ChaCha20 keystream, a cryptographically secure pseudo-random generator.

Where the noise comes from
--------------------------
:class:`NoiseSource` draws every random bit from the ChaCha20 stream cipher (RFC 8439, through
``cryptography``'s OpenSSL binding) keyed by a 256-bit seed, with a 16-byte all-zero
counter||nonce start. ChaCha20's keystream is indistinguishable from uniform bits by any
efficient observer who does not know the key; this is the property a DP release needs so that
the noise cannot be predicted or subtracted. It is *not* numpy's ``MT19937`` (whose state is
recoverable from 624 outputs, the weakness of Flower's DP wrappers) nor ``PCG64``/``Philox``
(fast statistical generators with no security claim).

Two modes, chosen explicitly:

* ``NoiseSource()`` -- the key is 32 bytes from ``os.urandom`` (the operating system CSPRNG).
  Use this for every real release.
* ``NoiseSource(seed=b"...32 bytes...")`` -- deterministic: the same seed gives the same
  stream. For reproducible simulations, and for *verifiable* noise shares (a client derives its
  share from a seed it also hands, encrypted, to the key holder, who regenerates the share).
  A seed is as secret as the noise it generates.

Floating-point caveat: :meth:`uniform` has 53 random bits and :meth:`normal` uses the Box-Muller
transform in IEEE double precision; the continuous Gaussian therefore inherits the known
floating-point precision leaks of textbook Gaussian noise (Mironov 2012). The integer mechanisms
in :mod:`dp.samplers` avoid that.
"""

from __future__ import annotations

import math
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from dp.errors import PrivacyParameterError

__all__ = ["NoiseSource", "SEED_BYTES"]

SEED_BYTES = 32
_BUFFER = 4096


class NoiseSource:
    """ChaCha20 keystream as a source of uniform bits, integers, doubles and Gaussians.

    Args:
        seed: 32 bytes, or ``None`` for a fresh key from ``os.urandom`` (the default).

    Raises:
        PrivacyParameterError: ``seed`` is not exactly 32 bytes.

    Guarantees: given the seed, the sequence of outputs is a deterministic function of the
    sequence of calls (same calls, same numbers); without it, outputs are computationally
    indistinguishable from ideal uniform bits.
    """

    __slots__ = ("_enc", "_buf", "_pos", "deterministic")

    def __init__(self, seed: bytes | None = None) -> None:
        self.deterministic = seed is not None
        if seed is None:
            seed = os.urandom(SEED_BYTES)
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
            raise PrivacyParameterError(
                f"NoiseSource seed must be {SEED_BYTES} bytes, got "
                f"{type(seed).__name__} of length {len(seed) if hasattr(seed, '__len__') else '?'}"
            )
        cipher = Cipher(algorithms.ChaCha20(bytes(seed), b"\x00" * 16), mode=None)
        self._enc = cipher.encryptor()
        self._buf = b""
        self._pos = 0

    # -- bits ----------------------------------------------------------------------------
    def random_bytes(self, n: int) -> bytes:
        """The next ``n`` keystream bytes."""
        if n < 0:
            raise PrivacyParameterError(f"byte count must be >= 0, got {n}")
        avail = len(self._buf) - self._pos
        if n <= avail:
            out = self._buf[self._pos : self._pos + n]
            self._pos += n
            return out
        head = self._buf[self._pos :]
        need = n - len(head)
        if need >= _BUFFER:
            self._buf, self._pos = b"", 0
            return head + self._enc.update(bytes(need))
        self._buf = self._enc.update(bytes(_BUFFER))
        self._pos = need
        return head + self._buf[:need]

    def words(self, n: int) -> np.ndarray:
        """``n`` independent uniform 64-bit words as a ``uint64`` array."""
        return np.frombuffer(self.random_bytes(8 * int(n)), dtype="<u8").astype(np.uint64)

    def randbelow(self, k: int) -> int:
        """A uniform integer in ``[0, k)`` by rejection (exact, any size of ``k``)."""
        if k <= 0:
            raise PrivacyParameterError(f"randbelow needs k >= 1, got {k}")
        if k == 1:
            return 0
        bits = (k - 1).bit_length()
        nbytes = (bits + 7) // 8
        shift = 8 * nbytes - bits
        while True:
            r = int.from_bytes(self.random_bytes(nbytes), "little") >> shift
            if r < k:
                return r

    # -- floating point ------------------------------------------------------------------
    def uniform(self, n: int) -> np.ndarray:
        """``n`` doubles uniform on the grid ``{0, 2^-53, ..., 1 - 2^-53}``."""
        return (self.words(n) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def normal(self, n: int, scale: float = 1.0) -> np.ndarray:
        """``n`` samples of ``N(0, scale^2)`` by the Box-Muller transform (double precision)."""
        n = int(n)
        m = (n + 1) // 2
        u = self.uniform(2 * m)
        r = np.sqrt(-2.0 * np.log1p(-u[:m]))  # 1 - u in (0, 1]: log never sees 0
        theta = (2.0 * math.pi) * u[m:]
        z = np.empty(2 * m)
        z[:m] = r * np.cos(theta)
        z[m:] = r * np.sin(theta)
        return z[:n] * scale

    def signs(self, n: int) -> np.ndarray:
        """``n`` independent uniform signs in ``{-1, +1}`` (int8)."""
        raw = np.frombuffer(self.random_bytes((int(n) + 7) // 8), dtype=np.uint8)
        bits = np.unpackbits(raw)[: int(n)].astype(np.int8)
        return 2 * bits - 1
