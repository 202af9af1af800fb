"""PRG mask expansion: determinism, independence per seed, uniformity, in-place arithmetic."""

from __future__ import annotations

import math
import secrets

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg import FixedPointEncoder, MaskExpander, mask_input


def _chi2_critical(df: int, z: float = 6.0) -> float:
    """Upper critical value of chi-square(df) at ~z sigma (Wilson-Hilferty approximation)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_deterministic_per_seed_and_matches_aes_ctr_keystream():
    seed = bytes(range(32))
    a = MaskExpander(1000, 32)
    first = a.expand(seed).copy()
    np.testing.assert_array_equal(MaskExpander(1000, 32).expand(seed), first)
    # independent reference: allocating AES-256-CTR over zeros, zero IV, little-endian words
    ref = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(4000))
    np.testing.assert_array_equal(first, np.frombuffer(ref, dtype="<u4"))
    # a shorter vector is a prefix of the longer one
    np.testing.assert_array_equal(MaskExpander(10, 32).expand(seed), first[:10])


def test_distinct_seeds_give_distinct_masks():
    exp = MaskExpander(4096, 64)
    masks = [exp.expand(secrets.token_bytes(32)).copy() for _ in range(8)]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            # independent uniform 64-bit words agree with probability 2**-64 per coordinate
            assert np.count_nonzero(masks[i] == masks[j]) == 0


@pytest.mark.parametrize("bits", [2, 7, 20, 31, 33, 50])
def test_top_bits_masked(bits):
    seed = secrets.token_bytes(32)
    exp = MaskExpander(5000, bits)
    m = exp.expand(seed).copy()
    assert int(m.max()) < 2**bits
    width = 32 if bits <= 32 else 64
    raw = MaskExpander(5000, width).expand(seed)
    np.testing.assert_array_equal(m, raw & ((1 << bits) - 1))
    # the top allowed bit is set about half the time
    assert 0.45 < np.mean((m >> (bits - 1)) & 1) < 0.55


def test_returned_array_is_reused_buffer():
    exp = MaskExpander(16, 32)
    a = exp.expand(b"a" * 32)
    kept = a.copy()
    b = exp.expand(b"b" * 32)
    assert np.shares_memory(a, b)
    assert not np.array_equal(a, kept)  # overwritten by the next call, as documented


@pytest.mark.parametrize("bits", [32, 17, 64])
def test_add_into_then_subtract_restores(bits):
    exp = MaskExpander(1000, bits)
    dtype = np.uint32 if bits <= 32 else np.uint64
    rng = np.random.default_rng(0)
    acc = rng.integers(0, 2**bits, 1000, dtype=np.uint64).astype(dtype)
    orig = acc.copy()
    seed = secrets.token_bytes(32)
    exp.add_into(acc, seed, +1)
    expected = (orig.astype(object) + exp.expand(seed).astype(object)) % (1 << bits)
    np.testing.assert_array_equal(acc, expected.astype(dtype))
    exp.add_into(acc, seed, -1)
    np.testing.assert_array_equal(acc, orig)


def test_validation():
    exp = MaskExpander(8, 32)
    with pytest.raises(ValueError, match="32 bytes"):
        exp.expand(b"x" * 16)
    with pytest.raises(TypeError):
        exp.expand("x" * 32)
    with pytest.raises(ValueError, match="uint32"):
        exp.add_into(np.zeros(8, np.uint64), b"x" * 32, 1)
    with pytest.raises(ValueError, match=r"\(8,\)"):
        exp.add_into(np.zeros(9, np.uint32), b"x" * 32, 1)
    with pytest.raises(ValueError, match="sign"):
        exp.add_into(np.zeros(8, np.uint32), b"x" * 32, 2)
    with pytest.raises(ValueError):
        MaskExpander(-1, 32)
    with pytest.raises(ValueError):
        MaskExpander(8, 65)
    assert MaskExpander(0, 32).expand(b"x" * 32).shape == (0,)


def test_mask_bytes_and_bits_uniform_chi_square():
    m = MaskExpander(1 << 18, 32).expand(secrets.token_bytes(32))
    counts = np.bincount(m.view(np.uint8), minlength=256)
    expected = m.nbytes / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < _chi2_critical(255)
    # every one of the 32 bit positions is set with probability 1/2
    ones = np.array([np.count_nonzero((m >> np.uint32(b)) & np.uint32(1)) for b in range(32)])
    z = (ones - m.size / 2) / math.sqrt(m.size / 4)
    assert np.abs(z).max() < 6


def test_masked_input_is_uniform_whatever_the_input():
    """Server's view of one client: y = x + PRG(b) (+ pairwise) is uniform for x = 0 and for
    x = max; a chi-square on the top byte and a two-sample comparison both pass."""
    d, bits = 1 << 17, 32
    enc = FixedPointEncoder(1.0, 10, bits)
    rng = np.random.default_rng(0)
    views = []
    for value in (0.0, 1.0):
        x = enc.encode(np.full(d, value), rng)
        y = mask_input(x, 1, secrets.token_bytes(32), {2: secrets.token_bytes(32)}, bits)
        top = (y >> np.uint32(24)).astype(np.int64)
        counts = np.bincount(top, minlength=256)
        chi2 = float(((counts - d / 256) ** 2 / (d / 256)).sum())
        assert chi2 < _chi2_critical(255)
        views.append(counts)
    # homogeneity test between the two views (2 x 256 contingency table)
    table = np.array(views, dtype=float)
    expected = table.sum(0, keepdims=True) * table.sum(1, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    assert chi2 < _chi2_critical(255)
