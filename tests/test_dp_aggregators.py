"""dp.aggregators: clipping, filtering, noise and summation composed as stages (TFF-style)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import dp
import robust
from dp import (
    Accountant,
    AdaptiveClipper,
    AggregateOutput,
    AggregatorError,
    CentralGaussian,
    DPError,
    GaussianEvent,
    NoiseSource,
    PlacementError,
    PrivacyParameterError,
)
from dp.accounting import event_from_dict

SEED = bytes(range(32))


def multi_krum(f: int = 2):
    return dp.from_callable(lambda X: robust.aggregate_detailed(X, "multi_krum", f=f))


def crafted(n: int = 10, d: int = 6) -> np.ndarray:
    """Honest rows near e_0 with norms 0.5 .. 1.9; rows 0 and 1 Byzantine, far along e_1."""
    rng = np.random.default_rng(3)
    X = np.zeros((n, d))
    X[:, 0] = np.linspace(0.5, 1.9, n)
    X[:, 2:] = rng.normal(scale=0.01, size=(n, d - 2))
    X[0] = 0.0
    X[0, 1] = 50.0
    X[1] = 0.0
    X[1, 1] = -7.0
    return X


def test_clipping_reports_whom_it_clipped_and_keeps_the_rule_report():
    X = crafted()
    norms = np.linalg.norm(X, axis=1)
    C = 1.5
    out = dp.clipping(multi_krum(), C)(X)

    clipped_rows, _ = dp.clip_updates(X, C)
    direct = robust.aggregate_detailed(clipped_rows, "multi_krum", f=2)
    assert out.stage_names == ("clip", "multi_krum")
    clip = out.stages[0]
    assert clip["clipped"] == np.flatnonzero(norms > C).tolist()
    assert clip["clipped"][:2] == [0, 1] and len(clip["clipped"]) >= 3  # Byzantine + big honest
    assert clip["clipped_count"] == len(clip["clipped"])
    assert clip["max_input_norm"] == pytest.approx(50.0, rel=1e-6)
    assert clip["clip_norm"] == C and clip["rejected_count"] == 0 and clip["filters"] is False
    # the robust rule's report sits unchanged after the wrapper's, and its verdicts are kept
    assert out.stages[1] == direct.stages[0]
    assert out.stages[1]["rejected"] == [0, 1]
    assert np.array_equal(out.accepted, direct.accepted)
    assert np.array_equal(out.vector, direct.vector)
    assert out.kind == "mean" and out.accepted_count == 8


def test_noise_is_added_to_the_sum_after_the_filter_and_charged():
    X = crafted()
    C, z = 1.5, 0.8
    acc = Accountant(delta=1e-5)
    agg = dp.central_noise(
        dp.clipping(multi_krum(), C), CentralGaussian(z, C), NoiseSource(SEED), accountant=acc
    )
    expected_noise = NoiseSource(SEED)
    direct = robust.aggregate_detailed(dp.clip_updates(X, C)[0], "multi_krum", f=2)
    m = int(direct.accepted.sum())
    reference = Accountant(delta=1e-5)
    for k in range(1, 4):
        out = dp.check_placement(agg(X))
        draw = expected_noise.normal(X.shape[1], z * C)
        # noise on the SUM of the m accepted rows: the mean moves by draw / m
        np.testing.assert_allclose(out.vector, direct.vector + draw / m, rtol=0, atol=1e-12)
        assert out.stage_names == ("clip", "multi_krum", "central_noise")
        assert out.stages[1] == direct.stages[0]  # the filter read noise-free rows
        noise = out.stages[-1]
        assert noise["sigma_sum"] == pytest.approx(z * C)
        assert noise["sigma_mean"] == pytest.approx(z * C / m)
        assert noise["accepted_count"] == m and noise["summed"] == list(range(2, 10))
        assert noise["norm_bound_stage"] == "clip" and noise["adds_noise"] is True
        reference.compose_gaussian(z, 1.0)
        assert noise["epsilon"] == reference.epsilon() and noise["rounds"] == k
        assert noise["event"] == {
            "kind": "gaussian", "noise_multipliers": [z], "sampling_rate": 1.0, "count": 1
        }  # fmt: skip
        assert event_from_dict(noise["event"]) == GaussianEvent((z,), 1.0)
    assert acc.rounds == 3 and acc.epsilon() == reference.epsilon()


def test_sampling_rate_reaches_the_accountant():
    X = crafted()
    acc = Accountant(delta=1e-5)
    agg = dp.central_noise(
        dp.clipping(dp.mean(), 1.0), CentralGaussian(1.1, 1.0), NoiseSource(SEED), acc, 0.1
    )
    for _ in range(5):
        report = agg(X).stages[-1]
    reference = Accountant(delta=1e-5)
    reference.compose_gaussian(1.1, 0.1, 5)
    assert report["epsilon"] == reference.epsilon() and report["sampling_rate"] == 0.1
    without = dp.central_noise(
        dp.clipping(dp.mean(), 1.0), CentralGaussian(1.1, 1.0), NoiseSource(SEED)
    )
    assert without(X).stages[-1]["epsilon"] is None


def test_a_sum_is_noised_as_it_is():
    X = crafted()
    out = dp.central_noise(
        dp.clipping(dp.sum(), 1.0), CentralGaussian(2.0, 1.0), NoiseSource(SEED)
    )(X)
    total = dp.clip_updates(X, 1.0)[0].sum(axis=0)
    np.testing.assert_allclose(out.vector, total + NoiseSource(SEED).normal(X.shape[1], 2.0))
    assert out.kind == "sum" and out.stage_names == ("clip", "sum", "central_noise")
    assert out.stages[-1]["sigma_mean"] == pytest.approx(2.0 / 10)


def test_check_placement_refuses_noise_before_the_filter():
    X = crafted()
    mech = CentralGaussian(1.0, 1.5)
    forced = dp.row_noise(dp.clipping(multi_krum(), 1.5), mech, NoiseSource(SEED))
    out = forced(X)  # possible ...
    assert out.stage_names == ("row_noise", "clip", "multi_krum")
    assert out.stages[0]["placement"] == "before_filter"
    assert out.stages[0]["sigma_share"] == pytest.approx(1.5 / math.sqrt(10))
    with pytest.raises(PlacementError, match="noisy statistics") as info:  # ... but flagged
        dp.check_placement(out)
    assert "'row_noise'" in str(info.value) and "'multi_krum'" in str(info.value)
    assert isinstance(info.value, DPError)

    # the filter really read the noisy rows
    seen = []
    dp.row_noise(dp.from_callable(lambda Y: seen.append(Y) or Y.mean(0)), mech, NoiseSource(SEED))(
        X
    )
    share = NoiseSource(SEED).normal(X.size, 1.5 / math.sqrt(10)).reshape(X.shape)
    np.testing.assert_allclose(seen[0], X + share)

    # noise before stages that cannot filter, or after the filter, passes
    fine = dp.central_noise(dp.clipping(multi_krum(), 1.5), mech, NoiseSource(SEED))(X)
    assert dp.check_placement(fine) is fine
    assert dp.check_placement(dp.row_noise(dp.clipping(dp.mean(), 1.5), mech, NoiseSource(SEED))(X))
    # a report that does not say it cannot filter counts as a filter; so does any rejection
    noisy = {"stage": "noise", "adds_noise": True}
    with pytest.raises(PlacementError):
        dp.check_placement([noisy, {"stage": "median", "rejected_count": 0, "rejected": []}])
    with pytest.raises(PlacementError):
        dp.check_placement([noisy, {"stage": "s", "filters": False, "rejected_count": 1}])
    assert dp.check_placement([noisy, {"stage": "s", "filters": False, "rejected_count": 0}])
    with pytest.raises(AggregatorError):
        dp.check_placement(42)


def test_adaptive_clipping_tracks_the_quantile_and_its_event_is_charged():
    rng = np.random.default_rng(5)
    n, d = 50, 8
    directions = rng.normal(size=(n, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    X = directions * np.linspace(1.0, 10.0, n)[:, None]  # median norm 5.5
    clipper = AdaptiveClipper(1.0, noise_multiplier=0.5, count_stddev=1.0, expected_clients=n)
    acc = Accountant(delta=1e-5)
    agg = dp.central_noise(
        dp.adaptive_clipping(dp.mean(), clipper, NoiseSource(bytes(32))),
        CentralGaussian(clipper.update_noise_multiplier, 1.0),
        NoiseSource(SEED),
        accountant=acc,
    )
    used, nxt = [], []
    rounds = 60
    for _ in range(rounds):
        out = agg(X)
        ad, noise = out.stages[0], out.stages[-1]
        assert out.stage_names == ("adaptive_clip", "mean", "central_noise")
        assert ad["clipped"] == np.flatnonzero(np.linalg.norm(X, axis=1) > ad["clip_norm"]).tolist()
        # the noise follows the round's clip norm: z_Delta * C_t on the sum
        assert noise["clip_norm"] == ad["clip_norm"]
        assert noise["sigma_sum"] == pytest.approx(
            clipper.update_noise_multiplier * ad["clip_norm"]
        )
        assert event_from_dict(ad["event"]) == GaussianEvent((2.0,), 1.0)
        used.append(ad["clip_norm"])
        nxt.append(ad["next_clip_norm"])
    assert used[1:] == nxt[:-1] and clipper.clip_norm == nxt[-1]
    assert used[0] == 1.0 and used[20] > 3.0  # moving up towards the median
    assert 4.5 < np.mean(used[-10:]) < 6.5
    frac = np.mean(np.linalg.norm(X, axis=1) <= used[-1])
    assert 0.35 <= frac <= 0.65
    # one joint event per round (updates and count on the same sample): total multiplier z
    reference = Accountant(delta=1e-5)
    reference.compose_gaussian(clipper.noise_multipliers, 1.0, rounds)
    assert noise["epsilon"] == reference.epsilon() and acc.rounds == rounds
    assert noise["effective_noise_multiplier"] == pytest.approx(0.5)


def _json_stages(out: AggregateOutput) -> list[dict]:
    """The stage reports through strict JSON (no NaN), checked to come back equal."""
    text = json.dumps(list(out.stages), allow_nan=False)
    back = json.loads(text)
    assert back == list(out.stages)  # nothing was a tuple, a numpy value or an object
    return back


def test_every_stage_report_is_json_and_the_ledger_can_be_rebuilt_from_it():
    X = crafted()
    q = 0.5
    # clip -> robust filter -> central noise
    acc = Accountant(delta=1e-5)
    agg = dp.central_noise(
        dp.clipping(multi_krum(), 1.0), CentralGaussian(1.2, 1.0), NoiseSource(SEED), acc, q
    )
    rebuilt = Accountant(delta=1e-5)
    for _ in range(3):
        stages = _json_stages(agg(X))
        assert [s["stage"] for s in stages] == ["clip", "multi_krum", "central_noise"]
        rebuilt.compose(event_from_dict(stages[-1]["event"]))
    assert rebuilt.epsilon() == acc.epsilon() and rebuilt.rounds == 3
    # adaptive clipping -> robust filter -> central noise: one joint event per round
    clipper = AdaptiveClipper(1.0, noise_multiplier=0.5, count_stddev=1.0, expected_clients=10)
    acc = Accountant(delta=1e-5)
    agg = dp.central_noise(
        dp.adaptive_clipping(multi_krum(), clipper, NoiseSource(SEED), sampling_rate=q),
        CentralGaussian(clipper.update_noise_multiplier, 1.0),
        NoiseSource(b"n" * 32),
        acc,
        q,
    )
    rebuilt = Accountant(delta=1e-5)
    for _ in range(3):
        stages = _json_stages(agg(X))
        assert [s["stage"] for s in stages] == ["adaptive_clip", "multi_krum", "central_noise"]
        count = event_from_dict(stages[0]["event"])
        joint = event_from_dict(stages[-1]["event"])
        assert count.noise_multipliers == (clipper.noise_multipliers[1],)
        assert joint.noise_multipliers == (
            clipper.update_noise_multiplier, clipper.noise_multipliers[1]
        )  # fmt: skip
        assert joint.sampling_rate == count.sampling_rate == q
        rebuilt.compose(joint)
    assert rebuilt.epsilon() == acc.epsilon()

    # noise before the filter, a plain function, and a rule reporting numpy values
    def numpy_rule(Y):
        keep = np.ones(len(Y), dtype=bool)
        keep[0] = False
        report = {
            "stage": "numpy_rule",
            "score": np.float32(0.5),
            "kept": np.flatnonzero(keep),
            "rejected_count": np.int64(1),
            "rejected": [np.int64(0)],
            "pair": (1, 2),
        }
        return AggregateOutput(Y[keep].mean(axis=0), keep, (report,))  # fmt: skip

    for agg in (
        dp.row_noise(dp.clipping(multi_krum(), 1.0), CentralGaussian(1.0, 1.0), NoiseSource(SEED)),
        dp.clipping(dp.from_callable(lambda Y: np.median(Y, axis=0), name="median"), 1.0),
        dp.central_noise(
            dp.clipping(dp.from_callable(numpy_rule), 1.0),
            CentralGaussian(1.0, 1.0),
            NoiseSource(SEED),
        ),
        dp.clipping(dp.sum(), 1.0),
    ):
        _json_stages(agg(X))
    rule = dp.clipping(dp.from_callable(numpy_rule), 1.0)(X).stages[1]  # values kept
    assert rule["score"] == 0.5 and rule["kept"] == list(range(1, 10))
    assert rule["rejected"] == [0] and type(rule["rejected_count"]) is int
    assert rule["pair"] == [1, 2]


def test_a_malformed_adaptive_event_in_a_report_is_refused():
    def forged(Y):
        rep = {"stage": "adaptive_clip", "clip_norm": 1.0, "event": {"kind": "gaussian"}}
        return AggregateOutput(Y.mean(axis=0), np.ones(len(Y), dtype=bool), (rep,))

    agg = dp.central_noise(dp.from_callable(forged), CentralGaussian(1.0, 1.0), NoiseSource(SEED))
    with pytest.raises(AggregatorError, match="bad event"):
        agg(crafted())


def test_adaptive_clipper_is_unchanged_when_the_inner_aggregator_fails():
    clipper = AdaptiveClipper(1.0, noise_multiplier=0.5, count_stddev=1.0, expected_clients=4)

    def broken(X):
        raise RuntimeError("inner failed")

    with pytest.raises(RuntimeError):
        dp.adaptive_clipping(broken, clipper, NoiseSource(SEED))(np.ones((4, 3)))
    assert clipper.clip_norm == 1.0


def test_adaptive_and_noise_sampling_rates_must_agree():
    clipper = AdaptiveClipper(1.0, noise_multiplier=0.5, count_stddev=1.0, expected_clients=4)
    agg = dp.central_noise(
        dp.adaptive_clipping(dp.mean(), clipper, NoiseSource(SEED), sampling_rate=0.5),
        CentralGaussian(1.0, 1.0),
        NoiseSource(SEED),
        sampling_rate=0.25,
    )
    with pytest.raises(PrivacyParameterError, match="sampling"):
        agg(np.ones((4, 3)))


def test_weights_pass_through_to_the_inner_aggregator():
    X = crafted()
    w = np.arange(1.0, 11.0)
    seen = []

    def weighted_mean(Y, weights=None):
        seen.append(weights)
        return robust.aggregate_detailed(Y, "mean", weights=weights)

    out = dp.clipping(dp.from_callable(weighted_mean), 1.0)(X, weights=w)
    clipped = dp.clip_updates(X, 1.0)[0]
    np.testing.assert_array_equal(seen[0], w)
    np.testing.assert_allclose(out.vector, np.average(clipped, axis=0, weights=w))
    leaf = dp.clipping(dp.mean(), 1.0)(X, weights=w)
    np.testing.assert_allclose(leaf.vector, np.average(clipped, axis=0, weights=w))
    assert leaf.stages[-1]["weighted"] is True
    np.testing.assert_allclose(dp.sum()(X, weights=w).vector, w @ X)
    # central noise is unweighted: one clipped update is its sensitivity on the sum
    noisy = dp.central_noise(
        dp.clipping(dp.mean(), 1.0), CentralGaussian(1.0, 1.0), NoiseSource(SEED)
    )
    with pytest.raises(PrivacyParameterError, match="unweighted"):
        noisy(X, weights=w)


def test_from_callable_plain_function_and_aggregate_output():
    X = crafted()

    def coordinate_median(Y):
        return np.median(Y, axis=0)

    out = dp.from_callable(coordinate_median)(X)
    assert out.stages == ({"stage": "coordinate_median", "rejected_count": 0, "rejected": []},)
    assert out.accepted.all() and out.kind == "mean"
    np.testing.assert_array_equal(out.vector, np.median(X, axis=0))
    summed = dp.from_callable(lambda Y: Y.sum(0), name="total", kind="sum")(X)
    assert summed.kind == "sum" and summed.stage_names == ("total",)
    # an AggregateOutput passes through with its kind
    inner = dp.from_callable(lambda Y: AggregateOutput(Y[0], np.eye(10, dtype=bool)[0], (), "sum"))
    passed = inner(X)
    assert passed.kind == "sum" and passed.stages[0]["rejected"] == list(range(1, 10))
    # a plain function reports nothing about itself, so it counts as a possible filter
    with pytest.raises(PlacementError):
        dp.check_placement(
            dp.row_noise(
                dp.from_callable(coordinate_median), CentralGaussian(1, 1), NoiseSource(SEED)
            )(X)
        )


def test_non_finite_rows_reach_the_filter_unclipped():
    X = crafted()
    X[4, 3] = np.nan
    out = dp.clipping(multi_krum(), 1.5)(X)
    assert out.stages[0]["non_finite"] == [4] and 4 not in out.stages[0]["clipped"]
    assert not out.accepted[4] and np.all(np.isfinite(out.vector))
    with pytest.raises(AggregatorError, match=r"rows \[4\]"):
        dp.clipping(dp.mean(), 1.5)(X)


def test_central_noise_needs_a_norm_bound_before_it():
    X = crafted()
    mech, src = CentralGaussian(1.0, 1.0), NoiseSource(SEED)
    with pytest.raises(PlacementError, match="bounds the updates' norm"):
        dp.central_noise(dp.mean(), mech, src)(X)
    trusted = dp.central_noise(dp.mean(), mech, src, assume_clipped=True)(X)
    assert trusted.stages[-1]["norm_bound_stage"] is None
    with pytest.raises(PlacementError, match="calibrated for clip norm 1.0"):
        dp.central_noise(dp.clipping(dp.mean(), 2.0), mech, src)(X)
    # robust's own clip (max_norm) bounds the rows too
    rule = dp.from_callable(
        lambda Y: robust.aggregate_detailed(Y, "multi_krum", f=2, pre=[("clip", {"max_norm": 1.0})])
    )
    out = dp.central_noise(rule, mech, src)(X)
    assert out.stage_names == ("clip", "multi_krum", "central_noise")
    assert out.stages[-1]["norm_bound_stage"] == "clip" and "max_norm" in out.stages[0]


def test_central_noise_refuses_unusable_inner_outputs():
    src, mech = NoiseSource(SEED), CentralGaussian(1.0, 1.0)
    X = crafted()
    distance_only = dp.from_callable(
        lambda Y: robust.aggregate_detailed(
            None, "multi_krum", f=2, distances=robust.pairwise_sq_distances(Y)
        )
    )
    with pytest.raises(AggregatorError, match="distances only"):
        dp.central_noise(dp.clipping(distance_only, 1.0), mech, src)(X)
    nobody = dp.from_callable(lambda Y: AggregateOutput(Y[0], np.zeros(10, dtype=bool), ()))
    with pytest.raises(AggregatorError, match="no row"):
        dp.central_noise(dp.clipping(nobody, 1.0), mech, src)(X)
    with pytest.raises(AggregatorError, match="not finite"):
        dp.central_noise(
            dp.from_callable(lambda Y: np.full(Y.shape[1], np.inf)), mech, src, assume_clipped=True
        )(X)


def test_bad_parameters_raise_typed_errors():
    X, src, mech = crafted(), NoiseSource(SEED), CentralGaussian(1.0, 1.0)
    clipper = AdaptiveClipper(1.0, noise_multiplier=0.5, count_stddev=1.0, expected_clients=4)
    for bad in (0.0, -1.0, math.nan, math.inf, True, "1"):
        with pytest.raises(PrivacyParameterError):
            dp.clipping(dp.mean(), bad)
    for q in (0.0, 1.5, math.nan):
        with pytest.raises(PrivacyParameterError):
            dp.central_noise(dp.mean(), mech, src, sampling_rate=q)
        with pytest.raises(PrivacyParameterError):
            dp.adaptive_clipping(dp.mean(), clipper, src, sampling_rate=q)
    with pytest.raises(AggregatorError):
        dp.clipping("not callable", 1.0)
    with pytest.raises(AggregatorError):
        dp.central_noise(dp.mean(), 1.0, src)
    with pytest.raises(AggregatorError):
        dp.central_noise(dp.mean(), mech, np.random.default_rng(0))
    with pytest.raises(AggregatorError):
        dp.central_noise(dp.mean(), mech, src, accountant="acc")
    with pytest.raises(AggregatorError):
        dp.adaptive_clipping(dp.mean(), 1.0, src)
    with pytest.raises(AggregatorError):
        dp.row_noise(dp.mean(), mech, None)
    with pytest.raises(PrivacyParameterError):
        dp.from_callable(np.mean, kind="median")
    agg = dp.clipping(dp.mean(), 1.0)
    for bad_x in (np.ones(3), np.ones((2, 2), dtype=int), np.ones((0, 3))):
        with pytest.raises(PrivacyParameterError):
            agg(bad_x)
    for w in (np.ones(3), -np.ones(10), np.zeros(10), np.full(10, np.nan)):
        with pytest.raises(PrivacyParameterError):
            agg(X, weights=w)
    with pytest.raises(AggregatorError, match="accepted"):
        dp.from_callable(lambda Y: AggregateOutput(Y[0], np.ones(3, dtype=bool), ()))(X)
    with pytest.raises(AggregatorError, match="length 6"):
        dp.from_callable(lambda Y: Y[0, :2])(X)
    assert issubclass(PlacementError, AggregatorError) and issubclass(AggregatorError, DPError)


def test_importing_dp_aggregators_is_a_torch_free_leaf():
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import dp.aggregators as agg\n"
        "import dp\n"
        "out = agg.clipping(agg.mean(), 1.0)(np.ones((3, 4)))\n"
        "assert out.stages[0]['clipped'] == [0, 1, 2]\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in "
        "('robust', 'protocol', 'simulations', 'torch', 'opacus')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
