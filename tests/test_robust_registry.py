"""The stage registry: one table of stages with parameter schemas, from which RULES & co.
are derived, the pipeline runs, and a CLI can check specs and print help without data."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

import robust
from robust import registry
from robust.errors import (
    DistanceOnlyError,
    InputShapeError,
    InsufficientClientsError,
    ParameterError,
    UnknownRuleError,
)
from robust.params import Param, positive


def _X(n=11, d=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def test_public_tables_are_derived_from_the_registry():
    rules = robust.stages("rule")
    assert tuple(robust.RULES) == rules
    assert (
        tuple(robust.PRE_AGGREGATORS)
        == robust.stages("pre")
        == (
            "clip",
            "norm_filter",
            "nnm",
            "bucketing",
        )
    )
    assert robust.stages() == robust.stages("pre") + rules + robust.stages("post")
    assert set(robust.DISTANCE_RULES) | set(robust.COORDINATE_RULES) == set(rules)
    for name in rules:
        schema = robust.stage_schema(name)
        assert schema["needs_coordinates"] == (name in robust.COORDINATE_RULES)
        assert robust.RULES[name] is registry.stage(name).function
    with pytest.raises(ParameterError, match="kind"):
        robust.stages("filter")


@pytest.mark.parametrize("name", robust.stages())
def test_each_schema_matches_its_function(name):
    stage = registry.stage(name)
    signature = inspect.signature(stage.function).parameters
    schema = robust.stage_schema(name)
    json.dumps(schema)  # a CLI can print it as JSON
    assert schema["name"] == name and schema["doc"]
    for p in schema["params"]:
        default = signature[p["name"]].default
        assert p["required"] == (default is inspect.Parameter.empty)
        if not p["required"]:
            assert p["default"] == default
        assert p["type"] and p["doc"]
    assert robust.stage_help(name).startswith(f"{name} (")


def test_f_is_keyword_only_in_every_public_function_that_takes_it():
    functions = [*robust.RULES.values(), *robust.PRE_AGGREGATORS.values()]
    functions += [
        robust.krum_scores,
        robust.krum_select,
        robust.multi_krum_select,
        robust.distance_filter_select,
        robust.aggregate,
        robust.aggregate_detailed,
    ]
    with_f = [fn for fn in functions if "f" in inspect.signature(fn).parameters]
    assert len(with_f) == 18  # the 11 rules, nnm, 4 distance-only forms, aggregate(_detailed)
    for fn in with_f:
        kind = inspect.signature(fn).parameters["f"].kind
        assert kind is inspect.Parameter.KEYWORD_ONLY, fn.__name__
    X = _X()
    with pytest.raises(TypeError, match="positional"):
        robust.trimmed_mean(X, 2)
    with pytest.raises(TypeError, match="positional"):
        robust.krum(X, 2)
    with pytest.raises(TypeError, match="positional"):
        robust.aggregate(X, "krum", 2)


def test_check_pipeline_validates_specs_without_data():
    plan = robust.check_pipeline("krum", f=2, n=11, pre=[("clip", {"max_norm": 1})])
    assert plan == [("clip", {"max_norm": 1.0}), ("krum", {"neighbours": None})]
    plan = robust.check_pipeline("sign_vote", threshold=0.75)
    assert plan == [("sign_vote", {"threshold": 0.75, "scale": 1.0})]
    # the caller supplies centered clipping's centre every round: not needed in a spec
    assert robust.check_pipeline("centered_clipping", f=1, n=5, tau=2)[0][1]["tau"] == 2.0
    assert robust.check_pipeline("bulyan", f="auto", n=5)  # f is estimated at run time
    cases = [
        (UnknownRuleError, "unknown rule 'krumm'", dict(rule="krumm")),
        (UnknownRuleError, "pre-aggregator 'nmm'", dict(rule="krum", pre=["nmm"])),
        (UnknownRuleError, "unknown rule 'nnm'", dict(rule="nnm")),
        (
            ParameterError,
            "unknown parameter 'nieghbours' for krum",
            dict(rule="krum", nieghbours=3),
        ),
        (ParameterError, "clip needs max_norm=", dict(rule="mean", pre=["clip"])),
        (
            ParameterError,
            "max_norm must be finite and > 0",
            dict(rule="mean", pre=[("clip", {"max_norm": -1})]),
        ),
        (ParameterError, "threshold must be in", dict(rule="sign_vote", threshold=0.2)),
        (
            ParameterError,
            "s must be an integer",
            dict(rule="mean", pre=[("bucketing", {"s": 1.5})]),
        ),
        (
            ParameterError,
            r"neighbours must be in \[1, 10\]",
            dict(rule="krum", n=11, neighbours=11),
        ),
        (ParameterError, "non-negative integer", dict(rule="krum", f=-1)),
        (
            InputShapeError,
            "center must be a vector",
            dict(rule="centered_clipping", center=[[1.0]]),
        ),
        (
            InsufficientClientsError,
            r"bulyan needs n >= 4f\+3 = 11, got n=9",
            dict(rule="bulyan", f=2, n=9),
        ),
        (
            InsufficientClientsError,
            r"krum \(after bucketing: 3 rows\) needs n >= 2f\+3",
            dict(rule="krum", f=1, n=9, pre=[("bucketing", {"s": 3})]),
        ),
        (InsufficientClientsError, "nnm needs n >= 2f", dict(rule="mean", f=3, n=6, pre=["nnm"])),
    ]
    for error, message, spec in cases:
        with pytest.raises(error, match=message):
            robust.check_pipeline(spec.pop("rule"), **spec)


@pytest.mark.parametrize(
    "rule, f, pre, params",
    [
        ("krum", 2, [("bucketing", {"s": 2})], {}),
        ("krum", 1, [("bucketing", {"s": 3})], {}),
        ("median", 5, ["nnm"], {}),
        ("multi_krum", 2, [], {"m": 12}),
        ("multi_krum", 2, [], {"m": 11}),
        ("krum", 2, [], {"neighbours": 0}),
        ("distance_filter", 0, [], {"k": 0}),
        ("geometric_median", 1, [("clip", {"max_norm": 2.0})], {"max_iter": 3}),
        ("rfa", 1, [], {"weighted_mean": 3}),
        ("bulyan", 2, [], {}),
        ("trimmed_mean", 6, [], {}),
    ],
)
def test_check_pipeline_agrees_with_running_the_pipeline(rule, f, pre, params):
    """A CLI that validates with check_pipeline must refuse exactly what aggregate refuses
    (for everything knowable without data)."""
    X = _X(n=11)

    def outcome(call):
        try:
            call()
        except robust.RobustError as e:
            return type(e)
        return None

    static = outcome(lambda: robust.check_pipeline(rule, f=f, n=11, pre=pre, **params))
    running = outcome(lambda: robust.aggregate(X, rule, f=f, pre=pre, **params))
    assert static == running


def test_every_stage_reports_what_it_did_and_to_whom():
    X = _X(n=13, d=5, seed=3)
    X[0] = np.nan
    X[4] *= 100  # rejected by the norm filter
    X[7] *= 3  # clipped
    res = robust.aggregate_detailed(
        X,
        "multi_krum",
        f=3,
        pre=[("norm_filter", {"max_norm": 50.0}), ("clip", {"max_norm": 4.0}), "nnm"],
    )
    names = [r["stage"] for r in res.stages]
    assert names == ["non_finite", "norm_filter", "clip", "nnm", "multi_krum"]
    for report in res.stages:
        assert report["rejected_count"] == len(report["rejected"])
        assert report["rejected"] == sorted(report["rejected"])
        for i in report["rejected"]:
            assert res.verdicts[i] != "accepted"
    by_name = {r["stage"]: r for r in res.stages}
    assert by_name["non_finite"]["rejected"] == [0]
    assert by_name["norm_filter"]["rejected"] == [4] and res.verdicts[4] == "rejected:norm"
    assert 7 in by_name["clip"]["clipped"] and by_name["clip"]["rejected"] == []
    assert by_name["nnm"]["f"] == 1  # 3 minus the two rows already rejected
    rejected = set().union(*(r["rejected"] for r in res.stages))
    assert rejected == set(np.flatnonzero(~res.accepted))


def _halve(flow, vector, *, factor):
    flow.record("halve", factor=factor)
    return vector * factor


def test_post_rule_stages_run_after_the_rule_and_report(monkeypatch):
    # none ships yet (the DP stages will): register one for the test
    factor = Param("factor", positive(), "the factor")
    halve = registry.Stage("halve", "post", "scale the aggregate", _halve, (factor,), _halve)
    monkeypatch.setitem(registry._REGISTRY, "halve", halve)
    assert robust.stages("post") == ("halve",)
    X = _X(n=9, d=4, seed=4).astype(np.float32)
    res = robust.aggregate_detailed(X, "median", f=2, post=[("halve", {"factor": 0.5})])
    np.testing.assert_allclose(res.vector, 0.5 * robust.median(X, f=2))
    assert res.vector.dtype == np.float32
    assert res.stages[-1] == {"stage": "halve", "factor": 0.5, "rejected_count": 0, "rejected": []}
    assert robust.check_pipeline("median", post=[("halve", {"factor": 2})])[-1] == (
        "halve",
        {"factor": 2.0},
    )
    with pytest.raises(ParameterError, match="halve needs factor="):
        robust.aggregate(X, "median", post=["halve"])
    with pytest.raises(UnknownRuleError, match="post-rule stage 'clip'"):
        robust.aggregate(X, "median", post=["clip"])
    with pytest.raises(DistanceOnlyError, match="need coordinates"):
        robust.aggregate_detailed(
            None, "krum", f=1, distances=robust.pairwise_sq_distances(X), post=["halve"]
        )
