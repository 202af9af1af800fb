"""``--reputation``: scores that persist across rounds, feed the next round's weights and
exclusions, and are reported per client; the selection is exactly robust's."""

import json

import numpy as np
import pytest

import robust
from simulations.cli import main
from simulations.config import _KEY_OMITS_AT_DEFAULT, ConfigError, SimulationConfig
from simulations.datasets import load_dataset
from simulations.matrix import run_matrix
from simulations.report import reputation_rows
from simulations.reputation import (
    normalize_reputation,
    parse_reputation,
    reputation_step,
    round_weights,
    tracker,
)
from simulations.runner import RoundRecord, RunResult, check_components, run_simulation

FAST = dict(clients=10, byzantine=2, rounds=8, seed=3)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=3)


# -- the selection is robust's ------------------------------------------------------------
def _history(n: int, rejected: list[int], rounds: int = 3) -> robust.Reputation:
    rep = tracker(normalize_reputation({}))
    for _ in range(rounds):
        rep.update(range(n), ["rejected:x" if i in rejected else "accepted" for i in range(n)])
    return rep


def _updates(seed: int = 0, n: int = 12, d: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X[:2] += 6.0  # two outliers
    return X


@pytest.mark.parametrize("rule", ["multi_krum", "distance_filter", "mean"])
@pytest.mark.parametrize("weights", ["trust", "equal"])
def test_selection_is_aggregate_detailed_with_the_same_weights(rule, weights):
    n, f = 12, 2
    X = _updates()
    D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    params = normalize_reputation({"floor": 0.3, "weights": weights})
    ids = list(range(n))
    # Clients 0 and 5 have been rejected three times: trust 0.21 < 0.3, so both are weighed 0.
    rep_x, rep_d = _history(n, [0, 5]), _history(n, [0, 5])
    w, excluded, _ = round_weights(rep_x, ids, params, f=f)
    assert excluded.tolist() == [i in (0, 5) for i in ids]
    assert w[0] == w[5] == 0 and (w[~excluded] > 0).all()

    step = reputation_step(rep_x, params, ids, rule, f=f, X=X)
    direct = robust.aggregate_detailed(X, rule, f=f, weights=w)
    assert step.result.verdicts == direct.verdicts
    np.testing.assert_array_equal(step.result.vector, direct.vector)
    np.testing.assert_array_equal(step.contributes, direct.accepted & (w > 0))
    # The aggregate is the weighted mean of the contributing rows.
    c = step.contributes
    np.testing.assert_allclose(step.result.vector, (w[c] @ X[c]) / w[c].sum(), rtol=1e-10)
    assert not step.contributes[[0, 5]].any()

    if rule != "mean":  # the secure path: distances only
        by_d = reputation_step(rep_d, params, ids, rule, f=f, distances=D)
        direct_d = robust.aggregate_detailed(None, rule, f=f, distances=D, weights=w)
        assert by_d.result.verdicts == direct_d.verdicts
        assert by_d.result.vector is None
        with_d = robust.aggregate_detailed(X, rule, f=f, distances=D, weights=w)
        assert with_d.verdicts == direct_d.verdicts  # the same selection with or without X
    # The update used the rule's verdicts, the zero-weight clients' included.
    assert step.trust_after.tolist() == rep_x.weights(ids).tolist()


def test_exclusions_are_capped_at_f_lowest_trust_first():
    params = normalize_reputation({"floor": 0.5, "weights": "equal"})
    rep = _history(8, [1, 2, 3, 6], rounds=1)
    rep.update([6], ["rejected:x"])  # 6 is lowest
    w, excluded, trust = round_weights(rep, range(8), params, f=2)
    assert np.flatnonzero(excluded).tolist() == [1, 6]  # 6 (lowest), then 1 (tie: first)
    assert w.tolist() == [1, 0, 1, 1, 1, 1, 0, 1]
    assert round_weights(rep, range(8), params, f=0)[1].sum() == 0
    assert round_weights(rep, range(8), params, f="auto")[1].sum() == 3  # (8 - 1) // 2
    w, excluded, _ = round_weights(rep, range(8), normalize_reputation({"floor": 0}), f=2)
    assert not excluded.any() and w.tolist() == trust.tolist()


def test_an_excluded_client_that_the_rule_accepts_again_recovers():
    X = _updates(1)
    X[:2] = X[2:4]  # the former outliers now send central updates
    params = normalize_reputation({"floor": 0.3})
    rep = _history(12, [0, 1], rounds=4)
    assert rep.trust(0) < 0.3
    rounds_out = 0
    while rep.trust(0) < 0.3:
        step = reputation_step(rep, params, range(12), "multi_krum", f=2, X=X)
        assert step.excluded[0] and step.result.verdicts[0] == "accepted"
        rounds_out += 1
    assert rounds_out <= 3


# -- a run ----------------------------------------------------------------------------------
def test_byzantine_trust_falls_below_every_honest_client_on_a_dirichlet_split(digits):
    cfg = SimulationConfig(
        **FAST,
        partition="dirichlet",
        alpha=0.1,
        attack="scaling",
        defence="multi_krum",
        reputation={},
    )
    res = run_simulation(cfg, dataset=digits, raise_errors=True)
    assert res.status == "completed"
    T = res.trust_history()
    assert T.shape == (FAST["rounds"], FAST["clients"])
    byz = np.zeros(FAST["clients"], bool)
    byz[res.byzantine_ids] = True
    assert T[-1, byz].max() < 0.2 < 0.8 < T[-1, ~byz].min()
    # Scores persist: the Byzantine trust falls every round, and from the round after it
    # crossed the floor reputation excludes them.
    assert (np.diff(T[:, byz], axis=0) < 0).all()
    crossed = int(np.argmax(T[:, byz].max(axis=1) < 0.2))
    for rec in res.history[crossed + 1 :]:
        assert sorted(rec.reputation_excluded) == res.byzantine_ids
        assert rec.byzantine_excluded == 2 and rec.honest_excluded == 0
    assert res.summary()["byzantine_trust_max"] == pytest.approx(T[-1, byz].max())


def test_report_shows_honest_clients_pushed_out_on_a_label_sorted_split(digits):
    # Multi-Krum keeps rejecting the two honest clients whose labels are furthest from the
    # rest while ALIE hides in the middle: their trust falls below the floor and reputation
    # excludes them. The report must make that visible.
    cfg = SimulationConfig(
        **FAST, partition="label_sorted", attack="alie", defence="multi_krum", reputation={}
    )
    res = run_simulation(cfg, dataset=digits, raise_errors=True)
    rows = reputation_rows(res)
    pushed = [r for r in rows if not r["byzantine"] and r["excluded_rounds"]]
    assert pushed and all(r["final_trust"] < 0.2 for r in pushed)
    assert rows[0]["final_trust"] == min(r["final_trust"] for r in rows)
    assert sum(rec.honest_excluded for rec in res.history) == sum(
        len(r["excluded_rounds"]) for r in pushed
    )
    for rec in res.history:  # excluded clients are counted as not in the aggregate
        assert rec.accepted + rec.honest_rejected + rec.byzantine_rejected == rec.participants


def test_runs_with_reputation_are_deterministic_and_round_trip(digits):
    cfg = SimulationConfig(
        **FAST, attack="nan", defence="mean", dropout=0.2, reputation={"floor": 0.3}
    )
    a, b = (run_simulation(cfg, dataset=digits, raise_errors=True) for _ in range(2))
    assert [r.reputation for r in a.history] == [r.reputation for r in b.history]
    back = RunResult.from_dict(json.loads(json.dumps(a.to_dict())))
    np.testing.assert_array_equal(back.trust_history(), a.trust_history())
    assert back.summary() == a.summary()
    # A NaN sender is rejected with the non-finite penalty and is soon excluded.
    assert max(a.trust_history()[-1, a.byzantine_ids]) < 0.1
    assert any(r.byzantine_excluded for r in a.history)


def test_secure_mode_drops_clients_below_the_floor(digits):
    cfg = SimulationConfig(
        clients=8,
        byzantine=2,
        rounds=4,
        seed=3,
        attack="nan",
        defence="mean",
        secure=True,
        clip=5.0,
        reputation={"weights": "equal"},
    )
    res = run_simulation(cfg, dataset=digits, raise_errors=True)
    assert res.status == "completed"
    later = res.history[-1]
    assert sorted(later.reputation_excluded) == res.byzantine_ids
    assert later.accepted == 6 and later.honest_rejected == 0
    assert max(res.trust_history()[-1, res.byzantine_ids]) < 0.1


# -- configuration --------------------------------------------------------------------------
def test_option_defaults_keep_todays_behaviour_and_keys():
    cfg = SimulationConfig(**FAST)
    assert cfg.reputation is None
    assert "reputation" not in json.dumps(cfg.to_dict()) or cfg.to_dict()["reputation"] is None
    # a config stored before the later options existed (they are omitted at their defaults)
    old = {k: v for k, v in cfg.to_dict().items() if k not in _KEY_OMITS_AT_DEFAULT}
    assert "reputation" in _KEY_OMITS_AT_DEFAULT
    assert SimulationConfig.from_dict(old) == cfg
    # The key of a config without reputation is the one computed before the option existed.
    import hashlib

    blob = json.dumps(old, sort_keys=True, default=str).encode()
    assert cfg.key() == hashlib.sha256(blob).hexdigest()[:16]
    assert RoundRecord(**{"round": 0, "accuracy": 0.5, "loss": 1.0, "participants": 3,
                          "byzantine_participants": 1, "accepted": 2, "honest_rejected": 0,
                          "byzantine_rejected": 1}).reputation is None  # fmt: skip


def test_spec_parsing_and_labels():
    assert parse_reputation("none") is None
    a = parse_reputation("beta")
    assert a == normalize_reputation({"decay": 0.9})
    b = parse_reputation("beta:decay=0.8,floor=0.3,weights=equal")
    assert (b["decay"], b["floor"], b["weights"]) == (0.8, 0.3, "equal")
    cfg = SimulationConfig(**FAST, reputation=b)
    assert cfg.defence_label() == "multi_krum with reputation(decay=0.8,floor=0.3,weights=equal)"
    assert SimulationConfig(**FAST, reputation=a).key() != SimulationConfig(**FAST).key()
    assert (
        SimulationConfig(**FAST, reputation=a).key()
        == SimulationConfig(**FAST, reputation={"floor": 0.2}).key()
    )
    for bad, match in (
        ("ema", "unknown kind"),
        ("beta:gamma=1", "unknown parameter"),
        ("beta:decay=0", "decay"),
        ("beta:floor=1", "floor"),
        ("beta:weights=votes", "weights"),
        ("beta:a0=-1", "a0"),
    ):
        with pytest.raises(ConfigError, match=match):
            parse_reputation(bad)


def test_what_reputation_cannot_run_is_refused():
    with pytest.raises(ConfigError, match="krum' takes no weights"):
        check_components(SimulationConfig(**FAST, defence="krum", reputation={}))
    # Tracking only works with any rule.
    check_components(
        SimulationConfig(**FAST, defence="median", reputation={"weights": "equal", "floor": 0})
    )
    with pytest.raises(ConfigError, match="secure sum is unweighted"):
        check_components(
            SimulationConfig(**FAST, defence="mean", secure=True, clip=5.0, reputation={})
        )
    with pytest.raises(ConfigError, match="replication"):
        SimulationConfig(clients=9, byzantine=1, replication=3, reputation={})


# -- commands -------------------------------------------------------------------------------
def test_simulate_writes_the_reputation_report(tmp_path, capsys):
    out = tmp_path / "sim"
    code = main(
        ["simulate", "--clients", "8", "-f", "2", "--rounds", "3", "--attack", "scaling",
         "--partition", "dirichlet", "--alpha", "0.1", "--reputation", "beta:floor=0.3",
         "--second-attack", "none", "--quiet", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert (out / "reputation.png").stat().st_size > 0
    data = json.loads((out / "results.json").read_text())
    defended = [v for k, v in data.items() if "reputation" in k]
    assert len(defended) == 1  # the baselines run without reputation
    run = defended[0]
    assert all(len(r["reputation"]) == 8 for r in run["history"])
    assert run["config"]["reputation"]["floor"] == 0.3
    md = (out / "summary.md").read_text()
    assert "## Reputation" in md and "**Byzantine**" in md
    assert "final trust: honest min / Byzantine max" in capsys.readouterr().out


def test_matrix_with_reputation_resumes(tmp_path, digits):
    base = SimulationConfig(clients=8, byzantine=2, rounds=3, seed=3, reputation={})
    kwargs = dict(
        attacks=["scaling"], defences=["multi_krum", "distance_filter"], fs=[2],
        partitions=["dirichlet"], out_dir=tmp_path,
    )  # fmt: skip
    seen: list[bool] = []
    first = run_matrix(base, on_cell=lambda i, n, s, resumed: seen.append(resumed), **kwargs)
    again = run_matrix(base, on_cell=lambda i, n, s, resumed: seen.append(resumed), **kwargs)
    assert seen == [False, False, True, True]
    assert first == again
    assert all(c["byzantine_trust_max"] < c["honest_trust_min"] for c in first)
    assert "reputation at the end of each run" in (tmp_path / "matrix.md").read_text()
    # The same grid without reputation is other cells, run anew.
    seen.clear()
    run_matrix(base.replace(reputation=None), on_cell=lambda *a: seen.append(a[3]), **kwargs)
    assert seen == [False, False]
