"""dp.accounting: equal to dp-accounting, close to Opacus, calibration within 5% in sigma,
persistence, the discrete mechanisms' curves, torch-free import."""

from __future__ import annotations

import json
import subprocess
import sys

import dp_accounting as dpa
import numpy as np
import pytest

import dp
from dp import (
    Accountant,
    AccountantStateError,
    DistributedDiscreteGaussianEvent,
    PrivacyParameterError,
    SkellamEvent,
    UnsupportedMechanismError,
    ddg_rdp,
    noise_multiplier_for,
    skellam_rdp,
    subsampled_rdp,
)
from dp.accounting import default_orders, event_epsilon

CASES = [(1.1, 0.01, 1000), (0.8, 0.1, 100), (2.0, 1.0, 10), (5.0, 0.5, 3)]


@pytest.mark.parametrize("z,q,rounds", CASES)
def test_rdp_epsilon_equals_dp_accounting(z, q, rounds):
    acc = Accountant(1e-5)
    acc.compose_gaussian(z, q, rounds)
    ref = dpa.rdp.RdpAccountant()
    inner = dpa.GaussianDpEvent(z)
    ref.compose(inner if q == 1 else dpa.PoissonSampledDpEvent(q, inner), rounds)
    assert acc.epsilon() == ref.get_epsilon(1e-5)
    assert acc.spent().rounds == rounds


def test_pld_epsilon_equals_dp_accounting():
    acc = Accountant(1e-6, method="pld")
    acc.compose_gaussian(1.0, 0.05, 200)
    ref = dpa.pld.PLDAccountant()
    ref.compose(dpa.PoissonSampledDpEvent(0.05, dpa.GaussianDpEvent(1.0)), 200)
    assert acc.epsilon() == ref.get_epsilon(1e-6)
    rdp = Accountant(1e-6)
    rdp.compose_gaussian(1.0, 0.05, 200)
    assert acc.epsilon() < rdp.epsilon()  # PLD is tighter than the RDP conversion


@pytest.mark.parametrize("z,q,rounds", CASES[:3])
def test_epsilon_matches_opacus_rdp_accountant(z, q, rounds):
    # Opacus' RDPAccountant uses the same sampled-Gaussian RDP but a different order grid
    # (1.1..10.9, 12..63) and a slightly different RDP->DP conversion; on these cases the two
    # agree to < 0.5%. We allow 2%.
    from opacus.accountants import RDPAccountant

    ours = Accountant(1e-5)
    ours.compose_gaussian(z, q, rounds)
    theirs = RDPAccountant()
    theirs.history = [(z, q, rounds)]
    assert ours.epsilon() == pytest.approx(theirs.get_epsilon(1e-5), rel=0.02)


@pytest.mark.parametrize(
    "eps,delta,rounds,q,method",
    [
        (1.0, 1e-5, 100, 0.01, "rdp"),
        (4.0, 1e-5, 1000, 0.02, "rdp"),
        (8.0, 1e-6, 50, 1.0, "rdp"),
        (2.0, 1e-5, 20, 0.2, "pld"),
    ],
)
def test_calibrated_noise_meets_target_and_overshoots_by_at_most_5pct(
    eps, delta, rounds, q, method
):
    z = noise_multiplier_for(eps, delta, rounds, q, method=method)

    def spent(m):
        a = Accountant(delta, method)
        a.compose_gaussian(m, q, rounds)
        return a.epsilon()

    assert spent(z) <= eps
    assert spent(z / 1.05) > eps  # 5% less noise would miss the target


def test_adaptive_clipping_pair_costs_one_gaussian_of_the_total_multiplier():
    z, sigma_b = 1.0, 5.0
    z_delta = (z**-2 - (2 * sigma_b) ** -2) ** -0.5
    pair = Accountant(1e-5)
    pair.compose_gaussian([z_delta, 2 * sigma_b], 0.1, 100)
    single = Accountant(1e-5)
    single.compose_gaussian(z, 0.1, 100)
    assert pair.epsilon() == pytest.approx(single.epsilon(), rel=1e-12)
    only_updates = Accountant(1e-5)
    only_updates.compose_gaussian(z_delta, 0.1, 100)
    assert pair.epsilon() > only_updates.epsilon()  # the count is not free


def test_state_round_trips_through_json_and_merges_rounds():
    acc = Accountant(1e-5)
    for _ in range(5):
        acc.compose_gaussian(1.2, 0.1)
    acc.compose(DistributedDiscreteGaussianEvent(200.0, 4000.0, 50.0, 10, 1024, 0.1, 3))
    assert len(acc.events) == 2 and acc.events[0].count == 5 and acc.rounds == 8
    back = Accountant.from_dict(json.loads(json.dumps(acc.to_dict())))
    assert back.epsilon() == acc.epsilon()
    assert back.events == acc.events


@pytest.mark.parametrize(
    "state",
    [
        None,
        {},
        {"version": 2, "events": []},
        {"version": 1, "method": "rdp", "delta": 2.0, "events": []},
        {"version": 1, "method": "rdp", "delta": 1e-5, "events": [{"kind": "x"}]},
        {
            "version": 1,
            "method": "rdp",
            "delta": 1e-5,
            "events": [{"kind": "gaussian", "noise_multipliers": [-1.0], "sampling_rate": 0.1}],
        },
    ],
)
def test_malformed_state_is_a_typed_error(state):
    with pytest.raises(AccountantStateError):
        Accountant.from_dict(state)


def test_bad_parameters_are_typed_errors():
    with pytest.raises(PrivacyParameterError):
        Accountant(0.0)
    with pytest.raises(PrivacyParameterError):
        Accountant(1e-5, method="gdp")
    acc = Accountant(1e-5)
    with pytest.raises(PrivacyParameterError):
        acc.compose_gaussian(1.0, 1.5)
    with pytest.raises(PrivacyParameterError):
        acc.compose_gaussian(float("nan"), 0.5)
    pld = Accountant(1e-5, method="pld")
    with pytest.raises(UnsupportedMechanismError):
        pld.compose(SkellamEvent(10.0, 100.0, 1e4, 0.1))


def test_subsampled_rdp_upper_bounds_exact_gaussian():
    orders = default_orders()
    z, q = 1.0, 0.05
    ref = dpa.rdp.RdpAccountant()
    ref.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)))
    general = subsampled_rdp(orders, q, lambda a: a / (2 * z * z))
    ints = orders == np.round(orders)
    assert np.all(general[ints] >= ref.rdp[ints] * (1 - 1e-9))  # an upper bound ...
    assert np.max(general[ints] / ref.rdp[ints]) < 3.0  # ... within 3x at every order
    assert np.all(general < orders / (2 * z * z) + 1e-12)  # and amplification helps
    full = subsampled_rdp(orders, 1.0, lambda a: a / (2 * z * z))
    assert np.allclose(full, np.ceil(np.maximum(orders, 2)) / (2 * z * z))


def test_ddg_without_sampling_matches_gaussian():
    # local sigma 20 makes tau ~ 1e-1700: the KLS21 curve is alpha a^2 / 2, the Gaussian's with
    # z = sqrt(n) sigma / Delta_2; at q = 1 the only gap is ceil() at fractional orders.
    # Zero-out shifts by one update (l2); replace-one by the difference of two (2 l2), i.e. the
    # Gaussian with half the multiplier.
    n, sigma, l2 = 16, 20.0, 40.0
    for adjacency, shift in (("zero_out", l2), ("replace_one", 2 * l2)):
        ev = DistributedDiscreteGaussianEvent(l2, l2 * 30, sigma, n, 1024, 1.0, 50, adjacency)
        acc = Accountant(1e-5)
        acc.compose(ev)
        gauss = Accountant(1e-5)
        gauss.compose_gaussian(np.sqrt(n) * sigma / shift, 1.0, 50)
        assert gauss.epsilon() <= acc.epsilon() <= gauss.epsilon() * 1.05
    orders = np.arange(2.0, 65.0)
    curve = ddg_rdp(
        orders, l2_sensitivity=l2, l1_sensitivity=l2 * 30, local_sigma=sigma, n_clients=n, dim=1024
    )
    assert np.allclose(curve, orders * l2**2 / (2 * n * sigma**2), rtol=1e-12)


def test_ddg_tau_term_charges_small_local_sigma():
    orders = np.arange(2.0, 10.0)
    kw = dict(l2_sensitivity=4.0, l1_sensitivity=16.0, n_clients=100, dim=10**6)
    small = ddg_rdp(orders, local_sigma=0.3, **kw)
    # same total variance n sigma^2 from a larger local sigma, fewer clients: no tau cost
    gauss = orders * 16.0 / (2 * 100 * 0.09)
    assert np.all(small > gauss * 1.01)


def test_skellam_rdp_approaches_gaussian():
    orders = np.arange(2.0, 65.0)
    for mu, tol in ((1e4, 1e-2), (1e8, 1e-5)):
        l2 = np.sqrt(mu)  # noise multiplier 1
        sk = skellam_rdp(orders, l2_sensitivity=l2, l1_sensitivity=l2 * 32, total_variance=mu)
        gauss = orders / 2
        assert np.all(sk >= gauss)
        assert np.all(sk <= gauss * (1 + tol))


def test_import_dp_does_not_import_torch():
    code = (
        "import sys\n"
        "import dp\n"
        "a = dp.Accountant(1e-5); a.compose_gaussian(1.0, 0.1, 10); a.epsilon()\n"
        "m = dp.DistributedSkellam(n_clients=4, dim=8, clip_norm=1.0, sigma=1.0, scale=100.0,"
        " bits=24); m.noise_share(dp.NoiseSource(bytes(32))); a.compose(m.event(0.1)); a.epsilon()\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('torch', 'opacus')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


LIGHT = """
import json, sys, threading
import dp
acc = dp.Accountant(1e-5); acc.compose_gaussian(1.1, 0.1, 50)
rdp_light = acc.epsilon()
assert "dp_accounting.pld" not in sys.modules and "scipy.stats" not in sys.modules
# anyone importing the package afterwards gets all of it, with the same modules and classes
import dp_accounting
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as rpa
assert dp_accounting.GaussianDpEvent is dp_event.GaussianDpEvent
assert dp_accounting.rdp.RdpAccountant is rpa.RdpAccountant
assert dp_accounting.pld.PLDAccountant is sys.modules["dp_accounting.pld"].PLDAccountant
pld = dp.Accountant(1e-5, "pld"); pld.compose_gaussian(1.1, 0.1, 50)
direct = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
direct.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)), 50)
print(json.dumps([rdp_light, pld.epsilon(), direct.get_epsilon(1e-5)]))
"""

RACE = """
import json, sys, threading
import dp
barrier = threading.Barrier(6)
out, errors = {}, []

def rdp(i):
    barrier.wait()
    a = dp.Accountant(1e-5); a.compose_gaussian(1.1, 0.1, 50); out[i] = a.epsilon()

def full(i):
    barrier.wait()
    import dp_accounting
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)), 50)
    out[i] = acc.get_epsilon(1e-5)

def pld(i):
    barrier.wait()
    a = dp.Accountant(1e-5, "pld"); a.compose_gaussian(1.1, 0.1, 50); out[i] = a.epsilon()

def run(fn, i):
    try:
        fn(i)
    except BaseException as exc:
        errors.append(repr(exc))

ts = [threading.Thread(target=run, args=(fn, i)) for i, fn in enumerate([rdp, full, pld] * 2)]
[t.start() for t in ts]
[t.join() for t in ts]
print(json.dumps([errors, [out.get(i) for i in range(6)]]))
"""


def test_rdp_only_import_leaves_a_complete_package_for_everyone():
    # dp imports dp_accounting's RDP half without the package __init__ (cold-start cost); the
    # package must still be whole for any later user, and every epsilon unchanged
    proc = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rdp_light, pld_ours, pld_direct = json.loads(proc.stdout)
    acc = dpa.rdp.RdpAccountant()  # this process imported the whole package first
    acc.compose(dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.1)), 50)
    assert rdp_light == acc.get_epsilon(1e-5)
    assert pld_ours == pld_direct


def test_rdp_only_import_is_safe_against_concurrent_full_imports():
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        errors, eps = json.loads(proc.stdout)
        assert errors == []
        rdp_eps = {eps[0], eps[1], eps[3], eps[4]}
        assert len(rdp_eps) == 1 and eps[2] == eps[5] and eps[2] <= eps[0]


def test_event_epsilon_is_the_accountants():
    ev = DistributedDiscreteGaussianEvent(
        l2_sensitivity=50.0, l1_sensitivity=500.0, local_sigma=20.0, n_clients=10, dim=64,
        sampling_rate=0.1, count=30,
    )  # fmt: skip
    for event in (ev, dp.GaussianEvent((1.3,), 0.05, 40)):
        acc = dp.Accountant(1e-6)
        acc.compose(event)
        assert event_epsilon(event, 1e-6) == acc.epsilon()


def _renyi(log_p: np.ndarray, log_r: np.ndarray, alpha: float) -> float:
    """D_alpha(P || R) from log pmfs on one grid."""
    from scipy.special import logsumexp

    terms = alpha * log_p + (1 - alpha) * log_r
    total = logsumexp(terms)
    assert max(terms[0], terms[-1]) < total - 60  # the grid holds the whole sum
    return float(total / (alpha - 1))


def _log_dg(sigma: float, x: np.ndarray) -> np.ndarray:
    return np.log(dp.discrete_gaussian_pmf(sigma, np.zeros(1)))[0] - x * x / (2 * sigma * sigma)


SYMMETRIC_PAIRS = [  # (name, log pmf of the noise on the integers, shifts)
    ("discrete gaussian sigma=1.5", lambda x: _log_dg(1.5, x), (1, 3)),
    ("discrete gaussian sigma=4", lambda x: _log_dg(4.0, x), (1, 5)),
    ("skellam mu=3", lambda x: np.log(dp.skellam_pmf(3.0, x)), (1, 2)),
    ("skellam mu=30", lambda x: np.log(dp.skellam_pmf(30.0, x)), (2, 6)),
]


@pytest.mark.parametrize(
    "name,log_pmf,shifts", SYMMETRIC_PAIRS, ids=[p[0] for p in SYMMETRIC_PAIRS]
)
def test_sampled_discrete_pairs_against_the_subsampling_bounds(name, log_pmf, shifts):
    # Exact Renyi divergences of Poisson-sampled one-dimensional discrete Gaussian and Skellam
    # pairs P = noise, Q = noise + v, R = (1 - q) P + q Q (dp/NOTES.md, "Sampling"):
    # * Zhu & Wang's general bound, which fortis uses, bounds both directions;
    # * the binomial expansion with the pair's own curve is D(R || P) exactly, and the removal
    #   direction D(P || R) stays below it (the lemma NOTES.md proves for symmetric noise --
    #   not used by the accountant, which keeps the published bound).
    from scipy.special import gammaln, logsumexp

    x = np.arange(-160, 161).astype(np.float64)
    lp = log_pmf(x)
    assert np.all(np.isfinite(lp))
    for v in shifts:
        lq = log_pmf(x - v)
        for q in (0.01, 0.1, 0.5, 0.9):
            lr = np.logaddexp(np.log1p(-q) + lp, np.log(q) + lq)
            for a in (2, 3, 5, 8, 12):
                base = {ell: _renyi(lq, lp, ell) for ell in range(2, a + 1)}
                assert all(abs(base[ell] - _renyi(lp, lq, ell)) < 1e-9 for ell in base)
                ell = np.arange(2, a + 1)
                terms = (
                    gammaln(a + 1) - gammaln(ell + 1) - gammaln(a - ell + 1)
                    + ell * np.log(q) + (a - ell) * np.log1p(-q)
                    + (ell - 1) * np.array([base[i] for i in ell])
                )  # fmt: skip
                head = (a - 1) * np.log1p(-q) + np.log1p((a - 1) * q)
                binomial = logsumexp(np.append(terms, head)) / (a - 1)
                added, removed = _renyi(lr, lp, a), _renyi(lp, lr, a)
                assert added == pytest.approx(binomial, rel=1e-9, abs=1e-13)
                assert removed <= added + 1e-13
                curve = np.array([base[i] for i in range(2, a + 1)])  # orders 2..a
                general = subsampled_rdp(np.array([float(a)]), q, lambda o, c=curve: c)[0]
                assert max(added, removed) <= general + 1e-13
