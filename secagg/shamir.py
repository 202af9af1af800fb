"""Shamir t-of-n secret sharing of secrets up to 32 bytes over the prime field GF(PRIME).

``PRIME = 2**256 + 297`` (the smallest prime above 2**256, checked with gmpy2 at import), so every
32-byte secret is a field element. A secret ``s`` is the constant term of a random polynomial
``f`` of degree ``threshold - 1`` (coefficients from :mod:`secrets`); the share for evaluation
point ``x`` is ``f(x)``.

Guarantees
----------
* Any ``threshold`` shares reconstruct ``s``.
* Any ``threshold - 1`` shares are independent of ``s`` (perfect secrecy): for every candidate
  secret there is exactly one polynomial of degree ``threshold - 1`` through those shares and that
  secret (see :func:`consistent_polynomial`).
* :func:`reconstruct` caches per point set the barycentric weights and Lagrange coefficients, so
  reconstructing many secrets from one survivor set costs O(#shares) modular multiplications
  each (microseconds). With more than ``threshold`` shares it also checks that all shares lie on
  one polynomial of degree ``< threshold`` and raises :class:`ShamirError` if not.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import gmpy2
import numpy as np
from gmpy2 import mpz

from .errors import ShamirError

__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "MAX_SECRET_BYTES",
    "split",
    "split_with_coefficients",
    "reconstruct",
    "decode",
    "Decoded",
    "max_errors",
    "share_to_bytes",
    "share_from_bytes",
    "lagrange_at_zero",
    "consistent_polynomial",
    "evaluate",
    "cache_info",
    "cache_clear",
]

PRIME: int = 2**256 + 297
if not gmpy2.is_prime(PRIME, 64) or gmpy2.next_prime(2**256) != PRIME:  # pragma: no cover
    raise ImportError("secagg.shamir: PRIME is not the smallest prime above 2**256")
_P = mpz(PRIME)
MAX_SECRET_BYTES = 32
SHARE_BYTES = (PRIME.bit_length() + 7) // 8  # 33


def _check_threshold(threshold: int) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ShamirError(f"threshold must be an int >= 1, got {threshold!r}")
    return threshold


def _check_x(x: object) -> int:
    if isinstance(x, int) and not isinstance(x, bool):
        if 0 < x < PRIME:
            return x
        raise ShamirError(f"evaluation point must be in [1, PRIME), got {x}")
    if isinstance(x, np.integer):
        return _check_x(int(x))
    raise ShamirError(f"evaluation point must be an int, got {type(x).__name__}")


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> dict[int, int]:
    """Split ``secret`` (at most 32 bytes, read big-endian) into shares ``{x: f(x)}``.

    Raises
    ------
    ShamirError
        If ``threshold`` is not in ``[1, len(xs)]``, points repeat or are not in ``[1, PRIME)``,
        or the secret is longer than 32 bytes.
    """
    return split_with_coefficients(secret, threshold, xs)[0]


def split_with_coefficients(
    secret: bytes, threshold: int, xs: Sequence[int]
) -> tuple[dict[int, int], list[int]]:
    """Like :func:`split`, but also return the polynomial ``[c_0 = secret, c_1, ..., c_{t-1}]``.

    For a dealer that must commit to its polynomial (Feldman VSS, :mod:`secagg.vss`). The
    coefficients are as secret as the secret itself. Raises ``ShamirError`` like :func:`split`.
    """
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise ShamirError(f"secret must be bytes, got {type(secret).__name__}")
    if len(secret) > MAX_SECRET_BYTES:
        raise ShamirError(f"secret has {len(secret)} bytes, at most {MAX_SECRET_BYTES} allowed")
    threshold = _check_threshold(threshold)
    points = [_check_x(x) for x in xs]
    if len(set(points)) != len(points):
        raise ShamirError("evaluation points must be distinct")
    if threshold > len(points):
        raise ShamirError(f"threshold={threshold} exceeds the number of shares {len(points)}")
    # coefficients c_0 = secret, c_1..c_{t-1} uniform in the field
    coeffs = [mpz(int.from_bytes(bytes(secret), "big"))]
    coeffs += [mpz(secrets.randbelow(PRIME)) for _ in range(threshold - 1)]
    shares = {x: int(_horner(coeffs, mpz(x))) for x in points}
    return shares, [int(c) for c in coeffs]


def _horner(coeffs: Sequence[mpz], x: mpz) -> mpz:
    acc = mpz(0)
    for c in reversed(coeffs):
        acc = (acc * x + c) % _P
    return acc


def evaluate(coeffs: Sequence[int], x: int) -> int:
    """Evaluate the polynomial ``sum coeffs[k] x**k`` over GF(PRIME)."""
    return int(_horner([mpz(c) for c in coeffs], mpz(x)))


class _CacheStats(NamedTuple):
    hits: int
    misses: int
    size: int
    maxsize: int
    derived: int


# Small-integer inverses (differences of evaluation points, which are client ids + 1) repeat
# across reconstructions; memoise them.
_INV_MEMO: dict[int, mpz] = {}


def _inv(v: int) -> mpz:
    """Inverse of ``v`` mod PRIME (``v`` a small nonzero int), memoised."""
    r = _INV_MEMO.get(v)
    if r is None:
        r = gmpy2.invert(mpz(v) % _P, _P)
        if len(_INV_MEMO) < 1 << 20:
            _INV_MEMO[v] = r
    return r


# Secret random point for the consistency check (see _PointSet.check_vector).
_RHO = mpz(secrets.randbelow(PRIME - 2) + 2)
_G_MEMO: dict[tuple[int, int], mpz] = {}


def _g(x: int, e: int) -> mpz:
    """``sum_{j<e} (rho*x)**j`` mod PRIME, memoised per (x, e)."""
    key = (x, e)
    r = _G_MEMO.get(key)
    if r is None:
        u = _RHO * x % _P
        r = mpz(e) if u == 1 else (gmpy2.powmod(u, e, _P) - 1) * gmpy2.invert(u - 1, _P) % _P
        if len(_G_MEMO) < 1 << 20:
            _G_MEMO[key] = r
    return r


class _PointSet:
    """Precomputed data for one sorted tuple of distinct evaluation points ``x_1..x_m``.

    * ``weights[k] = 1 / prod_{l != k} (x_k - x_l)`` (barycentric weights). Computed from
      scratch in O(m^2), or derived in O(m * |difference|) from a cached set that differs by a
      few points (removing ``x_r`` multiplies ``w_k`` by ``(x_k - x_r)``; adding ``x_a`` divides
      it by ``(x_k - x_a)``).
    * ``lam0[k] = l_k(0) = w_k * prod_l (0 - x_l) / (0 - x_k)``: Lagrange coefficients at 0.
    * ``check_vector(t)``: ``c_k = w_k * g(x_k)`` with ``g(x) = sum_{j < m-t} (rho x)^j``.
      ``(y_k)`` lies on a polynomial of degree ``< t`` iff ``sum_k w_k x_k^j y_k = 0`` for all
      ``j < m - t`` (the dual of a Reed-Solomon code is a generalised Reed-Solomon code with
      column multipliers ``w_k``); ``sum_k c_k y_k`` is a random combination of those ``m - t``
      checks with coefficients ``rho^j`` for a secret random ``rho``, so shares off the
      polynomial pass with probability at most ``(m - t) / PRIME < 2**-247``.
    """

    __slots__ = ("xs", "weights", "_lam0", "_checks")

    def __init__(self, xs: tuple[int, ...], weights: list[mpz]):
        self.xs = xs
        self.weights = weights
        self._lam0: list[mpz] | None = None
        self._checks: dict[int, list[mpz]] = {}

    @classmethod
    def from_scratch(cls, xs: tuple[int, ...]) -> _PointSet:
        weights = []
        for k, xk in enumerate(xs):
            den = mpz(1)
            for j, xj in enumerate(xs):
                if j != k:
                    den = den * (xk - xj) % _P
            weights.append(den)
        return cls(xs, _batch_invert(weights))

    @classmethod
    def derive(cls, xs: tuple[int, ...], base: _PointSet) -> _PointSet:
        target = set(xs)
        w = dict(zip(base.xs, base.weights))
        for r in [x for x in base.xs if x not in target]:
            del w[r]
            for x in w:
                w[x] = w[x] * (x - r) % _P
        for a in [x for x in xs if x not in w]:
            den = mpz(1)
            for x in w:
                den = den * (a - x) % _P
                w[x] = w[x] * _inv(x - a) % _P
            w[a] = gmpy2.invert(den, _P)
        return cls(xs, [w[x] for x in xs])

    @property
    def lam0(self) -> list[mpz]:
        if self._lam0 is None:
            full = mpz(1)
            for x in self.xs:
                full = full * (-x) % _P
            self._lam0 = [w * full % _P * _inv(-x) % _P for w, x in zip(self.weights, self.xs)]
        return self._lam0

    def check_vector(self, threshold: int) -> list[mpz]:
        found = self._checks.get(threshold)
        if found is None:
            e = len(self.xs) - threshold
            found = [w * _g(x, e) % _P for w, x in zip(self.weights, self.xs)]
            self._checks[threshold] = found
        return found


def _batch_invert(values: Sequence[mpz]) -> list[mpz]:
    """Inverses of nonzero field elements with one ``invert`` (Montgomery's trick)."""
    k = len(values)
    prefix = [mpz(1)] * (k + 1)
    for i, v in enumerate(values):
        prefix[i + 1] = prefix[i] * v % _P
    inv = gmpy2.invert(prefix[k], _P)
    out = [mpz(0)] * k
    for i in range(k - 1, -1, -1):
        out[i] = inv * prefix[i] % _P
        inv = inv * values[i] % _P
    return out


class _LagrangeCache:
    """LRU cache of :class:`_PointSet` per sorted tuple of evaluation points.

    ``hits`` counts exact point-set hits; ``misses`` counts point sets computed, of which
    ``derived`` were obtained cheaply from a recently used set differing in few points.
    """

    _SCAN = 8  # how many recent sets to consider as a base for derivation

    def __init__(self, maxsize: int = 1024):
        self.maxsize = maxsize
        self._lock = threading.Lock()  # shared by every thread of the process
        self._data: OrderedDict[tuple[int, ...], _PointSet] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.derived = 0

    def get(self, points: tuple[int, ...]) -> _PointSet:
        with self._lock:
            return self._get(points)

    def _get(self, points: tuple[int, ...]) -> _PointSet:
        found = self._data.get(points)
        if found is not None:
            self.hits += 1
            self._data.move_to_end(points)
            return found
        self.misses += 1
        ps = None
        if len(points) >= 8:
            want = set(points)
            limit = len(points) // 4
            for _, cand in zip(range(self._SCAN), reversed(self._data.values())):
                diff = len(want.symmetric_difference(cand.xs))
                if diff <= limit:
                    ps = _PointSet.derive(points, cand)
                    self.derived += 1
                    break
        if ps is None:
            ps = _PointSet.from_scratch(points)
        self._data[points] = ps
        if len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return ps

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
        self.hits = 0
        self.misses = 0
        self.derived = 0


_CACHE = _LagrangeCache()


def lagrange_at_zero(points: Sequence[int]) -> tuple[int, ...]:
    """Lagrange coefficients at 0 for the sorted, distinct ``points`` (cached), as ints."""
    pts = tuple(sorted(_check_x(x) for x in points))
    if len(set(pts)) != len(pts):
        raise ShamirError("evaluation points must be distinct")
    return tuple(int(c) for c in _CACHE.get(pts).lam0)


def cache_info() -> _CacheStats:
    """Hits, misses, size, maxsize and derived count of the point-set cache (per process)."""
    return _CacheStats(
        _CACHE.hits, _CACHE.misses, len(_CACHE._data), _CACHE.maxsize, _CACHE.derived
    )


def cache_clear() -> None:
    """Empty the Lagrange-coefficient cache and reset its counters."""
    _CACHE.clear()


def _dot(coeffs: Sequence[mpz], ys: Sequence[mpz]) -> mpz:
    acc = mpz(0)
    for c, y in zip(coeffs, ys):
        acc += c * y
    return acc % _P


def reconstruct(
    shares: Mapping[int, int], threshold: int, length: int = 32, *, check: bool = True
) -> bytes:
    """Recover the secret from at least ``threshold`` shares ``{x: f(x)}``.

    With ``check`` true (the default) and more than ``threshold`` shares, all shares are first
    tested to lie on one polynomial of degree ``< threshold`` (a random linear combination of the
    Reed-Solomon parity checks, error probability ``< 2**-247``), then interpolated at 0. With
    exactly ``threshold`` shares, or ``check=False``, the ``threshold`` shares at the smallest
    points are interpolated. Either way the point-set data (barycentric weights, coefficients)
    are cached, so reconstructing many secrets from one survivor set costs O(#shares) modular
    multiplications each; a set that differs from a recently used one by a few points is derived
    from it in O(#shares * difference).

    Returns the secret as ``length`` big-endian bytes.

    Raises
    ------
    ShamirError
        Fewer than ``threshold`` shares (the message gives both counts); a point or share value
        outside the field; shares that do not lie on one polynomial of degree < ``threshold``
        (detectable only when extra shares are given); or a reconstructed value that does not
        fit in ``length`` bytes (wrong shares or wrong threshold).
    """
    threshold = _check_threshold(threshold)
    points, ys = _sorted_shares(shares, threshold, length, limit=None if check else threshold)
    pset = _CACHE.get(points)
    if len(points) > threshold and _dot(pset.check_vector(threshold), ys) != 0:
        raise ShamirError(
            f"inconsistent shares: the {len(points)} shares (x={points[0]}..{points[-1]}) do not "
            f"lie on one polynomial of degree < threshold={threshold}"
        )
    return _secret_bytes(_dot(pset.lam0, ys), length)


def _sorted_shares(
    shares: Mapping[int, int], threshold: int, length: int, limit: int | None
) -> tuple[tuple[int, ...], list[mpz]]:
    """Validated points (sorted, at most ``limit`` of them) and their share values."""
    if not isinstance(shares, Mapping):
        raise ShamirError(f"shares must be a mapping x -> share, got {type(shares).__name__}")
    if len(shares) < threshold:
        raise ShamirError(f"need threshold={threshold} shares to reconstruct, got {len(shares)}")
    if not 1 <= length <= MAX_SECRET_BYTES:
        raise ShamirError(f"length must be in [1, {MAX_SECRET_BYTES}], got {length}")
    items = sorted((_check_x(x), y) for x, y in shares.items())
    for x, y in items:
        if isinstance(y, bool) or not isinstance(y, int) or not 0 <= y < PRIME:
            raise ShamirError(f"share at x={x} is not a field element")
    if limit is not None:
        items = items[:limit]
    points = tuple(x for x, _ in items)
    if len(set(points)) != len(points):  # e.g. 1 and np.int64(1) as two keys
        raise ShamirError("evaluation points must be distinct")
    return points, [mpz(y) for _, y in items]


def _secret_bytes(secret: mpz, length: int) -> bytes:
    if secret.bit_length() > 8 * length:
        raise ShamirError(
            f"reconstructed value does not fit in {length} bytes: wrong or corrupted shares"
        )
    return int(secret).to_bytes(length, "big")


class Decoded(NamedTuple):
    """Result of :func:`decode`: the secret and the evaluation points whose shares were wrong."""

    secret: bytes
    wrong: frozenset[int]


def max_errors(n_shares: int, threshold: int) -> int:
    """How many wrong shares among ``n_shares`` :func:`decode` corrects: ``(n - t) // 2``.

    This is the unique-decoding radius of the Reed-Solomon code formed by Shamir shares (minimum
    distance ``n - t + 1``); no decoder can do better without extra information.
    """
    return max((n_shares - threshold) // 2, 0)


def decode(shares: Mapping[int, int], threshold: int, length: int = 32) -> Decoded:
    """Error-correcting reconstruction: the secret and the set of wrong shares.

    Given ``m >= threshold`` shares ``{x: y}`` of a polynomial ``f`` of degree ``< threshold``,
    of which at most ``e = (m - threshold) // 2`` are wrong (any values, chosen by an adversary
    or not), returns ``f(0)`` as ``length`` big-endian bytes and exactly the points ``x`` with
    ``y != f(x)``. Uses Gao's algorithm (interpolation, then a partial extended Euclid on
    ``prod (X - x)`` and the interpolant, then one polynomial division): O(m^2) field
    operations. When all shares are consistent (checked first, O(m) with the cached point set)
    it costs the same as :func:`reconstruct`.

    With more than ``e`` wrong shares it raises, unless the received shares happen to lie within
    distance ``e`` of *another* polynomial of degree ``< threshold``; that needs at least
    ``m - threshold + 1 - e`` wrong shares that fit such a polynomial, and is unavoidable for any
    decoder. Where the dealer committed to ``f`` (:mod:`secagg.vss`), check the result or the
    flagged shares against the commitments.

    With exactly ``threshold`` shares nothing can be checked: this is :func:`reconstruct`.

    Raises
    ------
    ShamirError
        Fewer than ``threshold`` shares; malformed points or values; more wrong shares than can
        be corrected (the message gives ``e``, ``m`` and ``threshold``); or a secret that does
        not fit in ``length`` bytes.
    """
    threshold = _check_threshold(threshold)
    xs, ys = _sorted_shares(shares, threshold, length, limit=None)
    pset = _CACHE.get(xs)
    m = len(xs)
    if m == threshold or _dot(pset.check_vector(threshold), ys) == 0:
        return Decoded(_secret_bytes(_dot(pset.lam0, ys), length), frozenset())
    e = max_errors(m, threshold)
    f = _gao(xs, ys, pset.weights, threshold) if e else None
    wrong = (
        frozenset()
        if f is None
        else frozenset(x for x, y in zip(xs, ys) if _horner(f, mpz(x)) != y)
    )
    if f is None or len(wrong) > e:
        raise ShamirError(
            f"too many wrong shares to correct: at most e={e} of m={m} shares at "
            f"threshold={threshold} can be corrected (e = (m - threshold) // 2)"
        )
    return Decoded(_secret_bytes(f[0] if f else mpz(0), length), wrong)


# Polynomials over GF(PRIME) as lists of mpz, lowest degree first, without trailing zeros
# (the zero polynomial is []).


def _trim(a: list[mpz]) -> list[mpz]:
    while a and a[-1] == 0:
        a.pop()
    return a


def _poly_sub_mul(a: list[mpz], b: list[mpz], c: list[mpz]) -> list[mpz]:
    """``a - b * c``."""
    out = a + [mpz(0)] * max(len(b) + len(c) - 1 - len(a), 0)
    for i, bi in enumerate(b):
        if bi:
            for j, cj in enumerate(c):
                out[i + j] = (out[i + j] - bi * cj) % _P
    return _trim(out)


def _poly_divmod(a: list[mpz], b: list[mpz]) -> tuple[list[mpz], list[mpz]]:
    """Quotient and remainder of ``a / b`` (``b`` nonzero)."""
    rem = list(a)
    db = len(b) - 1
    if len(rem) <= db:
        return [], rem
    inv_lead = gmpy2.invert(b[-1], _P)
    quo = [mpz(0)] * (len(rem) - db)
    for i in range(len(rem) - 1, db - 1, -1):
        coef = rem[i] * inv_lead % _P
        quo[i - db] = coef
        if coef:
            for j in range(db + 1):
                rem[i - db + j] = (rem[i - db + j] - coef * b[j]) % _P
    return _trim(quo), _trim(rem[:db])


def _gao(
    xs: tuple[int, ...], ys: list[mpz], weights: list[mpz], threshold: int
) -> list[mpz] | None:
    """Gao's decoder (2003): the polynomial of degree < ``threshold`` within distance
    ``(m - threshold) // 2`` of the received word, or None if there is none."""
    m = len(xs)
    # g0 = prod (X - x_i)
    g0 = [mpz(1)]
    for x in xs:
        nxt = [mpz(0)] * (len(g0) + 1)
        for i, c in enumerate(g0):
            nxt[i] = (nxt[i] - c * x) % _P
            nxt[i + 1] = (nxt[i + 1] + c) % _P
        g0 = nxt
    # g1 = interpolant of degree < m: sum_i y_i w_i g0 / (X - x_i) (barycentric form)
    acc = [mpz(0)] * m
    for x, y, w in zip(xs, ys, weights):
        scale = y * w % _P
        if not scale:
            continue
        carry = mpz(0)  # synthetic division of g0 by (X - x), high degree first
        for i in range(m, 0, -1):
            carry = (g0[i] + carry * x) % _P
            acc[i - 1] += scale * carry
    g1 = _trim([c % _P for c in acc])
    # partial extended Euclid: r_i = u_i g0 + v_i g1 until deg r_i < (m + threshold) / 2
    r0, r1 = g0, g1
    v0: list[mpz] = []
    v1 = [mpz(1)]
    while 2 * (len(r1) - 1) >= m + threshold:
        quo, rem = _poly_divmod(r0, r1)
        r0, r1 = r1, rem
        v0, v1 = v1, _poly_sub_mul(v0, quo, v1)
    f, rem = _poly_divmod(r1, v1)
    if rem or len(f) > threshold:
        return None
    return f


def consistent_polynomial(
    shares: Mapping[int, int], candidate_secret: int, threshold: int
) -> list[int]:
    """Coefficients ``[c_0 = candidate_secret, c_1, ..., c_{t-1}]`` of the unique polynomial of
    degree ``< threshold`` through ``threshold - 1`` given shares and ``(0, candidate_secret)``.

    This is the constructive proof that ``threshold - 1`` shares reveal nothing: whatever secret
    is guessed, a polynomial explaining the observed shares exists (and exactly one), so every
    secret is equally likely given those shares.

    Raises ``ShamirError`` unless exactly ``threshold - 1`` shares are given.
    """
    threshold = _check_threshold(threshold)
    if len(shares) != threshold - 1:
        raise ShamirError(f"need exactly threshold-1={threshold - 1} shares, got {len(shares)}")
    pts = [(0, mpz(candidate_secret) % _P)] + [(_check_x(x), mpz(y)) for x, y in shares.items()]
    # Newton/Lagrange to monomial coefficients: sum_k y_k * prod_{m != k} (X - x_m)/(x_k - x_m)
    coeffs = [mpz(0)] * threshold
    for k, (xk, yk) in enumerate(pts):
        basis = [mpz(1)]  # polynomial prod (X - x_m), low degree first
        den = mpz(1)
        for m, (xm, _) in enumerate(pts):
            if m == k:
                continue
            nxt = [mpz(0)] * (len(basis) + 1)
            for i, b in enumerate(basis):
                nxt[i] = (nxt[i] - b * xm) % _P
                nxt[i + 1] = (nxt[i + 1] + b) % _P
            basis = nxt
            den = den * (xk - xm) % _P
        scale = yk * gmpy2.invert(den, _P) % _P
        for i, b in enumerate(basis):
            coeffs[i] = (coeffs[i] + scale * b) % _P
    return [int(c) for c in coeffs]


def share_to_bytes(share: int) -> bytes:
    """Fixed-width (33-byte, big-endian) encoding of a share value.

    Raises ``ShamirError`` if ``share`` is not a field element.
    """
    if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share < PRIME:
        raise ShamirError("share must be an int in [0, PRIME)")
    return share.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Inverse of :func:`share_to_bytes`.

    Raises ``ShamirError`` if ``data`` is not 33 bytes or encodes a value ``>= PRIME``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) != SHARE_BYTES:
        raise ShamirError(f"share encoding must be {SHARE_BYTES} bytes")
    value = int.from_bytes(bytes(data), "big")
    if value >= PRIME:
        raise ShamirError("share encoding is not a field element (>= PRIME)")
    return value
