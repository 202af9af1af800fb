"""Benign faults: clients that drop out of a round, and stragglers that send stale updates.

These are not attacks: honest clients that are slow or unreliable. The runner samples them
each round; robust rules should not mistake them for Byzantine clients, and reports count the
honest clients a defence wrongly rejects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulations.errors import SimulationError

__all__ = ["DropoutFault", "FaultConfigError", "StragglerFault"]


class FaultConfigError(SimulationError):
    """A fault model was configured wrongly or sampled with bad arguments."""


def _check_probability(fault: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise FaultConfigError(f"{fault}: p must be a real number, got {type(value).__name__}")
    p = float(value)
    if not 0.0 <= p <= 1.0:
        raise FaultConfigError(f"{fault}: p must lie in [0, 1], got {p}")
    return p


def _check_sample_args(fault: str, n_clients: object, rng: object) -> int:
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or n_clients < 0:
        raise FaultConfigError(f"{fault}.sample: n_clients must be an int >= 0, got {n_clients!r}")
    if not isinstance(rng, np.random.Generator):
        raise FaultConfigError(
            f"{fault}.sample: rng must be a numpy.random.Generator, got {type(rng).__name__}"
        )
    return int(n_clients)


@dataclass(frozen=True)
class DropoutFault:
    """Each client independently drops out of a round with probability ``p``."""

    p: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _check_probability("DropoutFault", self.p))

    def sample(self, n_clients: int, rng: np.random.Generator) -> np.ndarray:
        """Boolean mask ``(n_clients,)``: ``True`` for the clients that drop this round."""
        n = _check_sample_args("DropoutFault", n_clients, rng)
        return rng.random(n) < self.p


@dataclass(frozen=True)
class StragglerFault:
    """Each client is late with probability ``p``; a late client's update is computed on the
    global model from ``k`` rounds ago, ``k`` uniform in ``{1, ..., max_staleness}``."""

    p: float
    max_staleness: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _check_probability("StragglerFault", self.p))
        s = self.max_staleness
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise FaultConfigError(f"StragglerFault: max_staleness must be an int >= 1, got {s!r}")
        object.__setattr__(self, "max_staleness", int(s))

    def sample(self, n_clients: int, rng: np.random.Generator) -> np.ndarray:
        """Staleness ``(n_clients,)`` int array: 0 for on-time clients, ``1..max_staleness``
        for stragglers."""
        n = _check_sample_args("StragglerFault", n_clients, rng)
        late = rng.random(n) < self.p
        staleness = np.zeros(n, dtype=np.int64)
        staleness[late] = rng.integers(1, self.max_staleness + 1, size=int(late.sum()))
        return staleness
