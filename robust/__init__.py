"""fortis.robust — Byzantine-robust aggregation rules on numpy arrays.

Every rule takes an (n, d) float32/float64 array ``X`` (one row per client update), never
modifies it, and returns a length-d vector of the same dtype. Rows containing NaN/Inf are
Byzantine: they are removed (and reported) before the rule runs and count against ``f``,
so every rule returns a finite vector whenever at most f rows are non-finite.

Robust rules are unweighted. Rules that accept ``weights=`` expect *trusted* weights (for
example :meth:`Reputation.weights`): a client's self-reported example count is
attacker-controlled and must not be used as a weight.

Entry points: :func:`aggregate` (vector) and :func:`aggregate_detailed`
(:class:`AggregationResult` with accepted set, scores, verdicts, stage reports). Every rule
takes ``f`` as a keyword. Rule names are in :data:`RULES`; :data:`DISTANCE_RULES` can run
from a distance/Gram matrix only (the secure path), :data:`COORDINATE_RULES` need
coordinates. The stages and their parameter schemas come from one registry
(:mod:`robust.registry`): :func:`stages`, :func:`stage_schema`, :func:`stage_help` and
:func:`check_pipeline` show and check them without data, e.g. for a CLI. This package has
no dependency besides numpy. :func:`kernel_status` says whether the optional compiled
kernels are in use.
"""

from . import distances, errors
from ._native import kernel_status
from .auto_f import OutlierEstimate, estimate_f, estimate_outliers
from .clipping import centered_clipping, clip, norm_filter
from .coordinate import mean, median, trimmed_mean
from .distances import (
    distances_from_gram,
    gram,
    gram_from_distances,
    pairwise_sq_distances,
    sq_distances_to,
)
from .errors import (
    AggregationError,
    DistanceOnlyError,
    InputShapeError,
    InsufficientClientsError,
    ParameterError,
    ReputationStateError,
    RobustError,
    UnknownRuleError,
    WeightsError,
)
from .filters import distance_filter, distance_filter_select
from .geomed import geometric_median, rfa, weiszfeld_coefficients
from .krum_rules import bulyan, krum, krum_scores, krum_select, multi_krum, multi_krum_select
from .mixing import bucketing, nnm
from .pipeline import aggregate, aggregate_detailed
from .registry import (
    COORDINATE_RULES,
    DISTANCE_RULES,
    PRE_AGGREGATORS,
    RULES,
    check_pipeline,
    stage_help,
    stage_schema,
    stages,
)
from .reputation import Reputation
from .result import AggregationResult
from .voting import sign_vote

__all__ = [
    "AggregationError",
    "AggregationResult",
    "COORDINATE_RULES",
    "DISTANCE_RULES",
    "DistanceOnlyError",
    "InputShapeError",
    "InsufficientClientsError",
    "OutlierEstimate",
    "PRE_AGGREGATORS",
    "ParameterError",
    "RULES",
    "Reputation",
    "ReputationStateError",
    "RobustError",
    "UnknownRuleError",
    "WeightsError",
    "aggregate",
    "aggregate_detailed",
    "bucketing",
    "bulyan",
    "centered_clipping",
    "check_pipeline",
    "clip",
    "distance_filter",
    "distance_filter_select",
    "distances",
    "distances_from_gram",
    "errors",
    "estimate_f",
    "estimate_outliers",
    "geometric_median",
    "gram",
    "gram_from_distances",
    "kernel_status",
    "krum",
    "krum_scores",
    "krum_select",
    "mean",
    "median",
    "multi_krum",
    "multi_krum_select",
    "nnm",
    "norm_filter",
    "pairwise_sq_distances",
    "rfa",
    "sign_vote",
    "sq_distances_to",
    "stage_help",
    "stage_schema",
    "stages",
    "trimmed_mean",
    "weiszfeld_coefficients",
]
