"""dp.mechanisms: central Gaussian, rotation, distributed encode/decode, sensitivity bounds,
the modular-wrap check and calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dp import (
    Accountant,
    CentralGaussian,
    DistributedDiscreteGaussian,
    DistributedSkellam,
    ModularWrapError,
    NoiseSource,
    PrivacyParameterError,
    randomized_hadamard,
)

SEED = b"\x0a" * 32


def test_central_gaussian_noise_and_report():
    mech = CentralGaussian(noise_multiplier=1.5, clip_norm=2.0)
    total = np.zeros(200_000)
    noised, rep = mech.add_noise(total, NoiseSource(b"\x01" * 32))
    assert rep.sigma == 3.0 and rep.dim == total.size and rep.mechanism == "gaussian"
    # sample std within 5 standard errors (se of s/sigma ~ 1/sqrt(2n))
    assert abs(noised.std() / 3.0 - 1) < 5 / math.sqrt(2 * total.size)
    acc = Accountant(1e-5)
    acc.compose(mech.event(0.1, 10))
    assert acc.events[0].noise_multipliers == (1.5,)
    with pytest.raises(PrivacyParameterError):
        mech.add_noise(np.array([np.nan]), NoiseSource())
    with pytest.raises(PrivacyParameterError):
        CentralGaussian(0.0, 1.0)


def test_hadamard_rotation_is_orthonormal_and_inverts():
    x = np.random.default_rng(0).normal(size=1000)
    y = randomized_hadamard(x, SEED)
    assert y.size == 1024
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    back = randomized_hadamard(y, SEED, inverse=True, dim=1000)
    assert np.allclose(back, x, atol=1e-12)
    # flattening: a spike spreads evenly
    spike = np.zeros(1024)
    spike[3] = 1.0
    assert np.allclose(np.abs(randomized_hadamard(spike, SEED)), 1 / 32)
    assert not np.allclose(randomized_hadamard(x, SEED), randomized_hadamard(x, b"\x0b" * 32))


@pytest.mark.parametrize("cls", [DistributedDiscreteGaussian, DistributedSkellam])
@pytest.mark.parametrize("rotate", [True, False])
def test_encode_decode_round_trip_and_noise_level(cls, rotate):
    n, d = 8, 3000
    mech = cls(n_clients=n, dim=d, clip_norm=1.0, sigma=0.05, scale=2000.0, bits=32, rotate=rotate)
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=d) for _ in range(n)]
    xs = [x / np.linalg.norm(x) * 0.9 for x in xs]
    src = NoiseSource(b"\x02" * 32)
    m = 1 << mech.bits
    clean = sum(mech.encode(x, SEED, src, noise=False) for x in xs) % m
    err = mech.decode(clean, SEED) - sum(xs)
    assert np.abs(err).max() <= n / mech.scale * 1.0001  # rounding moves each client < 1 unit
    noisy = sum(mech.encode(x, SEED, src) for x in xs) % m
    err = mech.decode(noisy, SEED) - sum(xs)
    # total noise std on the sum is sigma (+ rounding std <= sqrt(n)/2/scale ~ 7e-4)
    assert abs(err.std() / 0.05 - 1) < 0.05


def test_rounded_vectors_respect_the_l2_sensitivity():
    mech = DistributedDiscreteGaussian(
        n_clients=4, dim=500, clip_norm=1.0, sigma=1.0, scale=30.0, bits=24, beta=math.exp(-0.5)
    )
    src = NoiseSource(b"\x03" * 32)
    x = np.full(500, 1 / math.sqrt(500))
    norms = [np.linalg.norm(mech.encode(x, SEED, src, noise=False)) for _ in range(300)]
    assert max(norms) <= mech.l2_sensitivity
    plain = DistributedDiscreteGaussian(
        n_clients=4, dim=500, clip_norm=1.0, sigma=1.0, scale=30.0, bits=24, beta=0.0
    )
    assert mech.l2_sensitivity < plain.l2_sensitivity == 30.0 + math.sqrt(512)


def test_wrap_check_raises_a_typed_error_when_bits_are_too_few():
    kw = dict(n_clients=100, dim=10**5, clip_norm=1.0, sigma=1.0, scale=10_000.0)
    ok = DistributedDiscreteGaussian(bits=24, **kw)
    assert ok.check_wrap(1e-6) <= 1e-6
    tight = DistributedDiscreteGaussian(bits=16, **kw)
    with pytest.raises(ModularWrapError, match="2\\^16"):
        tight.check_wrap(1e-6)
    with pytest.raises(ModularWrapError):
        DistributedSkellam(bits=16, **kw).check_wrap()


@pytest.mark.parametrize("cls", [DistributedDiscreteGaussian, DistributedSkellam])
def test_wrap_bound_upper_bounds_the_empirical_wrap_rate(cls):
    # One coordinate carrying the whole clip norm (the worst case without rotation), 10 clients,
    # 12 bits: the signal sits at 1750 of the 2048 half-range and the noise std is 175, so a
    # wrap happens ~5% of the time. The Chernoff bound (~0.5) must cover the simulated rate.
    n = 10
    mech = cls(n_clients=n, dim=1, clip_norm=1.0, sigma=1.0, scale=175.0, bits=12, rotate=False)
    bound = mech.wrap_probability()
    assert 0.05 < bound < 1
    half = 1 << (mech.bits - 1)
    src = NoiseSource(b"\x04" * 32)
    x = np.ones(1)
    trials, wraps = 400, 0
    for _ in range(trials):
        total = int(sum(mech.encode(x, SEED, src) for _ in range(n))[0])
        wraps += not (-half <= total < half)
    assert 0 < wraps / trials <= bound


@pytest.mark.parametrize("cls", [DistributedDiscreteGaussian, DistributedSkellam])
def test_calibrated_distributed_mechanism_meets_the_target(cls):
    mech = cls.calibrate(4.0, 1e-5, 50, 0.2, n_clients=50, dim=10**5, clip_norm=1.0, bits=20)
    acc = Accountant(1e-5)
    acc.compose(mech.event(0.2, 50))
    assert acc.epsilon() <= 4.0
    assert mech.wrap_probability() <= 1e-6
    less = cls(
        n_clients=50, dim=10**5, clip_norm=1.0, sigma=mech.sigma / 1.05, scale=mech.scale, bits=20
    )
    acc = Accountant(1e-5)
    acc.compose(less.event(0.2, 50))
    assert acc.epsilon() > 4.0


def test_noise_shares_have_the_calibrated_variance():
    ddg = DistributedDiscreteGaussian(
        n_clients=100, dim=2**16, clip_norm=1.0, sigma=2.0, scale=500.0, bits=24
    )
    share = ddg.noise_share(NoiseSource(b"\x05" * 32)).astype(float)
    assert share.size == 2**16
    assert abs(share.var() / ddg.local_sigma**2 - 1) < 5 * math.sqrt(2 / share.size)
    sk = DistributedSkellam(
        n_clients=100, dim=2**16, clip_norm=1.0, sigma=2.0, scale=500.0, bits=24
    )
    share = sk.noise_share(NoiseSource(b"\x06" * 32)).astype(float)
    assert abs(share.var() / sk.local_variance - 1) < 5 * math.sqrt(2 / share.size)
    assert ddg.noise_tv_bound < 1e-10


def test_bad_mechanism_parameters_are_typed_errors():
    with pytest.raises(PrivacyParameterError):
        DistributedDiscreteGaussian(
            n_clients=0, dim=4, clip_norm=1.0, sigma=1.0, scale=1.0, bits=16
        )
    with pytest.raises(PrivacyParameterError):
        DistributedSkellam(n_clients=2, dim=4, clip_norm=1.0, sigma=1.0, scale=1.0, bits=80)
    mech = DistributedSkellam(n_clients=2, dim=4, clip_norm=1.0, sigma=1.0, scale=1.0, bits=16)
    with pytest.raises(PrivacyParameterError):
        mech.encode(np.ones(5), SEED, NoiseSource())
