"""Masking graphs: complete graph and SecAgg+ random Harary graph with its parameter rule."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import GraphError, complete_graph, secaggplus_graph, secaggplus_parameters
from secagg.graphs import harary_disconnect_log_bound

SEED = b"graph-seed-0123456789abcdef-0123"


def _symmetric_no_loops(g):
    for i, nb in g.neighbours.items():
        assert i not in nb
        for j in nb:
            assert i in g.neighbours[j]


def test_complete_graph():
    g = complete_graph([5, 1, 9, 3])
    assert g.kind == "complete" and g.ids == (1, 3, 5, 9) and g.n == 4
    assert g.threshold == 3  # floor(4/2) + 1
    assert all(g.degree(i) == 3 for i in g.ids)
    _symmetric_no_loops(g)
    assert len(g.edges()) == 6 and g.is_connected()
    assert "Bonawitz" in g.security and "t=3" in g.security
    assert complete_graph(range(100)).threshold == 51
    assert complete_graph([0, 1]).threshold == 1
    assert complete_graph(range(10), threshold=9).threshold == 9
    assert g.recoverable(1, [3, 5, 9]) and not g.recoverable(1, [3, 5])


@pytest.mark.parametrize(
    "ids, threshold, match",
    [
        ([1], None, "at least 2"),
        ([1, 1, 2], None, "distinct"),
        ([1, -2, 3], None, "negative"),
        ([1, True], None, "not an int"),
        ([1, 2.5], None, "not an int"),
        ("abc", None, "sequence"),
        ([1, 2, 3], 3, r"\[1, n-1=2\]"),
        ([1, 2, 3], 0, r"\[1, n-1=2\]"),
    ],
)
def test_complete_graph_validation(ids, threshold, match):
    with pytest.raises(GraphError, match=match):
        complete_graph(ids, threshold)


def test_secaggplus_structure():
    ids = list(range(100))
    g = secaggplus_graph(ids, SEED)
    k = g.params["degree"]
    assert g.kind == "secagg+" and (k, g.threshold) == (22, 11)
    assert all(g.degree(i) == k for i in ids)  # regular
    _symmetric_no_loops(g)
    assert len(g.edges()) == 100 * k // 2
    assert g.is_connected()
    # Harary graphs are k-connected: removing any k-1 nodes leaves them connected
    rnd = random.Random(0)
    for _ in range(100):
        assert g.is_connected(rnd.sample(ids, k - 1))
    # ... and removing the k nodes around one client isolates it
    i = ids[0]
    assert not g.is_connected(g.neighbours[i])
    assert "Bell et al. 2020" in g.security and "k=22" in g.security and "t=11" in g.security


def test_secaggplus_deterministic_in_ids_and_seed():
    ids = list(range(3, 60, 2))
    g1 = secaggplus_graph(ids, SEED, degree=6, threshold=3)
    g2 = secaggplus_graph(list(reversed(ids)), SEED, degree=6, threshold=3)
    assert g1.neighbours == g2.neighbours
    g3 = secaggplus_graph(ids, SEED[::-1], degree=6, threshold=3)
    assert g3.neighbours != g1.neighbours  # a different seed relabels the ring
    # the ring order is not the id order (neighbourhoods are random, not id-adjacent)
    assert any(g1.neighbours[i] != {j for j in ids if 0 < abs(j - i) <= 6} for i in ids)


def _hypergeom_tail_exact(population, successes, draws, lo, hi):
    total = math.comb(population, draws)
    return Fraction(
        sum(
            math.comb(successes, x) * math.comb(population - successes, draws - x)
            for x in range(lo, hi + 1)
            if 0 <= x <= successes and 0 <= draws - x <= population - successes
        ),
        total,
    )


@pytest.mark.parametrize(
    "n, dropout, corrupt", [(100, 0.1, 0.1), (100, 0.3, 0.1), (200, 0.05, 0.2), (60, 0.2, 0.0)]
)
def test_threshold_rule_checked_with_exact_arithmetic(n, dropout, corrupt):
    sigma, eta = 40, 30
    k, t = secaggplus_parameters(n, dropout, corrupt, sigma, eta)
    assert k % 2 == 0 and 2 <= k <= n - 2 and 2 <= t <= k
    corrupt_n = math.floor(corrupt * n + 1e-9)
    surv_n = math.ceil((1 - dropout) * n - 1e-9)
    bound_priv = Fraction(1, 2 ** (sigma + 1) * n)
    # privacy: P[client has >= t corrupt neighbours] small, and t is the smallest such (or 2)
    assert _hypergeom_tail_exact(n, corrupt_n, k, t, k) <= bound_priv
    if t > 2:
        assert _hypergeom_tail_exact(n, corrupt_n, k, t - 1, k) > bound_priv
    # correctness: P[client has < t surviving neighbours] <= 2**-eta / n
    assert _hypergeom_tail_exact(n, surv_n, k, 0, t - 1) <= Fraction(1, 2**eta * n)
    # connectivity bound below 2**-(sigma+1)
    bad = math.floor((dropout + corrupt) * n + 1e-9)
    assert harary_disconnect_log_bound(n, k, bad) < -(sigma + 1) * math.log(2)
    # minimality of the degree: k-2 fails one of the conditions
    if k > 2:
        g = secaggplus_graph(range(n), SEED, degree=k, dropout_rate=dropout, corrupt_rate=corrupt)
        assert g.threshold == t
        small = k - 2
        conn_ok = harary_disconnect_log_bound(n, small, bad) < -(sigma + 1) * math.log(2)
        try:
            secaggplus_graph(
                range(n), SEED, degree=small, dropout_rate=dropout, corrupt_rate=corrupt
            )
            thr_ok = True
        except GraphError:
            thr_ok = False
        assert not (conn_ok and thr_ok)


def test_degree_grows_logarithmically():
    degrees = {n: secaggplus_parameters(n)[0] for n in (100, 1000, 10_000)}
    assert degrees[100] <= degrees[1000] <= degrees[10_000] <= 80
    assert degrees[10_000] < 10_000 / 100


def test_monte_carlo_dropouts_keep_honest_survivors_connected_and_recoverable():
    n = 100
    g = secaggplus_graph(range(n), SEED, dropout_rate=0.3, corrupt_rate=0.1)
    rnd = random.Random(1)
    for _ in range(200):
        dropped = set(rnd.sample(range(n), 30))
        survivors = [i for i in range(n) if i not in dropped]
        assert g.is_connected(dropped)
        assert all(g.recoverable(i, survivors) for i in range(n))


def test_explicit_degree_reports_achieved_security():
    g = secaggplus_graph(range(50), SEED, degree=4, threshold=2)
    assert g.params["degree"] == 4 and g.threshold == 2
    assert g.params["security_bits"] < 40  # weak, and the statement says so
    assert "2^-" in g.security


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"degree": 5}, "even"),
        ({"degree": 0}, "even"),
        ({"degree": 19}, "even"),
        ({"degree": 20}, r"n-2=18"),
        ({"degree": 6, "threshold": 7}, r"\[1, degree=6\]"),
        ({"degree": 6, "threshold": 0}, r"\[1, degree=6\]"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"corrupt_rate": -0.1}, "corrupt_rate"),
        ({"dropout_rate": 0.5, "corrupt_rate": 0.5}, "< 1"),
        ({"sigma": 0}, "positive"),
    ],
)
def test_secaggplus_validation(kwargs, match):
    with pytest.raises(GraphError, match=match):
        secaggplus_graph(range(20), SEED, **kwargs)


def test_secaggplus_bad_seed_and_infeasible():
    with pytest.raises(GraphError, match="16 bytes"):
        secaggplus_graph(range(20), b"short")
    with pytest.raises(GraphError, match="complete_graph"):
        secaggplus_graph(range(8), SEED, dropout_rate=0.45, corrupt_rate=0.45)
    assert secaggplus_parameters(8, 0.45, 0.45) is None


@settings(max_examples=30, deadline=None)
@given(
    ids=st.sets(st.integers(0, 10**6), min_size=6, max_size=80),
    seed=st.binary(min_size=16, max_size=32),
)
def test_property_graph_regular_symmetric_deterministic(ids, seed):
    n = len(ids)
    k = 2 * max(1, min((n - 2) // 2, 3))
    g = secaggplus_graph(sorted(ids), seed, degree=k, threshold=2)
    _symmetric_no_loops(g)
    assert all(g.degree(i) == k for i in ids)
    assert g.is_connected()
    assert secaggplus_graph(list(ids), seed, degree=k, threshold=2).neighbours == g.neighbours
