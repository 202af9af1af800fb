"""Geometric median, RFA, centered clipping, clip / norm filter and the sign vote."""

from __future__ import annotations

import numpy as np
import pytest
from test_robust_reference import ref_centered_clipping, ref_sign_vote, ref_weiszfeld

import robust
from robust.errors import (
    AggregationError,
    InputShapeError,
    InsufficientClientsError,
    ParameterError,
)


def _X(n=9, d=12, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


@pytest.mark.parametrize("seed", range(4))
def test_geometric_median_matches_reference(seed):
    X = _X(seed=seed)
    z, info = robust.geometric_median(X, tol=1e-10, return_info=True)
    assert info["converged"] and info["iterations"] >= 1
    np.testing.assert_allclose(z, ref_weiszfeld(X), atol=1e-7)
    np.testing.assert_allclose(info["coefficients"].sum(), 1.0)
    # first-order optimality: the unit vectors towards z sum to ~0
    g = sum((z - x) / np.linalg.norm(z - x) for x in X)
    assert np.linalg.norm(g) < 1e-5


def test_geometric_median_weights_and_duplicates():
    X = _X(seed=4)
    w = np.array([0, 1, 2, 1, 1, 3, 1, 0, 1], dtype=float)
    z = robust.geometric_median(X, w, tol=1e-10)
    np.testing.assert_allclose(z, ref_weiszfeld(X, w), atol=1e-6)
    same = np.tile(X[0], (5, 1))
    np.testing.assert_allclose(robust.geometric_median(same), X[0], atol=1e-12)
    # majority at one point: the median is that point (smoothing ν keeps it finite)
    Y = np.vstack([np.tile(X[0], (5, 1)), X[1:4]])
    np.testing.assert_allclose(robust.geometric_median(Y), X[0], atol=1e-6)


def test_geometric_median_resists_huge_and_non_finite_rows():
    X = _X(n=11, d=40, seed=5, dtype=np.float32)
    X[0] = 1e30
    X[1, 2] = np.nan
    z, info = robust.geometric_median(X, return_info=True)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert info["converged"]
    # the far row pulls with unit force only: same median as the float64 reference on the
    # finite rows, and within ~1/(n-2) of the honest-only median
    np.testing.assert_allclose(z, ref_weiszfeld(np.delete(X, 1, axis=0)), atol=1e-4)
    assert np.linalg.norm(z - ref_weiszfeld(X[2:])) < 1.0


def test_geometric_median_with_two_opposite_1e30_rows_does_not_stop_early():
    # Found by test_permutation_invariance. Started from the mean, the iterate passes
    # through a state where each far row keeps a ~1e-16 coefficient; the quadratic form of
    # the step then cancels to exactly 0 in float64, and the iteration used to stop there
    # at 0.0699 in one row order (0.1049, the median of the three honest values, in the
    # other). The step is now bounded above by its rounding error, so it goes on.
    X = np.array([[1e30], [-9.12755541e29], [0.640422642], [0.104900114], [-0.535669386]])
    for dtype in (np.float32, np.float64):
        for perm in ([0, 1, 2, 3, 4], [2, 4, 3, 0, 1], [3, 2, 1, 0, 4]):
            z, info = robust.geometric_median(X[perm].astype(dtype), tol=1e-10, return_info=True)
            assert info["converged"]
            np.testing.assert_allclose(z, [0.104900114], rtol=1e-6)


def test_geometric_median_from_distances_or_gram():
    X = _X(seed=6)
    base = robust.geometric_median(X)
    np.testing.assert_allclose(robust.geometric_median(X, gram=robust.gram(X)), base, atol=1e-9)
    D = robust.pairwise_sq_distances(X)
    np.testing.assert_allclose(robust.geometric_median(X, distances=D), base, atol=1e-7)
    alpha, info = robust.weiszfeld_coefficients(D, tol=1e-10)
    np.testing.assert_allclose(alpha @ X, ref_weiszfeld(X), atol=1e-7)
    np.testing.assert_allclose(info["distances"], np.linalg.norm(X - alpha @ X, axis=1), atol=1e-7)


def test_rfa_agrees_with_geometric_median_and_uses_only_weighted_means():
    X = _X(n=10, d=20, seed=7)
    X[0] *= 50
    z, info = robust.rfa(X, tol=1e-9, return_info=True)
    assert info["converged"]
    np.testing.assert_allclose(z, robust.geometric_median(X, tol=1e-10), atol=1e-6)

    calls = []

    def weighted_mean(c):
        calls.append(np.array(c))
        return (c @ X) / c.sum()

    def distances_to(v):
        return np.linalg.norm(X - v, axis=1)

    z2, info2 = robust.rfa(
        None,
        n=10,
        weighted_mean=weighted_mean,
        distances_to=distances_to,
        tol=1e-9,
        return_info=True,
    )
    np.testing.assert_allclose(z2, z, atol=1e-9)
    assert len(calls) == info2["weighted_mean_calls"] == info2["iterations"] + 1


def test_rfa_errors():
    with pytest.raises(InputShapeError, match="n= or weights="):
        robust.rfa(None, weighted_mean=lambda c: c, distances_to=lambda v: v)
    with pytest.raises(InputShapeError, match="weighted_mean="):
        robust.rfa(None, n=3)
    with pytest.raises(AggregationError, match="distances_to"):
        robust.rfa(None, n=3, weighted_mean=lambda c: np.ones(2), distances_to=lambda v: np.ones(2))
    with pytest.raises(AggregationError, match="finite vector"):
        robust.rfa(
            None, n=3, weighted_mean=lambda c: np.full(2, np.nan), distances_to=lambda v: np.ones(3)
        )
    with pytest.raises(ParameterError, match="nu"):
        robust.rfa(_X(), nu=0)


@pytest.mark.parametrize("iters,tau", [(1, 0.5), (3, 1.0), (5, 100.0)])
def test_centered_clipping_matches_reference(iters, tau):
    X = _X(seed=8)
    X[0] *= 30
    v0 = np.full(12, 0.1)
    out = robust.centered_clipping(X, v0, tau, iters)
    np.testing.assert_allclose(
        out, ref_centered_clipping(X, v0, tau, iters), rtol=1e-10, atol=1e-12
    )


def test_centered_clipping_bounds_influence_and_validates():
    X = _X(n=10, d=5, seed=9, dtype=np.float32)
    X[0] = 1e30
    X[1] = np.nan
    center = np.zeros(5)
    out = robust.centered_clipping(X, center, tau=1.0, iters=1)
    # each row moves the centre by at most tau / n'
    assert np.linalg.norm(out.astype(np.float64) - center) <= 1.0 + 1e-6
    assert out.dtype == np.float32
    with pytest.raises(ParameterError, match="tau"):
        robust.centered_clipping(X, center, tau=0)
    with pytest.raises(ParameterError, match="iters"):
        robust.centered_clipping(X, center, tau=1, iters=0)
    with pytest.raises(InputShapeError, match="center"):
        robust.centered_clipping(X, np.zeros(4), tau=1)
    with pytest.raises(InputShapeError, match="center must be finite"):
        robust.centered_clipping(X, np.full(5, np.nan), tau=1)


def test_clip_and_norm_filter():
    X = _X(n=6, d=8, seed=10, dtype=np.float32)
    X[2] *= 100
    before = X.copy()
    Y = robust.clip(X, 2.0)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    expected = X * np.minimum(1, 2.0 / norms)[:, None]
    np.testing.assert_allclose(Y, expected, rtol=1e-6)
    assert (np.linalg.norm(Y.astype(np.float64), axis=1) <= 2.0 * (1 + 1e-6)).all()
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(robust.norm_filter(X, 2.0), norms <= 2.0)
    np.testing.assert_array_equal(robust.clip(np.zeros((2, 3)), 1.0), 0)
    with pytest.raises(ParameterError, match="max_norm"):
        robust.clip(X, -1)
    X[0, 0] = np.inf
    with pytest.raises(InputShapeError, match=r"rows \[0\]"):
        robust.clip(X, 1.0)


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.9])
def test_sign_vote_matches_reference(threshold):
    rng = np.random.default_rng(11)
    X = rng.choice([-1.0, 0.0, 2.0], size=(10, 300))
    np.testing.assert_array_equal(robust.sign_vote(X, threshold), ref_sign_vote(X, threshold))


def test_sign_vote_super_majority_and_scale():
    X = np.array([[1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(robust.sign_vote(X), [1, 1, -1])
    np.testing.assert_array_equal(robust.sign_vote(X, threshold=0.75), [1, 0, 0])
    np.testing.assert_array_equal(robust.sign_vote(X, scale=0.5), [0.5, 0.5, -0.5])
    out = robust.sign_vote(X * 3, scale="median_norm")
    np.testing.assert_allclose(np.linalg.norm(out), np.sqrt(27))
    with pytest.raises(ParameterError, match="threshold"):
        robust.sign_vote(X, threshold=0.4)
    with pytest.raises(ParameterError, match="scale"):
        robust.sign_vote(X, scale=-1)
    with pytest.raises(InsufficientClientsError):
        robust.sign_vote(X, f=2)


def test_sign_vote_byzantine_minority_cannot_flip_unanimous_honest():
    rng = np.random.default_rng(12)
    honest = np.abs(rng.standard_normal((7, 50)))  # all honest vote +
    byz = -1e30 * np.ones((3, 50))
    out = robust.sign_vote(np.vstack([honest, byz]), threshold=0.6)
    np.testing.assert_array_equal(out, 1)


def test_distance_filter_rejects_far_rows_and_respects_cap():
    X = _X(n=12, d=10, seed=13)
    X[[1, 4, 8]] += 25.0
    acc_all = robust.aggregate_detailed(X, "distance_filter").accepted
    assert np.flatnonzero(~acc_all).tolist() == [1, 4, 8]
    np.testing.assert_allclose(robust.distance_filter(X), X[acc_all].mean(0), rtol=1e-12)
    np.testing.assert_allclose(
        robust.distance_filter(X, f=0), robust.distance_filter(X), rtol=1e-12
    )
    capped = robust.aggregate_detailed(X, "distance_filter", f=2)
    assert (~capped.accepted).sum() == 2 and capped.verdicts[1] in (
        "accepted",
        "rejected:distance_filter",
    )
    D = robust.pairwise_sq_distances(X)
    acc, r = robust.distance_filter_select(D)
    np.testing.assert_array_equal(acc, acc_all)
    assert r[[1, 4, 8]].min() > r[acc].max()
    acc_abs, _ = robust.distance_filter_select(D, max_distance=1e9)
    assert acc_abs.all()
    with pytest.raises(InsufficientClientsError, match="rejected all"):
        robust.distance_filter(X, max_distance=0.0)
