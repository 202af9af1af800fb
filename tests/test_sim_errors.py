"""simulations' errors are fortis errors, and the CLI reports each in one line before training.

The package-wide check (every public error class derives from ``fortis.FortisError``) is in
``tests/test_errors.py``; here: what the runner raises, and what the ``fortis`` command does
with it.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import robust
import simulations.runner as runner_mod
from fortis import FortisError
from simulations.cli import main
from simulations.config import SimulationConfig
from simulations.errors import ConfigError, SecureRoundError, SimulationError
from simulations.replication import ReplicationError
from simulations.runner import Simulation, check_components, run_simulation

FAST = dict(clients=10, byzantine=2, rounds=2, seed=3)


def _no_training(monkeypatch):
    """Make any attempt to train fail the test."""
    monkeypatch.setattr(Simulation, "run", lambda *a, **k: pytest.fail("a run trained"))
    monkeypatch.setattr(Simulation, "step", lambda *a, **k: pytest.fail("a round ran"))


def _one_line_error(capsys, argv, tmp_path) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--quiet", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"fortis {argv[0]}: error: ")
    assert not (tmp_path / "out").exists()  # no report, not even an empty one
    return err


@pytest.mark.parametrize(
    "argv, needle",
    [
        # was a TypeError traceback: robust.aggregate() got multiple values for 'f'
        (["simulate", "--defence", "median", "--defence-param", "f=3"], "--defence-f"),
        (["matrix", "--defences", "krum:f=2"], "f is not a rule parameter"),
        (["simulate", "--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "/nonexistent"),
        # was two rows failing after the baseline trained: labels 0..9 do not fit 3 classes
        (
            ["simulate", "--attack", "label_flip", "--attack-param", "num_classes=3"],
            "labels must lie in [0, 3)",
        ),
        (["simulate", "--secure", "--secure-bits", "70", "--defence", "mean"], "secure_bits"),
        # was a TypeError traceback: robust.aggregate() got multiple values for 'pre'
        (["simulate", "--defence-param", "pre=clip"], "pre is not a rule parameter"),
        # were ignored: a secure round and a replicated one never ran the rule's parameters
        (["simulate", "--secure", "--defence", "mean:zz=1"], "unknown parameter 'zz' for mean"),
        (["simulate", "--replication", "2", "--defence", "krum:m=3"], "unknown parameter 'm'"),
    ],
)
def test_bad_options_are_one_line_before_any_round(argv, needle, tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    assert needle in _one_line_error(capsys, argv, tmp_path)


@pytest.mark.parametrize(
    "argv, message",
    [
        # Parameters robust's registry declares invalid: a bound, a type.
        (
            ["simulate", "--defence", "bucketing:s=-1+krum"],
            "defence 'bucketing(s=-1)+krum': s must be >= 1, got -1",
        ),
        (
            ["matrix", "--defences", "median,sign_vote:threshold=high"],
            "defence 'sign_vote(threshold=high)': threshold must be a real number in [0.5, 1), "
            "got 'high'",
        ),
        (
            ["simulate", "--defence", "krum", "--pre", "clip"],
            "defence 'clip+krum': clip needs max_norm= (L2 norm bound of a client's update)",
        ),
        (
            ["simulate", "--defence", "bucketing:s=3+krum"],
            "defence 'bucketing(s=3)+krum' cannot run with 20 clients and f=4: krum (after "
            "bucketing: 7 rows) needs n >= 2f+3 = 11, got n=7 (f=4)",
        ),
        (
            ["simulate", "--defence", "nnm+krun"],
            "defence 'nnm+krun': unknown rule 'krun'; known: "
            + ", ".join(robust.stages("rule"))
            + "; `fortis defences` describes each",
        ),
        (
            ["matrix", "--pre", "clip:max_norm=1", "--pre", "bucket"],
            "defence 'clip(max_norm=1)+bucket+mean': unknown pre-aggregator 'bucket'; known: "
            + ", ".join(robust.stages("pre"))
            + "; `fortis defences` describes each",
        ),
    ],
)
def test_the_registry_refuses_a_defence_in_one_line_before_any_round(
    argv, message, tmp_path, capsys, monkeypatch
):
    _no_training(monkeypatch)
    assert _one_line_error(capsys, argv, tmp_path) == f"fortis {argv[0]}: error: {message}\n"


def test_a_defence_is_checked_without_running_it(monkeypatch):
    """The registry checks a defence from its spec alone: nothing aggregates, not even random
    rows (a rule's error on made-up data would name made-up sizes)."""
    for name in ("aggregate", "aggregate_detailed"):
        monkeypatch.setattr(robust, name, lambda *a, **k: pytest.fail("aggregated"))
    check_components(SimulationConfig(defence="centered_clipping", pre=(("bucketing", {}),)))
    with pytest.raises(ConfigError, match=r"center must be a vector, got shape \(\)"):
        check_components(
            SimulationConfig(defence="centered_clipping", defence_params={"center": 3})
        )


def test_secure_bits_70_is_refused_by_the_installed_command_before_training(tmp_path):
    fortis = Path(sys.executable).with_name("fortis")
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(fortis), "simulate", "--secure", "--secure-bits", "70", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    # Not quiet, yet nothing about data, rows or rounds: refused before the dataset loaded.
    assert proc.stderr == "fortis simulate: error: secure_bits must be an int in [2, 64], got 70\n"
    assert proc.stdout == "" and not out.exists()


def test_any_fortis_error_from_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    def deep(*a, **k):
        raise SimulationError("raised deep inside the grid")

    monkeypatch.setattr("simulations.matrix.run_matrix", deep)
    err = _one_line_error(capsys, ["matrix", "--rounds", "1"], tmp_path)
    assert err == "fortis matrix: error: raised deep inside the grid\n"


def test_simulation_errors_are_fortis_value_errors():
    for cls in (ConfigError, SecureRoundError, ReplicationError):
        assert issubclass(cls, SimulationError)
    assert issubclass(SimulationError, FortisError) and issubclass(SimulationError, ValueError)


def test_an_aborted_secure_round_is_a_secure_round_error(digits):
    # 6 of 10 clients send NaN: they cannot encode, drop at the masked-input stage, and the
    # 4 left are below the threshold t = 6.
    cfg = SimulationConfig(**{**FAST, "byzantine": 6}, attack="nan", defence="mean", secure=True)
    res = run_simulation(cfg, dataset=digits)
    assert res.status == "failed"
    assert res.failure.error.startswith("SecureRoundError: secure round 1 aborted")
    with pytest.raises(SecureRoundError, match="aborted"):
        run_simulation(cfg, dataset=digits, raise_errors=True)


def test_a_protocol_error_in_a_secure_round_is_wrapped(digits, monkeypatch):
    from secagg import SecAggError

    def refuses(*a, **k):
        raise SecAggError("injected protocol refusal")

    monkeypatch.setattr("protocol.run_round", refuses)
    cfg = SimulationConfig(**FAST, attack="none", defence="mean", secure=True)
    with pytest.raises(SecureRoundError, match="secure round 1: injected") as exc:
        run_simulation(cfg, dataset=digits, raise_errors=True)
    assert isinstance(exc.value.__cause__, SecAggError)


def test_no_replication_majority_is_a_replication_error(digits, monkeypatch):
    monkeypatch.setattr(
        "simulations.replication.majority_filter",
        lambda X, groups: (np.empty((0, X.shape[1])), np.zeros(len(X), bool), []),
    )
    cfg = SimulationConfig(**FAST, attack="none", defence="mean", replication=2)
    with pytest.raises(ReplicationError, match="round 1: no replication group"):
        run_simulation(cfg, dataset=digits, raise_errors=True)


def test_setup_errors_raise_and_unexpected_ones_are_recorded(digits, monkeypatch):
    def typed(*a, **k):
        raise ConfigError("typed refusal while building the trainer")

    monkeypatch.setattr(runner_mod, "LocalTrainer", typed)
    with pytest.raises(ConfigError, match="typed refusal"):
        run_simulation(SimulationConfig(**FAST), dataset=digits)


@pytest.fixture(scope="module")
def digits():
    from simulations.datasets import load_dataset

    return load_dataset("digits", seed=3)
