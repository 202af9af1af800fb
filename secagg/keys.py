"""Key agreement (X25519 + HKDF-SHA256), share encryption (AES-256-GCM), identity signatures
(Ed25519). Everything here is a thin, checked layer over ``cryptography``.

* :func:`agree` gives both parties of a pair the same 32-byte key; ``info`` binds the key to its
  context (round, the two ids, purpose), so keys for different contexts are independent.
* :func:`seal`/:func:`open_sealed` authenticate ``aad`` (e.g. sender id, receiver id, round) and
  the ciphertext; any change or a wrong key/aad raises :class:`ShareDecryptionError`.
* :func:`verify_signature` raises :class:`SignatureError` for any failure, never returns False.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import KeyAgreementError, SecAggParameterError, ShareDecryptionError, SignatureError

__all__ = [
    "KeyPair",
    "SigningKeyPair",
    "agree",
    "seal",
    "open_sealed",
    "verify_signature",
    "PUBLIC_KEY_BYTES",
    "PRIVATE_KEY_BYTES",
    "SIGNATURE_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "sealed_size",
]

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32
SIGNATURE_BYTES = 64
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()


def _as_bytes(value: object, name: str, length: int | None = None) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if length is not None and len(value) != length:
        raise SecAggParameterError(f"{name} must be {length} bytes, got {len(value)}")
    return value


class KeyPair:
    """An X25519 key pair for pairwise key agreement."""

    __slots__ = ("_private", "_public_bytes")

    def __init__(self, private: X25519PrivateKey):
        self._private = private
        self._public_bytes = private.public_key().public_bytes(_RAW, _RAW_PUB)

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key pair from the OS CSPRNG."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> KeyPair:
        """Rebuild a key pair from its 32 raw private bytes (e.g. after Shamir reconstruction)."""
        return cls(X25519PrivateKey.from_private_bytes(_as_bytes(data, "private key", 32)))

    def public_bytes(self) -> bytes:
        """The 32-byte raw public key, to advertise."""
        return self._public_bytes

    def private_bytes(self) -> bytes:
        """The 32 raw private bytes (the secret that Bonawitz et al. secret-share for dropout
        recovery). Handle with care."""
        return self._private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)

    def __repr__(self) -> str:
        return f"KeyPair(public={self._public_bytes.hex()[:16]}...)"


def agree(private: KeyPair, peer_public: bytes, info: bytes) -> bytes:
    """Derive a 32-byte shared key: HKDF-SHA256(X25519(private, peer_public), info=info).

    Both parties get the same key when they pass the same ``info``; build ``info`` from values
    both know, in a canonical order (e.g. round id and the sorted pair of ids).

    Raises
    ------
    KeyAgreementError
        If ``peer_public`` is not a valid 32-byte X25519 public key or the exchange yields the
        all-zero shared secret (a low-order point).
    """
    if not isinstance(private, KeyPair):
        raise TypeError(f"private must be a KeyPair, got {type(private).__name__}")
    info = _as_bytes(info, "info")
    try:
        peer = X25519PublicKey.from_public_bytes(_as_bytes(peer_public, "peer_public"))
        shared = private._private.exchange(peer)
    except (ValueError, TypeError) as exc:
        raise KeyAgreementError(f"X25519 key agreement failed: {exc}") from exc
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


_PROBE_KEY: KeyPair | None = None


def validate_public_key(public: bytes) -> None:
    """Check that ``public`` is an X25519 public key that agreement can use.

    A low-order point makes every exchange yield the all-zero secret (for any private key,
    since X25519 scalars are multiples of the cofactor), so one probe exchange detects it.
    A server calls this on every advertised key, so that a client advertising such a key is
    rejected as the one at fault instead of making every honest peer fail later.

    Raises
    ------
    KeyAgreementError
        If the key is malformed or of low order.
    """
    global _PROBE_KEY
    if _PROBE_KEY is None:
        _PROBE_KEY = KeyPair.generate()
    agree(_PROBE_KEY, public, b"fortis public-key validation")


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encrypt ``plaintext`` authenticating ``aad``; returns nonce(12) || ct || tag(16).

    The nonce is random (96 bits from ``secrets``), so one key may seal many messages.
    """
    key = _as_bytes(key, "key", KEY_BYTES)
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(
        nonce, _as_bytes(plaintext, "plaintext"), _as_bytes(aad, "aad")
    )


def sealed_size(plaintext_len: int) -> int:
    """Length in bytes of :func:`seal`'s output for a plaintext of ``plaintext_len`` bytes."""
    return NONCE_BYTES + plaintext_len + TAG_BYTES


def open_sealed(key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Decrypt and authenticate the output of :func:`seal`.

    Raises
    ------
    ShareDecryptionError
        If the ciphertext is too short, was modified, or ``key``/``aad`` differ from sealing.
    """
    key = _as_bytes(key, "key", KEY_BYTES)
    ciphertext = _as_bytes(ciphertext, "ciphertext")
    aad = _as_bytes(aad, "aad")
    if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
        raise ShareDecryptionError(
            f"sealed message of {len(ciphertext)} bytes is shorter than nonce+tag "
            f"({NONCE_BYTES + TAG_BYTES})"
        )
    try:
        return AESGCM(key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise ShareDecryptionError(
            "AES-GCM authentication failed (tampered ciphertext, wrong key or wrong aad)"
        ) from exc


class SigningKeyPair:
    """An Ed25519 identity key pair (hardened mode: signed key advertisements)."""

    __slots__ = ("_private", "_public_bytes")

    def __init__(self, private: Ed25519PrivateKey):
        self._private = private
        self._public_bytes = private.public_key().public_bytes(_RAW, _RAW_PUB)

    @classmethod
    def generate(cls) -> SigningKeyPair:
        """A fresh Ed25519 key pair from the OS CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> SigningKeyPair:
        """Rebuild from the 32 raw private bytes."""
        return cls(Ed25519PrivateKey.from_private_bytes(_as_bytes(data, "private key", 32)))

    def public_bytes(self) -> bytes:
        """The 32-byte raw public verification key."""
        return self._public_bytes

    def private_bytes(self) -> bytes:
        """The 32 raw private bytes."""
        return self._private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(_as_bytes(data, "data"))

    def __repr__(self) -> str:
        return f"SigningKeyPair(public={self._public_bytes.hex()[:16]}...)"


def verify_signature(public: bytes, signature: bytes, data: bytes) -> None:
    """Check an Ed25519 signature; returns None if valid.

    Raises
    ------
    SignatureError
        If the signature does not verify, or ``public``/``signature`` are malformed.
    """
    data = _as_bytes(data, "data")
    if not isinstance(public, (bytes, bytearray, memoryview)) or len(public) != PUBLIC_KEY_BYTES:
        raise SignatureError(f"verification key must be {PUBLIC_KEY_BYTES} bytes")
    if (
        not isinstance(signature, (bytes, bytearray, memoryview))
        or len(signature) != SIGNATURE_BYTES
    ):
        raise SignatureError(f"signature must be {SIGNATURE_BYTES} bytes")
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public)).verify(bytes(signature), data)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("Ed25519 signature does not verify") from exc
