"""Result objects returned by the detailed aggregation API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["AggregationResult", "RuleOutput"]

ACCEPTED = "accepted"
NON_FINITE = "rejected:non_finite"


@dataclass(frozen=True)
class AggregationResult:
    """Everything one aggregation decided, indexed by the ORIGINAL n clients.

    Attributes:
        vector: the aggregate (dtype of the input), or ``None`` in distance-only mode (no
            ``X`` given). For every rule in :data:`robust.DISTANCE_RULES` the aggregate is the
            mean of the accepted rows (weighted by the trusted weights when given), so a
            secure pipeline can compute it as a masked sum over ``accepted``.
        accepted: bool array (n,). Whether the client's update contributed to ``vector``
            (see each rule's docstring and :func:`robust.aggregate_detailed` for
            coordinate-wise rules and mixing pre-aggregators).
        scores: float array (n,) or ``None``; meaning per rule in ``info["score_kind"]``.
            NaN for clients removed before the rule ran.
        verdicts: one string per client: ``"accepted"`` or ``"rejected:<stage>"`` (e.g.
            ``"rejected:krum"``, ``"rejected:non_finite"``, ``"rejected:norm"``).
        f: the f the rule used (resolved when ``f="auto"``; counts non-finite rows).
        stages: per-stage reports in pipeline order: one for every stage given (pre,
            rule, post), plus ``non_finite`` when rows were dropped and ``estimate_f`` for
            ``f="auto"``. Each has ``"stage"``, the stage's measurements, and whom it
            rejected (``"rejected_count"``, ``"rejected"``: client indices), e.g.
            ``{"stage": "clip", "max_norm": 1.0, "clipped_count": 3, "clipped": [...],
            "max_input_norm": 7.2, "rejected_count": 0, "rejected": []}``.
        info: rule details (iterations, converged, selected rows, score_kind ...).
        rule: name of the rule (or the callable's ``__name__``).
    """

    vector: np.ndarray | None
    accepted: np.ndarray
    scores: np.ndarray | None
    verdicts: tuple[str, ...]
    f: int
    stages: tuple[dict[str, Any], ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    rule: str = ""

    @property
    def n(self) -> int:
        return len(self.verdicts)

    @property
    def accepted_indices(self) -> np.ndarray:
        return np.flatnonzero(self.accepted)

    @property
    def rejected_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.accepted)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (without the vector)."""
        return {
            "rule": self.rule,
            "f": self.f,
            "accepted": self.accepted.tolist(),
            "scores": None
            if self.scores is None
            else [None if not np.isfinite(s) else float(s) for s in self.scores],
            "verdicts": list(self.verdicts),
            "stages": [dict(s) for s in self.stages],
            "info": {k: _jsonable(v) for k, v in self.info.items()},
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


@dataclass
class RuleOutput:
    """What a rule core returns about the rows it was given (internal)."""

    vector: np.ndarray | None
    accepted: np.ndarray
    scores: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
