"""Krum, Multi-Krum and Bulyan against loop references, incl. distance-only use."""

from __future__ import annotations

import numpy as np
import pytest
from test_robust_reference import ref_bulyan, ref_krum, ref_krum_scores, ref_multi_krum, ref_sqdist

import robust
from robust.errors import (
    DistanceOnlyError,
    InputShapeError,
    InsufficientClientsError,
    ParameterError,
)


def _cloud(n, d, n_byz=0, seed=0, scale=100.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X[:n_byz] = scale + rng.standard_normal((n_byz, d))
    return X.astype(dtype)


@pytest.mark.parametrize("n,f,seed", [(5, 1, 0), (9, 3, 1), (12, 2, 2), (20, 5, 3)])
def test_krum_scores_and_selection_match_reference(n, f, seed):
    X = _cloud(n, 13, n_byz=f, seed=seed)
    np.testing.assert_allclose(
        robust.krum_scores(ref_sqdist(X), f=f), ref_krum_scores(X, f), rtol=1e-9
    )
    i = ref_krum(X, f)
    np.testing.assert_array_equal(robust.krum(X, f=f), X[i])
    assert i >= f  # never a Byzantine row here


def test_krum_neighbours_override():
    X = _cloud(10, 6, seed=4)
    for k in (1, 3, 9):
        np.testing.assert_array_equal(robust.krum(X, f=2, neighbours=k), X[ref_krum(X, 2, k)])
    with pytest.raises(ParameterError, match="neighbours"):
        robust.krum(X, f=2, neighbours=10)


@pytest.mark.parametrize("m", [None, 1, 4, 9])
def test_multi_krum_matches_reference(m):
    X = _cloud(11, 8, n_byz=2, seed=5)
    ref, sel = ref_multi_krum(X, 2, m)
    np.testing.assert_allclose(robust.multi_krum(X, f=2, m=m), ref, rtol=1e-12)
    idx, _ = robust.multi_krum_select(ref_sqdist(X), f=2, m=m)
    assert idx.tolist() == sel


def test_multi_krum_trusted_weights():
    X = _cloud(9, 5, seed=6)
    w = np.arange(1, 10, dtype=float)
    _, sel = ref_multi_krum(X, 1)
    expected = (w[sel] @ X[sel]) / w[sel].sum()
    np.testing.assert_allclose(robust.multi_krum(X, f=1, weights=w), expected, rtol=1e-12)


# n <= 6f uses the direct window sum, larger n the inside-out partial sums
@pytest.mark.parametrize(
    "n,f,seed", [(3, 0, 0), (7, 1, 1), (11, 2, 2), (15, 3, 3), (16, 3, 4), (20, 2, 5), (27, 4, 6)]
)
def test_bulyan_matches_reference(n, f, seed):
    X = _cloud(n, 17, n_byz=f, seed=seed)
    ref, chosen = ref_bulyan(X, f)
    np.testing.assert_allclose(robust.bulyan(X, f=f), ref, rtol=1e-12, atol=1e-12)
    res = robust.aggregate_detailed(X, "bulyan", f=f)
    assert sorted(res.info["selected"]) == chosen
    assert res.accepted.sum() == n - 2 * f


def test_bulyan_ties_and_duplicates():
    rng = np.random.default_rng(7)
    for n in (11, 20):
        X = rng.integers(-3, 4, size=(n, 40)).astype(np.float64)
        X[5] = X[4]
        ref, _ = ref_bulyan(X, 2)
        np.testing.assert_allclose(robust.bulyan(X, f=2), ref, rtol=1e-12)


def test_bulyan_bound_message():
    with pytest.raises(
        InsufficientClientsError, match=r"bulyan needs n >= 4f\+3 = 11, got n=9 \(f=2\)"
    ):
        robust.bulyan(np.zeros((9, 3)), f=2)
    with pytest.raises(InsufficientClientsError, match=r"krum needs n >= 2f\+3 = 7, got n=6"):
        robust.krum(np.zeros((6, 3)), f=2)
    with pytest.raises(InsufficientClientsError, match=r"multi_krum needs n >= 2f\+3"):
        robust.multi_krum(np.zeros((4, 3)), f=1)


def test_huge_and_non_finite_outliers():
    X = _cloud(15, 30, seed=8, dtype=np.float32)
    X[0] = 1e30
    X[1, 5] = np.nan
    X[2] = -np.inf
    honest = X[3:]
    # three Byzantine rows, f = 3: two are removed as non-finite, the rules run with f' = 1
    for out in (robust.krum(X, f=3), robust.multi_krum(X, f=3), robust.bulyan(X, f=3)):
        assert np.isfinite(out).all() and out.dtype == np.float32
        assert (out >= honest.min(0) - 1e-5).all() and (out <= honest.max(0) + 1e-5).all()


def test_precomputed_distances_and_gram():
    X = _cloud(10, 12, n_byz=2, seed=9)
    D = ref_sqdist(X)
    G = robust.gram(X)
    base = robust.multi_krum(X, f=2)
    np.testing.assert_allclose(robust.multi_krum(X, f=2, distances=D), base)
    np.testing.assert_allclose(robust.multi_krum(X, f=2, gram=G), base)
    np.testing.assert_allclose(robust.krum(X, f=2, distances=D), robust.krum(X, f=2))
    np.testing.assert_allclose(robust.bulyan(X, f=1, gram=G), robust.bulyan(X, f=1))
    with pytest.raises(InputShapeError, match="either distances= or gram="):
        robust.krum(X, f=2, distances=D, gram=G)
    with pytest.raises(InputShapeError, match=r"\(10, 10\)"):
        robust.krum(X, f=2, distances=D[:9, :9])
    with pytest.raises(InputShapeError, match="symmetric"):
        robust.krum(X, f=2, distances=D + np.triu(np.ones((10, 10)), 1))
    with pytest.raises(InputShapeError, match="zero diagonal"):
        robust.krum(X, f=2, distances=D + np.eye(10))


def test_distance_only_mode_returns_selected_set():
    X = _cloud(10, 12, n_byz=2, seed=10)
    D = ref_sqdist(X)
    i, scores = robust.krum_select(D, f=2)
    assert i == ref_krum(X, 2)
    res = robust.aggregate_detailed(None, "krum", f=2, distances=D)
    assert res.vector is None and res.accepted_indices.tolist() == [i]
    assert res.verdicts[0] == "rejected:krum" and res.verdicts[i] == "accepted"
    res = robust.aggregate_detailed(None, "multi_krum", f=2, distances=D)
    # the invariant the secure path relies on: aggregate = mean of the accepted rows
    np.testing.assert_allclose(X[res.accepted].mean(0), robust.multi_krum(X, f=2))
    with pytest.raises(DistanceOnlyError, match="krum_select"):
        robust.krum(None, f=2, distances=D)
    with pytest.raises(DistanceOnlyError, match="multi_krum_select"):
        robust.multi_krum(None, f=2, distances=D)


def test_krum_after_non_finite_removal_uses_reduced_f():
    X = _cloud(9, 6, seed=11)
    bad = X.copy()
    bad[0] = np.nan
    # f=3 on 9 rows, one non-finite -> f'=2 on 8 rows: n'-f'-2 = 4 neighbours
    rest = X[1:]
    np.testing.assert_array_equal(robust.krum(bad, f=3), rest[ref_krum(rest, 2)])
