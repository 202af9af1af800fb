"""Each model-poisoning attack against its paper's definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from simulations.attacks import AttackContext, AttackInputError, alie_z_max, make_attack
from simulations.attacks.base import View
from simulations.attacks.min_max import gamma_search, pairwise_sq_distances, perturbation_vector


def ctx_of(honest, byz, **kw) -> AttackContext:
    honest = np.asarray(honest, dtype=np.float64)
    byz = np.asarray(byz, dtype=np.float64)
    kw.setdefault("rng", np.random.default_rng(0))
    return AttackContext(honest, byz, len(honest) + len(byz), 0, **kw)


@pytest.fixture
def spread():
    rng = np.random.default_rng(11)
    honest = rng.normal(loc=1.0, scale=0.5, size=(15, 30))
    byz = rng.normal(loc=1.0, scale=0.5, size=(4, 30))
    return honest, byz


# --------------------------------------------------------------------------------------------
# sign flip, scaling, IPM: exact formulas
# --------------------------------------------------------------------------------------------
def test_sign_flip_is_minus_the_honest_mean(spread):
    honest, byz = spread
    out = make_attack("sign_flip").craft(ctx_of(honest, byz))
    np.testing.assert_allclose(out, np.tile(-honest.mean(axis=0), (4, 1)), rtol=1e-12)


def test_sign_flip_limited_colluding_uses_the_byzantine_mean(spread):
    honest, byz = spread
    out = make_attack("sign_flip", scale=-2.0).craft(ctx_of(honest, byz, knowledge="limited"))
    np.testing.assert_allclose(out, np.tile(-2.0 * byz.mean(axis=0), (4, 1)), rtol=1e-12)


def test_scaling_is_factor_times_the_honest_mean(spread):
    honest, byz = spread
    out = make_attack("scaling").craft(ctx_of(honest, byz))
    np.testing.assert_allclose(out, np.tile(-20.0 * honest.mean(axis=0), (4, 1)), rtol=1e-12)
    out = make_attack("scaling", factor=5.0).craft(ctx_of(honest, byz))
    np.testing.assert_allclose(out[0], 5.0 * honest.mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("eps", [0.1, 2.0, 100.0])
def test_ipm_is_minus_eps_times_the_honest_mean(spread, eps):
    honest, byz = spread
    attack = make_attack("ipm", eps=eps) if eps != 0.1 else make_attack("ipm")
    out = attack.craft(ctx_of(honest, byz))
    np.testing.assert_allclose(out, np.tile(-eps * honest.mean(axis=0), (4, 1)), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# ALIE
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "f"), [(20, 4), (50, 12), (25, 5), (11, 1), (100, 20)])
def test_alie_z_matches_the_paper(n, f):
    s = math.floor(n / 2 + 1) - f
    assert alie_z_max(n, f) == pytest.approx(norm.ppf((n - s) / n), abs=1e-9)
    assert alie_z_max(n, f, "derivation") == pytest.approx(
        norm.ppf((n - f - s) / (n - f)), abs=1e-9
    )


def test_alie_z_known_values():
    # n=20, f=4: s=7, Phi(z) = 13/20 = 0.65 -> z = 0.38532; derivation: 9/16 -> 0.15731.
    assert alie_z_max(20, 4) == pytest.approx(0.385320, abs=1e-6)
    assert alie_z_max(20, 4, "derivation") == pytest.approx(0.157311, abs=1e-6)


def test_alie_z_rejects_a_byzantine_majority():
    with pytest.raises(AttackInputError, match="majority"):
        alie_z_max(10, 6)
    with pytest.raises(AttackInputError, match="1 <= f < n"):
        alie_z_max(10, 0)


def test_alie_sends_mean_minus_z_std(spread):
    honest, byz = spread
    attack = make_attack("alie")
    out = attack.craft(ctx_of(honest, byz))
    z = alie_z_max(19, 4)
    expected = honest.mean(axis=0) - z * honest.std(axis=0, ddof=1)
    np.testing.assert_allclose(out, np.tile(expected, (4, 1)), rtol=1e-12)
    assert attack.last_info["z"] == pytest.approx(z)
    fixed = make_attack("alie", z=1.5).craft(ctx_of(honest, byz))
    np.testing.assert_allclose(
        fixed[0], honest.mean(axis=0) - 1.5 * honest.std(axis=0, ddof=1), rtol=1e-12
    )


def test_alie_limited_single_attacker_is_degenerate(spread):
    honest, byz = spread
    attack = make_attack("alie", z=1.0)
    out = attack.craft(ctx_of(honest, byz[:1], knowledge="limited"))
    np.testing.assert_allclose(out, byz[:1], rtol=1e-12)
    assert attack.last_info["degenerate"] is True


# --------------------------------------------------------------------------------------------
# min-max / min-sum
# --------------------------------------------------------------------------------------------
def _sq_dists_to(m: np.ndarray, X: np.ndarray) -> np.ndarray:
    return ((X - m) ** 2).sum(axis=1)


def _max_pairwise(X: np.ndarray) -> float:
    return max(_sq_dists_to(x, X).max() for x in X)


def _max_sum(X: np.ndarray) -> float:
    return max(_sq_dists_to(x, X).sum() for x in X)


@pytest.mark.parametrize("perturbation", ["unit_vec", "std", "sign"])
def test_min_max_meets_its_constraint_and_gamma_is_maximal(spread, perturbation):
    honest, byz = spread
    attack = make_attack("min_max", perturbation=perturbation)
    out = attack.craft(ctx_of(honest, byz))
    gamma = attack.last_info["gamma"]
    assert gamma > 0
    threshold = _max_pairwise(honest)
    assert _sq_dists_to(out[0], honest).max() <= threshold * (1 + 1e-9)
    p = perturbation_vector(View(honest), perturbation)
    np.testing.assert_allclose(out[0], honest.mean(axis=0) + gamma * p, rtol=1e-12)
    bigger = honest.mean(axis=0) + 1.05 * gamma * p
    assert _sq_dists_to(bigger, honest).max() > threshold
    # ... and the bound is nearly tight: the search lands within rtol of the boundary.
    almost = honest.mean(axis=0) + (1 + 1e-4) * gamma * p
    assert _sq_dists_to(almost, honest).max() > threshold


@pytest.mark.parametrize("perturbation", ["unit_vec", "std", "sign"])
def test_min_sum_meets_its_constraint_and_gamma_is_maximal(spread, perturbation):
    honest, byz = spread
    attack = make_attack("min_sum", perturbation=perturbation)
    out = attack.craft(ctx_of(honest, byz))
    gamma = attack.last_info["gamma"]
    threshold = _max_sum(honest)
    assert _sq_dists_to(out[0], honest).sum() <= threshold * (1 + 1e-9)
    p = perturbation_vector(View(honest), perturbation)
    bigger = honest.mean(axis=0) + 1.05 * gamma * p
    assert _sq_dists_to(bigger, honest).sum() > threshold
    # Closed form for this constraint: gamma* = max_i ||x_i - mean|| / ||p||.
    centred = honest - honest.mean(axis=0)
    closed = np.sqrt((centred**2).sum(axis=1).max()) / np.linalg.norm(p)
    assert gamma == pytest.approx(closed, rel=1e-5)


def test_min_max_gamma_beyond_the_papers_initial_bracket():
    # Honest updates spread widely: gamma* is far above 2 * gamma_init = 20.
    rng = np.random.default_rng(2)
    honest = rng.normal(scale=50.0, size=(10, 20))
    attack = make_attack("min_max")
    out = attack.craft(ctx_of(honest, honest[:2]))
    assert attack.last_info["gamma"] > 20.0
    assert _sq_dists_to(out[0], honest).max() <= _max_pairwise(honest) * (1 + 1e-9)


def test_min_max_perturbations_match_the_paper(spread):
    honest, _ = spread
    view = View(honest)
    mu = honest.mean(axis=0)
    np.testing.assert_allclose(perturbation_vector(view, "unit_vec"), -mu / np.linalg.norm(mu))
    np.testing.assert_allclose(perturbation_vector(view, "std"), -honest.std(axis=0, ddof=1))
    np.testing.assert_array_equal(perturbation_vector(view, "sign"), -np.sign(mu))


def test_pairwise_distances_are_accurate_for_near_duplicates():
    rng = np.random.default_rng(3)
    base = rng.normal(size=5000) * 1e3
    X = base + 1e-6 * rng.normal(size=(6, 5000))
    D = pairwise_sq_distances(View(X))
    exact = np.array([[((a - b) ** 2).sum() for b in X] for a in X])
    np.testing.assert_allclose(D, exact, rtol=1e-6, atol=1e-20)
    assert (D >= 0).all()


def test_gamma_search_finds_the_boundary():
    assert gamma_search(lambda g: g <= 3.7, gamma_init=10.0) == pytest.approx(3.7, rel=1e-6)
    assert gamma_search(lambda g: g <= 1234.5, gamma_init=1.0) == pytest.approx(1234.5, rel=1e-6)
    assert gamma_search(lambda g: g <= 0.0) == 0.0


def test_min_max_limited_single_attacker_sends_its_own_update(spread):
    honest, byz = spread
    attack = make_attack("min_max")
    out = attack.craft(ctx_of(honest, byz[:1], knowledge="limited"))
    np.testing.assert_allclose(out, byz[:1], rtol=1e-12)
    assert attack.last_info["gamma"] == 0.0 and attack.last_info["degenerate"]


def test_min_max_limited_colluding_uses_the_byzantine_view(spread):
    honest, byz = spread
    attack = make_attack("min_max")
    out = attack.craft(ctx_of(honest, byz, knowledge="limited"))
    assert attack.last_info["gamma"] > 0
    assert _sq_dists_to(out[0], byz).max() <= _max_pairwise(byz) * (1 + 1e-9)


# --------------------------------------------------------------------------------------------
# Gaussian, mimic, NaN / Inf
# --------------------------------------------------------------------------------------------
def test_gaussian_scale_follows_the_honest_spread(spread):
    honest, byz = spread
    attack = make_attack("gaussian")
    out = attack.craft(ctx_of(honest, byz, rng=np.random.default_rng(1)))
    expected_sigma = 200.0 * np.sqrt(np.mean(honest.std(axis=0, ddof=1) ** 2))
    assert attack.last_info["sigma"] == pytest.approx(expected_sigma)
    assert out[0].std() == pytest.approx(expected_sigma, rel=0.3)
    assert abs(out[0].mean()) < expected_sigma  # zero-centred
    fixed = make_attack("gaussian", sigma=3.0)
    fixed.craft(ctx_of(honest, byz))
    assert fixed.last_info["sigma"] == 3.0


def test_mimic_copies_the_extreme_client_along_the_max_variance_direction():
    rng = np.random.default_rng(4)
    d = 25
    axis = np.zeros(d)
    axis[3] = 1.0
    coords = np.array([-3.0, -1.0, 0.5, 1.0, 4.0, 2.0, -2.0, 0.0])
    honest = 1.0 + np.outer(coords, axis) + 0.01 * rng.normal(size=(8, d))
    attack = make_attack("mimic")
    out = attack.craft(ctx_of(honest, honest[:3]))
    # The principal axis is coordinate 3; oriented along +mean, the extreme client is row 4.
    np.testing.assert_array_equal(out, np.tile(honest[4], (3, 1)))
    assert attack.last_info["target"] == 4
    # After the warm-up the index stays fixed even if another client becomes extreme.
    honest2 = honest.copy()
    honest2[1, 3] = 50.0
    out2 = attack.craft(ctx_of(honest2, honest[:3]))
    np.testing.assert_array_equal(out2[0], honest2[4])
    assert attack.last_info["how"] == "fixed after warm-up"
    attack.reset()
    attack.craft(ctx_of(honest2, honest[:3]))
    assert attack.last_info["target"] == 1


def test_mimic_with_a_given_target():
    honest = np.arange(40, dtype=np.float64).reshape(8, 5)
    out = make_attack("mimic", target=6).craft(ctx_of(honest, honest[:2]))
    np.testing.assert_array_equal(out, np.tile(honest[6], (2, 1)))


@pytest.mark.parametrize(("name", "check"), [("nan", np.isnan), ("inf", np.isposinf)])
def test_non_finite_rows(spread, name, check):
    honest, byz = spread
    out = make_attack(name).craft(ctx_of(honest, byz))
    assert check(out).all()
    partial = make_attack(name, fraction=0.2).craft(ctx_of(honest, byz))
    assert (check(partial).sum(axis=1) == 6).all()  # 20 % of 30 coordinates
    assert not np.isfinite(partial).all(axis=1).any()  # every row is non-finite
