"""Model-poisoning attacks with closed-form crafted vectors.

Each class documents its formula in terms of the attacker's *view* (see
:mod:`simulations.attacks.base`): with omniscient knowledge the view is the honest updates of
the round, with limited knowledge the Byzantine clients' own honest updates (pooled when they
collude, a single row when they do not). ``mean`` and ``std`` below are the view's coordinate-wise
mean and sample standard deviation.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from .base import (
    AttackContext,
    AttackInputError,
    PerViewAttack,
    View,
    check_choice,
    check_int,
    check_real,
    validate_context,
)

__all__ = [
    "ALIEAttack",
    "GaussianAttack",
    "IPMAttack",
    "InfAttack",
    "MimicAttack",
    "NaNAttack",
    "NoAttack",
    "ScalingAttack",
    "SignFlipAttack",
    "alie_z_max",
]


class NoAttack(PerViewAttack):
    """No attack: the Byzantine clients send the updates they computed honestly.

    Works for ``f = 0`` too (returns an empty ``(0, d)`` array).
    """

    name = "none"

    def craft(self, ctx: AttackContext) -> np.ndarray:
        validate_context(ctx, self.name, need_byzantine=False)
        self.last_info = {}
        return ctx.byzantine_updates.copy()

    def _craft_vector(self, view: View, ctx: AttackContext, rng: np.random.Generator) -> np.ndarray:
        return view.mean  # pragma: no cover - craft() never calls it


class _MeanMultipleAttack(PerViewAttack):
    """``coefficient * mean(view)``: shared by sign flip, scaling and IPM."""

    _param: ClassVar[str]

    def _craft_vector(self, view: View, ctx: AttackContext, rng: np.random.Generator) -> np.ndarray:
        self.last_info = {self._param: float(getattr(self, self._param))}
        return self._coefficient() * view.mean

    def _coefficient(self) -> float:
        return float(getattr(self, self._param))

    def params(self) -> dict[str, Any]:
        return {self._param: getattr(self, self._param)}


class SignFlipAttack(_MeanMultipleAttack):
    """Sign flip: send ``scale * mean(view)`` with ``scale = -1`` by default.

    Omniscient: the negated honest mean. Limited and independent: each attacker negates its own
    update (the classic "send -g" sign-flipping fault).
    """

    name = "sign_flip"
    tunable = ("scale",)
    _param = "scale"

    def __init__(self, scale: float = -1.0) -> None:
        super().__init__()
        self.scale = check_real(self.name, "scale", scale)


class ScalingAttack(_MeanMultipleAttack):
    """Scaling / boosting: send ``factor * mean(view)``, default ``factor = -20``.

    A large negative multiple of the honest direction; it collapses plain averaging (the issue
    measured 8 % accuracy on digits) and is easy prey for any robust rule, which makes it a good
    "does the defence work at all" check.
    """

    name = "scaling"
    tunable = ("factor",)
    _param = "factor"

    def __init__(self, factor: float = -20.0) -> None:
        super().__init__()
        self.factor = check_real(self.name, "factor", factor)


class IPMAttack(_MeanMultipleAttack):
    """Inner-product manipulation (Xie, Koyejo & Gupta, UAI 2020, "Fall of Empires").

    Send ``-eps * mean(view)``. A small ``eps`` (default 0.1, the setting the paper uses
    against the coordinate-wise median and Krum) keeps the Byzantine rows close to the honest
    cloud while making the inner product of the aggregate with the true gradient negative;
    a large ``eps`` (the paper's second setting, e.g. 100, or the issue's ``tau = 2``) targets
    plain averaging. ``eps`` must be >= 0.
    """

    name = "ipm"
    tunable = ("eps",)
    _param = "eps"

    def __init__(self, eps: float = 0.1) -> None:
        super().__init__()
        self.eps = check_real(self.name, "eps", eps, low=0.0)

    def _coefficient(self) -> float:
        return -self.eps


class GaussianAttack(PerViewAttack):
    """Gaussian noise: send ``N(0, sigma^2 I)`` rows (zero-centred, independent of the updates).

    ``sigma`` fixes the noise scale in absolute units. When it is ``None`` (default) the scale
    follows the round: ``sigma = sigma_scale * spread`` with ``sigma_scale = 200`` and
    ``spread`` the root-mean-square of the view's coordinate-wise standard deviation. A view
    with no spread (one row, or identical rows) uses the RMS coordinate of its mean instead, and
    an all-zero view uses 1.0. Colluding attackers send one shared noise vector; independent
    ones each draw their own.
    """

    name = "gaussian"
    randomized = True
    tunable = ("sigma_scale",)

    def __init__(self, sigma: float | None = None, sigma_scale: float = 200.0) -> None:
        super().__init__()
        self.sigma = None if sigma is None else check_real(self.name, "sigma", sigma, low=0.0)
        self.sigma_scale = check_real(self.name, "sigma_scale", sigma_scale, low=0.0)

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "sigma_scale": self.sigma_scale}

    def noise_scale(self, view: View) -> float:
        """The ``sigma`` this attack uses for ``view``."""
        if self.sigma is not None:
            return self.sigma
        spread = float(np.sqrt(np.mean(view.std**2)))
        if spread == 0.0:
            spread = float(np.sqrt(np.mean(view.mean**2)))
        if spread == 0.0:
            spread = 1.0
        return self.sigma_scale * spread

    def _craft_vector(self, view: View, ctx: AttackContext, rng: np.random.Generator) -> np.ndarray:
        sigma = self.noise_scale(view)
        self.last_info = {"sigma": sigma}
        return rng.normal(0.0, sigma, size=view.dim)


ALIE_Z_RULES = ("algorithm", "derivation")


def alie_z_max(n: int, f: int, rule: str = "algorithm") -> float:
    """``z_max`` of "A Little Is Enough" (Baruch, Baruch & Goldberg, NeurIPS 2019).

    The attacker needs ``s = floor(n/2 + 1) - f`` honest "supporters" for a majority, and picks
    the largest ``z`` such that ``Phi(z)`` stays below a fraction:

    * ``rule="algorithm"`` (default): ``Phi(z) = (n - s) / n``, as in Algorithm 1 of the paper.
    * ``rule="derivation"``: ``Phi(z) = (n - f - s) / (n - f)``, counting only the ``n - f``
      honest workers; this is the form used by Karimireddy et al.'s reference code.

    ``Phi`` is the standard normal CDF. Both give small ``z`` (e.g. ``n=20, f=4``: 0.385 and
    0.157). The derivation rule gives ``z <= 0`` when ``f`` is very small relative to ``n``
    (e.g. ``n=10, f=1``); the value is returned as computed.

    Raises:
        AttackInputError: ``n``/``f`` are not integers with ``1 <= f < n``, or ``s <= 0``
            (the Byzantine clients alone are a majority, so ``z_max`` is unbounded), or the
            quantile level is not in ``(0, 1)``.
    """
    for label, value in (("n", n), ("f", f)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise AttackInputError(
                f"alie_z_max: {label} must be an int, got {type(value).__name__}"
            )
    if not 1 <= f < n:
        raise AttackInputError(f"alie_z_max: need 1 <= f < n, got n={n}, f={f}")
    check_choice("alie", "z_rule", rule, ALIE_Z_RULES)
    s = math.floor(n / 2 + 1) - f
    if s <= 0:
        raise AttackInputError(
            f"alie_z_max: n={n}, f={f} gives s = floor(n/2 + 1) - f = {s} supporters; the "
            "Byzantine clients already form a majority and z_max is unbounded; pass z explicitly"
        )
    level = (n - s) / n if rule == "algorithm" else (n - f - s) / (n - f)
    if not 0.0 < level < 1.0:
        raise AttackInputError(
            f"alie_z_max: n={n}, f={f} gives the quantile level {level} outside (0, 1) under "
            f"rule {rule!r}; pass z explicitly"
        )
    return float(NormalDist().inv_cdf(level))


class ALIEAttack(PerViewAttack):
    """A Little Is Enough (Baruch, Baruch & Goldberg, NeurIPS 2019).

    Send ``mean - z * std`` coordinate-wise. ``z`` defaults to :func:`alie_z_max` of the round's
    ``n = ctx.n_clients`` and ``f = ctx.n_byzantine`` (rule ``z_rule``); pass ``z`` to fix it.

    With limited knowledge and a single-row view (``f == 1``, or independent attackers) there is
    no spread estimate: ``std`` is zero, the crafted row equals the attacker's own honest update,
    and ``last_info["degenerate"]`` is ``True``. That is the honest outcome: ALIE has nothing to
    perturb by without a second sample.
    """

    name = "alie"
    tunable = ("z",)

    def __init__(self, z: float | None = None, z_rule: str = "algorithm") -> None:
        super().__init__()
        self.z = None if z is None else check_real(self.name, "z", z)
        self.z_rule = check_choice(self.name, "z_rule", z_rule, ALIE_Z_RULES)

    def params(self) -> dict[str, Any]:
        return {"z": self.z, "z_rule": self.z_rule}

    def effective_z(self, ctx: AttackContext) -> float:
        if self.z is not None:
            return self.z
        return alie_z_max(int(ctx.n_clients), ctx.n_byzantine, self.z_rule)

    def default_strength(self, param: str, ctx: AttackContext) -> float:
        if param == "z":
            return self.effective_z(ctx)
        return super().default_strength(param, ctx)

    def _craft_vector(self, view: View, ctx: AttackContext, rng: np.random.Generator) -> np.ndarray:
        z = self.effective_z(ctx)
        self.last_info = {"z": z, "degenerate": view.rows < 2}
        return view.mean - z * view.std


class MimicAttack(PerViewAttack):
    """Mimic (Karimireddy, He & Jaggi, ICLR 2022, "Byzantine-robust learning on heterogeneous
    datasets via bucketing").

    All Byzantine clients copy one honest client, over-representing its (non-IID) data and
    starving the others; no robust rule can tell the copies from the original.

    * ``target=i``: copy row ``i % rows`` of the view every round.
    * ``target=None`` (default): during the first ``warmup`` rounds the attacker estimates the
      direction ``z`` of maximum variance of the view (top principal component of the centred
      view, averaged over the warm-up rounds with consistent sign, oriented so that
      ``<z, mean> >= 0``) and copies the client with the largest ``<x_i - mean, z>``, the most
      extreme one along that direction. After the warm-up that row index is kept fixed, as in
      the paper; it is re-chosen if the view later has fewer rows.

    The attack is stateful across rounds; call :meth:`reset` to start over. The index refers to
    the row order of the view (``ctx.honest_updates`` when omniscient). With limited knowledge
    the attackers copy one of their own honest updates; a single-row view copies itself.
    """

    name = "mimic"

    def __init__(self, target: int | None = None, warmup: int = 1) -> None:
        super().__init__()
        self.target = None if target is None else check_int(self.name, "target", target, low=0)
        self.warmup = check_int(self.name, "warmup", warmup, low=1)
        self.reset()

    def reset(self) -> None:
        """Forget the warm-up direction and the fixed target."""
        self._direction: np.ndarray | None = None
        self._rounds_seen = 0
        self._fixed: int | None = None

    def params(self) -> dict[str, Any]:
        return {"target": self.target, "warmup": self.warmup}

    def _principal_direction(self, view: View) -> np.ndarray | None:
        centred = view.centred
        gram = centred @ centred.T
        eigvals, eigvecs = np.linalg.eigh(gram)
        if eigvals[-1] <= 0.0:
            return None
        z = centred.T @ eigvecs[:, -1]
        norm = np.linalg.norm(z)
        if norm == 0.0:
            return None
        z /= norm
        if self._direction is not None and self._direction.shape == z.shape:
            if z @ self._direction < 0:
                z = -z
            t = self._rounds_seen
            z = (t * self._direction + z) / (t + 1)
            z /= max(np.linalg.norm(z), np.finfo(np.float64).tiny)
        elif z @ view.mean < 0:
            z = -z
        return z

    def _craft_vector(self, view: View, ctx: AttackContext, rng: np.random.Generator) -> np.ndarray:
        k = view.rows
        if self.target is not None:
            idx, how = self.target % k, "given"
        elif k == 1:
            idx, how = 0, "single-row view"
        elif self._fixed is not None and self._fixed < k:
            idx, how = self._fixed, "fixed after warm-up"
        else:
            z = self._principal_direction(view)
            if z is None:  # identical rows: every choice is the same
                idx = 0
            else:
                self._direction = z
                idx = int(np.argmax(view.centred @ z))
            self._rounds_seen += 1
            how = "warm-up"
            if self._rounds_seen >= self.warmup:
                self._fixed = idx
        self.last_info = {"target": idx, "how": how}
        return view.updates[idx]


class _NonFiniteAttack(PerViewAttack):
    """Rows with non-finite values: a crash fault, or a probe of the defence's input checks.

    ``fraction`` of the coordinates (at least one, chosen at random) are set to the non-finite
    value; the remaining ones hold the view's mean, so a partial row looks plausible elsewhere.
    """

    randomized = True
    _value: ClassVar[float]

    def __init__(self, fraction: float = 1.0) -> None:
        super().__init__()
        self.fraction = check_real(
            self.name, "fraction", fraction, low=0.0, high=1.0, low_open=True
        )

    def params(self) -> dict[str, Any]:
        return {"fraction": self.fraction}

    def _craft_vector(self, view: View, ctx: AttackContext, rng: np.random.Generator) -> np.ndarray:
        d = view.dim
        if self.fraction >= 1.0:
            self.last_info = {"non_finite_coordinates": d}
            return np.full(d, self._value)
        k = max(1, int(round(self.fraction * d)))
        row = view.mean.copy()
        row[rng.choice(d, size=k, replace=False)] = self._value
        self.last_info = {"non_finite_coordinates": k}
        return row


class NaNAttack(_NonFiniteAttack):
    """NaN rows (all coordinates by default; see ``fraction``)."""

    name = "nan"
    _value = float("nan")


class InfAttack(_NonFiniteAttack):
    """``+inf`` rows (all coordinates by default; see ``fraction``)."""

    name = "inf"
    _value = float("inf")
