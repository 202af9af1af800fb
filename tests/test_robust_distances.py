"""Precision of the pairwise distances: centring + float64 accumulation vs the naive Gram."""

from __future__ import annotations

import numpy as np
import pytest

import robust
from robust.errors import InputShapeError


def _exact(X):
    X64 = np.asarray(X, dtype=np.float64)
    n = len(X64)
    D = np.zeros((n, n))
    for i in range(n):
        diff = X64 - X64[i]
        D[i] = np.einsum("ij,ij->i", diff, diff)
    return D


def _near_duplicates(n=8, d=200_000, spread=1e-4, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d).astype(np.float32)
    return (w + spread * rng.standard_normal((n, d))).astype(np.float32)


def test_naive_float32_gram_fails_and_ours_is_precise():
    X = _near_duplicates()
    exact = _exact(X)
    off = ~np.eye(len(X), dtype=bool)
    # the naive form ‖x‖² + ‖y‖² − 2x·y in float32 on raw rows
    G = X @ X.T
    sq = np.diag(G)
    naive = sq[:, None] + sq[None, :] - 2 * G
    naive_err = np.abs(naive[off] - exact[off]) / exact[off]
    assert np.median(naive_err) > 0.5  # useless
    assert (naive[off] < 0).any()  # negative squared distances
    ours = robust.pairwise_sq_distances(X)
    err = np.abs(ours[off] - exact[off]) / exact[off]
    assert err.max() < 1e-9
    assert (np.diag(ours) == 0).all() and (ours >= 0).all()
    np.testing.assert_array_equal(ours, ours.T)


def test_far_outlier_triggers_recentring():
    # honest rows are near-duplicates; one Byzantine row at 1e30 drags the mean away
    X = _near_duplicates(n=7, d=20_000, seed=1)
    X[0] = 1e30
    exact = _exact(X)
    honest = np.ix_(range(1, 7), range(1, 7))
    off = ~np.eye(6, dtype=bool)
    mean_centred = robust.distances_from_gram(robust.gram(X, center="mean"))
    rel_mean = np.abs(mean_centred[honest][off] - exact[honest][off]) / exact[honest][off]
    assert rel_mean.max() > 0.99  # mean-centring alone loses the honest distances
    auto = robust.pairwise_sq_distances(X)
    rel = np.abs(auto[honest][off] - exact[honest][off]) / exact[honest][off]
    assert rel.max() < 1e-9
    np.testing.assert_allclose(auto[0, 1:], exact[0, 1:], rtol=1e-9)


def test_gram_center_options_give_same_distances():
    X = np.random.default_rng(2).standard_normal((6, 50))
    ref = _exact(X)
    for c in ("auto", "mean", 3, np.ones(50)):
        np.testing.assert_allclose(
            robust.distances_from_gram(robust.gram(X, center=c)), ref, rtol=1e-10, atol=1e-10
        )
    G = robust.gram(X, center="mean")
    np.testing.assert_allclose(G.sum(axis=0), 0, atol=1e-10)  # mean-centred
    np.testing.assert_allclose(
        robust.gram_from_distances(ref, 0), robust.gram(X, center=0), atol=1e-10
    )
    with pytest.raises(InputShapeError, match="center"):
        robust.gram(X, center="median")
    with pytest.raises(InputShapeError, match="row index"):
        robust.gram(X, center=6)
    with pytest.raises(InputShapeError, match=r"shape \(50,\)"):
        robust.gram(X, center=np.ones(3))


def test_sq_distances_to_is_direct():
    X = _near_duplicates(n=4, d=10_000, seed=3)
    z = X[0].astype(np.float64) + 1e-7
    np.testing.assert_allclose(
        robust.sq_distances_to(X, z), ((X.astype(np.float64) - z) ** 2).sum(1), rtol=1e-12
    )


def test_distances_from_gram_validation():
    with pytest.raises(InputShapeError, match="square"):
        robust.distances_from_gram(np.zeros((2, 3)))
    with pytest.raises(InputShapeError, match="finite"):
        robust.distances_from_gram(np.array([[0.0, np.nan], [np.nan, 0.0]]))
    with pytest.raises(InputShapeError, match="symmetric"):
        robust.distances_from_gram(np.array([[1.0, 2.0], [0.0, 1.0]]))
    D = robust.distances_from_gram(np.array([[1.0, 1.0 + 1e-17], [1.0 + 1e-17, 1.0]]))
    assert (D >= 0).all() and (np.diag(D) == 0).all()


def test_single_threaded_blas_context_restores_the_thread_count():
    from robust import _blas

    funcs = _blas._lookup()
    with _blas.single_threaded_blas() as applied:
        assert applied == (funcs is not None)
        if funcs is not None:
            assert funcs[1]() == 1
            with _blas.single_threaded_blas():  # re-entrant
                assert funcs[1]() == 1
            assert funcs[1]() == 1
    if funcs is not None:
        before = funcs[1]()
        with _blas.single_threaded_blas():
            pass
        assert funcs[1]() == before


def test_parallel_gram_equals_serial_gram(monkeypatch):
    X = _near_duplicates(n=5, d=300_000, seed=4)
    G_par = robust.gram(X, center="mean")
    monkeypatch.setenv("FORTIS_NUM_THREADS", "1")
    G_ser = robust.gram(X, center="mean")
    np.testing.assert_allclose(G_par, G_ser, rtol=1e-12, atol=1e-12 * np.abs(G_ser).max())


def _fast_distances(X, unchecked=False):
    from robust._rows import RowSet
    from robust.distances import auto_gram

    return robust.distances_from_gram(auto_gram(RowSet(X, unchecked=unchecked), fast=True))


def test_fast_float32_gram_is_precise_on_near_duplicates():
    # the rules' float32-product Gram (Krum, Multi-Krum, Bulyan, NNM): the case where the
    # naive form is useless (test above) stays within 1e-5 of the exact distances
    X = _near_duplicates()
    exact = _exact(X)
    off = ~np.eye(len(X), dtype=bool)
    fast = _fast_distances(X)
    err = np.abs(fast[off] - exact[off]) / exact[off]
    assert err.max() < 1e-5
    assert (np.diag(fast) == 0).all() and (fast >= 0).all()


def test_fast_gram_recentres_on_a_far_outlier():
    X = _near_duplicates(n=7, d=20_000, seed=1)
    X[0] = 1e15  # far, but its float32 products do not overflow
    exact = _exact(X)
    honest = np.ix_(range(1, 7), range(1, 7))
    off = ~np.eye(6, dtype=bool)
    fast = _fast_distances(X)
    rel = np.abs(fast[honest][off] - exact[honest][off]) / exact[honest][off]
    assert rel.max() < 1e-5
    np.testing.assert_allclose(fast[0, 1:], exact[0, 1:], rtol=1e-5)


def test_fast_gram_detects_non_finite_rows_of_an_unchecked_set():
    from robust._rows import NonFiniteSeen

    X = _near_duplicates(n=5, d=1000, seed=2)
    X[3, 17] = np.nan
    with pytest.raises(NonFiniteSeen):
        _fast_distances(X, unchecked=True)


def test_precomputed_matrices_are_restricted_to_the_finite_rows_the_same_way_everywhere():
    # one helper (robust.distances.given_for_rows) serves every rule and the pipeline
    rng = np.random.default_rng(9)
    X = rng.standard_normal((9, 5))
    D = robust.pairwise_sq_distances(X)
    G = robust.gram(X)
    X[2, 1] = np.nan
    D[2, :] = D[:, 2] = np.nan  # the non-finite row's distances are never read
    G[2, :] = G[:, 2] = np.nan
    clean = np.delete(X, 2, axis=0)
    calls = [
        (lambda **kw: robust.krum(X, f=2, **kw), robust.krum(clean, f=1)),
        (lambda **kw: robust.multi_krum(X, f=2, **kw), robust.multi_krum(clean, f=1)),
        (lambda **kw: robust.bulyan(X, f=1, **kw), robust.bulyan(clean, f=0)),
        (lambda **kw: robust.geometric_median(X, f=1, **kw), robust.geometric_median(clean)),
        (lambda **kw: robust.distance_filter(X, **kw), robust.distance_filter(clean)),
        (lambda **kw: robust.aggregate(X, "krum", f=2, **kw), robust.krum(clean, f=1)),
    ]
    for call, want in calls:
        for given in ({"distances": D}, {"gram": G}):
            np.testing.assert_allclose(call(**given), want, rtol=1e-6, atol=1e-9)
        with pytest.raises(InputShapeError, match=r"distances must be \(9, 9\) to match X"):
            call(distances=D[:8, :8])
        with pytest.raises(InputShapeError, match="not both"):
            call(distances=D, gram=G)
