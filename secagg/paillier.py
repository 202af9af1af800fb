"""Paillier keys, encryption, CRT decryption, ciphertext checks and homomorphic operations, on
``phe`` keys with gmpy2 arithmetic.

The scheme is Paillier's with ``g = n + 1``: ``Enc(m; r) = (1 + m*n) * r**n  mod n**2`` for a
plaintext ``m`` in ``[0, n)`` and ``r`` uniform in ``Z_n^*``. Keys come from
``phe.paillier.generate_paillier_keypair`` and are held as gmpy2 integers
(:class:`PaillierPublicKey`, :class:`PaillierPrivateKey`); ciphertexts are plain ``gmpy2.mpz``
values, so hot loops never build wrapper objects.

Guarantees
----------
* Keys are 2048 bits by default, 3072 or 4096 on request. A smaller modulus (1024 bits, for
  tests) is refused unless ``allow_insecure=True``. Loading a key runs cheap sanity checks on
  ``n`` (odd, exact size, no factor below 10**4, not a square, not prime) and, for a private
  key, checks that ``p * q == n`` with ``p``, ``q`` distinct primes of equal size.
* Encryption draws ``r**n`` from an :class:`~secagg.paillier_pool.ObfuscationPool` (filled
  ahead of time) or computes it online; each ``r`` comes from :mod:`secrets`. With a pooled
  ``r**n`` an encryption is ``r**n + n * (m * r**n mod n)`` (no exponentiation): a few
  microseconds instead of the ~10 ms of an online ``r**n`` at 2048 bits
  (``benchmarks/paillier_bench.py``).
* Decryption uses the CRT (separate exponentiations modulo ``p**2`` and ``q**2``) and returns
  the plaintext in ``[0, n)``; :meth:`PaillierPrivateKey.decrypt_signed` maps values above
  ``n/2`` to negatives.
* Every ciphertext that crosses a trust boundary goes through :meth:`PaillierPublicKey.validate`
  / :meth:`~PaillierPublicKey.validate_many` (done by the byte decoders and by decryption):
  ``0 < c < n**2`` and ``gcd(c, n) == 1``, else :class:`CiphertextError` naming the sender.
* Homomorphic operations (:meth:`~PaillierPublicKey.add`, :meth:`~PaillierPublicKey.add_plain`,
  :meth:`~PaillierPublicKey.mul_scalar`, :meth:`~PaillierPublicKey.multi_exp`, ...) act on
  validated ciphertexts and do not check them again (they are the hot path). Their results are
  not re-randomised: :meth:`~PaillierPublicKey.rerandomize` one before sending it to a party that
  must not relate it to its inputs.

Modules: :mod:`secagg.paillier_public` (:class:`PaillierPublicKey`),
:mod:`secagg.paillier_private` (:class:`PaillierPrivateKey`), :mod:`secagg.paillier_pool`
(:class:`~secagg.paillier_pool.ObfuscationPool`), :mod:`secagg.paillier_pack`
(:class:`~secagg.paillier_pack.SlotLayout`), :mod:`secagg.paillier_multiexp`.

Who may hold what: the public key travels in protocol messages (:meth:`~PaillierPublicKey.
to_bytes`). Nothing here authenticates it: a party must check that a public key really is the
key holder's (a signature, a pinned fingerprint) before encrypting under it, or whoever
substituted the key can decrypt.
"""

from .paillier_private import PaillierPrivateKey, generate_paillier_keypair
from .paillier_public import (
    DEFAULT_KEY_BITS,
    INSECURE_TEST_KEY_BITS,
    SECURE_KEY_BITS,
    PaillierPublicKey,
)

__all__ = [
    "PaillierPublicKey",
    "PaillierPrivateKey",
    "generate_paillier_keypair",
    "DEFAULT_KEY_BITS",
    "SECURE_KEY_BITS",
    "INSECURE_TEST_KEY_BITS",
]
