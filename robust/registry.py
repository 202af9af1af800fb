"""The stages of an aggregation pipeline, each registered once with its parameter schema.

An aggregation is ``pre-aggregators → rule → post-rule stages``, composed the way
TensorFlow Federated composes aggregator factories (``clipping_factory(norm, inner)``
wraps an inner aggregator): each stage takes the rows left by the stage before it, hands
its own rows to the next, and reports what it did and to whom
(:class:`robust.flow.Flow`). This table is the only list of stages: :data:`robust.RULES`,
:data:`robust.PRE_AGGREGATORS`, :data:`robust.DISTANCE_RULES` and
:data:`robust.COORDINATE_RULES` are derived from it, :func:`robust.aggregate_detailed`
runs from it, and :func:`stages` / :func:`stage_schema` / :func:`stage_help` /
:func:`check_pipeline` show and check it without any data (for a CLI).

Kinds of stage:

``pre``
    Pre-aggregators (``clip``, ``norm_filter``, ``nnm``, ``bucketing``): change, drop or mix
    the rows before the rule.
``rule``
    The aggregation rule: picks the accepted rows and computes the aggregate.
``post``
    Post-rule stages, applied to the aggregate vector (room for the clipping and noise of
    differential privacy; none ships yet). A post stage's ``apply(flow, vector, **params)``
    returns the new vector and records a report.

Each stage's parameters are :class:`robust.params.Param` objects declared next to the
function that takes them; their defaults are read from that function's signature, so there
is one default per parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from . import clipping, coordinate, filters, geomed, krum_rules, mixing, voting
from ._common import ANY, BULYAN, KRUM, MAJORITY, Bound
from ._validate import check_f
from .errors import DistanceOnlyError, ParameterError, UnknownRuleError
from .params import Limits, Param

__all__ = [
    "Stage",
    "stages",
    "stage",
    "stage_schema",
    "stage_help",
    "check_pipeline",
    "RULES",
    "PRE_AGGREGATORS",
    "DISTANCE_RULES",
    "COORDINATE_RULES",
]

KINDS = ("pre", "rule", "post")
_REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Stage:
    """One registered stage.

    Attributes:
        name, kind: the stage's name and ``"pre"``, ``"rule"`` or ``"post"``.
        doc: what it does, in one line (help text).
        function: the public function (:data:`robust.RULES` / :data:`PRE_AGGREGATORS`).
        params: the parameters it takes in a pipeline (None: any, for a callable rule).
        bound: ``n >= bound(f)`` on the rows it receives (None: no bound).
        run: rule: ``core(rows, f, *, detailed, **params) -> RuleOutput``; pre:
            ``apply(flow, **params)``; post: ``apply(flow, vector, **params) -> vector``.
        rows_after: pre-aggregators that change the number of rows: ``(rows, params) ->
            rows`` (bucketing); None keeps it (up to rejections).
        from_distances: the rule can run from a distance/Gram matrix alone (no ``X``), and
            its aggregate is then the (trusted-weighted) mean of the accepted rows.
        uses_distances: the rule's core wants the distance matrix ``D``; ``fast_gram``: a
            float32-product Gram is precise enough for it (see :meth:`RowSet.gram`).
        weighted: the rule accepts trusted weights; ``f_optional``: f only caps the
            rule's rejections and f = 0 means no cap (distance_filter).
        defaults: parameter defaults, from ``function``'s signature (``REQUIRED`` if none).
    """

    name: str
    kind: str
    doc: str
    function: Callable[..., Any]
    params: tuple[Param, ...] | None
    run: Callable[..., Any]
    bound: Bound | None = None
    rows_after: Callable[[int, Mapping[str, Any]], int] | None = None
    from_distances: bool = False
    uses_distances: bool = False
    fast_gram: bool = False
    weighted: bool = False
    f_optional: bool = False
    defaults: Mapping[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"stage {self.name!r}: kind must be one of {KINDS}")
        defaults: dict[str, Any] = {}
        if self.params is not None:
            signature = inspect.signature(self.function).parameters
            for p in self.params:
                if p.name not in signature:  # a registration error, caught at import
                    raise ValueError(f"{self.function.__name__} has no parameter {p.name!r}")
                defaults[p.name] = signature[p.name].default
        object.__setattr__(self, "defaults", MappingProxyType(defaults))

    def required(self, p: Param) -> bool:
        return self.defaults.get(p.name, _REQUIRED) is _REQUIRED

    def check(
        self, values: Mapping[str, Any], limits: Limits | None = None, *, static: bool = False
    ) -> dict[str, Any]:
        """Validated parameters with the defaults filled in. A value of None means the
        default. ``static``: checked without data (a CLI spec), so per-call state (such as
        centered clipping's ``center``) may be missing.

        Raises :class:`ParameterError` (unknown name, missing required value, bad value),
        :class:`InputShapeError` (malformed vector), :class:`DistanceOnlyError` (a vector
        parameter without coordinates).
        """
        if self.params is None:
            return dict(values)
        limits = limits or Limits()
        known = {p.name: p for p in self.params}
        for key in values:
            if key not in known:
                allowed = ", ".join(known) or "none"
                raise ParameterError(
                    f"unknown parameter {key!r} for {self.name}; allowed: {allowed}"
                )
        out: dict[str, Any] = {}
        for p in self.params:
            value = values.get(p.name)
            if value is None:
                if self.required(p) and not (static and p.state):
                    raise ParameterError(f"{self.name} needs {p.name}= ({p.doc})")
                out[p.name] = None if self.required(p) else self.defaults[p.name]
                continue
            if p.kind.type == "vector" and limits.d is None and not static:
                raise DistanceOnlyError(f"{self.name} needs coordinates for {p.name}=")
            out[p.name] = p.check(value, limits)
        return out

    def check_rows(self, values: dict[str, Any], n: int) -> dict[str, Any]:
        """Re-check the bounds that depend on the number of rows, now that it is known."""
        for p in self.params or ():
            if p.kind.needs_n and values.get(p.name) is not None:
                values[p.name] = p.check(values[p.name], Limits(n=n))
        return values

    def describe(self) -> dict[str, Any]:
        """JSON-friendly schema: see :func:`stage_schema`."""
        params = []
        for p in self.params or ():
            entry = p.describe()
            entry["required"] = self.required(p)
            entry["default"] = None if self.required(p) else self.defaults[p.name]
            params.append(entry)
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "doc": self.doc,
            "params": params,
            "bound": None if self.bound is None else f"n >= {self.bound.text}",
        }
        if self.kind == "rule":
            out.update(
                needs_coordinates=not self.from_distances,
                weighted=self.weighted,
                f_optional=self.f_optional,
            )
        return out


def _rule(
    name: str, doc: str, fn: Callable, core: Callable, bound: Bound, *params: Param, **flags
) -> Stage:
    return Stage(name, "rule", doc, fn, tuple(params), core, bound, **flags)


def _pre(name: str, doc: str, fn: Callable, apply: Callable, *params: Param, **extra) -> Stage:
    return Stage(name, "pre", doc, fn, tuple(params), apply, **extra)


_K, _G, _C, _V = krum_rules, geomed, clipping, voting
#: Rules that select rows from their distances alone; the aggregate is their mean.
_BY_DISTANCE = {"uses_distances": True, "from_distances": True}
#: The registry, in pipeline order: pre-aggregators, rules, post-rule stages.
_REGISTRY: dict[str, Stage] = {
    s.name: s
    for s in (
        _pre(
            "clip",
            "scale each update down to L2 norm max_norm",
            _C.clip,
            _C.clip_stage,
            _C.MAX_NORM,
        ),
        _pre(
            "norm_filter",
            "reject the updates longer than max_norm (each counts against f)",
            _C.norm_filter,
            _C.norm_filter_stage,
            _C.MAX_NORM,
        ),
        _pre(
            "nnm",
            "replace each update by the mean of its n - f nearest updates (itself included)",
            mixing.nnm,
            mixing.nnm_stage,
            bound=MAJORITY,
        ),
        _pre(
            "bucketing",
            "average random buckets of s updates; the rule runs on the bucket means",
            mixing.bucketing,
            mixing.bucketing_stage,
            mixing.S,
            mixing.BUCKET_RNG,
            mixing.BUCKET_SEED,
            rows_after=lambda rows, p: -(-rows // p["s"]),
        ),
        _rule(
            "mean",
            "mean of the updates (no robustness; with trusted weights, their weighted mean)",
            coordinate.mean,
            coordinate.mean_core,
            ANY,
            weighted=True,
            from_distances=True,
        ),
        _rule(
            "median",
            "coordinate-wise median",
            coordinate.median,
            coordinate.median_core,
            MAJORITY,
        ),
        _rule(
            "trimmed_mean",
            "coordinate-wise mean without the f largest and the f smallest values",
            coordinate.trimmed_mean,
            coordinate.trimmed_mean_core,
            MAJORITY,
        ),
        _rule(
            "krum",
            "the update with the smallest sum of squared distances to its nearest others",
            _K.krum,
            _K.krum_core,
            KRUM,
            _K.NEIGHBOURS,
            fast_gram=True,
            **_BY_DISTANCE,
        ),
        _rule(
            "multi_krum",
            "mean of the m updates with the lowest Krum scores",
            _K.multi_krum,
            _K.multi_krum_core,
            KRUM,
            _K.M,
            _K.NEIGHBOURS,
            fast_gram=True,
            weighted=True,
            **_BY_DISTANCE,
        ),
        _rule(
            "bulyan",
            "Krum picks n - 2f updates; per coordinate, the mean of those nearest the median",
            _K.bulyan,
            _K.bulyan_core,
            BULYAN,
            uses_distances=True,
            fast_gram=True,
        ),
        _rule(
            "geometric_median",
            "geometric median of the updates (smoothed Weiszfeld)",
            _G.geometric_median,
            _G.geometric_median_core,
            MAJORITY,
            _G.EPS,
            _G.TOL,
            _G.MAX_ITER,
            uses_distances=True,
            weighted=True,
        ),
        _rule(
            "rfa",
            "geometric median through weighted means and the clients' own distances (RFA)",
            _G.rfa,
            _G.rfa_core,
            MAJORITY,
            _G.NU,
            _G.TOL,
            _G.MAX_ITER,
            _G.WEIGHTED_MEAN,
            _G.DISTANCES_TO,
            weighted=True,
        ),
        _rule(
            "centered_clipping",
            "move the centre towards each update, clipped to radius tau around it",
            _C.centered_clipping,
            _C.centered_clipping_core,
            MAJORITY,
            _C.CENTER,
            _C.TAU,
            _C.ITERS,
            weighted=True,
        ),
        _rule(
            "sign_vote",
            "per-coordinate (super-)majority vote on the signs of the updates",
            _V.sign_vote,
            _V.sign_vote_core,
            MAJORITY,
            _V.THRESHOLD,
            _V.SCALE,
        ),
        _rule(
            "distance_filter",
            "mean of the updates not far from the geometric median (from distances alone)",
            filters.distance_filter,
            filters.distance_filter_core,
            MAJORITY,
            filters.K,
            filters.MAX_DISTANCE,
            weighted=True,
            f_optional=True,
            **_BY_DISTANCE,
        ),
    )
}


def _of_kind(kind: str) -> list[Stage]:
    return [s for s in _REGISTRY.values() if s.kind == kind]


#: Rule name -> public function. ``aggregate`` accepts these names (or any callable).
RULES: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {s.name: s.function for s in _of_kind("rule")}
)
#: Pre-aggregator name -> public function.
PRE_AGGREGATORS: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {s.name: s.function for s in _of_kind("pre")}
)
#: Rules that can run from a distance/Gram matrix alone (no ``X``). For each of them the
#: aggregate is the (trusted-weighted) mean of the accepted rows, so a secure pipeline can
#: compute it as a masked sum over ``AggregationResult.accepted``.
DISTANCE_RULES: tuple[str, ...] = tuple(s.name for s in _of_kind("rule") if s.from_distances)
#: Rules that need the coordinates of the updates (plaintext mode only).
COORDINATE_RULES: tuple[str, ...] = tuple(s.name for s in _of_kind("rule") if not s.from_distances)

_KIND_LABEL = {"pre": "pre-aggregator", "rule": "rule", "post": "post-rule stage"}


def stages(kind: str | None = None) -> tuple[str, ...]:
    """Names of the registered stages in pipeline order, or only those of one ``kind``
    (``"pre"``, ``"rule"`` or ``"post"``). Raises :class:`ParameterError` for another kind."""
    if kind is None:
        return tuple(_REGISTRY)
    if kind not in KINDS:
        raise ParameterError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return tuple(s.name for s in _of_kind(kind))


def stage(name: str, kind: str | None = None) -> Stage:
    """The registered stage ``name`` (of ``kind``, if given). Raises
    :class:`UnknownRuleError` listing the known names."""
    s = _REGISTRY.get(name) if isinstance(name, str) else None
    if s is None or (kind is not None and s.kind != kind):
        label = _KIND_LABEL.get(kind or "", "stage")
        raise UnknownRuleError(f"unknown {label} {name!r}; known: {', '.join(stages(kind))}")
    return s


def stage_schema(name: str) -> dict[str, Any]:
    """JSON-friendly schema of one stage::

        {"name": "krum", "kind": "rule", "doc": "the update with the smallest ...",
         "bound": "n >= 2f+3", "needs_coordinates": False, "weighted": False,
         "f_optional": False,
         "params": [{"name": "neighbours", "type": "int", "bound": "[1, n-1]",
                     "default": None, "required": False, "state": False, "doc": "..."}]}

    ``state`` marks per-call state the caller supplies (centered clipping's ``center``).
    Raises :class:`UnknownRuleError`."""
    return stage(name).describe()


def stage_help(name: str) -> str:
    """A few lines of help for one stage (for ``--defence`` help in a CLI)."""
    schema = stage_schema(name)
    lines = [f"{schema['name']} ({_KIND_LABEL[schema['kind']]}): {schema['doc']}"]
    if schema["bound"]:
        lines.append(f"  needs {schema['bound']}")
    for p in schema["params"]:
        default = "required" if p["required"] else f"default {p['default']!r}"
        bound = f", {p['bound']}" if p["bound"] else ""
        state = ", per-call state" if p["state"] else ""
        lines.append(f"  {p['name']} ({p['type']}{bound}; {default}{state}): {p['doc']}")
    return "\n".join(lines)


StageSpec = str | tuple[str, Mapping[str, Any]]


def parse_stages(items: object, kind: str) -> list[tuple[Stage, dict[str, Any]]]:
    """``pre=``/``post=`` as given to :func:`robust.aggregate`: None, a name, a
    ``(name, params)`` pair, or a list of those. Returns (stage, raw params) pairs.
    Raises :class:`ParameterError`, :class:`UnknownRuleError`."""
    arg = "pre" if kind == "pre" else "post"
    if items is None:
        return []
    if isinstance(items, str) or (
        isinstance(items, tuple) and len(items) == 2 and isinstance(items[1], Mapping)
    ):
        items = [items]  # a single stage
    if not isinstance(items, (list, tuple)):
        raise ParameterError(f"{arg} must be a list of names or (name, params), got {items!r}")
    out = []
    for item in items:
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Mapping):
            name, params = item[0], dict(item[1])
        else:
            raise ParameterError(f"{arg} items must be a name or (name, params), got {item!r}")
        out.append((stage(name, kind), params))
    return out


def check_pipeline(
    rule: str,
    *,
    f: int | str = 0,
    n: int | None = None,
    pre: Sequence[StageSpec] | None = None,
    post: Sequence[StageSpec] | None = None,
    **params: Any,
) -> list[tuple[str, dict[str, Any]]]:
    """Check a pipeline spec without data, as :func:`robust.aggregate` would check it.

    Names must be registered and every parameter valid for its stage (type and bound;
    per-call state such as ``center`` may be missing). With ``n`` (the number of clients),
    the rule's bound is checked on n and f, and each stage's bound on the rows it would
    receive (bucketing shrinks them; a norm filter's rejections cannot be known and are not
    counted). Returns ``[(name, params with defaults), ...]`` in pipeline order.

    Raises :class:`UnknownRuleError`, :class:`ParameterError`, :class:`InputShapeError`,
    :class:`InsufficientClientsError` (naming the bound and the stage).
    """
    rule_stage = stage(rule, "rule")
    plan = parse_stages(pre, "pre") + [(rule_stage, params)] + parse_stages(post, "post")
    auto = f == "auto"
    f_val = 0 if auto else check_f(f)
    if n is not None:
        n = int(n)
        if n < 1:
            raise ParameterError(f"n must be >= 1, got {n}")
    rows = n
    out = []
    done: list[str] = []
    for s, raw in plan:
        limits = Limits(n=rows) if s.kind != "post" else Limits()
        values = s.check(raw, limits, static=True)
        if rows is not None and not auto and s.bound is not None and s.kind != "post":
            if s.kind == "pre" or not (s.f_optional and f_val == 0):
                where = f" (after {' -> '.join(done)}: {rows} rows)" if done else ""
                s.bound.check(s.name + where, rows, f_val)
        if rows is not None and s.rows_after is not None:
            rows = s.rows_after(rows, values)
        done.append(s.name)
        out.append((s.name, values))
    return out
