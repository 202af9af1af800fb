"""Sketch statistics: E‖Px‖² = k‖x‖², the documented distance error per k, the norm bound's
ε and false-rejection rate, and exact Gram/distances/norms of integer sketches (all seeded)."""

from __future__ import annotations

import importlib
import math
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    FixedPointEncoder,
    SketchOverflowError,
    SketchParameterError,
    fixed_point_norm_bound,
    norm_bound_epsilon,
    norm_bound_false_rejection,
    sketch,
    sketch_bounds,
    sketch_gram,
    sketch_squared_distances,
    sketch_squared_norms,
    within_norm_bound,
)


def seeds(rng: np.random.Generator, n: int) -> list[bytes]:
    return [rng.bytes(32) for _ in range(n)]


def sq_norm(v) -> int:
    return sum(int(a) * int(a) for a in v)


def docstring_table(doc: str, columns: int) -> dict[int, tuple[float, ...]]:
    """Rows ``k  v1  v2 ...`` of a reST table in a docstring, keyed by k."""
    pattern = r"^(\d+)" + r"\s+([\d.]+)" * columns + r"\s*$"
    rows = {}
    for line in doc.splitlines():
        m = re.match(pattern, line.strip())
        if m:
            rows[int(m.group(1))] = tuple(float(v) for v in m.groups()[1:])
    return rows


# -- E‖Px‖² and the distance error -----------------------------------------------------------


def test_expected_squared_norm_is_k_times_squared_norm():
    rng = np.random.default_rng(20261203)
    k, trials = 64, 400
    x = rng.integers(-(2**20), 2**20, size=3000)
    ratios = [sq_norm(sketch(x, s, k)) / (k * sq_norm(x)) for s in seeds(rng, trials)]
    # each ratio has sd sqrt(2/k) = 0.177; the mean of 400 has sd 0.0088: a 4-sd window
    assert abs(np.mean(ratios) - 1.0) < 4 * math.sqrt(2 / k) / math.sqrt(trials)


#: The distance-error table of secagg/sketch.py's docstring (measured by
#: benchmarks/sketch_cost.py at d = 10^5): k -> (sqrt(2/k), RMS, 99th pct, ε at 1e-6).
DOCUMENTED = docstring_table(importlib.import_module("secagg.sketch").__doc__, 4)


def test_distance_table_is_documented_for_each_k():
    assert sorted(DOCUMENTED) == [64, 128, 256]


@pytest.mark.parametrize("k", [64, 128, 256])
def test_distance_error_matches_the_documented_table(k):
    rng = np.random.default_rng(1000 + k)
    d, trials = 4096, 400
    errors = []
    for s in seeds(rng, trials):
        # two fixed-point updates; the error is about their difference, fresh P per round
        x = np.round(rng.normal(0, 2**16, size=(2, d))).astype(np.int64)
        sx = sketch(x, s, k)
        diff = sq_norm(sx[0] - sx[1]) / (k * sq_norm(x[0] - x[1]))
        errors.append(diff - 1.0)
    rms = math.sqrt(np.mean(np.square(errors)))
    theory, documented_rms = DOCUMENTED[k][0], DOCUMENTED[k][1]
    assert theory == round(math.sqrt(2 / k), 3)
    # the RMS of 400 samples has a relative sd of about 1/sqrt(2*400) = 3.5%: 15% is > 4 sd
    assert abs(rms / documented_rms - 1.0) < 0.15, (k, rms)
    assert abs(rms / theory - 1.0) < 0.15, (k, rms)
    assert abs(np.mean(errors)) < 4 * theory / math.sqrt(trials)  # unbiased
    # the documented ε column is the norm bound's at δ = 1e-6
    assert DOCUMENTED[k][3] == math.ceil(norm_bound_epsilon(k, 1e-6) * 1000) / 1000


# -- the norm bound --------------------------------------------------------------------------


def test_epsilon_table_in_the_docstring():
    documented = docstring_table(sketch_bounds.__doc__, 3)
    assert sorted(documented) == [64, 128, 256]
    for k, row in documented.items():
        for delta, eps in zip((1e-2, 1e-4, 1e-6), row):
            assert math.ceil(norm_bound_epsilon(k, delta) * 1000) / 1000 == eps, (k, delta)


@pytest.mark.parametrize("k", [1, 8, 64, 128, 256, 1024])
@pytest.mark.parametrize("delta", [0.5, 1e-2, 1e-6, 1e-30])
def test_epsilon_is_the_smallest_that_meets_the_bound(k, delta):
    eps = norm_bound_epsilon(k, delta)
    assert eps > 0
    assert norm_bound_false_rejection(k, eps) <= delta
    assert norm_bound_false_rejection(k, eps * (1 - 1e-9)) > delta * (1 - 1e-6)
    # more rows or a looser rate give a smaller slack
    assert norm_bound_epsilon(2 * k, delta) < eps
    if delta < 0.5:
        assert norm_bound_epsilon(k, min(0.9, delta * 10)) < eps


def honest_vectors(rng: np.random.Generator, d: int) -> dict[str, np.ndarray]:
    """Integer vectors of different shapes; each is compared with the bound C = its own norm."""
    flat = rng.choice([-(2**10), 2**10], size=d)
    gauss = np.round(rng.normal(0, 2**12, size=d)).astype(np.int64)
    heavy = np.zeros(d, dtype=np.int64)
    heavy[: d // 16] = np.round(rng.standard_cauchy(d // 16) * 2**10).clip(-(2**30), 2**30)
    pair = np.zeros(d, dtype=np.int64)
    pair[[3, 700]] = 2**20
    return {"flat": flat, "gaussian": gauss, "heavy-tailed": heavy, "two-spike": pair}


@pytest.mark.parametrize("k, delta", [(64, 1e-2), (128, 1e-2), (64, 1e-3)])
def test_false_rejection_rate_on_honest_vectors_of_norm_c(k, delta):
    rng = np.random.default_rng(77 + k)
    d, trials = 1024, 2000
    eps = norm_bound_epsilon(k, delta)
    shapes = honest_vectors(rng, d)
    batch = np.stack(list(shapes.values()))
    bounds = [math.nextafter(math.sqrt(sq_norm(v)), math.inf) for v in batch]
    rejected = np.zeros(len(batch), dtype=int)
    rejected_at_half_eps = np.zeros(len(batch), dtype=int)
    for s in seeds(rng, trials):  # a fresh P per round, the same honest inputs
        sq = sketch_squared_norms(sketch(batch, s, k, wide=True))
        for i, v in enumerate(sq):
            rejected[i] += not within_norm_bound([v], k=k, bound=bounds[i], eps=eps)[0]
            rejected_at_half_eps[i] += not within_norm_bound(
                [v], k=k, bound=bounds[i], eps=eps / 2
            )[0]
    rates = dict(zip(shapes, rejected / trials))
    assert all(rate <= delta for rate in rates.values()), rates
    # the test can fail: with half the slack, dense honest vectors exceed the target rate
    assert rejected_at_half_eps[list(shapes).index("gaussian")] / trials > delta


def test_norm_test_is_exact_at_the_threshold():
    # k * bound^2 * (1 + eps)^2 = 4 * 9 * 2.25 = 81 exactly
    got = within_norm_bound(np.array([80, 81, 82], dtype=object), k=4, bound=3, eps=0.5)
    assert got.tolist() == [True, True, False]
    # Python ints far beyond int64 and rational bounds
    big = 4 * (10**30) ** 2
    assert within_norm_bound([big, big + 1], k=4, bound=10**30, eps=0).tolist() == [True, False]
    assert within_norm_bound([3], k=1, bound=Fraction(3, 2), eps=Fraction(1, 3)).tolist() == [
        True
    ]  # (3/2 * 4/3)^2 = 4


def test_fixed_point_norm_bound_covers_stochastic_rounding():
    rng = np.random.default_rng(5)
    d, clip_norm = 2000, 1.0
    enc = FixedPointEncoder(clip=clip_norm, n_max=100, bits=32)
    bound = fixed_point_norm_bound(clip_norm, enc.scale, d)
    worst = 0.0
    for _ in range(50):
        x = rng.normal(size=d)
        x *= clip_norm / np.linalg.norm(x)
        q = enc.to_signed(enc.encode(x, rng))
        worst = max(worst, math.sqrt(sq_norm(q)))
    assert worst <= bound
    assert bound < clip_norm * enc.scale * 1.01  # not vacuous at this scale


@pytest.mark.parametrize(
    "call",
    [
        lambda: norm_bound_epsilon(0, 0.1),
        lambda: norm_bound_epsilon(64, 0.0),
        lambda: norm_bound_epsilon(64, 1.0),
        lambda: norm_bound_epsilon(True, 0.1),
        lambda: norm_bound_false_rejection(64, -0.1),
        lambda: norm_bound_false_rejection(64, math.nan),
        lambda: fixed_point_norm_bound(0.0, 2.0**16, 10),
        lambda: fixed_point_norm_bound(1.0, math.inf, 10),
        lambda: fixed_point_norm_bound(1.0, 2.0**16, 0),
        lambda: within_norm_bound([1], k=0, bound=1.0, eps=0.1),
        lambda: within_norm_bound([1], k=4, bound=-1.0, eps=0.1),
        lambda: within_norm_bound([1], k=4, bound=math.inf, eps=0.1),
        lambda: within_norm_bound([-1], k=4, bound=1.0, eps=0.1),
        lambda: within_norm_bound([1.5], k=4, bound=1.0, eps=0.1),
        lambda: within_norm_bound([True], k=4, bound=1.0, eps=0.1),
    ],
)
def test_bound_helpers_typed_errors(call):
    with pytest.raises(SketchParameterError):
        call()


# -- exact Gram, norms and distances ---------------------------------------------------------


def ref_gram(rows: list[list[int]]) -> list[list[int]]:
    return [[sum(a * b for a, b in zip(r, c)) for c in rows] for r in rows]


def ref_distances(rows: list[list[int]]) -> list[list[int]]:
    return [[sum((a - b) ** 2 for a, b in zip(r, c)) for c in rows] for r in rows]


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 6),
    k=st.integers(1, 40),
    bits=st.sampled_from([3, 20, 31, 40, 63, 64, 100, 300]),
)
def test_gram_norms_distances_exact(data, n, k, bits):
    value = st.one_of(
        st.integers(-(2**bits) + 1, 2**bits - 1), st.sampled_from([2**bits - 1, -(2**bits) + 1])
    )
    rows = data.draw(st.lists(st.lists(value, min_size=k, max_size=k), min_size=n, max_size=n))
    arr = np.empty((n, k), dtype=object)
    arr[:, :] = rows
    if bits <= 63:
        arr = arr.astype(np.int64) if data.draw(st.booleans()) else arr
    g, dist, norms = sketch_gram(arr), sketch_squared_distances(arr), sketch_squared_norms(arr)
    assert g.dtype == object and dist.dtype == object and norms.dtype == object
    assert g.tolist() == ref_gram(rows)
    assert dist.tolist() == ref_distances(rows)
    assert norms.tolist() == [sum(v * v for v in r) for r in rows]
    assert all(type(v) is int for v in dist.reshape(-1))


def test_int64_output_is_checked():
    small = np.array([[3, -4], [0, 0]], dtype=np.int64)
    assert sketch_squared_distances(small, int64=True).tolist() == [[0, 25], [25, 0]]
    assert sketch_squared_norms(small, int64=True).dtype == np.int64
    big = np.array([[2**40] * 8, [-(2**40)] * 8], dtype=np.int64)
    with pytest.raises(SketchOverflowError):
        sketch_squared_distances(big, int64=True)
    with pytest.raises(SketchOverflowError):
        sketch_gram(big, int64=True)
    with pytest.raises(SketchOverflowError):
        sketch_squared_norms(big, int64=True)
    assert sketch_squared_distances(big)[0, 1] == 8 * (2**41) ** 2


def test_distances_of_real_sketches_match_sketch_of_differences():
    rng = np.random.default_rng(9)
    x = rng.integers(-(2**24), 2**24, size=(5, 20_000))
    seed = rng.bytes(32)
    sk = sketch(x, seed, 128)
    dist = sketch_squared_distances(sk)
    for i in range(5):
        for j in range(5):
            assert dist[i, j] == sq_norm(sketch(x[i] - x[j], seed, 128))


@pytest.mark.parametrize(
    "bad",
    [
        [[1, 2]],
        np.array([1, 2, 3]),
        np.zeros((2, 0), dtype=np.int64),
        np.array([[1.0, 2.0]]),
        np.array([[1, "a"]], dtype=object),
        np.array([[1, 2.5]], dtype=object),
        np.array([[True, False]]),
    ],
)
def test_distance_helpers_typed_errors(bad):
    for fn in (sketch_gram, sketch_squared_norms, sketch_squared_distances):
        with pytest.raises(SketchParameterError):
            fn(bad)
