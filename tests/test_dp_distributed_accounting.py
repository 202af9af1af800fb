"""The distributed mechanisms' neighbouring relation (dp/NOTES.md, "The client's own share").

A client of a distributed mechanism adds its own noise share, so under add/remove the two
neighbouring outputs differ in noise variance, not only by a shift. These tests check, against
independent numerical computations:

* the closed-form Renyi divergence of two Gaussians with different variances (Gil, Alajaji &
  Linder 2013) that quantifies the gap, and that it makes add/remove unaccountable at model
  dimensions whatever the noise level;
* that the bound fortis now uses (replace-one / zero-out, the client present in both runs,
  Poisson amplification by joint convexity) covers the exact divergences of sampled rounds in
  which the client's share comes and goes with its sampling -- the case Zhu & Wang's
  add/remove bound, used before, does not model;
* the events, their ledger format, and the calibration's target and overshoot.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import logsumexp

import dp
from dp.accounting import (
    Accountant,
    DistributedDiscreteGaussianEvent,
    SkellamEvent,
    ddg_rdp,
    event_from_dict,
    event_to_dict,
    gaussian_renyi_divergence,
    same_noise_sampled_rdp,
    skellam_rdp,
    subsampled_rdp,
)
from dp.errors import PrivacyParameterError


def _numerical_gaussian_renyi(alpha, mu, var_p, var_q):
    """D_alpha(N(mu, var_p) || N(0, var_q)) by quadrature of p^alpha q^(1-alpha)."""

    def log_integrand(x):
        lp = -0.5 * math.log(2 * math.pi * var_p) - (x - mu) ** 2 / (2 * var_p)
        lq = -0.5 * math.log(2 * math.pi * var_q) - x * x / (2 * var_q)
        return alpha * lp + (1 - alpha) * lq

    # centre and width of the integrand (a Gaussian in x up to a constant)
    prec = alpha / var_p + (1 - alpha) / var_q
    centre = alpha * mu / var_p / prec
    width = 1 / math.sqrt(prec)
    shift = log_integrand(centre)
    val, _ = integrate.quad(
        lambda x: math.exp(log_integrand(x) - shift),
        centre - 40 * width,
        centre + 40 * width,
        limit=200,
        epsabs=0,
        epsrel=1e-12,
    )
    return (math.log(val) + shift) / (alpha - 1)


@pytest.mark.parametrize(
    "alpha,mu,var_p,var_q",
    [
        (2.0, 1.0, 1.0, 1.0),
        (1.5, 0.7, 2.0, 1.0),
        (3.0, 2.0, 1.0, 1.5),
        (8.0, 1.0, 91.0, 90.0),
        (40.5, 0.3, 10.0, 9.8),
        (5.0, 0.0, 1.2, 1.0),
    ],
)
def test_gaussian_renyi_closed_form_matches_quadrature(alpha, mu, var_p, var_q):
    closed = gaussian_renyi_divergence(alpha, shift_sq=mu * mu, var_p=var_p, var_q=var_q)
    assert closed == pytest.approx(_numerical_gaussian_renyi(alpha, mu, var_p, var_q), rel=1e-7)
    # d isotropic coordinates: the variance part adds up d times, the shift once
    d = 7
    part = gaussian_renyi_divergence(alpha, shift_sq=0.0, var_p=var_p, var_q=var_q)
    many = gaussian_renyi_divergence(alpha, shift_sq=mu * mu, var_p=var_p, var_q=var_q, dim=d)
    assert many == pytest.approx(closed + (d - 1) * part, rel=1e-12, abs=1e-15)


def test_gaussian_renyi_is_infinite_from_order_m_plus_one():
    m = 90  # N(x, (m+1) s^2) against N(0, m s^2): s_alpha^2 = (m + 1 - alpha) s^2
    assert math.isfinite(gaussian_renyi_divergence(m + 0.99, shift_sq=1.0, var_p=m + 1, var_q=m))
    assert gaussian_renyi_divergence(m + 1.0, shift_sq=1.0, var_p=m + 1, var_q=m) == math.inf
    # the other direction (the client removed from the round that had it) is finite
    assert math.isfinite(gaussian_renyi_divergence(1e4, shift_sq=1.0, var_p=m, var_q=m + 1))
    with pytest.raises(PrivacyParameterError):
        gaussian_renyi_divergence(1.0, shift_sq=1.0, var_p=1.0, var_q=1.0)


@pytest.mark.parametrize("z", [1.482, 3.663, 10.0, 100.0])
def test_own_share_under_add_remove_costs_more_than_any_budget_at_model_dimensions(z):
    # d = 10^5 coordinates, m = 90 other honest shares, total noise z (C = 1): one round's
    # divergence at order 2 exceeds 6 whatever z is -- the variance ratio (m+1)/m does not
    # depend on the noise level, and d coordinates each reveal a little of it. (Continuous
    # approximation of the discrete shares; it is why add/remove is not offered.)
    m, d = 90, 10**5
    share = z * z / m
    with_client = gaussian_renyi_divergence(
        2.0, shift_sq=1.0, var_p=(m + 1) * share, var_q=m * share, dim=d
    )
    without = gaussian_renyi_divergence(
        2.0, shift_sq=1.0, var_p=m * share, var_q=(m + 1) * share, dim=d
    )
    assert min(with_client, without) > 6.0
    # ~ d alpha / (4 m^2) from the variances alone
    assert with_client == pytest.approx(d * 2 / (4 * m * m), rel=0.1)


# ---------------------------------------------------------------------------------------------
# sampled rounds in which the client's own share comes with its sampling
# ---------------------------------------------------------------------------------------------
def _renyi(lp: np.ndarray, lq: np.ndarray, alpha: float) -> float:
    terms = alpha * lp + (1 - alpha) * lq
    total = logsumexp(terms)
    assert max(terms[0], terms[-1]) < total - 50  # the grid holds the whole sum
    return float(total / (alpha - 1))


def _mixture(q: float, la: np.ndarray, lb: np.ndarray) -> np.ndarray:
    return np.logaddexp(math.log1p(-q) + la, math.log(q) + lb)


def _log_dg_sum(sigma: float, k: int, half: int) -> np.ndarray:
    """log pmf of the sum of k discrete Gaussians N_Z(0, sigma^2) on -half..half, convolved in
    the log domain (each share truncated to -half..half, which loses nothing visible at the
    widths used here)."""
    x = np.arange(-half, half + 1).astype(np.float64)
    one = np.log(dp.discrete_gaussian_pmf(sigma, np.zeros(1)))[0] - x * x / (2 * sigma * sigma)
    out = one
    for _ in range(k - 1):
        pairs = out[:, None] + one[None, :]  # index i + j - half is the sum's value + half
        full = np.array(
            [
                logsumexp(np.diagonal(pairs[:, ::-1], offset=o))
                for o in range(2 * half, -2 * half - 1, -1)
            ]
        )  # anti-diagonals: sums -2 half .. 2 half
        out = full[half : 3 * half + 1]
    return out


CASES = [  # (noise, others k, shift between the neighbouring updates)
    ("skellam", 1, 1),
    ("skellam", 3, 4),
    ("skellam", 8, 2),
    ("ddg", 1, 1),
    ("ddg", 3, 3),
    ("ddg", 6, 2),
]


@pytest.mark.parametrize("noise,k,shift", CASES)
def test_the_bound_covers_exact_sampled_rounds_with_the_clients_own_share(noise, k, shift):
    # One coordinate, exact pmfs. A = the round without the client (k honest shares), B_x =
    # with it (its update x and its share: k + 1 shares). Replace-one/zero-out: the client is
    # sampled with probability q in both runs, P = (1-q) A + q B_x, Q = (1-q) A + q B_x'.
    grid = np.arange(-150, 151).astype(np.float64)
    if noise == "skellam":
        mu = 2.0
        la = np.log(dp.skellam_pmf(k * mu, grid))

        def lb(v):
            return np.log(dp.skellam_pmf((k + 1) * mu, grid - v))

        def curve(o):
            return skellam_rdp(
                o, l2_sensitivity=shift, l1_sensitivity=shift, total_variance=(k + 1) * mu
            )
    else:
        sigma = 1.5
        la = _log_dg_sum(sigma, k, 160)[10:-10]  # on the grid -150..150
        full = _log_dg_sum(sigma, k + 1, 160)

        def lb(v):
            return full[10 - v : len(full) - 10 - v]  # the law of share sum + v on the grid

        def curve(o):
            return ddg_rdp(
                o,
                l2_sensitivity=shift,
                l1_sensitivity=shift,
                local_sigma=sigma,
                n_clients=k + 1,
                dim=1,
            )

    assert la.shape == grid.shape and lb(shift).shape == grid.shape
    violated_before = False
    for q in (0.05, 0.3, 0.7, 1.0):
        for x, xp in ((shift, 0), (0, shift)):  # both directions of the pair
            lp = _mixture(q, la, lb(x)) if q < 1 else lb(x)
            lq = _mixture(q, la, lb(xp)) if q < 1 else lb(xp)
            for a in (1.5, 2.0, 3.0, 6.0, 12.0):
                exact = _renyi(lp, lq, a)
                bound = same_noise_sampled_rdp(np.array([a]), q, curve)[0]
                assert exact <= bound + 1e-12, (q, x, a, exact, bound)
                if q < 1:
                    old = subsampled_rdp(np.array([a]), q, curve)[0]
                    violated_before |= exact > old + 1e-12
    if k == 1:
        # with few other shares, the add/remove bound used before does not hold
        assert violated_before


def test_same_noise_sampled_rdp_is_the_joint_convexity_formula():
    orders = np.array([1.25, 2.0, 2.5, 10.0, 40.0])

    def base(o):
        return o / (2 * 1.3**2)

    q = 0.2
    got = same_noise_sampled_rdp(orders, q, base)
    a, e = orders, base(np.ceil(orders))
    assert np.allclose(got, np.log(1 - q + q * np.exp((a - 1) * e)) / (a - 1), rtol=1e-12)
    assert np.all(got <= e) and np.array_equal(same_noise_sampled_rdp(orders, 1.0, base), e)
    # large orders: no overflow, and the amplification fades to log(q) / (alpha - 1)
    top = same_noise_sampled_rdp(np.array([1024.0]), q, base)[0]
    assert top == pytest.approx(base(1024.0) + math.log(q) / 1023, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# the events
# ---------------------------------------------------------------------------------------------
def test_replace_one_is_zero_out_with_twice_the_sensitivities():
    orders = np.arange(2.0, 40.0)
    kw = dict(local_sigma=3.0, n_clients=20, dim=4096, sampling_rate=0.3)
    rep = DistributedDiscreteGaussianEvent(30.0, 300.0, **kw)
    zero = DistributedDiscreteGaussianEvent(60.0, 600.0, **kw, adjacency="zero_out")
    assert rep.adjacency == "replace_one"
    assert np.array_equal(rep.rdp(orders), zero.rdp(orders))
    sk = SkellamEvent(30.0, 300.0, 1e4, 0.3)
    sk0 = SkellamEvent(60.0, 600.0, 1e4, 0.3, adjacency="zero_out")
    assert np.array_equal(sk.rdp(orders), sk0.rdp(orders))
    with pytest.raises(PrivacyParameterError, match="add/remove"):
        SkellamEvent(30.0, 300.0, 1e4, 0.3, adjacency="add_or_remove")


def test_ledger_keeps_the_adjacency_and_reads_old_entries_as_replace_one():
    ev = SkellamEvent(30.0, 300.0, 1e4, 0.3, count=4, adjacency="zero_out")
    d = event_to_dict(ev)
    assert d["adjacency"] == "zero_out" and event_from_dict(d) == ev
    old = {k: v for k, v in event_to_dict(SkellamEvent(30.0, 300.0, 1e4, 0.3)).items()}
    del old["adjacency"]  # a ledger written before the field existed
    assert event_from_dict(old).adjacency == "replace_one"
    acc = Accountant(1e-5)
    acc.compose(ev)
    assert Accountant.from_dict(acc.to_dict()).epsilon() == acc.epsilon()


@pytest.mark.parametrize("adjacency,factor", [("replace_one", 2.0), ("zero_out", 1.0)])
def test_unsampled_distributed_noise_costs_the_central_noise_at_its_sensitivity(adjacency, factor):
    # q = 1: the curve is the Gaussian's for sensitivity factor * C (plus rounding), so the
    # calibrated sigma is factor times the central one, within the calibration tolerances
    central = dp.noise_multiplier_for(4.0, 1e-5, 10, 1.0, rel_tol=0.005)
    mech = dp.DistributedDiscreteGaussian.calibrate(
        4.0, 1e-5, 10, 1.0, n_clients=90, dim=10**5, clip_norm=1.0, bits=20,
        rel_tol=0.005, adjacency=adjacency,
    )  # fmt: skip
    assert mech.sigma == pytest.approx(factor * central, rel=0.012)


@pytest.mark.parametrize("cls", [dp.DistributedDiscreteGaussian, dp.DistributedSkellam])
def test_calibrated_zero_out_meets_the_target_within_5pct(cls):
    kw = dict(n_clients=50, dim=10**4, clip_norm=1.0, bits=20)
    mech = cls.calibrate(4.0, 1e-5, 30, 0.2, **kw, adjacency="zero_out")
    acc = Accountant(1e-5)
    acc.compose(mech.event(0.2, 30, adjacency="zero_out"))
    assert acc.epsilon() <= 4.0
    less = cls(**kw, sigma=mech.sigma / 1.05, scale=mech.scale)
    acc = Accountant(1e-5)
    acc.compose(less.event(0.2, 30, adjacency="zero_out"))
    assert acc.epsilon() > 4.0
    # and replace-one asks for more noise than zero-out
    assert cls.calibrate(4.0, 1e-5, 30, 0.2, **kw).sigma > mech.sigma * 1.5
