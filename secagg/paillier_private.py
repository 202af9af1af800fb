"""Paillier private key: CRT decryption, storage, and the key holder's cheap obfuscators.

See :mod:`secagg.paillier` for the scheme and its guarantees.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

import gmpy2
from gmpy2 import mpz

from ._paillier_threads import check_workers, map_chunks
from .errors import PaillierKeyError
from .paillier_public import (
    DEFAULT_KEY_BITS,
    PaillierPublicKey,
    _as_mpz_int,
    _check_count,
    _check_key_bits,
    _powmod_runs,
)

__all__ = ["PaillierPrivateKey", "generate_paillier_keypair"]

_PRIVATE_MAGIC = b"FRTS-PSK"
_PRIVATE_VERSION = 1


class PaillierPrivateKey:
    """A Paillier private key: the factors ``p < q`` of ``n`` with CRT precomputation (mpz).

    Build one with :meth:`generate`, :meth:`from_phe` or :meth:`from_bytes`.

    Security: :meth:`to_bytes` is the whole secret. A file that holds it must be readable by
    its owner only (mode ``0o600``, e.g. ``os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    0o600)``), and the bytes must never enter a protocol message or a log.

    Raises
    ------
    PaillierKeyError
        If ``p * q != n``, ``p == q``, the factors differ in bit length, or either is not prime.
    """

    __slots__ = (
        "public_key",
        "p",
        "q",
        "psquare",
        "qsquare",
        "hp",
        "hq",
        "_q_inv_p",
        "_pm1",
        "_qm1",
        "_qsq_inv_psq",
    )

    def __init__(self, public_key: PaillierPublicKey, p: int, q: int):
        if not isinstance(public_key, PaillierPublicKey):
            raise TypeError("public_key must be a PaillierPublicKey")
        p, q = _as_mpz_int(p, "p"), _as_mpz_int(q, "q")
        if p > q:
            p, q = q, p
        if p * q != public_key.n:
            raise PaillierKeyError("p * q does not equal the public modulus n")
        if p == q:
            raise PaillierKeyError("p and q must be distinct")
        if p.bit_length() != q.bit_length():
            # equal sizes also guarantee gcd(n, phi(n)) == 1 (neither prime divides the other
            # minus one), which random_obfuscators relies on
            raise PaillierKeyError("p and q must have the same bit length")
        if not (gmpy2.is_prime(p, 25) and gmpy2.is_prime(q, 25)):
            raise PaillierKeyError("a factor of n is not prime")
        self.public_key = public_key
        self.p, self.q = p, q
        self.psquare, self.qsquare = p * p, q * q
        self._pm1, self._qm1 = p - 1, q - 1
        g = public_key.g
        # h_p = L_p(g**(p-1) mod p**2)**-1 mod p, with L_p(x) = (x - 1) / p
        self.hp = gmpy2.invert((gmpy2.powmod(g, p - 1, self.psquare) - 1) // p, p)
        self.hq = gmpy2.invert((gmpy2.powmod(g, q - 1, self.qsquare) - 1) // q, q)
        self._q_inv_p = gmpy2.invert(q, p)
        self._qsq_inv_psq = gmpy2.invert(self.qsquare, self.psquare)

    def __repr__(self) -> str:
        return f"PaillierPrivateKey(public_key={self.public_key!r})"

    @classmethod
    def generate(
        cls, n_length: int = DEFAULT_KEY_BITS, *, allow_insecure: bool = False
    ) -> PaillierPrivateKey:
        """A fresh key pair from ``phe.paillier.generate_paillier_keypair(n_length=...)``
        (OS randomness); the public half is :attr:`public_key`.

        Raises :class:`PaillierKeyError` for a size other than 2048, 3072 or 4096 bits unless
        ``allow_insecure=True`` (1024 bits, for tests).
        """
        if isinstance(n_length, bool) or not isinstance(n_length, int):
            raise TypeError(f"n_length must be an int, got {type(n_length).__name__}")
        _check_key_bits(n_length, allow_insecure)
        from phe import paillier  # noqa: PLC0415 - phe is only needed to make keys

        pub, priv = paillier.generate_paillier_keypair(n_length=n_length)
        return cls.from_phe(priv, allow_insecure=allow_insecure)

    @classmethod
    def from_phe(cls, private_key: object, *, allow_insecure: bool = False) -> PaillierPrivateKey:
        """Wrap a ``phe.paillier.PaillierPrivateKey`` (its ``p``, ``q`` and public ``n``)."""
        try:
            n, p, q = private_key.public_key.n, private_key.p, private_key.q  # type: ignore[attr-defined]
        except AttributeError:
            raise TypeError("expected a phe.paillier.PaillierPrivateKey") from None
        return cls(PaillierPublicKey(n, allow_insecure=allow_insecure), p, q)

    def to_bytes(self) -> bytes:
        """``b"FRTS-PSK" | version (1 byte) | n_bits (2 bytes) | p | q``, with ``p`` and ``q``
        fixed-width big-endian (``n_bits/16`` bytes each). Owner-only storage: see the class."""
        n_bits = self.public_key.n_bits
        width = n_bits // 16
        return (
            _PRIVATE_MAGIC
            + bytes([_PRIVATE_VERSION])
            + n_bits.to_bytes(2, "big")
            + self.p.to_bytes(width, "big")
            + self.q.to_bytes(width, "big")
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, allow_insecure: bool = False) -> PaillierPrivateKey:
        """Rebuild a private key from :meth:`to_bytes` output.

        Raises :class:`PaillierKeyError` for a wrong magic, version or length, or a key that
        fails the constructor's checks.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"private key must be bytes, got {type(data).__name__}")
        data = bytes(data)
        head = len(_PRIVATE_MAGIC) + 3
        if len(data) < head or not data.startswith(_PRIVATE_MAGIC):
            raise PaillierKeyError("not a fortis Paillier private key (bad magic)")
        if data[len(_PRIVATE_MAGIC)] != _PRIVATE_VERSION:
            raise PaillierKeyError(f"unknown private key version {data[len(_PRIVATE_MAGIC)]}")
        n_bits = int.from_bytes(data[head - 2 : head], "big")
        _check_key_bits(n_bits, allow_insecure)
        width = n_bits // 16
        if n_bits % 16 or len(data) != head + 2 * width:
            raise PaillierKeyError(
                f"private key of {len(data)} bytes does not match its {n_bits}-bit header"
            )
        p = mpz.from_bytes(data[head : head + width], "big")
        q = mpz.from_bytes(data[head + width :], "big")
        return cls(PaillierPublicKey(p * q, allow_insecure=allow_insecure), p, q)

    # -- decryption -----------------------------------------------------------------------

    def _crt(self, xp: mpz, xq: mpz) -> mpz:
        """From ``c**(p-1) mod p**2`` and ``c**(q-1) mod q**2``, the plaintext in ``[0, n)``."""
        p, q = self.p, self.q
        mp = (xp - 1) // p * self.hp % p
        mq = (xq - 1) // q * self.hq % q
        return mq + q * ((mp - mq) * self._q_inv_p % p)

    def decrypt(self, ciphertext: object, *, sender: object = None) -> mpz:
        """The plaintext in ``[0, n)`` of a ciphertext, validated first (CRT: two half-size
        exponentiations).

        Raises :class:`CiphertextError` if the ciphertext fails :meth:`PaillierPublicKey.validate`.
        """
        c = self.public_key.validate(ciphertext, sender=sender)
        xp = gmpy2.powmod(c % self.psquare, self._pm1, self.psquare)
        xq = gmpy2.powmod(c % self.qsquare, self._qm1, self.qsquare)
        return self._crt(xp, xq)

    def decrypt_signed(self, ciphertext: object, *, sender: object = None) -> mpz:
        """:meth:`decrypt`, read as signed: a plaintext above ``(n-1)/2`` is negative."""
        return self.public_key.decode_signed(self.decrypt(ciphertext, sender=sender))

    def decrypt_many(
        self, ciphertexts: Iterable[object], *, sender: object = None, workers: int = 1
    ) -> list[mpz]:
        """:meth:`decrypt` a batch (validated with :meth:`PaillierPublicKey.validate_many`).

        The exponentiations run in ``gmpy2.powmod_base_list`` calls (the GIL is released inside
        them): with ``workers >= 2`` the ``p`` and ``q`` halves, and chunks of the batch, run on
        parallel threads. The result does not depend on ``workers``.

        Raises
        ------
        CiphertextError
            If any ciphertext fails validation (``index`` names the first bad one, ``sender`` is
            carried over); nothing is decrypted then.
        SecAggParameterError
            If ``workers < 1``.
        """
        check_workers(workers)
        cs = self.public_key.validate_many(ciphertexts, sender=sender)
        psq, qsq = self.psquare, self.qsquare
        jobs = [(c % psq, self._pm1, psq) for c in cs] + [(c % qsq, self._qm1, qsq) for c in cs]

        xs = map_chunks(_powmod_runs, jobs, workers)
        half = len(cs)
        crt = self._crt
        return [crt(xs[i], xs[half + i]) for i in range(half)]

    def decrypt_many_signed(
        self, ciphertexts: Iterable[object], *, sender: object = None, workers: int = 1
    ) -> list[mpz]:
        """:meth:`decrypt_many`, read as signed."""
        dec = self.public_key.decode_signed
        return [dec(m) for m in self.decrypt_many(ciphertexts, sender=sender, workers=workers)]

    # -- the key holder's own encryptions ---------------------------------------------------

    def random_obfuscators(self, count: int, *, workers: int = 1) -> list[mpz]:
        """``count`` fresh values distributed exactly as ``r**n mod n**2`` for ``r`` uniform in
        ``Z_n^*``, computed with the factorisation (~4x cheaper than the public version).

        Why it is the same distribution: ``r -> r**n mod n**2`` is a bijection from ``Z_n^*``
        onto the n-th residues (``gcd(n, phi(n)) = 1``, true for equal-size primes), so ``r**n``
        is a uniform n-th residue. Modulo ``p**2`` the n-th residues are the subgroup of order
        ``p - 1``, whose elements are exactly the values ``a**p mod p**2``, one for each ``a`` in
        ``[1, p)`` (``a**p mod p**2`` depends only on ``a mod p``). So a uniform ``a`` (from
        :mod:`secrets`) gives a uniform element of it, with an exponent of ``n_bits/2`` bits
        modulo ``p**2`` instead of ``n_bits`` bits modulo ``n**2``; likewise for ``q``, and the
        CRT joins the independent halves into a uniform n-th residue modulo ``n**2``.
        """
        count = _check_count(count)
        check_workers(workers)
        p, q, psq, qsq = self.p, self.q, self.psquare, self.qsquare
        jobs = [(mpz(secrets.randbelow(int(p) - 1) + 1), p, psq) for _ in range(count)]
        jobs += [(mpz(secrets.randbelow(int(q) - 1) + 1), q, qsq) for _ in range(count)]

        xs = map_chunks(_powmod_runs, jobs, workers)
        inv = self._qsq_inv_psq
        return [xs[count + i] + qsq * ((xs[i] - xs[count + i]) * inv % psq) for i in range(count)]


def generate_paillier_keypair(
    n_length: int = DEFAULT_KEY_BITS, *, allow_insecure: bool = False
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """``(public_key, private_key)`` from :meth:`PaillierPrivateKey.generate`."""
    private = PaillierPrivateKey.generate(n_length, allow_insecure=allow_insecure)
    return private.public_key, private
