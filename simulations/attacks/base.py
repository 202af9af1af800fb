"""Interfaces shared by every attack: the round context, the two attack kinds, typed errors.

Theory of operation
-------------------
A *model-poisoning* attack sees one round through an :class:`AttackContext` and returns the
``(f, d)`` rows that the ``f`` Byzantine clients send instead of their honest updates. Two
switches shape what an attack may use:

``knowledge``
    ``"omniscient"``: the attacker's *view* is ``honest_updates``, every honest update of the
    round. ``"limited"``: the view is ``byzantine_updates``, the updates the Byzantine clients
    computed honestly on their own data; the honest clients' updates are never read.
``collusion``
    ``True``: the attackers pool their view and send one crafted vector, repeated on every row.
    ``False``: each attacker crafts its own row from its own view with its own random stream
    (``rng.spawn``). With limited knowledge an independent attacker's view is its own single
    update. With omniscient knowledge every attacker sees the same honest updates, so a
    deterministic attack gives identical rows either way; the switch then matters only for
    randomized attacks.

Statistics of a view (mean, coordinate-wise standard deviation) are computed in float64 and the
crafted rows are cast back to the dtype of the inputs. The standard deviation is the sample
standard deviation (``ddof=1``), as in the reference implementations of ALIE and min-max; a
view with a single row has no spread estimate and its standard deviation is defined as zero.
Attacks whose strength comes from the spread then degenerate, and they say so in
``last_info["degenerate"]``.

A *data-poisoning* attack rewrites a Byzantine client's training set before training
(:meth:`DataPoisoningAttack.poison`). It never mutates its inputs.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from simulations.errors import SimulationError

__all__ = [
    "KNOWLEDGE_LEVELS",
    "AttackConfigError",
    "AttackContext",
    "AttackError",
    "AttackInputError",
    "DataPoisoningAttack",
    "ModelPoisoningAttack",
    "PerViewAttack",
    "View",
    "check_choice",
    "check_int",
    "check_real",
    "validate_context",
]

KNOWLEDGE_LEVELS = ("omniscient", "limited")


class AttackError(SimulationError):
    """Base class of every error raised by the attack library."""


class AttackConfigError(AttackError):
    """An attack was configured wrongly: unknown name, unknown parameter or invalid value."""


class AttackInputError(AttackError):
    """An attack was called with malformed input (context arrays, training data, predictions)."""


@dataclass
class AttackContext:
    """Everything an attacker may know about one round.

    Attributes:
        honest_updates: ``(h, d)`` updates of the honest clients this round (what an
            omniscient attacker sees).
        byzantine_updates: ``(f, d)`` updates the ``f`` Byzantine clients would have sent if
            honest, computed on their own data.
        n_clients: total number of participating clients ``n = h + f``.
        round_idx: index of the round, from 0.
        rng: the random generator the attack draws from.
        aggregate: the configured defence, ``X (n, d) -> (d,)``; needed by adaptive attacks.
        previous_aggregate: last round's aggregate, if any.
        knowledge: ``"omniscient"`` or ``"limited"`` (the attacker only sees
            ``byzantine_updates``).
        collusion: ``True``: all Byzantine rows are one crafted vector; ``False``: each
            attacker crafts its own from its own view with independent randomness.
    """

    honest_updates: np.ndarray
    byzantine_updates: np.ndarray
    n_clients: int
    round_idx: int
    rng: np.random.Generator
    aggregate: Callable[[np.ndarray], np.ndarray] | None = None
    previous_aggregate: np.ndarray | None = None
    knowledge: str = "omniscient"
    collusion: bool = True

    @property
    def n_honest(self) -> int:
        return int(self.honest_updates.shape[0])

    @property
    def n_byzantine(self) -> int:
        return int(self.byzantine_updates.shape[0])

    @property
    def dim(self) -> int:
        return int(self.byzantine_updates.shape[1])


def _check_matrix(value: Any, field: str, attack: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.{field} must be a numpy array, "
            f"got {type(value).__name__}"
        )
    if value.ndim != 2:
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.{field} must be 2-D (rows, d), "
            f"got shape {value.shape}"
        )
    if not np.issubdtype(value.dtype, np.floating):
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.{field} must have a floating dtype, got {value.dtype}"
        )
    finite_rows = np.isfinite(value).all(axis=1)
    if not finite_rows.all():
        bad = np.flatnonzero(~finite_rows)[:5].tolist()
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.{field} has non-finite values in row(s) {bad}"
        )
    return value


def validate_context(
    ctx: Any, attack: str, *, need_byzantine: bool = True, need_aggregate: bool = False
) -> AttackContext:
    """Check a context's fields; raise :class:`AttackInputError` naming the bad field.

    Checks: both update arrays are finite 2-D floating arrays with the same ``d``;
    ``n_clients == h + f`` (with limited knowledge ``honest_updates`` may be empty, and then
    ``n_clients >= f``); ``knowledge`` is known; ``rng`` is a ``numpy.random.Generator``;
    ``f >= 1`` when ``need_byzantine``; ``h >= 1`` for an omniscient attacker; ``aggregate``
    is callable when ``need_aggregate``.
    """
    if not isinstance(ctx, AttackContext):
        raise AttackInputError(
            f"attack {attack!r}: expected an AttackContext, got {type(ctx).__name__}"
        )
    honest = _check_matrix(ctx.honest_updates, "honest_updates", attack)
    byz = _check_matrix(ctx.byzantine_updates, "byzantine_updates", attack)
    if honest.shape[1] != byz.shape[1]:
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.byzantine_updates has d={byz.shape[1]} but "
            f"honest_updates has d={honest.shape[1]}"
        )
    if ctx.knowledge not in KNOWLEDGE_LEVELS:
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.knowledge must be one of {KNOWLEDGE_LEVELS}, "
            f"got {ctx.knowledge!r}"
        )
    if not isinstance(ctx.collusion, (bool, np.bool_)):
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.collusion must be a bool, "
            f"got {type(ctx.collusion).__name__}"
        )
    if not isinstance(ctx.rng, np.random.Generator):
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.rng must be a numpy.random.Generator, "
            f"got {type(ctx.rng).__name__}"
        )
    if isinstance(ctx.n_clients, bool) or not isinstance(ctx.n_clients, (int, np.integer)):
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.n_clients must be an int, "
            f"got {type(ctx.n_clients).__name__}"
        )
    h, f = honest.shape[0], byz.shape[0]
    if h == 0 and ctx.knowledge == "limited":
        if ctx.n_clients < f:
            raise AttackInputError(
                f"attack {attack!r}: AttackContext.n_clients={ctx.n_clients} is smaller than "
                f"the {f} rows of byzantine_updates"
            )
    elif ctx.n_clients != h + f:
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.n_clients={ctx.n_clients} but honest_updates "
            f"has {h} rows and byzantine_updates {f} (expected n_clients = {h + f})"
        )
    if need_byzantine and f < 1:
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.byzantine_updates has 0 rows; this attack "
            "needs f >= 1 Byzantine clients"
        )
    if ctx.knowledge == "omniscient" and h < 1 and need_byzantine:
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.honest_updates has 0 rows; an omniscient "
            "attacker needs at least one honest update (use knowledge='limited')"
        )
    if need_aggregate and not callable(ctx.aggregate):
        raise AttackInputError(
            f"attack {attack!r}: AttackContext.aggregate must be the defence callable "
            "X (n, d) -> (d,); got None"
        )
    return ctx


def output_dtype(ctx: AttackContext) -> np.dtype:
    """The dtype of crafted rows: the common floating dtype of the context's update arrays."""
    return np.result_type(ctx.honest_updates.dtype, ctx.byzantine_updates.dtype)


def check_real(
    attack: str,
    param: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Validate a real parameter; raise :class:`AttackConfigError` naming attack and parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise AttackConfigError(
            f"attack {attack!r}: parameter {param!r} must be a real number, "
            f"got {type(value).__name__}"
        )
    v = float(value)
    if not np.isfinite(v):
        raise AttackConfigError(f"attack {attack!r}: parameter {param!r} must be finite, got {v}")
    if low is not None and (v < low or (low_open and v == low)):
        op = ">" if low_open else ">="
        raise AttackConfigError(
            f"attack {attack!r}: parameter {param!r} must be {op} {low}, got {v}"
        )
    if high is not None and v > high:
        raise AttackConfigError(
            f"attack {attack!r}: parameter {param!r} must be <= {high}, got {v}"
        )
    return v


def check_int(attack: str, param: str, value: Any, *, low: int | None = None) -> int:
    """Validate an integer parameter; raise :class:`AttackConfigError` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise AttackConfigError(
            f"attack {attack!r}: parameter {param!r} must be an int, got {type(value).__name__}"
        )
    if low is not None and value < low:
        raise AttackConfigError(
            f"attack {attack!r}: parameter {param!r} must be >= {low}, got {value}"
        )
    return int(value)


def check_choice(attack: str, param: str, value: Any, choices: tuple[str, ...]) -> str:
    """Validate a string option; raise :class:`AttackConfigError` listing the valid ones."""
    if value not in choices:
        raise AttackConfigError(
            f"attack {attack!r}: parameter {param!r} must be one of {list(choices)}, got {value!r}"
        )
    return str(value)


class View:
    """The updates one attacker (or one colluding group) can see, with cached float64 statistics.

    ``mean`` and ``std`` are coordinate-wise; ``std`` is the sample standard deviation
    (``ddof=1``) and is all zeros for a single-row view.
    """

    def __init__(self, updates: np.ndarray) -> None:
        self.updates = updates

    @property
    def rows(self) -> int:
        return int(self.updates.shape[0])

    @property
    def dim(self) -> int:
        return int(self.updates.shape[1])

    @cached_property
    def mean(self) -> np.ndarray:
        return np.mean(self.updates, axis=0, dtype=np.float64)

    @cached_property
    def std(self) -> np.ndarray:
        if self.rows < 2:
            return np.zeros(self.dim, dtype=np.float64)
        return np.std(self.updates, axis=0, ddof=1, dtype=np.float64)

    @cached_property
    def centred(self) -> np.ndarray:
        """``updates - mean`` in float64, shape ``(rows, d)``."""
        return np.asarray(self.updates, dtype=np.float64) - self.mean


class ModelPoisoningAttack(abc.ABC):
    """An attack that replaces the Byzantine clients' updates with crafted rows.

    Subclasses implement :meth:`craft`; most derive from :class:`PerViewAttack`, which
    builds the rows from one crafted vector per view. After each :meth:`craft`,
    ``last_info`` holds what the attack chose (e.g. ``z``, ``gamma``) for reports.

    Class attributes:
        name: registry name.
        randomized: whether the crafted vector depends on the random stream.
        tunable: parameters that express the attack's strength (first one is the default
            knob of :class:`~simulations.attacks.adaptive.AdaptiveAttack`).
    """

    name: ClassVar[str] = ""
    randomized: ClassVar[bool] = False
    tunable: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.last_info: dict[str, Any] = {}

    @abc.abstractmethod
    def craft(self, ctx: AttackContext) -> np.ndarray:
        """Return the ``(f, d)`` rows the Byzantine clients send this round.

        The rows have the dtype of the context's update arrays. The context is not modified.

        Raises:
            AttackInputError: a context field is malformed (the message names it), ``f == 0``,
                or an omniscient attacker is given no honest updates.
        """

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"

    def params(self) -> dict[str, Any]:
        """The constructor parameters of this instance (for reports and re-creation)."""
        return {}

    def default_strength(self, param: str, ctx: AttackContext) -> float:
        """The value of the tunable ``param`` this instance would use on ``ctx``."""
        if param not in self.tunable:
            raise AttackConfigError(
                f"attack {self.name!r}: {param!r} is not a tunable parameter; "
                f"tunable: {list(self.tunable)}"
            )
        return float(getattr(self, param))


class PerViewAttack(ModelPoisoningAttack):
    """A model-poisoning attack built from one crafted vector per view.

    Subclasses implement :meth:`_craft_vector` (one crafted vector from one view); this
    class validates the context, builds the views the ``knowledge`` and ``collusion``
    switches call for, and assembles the ``(f, d)`` output.
    """

    def craft(self, ctx: AttackContext) -> np.ndarray:
        """Return the ``(f, d)`` rows the Byzantine clients send this round (see
        :meth:`ModelPoisoningAttack.craft`).

        The rows have the dtype of the context's update arrays. The context is not modified.

        Raises:
            AttackInputError: a context field is malformed (the message names it), ``f == 0``,
                or an omniscient attacker is given no honest updates.
        """
        validate_context(ctx, self.name)
        f, d = ctx.n_byzantine, ctx.dim
        dtype = output_dtype(ctx)
        limited = ctx.knowledge == "limited"
        out = np.empty((f, d), dtype=dtype)
        if ctx.collusion or (not limited and not self.randomized):
            # One view for everyone: pooled Byzantine updates (limited) or the honest updates.
            view = View(ctx.byzantine_updates if limited else ctx.honest_updates)
            out[:] = self._craft_vector(view, ctx, ctx.rng)
            self.last_info["rows_identical"] = True
            return out
        rngs = ctx.rng.spawn(f)
        infos = []
        for i in range(f):
            view = View(ctx.byzantine_updates[i : i + 1] if limited else ctx.honest_updates)
            out[i] = self._craft_vector(view, ctx, rngs[i])
            infos.append(dict(self.last_info))
        self.last_info = {"per_attacker": infos, "rows_identical": False}
        return out

    @abc.abstractmethod
    def _craft_vector(self, view: View, ctx: AttackContext, rng: np.random.Generator) -> np.ndarray:
        """One crafted ``(d,)`` vector (any float dtype) from one view; sets ``last_info``."""


class DataPoisoningAttack(abc.ABC):
    """An attack that rewrites a Byzantine client's training data before local training."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def poison(
        self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return poisoned copies ``(x', y')``; the inputs are never mutated."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"

    def params(self) -> dict[str, Any]:
        return {}
