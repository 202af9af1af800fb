"""estimate_f: planted far outliers are found; documented limits hold."""

from __future__ import annotations

import numpy as np
import pytest

import robust
from robust.errors import InputShapeError, ParameterError


def _honest(n, d=50, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.mark.parametrize("n,planted", [(10, [0]), (20, [2, 5, 9]), (30, list(range(0, 14, 2)))])
def test_finds_planted_far_outliers(n, planted):
    X = _honest(n, seed=n)
    X[planted] += np.random.default_rng(1).standard_normal((len(planted), 50)) * 0.1 + 20.0
    D = robust.pairwise_sq_distances(X)
    assert robust.estimate_f(D) == len(planted)
    est = robust.estimate_outliers(D)
    assert np.flatnonzero(est.flagged).tolist() == planted


def test_clean_data_gives_small_f_and_cap_holds():
    D = robust.pairwise_sq_distances(_honest(25, seed=3))
    assert robust.estimate_f(D) <= 1
    X = _honest(10, seed=4)
    X[:4] += np.arange(1, 5)[:, None] * 30.0
    D = robust.pairwise_sq_distances(X)
    assert robust.estimate_f(D) == 4
    assert robust.estimate_f(D, max_f=2) == 2  # e.g. the bound of the target rule
    flagged = robust.estimate_outliers(D, max_f=2).flagged
    assert flagged[[2, 3]].all() and flagged.sum() == 2  # the farthest ones
    assert robust.estimate_f(D, max_f=100) <= (10 - 1) // 2


def test_limit_attack_hidden_inside_honest_spread_is_not_seen():
    # ALIE-style: attackers sit at mean - 1 std, inside the honest spread
    X = _honest(20, seed=5)
    X[:4] = X[4:].mean(0) - 1.0 * X[4:].std(0)
    assert robust.estimate_f(robust.pairwise_sq_distances(X)) == 0


def test_identical_honest_rows():
    X = np.tile(_honest(1, seed=6), (8, 1))
    X[0] += 1e-3
    assert robust.estimate_f(robust.pairwise_sq_distances(X)) == 1
    assert robust.estimate_f(np.zeros((2, 2))) == 0


def test_errors():
    with pytest.raises(InputShapeError, match="square"):
        robust.estimate_f(np.zeros((3, 2)))
    with pytest.raises(ParameterError, match="k must be"):
        robust.estimate_f(np.zeros((3, 3)), k=0)
    with pytest.raises(ParameterError, match="max_f"):
        robust.estimate_f(np.zeros((3, 3)), max_f=-1)


def test_gram_input_equals_distance_input():
    X = _honest(12, seed=7)
    X[[0, 5]] += 30
    D = robust.pairwise_sq_distances(X)
    G = robust.gram(X)
    assert robust.estimate_f(gram=G) == robust.estimate_f(D) == 2
    assert robust.krum_select(None, f=2, gram=G)[0] == robust.krum_select(D, f=2)[0]
    np.testing.assert_array_equal(
        robust.multi_krum_select(None, f=2, gram=G)[0], robust.multi_krum_select(D, f=2)[0]
    )
    np.testing.assert_array_equal(
        robust.distance_filter_select(gram=G)[0], robust.distance_filter_select(D)[0]
    )
    with pytest.raises(InputShapeError, match="either distances= or gram="):
        robust.estimate_f(D, gram=G)
