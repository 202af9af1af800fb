"""Shamir sharing over GF(2**256 + 297)."""

from __future__ import annotations

import itertools
import secrets

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import PRIME, ShamirError, reconstruct, shamir, share_from_bytes, share_to_bytes, split


def test_prime_field():
    assert PRIME > 2**256
    assert gmpy2.is_prime(PRIME, 100)
    assert shamir.SHARE_BYTES == 33


def test_any_t_of_n_reconstruct():
    secret = secrets.token_bytes(32)
    xs = list(range(1, 8))
    shares = split(secret, 4, xs)
    assert set(shares) == set(xs)
    for subset in itertools.combinations(xs, 4):
        assert reconstruct({x: shares[x] for x in subset}, 4) == secret
    for subset in itertools.combinations(xs, 6):
        assert reconstruct({x: shares[x] for x in subset}, 4) == secret


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=0, max_size=32),
    n=st.integers(1, 40),
    data=st.data(),
)
def test_property_reconstruct_random_subsets(secret, n, data):
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    shares = split(secret, t, xs)
    k = data.draw(st.integers(t, n))
    chosen = data.draw(st.permutations(xs))[:k]
    out = reconstruct({x: shares[x] for x in chosen}, t, length=max(len(secret), 1))
    assert out == secret.rjust(max(len(secret), 1), b"\0")


def test_t_minus_1_shares_are_consistent_with_every_secret():
    """By construction: for t-1 shares and ANY candidate secret there is exactly one polynomial
    of degree < t through them, so the shares carry no information on the secret."""
    t = 5
    secret = secrets.token_bytes(32)
    shares = split(secret, t, range(1, 11))
    seen = {x: shares[x] for x in (2, 5, 7, 9)}  # t-1 shares held by a coalition
    candidates = [0, 1, int.from_bytes(secret, "big"), secrets.randbelow(PRIME), PRIME - 1]
    polys = []
    for cand in candidates:
        coeffs = shamir.consistent_polynomial(seen, cand, t)
        assert len(coeffs) == t and coeffs[0] == cand
        for x, y in seen.items():
            assert shamir.evaluate(coeffs, x) == y
        polys.append(tuple(coeffs))
    assert len(set(polys)) == len(candidates)
    # the true secret's polynomial also explains the shares the coalition did not see
    true_poly = shamir.consistent_polynomial(seen, int.from_bytes(secret, "big"), t)
    assert all(shamir.evaluate(true_poly, x) == shares[x] for x in shares)
    with pytest.raises(ShamirError):
        shamir.consistent_polynomial({2: shares[2]}, 0, t)


def test_t_minus_1_shares_distribution_independent_of_secret():
    """Statistically: a share of a t=2 sharing is uniform whatever the secret (low bits)."""
    for secret in (b"\0" * 32, b"\xff" * 32):
        low = [split(secret, 2, [1, 2])[1] & 0xF for _ in range(3000)]
        counts = np.bincount(low, minlength=16)
        chi2 = float(((counts - 3000 / 16) ** 2 / (3000 / 16)).sum())
        assert chi2 < 60  # df=15; p ~ 1e-7


def test_fewer_than_threshold_raises_with_counts():
    shares = split(b"k" * 32, 3, [1, 2, 3])
    with pytest.raises(ShamirError, match="threshold=3.*got 2"):
        reconstruct({1: shares[1], 2: shares[2]}, 3)


def test_inconsistent_shares_detected_when_extra_available():
    secret = secrets.token_bytes(32)
    shares = split(secret, 3, range(1, 7))
    for bad_x in shares:
        tampered = dict(shares)
        tampered[bad_x] = (tampered[bad_x] + 1) % PRIME
        with pytest.raises(ShamirError, match="inconsistent"):
            reconstruct(tampered, 3)
    # shares from two different sharings of the same secret are not on one polynomial
    other = split(secret, 3, range(1, 7))
    mixed = {1: shares[1], 2: shares[2], 3: shares[3], 4: other[4]}
    with pytest.raises(ShamirError, match="inconsistent"):
        reconstruct(mixed, 3)
    # check=False skips the test (caller's choice), and exactly t tampered shares cannot be
    # detected, but they do not give the secret
    tampered = dict(shares)
    tampered[1] = (tampered[1] + 1) % PRIME
    sub = {x: tampered[x] for x in (1, 2, 3)}
    try:
        assert reconstruct(sub, 3) != secret
    except ShamirError:
        pass  # value did not fit in 32 bytes
    assert reconstruct(tampered, 3, check=False) == reconstruct(sub, 3, check=False)


def test_lagrange_cache_hits_per_point_set():
    shamir.cache_clear()
    xs = [3, 8, 11, 20]
    s1, s2 = secrets.token_bytes(32), secrets.token_bytes(32)
    sh1, sh2 = split(s1, 4, xs), split(s2, 4, xs)
    assert reconstruct(sh1, 4) == s1
    info = shamir.cache_info()
    assert (info.hits, info.misses) == (0, 1)
    assert reconstruct(sh2, 4) == s2  # same survivor x-set: cached coefficients
    info = shamir.cache_info()
    assert (info.hits, info.misses) == (1, 1)
    # insertion order does not matter: the key is the sorted point set
    assert reconstruct(dict(reversed(list(sh2.items()))), 4) == s2
    assert shamir.cache_info().hits == 2
    assert reconstruct({x: v for x, v in split(s1, 3, [3, 8, 12]).items()}, 3) == s1
    assert shamir.cache_info().misses == 2
    lam = shamir.lagrange_at_zero(xs)
    assert sum(lam) % PRIME == 1  # interpolating the constant 1


def test_share_bytes_round_trip_and_validation():
    for v in (0, 1, PRIME - 1, secrets.randbelow(PRIME)):
        b = share_to_bytes(v)
        assert len(b) == 33 and share_from_bytes(b) == v
    with pytest.raises(ShamirError):
        share_to_bytes(PRIME)
    with pytest.raises(ShamirError):
        share_to_bytes(-1)
    with pytest.raises(ShamirError):
        share_from_bytes(b"\x00" * 32)
    with pytest.raises(ShamirError):
        share_from_bytes(PRIME.to_bytes(33, "big"))


@pytest.mark.parametrize(
    "args, match",
    [
        ((b"x" * 33, 2, [1, 2]), "at most 32"),
        ((b"x", 3, [1, 2]), "exceeds"),
        ((b"x", 0, [1, 2]), "threshold"),
        ((b"x", 2, [1, 1]), "distinct"),
        ((b"x", 1, [0, 1]), r"\[1, PRIME\)"),
        ((b"x", 1, [PRIME]), r"\[1, PRIME\)"),
        ((b"x", 1, [1.0]), "int"),
        (("x", 1, [1]), "bytes"),
    ],
)
def test_split_validation(args, match):
    with pytest.raises(ShamirError, match=match):
        split(*args)


def test_reconstruct_validation():
    shares = split(b"abc", 2, [1, 2, 3])
    with pytest.raises(ShamirError, match="field element"):
        reconstruct({1: shares[1], 2: PRIME}, 2)
    with pytest.raises(ShamirError, match="length"):
        reconstruct(shares, 2, length=33)
    with pytest.raises(ShamirError, match="fit"):
        reconstruct(shares, 2, length=2)  # 3-byte secret does not fit in 2 bytes
    assert reconstruct(shares, 2, length=3) == b"abc"
    assert reconstruct({np.int64(1): shares[1], np.int64(3): shares[3]}, 2, length=3) == b"abc"


def test_threshold_one_and_randomness():
    s = secrets.token_bytes(32)
    shares = split(s, 1, [1, 2, 3])
    assert set(shares.values()) == {int.from_bytes(s, "big")}
    assert split(s, 2, [1, 2]) != split(s, 2, [1, 2])  # fresh random coefficients


def test_derived_point_sets_match_scratch_and_reconstruct():
    """Server pattern of the complete graph: survivor i's shares come from S minus {i}; these
    sets are derived from each other cheaply and must give the same weights as from scratch."""
    shamir.cache_clear()
    t = 9
    survivors = list(range(1, 21))
    secrets_ = [secrets.token_bytes(32) for _ in survivors]
    sharings = [split(s, t, range(1, 31)) for s in secrets_]
    for k, i in enumerate(survivors):
        got = reconstruct({x: sharings[k][x] for x in survivors if x != i}, t)
        assert got == secrets_[k]
    info = shamir.cache_info()
    assert info.misses == len(survivors) and info.derived == len(survivors) - 1
    for pts in (tuple(x for x in survivors if x != 5), tuple(survivors)):
        cached = shamir._CACHE.get(pts)
        scratch = shamir._PointSet.from_scratch(pts)
        assert cached.weights == scratch.weights
        assert cached.lam0 == scratch.lam0
    assert sum(shamir.lagrange_at_zero(survivors)) % PRIME == 1


def test_single_bad_share_among_many_detected_after_derivation():
    shamir.cache_clear()
    t = 6
    sharing = split(secrets.token_bytes(32), t, range(1, 41))
    reconstruct({x: sharing[x] for x in range(1, 40)}, t)  # warm a neighbouring set
    for bad in (1, 17, 40):
        tampered = dict(sharing)
        tampered[bad] = (tampered[bad] + 12345) % PRIME
        with pytest.raises(ShamirError, match="inconsistent"):
            reconstruct(tampered, t)
    assert shamir.cache_info().derived >= 1


# -- error-correcting reconstruction (shamir.decode) -------------------------------------------


def _corrupt(shares, points, rng_values):
    """Copy of ``shares`` with the value at each of ``points`` changed (never to itself)."""
    out = dict(shares)
    for x, v in zip(points, rng_values):
        out[x] = (shares[x] + 1 + v % (PRIME - 1)) % PRIME
    return out


def test_split_with_coefficients_matches_polynomial():
    secret = secrets.token_bytes(32)
    shares, coeffs = shamir.split_with_coefficients(secret, 4, [1, 5, 9, 200])
    assert len(coeffs) == 4 and coeffs[0] == int.from_bytes(secret, "big")
    assert all(shamir.evaluate(coeffs, x) == y for x, y in shares.items())
    assert reconstruct(shares, 4) == secret
    with pytest.raises(ShamirError, match="exceeds"):
        shamir.split_with_coefficients(secret, 5, [1, 2])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_property_decode_finds_exactly_the_wrong_points(n, data):
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 2**32), min_size=n, max_size=n, unique=True))
    secret = secrets.token_bytes(32)
    shares = split(secret, t, xs)
    e = shamir.max_errors(n, t)
    bad = data.draw(st.lists(st.sampled_from(xs), max_size=e, unique=True)) if e else []
    values = data.draw(st.lists(st.integers(0, PRIME), min_size=len(bad), max_size=len(bad)))
    got = shamir.decode(_corrupt(shares, bad, values), t)
    assert got == shamir.Decoded(secret, frozenset(bad))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 40), data=st.data())
def test_property_decode_refuses_beyond_the_radius(n, data):
    t = data.draw(st.integers(1, n - 1))
    e = shamir.max_errors(n, t)
    n_bad = data.draw(st.integers(e + 1, min(n, e + 3)))
    xs = data.draw(st.lists(st.integers(1, 2**32), min_size=n, max_size=n, unique=True))
    shares = split(secrets.token_bytes(32), t, xs)
    bad = data.draw(st.permutations(xs))[:n_bad]
    # random wrong values land within distance e of another polynomial of degree < t only if
    # some of them hit values fixed by the others: probability < 4**n / PRIME < 2**-170
    tampered = _corrupt(shares, bad, [secrets.randbelow(PRIME) for _ in bad])
    with pytest.raises(ShamirError, match=f"too many wrong shares.*e={e} of m={n}"):
        shamir.decode(tampered, t)


def test_decode_at_the_bench_sizes():
    for m, t in ((70, 51), (30, 11)):
        secret = secrets.token_bytes(32)
        shares = split(secret, t, range(1, m + 1))
        e = shamir.max_errors(m, t)
        assert e == 9
        bad = list(range(1, 2 * e + 1, 2))
        tampered = _corrupt(shares, bad, range(e))
        assert shamir.decode(tampered, t) == (secret, frozenset(bad))
        with pytest.raises(ShamirError, match="too many"):
            shamir.decode(_corrupt(shares, bad + [m], range(e + 1)), t)


def test_decode_without_redundancy_or_errors_is_reconstruct():
    secret = secrets.token_bytes(32)
    shares = split(secret, 3, [1, 2, 3, 4])
    assert shamir.decode(shares, 3) == (secret, frozenset())
    exact = {x: shares[x] for x in (1, 2, 3)}
    assert shamir.decode(exact, 3) == (secret, frozenset())
    # one extra share detects one wrong share but cannot tell which (e = 0)
    with pytest.raises(ShamirError, match="e=0 of m=4"):
        shamir.decode(_corrupt(shares, [2], [0]), 3)
    with pytest.raises(ShamirError, match="threshold=3.*got 2"):
        shamir.decode({1: shares[1], 2: shares[2]}, 3)
    with pytest.raises(ShamirError, match="field element"):
        shamir.decode({1: shares[1], 2: shares[2], 3: PRIME}, 3)
    with pytest.raises(ShamirError, match="mapping"):
        shamir.decode([(1, 2)], 1)


def test_decode_short_secret_and_length():
    shares = split(b"abc", 2, range(1, 8))
    tampered = _corrupt(shares, [4, 6], [5, 7])
    assert shamir.decode(tampered, 2, length=3) == (b"abc", frozenset({4, 6}))
    with pytest.raises(ShamirError, match="fit"):
        shamir.decode(tampered, 2, length=2)


def test_decode_past_the_radius_can_return_another_polynomial():
    """The documented limit: with m - t even, e + 1 colluding wrong shares that follow another
    polynomial f' agreeing with f at t - 1 of the other points make the word closer to f'; any
    decoder returns f'. (Commitments expose it: see the VSS tests.)"""
    m, t = 9, 3
    e = shamir.max_errors(m, t)  # 3
    xs = list(range(1, m + 1))
    coeffs = [secrets.randbelow(PRIME) for _ in range(t)]
    shares = {x: shamir.evaluate(coeffs, x) for x in xs}
    agree_at = xs[: t - 1]  # f' = f + c * (X - 1)(X - 2): agrees with f at x = 1, 2
    c = secrets.randbelow(PRIME - 1) + 1
    other = [(coeffs[0] + 2 * c) % PRIME, (coeffs[1] - 3 * c) % PRIME, (coeffs[2] + c) % PRIME]
    assert all(shamir.evaluate(other, x) == shares[x] for x in agree_at)
    liars = xs[t - 1 : t - 1 + e + 1]
    tampered = dict(shares)
    for x in liars:
        tampered[x] = shamir.evaluate(other, x)
    got = shamir.decode(tampered, t)
    assert int.from_bytes(got.secret, "big") == other[0]
    assert got.wrong == frozenset(xs) - set(agree_at) - set(liars)
    assert len(got.wrong) == e


def test_reconstruction_cache_is_safe_to_share_between_threads():
    """Eight threads reconstruct secrets over many overlapping point sets at once (more sets
    than the cache holds, so it evicts and derives while others read): every result is right
    and the counters add up."""
    import threading

    from secagg import shamir as sh

    rng = np.random.default_rng(0)
    jobs = []
    for _ in range(64):
        secret = bytes(rng.integers(0, 256, 32, dtype=np.uint8))
        xs = sorted(rng.choice(np.arange(1, 40), 12, replace=False).tolist())
        jobs.append((secret, sh.split(secret, 10, xs)))
    old = sh._CACHE.maxsize
    sh.cache_clear()
    sh._CACHE.maxsize = 8
    errors = []

    def work(offset):
        for k in range(len(jobs)):
            secret, shares = jobs[(k + offset) % len(jobs)]
            if sh.reconstruct(shares, 10, 32) != secret:
                errors.append(k)

    threads = [threading.Thread(target=work, args=(8 * i,)) for i in range(8)]
    import sys

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        info = sh.cache_info()
    finally:
        sys.setswitchinterval(interval)
        sh._CACHE.maxsize = old
        sh.cache_clear()
    assert errors == []
    assert info.hits + info.misses == 8 * len(jobs)
    assert info.size <= 8
