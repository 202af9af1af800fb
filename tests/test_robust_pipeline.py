"""robust.aggregate / aggregate_detailed: registry, verdicts, stages, errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import robust
from robust.errors import (
    AggregationError,
    DistanceOnlyError,
    InputShapeError,
    InsufficientClientsError,
    ParameterError,
    RobustError,
    UnknownRuleError,
    WeightsError,
)

NAMES = [
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "geometric_median",
    "rfa",
    "centered_clipping",
    "sign_vote",
    "distance_filter",
]


def _X(n=11, d=20, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def _params(rule, d):
    return {"center": np.zeros(d), "tau": 1.0} if rule == "centered_clipping" else {}


def test_registries():
    assert list(robust.RULES) == NAMES
    assert set(robust.PRE_AGGREGATORS) >= {"clip", "nnm", "bucketing"}
    assert set(robust.DISTANCE_RULES) | set(robust.COORDINATE_RULES) == set(NAMES)
    assert not set(robust.DISTANCE_RULES) & set(robust.COORDINATE_RULES)
    assert {"krum", "multi_krum", "distance_filter"} <= set(robust.DISTANCE_RULES)
    assert {"median", "trimmed_mean", "bulyan"} <= set(robust.COORDINATE_RULES)
    assert all(
        issubclass(e, RobustError) and issubclass(e, ValueError)
        for e in (InputShapeError, InsufficientClientsError)
    )


@pytest.mark.parametrize("rule", NAMES)
def test_aggregate_equals_the_rule_function(rule):
    X = _X()
    kw = _params(rule, X.shape[1])
    f = 2
    via_pipeline = robust.aggregate(X, rule, f=f, **kw)
    direct = robust.RULES[rule](X, f=f, **kw)  # every rule takes f as a keyword
    assert via_pipeline.dtype == X.dtype
    np.testing.assert_allclose(via_pipeline, direct, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rule", NAMES)
def test_every_rule_finite_with_at_most_f_non_finite_rows(rule):
    X = _X(n=15, seed=1)
    X[0] = np.nan
    X[1, 3] = np.inf
    X[2] = -np.inf
    res = robust.aggregate_detailed(X, rule, f=3, **_params(rule, X.shape[1]))
    assert np.isfinite(res.vector).all()
    assert res.verdicts[:3] == ("rejected:non_finite",) * 3
    assert not res.accepted[:3].any()
    assert res.stages[0] == {"stage": "non_finite", "rejected_count": 3, "rejected": [0, 1, 2]}
    assert res.info["f_effective"] == 0 and res.f == 3


def test_verdicts_scores_and_stages():
    X = _X(n=10, d=8, seed=2, dtype=np.float64)
    X[0] *= 100
    res = robust.aggregate_detailed(X, "multi_krum", f=2, pre=[("clip", {"max_norm": 50.0})])
    assert dataclasses.is_dataclass(res)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.f = 3
    assert res.n == 10 and res.f == 2 and res.accepted.sum() == 8
    assert res.verdicts[0] == "rejected:multi_krum"
    clip_stage = res.stages[0]
    norms = np.linalg.norm(X, axis=1)
    assert clip_stage["stage"] == "clip" and clip_stage["max_norm"] == 50.0
    assert clip_stage["clipped"] == [0] == np.flatnonzero(norms > 50.0).tolist()
    assert clip_stage["clipped_count"] == 1
    assert res.scores.shape == (10,) and res.scores[0] == res.scores.max()
    json.dumps(res.to_dict())
    res = robust.aggregate_detailed(X, "trimmed_mean", f=2)
    assert res.accepted.all() and ((res.scores >= 0) & (res.scores <= 1)).all()
    assert res.scores[0] < np.median(res.scores)  # the scaled row is often trimmed


def test_norm_filter_rejects_and_counts_against_f():
    X = _X(n=9, d=5, seed=3, dtype=np.float64)
    X[4] *= 1000
    res = robust.aggregate_detailed(
        X, "trimmed_mean", f=2, pre=[("norm_filter", {"max_norm": 10.0})]
    )
    assert res.verdicts[4] == "rejected:norm" and res.accepted.sum() == 8
    assert res.info["f_effective"] == 1
    np.testing.assert_allclose(res.vector, robust.trimmed_mean(np.delete(X, 4, axis=0), f=1))


def test_f_auto_detects_planted_outliers():
    X = _X(n=20, d=30, seed=4, dtype=np.float64)
    X[[3, 7, 11]] += 40.0
    res = robust.aggregate_detailed(X, "multi_krum", f="auto")
    est = next(s for s in res.stages if s["stage"] == "estimate_f")
    assert est["flagged"] == [3, 7, 11] and res.f == 3
    assert not res.accepted[[3, 7, 11]].any()
    X[0] = np.nan
    res = robust.aggregate_detailed(X, "bulyan", f="auto")
    assert res.f == 4  # 3 far rows + 1 non-finite
    assert (
        next(s for s in res.stages if s["stage"] == "estimate_f")["cap"] == 4
    )  # bulyan on 19 finite rows


def test_callable_rule():
    X = _X(n=6, d=4, seed=5)
    seen = {}

    def my_rule(rows, f, scale=1.0):
        seen["shape"], seen["f"] = rows.shape, f
        return rows.mean(axis=0) * scale

    bad = X.copy()
    bad[2] = np.nan
    out = robust.aggregate(bad, my_rule, f=1, scale=2.0)
    np.testing.assert_allclose(out, 2 * np.delete(X, 2, axis=0).mean(0), rtol=1e-6)
    assert seen == {"shape": (5, 4), "f": 0}
    with pytest.raises(AggregationError, match="non-finite"):
        robust.aggregate(X, lambda rows, f: rows[0] * np.inf)
    with pytest.raises(AggregationError, match="shape"):
        robust.aggregate(X, lambda rows, f: rows[0][:2])


def test_distance_only_mode():
    X = _X(n=9, d=7, seed=6, dtype=np.float64)
    X[0] += 30
    D = robust.pairwise_sq_distances(X)
    for rule in robust.DISTANCE_RULES:
        res = robust.aggregate_detailed(None, rule, f=2, distances=D)
        assert res.vector is None
        full = robust.aggregate_detailed(X, rule, f=2)
        np.testing.assert_array_equal(res.accepted, full.accepted)
        np.testing.assert_allclose(X[res.accepted].mean(axis=0), full.vector, rtol=1e-9)
    res = robust.aggregate_detailed(None, "krum", f=2, gram=robust.gram(X))
    assert res.accepted.sum() == 1
    Dn = D.copy()
    Dn[3, :] = Dn[:, 3] = np.nan
    res = robust.aggregate_detailed(None, "multi_krum", f=2, distances=Dn)
    assert res.verdicts[3] == "rejected:non_finite"
    for rule in robust.COORDINATE_RULES:
        with pytest.raises(DistanceOnlyError, match="needs coordinates"):
            robust.aggregate_detailed(None, rule, f=1, distances=D)
    with pytest.raises(DistanceOnlyError, match="pre-aggregators"):
        robust.aggregate_detailed(None, "krum", f=1, distances=D, pre=["nnm"])
    with pytest.raises(DistanceOnlyError, match="aggregate_detailed"):
        robust.aggregate(None, "krum", f=1)
    with pytest.raises(InputShapeError, match="distances= or gram="):
        robust.aggregate_detailed(None, "krum", f=1)


def test_trusted_weights():
    X = _X(n=7, d=3, seed=7, dtype=np.float64)
    w = np.array([1, 1, 1, 0, 2, 1, 1], dtype=float)
    np.testing.assert_allclose(robust.aggregate(X, "mean", weights=w), (w @ X) / w.sum())
    with pytest.raises(ParameterError, match="unweighted"):
        robust.aggregate(X, "median", weights=w)
    with pytest.raises(WeightsError, match="shape"):
        robust.aggregate(X, "mean", weights=w[:3])
    with pytest.raises(WeightsError, match="numeric"):  # was numpy's bare ValueError
        robust.aggregate(X, "mean", weights=["a"] * 7)
    # bucket weight = sum of its members' weights
    res = robust.aggregate_detailed(X, "mean", pre=[("bucketing", {"s": 7, "seed": 0})], weights=w)
    np.testing.assert_allclose(res.vector, X.mean(0))


def test_error_paths():
    X = _X(n=9, d=4)
    with pytest.raises(UnknownRuleError, match="known: mean"):
        robust.aggregate(X, "krumm", f=1)
    with pytest.raises(UnknownRuleError):
        robust.aggregate(X, 3, f=1)
    with pytest.raises(UnknownRuleError, match="pre-aggregator 'nmm'"):
        robust.aggregate(X, "krum", f=1, pre=["nmm"])
    with pytest.raises(ParameterError, match="unknown parameter 'nieghbours' for krum"):
        robust.aggregate(X, "krum", f=1, nieghbours=3)
    with pytest.raises(ParameterError, match="needs max_norm"):
        robust.aggregate(X, "krum", f=1, pre=["clip"])
    with pytest.raises(ParameterError, match="'auto'"):
        robust.aggregate(X, "krum", f="many")
    with pytest.raises(ParameterError, match="non-negative"):
        robust.aggregate(X, "krum", f=-1)
    with pytest.raises(ParameterError, match="centered_clipping needs center="):
        robust.aggregate(X, "centered_clipping", f=1)
    with pytest.raises(ParameterError, match="m must be"):
        robust.aggregate(X, "multi_krum", f=1, m=0)
    with pytest.raises(InsufficientClientsError, match=r"bulyan needs n >= 4f\+3 = 11, got n=9"):
        robust.aggregate(X, "bulyan", f=2)
    with pytest.raises(InsufficientClientsError, match=r"after bucketing: 3 rows"):
        robust.aggregate(X, "krum", f=1, pre=[("bucketing", {"s": 3, "seed": 0})])
    with pytest.raises(InsufficientClientsError, match="all 9 rows are non-finite"):
        robust.aggregate(np.full((9, 4), np.nan), "median")
    with pytest.raises(InputShapeError, match="2-D"):
        robust.aggregate(np.zeros(4), "mean")
    with pytest.raises(ParameterError, match="pre items"):
        robust.aggregate(X, "mean", pre=[("clip", 3.0)])


def test_input_not_mutated_by_any_pipeline():
    X = _X(n=12, d=9, seed=8)
    X[1] = np.nan
    before = X.copy()
    for rule in NAMES:
        robust.aggregate(X, rule, f=2, pre=[("clip", {"max_norm": 1.0}), "nnm"], **_params(rule, 9))
    np.testing.assert_array_equal(X, before)


def test_defaults_for_bucketing_size_and_centered_clipping_radius():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(9, 30))
    res = robust.aggregate_detailed(X, "median", f=2, pre=["bucketing"])
    assert res.stages[0]["s"] == 2 and len(res.stages[0]["buckets"]) == 5
    center = np.zeros(30)
    dist = np.linalg.norm(X, axis=1)
    auto = robust.aggregate(X, "centered_clipping", f=2, center=center)
    explicit = robust.aggregate(
        X, "centered_clipping", f=2, center=center, tau=float(np.median(dist))
    )
    np.testing.assert_allclose(auto, explicit)
    np.testing.assert_allclose(robust.centered_clipping(X, center), explicit)


@pytest.mark.parametrize(
    "rule",
    [
        "krum",
        "multi_krum",
        "bulyan",
        "geometric_median",
        "distance_filter",
        "median",
        "trimmed_mean",
    ],
)
def test_float64_rows_too_large_to_compare_are_rejected_not_fatal(rule):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(11, 50))
    X[0] = 1e200
    X[1, ::2], X[1, 1::2] = 1e180, -1e180  # row sum 0: only the norm screen catches it
    res = robust.aggregate_detailed(X, rule, f=2)
    assert np.isfinite(res.vector).all() and np.abs(res.vector).max() < 10
    assert res.verdicts[0] == res.verdicts[1] == "rejected:non_finite"
