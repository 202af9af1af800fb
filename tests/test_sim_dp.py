"""Differential privacy in the simulations: ``--dp-epsilon`` central, local and before_filter,
through the CLI entry point, the runner and the matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dp
from simulations.cli import main
from simulations.config import SimulationConfig
from simulations.datasets import load_dataset
from simulations.errors import ConfigError
from simulations.matrix import run_matrix
from simulations.runner import Simulation, run_simulation

DELTA = 1e-5


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, seed=0)


def _run_cli(tmp_path, *options: str) -> dict:
    out = tmp_path / "out"
    code = main(["simulate", "-q", "--out", str(out), *options])
    assert code == 0
    return json.loads((out / "results.json").read_text())


def test_central_dp_through_the_cli_spends_what_the_accountant_says(tmp_path):
    rounds, eps = 3, 4.0
    results = _run_cli(
        tmp_path,
        *("--rounds", str(rounds), "--clip", "2", "--dp-epsilon", str(eps)),
        *("--dp-delta", str(DELTA), "--no-baselines", "--second-attack", "none"),
    )
    (row,) = results.values()
    spent = [r["dp_epsilon"] for r in row["history"]]
    assert len(spent) == rounds
    assert all(b > a for a, b in zip(spent, spent[1:])), spent
    z = dp.noise_multiplier_for(eps, DELTA, rounds, 1.0)
    privacy = row["privacy"]
    assert privacy["mode"] == "central"
    assert privacy["noise_multiplier"] == pytest.approx(z, rel=1e-12)
    assert privacy["noise_std_sum"] == pytest.approx(z * 2.0, rel=1e-12)
    # the guarantee: at most the target; calibrated within 1% in z, so not far below it
    assert spent[-1] <= eps
    assert spent[-1] > 0.9 * eps
    for k, value in enumerate(spent, start=1):
        direct = dp.Accountant(DELTA)
        direct.compose_gaussian(z, 1.0, k)
        assert value == pytest.approx(direct.epsilon(), rel=1e-12)
    assert privacy["epsilon"] == spent[-1]
    assert row["summary"]["dp_epsilon"] == spent[-1]
    # the ledger restores to the same epsilon
    assert dp.Accountant.from_dict(privacy["accountant"]).epsilon() == pytest.approx(spent[-1])
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "epsilon spent" in md and "## Privacy" in md and "deterministic" in md
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 0


def test_central_noise_has_the_stated_std_and_is_added_after_the_defence(digits):
    cfg = SimulationConfig(
        clients=10, byzantine=2, attack="scaling", rounds=2, clip=2.0, dp_epsilon=4.0
    )
    sim = Simulation(cfg, dataset=digits)
    record = sim.step(0)
    z = dp.noise_multiplier_for(4.0, DELTA, 2, 1.0)
    assert record.accepted == 8  # Multi-Krum dropped the two scaled rows: noise-free input
    assert record.dp_noise_std == pytest.approx(z * 2.0 / record.accepted, rel=1e-12)
    noise = sim.privacy.last_noise
    d = noise.size
    assert d == sim.trainer.num_params
    # sample std of d normal draws: relative standard error 1/sqrt(2d); 5 of them
    assert np.std(noise) == pytest.approx(record.dp_noise_std, rel=5 / np.sqrt(2 * d))
    assert abs(np.mean(noise)) < 5 * record.dp_noise_std / np.sqrt(d)
    # the same run without DP aggregates the same rows: the released update is exactly that
    # noise-free aggregate plus the noise
    plain = Simulation(cfg.replace(dp_epsilon=None), dataset=digits)
    plain_record = plain.step(0)
    assert plain_record.byzantine_rejected == record.byzantine_rejected == 2
    np.testing.assert_allclose(
        sim.previous_aggregate, plain.previous_aggregate + noise, rtol=0, atol=1e-5
    )
    # seeded: the same seed draws the same noise, another seed other noise
    again = Simulation(cfg, dataset=digits)
    again.step(0)
    np.testing.assert_array_equal(again.privacy.last_noise, noise)
    other = Simulation(cfg.replace(seed=1), dataset=digits)
    other.step(0)
    assert not np.allclose(other.privacy.last_noise, noise)


def test_poisson_client_sampling_is_what_the_accountant_composes(digits):
    q, rounds = 0.5, 4
    cfg = SimulationConfig(
        clients=20,
        byzantine=0,
        attack="none",
        defence="mean",
        rounds=rounds,
        clip=2.0,
        dp_epsilon=8.0,
        dp_sampling_rate=q,
    )
    result = run_simulation(cfg, dataset=digits, raise_errors=True)
    taking_part = [r.participants for r in result.history]
    assert all(p < 20 for p in taking_part) and np.mean(taking_part) == pytest.approx(10, abs=4)
    z = dp.noise_multiplier_for(8.0, DELTA, rounds, q)
    direct = dp.Accountant(DELTA)
    direct.compose_gaussian(z, q, rounds)
    assert result.final_epsilon == pytest.approx(direct.epsilon(), rel=1e-12)
    assert result.privacy["sampling_rate"] == q
    # the sampling draws from its own stream: without it the run's other choices are unchanged
    base = Simulation(cfg.replace(dp_epsilon=None, dp_sampling_rate=1.0), dataset=digits)
    assert base.byzantine_ids == Simulation(cfg, dataset=digits).byzantine_ids


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dp-epsilon", "4"], "needs --clip"),
        (["--dp-epsilon", "4", "--dp-mode", "before_filter"], "needs --clip"),
        (["--dp-mode", "local"], "without --dp-epsilon"),
        (["--dp-epsilon", "4", "--clip", "1", "--dp-mode", "distributed"], "needs --secure"),
        (["--dp-epsilon", "0", "--clip", "1"], "dp_epsilon must be > 0"),
        (["--dp-epsilon", "4", "--clip", "1", "--dp-sampling-rate", "1.5"], "dp_sampling_rate"),
        (["--dp-epsilon", "4", "--dp-mode", "local", "--training", "dsgd"], "fedavg"),
        (
            ["--dp-epsilon", "4", "--clip", "1", "--dp-mode", "before_filter", "--secure"],
            "plaintext",
        ),
    ],
)
def test_bad_dp_options_are_refused_in_one_line(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "-q", "--rounds", "1", "--out", str(tmp_path), *options])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "results.json").exists()


def test_local_dp_trains_with_opacus_and_reports_each_clients_epsilon(digits):
    eps = 4.0
    cfg = SimulationConfig(
        clients=4,
        byzantine=1,
        attack="sign_flip",
        defence="mean",
        rounds=2,
        dp_epsilon=eps,
        dp_mode="local",
    )
    result = run_simulation(cfg, dataset=digits, raise_errors=True)
    assert result.status == "completed"
    p = result.privacy
    assert p["mode"] == "local" and len(p["client_epsilon"]) == 4
    # Opacus calibrates within its tolerance (0.01) for local epochs x rounds: all spent
    for value in p["client_epsilon"].values():
        assert 0.9 * eps < value <= eps + 0.01
    spent = result.epsilon_per_round
    assert spent[0] < spent[1] == p["epsilon"]
    # DP-SGD changes what clients send: the clipped, noised steps differ from plain SGD
    # (DP off is dp_epsilon=None with the other DP options at their defaults)
    plain = Simulation(cfg.replace(dp_epsilon=None, dp_mode="central"), dataset=digits)
    noisy = Simulation(cfg, dataset=digits)
    plain.step(0)
    noisy.step(0)
    assert not np.allclose(plain.previous_aggregate, noisy.previous_aggregate, atol=1e-4)
    # deterministic: the same seed trains the same noisy updates
    again = Simulation(cfg, dataset=digits)
    again.step(0)
    np.testing.assert_array_equal(again.previous_aggregate, noisy.previous_aggregate)


def test_before_filter_noise_lets_the_attack_past_the_filter(digits):
    cfg = SimulationConfig(
        clients=10, byzantine=2, attack="scaling", rounds=1, clip=2.0, dp_epsilon=4.0
    )
    central = run_simulation(cfg, dataset=digits, raise_errors=True)
    before = run_simulation(cfg.replace(dp_mode="before_filter"), dataset=digits)
    assert central.history[0].byzantine_rejected == 2
    assert before.history[0].byzantine_rejected < 2
    assert before.final_epsilon == pytest.approx(central.final_epsilon)
    assert any("HARMFUL" in note for note in before.notes)


def test_dp_options_are_in_the_config_key_only_when_set():
    # the key of the default config before the DP options existed: stored cells still resume
    assert SimulationConfig().key() == "ded8230d4589ccc5"
    dp_cfg = SimulationConfig(clip=2.0, dp_epsilon=4.0)
    assert dp_cfg.key() != SimulationConfig(clip=2.0).key()
    assert dp_cfg.key() != dp_cfg.replace(dp_epsilon=8.0).key()
    assert dp_cfg.key() != dp_cfg.replace(dp_delta=1e-6).key()
    assert dp_cfg.key() != dp_cfg.replace(dp_mode="before_filter").key()
    with pytest.raises(ConfigError, match="--dp-delta"):
        SimulationConfig(dp_delta=1e-6)


def test_matrix_takes_the_dp_options_and_resumes(tmp_path, capsys):
    out = tmp_path / "m"
    argv = [
        "matrix",
        "-q",
        "--out",
        str(out),
        *("--rounds", "2", "--clients", "6", "--f", "1", "--clip", "2"),
        *("--attacks", "scaling", "--defences", "mean,multi_krum", "--dp-epsilon", "4"),
    ]
    assert main(argv) == 0
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    summary = json.loads((out / "matrix.json").read_text())
    assert all(c["dp_epsilon"] is not None and c["dp_epsilon"] <= 4 for c in summary["cells"])
    assert "central DP (eps=4" in (out / "matrix.md").read_text()
    # again: every cell resumed, none recomputed
    assert main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == stamps
    # another epsilon is another cell
    assert main([*argv[:-1], "8"]) == 0
    assert len(list((out / "cells").glob("*.json"))) == 4
    # run_matrix reports the resumed cells as such
    base = SimulationConfig(rounds=2, clients=6, byzantine=1, clip=2.0, dp_epsilon=4.0)
    resumed = []
    run_matrix(
        base,
        attacks=["scaling"],
        defences=["mean", "multi_krum"],
        fs=[1],
        partitions=["iid"],
        out_dir=out,
        on_cell=lambda i, n, s, was: resumed.append(was),
    )
    assert resumed == [True, True]


def test_distributed_dp_under_secure_filtering_spends_the_discrete_mechanisms_epsilon(digits):
    # every client adds a seeded discrete Gaussian share; the filter reads noise-free sketches,
    # the key holder regenerates the accepted shares and every round still verifies
    from simulations.runner import paillier_key

    cfg = SimulationConfig(
        clients=10,
        byzantine=2,
        attack="scaling",
        defence="multi_krum",
        rounds=2,
        clip=1.0,
        secure=True,
        paillier_bits=1024,
        sketch_dim=32,
        dp_epsilon=8.0,
        dp_mode="distributed",
    )
    sim = Simulation(cfg, dataset=digits)
    result = sim.run()
    privacy = result.privacy
    assert privacy["mode"] == "distributed" and privacy["mechanism"] == "ddg"
    spent = privacy["epsilon_per_round"]
    assert len(spent) == 2 and spent[0] < spent[1] <= 8.0
    # the discrete mechanism's own accountant, composed directly, gives the same epsilon
    direct = dp.Accountant(DELTA)
    direct.compose(sim.privacy.mechanism.event(1.0, count=2))
    assert spent[-1] == pytest.approx(direct.epsilon(), rel=1e-9)
    # the shares: std sigma_total / sqrt(n - 2f) each, at the round's capped precision
    assert privacy["honest_shares_counted"] == 6
    assert privacy["adjacency"] == "replace_one" and privacy["sensitivity"] == 2.0
    assert privacy["share_std"] == pytest.approx(privacy["noise_std_sum"] / np.sqrt(6))
    last = sim.last_secure_round
    assert last.verification.passed and last.config.noise is not None
    assert last.config.encoder.scale == privacy["fixed_point_scale"]
    # the scaled (Byzantine) rows were rejected on the noise-free sketches
    assert set(sim.byzantine_ids).isdisjoint(last.survivors)
    assert paillier_key(1024) is sim._keyholder_key()


def _distributed_config(**kw) -> SimulationConfig:
    base = dict(
        clients=10, byzantine=2, defence="multi_krum", rounds=10, clip=1.0, secure=True,
        paillier_bits=1024, sketch_dim=32, dp_epsilon=4.0, dp_mode="distributed",
    )  # fmt: skip
    return SimulationConfig(**{**base, **kw})


def test_distributed_dp_is_replace_one_at_twice_the_central_noise():
    # a client's own share rules out add/remove (dp/NOTES.md): the ledger is replace-one, whose
    # sensitivity 2C costs twice the central multiplier at q = 1, within the 2% search step
    # (the discrete mechanism is never cheaper than the Gaussian it approximates)
    from simulations.privacy import DistributedPrivacy, noise_multiplier

    priv = DistributedPrivacy(_distributed_config(), dim=4096)
    central = noise_multiplier(4.0, DELTA, 10, 1.0)
    assert 2 * central / 1.02 <= priv.z <= 2 * central * 1.03
    acc = dp.Accountant(DELTA)
    acc.compose(priv.mechanism.event(1.0, 10))
    assert acc.epsilon() <= 4.0
    assert acc.events[0].adjacency == "replace_one"
    # the zero-out ledger of the same noise would claim far less than the target
    zero = dp.Accountant(DELTA)
    zero.compose(priv.mechanism.event(1.0, 10, adjacency="zero_out"))
    assert zero.epsilon() < 0.6 * acc.epsilon()


@pytest.mark.parametrize(
    "kw,match", [(dict(dp_sampling_rate=0.5), "dp-sampling-rate 1"), (dict(dropout=0.1), "dropout")]
)
def test_distributed_dp_refuses_rounds_with_fewer_shares_than_counted(kw, match):
    from simulations.privacy import DistributedPrivacy

    with pytest.raises(ConfigError, match=match):
        DistributedPrivacy(_distributed_config(**kw), dim=64)


def test_local_dp_refuses_absolute_cuts_that_do_not_widen_with_the_noise():
    with pytest.raises(ConfigError, match="absolute cut"):
        SimulationConfig(
            dp_epsilon=4.0,
            dp_mode="local",
            defence="distance_filter",
            defence_params={"max_distance": 1.0},
        )
    with pytest.raises(ConfigError, match="norm_filter with max_norm"):
        SimulationConfig(dp_epsilon=4.0, dp_mode="local", pre=[("norm_filter", {"max_norm": 2.0})])
    # the relative cut widens with the honest spread: accepted
    cfg = SimulationConfig(dp_epsilon=4.0, dp_mode="local", defence="distance_filter")
    assert cfg.defence == "distance_filter"
    # and an absolute cut is fine without local DP
    SimulationConfig(defence="distance_filter", defence_params={"max_distance": 1.0})
