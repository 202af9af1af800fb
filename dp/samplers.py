"""Integer noise samplers: exact rational-arithmetic samplers and vectorised table samplers.

What is exact and what is approximated
--------------------------------------
* :func:`sample_bernoulli_exp`, :func:`sample_discrete_laplace`, :func:`sample_discrete_gaussian`
  are **exact**: Canonne, Kamath & Steinke, "The discrete Gaussian for differential privacy"
  (NeurIPS 2020, arXiv:2004.00010), Algorithms 1-3. Every probability is a
  :class:`fractions.Fraction` and every coin is an exact uniform integer drawn with
  ``randbelow``; given ideal uniform bits the output law is exactly the target law. They run in
  pure Python (tens of microseconds per sample) and serve small draws and as the reference.
* :class:`IntegerTableSampler` (built by :func:`discrete_gaussian_table` and
  :func:`skellam_table`) is the **vectorised fast path**: Walker's alias method over 53-bit
  integer weights (exact integer construction, O(1) per draw). Its output law differs from the exact law by at most
  :attr:`IntegerTableSampler.tv_bound` in total variation, which accounts for (i) the truncated
  tail (chosen <= 2^-64), (ii) the rounding of each probability to a multiple of 2^-53, and
  (iii) the double-precision error of the pmf itself. ``tests/test_dp_samplers.py`` checks the
  bound against a 50-digit ``mpmath`` pmf. A TV distance ``t`` between the sampled and the exact
  noise law adds at most ``t`` per coordinate and round to the delta of the guarantee; at
  ``d = 10^6`` coordinates and 10^3 rounds with ``t ~ 1e-11`` that is ``1e-2`` -- **too much
  for a delta of 1e-5 at huge scale**, so :attr:`IntegerTableSampler.tv_bound` is reported and
  callers that need it fold ``d * rounds * tv_bound`` into delta (see ``NOTES.md``).
* :func:`sample_skellam` uses numpy's Poisson sampler (floating-point rejection, PTRS); it is
  the statistical reference for Skellam, **not exact** and not cryptographically sourced. The
  release path uses :func:`skellam_table` with a :class:`dp.rng.NoiseSource`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Protocol

import numpy as np

from dp.errors import PrivacyParameterError
from dp.rng import NoiseSource

__all__ = [
    "IntegerTableSampler",
    "discrete_gaussian_pmf",
    "discrete_gaussian_table",
    "sample_bernoulli",
    "sample_bernoulli_exp",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
    "sample_skellam",
    "skellam_pmf",
    "skellam_table",
    "skellam_tail_bound",
]

_TAIL_BITS = 64  # table tails are cut where the remaining mass is <= 2^-64
_WEIGHT_BITS = 53  # table probabilities are multiples of 2^-53


class _Coins(Protocol):
    def randbelow(self, k: int) -> int: ...


def _randbelow(rng: object, k: int) -> int:
    f = getattr(rng, "randbelow", None)
    if f is not None:
        return f(k)
    return rng.randrange(k)  # random.Random / secrets.SystemRandom


def _as_fraction(x: float | int | Fraction, name: str) -> Fraction:
    if isinstance(x, float) and not math.isfinite(x):
        raise PrivacyParameterError(f"{name} must be finite, got {x}")
    return Fraction(x)


# ---------------------------------------------------------------------------------------------
# exact samplers (CKS20)
# ---------------------------------------------------------------------------------------------
def sample_bernoulli(p: Fraction, rng: _Coins) -> bool:
    """Exact Bernoulli(p) for a rational ``p`` in [0, 1]."""
    return _randbelow(rng, p.denominator) < p.numerator


def sample_bernoulli_exp(gamma: Fraction, rng: _Coins) -> bool:
    """Exact Bernoulli(exp(-gamma)) for a rational ``gamma >= 0`` (CKS20, Algorithm 1)."""
    gamma = Fraction(gamma)
    if gamma < 0:
        raise PrivacyParameterError(f"gamma must be >= 0, got {gamma}")
    return _bern_exp(gamma.numerator, gamma.denominator, rng)


def _bern_exp(num: int, den: int, rng: _Coins) -> bool:
    # Bernoulli(exp(-num/den)), num >= 0, den >= 1, all in integers.
    while num > den:  # exp(-g) = exp(-1) * exp(-(g - 1))
        if not _bern_exp(1, 1, rng):
            return False
        num -= den
    k = 1
    while _randbelow(rng, den * k) < num:  # Bernoulli(gamma / k)
        k += 1
    return k % 2 == 1


def sample_discrete_laplace(scale: int | Fraction, rng: _Coins) -> int:
    """Exact draw from the discrete Laplace law ``P[x] ∝ exp(-|x|/scale)`` on the integers
    (CKS20, Algorithm 2, with ``scale = t/s``)."""
    scale = _as_fraction(scale, "scale")
    if scale <= 0:
        raise PrivacyParameterError(f"discrete Laplace scale must be > 0, got {scale}")
    return _dlap(scale.numerator, scale.denominator, rng)


def _dlap(t: int, s: int, rng: _Coins) -> int:
    while True:
        u = _randbelow(rng, t)
        if not _bern_exp(u, t, rng):
            continue
        v = 0
        while _bern_exp(1, 1, rng):
            v += 1
        y = (u + t * v) // s
        negative = _randbelow(rng, 2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def sample_discrete_gaussian(
    sigma2: float | int | Fraction, rng: _Coins, size: int | None = None
) -> int | np.ndarray:
    """Exact draw(s) from the discrete Gaussian ``N_Z(0, sigma2)``,
    ``P[x] ∝ exp(-x^2 / (2 sigma2))`` on the integers (CKS20, Algorithm 3).

    Args:
        sigma2: the scale parameter sigma^2 > 0 (a float is converted to its exact rational
            value; note the variance of N_Z is slightly below sigma^2 for small sigma).
        rng: a :class:`dp.rng.NoiseSource` (or any object with ``randbelow`` / ``randrange``).
        size: ``None`` for one ``int``; otherwise an int64 array of that many draws.

    Raises:
        PrivacyParameterError: ``sigma2`` is not a finite positive number.
    """
    s2 = _as_fraction(sigma2, "sigma2")
    if s2 <= 0:
        raise PrivacyParameterError(f"sigma2 must be > 0, got {sigma2}")
    a, b = s2.numerator, s2.denominator
    t = math.isqrt(a * b) // b + 1  # floor(sigma) + 1
    den = 2 * a * b * t * t  # accept with exp(-(|y| - s2/t)^2 / (2 s2)) = exp(-num/den)

    def one() -> int:
        while True:
            y = _dlap(t, 1, rng)
            if _bern_exp((b * t * abs(y) - a) ** 2, den, rng):
                return y

    if size is None:
        return one()
    return np.fromiter((one() for _ in range(int(size))), dtype=np.int64, count=int(size))


def sample_skellam(mu: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Symmetric Skellam draws with variance ``mu``: ``Poisson(mu/2) - Poisson(mu/2)``.

    Not exact (numpy's floating-point Poisson sampler) and not cryptographic (numpy bit
    generator): the statistical reference and simulation helper. Releases use
    :func:`skellam_table` with a :class:`dp.rng.NoiseSource`.
    """
    if not (math.isfinite(mu) and mu > 0):
        raise PrivacyParameterError(f"Skellam variance mu must be finite and > 0, got {mu}")
    return rng.poisson(mu / 2, size).astype(np.int64) - rng.poisson(mu / 2, size).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# pmfs and tails
# ---------------------------------------------------------------------------------------------
def discrete_gaussian_pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    """The pmf of ``N_Z(0, sigma^2)`` at the integers ``support`` (double precision; the
    normaliser is an ``fsum`` over +-(12 sigma + 10), beyond which the mass is < 1e-30)."""
    _check_sigma(sigma)
    k = int(math.ceil(12 * sigma)) + 10
    z = math.fsum(math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-k, k + 1))
    x = np.asarray(support, dtype=np.float64)
    return np.exp(-(x * x) / (2 * sigma * sigma)) / z


def _check_sigma(sigma: float) -> None:
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
        raise PrivacyParameterError(f"sigma must be finite and > 0, got {sigma!r}")


def skellam_pmf(mu: float, support: np.ndarray) -> np.ndarray:
    """The pmf of the symmetric Skellam law with variance ``mu`` at ``support``:
    ``exp(-mu) I_|k|(mu)`` (scipy's exponentially scaled Bessel ``ive``, double precision)."""
    from scipy.special import ive

    if not (math.isfinite(mu) and mu > 0):
        raise PrivacyParameterError(f"Skellam variance mu must be finite and > 0, got {mu}")
    return ive(np.abs(np.asarray(support, dtype=np.float64)), mu)


def skellam_tail_bound(mu: float, a: float) -> float:
    """Chernoff bound on ``P[X >= a]`` for symmetric Skellam ``X`` with variance ``mu``
    (MGF ``exp(mu (cosh t - 1))``, optimised at ``t = asinh(a/mu)``)."""
    if a <= 0:
        return 1.0
    r = a / mu
    return math.exp(mu * (math.sqrt(1 + r * r) - 1) - a * math.asinh(r))


def skellam_log_mgf(mu: float, t: float) -> float:
    """``log E[exp(t X)]`` for symmetric Skellam with variance ``mu``."""
    if abs(t) > 700:
        return math.inf
    return mu * (math.cosh(t) - 1)


# ---------------------------------------------------------------------------------------------
# vectorised table sampler
# ---------------------------------------------------------------------------------------------
class IntegerTableSampler:
    """Exact-weight alias sampling of an integer law truncated to ``[offset, offset + len(pmf))``.

    Each probability is rounded to an integer weight out of ``2^53`` (the rounding residue goes
    to the mode, so the weights sum exactly to ``2^53``). Walker's alias table is then built in
    integer arithmetic over ``2^m >= len`` columns of capacity ``2^(53-m)`` each, so the law of
    a draw is *exactly* ``weights / 2^53``. A draw takes one 64-bit word of the
    :class:`~dp.rng.NoiseSource`: its top ``m`` bits pick the column, ``53 - m`` further bits
    decide between the column's value and its alias (O(1) per draw, vectorised).

    Attributes:
        offset: the smallest value in the table.
        weights: int64 weights, summing to ``2^53``.
        tv_bound: bound on the total-variation distance between the sampled law and the exact
            law: ``tail_mass + sum_k |w_k / 2^53 - p_k|``, itself bounded by
            ``tail_mass + (len + 1) 2^-53 + pmf_rel_error``.
    """

    __slots__ = ("offset", "weights", "tv_bound", "name", "_m", "_prob", "_alias")

    def __init__(
        self, offset: int, pmf: np.ndarray, tail_mass: float, pmf_rel_error: float, name: str
    ) -> None:
        p = np.asarray(pmf, dtype=np.float64)
        if p.ndim != 1 or p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0):
            raise PrivacyParameterError(f"{name}: pmf must be a non-empty finite vector >= 0")
        total = 1 << _WEIGHT_BITS
        w = np.rint(p * float(total)).astype(np.int64)
        w[int(np.argmax(w))] += total - int(w.sum())
        if np.any(w < 0):
            raise PrivacyParameterError(f"{name}: pmf does not sum to 1")
        self.offset = int(offset)
        self.weights = w
        self.tv_bound = float(tail_mass + (p.size + 1) * 2.0**-_WEIGHT_BITS + pmf_rel_error)
        self.name = name
        self._m = max(1, (p.size - 1).bit_length())
        self._prob, self._alias = _alias_table(w, self._m)

    def __len__(self) -> int:
        return int(self.weights.size)

    def table_pmf(self) -> np.ndarray:
        """The exact law this sampler draws from (weights / 2^53)."""
        return self.weights.astype(np.float64) * 2.0**-_WEIGHT_BITS

    def alias_pmf(self) -> np.ndarray:
        """The law implied by the alias table itself (for tests: equals :meth:`table_pmf`)."""
        cap = 1 << (_WEIGHT_BITS - self._m)
        out = np.zeros(self.weights.size, dtype=np.int64)
        cols = np.arange(self._prob.size)
        real = cols < self.weights.size
        np.add.at(out, cols[real], self._prob[real])
        np.add.at(out, self._alias, cap - self._prob)
        return out.astype(np.float64) * 2.0**-_WEIGHT_BITS

    def sample(self, size: int, source: NoiseSource) -> np.ndarray:
        """``size`` draws as an int64 array."""
        w = source.words(size)
        col = (w >> np.uint64(64 - self._m)).astype(np.intp)
        u = (w & np.uint64((1 << (_WEIGHT_BITS - self._m)) - 1)).astype(np.int64)
        out = np.where(u < self._prob[col], col, self._alias[col])
        out += self.offset
        return out


def _alias_table(w: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table over ``2^m`` columns in exact integer arithmetic.

    Column ``j`` returns ``j`` with weight ``prob[j]`` and ``alias[j]`` with weight
    ``cap - prob[j]``, where ``cap = 2^(53-m)``; columns past ``len(w)`` have weight 0.
    """
    cols = 1 << m
    cap = 1 << (_WEIGHT_BITS - m)
    rest = [int(x) for x in w] + [0] * (cols - w.size)
    prob = [cap] * cols
    alias = list(range(cols))
    small = [j for j in range(cols) if rest[j] < cap]
    large = [j for j in range(cols) if rest[j] > cap]
    while small and large:
        s = small.pop()
        g = large[-1]
        prob[s] = rest[s]
        alias[s] = g
        rest[g] -= cap - rest[s]
        if rest[g] < cap:
            large.pop()
            small.append(g)
        elif rest[g] == cap:
            large.pop()
    # leftovers hold exactly cap (integer arithmetic: no rounding residue)
    for j in small + large:
        prob[j] = cap
        alias[j] = j
    return np.asarray(prob, dtype=np.int64), np.asarray(alias, dtype=np.int64)


def _tail_cut_dg(sigma: float) -> int:
    # CKS20 Prop. 25 / Cor. 26: N_Z(0, s^2) is s-sub-Gaussian, P[|X| >= k+1] <= 2 exp(-(k+1)^2 / 2s^2)
    return int(math.ceil(sigma * math.sqrt(2 * math.log(2) * (_TAIL_BITS + 1))))


def discrete_gaussian_table(sigma: float) -> IntegerTableSampler:
    """Table sampler for ``N_Z(0, sigma^2)`` on ``[-K, K]`` with ``P[|X| > K] <= 2^-64``.

    Raises:
        PrivacyParameterError: ``sigma`` is not finite and > 0, or the table would exceed
            2^24 entries (sigma > ~1.8e6).
    """
    _check_sigma(sigma)
    k = max(_tail_cut_dg(sigma), 1)
    if 2 * k + 1 > 1 << 24:
        raise PrivacyParameterError(f"sigma={sigma} needs a table of {2 * k + 1} > 2^24 entries")
    support = np.arange(-k, k + 1)
    p = discrete_gaussian_pmf(sigma, support)
    return IntegerTableSampler(-k, p, 2.0**-_TAIL_BITS, 8 * 2.0**-52, f"N_Z(0, {sigma}^2)")


def skellam_table(mu: float) -> IntegerTableSampler:
    """Table sampler for the symmetric Skellam law with variance ``mu`` on ``[-K, K]`` with
    ``P[|X| > K] <= 2^-64`` (Chernoff bound, :func:`skellam_tail_bound`).

    The pmf comes from scipy's ``ive`` (relative error ~1e-14 in double precision); the stated
    ``tv_bound`` includes ``1e-13`` for it.
    """
    if not (math.isfinite(mu) and mu > 0):
        raise PrivacyParameterError(f"Skellam variance mu must be finite and > 0, got {mu}")
    k = int(math.ceil(math.sqrt(mu)))
    while 2 * skellam_tail_bound(mu, k + 1) > 2.0**-_TAIL_BITS:
        k = int(k * 1.1) + 1
    if 2 * k + 1 > 1 << 24:
        raise PrivacyParameterError(f"mu={mu} needs a table of {2 * k + 1} > 2^24 entries")
    support = np.arange(-k, k + 1)
    p = skellam_pmf(mu, support)
    return IntegerTableSampler(-k, p, 2.0**-_TAIL_BITS, 1e-13, f"Skellam(var={mu})")
