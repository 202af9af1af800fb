"""Splitting a labelled training set across federated clients.

Schemes (``PARTITIONS``):

- ``"iid"``: a uniformly random permutation cut into ``n_clients`` near-equal parts.
- ``"dirichlet"``: for every class c, proportions p_c ~ Dirichlet(alpha * 1_n) over the clients
  and the samples of class c are dealt by a multinomial draw with those proportions (Hsu et al.
  2019). Small ``alpha`` gives highly skewed label mixes; ``alpha -> inf`` tends to IID. A draw
  that leaves a client with fewer than ``min_size`` samples is redrawn (up to
  ``_DIRICHLET_REDRAWS`` times); if every draw fails, the last one is repaired by moving random
  samples from the largest clients to the short ones, so the guarantee always holds.
- ``"label_sorted"``: a fraction ``gamma`` (the "similarity") of the data is dealt IID; the rest
  is sorted by label and cut into ``n_clients`` contiguous shards, one per client (the
  heterogeneous setting of Karimireddy, He & Jaggi 2022 and the Byzantine-robust literature).
  ``gamma = 0`` gives each client one or two labels when n_clients >= num_classes; ``gamma = 1``
  is IID.

Guarantees for every scheme: the returned index arrays are sorted ``int64``, pairwise disjoint,
cover ``range(len(labels))`` exactly, each has at least ``min_size`` entries, and the result is
a deterministic function of the arguments (``seed`` included). iid and label_sorted give every
client ``len(labels) // n_clients`` or one more sample.
"""

from __future__ import annotations

import numbers

import numpy as np

from simulations.errors import SimulationError

__all__ = ["PARTITIONS", "PartitionError", "partition", "label_histogram"]

PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "label_sorted")

_DIRICHLET_REDRAWS = 100


class PartitionError(SimulationError):
    """An impossible or malformed partition request; the message names the argument."""


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PartitionError(f"partition: {name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise PartitionError(f"partition: {name} must be >= {minimum}, got {value}")
    return int(value)


def _even_sizes(total: int, n: int) -> np.ndarray:
    """Sizes of ``n`` near-equal parts of ``total``; the first ``total % n`` parts get one more."""
    sizes = np.full(n, total // n, dtype=np.int64)
    sizes[: total % n] += 1
    return sizes


def _cut(indices: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    return np.split(indices, np.cumsum(sizes)[:-1])


def _iid(n_samples: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return _cut(rng.permutation(n_samples), _even_sizes(n_samples, n_clients))


def _label_sorted(
    labels: np.ndarray, n_clients: int, gamma: float, rng: np.random.Generator
) -> list[np.ndarray]:
    n = labels.shape[0]
    perm = rng.permutation(n)
    n_iid = int(round(gamma * n))
    iid_pool, rest = perm[:n_iid], perm[n_iid:]
    # Both parts give their remainder to the first clients, so per-client totals are the even
    # split of n and the sorted share (total - iid share) is never negative.
    total_sizes = _even_sizes(n, n_clients)
    iid_sizes = _even_sizes(n_iid, n_clients)
    sorted_sizes = total_sizes - iid_sizes
    # Stable sort by label of a random permutation: random order inside each label.
    rest_sorted = rest[np.argsort(labels[rest], kind="stable")]
    iid_parts = _cut(iid_pool, iid_sizes)
    shards = _cut(rest_sorted, sorted_sizes)
    return [np.concatenate([a, b]) for a, b in zip(iid_parts, shards)]


def _dirichlet_draw(
    by_class: list[np.ndarray], n_clients: int, alpha: float, rng: np.random.Generator
) -> list[list[np.ndarray]]:
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for idx in by_class:
        props = rng.dirichlet(np.full(n_clients, alpha))
        counts = rng.multinomial(idx.shape[0], props)
        for client, chunk in enumerate(_cut(rng.permutation(idx), counts)):
            parts[client].append(chunk)
    return parts


def _dirichlet(
    labels: np.ndarray, n_clients: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    clients: list[np.ndarray] = []
    for _ in range(_DIRICHLET_REDRAWS):
        parts = _dirichlet_draw(by_class, n_clients, alpha, rng)
        clients = [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]
        if min(c.shape[0] for c in clients) >= min_size:
            return clients
    # Repair the last draw: move random samples from the currently largest client to each
    # short client until it reaches min_size (possible because n >= n_clients * min_size).
    clients = [rng.permutation(c) for c in clients]
    for i in range(n_clients):
        while clients[i].shape[0] < min_size:
            sizes = np.array([c.shape[0] for c in clients])
            donor = int(np.argmax(sizes))
            take = min(min_size - clients[i].shape[0], int(sizes[donor]) - min_size)
            clients[i] = np.concatenate([clients[i], clients[donor][:take]])
            clients[donor] = clients[donor][take:]
    return clients


def partition(
    labels: np.ndarray,
    n_clients: int,
    scheme: str = "iid",
    *,
    alpha: float = 0.5,
    gamma: float = 0.0,
    seed: int = 0,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Split sample indices ``0..len(labels)-1`` among ``n_clients`` clients.

    Parameters
    ----------
    labels: 1-D array of non-negative integer class labels.
    n_clients: number of clients (>= 1).
    scheme: one of :data:`PARTITIONS` (see the module docstring).
    alpha: Dirichlet concentration (> 0, finite); used by ``"dirichlet"`` only.
    gamma: fraction in [0, 1] dealt IID; used by ``"label_sorted"`` only.
    seed: seed of the numpy generator; the result is a deterministic function of it.
    min_size: the minimum number of samples every client receives (>= 0).

    Returns a list of ``n_clients`` sorted int64 index arrays, disjoint and covering all samples.

    Raises :class:`PartitionError` for an unknown scheme, malformed labels, out-of-range
    parameters, or an impossible request (``len(labels) < n_clients * min_size``).
    """
    if not isinstance(scheme, str) or scheme not in PARTITIONS:
        raise PartitionError(
            f"partition: unknown scheme {scheme!r}; choose one of {', '.join(PARTITIONS)}"
        )
    n_clients = _check_int("n_clients", n_clients, 1)
    min_size = _check_int("min_size", min_size, 0)
    seed = _check_int("seed", seed, 0)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise PartitionError(f"partition: labels must be 1-D, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise PartitionError(f"partition: labels must be integers, got dtype {labels.dtype}")
    if labels.size and int(labels.min()) < 0:
        raise PartitionError(f"partition: labels must be >= 0, found {int(labels.min())}")
    n = labels.shape[0]
    if n < n_clients * min_size:
        raise PartitionError(
            f"partition: cannot give {n_clients} clients at least {min_size} sample(s) each "
            f"from {n} samples (need n_clients * min_size <= {n})"
        )
    if scheme == "dirichlet" and not (
        isinstance(alpha, numbers.Real) and np.isfinite(alpha) and alpha > 0
    ):
        raise PartitionError(f"partition: alpha must be a finite number > 0, got {alpha!r}")
    if scheme == "label_sorted" and not (
        isinstance(gamma, numbers.Real) and 0.0 <= float(gamma) <= 1.0
    ):
        raise PartitionError(f"partition: gamma must be in [0, 1], got {gamma!r}")

    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = _iid(n, n_clients, rng)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, n_clients, float(alpha), min_size, rng)
    else:
        parts = _label_sorted(labels, n_clients, float(gamma), rng)
    return [np.sort(p).astype(np.int64, copy=False) for p in parts]


def label_histogram(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Per-client label counts, shape ``(len(parts), num_classes)``, for reports and tests."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
