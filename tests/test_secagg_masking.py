"""Masking round trips: pairwise masks cancel, dropouts are unmasked exactly."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    FixedPointEncoder,
    KeyPair,
    agree,
    complete_graph,
    mask_input,
    pairwise_seed,
    secaggplus_graph,
    unmask_sum,
)
from secagg.masking import get_expander, self_seed_for_round, sum_masked
from secagg.prg import MaskExpander


def _pair_info(i: int, j: int, round_id: int) -> bytes:
    a, b = min(i, j), max(i, j)
    return b"test/round=%d/pair=%d,%d" % (round_id, a, b)


def _setup(graph, round_id=7):
    keys = {i: KeyPair.generate() for i in graph.ids}
    seeds = {}
    for i in graph.ids:
        for j in graph.neighbours[i]:
            k = agree(keys[i], keys[j].public_bytes(), _pair_info(i, j, round_id))
            seeds[(i, j)] = pairwise_seed(k, round_id)
    # both ends of every edge derived the same seed
    for i, j in seeds:
        assert seeds[(i, j)] == seeds[(j, i)]
    self_seeds = {i: secrets.token_bytes(32) for i in graph.ids}
    return seeds, self_seeds


def _run(graph, encoded, bits, dropped):
    seeds, self_seeds = _setup(graph)
    masked = {
        i: mask_input(
            encoded[i], i, self_seeds[i], {j: seeds[(i, j)] for j in graph.neighbours[i]}, bits
        )
        for i in graph.ids
    }
    survivors = [i for i in graph.ids if i not in dropped]
    total = sum_masked([masked[i] for i in survivors], bits)
    dropped_pairwise = {
        (i, j): seeds[(i, j)] for i in survivors for j in graph.neighbours[i] if j in dropped
    }
    out = unmask_sum(total, {i: self_seeds[i] for i in survivors}, dropped_pairwise, bits)
    return out, survivors, masked


@pytest.mark.parametrize("bits", [32, 20, 64, 40])
@pytest.mark.parametrize("kind", ["complete", "secagg+"])
def test_unmask_gives_exact_sum_of_encodings_with_dropouts(bits, kind):
    rng = np.random.default_rng(bits)
    n, d = 24, 257
    ids = list(range(3, 3 + n))
    graph = (
        complete_graph(ids) if kind == "complete" else secaggplus_graph(ids, b"s" * 32, degree=6)
    )
    enc = FixedPointEncoder(clip=1.0, n_max=n, bits=bits)
    x = {i: rng.uniform(-1, 1, d) for i in ids}
    encoded = {i: enc.encode(x[i], rng) for i in ids}
    dropped = {ids[1], ids[5], ids[17]}
    out, survivors, masked = _run(graph, encoded, bits, dropped)
    expected = enc.wrap(sum(encoded[i].astype(object) for i in survivors))
    assert out.dtype == enc.dtype
    np.testing.assert_array_equal(out, expected)
    decoded = enc.decode(out, len(survivors))
    assert np.max(np.abs(decoded - sum(x[i] for i in survivors))) < len(survivors) * enc.resolution
    # each masked input differs from its plaintext encoding
    for i in ids:
        assert not np.array_equal(masked[i], encoded[i])


def test_no_dropout_needs_only_self_seeds():
    n, d, bits = 5, 64, 32
    graph = complete_graph(range(n))
    enc = FixedPointEncoder(1.0, n, bits)
    rng = np.random.default_rng(1)
    encoded = {i: enc.encode(rng.uniform(-1, 1, d), rng) for i in range(n)}
    out, survivors, _ = _run(graph, encoded, bits, set())
    np.testing.assert_array_equal(out, enc.wrap(sum(encoded[i].astype(np.int64) for i in range(n))))


def test_wrong_seed_leaves_residue():
    """A wrong reconstructed seed does not silently give the right sum."""
    n, d, bits = 4, 128, 32
    graph = complete_graph(range(n))
    seeds, self_seeds = _setup(graph)
    enc = FixedPointEncoder(1.0, n, bits)
    rng = np.random.default_rng(2)
    encoded = {i: enc.encode(rng.uniform(-1, 1, d), rng) for i in range(n)}
    masked = [
        mask_input(
            encoded[i], i, self_seeds[i], {j: seeds[(i, j)] for j in graph.neighbours[i]}, bits
        )
        for i in range(n)
    ]
    bad = dict(self_seeds)
    bad[0] = secrets.token_bytes(32)
    out = unmask_sum(sum_masked(masked, bits), bad, {}, bits)
    assert not np.array_equal(out, enc.wrap(sum(encoded[i].astype(np.int64) for i in range(n))))


def test_mask_input_does_not_modify_input_and_validates():
    x = np.arange(10, dtype=np.uint32)
    keep = x.copy()
    seed = secrets.token_bytes(32)
    y = mask_input(x, 1, seed, {2: secrets.token_bytes(32)}, 32)
    np.testing.assert_array_equal(x, keep)
    assert y.shape == x.shape and y.dtype == np.uint32
    with pytest.raises(ValueError, match="dtype"):
        mask_input(x.astype(np.uint64), 1, seed, {}, 32)
    with pytest.raises(ValueError, match="itself"):
        mask_input(x, 1, seed, {1: seed}, 32)
    with pytest.raises(ValueError, match="reduced"):
        mask_input(np.full(3, 2**20, np.uint32), 1, seed, {}, 20)
    with pytest.raises(ValueError, match="1-D"):
        mask_input(np.zeros((2, 2), np.uint32), 1, seed, {}, 32)
    with pytest.raises(ValueError, match="32 bytes"):
        mask_input(x, 1, b"short", {}, 32)
    with pytest.raises(ValueError, match="dropped"):
        unmask_sum(x, {1: seed, 2: seed}, {(1, 2): seed}, 32)
    with pytest.raises(ValueError, match="itself"):
        unmask_sum(x, {1: seed}, {(1, 1): seed}, 32)


def test_pairwise_seed_depends_on_round_and_key():
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    assert pairwise_seed(k1, 1) == pairwise_seed(k1, 1)
    assert pairwise_seed(k1, 1) != pairwise_seed(k1, 2)
    assert pairwise_seed(k1, 1) != pairwise_seed(k2, 1)
    assert len(pairwise_seed(k1, 0)) == 32
    assert self_seed_for_round(k1, 3) != pairwise_seed(k1, 3)
    with pytest.raises(ValueError):
        pairwise_seed(b"x" * 31, 1)
    with pytest.raises(ValueError):
        pairwise_seed(k1, -1)


def test_expander_cache_reuses_buffers():
    a = get_expander(100, 32)
    assert get_expander(100, 32) is a
    assert get_expander(100, 64) is not a
    assert isinstance(a, MaskExpander)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 30),
    d=st.integers(1, 50),
    bits=st.sampled_from([8, 16, 31, 32, 33, 64]),
    data=st.data(),
)
def test_property_exact_sum_random_dropouts(n, d, bits, data):
    ids = sorted(data.draw(st.sets(st.integers(0, 1000), min_size=n, max_size=n)))
    dropped = set(data.draw(st.lists(st.sampled_from(ids), max_size=n - 1, unique=True)))
    graph = complete_graph(ids)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    modulus = 1 << bits
    dtype = np.uint32 if bits <= 32 else np.uint64
    encoded = {i: rng.integers(0, modulus, d, dtype=np.uint64).astype(dtype) for i in ids}
    out, survivors, _ = _run(graph, encoded, bits, dropped)
    expected = [sum(int(encoded[i][k]) for i in survivors) % modulus for k in range(d)]
    assert out.tolist() == expected


def test_workers_give_identical_results():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2**20, 5000, dtype=np.uint64).astype(np.uint32)
    seeds = {j: secrets.token_bytes(32) for j in range(30)}
    own = secrets.token_bytes(32)
    ref = mask_input(x, 15, own, {j: s for j, s in seeds.items() if j != 15}, 20)
    for w in (2, 3, 8):
        got = mask_input(x, 15, own, {j: s for j, s in seeds.items() if j != 15}, 20, workers=w)
        np.testing.assert_array_equal(got, ref)
    dropped = {(i, j): secrets.token_bytes(32) for i in range(10) for j in range(20, 25)}
    selfs = {i: secrets.token_bytes(32) for i in range(10)}
    ref = unmask_sum(x, selfs, dropped, 20)
    np.testing.assert_array_equal(unmask_sum(x, selfs, dropped, 20, workers=4), ref)
    with pytest.raises(ValueError, match="workers"):
        unmask_sum(x, selfs, dropped, 20, workers=0)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(4, 40), d=st.integers(1, 40), data=st.data())
def test_property_secaggplus_exact_sum_random_dropouts(n, d, data):
    """Any dropout set that leaves every dropped client's neighbours able to answer gives the
    exact sum on a SecAgg+ graph too (masks only along graph edges)."""
    ids = list(range(n))
    k = data.draw(st.sampled_from([2 * m for m in range(1, (n - 2) // 2 + 1)]))
    graph = secaggplus_graph(
        ids, data.draw(st.binary(min_size=16, max_size=16)), degree=k, threshold=1
    )
    dropped = set(data.draw(st.lists(st.sampled_from(ids), max_size=n - 1, unique=True)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    encoded = {i: rng.integers(0, 2**32, d, dtype=np.uint64).astype(np.uint32) for i in ids}
    out, survivors, _ = _run(graph, encoded, 32, dropped)
    expected = [sum(int(encoded[i][c]) for i in survivors) % 2**32 for c in range(d)]
    assert out.tolist() == expected
