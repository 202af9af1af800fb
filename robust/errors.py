"""Typed errors raised by :mod:`robust`.

Every error derives from :class:`RobustError`, itself a :class:`fortis.FortisError` and a
:class:`ValueError`, so callers that
only want "bad input to an aggregation rule" can catch one type. Messages name the field
(``X``, ``f``, ``weights``, ``distances`` ...) and, where it applies, the bound that failed.
"""

from __future__ import annotations

from fortis.errors import FortisError

__all__ = [
    "RobustError",
    "InputShapeError",
    "InsufficientClientsError",
    "WeightsError",
    "ParameterError",
    "UnknownRuleError",
    "DistanceOnlyError",
    "AggregationError",
    "ReputationStateError",
]


class RobustError(FortisError, ValueError):
    """Base class of every error raised by :mod:`robust`."""


class InputShapeError(RobustError):
    """An input array has the wrong shape, dtype or layout (e.g. ``X`` is not a 2-D float
    array, a distance matrix is not square, a centre has the wrong length)."""


class InsufficientClientsError(RobustError):
    """There are too few rows for the requested ``f``. The message names the bound, e.g.
    ``"bulyan needs n >= 4f+3 = 11, got n=9 (f=2)"``."""


class WeightsError(RobustError):
    """Client weights are malformed: wrong length, negative, non-finite, or all zero."""


class ParameterError(RobustError):
    """A scalar parameter (``f``, ``m``, ``tau``, ``max_norm``, ``s`` ...) is out of range."""


class UnknownRuleError(RobustError):
    """A rule, pre-aggregator or post-rule stage name is not registered (see
    :func:`robust.stages`, :data:`robust.RULES`, :data:`robust.PRE_AGGREGATORS`)."""


class DistanceOnlyError(RobustError):
    """A rule or pre-aggregator needs coordinates but only distances/Gram were given."""


class AggregationError(RobustError):
    """A rule produced an unusable result (e.g. a user-supplied callable returned a
    non-finite vector)."""


class ReputationStateError(RobustError):
    """A saved :class:`robust.Reputation` state is unreadable or fails validation."""
