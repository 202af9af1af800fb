"""The adaptive attack against simple defences implemented here."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.attacks import AttackContext, damage, make_attack


def mean_rule(X: np.ndarray) -> np.ndarray:
    return X.mean(axis=0)


def coordinate_median(X: np.ndarray) -> np.ndarray:
    return np.median(X, axis=0)


def distance_filter(X: np.ndarray) -> np.ndarray:
    """Average the rows within 1.5x the median distance to the coordinate-wise median."""
    dist = np.linalg.norm(X - np.median(X, axis=0), axis=1)
    keep = dist <= 1.5 * np.median(dist)
    return X[keep].mean(axis=0)


DEFENCES = {"mean": mean_rule, "median": coordinate_median, "filter": distance_filter}


def round_ctx(aggregate, seed: int = 0, h: int = 16, f: int = 4, d: int = 60) -> AttackContext:
    rng = np.random.default_rng(seed)
    honest = 1.0 + rng.normal(size=(h, d))
    byz = 1.0 + rng.normal(size=(f, d))
    return AttackContext(
        honest, byz, h + f, 0, np.random.default_rng(seed + 100), aggregate=aggregate
    )


def damage_of(rows: np.ndarray, ctx: AttackContext) -> float:
    return damage(ctx.aggregate(np.concatenate([ctx.honest_updates, rows])), ctx.honest_updates)


@pytest.mark.parametrize("defence", ["mean", "median", "filter"])
@pytest.mark.parametrize("base", ["alie", "ipm", "scaling", "sign_flip"])
@pytest.mark.parametrize("search", ["grid", "bisection"])
def test_adaptive_does_at_least_as_much_damage_as_the_default(defence, base, search):
    ctx = round_ctx(DEFENCES[defence])
    baseline = damage_of(make_attack(base).craft(ctx), ctx)
    adaptive = make_attack("adaptive", base=base, search=search)
    rows = adaptive.craft(ctx)
    achieved = damage_of(rows, ctx)
    assert achieved >= baseline - 1e-12
    assert adaptive.last_info["damage"] == pytest.approx(achieved)
    assert adaptive.last_info["default_damage"] == pytest.approx(baseline)


@pytest.mark.parametrize(("defence", "gain"), [("mean", 1.5), ("median", 1.1)])
def test_adaptive_alie_beats_the_papers_z_when_the_defence_lets_it(defence, gain):
    ctx = round_ctx(DEFENCES[defence], seed=1)
    baseline = damage_of(make_attack("alie").craft(ctx), ctx)
    adaptive = make_attack("adaptive", base="alie")
    achieved = damage_of(adaptive.craft(ctx), ctx)
    assert achieved > gain * baseline
    assert adaptive.last_info["value"] > adaptive.last_info["default_value"]


def test_adaptive_scaling_stays_under_a_filtering_defence():
    ctx = round_ctx(distance_filter, seed=2)
    grid = [-0.5, -1.0, -2.0, -4.0, -8.0, -16.0, -32.0]
    adaptive = make_attack("adaptive", base="scaling", grid=grid)
    rows = adaptive.craft(ctx)
    evaluations = dict(adaptive.last_info["evaluations"])
    # The strongest scalings are filtered out, so the best value is a moderate one...
    assert adaptive.last_info["value"] not in (-32.0, -20.0)
    assert evaluations[-32.0] < adaptive.last_info["damage"]
    # ...whose rows the filter actually accepts.
    X = np.concatenate([ctx.honest_updates, rows])
    dist = np.linalg.norm(X - np.median(X, axis=0), axis=1)
    assert (dist[-4:] <= 1.5 * np.median(dist)).all()


def test_adaptive_gaussian_uses_common_random_numbers():
    ctx = round_ctx(coordinate_median, seed=3)
    adaptive = make_attack("adaptive", base="gaussian", grid=[1.0, 10.0, 1000.0])
    rows = adaptive.craft(ctx)
    assert adaptive.last_info["damage"] >= adaptive.last_info["default_damage"]
    assert damage_of(rows, ctx) == pytest.approx(adaptive.last_info["damage"])


def test_adaptive_bisection_finds_the_interior_optimum():
    ctx = round_ctx(distance_filter, seed=4)
    grid = list(np.linspace(-40.0, 0.0, 401))
    dense = make_attack("adaptive", base="scaling", grid=grid)
    dense.craft(ctx)
    golden = make_attack("adaptive", base="scaling", search="bisection", iters=30)
    golden.craft(ctx)
    assert golden.last_info["damage"] >= 0.9 * dense.last_info["damage"]


def test_adaptive_passes_base_params_and_reports_its_choice():
    ctx = round_ctx(mean_rule, seed=5)
    adaptive = make_attack(
        "adaptive", base="alie", base_params={"z_rule": "derivation"}, grid=[0.5, 1.0]
    )
    adaptive.craft(ctx)
    info = adaptive.last_info
    assert info["base"] == "alie" and info["param"] == "z"
    assert info["default_value"] == pytest.approx(0.157311, abs=1e-6)  # n=20, f=4
    assert [v for v, _ in info["evaluations"]] == [info["default_value"], 0.5, 1.0]
    assert info["value"] == 1.0  # damage grows with z against the mean


def test_adaptive_non_finite_aggregate_counts_as_maximal_damage():
    ctx = round_ctx(mean_rule, seed=6)
    assert damage(np.array([np.nan, 0.0]), np.zeros((2, 2))) == float("inf")
    adaptive = make_attack("adaptive", base="ipm")
    adaptive.craft(ctx)
    assert np.isfinite(adaptive.last_info["damage"])
