"""Masking graphs: who shares masks and secret shares with whom, and the Shamir threshold.

Two constructions:

* :func:`complete_graph` -- the original protocol of Bonawitz et al. (CCS 2017): every client is
  a neighbour of every other one.
* :func:`secaggplus_graph` -- SecAgg+ of Bell et al., "Secure Single-Server Aggregation with
  (Poly)Logarithmic Overhead" (CCS 2020): a *random Harary graph* of degree ``k = O(log n)``.
  The clients are placed on a ring in a pseudo-random order derived from a public seed, and each
  is joined to the ``k/2`` nearest clients on either side (the Harary graph ``H_{k,n}``, which
  is ``k``-connected). Masks, key agreements and Shamir shares only flow along edges, so each
  client does ``O(log n)`` work instead of ``O(n)``.

Conventions (shared with ``protocol``): a client's Shamir shares are held by its neighbours
only, so a threshold ``t`` must satisfy ``1 <= t <= degree``; the server can reconstruct a
client's secret iff at least ``t`` of its neighbours answer.

The graph is a pure function of ``(sorted ids, seed)`` (plus the explicit parameters): the order on
the ring sorts ids by ``HMAC-SHA256(seed, id)``, so every party recomputes the same graph.

Parameter rule for SecAgg+ (our implementation of the analysis of Bell et al. for the
semi-honest server, as instantiated with Harary graphs): let ``gamma`` be the tolerated fraction
of corrupt clients (colluding with the server), ``delta`` the tolerated dropout fraction,
``sigma`` the statistical security parameter and ``eta`` the correctness parameter. Pick the
smallest even ``k`` such that

1. *connectivity*: the honest, surviving clients stay connected except with probability
   ``< 2**-(sigma+1)``. Removing nodes from ``H_{k,n}`` disconnects it only if two disjoint runs
   of ``k/2`` consecutive ring positions are all removed; with ``B = floor((gamma+delta) n)``
   bad clients at random positions, a union bound over the ``n(n-k-1)/2`` pairs of runs gives
   ``P <= n(n-k-1)/2 * B!/(B-k)! * (n-k)!/n!``;
2. *privacy*: ``t`` is the smallest value with ``P[X >= t] <= 2**-(sigma+1) / n`` where
   ``X ~ Hypergeometric(n, floor(gamma n), k)`` counts a client's corrupt neighbours (so, by a
   union bound over clients, no client has ``t`` corrupt neighbours except with probability
   ``2**-(sigma+1)``); ``t >= 2`` always;
3. *correctness*: ``P[Y < t] <= 2**-eta / n`` where ``Y ~ Hypergeometric(n, ceil((1-delta) n),
   k)`` counts a client's surviving neighbours (so every client's secrets are recoverable
   except with probability ``2**-eta``).

Together: an honest-but-curious server colluding with at most ``gamma n`` clients learns nothing
beyond the sum of the survivors' inputs except with probability ``< 2**-sigma``, and with at most
``delta n`` dropouts the round succeeds except with probability ``< 2**-eta`` (both over the
random ring order, which must therefore be fixed by a seed the adversary cannot bias, e.g. the
server's commitment or a hash of all public keys).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import GraphError

__all__ = [
    "k_core",
    "MaskingGraph",
    "complete_graph",
    "secaggplus_graph",
    "secaggplus_parameters",
    "harary_disconnect_log_bound",
]

_LN2 = math.log(2.0)
_EPS = 1e-12  # guards float rounding of rate * n in the safe direction


@dataclass(frozen=True)
class MaskingGraph:
    """An undirected masking graph with its Shamir threshold.

    ``neighbours[i]`` is the set of clients that client ``i`` masks with and sends shares to
    (never contains ``i``; symmetric). ``threshold`` is the number of neighbours' shares needed to
    reconstruct one of ``i``'s secrets. ``kind`` is ``"complete"`` or ``"secagg+"``; ``security``
    states the guarantee and its assumptions in words; ``params`` records the inputs of the rule.
    """

    neighbours: dict[int, frozenset[int]]
    threshold: int
    kind: str
    security: str
    params: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def ids(self) -> tuple[int, ...]:
        """The client ids, sorted."""
        return tuple(sorted(self.neighbours))

    @property
    def n(self) -> int:
        """Number of clients."""
        return len(self.neighbours)

    def degree(self, i: int) -> int:
        """Number of neighbours of client ``i`` (raises ``GraphError`` for an unknown id)."""
        return len(self._get(i))

    def max_degree(self) -> int:
        """The largest degree in the graph."""
        return max((len(v) for v in self.neighbours.values()), default=0)

    def _get(self, i: int) -> frozenset[int]:
        try:
            return self.neighbours[i]
        except KeyError:
            raise GraphError(f"client {i} is not in the masking graph") from None

    def edges(self) -> list[tuple[int, int]]:
        """All edges ``(i, j)`` with ``i < j``, sorted."""
        return sorted((i, j) for i, nb in self.neighbours.items() for j in nb if i < j)

    def is_connected(self, removed: Iterable[int] = ()) -> bool:
        """Whether the graph restricted to clients not in ``removed`` is connected (an empty
        remainder counts as connected)."""
        gone = set(removed)
        alive = [i for i in self.neighbours if i not in gone]
        if not alive:
            return True
        seen = {alive[0]}
        queue = deque([alive[0]])
        while queue:
            u = queue.popleft()
            for v in self.neighbours[u]:
                if v not in gone and v not in seen:
                    seen.add(v)
                    queue.append(v)
        return len(seen) == len(alive)

    def core(self, alive: Iterable[int], min_neighbours: int) -> set[int]:
        """The largest subset of ``alive`` in which every member has at least
        ``min_neighbours`` neighbours inside the subset (the k-core of the induced graph)."""
        return k_core(self.neighbours, alive, min_neighbours)

    def recoverable(self, i: int, survivors: Iterable[int]) -> bool:
        """Whether at least ``threshold`` of ``i``'s neighbours are among ``survivors``."""
        alive = set(survivors)
        return sum(1 for j in self._get(i) if j in alive) >= self.threshold


def k_core(
    adjacency: Mapping[int, Iterable[int]], alive: Iterable[int], min_neighbours: int
) -> set[int]:
    """The largest subset S of ``alive`` where every member has ``>= min_neighbours``
    neighbours (by ``adjacency``) inside S.

    It is unique (the union of two such subsets is one), so every party that runs this on the
    same inputs gets the same set, whatever order it removes members in. Members missing from
    ``adjacency`` have no neighbours.
    """
    members = set(alive)
    degree = {i: len(set(adjacency.get(i, ())) & members) for i in members}
    counted_by: dict[int, list[int]] = {i: [] for i in members}  # j -> members counting j
    for i in members:
        for j in set(adjacency.get(i, ())) & members:
            counted_by[j].append(i)
    queue = deque(i for i in members if degree[i] < min_neighbours)
    removed: set[int] = set()
    while queue:
        i = queue.popleft()
        if i in removed:
            continue
        removed.add(i)
        for j in counted_by[i]:
            if j not in removed:
                degree[j] -= 1
                if degree[j] < min_neighbours:
                    queue.append(j)
    return members - removed


def _check_ids(ids: Sequence[int]) -> list[int]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise GraphError(f"ids must be a sequence of ints, got {type(ids).__name__}")
    out = []
    for i in ids:
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            raise GraphError(f"client id {i!r} is not an int")
        i = int(i)
        if i < 0:
            raise GraphError(f"client id {i} is negative")
        out.append(i)
    if len(set(out)) != len(out):
        dup = sorted({i for i in out if out.count(i) > 1})
        raise GraphError(f"client ids must be distinct; repeated: {dup[:10]}")
    if len(out) < 2:
        raise GraphError(f"a masking graph needs at least 2 clients, got {len(out)}")
    return sorted(out)


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise GraphError(f"{name} must be an int, got {value!r}")
    return int(value)


def complete_graph(ids: Sequence[int], threshold: int | None = None) -> MaskingGraph:
    """The complete masking graph of Bonawitz et al. 2017.

    Every client's shares go to all ``n - 1`` others. The default threshold is
    ``t = min(floor(n/2) + 1, n - 1)``: a strict majority of all clients, so the server colluding
    with fewer than ``t`` clients (fewer than half) cannot reconstruct both secrets of anyone,
    and a round survives up to ``n - 1 - t`` dropouts among each client's neighbours (about half).

    Raises ``GraphError`` for fewer than 2 or repeated/negative ids, or ``threshold`` outside
    ``[1, n-1]``.
    """
    members = _check_ids(ids)
    n = len(members)
    if threshold is None:
        threshold = min(n // 2 + 1, n - 1)
    threshold = _check_int(threshold, "threshold")
    if not 1 <= threshold <= n - 1:
        raise GraphError(
            f"threshold={threshold} must be in [1, n-1={n - 1}] (shares go to the n-1 other clients)"
        )
    everyone = frozenset(members)
    neighbours = {i: everyone - {i} for i in members}
    security = (
        f"complete graph (Bonawitz et al. 2017), n={n}, threshold t={threshold} of n-1={n - 1} "
        f"share holders: an honest-but-curious server colluding with at most t-1={threshold - 1} "
        f"clients learns only the sum of the survivors' inputs (computational, under X25519/"
        f"AES); the sum is recovered while at most n-1-t={n - 1 - threshold} of any client's "
        "neighbours drop out. Against a server that lies about dropouts, use the hardened mode "
        "(signatures and consistency check) and t > (n-1)/2 ... 2(n-1)/3 as in Bonawitz et al."
    )
    return MaskingGraph(neighbours, threshold, "complete", security, {"n": n})


# --------------------------------------------------------------------------------------------
# SecAgg+ parameter rule


def _log_comb(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def _hypergeom_logpmf(population: int, successes: int, draws: int, x: int) -> float:
    if x < max(0, draws - (population - successes)) or x > min(draws, successes):
        return -math.inf
    return (
        _log_comb(successes, x)
        + _log_comb(population - successes, draws - x)
        - _log_comb(population, draws)
    )


def _hypergeom_tail(population: int, successes: int, draws: int, lo: int, hi: int) -> float:
    """``P[lo <= X <= hi]`` for ``X ~ Hypergeometric``; summed term by term (no cancellation)."""
    return math.fsum(
        math.exp(_hypergeom_logpmf(population, successes, draws, x))
        for x in range(max(lo, 0), min(hi, draws) + 1)
    )


def harary_disconnect_log_bound(n: int, k: int, bad: int) -> float:
    """Natural log of a union bound on the probability that removing ``bad`` clients at uniformly
    random ring positions disconnects the Harary graph ``H_{k,n}`` (``k`` even, ``k < n - 1``).

    Returns ``-inf`` when ``k > bad`` (disconnection needs at least ``k`` removed nodes).
    """
    if k > bad:
        return -math.inf
    pairs = n * (n - k - 1) / 2
    if pairs <= 0:
        return -math.inf
    # probability that k given positions are all bad: bad!/(bad-k)! * (n-k)!/n!
    return (
        math.log(pairs)
        + math.lgamma(bad + 1)
        - math.lgamma(bad - k + 1)
        + math.lgamma(n - k + 1)
        - math.lgamma(n + 1)
    )


def _check_rates(
    n: int, dropout_rate: float, corrupt_rate: float, sigma: float, eta: float
) -> tuple[float, float, float, float]:
    try:
        delta, gamma, sigma, eta = (float(v) for v in (dropout_rate, corrupt_rate, sigma, eta))
    except (TypeError, ValueError) as exc:
        raise GraphError(f"rates and security parameters must be numbers: {exc}") from None
    if not 0 <= delta < 1:
        raise GraphError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    if not 0 <= gamma < 1:
        raise GraphError(f"corrupt_rate must be in [0, 1), got {corrupt_rate}")
    if delta + gamma >= 1:
        raise GraphError(
            f"dropout_rate + corrupt_rate = {delta + gamma} must be < 1 (no honest survivors left)"
        )
    if not (sigma > 0 and eta > 0 and math.isfinite(sigma) and math.isfinite(eta)):
        raise GraphError(f"sigma and eta must be positive, got sigma={sigma}, eta={eta}")
    return delta, gamma, sigma, eta


def _threshold_for_degree(
    n: int, k: int, delta: float, gamma: float, sigma: float, eta: float
) -> tuple[int | None, float, float]:
    """(threshold or None, privacy failure prob per client, correctness failure prob per client)."""
    corrupt = math.floor(gamma * n + _EPS)
    surviving = math.ceil((1 - delta) * n - _EPS)
    priv_target = 2.0 ** -(sigma + 1) / n
    t = next(
        (t for t in range(1, k + 1) if _hypergeom_tail(n, corrupt, k, t, k) <= priv_target),
        None,
    )
    if t is None:
        return None, 1.0, 1.0
    t = max(t, 2) if k >= 2 else t
    p_priv = _hypergeom_tail(n, corrupt, k, t, k)
    p_fail = _hypergeom_tail(n, surviving, k, 0, t - 1)
    if p_fail > 2.0**-eta / n:
        return None, p_priv, p_fail
    return t, p_priv, p_fail


def secaggplus_parameters(
    n: int,
    dropout_rate: float = 0.1,
    corrupt_rate: float = 0.1,
    sigma: float = 40,
    eta: float = 30,
) -> tuple[int, int] | None:
    """The smallest even degree ``k < n - 1`` and its threshold ``t`` meeting the SecAgg+ rule
    (module docstring), or ``None`` if no sparse graph qualifies (use the complete graph).

    Raises ``GraphError`` for invalid rates, ``sigma``/``eta`` or ``n < 2``.
    """
    n = _check_int(n, "n")
    if n < 2:
        raise GraphError(f"n must be >= 2, got {n}")
    delta, gamma, sigma, eta = _check_rates(n, dropout_rate, corrupt_rate, sigma, eta)
    bad = math.floor((gamma + delta) * n + _EPS)
    log_target = -(sigma + 1) * _LN2
    for k in range(2, n - 1, 2):
        if harary_disconnect_log_bound(n, k, bad) >= log_target:
            continue
        t, _, _ = _threshold_for_degree(n, k, delta, gamma, sigma, eta)
        if t is not None:
            return k, t
    return None


def _ring_order(ids: list[int], seed: bytes) -> list[int]:
    def rank(i: int) -> bytes:
        return hmac.new(
            seed, b"fortis/secagg+/ring/v1:" + i.to_bytes(8, "big"), hashlib.sha256
        ).digest()

    return sorted(ids, key=lambda i: (rank(i), i))


def secaggplus_graph(
    ids: Sequence[int],
    seed: bytes,
    degree: int | None = None,
    threshold: int | None = None,
    dropout_rate: float = 0.1,
    corrupt_rate: float = 0.1,
    sigma: float = 40,
    eta: float = 30,
) -> MaskingGraph:
    """SecAgg+ random Harary graph (Bell et al. 2020) on ``ids``, a pure function of
    ``(sorted ids, seed, degree, threshold, rates, sigma, eta)``.

    With ``degree``/``threshold`` left as ``None`` they come from :func:`secaggplus_parameters`
    (smallest even degree meeting the connectivity, privacy and correctness bounds for the given
    ``dropout_rate``, ``corrupt_rate``, ``sigma``, ``eta``). Explicit values are accepted if
    ``degree`` is even with ``2 <= degree <= n - 2`` and ``1 <= threshold <= degree``; the stated
    security then reports the bounds those values actually achieve.

    ``seed`` (at least 16 bytes) fixes the ring order; it must be unpredictable to the adversary
    when the graph is chosen (e.g. derived from all advertised public keys).

    Raises
    ------
    GraphError
        Invalid ids, seed, degree, threshold, rates, or no sparse degree meets the rule (the
        message then points to :func:`complete_graph`).
    """
    members = _check_ids(ids)
    n = len(members)
    if not isinstance(seed, (bytes, bytearray, memoryview)) or len(seed) < 16:
        raise GraphError("seed must be at least 16 bytes")
    seed = bytes(seed)
    delta, gamma, sigma_f, eta_f = _check_rates(n, dropout_rate, corrupt_rate, sigma, eta)
    if degree is None:
        found = secaggplus_parameters(n, delta, gamma, sigma_f, eta_f)
        if found is None:
            raise GraphError(
                f"no SecAgg+ degree < n-1 meets sigma={sigma}, eta={eta} for n={n}, "
                f"dropout_rate={delta}, corrupt_rate={gamma}; use complete_graph"
            )
        k, t_rule = found
    else:
        k = _check_int(degree, "degree")
        if k % 2 or not 2 <= k <= n - 2:
            raise GraphError(
                f"degree={k} must be even and in [2, n-2={n - 2}] (use complete_graph for n-1)"
            )
        t_rule, _, _ = _threshold_for_degree(n, k, delta, gamma, sigma_f, eta_f)
    if threshold is None:
        if t_rule is None:
            raise GraphError(
                f"degree={k} admits no threshold meeting sigma={sigma}, eta={eta} for n={n}, "
                f"dropout_rate={delta}, corrupt_rate={gamma}; pass threshold explicitly or "
                "raise the degree"
            )
        t = t_rule
    else:
        t = _check_int(threshold, "threshold")
        if not 1 <= t <= k:
            raise GraphError(f"threshold={t} must be in [1, degree={k}]")

    order = _ring_order(members, seed)
    half = k // 2
    neighbours: dict[int, frozenset[int]] = {}
    for pos, i in enumerate(order):
        neighbours[i] = frozenset(
            order[(pos + off) % n] for off in range(-half, half + 1) if off != 0
        )

    corrupt = math.floor(gamma * n + _EPS)
    surviving = math.ceil((1 - delta) * n - _EPS)
    bad = math.floor((gamma + delta) * n + _EPS)
    log_disc = harary_disconnect_log_bound(n, k, bad)
    p_priv = n * _hypergeom_tail(n, corrupt, k, t, k)
    p_fail = n * _hypergeom_tail(n, surviving, k, 0, t - 1)
    p_disc = math.exp(log_disc) if log_disc > -math.inf else 0.0
    bits_sec = -math.log2(p_disc + p_priv) if p_disc + p_priv > 0 else math.inf
    bits_cor = -math.log2(p_fail) if p_fail > 0 else math.inf

    def _prob(bits: float) -> str:
        return "0 (impossible under the stated bounds)" if bits == math.inf else f"2^-{bits:.1f}"

    security = (
        f"SecAgg+ random Harary graph (Bell et al. 2020), n={n}, degree k={k}, threshold "
        f"t={t} of k neighbours; assumes an honest-but-curious server colluding with at most "
        f"corrupt_rate*n={corrupt} clients, at most dropout_rate*n={n - surviving} dropouts, "
        f"and a ring seed the adversary cannot bias. Privacy failure probability <= "
        f"{_prob(bits_sec)} (target 2^-{sigma}); round failure probability <= "
        f"{_prob(bits_cor)} (target 2^-{eta})."
    )
    params = {
        "n": n,
        "degree": k,
        "threshold": t,
        "dropout_rate": delta,
        "corrupt_rate": gamma,
        "sigma": sigma,
        "eta": eta,
        "security_bits": bits_sec,
        "correctness_bits": bits_cor,
    }
    return MaskingGraph(neighbours, t, "secagg+", security, params)
