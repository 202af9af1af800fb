"""Fixed-point encoding: round trips, unbiased stochastic rounding, headroom, no silent clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import EncodingOverflowError, FixedPointEncoder, SecAggError


def test_round_trip_within_one_quantisation_step():
    rng = np.random.default_rng(0)
    enc = FixedPointEncoder(clip=2.0, n_max=50, bits=32)
    x = rng.uniform(-2, 2, 10_000)
    y = enc.encode(x, rng)
    assert y.dtype == np.uint32 and y.shape == x.shape
    err = np.abs(enc.decode(y, 1) - x)
    assert err.max() < enc.resolution
    # exactly representable values are encoded exactly
    grid = np.arange(-100, 101) * enc.resolution
    np.testing.assert_array_equal(enc.decode(enc.encode(grid, rng), 1), grid)


@pytest.mark.parametrize("bits", [16, 32, 48, 64])
def test_sum_of_n_encodings_decodes_to_sum(bits):
    rng = np.random.default_rng(bits)
    n, d = 40, 2_000
    enc = FixedPointEncoder(clip=1.5, n_max=n, bits=bits)
    xs = rng.uniform(-1.5, 1.5, (n, d))
    acc = np.zeros(d, dtype=enc.dtype)
    for x in xs:
        acc += enc.encode(x, rng)  # numpy uint arithmetic wraps modulo the dtype width
    acc = enc.wrap(acc)
    err = np.abs(enc.decode(acc, n) - xs.sum(axis=0))
    assert err.max() < n * enc.resolution


def test_extreme_sums_do_not_wrap():
    """n_max encodings of +clip (and of -clip) decode exactly: the headroom check is tight."""
    rng = np.random.default_rng(1)
    enc = FixedPointEncoder(clip=1.0, n_max=1000, bits=24)
    for sign in (1.0, -1.0):
        one = enc.encode(np.full(5, sign * enc.clip), rng)
        total = enc.wrap(one.astype(np.int64) * enc.n_max)
        np.testing.assert_allclose(enc.decode(total, enc.n_max), sign * enc.clip * enc.n_max)
    # and the chosen frac_bits is the largest with headroom
    half = 2 ** (enc.bits - 1)
    assert enc.n_max * math.ceil(enc.clip * enc.scale) < half
    assert enc.n_max * math.ceil(enc.clip * enc.scale * 2) >= half


def test_stochastic_rounding_is_unbiased():
    rng = np.random.default_rng(2)
    enc = FixedPointEncoder(clip=1.0, n_max=10, bits=16)  # coarse grid: resolution ~ 2**-12
    n = 400_000
    for frac in (0.1, 0.37, 0.5, 0.9):
        value = (123 + frac) * enc.resolution
        dec = enc.decode(enc.encode(np.full(n, value), rng), 1)
        # each sample is one of the two neighbouring grid points
        assert set(np.unique(dec)) <= {123 * enc.resolution, 124 * enc.resolution}
        # mean within 6 standard errors of the true value (std <= resolution / 2)
        se = 0.5 * enc.resolution / math.sqrt(n)
        assert abs(dec.mean() - value) < 6 * se
        # round-to-nearest would be off by min(frac, 1-frac) steps: far outside that band
        assert min(frac, 1 - frac) * enc.resolution > 20 * se
    # negative values too
    value = -(55 + 0.3) * enc.resolution
    dec = enc.decode(enc.encode(np.full(n, value), rng), 1)
    assert abs(dec.mean() - value) < 6 * 0.5 * enc.resolution / math.sqrt(n)


def test_value_above_clip_raises_instead_of_clipping():
    """Flower 1.42 silently clipped update values above its default range; fortis raises."""
    rng = np.random.default_rng(3)
    enc = FixedPointEncoder(clip=8.0, n_max=100)
    x = np.zeros(10)
    x[7] = 8.0 + 1e-9
    with pytest.raises(EncodingOverflowError, match=r"index \(7,\).*exceeds clip=8.0"):
        enc.encode(x, rng)
    x[7] = -20.0
    with pytest.raises(EncodingOverflowError, match="clip"):
        enc.encode(x, rng)
    # the boundary itself is accepted
    assert enc.decode(enc.encode(np.array([8.0, -8.0]), rng), 1).tolist() == [8.0, -8.0]
    assert issubclass(EncodingOverflowError, OverflowError)
    assert issubclass(EncodingOverflowError, SecAggError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(bad):
    enc = FixedPointEncoder(clip=1.0, n_max=4)
    with pytest.raises(EncodingOverflowError, match="non-finite"):
        enc.encode(np.array([0.0, bad, 0.5]), np.random.default_rng(0))


def test_headroom_checked_at_construction():
    with pytest.raises(EncodingOverflowError, match=r"n_max=1000.*2\*\*\(bits-1\)"):
        FixedPointEncoder(clip=1.0, n_max=1000, bits=16, frac_bits=8)
    # no frac_bits works at all: clip * n_max alone exceeds the range
    with pytest.raises(EncodingOverflowError, match="frac_bits=0"):
        FixedPointEncoder(clip=1e9, n_max=100, bits=32)
    # largest fitting frac_bits is accepted, one more is refused
    enc = FixedPointEncoder(clip=1.0, n_max=1000, bits=16)
    FixedPointEncoder(clip=1.0, n_max=1000, bits=16, frac_bits=enc.frac_bits)
    with pytest.raises(EncodingOverflowError):
        FixedPointEncoder(clip=1.0, n_max=1000, bits=16, frac_bits=enc.frac_bits + 1)


def test_decode_count_checked():
    enc = FixedPointEncoder(clip=1.0, n_max=3)
    y = np.zeros(4, dtype=np.uint32)
    with pytest.raises(EncodingOverflowError, match="count=4.*n_max=3"):
        enc.decode(y, 4)
    with pytest.raises(ValueError):
        enc.decode(y, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clip": 0.0, "n_max": 2},
        {"clip": -1.0, "n_max": 2},
        {"clip": float("nan"), "n_max": 2},
        {"clip": 1.0, "n_max": 0},
        {"clip": 1.0, "n_max": 2, "bits": 1},
        {"clip": 1.0, "n_max": 2, "bits": 65},
        {"clip": 1.0, "n_max": 2, "frac_bits": -1},
    ],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        FixedPointEncoder(**kwargs)


def test_dtypes_and_wrap():
    assert FixedPointEncoder(1.0, 2, bits=32).dtype is np.uint32
    assert FixedPointEncoder(1.0, 2, bits=12).dtype is np.uint32
    assert FixedPointEncoder(1.0, 2, bits=33).dtype is np.uint64
    enc = FixedPointEncoder(1.0, 2, bits=12)
    assert enc.modulus == 4096 and not hasattr(enc, "mask_bits")
    np.testing.assert_array_equal(enc.wrap(np.array([-1, 4096, 4097, 5])), [4095, 0, 1, 5])
    big = np.array([2**100 + 3, -(2**70)], dtype=object)
    np.testing.assert_array_equal(enc.wrap(big), [3, 0])
    np.testing.assert_array_equal(
        enc.to_signed(np.array([4095, 2048, 2047], np.uint32)), [-1, -2048, 2047]
    )
    with pytest.raises(TypeError):
        enc.wrap(np.array([1.5]))
    with pytest.raises(TypeError):
        enc.encode(np.array(["a"]), np.random.default_rng(0))


def test_encode_keeps_shape():
    enc = FixedPointEncoder(1.0, 4, bits=64)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4))
    y = enc.encode(x, np.random.default_rng(1))
    assert y.shape == (3, 4) and y.dtype == np.uint64
    assert np.abs(enc.decode(y) - x).max() < enc.resolution


@settings(max_examples=60, deadline=None)
@given(
    clip=st.floats(1e-3, 1e3),
    n_max=st.integers(1, 10_000),
    bits=st.integers(8, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_headroom_and_sum(clip, n_max, bits, seed):
    try:
        enc = FixedPointEncoder(clip, n_max, bits)
    except EncodingOverflowError:
        assert n_max * math.ceil(clip) >= 2 ** (bits - 1)
        return
    assert n_max * math.ceil(clip * enc.scale) < 2 ** (bits - 1)
    rng = np.random.default_rng(seed)
    count = min(n_max, 20)
    xs = rng.uniform(-clip, clip, (count, 8))
    xs[0, 0] = clip
    ints = [enc.to_signed(enc.encode(x, rng)) for x in xs]
    total = enc.wrap(np.array(sum(v.astype(object) for v in ints), dtype=object))
    err = np.abs(enc.decode(total, count) - xs.sum(axis=0))
    # rounding error, plus float64 rounding of the (large) decoded magnitudes
    assert err.max() <= count * enc.resolution + 1e-12 * count * clip
