"""Exact ±1 sketches: exactness against an independent dense reference, determinism, linearity,
worker/chunk independence, overflow handling, the projection seed and typed errors."""

from __future__ import annotations

import hashlib
import secrets

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    FixedPointEncoder,
    SecAggParameterError,
    Sketcher,
    SketchOverflowError,
    SketchParameterError,
    projection_matrix,
    projection_seed,
    sketch,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def reference_matrix(seed: bytes, k: int, d: int) -> list[list[int]]:
    """P from the raw AES-256-CTR keystream, written from the layout in the module docstring:
    byte c*kb*2**15 + r*2**15 + u holds rows 8r..8r+7 of column c*2**15 + u, bit t for row
    8r + t, bit 1 = +1."""
    cols, kb = 1 << 15, -(-k // 8)
    blocks = -(-d // cols)
    ks = (
        Cipher(algorithms.AES(seed), modes.CTR(bytes(16)))
        .encryptor()
        .update(bytes(blocks * kb * cols))
    )

    def entry(row: int, j: int) -> int:
        byte = ks[(j // cols) * kb * cols + (row // 8) * cols + j % cols]
        return 1 if (byte >> (row % 8)) & 1 else -1

    return [[entry(row, j) for j in range(d)] for row in range(k)]


def reference_sketch(seed: bytes, k: int, x) -> list[int]:
    p = reference_matrix(seed, k, len(x))
    xs = [int(v) for v in x]
    return [sum(a * b for a, b in zip(row, xs)) for row in p]


def as_ints(a: np.ndarray) -> list[int]:
    return [int(v) for v in a.reshape(-1)]


# -- exactness -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    d=st.integers(1, 300),
    k=st.integers(1, 40),
    seed=st.binary(min_size=32, max_size=32),
    magnitude=st.sampled_from([1, 127, 2**31, 2**40, 2**53]),
)
def test_matches_dense_reference(data, d, k, seed, magnitude):
    # values up to the int64 output's limit for this d (d*max|x| <= 2**63 - 1), extremes
    # included; magnitudes 2**53 and above take the limb path inside
    limit = min(magnitude, INT64_MAX // d)
    values = st.one_of(st.integers(-limit, limit), st.sampled_from([-limit, limit, 0, 1, -1]))
    x = np.array(data.draw(st.lists(values, min_size=d, max_size=d)), dtype=np.int64)
    got = sketch(x, seed, k)
    assert got.dtype == np.int64 and got.shape == (k,)
    assert as_ints(got) == reference_sketch(seed, k, x)


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    d=st.integers(1, 120),
    k=st.integers(1, 24),
    seed=st.binary(min_size=32, max_size=32),
)
def test_wide_is_exact_for_any_int64(data, d, k, seed):
    values = st.one_of(
        st.integers(INT64_MIN, INT64_MAX), st.sampled_from([INT64_MIN, INT64_MAX, 0, -1])
    )
    x = np.array(data.draw(st.lists(values, min_size=d, max_size=d)), dtype=np.int64)
    got = sketch(x, seed, k, wide=True)
    assert got.dtype == object and got.shape == (k,)
    assert all(type(v) is int for v in got)
    assert list(got) == reference_sketch(seed, k, x)


def test_projection_matrix_matches_reference_and_is_pm_one():
    seed = secrets.token_bytes(32)
    p = projection_matrix(seed, 13, 37)
    assert p.dtype == np.int8 and p.shape == (13, 37)
    assert p.tolist() == reference_matrix(seed, 13, 37)
    assert set(np.unique(p)) == {-1, 1}


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_every_signed_dtype(dtype):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    x = rng.integers(info.min, info.max, size=1000, endpoint=True, dtype=dtype)
    x[:2] = info.min, info.max
    seed = secrets.token_bytes(32)
    # the full int64 range needs the wide path (2*d*2**63 > int64); narrower types do not
    assert as_ints(sketch(x, seed, 20, wide=dtype == np.int64)) == reference_sketch(seed, 20, x)


def test_fixed_point_encodings_sketch_through_to_signed():
    enc = FixedPointEncoder(clip=1.0, n_max=10, bits=32)
    rng = np.random.default_rng(0)
    update = rng.uniform(-1, 1, size=500)
    signed = enc.to_signed(enc.encode(update, rng))
    seed = secrets.token_bytes(32)
    assert as_ints(sketch(signed, seed, 16)) == reference_sketch(seed, 16, signed)


def test_batch_rows_equal_single_sketches():
    rng = np.random.default_rng(5)
    xs = rng.integers(-(2**40), 2**40, size=(4, 3000))
    seed = secrets.token_bytes(32)
    batch = sketch(xs, seed, 32)
    assert batch.shape == (4, 32)
    for row, x in zip(batch, xs):
        np.testing.assert_array_equal(row, sketch(x, seed, 32))
    wide = sketch(xs, seed, 32, wide=True)
    assert wide.shape == (4, 32) and wide.tolist() == batch.tolist()


# -- determinism, seeds, layout --------------------------------------------------------------


def test_deterministic_from_seed_and_independent_of_d():
    rng = np.random.default_rng(1)
    x = rng.integers(-1000, 1000, size=5000)
    seed = bytes(range(32))
    first = sketch(x, seed, 64)
    np.testing.assert_array_equal(Sketcher(64).sketch(x, seed), first)
    np.testing.assert_array_equal(sketch(x, bytearray(seed), 64), first)
    # column j of P depends only on (seed, k, j): trailing zeros change nothing
    padded = np.concatenate([x, np.zeros(777, dtype=x.dtype)])
    np.testing.assert_array_equal(sketch(padded, seed, 64), first)
    # a pinned value, so that a change of layout cannot go unnoticed
    digest = hashlib.sha256(projection_matrix(seed, 8, 64).tobytes()).hexdigest()[:16]
    assert (
        digest
        == hashlib.sha256(
            np.array(reference_matrix(seed, 8, 64), dtype=np.int8).tobytes()
        ).hexdigest()[:16]
    )


def test_different_seeds_give_different_projections():
    k, d = 64, 512
    mats = [projection_matrix(secrets.token_bytes(32), k, d) for _ in range(4)]
    for i in range(len(mats)):
        for j in range(i + 1, len(mats)):
            agree = np.count_nonzero(mats[i] == mats[j])
            # independent fair signs: agreement ~ Binomial(k*d, 1/2), sd = 90; 8 sd margin
            assert abs(agree - k * d / 2) < 8 * np.sqrt(k * d) / 2
    x = np.arange(1, d + 1, dtype=np.int64)
    assert not np.array_equal(sketch(x, bytes(32), k), sketch(x, bytes(31) + b"\x01", k))


# -- linearity (the verification step relies on it) ------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    n=st.integers(1, 6),
    d=st.integers(1, 5000),
    gen=st.integers(0, 2**32 - 1),
)
def test_linearity_sum_of_sketches_is_sketch_of_sum(seed, n, d, gen):
    rng = np.random.default_rng(gen)
    xs = rng.integers(-(2**31), 2**31, size=(n, d))
    total = xs.sum(axis=0)
    assert np.array_equal(sketch(total, seed, 48), sketch(xs, seed, 48).sum(axis=0))
    # the verification compares Python ints (e.g. Paillier plaintexts): same with wide
    assert list(sketch(total, seed, 48, wide=True)) == list(
        sketch(xs, seed, 48, wide=True).sum(axis=0)
    )


def test_linearity_beyond_int64():
    # a server's sum of 64-bit fixed-point vectors: each input near 2**62, the sum near 2**63
    rng = np.random.default_rng(11)
    d = 2000
    xs = rng.integers(-(2**62), 2**62, size=(2, d))
    seed = secrets.token_bytes(32)
    halves = sketch(xs, seed, 32, wide=True)
    total = xs[0].astype(object) + xs[1].astype(object)
    assert all(abs(v) < 2**63 for v in total)
    total64 = total.astype(np.int64)
    assert list(sketch(total64, seed, 32, wide=True)) == list(halves[0] + halves[1])


# -- worker count and chunking -----------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 8, 2**15, 2**15 + 1, 100_001])
@pytest.mark.parametrize("k", [1, 16, 100])
def test_identical_for_any_worker_count(d, k):
    rng = np.random.default_rng(d * 1000 + k)
    x = rng.integers(-(2**45), 2**45, size=d)
    seed = secrets.token_bytes(32)
    expected = Sketcher(k, workers=1).sketch(x, seed)
    for workers in (2, 3, 8):
        np.testing.assert_array_equal(Sketcher(k, workers=workers).sketch(x, seed), expected)
    np.testing.assert_array_equal(sketch(x, seed, k, workers=2), expected)
    if d * k <= 2**22:
        p = projection_matrix(seed, k, d).astype(object)
        assert list(expected) == list(p @ x.astype(object))


def test_sketcher_reuse_across_sizes_and_seeds():
    sk = Sketcher(24, workers=2)
    rng = np.random.default_rng(2)
    for d in (10, 3000, 10, 2**15 + 129):
        x = rng.integers(-99, 99, size=d)
        seed = secrets.token_bytes(32)
        assert as_ints(sk.sketch(x, seed)) == reference_sketch(seed, 24, x)


# -- overflow --------------------------------------------------------------------------------


def test_overflow_is_refused_not_wrapped():
    # every entry 2**62: rows of P with more +1 than -1 give |s_l| >= 2**63
    d, k = 8, 64
    x = np.full(d, 2**62, dtype=np.int64)
    seed = bytes(32)
    ref = reference_sketch(seed, k, x)
    assert max(abs(v) for v in ref) > INT64_MAX  # the true sketch does not fit int64
    with pytest.raises(SketchOverflowError, match="wide=True"):
        sketch(x, seed, k)
    assert list(sketch(x, seed, k, wide=True)) == ref


def test_overflow_check_is_at_the_stated_bound():
    d, k = 1000, 8
    limit = INT64_MAX // d  # |s_l| <= d*max|x| <= 2**63 - 1: int64 output
    seed = secrets.token_bytes(32)
    x = np.full(d, limit, dtype=np.int64)
    x[::3] = -limit
    assert as_ints(sketch(x, seed, k)) == reference_sketch(seed, k, x)
    x[0] = -(limit + 1)
    with pytest.raises(SketchOverflowError):
        sketch(x, seed, k)
    assert list(sketch(x, seed, k, wide=True)) == reference_sketch(seed, k, x)


@pytest.mark.parametrize(
    "x",
    [
        [2**52 - 1, 2**52 - 1],  # d*max|x| < 2**53: one float64 pass
        [2**53, 1],  # 2**53 + 1 is not a float64: the limb split must catch it
        [2**53 + 1, -(2**53) - 1, 3],
        [2**60 + 12345, 2**61 - 1, -(2**59) + 7, 1],
    ],
)
def test_exact_beyond_float64_integers(x):
    x = np.array(x, dtype=np.int64)
    for k in (1, 8, 33):
        seed = secrets.token_bytes(32)
        assert as_ints(sketch(x, seed, k)) == reference_sketch(seed, k, x)


def test_int64_min_is_handled():
    x = np.array([INT64_MIN, INT64_MIN, INT64_MAX], dtype=np.int64)
    seed = secrets.token_bytes(32)
    with pytest.raises(SketchOverflowError):
        sketch(x, seed, 4)
    assert list(sketch(x, seed, 4, wide=True)) == reference_sketch(seed, 4, x)


# -- the projection seed ---------------------------------------------------------------------


def test_projection_seed_is_domain_separated_and_binds_both_fields():
    digest = hashlib.sha256(b"all masked inputs").digest()
    s = projection_seed(digest, b"round=7")
    assert isinstance(s, bytes) and len(s) == 32
    assert s == projection_seed(bytearray(digest), memoryview(b"round=7"))
    assert s != projection_seed(digest, b"round=8")
    assert s != projection_seed(hashlib.sha256(b"other inputs").digest(), b"round=7")
    assert s != hashlib.sha256(digest + b"round=7").digest()
    # the length prefixes stop a byte moving from the digest to the context
    d64 = hashlib.sha512(b"x").digest()
    assert projection_seed(d64, b"") != projection_seed(d64[:63], d64[63:])
    assert projection_seed(digest, b"") != projection_seed(digest, b"\x00")


@pytest.mark.parametrize(
    "digest, context",
    [(b"\x00" * 31, b""), (b"\x00" * 65, b""), ("00" * 32, b""), (b"\x00" * 32, "ctx")],
)
def test_projection_seed_typed_errors(digest, context):
    with pytest.raises(SketchParameterError):
        projection_seed(digest, context)


# -- typed errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, match",
    [
        (np.arange(5, dtype=np.uint32), "to_signed"),
        (np.arange(5, dtype=np.uint64), "signed integer"),
        (np.arange(5, dtype=np.float64), "signed integer"),
        (np.array([True, False]), "signed integer"),
        (np.array([1, 2], dtype=object), "signed integer"),
        ([1, 2, 3], "numpy array"),
        (np.int64(3), "numpy array"),
        (np.zeros((2, 3, 4), dtype=np.int64), "shape"),
        (np.zeros(0, dtype=np.int64), "shape"),
        (np.zeros((3, 0), dtype=np.int64), "shape"),
    ],
)
def test_bad_input_is_a_typed_error(x, match):
    with pytest.raises(SketchParameterError, match=match):
        sketch(x, bytes(32), 8)


@pytest.mark.parametrize("seed", [b"\x00" * 31, b"\x00" * 33, b"", "a" * 32, None, 123])
def test_bad_seed_is_a_typed_error(seed):
    with pytest.raises(SketchParameterError, match="seed"):
        sketch(np.arange(4), seed, 8)
    with pytest.raises(SketchParameterError, match="seed"):
        projection_matrix(seed, 8, 4)


@pytest.mark.parametrize("k", [0, -1, 4097, 2.0, True, None])
def test_bad_k_is_a_typed_error(k):
    with pytest.raises(SketchParameterError, match="k must"):
        sketch(np.arange(4), bytes(32), k)


@pytest.mark.parametrize("workers", [0, -2, 1.5, True])
def test_bad_workers_is_a_typed_error(workers):
    with pytest.raises(SketchParameterError, match="workers"):
        sketch(np.arange(4), bytes(32), 8, workers=workers)


def test_projection_matrix_refuses_large_sizes():
    with pytest.raises(SketchParameterError, match="small sizes"):
        projection_matrix(bytes(32), 128, 10**6)
    with pytest.raises(SketchParameterError, match="d must"):
        projection_matrix(bytes(32), 8, 0)


def test_errors_belong_to_the_secagg_family():
    assert issubclass(SketchParameterError, SecAggParameterError)
    assert issubclass(SketchOverflowError, OverflowError)
    assert issubclass(SketchOverflowError, ValueError)


def test_empty_batch():
    out = sketch(np.zeros((0, 10), dtype=np.int64), bytes(32), 8)
    assert out.shape == (0, 8) and out.dtype == np.int64


# -- soundness of the verification: P·w = 0 with probability <= 2**-k ------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
def test_kernel_hit_rate_is_at_most_two_to_minus_k(k):
    # a lie that differs from the committed input by w = e_0 - e_1 (the hardest case: P·w = 0
    # exactly when two columns agree, probability 2**-k) or a dense w
    rng = np.random.default_rng(40 + k)
    trials = 4000
    w_pair = np.zeros(50, dtype=np.int64)
    w_pair[[0, 1]] = 1, -1
    w_dense = rng.integers(-3, 4, size=50)
    w_dense[0] = 5
    hits = np.zeros(2, dtype=int)
    for _ in range(trials):
        s = sketch(np.stack([w_pair, w_dense]), rng.bytes(32), k)
        hits += ~s.any(axis=1)
    bound = 2.0**-k
    sd = np.sqrt(bound * (1 - bound) / trials)
    assert hits[0] / trials < bound + 4 * sd  # equality case of the bound
    assert hits[0] / trials > bound - 4 * sd
    assert hits[1] / trials < bound + 4 * sd


def test_a_lone_liar_is_caught_at_k_64():
    rng = np.random.default_rng(64)
    honest = rng.integers(-(2**20), 2**20, size=(9, 5000))
    committed = rng.integers(-(2**20), 2**20, size=5000)  # what the liar masked
    claimed = committed.copy()
    claimed[17] += 1  # the smallest possible lie
    for _ in range(200):
        seed = rng.bytes(32)
        sketches = np.vstack([sketch(honest, seed, 64), sketch(claimed, seed, 64)[None, :]])
        total = np.vstack([honest, committed[None, :]]).sum(axis=0)
        assert not np.array_equal(sketch(total, seed, 64), sketches.sum(axis=0))
