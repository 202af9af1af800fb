"""mean / median / trimmed_mean against loop references, on random and adversarial inputs."""

from __future__ import annotations

import numpy as np
import pytest
from test_robust_reference import ref_median, ref_trimmed_mean

import robust
from robust.errors import InputShapeError, InsufficientClientsError, ParameterError, WeightsError


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 11])
def test_median_matches_reference_random(dtype, n):
    X = _rng(n).standard_normal((n, 37)).astype(dtype)
    out = robust.median(X)
    assert out.dtype == dtype and out.shape == (37,)
    np.testing.assert_allclose(out, ref_median(X), rtol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("n,f", [(3, 1), (7, 2), (10, 3), (10, 0), (12, 5)])
def test_trimmed_mean_matches_reference_random(n, f):
    X = _rng(n + f).standard_normal((n, 41))
    np.testing.assert_allclose(robust.trimmed_mean(X, f=f), ref_trimmed_mean(X, f), rtol=1e-12)


def test_ties_and_duplicates():
    rng = _rng(3)
    X = rng.integers(-2, 3, size=(9, 50)).astype(np.float32)  # many ties
    X[4] = X[3]  # duplicate rows
    np.testing.assert_allclose(robust.median(X), ref_median(X), rtol=0)
    for f in range(0, 5):
        np.testing.assert_allclose(robust.trimmed_mean(X, f=f), ref_trimmed_mean(X, f), rtol=1e-6)
    same = np.tile(rng.standard_normal(13), (6, 1))
    np.testing.assert_array_equal(robust.median(same), same[0])
    np.testing.assert_allclose(robust.trimmed_mean(same, f=2), same[0], rtol=1e-15)


def test_many_chunks_and_threads_match_reference():
    # d spans many column chunks, so the threaded chunk loop is exercised
    X = _rng(4).standard_normal((7, 60_001)).astype(np.float32)
    np.testing.assert_allclose(robust.median(X), np.median(X, axis=0), rtol=1e-6)
    ref = np.sort(X, axis=0)[2:5].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(robust.trimmed_mean(X, f=2), ref, rtol=1e-5, atol=1e-7)


def test_huge_outliers_float32_do_not_overflow():
    X = _rng(5).standard_normal((9, 20)).astype(np.float32)
    X[0] = 3e38
    X[1] = -3e38
    X[2, :10] = 1e30
    for out in (robust.median(X), robust.trimmed_mean(X, f=3)):
        assert np.isfinite(out).all()
        honest = X[3:]
        assert (out >= honest.min(axis=0) - 1e-6).all() and (out <= honest.max(axis=0) + 1e-6).all()
    m = robust.mean(np.array([[3e38, 3e38], [3e38, 3e38]], dtype=np.float32))
    assert np.isfinite(m).all()


def test_non_finite_rows_are_removed_and_count_against_f():
    rng = _rng(6)
    X = rng.standard_normal((9, 15))
    bad = X.copy()
    bad[0, 3] = np.nan
    bad[5, :] = np.inf
    # f = 3, two rows non-finite: trimmed mean trims f' = 1 per side on the 7 finite rows
    np.testing.assert_allclose(
        robust.trimmed_mean(bad, f=3), ref_trimmed_mean(np.delete(X, [0, 5], axis=0), 1), rtol=1e-12
    )
    np.testing.assert_allclose(robust.median(bad), ref_median(np.delete(X, [0, 5], axis=0)))
    np.testing.assert_allclose(robust.mean(bad), np.delete(X, [0, 5], axis=0).mean(axis=0))
    # more non-finite rows than f: still finite, computed from the finite rows
    assert np.isfinite(robust.trimmed_mean(bad, f=1)).all()


def test_all_rows_non_finite_raises():
    X = np.full((3, 4), np.nan)
    with pytest.raises(InsufficientClientsError, match="non-finite"):
        robust.median(X)


def test_weighted_mean_and_weight_errors():
    X = _rng(7).standard_normal((4, 6))
    w = np.array([1.0, 2.0, 0.0, 1.0])
    np.testing.assert_allclose(robust.mean(X, w), (w @ X) / w.sum())
    with pytest.raises(WeightsError, match="shape"):
        robust.mean(X, np.ones(3))
    with pytest.raises(WeightsError, match=">= 0"):
        robust.mean(X, np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(WeightsError, match="finite"):
        robust.mean(X, np.array([1.0, np.nan, 1.0, 1.0]))
    with pytest.raises(WeightsError, match="positive sum"):
        robust.mean(X, np.zeros(4))
    bad = X.copy()
    bad[1] = np.nan
    with pytest.raises(WeightsError, match="sum to 0"):
        robust.mean(bad, np.array([0.0, 1.0, 0.0, 0.0]))


def test_input_validation_errors():
    with pytest.raises(InputShapeError, match="2-D"):
        robust.median(np.zeros(5))
    with pytest.raises(InputShapeError, match="float32 or float64"):
        robust.median(np.zeros((3, 2), dtype=np.complex64))
    with pytest.raises(InputShapeError, match="at least one row"):
        robust.median(np.zeros((0, 3)))
    with pytest.raises(InputShapeError, match="required"):
        robust.median(None)
    with pytest.raises(ParameterError, match="non-negative integer"):
        robust.trimmed_mean(np.zeros((5, 2)), f=-1)
    with pytest.raises(ParameterError, match="non-negative integer"):
        robust.trimmed_mean(np.zeros((5, 2)), f=1.5)
    with pytest.raises(
        InsufficientClientsError, match=r"trimmed_mean needs n >= 2f\+1 = 7, got n=5 \(f=3\)"
    ):
        robust.trimmed_mean(np.zeros((5, 2)), f=3)
    with pytest.raises(InsufficientClientsError, match=r"median needs n >= 2f\+1"):
        robust.median(np.zeros((4, 2)), f=2)


def test_integer_input_promoted_and_input_not_mutated():
    Xi = np.arange(12).reshape(4, 3)
    assert robust.median(Xi).dtype == np.float64
    X = _rng(8).standard_normal((6, 9)).astype(np.float32)
    X[2, 1] = np.nan
    before = X.copy()
    robust.median(X)
    robust.trimmed_mean(X, f=2)
    robust.mean(X)
    np.testing.assert_array_equal(X, before)


def test_fortran_and_strided_inputs():
    X = _rng(9).standard_normal((7, 30))
    np.testing.assert_allclose(robust.median(np.asfortranarray(X)), ref_median(X))
    np.testing.assert_allclose(robust.trimmed_mean(X[:, ::2], f=2), ref_trimmed_mean(X[:, ::2], 2))


def test_clip_into_out_and_in_place():
    rng = np.random.default_rng(11)
    X = (rng.standard_normal((7, 300)) * np.arange(1, 8)[:, None]).astype(np.float32)
    want = robust.clip(X, 20.0)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    assert np.allclose(np.linalg.norm(want.astype(np.float64), axis=1), np.minimum(norms, 20.0))
    out = np.full_like(X, np.nan)
    assert robust.clip(X, 20.0, out=out) is out
    np.testing.assert_array_equal(out, want)
    Y = X.copy()
    robust.clip(Y, 20.0, out=Y)  # explicit in-place
    np.testing.assert_array_equal(Y, want)
    for bad in (
        np.empty((7, 299), np.float32),
        np.empty((7, 300)),
        np.empty((300, 7), np.float32).T,
    ):
        with pytest.raises(robust.InputShapeError, match="out must be"):
            robust.clip(X, 20.0, out=bad)
