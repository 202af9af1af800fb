"""Property-based tests (hypothesis): permutation invariance, the f-bound, translation
equivariance, and no mutation of the input."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import robust

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def honest_and_byzantine(draw, bound="majority"):
    """(X, f, n_honest): the first f rows are arbitrary (huge, NaN, Inf, or copies)."""
    f = draw(st.integers(0, 3))
    if bound == "majority":
        n = draw(st.integers(2 * f + 1, 2 * f + 6))
    elif bound == "krum":
        n = draw(st.integers(2 * f + 3, 2 * f + 8))
    else:
        n = draw(st.integers(4 * f + 3, 4 * f + 6))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if draw(st.booleans()):  # ties: round to a coarse grid
        X = np.round(X)
    kinds = draw(
        st.lists(
            st.sampled_from(["huge", "neg_huge", "nan", "inf", "copy", "random"]),
            min_size=f,
            max_size=f,
        )
    )
    for i, kind in enumerate(kinds):
        if kind == "huge":
            X[i] = 1e30
        elif kind == "neg_huge":
            X[i] = -1e30 * rng.random(d)
        elif kind == "nan":
            X[i, rng.integers(d)] = np.nan
        elif kind == "inf":
            X[i] = np.inf
        elif kind == "copy":
            X[i] = X[-1]
        else:
            X[i] = 1e6 * rng.standard_normal(d)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return X.astype(dtype), f


def _inside_honest_box(out, X, f):
    honest = X[f:].astype(np.float64)
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    tol = 1e-5 * (1 + np.abs(honest).max())
    return np.isfinite(out).all() and (out >= lo - tol).all() and (out <= hi + tol).all()


@SETTINGS
@given(honest_and_byzantine())
def test_f_bound_coordinate_rules(case):
    X, f = case
    assert _inside_honest_box(robust.median(X, f=f), X, f)
    assert _inside_honest_box(robust.trimmed_mean(X, f=f), X, f)


@SETTINGS
@given(honest_and_byzantine("krum"))
def test_f_bound_krum_and_multi_krum_stay_in_honest_hull_box(case):
    X, f = case
    before = X.copy()
    assert _inside_honest_box(robust.krum(X, f=f), X, f)
    # Multi-Krum with m=1 is Krum; with the default m it averages n-f rows which can include
    # a Byzantine row close to the honest ones, so only finiteness is a hard guarantee
    assert np.isfinite(robust.multi_krum(X, f=f)).all()
    np.testing.assert_array_equal(X, before)


@SETTINGS
@given(honest_and_byzantine("bulyan"))
def test_f_bound_bulyan(case):
    X, f = case
    assert _inside_honest_box(robust.bulyan(X, f=f), X, f)


_COLLINEAR = np.array(
    [
        [1e30],
        [-5.43625e29],
        [0.6404226],
        [0.1049001],
        [-0.5356694],
        [0.3615951],
        [1.304],
        [0.9470810],
    ],
    dtype=np.float32,
)  # found by CI: the geometric median is the whole segment [0.36, 0.64]


@SETTINGS
@given(honest_and_byzantine(), st.integers(0, 2**31 - 1))
@example(case=(_COLLINEAR, 2), seed=0)
def test_permutation_invariance(case, seed):
    X, f = case
    perm = np.random.default_rng(seed).permutation(len(X))
    Xp = X[perm]
    for fn in (robust.median, lambda A: robust.trimmed_mean(A, f=f), robust.mean):
        np.testing.assert_allclose(fn(Xp), fn(X), rtol=1e-5, atol=1e-6 * (1 + np.abs(fn(X)).max()))
    z, zp = robust.geometric_median(X, tol=1e-10), robust.geometric_median(Xp, tol=1e-10)
    finite = X[np.isfinite(X).all(axis=1)].astype(np.float64)  # non-finite rows are rejected
    if np.linalg.matrix_rank(finite - finite[0]) <= 1:
        # collinear rows (e.g. d = 1, n even): every point between the two middle rows is a
        # geometric median, so both answers must reach the same minimum, not the same point
        def objective(v):
            return np.linalg.norm(finite - v, axis=1).sum()

        np.testing.assert_allclose(objective(zp), objective(z), rtol=1e-7, atol=1e-6)
    else:
        scale = 1 + np.abs(z).max()
        np.testing.assert_allclose(zp, z, atol=1e-4 * scale)
    np.testing.assert_array_equal(robust.sign_vote(Xp), robust.sign_vote(X))


@SETTINGS
@given(
    st.integers(0, 2),
    st.integers(0, 2**31 - 1),
    st.floats(-1e3, 1e3, allow_nan=False),
)
def test_permutation_invariance_distance_rules(f, seed, shift):
    rng = np.random.default_rng(seed)
    n = 2 * f + 3 + int(rng.integers(0, 5))
    X = rng.standard_normal((n, 4))  # continuous: no exact score ties
    perm = rng.permutation(n)
    np.testing.assert_allclose(robust.krum(X[perm], f=f), robust.krum(X, f=f), rtol=1e-12)
    np.testing.assert_allclose(
        robust.multi_krum(X[perm], f=f), robust.multi_krum(X, f=f), rtol=1e-9, atol=1e-12
    )
    res, resp = (
        robust.aggregate_detailed(X, "krum", f=f),
        robust.aggregate_detailed(X[perm], "krum", f=f),
    )
    np.testing.assert_array_equal(resp.accepted, res.accepted[perm])


@SETTINGS
@given(honest_and_byzantine(), st.floats(-100, 100, allow_nan=False))
def test_translation_equivariance(case, shift):
    X, f = case
    X = X.astype(np.float64)
    finite = np.isfinite(X).all(axis=1)
    X = X[finite]
    X = X[np.abs(X).max(axis=1) < 1e6]  # translation is exact only at moderate magnitude
    if len(X) < 2 * f + 1 or len(X) == 0:
        return
    t = shift * np.linspace(-1, 1, X.shape[1])
    for fn in (robust.median, lambda A: robust.trimmed_mean(A, f=f), robust.mean):
        np.testing.assert_allclose(
            fn(X + t), fn(X) + t, atol=1e-9 * (1 + np.abs(X).max() + abs(shift))
        )
    if len(X) >= 2 * f + 3:
        # Krum's choice is translation invariant up to exact score ties: the row picked
        # after translating has the minimal score on the original rows
        s = robust.krum_scores(robust.pairwise_sq_distances(X), f=f)
        picked = robust.krum(X + t, f=f) - t
        i = int(np.argmin(np.abs(X - picked).max(axis=1)))
        assert s[i] <= s.min() * (1 + 1e-9) + 1e-9
    np.testing.assert_allclose(
        robust.geometric_median(X + t, tol=1e-12),
        robust.geometric_median(X, tol=1e-12) + t,
        atol=1e-5 * (1 + np.abs(X).max()),
    )


@SETTINGS
@given(honest_and_byzantine("krum"))
def test_no_mutation_and_dtype(case):
    X, f = case
    before = X.copy()
    outs = [
        robust.median(X, f=f),
        robust.trimmed_mean(X, f=f),
        robust.krum(X, f=f),
        robust.geometric_median(X, f=f),
        robust.centered_clipping(X, np.zeros(X.shape[1]), 1.0, 2, f=f),
        robust.sign_vote(X, f=f),
        robust.distance_filter(X, f=f),
        robust.aggregate(X, "multi_krum", f=f, pre=[("clip", {"max_norm": 1.0}), "nnm"]),
    ]
    np.testing.assert_array_equal(X, before)
    assert all(o.dtype == X.dtype and np.isfinite(o).all() for o in outs)
