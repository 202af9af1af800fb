"""Column order statistics: the pruned sorting networks, the compiled kernel, the numpy
fallback, and the fused finiteness check that lets the public rules skip a pass over X."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import robust
from robust import _native, _ranking
from robust._rows import NonFiniteSeen, RowSet

MODE = {"sort": "numpy", "network": "compiled"}
needs_kernel = pytest.mark.skipif(
    not _native.available(), reason="robust._kernels was not built here"
)
# the numpy backend everywhere; the compiled one where it was built (always in CI)
BACKENDS = ["sort", pytest.param("network", marks=needs_kernel)]


def _apply_network(pairs: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Reference application of a comparator network to the rows of ``cols`` (n, m)."""
    v = cols.copy()
    for i, j in pairs:
        lo = np.minimum(v[i], v[j])
        hi = np.maximum(v[i], v[j])
        v[i], v[j] = lo, hi
    return v


def test_kernels_are_built_where_required():
    # .ci/run sets this: CI must exercise the compiled path, not silently fall back
    if os.environ.get("FORTIS_REQUIRE_KERNELS") == "1":
        assert _native.available()


@pytest.mark.parametrize("n", range(1, 13))
def test_batcher_network_sorts_every_zero_one_input(n):
    # 0-1 principle: a comparator network sorts every input iff it sorts every 0/1 input
    pairs = np.asarray(_ranking.batcher_pairs(n), dtype=int).reshape(-1, 2)
    assert (pairs[:, 0] < pairs[:, 1]).all() if len(pairs) else True
    cols = np.array(list(itertools.product([0, 1], repeat=n)), dtype=float).T
    out = _apply_network(pairs, cols)
    np.testing.assert_array_equal(out, np.sort(cols, axis=0))


@pytest.mark.parametrize("n", [13, 31, 64, 100, 129, 256])
def test_batcher_network_sorts_random_input(n):
    rng = np.random.default_rng(n)
    cols = rng.integers(0, 5, size=(n, 200)).astype(float)  # many ties
    pairs = np.asarray(_ranking.batcher_pairs(n)).reshape(-1, 2)
    np.testing.assert_array_equal(_apply_network(pairs, cols), np.sort(cols, axis=0))


def test_pruning_keeps_requested_outputs_and_drops_comparators():
    rng = np.random.default_rng(0)
    for n in [2, 3, 7, 10, 33, 64, 100, 131]:
        cols = rng.standard_normal((n, 300))
        cols[:, :100] = np.round(cols[:, :100])  # ties
        ref = np.sort(cols, axis=0)
        full = len(_ranking.batcher_pairs(n))
        for _ in range(6):
            exact = tuple(sorted(set(rng.integers(0, n, size=rng.integers(0, 4)).tolist())))
            lo = int(rng.integers(0, n))
            hi = int(rng.integers(lo, n + 1))
            summed = tuple(range(lo, hi))
            pairs = _ranking.network(n, exact, summed)
            assert len(pairs) <= full
            out = _apply_network(pairs, cols)
            for r in exact:
                np.testing.assert_array_equal(out[r], ref[r])
            np.testing.assert_allclose(out[lo:hi].sum(0), ref[lo:hi].sum(0), rtol=1e-12, atol=1e-9)
    # the median of 100 rows needs ~19% fewer comparators than a full sort; a full-range
    # sum (the mean) needs none
    assert len(_ranking.network(100, (49, 50), ())) < 0.85 * len(_ranking.batcher_pairs(100))
    assert len(_ranking.network(100, (), tuple(range(100)))) == 0


def _both_backends(rs: RowSet, ranks, sum_ranks, monkeypatch):
    outs = {}
    for backend in ("sort", "network"):
        monkeypatch.setenv("FORTIS_KERNELS", MODE[backend])
        R = np.full((len(ranks), rs.d), np.nan)
        S = np.full(rs.d, np.nan)

        def fn(Rc, s, a, b, R=R, S=S):
            R[:, a:b] = Rc
            if s is not None:
                S[a:b] = s
            return a

        starts = rs.ranked_columns_apply(ranks, fn, sum_ranks=sum_ranks)
        assert starts == sorted(starts)  # results come back in chunk order
        outs[backend] = (R, S)
    return outs


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "n, d", [(2, 1), (3, 33), (10, 1000), (57, 8195), (100, 20_001), (700, 300)]
)
def test_kernel_matches_numpy_sort(dtype, n, d, monkeypatch):
    rng = np.random.default_rng(n * d)
    X = rng.standard_normal((n, d)).astype(dtype)
    X[:, : d // 3] = np.round(X[:, : d // 3])  # ties and duplicates
    X[0, :5] = -0.0
    X[-1, 5:9] = np.finfo(dtype).max / 2  # huge but finite
    ranks = sorted({0, n // 2, (n - 1) // 2, n - 1})
    f = (n - 1) // 4
    outs = _both_backends(RowSet(X), ranks, range(f, n - f), monkeypatch)
    ref = np.sort(X, axis=0)
    for backend, (R, S) in outs.items():
        np.testing.assert_array_equal(R, ref[ranks], err_msg=backend)
        mid = ref[f : n - f].astype(np.float64)
        err = np.abs(S - mid.sum(0))
        assert (err <= 1e-13 * np.abs(mid).sum(0)).all(), backend


@needs_kernel
def test_kernel_on_a_subset_of_rows(monkeypatch):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 3000)).astype(np.float32)
    X[7] = np.nan  # a row outside the subset is never read
    idx = np.array([0, 3, 4, 10, 11, 12, 20, 33, 39])
    outs = _both_backends(RowSet(X, idx), list(range(9)), None, monkeypatch)
    ref = np.sort(X[idx], axis=0)
    for R, _ in outs.values():
        np.testing.assert_array_equal(R, ref)


@needs_kernel
def test_kernel_reports_non_finite_values_anywhere():
    rows = np.arange(6, dtype=np.int64)
    pairs = _ranking.network(6, (2, 3), ())
    ranks = np.array([2, 3], dtype=np.int64)
    none = np.empty(0, dtype=np.int64)
    one = np.zeros(1)
    for dtype in (np.float32, np.float64):
        for bad in (np.nan, np.inf, -np.inf):
            for col in (0, 511, 512, 1200, 1302):  # first, tile edge, last partial block
                X = np.ones((6, 1303), dtype=dtype)
                X[4, col] = bad
                out = np.empty((2, 1303), dtype=dtype)
                ok = _ranking.rank_chunk_network(X, rows, 0, 1303, pairs, ranks, none, out, one)
                assert ok is False
        X = np.full((6, 1303), np.finfo(dtype).max, dtype=dtype)
        out = np.empty((2, 1303), dtype=dtype)
        assert _ranking.rank_chunk_network(X, rows, 0, 1303, pairs, ranks, none, out, one)


@needs_kernel
def test_kernel_rejects_bad_arguments_without_touching_memory():
    k = _native.kernels

    X = np.zeros((4, 10), dtype=np.float32)
    rows = np.arange(4, dtype=np.int64)
    pairs = _ranking.network(4, (1,), ())
    ranks = np.array([1], dtype=np.int64)
    none = np.empty(0, dtype=np.int64)
    out = np.zeros((1, 10), dtype=np.float32)
    sums = np.zeros(10)
    ok = (X, 4, 10, rows, 0, 10, pairs, ranks, out, 10, none, sums)
    assert k.rank_columns(*ok) is True

    def call(**change):
        args = list(ok)
        names = ["X", "itemsize", "ld", "rows", "a", "c", "pairs", "ranks", "out", "out_ld"]
        names += ["sum_wires", "sums"]
        for key, v in change.items():
            args[names.index(key)] = v
        return k.rank_columns(*args)

    with pytest.raises(IndexError, match="row index"):
        call(rows=np.array([0, 1, 2, 4], dtype=np.int64))
    with pytest.raises(IndexError, match="wire"):
        call(pairs=np.array([[0, 9]], dtype=np.int32))
    with pytest.raises(IndexError, match="rank"):
        call(ranks=np.array([4], dtype=np.int64))
    with pytest.raises(IndexError, match="summed wire"):
        call(sum_wires=np.array([-1], dtype=np.int64))
    with pytest.raises(IndexError, match="sums"):
        call(sum_wires=np.array([1], dtype=np.int64), sums=np.zeros(3))
    with pytest.raises(IndexError, match="out"):
        call(out=np.zeros(4, dtype=np.float32), out_ld=5, c=5, a=5)
    with pytest.raises(ValueError, match="shape"):
        call(a=5, c=6)  # past the row end
    with pytest.raises(ValueError, match="itemsize"):
        call(itemsize=2)
    with pytest.raises(TypeError, match="C-contiguous"):
        call(X=np.zeros((10, 4), dtype=np.float32).T)
    with pytest.raises(TypeError, match="writable"):
        ro = np.zeros((1, 10), dtype=np.float32)
        ro.setflags(write=False)
        call(out=ro)


def test_backend_choice_and_override(monkeypatch):
    monkeypatch.delenv("FORTIS_KERNELS", raising=False)
    expected = "network" if _native.available() else "sort"
    assert _ranking.backend(100) == expected
    assert _ranking.backend(_ranking.MAX_NETWORK_ROWS + 1) == "sort"
    assert _ranking.backend(1) == "sort"
    monkeypatch.setenv("FORTIS_KERNELS", "numpy")
    assert _ranking.backend(100) == "sort"
    assert not _native.enabled()
    monkeypatch.setenv("FORTIS_KERNELS", "quick")
    with pytest.raises(RuntimeError, match="FORTIS_KERNELS"):
        _ranking.backend(100)
    monkeypatch.setenv("FORTIS_KERNELS", "compiled")
    if _native.available():
        assert _ranking.backend(_ranking.MAX_NETWORK_ROWS + 1) == "network"
    else:
        with pytest.raises(RuntimeError, match="not built"):
            _ranking.backend(100)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unchecked_row_set_raises_on_non_finite(backend, monkeypatch):
    monkeypatch.setenv("FORTIS_KERNELS", MODE[backend])
    X = np.random.default_rng(1).standard_normal((9, 5000)).astype(np.float32)
    X[3, 4321] = np.inf
    with pytest.raises(NonFiniteSeen):
        RowSet(X, unchecked=True).ranked_columns_apply([4], lambda R, s, a, b: None)
    # a checked set does not look (the rules never hand it non-finite rows)
    RowSet(X).ranked_columns_apply([4], lambda R, s, a, b: None)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rules_skip_the_finiteness_pass_but_never_return_garbage(backend, bad, monkeypatch):
    monkeypatch.setenv("FORTIS_KERNELS", MODE[backend])
    rng = np.random.default_rng(2)
    X = rng.standard_normal((15, 4000)).astype(np.float32)
    X[[2, 9], 1234] = bad
    clean = np.delete(X, [2, 9], axis=0)
    f = 3
    cases = [
        (robust.median(X, f=f), robust.median(clean, f=1)),
        (robust.trimmed_mean(X, f=f), robust.trimmed_mean(clean, f=f - 2)),
        (robust.krum(X, f=f), robust.krum(clean, f=f - 2)),
        (robust.multi_krum(X, f=f), robust.multi_krum(clean, f=f - 2)),
        (robust.bulyan(X, f=f), robust.bulyan(clean, f=f - 2)),
    ]
    for got, want in cases:
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_huge_finite_float32_rows_fall_back_to_the_exact_gram():
    # float32 products of 1e37 overflow; the rows are finite and must be compared exactly
    rng = np.random.default_rng(3)
    X = rng.standard_normal((11, 3000)).astype(np.float32)
    X[0] = 1e37
    got = robust.krum(X, f=2)
    want = robust.krum(X.astype(np.float64), f=2)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert not np.allclose(got, 1e37)


@needs_kernel
def test_median_and_trimmed_mean_backends_agree_on_adversarial_input(monkeypatch):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((31, 9000)).astype(np.float32)
    X[:7] = 1e30  # Byzantine rows at the extreme
    X[7:10] = X[10]  # duplicates
    got = {}
    for backend in ("sort", "network"):
        monkeypatch.setenv("FORTIS_KERNELS", MODE[backend])
        got[backend] = (
            robust.median(X, f=7),
            robust.trimmed_mean(X, f=7),
            robust.bulyan(X, f=7),
            robust.aggregate_detailed(X, "median", f=7).scores,
        )
    for a, b in zip(got["sort"], got["network"]):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # float64 sums in different orders
    assert np.abs(got["network"][1]).max() < 10  # the 1e30 rows were trimmed


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 7, 8, 9, 1000, 200_003])
def test_squared_distance_kernel_matches_numpy(dtype, d, monkeypatch):
    rng = np.random.default_rng(d)
    X = rng.standard_normal((13, d)).astype(dtype) * 1e3
    X[4] = X[5]  # distance exactly 0 to z = X[5]
    z = X[5].astype(np.float64)
    idx = np.array([0, 4, 5, 12])
    want = ((X.astype(np.float64) - z) ** 2).sum(axis=1)
    got = {}
    for mode in ("numpy", "compiled"):
        monkeypatch.setenv("FORTIS_KERNELS", mode)
        got[mode] = (RowSet(X).sq_dist_to(z), RowSet(X, idx).sq_dist_to(z), RowSet(X).sq_norms())
        np.testing.assert_allclose(got[mode][0], want, rtol=1e-13)
        np.testing.assert_allclose(got[mode][1], want[idx], rtol=1e-13)
        assert got[mode][0][4] == 0.0
        norms = (X.astype(np.float64) ** 2).sum(axis=1)
        np.testing.assert_allclose(got[mode][2], norms, rtol=1e-13)


@needs_kernel
def test_squared_distance_kernel_rejects_bad_arguments():
    k = _native.kernels
    X = np.zeros((3, 10), dtype=np.float32)
    rows = np.arange(3, dtype=np.int64)
    out = np.zeros(3)
    k.sq_dists(X, 4, 10, rows, 0, 10, np.zeros(10), out)
    with pytest.raises(IndexError, match="row index"):
        k.sq_dists(X, 4, 10, np.array([3], dtype=np.int64), 0, 10, np.zeros(10), out)
    with pytest.raises(IndexError, match="z is too short"):
        k.sq_dists(X, 4, 10, rows, 0, 10, np.zeros(9), out)
    with pytest.raises(IndexError, match="out is too small"):
        k.sq_dists(X, 4, 10, rows, 0, 10, np.zeros(10), np.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        k.sq_dists(X, 4, 10, rows, 4, 7, np.zeros(7), out)
    # NaN and inf propagate as in numpy: the caller decides what a non-finite row means
    X[1, 3] = np.nan
    X[2, 9] = np.inf
    k.sq_dists(X, 4, 10, rows, 0, 10, np.empty(0), out)
    assert out[0] == 0 and np.isnan(out[1]) and out[2] == np.inf


@needs_kernel
def test_centring_kernel_matches_numpy_fast_gram(monkeypatch):
    from robust._rows import RowSet

    rng = np.random.default_rng(6)
    X = (rng.standard_normal(70_001) + 1e-3 * rng.standard_normal((9, 70_001))).astype(np.float32)
    idx = np.array([0, 2, 3, 5, 8])
    z = X[3].astype(np.float64)
    got = {}
    for mode in ("numpy", "compiled"):
        monkeypatch.setenv("FORTIS_KERNELS", mode)
        got[mode] = [
            RowSet(X).gram(None, fast=True),
            RowSet(X, idx).gram(None, fast=True),
            RowSet(X).gram(z, fast=True),
        ]
    exact = [RowSet(X).gram(None), RowSet(X, idx).gram(None), RowSet(X).gram(z)]
    for a, b, e in zip(got["numpy"], got["compiled"], exact):
        scale = np.abs(np.diag(e)).max()
        # the kernel centres in float64 before rounding: at least as close to exact
        assert np.abs(b - e).max() <= 1e-5 * scale
        assert np.abs(a - e).max() <= 1e-5 * scale


@needs_kernel
def test_centring_kernel_rejects_bad_arguments():
    k = _native.kernels
    X = np.zeros((3, 10), dtype=np.float32)
    rows = np.arange(3, dtype=np.int64)
    out = np.zeros((3, 10), dtype=np.float32)
    k.center_rows(X, 10, rows, 0, 10, np.empty(0), out, 10)
    with pytest.raises(IndexError, match="row index"):
        k.center_rows(X, 10, np.array([5], dtype=np.int64), 0, 10, np.empty(0), out, 10)
    with pytest.raises(IndexError, match="out is too small"):
        k.center_rows(X, 10, rows, 0, 10, np.empty(0), np.zeros(20, np.float32), 10)
    with pytest.raises(IndexError, match="z is too short"):
        k.center_rows(X, 10, rows, 0, 10, np.zeros(3), out, 10)
    with pytest.raises(ValueError, match="shape"):
        k.center_rows(X, 10, rows, 8, 5, np.empty(0), out, 10)


@needs_kernel
@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 120),
    dtype=st.sampled_from([np.float32, np.float64]),
    data=st.data(),
)
def test_kernel_fuzz_never_crashes_and_is_right_when_it_answers(n, d, dtype, data):
    """Random (often invalid) arguments: the kernel either raises a typed error or returns,
    and when it returns with a full sorting network its ranks equal np.sort's."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    X = rng.integers(-3, 4, size=(n, d)).astype(dtype)
    valid = data.draw(st.booleans())  # half the cases in range, to check the answers
    hi = 0 if valid else 1  # invalid cases widen every range by one on each side
    m = data.draw(st.integers(1, n + 2 * hi)) if not valid else data.draw(st.integers(1, n))
    rows = np.asarray(
        data.draw(st.lists(st.integers(-hi, n - 1 + hi), min_size=m, max_size=m)), np.int64
    )
    a = data.draw(st.integers(-hi, d - 1))
    c = data.draw(st.integers(1 - hi, d - max(a, 0) + hi))
    ranks = np.asarray(data.draw(st.lists(st.integers(-hi, m - 1 + hi), max_size=4)), np.int64)
    pairs = _ranking.network(m, tuple(range(m)), ())
    if not valid and data.draw(st.booleans()):  # sometimes a corrupted network
        pairs = np.asarray(
            data.draw(st.lists(st.tuples(st.integers(-1, m), st.integers(-1, m)), max_size=5)),
            np.int32,
        ).reshape(-1, 2)
    out = np.zeros((max(len(ranks), 1), max(c, 1)), dtype=dtype)
    sums = np.zeros(max(c, 1))
    sum_wires = np.asarray(data.draw(st.lists(st.integers(-hi, m - 1 + hi), max_size=3)), np.int64)
    try:
        ok = _native.kernels.rank_columns(
            X, X.itemsize, d, rows, a, c, pairs, ranks, out, out.shape[1], sum_wires, sums
        )
    except (ValueError, IndexError, TypeError):
        assert not valid, "valid arguments were rejected"
        event("rejected")
        return
    event("answered")
    assert ok is True
    full = len(pairs) == len(_ranking.network(m, tuple(range(m)), ()))
    if full and np.array_equal(pairs, _ranking.network(m, tuple(range(m)), ())):
        ref = np.sort(X[rows, a : a + c], axis=0)
        for q, r in enumerate(ranks):
            np.testing.assert_array_equal(out[q, :c], ref[r])
        if len(sum_wires):
            np.testing.assert_allclose(sums[:c], ref[sum_wires].sum(0), rtol=1e-12, atol=1e-12)


@needs_kernel
@settings(max_examples=120, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 90), data=st.data())
def test_distance_and_centring_kernels_fuzz(n, d, data):
    """As above for ``sq_dists`` and ``center_rows``: typed errors for bad arguments, exact
    answers (against float64 numpy) for good ones."""
    valid = data.draw(st.booleans())
    hi = 0 if valid else 1
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    X = rng.standard_normal((n, d)).astype(np.float32)
    m = data.draw(st.integers(1, n))
    rows = np.asarray(
        data.draw(st.lists(st.integers(-hi, n - 1 + hi), min_size=m, max_size=m)), np.int64
    )
    a = data.draw(st.integers(-hi, d - 1))
    c = data.draw(st.integers(1 - hi, d - max(a, 0) + hi))
    zlen = data.draw(st.sampled_from([0, max(c, 0), max(c - hi, 0)]))
    z = rng.standard_normal(zlen)
    k = _native.kernels
    out = np.zeros(m)
    try:
        k.sq_dists(X, 4, d, rows, a, c, z, out)
    except (ValueError, IndexError, TypeError):
        assert not valid or 0 < zlen < c
    else:
        ref = X[rows, a : a + c].astype(np.float64) - (z[:c] if zlen else 0.0)
        np.testing.assert_allclose(out, (ref**2).sum(1), rtol=1e-12, atol=1e-12)
    cen = np.zeros((m, max(c, 1)), dtype=np.float32)
    try:
        k.center_rows(X, d, rows, a, c, z, cen, cen.shape[1])
    except (ValueError, IndexError, TypeError):
        assert not valid or 0 < zlen < c
    else:
        blk = X[rows, a : a + c].astype(np.float64)
        mid = z[:c] if zlen else blk.mean(axis=0)
        np.testing.assert_allclose(cen[:, :c], (blk - mid).astype(np.float32), rtol=1e-6, atol=1e-6)
