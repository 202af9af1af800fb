"""Reputation in a run: per-client trust that persists across rounds and feeds the next round.

``--reputation beta[:K=V,...]`` keeps a :class:`robust.Reputation` (a Beta–Bernoulli
posterior with forgetting, see its docstring) over the whole run. Each round:

1. **Weights from the scores so far** (:func:`round_weights`): every participant's trust
   ``(a + a0) / (a + b + a0 + b0)``. A client whose trust is below ``floor`` gets weight 0:
   it is *excluded* from the aggregate. At most f clients are excluded per round (the
   lowest trust first; with ``f="auto"``, at most ``(n - 1) // 2``), so reputation can never
   push out more clients than the defence assumes are Byzantine. With ``weights=trust`` the
   other clients are weighted by their trust (trusted weights of the rule), with
   ``weights=equal`` they weigh 1.
2. **The selection** is :func:`robust.aggregate_detailed` with those weights, on the rows
   ``X`` (plaintext) or on a distance matrix alone (``X=None, distances=D``: the secure path
   with sketch distances). :func:`reputation_step` returns exactly that call's result: it adds
   nothing to the rule's selection, so the secure path gets the same verdicts from
   ``D_sketch`` as ``robust.aggregate_detailed(None, rule, distances=D_sketch, weights=w)``.
3. **The update** (:func:`robust.Reputation.update`) uses the rule's verdicts for every
   participant, the excluded ones included: a zero-weight row is still judged by the rule
   (a weighted rule scores it, it only does not count in the mean). So an honest client
   excluded in a bad stretch recovers as soon as the rule accepts it again, and a client
   pushed out for good is one the rule keeps rejecting.

For the secure path (filtering on sketch distances): nothing in protocol/ may import
simulations/, so the runner, which drives each secure round, takes the sketch distances
``D_sketch`` the round reports and calls
``reputation_step(rep, params, ids, rule, f=f, distances=D_sketch)`` and unmasks the
``contributes`` set, whose weighted mean is the aggregate; or, if the protocol runs the rule
itself, :func:`round_weights` before the round and :func:`record_verdicts` with its verdicts
after. Either way the selection is the one
``robust.aggregate_detailed(None, rule, f=f, distances=D_sketch, weights=w)`` returns.

Weights need a weighted rule (``robust.stage_schema(rule)["weighted"]``: mean, multi_krum,
geometric_median, rfa, centered_clipping, distance_filter). With another rule reputation can
only be tracked (``weights=equal,floor=0``): scores and the report, no effect on the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import robust
from simulations.errors import ConfigError
from simulations.specs import component_label, parse_component

__all__ = [
    "REPUTATION_KINDS",
    "ReputationStep",
    "normalize_reputation",
    "parse_reputation",
    "reputation_label",
    "record_verdicts",
    "reputation_step",
    "round_weights",
    "tracker",
]

#: The reputation models ``--reputation`` takes (one so far: robust's Beta posterior).
REPUTATION_KINDS = ("beta",)
#: ``--reputation beta`` with every parameter at its default.
DEFAULTS: dict[str, Any] = {
    "decay": 0.9,
    "a0": 1.0,
    "b0": 1.0,
    "non_finite_penalty": 3.0,
    "floor": 0.2,
    "weights": "trust",
}
WEIGHT_MODES = ("trust", "equal")
_HELP = (
    "decay (forgetting, (0, 1]), a0/b0 (Beta prior), non_finite_penalty, floor (trust below it "
    "excludes the client, at most f per round; 0 never excludes), weights (trust | equal)"
)


def parse_reputation(text: str | None) -> dict[str, Any] | None:
    """``--reputation`` text: ``beta[:K=V,...]`` (``none``/``off``: no reputation), as the
    normalized dict of :func:`normalize_reputation`. Raises :class:`ConfigError`."""
    if text is None or text.strip().lower() in ("none", "off", ""):
        return None
    kind, params = parse_component(text, "--reputation")
    if kind not in REPUTATION_KINDS:
        raise ConfigError(
            f"--reputation: unknown kind {kind!r}; known: {', '.join(REPUTATION_KINDS)} "
            f"(parameters: {_HELP})"
        )
    return normalize_reputation(params)


def normalize_reputation(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Every parameter with its default filled in, validated (``None`` stays ``None``), so
    that ``beta`` and ``beta:decay=0.9`` are the same config. Raises :class:`ConfigError`."""
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise ConfigError(f"reputation must be a dict of parameters or None, got {params!r}")
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"--reputation: unknown parameter {unknown[0]!r}; known: {_HELP}")
    out = {**DEFAULTS, **params}
    for key in ("decay", "a0", "b0", "non_finite_penalty", "floor"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"--reputation: {key} must be a number, got {v!r}")
        out[key] = float(v)
    if not 0 < out["decay"] <= 1:
        raise ConfigError(f"--reputation: decay must be in (0, 1], got {out['decay']}")
    for key in ("a0", "b0"):
        if out[key] <= 0:
            raise ConfigError(f"--reputation: {key} must be > 0, got {out[key]}")
    if out["non_finite_penalty"] < 0:
        raise ConfigError("--reputation: non_finite_penalty must be >= 0")
    if not 0 <= out["floor"] < 1:
        raise ConfigError(f"--reputation: floor must be in [0, 1), got {out['floor']}")
    if out["weights"] not in WEIGHT_MODES:
        raise ConfigError(
            f"--reputation: weights must be one of {', '.join(WEIGHT_MODES)}, "
            f"got {out['weights']!r}"
        )
    return dict(sorted(out.items()))


def reputation_label(params: Mapping[str, Any]) -> str:
    """``reputation(floor=0.3)``: the parameters that differ from the defaults."""
    changed = {k: v for k, v in params.items() if DEFAULTS.get(k) != v}
    return component_label("reputation", changed)


def affects_aggregate(params: Mapping[str, Any]) -> bool:
    """Whether the scores change the aggregate (weights or exclusions), not only the report."""
    return params["weights"] == "trust" or params["floor"] > 0


def check_reputation(params: Mapping[str, Any], rule: str, *, secure: bool) -> None:
    """Refuse what cannot run: weights or exclusions with an unweighted rule in plaintext,
    trust weights in secure mode (the protocol sums unweighted inputs). In secure mode any
    rule that runs there works with ``weights=equal``: a client below the floor is dropped
    from the masked sum, and with a distance rule the secure filter's verdicts feed the
    scores. Raises :class:`ConfigError`."""
    if secure:
        if params["weights"] == "trust":
            raise ConfigError(
                "--reputation with --secure: the secure sum is unweighted, so trust cannot "
                "weight it; use --reputation beta:weights=equal (clients below the floor are "
                "dropped from the masked sum; with a distance rule the secure filter's "
                "verdicts update the scores)"
            )
        return
    weighted = [r for r in robust.stages("rule") if robust.stage_schema(r)["weighted"]]
    if affects_aggregate(params) and rule not in weighted:
        raise ConfigError(
            f"--reputation: the defence {rule!r} takes no weights, so reputation cannot weight "
            f"or exclude clients there; use a weighted rule ({', '.join(weighted)}) or only "
            "track the scores with --reputation beta:weights=equal,floor=0"
        )


def tracker(params: Mapping[str, Any]) -> robust.Reputation:
    """A fresh :class:`robust.Reputation` with these parameters."""
    return robust.Reputation(
        decay=params["decay"],
        prior=(params["a0"], params["b0"]),
        non_finite_penalty=params["non_finite_penalty"],
    )


def round_weights(
    rep: robust.Reputation,
    ids: Sequence[int],
    params: Mapping[str, Any],
    *,
    f: int | str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This round's trusted weights from the scores so far.

    Returns ``(weights, excluded, trust)`` aligned with ``ids``: ``trust`` before the
    round, ``excluded`` the clients with trust below ``floor`` (at most f of them, lowest
    trust first, ties by position; ``f="auto"``: at most ``(n - 1) // 2``), whose weight is 0;
    the others weigh their trust (``weights=trust``) or 1 (``weights=equal``).
    """
    trust = rep.weights([int(i) for i in ids])
    n = len(trust)
    cap = (n - 1) // 2 if isinstance(f, str) else min(int(f), n - 1)
    below = np.flatnonzero(trust < params["floor"])
    excluded = np.zeros(n, dtype=bool)
    if len(below) and cap > 0:
        order = below[np.argsort(trust[below], kind="stable")]
        excluded[order[:cap]] = True
    weights = trust.copy() if params["weights"] == "trust" else np.ones(n)
    weights[excluded] = 0.0
    return weights, excluded, trust


@dataclass(frozen=True)
class ReputationStep:
    """One round of reputation: ``result`` is exactly :func:`robust.aggregate_detailed`'s
    (the rule's verdicts for every client, the zero-weight ones included); ``weights`` the
    trusted weights it got (``None`` when tracking only), ``excluded`` who weighed 0,
    ``contributes`` who is in the aggregate (accepted with a positive weight), ``trust``
    the scores before and ``trust_after`` after the update."""

    result: robust.AggregationResult
    weights: np.ndarray | None
    excluded: np.ndarray
    contributes: np.ndarray
    trust: np.ndarray
    trust_after: np.ndarray


def reputation_step(
    rep: robust.Reputation,
    params: Mapping[str, Any],
    ids: Sequence[int],
    rule: str,
    *,
    f: int | str,
    X: np.ndarray | None = None,
    distances: np.ndarray | None = None,
    gram: np.ndarray | None = None,
    pre: Sequence[Any] = (),
    **rule_params: Any,
) -> ReputationStep:
    """Weights from ``rep`` (:func:`round_weights`), the selection
    ``robust.aggregate_detailed(X, rule, f=f, pre=pre, weights=w, distances=, gram=, ...)``,
    then ``rep.update(ids, verdicts)``. ``X=None`` with ``distances``/``gram`` is the
    distance-only selection (secure mode with sketch distances; ``result.vector`` is then
    None and the aggregate is the weighted mean of the contributing rows).

    Raises what :func:`robust.aggregate_detailed` raises; ``rep`` is only updated after a
    selection that succeeded.
    """
    weights, excluded, trust = round_weights(rep, ids, params, f=f)
    use = weights if affects_aggregate(params) else None
    result = robust.aggregate_detailed(
        X,
        rule,
        f=f,
        pre=list(pre) or None,
        weights=use,
        distances=distances,
        gram=gram,
        **rule_params,
    )
    return record_verdicts(rep, ids, result, weights=use, excluded=excluded, trust=trust)


def record_verdicts(
    rep: robust.Reputation,
    ids: Sequence[int],
    result: robust.AggregationResult,
    *,
    weights: np.ndarray | None,
    excluded: np.ndarray,
    trust: np.ndarray,
    contributes: np.ndarray | None = None,
) -> ReputationStep:
    """The update step alone: ``rep.update(ids, result)`` with verdicts decided elsewhere
    (by :func:`reputation_step`, or by a secure round that ran the rule on sketch distances
    with the ``weights`` of :func:`round_weights`). ``contributes`` defaults to the accepted
    clients with a positive weight."""
    rep.update([int(i) for i in ids], result)
    if contributes is None:
        w = np.ones(len(excluded)) if weights is None else weights
        contributes = np.asarray(result.accepted, dtype=bool) & (w > 0) & ~excluded
    return ReputationStep(
        result=result,
        weights=weights,
        excluded=excluded,
        contributes=contributes,
        trust=trust,
        trust_after=rep.weights([int(i) for i in ids]),
    )
