"""End-to-end runs of the robustness lab on real data (digits), kept small and fast."""

import json

import numpy as np
import pytest

import robust
import simulations.matrix as matrix_mod
from simulations.cli import main
from simulations.config import ConfigError, SimulationConfig
from simulations.datasets import load_dataset
from simulations.matrix import run_matrix
from simulations.runner import RunResult, check_components, run_simulation
from simulations.testing import ThreatModel

FAST = dict(clients=10, byzantine=2, rounds=6, seed=3)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=3)


def test_scaling_collapses_mean_and_median_holds(digits):
    clean = run_simulation(
        SimulationConfig(**{**FAST, "byzantine": 0}, attack="none", defence="mean"), dataset=digits
    )
    attacked = run_simulation(
        SimulationConfig(**FAST, attack="scaling", defence="mean"), dataset=digits
    )
    defended = run_simulation(
        SimulationConfig(**FAST, attack="scaling", defence="median"), dataset=digits
    )
    assert clean.final_accuracy > 0.85
    assert attacked.final_accuracy < 0.5
    assert defended.final_accuracy > clean.final_accuracy - 0.1
    assert len(defended.history) == FAST["rounds"]


def test_rejections_are_attributed_to_honest_or_byzantine(digits):
    res = run_simulation(SimulationConfig(**FAST, attack="scaling", defence="krum"), dataset=digits)
    for rec in res.history:
        # Krum keeps exactly one row; with a -20x scaled attack it must be an honest one.
        assert rec.accepted == 1
        assert rec.byzantine_rejected == rec.byzantine_participants
        assert rec.honest_rejected == rec.participants - rec.byzantine_participants - 1


def test_nan_attack_never_reaches_the_model(digits):
    res = run_simulation(
        SimulationConfig(**FAST, attack="nan", defence="trimmed_mean"), dataset=digits
    )
    assert all(np.isfinite(r.loss) for r in res.history if r.loss is not None)
    assert res.final_accuracy > 0.8


def test_runs_are_deterministic(digits):
    cfg = SimulationConfig(**FAST, attack="alie", defence="median", dropout=0.2, stragglers=0.2)
    a, b = (run_simulation(cfg, dataset=digits) for _ in range(2))
    assert [r.accuracy for r in a.history] == [r.accuracy for r in b.history]
    assert [r.participants for r in a.history] == [r.participants for r in b.history]


def test_result_round_trips_through_json(digits):
    res = run_simulation(SimulationConfig(**{**FAST, "rounds": 2}), dataset=digits)
    again = RunResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again.config == res.config and again.accuracies == res.accuracies


def test_secure_mode_refuses_robust_rules_instead_of_downgrading():
    with pytest.raises(ConfigError, match="secure"):
        run_simulation(SimulationConfig(**FAST, secure=True, defence="median"))
    with pytest.raises(ConfigError, match="pre-aggregator 'clip': clipping runs on each client"):
        run_simulation(
            SimulationConfig(**FAST, secure=True, defence="mean", pre=(("clip", {"max_norm": 1}),))
        )
    with pytest.raises(ConfigError, match="pre-aggregator 'bucketing'.*rows"):
        check_components(
            SimulationConfig(
                **FAST, secure=True, clip=1.0, defence="multi_krum", pre=(("bucketing", {}),)
            )
        )
    with pytest.raises(ConfigError, match="needs --clip C"):
        check_components(SimulationConfig(**FAST, secure=True, defence="multi_krum"))


@pytest.mark.parametrize("rule", robust.stages("rule"))
def test_secure_mode_says_why_from_the_protocol(rule):
    """The rules of protocol.SECURE_RULES run on encrypted sketches; every other rule is
    refused with the protocol's own reason (protocol.check_secure_rule)."""
    from protocol import SECURE_RULES, ProtocolConfigError, check_secure_rule

    cfg = SimulationConfig(**FAST, defence=rule, clip=1.0)
    if rule in SECURE_RULES:
        check_components(cfg.replace(secure=True))
        return
    with pytest.raises(ProtocolConfigError) as why:
        check_secure_rule(rule)
    with pytest.raises(ConfigError) as exc:
        check_components(cfg.replace(secure=True))
    assert " ".join(str(why.value).split()) in str(exc.value)
    assert "multi_krum" in str(exc.value)


def test_replication_catches_every_deviating_replica(digits):
    cfg = SimulationConfig(
        clients=9, byzantine=2, replication=3, rounds=3, attack="sign_flip", defence="mean", seed=5
    )
    res = run_simulation(cfg, dataset=digits)
    # This seed puts the two Byzantine clients in different groups of 3, so each is outvoted.
    assert len({i // 3 for i in res.byzantine_ids}) == 2
    for rec in res.history:
        assert rec.byzantine_rejected == rec.byzantine_participants == 2
        assert rec.honest_rejected == 0
    assert any("replication r=3" in note and "3 distinct updates" in note for note in res.notes)


def test_threat_model_helper_asserts(digits):
    tm = ThreatModel(clients=10, rounds=6, seed=3)
    tm.assert_holds("median", "scaling", f=2, min_accuracy=0.8)
    with pytest.raises(AssertionError, match="fell to"):
        tm.assert_holds("mean", "scaling", f=2, min_accuracy=0.8)


def test_fixture_is_registered(fortis_threat_model):
    assert isinstance(fortis_threat_model, ThreatModel)


def test_matrix_resumes_completed_cells(tmp_path, monkeypatch):
    base = SimulationConfig(clients=8, byzantine=1, rounds=2, seed=1)
    kw = dict(
        attacks=["sign_flip", "scaling"],
        defences=["mean", "bucketing+median"],
        fs=[1],
        partitions=["iid"],
        out_dir=tmp_path,
    )
    seen = []
    cells = run_matrix(base, **kw, on_cell=lambda i, n, s, resumed: seen.append(resumed))
    assert len(cells) == 4 and seen == [False] * 4
    assert (tmp_path / "matrix.md").read_text().count("| worst case |") == 1
    assert (tmp_path / "matrix.png").stat().st_size > 0

    def boom(*a, **k):
        raise AssertionError("a completed cell was recomputed")

    monkeypatch.setattr(matrix_mod, "run_simulation", boom)
    seen.clear()
    again = run_matrix(base, **kw, on_cell=lambda i, n, s, resumed: seen.append(resumed))
    assert seen == [True] * 4
    assert [c["final_accuracy"] for c in again] == [c["final_accuracy"] for c in cells]


def test_cli_simulate_writes_report(tmp_path, capsys):
    out = tmp_path / "sim"
    common = ["simulate", "--clients", "10", "-f", "2", "--quiet", "--out", str(out)]
    assert main([*common, "--rounds", "2", "--defence", "bucketing:s=2+median"]) == 0
    data = json.loads((out / "results.json").read_text())
    # clean, attack undefended, attack defended; then on the second (non-IID) partition:
    # clean, second attack defended, second attack undefended.
    assert len(data) == 6
    assert {r["config"]["partition"] for r in data.values()} == {"iid", "dirichlet"}
    assert (out / "accuracy.png").stat().st_size > 0
    md = (out / "summary.md").read_text()
    assert "honest rejected" in md and "bucketing(s=2)+median" in md

    assert (
        main([*common, "--rounds", "1", "--partition", "label_sorted", "--second-attack", "none"])
        == 0
    )
    data = json.loads((out / "results.json").read_text())
    assert {r["config"]["partition"] for r in data.values()} == {"label_sorted"}


def test_cli_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--secure", "--defence", "median", "--quiet"])
    assert exc.value.code == 2
    assert "secure" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--attack", "teleport", "--quiet"])
    assert "teleport" in capsys.readouterr().err


def test_secure_mode_matches_plaintext_up_to_quantisation(digits):
    from simulations.runner import Simulation

    cfg = SimulationConfig(
        clients=6, byzantine=0, attack="none", defence="mean", rounds=3, clip=1.0, seed=2
    )
    plain, secure = (
        Simulation(cfg, dataset=digits),
        Simulation(cfg.replace(secure=True), dataset=digits),
    )
    rp, rs = plain.run(), secure.run()
    diff = np.abs(plain.params - secure.params).max()
    # 32-bit fixed point over 6 clients with range 1.0: resolution ~ 2^-28 per coordinate/round.
    assert 0 < diff < 1e-5
    assert abs(rp.final_accuracy - rs.final_accuracy) <= 1 / len(digits.y_test)
    assert all(r.bytes_sent > 0 for r in rs.history)


def test_secure_mode_drops_a_client_that_cannot_encode(digits):
    cfg = SimulationConfig(
        clients=6,
        byzantine=1,
        attack="nan",
        defence="mean",
        rounds=2,
        clip=1.0,
        secure=True,
        seed=2,
    )
    res = run_simulation(cfg, dataset=digits)
    for rec in res.history:
        assert rec.byzantine_rejected == 1 and rec.honest_rejected == 0
    assert res.final_accuracy > 0.5


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--defence", "krumm"], "krumm"),
        (["--pre", "shuffle"], "shuffle"),
        (["--attack", "alie", "--attack-param", "zz=3"], "zz"),
        (["--second-attack", "teleport"], "teleport"),
        (["--model", "resnet"], "resnet"),
        (["--partition", "weird"], "weird"),
    ],
)
def test_cli_rejects_unknown_names_before_training(args, needle, capsys, monkeypatch):
    import simulations.runner as runner_mod

    monkeypatch.setattr(runner_mod.Simulation, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--quiet", *args])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_label_flip_and_backdoor_run_with_dataset_parameters(digits):
    flip = run_simulation(
        SimulationConfig(**FAST, attack="label_flip", defence="median"), dataset=digits
    )
    assert flip.final_accuracy > 0.7
    cfg = SimulationConfig(
        clients=10,
        byzantine=4,
        rounds=8,
        seed=3,
        attack="backdoor",
        defence="mean",
        attack_params={"target": 0, "fraction": 1.0},
    )
    bd = run_simulation(cfg, dataset=digits)
    assert all(r.backdoor_asr is not None for r in bd.history)
    assert bd.final_backdoor_asr > 0.3  # 40% of clients with a 3x3 trigger: the backdoor lands


def test_impossible_defence_fails_with_the_bound_named(digits):
    # bucketing s=2 leaves 5 rows; Krum needs n >= 2f+3 = 7 for f=2.
    cfg = SimulationConfig(
        clients=10, byzantine=2, rounds=2, defence="krum", pre=(("bucketing", {}),)
    )
    with pytest.raises(ConfigError, match="2f\\+3"):
        run_simulation(cfg, dataset=digits)


def test_bucketing_and_centered_clipping_defaults_are_reproducible(digits):
    cfg = SimulationConfig(
        **FAST, attack="alie", defence="centered_clipping", pre=(("bucketing", {}),)
    )
    a, b = run_simulation(cfg, dataset=digits), run_simulation(cfg, dataset=digits)
    assert a.accuracies == b.accuracies
    assert a.final_accuracy > 0.7


def test_matrix_applies_global_pre_and_params_and_keeps_variants_apart():
    from simulations.matrix import matrix_configs

    base = SimulationConfig(pre=(("clip", {"max_norm": 5}),), defence_params={"tau": 2})
    grid = matrix_configs(
        base,
        ["alie"],
        ["centered_clipping", "centered_clipping:tau=0.5", "bucketing+median"],
        [4],
        ["iid"],
    )
    cfgs = [cfg for _, cfg in grid]
    assert cfgs[0].defence_params == {"tau": 2} and cfgs[1].defence_params == {"tau": 0.5}
    assert all(c.pre[0] == ("clip", {"max_norm": 5}) for c in cfgs)
    assert cfgs[2].pre[1][0] == "bucketing"
    labels = [coords["defence"] for coords, _ in grid]
    assert len(set(labels)) == 3


def test_bucketing_runs_are_reproducible_but_shuffle_each_round(digits):
    cfg = SimulationConfig(**FAST, attack="alie", defence="median", pre=(("bucketing", {"s": 2}),))
    a, b = run_simulation(cfg, dataset=digits), run_simulation(cfg, dataset=digits)
    assert a.accuracies == b.accuracies
    c = run_simulation(cfg.replace(seed=4), dataset=digits)
    assert c.accuracies != a.accuracies


def test_server_side_packages_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['sklearn'] = None\n"
        "import robust, secagg, protocol, dp\n"
        "assert 'simulations' not in sys.modules\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cli_simulate_runs_each_distinct_row_once(tmp_path):
    # The second attack defaults to alie on dirichlet: here it repeats the first attack's rows.
    out = tmp_path / "sim"
    argv = ["simulate", "--clients", "10", "-f", "2", "--rounds", "1", "--quiet"]
    assert main([*argv, "--attack", "alie", "--partition", "dirichlet", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert sorted(data) == [
        "alie on dirichlet, mean",
        "alie on dirichlet, multi_krum",
        "clean on dirichlet, mean",
    ]


def test_adaptive_attack_with_dropouts_skips_rounds_the_defence_cannot_run(digits):
    """With 20% dropout some rounds leave fewer than 2f+3 rows for Multi-Krum. The adaptive
    attack simulates the defence on those rows, so it hits the bound too: the round is skipped
    as an aggregation without enough clients, not a failed run (it crashed in round 1 before)."""
    cfg = SimulationConfig(
        **{**FAST, "rounds": 8},
        attack="adaptive",
        defence="multi_krum",
        partition="dirichlet",
        alpha=0.1,
        dropout=0.2,
    )
    res = run_simulation(cfg, dataset=digits)
    assert res.failure is None and res.status == "completed"
    skipped = [r for r in res.history if r.skipped]
    assert skipped and all("multi_krum needs n >= 2f+3" in r.skipped for r in skipped)
    assert len(skipped) < len(res.history) == cfg.rounds
