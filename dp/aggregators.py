"""Composable aggregation stages: clipping, filtering, noise and summation, each reporting.

The shape follows TensorFlow Federated's aggregation factories (``clipping_factory``,
``DifferentiallyPrivateFactory``): a stage *wraps an inner aggregator*; what it does to the rows
happens before the inner one runs, what it does to the aggregate happens after. The order of
composition is therefore the order of the pipeline::

    agg = central_noise(clipping(from_callable(rule), 1.0), CentralGaussian(z, 1.0), source)
    #     clip every row -> the rule filters and averages -> noise on the sum of the accepted

An :class:`Aggregator` is any callable ``agg(X, *, weights=None) -> AggregateOutput`` on an
``(n, d)`` float array of updates. :class:`AggregateOutput` carries the aggregate, the mask of
rows that contributed to it, and ``stages``: one report per stage in pipeline order, in the
format of :attr:`robust.AggregationResult.stages` (``{"stage": name, measurements...,
"rejected_count": int, "rejected": [client indices]}``), so the reports of a robust rule wrapped
by :func:`from_callable` sit unchanged between those of the stages around it. Every report made
here also says ``"filters"`` (whether the stage can reject rows) and ``"adds_noise"``; a report
without ``"filters"`` (a wrapped rule's) is taken to be able to reject rows.

Every report is JSON-able (``json.dumps(list(out.stages))``): numbers, strings, bools, None,
lists and dicts. A privacy event appears as its description in the accountant's format
(:func:`dp.accounting.event_to_dict`: ``{"kind": "gaussian", "noise_multipliers": [...],
"sampling_rate": q, "count": 1}``), which :func:`dp.accounting.event_from_dict` turns back
into the event an :class:`~dp.Accountant` composes. A wrapped rule's reports are copied with
numpy scalars and arrays turned into Python numbers and lists.

Placement (the design's rule: noise never enters the statistics the filter reads)
    :func:`central_noise` adds noise to the aggregate after its inner aggregator, so a filter
    inside it reads noise-free rows. :func:`row_noise` adds each row a share of the noise
    *before* its inner aggregator -- the ``before_filter`` placement, possible so that its harm
    can be measured. :func:`check_placement` refuses any output in which a noise stage precedes
    a stage that filters, with :class:`~dp.errors.PlacementError`.

This module is a torch-free leaf: it imports nothing from ``robust``, ``protocol`` or
``simulations``; a robust rule comes in as a callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dp.accounting import Accountant, GaussianEvent, event_from_dict, event_to_dict
from dp.clipping import AdaptiveClipper, clip_updates
from dp.errors import AggregatorError, DPError, PlacementError, PrivacyParameterError
from dp.mechanisms import CentralGaussian
from dp.rng import NoiseSource

__all__ = [
    "AggregateOutput",
    "Aggregator",
    "adaptive_clipping",
    "central_noise",
    "check_placement",
    "clipping",
    "from_callable",
    "row_noise",
]
# ``mean`` and ``sum`` are public (``dp.mean()``, ``dp.sum()``, as TFF's MeanFactory/SumFactory)
# but left out of ``__all__``: a star import must not shadow the builtin ``sum``.

Report = dict[str, Any]
KINDS = ("mean", "sum")
#: Stages of ``robust`` whose report's ``"max_norm"`` bounds every row they let through.
_ROBUST_NORM_BOUNDS = ("clip", "norm_filter")


@dataclass(frozen=True)
class AggregateOutput:
    """What one composed aggregation decided, indexed by the ``n`` input rows.

    Attributes:
        vector: the aggregate (length ``d``), or ``None`` when the inner rule ran on distances
            only. ``kind`` says whether it is a mean or a sum.
        accepted: bool array ``(n,)``: whether row ``i`` contributed to ``vector``.
        stages: one report per stage, in pipeline order (see the module docstring).
        kind: ``"mean"`` (the default; what robust rules return) or ``"sum"``.
    """

    vector: np.ndarray | None
    accepted: np.ndarray
    stages: tuple[Report, ...]
    kind: str = "mean"

    @property
    def n(self) -> int:
        return int(self.accepted.size)

    @property
    def accepted_count(self) -> int:
        return int(np.count_nonzero(self.accepted))

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(str(s.get("stage")) for s in self.stages)


@runtime_checkable
class Aggregator(Protocol):
    """``agg(X, *, weights=None) -> AggregateOutput`` on an ``(n, d)`` float array."""

    def __call__(self, X: np.ndarray, *, weights: np.ndarray | None = None) -> AggregateOutput: ...


# ---------------------------------------------------------------------------------------------
# checks and reports
# ---------------------------------------------------------------------------------------------
def _matrix(X: np.ndarray) -> np.ndarray:
    x = np.asarray(X)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.floating):
        raise PrivacyParameterError(
            f"updates must be a 2-D float array with n >= 1 rows, got {x.dtype} {x.shape}"
        )
    return x


def _weights(weights: np.ndarray | None, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise PrivacyParameterError(
            f"weights must be {n} finite non-negative numbers with a positive sum, got shape "
            f"{w.shape}"
        )
    return w


def _positive(x: float, name: str) -> float:
    if isinstance(x, bool) or not (isinstance(x, int | float) and math.isfinite(x) and x > 0):
        raise PrivacyParameterError(f"{name} must be finite and > 0, got {x!r}")
    return float(x)


def _rate(q: float) -> float:
    if isinstance(q, bool) or not (isinstance(q, int | float) and math.isfinite(q) and 0 < q <= 1):
        raise PrivacyParameterError(f"sampling_rate must be in (0, 1], got {q!r}")
    return float(q)


def _instance(obj: Any, cls: type, name: str) -> Any:
    if not isinstance(obj, cls):
        raise AggregatorError(f"{name} must be a {cls.__name__}, got {type(obj).__name__}")
    return obj


def _report(
    stage: str,
    *,
    filters: bool = False,
    adds_noise: bool = False,
    rejected: Sequence[int] = (),
    **measurements: Any,
) -> Report:
    rej = [int(i) for i in rejected]
    return {
        "stage": stage,
        **measurements,
        "filters": filters,
        "adds_noise": adds_noise,
        "rejected_count": len(rej),
        "rejected": rej,
    }


def _is_filter(report: Mapping[str, Any]) -> bool:
    return bool(report.get("rejected_count", 0)) or bool(report.get("filters", True))


# ---------------------------------------------------------------------------------------------
# the base of every stage made here
# ---------------------------------------------------------------------------------------------
class _Stage:
    """Validates ``X`` and ``weights`` and delegates to :meth:`_run`."""

    def __call__(self, X: np.ndarray, *, weights: np.ndarray | None = None) -> AggregateOutput:
        x = _matrix(X)
        return self._run(x, _weights(weights, x.shape[0]))

    def _run(self, X: np.ndarray, weights: np.ndarray | None) -> AggregateOutput:
        raise NotImplementedError


def _as_aggregator(inner: Any) -> _Stage:
    if isinstance(inner, _Stage):
        return inner
    return from_callable(inner)


class _FromCallable(_Stage):
    def __init__(self, fn: Callable[..., Any], name: str | None, kind: str) -> None:
        if not callable(fn):
            raise AggregatorError(f"the inner aggregator must be callable, got {fn!r}")
        if kind not in KINDS:
            raise PrivacyParameterError(f"kind must be one of {KINDS}, got {kind!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.kind = kind

    def __repr__(self) -> str:
        return f"from_callable({self.name})"

    def _run(self, X: np.ndarray, weights: np.ndarray | None) -> AggregateOutput:
        n, d = X.shape
        out = self.fn(X) if weights is None else self.fn(X, weights=weights)
        where = f"aggregator {self.name!r}"
        if hasattr(out, "accepted") and hasattr(out, "vector"):
            accepted = np.asarray(out.accepted)
            if accepted.shape != (n,) or accepted.dtype != np.bool_:
                raise AggregatorError(
                    f"{where} returned accepted of {accepted.dtype} {accepted.shape}, "
                    f"expected a bool mask of shape ({n},)"
                )
            vector = None if out.vector is None else self._vector(out.vector, d, where)
            stages = tuple(_native(dict(s)) for s in getattr(out, "stages", ()) or ())
            if not stages:
                stages = (_unknown_report(self.name, np.flatnonzero(~accepted)),)
            kind = out.kind if isinstance(out, AggregateOutput) else self.kind
            return AggregateOutput(vector, accepted.copy(), stages, kind)
        vector = self._vector(out, d, where)
        accepted = np.ones(n, dtype=bool)
        return AggregateOutput(vector, accepted, (_unknown_report(self.name, ()),), self.kind)

    @staticmethod
    def _vector(v: Any, d: int, where: str) -> np.ndarray:
        vec = np.asarray(v)
        if vec.shape != (d,) or not np.issubdtype(vec.dtype, np.number):
            raise AggregatorError(
                f"{where} returned a vector of {vec.dtype} {vec.shape}, expected length {d}"
            )
        return vec


def _native(value: Any) -> Any:
    """``value`` with numpy scalars and arrays (at any depth of dicts, lists and tuples) turned
    into Python numbers and lists, so that a wrapped rule's report is as JSON-able as ours."""
    if isinstance(value, dict):
        return {k: _native(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_native(v) for v in value]
    if isinstance(value, np.ndarray):
        return _native(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unknown_report(name: str, rejected: Sequence[int]) -> Report:
    # a wrapped plain function: nothing is known about it, so it may filter (no "filters" key)
    rej = [int(i) for i in rejected]
    return {"stage": name, "rejected_count": len(rej), "rejected": rej}


def from_callable(
    fn: Callable[..., Any], *, name: str | None = None, kind: str = "mean"
) -> Aggregator:
    """Wrap a rule as an :class:`Aggregator`.

    ``fn(X)`` (or ``fn(X, weights=w)`` when weights are given) may return

    * an object with ``.vector``, ``.accepted`` and ``.stages`` -- e.g. ``lambda X:
      robust.aggregate_detailed(X, "multi_krum", f=2)`` -- whose mask and reports are kept
      (the reports are copied, numpy values as Python numbers and lists, otherwise unchanged;
      without any, one report names the rejected rows);
    * an :class:`AggregateOutput` (its ``kind`` is kept);
    * a plain vector of length ``d``: every row is accepted and the report is ``{"stage":
      name, "rejected_count": 0, "rejected": []}``.

    Args:
        fn: the rule. It must accept ``weights=`` if the composition is called with weights.
        name: the stage name for a plain function (default ``fn.__name__``).
        kind: what ``fn``'s vector is: ``"mean"`` (robust rules) or ``"sum"``.

    Raises:
        AggregatorError: ``fn`` is not callable (now), or returns a mask that is not bool of
            shape ``(n,)`` or a vector that is not of length ``d`` (when called).
        PrivacyParameterError: ``kind`` is neither ``"mean"`` nor ``"sum"``.
    """
    return _FromCallable(fn, name, kind)


# ---------------------------------------------------------------------------------------------
# leaves
# ---------------------------------------------------------------------------------------------
class _Leaf(_Stage):
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"{self.kind}()"

    def _run(self, X: np.ndarray, weights: np.ndarray | None) -> AggregateOutput:
        bad = np.flatnonzero(~np.all(np.isfinite(X), axis=1))
        if bad.size:
            raise AggregatorError(
                f"{self.kind}(): rows {bad.tolist()} are not finite; a plain {self.kind} has no "
                "filter to drop them (wrap a robust rule with from_callable)"
            )
        if weights is None:
            vec = X.sum(axis=0) if self.kind == "sum" else X.mean(axis=0)
        else:
            vec = weights @ X.astype(np.float64)
            if self.kind == "mean":
                vec = vec / weights.sum()
            vec = vec.astype(X.dtype)
        rep = _report(self.kind, weighted=weights is not None)
        return AggregateOutput(vec, np.ones(X.shape[0], dtype=bool), (rep,), self.kind)


def mean() -> Aggregator:
    """The mean of all rows (weighted by ``weights`` when given): the plain FedAvg leaf.

    Accepts every row; its report says whether it was weighted. Raises
    :class:`~dp.errors.AggregatorError` when called on non-finite rows (it has no filter)."""
    return _Leaf("mean")


def sum() -> Aggregator:
    """The sum of all rows (``sum_i w_i x_i`` with weights). As :func:`mean`, with ``kind
    "sum"``; :func:`central_noise` then noises the vector as it is."""
    return _Leaf("sum")


# ---------------------------------------------------------------------------------------------
# clipping
# ---------------------------------------------------------------------------------------------
def _clip_rows(X: np.ndarray, clip_norm: float) -> tuple[np.ndarray, np.ndarray, Report]:
    """Clip the finite rows; non-finite rows pass unchanged for the filter to reject.
    Returns the rows, the per-row ``clipped`` mask and the measurements."""
    finite = np.all(np.isfinite(X), axis=1)
    Y = X.copy()
    clipped = np.zeros(X.shape[0], dtype=bool)
    max_norm = 0.0
    if finite.any():
        Y[finite], rep = clip_updates(X[finite], clip_norm)
        clipped[finite] = rep.clipped
        max_norm = float(rep.norms.max())
    idx = np.flatnonzero(clipped)
    measurements = {
        "clip_norm": float(clip_norm),
        "clipped_count": int(idx.size),
        "clipped": idx.tolist(),
        "max_input_norm": max_norm,
        "non_finite": np.flatnonzero(~finite).tolist(),
    }
    return Y, clipped | ~finite, measurements


class _Clipping(_Stage):
    def __init__(self, inner: Any, clip_norm: float) -> None:
        self.clip_norm = _positive(clip_norm, "clip_norm")
        self.inner = _as_aggregator(inner)

    def __repr__(self) -> str:
        return f"clipping({self.inner!r}, {self.clip_norm})"

    def _run(self, X: np.ndarray, weights: np.ndarray | None) -> AggregateOutput:
        Y, _, measurements = _clip_rows(X, self.clip_norm)
        out = self.inner(Y, weights=weights)
        return replace(out, stages=(_report("clip", **measurements), *out.stages))


def clipping(inner: Aggregator | Callable[..., Any], clip_norm: float) -> Aggregator:
    """Clip every row to L2 norm ``clip_norm``, then run ``inner`` on the clipped rows.

    Guarantee: every finite row ``inner`` receives has norm ``<= clip_norm`` (up to one
    rounding); rows with NaN/Inf cannot be clipped and pass unchanged, for a filter to reject.
    The report, placed before ``inner``'s: ``{"stage": "clip", "clip_norm", "clipped_count",
    "clipped": [rows clipped], "max_input_norm" (over finite rows), "non_finite": [rows],
    "filters": False, "adds_noise": False, "rejected_count": 0, "rejected": []}``. Weights pass
    to ``inner`` unchanged. A non-:class:`Aggregator` callable ``inner`` is wrapped by
    :func:`from_callable`.

    Raises:
        PrivacyParameterError: ``clip_norm`` is not finite and > 0 (now); bad ``X`` or
            ``weights`` (when called).
        AggregatorError: ``inner`` is not callable.
    """
    return _Clipping(inner, clip_norm)


class _AdaptiveClipping(_Stage):
    def __init__(
        self, inner: Any, clipper: AdaptiveClipper, source: NoiseSource, sampling_rate: float
    ) -> None:
        self.clipper = _instance(clipper, AdaptiveClipper, "clipper")
        self.source = _instance(source, NoiseSource, "source")
        self.sampling_rate = _rate(sampling_rate)
        self.inner = _as_aggregator(inner)

    def __repr__(self) -> str:
        return f"adaptive_clipping({self.inner!r}, target_quantile={self.clipper.target_quantile})"

    def _run(self, X: np.ndarray, weights: np.ndarray | None) -> AggregateOutput:
        c = self.clipper
        Y, over, measurements = _clip_rows(X, c.clip_norm)
        out = self.inner(Y, weights=weights)  # the clipper moves only once the round went through
        next_norm = c.update(~over, self.source)
        count_z = c.noise_multipliers[1]
        report = _report(
            "adaptive_clip",
            **measurements,
            target_quantile=c.target_quantile,
            unclipped_fraction=float(c.last_fraction),
            next_clip_norm=float(next_norm),
            update_noise_multiplier=c.update_noise_multiplier,
            count_noise_multiplier=count_z,
            sampling_rate=self.sampling_rate,
            event=event_to_dict(GaussianEvent((count_z,), self.sampling_rate)),
        )
        return replace(out, stages=(report, *out.stages))


def adaptive_clipping(
    inner: Aggregator | Callable[..., Any],
    clipper: AdaptiveClipper,
    source: NoiseSource,
    *,
    sampling_rate: float = 1.0,
) -> Aggregator:
    """Clip every row to the clipper's current norm, run ``inner``, then move the norm towards
    the target quantile of the row norms (Andrew et al. 2021; :class:`dp.AdaptiveClipper`).

    Per call: rows are clipped to ``C_t = clipper.clip_norm`` exactly as :func:`clipping` does
    (non-finite rows count as clipped); after ``inner`` returns, the clipper releases the
    noised unclipped fraction (one Gaussian draw from ``source``) and sets ``C_{t+1}``. If
    ``inner`` raises, the clipper is unchanged.

    The report (``"stage": "adaptive_clip"``) has :func:`clipping`'s measurements with
    ``"clip_norm": C_t``, and ``"target_quantile"``, ``"unclipped_fraction"`` (the noised,
    released fraction), ``"next_clip_norm"``, ``"update_noise_multiplier"`` (``z_Delta``: use it
    as the noise multiplier of :func:`central_noise`), ``"count_noise_multiplier"`` (``2
    sigma_b``) and ``"event"``: the count query's :class:`dp.GaussianEvent`, Poisson-sampled at
    ``sampling_rate``, as :func:`dp.accounting.event_to_dict` describes it. :func:`central_noise`
    with an accountant charges this event together with its own, as one event on the same
    sampled clients; without one, charge it yourself (``acc.compose(event_from_dict(...))``).

    Raises:
        AggregatorError: ``clipper`` or ``source`` of the wrong type, ``inner`` not callable.
        PrivacyParameterError: ``sampling_rate`` not in (0, 1]; bad ``X`` or ``weights``.
    """
    return _AdaptiveClipping(inner, clipper, source, sampling_rate)


# ---------------------------------------------------------------------------------------------
# noise
# ---------------------------------------------------------------------------------------------
def _norm_bound(stages: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], float] | None:
    """The stage that bounds the rows' norm most tightly, and its bound (None if none does)."""
    best: tuple[Mapping[str, Any], float] | None = None
    for s in stages:
        if s.get("stage") in ("clip", "adaptive_clip") and "clip_norm" in s:
            bound = float(s["clip_norm"])
        elif s.get("stage") in _ROBUST_NORM_BOUNDS and "max_norm" in s:
            bound = float(s["max_norm"])
        else:
            continue
        if best is None or bound < best[1]:
            best = (s, bound)
    return best


class _CentralNoise(_Stage):
    def __init__(
        self,
        inner: Any,
        mechanism: CentralGaussian,
        source: NoiseSource,
        accountant: Accountant | None,
        sampling_rate: float,
        assume_clipped: bool,
    ) -> None:
        self.mechanism = _instance(mechanism, CentralGaussian, "mechanism")
        self.source = _instance(source, NoiseSource, "source")
        if accountant is not None:
            _instance(accountant, Accountant, "accountant")
        self.accountant = accountant
        self.sampling_rate = _rate(sampling_rate)
        self.assume_clipped = bool(assume_clipped)
        self.inner = _as_aggregator(inner)

    def __repr__(self) -> str:
        return f"central_noise({self.inner!r}, z={self.mechanism.noise_multiplier})"

    def _mechanism(self, out: AggregateOutput) -> tuple[CentralGaussian, str | None]:
        """The mechanism for this round and the stage that bounds the norms."""
        found = _norm_bound(out.stages)
        mech = self.mechanism
        if found is None:
            if self.assume_clipped:
                return mech, None
            raise PlacementError(
                "central_noise: no stage before the noise bounds the updates' norm, so noise "
                f"calibrated for clip norm {mech.clip_norm} protects nothing; wrap the inner "
                "aggregator in clipping(...) or adaptive_clipping(...), or pass "
                "assume_clipped=True if the clients clip"
            )
        stage, bound = found
        if stage["stage"] == "adaptive_clip":  # the noise follows the round's clip norm
            return CentralGaussian(mech.noise_multiplier, bound), "adaptive_clip"
        if bound > mech.clip_norm * (1 + 1e-12):
            raise PlacementError(
                f"central_noise: stage {stage['stage']!r} bounds norms by {bound}, but the noise "
                f"is calibrated for clip norm {mech.clip_norm}"
            )
        return mech, str(stage["stage"])

    def _event(self, out: AggregateOutput, z: float) -> GaussianEvent:
        zs = [z]
        for s in out.stages:
            ev = s.get("event") if s.get("stage") == "adaptive_clip" else None
            if isinstance(ev, dict):
                try:
                    ev = event_from_dict(ev)
                except DPError as exc:
                    raise AggregatorError(f"adaptive_clip report: bad event {ev!r}") from exc
            if isinstance(ev, GaussianEvent):
                if ev.sampling_rate != self.sampling_rate:
                    raise PrivacyParameterError(
                        f"adaptive_clip samples at {ev.sampling_rate} but central_noise at "
                        f"{self.sampling_rate}: one round has one sampling rate"
                    )
                zs.extend(ev.noise_multipliers)
        return GaussianEvent(tuple(zs), self.sampling_rate)

    def _run(self, X: np.ndarray, weights: np.ndarray | None) -> AggregateOutput:
        if weights is not None:
            raise PrivacyParameterError(
                "central_noise is unweighted: its sensitivity is one clipped update on the sum "
                "of the accepted rows, which a weighted mean does not have"
            )
        out = self.inner(X)
        if out.vector is None:
            raise AggregatorError(
                "central_noise needs an aggregate vector; the inner rule ran "
                "on distances only (sum the accepted rows first)"
            )
        m = out.accepted_count
        if m == 0:
            raise AggregatorError("central_noise: the inner aggregator accepted no row")
        vec = np.asarray(out.vector, dtype=np.float64)
        if not np.all(np.isfinite(vec)):
            raise AggregatorError("central_noise: the inner aggregate is not finite")
        mech, bound_stage = self._mechanism(out)
        total = vec * m if out.kind == "mean" else vec
        noised, noise = mech.add_noise(total, self.source)
        event = self._event(out, mech.noise_multiplier)
        measurements: dict[str, Any] = {
            "mechanism": noise.mechanism,
            "noise_multiplier": mech.noise_multiplier,
            "clip_norm": mech.clip_norm,
            "norm_bound_stage": bound_stage,
            "sigma_sum": noise.sigma,
            "sigma_mean": noise.sigma / m,
            "accepted_count": m,
            "summed": np.flatnonzero(out.accepted).tolist(),
            "sampling_rate": self.sampling_rate,
            "event": event_to_dict(event),
            "effective_noise_multiplier": event.effective_noise_multiplier,
            "epsilon": None,
            "delta": None,
            "rounds": None,
        }
        if self.accountant is not None:
            self.accountant.compose(event)
            measurements.update(
                epsilon=self.accountant.epsilon(),
                delta=self.accountant.delta,
                rounds=self.accountant.rounds,
            )
        result = noised / m if out.kind == "mean" else noised
        report = _report("central_noise", adds_noise=True, **measurements)
        return replace(out, vector=result, stages=(*out.stages, report))


def central_noise(
    inner: Aggregator | Callable[..., Any],
    mechanism: CentralGaussian,
    source: NoiseSource,
    accountant: Accountant | None = None,
    sampling_rate: float = 1.0,
    *,
    assume_clipped: bool = False,
) -> Aggregator:
    """Run ``inner``, then add Gaussian noise to the **sum** of the rows it accepted.

    With ``m`` accepted rows and a ``"mean"`` aggregate ``v``, the output is ``(m v + N(0,
    sigma^2 I)) / m``, i.e. noise of std ``sigma = z C`` on the sum and ``sigma / m`` on the mean
    (a ``"sum"`` aggregate gets ``N(0, sigma^2 I)`` as it is). The noise is drawn after the
    filter: the rows ``inner`` read were noise-free. The output vector is float64.

    The clip norm ``C``: the tightest bound that a stage inside reports (:func:`clipping`,
    robust's ``clip`` / ``norm_filter`` ``max_norm``) must be ``<= mechanism.clip_norm``, and
    ``sigma = mechanism.sigma``; with :func:`adaptive_clipping` inside, ``sigma =
    mechanism.noise_multiplier * C_t`` follows the round's clip norm (pass ``z_Delta``,
    ``clipper.update_noise_multiplier``, as the mechanism's multiplier).

    Privacy: each call is one round of the Gaussian mechanism with multiplier ``z`` on a sum of
    updates of norm ``<= C``, Poisson-sampled at ``sampling_rate``; with an adaptive clip inside
    the event also holds the count query (``(z, 2 sigma_b)``, one sampled round). With an
    ``accountant`` that event is composed on every call and the report gives ``"epsilon"``
    spent so far (at ``accountant.delta``) and ``"rounds"``. Not analysed: a filter's
    data-dependent choice of the ``m`` rows (adding one client can change which others it
    keeps), and rules whose aggregate is not the mean of the accepted rows (coordinate-wise
    medians, NNM mixing), whose sensitivity is not ``C``.

    The report (``"stage": "central_noise"``, after ``inner``'s): ``"mechanism"``,
    ``"noise_multiplier"``, ``"clip_norm"``, ``"norm_bound_stage"``, ``"sigma_sum"``,
    ``"sigma_mean"``, ``"accepted_count"``, ``"summed"`` (the rows noised), ``"sampling_rate"``,
    ``"event"`` (the composed event, as :func:`dp.accounting.event_to_dict` describes it),
    ``"effective_noise_multiplier"``, ``"epsilon"``/``"delta"``/``"rounds"``
    (None without an accountant), ``"adds_noise": True``.

    Raises:
        AggregatorError: wrong types (now); no vector, no accepted row or a non-finite
            aggregate from ``inner`` (when called).
        PlacementError: no stage bounds the norms (unless ``assume_clipped=True``: the caller
            vouches the rows are clipped to ``mechanism.clip_norm``), or the bound exceeds
            ``mechanism.clip_norm``.
        PrivacyParameterError: ``sampling_rate`` not in (0, 1]; weights given (the stage is
            unweighted); an adaptive clip sampled at another rate; bad ``X``.
    """
    return _CentralNoise(inner, mechanism, source, accountant, sampling_rate, assume_clipped)


class _RowNoise(_Stage):
    def __init__(self, inner: Any, mechanism: CentralGaussian, source: NoiseSource) -> None:
        self.mechanism = _instance(mechanism, CentralGaussian, "mechanism")
        self.source = _instance(source, NoiseSource, "source")
        self.inner = _as_aggregator(inner)

    def __repr__(self) -> str:
        return f"row_noise({self.inner!r}, z={self.mechanism.noise_multiplier})"

    def _run(self, X: np.ndarray, weights: np.ndarray | None) -> AggregateOutput:
        n, d = X.shape
        share = self.mechanism.sigma / math.sqrt(n)
        noise = self.source.normal(n * d, share).reshape(n, d)
        out = self.inner((X + noise).astype(X.dtype), weights=weights)
        report = _report(
            "row_noise",
            adds_noise=True,
            placement="before_filter",
            mechanism="gaussian",
            noise_multiplier=self.mechanism.noise_multiplier,
            clip_norm=self.mechanism.clip_norm,
            sigma_share=share,
            sigma_sum=self.mechanism.sigma,
            noised=list(range(n)),
        )
        return replace(out, stages=(report, *out.stages))


def row_noise(
    inner: Aggregator | Callable[..., Any], mechanism: CentralGaussian, source: NoiseSource
) -> Aggregator:
    """Add every row a share ``N(0, sigma^2 / n)`` of the noise, then run ``inner``: noise
    *before* the filter, which the design forbids. It exists to measure that harm (the filter
    reads the noisy rows); :func:`check_placement` refuses its output when a filter follows.

    The report (``"stage": "row_noise"``, before ``inner``'s) has ``"placement":
    "before_filter"``, ``"sigma_share"``, ``"sigma_sum"`` (what the sum of all ``n`` shares
    carries), ``"noised"`` (every row) and ``"adds_noise": True``. No privacy is accounted:
    the filter may drop honest rows and their shares with them.

    Raises:
        AggregatorError: wrong types, ``inner`` not callable.
        PrivacyParameterError: bad ``X`` or ``weights`` (when called).
    """
    return _RowNoise(inner, mechanism, source)


# ---------------------------------------------------------------------------------------------
# placement
# ---------------------------------------------------------------------------------------------
def check_placement(
    output: AggregateOutput | Sequence[Mapping[str, Any]],
) -> AggregateOutput | Sequence[Mapping[str, Any]]:
    """Refuse an aggregation in which noise entered the statistics a filter read.

    A stage *adds noise* if its report says ``"adds_noise": True``; it *filters* if it rejected
    a row, or its report does not say ``"filters": False`` (a wrapped rule may reject rows even
    when this round it did not). Returns ``output`` unchanged when no noise stage precedes a
    filtering stage.

    Args:
        output: an :class:`AggregateOutput`, or any object with ``.stages``, or the reports.

    Raises:
        PlacementError: naming the noise stage and the filter after it.
        AggregatorError: ``output`` has no stage reports.
    """
    stages = getattr(output, "stages", output)
    if isinstance(stages, str | bytes) or not isinstance(stages, Sequence):
        raise AggregatorError(f"check_placement needs stage reports, got {type(output).__name__}")
    noise: str | None = None
    for report in stages:
        if not isinstance(report, Mapping):
            raise AggregatorError(f"a stage report must be a mapping, got {report!r}")
        if noise is not None and _is_filter(report):
            raise PlacementError(
                f"noise stage {noise!r} precedes filtering stage {report.get('stage')!r}: the "
                "filter would read noisy statistics (noise must never enter what the filter "
                "reads; add noise after the filter, e.g. central_noise around it)"
            )
        if report.get("adds_noise"):
            noise = str(report.get("stage"))
    return output
