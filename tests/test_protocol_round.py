"""Whole rounds: the secure aggregate equals the plaintext sum of the quantised inputs, exactly,
for random n, d, ring sizes and dropout sets at every stage; run_round's options and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import Client, ProtocolConfigError, RoundConfig, Server, run_parties, run_round
from secagg.errors import EncodingOverflowError, GraphError

STAGES = ("advertise", "share_keys", "masked_input", "unmask")


def _random_dropouts(rng: np.random.Generator, n: int, p: float) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {s: [] for s in STAGES}
    for i in range(n):
        if rng.random() < p:
            out[STAGES[int(rng.integers(len(STAGES)))]].append(i)
    return out


def _run_exact(n, d, bits, graph, dropouts, seed, value_range=1.0):
    """Run a round with known per-client rounding generators; return (result, encodings)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-value_range, value_range, (n, d))
    cfg = RoundConfig(
        round_id=seed, population=range(n), dim=d, value_range=value_range, bits=bits, graph=graph
    )
    server = Server(cfg, graph_seed=rng.bytes(32))
    clients = {i: Client(cfg, i, x[i], rng=np.random.default_rng([seed, i])) for i in range(n)}
    result = run_parties(server, clients, dropouts=dropouts)
    # every client encodes exactly once with its generator, so this replays its encoding
    enc = [cfg.encoder.encode(x[i], np.random.default_rng([seed, i])) for i in range(n)]
    return result, enc, cfg


def _check_exact(result, enc, cfg):
    survivors = list(result.survivors)
    assert survivors == sorted(survivors)
    expected = cfg.encoder.wrap(np.sum([enc[i].astype(np.uint64) for i in survivors], axis=0))
    assert result.encoded_sum.dtype == cfg.encoder.dtype
    np.testing.assert_array_equal(result.encoded_sum, expected)
    np.testing.assert_array_equal(result.aggregate, cfg.encoder.decode(expected, len(survivors)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 40),
    d=st.integers(1, 40),
    bits=st.sampled_from([16, 32, 64]),
    p=st.sampled_from([0.0, 0.1, 0.3, 0.5]),
    seed=st.integers(0, 2**32 - 1),
)
def test_complete_graph_exact_with_dropouts_at_every_stage(n, d, bits, p, seed):
    drops = _random_dropouts(np.random.default_rng(seed + 1), n, p)
    result, enc, cfg = _run_exact(n, d, bits, "complete", drops, seed)
    t = result.threshold
    assert t == min(n // 2 + 1, n - 1)
    u1 = n - len(drops["advertise"])
    u2 = u1 - len(drops["share_keys"])
    u3 = u2 - len(drops["masked_input"])
    responders = u3 - len(drops["unmask"])
    # every client in the sum needs t partners (so t + 1 clients) at each stage before
    # unmasking; unmasking needs t answers per secret
    should_abort = min(u1, u2, u3) < t + 1 or responders < t
    assert result.aborted == should_abort, result.abort_reason
    assert result.faults == () and result.refusals == {}
    if should_abort:
        assert result.abort_reason and f"t={t}" in result.abort_reason
        assert result.aggregate is None and result.survivors == ()
        return
    before_input = set(drops["advertise"]) | set(drops["share_keys"]) | set(drops["masked_input"])
    # clients dropping during unmasking are still in the sum
    assert set(result.survivors) == set(range(n)) - before_input
    assert set(result.dropped) == before_input
    _check_exact(result, enc, cfg)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(12, 200),
    d=st.integers(1, 16),
    p=st.sampled_from([0.0, 0.05, 0.1]),
    seed=st.integers(0, 2**32 - 1),
)
def test_secaggplus_graph_exact_with_dropouts(n, d, p, seed):
    drops = _random_dropouts(np.random.default_rng(seed + 1), n, p)
    result, enc, cfg = _run_exact(n, d, 32, "secagg+", drops, seed)
    before_input = set(drops["advertise"]) | set(drops["share_keys"]) | set(drops["masked_input"])
    if result.aborted:
        assert result.abort_reason
        return
    assert set(result.survivors) <= set(range(n)) - before_input
    # only clients left with fewer than t live partners may be missing beyond the dropouts
    missing = set(range(n)) - before_input - set(result.survivors)
    for i in missing:
        reason = result.excluded.get(i) or result.pruned[i]
        assert "live neighbours" in reason or "partners" in reason
    _check_exact(result, enc, cfg)


def test_n200_secaggplus_dropouts_at_every_stage():
    n = 200
    drops = {
        "advertise": [0, 50],
        "share_keys": [3, 77],
        "masked_input": [9, 120],
        "unmask": [4, 150],
    }
    result, enc, cfg = _run_exact(n, 5, 32, "secagg+", drops, seed=7)
    assert not result.aborted, result.abort_reason
    degree = max(len(v) for v in cfg.masking_graph(b"\0" * 32).neighbours.values())
    assert degree < 60  # sparse: O(log n) neighbours, not n - 1
    assert {4, 150} <= set(result.survivors)
    assert not {0, 50, 3, 77, 9, 120} & set(result.survivors)
    _check_exact(result, enc, cfg)


def test_below_threshold_aborts_cleanly_at_each_stage():
    x = np.random.default_rng(0).uniform(-1, 1, (7, 3))  # t = 4
    for stage in STAGES:
        r = run_round(x, value_range=1.0, dropouts={stage: [0, 1, 2, 3]})
        assert r.aborted, stage
        assert r.aggregate is None and r.survivors == ()
        assert "t=4" in r.abort_reason
        assert r.dropped == tuple(range(7))
    # exactly t left: fine
    r = run_round(x, value_range=1.0, dropouts={"unmask": [0, 1, 2]})
    assert not r.aborted and r.survivors == tuple(range(7))


def test_run_round_sum_mean_and_inputs():
    rng = np.random.default_rng(3)
    x = rng.uniform(-0.5, 0.5, (6, 10))
    r = run_round(x, value_range=0.5, seed=11)
    assert r.aggregate.dtype == np.float64
    res = r.config.encoder.resolution
    assert np.max(np.abs(r.aggregate - x.sum(axis=0))) <= 6 * res
    r_list = run_round([list(row) for row in x], value_range=0.5, seed=11)
    np.testing.assert_array_equal(r_list.aggregate, r.aggregate)  # seed makes it deterministic
    m = run_round(x, value_range=0.5, seed=11, mean=True, dropouts={"masked_input": [2]})
    assert m.survivors == (0, 1, 3, 4, 5)
    np.testing.assert_allclose(m.aggregate, x[[0, 1, 3, 4, 5]].mean(axis=0), atol=res)
    np.testing.assert_array_equal(m.aggregate, m.config.encoder.decode(m.encoded_sum, 5) / 5)


def test_default_value_range_is_power_of_two_above_max():
    x = np.array([[0.3, -1.3], [0.1, 0.2], [0.0, 0.9]])
    r = run_round(x)
    assert r.config.value_range == 2.0
    assert run_round(np.zeros((3, 2))).config.value_range == 1.0


def test_values_above_clip_raise_never_clipped():
    x = np.zeros((4, 3))
    x[2, 1] = 1.5
    with pytest.raises(EncodingOverflowError, match=r"updates\[2\]\[1\].*value_range="):
        run_round(x, value_range=1.0)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"updates": np.zeros(5)}, ValueError, "n clients, d coordinates"),
        ({"updates": np.zeros((1, 5))}, ValueError, "at least 2 clients"),
        ({"updates": [[1.0, 2.0], [1.0]]}, ValueError, "same shape"),
        ({"updates": [[np.nan, 0.0], [0.0, 0.0]]}, ValueError, r"updates\[0\]\[0\]"),
        ({"graph": "ring"}, ValueError, "graph must be one of"),
        ({"dropouts": {"lunch": [0]}}, ValueError, "unknown stage 'lunch'"),
        ({"dropouts": {"unmask": [9]}}, ValueError, "not a client"),
        ({"dropouts": {"unmask": [1], "advertise": [1]}}, ValueError, "both"),
        ({"dropouts": {"consistency": [1]}}, ValueError, "hardened"),
        ({"value_range": -1.0}, ValueError, "positive"),
        ({"threshold": 9}, ProtocolConfigError, r"threshold must be in \[1, 4\], got 9"),
        ({"bits": 2, "value_range": 1.0}, EncodingOverflowError, "headroom"),
    ],
)
def test_run_round_argument_errors(kwargs, exc, match):
    args = {"updates": np.zeros((4, 2))}
    args.update(kwargs)
    updates = args.pop("updates")
    with pytest.raises(exc, match=match):
        run_round(updates, **args)


def test_secaggplus_too_small_population_is_refused_not_downgraded():
    with pytest.raises(GraphError, match="complete"):
        run_round(np.zeros((3, 2)), value_range=1.0, graph="secagg+")


def test_transcript_counts_real_bytes_and_times():
    d = 1000
    x = np.random.default_rng(1).uniform(-1, 1, (8, d))
    r = run_round(x, value_range=1.0, dropouts={"masked_input": [5]})
    tr = r.transcript
    # nothing is lost in memory: what clients sent is what the server received
    assert tr.server_bytes_received == sum(tr.client_bytes_sent.values())
    # the server also sent messages to client 5, which had gone silent
    assert tr.server_bytes_sent > sum(tr.client_bytes_received.values())
    # a masked input carries 4 bytes per coordinate (uint32)
    assert tr.client_bytes_sent[0] > 4 * d > tr.client_bytes_sent[5]
    for i in range(8):
        stages = set(tr.client_seconds[i])
        assert {"advertise", "share_keys"} <= stages
    assert set(tr.server_seconds) >= {"advertise", "share_keys", "masked_input", "unmask"}
    s = tr.summary()
    assert s["server_seconds"] > 0 and s["mean_client_seconds"] > 0
    assert s["mean_client_bytes"] > 4 * d * 0.8


def test_hardened_round_exact_with_dropouts():
    x = np.random.default_rng(5).uniform(-1, 1, (9, 6))
    r = run_round(
        x,
        value_range=1.0,
        hardened=True,
        seed=2,
        dropouts={"share_keys": [1], "consistency": [3], "unmask": [4]},
    )
    assert not r.aborted, r.abort_reason
    assert r.survivors == (0, 2, 3, 4, 5, 6, 7, 8)  # 3 and 4 sent their inputs
    plain = run_round(x, value_range=1.0, seed=2, dropouts={"share_keys": [1]})
    np.testing.assert_array_equal(r.encoded_sum, plain.encoded_sum)


def test_secaggplus_sized_for_more_dropouts():
    n = 60
    x = np.random.default_rng(9).uniform(-1, 1, (n, 3))
    drops = {"masked_input": list(range(0, n, 4)), "unmask": [1, 2]}  # 25% + 2
    r = run_round(x, value_range=1.0, graph="secagg+", dropouts=drops, dropout_rate=0.3, seed=4)
    assert not r.aborted, r.abort_reason
    assert r.survivors == tuple(i for i in range(n) if i % 4)
    wide = r.config.masking_graph(b"\0" * 32).max_degree()
    narrow = RoundConfig(round_id=0, population=range(n), dim=1, value_range=1.0, graph="secagg+")
    assert wide > narrow.masking_graph(b"\0" * 32).max_degree()
