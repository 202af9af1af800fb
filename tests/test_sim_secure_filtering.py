"""``--secure`` with a distance rule: secure filtering on encrypted sketches in every round of
a simulation (small n, d and a 1024-bit test key, made once per process)."""

import json
import warnings

import numpy as np
import pytest

import robust
from simulations.attacks import AttackConfigError, AttackContext, make_attack
from simulations.cli import main
from simulations.config import _KEY_OMITS_AT_DEFAULT, ConfigError, SimulationConfig
from simulations.datasets import load_dataset
from simulations.runner import Simulation, check_components, run_simulation

pytestmark = pytest.mark.filterwarnings("ignore:--paillier-bits 1024")

SECURE = dict(
    clients=8,
    byzantine=2,
    rounds=3,
    seed=3,
    defence="multi_krum",
    secure=True,
    clip=2.0,
    paillier_bits=1024,
    sketch_dim=64,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=3)


def _run_cli(argv, written):
    """Run ``fortis ARGV`` (test-key warnings silenced): it must exit 0; return the JSON it wrote."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    return json.loads(written.read_text())


def _within(decision):
    """Positions (in ``judged``) of the clients within the norm bound."""
    return [
        p
        for p, i in enumerate(decision.judged)
        if not decision.rejected.get(i, "").startswith("sketch norm")
    ]


def test_selection_is_robusts_on_the_sketch_distances_and_feeds_reputation(digits):
    cfg = SimulationConfig(
        **{**SECURE, "rounds": 4},
        attack="scaling",
        reputation={"weights": "equal", "floor": 0.0},
    )
    sim = Simulation(cfg, dataset=digits)
    shadow = robust.Reputation(decay=0.9, prior=(1.0, 1.0), non_finite_penalty=3.0)
    for r in range(cfg.rounds):
        rec = sim.step(r)
        result = sim.last_secure_round
        d = result.filter
        keep = _within(d)
        D = d.sq_distances[np.ix_(keep, keep)]
        again = robust.aggregate_detailed(None, "multi_krum", f=cfg.byzantine, distances=D)
        expected = [d.judged[p] for p, ok in zip(keep, again.accepted) if ok]
        assert list(d.accepted) == expected
        assert list(result.survivors) == expected
        assert rec.accepted == len(expected) and rec.verification == "passed"
        # the scaled Byzantine updates are caught every round
        assert rec.byzantine_rejected == rec.byzantine_participants == 2
        verdicts = ["accepted" if i in expected else "rejected:x" for i in d.judged]
        shadow.update(list(d.judged), verdicts)
        np.testing.assert_allclose(rec.reputation, shadow.weights(range(cfg.clients)))
    final = np.asarray(rec.reputation)
    assert final[sim.byzantine_ids].max() < final[np.setdiff1d(range(8), sim.byzantine_ids)].min()


def test_secure_multi_krum_tracks_plaintext(digits):
    cfg = SimulationConfig(**SECURE, attack="sign_flip")
    secure = run_simulation(cfg, dataset=digits, raise_errors=True)
    plain = run_simulation(cfg.replace(secure=False), dataset=digits, raise_errors=True)
    assert secure.status == "completed" and len(secure.history) == cfg.rounds
    assert abs(secure.final_accuracy - plain.final_accuracy) < 0.05
    assert all(r.bytes_sent > 0 and r.verification == "passed" for r in secure.history)
    assert secure.summary()["rounds_not_applied"] == 0


def test_lying_sketch_fails_verification_and_is_never_applied(digits):
    cfg = SimulationConfig(**SECURE, attack="lying_sketch", attack_params={"base": "scaling"})
    sim = Simulation(cfg, dataset=digits)
    start = sim.params.copy()
    res = sim.run(raise_errors=True)
    assert res.status == "completed" and len(res.history) == cfg.rounds
    for rec in res.history:
        assert rec.verification == "failed"
        assert rec.aborted and "verification failed" in rec.aborted
        assert rec.accepted == 0 and rec.skipped.startswith("secure round not applied")
    np.testing.assert_array_equal(sim.params, start)  # no poisoned round was applied
    assert res.summary()["rounds_not_applied"] == cfg.rounds
    # the undefended secure mean runs the norm bound and the verification too: caught as well
    mean = run_simulation(cfg.replace(defence="mean"), dataset=digits, raise_errors=True)
    assert all(r.verification == "failed" for r in mean.history)


def test_lying_sketch_rows_and_refusals():
    rng = np.random.default_rng(0)
    ctx = AttackContext(
        honest_updates=rng.normal(size=(6, 5)),
        byzantine_updates=rng.normal(size=(2, 5)),
        n_clients=8,
        round_idx=0,
        rng=rng,
    )
    attack = make_attack("lying_sketch", base="sign_flip")
    rows = attack.craft(ctx)
    np.testing.assert_allclose(rows, -np.repeat(ctx.honest_updates.mean(0)[None], 2, 0))
    np.testing.assert_allclose(attack.last_sketched, -rows)
    own = make_attack("lying_sketch", sketch="own")
    own.craft(ctx)
    np.testing.assert_array_equal(own.last_sketched, ctx.byzantine_updates)
    with pytest.raises(AttackConfigError, match="base"):
        make_attack("lying_sketch", base="label_flip")
    with pytest.raises(AttackConfigError, match="sketch"):
        make_attack("lying_sketch", sketch="zeros")
    with pytest.raises(ConfigError, match="only under secure filtering"):
        check_components(SimulationConfig(clients=8, byzantine=2, attack="lying_sketch"))


def test_secure_options_are_validated():
    with pytest.raises(ConfigError, match="sketch_dim"):
        SimulationConfig(**{**SECURE, "sketch_dim": 0})
    with pytest.raises(ConfigError, match="paillier_bits"):
        SimulationConfig(**{**SECURE, "paillier_bits": 512})
    # new options at their defaults keep the stored keys of older configs
    cfg = SimulationConfig(clients=8, byzantine=2)
    # the options added after results were first stored are omitted at their defaults
    d = {k: v for k, v in cfg.to_dict().items() if k not in _KEY_OMITS_AT_DEFAULT}
    assert {"sketch_dim", "paillier_bits"} <= set(_KEY_OMITS_AT_DEFAULT)
    import hashlib

    assert (
        cfg.key()
        == hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]
    )
    with pytest.raises(ConfigError, match="secure sum is unweighted"):
        check_components(SimulationConfig(**SECURE, reputation={}))
    check_components(
        SimulationConfig(
            **{**SECURE, "defence": "distance_filter"}, reputation={"weights": "equal"}
        )
    )


def test_test_key_warns():
    from simulations.runner import paillier_key

    with pytest.warns(UserWarning, match="test key"):
        paillier_key(1024)


def test_cli_simulate_secure_multi_krum_end_to_end(tmp_path, capsys):
    out = tmp_path / "sim"
    argv = [
        "simulate", "--secure", "--defence", "multi_krum", "--clip", "2", "--clients", "8",
        "-f", "2", "--rounds", "2", "--paillier-bits", "1024", "--sketch-dim", "64",
        "--attack", "lying_sketch:base=scaling", "--second-attack", "ipm",
        "--second-partition", "same", "--quiet", "--out", str(out),
    ]  # fmt: skip
    data = _run_cli(argv, out / "results.json")
    rows = {name: r for name, r in data.items()}
    lying = next(r for n, r in rows.items() if n.startswith("lying_sketch") and "multi_krum" in n)
    assert all(h["verification"] == "failed" for h in lying["history"])
    ipm = next(r for n, r in rows.items() if n.startswith("ipm") and "multi_krum" in n)
    assert all(h["verification"] == "passed" for h in ipm["history"])
    assert ipm["config"]["sketch_dim"] == 64 and ipm["config"]["secure"]
    assert ipm["summary"]["final_accuracy"] > 0.3
    assert "[secure]" in capsys.readouterr().out


def test_cli_matrix_secure(tmp_path):
    argv = [
        "matrix", "--secure", "--clip", "2", "--defences", "multi_krum", "--attacks", "scaling",
        "--clients", "8", "--f", "2", "--rounds", "1", "--paillier-bits", "1024",
        "--sketch-dim", "32", "--quiet", "--out", str(tmp_path),
    ]  # fmt: skip
    data = _run_cli(argv, tmp_path / "matrix.json")
    cells = data if isinstance(data, list) else data.get("cells", data)
    text = json.dumps(cells)
    assert '"secure": true' in text and "multi_krum" in text
