"""Reputation: update rule, weights, atomic save/load and validation of loaded state."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import robust
from robust import Reputation
from robust.errors import ParameterError, ReputationStateError


def test_update_rule_is_beta_posterior_with_decay():
    rep = Reputation(decay=0.5, prior=(1.0, 1.0))
    assert rep.trust("new") == 0.5
    rep.update(["a", "b"], ["accepted", "rejected:krum"])
    assert rep.trust("a") == pytest.approx(2 / 3)  # (1+1)/(1+0+2)
    assert rep.trust("b") == pytest.approx(1 / 3)
    rep.update(["a"], [True])
    # a: alpha = 0.5*1 + 1 = 1.5, beta = 0 -> (2.5)/(3.5)
    assert rep.trust("a") == pytest.approx(2.5 / 3.5)
    assert rep.trust("b") == pytest.approx(1 / 3)  # absent clients unchanged
    rep.update(["c"], ["rejected:non_finite"])
    assert rep.trust("c") == pytest.approx(1 / (0 + 3 + 2))  # (0 + 1) / (0 + 3 + 1 + 1), penalty 3
    np.testing.assert_allclose(rep.weights(["a", "b", "zzz"]), [2.5 / 3.5, 1 / 3, 0.5])
    np.testing.assert_allclose(rep.weights(["a", "b"], floor=0.5), [2.5 / 3.5, 0.0])
    assert rep.rounds == 3 and len(rep) == 3


def test_update_from_aggregation_result_and_use_as_weights():
    X = np.random.default_rng(0).standard_normal((9, 5))
    X[0] += 50
    ids = [f"client{i}" for i in range(9)]
    rep = Reputation(decay=0.9)
    for _ in range(5):
        res = robust.aggregate_detailed(X, "distance_filter", f=2)
        rep.update(ids, res)
    w = rep.weights(ids)
    assert w[0] == w.min() and w[0] < 0.2 and (w[1:] > 0.8).all()
    out = robust.aggregate(X, "mean", weights=w)
    assert np.linalg.norm(out - X[1:].mean(0)) < np.linalg.norm(X.mean(0) - X[1:].mean(0))


def test_update_errors():
    rep = Reputation()
    with pytest.raises(ParameterError, match="2 ids but 1 verdicts"):
        rep.update([1, 2], ["accepted"])
    with pytest.raises(ParameterError, match="unique"):
        rep.update([1, 1], ["accepted", "accepted"])
    with pytest.raises(ParameterError, match="unknown verdict"):
        rep.update([1], ["maybe"])
    with pytest.raises(ParameterError, match="int or str"):
        rep.update([1.5], ["accepted"])
    with pytest.raises(ParameterError, match="decay"):
        Reputation(decay=0)
    with pytest.raises(ParameterError, match="decay"):
        Reputation(decay=1.5)
    with pytest.raises(ParameterError, match="prior"):
        Reputation(prior=(1.0, -1.0))
    assert rep.rounds == 0 and len(rep) == 0  # failed updates change nothing


def test_save_load_round_trip(tmp_path):
    rep = Reputation(decay=0.8, prior=(2.0, 1.0), non_finite_penalty=5.0)
    rep.update([1, "b", np.int64(7)], ["accepted", "rejected:bulyan", "rejected:non_finite"])
    path = tmp_path / "rep.json"
    rep.save(path)
    loaded = Reputation.load(path)
    assert loaded == rep
    assert loaded.clients == [1, "b", 7]
    np.testing.assert_array_equal(loaded.weights([1, "b", 7]), rep.weights([1, "b", 7]))
    rep.update([1], ["accepted"])
    rep.save(path)  # overwrite
    assert Reputation.load(path) == rep
    assert [p.name for p in tmp_path.iterdir()] == ["rep.json"]  # no temp files left


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    rep = Reputation()
    rep.update(["a"], ["accepted"])
    path = tmp_path / "rep.json"
    rep.save(path)
    original = path.read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    rep.update(["a"], ["rejected:krum"])
    with pytest.raises(OSError, match="disk full"):
        rep.save(path)
    assert path.read_text() == original
    assert [p.name for p in tmp_path.iterdir()] == ["rep.json"]


def _state():
    rep = Reputation()
    rep.update(["a", 2], ["accepted", "rejected:krum"])
    return rep.to_dict()


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda s: s.update(format="other"), "format"),
        (lambda s: s.update(version=99), "version"),
        (lambda s: s.pop("decay"), "missing fields"),
        (lambda s: s.update(decay=2.0), "decay"),
        (lambda s: s.update(prior=[1.0]), "prior"),
        (lambda s: s.update(rounds=-1), "rounds"),
        (lambda s: s.update(clients={"a": 1}), "clients must be a list"),
        (lambda s: s["clients"].append(["x", 1.0]), r"clients\[2\] must be"),
        (lambda s: s["clients"].append([None, 1.0, 1.0]), r"clients\[2\].id"),
        (lambda s: s["clients"].append(["x", -1.0, 1.0]), r"clients\[2\].a must be"),
        (lambda s: s["clients"].append(["x", 1.0, float("nan")]), r"clients\[2\].b must be"),
        (lambda s: s["clients"].append(["a", 1.0, 1.0]), "duplicate id 'a'"),
    ],
)
def test_load_validates_every_field(tmp_path, mutate, match):
    state = _state()
    mutate(state)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(state))
    with pytest.raises(ReputationStateError, match=match):
        Reputation.load(path)


def test_load_corrupted_or_missing_file(tmp_path):
    path = tmp_path / "rep.json"
    path.write_text('{"format": "fortis.robust.rep')  # truncated
    with pytest.raises(ReputationStateError, match="not valid JSON"):
        Reputation.load(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ReputationStateError):
        Reputation.load(path)
    path.write_text("[1, 2, 3]")
    with pytest.raises(ReputationStateError, match="JSON object"):
        Reputation.load(path)
    with pytest.raises(ReputationStateError, match="no such"):
        Reputation.load(tmp_path / "missing.json")
