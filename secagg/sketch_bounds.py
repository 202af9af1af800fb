"""The norm bound on sketches: its slack ``ε`` for a false-rejection rate, and the exact test.

The filter of a secure round (DESIGN.md, step 5) rejects a client whose sketch is too long:
``‖s_i‖² > k·C²·(1+ε)²``, where ``s_i = P·x_i`` (:func:`secagg.sketch.sketch`) and ``C`` bounds
``‖x_i‖`` for an honest client. ``ε`` is chosen so that an honest vector is rejected with
probability at most ``δ`` (the false-rejection rate), whatever its direction.

The bound (a concentration bound, not the exact distribution)
-------------------------------------------------------------
Each row ``p_l`` of ``P`` is an independent Rademacher vector, so ``Y_l = p_l·x`` is a
Rademacher sum with ``E[Y_l²] = ‖x‖² = σ²`` and ``E[e^{tY_l}] = Π_j cosh(t x_j) ≤
e^{t²σ²/2}``. Writing ``e^{λY²} = E_g[e^{√(2λ)·g·Y}]`` for a standard normal ``g`` gives
``E[e^{λY_l²}] ≤ E_g[e^{λσ²g²}] = (1 − 2λσ²)^{-1/2}``: the moment generating function of
``Y_l²/σ²`` is dominated by that of χ²_1, so ``‖Px‖²/σ²`` is dominated by χ²_k and the Chernoff
bound for χ²_k holds for every ``x``:

    P(‖Px‖² ≥ t·k·σ²) ≤ exp(−(k/2)·(t − 1 − ln t))        for t > 1.

:func:`norm_bound_epsilon` solves ``exp(−(k/2)(t − 1 − ln t)) = δ`` for ``t`` and returns
``ε = √t − 1`` (rounded up). A vector of norm ``≤ C`` then fails the test with probability
``≤ δ``; the rate is a guaranteed upper bound, and the true rate is smaller (the bound is
Chernoff's, and Rademacher sums are lighter-tailed than Gaussians). Values:

======  ===========  ===========  ===========
k       δ = 10^-2    δ = 10^-4    δ = 10^-6
======  ===========  ===========  ===========
64      0.280        0.401        0.496
128     0.196        0.280        0.345
256     0.137        0.196        0.241
======  ===========  ===========  ===========

(rounded up to 3 decimals; ``tests/test_secagg_sketch_stats.py`` recomputes this table.) The
bound is conservative: measured on honest vectors of norm exactly ``C`` (Gaussian and flat
directions, the heaviest-tailed of the shapes tested), the rejection rate at the ``δ = 10^-2`` slack is about
``2·10^-3`` for k = 64 and 128, and the exact 99th percentile corresponds to ``ε ≈ 0.21``
(k = 64) and ``0.15`` (k = 128) instead of 0.280 and 0.196 (see
``benchmarks/results/sketch_cost.md``).

The price is on the other side: a vector a little longer than ``C`` (up to about ``C·(1+ε)``)
passes with non-negligible probability, because ``P`` is chosen after the inputs are committed
and its distortion is random, not chosen by the attacker.

Fixed-point units
-----------------
Sketches are of the signed fixed-point integers, so ``C`` must be in those units.
:func:`fixed_point_norm_bound` gives a bound that also covers the stochastic rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from .errors import SketchParameterError

__all__ = [
    "norm_bound_epsilon",
    "norm_bound_false_rejection",
    "fixed_point_norm_bound",
    "within_norm_bound",
]


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SketchParameterError(f"k must be an int >= 1, got {k!r}")
    return int(k)


def _chernoff_exponent(t: float) -> float:
    """``t − 1 − ln t`` (>= 0, increasing for t > 1)."""
    return t - 1.0 - math.log(t)


def norm_bound_false_rejection(k: int, eps: float) -> float:
    """Upper bound on ``P(‖Px‖² > k·C²·(1+eps)²)`` for any ``‖x‖ ≤ C``: ``exp(−(k/2)(t−1−ln t))``
    with ``t = (1+eps)²`` (see the module docstring).

    Raises :class:`SketchParameterError` for ``k < 1`` or ``eps`` not a finite number ``>= 0``.
    """
    k = _check_k(k)
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise SketchParameterError(f"eps must be a finite number >= 0, got {eps}")
    t = (1.0 + eps) ** 2
    return math.exp(-0.5 * k * _chernoff_exponent(t))


def norm_bound_epsilon(k: int, false_rejection: float) -> float:
    """The smallest ``ε`` (to 1e-12, rounded up) for which the Chernoff bound guarantees that a
    vector of norm ``≤ C`` fails ``‖Px‖² ≤ k·C²·(1+ε)²`` with probability ``≤ false_rejection``.

    Raises :class:`SketchParameterError` for ``k < 1`` or ``false_rejection`` outside
    ``(0, 1)``.
    """
    k = _check_k(k)
    delta = float(false_rejection)
    if not 0.0 < delta < 1.0:
        raise SketchParameterError(f"false_rejection must be in (0, 1), got {false_rejection!r}")
    target = 2.0 * math.log(1.0 / delta) / k  # need t - 1 - ln t >= target
    lo, hi = 1.0, 2.0
    while _chernoff_exponent(hi) < target:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-13 * hi:
        mid = 0.5 * (lo + hi)
        if _chernoff_exponent(mid) >= target:
            hi = mid
        else:
            lo = mid
    # hi satisfies the bound; round sqrt(hi) - 1 up so the returned ε still does
    return math.nextafter(math.sqrt(hi) - 1.0, math.inf)


def fixed_point_norm_bound(clip_norm: float, scale: float, d: int) -> float:
    """A bound on ``‖q‖`` for the fixed-point encoding ``q`` of any ``x`` with ``‖x‖ ≤ clip_norm``.

    Stochastic rounding moves each coordinate of ``x·scale`` by less than 1, so
    ``‖q‖ < clip_norm·scale + √d`` (triangle inequality); the returned value is that, rounded
    up. Use it as ``bound`` in :func:`within_norm_bound` (``scale`` is
    ``FixedPointEncoder.scale``).

    Raises :class:`SketchParameterError` for a non-positive or non-finite ``clip_norm`` or
    ``scale``, or ``d < 1``.
    """
    clip_norm, scale = float(clip_norm), float(scale)
    for name, v in (("clip_norm", clip_norm), ("scale", scale)):
        if not math.isfinite(v) or v <= 0:
            raise SketchParameterError(f"{name} must be a positive finite number, got {v}")
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise SketchParameterError(f"d must be an int >= 1, got {d!r}")
    return math.nextafter(clip_norm * scale + math.sqrt(int(d)), math.inf)


def within_norm_bound(
    sq_norms: Sequence[int] | np.ndarray, *, k: int, bound: float | Fraction, eps: float
) -> np.ndarray:
    """``sq_norms[i] <= k·bound²·(1+eps)²`` for each client, compared exactly.

    ``sq_norms`` are the exact squared sketch norms ``‖s_i‖²`` (ints: Python ints, an object
    array or an integer array; e.g. :func:`secagg.sketch_squared_norms` or the diagonal the
    distance protocol returns). ``bound`` and ``eps`` are converted to exact rationals, so the
    test has no rounding: a norm is accepted iff it satisfies the inequality. Returns a boolean
    array, True for accepted.

    Raises :class:`SketchParameterError` for ``k < 1``, a negative or non-finite ``bound`` or
    ``eps``, or an entry of ``sq_norms`` that is not a non-negative integer.
    """
    k = _check_k(k)
    try:
        b = Fraction(bound)
        e = Fraction(eps)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SketchParameterError(f"bound and eps must be finite numbers: {exc}") from None
    if b < 0 or e < 0:
        raise SketchParameterError(f"bound and eps must be >= 0, got {bound!r}, {eps!r}")
    threshold = k * b * b * (1 + e) ** 2
    values = np.asarray(sq_norms, dtype=object).reshape(-1)
    out = np.empty(values.size, dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
            raise SketchParameterError(f"sq_norms[{i}] must be a non-negative integer, got {v!r}")
        out[i] = int(v) <= threshold
    return out
