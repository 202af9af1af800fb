"""Typed errors raised by :mod:`dp`.

Every error derives from :class:`DPError`, itself a :class:`fortis.FortisError` and a
``ValueError`` (each one is a caller's bad input or an unreachable privacy target), so a caller can
catch the whole family with one clause. Messages name the field and the bound that failed.
"""

from __future__ import annotations

from fortis.errors import FortisError

__all__ = [
    "DPError",
    "PrivacyParameterError",
    "UnsupportedMechanismError",
    "CalibrationError",
    "ModularWrapError",
    "AccountantStateError",
    "UnsupportedDefenceError",
    "DetectionRefusedError",
    "AggregatorError",
    "PlacementError",
]


class DPError(FortisError, ValueError):
    """Base class of every error raised by :mod:`dp`."""


class PrivacyParameterError(DPError):
    """A scalar or array parameter is out of range (``epsilon``, ``delta``, ``noise_multiplier``,
    ``sampling_rate``, ``clip_norm``, ``sigma`` ...), non-finite, or of the wrong shape."""


class UnsupportedMechanismError(DPError):
    """The chosen accounting method cannot account for this mechanism (e.g. the PLD accountant
    and the distributed discrete Gaussian, whose privacy is only known as an RDP curve)."""


class CalibrationError(DPError):
    """No noise level in the searched range meets the privacy target."""


class ModularWrapError(DPError):
    """The probability that any coordinate of the modular (SecAgg) sum wraps around exceeds the
    allowed threshold for the configured bit width. The message gives the bound and the bits."""


class AccountantStateError(DPError):
    """A serialised accountant is malformed (unknown version, method or event kind, or a field
    with the wrong type or range)."""


class UnsupportedDefenceError(CalibrationError):
    """The calibrator has no detection model for this defence (the message lists those it
    has)."""


class DetectionRefusedError(CalibrationError):
    """The noise, as placed, would hide the attack class the caller asked to stop: the filter
    would catch it only at deviations no update within the norm bound can carry. Raised by
    :func:`dp.calibrate` unless ``override=True``."""


class AggregatorError(DPError):
    """A composed aggregation (:mod:`dp.aggregators`) is malformed: an inner aggregator that is
    not callable or returns something a stage cannot use (an ``accepted`` mask of the wrong
    shape, a vector of the wrong length, no vector or no accepted row where noise needs them, a
    non-finite aggregate), or a stage given the wrong kind of object."""


class PlacementError(AggregatorError):
    """Noise sits where the design forbids it: a noise stage precedes a stage that filters
    (the filter would read noisy statistics), or central noise is added with no stage before it
    bounding the updates' norm to the clip norm the noise is calibrated for."""
