"""Parameter schemas: each parameter of a robust stage is declared once, as a :class:`Param`.

A ``Param`` has a name, a :class:`Kind` (its type and bound, and the check that enforces
them) and a one-line doc. The rule modules declare their parameters next to the function
that takes them and validate with them; :mod:`robust.registry` lists them per stage (the
defaults come from the function's signature), and :func:`robust.stage_schema` shows them,
so a CLI can validate ``--defence krum:neighbours=3`` and print help from the same source.

Checks return the normalised value (e.g. ``float`` for a real) or raise
:class:`~robust.errors.ParameterError` (:class:`~robust.errors.InputShapeError` for a
malformed vector) naming the parameter. Bounds that depend on the number of rows ``n``
(``neighbours <= n − 1``) are checked only when ``n`` is known (:class:`Limits`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validate import check_int, check_positive, check_vector
from .errors import InputShapeError, ParameterError

__all__ = [
    "Kind",
    "Limits",
    "Param",
    "integer",
    "positive",
    "non_negative",
    "FUNCTION",
    "RNG",
    "SCALE_OR_MEDIAN_NORM",
    "SEED",
    "SUPER_MAJORITY",
    "VECTOR",
]


@dataclass(frozen=True)
class Limits:
    """What is known about the rows a stage will see: ``n`` rows and ``d`` coordinates
    (None: not known yet, as when a CLI validates a spec before any data exists)."""

    n: int | None = None
    d: int | None = None


@dataclass(frozen=True)
class Kind:
    """A parameter type: ``type`` and ``bound`` are for people (help text, schemas);
    ``check(value, name, limits)`` enforces them and returns the normalised value."""

    type: str
    bound: str
    check: Callable[[object, str, Limits], object]
    needs_n: bool = False  # the bound depends on the number of rows


@dataclass(frozen=True)
class Param:
    """One parameter of a stage. ``state`` marks per-call state that the caller supplies
    every round (the centre of centered clipping), not configuration: a spec checked
    without data may leave it out."""

    name: str
    kind: Kind
    doc: str
    state: bool = False

    def check(self, value: object, limits: Limits | None = None) -> Any:
        """The normalised value; raises :class:`ParameterError` / :class:`InputShapeError`
        naming this parameter."""
        return self.kind.check(value, self.name, limits or Limits())

    def describe(self) -> dict[str, Any]:
        """JSON-friendly ``{"name", "type", "bound", "doc", "state"}``."""
        return {
            "name": self.name,
            "type": self.kind.type,
            "bound": self.kind.bound,
            "doc": self.doc,
            "state": self.state,
        }


def positive() -> Kind:
    """A finite real > 0."""
    return Kind("float", "> 0", lambda v, name, _: check_positive(v, name))


def non_negative() -> Kind:
    """A finite real >= 0."""
    return Kind("float", ">= 0", lambda v, name, _: check_positive(v, name, allow_zero=True))


def integer(lo: int, hi: Callable[[int], int] | None = None, hi_text: str = "") -> Kind:
    """An integer >= ``lo``, and <= ``hi(n)`` when the number of rows n is known."""

    def check(v: object, name: str, limits: Limits) -> int:
        top = None if hi is None or limits.n is None else hi(limits.n)
        return check_int(v, name, lo, top)

    bound = f"[{lo}, {hi_text}]" if hi is not None else f">= {lo}"
    return Kind("int", bound, check, needs_n=hi is not None)


def _threshold(v: object, name: str, _: Limits) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ParameterError(f"{name} must be a real number in [0.5, 1), got {v!r}")
    t = float(v)
    if not 0.5 <= t < 1.0:
        raise ParameterError(f"{name} must be in [0.5, 1), got {v!r}")
    return t


def _scale(v: object, name: str, _: Limits) -> float | str:
    if v == "median_norm":
        return "median_norm"
    return check_positive(v, name)


def _vector(v: object, name: str, limits: Limits) -> np.ndarray:
    if limits.d is not None:
        return check_vector(v, limits.d, name)
    arr = np.asarray(v)
    if arr.ndim != 1:
        raise InputShapeError(f"{name} must be a vector, got shape {arr.shape}")
    return check_vector(arr, arr.shape[0], name)


def _function(v: object, name: str, _: Limits) -> object:
    if not callable(v):
        raise ParameterError(f"{name} must be callable")
    return v


def _seed(v: object, name: str, _: Limits) -> int:
    return check_int(v, name, 0)


def _rng(v: object, name: str, _: Limits) -> object:
    if isinstance(v, np.random.Generator):
        return v
    return check_int(v, name, 0)


#: A fraction in [0.5, 1) (the super-majority of a vote).
SUPER_MAJORITY = Kind("float", "[0.5, 1)", _threshold)
#: A real > 0 or the string "median_norm".
SCALE_OR_MEDIAN_NORM = Kind("float | 'median_norm'", "> 0", _scale)
#: A finite vector of length d.
VECTOR = Kind("vector", "length d, finite", _vector)
#: A callable.
FUNCTION = Kind("callable", "", _function)
#: A seed: an integer >= 0.
SEED = Kind("int", ">= 0", _seed)
#: A numpy Generator or an integer seed >= 0.
RNG = Kind("int | numpy.random.Generator", ">= 0", _rng)
