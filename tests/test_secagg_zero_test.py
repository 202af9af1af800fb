"""The blinded zero test (secagg.zero_test): equal sums pass, a lying sketch fails, K learns
one bit."""

from __future__ import annotations

import numpy as np
import pytest

from secagg.errors import PaillierOverflowError
from secagg.masked_distance import DistanceLayouts
from secagg.paillier_private import generate_paillier_keypair
from secagg.sketch import sketch
from secagg.zero_test import keyholder_is_zero, server_blinded_difference

K = 32


@pytest.fixture(scope="module")
def keys():
    return generate_paillier_keypair(1024, allow_insecure=True)


def _round(keys, n=6, d=500, liar=None, lie=None, seed=0):
    pub, priv = keys
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2**12), 2**12, (n, d))
    proj = bytes(range(32))
    sketches = [sketch(row, proj, K) for row in x]
    if liar is not None:
        sketches[liar] = sketch(lie, proj, K)  # a benign sketch for a different (masked) input
    bound = int(max(np.abs(s).max() for s in sketches)) + 1
    lay = DistanceLayouts(pub, K, bound).row
    rows = [[pub.encrypt(m) for m in lay.pack(s)] for s in sketches]
    expected = sketch(x.sum(axis=0), proj, K, wide=True)
    folded = server_blinded_difference(pub, rows, expected, lay)
    return keyholder_is_zero(priv, folded), priv.decrypt(folded)


def test_honest_sums_pass(keys):
    for seed in range(5):
        ok, plain = _round(keys, seed=seed)
        assert ok and plain == 0


def test_a_lying_sketch_fails_and_k_sees_a_uniform_value(keys):
    rng = np.random.default_rng(9)
    values = []
    for trial in range(30):
        benign = rng.integers(-(2**12), 2**12, 500)
        ok, plain = _round(keys, liar=trial % 6, lie=benign, seed=100 + trial)
        assert not ok
        values.append(int(plain))
    # the non-zero value K decrypts is blinded: spread over [0, n), no two alike
    n = int(keys[0].n)
    assert len(set(values)) == len(values)
    assert min(values) < n // 4 and max(values) > 3 * n // 4


def test_a_one_unit_lie_is_caught(keys):
    pub, priv = keys
    rng = np.random.default_rng(1)
    x = rng.integers(-100, 100, (4, 300))
    proj = bytes(32)
    sketches = [sketch(row, proj, K) for row in x]
    sketches[2] = sketches[2].copy()
    sketches[2][5] += 1
    lay = DistanceLayouts(pub, K, 10**6).row
    rows = [[pub.encrypt(m) for m in lay.pack(s)] for s in sketches]
    folded = server_blinded_difference(pub, rows, sketch(x.sum(axis=0), proj, K, wide=True), lay)
    assert not keyholder_is_zero(priv, folded)


def test_sum_beyond_the_layout_is_refused(keys):
    pub, _ = keys
    lay = DistanceLayouts(pub, K, 10).row
    rows = [[pub.encrypt(0)] for _ in range(3)]
    with pytest.raises(PaillierOverflowError):
        server_blinded_difference(pub, rows, [lay.max_abs + 1] + [0] * (K - 1), lay)
