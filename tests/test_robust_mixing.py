"""NNM and bucketing: references, memory bound, and verdict mapping in the pipeline."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from test_robust_reference import ref_nnm

import robust
from robust.errors import InputShapeError, InsufficientClientsError, ParameterError


def _X(n=10, d=16, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


@pytest.mark.parametrize("n,f", [(3, 1), (10, 3), (11, 0), (12, 5)])
def test_nnm_matches_reference(n, f):
    X = _X(n=n, seed=n + f)
    np.testing.assert_allclose(robust.nnm(X, f=f), ref_nnm(X, f), rtol=1e-12, atol=1e-12)


def test_nnm_with_duplicates_and_precomputed_distances():
    X = _X(n=8, seed=1)
    X[3] = X[2]
    X[5] = X[2]
    np.testing.assert_allclose(robust.nnm(X, f=2), ref_nnm(X, 2), rtol=1e-12, atol=1e-12)
    D = robust.pairwise_sq_distances(X)
    np.testing.assert_allclose(robust.nnm(X, f=2, distances=D), robust.nnm(X, f=2))


def test_nnm_memory_is_linear_in_n_times_d():
    n, f, d = 40, 10, 100_000
    X = _X(n=n, d=d, seed=2, dtype=np.float32)  # 16 MB; an (n, n-f, d) gather would be 480 MB
    tracemalloc.start()
    try:
        Y = robust.nnm(X, f=f)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert Y.shape == X.shape and Y.dtype == np.float32
    assert peak < 3 * X.nbytes, f"peak {peak / 1e6:.0f} MB"


def test_nnm_errors():
    with pytest.raises(InsufficientClientsError, match=r"nnm needs n >= 2f\+1 = 7, got n=6"):
        robust.nnm(_X(n=6), f=3)
    X = _X()
    X[0, 0] = np.nan
    with pytest.raises(InputShapeError, match="non-finite"):
        robust.nnm(X, f=1)


def test_bucketing_matches_reference_and_is_seeded():
    X = _X(n=11, seed=3)
    Y, buckets = robust.bucketing(X, 3, seed=5, return_buckets=True)
    assert [len(b) for b in buckets] == [3, 3, 3, 2]
    assert sorted(np.concatenate(buckets).tolist()) == list(range(11))
    perm = np.random.default_rng(5).permutation(11)
    for b, start in enumerate(range(0, 11, 3)):
        np.testing.assert_allclose(Y[b], X[perm[start : start + 3]].mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(robust.bucketing(X, 3, np.random.default_rng(5)), Y)
    np.testing.assert_allclose(robust.bucketing(X, 1, seed=0).sum(0), X.sum(0), rtol=1e-12)
    with pytest.raises(ParameterError, match="s must be"):
        robust.bucketing(X, 0)


def test_pipeline_verdicts_follow_buckets():
    X = _X(n=14, d=10, seed=4)
    X[:2] += 100.0  # two Byzantine clients; 7 buckets of 2 for krum with f=2
    res = robust.aggregate_detailed(X, "krum", f=2, pre=[("bucketing", {"s": 2, "seed": 7})])
    stage = next(s for s in res.stages if s["stage"] == "bucketing")
    buckets = stage["buckets"]
    assert sorted(sum(buckets, [])) == list(range(14))
    kept = [b for b in buckets if all(res.accepted[c] for c in b)]
    assert len(kept) == 1  # krum keeps exactly one bucket
    for b in buckets:
        assert len({bool(res.accepted[c]) for c in b}) == 1  # a bucket's clients share a verdict
    assert not res.accepted[:2].any()


def test_pipeline_nnm_keeps_client_rows():
    X = _X(n=9, d=6, seed=5)
    X[0] += 50
    res = robust.aggregate_detailed(X, "multi_krum", f=2, pre=["nnm"])
    mixed = robust.nnm(X, f=2)
    np.testing.assert_allclose(res.vector, mixed[res.accepted].mean(0), rtol=1e-12)
    assert [s["stage"] for s in res.stages] == ["nnm", "multi_krum"]
