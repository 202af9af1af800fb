"""The calibrator: the noise for a privacy target, and the detection margin it leaves the filter.

:func:`calibrate` answers two questions at once. *Privacy*: which noise meets ``(epsilon,
delta)`` over ``rounds`` Poisson-sampled rounds, and what epsilon that noise actually achieves
(through :mod:`dp.accounting`, i.e. Google's ``dp-accounting``; no RDP maths here). *Detection*:
the smallest deviation of a Byzantine update that the configured filter still catches, given the
honest spread, the sketch distortion and -- where the filter reads it -- the noise.

The statistical model (what the margins assume)
-----------------------------------------------
* **Honest updates** ``x_i = m + s g_i``, ``g_i ~ N(0, I_d)`` independent: a common mean ``m``
  (``honest_mean_norm = ||m||``) and an isotropic per-coordinate spread ``s`` (``honest_spread``).
  Squared distances between honest updates are then ``2 s^2 chi^2_d`` (mean ``2 d s^2``, relative
  standard deviation ``sqrt(2/d)``). Defaults, when not given: honest updates of norm about the
  clip bound ``C`` with half of the energy in the mean (``||m|| = C/sqrt 2``, ``s = C/sqrt(2d)``,
  pairwise cosine ~0.5); the result then says ``spread_assumed=True``. Measure them on real
  updates with :func:`estimate_honest_model`.
* **Attackers** (``f`` of ``n``) collude and send one identical vector ``a = m_hat + delta``,
  where ``m_hat`` is the honest clients' empirical mean (omniscient attacker) and ``delta`` is
  treated as independent of the honest residuals. Every attack class is then a deviation
  ``rho = ||delta|| / (sqrt(d) s_eff)``:

  - scaling by ``lambda`` (``lambda * m_hat``): ``||delta|| = |lambda - 1| ||m_hat||``;
  - sign flip (``-m_hat``): ``||delta|| = 2 ||m_hat||``, so whether it is caught depends on the
    honest mean against the spread (``min_mean_norm``);
  - ALIE (``m_hat - z * std_hat``, coordinate-wise, the std the attacker observes):
    ``rho = z``.

  ``||m_hat||^2 = ||m||^2 + d s_eff^2 / h`` with ``h = n - f`` honest clients.
* **What the filter reads.** ``central`` and ``distributed``: the noise-free updates (or their
  sketches; distributed noise shares are checked separately), so the noise does not move the
  margin; ``s_eff = s``. ``before_filter``: every client adds its share ``N(0, sigma_l^2)``
  before the filter reads the update, with ``sigma_l = sigma / sqrt(n - f)`` so that the
  ``n - f`` accepted shares still carry the calibrated ``sigma``; ``local``: every client adds
  ``N(0, (z C)^2)`` to its own update (client-level local DP). Both widen the spread the filter
  sees to ``s_eff^2 = s^2 + sigma_l^2``. The attackers add no noise (a fixed point is the
  hardest to tell from a noisy cloud). ``ALIE``'s ``z`` is then in units of the *noisy* std.
* **Sketches** (``sketch_dim = k``, secure filtering): the filter reads ``||P(x_i - x_j)||^2 / k``
  for a ``k x d`` matrix of +-1 entries. For Gaussian honest updates ``P g_i`` is Gaussian in
  ``k`` dimensions, so the model is the same with ``d`` replaced by ``k`` (relative error of a
  squared distance ``~sqrt(2/k)``), and the attack's deviation is distorted by a random factor
  ``||P delta||^2 / (k ||delta||^2) ~ chi^2_k / k``, the same for all colluders. The norm bound
  is ``C (1 + eps)`` with ``eps`` the sketch slack at ``false_positive_rate`` (the Chernoff
  bound of :mod:`secagg.sketch_bounds`).

The defences and their detection rule
-------------------------------------
``multi_krum`` (Blanchard et al. 2017; ``robust.multi_krum``): Krum scores over ``n - f - 2``
neighbours, the ``n - f`` lowest selected. It has no threshold: it rejects exactly ``f`` clients
every round, so its false-positive rate is ``f / n`` whatever ``false_positive_rate`` says (the
result states it). The attack is *caught* when every attacker is rejected. Its probability is
computed by Monte Carlo from the model: the honest Gram matrix is drawn from its law (Wishart,
cost independent of ``d``; see ``_honest_grams``), the attackers' distances are added, and the
Krum selection is applied; the margin is the smallest ``rho`` caught in at least ``power`` of
150-400 trials (fixed seed, common random numbers across ``rho``, bisection to 0.5%).

``centre_distance`` (the secure form of centered clipping in DESIGN.md: a public centre ``v``,
e.g. the last aggregate, and a cut on ``||x_i - v||``; in robust: ``norm_filter`` on
``x_i - v``): modelled with ``v = m``. An honest client's ``||x_i - v||^2 / s_eff^2`` is
``chi^2_{d_eff}`` scaled by ``d / d_eff`` (``d_eff = k`` with sketches), so the returned
``threshold`` (``max_norm``) is its ``1 - false_positive_rate`` quantile exactly; an attacker is
caught when ``||a - v|| > threshold``, with probability ``power`` at the margin (closed form).

What is not modelled: non-Gaussian or heterogeneous (non-IID) honest updates (measure the spread
and pass it), a centre ``v`` away from the honest mean (it adds ``||v - m||^2`` to every
distance, like a wider spread), adaptive attackers that correlate ``delta`` with the honest
residuals beyond ALIE's empirical std, and the clipping of honest updates to ``C``.

Refusal
-------
An attack class is *reachable* when an instance of it that the margin says is caught fits
within the noise-free norm bound ``C (1 + eps)`` (the size any client may contribute). If the
user names an ``attack`` whose margin is reachable without the noise but not with it (the noise
is what hides it -- ``before_filter`` and ``local``, typically), :func:`calibrate` raises
:class:`~dp.errors.DetectionRefusedError`; with ``override=True`` it returns the calibration with
``refused`` set and a warning. If the defence misses the attack within the norm bound even
without noise, that is not the noise's doing: a warning, no refusal.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dp.errors import (
    DetectionRefusedError,
    PrivacyParameterError,
    UnsupportedDefenceError,
    UnsupportedMechanismError,
)

__all__ = [
    "ATTACKS",
    "Calibration",
    "DEFENCES",
    "DetectionMargin",
    "MECHANISMS",
    "PLACEMENTS",
    "calibrate",
    "estimate_honest_model",
]

MECHANISMS = ("gaussian", "ddg", "skellam")
PLACEMENTS = ("central", "distributed", "local", "before_filter")
DEFENCES = ("multi_krum", "centre_distance")
ATTACKS = ("scaling", "sign_flip", "alie")
#: placements each mechanism supports (the integer mechanisms exist for secure aggregation)
_ALLOWED = {
    "gaussian": PLACEMENTS,
    "ddg": ("distributed", "before_filter"),
    "skellam": ("distributed", "before_filter"),
}
_SEED = 20240610


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionMargin:
    """The smallest deviation of one attack class that the filter catches with probability
    ``>= power`` under the model (module docstring).

    Attributes:
        attack: ``"scaling"``, ``"sign_flip"`` or ``"alie"``.
        deviation: ``rho* = ||delta|| / (sqrt(d) s_eff)`` at the margin (the same for every
            class; the per-class numbers below translate it).
        deviation_norm: ``||delta||`` at the margin, in update units.
        factor_up / factor_down: scaling only: every ``lambda >= factor_up`` and every
            ``lambda <= factor_down`` is caught (``factor_down`` may be negative).
        min_mean_norm: sign flip only: the smallest honest ``||m||`` at which ``-m_hat`` is
            caught; ``caught`` says whether the configured honest model reaches it.
        z: ALIE only: the smallest ``z`` caught (in units of the std the attacker observes).
        reachable: an instance caught at the margin fits within the noise-free norm bound.
        reachable_without_noise: the same with the filter reading noise-free updates.
        note: one line for a person.
    """

    attack: str
    deviation: float
    deviation_norm: float
    reachable: bool
    reachable_without_noise: bool
    note: str
    factor_up: float | None = None
    factor_down: float | None = None
    min_mean_norm: float | None = None
    caught: bool | None = None
    z: float | None = None


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` decided. Units are those of the updates (L2, float).

    Privacy: ``noise_multiplier`` (``sigma / C``), ``sigma`` (noise std on the released sum, per
    coordinate), ``client_sigma`` (per-client, per-coordinate share: distributed, before_filter
    and local; None for central), ``scale``/``bits`` (integer mechanisms), ``epsilon`` (what the
    accountant reports for this noise at ``delta``; ``<= epsilon_target``).

    Detection: ``filter_reads``, ``effective_spread`` (``s_eff``), ``effective_dim`` (``d`` or
    the sketch dimension), ``norm_bound`` (``C (1 + eps)``), ``threshold`` (``centre_distance``:
    the ``max_norm`` of the cut; None for multi_krum), ``false_positive_rate`` (the rate the
    filter has on honest rounds: the requested one, or ``f / n`` for multi_krum), ``power`` and
    ``margins`` (one :class:`DetectionMargin` per attack class).

    ``refused`` holds the refusal message when ``override=True`` overrode one; ``warnings``
    lists everything a person should read.
    """

    epsilon_target: float
    delta: float
    rounds: int
    sampling_rate: float
    clip_norm: float
    dim: int
    n: int
    f: int
    defence: str
    mechanism: str
    placement: str
    noise_multiplier: float
    sigma: float
    client_sigma: float | None
    scale: float | None
    bits: int | None
    epsilon: float
    filter_reads: str
    honest_spread: float
    honest_mean_norm: float
    spread_assumed: bool
    effective_spread: float
    effective_dim: int
    sketch_dim: int | None
    norm_bound: float
    threshold: float | None
    false_positive_rate: float
    power: float
    margins: dict[str, DetectionMargin]
    attack: str | None = None
    refused: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (margins as dicts)."""
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _pos(x: Any, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x <= 0:
        raise PrivacyParameterError(f"{name} must be finite and > 0, got {x!r}")
    return float(x)


def _int(x: Any, name: str, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer) or x < low:
        raise PrivacyParameterError(f"{name} must be an int >= {low}, got {x!r}")
    return int(x)


def _unit(x: Any, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not 0 < x < 1:
        raise PrivacyParameterError(f"{name} must be in (0, 1), got {x!r}")
    return float(x)


def _choice(x: Any, name: str, allowed: tuple[str, ...], err: type = PrivacyParameterError):
    if x not in allowed:
        raise err(f"{name} must be one of {', '.join(allowed)}; got {x!r}")
    return x


# ---------------------------------------------------------------------------------------------
# privacy (cached: the accountant is the slow part)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _privacy(
    mechanism: str,
    placement: str,
    epsilon: float,
    delta: float,
    rounds: int,
    q: float,
    clip: float,
    dim: int,
    shares: int,
    bits: int,
) -> tuple[float, float, float | None, float | None, float]:
    """(noise multiplier, sigma, client sigma, integer scale, epsilon achieved)."""
    from dp.accounting import GaussianEvent, event_epsilon, noise_multiplier_for

    if mechanism == "gaussian":
        z = noise_multiplier_for(epsilon, delta, rounds, q)
        sigma = z * clip
        client = {"central": None, "local": sigma}.get(placement, sigma / math.sqrt(shares))
        return z, sigma, client, None, event_epsilon(GaussianEvent((z,), q, rounds), delta)
    from dp.mechanisms import DistributedDiscreteGaussian, DistributedSkellam

    cls = DistributedDiscreteGaussian if mechanism == "ddg" else DistributedSkellam
    mech = cls.calibrate(
        epsilon, delta, rounds, q, n_clients=shares, dim=dim, clip_norm=clip, bits=bits
    )
    sigma = mech.sigma
    eps = event_epsilon(mech.event(q, rounds), delta)
    return sigma / clip, sigma, sigma / math.sqrt(shares), mech.scale, eps


class _Background:
    """``fn(*args)`` in a daemon thread; :meth:`result` joins and returns it or re-raises."""

    def __init__(self, fn, *args) -> None:
        self._out: Any = None
        self._exc: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(fn, args), name="fortis-calibrate-privacy", daemon=True
        )
        self._thread.start()

    def _run(self, fn, args) -> None:
        try:
            self._out = fn(*args)
        except BaseException as exc:  # handed to the caller by result()
            self._exc = exc

    def result(self) -> Any:
        self._thread.join()
        if self._exc is not None:
            raise self._exc
        return self._out


# ---------------------------------------------------------------------------------------------
# detection, in normalised units: distances divided by d_eff * s_eff^2
# ---------------------------------------------------------------------------------------------
def _chi2_ppf(p: float, k: int) -> float:
    # scipy.stats.chi2.ppf computes exactly this (chi2_gen._ppf); scipy.stats itself costs
    # ~0.8 s to import, scipy.special ~0.2 s
    from scipy.special import gammaincinv

    return float(2.0 * gammaincinv(k / 2.0, p))


def _sketch_epsilon(k: int, rate: float) -> float:
    """The sketch norm-bound slack of :func:`secagg.sketch_bounds.norm_bound_epsilon` (dp is a
    leaf and does not import secagg): solve ``exp(-(k/2)(t - 1 - ln t)) = rate``, ``eps =
    sqrt(t) - 1``."""
    target = 2 * math.log(1 / rate) / k
    lo, hi = 1.0, 2.0
    while hi - 1 - math.log(hi) < target:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid - 1 - math.log(mid) < target else (lo, mid)
    return math.sqrt(hi) - 1


def _honest_grams(h: int, d_eff: int, trials: int, rng: np.random.Generator):
    """``trials`` Gram matrices of ``h`` vectors ``g_i ~ N(0, I/d_eff)`` split as ``u u^T + W``
    (``u_i`` the component along a fixed direction, ``W`` the rest). For ``d_eff >= 10 h``
    the entries of ``W`` are drawn independently (chi-square diagonal, normal off-diagonal:
    the margins agree with the exact law within 0.5%, checked at d = 10 h); below that exactly
    (Wishart by Bartlett's decomposition, or ``X X^T`` when ``d_eff <= h``)."""
    u = rng.standard_normal((trials, h)) / math.sqrt(d_eff)
    dof = d_eff - 1
    idx = np.arange(h)
    if dof >= 10 * h:  # independent entries (agrees with the exact law to < 0.5% in rho*)
        off = np.triu(rng.standard_normal((trials, h, h)), 1) * math.sqrt(dof)
        w = off + off.transpose(0, 2, 1)
        w[:, idx, idx] = rng.chisquare(dof, size=(trials, h))
    elif dof < h:  # exact, directly: W = X X^T
        x = rng.standard_normal((trials, h, dof))
        w = x @ x.transpose(0, 2, 1)
    else:  # exact, Bartlett: W = A A^T, A lower triangular
        a = np.tril(rng.standard_normal((trials, h, h)), -1)
        a[:, idx, idx] = np.sqrt(rng.chisquare(dof - idx, size=(trials, h)))
        w = a @ a.transpose(0, 2, 1)
    return u, w / d_eff + u[:, :, None] * u[:, None, :]


@functools.lru_cache(maxsize=32)
def _krum_margin(n: int, f: int, d_eff: int, sketch: bool, power: float) -> float:
    """The smallest normalised deviation rho that Multi-Krum catches (all ``f`` identical
    attackers rejected) in at least ``power`` of the Monte Carlo trials."""
    h = n - f
    k = n - f - 2
    exact = d_eff - 1 < 10 * h  # the exact Wishart draws cost O(h^3) per trial
    trials = int(min(400, max(150, 1.2e8 / h**3))) if exact else 400
    rng = np.random.default_rng(_SEED)
    u, g = _honest_grams(h, d_eff, trials, rng)
    diag = np.diagonal(g, axis1=1, axis2=2)
    dhh = diag[:, :, None] + diag[:, None, :] - 2 * g
    idx = np.arange(h)
    dhh[:, idx, idx] = np.inf
    srt = np.sort(dhh, axis=2)[:, :, : h - 1]  # each honest row's h - 1 honest distances
    csum = np.concatenate([np.zeros((trials, h, 1)), np.cumsum(srt, axis=2)], axis=2)
    # distance of honest i to the empirical centre, and the component along delta
    gbar = g.mean(axis=2)
    r = diag - 2 * gbar + g.mean(axis=(1, 2))[:, None]
    uc = u - u.mean(axis=1, keepdims=True)
    kappa = rng.chisquare(d_eff, size=trials) / d_eff if sketch else np.ones(trials)
    kappa = np.sqrt(kappa)[:, None]
    nz = k - (f - 1)  # non-zero distances in an attacker's score

    def caught(rho: float) -> float:
        v = r - 2 * rho * kappa * uc + (rho * kappa) ** 2  # honest-attacker squared distances
        v = np.maximum(v, 0.0)
        att = np.sort(v, axis=1)[:, :nz].sum(axis=1) if nz > 0 else np.zeros(trials)
        c = (srt < v[:, :, None]).sum(axis=2)  # honest distances below the attacker's
        take = np.minimum(f, np.maximum(k - c, 0))
        rest = np.maximum(k - c - f, 0)
        first = np.minimum(c, k)
        hon = np.take_along_axis(csum, (first + rest)[:, :, None], axis=2)[:, :, 0] + v * take
        return float(np.mean(hon.max(axis=1) < att))

    lo, hi = 0.0, 1.0
    while caught(hi) < power:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            return math.inf
    while hi - lo > 0.005 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if caught(mid) < power else (lo, mid)
    return hi


def _centre_margin(h: int, d_eff: int, sketch: bool, fpr: float, power: float):
    """(threshold^2, rho*^2) of the centre-distance cut, normalised by ``d_eff s_eff^2``."""
    tau2 = _chi2_ppf(1 - fpr, d_eff) / d_eff
    low = _chi2_ppf(1 - power, d_eff) / d_eff if sketch else 1.0
    return tau2, max(tau2 / low - 1.0 / h, 0.0)


# ---------------------------------------------------------------------------------------------
# the calibrator
# ---------------------------------------------------------------------------------------------
def calibrate(
    epsilon: float,
    delta: float,
    *,
    rounds: int,
    sampling_rate: float,
    clip_norm: float,
    dim: int,
    n: int,
    f: int,
    defence: str = "multi_krum",
    mechanism: str = "gaussian",
    placement: str = "central",
    attack: str | None = None,
    false_positive_rate: float = 0.01,
    power: float = 0.95,
    honest_spread: float | None = None,
    honest_mean_norm: float | None = None,
    sketch_dim: int | None = None,
    bits: int = 20,
    override: bool = False,
) -> Calibration:
    """Calibrate the noise for ``(epsilon, delta)`` and report the detection margins.

    Args:
        epsilon, delta: the client-level target over all ``rounds``.
        rounds, sampling_rate: rounds and the Poisson client-sampling rate per round.
        clip_norm: ``C``, the L2 bound of an update (also the noise's sensitivity).
        dim: ``d``; n: clients per round (the filter sees ``n`` updates); f: Byzantine ones.
        defence: ``"multi_krum"`` or ``"centre_distance"`` (module docstring).
        mechanism: ``"gaussian"``, ``"ddg"`` (distributed discrete Gaussian) or ``"skellam"``.
        placement: ``"central"`` (after the filter), ``"distributed"`` (noise shares under
            SecAgg, sized for the ``n - f`` accepted shares, not read by the filter; accounted
            under replace-one adjacency, see ``dp/NOTES.md``),
            ``"local"`` (each client noises its own update) or ``"before_filter"`` (shares added
            before the filter reads the updates).
        attack: the class the user wants stopped (``"scaling"``, ``"sign_flip"``, ``"alie"``)
            or None; only a named attack can be refused.
        false_positive_rate: honest-rejection rate of a thresholded filter and the sketch
            norm bound's false-rejection rate.
        power: a margin is caught with at least this probability under the model.
        honest_spread: ``s``, the per-coordinate std of honest updates around their mean.
        honest_mean_norm: ``||m||``, the norm of the honest mean (needed by sign flip and
            scaling). Defaults: see the module docstring (honest norm ~ ``C``).
        sketch_dim: ``k`` when the filter reads ``k``-dimensional +-1 sketches.
        bits: SecAgg bit width of the integer mechanisms.
        override: return a refused calibration (with the refusal in ``refused`` and
            ``warnings``) instead of raising.

    Returns a :class:`Calibration`. Guarantees: ``epsilon <= epsilon_target`` (the accountant's
    number for the chosen noise, which is within 1-2% of the smallest meeting the target);
    deterministic (fixed Monte Carlo seed); repeated calls with the same privacy and detection
    parameters are served from a cache.

    Raises:
        PrivacyParameterError: a parameter out of range (named in the message).
        UnsupportedMechanismError: the mechanism cannot run at that placement.
        UnsupportedDefenceError: a defence without a detection model.
        CalibrationError: the privacy target is unreachable (e.g. too few ``bits``).
        DetectionRefusedError: the named ``attack`` is hidden by the noise and ``override`` is
            False.
    """
    epsilon = _pos(epsilon, "epsilon")
    delta = _unit(delta, "delta")
    rounds = _int(rounds, "rounds", 1)
    if not (isinstance(sampling_rate, int | float) and 0 < sampling_rate <= 1):
        raise PrivacyParameterError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    q = float(sampling_rate)
    clip = _pos(clip_norm, "clip_norm")
    dim = _int(dim, "dim", 1)
    n = _int(n, "n", 1)
    f = _int(f, "f", 1)
    defence = _choice(defence, "defence", DEFENCES, UnsupportedDefenceError)
    mechanism = _choice(mechanism, "mechanism", MECHANISMS)
    placement = _choice(placement, "placement", PLACEMENTS)
    if placement not in _ALLOWED[mechanism]:
        raise UnsupportedMechanismError(
            f"mechanism {mechanism!r} cannot run at placement {placement!r}; "
            f"it supports {', '.join(_ALLOWED[mechanism])}"
        )
    if attack is not None:
        _choice(attack, "attack", ATTACKS)
    fpr = _unit(false_positive_rate, "false_positive_rate")
    power = _unit(power, "power")
    bits = _int(bits, "bits", 2)
    if defence == "multi_krum" and n < 2 * f + 3:
        raise PrivacyParameterError(f"multi_krum needs n >= 2f + 3 = {2 * f + 3}, got n={n}")
    if n < 2 * f + 1:
        raise PrivacyParameterError(f"n must be >= 2f + 1 = {2 * f + 1}, got n={n} (f={f})")
    if sketch_dim is not None:
        sketch_dim = _int(sketch_dim, "sketch_dim", 2)
    warnings: list[str] = []
    if placement == "distributed":
        warnings.append(
            "distributed noise is accounted under replace-one (sensitivity 2C, the client in "
            "both neighbouring datasets with its own share), not add/remove like the central "
            f"mechanism, and assumes n - f = {n - f} honest shares in every round (dp/NOTES.md)"
        )

    # -- the honest model ---------------------------------------------------------------------
    assumed = honest_spread is None
    if honest_mean_norm is not None:
        honest_mean_norm = _pos(honest_mean_norm, "honest_mean_norm")
    if honest_spread is None:
        mean2 = clip * clip / 2 if honest_mean_norm is None else honest_mean_norm**2
        s = math.sqrt(max(clip * clip - mean2, 1e-6 * clip * clip) / dim)
        m = math.sqrt(mean2)
        warnings.append(
            "honest spread not given: assumed honest updates of norm ~C with "
            f"s = {s:.3g} per coordinate and ||mean|| = {m:.3g} (measure it: "
            "dp.estimate_honest_model)"
        )
    else:
        s = _pos(honest_spread, "honest_spread")
        m = (
            math.sqrt(max(clip * clip - dim * s * s, 0.0))
            if honest_mean_norm is None
            else honest_mean_norm
        )
    if math.sqrt(dim * s * s + m * m) > clip * 1.05:
        warnings.append(
            f"honest updates of norm ~{math.sqrt(dim * s * s + m * m):.3g} exceed the clip "
            f"norm {clip:g}: clipping will shrink them (not modelled)"
        )

    # -- privacy (in a thread) and detection (meanwhile) -------------------------------------
    # The accountant (pure Python, plus importing dp-accounting on a cold start) runs in a
    # background thread while the detection Monte Carlo (numpy, which releases the GIL) runs
    # here; the two do not depend on each other (rho* is in normalised units).
    shares = n - f
    privacy = _Background(
        _privacy, mechanism, placement, epsilon, delta, rounds, q, clip, dim, shares, bits
    )
    d_eff = min(sketch_dim, dim) if sketch_dim else dim
    sketch = sketch_dim is not None
    nb_eps = _sketch_epsilon(d_eff, fpr) if sketch else 0.0
    bound = clip * (1 + nb_eps)
    h = n - f
    # rho* is in units of sqrt(d) s_eff, so one number serves with and without the noise
    if defence == "multi_krum":
        rho = _krum_margin(n, f, d_eff, sketch, power)
    else:
        tau2, rho2 = _centre_margin(h, d_eff, sketch, fpr, power)
        rho = math.sqrt(rho2)
    z, sigma, client_sigma, scale, eps_achieved = privacy.result()

    noisy = placement in ("local", "before_filter")
    s_eff = math.sqrt(s * s + client_sigma**2) if noisy else s
    reads = {
        "central": "noise-free",
        "distributed": "noise-free",
        "local": "locally noised",
        "before_filter": "noised",
    }[placement]
    reads += " sketches" if sketch_dim else " updates"
    threshold = None if defence == "multi_krum" else math.sqrt(tau2 * dim) * s_eff
    fp_rate = f / n if defence == "multi_krum" else fpr
    margins = {a: _margin(a, rho, s_eff, s, m, dim, h, bound, noisy) for a in ATTACKS}

    refused = None
    if attack is not None:
        mg = margins[attack]
        if not mg.reachable and mg.reachable_without_noise:
            refused = (
                f"the {placement} noise hides {attack}: with the filter reading {reads} "
                f"(spread {s_eff:.3g} per coordinate instead of {s:.3g}), {defence} catches "
                f"{attack} only beyond a deviation of norm {mg.deviation_norm:.3g}, more than "
                f"any update within the norm bound {bound:.3g} can carry; noise-free it would "
                f"catch it from {rho * math.sqrt(dim) * s:.3g}. Use central or distributed "
                "placement (the filter then reads noise-free statistics)"
            )
            if not override:
                raise DetectionRefusedError(refused)
            warnings.append("OVERRIDDEN: " + refused)
        elif not mg.reachable:
            warnings.append(
                f"{defence} does not catch {attack} within the norm bound {bound:.3g} even "
                f"without DP noise ({mg.note}); this is the defence's limit, not the noise's"
            )
    return Calibration(
        epsilon_target=epsilon,
        delta=delta,
        rounds=rounds,
        sampling_rate=q,
        clip_norm=clip,
        dim=dim,
        n=n,
        f=f,
        defence=defence,
        mechanism=mechanism,
        placement=placement,
        noise_multiplier=z,
        sigma=sigma,
        client_sigma=client_sigma,
        scale=scale,
        bits=bits if mechanism != "gaussian" else None,
        epsilon=eps_achieved,
        filter_reads=reads,
        honest_spread=s,
        honest_mean_norm=m,
        spread_assumed=assumed,
        effective_spread=s_eff,
        effective_dim=d_eff,
        sketch_dim=sketch_dim,
        norm_bound=bound,
        threshold=threshold,
        false_positive_rate=fp_rate,
        power=power,
        margins=margins,
        attack=attack,
        refused=refused,
        warnings=tuple(warnings),
    )


def _margin(
    attack: str,
    rho: float,
    s_eff: float,
    s: float,
    m: float,
    dim: int,
    h: int,
    bound: float,
    noisy: bool,
) -> DetectionMargin:
    """Translate the deviation margin into the attack's own parameter (module docstring)."""
    root_d = math.sqrt(dim)

    def parts(r: float, spread: float) -> dict[str, Any]:
        dev = r * root_d * spread
        mhat = math.sqrt(m * m + dim * spread * spread / h)
        if attack == "scaling":
            up, down = 1 + dev / mhat, 1 - dev / mhat
            return dict(
                factor_up=up,
                factor_down=down,
                reachable=bool(down * mhat >= -bound or up * mhat <= bound),
            )
        if attack == "sign_flip":
            need = root_d * spread * math.sqrt(max(r * r / 4 - 1 / h, 0.0))
            return dict(min_mean_norm=need, caught=bool(m >= need), reachable=bool(m >= need))
        return dict(z=r, reachable=bool(mhat * mhat + dev * dev <= bound * bound))

    now = parts(rho, s_eff)
    clean = parts(rho, s) if noisy else now
    dev = rho * root_d * s_eff
    if math.isinf(rho):
        note = "never caught within the model's range"
    elif attack == "scaling":
        note = f"caught for factor >= {now['factor_up']:.3g} or <= {now['factor_down']:.3g}"
    elif attack == "sign_flip":
        note = f"caught when the honest mean norm >= {now['min_mean_norm']:.3g} (it is {m:.3g})"
    else:
        note = f"caught for z >= {now['z']:.3g}"
    return DetectionMargin(
        attack=attack,
        deviation=rho,
        deviation_norm=dev,
        reachable_without_noise=clean["reachable"],
        note=note,
        **now,
    )


def estimate_honest_model(updates: np.ndarray) -> tuple[float, float]:
    """``(honest_spread, honest_mean_norm)`` measured on an ``(h, d)`` array of honest updates
    (``h >= 2``): ``s^2`` is the mean squared distance to the sample mean over ``(h - 1) d``,
    and ``||m||^2 = ||mean||^2 - d s^2 / h`` (unbiased under the model; clamped at 0).

    Raises:
        PrivacyParameterError: not a finite 2-D array with at least two rows.
    """
    x = np.asarray(updates, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or not np.all(np.isfinite(x)):
        raise PrivacyParameterError("updates must be a finite (h, d) array with h >= 2")
    h, d = x.shape
    mean = x.mean(axis=0)
    s2 = float(((x - mean) ** 2).sum()) / ((h - 1) * d)
    m2 = max(float(mean @ mean) - d * s2 / h, 0.0)
    return math.sqrt(s2), math.sqrt(m2)
