"""Typed errors raised by the ``secagg`` building blocks.

Every error derives from :class:`SecAggError`, itself a :class:`fortis.FortisError` and a
``ValueError`` (every one is a caller's or a peer's bad input), so a caller can catch the whole
family with one clause. :class:`EncodingOverflowError` is also an ``OverflowError``.
"""

from __future__ import annotations

from fortis.errors import FortisError

__all__ = [
    "SecAggError",
    "SecAggParameterError",
    "EncodingOverflowError",
    "ShamirError",
    "ShareDecryptionError",
    "SignatureError",
    "GraphError",
    "KeyAgreementError",
    "GroupElementError",
    "GroupParameterError",
    "SketchParameterError",
    "SketchOverflowError",
    "PaillierKeyError",
    "CiphertextError",
    "PaillierOverflowError",
]


class SecAggError(FortisError, ValueError):
    """Base class of every error raised by ``secagg``: all of them are a caller's or a peer's bad
    input (a value out of range, a share or ciphertext that does not check, bad parameters)."""


class SecAggParameterError(SecAggError):
    """A secagg building block was called with an invalid parameter (a length, a bit width, a
    key size, an array shape); the message names the parameter."""


class EncodingOverflowError(SecAggError, OverflowError):
    """A value, or the sum of ``n_max`` values, does not fit the fixed-point range.

    Raised instead of wrapping around or clipping silently.
    """


class ShamirError(SecAggError):
    """Shamir sharing misuse: too few shares, bad evaluation points, inconsistent shares."""


class ShareDecryptionError(SecAggError):
    """An AES-GCM sealed share failed authentication (tampered, wrong key or wrong aad)."""


class SignatureError(SecAggError):
    """An Ed25519 signature did not verify, or the public key/signature is malformed."""


class GraphError(SecAggError):
    """Invalid masking-graph parameters (ids, degree, threshold, rates)."""


class KeyAgreementError(SecAggError):
    """X25519 key agreement failed: malformed or low-order peer public key."""


class GroupElementError(SecAggError):
    """A received group element (Feldman commitment, Diffie-Hellman public key) is malformed:
    wrong encoded length, out of ``[1, p)``, or outside the subgroup of order ``q``."""


class GroupParameterError(SecAggError):
    """The Schnorr-group parameters fail their check (sizes, primality, generator order), or no
    parameters exist for the requested size."""


class SketchParameterError(SecAggParameterError):
    """A sketch function got a bad argument: an input that is not a signed integer array of
    shape ``(d,)``/``(m, d)``, a seed that is not 32 bytes, a bad ``k``, ``workers``, norm bound
    or probability. The message names the argument."""


class SketchOverflowError(SecAggError, OverflowError):
    """An exact sketch, squared norm or distance cannot be held in int64 and the caller did not
    ask for Python-int results. Raised instead of wrapping around."""


class PaillierKeyError(SecAggError):
    """A Paillier key is malformed or refused: wrong encoded length, a modulus that fails the
    sanity checks (even, prime, a square, small factors, wrong size), factors that do not match
    the modulus, or a size below the secure minimum without ``allow_insecure=True``."""


class CiphertextError(SecAggError):
    """A received Paillier ciphertext is invalid: wrong encoded length, zero or negative, not
    below ``n**2``, or sharing a factor with ``n``.

    Attributes ``reason`` (what is wrong), ``sender`` (whose ciphertext it was, when the caller
    said) and ``index`` (its position in a batch, when it came in one) let a party count the
    fault against its sender. The message never includes the ciphertext or a common factor.
    """

    def __init__(self, reason: str, *, sender: object = None, index: int | None = None):
        self.reason = reason
        self.sender = sender
        self.index = index
        where = "ciphertext" if index is None else f"ciphertext {index}"
        if sender is not None:
            where += f" from {sender}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        return (_rebuild_ciphertext_error, (self.reason, self.sender, self.index))


def _rebuild_ciphertext_error(reason: str, sender: object, index: int | None) -> CiphertextError:
    return CiphertextError(reason, sender=sender, index=index)


class PaillierOverflowError(SecAggError, OverflowError):
    """A Paillier plaintext or a packed slot would not fit: a value beyond the layout's input
    bound, a slot layout without the headroom the caller asked for, a plaintext outside
    ``[0, n)``, or a decrypted packed plaintext whose slots do not decode (an operation exceeded
    the headroom).

    Raised instead of wrapping around modulo ``n`` or into the neighbouring slot.
    """
