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


class _CountingKernels:
    """Stands in for ``robust._kernels`` and counts the calls of each kernel."""

    def __init__(self, module):
        self.module = module
        self.calls: dict[str, int] = {}

    def __getattr__(self, name):
        fn = getattr(self.module, name)

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kwargs)

        return counted


def test_compiled_kernels_are_used_when_built_and_the_fallback_is_reported(monkeypatch):
    """This test cannot pass by doing nothing. With a usable build, the rules must call the
    compiled kernels and agree with numpy. Without one, kernel_status() must say so and
    why, the numpy path must be chosen and agree too, and CI (which sets
    FORTIS_REQUIRE_KERNELS=1 and builds with `pip install -e .`) fails."""
    monkeypatch.delenv("FORTIS_KERNELS", raising=False)
    status = robust.kernel_status()
    assert set(status) == {"available", "in_use", "reason", "source_hash_ok", "built", "path"} | {
        "mode"
    }
    assert status["reason"] and status["mode"] == "auto"
    rng = np.random.default_rng(11)
    X = rng.standard_normal((31, 5000)).astype(np.float32)
    X[:5] = 1e30
    f = 5
    ordered = np.sort(X.astype(np.float64), axis=0)
    want = (np.median(X, axis=0), ordered[f:-f].mean(axis=0), (X.astype(np.float64) ** 2).sum(1))
    counting = _CountingKernels(_native.kernels)
    if status["available"]:
        assert status["in_use"] and status["built"] and status["path"]
        assert status["source_hash_ok"] in (True, None) and "in use" in status["reason"]
        assert _ranking.backend(len(X)) == "network"
        monkeypatch.setattr(_native, "kernels", counting)
    else:
        assert not status["in_use"] and status["source_hash_ok"] is not True
        assert "rebuild" in status["reason"] or "not built" in status["reason"]
        assert _ranking.backend(len(X)) == "sort"
    got = (robust.median(X, f=f), robust.trimmed_mean(X, f=f), RowSet(X).sq_norms())
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-12)
    if status["available"]:
        assert counting.calls.get("rank_columns", 0) >= 2, counting.calls
        assert counting.calls.get("sq_dists", 0) >= 1, counting.calls
    elif os.environ.get("FORTIS_REQUIRE_KERNELS") == "1":
        pytest.fail(f"FORTIS_REQUIRE_KERNELS=1 but the kernels are not in use: {status['reason']}")


@needs_kernel
def test_a_build_that_does_not_match_its_source_is_refused(monkeypatch, tmp_path):
    module, facts = _native._check_build()
    assert module is _native.kernels and facts["source_hash_ok"] is True
    assert len(module.SOURCE_SHA256) == 64  # compiled in by setup.py
    edited = tmp_path / "_kernels.c"
    edited.write_bytes(_native.SOURCE.read_bytes() + b"/* edited, not rebuilt */\n")
    monkeypatch.setattr(_native, "SOURCE", edited)
    module, facts = _native._check_build()
    assert module is None and facts["source_hash_ok"] is False
    assert "stale" in facts["problem"] and "rebuild" in facts["problem"]
    monkeypatch.setattr(_native, "kernels", None)
    monkeypatch.setattr(_native, "_BUILD", facts)
    status = robust.kernel_status()
    assert not status["available"] and not status["in_use"] and "stale" in status["reason"]
    assert _ranking.backend(100) == "sort"
    monkeypatch.setenv("FORTIS_KERNELS", "compiled")
    with pytest.raises(RuntimeError, match="stale"):
        _native.mode()
    assert "stale" in robust.kernel_status()["reason"]  # reported, never raised
    # a wheel ships no source: nothing to compare, the build is used
    monkeypatch.setattr(_native, "SOURCE", tmp_path / "absent.c")
    module, facts = _native._check_build()
    assert module is not None and facts["source_hash_ok"] is None
    # a build without a hash (not made by setup.py) is refused where the source exists
    monkeypatch.setattr(_native, "SOURCE", edited)
    monkeypatch.setattr(module, "SOURCE_SHA256", "")
    module, facts = _native._check_build()
    assert module is None and "without a source hash" in facts["problem"]


def test_kernel_status_when_turned_off_or_misconfigured(monkeypatch):
    monkeypatch.setenv("FORTIS_KERNELS", "numpy")
    status = robust.kernel_status()
    assert not status["in_use"] and status["mode"] == "numpy"
    if status["available"]:
        assert "turned off" in status["reason"]
    monkeypatch.setenv("FORTIS_KERNELS", "fast")
    status = robust.kernel_status()
    assert not status["in_use"] and "FORTIS_KERNELS must be" in status["reason"]


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


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)
    return a


def _expect_refusals(fn, ok: dict, cases, outputs) -> None:
    """``fn(**ok)`` works; each case ``(error, message, change)`` makes ``fn(**{**ok,
    **change})`` raise ``error`` matching ``message``, and no output buffer is touched."""
    fn(*ok.values())
    for out in outputs:
        out[...] = 7
    for error, message, change in cases:
        with pytest.raises(error, match=message):
            fn(*{**ok, **change}.values())
    for out in outputs:
        assert (out == 7).all(), "a refused call wrote to an output"


@needs_kernel
def test_rank_kernel_checks_every_buffer_format_and_shape():
    # the kernel used to take itemsize= and the row stride from the caller and read `rows`
    # as int64 whatever it was: an int32 rows array, or float64 out with float32 X, was
    # silently misread. Each buffer's format, layout and shape is now checked in C.
    X = np.zeros((4, 10), dtype=np.float32)
    rows = np.arange(4, dtype=np.int64)
    pairs = _ranking.network(4, (1,), ())
    out = np.zeros((1, 10), dtype=np.float32)
    sums = np.zeros(10)
    none = np.empty(0, dtype=np.int64)
    ok = dict(X=X, rows=rows, a=0, c=10, pairs=pairs, ranks=np.array([1]), out=out)
    ok.update(sum_wires=none, sums=sums, scratch=None)
    assert _native.kernels.rank_columns(*ok.values()) is True
    cases = [
        (TypeError, "rows must be a int64 array, got format 'i'", dict(rows=rows.astype(np.int32))),
        (TypeError, "rows must be a int64 array, got format 'd'", dict(rows=rows.astype(float))),
        (TypeError, "X must be a float32 or float64 array, got format 'e'", dict(X=X.astype("e"))),
        (TypeError, "X must be a float32 or float64 array, got format 'i'", dict(X=X.astype("i"))),
        (
            TypeError,
            "X must be a float32 or float64 array, got format '>f'",
            dict(X=X.astype(">f4")),
        ),
        (
            TypeError,
            r"out \(the dtype of X\) must be a float32 array, got format 'd'",
            dict(out=out.astype(float)),
        ),
        (TypeError, "pairs must be a int32 array", dict(pairs=pairs.astype(np.int64))),
        (
            TypeError,
            "ranks must be a int64 array, got format 'L'",
            dict(ranks=np.array([1], np.uint64)),
        ),
        (TypeError, "sum_wires must be a int64", dict(sum_wires=none.astype(np.int32))),
        (TypeError, "sums must be a float64", dict(sums=sums.astype(np.float32))),
        (TypeError, "X must be a C-contiguous", dict(X=np.zeros((10, 4), np.float32).T)),
        (TypeError, "out .* must be a C-contiguous writable", dict(out=_read_only(out))),
        (TypeError, "sums must be a C-contiguous writable", dict(sums=_read_only(sums))),
        (TypeError, "scratch must be a C-contiguous writable", dict(scratch=b"\0" * 10**5)),
        (ValueError, "X must be 2-D, got 1-D", dict(X=X.ravel())),
        (ValueError, "rows must be 1-D, got 2-D", dict(rows=rows.reshape(2, 2))),
        (ValueError, "out .* must be 2-D", dict(out=out.ravel())),
        (ValueError, r"pairs must have shape \(m, 2\)", dict(pairs=np.zeros((2, 3), np.int32))),
        (
            ValueError,
            r"out .* is too small: needs \(1, 10\), got \(1, 9\)",
            dict(out=out[:, :9].copy()),
        ),
        (ValueError, r"out .* is too small: needs \(2, 10\)", dict(ranks=np.array([1, 2]))),
        (ValueError, "sums is too small", dict(sum_wires=np.array([1]), sums=np.zeros(3))),
        (ValueError, "scratch is too small", dict(scratch=np.zeros(64, np.uint8))),
        (
            ValueError,
            r"columns \[5, 11\) of 4 rows do not fit X of shape \(4, 10\)",
            dict(a=5, c=6),
        ),
        (ValueError, "do not fit", dict(a=-1)),
        (ValueError, "do not fit", dict(rows=none)),
        (IndexError, "row index", dict(rows=np.array([0, 1, 2, 4]))),
        (IndexError, "wire", dict(pairs=np.array([[0, 9]], dtype=np.int32))),
        (IndexError, "rank", dict(ranks=np.array([4]))),
        (IndexError, "summed wire", dict(sum_wires=np.array([-1]))),
    ]
    _expect_refusals(_native.kernels.rank_columns, ok, cases, [out, sums])


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
def test_squared_distance_kernel_checks_every_buffer():
    k = _native.kernels
    X = np.zeros((3, 10), dtype=np.float32)
    rows = np.arange(3, dtype=np.int64)
    out = np.zeros(3)
    ok = dict(X=X, rows=rows, a=0, c=10, z=np.zeros(10), out=out)
    cases = [
        (TypeError, "rows must be a int64 array, got format 'i'", dict(rows=rows.astype(np.int32))),
        (TypeError, "X must be a float32 or float64 array, got format 'e'", dict(X=X.astype("e"))),
        (TypeError, "z must be a float64 array, got format 'f'", dict(z=np.zeros(10, np.float32))),
        (
            TypeError,
            "out must be a float64 array, got format 'f'",
            dict(out=out.astype(np.float32)),
        ),
        (TypeError, "out must be a C-contiguous writable", dict(out=_read_only(out))),
        (ValueError, "X must be 2-D", dict(X=X.ravel())),
        (ValueError, "z must be 1-D", dict(z=np.zeros((1, 10)))),
        (ValueError, "z is too short: 9 values for 10 columns", dict(z=np.zeros(9))),
        (ValueError, "out is too small: 2 values for 3 rows", dict(out=np.zeros(2))),
        (ValueError, "do not fit", dict(a=4, c=7, z=np.zeros(7))),
        (IndexError, "row index", dict(rows=np.array([3]))),
    ]
    _expect_refusals(k.sq_dists, ok, cases, [out])
    # NaN and inf propagate as in numpy: the caller decides what a non-finite row means
    X[1, 3] = np.nan
    X[2, 9] = np.inf
    k.sq_dists(X, rows, 0, 10, np.empty(0), out)
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
def test_centring_kernel_checks_every_buffer():
    X = np.zeros((3, 10), dtype=np.float32)
    rows = np.arange(3, dtype=np.int64)
    out = np.zeros((3, 10), dtype=np.float32)
    ok = dict(X=X, rows=rows, a=0, c=10, z=np.empty(0), out=out)
    cases = [
        (TypeError, "X must be a float32 array, got format 'd'", dict(X=X.astype(float))),
        (TypeError, "out must be a float32 array, got format 'd'", dict(out=out.astype(float))),
        (TypeError, "rows must be a int64", dict(rows=rows.astype(np.int16))),
        (ValueError, r"out is too small: needs \(3, 10\), got \(2, 10\)", dict(out=out[:2].copy())),
        (ValueError, "out must be 2-D", dict(out=np.zeros(30, np.float32))),
        (ValueError, "z is too short", dict(z=np.zeros(3))),
        (ValueError, "do not fit", dict(a=8, c=5)),
        (IndexError, "row index", dict(rows=np.array([5]))),
    ]
    _expect_refusals(_native.kernels.center_rows, ok, cases, [out])


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
        ok = _native.kernels.rank_columns(X, rows, a, c, pairs, ranks, out, sum_wires, sums)
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
        k.sq_dists(X, rows, a, c, z, out)
    except (ValueError, IndexError, TypeError):
        assert not valid or 0 < zlen < c
    else:
        ref = X[rows, a : a + c].astype(np.float64) - (z[:c] if zlen else 0.0)
        np.testing.assert_allclose(out, (ref**2).sum(1), rtol=1e-12, atol=1e-12)
    cen = np.zeros((m, max(c, 1)), dtype=np.float32)
    try:
        k.center_rows(X, rows, a, c, z, cen)
    except (ValueError, IndexError, TypeError):
        assert not valid or 0 < zlen < c
    else:
        blk = X[rows, a : a + c].astype(np.float64)
        mid = z[:c] if zlen else blk.mean(axis=0)
        np.testing.assert_allclose(cen[:, :c], (blk - mid).astype(np.float32), rtol=1e-6, atol=1e-6)
