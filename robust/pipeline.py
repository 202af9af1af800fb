"""One entry point: pre-aggregators, a rule, post-rule stages, with per-client verdicts.

``aggregate_detailed(X, rule, f=..., pre=..., post=..., **params)`` runs, in order:

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
4. the **rule**; its bound is checked on the rows it actually receives;
5. **post-rule stages** on the aggregate vector, in the given order (the registry has room
   for them: :func:`robust.stages` ``("post")``).

Every stage comes from :mod:`robust.registry` (one table with each stage's parameter
schema) and reports what it did and to whom in ``AggregationResult.stages``; see
:mod:`robust.flow` for the report format. Verdicts map back to the original clients
through the rows they ended up in: a client is accepted iff its row (its own, its
NNM-mixed row, or its bucket) was accepted by the rule. For coordinate-wise rules every
finite row is accepted (each coordinate of the output depends on all of them); their
``scores`` say how often a row was inside the trimmed range.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._common import ANY, MAJORITY
from ._rows import RowSet
from ._validate import as_matrix, check_f, check_weights, finite_rows
from .auto_f import estimate_outliers
from .distances import auto_gram, distances_from_gram, finite_matrix_rows, given_distances
from .errors import (
    AggregationError,
    DistanceOnlyError,
    InputShapeError,
    InsufficientClientsError,
    ParameterError,
    UnknownRuleError,
)
from .flow import Flow
from .params import Limits
from .registry import (
    COORDINATE_RULES,
    DISTANCE_RULES,
    PRE_AGGREGATORS,
    RULES,
    Stage,
    parse_stages,
    stage,
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

StageSpec = str | tuple[str, Mapping[str, Any]]


def aggregate(
    X: np.ndarray,
    rule: str | Callable[..., Any],
    *,
    f: int | str = 0,
    pre: Sequence[StageSpec] | None = None,
    post: Sequence[StageSpec] | None = None,
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
    res = _run(X, rule, f, pre, post, params, detailed=False)
    assert res.vector is not None
    return res.vector


def aggregate_detailed(
    X: np.ndarray | None,
    rule: str | Callable[..., Any],
    *,
    f: int | str = 0,
    pre: Sequence[StageSpec] | None = None,
    post: Sequence[StageSpec] | None = None,
    weights: np.ndarray | None = None,
    distances: np.ndarray | None = None,
    gram: np.ndarray | None = None,
    **params: Any,
) -> AggregationResult:
    """Run ``pre``, then ``rule``, then ``post`` (module docstring) and report per-client
    verdicts.

    Args:
        X: (n, d) float32/float64 updates, or None for distance-only mode (then ``rule``
            must be in :data:`DISTANCE_RULES`, ``pre`` and ``post`` empty, and
            ``distances``/``gram`` given; ``vector`` of the result is None).
        rule: a name in :data:`RULES` or a callable ``fn(X, f=..., **params)`` returning a
            vector (or an :class:`AggregationResult`); callables get the finite,
            pre-aggregated rows.
        f: assumed number of Byzantine clients, or ``"auto"`` (:func:`robust.estimate_f`).
            Keyword-only, as in every rule.
        pre: pre-aggregators, each a name or ``(name, params)`` from
            :data:`PRE_AGGREGATORS`, e.g. ``[("clip", {"max_norm": 1.0}), "nnm"]``.
        post: post-rule stages, the same way (names from ``robust.stages("post")``).
        weights: *trusted* per-client weights (e.g. :meth:`Reputation.weights`), only for
            weighted rules (mean, multi_krum, geometric_median, rfa, centered_clipping,
            distance_filter). Never pass self-reported example counts. After
            bucketing, a bucket's weight is the sum of its members' weights.
        distances / gram: precomputed (n, n) squared distances / Gram of the rows.
        **params: rule parameters (e.g. ``m=``, ``tau=``, ``center=``); see
            :func:`robust.stage_schema`. None means the default.

    Raises :class:`InputShapeError`, :class:`ParameterError`, :class:`UnknownRuleError`,
    :class:`InsufficientClientsError` (naming the bound and the stage), :class:`WeightsError`,
    :class:`DistanceOnlyError`, :class:`AggregationError` (a callable rule's bad output).
    """
    return _run(
        X,
        rule,
        f,
        pre,
        post,
        dict(params, weights=weights, distances=distances, gram=gram),
        detailed=True,
    )


def _run(
    X: np.ndarray | None,
    rule: str | Callable[..., Any],
    f: int | str,
    pre: Sequence[StageSpec] | None,
    post: Sequence[StageSpec] | None,
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
    rule_stage = _rule_stage(rule)
    pre_plan, post_plan = parse_stages(pre, "pre"), parse_stages(post, "post")
    auto = isinstance(f, str)
    if auto and f != "auto":
        raise ParameterError(f"f must be a non-negative integer or 'auto', got {f!r}")
    f_user = 0 if auto else check_f(f)
    if weights is not None and not rule_stage.weighted:
        raise ParameterError(f"rule {rule_stage.name!r} is unweighted; weights= is not supported")

    flow, removed = _start(X, distances, gram, rule_stage, bool(pre_plan or post_plan))
    limits = Limits(d=flow.d)
    pre_checked = [(s, s.check(p, limits)) for s, p in pre_plan]
    rule_params = rule_stage.check(params, limits)
    post_checked = [(s, s.check(p, limits)) for s, p in post_plan]
    w_all = check_weights(weights, flow.n)

    if auto:
        f_total = _estimate_f(flow, rule_stage, pre_checked) + removed
    else:
        f_total = f_user
        if all(s.rows_after is None for s, _ in pre_checked) and not rule_stage.f_optional:
            rule_stage.bound.check(rule_stage.name, flow.n, f_user)  # type: ignore[union-attr]
        flow.f = max(f_user - removed, 0)

    for s, p in pre_checked:
        if s.bound is not None:
            s.bound.check(s.name + flow.where(), flow.count, flow.f)
        s.run(flow, **p)
        flow.done.append(s.name)

    # distance_filter: f only caps the number of rejections; f=0 means "no cap"
    f_rule = None if (rule_stage.f_optional and not auto and f_user == 0) else flow.f
    out = _apply_rule(flow, rule_stage, rule_params, w_all, f_rule, detailed)
    vec = _checked_vector(f"rule {rule_stage.name!r}", out.vector, flow)
    f_effective = flow.f
    for s, p in post_checked:
        vec = _checked_vector(f"post-rule stage {s.name!r}", s.run(flow, vec, **p), flow)
        flow.done.append(s.name)
    info = dict(out.info)
    info.update(non_finite=removed, f_effective=f_effective)
    return AggregationResult(
        vector=vec,
        accepted=np.asarray(flow.verdicts == ACCEPTED, dtype=bool),
        scores=_client_scores(flow, out.scores),
        verdicts=tuple(flow.verdicts.tolist()),
        f=f_total,
        stages=tuple(flow.reports),
        info=info,
        rule=rule_stage.name,
    )


def _rule_stage(rule: str | Callable[..., Any]) -> Stage:
    if isinstance(rule, str):
        return stage(rule, "rule")
    if callable(rule):
        name = getattr(rule, "__name__", "callable")
        return Stage(name, "rule", "a callable rule", rule, None, _callable_core(rule), ANY)
    raise UnknownRuleError(f"rule must be a name in RULES or a callable, got {rule!r}")


def _start(
    X: np.ndarray | None,
    distances: object,
    gram: object,
    rule: Stage,
    has_stages: bool,
) -> tuple[Flow, int]:
    """The flow of the finite rows, with the caller's distances restricted to them, and
    the number of non-finite rows, which are rejected and reported (stage
    ``non_finite``)."""
    if X is None:
        if not rule.from_distances:
            raise DistanceOnlyError(
                f"rule {rule.name!r} needs coordinates; from distances only the supported "
                f"rules are {', '.join(DISTANCE_RULES)}"
            )
        if has_stages:
            raise DistanceOnlyError("pre-aggregators and post-rule stages need coordinates; pass X")
        if distances is None and gram is None:
            raise InputShapeError("X is None: pass distances= or gram=")
        M = np.asarray(distances if distances is not None else gram, dtype=np.float64)
        if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 1:
            name = "distances" if distances is not None else "gram"
            raise InputShapeError(f"{name} must be square, got {M.shape}")
        n, d, Xv = M.shape[0], None, None
        finite = finite_matrix_rows(M)
    else:
        Xv = as_matrix(X)
        (n, d), finite = Xv.shape, finite_rows(Xv)
    keep = np.flatnonzero(finite)
    if len(keep) == 0:
        raise InsufficientClientsError(f"{rule.name}: all {n} rows are non-finite")
    removed = n - len(keep)
    subset = keep if removed else None
    flow = Flow(n, d, None if Xv is None else RowSet(Xv, subset), keep)
    if removed:
        flow.verdicts[~finite] = NON_FINITE
        flow.record("non_finite", rejected=np.flatnonzero(~finite))
    flow.D = given_distances(distances, gram, n, subset)
    return flow, removed


def _estimate_f(flow: Flow, rule: Stage, pre: list[tuple[Stage, dict[str, Any]]]) -> int:
    """``f="auto"``: estimate f on the finite rows, capped so that every later stage's
    bound holds; sets ``flow.f`` and reports the flagged clients."""
    if flow.D is None:
        assert flow.rows is not None
        flow.D = distances_from_gram(auto_gram(flow.rows))
    rows = flow.count
    cap = MAJORITY.max_f(rows)
    for s, p in pre:
        if s.bound is not None:
            cap = min(cap, s.bound.max_f(rows))
        if s.rows_after is not None:
            rows = s.rows_after(rows, p)
    cap = min(cap, rule.bound.max_f(rows))  # type: ignore[union-attr]
    est = estimate_outliers(flow.D, max_f=cap)
    flow.f = est.f
    flagged = np.flatnonzero(flow.live)[est.flagged]
    flow.record("estimate_f", f=est.f, cap=cap, flagged=flagged.tolist(), threshold=est.threshold)
    return est.f


def _apply_rule(
    flow: Flow,
    rule: Stage,
    params: dict[str, Any],
    client_weights: np.ndarray | None,
    f_rule: int | None,
    detailed: bool,
) -> RuleOutput:
    """Run the rule on the flow's rows, set the verdicts of the clients whose rows it did
    not accept, and record its report."""
    rows_n = flow.count
    if not rule.f_optional or flow.f:
        rule.bound.check(rule.name + flow.where(), rows_n, flow.f)  # type: ignore[union-attr]
    kwargs = rule.check_rows(params, rows_n)
    if rule.uses_distances:
        if flow.D is None:
            assert flow.rows is not None
            flow.D = distances_from_gram(auto_gram(flow.rows, fast=rule.fast_gram))
        kwargs["D"] = flow.D
    w_rows = flow.row_weights(client_weights)
    if w_rows is not None:
        kwargs["weights"] = w_rows
    if flow.rows is None:
        kwargs["n"] = rows_n
    out = rule.run(flow.rows, f_rule, detailed=detailed, **kwargs)

    row_acc = np.asarray(out.accepted, dtype=bool)
    if row_acc.shape != (rows_n,):
        raise AggregationError(
            f"rule {rule.name!r} returned an accepted mask of shape {row_acc.shape}"
        )
    live = flow.live
    accepted = np.zeros(flow.n, bool)
    accepted[live] = row_acc[flow.owner[live]]
    rejected = np.flatnonzero(live & ~accepted)
    flow.verdicts[rejected] = f"rejected:{rule.name}"
    details = ("iterations", "converged", "selected", "threshold", "clipped_count")
    flow.record(
        rule.name,
        rejected=rejected,
        rows=rows_n,
        f=flow.f,
        accepted_count=int(accepted.sum()),
        **{key: out.info[key] for key in details if key in out.info},
    )
    return out


def _checked_vector(who: str, vec: np.ndarray | None, flow: Flow) -> np.ndarray | None:
    """``vec`` of shape (d,), finite, in the dtype of ``X``; raises :class:`AggregationError`
    naming the stage ``who`` otherwise."""
    if vec is None:
        return None
    vec = np.asarray(vec)
    if vec.shape != (flow.d,):
        raise AggregationError(f"{who} returned shape {vec.shape}, expected ({flow.d},)")
    if not np.isfinite(vec).all():
        raise AggregationError(f"{who} produced a non-finite aggregate")
    dtype = flow.rows.dtype if flow.rows is not None else vec.dtype
    return vec.astype(dtype, copy=False)


def _client_scores(flow: Flow, row_scores: np.ndarray | None) -> np.ndarray | None:
    if row_scores is None:
        return None
    scores = np.full(flow.n, np.nan)
    live = flow.live
    scores[live] = np.asarray(row_scores, dtype=np.float64)[flow.owner[live]]
    return scores


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
