"""DRACO-style replication checks: exact detection of deviating replicas by majority vote.

In replication mode the training data is cut into ``n / r`` shards and each shard is trained by a
*group* of ``r`` clients with the same data, the same global model and the same RNG key (pass
``rng_key=group_index`` to :meth:`simulations.training.LocalTrainer.compute_update`). Honest
replicas then produce bit-identical updates, so the server needs no statistics: within each group
it keeps the update sent by a strict majority of the replicas, and every replica whose row differs
by even one bit is caught, exactly, with no false positives among honest clients (Chen et al.
2018, "DRACO: Byzantine-resilient distributed training via redundant gradients").

Guarantees (with honest replicas bit-identical):
- A group with at most ``(r - 1) // 2`` Byzantine members yields exactly the honest update, and
  each of those Byzantine members is caught.
- A group with no strict majority (e.g. 1 honest vs 1 liar at r = 2, or three distinct rows at
  r = 3) is a *tie*: it is reported and dropped; nobody in it is accepted or blamed.
- A group whose Byzantine members agree among themselves and form a strict majority defeats the
  check for that shard; their row is accepted. With adversarial placement that takes only
  ``(r + 1) // 2`` colluders in total, so the per-group bound is what is guaranteed.

Cost: ``n`` clients do the work of ``n / r`` distinct updates (see :func:`replication_cost`).
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from simulations.errors import SimulationError

__all__ = [
    "ReplicationCost",
    "ReplicationError",
    "ReplicationResult",
    "group_index",
    "majority_filter",
    "replication_cost",
    "replication_groups",
]


class ReplicationError(SimulationError):
    """Invalid replication setup or inputs; the message names the argument or group at fault."""


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ReplicationError(
            f"replication: {name} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def replication_groups(n_clients: int, r: int) -> list[list[int]]:
    """Assign clients to ``n_clients // r`` groups of ``r`` consecutive client ids.

    Group ``g`` = clients ``[g*r, ..., g*r + r - 1]`` and trains data shard ``g``.
    Raises :class:`ReplicationError` if ``r < 1``, ``n_clients < r`` or ``r`` does not divide
    ``n_clients``.
    """
    n_clients = _int("n_clients", n_clients, 1)
    r = _int("r", r, 1)
    if n_clients < r:
        raise ReplicationError(f"replication: n_clients={n_clients} is smaller than r={r}")
    if n_clients % r:
        raise ReplicationError(
            f"replication: r={r} does not divide n_clients={n_clients} "
            f"(use a multiple of r, e.g. {n_clients - n_clients % r} or {n_clients + r - n_clients % r})"
        )
    return [list(range(g * r, (g + 1) * r)) for g in range(n_clients // r)]


def group_index(groups: Sequence[Sequence[int]], n_clients: int | None = None) -> np.ndarray:
    """Client id -> group (shard) index, as an int64 array of length ``n_clients``.

    ``n_clients`` defaults to the number of clients in ``groups``. Raises
    :class:`ReplicationError` if the groups are not a partition of ``range(n_clients)``.
    """
    flat = [int(c) for grp in groups for c in grp]
    n = len(flat) if n_clients is None else _int("n_clients", n_clients, 1)
    if sorted(flat) != list(range(n)):
        raise ReplicationError(
            f"replication: groups must partition client ids 0..{n - 1} exactly once each"
        )
    out = np.empty(n, dtype=np.int64)
    for g, grp in enumerate(groups):
        out[list(grp)] = g
    return out


@dataclass(frozen=True)
class ReplicationResult:
    """Outcome of :func:`majority_filter`.

    Unpacks as ``(majority_updates, accepted, caught)`` for the common case.

    - ``majority_updates``: ``(g_kept, d)`` rows, one per group with a strict majority, in group
      order (dropped tie groups have no row); ``kept_groups`` gives their group indices.
    - ``accepted``: bool mask over clients, True for replicas that sent their group's majority row.
    - ``caught``: sorted client ids that deviated from their group's majority (exact detection).
    - ``tied_groups``: indices of groups with no strict majority, dropped.
    - ``votes``: for each group, the size of its largest set of identical rows.
    """

    majority_updates: np.ndarray
    accepted: np.ndarray
    caught: list[int]
    kept_groups: list[int]
    tied_groups: list[int]
    votes: list[int]

    def __iter__(self) -> Iterator:
        return iter((self.majority_updates, self.accepted, self.caught))


def _row_key(row: np.ndarray) -> bytes:
    return hashlib.blake2b(row.tobytes(), digest_size=16).digest()


def majority_filter(updates: np.ndarray, groups: Sequence[Sequence[int]]) -> ReplicationResult:
    """Keep each group's strict-majority update, compared by exact bit equality of rows.

    ``updates`` is an ``(n, d)`` array whose row ``i`` is client ``i``'s update; ``groups`` lists
    the client ids of each group (e.g. from :func:`replication_groups`). Rows are bucketed by a
    128-bit BLAKE2b hash of their bytes and candidates are confirmed with ``np.array_equal`` on
    the raw bytes, so the decision is exact (NaN payloads and signed zeros included). The caller's
    array is not modified.

    Raises :class:`ReplicationError` if ``updates`` is not 2-D, or the groups do not partition
    ``range(n)``.
    """
    X = np.asarray(updates)
    if X.ndim != 2:
        raise ReplicationError(
            f"replication: updates must be a 2-D (n, d) array, got shape {X.shape}"
        )
    n = X.shape[0]
    group_index(groups, n)  # validates that groups partition range(n)
    raw = np.ascontiguousarray(X).view(np.uint8).reshape(n, X.shape[1] * X.dtype.itemsize)

    accepted = np.zeros(n, dtype=bool)
    caught: list[int] = []
    kept: list[int] = []
    tied: list[int] = []
    votes: list[int] = []
    rows: list[np.ndarray] = []
    for g, grp in enumerate(groups):
        members = [int(c) for c in grp]
        # Bucket by hash, then split buckets by exact byte equality (guards against collisions).
        classes: list[list[int]] = []
        buckets: dict[bytes, list[list[int]]] = {}
        for c in members:
            bucket = buckets.setdefault(_row_key(raw[c]), [])
            for cls in bucket:
                if np.array_equal(raw[cls[0]], raw[c]):
                    cls.append(c)
                    break
            else:
                bucket.append([c])
                classes.append(bucket[-1])
        best = max(classes, key=len)
        votes.append(len(best))
        if 2 * len(best) > len(members):
            kept.append(g)
            rows.append(X[best[0]])
            accepted[best] = True
            caught.extend(c for c in members if c not in best)
        else:
            tied.append(g)

    d = X.shape[1]
    majority = np.stack(rows).copy() if rows else np.empty((0, d), dtype=X.dtype)
    return ReplicationResult(
        majority_updates=majority,
        accepted=accepted,
        caught=sorted(caught),
        kept_groups=kept,
        tied_groups=tied,
        votes=votes,
    )


@dataclass(frozen=True)
class ReplicationCost:
    """What replication factor ``r`` costs and buys with ``n`` clients (see :func:`replication_cost`)."""

    n_clients: int
    r: int
    effective_updates: int
    overhead_factor: int
    tolerated_per_group: int
    tolerated_worst_case: int

    def describe(self) -> str:
        return (
            f"replication r={self.r}: {self.n_clients} clients compute only "
            f"{self.effective_updates} distinct updates ({self.overhead_factor}x the client work "
            f"per update; the data is cut into {self.effective_updates} shards). Exact detection "
            f"holds while every group has at most {self.tolerated_per_group} Byzantine member(s); "
            f"against adversarial placement that is {self.tolerated_worst_case} Byzantine client(s) "
            f"in total."
        )


def replication_cost(n_clients: int, r: int) -> ReplicationCost:
    """The client cost of replication factor ``r``: ``n / r`` effective updates from ``n`` clients.

    ``tolerated_per_group = (r - 1) // 2`` liars per group are caught exactly;
    ``tolerated_worst_case`` is the same number for the whole federation when the adversary
    chooses which clients to corrupt (it can concentrate them in one group). Raises
    :class:`ReplicationError` like :func:`replication_groups`.
    """
    groups = replication_groups(n_clients, r)
    per_group = (r - 1) // 2
    return ReplicationCost(
        n_clients=int(n_clients),
        r=int(r),
        effective_updates=len(groups),
        overhead_factor=int(r),
        tolerated_per_group=per_group,
        tolerated_worst_case=per_group,
    )
