"""One entry point: pre-aggregators, then a rule, with per-client verdicts.

``aggregate_detailed(X, rule, f, pre, **params)`` runs, in order:

1. **non-finite removal** — rows with NaN/Inf are Byzantine: verdict
   ``"rejected:non_finite"``; each one lowers the f the later stages tolerate
   (``f' = max(f − removed, 0)``);
2. **f="auto"** — :func:`robust.estimate_f` on the finite rows' distances, capped by the
   bounds of every later stage; the reported ``f`` includes the non-finite rows;
3. **pre-aggregators** in the given order (``"clip"``, ``"norm_filter"``, ``"nnm"``,
   ``"bucketing"``). ``norm_filter`` rejects rows above ``max_norm`` (verdict
   ``"rejected:norm"``; like non-finite rows they count against f, since honest clients
   clip to the bound). ``nnm`` keeps row i = client i's mixed update. ``bucketing`` maps
   each client to its bucket; at most f buckets can hold a Byzantine client, so f is kept;
4. the **rule**; its bound is checked on the rows it actually receives.

Verdicts map back to the original clients through the rows they ended up in: a client is
accepted iff its row (its own, its NNM-mixed row, or its bucket) was accepted by the rule.
For coordinate-wise rules every finite row is accepted (each coordinate of the output
depends on all of them); their ``scores`` say how often a row was inside the trimmed range.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from . import clipping, coordinate, filters, geomed, krum_rules, mixing, voting
from ._common import ANY, BULYAN, KRUM, MAJORITY, Bound
from ._rows import RowSet
from ._validate import (
    as_matrix,
    check_f,
    check_int,
    check_positive,
    check_vector,
    check_weights,
    finite_rows,
)
from .auto_f import estimate_outliers
from .distances import auto_gram, distances_from_gram, resolve_distances
from .errors import (
    AggregationError,
    DistanceOnlyError,
    InputShapeError,
    InsufficientClientsError,
    ParameterError,
    UnknownRuleError,
)
from .result import ACCEPTED, NON_FINITE, AggregationResult, RuleOutput

__all__ = [
    "RULES",
    "PRE_AGGREGATORS",
    "DISTANCE_RULES",
    "COORDINATE_RULES",
    "aggregate",
    "aggregate_detailed",
]


@dataclass(frozen=True)
class _Spec:
    name: str
    core: Callable[..., RuleOutput]
    bound: Bound
    params: tuple[str, ...]
    uses_distances: bool = False
    fast_gram: bool = False  # float32 rows: float32-product Gram (see RowSet.gram)
    weighted: bool = False
    f_optional: bool = False  # distance_filter: f caps rejections only


_SPECS: dict[str, _Spec] = {
    s.name: s
    for s in (
        _Spec("mean", coordinate.mean_core, ANY, (), weighted=True),
        _Spec("median", coordinate.median_core, MAJORITY, ()),
        _Spec("trimmed_mean", coordinate.trimmed_mean_core, MAJORITY, ()),
        _Spec(
            "krum",
            krum_rules.krum_core,
            KRUM,
            ("neighbours",),
            uses_distances=True,
            fast_gram=True,
        ),
        _Spec(
            "multi_krum",
            krum_rules.multi_krum_core,
            KRUM,
            ("m", "neighbours"),
            uses_distances=True,
            fast_gram=True,
            weighted=True,
        ),
        _Spec("bulyan", krum_rules.bulyan_core, BULYAN, (), uses_distances=True, fast_gram=True),
        _Spec(
            "geometric_median",
            geomed.geometric_median_core,
            MAJORITY,
            ("eps", "tol", "max_iter"),
            uses_distances=True,
            weighted=True,
        ),
        _Spec(
            "rfa",
            geomed.rfa_core,
            MAJORITY,
            ("nu", "tol", "max_iter", "weighted_mean", "distances_to"),
            weighted=True,
        ),
        _Spec(
            "centered_clipping",
            clipping.centered_clipping_core,
            MAJORITY,
            ("center", "tau", "iters"),
            weighted=True,
        ),
        _Spec("sign_vote", voting.sign_vote_core, MAJORITY, ("threshold", "scale")),
        _Spec(
            "distance_filter",
            filters.distance_filter_core,
            MAJORITY,
            ("k", "max_distance"),
            uses_distances=True,
            weighted=True,
            f_optional=True,
        ),
    )
}

#: Rule name -> public function. ``aggregate`` accepts these names (or any callable).
RULES: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType(
    {
        "mean": coordinate.mean,
        "median": coordinate.median,
        "trimmed_mean": coordinate.trimmed_mean,
        "krum": krum_rules.krum,
        "multi_krum": krum_rules.multi_krum,
        "bulyan": krum_rules.bulyan,
        "geometric_median": geomed.geometric_median,
        "rfa": geomed.rfa,
        "centered_clipping": clipping.centered_clipping,
        "sign_vote": voting.sign_vote,
        "distance_filter": filters.distance_filter,
    }
)

#: Pre-aggregator name -> public function.
PRE_AGGREGATORS: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType(
    {
        "clip": clipping.clip,
        "norm_filter": clipping.norm_filter,
        "nnm": mixing.nnm,
        "bucketing": mixing.bucketing,
    }
)
_PRE_PARAMS = {
    "clip": ("max_norm",),
    "norm_filter": ("max_norm",),
    "nnm": (),
    "bucketing": ("s", "seed", "rng"),
}
_PRE_REQUIRED = {"clip": ("max_norm",), "norm_filter": ("max_norm",)}

#: Rules that can run from a distance/Gram matrix alone (no ``X``). For each of them the
#: aggregate is the (trusted-weighted) mean of the accepted rows, so a secure pipeline can
#: compute it as a masked sum over ``AggregationResult.accepted``.
DISTANCE_RULES: tuple[str, ...] = ("mean", "krum", "multi_krum", "distance_filter")
#: Rules that need the coordinates of the updates (plaintext mode only).
COORDINATE_RULES: tuple[str, ...] = tuple(r for r in RULES if r not in DISTANCE_RULES)


def _check_params(
    rule: str, allowed: Sequence[str], params: Mapping[str, Any], n: int, d: int | None
) -> dict:
    out: dict[str, Any] = {}
    for key, v in params.items():
        if key not in allowed:
            raise ParameterError(
                f"unknown parameter {key!r} for {rule}; allowed: {', '.join(allowed) or 'none'}"
            )
        if v is None:
            out[key] = None
            continue
        if key == "neighbours":
            out[key] = check_int(v, "neighbours", 1, max(n - 1, 1))
        elif key == "m":
            out[key] = check_int(v, "m", 1, n)
        elif key in ("eps", "nu", "tau", "k", "max_norm"):
            out[key] = check_positive(v, key)
        elif key in ("tol", "max_distance"):
            out[key] = check_positive(v, key, allow_zero=True)
        elif key in ("max_iter", "iters", "s"):
            out[key] = check_int(v, key, 1)
        elif key == "center":
            if d is None:
                raise DistanceOnlyError(f"{rule} needs coordinates")
            out[key] = check_vector(v, d, "center")
        elif key == "threshold":
            out[key] = voting._check_threshold(v)
        elif key == "scale":
            out[key] = voting._check_scale(v)
        elif key in ("weighted_mean", "distances_to"):
            if not callable(v):
                raise ParameterError(f"{key} must be callable")
            out[key] = v
        elif key == "seed":
            out[key] = check_int(v, "seed", 0)
        else:
            out[key] = v
    return out


def _parse_pre(pre: object) -> list[tuple[str, dict[str, Any]]]:
    if pre is None:
        return []
    if isinstance(pre, str) or (
        isinstance(pre, tuple) and len(pre) == 2 and isinstance(pre[1], Mapping)
    ):
        pre = [pre]  # a single stage
    if not isinstance(pre, (list, tuple)):
        raise ParameterError(f"pre must be a list of names or (name, params), got {pre!r}")
    stages = []
    for item in pre:  # type: ignore[union-attr]
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Mapping):
            name, params = item[0], dict(item[1])
        else:
            raise ParameterError(f"pre items must be a name or (name, params), got {item!r}")
        if name not in PRE_AGGREGATORS:
            raise UnknownRuleError(
                f"unknown pre-aggregator {name!r}; known: {', '.join(PRE_AGGREGATORS)}"
            )
        missing = [k for k in _PRE_REQUIRED.get(name, ()) if k not in params]
        if missing:
            raise ParameterError(f"pre-aggregator {name!r} needs {', '.join(missing)}")
        if name == "bucketing":
            params.setdefault("s", 2)
        stages.append((name, params))
    return stages


def _drop_nonfinite_distance_rows(D: np.ndarray) -> np.ndarray:
    """Greedy: remove the row with most non-finite entries until the rest is finite."""
    keep = np.ones(D.shape[0], bool)
    while True:
        sub = D[np.ix_(keep, keep)]
        bad = (~np.isfinite(sub)).sum(axis=1)
        if not bad.any():
            return keep
        idx = np.flatnonzero(keep)
        keep[idx[int(np.argmax(bad))]] = False


def aggregate(
    X: np.ndarray,
    rule: str | Callable[..., Any],
    f: int | str = 0,
    pre: Sequence[str | tuple[str, Mapping[str, Any]]] | None = None,
    **params: Any,
) -> np.ndarray:
    """Aggregate the rows of ``X`` (n clients × d) and return the vector (dtype of ``X``).

    Same arguments as :func:`aggregate_detailed`, which also returns the accepted set,
    scores, verdicts and stage reports. Raises what it raises, and
    :class:`DistanceOnlyError` if ``X`` is None.
    """
    if X is None:
        raise DistanceOnlyError(
            "aggregate needs X; with distances only use aggregate_detailed (accepted set)"
        )
    # the rule's per-client scores are not returned here: skip their extra passes
    res = _run(X, rule, f, pre, params, detailed=False)
    assert res.vector is not None
    return res.vector


def aggregate_detailed(
    X: np.ndarray | None,
    rule: str | Callable[..., Any],
    f: int | str = 0,
    pre: Sequence[str | tuple[str, Mapping[str, Any]]] | None = None,
    *,
    weights: np.ndarray | None = None,
    distances: np.ndarray | None = None,
    gram: np.ndarray | None = None,
    **params: Any,
) -> AggregationResult:
    """Run ``pre`` then ``rule`` (module docstring) and report per-client verdicts.

    Args:
        X: (n, d) float32/float64 updates, or None for distance-only mode (then ``rule``
            must be in :data:`DISTANCE_RULES`, ``pre`` empty, and ``distances``/``gram``
            given; ``vector`` of the result is None).
        rule: a name in :data:`RULES` or a callable ``fn(X, f=..., **params)`` returning a
            vector (or an :class:`AggregationResult`); callables get the finite,
            pre-aggregated rows.
        f: assumed number of Byzantine clients, or ``"auto"`` (:func:`robust.estimate_f`).
        pre: pre-aggregators, each a name or ``(name, params)`` from
            :data:`PRE_AGGREGATORS`, e.g. ``[("clip", {"max_norm": 1.0}), "nnm"]``.
        weights: *trusted* per-client weights (e.g. :meth:`Reputation.weights`), only for
            weighted rules (mean, multi_krum, geometric_median, rfa, centered_clipping,
            distance_filter). Never pass self-reported example counts. After
            bucketing, a bucket's weight is the sum of its members' weights.
        distances / gram: precomputed (n, n) squared distances / Gram of the rows.
        **params: rule parameters (e.g. ``m=``, ``tau=``, ``center=``).

    Raises :class:`InputShapeError`, :class:`ParameterError`, :class:`UnknownRuleError`,
    :class:`InsufficientClientsError` (naming the bound and the stage), :class:`WeightsError`,
    :class:`DistanceOnlyError`, :class:`AggregationError` (a callable rule's bad output).
    """
    return _run(
        X,
        rule,
        f,
        pre,
        dict(params, weights=weights, distances=distances, gram=gram),
        detailed=True,
    )


def _run(
    X: np.ndarray | None,
    rule: str | Callable[..., Any],
    f: int | str,
    pre: Sequence[str | tuple[str, Mapping[str, Any]]] | None,
    params: dict[str, Any],
    *,
    detailed: bool,
) -> AggregationResult:
    """Body of :func:`aggregate_detailed`; ``detailed=False`` lets a rule skip work that
    only feeds per-client scores (the result's ``scores`` may then be None)."""
    params = dict(params)
    weights = params.pop("weights", None)
    distances = params.pop("distances", None)
    gram = params.pop("gram", None)
    # -- the rule -------------------------------------------------------------------------
    if callable(rule) and not isinstance(rule, str):
        fn = rule
        name = getattr(fn, "__name__", "callable")
        spec = _Spec(name, _callable_core(fn), ANY, tuple(params))
    elif isinstance(rule, str):
        if rule not in _SPECS:
            raise UnknownRuleError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
        spec = _SPECS[rule]
        name = rule
    else:
        raise UnknownRuleError(f"rule must be a name in RULES or a callable, got {rule!r}")
    stages_in = _parse_pre(pre)
    auto = isinstance(f, str)
    if auto and f != "auto":
        raise ParameterError(f"f must be a non-negative integer or 'auto', got {f!r}")
    f_user = 0 if auto else check_f(f)
    if weights is not None and not spec.weighted:
        raise ParameterError(f"rule {name!r} is unweighted; weights= is not supported")

    stages: list[dict[str, Any]] = []
    # -- input ----------------------------------------------------------------------------
    if X is None:
        if name not in DISTANCE_RULES:
            raise DistanceOnlyError(
                f"rule {name!r} needs coordinates; from distances only the supported rules are "
                f"{', '.join(DISTANCE_RULES)}"
            )
        if stages_in:
            raise DistanceOnlyError("pre-aggregators need coordinates; pass X")
        if distances is None and gram is None:
            raise InputShapeError("X is None: pass distances= or gram=")
        M = np.asarray(distances if distances is not None else gram, dtype=np.float64)
        if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 1:
            raise InputShapeError(
                f"{'distances' if distances is not None else 'gram'} must be square, got {M.shape}"
            )
        n = M.shape[0]
        d = None
        finite = _drop_nonfinite_distance_rows(M)
    else:
        Xv = as_matrix(X)
        n, d = Xv.shape
        finite = finite_rows(Xv)
    w_all = check_weights(weights, n)
    removed = int(n - finite.sum())
    if removed == n:
        raise InsufficientClientsError(f"{name}: all {n} rows are non-finite")
    keep = np.flatnonzero(finite)
    verdicts = np.array([ACCEPTED] * n, dtype=object)
    verdicts[~finite] = NON_FINITE
    if removed:
        stages.append(
            {
                "stage": "non_finite",
                "rejected_count": removed,
                "rejected": np.flatnonzero(~finite).tolist(),
            }
        )
    D: np.ndarray | None = None
    if distances is not None or gram is not None:
        D = resolve_distances(
            None,
            distances=None if distances is None else np.asarray(distances)[np.ix_(keep, keep)],
            gram_matrix=None if gram is None else np.asarray(gram)[np.ix_(keep, keep)],
            n=len(keep),
        )
    rs = None if X is None else RowSet(Xv, keep if removed else None)
    n_rows = len(keep)
    owner = np.full(n, -1, dtype=np.intp)
    owner[keep] = np.arange(n_rows)

    # -- f --------------------------------------------------------------------------------
    if auto:
        if D is None:
            assert rs is not None
            D = distances_from_gram(auto_gram(rs))
        cap = _auto_cap(spec, stages_in, n_rows)
        est = estimate_outliers(D, max_f=cap)
        f_stage = est.f
        f_total = est.f + removed
        stages.append(
            {
                "stage": "estimate_f",
                "f": est.f,
                "cap": cap,
                "flagged": keep[est.flagged].tolist(),
                "threshold": est.threshold,
            }
        )
    else:
        f_total = f_user
        if not any(s == "bucketing" for s, _ in stages_in) and not spec.f_optional:
            spec.bound.check(name, n, f_user)
        f_stage = max(f_user - removed, 0)

    # -- pre-aggregators ------------------------------------------------------------------
    context: list[str] = []
    for pname, pparams in stages_in:
        p = _check_params(pname, _PRE_PARAMS[pname], pparams, n_rows, d)
        assert rs is not None
        if pname == "clip":
            Y, factors, norms = clipping.clip_rows(rs, p["max_norm"])
            clipped_rows = np.flatnonzero(factors < 1)
            clients = np.flatnonzero(np.isin(owner, clipped_rows) & (owner >= 0))
            stages.append(
                {
                    "stage": "clip",
                    "max_norm": p["max_norm"],
                    "clipped_count": len(clients),
                    "clipped": clients.tolist(),
                    "max_input_norm": float(norms.max()),
                }
            )
            rs, D = RowSet(Y), None
        elif pname == "norm_filter":
            norms = np.sqrt(rs.sq_norms())
            bad_rows = np.flatnonzero(norms > p["max_norm"])
            if len(bad_rows) == rs.n:
                raise InsufficientClientsError(
                    f"norm_filter rejected all {rs.n} rows (max_norm={p['max_norm']})"
                )
            good = np.flatnonzero(norms <= p["max_norm"])
            clients = np.flatnonzero(np.isin(owner, bad_rows) & (owner >= 0))
            verdicts[clients] = "rejected:norm"
            remap = np.full(rs.n, -1, dtype=np.intp)
            remap[good] = np.arange(len(good))
            owner = np.where(owner >= 0, remap[np.maximum(owner, 0)], -1)
            if D is not None:
                D = D[np.ix_(good, good)]
            rs = rs.subset(good)
            f_stage = max(f_stage - len(bad_rows), 0)
            stages.append(
                {
                    "stage": "norm_filter",
                    "max_norm": p["max_norm"],
                    "rejected_count": len(clients),
                    "rejected": clients.tolist(),
                }
            )
        elif pname == "nnm":
            MAJORITY.check("nnm" + _ctx(context), rs.n, f_stage)
            Y, _S = mixing.nnm_rows(rs, f_stage, D)
            rs, D = RowSet(Y), None
            stages.append({"stage": "nnm", "f": f_stage, "neighbours": rs.n - f_stage})
        elif pname == "bucketing":
            rng = p.get("rng", p.get("seed"))
            Y, buckets = mixing.bucket_rows(rs, p["s"], rng)
            row_to_bucket = np.empty(rs.n, dtype=np.intp)
            for b, members in enumerate(buckets):
                row_to_bucket[members] = b
            owner = np.where(owner >= 0, row_to_bucket[np.maximum(owner, 0)], -1)
            rs, D = RowSet(Y), None
            stages.append(
                {
                    "stage": "bucketing",
                    "s": p["s"],
                    "buckets": [np.flatnonzero(owner == b).tolist() for b in range(len(buckets))],
                }
            )
        context.append(pname)

    # -- rule -----------------------------------------------------------------------------
    rows_n = rs.n if rs is not None else (D.shape[0] if D is not None else n_rows)
    if not spec.f_optional or f_stage:
        spec.bound.check(name + _ctx(context, rows_n), rows_n, f_stage)
    rparams = (
        _check_params(name, spec.params, params, rows_n, d)
        if not callable(rule) or isinstance(rule, str)
        else dict(params)
    )
    if name == "centered_clipping":
        if "center" not in rparams:
            raise ParameterError(
                "centered_clipping needs center= (the caller's state, e.g. the previous aggregate)"
            )
        if rparams.get("tau") is None:
            assert rs is not None
            rparams["tau"] = clipping.auto_tau(rs, rparams["center"])
    w_rows = None
    if w_all is not None:
        w_rows = np.zeros(rows_n)
        np.add.at(w_rows, owner[owner >= 0], w_all[owner >= 0])
    if spec.uses_distances and D is None:
        assert rs is not None
        D = distances_from_gram(auto_gram(rs, fast=spec.fast_gram))
    kwargs: dict[str, Any] = dict(rparams)
    if spec.uses_distances:
        kwargs["D"] = D
    if w_rows is not None:
        kwargs["weights"] = w_rows
    if rs is None:
        kwargs["n"] = rows_n
    # distance_filter: f only caps the number of rejections; f=0 means "no cap"
    f_rule = None if (spec.f_optional and not auto and f_user == 0) else f_stage
    out = spec.core(rs, f_rule, detailed=detailed, **kwargs)

    vec = out.vector
    if vec is not None:
        vec = np.asarray(vec)
        if vec.shape != (d,):
            raise AggregationError(f"rule {name!r} returned shape {vec.shape}, expected ({d},)")
        if not np.isfinite(vec).all():
            raise AggregationError(f"rule {name!r} produced a non-finite aggregate")
        if X is not None and vec.dtype != Xv.dtype:
            vec = vec.astype(Xv.dtype)
    row_acc = np.asarray(out.accepted, dtype=bool)
    if row_acc.shape != (rows_n,):
        raise AggregationError(f"rule {name!r} returned an accepted mask of shape {row_acc.shape}")
    live = owner >= 0
    accepted = np.zeros(n, bool)
    accepted[live] = row_acc[owner[live]]
    verdicts[live & ~accepted] = f"rejected:{name}"
    scores = None
    if out.scores is not None:
        scores = np.full(n, np.nan)
        scores[live] = np.asarray(out.scores, dtype=np.float64)[owner[live]]
    rule_stage: dict[str, Any] = {
        "stage": name,
        "rows": rows_n,
        "f": f_stage,
        "accepted_count": int(accepted.sum()),
        "rejected": np.flatnonzero(live & ~accepted).tolist(),
    }
    for key in ("iterations", "converged", "selected", "threshold", "clipped_count"):
        if key in out.info:
            rule_stage[key] = out.info[key]
    stages.append(rule_stage)
    info = dict(out.info)
    info.update(non_finite=removed, f_effective=f_stage)
    return AggregationResult(
        vector=vec,
        accepted=accepted,
        scores=scores,
        verdicts=tuple(verdicts.tolist()),
        f=f_total,
        stages=tuple(stages),
        info=info,
        rule=name,
    )


def _ctx(context: list[str], rows: int | None = None) -> str:
    if not context:
        return ""
    r = f": {rows} rows" if rows is not None else ""
    return f" (after {' -> '.join(context)}{r})"


def _auto_cap(spec: _Spec, stages_in: list[tuple[str, dict]], n_rows: int) -> int:
    rows = n_rows
    cap = MAJORITY.max_f(rows)
    for pname, pparams in stages_in:
        if pname == "nnm":
            cap = min(cap, MAJORITY.max_f(rows))
        if pname == "bucketing":
            s = check_int(pparams["s"], "s", 1)
            rows = -(-rows // s)
    return min(cap, spec.bound.max_f(rows))


def _callable_core(fn: Callable[..., Any]) -> Callable[..., RuleOutput]:
    def core(rs: RowSet, f: int, *, detailed: bool = False, **params: Any) -> RuleOutput:
        if rs is None:
            raise DistanceOnlyError("a callable rule needs X")
        res = fn(rs.materialize(), f=f, **params)
        if isinstance(res, AggregationResult):
            return RuleOutput(
                res.vector, np.asarray(res.accepted, bool), res.scores, dict(res.info)
            )
        vec = np.asarray(res)
        if vec.dtype.kind not in "iuf":
            raise AggregationError(f"callable rule returned dtype {vec.dtype}")
        return RuleOutput(vec.astype(rs.dtype, copy=False), np.ones(rs.n, bool), None, {})

    return core
