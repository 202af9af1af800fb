"""Client-level privacy accounting across rounds, through Google's ``dp-accounting``.

Why ``dp-accounting`` (and not Opacus' accountants)
---------------------------------------------------
The server and the key holder import :mod:`dp` without torch, and Opacus' accountants import
torch. ``dp-accounting`` (Google; RDP and PLD accountants, numpy/scipy only) is maintained,
torch-free and covers Poisson-subsampled Gaussian composition exactly as Opacus does; the tests
cross-check our epsilon against Opacus' ``RDPAccountant``.

Unit of privacy and neighbouring relation
-----------------------------------------
One *event* is one round: the server samples each client independently with probability
``sampling_rate`` (Poisson sampling), each sampled client contributes one clipped update, and
noise is added to the sum. Neighbouring datasets differ by adding or removing **one client**
(client-level DP, ``ADD_OR_REMOVE_ONE``). A noise multiplier ``z`` means noise standard
deviation ``z * C`` on a sum of updates clipped to L2 norm ``C``.

What is computed by whom
------------------------
* Gaussian events (central noise, adaptive clipping's noised count) are composed by
  ``dp_accounting.rdp.RdpAccountant`` (default) or ``dp_accounting.pld.PLDAccountant``;
  fortis does no RDP arithmetic for them. With only Gaussian events, :meth:`Accountant.epsilon`
  *is* the library's number (tested for equality).
* The distributed discrete Gaussian and Skellam mechanisms are not in any accounting library.
  Their per-round RDP curves are the published bounds (:func:`ddg_rdp`: Kairouz, Liu & Steinke
  2021, Prop. 14 / Thm. 1; :func:`skellam_rdp`: Agarwal, Kairouz & Liu 2021, Thm. 3.5), applied
  to the difference of two clients' rounded updates, amplified by Poisson sampling with the
  joint-convexity bound (:func:`same_noise_sampled_rdp`). These curves are added to the
  library's RDP vector and converted to (epsilon, delta) by the library's ``compute_epsilon``.

Distributed noise is NOT accounted under add/remove
---------------------------------------------------
Each client of a distributed mechanism adds its own noise share, so removing a client also
removes a share: the two neighbouring outputs differ in noise *variance*, not only by a shift,
and for (near-)Gaussian noise in ``d`` coordinates the Renyi divergence grows like
``d alpha / (4 m^2)`` for ``m`` other shares and is infinite from order ``m + 1`` on
(:func:`gaussian_renyi_divergence`; ~6 per round at order 2 for ``d = 10^5``, ``m = 90``,
whatever the noise level). The distributed events are therefore accounted for neighbouring
datasets in which the protected client is present in both, with its sampling, its share and
only its data changed (``adjacency``): ``"replace_one"`` (default; its update replaced by any
other, sensitivity ``2 Delta``) or ``"zero_out"`` (replaced by the zero update, sensitivity
``Delta``; dp-accounting's ``REPLACE_SPECIAL``, Kairouz et al. 2021, arXiv:2103.00039,
Def. 1.1). See ``dp/NOTES.md``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from dp.errors import (
    AccountantStateError,
    CalibrationError,
    PrivacyParameterError,
    UnsupportedMechanismError,
)

__all__ = [
    "Accountant",
    "DistributedDiscreteGaussianEvent",
    "GaussianEvent",
    "PrivacySpent",
    "SkellamEvent",
    "ddg_rdp",
    "ddg_tau",
    "default_orders",
    "event_epsilon",
    "event_from_dict",
    "event_to_dict",
    "gaussian_renyi_divergence",
    "noise_multiplier_for",
    "same_noise_sampled_rdp",
    "skellam_rdp",
    "smallest_meeting",
    "subsampled_rdp",
]

METHODS = ("rdp", "pld")
#: Neighbouring relations of the distributed events (module docstring): the protected client
#: is in both datasets and keeps its sampling and its noise share; its update is replaced by
#: any other (``replace_one``) or by the zero update (``zero_out``).
ADJACENCIES = ("replace_one", "zero_out")
STATE_VERSION = 1


class _QuietAbsl:
    """Silence dp_accounting's absl warnings (orders dropped for tiny multipliers) while we
    probe many candidate noise levels; the library already excludes those orders."""

    def __enter__(self):
        self._logger = logging.getLogger("absl")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self._logger.setLevel(self._level)


_IMPORT_LOCK = threading.RLock()
_LIGHT_IMPORTER: list[int] = []  # the thread running _rdp()'s partial import, if any
_RDP_MODULE: list = []  # rdp_privacy_accountant once fully imported


def _rdp():
    """``dp_accounting.rdp.rdp_privacy_accountant``, imported without the package's
    ``__init__``.

    ``import dp_accounting`` imports the PLD accountant and ``mechanism_calibration``, which
    pull in scipy.signal, scipy.stats and scipy.optimize (~0.8 s of the calibrator's cold start,
    ``python -X importtime``); the RDP accountant needs only ``dp_event``,
    ``privacy_accountant`` and scipy.special (~0.2 s). So when the package is not imported yet,
    its module object is created from its spec *without* executing ``__init__`` and the RDP
    submodules are imported into it. A module ``__getattr__`` (PEP 562) runs the real
    ``__init__`` in that same module object on first use of anything it lacks
    (:func:`_finish_package`), so any later ``import dp_accounting`` -- ours for the PLD
    accountant, or anyone's -- gets the complete package, with the same submodules and classes.
    """
    if _RDP_MODULE:  # not sys.modules: another thread may be initialising the module there
        return _RDP_MODULE[0]
    with _IMPORT_LOCK:
        if "dp_accounting" not in sys.modules:
            spec = importlib.util.find_spec("dp_accounting")
            if spec is None or spec.loader is None or spec.submodule_search_locations is None:
                raise ImportError("dp-accounting is not installed")  # pragma: no cover
            pkg = importlib.util.module_from_spec(spec)
            pkg.__dict__["__getattr__"] = functools.partial(_package_getattr, pkg)
            sys.modules["dp_accounting"] = pkg
        _LIGHT_IMPORTER.append(threading.get_ident())
        try:
            from dp_accounting.rdp import rdp_privacy_accountant
        finally:
            _LIGHT_IMPORTER.pop()
        _RDP_MODULE[:] = [rdp_privacy_accountant]
    return rdp_privacy_accountant


def _package_getattr(pkg, name: str):
    if _LIGHT_IMPORTER and _LIGHT_IMPORTER[-1] == threading.get_ident():
        # _rdp()'s own import asks for a submodule not loaded yet: let the import system load it
        raise AttributeError(name)
    _finish_package(pkg)
    return getattr(pkg, name)


def _finish_package(pkg) -> None:
    """Run ``dp_accounting/__init__.py`` in the partial package of :func:`_rdp` (once)."""
    with _IMPORT_LOCK:
        hook = pkg.__dict__.pop("__getattr__", None)
        if hook is None:
            return
        try:
            pkg.__spec__.loader.exec_module(pkg)
        except BaseException:
            pkg.__dict__["__getattr__"] = hook
            raise


def _dpa():
    """The complete ``dp_accounting`` package (the PLD accountant needs it)."""
    _rdp()
    import dp_accounting

    _finish_package(dp_accounting)
    return dp_accounting


def default_orders() -> np.ndarray:
    """The RDP orders of ``dp_accounting.rdp.RdpAccountant`` (1.1 ... 1024)."""
    return np.asarray(_rdp().DEFAULT_RDP_ORDERS, dtype=np.float64)


def _check_rate(q: float) -> float:
    if not (isinstance(q, int | float) and math.isfinite(q) and 0 < q <= 1):
        raise PrivacyParameterError(f"sampling_rate must be in (0, 1], got {q!r}")
    return float(q)


def _check_pos(x: float, name: str) -> float:
    if not (isinstance(x, int | float) and math.isfinite(x) and x > 0):
        raise PrivacyParameterError(f"{name} must be finite and > 0, got {x!r}")
    return float(x)


def _check_count(c: int) -> int:
    if not (isinstance(c, int) and not isinstance(c, bool) and c >= 1):
        raise PrivacyParameterError(f"count must be an int >= 1, got {c!r}")
    return c


def _check_adjacency(adjacency: str) -> str:
    if adjacency not in ADJACENCIES:
        raise PrivacyParameterError(
            f"adjacency must be one of {', '.join(ADJACENCIES)}, got {adjacency!r} (add/remove "
            "is not accountable for distributed noise: see dp/NOTES.md)"
        )
    return adjacency


def _shift_factor(adjacency: str) -> float:
    """How many one-update sensitivities the shift between neighbouring updates spans."""
    return 2.0 if adjacency == "replace_one" else 1.0


def _check_delta(delta: float) -> float:
    if not (isinstance(delta, int | float) and math.isfinite(delta) and 0 < delta < 1):
        raise PrivacyParameterError(f"delta must be in (0, 1), got {delta!r}")
    return float(delta)


# ---------------------------------------------------------------------------------------------
# RDP curves of the discrete mechanisms (integer domain) and general Poisson amplification
# ---------------------------------------------------------------------------------------------
def ddg_tau(local_sigma: float, n_clients: int) -> float:
    """KLS21 Theorem 1's tau: ``10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1))``, the
    price of the sum of ``n`` discrete Gaussians not being a discrete Gaussian."""
    s2 = local_sigma * local_sigma
    return 10.0 * math.fsum(
        math.exp(-2.0 * math.pi**2 * s2 * k / (k + 1)) for k in range(1, n_clients)
    )


def ddg_rdp(
    orders: np.ndarray,
    *,
    l2_sensitivity: float,
    l1_sensitivity: float,
    local_sigma: float,
    n_clients: int,
    dim: int,
) -> np.ndarray:
    """Per-round RDP of the distributed discrete Gaussian without sampling (KLS21, Prop. 14 with
    Thm. 1): ``n`` clients each add ``N_Z(0, local_sigma^2)`` to integer vectors of L2 norm
    ``<= l2_sensitivity`` and L1 norm ``<= l1_sensitivity``, in ``dim`` coordinates. With
    ``a = l2/(sqrt(n) sigma)``, ``b = l1/(sqrt(n) sigma)``::

        eps(alpha) = min(alpha a^2/2 + tau d,  alpha/2 (a^2 + 2 b tau + tau^2 d),
                         alpha/2 (a + sqrt(d) tau)^2)
    """
    alpha = np.asarray(orders, dtype=np.float64)
    tau = ddg_tau(local_sigma, n_clients)
    sd = math.sqrt(n_clients) * local_sigma
    a, b = l2_sensitivity / sd, l1_sensitivity / sd
    t1 = alpha * a * a / 2 + tau * dim
    t2 = alpha / 2 * (a * a + 2 * b * tau + tau * tau * dim)
    t3 = alpha / 2 * (a + math.sqrt(dim) * tau) ** 2
    return np.minimum(np.minimum(t1, t2), t3)


def skellam_rdp(
    orders: np.ndarray, *, l2_sensitivity: float, l1_sensitivity: float, total_variance: float
) -> np.ndarray:
    """Per-round RDP of the (distributed) Skellam mechanism without sampling (AKL21, Thm. 3.5):
    integer vectors of L2/L1 norms ``<= l2, l1`` plus symmetric Skellam noise of total variance
    ``mu`` per coordinate (the sum of the clients' shares is again Skellam)::

        eps(alpha) = alpha l2^2 / (2 mu) + min(((2 alpha - 1) l2^2 + 6 l1) / (4 mu^2),
                                               3 l1 / (2 mu))
    """
    alpha = np.asarray(orders, dtype=np.float64)
    mu, l2, l1 = total_variance, l2_sensitivity, l1_sensitivity
    return alpha * l2 * l2 / (2 * mu) + np.minimum(
        ((2 * alpha - 1) * l2 * l2 + 6 * l1) / (4 * mu * mu), 3 * l1 / (2 * mu)
    )


def gaussian_renyi_divergence(
    alpha: float, *, shift_sq: float, var_p: float, var_q: float, dim: int = 1
) -> float:
    """``D_alpha(N(mu_1, var_p I_d) || N(mu_2, var_q I_d))`` with ``||mu_1 - mu_2||^2 =
    shift_sq``, in closed form (Gil, Alajaji & Linder 2013, "Renyi divergence measures for
    commonly used univariate continuous distributions", Inf. Sci. 249; the ``d`` independent
    coordinates add up)::

        s_a^2 = alpha var_q + (1 - alpha) var_p      (infinite if s_a^2 <= 0)
        D = d [ln(s_q / s_p) + ln(var_q / s_a^2) / (2 (alpha - 1))] + alpha shift_sq / (2 s_a^2)

    fortis uses it to show what the accountant does *not* cover: a client adding its own noise
    share under add/remove makes ``var_p != var_q``, and the first term then scales with ``d``
    (``dp/NOTES.md``).
    """
    a = float(alpha)
    if not a > 1:
        raise PrivacyParameterError(f"alpha must be > 1, got {alpha!r}")
    sa2 = a * var_q + (1 - a) * var_p
    if sa2 <= 0:
        return math.inf
    per_coord = 0.5 * math.log(var_q / var_p) + math.log(var_q / sa2) / (2 * (a - 1))
    return dim * per_coord + a * shift_sq / (2 * sa2)


def same_noise_sampled_rdp(
    orders: np.ndarray, sampling_rate: float, base: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """RDP of one round of a distributed mechanism whose protected client is Poisson-sampled
    at rate ``q`` in *both* neighbouring datasets (``replace_one`` / ``zero_out``)::

        eps_q(alpha) = log(1 - q + q exp((alpha - 1) eps(ceil(alpha)))) / (alpha - 1)

    Why: given everything else, the outputs are ``P = (1-q) A + q B_x`` and ``Q = (1-q) A +
    q B_x'``, where ``A`` is the round without the client and ``B_x`` with it (its update
    ``x`` and its share). ``exp((alpha-1) D_alpha(P||Q)) = int p^alpha q^(1-alpha)`` is jointly
    convex in ``(P, Q)`` for ``alpha > 1`` (``q (p/q)^alpha`` is the perspective of the convex
    ``t^alpha``: an f-divergence plus 1; Liese & Vajda 2006, IEEE Trans. IT 52(10)), so it is at
    most ``(1-q) + q exp((alpha-1) D_alpha(B_x || B_x'))``, and ``B_x``, ``B_x'`` carry the same
    noise shares -- ``base`` is their shift-only curve. ``A`` and ``B`` need not be comparable,
    which is what makes the bound valid with the client's own share (unlike
    :func:`subsampled_rdp`, whose add/remove model has ``A`` equal to the noise of ``B``). The
    base curve is taken at ``ceil(alpha)`` (Renyi divergence is non-decreasing in the order).
    The amplification is weaker than a sampled Gaussian's (``~q eps`` instead of ``~q^2``), and
    holds only against an observer who does not know whether the client took part.
    """
    q = _check_rate(sampling_rate)
    alpha = np.asarray(orders, dtype=np.float64)
    eps = np.asarray(base(np.ceil(alpha)), dtype=np.float64)
    if q == 1.0:
        return eps
    with np.errstate(over="ignore"):
        out = np.logaddexp(math.log1p(-q), math.log(q) + (alpha - 1) * eps) / (alpha - 1)
    return np.minimum(out, eps)


def subsampled_rdp(
    orders: np.ndarray, sampling_rate: float, base: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """RDP of a mechanism run on a Poisson sample with rate ``q`` (Zhu & Wang, ICML 2019,
    Thm. 6, general upper bound for integer orders), capped by the unamplified curve.

    Not used for the distributed events: its add/remove model compares the round with the
    client to the round without it *with the same noise*, which a client adding its own share
    breaks (:func:`same_noise_sampled_rdp`; ``dp/NOTES.md``).

    ``base`` maps integer orders to the mechanism's RDP. A fractional order ``alpha`` uses the
    bound at ``ceil(alpha)`` (Renyi divergence is non-decreasing in the order)::

        (alpha-1) eps_q(alpha) <= log[(1-q)^(alpha-1) (alpha q - q + 1)
             + C(alpha,2) q^2 (1-q)^(alpha-2) e^eps(2)
             + 3 sum_{l=3..alpha} C(alpha,l) q^l (1-q)^(alpha-l) e^((l-1) eps(l))]
    """
    from scipy.special import gammaln, logsumexp

    q = _check_rate(sampling_rate)
    ints = np.maximum(np.ceil(np.asarray(orders, dtype=np.float64)), 2).astype(np.int64)
    top = int(ints.max())
    ell = np.arange(2, top + 1)
    eps = np.asarray(base(ell.astype(np.float64)), dtype=np.float64)  # eps[l - 2]
    unamplified = eps[ints - 2]
    if q == 1.0:
        return unamplified
    lq, l1q = math.log(q), math.log1p(-q)
    out = np.empty(ints.size)
    for i, a in enumerate(ints):
        a = int(a)
        ls = np.arange(2, a + 1)
        logc = gammaln(a + 1) - gammaln(ls + 1) - gammaln(a - ls + 1)
        terms = logc + ls * lq + (a - ls) * l1q + (ls - 1) * eps[ls - 2]
        weights = np.where(ls == 2, 1.0, 3.0)
        head = (a - 1) * l1q + math.log(a * q - q + 1)
        total = logsumexp(np.concatenate(([head], terms)), b=np.concatenate(([1.0], weights)))
        out[i] = total / (a - 1)
    return np.minimum(out, unamplified)


# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GaussianEvent:
    """``count`` rounds of the Poisson-sampled Gaussian mechanism.

    ``noise_multipliers`` lists Gaussian queries answered on the same sampled clients in the same
    round (e.g. ``(z_updates, z_count)`` for adaptive clipping); the library composes them into
    one Gaussian of noise multiplier ``(sum z_i^-2)^-1/2``.
    """

    noise_multipliers: tuple[float, ...]
    sampling_rate: float
    count: int = 1
    kind: str = field(default="gaussian", init=False)

    def __post_init__(self) -> None:
        zs = tuple(float(_check_pos(z, "noise_multiplier")) for z in self.noise_multipliers)
        if not zs:
            raise PrivacyParameterError("a Gaussian event needs at least one noise multiplier")
        object.__setattr__(self, "noise_multipliers", zs)
        _check_rate(self.sampling_rate)
        _check_count(self.count)

    @property
    def effective_noise_multiplier(self) -> float:
        return sum(z**-2 for z in self.noise_multipliers) ** -0.5

    def dp_event(self):
        """The ``dp_accounting`` event for one round."""
        dpe = _rdp().dp_event
        inner = [dpe.GaussianDpEvent(z) for z in self.noise_multipliers]
        ev = inner[0] if len(inner) == 1 else dpe.ComposedDpEvent(inner)
        if self.sampling_rate < 1.0:
            ev = dpe.PoissonSampledDpEvent(self.sampling_rate, ev)
        return ev


@dataclass(frozen=True)
class DistributedDiscreteGaussianEvent:
    """``count`` rounds of the distributed discrete Gaussian (integer-domain parameters; see
    :func:`ddg_rdp`), Poisson-sampled at ``sampling_rate``.

    ``l2_sensitivity``/``l1_sensitivity`` bound *one* client's rounded update; ``n_clients``
    is the number of honest noise shares every round's sum is guaranteed to carry (the
    protected client's included); ``adjacency`` is ``"replace_one"`` (default) or
    ``"zero_out"`` (module docstring)."""

    l2_sensitivity: float
    l1_sensitivity: float
    local_sigma: float
    n_clients: int
    dim: int
    sampling_rate: float
    count: int = 1
    adjacency: str = "replace_one"
    kind: str = field(default="ddg", init=False)

    def __post_init__(self) -> None:
        for name in ("l2_sensitivity", "l1_sensitivity", "local_sigma"):
            _check_pos(getattr(self, name), name)
        for name in ("n_clients", "dim"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise PrivacyParameterError(f"{name} must be an int >= 1")
        _check_rate(self.sampling_rate)
        _check_count(self.count)
        _check_adjacency(self.adjacency)

    def base_rdp(self, orders: np.ndarray) -> np.ndarray:
        """The unsampled curve for a shift between two neighbouring updates: ``l2`` and ``l1``
        bound one rounded update, so the shift is bounded by twice them under
        ``replace_one`` (triangle inequality) and by them under ``zero_out``."""
        k = _shift_factor(self.adjacency)
        return ddg_rdp(
            orders,
            l2_sensitivity=k * self.l2_sensitivity,
            l1_sensitivity=k * self.l1_sensitivity,
            local_sigma=self.local_sigma,
            n_clients=self.n_clients,
            dim=self.dim,
        )

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        """RDP of one round, amplified by sampling (:func:`same_noise_sampled_rdp`)."""
        return same_noise_sampled_rdp(orders, self.sampling_rate, self.base_rdp)


@dataclass(frozen=True)
class SkellamEvent:
    """``count`` rounds of the distributed Skellam mechanism (integer-domain parameters; see
    :func:`skellam_rdp`), Poisson-sampled at ``sampling_rate``; ``total_variance`` is that of
    the honest shares every round's sum is guaranteed to carry, and ``adjacency`` as for
    :class:`DistributedDiscreteGaussianEvent`."""

    l2_sensitivity: float
    l1_sensitivity: float
    total_variance: float
    sampling_rate: float
    count: int = 1
    adjacency: str = "replace_one"
    kind: str = field(default="skellam", init=False)

    def __post_init__(self) -> None:
        for name in ("l2_sensitivity", "l1_sensitivity", "total_variance"):
            _check_pos(getattr(self, name), name)
        _check_rate(self.sampling_rate)
        _check_count(self.count)
        _check_adjacency(self.adjacency)

    def base_rdp(self, orders: np.ndarray) -> np.ndarray:
        """The unsampled curve for a shift between two neighbouring updates (twice the
        one-update bounds under ``replace_one``; see :class:`DistributedDiscreteGaussianEvent`)."""
        k = _shift_factor(self.adjacency)
        return skellam_rdp(
            orders,
            l2_sensitivity=k * self.l2_sensitivity,
            l1_sensitivity=k * self.l1_sensitivity,
            total_variance=self.total_variance,
        )

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        """RDP of one round, amplified by sampling (:func:`same_noise_sampled_rdp`)."""
        return same_noise_sampled_rdp(orders, self.sampling_rate, self.base_rdp)


Event = GaussianEvent | DistributedDiscreteGaussianEvent | SkellamEvent
_KINDS: dict[str, type] = {
    "gaussian": GaussianEvent,
    "ddg": DistributedDiscreteGaussianEvent,
    "skellam": SkellamEvent,
}


def event_to_dict(ev: Event) -> dict:
    """A JSON-able description of an accountant event: ``"kind"`` (``"gaussian"``, ``"ddg"``
    or ``"skellam"``), its parameters (a Gaussian event: ``"noise_multipliers"`` as a list,
    ``"sampling_rate"``) and ``"count"`` -- the format of :meth:`Accountant.to_dict`'s ledger.
    :func:`event_from_dict` rebuilds the event; a distributed event recorded before
    ``"adjacency"`` existed is read as ``"replace_one"`` (its old add/remove epsilon was not
    sound, see ``dp/NOTES.md``)."""
    d = asdict(ev)
    if isinstance(ev, GaussianEvent):
        d["noise_multipliers"] = list(ev.noise_multipliers)
    return d


def event_from_dict(d: object) -> Event:
    """The event described by :func:`event_to_dict`'s output.

    Raises:
        AccountantStateError: ``d`` is not such a description.
    """
    if not isinstance(d, dict) or d.get("kind") not in _KINDS:
        raise AccountantStateError(f"unknown accountant event {d!r}")
    cls = _KINDS[d["kind"]]
    fields = {k: v for k, v in d.items() if k != "kind"}
    if cls is GaussianEvent:
        zs = fields.get("noise_multipliers")
        if not isinstance(zs, list):
            raise AccountantStateError("gaussian event needs a list 'noise_multipliers'")
        fields["noise_multipliers"] = tuple(zs)
    try:
        return cls(**fields)
    except (TypeError, PrivacyParameterError) as exc:
        raise AccountantStateError(f"bad {d['kind']} event {d!r}: {exc}") from exc


def _with_count(ev: Event, count: int) -> Event:
    d = event_to_dict(ev)
    d["count"] = count
    return event_from_dict(d)


# ---------------------------------------------------------------------------------------------
# the accountant
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrivacySpent:
    """The guarantee so far: the composition of all events is (epsilon, delta)-DP at the client
    level (add/remove one client)."""

    epsilon: float
    delta: float
    method: str
    rounds: int


class Accountant:
    """Composes per-round privacy events and reports the (epsilon, delta) spent so far.

    Args:
        delta: the delta at which :meth:`spent` reports epsilon (``0 < delta < 1``).
        method: ``"rdp"`` (default; every mechanism) or ``"pld"`` (privacy loss distributions,
            tighter for the Gaussian; Gaussian events only).
        pld_discretization: value discretisation interval of the PLD accountant (the library's
            default ``1e-4``; its epsilon is a pessimistic estimate at that resolution).

    Raises:
        PrivacyParameterError: a parameter out of range.

    Guarantees: the ledger is the list of events composed so far (consecutive identical events
    are merged into one with a larger ``count``); epsilon is recomputed from the whole ledger by
    the library on every query, so a restored accountant (:meth:`from_dict`) reports exactly
    what the original did.
    """

    def __init__(self, delta: float, method: str = "rdp", pld_discretization: float = 1e-4):
        if method not in METHODS:
            raise PrivacyParameterError(f"method must be one of {METHODS}, got {method!r}")
        self.delta = _check_delta(delta)
        self.method = method
        self.pld_discretization = _check_pos(pld_discretization, "pld_discretization")
        self._events: list[Event] = []

    # -- composing ------------------------------------------------------------------------
    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._events)

    @property
    def rounds(self) -> int:
        return sum(ev.count for ev in self._events)

    def compose(self, event: Event) -> None:
        """Add ``event`` (``event.count`` rounds) to the ledger.

        Raises:
            UnsupportedMechanismError: a discrete-mechanism event on a PLD accountant.
        """
        if not isinstance(event, GaussianEvent | DistributedDiscreteGaussianEvent | SkellamEvent):
            raise PrivacyParameterError(f"not an accountant event: {event!r}")
        if self.method == "pld" and not isinstance(event, GaussianEvent):
            raise UnsupportedMechanismError(
                f"the PLD accountant cannot account for a {event.kind!r} event (its privacy is "
                "known only as an RDP curve); use Accountant(method='rdp')"
            )
        if self._events:
            last = self._events[-1]
            if _with_count(last, 1) == _with_count(event, 1):
                self._events[-1] = _with_count(last, last.count + event.count)
                return
        self._events.append(event)

    def compose_gaussian(
        self, noise_multiplier: float | Sequence[float], sampling_rate: float = 1.0, count: int = 1
    ) -> None:
        """Add ``count`` rounds of the Poisson-sampled Gaussian mechanism (one multiplier, or
        several Gaussian queries on the same sample, e.g. ``AdaptiveClipper.noise_multipliers``)."""
        zs = (noise_multiplier,) if isinstance(noise_multiplier, int | float) else noise_multiplier
        self.compose(GaussianEvent(tuple(zs), sampling_rate, count))

    # -- reporting ------------------------------------------------------------------------
    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon of the composition of all events at ``delta`` (default: ``self.delta``)."""
        delta = self.delta if delta is None else _check_delta(delta)
        if not self._events:
            return 0.0
        with _QuietAbsl():
            return self._epsilon(delta)

    def _epsilon(self, delta: float) -> float:
        if self.method == "pld":
            return float(self._pld().get_epsilon(delta))
        rpa = _rdp()
        acc = self._rdp_gaussian()
        discrete = [ev for ev in self._events if not isinstance(ev, GaussianEvent)]
        if not discrete:
            return float(acc.get_epsilon(delta))
        orders = acc.orders
        total = acc.rdp
        for ev in discrete:
            total = total + ev.count * ev.rdp(orders)
        return float(rpa.compute_epsilon(orders, total, delta)[0])

    def spent(self) -> PrivacySpent:
        """(epsilon, delta) spent so far at the accountant's ``delta``."""
        return PrivacySpent(self.epsilon(), self.delta, self.method, self.rounds)

    def _rdp_gaussian(self):
        acc = _rdp().RdpAccountant()
        for ev in self._events:
            if isinstance(ev, GaussianEvent):
                acc.compose(ev.dp_event(), ev.count)
        return acc

    def _pld(self):
        dpa = _dpa()
        acc = dpa.pld.PLDAccountant(value_discretization_interval=self.pld_discretization)
        for ev in self._events:
            acc.compose(ev.dp_event(), ev.count)
        return acc

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-able description of the accountant (method, delta and the ledger)."""
        return {
            "version": STATE_VERSION,
            "method": self.method,
            "delta": self.delta,
            "pld_discretization": self.pld_discretization,
            "events": [event_to_dict(ev) for ev in self._events],
        }

    @classmethod
    def from_dict(cls, state: object) -> Accountant:
        """Rebuild an accountant from :meth:`to_dict`'s output.

        Raises:
            AccountantStateError: the state is malformed.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise AccountantStateError(f"not an accountant state of version {STATE_VERSION}")
        events = state.get("events")
        if not isinstance(events, list):
            raise AccountantStateError("accountant state needs a list 'events'")
        try:
            acc = cls(state["delta"], state["method"], state.get("pld_discretization", 1e-4))
        except (KeyError, PrivacyParameterError) as exc:
            raise AccountantStateError(f"bad accountant state: {exc}") from exc
        for d in events:
            acc.compose(event_from_dict(d))
        return acc


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def event_epsilon(event: Event, delta: float, method: str = "rdp") -> float:
    """Epsilon at ``delta`` of an accountant holding only ``event`` (cached: calibration asks
    again for the epsilon of the noise it settled on, and one RDP evaluation of a sampled
    Gaussian costs ~0.1 s, mostly its fractional orders)."""
    acc = Accountant(delta, method)
    acc.compose(event)
    return acc.epsilon()


def smallest_meeting(
    epsilon_of: Callable[[float], float],
    target_epsilon: float,
    *,
    lo: float = 0.1,
    hi: float = 1.0,
    rel_tol: float = 0.01,
    limits: tuple[float, float] = (1e-4, 1e6),
    what: str = "noise parameter",
) -> float:
    """The smallest ``x`` (up to a factor ``1 + rel_tol``) with ``epsilon_of(x) <= target``,
    for an ``epsilon_of`` that is non-increasing in ``x``.

    Guarantee: the returned ``x`` meets the target, and ``x / (1 + rel_tol)`` does not (or is
    below ``limits[0]``), so ``x <= (1 + rel_tol) * x_min``.

    Raises:
        CalibrationError: not even ``limits[1]`` meets the target.
    """
    _check_pos(target_epsilon, "target_epsilon")
    seen: dict[float, float] = {}

    def eps(x: float) -> float:
        if x not in seen:
            seen[x] = float(epsilon_of(x))
        return seen[x]

    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 4
        if hi > limits[1]:
            raise CalibrationError(
                f"no {what} <= {limits[1]:g} reaches epsilon <= {target_epsilon:g}"
            )
    while lo > limits[0] and eps(lo) <= target_epsilon:
        hi, lo = lo, lo / 4
    if lo <= limits[0] and eps(lo) <= target_epsilon:
        return lo
    # Invariant: eps(lo) > target >= eps(hi). Each step interpolates log(eps) linearly in
    # log(x) and probes just above and below the estimate, which usually closes the bracket
    # to 1 + rel_tol in one or two steps (a geometric midpoint when interpolation is useless).
    half = math.sqrt(1 + rel_tol)
    while hi / lo > 1 + rel_tol:
        f_lo = math.log(eps(lo) / target_epsilon) if math.isfinite(eps(lo)) else math.inf
        f_hi = math.log(max(eps(hi), 1e-300) / target_epsilon)
        if math.isfinite(f_lo) and f_lo > f_hi:
            w = f_lo / (f_lo - f_hi)
            guess = math.exp(math.log(lo) + w * (math.log(hi) - math.log(lo)))
        else:
            guess = math.sqrt(lo * hi)
        probes = [guess * half, guess / half]
        moved = False
        for x in probes:
            if lo * (1 + 1e-12) < x < hi * (1 - 1e-12):
                moved = True
                if eps(x) <= target_epsilon:
                    hi = x
                else:
                    lo = x
        if not moved:  # the estimate sits at an end: fall back to bisection
            mid = math.sqrt(lo * hi)
            if eps(mid) <= target_epsilon:
                hi = mid
            else:
                lo = mid
    return hi


def noise_multiplier_for(
    target_epsilon: float,
    delta: float,
    rounds: int,
    sampling_rate: float,
    *,
    method: str = "rdp",
    rel_tol: float = 0.01,
) -> float:
    """The smallest Gaussian noise multiplier whose ``rounds``-fold Poisson-sampled composition
    is ``(target_epsilon, delta)``-DP, up to a factor ``1 + rel_tol`` (default 1%).

    Guarantee: the returned ``z`` meets the target (:meth:`Accountant.epsilon` ``<= target``)
    and ``z / (1 + rel_tol)`` does not, so ``z`` overshoots the minimum by at most ``rel_tol``.

    Raises:
        PrivacyParameterError: a parameter out of range.
        CalibrationError: the target is unreachable with ``z <= 1e6``.
    """
    _check_count(rounds)
    _check_rate(sampling_rate)
    if not (0 < rel_tol <= 0.05):
        raise PrivacyParameterError(f"rel_tol must be in (0, 0.05], got {rel_tol}")

    def eps(z: float) -> float:
        return event_epsilon(GaussianEvent((z,), sampling_rate, rounds), delta, method)

    return smallest_meeting(eps, target_epsilon, rel_tol=rel_tol, what="noise multiplier")
