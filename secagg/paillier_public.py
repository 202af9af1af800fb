"""Paillier public key: encryption, ciphertext validation and bytes, homomorphic operations.

See :mod:`secagg.paillier` for the scheme and its guarantees.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import gmpy2
import numpy as np
from gmpy2 import mpz

from ._paillier_threads import check_workers, map_chunks
from .errors import CiphertextError, PaillierKeyError, PaillierOverflowError, SecAggParameterError
from .paillier_multiexp import multi_exp as _multi_exp

if TYPE_CHECKING:
    from .paillier_pool import ObfuscationPool

__all__ = ["PaillierPublicKey", "DEFAULT_KEY_BITS", "SECURE_KEY_BITS", "INSECURE_TEST_KEY_BITS"]

DEFAULT_KEY_BITS = 2048
SECURE_KEY_BITS = (2048, 3072, 4096)
INSECURE_TEST_KEY_BITS = 1024  # accepted only with allow_insecure=True (tests)
_SMALL_PRIMES_PRODUCT = gmpy2.primorial(10_000)
_ONE = mpz(1)
_MPZ = type(_ONE)

Ciphertext = mpz  # a validated ciphertext: an mpz in (0, n**2) coprime to n


def _as_mpz_int(value: object, what: str) -> mpz:
    if type(value) is _MPZ:
        return value  # type: ignore[return-value]
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return mpz(int(value))
    raise TypeError(f"{what} must be an integer, got {type(value).__name__}")


def _check_key_bits(n_bits: int, allow_insecure: bool) -> None:
    if n_bits in SECURE_KEY_BITS:
        return
    if allow_insecure and n_bits == INSECURE_TEST_KEY_BITS:
        return
    allowed = ", ".join(str(b) for b in SECURE_KEY_BITS)
    extra = "" if allow_insecure else f" ({INSECURE_TEST_KEY_BITS} only with allow_insecure=True)"
    raise PaillierKeyError(f"Paillier modulus of {n_bits} bits refused: use {allowed}{extra}")


class PaillierPublicKey:
    """A Paillier public key ``n`` with ``g = n + 1``; ``n``, ``nsquare`` and ``g`` are mpz.

    Parameters
    ----------
    n:
        The modulus, a product of two distinct primes of equal size.
    allow_insecure:
        Also accept a 1024-bit modulus: for tests only.

    Raises
    ------
    PaillierKeyError
        If ``n`` fails a sanity check: its size is not allowed, it is even, has a factor below
        10**4, is a perfect square or is (probably) prime.
    TypeError
        If ``n`` is not an integer.
    """

    __slots__ = (
        "n",
        "nsquare",
        "g",
        "n_bits",
        "key_bytes",
        "ciphertext_bytes",
        "max_signed",
        "_half",
    )

    def __init__(self, n: int, *, allow_insecure: bool = False):
        n = _as_mpz_int(n, "n")
        n_bits = int(n.bit_length())
        _check_key_bits(n_bits, allow_insecure)
        if n % 2 == 0:
            raise PaillierKeyError("Paillier modulus is even")
        if gmpy2.gcd(n, _SMALL_PRIMES_PRODUCT) != 1:
            raise PaillierKeyError("Paillier modulus has a factor below 10**4")
        if gmpy2.is_square(n):
            raise PaillierKeyError("Paillier modulus is a perfect square")
        if gmpy2.is_strong_prp(n, 2):
            raise PaillierKeyError("Paillier modulus is (probably) prime")
        self.n: mpz = n
        self.nsquare: mpz = n * n
        self.g: mpz = n + 1
        self.n_bits: int = n_bits
        #: length of :meth:`to_bytes` (fixed-width big-endian ``n``)
        self.key_bytes: int = (n_bits + 7) // 8
        #: length of one encoded ciphertext (the byte length of ``n**2``)
        self.ciphertext_bytes: int = (int(self.nsquare.bit_length()) + 7) // 8
        #: largest magnitude :meth:`encode_signed` accepts: ``(n - 1) // 2``
        self.max_signed: mpz = (n - 1) // 2
        self._half = self.max_signed

    # -- identity and serialisation -------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaillierPublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(("PaillierPublicKey", int(self.n)))

    def __repr__(self) -> str:
        return (
            f"PaillierPublicKey(n_bits={self.n_bits}, fingerprint={self.fingerprint()[:8].hex()})"
        )

    def to_bytes(self) -> bytes:
        """``n`` as fixed-width big-endian bytes (:attr:`key_bytes` long: 256 for 2048 bits)."""
        return self.n.to_bytes(self.key_bytes, "big")

    @classmethod
    def from_bytes(cls, data: bytes, *, allow_insecure: bool = False) -> PaillierPublicKey:
        """Rebuild a public key from :meth:`to_bytes` output.

        Raises
        ------
        PaillierKeyError
            Wrong length (256, 384 or 512 bytes; 128 with ``allow_insecure=True``), a leading
            zero byte (``n`` must have exactly ``8*len``
            bits), or any check of the constructor.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"public key must be bytes, got {type(data).__name__}")
        data = bytes(data)
        _check_key_bits(8 * len(data), allow_insecure)
        if data[0] < 0x80:
            raise PaillierKeyError(
                f"public key of {len(data)} bytes does not encode a {8 * len(data)}-bit modulus"
            )
        return cls(mpz.from_bytes(data, "big"), allow_insecure=allow_insecure)

    def fingerprint(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: a short name for the key in transcripts and logs."""
        return hashlib.sha256(b"fortis/paillier-public-key/v1" + self.to_bytes()).digest()

    # -- plaintexts -----------------------------------------------------------------------

    def encode_signed(self, value: int) -> mpz:
        """The plaintext representing signed ``value``: ``value mod n``.

        Raises :class:`PaillierOverflowError` if ``|value| > (n - 1) // 2`` (it would wrap).
        """
        v = _as_mpz_int(value, "value")
        if -self._half <= v <= self._half:
            return v % self.n
        raise PaillierOverflowError(
            f"signed plaintext of {int(v.bit_length())} bits exceeds (n-1)/2 for a "
            f"{self.n_bits}-bit key"
        )

    def decode_signed(self, plaintext: int) -> mpz:
        """Signed reading of a plaintext in ``[0, n)``: values above ``(n-1)/2`` are negative.

        Raises :class:`PaillierOverflowError` if ``plaintext`` is outside ``[0, n)``.
        """
        m = _as_mpz_int(plaintext, "plaintext")
        if not 0 <= m < self.n:
            raise PaillierOverflowError("plaintext outside [0, n)")
        return m - self.n if m > self._half else m

    # -- obfuscation and encryption -------------------------------------------------------

    def random_obfuscators(self, count: int, *, workers: int = 1) -> list[mpz]:
        """``count`` fresh values ``r**n mod n**2``, each ``r`` uniform in ``Z_n^*`` (from
        :mod:`secrets`). Costs one full exponentiation each (the key holder's CRT version,
        :meth:`secagg.paillier.PaillierPrivateKey.random_obfuscators`, is ~4x cheaper). ``workers`` threads
        share the exponentiations (gmpy2 releases the GIL inside them)."""
        count = _check_count(count)
        check_workers(workers)
        rs = [self._random_unit() for _ in range(count)]
        n, nsq = self.n, self.nsquare
        return map_chunks(lambda chunk: gmpy2.powmod_base_list(list(chunk), n, nsq), rs, workers)

    def _random_unit(self) -> mpz:
        n = self.n
        while True:
            r = mpz(secrets.randbelow(int(n) - 1) + 1)
            if gmpy2.gcd(r, n) == 1:
                return r

    def _check_plaintext(self, m: mpz) -> None:
        if not 0 <= m < self.n:
            raise PaillierOverflowError(
                "plaintext must be in [0, n) (use encrypt_signed for signed values); got "
                + ("a negative value" if m < 0 else f"a value of {int(m.bit_length())} bits")
            )

    def _obfuscator(self, pool: ObfuscationPool | None) -> mpz:
        if pool is None:
            return self.random_obfuscators(1)[0]
        if pool.public_key.n != self.n:
            raise SecAggParameterError("the obfuscation pool belongs to another Paillier key")
        return pool.draw()

    def raw_encrypt(self, plaintext: mpz, obfuscator: mpz) -> mpz:
        """``(1 + m*n) * obfuscator mod n**2`` for ``m`` in ``[0, n)`` and ``obfuscator = r**n``,
        without checks: the caller guarantees both (the building block of :meth:`encrypt`).

        Computed as ``obfuscator + n * (m * obfuscator mod n)`` reduced once, since
        ``m*n*x mod n**2 = n * (m*x mod n)``: only ``n``-sized products.
        """
        c = obfuscator + self.n * (plaintext * obfuscator % self.n)
        return c - self.nsquare if c >= self.nsquare else c

    def encrypt(self, plaintext: int, *, pool: ObfuscationPool | None = None) -> mpz:
        """Encrypt a plaintext in ``[0, n)``; ``r**n`` comes from ``pool`` (online if ``pool`` is
        None or empty).

        Raises
        ------
        PaillierOverflowError
            If ``plaintext`` is outside ``[0, n)``: nothing wraps silently.
        SecAggParameterError
            If ``pool`` belongs to another key.
        """
        m = _as_mpz_int(plaintext, "plaintext")
        self._check_plaintext(m)
        return self.raw_encrypt(m, self._obfuscator(pool))

    def encrypt_signed(self, value: int, *, pool: ObfuscationPool | None = None) -> mpz:
        """Encrypt a signed value with ``|value| <= (n-1)/2`` (as ``value mod n``)."""
        return self.raw_encrypt(self.encode_signed(value), self._obfuscator(pool))

    def encrypt_many(
        self, plaintexts: Iterable[int], *, pool: ObfuscationPool | None = None
    ) -> list[mpz]:
        """:meth:`encrypt` each plaintext (all are checked before any is encrypted)."""
        ms = [_as_mpz_int(m, "plaintext") for m in plaintexts]
        for m in ms:
            self._check_plaintext(m)
        if pool is None:
            obfs = self.random_obfuscators(len(ms))
        else:
            if pool.public_key.n != self.n:
                raise SecAggParameterError("the obfuscation pool belongs to another Paillier key")
            obfs = pool.draw_many(len(ms))
        enc = self.raw_encrypt
        return [enc(m, x) for m, x in zip(ms, obfs)]

    def rerandomize(self, ciphertext: mpz, *, pool: ObfuscationPool | None = None) -> mpz:
        """The same plaintext under fresh randomness: ``c * r**n mod n**2``."""
        return ciphertext * self._obfuscator(pool) % self.nsquare

    # -- validation and bytes -------------------------------------------------------------

    def validate(
        self, ciphertext: object, *, sender: object = None, index: int | None = None
    ) -> mpz:
        """Check one received ciphertext and return it as mpz.

        Raises
        ------
        CiphertextError
            If it is not an integer, is ``<= 0``, is ``>= n**2``, or shares a factor with ``n``
            (``reason`` says which; ``sender``/``index`` are carried into the error).
        """
        c = self._in_range(ciphertext, sender, index)
        if gmpy2.gcd(c, self.n) != 1:
            raise CiphertextError(
                "shares a factor with n (not invertible)", sender=sender, index=index
            )
        return c

    def _in_range(self, ciphertext: object, sender: object, index: int | None) -> mpz:
        if type(ciphertext) is _MPZ:
            c = ciphertext
        elif isinstance(ciphertext, int) and not isinstance(ciphertext, bool):
            c = mpz(ciphertext)
        else:
            raise CiphertextError(
                f"not an integer ({type(ciphertext).__name__})", sender=sender, index=index
            )
        if c <= 0:
            raise CiphertextError(
                "is zero" if c == 0 else "is negative", sender=sender, index=index
            )
        if c >= self.nsquare:
            raise CiphertextError("is not below n**2", sender=sender, index=index)
        return c

    def validate_many(self, ciphertexts: Iterable[object], *, sender: object = None) -> list[mpz]:
        """Check a batch of received ciphertexts (as :meth:`validate`) and return them as mpz.

        Coprimality is checked for the whole batch with one gcd: the product of the
        ciphertexts modulo ``n`` is a unit iff every ciphertext is. Only when that fails is each
        one tested, to name the first bad one. The error's ``index`` is the position in the batch.
        """
        cs = [self._in_range(c, sender, i) for i, c in enumerate(ciphertexts)]
        n = self.n
        acc = _ONE
        for c in cs:
            acc = acc * (c % n) % n  # reducing c first is cheaper than a 6144-bit product
        if gmpy2.gcd(acc, n) != 1:
            for i, c in enumerate(cs):
                if gmpy2.gcd(c, n) != 1:
                    raise CiphertextError(
                        "shares a factor with n (not invertible)", sender=sender, index=i
                    )
        return cs

    def ciphertext_to_bytes(self, ciphertext: mpz) -> bytes:
        """Fixed-width big-endian bytes (:attr:`ciphertext_bytes` long) of a ciphertext."""
        return mpz(ciphertext).to_bytes(self.ciphertext_bytes, "big")

    def ciphertexts_to_bytes(self, ciphertexts: Iterable[mpz]) -> bytes:
        """The concatenation of :meth:`ciphertext_to_bytes` of each ciphertext."""
        width = self.ciphertext_bytes
        return b"".join(mpz(c).to_bytes(width, "big") for c in ciphertexts)

    def ciphertext_from_bytes(self, data: bytes, *, sender: object = None) -> mpz:
        """Decode and :meth:`validate` one ciphertext; a wrong length is a :class:`CiphertextError`."""
        cs = self.ciphertexts_from_bytes(data, count=1, sender=sender)
        return cs[0]

    def ciphertexts_from_bytes(
        self, data: bytes, *, count: int | None = None, sender: object = None
    ) -> list[mpz]:
        """Decode a concatenation of fixed-width ciphertexts and :meth:`validate_many` them.

        Raises
        ------
        CiphertextError
            If the length is not a multiple of :attr:`ciphertext_bytes`, does not hold exactly
            ``count`` ciphertexts (when given), or any ciphertext fails validation.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CiphertextError(f"not bytes ({type(data).__name__})", sender=sender)
        view = memoryview(data).cast("B")
        width = self.ciphertext_bytes
        if len(view) % width:
            raise CiphertextError(
                f"{len(view)} bytes is not a multiple of the ciphertext width {width}",
                sender=sender,
            )
        got = len(view) // width
        if count is not None and got != count:
            raise CiphertextError(
                f"{len(view)} bytes hold {got} ciphertexts, expected {count}", sender=sender
            )
        from_bytes = mpz.from_bytes
        cs = [from_bytes(view[i : i + width], "big") for i in range(0, len(view), width)]
        return self.validate_many(cs, sender=sender)

    # -- homomorphic operations (on validated ciphertexts; no checks, no re-randomisation) ------

    def add(self, a: mpz, b: mpz) -> mpz:
        """``Enc(m_a + m_b mod n)``: one multiplication modulo ``n**2``."""
        return a * b % self.nsquare

    def sum(self, ciphertexts: Iterable[mpz]) -> mpz:
        """``Enc(sum of plaintexts mod n)``; the empty sum is the trivial encryption ``1`` of 0."""
        nsq = self.nsquare
        acc = _ONE
        for c in ciphertexts:
            acc = acc * c % nsq
        return acc

    def negate(self, ciphertext: mpz) -> mpz:
        """``Enc(-m mod n)``: the inverse of the ciphertext modulo ``n**2``.

        Raises :class:`CiphertextError` if it has no inverse (it was never validated).
        """
        try:
            return gmpy2.invert(ciphertext, self.nsquare)
        except ZeroDivisionError:
            raise CiphertextError("shares a factor with n (not invertible)") from None

    def sub(self, a: mpz, b: mpz) -> mpz:
        """``Enc(m_a - m_b mod n)``."""
        return a * self.negate(b) % self.nsquare

    def add_plain(self, ciphertext: mpz, value: int) -> mpz:
        """``Enc(m + value mod n)`` for a (possibly negative) integer ``value``."""
        k = _as_mpz_int(value, "value") % self.n
        return ciphertext * (1 + k * self.n) % self.nsquare

    def mul_scalar(self, ciphertext: mpz, scalar: int) -> mpz:
        """``Enc(scalar * m mod n)`` for a (possibly negative) integer ``scalar``.

        A negative scalar exponentiates the inverse ciphertext by ``|scalar|`` (one modular
        inversion), so the cost follows the scalar's bit length, not ``n``'s.
        """
        k = _as_mpz_int(scalar, "scalar")
        if k < 0:
            return gmpy2.powmod(self.negate(ciphertext), -k, self.nsquare)
        return gmpy2.powmod(ciphertext, k, self.nsquare)

    def multi_exp(
        self, ciphertexts: Sequence[mpz], scalars: Sequence[int], *, window: int | None = None
    ) -> mpz:
        """``Enc(sum_l scalars[l] * m_l mod n) = prod_l c_l**scalars[l] mod n**2``, with shared
        squarings (see :func:`secagg.paillier_multiexp.multi_exp`); scalars may be negative."""
        return _multi_exp(ciphertexts, scalars, self.nsquare, window=window)


def _powmod_runs(jobs: Sequence[tuple[mpz, mpz, mpz]]) -> list[mpz]:
    """``[powmod(base, exp, mod) for base, exp, mod in jobs]``, one ``powmod_base_list`` call (GIL
    released) per run of consecutive jobs sharing ``exp`` and ``mod`` (compared by identity)."""
    out: list[mpz] = []
    start = 0
    while start < len(jobs):
        _, exp, mod = jobs[start]
        stop = start + 1
        while stop < len(jobs) and jobs[stop][1] is exp and jobs[stop][2] is mod:
            stop += 1
        out.extend(gmpy2.powmod_base_list([j[0] for j in jobs[start:stop]], exp, mod))
        start = stop
    return out


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise SecAggParameterError(f"count must be an int >= 0, got {count!r}")
    return count
