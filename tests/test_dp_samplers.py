"""dp.samplers and dp.rng: exactness on small parameters, statistics of every sampler.

Every statistical test uses a fixed seed, so it is deterministic; alpha is the level at which a
correct sampler would fail with a fresh seed, power is stated against a concrete alternative.
"""

from __future__ import annotations

import random
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from scipy import stats

from dp import (
    NoiseSource,
    PrivacyParameterError,
    discrete_gaussian_pmf,
    discrete_gaussian_table,
    sample_discrete_gaussian,
    sample_discrete_laplace,
    sample_skellam,
    skellam_pmf,
    skellam_table,
)
from dp.samplers import sample_bernoulli_exp

ALPHA = 1e-4


def _chi2(samples: np.ndarray, pmf_of, cut: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Chi-square p-value with bins -cut..cut and the two tails merged into the end bins."""
    k = np.arange(-cut, cut + 1)
    p = pmf_of(k).astype(float)
    p[0] += (1 - p.sum()) / 2
    p[-1] = 1 - p[:-1].sum()
    obs = np.bincount(np.clip(samples, -cut, cut) + cut, minlength=2 * cut + 1)
    return stats.chisquare(obs, p * samples.size).pvalue, p, obs


def _power(p0: np.ndarray, p1: np.ndarray, n: int) -> float:
    lam = n * float(np.sum((p1 - p0) ** 2 / p0))
    df = p0.size - 1
    return float(stats.ncx2.sf(stats.chi2.isf(ALPHA, df), df, lam))


def _dg_exact_pmf(sigma2: float, k: np.ndarray) -> np.ndarray:
    mpmath.mp.dps = 50
    s2 = mpmath.mpf(sigma2)
    lim = int(12 * float(mpmath.sqrt(s2))) + 20
    z = mpmath.fsum(mpmath.exp(-mpmath.mpf(i * i) / (2 * s2)) for i in range(-lim, lim + 1))
    return np.array([float(mpmath.exp(-mpmath.mpf(int(i) ** 2) / (2 * s2)) / z) for i in k])


def test_exact_discrete_gaussian_pmf_sigma_1_5():
    # 200k exact draws of N_Z(0, 1.5^2) against the exact pmf, bins |x| <= 7.
    # Power: against sigma = 1.575 (5% wider) the noncentral chi-square gives power > 0.999 at
    # alpha = 1e-4 (asserted below), so a sampler off by 5% in scale fails this test.
    n = 200_000
    x = sample_discrete_gaussian(Fraction(9, 4), random.Random(20240601), size=n)
    pval, p0, _ = _chi2(x, lambda k: _dg_exact_pmf(2.25, k), 7)
    assert pval > ALPHA
    p1 = discrete_gaussian_pmf(1.575, np.arange(-7, 8))
    p1[0] += (1 - p1.sum()) / 2
    p1[-1] = 1 - p1[:-1].sum()
    assert _power(p0, p1, n) > 0.999
    assert abs(x.mean()) < 5 * 1.5 / np.sqrt(n)


def test_exact_discrete_gaussian_runs_on_the_chacha_source():
    x = sample_discrete_gaussian(4, NoiseSource(bytes(range(32))), size=20_000)
    pval, _, _ = _chi2(x, lambda k: _dg_exact_pmf(4, k), 8)
    assert pval > ALPHA
    with pytest.raises(PrivacyParameterError):
        sample_discrete_gaussian(0, random.Random(0))


def test_exact_discrete_laplace_pmf():
    # P[x] = tanh(1/(2t)) exp(-|x|/t) at t = 3/2 (rational scale), 60k draws, bins |x| <= 8.
    # Power vs t = 1.65 (10% wider): > 0.99 (asserted).
    n, t = 60_000, 1.5
    rng = random.Random(7)
    x = np.array([sample_discrete_laplace(Fraction(3, 2), rng) for _ in range(n)])

    def pmf(k, t=t):
        return np.tanh(1 / (2 * t)) * np.exp(-np.abs(k) / t)

    pval, p0, _ = _chi2(x, pmf, 8)
    assert pval > ALPHA
    _, p1, _ = _chi2(x, lambda k: pmf(k, 1.65), 8)
    assert _power(p0, p1, n) > 0.99


@pytest.mark.parametrize("gamma", [Fraction(7, 10), Fraction(23, 10), Fraction(0)])
def test_bernoulli_exp_frequency(gamma):
    # 40k coins; a 4-sigma band: |freq - p| <= 4 sqrt(p(1-p)/n) (alpha ~ 6e-5); detects an
    # error of 0.01 in p with power > 0.99.
    n = 40_000
    rng = random.Random(11)
    p = float(np.exp(-float(gamma)))
    freq = sum(sample_bernoulli_exp(gamma, rng) for _ in range(n)) / n
    assert abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12


@pytest.mark.parametrize("sigma", [1.5, 7.0])
def test_table_discrete_gaussian_is_within_its_stated_tv_bound(sigma):
    tab = discrete_gaussian_table(sigma)
    k = np.arange(tab.offset, tab.offset + len(tab))
    exact = _dg_exact_pmf(sigma * sigma, k)
    tv = 0.5 * np.abs(tab.table_pmf() - exact).sum() + (1 - exact.sum())
    assert tv <= tab.tv_bound
    assert tab.tv_bound < 1e-12
    assert np.array_equal(tab.alias_pmf(), tab.table_pmf())  # the alias table is exact


def test_table_discrete_gaussian_samples_sigma_1_5():
    # 1M draws, bins |x| <= 7; power vs sigma = 1.53 (2% wider) > 0.99 (asserted).
    n = 1_000_000
    x = discrete_gaussian_table(1.5).sample(n, NoiseSource(b"\x05" * 32))
    pval, p0, _ = _chi2(x, lambda k: _dg_exact_pmf(2.25, k), 7)
    assert pval > ALPHA
    _, p1, _ = _chi2(x, lambda k: discrete_gaussian_pmf(1.53, k), 7)
    assert _power(p0, p1, n) > 0.99


def test_table_discrete_gaussian_large_sigma_moments_and_tails():
    # sigma = 3000, 1M draws: mean within 5 se, variance within 5 se (se of s^2 ~ s^2 sqrt(2/n)),
    # tail P[|X| > 3 sigma] = 0.0027 within 5 se; KS against N(0, sigma^2) (continuity error
    # 1/sigma is far below the KS critical value 2.3e-3 at alpha = 1e-4).
    sigma, n = 3000.0, 1_000_000
    x = discrete_gaussian_table(sigma).sample(n, NoiseSource(b"\x06" * 32)).astype(float)
    assert abs(x.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(x.var() / sigma**2 - 1) < 5 * np.sqrt(2 / n)
    p3 = 2 * stats.norm.sf(3)
    assert abs(np.mean(np.abs(x) > 3 * sigma) - p3) < 5 * np.sqrt(p3 / n)
    assert stats.kstest(x / sigma, "norm").pvalue > ALPHA


def test_skellam_table_exact_pmf_and_samples():
    mu = 3.0
    tab = skellam_table(mu)
    k = np.arange(tab.offset, tab.offset + len(tab))
    mpmath.mp.dps = 50
    exact = np.array([float(mpmath.exp(-mu) * mpmath.besseli(abs(int(i)), mu)) for i in k])
    assert 0.5 * np.abs(tab.table_pmf() - exact).sum() + (1 - exact.sum()) <= tab.tv_bound
    # 500k draws; power vs variance 3.15 (5% more) > 0.99 (asserted).
    n = 500_000
    x = tab.sample(n, NoiseSource(b"\x07" * 32))
    pval, p0, _ = _chi2(x, lambda kk: skellam_pmf(mu, kk), 8)
    assert pval > ALPHA
    _, p1, _ = _chi2(x, lambda kk: skellam_pmf(3.15, kk), 8)
    assert _power(p0, p1, n) > 0.99


def test_numpy_skellam_moments():
    mu, n = 50.0, 400_000
    x = sample_skellam(mu, n, np.random.default_rng(3)).astype(float)
    assert abs(x.mean()) < 5 * np.sqrt(mu / n)
    # var of s^2 for Skellam: (2 mu^2 + mu) / n (kurtosis excess 1/mu)
    assert abs(x.var() - mu) < 5 * np.sqrt((2 * mu * mu + mu) / n)
    pval, _, _ = _chi2(x.astype(np.int64), lambda k: skellam_pmf(mu, k), 20)
    assert pval > ALPHA


def test_noise_source_is_deterministic_given_a_seed_and_uniform():
    a, b = NoiseSource(b"\x01" * 32), NoiseSource(b"\x01" * 32)
    assert np.array_equal(a.words(1000), b.words(1000))
    assert a.randbelow(10**30) == b.randbelow(10**30)
    assert not np.array_equal(NoiseSource().words(4), NoiseSource().words(4))  # os.urandom keys
    # randbelow(7): 70k draws, chi-square at alpha 1e-4
    src = NoiseSource(b"\x02" * 32)
    counts = np.bincount([src.randbelow(7) for _ in range(70_000)], minlength=7)
    assert stats.chisquare(counts).pvalue > ALPHA
    u = src.uniform(200_000)
    assert stats.kstest(u, "uniform").pvalue > ALPHA
    with pytest.raises(PrivacyParameterError):
        NoiseSource(b"short")


def test_noise_source_normal_is_standard_normal():
    # KS with 400k draws: a 2% scale error gives D ~ 0.0048 > the critical 0.0035 at alpha 1e-4.
    z = NoiseSource(b"\x03" * 32).normal(400_001, scale=2.0) / 2.0
    assert z.size == 400_001
    assert stats.kstest(z, "norm").pvalue > ALPHA
    assert abs(np.mean(np.abs(z) > 4) - 2 * stats.norm.sf(4)) < 5 * np.sqrt(6.3e-5 / z.size)
