"""Secure filtering of a round: its public parameters, and the server's filter decision.

A round with secure filtering (DESIGN.md, round steps 4, 5 and 7) adds three parts to the
secure aggregation of :mod:`protocol.server` and :mod:`protocol.client`:

* every client that committed a masked input sends ``Enc(s_i)``, a Paillier encryption (under
  the key holder's key) of the exact integer sketch ``s_i = P·x_i`` of its signed fixed-point
  input, with ``P`` drawn from a seed that hashes every committed masked input;
* the server learns the exact pairwise squared distances of the sketches (and their norms,
  through a public zero row) with the key holder, by the masked distance protocol of
  :mod:`secagg.masked_distance` -- the key holder only decrypts values under uniform masks --,
  enforces the norm bound and runs a distance-based rule of :mod:`robust`; the clients it
  rejects are left out of the sum like dropouts (only their mask keys are unmasked);
* after unmasking it checks ``P·Σ_A x_i == Σ_A s_i`` by a blinded zero test with the key
  holder (:mod:`secagg.zero_test`) and releases the sum only if it holds.

:class:`FilterConfig` holds the public parameters (part of :attr:`RoundConfig.digest`, so
hardened-mode signatures cover them), and :func:`decide` is the filter: the same function
whatever produced the distances, so the secure selection is, by construction, exactly what
``robust.aggregate_detailed(None, rule, distances=D)`` returns for the sketch distances.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np

import robust
from robust.errors import RobustError
from secagg.masked_distance import DEFAULT_SIGMA, DistanceLayouts
from secagg.paillier_public import PaillierPublicKey
from secagg.sketch import MAX_SKETCH_DIM
from secagg.sketch_bounds import fixed_point_norm_bound, norm_bound_epsilon, within_norm_bound

from .errors import ProtocolConfigError

__all__ = [
    "FilterConfig",
    "FilterDecision",
    "SECURE_RULES",
    "decide",
    "check_secure_rule",
]

#: Distance rules that would release a single client's update: the sum of one accepted input
#: is that input, which the privacy contract forbids (S learns only aggregates of >= t).
_SINGLE_SELECTION = {
    "krum": "krum selects a single client, so the 'aggregate' would be that client's update "
    "in the clear; use multi_krum (it averages the m most central clients, m >= t)",
}

#: Rules that run on the sketch distances alone (the secure path); every other rule needs
#: coordinates, or selects a single client, and is refused in secure mode.
SECURE_RULES: tuple[str, ...] = tuple(
    r for r in robust.DISTANCE_RULES if r not in _SINGLE_SELECTION
)


def check_secure_rule(rule: str) -> None:
    """Raise :class:`ProtocolConfigError` unless ``rule`` can run on sketch distances.

    The message says why coordinate-wise rules cannot (the server never sees a coordinate of
    one client's update) and names the rules that work.
    """
    if rule in SECURE_RULES:
        return
    if rule in _SINGLE_SELECTION:
        raise ProtocolConfigError(
            f"rule {rule!r} cannot run under secure aggregation: {_SINGLE_SELECTION[rule]}"
        )
    if rule in robust.RULES:
        raise ProtocolConfigError(
            f"rule {rule!r} needs the clients' coordinates, which the server never sees under "
            "secure aggregation (it holds only encrypted sketches and their pairwise "
            f"distances); secure filtering runs the distance-based rules {list(SECURE_RULES)}. "
            f"Run {rule!r} in plaintext mode (a trusted server or a simulation)."
        )
    raise ProtocolConfigError(
        f"unknown rule {rule!r}; secure filtering runs the distance-based rules "
        f"{list(SECURE_RULES)}"
    )


@dataclass(frozen=True)
class FilterConfig:
    """Public parameters of secure filtering, shared by every party of a round.

    Parameters
    ----------
    key:
        The key holder's Paillier public key; clients encrypt their sketches under it.
    clip_norm:
        ``C``: honest clients' updates have L2 norm ``<= C`` (a client with a longer update
        raises instead of clipping silently). The server rejects a sketch longer than
        ``C·(1+ε)`` in fixed-point units, with ``ε`` from :attr:`false_rejection`.
    rule, f, rule_params:
        The distance-based rule of :mod:`robust` the server runs on the sketch distances
        (one of :data:`SECURE_RULES`), its ``f`` (an int or ``"auto"``) and its other
        parameters (e.g. ``{"m": 5}``).
    sketch_dim:
        ``k``, rows of the ±1 projection. A squared distance is known to a relative error of
        about ``√(2/k)`` (12.5% at k = 128; :mod:`secagg.sketch`).
    false_rejection:
        Probability bound for rejecting an honest update by the norm bound.
    sigma:
        Statistical hiding, in bits, of every value the key holder decrypts.

    Raises :class:`ProtocolConfigError` for a bad value (named), including a rule that needs
    coordinates.
    """

    key: PaillierPublicKey
    clip_norm: float
    rule: str = "multi_krum"
    f: int | str = 0
    rule_params: Mapping[str, Any] = field(default_factory=dict)
    sketch_dim: int = 128
    false_rejection: float = 1e-6
    sigma: int = DEFAULT_SIGMA

    def __post_init__(self) -> None:
        if not isinstance(self.key, PaillierPublicKey):
            raise ProtocolConfigError(
                f"filtering key must be a PaillierPublicKey, got {type(self.key).__name__}"
            )
        c = self.clip_norm
        if isinstance(c, bool) or not isinstance(c, (int, float, np.floating)):
            raise ProtocolConfigError(f"clip_norm must be a number, got {c!r}")
        if not math.isfinite(c) or c <= 0:
            raise ProtocolConfigError(f"clip_norm must be positive and finite, got {c}")
        object.__setattr__(self, "clip_norm", float(c))
        if not isinstance(self.rule, str):
            raise ProtocolConfigError(f"rule must be a rule name, got {self.rule!r}")
        check_secure_rule(self.rule)
        k = self.sketch_dim
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ProtocolConfigError(f"sketch_dim must be an int, got {k!r}")
        if not 1 <= int(k) <= MAX_SKETCH_DIM:
            raise ProtocolConfigError(f"sketch_dim must be in [1, {MAX_SKETCH_DIM}], got {k}")
        object.__setattr__(self, "sketch_dim", int(k))
        fr = self.false_rejection
        if isinstance(fr, bool) or not isinstance(fr, (int, float)) or not 0 < fr < 1:
            raise ProtocolConfigError(f"false_rejection must be in (0, 1), got {fr!r}")
        if (
            isinstance(self.sigma, bool)
            or not isinstance(self.sigma, int)
            or not 32 <= self.sigma <= 1024
        ):
            raise ProtocolConfigError(f"sigma must be an int in [32, 1024], got {self.sigma!r}")
        object.__setattr__(self, "rule_params", dict(self.rule_params))
        try:
            robust.check_pipeline(self.rule, f=self.f, **self.rule_params)
        except RobustError as exc:
            raise ProtocolConfigError(f"filter rule {self.rule!r}: {exc}") from None

    def admits(self, norm: float) -> bool:
        """Whether an update of L2 norm ``norm`` is within ``clip_norm``, up to a relative
        1e-6, so that a vector normalised in floating point (float32: norm ``1 + 1e-7``)
        counts as clipped. :meth:`norm_bound` includes that tolerance."""
        return norm <= self.clip_norm * (1.0 + _NORM_TOLERANCE)

    @cached_property
    def epsilon(self) -> float:
        """``ε`` of the norm bound (:func:`secagg.norm_bound_epsilon`)."""
        return norm_bound_epsilon(self.sketch_dim, self.false_rejection)

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of every parameter in a canonical encoding (part of the round digest)."""
        h = hashlib.sha256(b"fortis/filter-config/v1")
        h.update(self.key.fingerprint())
        h.update(
            struct.pack(">dIdI", self.clip_norm, self.sketch_dim, self.false_rejection, self.sigma)
        )
        for text in (self.rule, str(self.f), repr(sorted(self.rule_params.items()))):
            raw = text.encode()
            h.update(struct.pack(">I", len(raw)) + raw)
        return h.digest()

    def norm_bound(self, scale: float, dim: int) -> float:
        """``C`` (with the tolerance of :meth:`admits`) in fixed-point units, covering the
        stochastic rounding (:func:`secagg.fixed_point_norm_bound`)."""
        return fixed_point_norm_bound(self.clip_norm * (1.0 + _NORM_TOLERANCE), scale, dim)

    def sketch_bound(self, scale: float, dim: int, max_int: int) -> int:
        """``B >= |s_l|`` for every honest sketch: ``|(P·q)_l| <= ‖q‖_1 <= √d·‖q‖``, and at most
        ``d·max|q|``."""
        by_norm = math.ceil(math.sqrt(dim) * self.norm_bound(scale, dim)) + 1
        return int(min(by_norm, dim * int(max_int)))

    def layouts(self, scale: float, dim: int, max_int: int) -> DistanceLayouts:
        """The slot layouts of the round's masked distance protocol."""
        return _layouts(
            self.key, self.sketch_dim, self.sketch_bound(scale, dim, max_int), self.sigma
        )


_NORM_TOLERANCE = 1e-6

_LAYOUT_CACHE: dict[tuple, DistanceLayouts] = {}


def _layouts(key: PaillierPublicKey, k: int, bound: int, sigma: int) -> DistanceLayouts:
    cache_key = (key.fingerprint(), k, bound, sigma)
    lay = _LAYOUT_CACHE.get(cache_key)
    if lay is None:
        if len(_LAYOUT_CACHE) > 32:
            _LAYOUT_CACHE.clear()
        lay = _LAYOUT_CACHE[cache_key] = DistanceLayouts(key, k, bound, sigma)
    return lay


@dataclass(frozen=True)
class FilterDecision:
    """What the filter decided for the clients whose sketches it judged.

    ``accepted``: ids whose inputs go into the sum. ``rejected``: id -> reason.
    ``sq_distances``: the (m, m) squared sketch distances of ``judged`` in update units
    (``‖P(x_i - x_j)‖² / (k·scale²)``, an unbiased estimate of ``‖x_i - x_j‖²``).
    ``sq_norms``: the same for the norms. ``report``: the rule's
    :meth:`robust.AggregationResult.to_dict`, or ``None`` if the rule did not run.
    """

    judged: tuple[int, ...]
    accepted: tuple[int, ...]
    rejected: dict[int, str]
    sq_distances: np.ndarray
    sq_norms: np.ndarray
    norm_threshold: float
    report: dict[str, Any] | None


def decide(
    filtering: FilterConfig,
    ids: tuple[int, ...],
    sq_distances: np.ndarray,
    sq_norms: np.ndarray,
    *,
    scale: float,
    dim: int,
) -> FilterDecision:
    """The filter: the norm bound on the exact integer sketch norms, then the rule on the
    distances of the clients within it (``robust.aggregate_detailed(None, rule,
    distances=D)``, with ``D`` in update units).

    ``sq_distances`` (m, m) and ``sq_norms`` (m,) are exact integers (object arrays) in sketch
    units, for the clients ``ids``. A rule that cannot run (too few clients for its ``f``)
    rejects everybody (the round then aborts) and says why in ``report``: never a silent
    fallback to accepting everyone.
    """
    k = filtering.sketch_dim
    bound = filtering.norm_bound(scale, dim)
    within = within_norm_bound(sq_norms, k=k, bound=bound, eps=filtering.epsilon)
    rejected: dict[int, str] = {}
    threshold = float(Fraction(bound) * (1 + Fraction(filtering.epsilon)) / Fraction(scale))
    unit = float(k) * float(scale) ** 2
    norms_f = np.array([float(Fraction(int(v), 1) / Fraction(unit)) for v in sq_norms])
    for i, ok in zip(ids, within):
        if not ok:
            norm = math.sqrt(norms_f[ids.index(i)])
            rejected[i] = (
                f"sketch norm {norm:.4g} exceeds the bound C*(1+eps) = {threshold:.4g} "
                f"(C={filtering.clip_norm:g}, eps={filtering.epsilon:.3f})"
            )
    keep = [p for p, ok in enumerate(within) if ok]
    dist_f = np.array(
        [[float(Fraction(int(v)) / Fraction(unit)) for v in row] for row in sq_distances],
        dtype=np.float64,
    ).reshape(len(ids), len(ids))
    report = None
    if keep:
        sub = dist_f[np.ix_(keep, keep)]
        try:
            result = robust.aggregate_detailed(
                None, filtering.rule, f=filtering.f, distances=sub, **filtering.rule_params
            )
        except RobustError as exc:
            # never fall back to "accept everyone": the round then has nobody to sum
            report = {"rule": filtering.rule, "error": str(exc)}
            for pos in keep:
                rejected[ids[pos]] = f"the filter rule could not run: {exc}"
        else:
            report = result.to_dict()
            for pos, verdict in zip(keep, result.verdicts):
                if verdict != "accepted":
                    rejected[ids[pos]] = f"{verdict} (sketch distances)"
    accepted = tuple(i for i in ids if i not in rejected)
    return FilterDecision(
        judged=tuple(ids),
        accepted=accepted,
        rejected=rejected,
        sq_distances=dist_f,
        sq_norms=norms_f,
        norm_threshold=threshold,
        report=report,
    )
