"""Key agreement, AES-GCM sealing, Ed25519 signatures."""

from __future__ import annotations

import pytest

from secagg import (
    KeyAgreementError,
    KeyPair,
    SecAggError,
    ShareDecryptionError,
    SignatureError,
    SigningKeyPair,
    agree,
    open_sealed,
    reconstruct,
    seal,
    split,
    verify_signature,
)
from secagg.keys import sealed_size


def test_agree_is_symmetric_and_context_bound():
    a, b, c = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    assert len(a.public_bytes()) == 32
    kab = agree(a, b.public_bytes(), b"round=1|1,2")
    assert len(kab) == 32
    assert kab == agree(b, a.public_bytes(), b"round=1|1,2")
    assert kab != agree(a, b.public_bytes(), b"round=2|1,2")
    assert kab != agree(a, c.public_bytes(), b"round=1|1,2")


def test_private_key_recovery_gives_same_pairwise_key():
    """The dropout-recovery path: Shamir-share a's private key, reconstruct it, recompute the
    key a shared with b."""
    a, b = KeyPair.generate(), KeyPair.generate()
    shares = split(a.private_bytes(), 3, range(1, 6))
    rebuilt = KeyPair.from_private_bytes(reconstruct({x: shares[x] for x in (1, 4, 5)}, 3))
    assert rebuilt.public_bytes() == a.public_bytes()
    assert agree(rebuilt, b.public_bytes(), b"ctx") == agree(b, a.public_bytes(), b"ctx")


@pytest.mark.parametrize("peer", [b"\x00" * 32, b"\x01" + b"\x00" * 31, b"\x01" * 31, b""])
def test_agree_rejects_bad_peer_keys(peer):
    with pytest.raises(KeyAgreementError):
        agree(KeyPair.generate(), peer, b"ctx")


def test_seal_open_round_trip_and_nonce_randomness():
    key = bytes(range(32))
    ct = seal(key, b"share bytes", b"from=1|to=2|round=3")
    assert len(ct) == sealed_size(len(b"share bytes"))
    assert open_sealed(key, ct, b"from=1|to=2|round=3") == b"share bytes"
    assert seal(key, b"share bytes", b"aad") != seal(key, b"share bytes", b"aad")
    assert open_sealed(key, seal(key, b"", b""), b"") == b""


def test_tampering_wrong_key_or_aad_raises():
    key, aad = bytes(range(32)), b"from=1|to=2"
    ct = seal(key, b"secret share", aad)
    for pos in (0, 11, 12, len(ct) - 17, len(ct) - 1):  # nonce, ciphertext, tag
        bad = bytearray(ct)
        bad[pos] ^= 0x01
        with pytest.raises(ShareDecryptionError):
            open_sealed(key, bytes(bad), aad)
    with pytest.raises(ShareDecryptionError):
        open_sealed(key, ct, b"from=1|to=3")
    with pytest.raises(ShareDecryptionError):
        open_sealed(bytes(32), ct, aad)
    with pytest.raises(ShareDecryptionError, match="shorter"):
        open_sealed(key, ct[:27], aad)
    with pytest.raises(ShareDecryptionError):
        open_sealed(key, ct[:-1], aad)
    assert issubclass(ShareDecryptionError, SecAggError)
    with pytest.raises(ValueError):
        seal(b"short", b"x", b"")


def test_signatures_verify_and_reject():
    sk = SigningKeyPair.generate()
    msg = b"round=1|id=4|pk=" + KeyPair.generate().public_bytes()
    sig = sk.sign(msg)
    assert len(sig) == 64 and len(sk.public_bytes()) == 32
    verify_signature(sk.public_bytes(), sig, msg)  # no exception
    with pytest.raises(SignatureError):
        verify_signature(sk.public_bytes(), sig, msg + b"!")
    with pytest.raises(SignatureError):
        verify_signature(SigningKeyPair.generate().public_bytes(), sig, msg)
    bad = bytearray(sig)
    bad[5] ^= 0x80
    with pytest.raises(SignatureError):
        verify_signature(sk.public_bytes(), bytes(bad), msg)
    with pytest.raises(SignatureError, match="64 bytes"):
        verify_signature(sk.public_bytes(), sig[:-1], msg)
    with pytest.raises(SignatureError, match="32 bytes"):
        verify_signature(b"\x00" * 31, sig, msg)
    again = SigningKeyPair.from_private_bytes(sk.private_bytes())
    assert again.public_bytes() == sk.public_bytes()
    verify_signature(sk.public_bytes(), again.sign(msg), msg)
