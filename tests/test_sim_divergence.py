"""A run never dies of what it measures (issue 12).

A model driven to non-finite values is the measured outcome of its row: the row is marked
diverged at chance accuracy, its remaining rounds are skipped, and the other rows and matrix
cells complete. An unexpected error in one row is recorded as that row's failure. Configuration
errors are refused in one line before anything trains.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

import robust
import simulations.matrix as matrix_mod
import simulations.runner as runner_mod
from simulations.cli import main
from simulations.config import ConfigError, SimulationConfig
from simulations.datasets import load_dataset
from simulations.errors import SimulationStateError
from simulations.matrix import run_matrix
from simulations.runner import DIVERGENCE_KINDS, RunResult, Simulation, run_simulation

FAST = dict(clients=10, byzantine=2, rounds=4, seed=3)


def _strict_json(path):
    """Parse a report file, refusing NaN/Infinity (not JSON)."""

    def refuse(token):
        raise AssertionError(f"{path.name} holds {token}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=3)


class _LeakyDefence(Simulation):
    """A defence that lets a non-finite aggregate through in round 2. The rules in `robust`
    never do (they reject non-finite rows), so the aggregate check is driven this way."""

    def _aggregate(self, X):
        vector, accepted = super()._aggregate(X)
        if self._round_idx == 1:
            vector = np.full_like(vector, np.nan)
        return vector, accepted


# Real configurations that each diverge first at a different place. The scaling attack's
# factor and the server learning rate pick the magnitude of the parameters after round 1.
DIVERGING = {
    # float32 parameters ~1e37 are finite but the logits overflow: test loss inf.
    "test loss": (
        dict(attack="scaling", attack_params={"factor": -1e38}, defence="mean"),
        "loss",
        0,
        "test loss",
    ),
    # The same model, evaluated only every 4 rounds: round 2's training loss shows it first.
    "training loss": (
        dict(attack="scaling", attack_params={"factor": -1e38}, defence="mean", eval_every=4),
        "loss",
        1,
        "training loss",
    ),
    # A finite aggregate (norm ~1e35) times server_lr 1e6 overflows float32.
    "parameters": (
        dict(attack="scaling", attack_params={"factor": -1e36}, defence="mean", server_lr=1e6),
        "parameters",
        0,
        "overflowed",
    ),
    # Local distributed SGD with lr 1e39: the loss is finite, the step -lr * m is not.
    "honest updates": (
        dict(attack="scaling", defence="median", training="dsgd", lr=1e39),
        "honest_updates",
        0,
        "honestly trained update",
    ),
}


@pytest.mark.parametrize("case", sorted(DIVERGING))
def test_each_kind_of_divergence_ends_the_row_at_chance(digits, case):
    changes, kind, round_idx, needle = DIVERGING[case]
    res = run_simulation(SimulationConfig(**{**FAST, **changes}), dataset=digits)
    assert res.status == "diverged" and res.failure is None
    assert res.divergence.kind == kind and res.divergence.round == round_idx
    assert needle in res.divergence.reason
    # The divergence round is the last one run, scored at chance; later rounds are skipped.
    assert [r.round for r in res.history] == list(range(round_idx + 1))
    last = res.history[-1]
    assert last.diverged == kind and last.loss is None
    assert last.accuracy == res.chance_accuracy == pytest.approx(0.1)
    assert res.final_accuracy == pytest.approx(0.1)
    assert all(r.diverged is None for r in res.history[:-1])
    summary = res.summary()
    assert summary["status"] == "diverged" and summary["diverged_round"] == round_idx
    assert summary["rounds_run"] == round_idx + 1 and kind in summary["reason"]
    assert any(kind in note for note in res.notes)


def test_a_non_finite_aggregate_is_never_applied(digits):
    cfg = SimulationConfig(**{**FAST, "byzantine": 0}, attack="none", defence="mean")
    sim = _LeakyDefence(cfg, digits)
    res = sim.run()
    assert res.status == "diverged" and res.divergence.kind == "aggregate"
    assert res.divergence.round == 1 and len(res.history) == 2
    assert res.history[0].accuracy > 0.5 and res.history[1].accuracy == pytest.approx(0.1)
    assert np.isfinite(sim.params).all()  # the model keeps round 1's parameters
    with pytest.raises(SimulationStateError, match="already diverged"):
        sim.step(2)


def test_every_kind_is_exercised():
    kinds = {kind for _, kind, _, _ in DIVERGING.values()} | {"aggregate"}
    assert kinds == set(DIVERGENCE_KINDS)


def test_a_diverged_result_round_trips_through_strict_json(digits, tmp_path):
    changes = DIVERGING["parameters"][0]
    res = run_simulation(SimulationConfig(**{**FAST, **changes}), dataset=digits)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res.to_dict()))
    again = RunResult.from_dict(_strict_json(path))
    assert again.divergence == res.divergence and again.status == "diverged"
    assert again.final_accuracy == res.final_accuracy


def test_an_unexpected_error_fails_only_its_run(digits, monkeypatch):
    real = robust.aggregate_detailed
    calls = []

    def flaky(X, rule, *args, **kwargs):
        calls.append(rule)
        if len(calls) == 3:
            raise RuntimeError("injected fault in the aggregator")
        return real(X, rule, *args, **kwargs)

    monkeypatch.setattr(robust, "aggregate_detailed", flaky)
    res = run_simulation(SimulationConfig(**FAST, attack="alie", defence="median"), dataset=digits)
    assert res.status == "failed" and res.divergence is None
    assert res.failure.round == 2 and "RuntimeError: injected fault" in res.failure.error
    assert "flaky" in res.failure.traceback
    assert len(res.history) == 2 and math.isnan(res.final_accuracy)
    assert res.summary()["final_accuracy"] is None
    with pytest.raises(RuntimeError, match="injected"):
        calls.clear()
        run_simulation(
            SimulationConfig(**FAST, attack="alie", defence="median"),
            dataset=digits,
            raise_errors=True,
        )


def test_a_failure_while_setting_up_is_recorded(digits, monkeypatch):
    def no_memory(*a, **k):
        raise MemoryError("injected while building the model")

    monkeypatch.setattr(runner_mod, "LocalTrainer", no_memory)
    res = run_simulation(SimulationConfig(**FAST), dataset=digits)
    assert res.status == "failed" and res.failure.round is None and res.history == []
    assert (
        res.describe_status()
        == "failed during setup: MemoryError: injected while building the model"
    )


def test_the_readme_mnist_row_that_crashed_now_diverges_and_stops():
    """Issue 12's row: the scaling attack against the plain mean, MNIST CNN, distributed SGD
    (what `fortis simulate --dataset mnist --model cnn --training dsgd` runs as its row 2)."""
    mnist = Path(__file__).resolve().parents[1] / "../shared/data/mnist"
    assert mnist.is_dir(), f"the MNIST IDX files are expected in {mnist.resolve()}"
    cfg = SimulationConfig(
        dataset="mnist",
        data_dir=str(mnist),
        model="cnn",
        training="dsgd",
        lr=0.5,
        clients=20,
        byzantine=4,
        attack="scaling",
        defence="mean",
        rounds=20,
    )
    res = run_simulation(cfg)
    assert res.status == "diverged", res.describe_status()
    assert 0 < res.divergence.round < 19 and len(res.history) == res.divergence.round + 1
    assert res.final_accuracy == pytest.approx(0.1)


def test_threat_model_helper_reports_a_failed_run(digits, monkeypatch):
    from simulations.testing import ThreatModel

    def broken(*a, **k):
        raise RuntimeError("injected")

    monkeypatch.setattr(robust, "aggregate_detailed", broken)
    with pytest.raises(AssertionError, match="failed in round 1: RuntimeError: injected"):
        ThreatModel(clients=10, rounds=2, seed=3).assert_breaks("median", "alie", 2, 1.0)


# -- the command line -------------------------------------------------------------------------
SIM = ["simulate", "--clients", "10", "-f", "2", "--rounds", "3", "--quiet"]


def test_simulate_marks_the_diverged_row_and_runs_the_rest(tmp_path, capsys):
    out = tmp_path / "sim"
    # Row 2 (scaling, no defence) diverges in round 1, as the README's MNIST CNN example does
    # later in its run; the rows after it must still run to the end.
    assert main([*SIM, "--attack-param", "factor=-1e38", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    undefended = "scaling(factor=-1e+38) on iid, mean"
    assert f"[2/6] {undefended}: diverged in round 1 (loss)" in err
    data = _strict_json(out / "results.json")
    statuses = {name: r["summary"]["status"] for name, r in data.items()}
    assert statuses.pop(undefended) == "diverged"
    assert set(statuses.values()) == {"completed"} and len(statuses) == 5
    for name in statuses:
        assert len(data[name]["history"]) == 3
    row = data[undefended]
    assert row["divergence"]["round"] == 0 and row["summary"]["final_accuracy"] == 0.1
    md = (out / "summary.md").read_text()
    assert "| 10.0% (chance) |" in md and "**diverged** r1 (loss)" in md
    assert "diverged in round 1 (loss): test loss inf" in md  # the notes give the reason
    assert (out / "accuracy.png").stat().st_size > 0


def test_simulate_records_a_failed_row_and_exits_1(tmp_path, capsys, monkeypatch):
    real = robust.aggregate_detailed

    def median_breaks(X, rule, *args, **kwargs):
        if rule == "median":
            raise RuntimeError("injected fault in median")
        return real(X, rule, *args, **kwargs)

    monkeypatch.setattr(robust, "aggregate_detailed", median_breaks)
    out = tmp_path / "sim"
    code = main([*SIM, "--defence", "median", "--second-attack", "none", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "[3/3] scaling on iid, median: failed in round 1: RuntimeError: injected fault" in err
    assert "1 of 3 runs failed" in err
    data = _strict_json(out / "results.json")
    assert {name: r["summary"]["status"] for name, r in data.items()} == {
        "clean on iid, mean": "completed",
        "scaling on iid, mean": "completed",
        "scaling on iid, median": "failed",
    }
    assert "median_breaks" in data["scaling on iid, median"]["failure"]["traceback"]
    assert "**failed** r1" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["simulate", "--alpha", "0"], "alpha"),
        (["simulate", "--rounds", "0"], "rounds must be >= 1"),
        (["simulate", "--momentum", "1"], "momentum"),
        (["simulate", "--gamma", "2", "--partition", "label_sorted"], "gamma"),
        (["simulate", "--clients", "2000", "-f", "1"], "2000 clients"),
        (["simulate", "--defence-param", "zz=3"], "unknown parameter 'zz'"),
        (["simulate", "--defence", "krum", "--clients", "6", "-f", "2"], "2f+3"),
        (["matrix", "--rounds", "0"], "rounds must be >= 1"),
        (["matrix", "--attacks", ","], "--attacks"),
        (["matrix", "--f", "two"], "--f"),
        (["matrix", "--alpha", "0", "--partitions", "dirichlet"], "alpha"),
        (["matrix", "--defences", "krum", "--clients", "6", "--f", "2"], "2f+3"),
    ],
)
def test_configuration_errors_are_one_line_before_training(
    args, needle, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(runner_mod.Simulation, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exc:
        main([*args, "--quiet", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # no report, not even an empty one


def test_config_refuses_invalid_numbers_by_name():
    for changes, field in [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"gamma": 1.5}, "gamma"),
        ({"momentum": 1.0}, "momentum"),
        ({"mu": -1.0}, "mu"),
        ({"lr": float("inf")}, "lr"),
        ({"server_lr": 0.0}, "server_lr"),
    ]:
        with pytest.raises(ConfigError, match=field):
            SimulationConfig(**changes)


# -- the matrix -------------------------------------------------------------------------------
def test_matrix_marks_a_diverged_cell_completes_the_grid_and_resumes_it(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "m"
    cli = ["matrix", "--clients", "10", "--rounds", "3", "--seed", "3", "--f", "2", "--quiet"]
    cli += ["--attacks", "scaling", "--attack-param", "factor=-1e38"]
    cli += ["--defences", "mean,median,trimmed_mean", "--out", str(out)]
    assert main(cli) == 0
    err = capsys.readouterr().err
    # --attack-param with a single attack is that attack's parameter, named in its label.
    assert "mean vs scaling(factor=-1e+38) (f=2), partition iid: diverged in round 1 (loss)" in err
    cells = _strict_json(out / "matrix.json")["cells"]
    assert {c["defence"]: c["status"] for c in cells} == {
        "mean": "diverged",
        "median": "completed",
        "trimmed_mean": "completed",
    }
    diverged = cells[0]
    assert diverged["final_accuracy"] == 0.1 and diverged["diverged_round"] == 0
    assert all(c["rounds_run"] == 3 and c["final_accuracy"] > 0.5 for c in cells[1:])
    md = (out / "matrix.md").read_text()
    assert "| mean | 10.0% (diverged r1) | **10.0%** |" in md
    assert "- mean vs scaling(factor=-1e+38) (partition iid, f = 2): diverged in round 1" in md
    assert (out / "matrix.png").stat().st_size > 0

    # A diverged cell is a result: it is stored and resumed, never recomputed.
    monkeypatch.setattr(matrix_mod, "run_simulation", lambda *a, **k: pytest.fail("rerun"))
    assert main(cli) == 0
    again = _strict_json(out / "matrix.json")["cells"]
    assert [c["status"] for c in again] == [c["status"] for c in cells]


def test_matrix_records_a_failed_cell_and_retries_it_next_time(tmp_path, monkeypatch):
    base = SimulationConfig(clients=10, byzantine=2, rounds=2, seed=3)
    kw = dict(
        attacks=["alie", "sign_flip"], defences=["mean", "median"], fs=[2], partitions=["iid"]
    )
    real = robust.aggregate_detailed

    def median_breaks(X, rule, *args, **kwargs):
        if rule == "median":
            raise MemoryError("injected")
        return real(X, rule, *args, **kwargs)

    monkeypatch.setattr(robust, "aggregate_detailed", median_breaks)
    out = tmp_path / "m"
    cli = ["matrix", "--clients", "10", "--rounds", "2", "--seed", "3", "--quiet"]
    cli += ["--attacks", "alie,sign_flip", "--defences", "mean,median", "--f", "2"]
    assert main([*cli, "--out", str(out)]) == 1
    cells = _strict_json(out / "matrix.json")["cells"]
    assert [c["status"] for c in cells] == ["completed", "completed", "failed", "failed"]
    assert all("MemoryError: injected" in c["reason"] for c in cells[2:])
    assert "| median | **failed** | **failed** | **–** |" in (out / "matrix.md").read_text()
    assert len(list((out / "cells").glob("*.json"))) == 2  # failed cells are not stored

    monkeypatch.setattr(robust, "aggregate_detailed", real)
    ran = []
    cells = run_matrix(
        base, **kw, out_dir=out, on_cell=lambda i, n, s, resumed: ran.append(resumed)
    )
    assert ran == [True, True, False, False]
    assert [c["status"] for c in cells] == ["completed"] * 4
