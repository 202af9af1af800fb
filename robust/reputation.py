"""Per-client reputation built from aggregation verdicts, usable as trusted weights.

Update rule (a Beta–Bernoulli posterior with forgetting). Each client i has evidence
counts ``(a_i, b_i)``, starting at 0. In a round where i took part::

    a_i ← γ · a_i + [i accepted]
    b_i ← γ · b_i + penalty · [i rejected]      (penalty = non_finite_penalty for a
                                                  "rejected:non_finite" verdict, else 1)

and ``trust_i = (a_i + a₀) / (a_i + b_i + a₀ + b₀)``: the posterior mean of a
Beta(a₀ + a_i, b₀ + b_i). ``γ = decay`` in (0, 1] forgets old rounds (γ = 1: no forgetting;
the effective memory is about 1/(1−γ) rounds). Clients absent from a round are unchanged.
Unknown clients have the prior mean ``a₀ / (a₀ + b₀)``.

``weights(ids)`` returns the trust values, suitable as the *trusted* ``weights=`` of a rule
(unlike self-reported example counts). State is saved as JSON with an atomic replace and
fully validated on load.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fortis.files import atomic_write

from .errors import ParameterError, ReputationStateError
from .result import ACCEPTED, NON_FINITE, AggregationResult

__all__ = ["Reputation"]

_FORMAT = "fortis.robust.reputation"
_VERSION = 1

ClientId = int | str


def _check_id(cid: object) -> ClientId:
    if isinstance(cid, (bool, np.bool_)):
        raise ParameterError(f"client id must be an int or str, got {cid!r}")
    if isinstance(cid, numbers.Integral):
        return int(cid)
    if isinstance(cid, str):
        return cid
    raise ParameterError(f"client id must be an int or str, got {type(cid).__name__} {cid!r}")


def _pos_real(value: object, name: str, *, lo_open: bool = True, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if (v <= 0 if lo_open else v < 0) or (hi is not None and v > hi):
        rng = f"(0, {hi}]" if hi is not None else ("> 0" if lo_open else ">= 0")
        raise ParameterError(f"{name} must be {rng}, got {value!r}")
    return v


class Reputation:
    """Per-client trust from verdicts (see the module docstring for the update rule).

    Args:
        decay: forgetting factor γ in (0, 1].
        prior: (a₀, b₀) > 0, the Beta prior; trust of an unseen client is a₀/(a₀+b₀).
        non_finite_penalty: rejection weight of a ``"rejected:non_finite"`` verdict (>= 0).

    Raises :class:`ParameterError` for out-of-range parameters or bad client ids.
    """

    def __init__(
        self,
        decay: float = 0.9,
        prior: tuple[float, float] = (1.0, 1.0),
        non_finite_penalty: float = 3.0,
    ) -> None:
        self.decay = _pos_real(decay, "decay", hi=1.0)
        if not isinstance(prior, Sequence) or len(prior) != 2:
            raise ParameterError(f"prior must be a pair (a0, b0), got {prior!r}")
        self.prior = (_pos_real(prior[0], "prior[0]"), _pos_real(prior[1], "prior[1]"))
        self.non_finite_penalty = _pos_real(non_finite_penalty, "non_finite_penalty", lo_open=False)
        self._a: dict[ClientId, float] = {}
        self._b: dict[ClientId, float] = {}
        self.rounds = 0

    # -- updates --------------------------------------------------------------------------
    def update(
        self, ids: Sequence[object], verdicts: AggregationResult | Sequence[object] | np.ndarray
    ) -> None:
        """Record one round. ``verdicts`` is an :class:`AggregationResult` (its per-client
        verdict strings), a sequence of verdict strings, or a boolean accepted array, aligned
        with ``ids``. Raises :class:`ParameterError` on misalignment, duplicate or bad ids,
        or unknown verdict values."""
        ids = [_check_id(c) for c in ids]
        if len(set(ids)) != len(ids):
            raise ParameterError("ids must be unique within a round")
        if isinstance(verdicts, AggregationResult):
            vs: list[object] = list(verdicts.verdicts)
        else:
            vs = (
                list(np.asarray(verdicts).tolist())
                if isinstance(verdicts, np.ndarray)
                else list(verdicts)
            )
        if len(vs) != len(ids):
            raise ParameterError(f"got {len(ids)} ids but {len(vs)} verdicts")
        g = self.decay
        for cid, v in zip(ids, vs):
            if isinstance(v, (bool, np.bool_)):
                good, bad = (1.0, 0.0) if v else (0.0, 1.0)
            elif v == ACCEPTED:
                good, bad = 1.0, 0.0
            elif isinstance(v, str) and v.startswith("rejected"):
                good, bad = 0.0, (self.non_finite_penalty if v == NON_FINITE else 1.0)
            else:
                raise ParameterError(f"unknown verdict {v!r} for client {cid!r}")
            self._a[cid] = g * self._a.get(cid, 0.0) + good
            self._b[cid] = g * self._b.get(cid, 0.0) + bad
        self.rounds += 1

    # -- queries --------------------------------------------------------------------------
    def trust(self, cid: object) -> float:
        """Posterior-mean trust in (0, 1) of one client."""
        cid = _check_id(cid)
        a0, b0 = self.prior
        a, b = self._a.get(cid, 0.0), self._b.get(cid, 0.0)
        return (a + a0) / (a + b + a0 + b0)

    def weights(self, ids: Iterable[object], *, floor: float = 0.0) -> np.ndarray:
        """Trust of each id as a float64 array, usable as trusted ``weights=``. Trust values
        below ``floor`` are set to 0 (those clients are excluded from weighted rules)."""
        floor = _pos_real(floor, "floor", lo_open=False, hi=1.0)
        w = np.array([self.trust(c) for c in ids], dtype=np.float64)
        w[w < floor] = 0.0
        return w

    @property
    def clients(self) -> list[ClientId]:
        return list(self._a)

    def __len__(self) -> int:
        return len(self._a)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reputation) and self.to_dict() == other.to_dict()

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "decay": self.decay,
            "prior": list(self.prior),
            "non_finite_penalty": self.non_finite_penalty,
            "rounds": self.rounds,
            "clients": [[cid, self._a[cid], self._b[cid]] for cid in self._a],
        }

    @classmethod
    def from_dict(cls, state: object, *, source: str = "state") -> Reputation:
        """Rebuild from :meth:`to_dict` output; every field is validated.
        Raises :class:`ReputationStateError` naming the offending field."""

        def bad(msg: str) -> ReputationStateError:
            return ReputationStateError(f"{source}: {msg}")

        if not isinstance(state, dict):
            raise bad(f"expected a JSON object, got {type(state).__name__}")
        if state.get("format") != _FORMAT:
            raise bad(f"format must be {_FORMAT!r}, got {state.get('format')!r}")
        if state.get("version") != _VERSION:
            raise bad(f"unsupported version {state.get('version')!r} (expected {_VERSION})")
        missing = {"decay", "prior", "non_finite_penalty", "rounds", "clients"} - set(state)
        if missing:
            raise bad(f"missing fields {sorted(missing)}")
        try:
            rep = cls(
                state["decay"],
                tuple(state["prior"]) if isinstance(state["prior"], list) else state["prior"],
                state["non_finite_penalty"],
            )
        except (ParameterError, TypeError) as e:
            raise bad(str(e)) from None
        rounds = state["rounds"]
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise bad(f"rounds must be a non-negative integer, got {rounds!r}")
        rep.rounds = rounds
        clients = state["clients"]
        if not isinstance(clients, list):
            raise bad("clients must be a list of [id, a, b]")
        for i, rec in enumerate(clients):
            if not isinstance(rec, list) or len(rec) != 3:
                raise bad(f"clients[{i}] must be [id, a, b], got {rec!r}")
            cid, a, b = rec
            if isinstance(cid, bool) or not isinstance(cid, (int, str)):
                raise bad(f"clients[{i}].id must be an int or str, got {cid!r}")
            for name, v in (("a", a), ("b", b)):
                if (
                    isinstance(v, bool)
                    or not isinstance(v, (int, float))
                    or not math.isfinite(v)
                    or v < 0
                ):
                    raise bad(f"clients[{i}].{name} must be a finite number >= 0, got {v!r}")
            if cid in rep._a:
                raise bad(f"clients[{i}]: duplicate id {cid!r}")
            rep._a[cid] = float(a)
            rep._b[cid] = float(b)
        return rep

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state as JSON atomically: a temporary file in the same directory is
        written, flushed and fsynced, then ``os.replace``d over ``path``. A crash leaves
        either the old or the new file, never a partial one."""
        data = json.dumps(self.to_dict(), allow_nan=False).encode("utf-8")
        atomic_write(os.fspath(path), data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Reputation:
        """Read a state written by :meth:`save`. Raises :class:`ReputationStateError` if the
        file is missing, not JSON, or fails validation (the message names the field)."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
        except FileNotFoundError:
            raise ReputationStateError(f"{path}: no such reputation file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ReputationStateError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(state, source=path)
