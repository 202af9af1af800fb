"""In-memory driver: runs a whole round between one :class:`Server` and many :class:`Client`.

Messages go through :class:`protocol.router.Router`: every message really goes through the byte
format and each party's tolerant ``receive_bytes``; the router measures bytes and each party's
time per phase. Dropouts are a :class:`protocol.router.Dropouts` layer over it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from secagg.errors import EncodingOverflowError
from secagg.keys import SigningKeyPair
from secagg.paillier_pool import ObfuscationPool
from secagg.paillier_private import PaillierPrivateKey, generate_paillier_keypair

from .client import CLIENT_STAGES, Client
from .config import GRAPH_KINDS, RoundConfig
from .errors import KEYHOLDER_ID, SERVER_ID, ProtocolConfigError
from .filtering import FilterConfig, FilterDecision
from .keyholder import KeyHolder
from .ledger import RoundLedger
from .noise import NoiseConfig
from .preparation import FilterPreparation
from .router import Dropouts, Layer, Router, RouterLog
from .server import Fault, Server, ShareDispute, Verification

__all__ = [
    "run_round",
    "run_parties",
    "RoundResult",
    "Transcript",
    "DROPOUT_STAGES",
    "LyingSketchClient",
    "CulpritSearch",
]

#: Stage names accepted in ``dropouts``; a client listed under a stage never sends that stage's
#: message nor anything after it.
DROPOUT_STAGES = tuple(stage.phase for stage in CLIENT_STAGES)
_HARDENED_ONLY = frozenset(stage.phase for stage in CLIENT_STAGES if stage.hardened_only)
_FILTERING_ONLY = frozenset(stage.phase for stage in CLIENT_STAGES if stage.filtering_only)


@dataclass(frozen=True)
class Transcript:
    """What the round cost, measured on the actual encoded messages.

    Bytes are counted per party from the encoded messages; seconds are wall-clock time spent
    inside each party's code (protocol logic, crypto, encoding and decoding), per stage name of
    :data:`DROPOUT_STAGES`. The in-memory driver runs parties one after another, so times are
    per-party compute, not a network round-trip time.
    """

    server_bytes_sent: int
    server_bytes_received: int
    client_bytes_sent: dict[int, int]
    client_bytes_received: dict[int, int]
    server_seconds: dict[str, float]
    client_seconds: dict[int, dict[str, float]]
    messages: int
    keyholder_bytes_sent: int = 0
    keyholder_bytes_received: int = 0
    keyholder_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def server_total_seconds(self) -> float:
        """Total server compute time."""
        return sum(self.server_seconds.values())

    @property
    def mean_client_seconds(self) -> float:
        """Mean over clients of each client's total compute time."""
        totals = [sum(v.values()) for v in self.client_seconds.values()]
        return float(np.mean(totals)) if totals else 0.0

    @property
    def mean_client_bytes(self) -> float:
        """Mean over clients of bytes sent plus bytes received."""
        ids = set(self.client_bytes_sent) | set(self.client_bytes_received)
        if not ids:
            return 0.0
        return float(
            np.mean(
                [
                    self.client_bytes_sent.get(i, 0) + self.client_bytes_received.get(i, 0)
                    for i in ids
                ]
            )
        )

    def summary(self) -> dict[str, float]:
        """Headline numbers (for reports and benchmarks)."""
        return {
            "keyholder_seconds": sum(self.keyholder_seconds.values()),
            "keyholder_bytes_sent": self.keyholder_bytes_sent,
            "keyholder_bytes_received": self.keyholder_bytes_received,
            "server_seconds": self.server_total_seconds,
            "mean_client_seconds": self.mean_client_seconds,
            "server_bytes_sent": self.server_bytes_sent,
            "server_bytes_received": self.server_bytes_received,
            "mean_client_bytes": self.mean_client_bytes,
            "messages": self.messages,
        }


@dataclass(frozen=True, eq=False)
class RoundResult:
    """Outcome of one secure-aggregation round.

    Attributes
    ----------
    aggregate:
        float64 vector: the sum (or, with ``mean=True``, the mean) of the survivors' quantised
        updates, decoded; ``None`` if the round aborted.
    encoded_sum:
        The exact sum of the survivors' encodings in ``Z_{2^bits}`` (``None`` if aborted).
        ``config.encoder.decode(encoded_sum, len(survivors))`` is the float sum.
    survivors:
        Sorted client ids whose input is in the sum (clients that dropped during unmasking are
        still in it). Empty if aborted.
    dropped:
        Sorted client ids whose input is not in the sum, except the rejected ones.
    rejected:
        Client id -> why the server's input filter left its (received) masked input out of
        the sum. Rejected clients are not dropouts: they take part in unmasking, and only their
        mask keys are revealed.
    aborted, abort_reason:
        Whether the server aborted the round, and why (e.g. fewer than ``t`` clients left).
    faults:
        Messages the server rejected (with sender and reason).
    disputes:
        Shares that did not fit the others during unmasking (dealer or holder at fault; the
        server cannot tell which, so neither is excluded). The round still completes when
        enough consistent shares remain.
    refusals:
        Client id -> the :class:`ProtocolError` text of a request that client refused (for
        example an unmask request listing one client as both survivor and dropped).
    excluded:
        Client id -> why the server dropped it (a fault, its own abort, too few neighbours).
    pruned:
        Client id -> why its masked input, although received, is left out of the sum (fewer
        than ``t`` of its partners sent theirs; its mask key is then unmasked like a dropout's).
    transcript:
        Bytes and seconds per party (:class:`Transcript`), the key holder's included.
    filter:
        Secure filtering only: the filter's :class:`protocol.filtering.FilterDecision` (sketch
        distances and norms in update units, who was rejected and why, the rule's report).
    verification:
        Secure filtering only: the :class:`protocol.server.Verification` of the unmasked sum
        against the committed sketches; a failed one means ``aggregate`` is ``None``.
    culprit_search:
        The :class:`CulpritSearch` after a failed verification, when asked for.
    config:
        The :class:`RoundConfig` used (encoding, threshold, graph).
    threshold:
        The Shamir threshold ``t`` of the round.
    """

    aggregate: np.ndarray | None
    encoded_sum: np.ndarray | None
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    aborted: bool
    abort_reason: str | None
    faults: tuple[Fault, ...]
    refusals: dict[int, str]
    excluded: dict[int, str]
    transcript: Transcript
    config: RoundConfig
    threshold: int
    mean: bool = field(default=False)
    disputes: tuple[ShareDispute, ...] = ()
    pruned: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    filter: FilterDecision | None = None
    verification: Verification | None = None
    culprit_search: CulpritSearch | None = None


def _check_dropouts(
    dropouts: Mapping[str, Iterable[int]] | None,
    population: Sequence[int],
    hardened: bool,
    filtered: bool = False,
) -> dict[int, str]:
    if dropouts is None:
        return {}
    if not isinstance(dropouts, Mapping):
        raise TypeError(
            f"dropouts must be a mapping stage name -> client indices, got {type(dropouts).__name__}"
        )
    members = set(population)
    drop_at: dict[int, str] = {}
    for stage, ids in dropouts.items():
        if stage not in DROPOUT_STAGES:
            raise ProtocolConfigError(
                f"dropouts: unknown stage {stage!r}; stages are {DROPOUT_STAGES}"
            )
        if stage in _HARDENED_ONLY and not hardened:
            raise ProtocolConfigError(f"dropouts: stage {stage!r} exists only with hardened=True")
        if stage in _FILTERING_ONLY and not filtered:
            raise ProtocolConfigError(
                f"dropouts: stage {stage!r} exists only with secure filtering (rule=...)"
            )
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or int(i) not in members:
                raise ProtocolConfigError(
                    f"dropouts[{stage!r}]: {i!r} is not a client of this round"
                )
            if int(i) in drop_at and drop_at[int(i)] != stage:
                raise ProtocolConfigError(
                    f"dropouts: client {int(i)} drops at both {drop_at[int(i)]!r} and {stage!r}"
                )
            drop_at[int(i)] = stage
    return drop_at


def run_parties(
    server: Server,
    clients: Mapping[int, Client],
    *,
    keyholder: KeyHolder | None = None,
    dropouts: Mapping[str, Iterable[int]] | None = None,
    mean: bool = False,
    layers: Sequence[Layer] = (),
    server_pool: ObfuscationPool | None = None,
) -> RoundResult:
    """Run one round in memory between ``server`` and ``clients`` (id -> Client) through the
    :class:`~protocol.router.Router`.

    ``dropouts`` maps a stage of :data:`DROPOUT_STAGES` to client ids that go silent at that
    stage (a :class:`~protocol.router.Dropouts` layer); further fault ``layers`` (tampering,
    replays, recording) are stacked after it. Clients that refuse a message send an ``Abort``
    with the reason instead of an answer; refusals are reported in
    :attr:`RoundResult.refusals`. A filtered round needs its ``keyholder``; unless the server
    was given a preparation already, the preparation with the key holder
    (:class:`protocol.preparation.FilterPreparation`) runs first, through its own router, and
    its costs are in the transcript under the phase ``"prepare"``.
    """
    config = server.config
    if config.filtered and keyholder is None:
        raise ProtocolConfigError("a round with secure filtering needs its keyholder=")
    drop_at = _check_dropouts(dropouts, config.population, config.hardened, config.filtered)
    prep_log = None
    if config.filtered and not server.prepared:
        # the preparation involves no client: in a deployment it runs between rounds
        prep = FilterPreparation(config, workers=server.unmask_workers, pool=server_pool)
        prep_log = Router([prep, keyholder]).run()
        if prep.prepared is not None:
            server.attach_preparation(prep.prepared)
    parties = [server, *clients.values(), *([keyholder] if keyholder is not None else [])]
    router = Router(parties, layers=[Dropouts(drop_at), *layers])
    log = router.run()
    if prep_log is not None:
        log.merge(prep_log)
    return round_result(server, log, clients=clients, mean=mean)


def round_result(
    server: Server,
    log: RouterLog,
    *,
    clients: Mapping[int, Client] | None = None,
    mean: bool = False,
) -> RoundResult:
    """The :class:`RoundResult` of a finished ``server``, with the costs in ``log``.

    ``clients`` (id -> party) adds the clients' refusals; without them (a network driver, where
    the clients live elsewhere) refusals are empty and per-client bytes are the ones ``log``
    counted for each member of the population.
    """
    config = server.config
    clients = clients or {}
    result = server.result
    if result is not None:
        survivors = tuple(result.survivors)
        aggregate = result.aggregate / len(survivors) if mean else result.aggregate
        encoded_sum = result.encoded_sum
    else:
        survivors, aggregate, encoded_sum = (), None, None
    ids = list(clients) or list(config.population)
    transcript = Transcript(
        server_bytes_sent=log.bytes_sent.get(SERVER_ID, 0),
        server_bytes_received=log.bytes_received.get(SERVER_ID, 0),
        client_bytes_sent={i: log.bytes_sent.get(i, 0) for i in ids},
        client_bytes_received={i: log.bytes_received.get(i, 0) for i in ids},
        server_seconds=dict(log.seconds.get(SERVER_ID, {})),
        client_seconds={i: dict(log.seconds.get(i, {})) for i in ids},
        messages=log.messages_sent,
        keyholder_bytes_sent=log.bytes_sent.get(KEYHOLDER_ID, 0),
        keyholder_bytes_received=log.bytes_received.get(KEYHOLDER_ID, 0),
        keyholder_seconds=dict(log.seconds.get(KEYHOLDER_ID, {})),
    )
    return RoundResult(
        aggregate=aggregate,
        encoded_sum=encoded_sum,
        survivors=survivors,
        dropped=tuple(
            i for i in config.population if i not in set(survivors) and i not in server.rejected
        ),
        aborted=server.aborted,
        abort_reason=server.abort_reason,
        faults=tuple(server.faults),
        disputes=tuple(server.disputes),
        refusals={i: str(c.refusal) for i, c in clients.items() if c.refusal is not None},
        excluded=dict(server.excluded),
        pruned=dict(server.pruned),
        rejected=dict(server.rejected),
        transcript=transcript,
        config=config,
        threshold=server.threshold,
        mean=mean,
        filter=server.filter_decision,
        verification=server.verification,
    )


def _as_updates(updates: object) -> np.ndarray:
    if isinstance(updates, np.ndarray):
        x = updates
    else:
        try:
            rows = [np.asarray(u) for u in updates]  # type: ignore[union-attr]
        except TypeError:
            raise TypeError(
                f"updates must be an (n, d) array or a list of vectors, got {type(updates).__name__}"
            ) from None
        lengths = {r.shape for r in rows}
        if len(lengths) > 1:
            raise ProtocolConfigError(
                f"updates: all vectors must have the same shape, got {sorted(lengths)}"
            )
        x = np.stack(rows) if rows else np.empty((0, 0))
    if x.dtype.kind not in "fiu":
        raise TypeError(f"updates must be real numbers, got dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ProtocolConfigError(
            f"updates must be (n clients, d coordinates), got shape {x.shape}"
        )
    if x.shape[0] < 2:
        raise ProtocolConfigError(f"secure aggregation needs at least 2 clients, got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ProtocolConfigError("updates must have at least one coordinate")
    finite = np.isfinite(x)
    if not finite.all():
        i, j = map(int, np.argwhere(~finite)[0])
        raise ProtocolConfigError(f"updates[{i}][{j}] = {x[i, j]} is not finite")
    return x


def _default_value_range(x: np.ndarray) -> float:
    m = float(np.max(np.abs(x)))
    if m == 0.0:
        return 1.0
    return float(2.0 ** math.ceil(math.log2(m)))


def run_round(
    updates: np.ndarray | Sequence[Sequence[float]],
    *,
    value_range: float | None = None,
    bits: int = 32,
    graph: str = "complete",
    threshold: int | None = None,
    dropouts: Mapping[str, Sequence[int]] | None = None,
    mean: bool = False,
    hardened: bool = False,
    seed: int | None = None,
    round_id: int = 0,
    dropout_rate: float = 0.1,
    corrupt_rate: float = 0.1,
    rule: str | None = None,
    f: int | str = 0,
    rule_params: Mapping[str, object] | None = None,
    sketch_dim: int = 128,
    clip_norm: float | None = None,
    paillier_key: PaillierPrivateKey | None = None,
    false_rejection: float = 1e-6,
    sketched: Mapping[int, Sequence[float]] | None = None,
    keyholder_pool: ObfuscationPool | None = None,
    server_pool: ObfuscationPool | None = None,
    culprit_search: bool = False,
    min_group: int = 4,
    noise: NoiseConfig | None = None,
) -> RoundResult:
    """Securely aggregate ``updates`` in memory with the full protocol; return a RoundResult.

    Every party (one server, one client per row) runs its real state machine, with real
    cryptography, and every message goes through the versioned byte encoding.

    Parameters
    ----------
    updates:
        ``(n, d)`` float array, or a list of ``n`` vectors of length ``d``; row ``i`` is client
        ``i``'s update (client ids are the row indices). At least 2 clients.
    value_range:
        Largest absolute coordinate value; the fixed-point range is ``[-value_range, value_range]``. A value
        above it raises :class:`secagg.errors.EncodingOverflowError` (fortis never clips
        silently: clip your updates first, e.g. to a norm bound, or pass a larger ``value_range=``).
        ``None``: the smallest power of two ``>= max |x|`` over all inputs (1.0 if all are 0).
        That default depends on the data (the server would learn it); pass ``value_range=`` explicitly
        in deployments.
    bits:
        Ring size ``2**bits`` (2..64) of the masked arithmetic; the precision (fractional bits)
        is the largest that leaves headroom for the sum of ``n`` values of ``value_range``. Raises
        ``EncodingOverflowError`` if there is no headroom (raise ``bits`` or lower ``value_range``).
    graph:
        ``"complete"`` (Bonawitz et al. 2017; every pair of clients masks) or ``"secagg+"``
        (Bell et al. 2020; random sparse graph of O(log n) degree with the rule of
        :mod:`secagg.graphs`; needs n large enough for a sparse degree to exist, else raises
        ``secagg.errors.GraphError``).
    threshold:
        Shamir threshold ``t`` (``None``: the graph's rule, ``floor(n/2)+1`` for the complete
        graph). The round aborts if fewer than ``t`` clients remain at any stage.
    dropouts:
        Stage name -> client indices that drop at that stage, i.e. never send that stage's
        message nor anything later. Stages: ``"advertise"`` (never joins), ``"share_keys"``
        (after advertising keys), ``"complaints"`` (after sharing keys, before the share check
        answers; nobody masks with it), ``"masked_input"`` (after the share check; its input is
        not in the sum and its mask key is unmasked), ``"consistency"`` (hardened only; its input is in the sum) and ``"unmask"``
        (during unmasking; its input is in the sum). A client may appear under one stage only.
    mean:
        Return the mean over the survivors instead of the sum.
    hardened:
        Ed25519-signed key advertisements and the consistency check on the survivor set
        (Bonawitz et al. 2017, section 6); a fresh PKI is made for the clients.
    seed:
        Makes the stochastic rounding and (plain mode) the masking graph reproducible (so the
        aggregate is deterministic); hardened mode derives the graph from the advertised keys. Keys, masks and Shamir coefficients always come from the OS CSPRNG.
    round_id:
        Round number bound into every message and key derivation.
    dropout_rate, corrupt_rate:
        SecAgg+ only: the fraction of dropouts the sparse graph must survive and the fraction of
        clients that may collude with the server; they set its degree and threshold (rule of
        :mod:`secagg.graphs`). More dropouts than planned can make the round abort (cleanly,
        with the reason). Ignored for the complete graph.
    rule, f, rule_params:
        Secure filtering (:mod:`protocol.filtering`): a distance-based rule of :mod:`robust`
        (``"multi_krum"``, ``"krum"``, ``"distance_filter"``, ``"mean"``), its ``f`` (int or
        ``"auto"``) and other parameters. The server runs it on the exact pairwise distances
        of the clients' encrypted sketches, obtained with a key holder that only decrypts
        masked values; rejected clients are left out of the sum like dropouts, and the sum is
        verified against the committed sketches before it is released. ``None``: plain secure
        aggregation. Coordinate-wise rules are refused (the server never sees coordinates).
    sketch_dim:
        ``k`` of the sketches (relative distance error about ``sqrt(2/k)``).
    clip_norm:
        The norm bound ``C`` of secure filtering: an update longer than that raises (clip
        first); a sketch longer than ``C*(1+eps)`` is rejected. ``None``: the smallest power of
        two above the largest update norm (data-dependent; pass it in deployments).
    paillier_key:
        The key holder's Paillier key (``None``: a fresh 2048-bit key, which takes seconds;
        reuse one across rounds).
    false_rejection:
        Bound on the probability that the norm bound rejects an honest update.
    sketched:
        Client index -> the update that client *sketches* instead of the one it masks: the
        lying-sketch attack (:class:`LyingSketchClient`), for threat-model tests.
    keyholder_pool, server_pool:
        Obfuscators (``r**n`` of the Paillier key) filled ahead of time, for the key holder's
        and the server's encryptions and re-randomisations in the preparation.
    noise:
        Distributed DP noise with verifiable shares (:class:`protocol.noise.NoiseConfig`; needs
        ``rule``): every client adds a seeded integer noise share before masking, the key
        holder regenerates the accepted shares' sketch, and the verification covers the noisy
        sum. The aggregate then carries the accepted clients' noise.
    culprit_search, min_group:
        After a failed verification, look for the liars by re-running the accepted clients in
        disjoint groups of at least ``min_group`` (halving the failing groups while they have
        ``2 * min_group`` members), each group a fresh filtered round of its own that is
        verified alone. What that reveals: the server learns the sum of every group tested
        (the groups are nested halves, so nothing finer than a sum over ``min_group`` or more
        clients) and the key holder one bit per group. Opt-in for that reason; the outcome
        is in :attr:`RoundResult.culprit_search`.

    Returns
    -------
    RoundResult
        ``.aggregate`` (float64 sum or mean over ``.survivors``, or ``None`` if aborted),
        ``.survivors``, ``.dropped``, ``.aborted``/``.abort_reason``, ``.encoded_sum`` (exact,
        integer domain), ``.faults``, ``.refusals`` and ``.transcript`` (bytes and seconds per
        party and stage); with a ``rule``, ``.rejected`` (the filter's verdicts), ``.filter``
        and ``.verification``.

    Raises
    ------
    TypeError, ValueError
        Malformed ``updates`` (shape, non-finite values), unknown ``graph``, bad ``dropouts``
        (unknown stage, unknown client, client listed twice), bad ``threshold``
        (``secagg.errors.GraphError`` is a ValueError).
    secagg.errors.EncodingOverflowError
        A value above ``value_range``, or no headroom for ``bits``.
    """
    x = _as_updates(updates)
    n, d = x.shape
    if graph not in GRAPH_KINDS:
        raise ProtocolConfigError(f"graph must be one of {GRAPH_KINDS}, got {graph!r}")
    if value_range is None:
        value_range = _default_value_range(x)
    else:
        if isinstance(value_range, bool) or not isinstance(value_range, (int, float, np.floating)):
            raise TypeError(f"value_range must be a number, got {type(value_range).__name__}")
        if not math.isfinite(value_range) or value_range <= 0:
            raise ProtocolConfigError(
                f"value_range must be a positive finite number, got {value_range}"
            )
        over = np.abs(x) > value_range
        if over.any():
            i, j = map(int, np.argwhere(over)[0])
            raise EncodingOverflowError(
                f"updates[{i}][{j}] = {x[i, j]} is outside [-value_range, value_range] with value_range={value_range} "
                f"({int(over.any(axis=1).sum())} clients affected); fortis never clips silently: "
                "clip the updates first or pass a larger value_range="
            )
    filtering = None
    if rule is not None:
        if paillier_key is None:
            paillier_key = generate_paillier_keypair()[1]
        if not isinstance(paillier_key, PaillierPrivateKey):
            raise TypeError(
                f"paillier_key must be a PaillierPrivateKey, got {type(paillier_key).__name__}"
            )
        norms = np.linalg.norm(x, axis=1)
        if clip_norm is None:
            clip_norm = _default_value_range(norms[:, None])
        over = norms > clip_norm * (1.0 + 1e-6)  # as FilterConfig.admits
        if over.any():
            i = int(np.argmax(over))
            raise EncodingOverflowError(
                f"updates[{i}] has norm {norms[i]:.6g} > clip_norm={clip_norm}; fortis never "
                "clips silently: clip the updates first or pass a larger clip_norm="
            )
        filtering = FilterConfig(
            paillier_key.public_key,
            clip_norm,
            rule=rule,
            f=f,
            rule_params=dict(rule_params or {}),
            sketch_dim=sketch_dim,
            false_rejection=false_rejection,
        )
    elif sketched:
        raise ProtocolConfigError("sketched= needs secure filtering (rule=...)")
    rng = np.random.default_rng(seed)
    graph_seed = rng.bytes(32) if seed is not None else None
    client_rngs = rng.spawn(n)
    config = RoundConfig(
        round_id=round_id,
        population=tuple(range(n)),
        dim=d,
        value_range=float(value_range),
        bits=bits,
        graph=graph,
        threshold=threshold,
        hardened=hardened,
        dropout_rate=dropout_rate,
        corrupt_rate=corrupt_rate,
        filtering=filtering,
        noise=noise,
    )
    signing = pki = None
    if hardened:
        signing = {i: SigningKeyPair.generate() for i in range(n)}
        pki = {i: k.public_bytes() for i, k in signing.items()}
    _check_dropouts(dropouts, config.population, hardened, filtering is not None)
    lies = {int(i): np.asarray(v, dtype=np.float64) for i, v in (sketched or {}).items()}
    strangers = sorted(set(lies) - set(range(n)))
    if strangers:
        raise ProtocolConfigError(f"sketched: {strangers[:10]} are not clients of this round")
    server = Server(config, graph_seed=None if hardened else graph_seed, pki=pki)
    clients = {}
    for i in range(n):
        kwargs = dict(
            rng=client_rngs[i],
            signing_key=signing[i] if signing else None,
            pki=pki,
            round_ledger=RoundLedger.in_memory() if hardened else None,
        )
        if i in lies:
            clients[i] = LyingSketchClient(config, i, x[i], sketched_update=lies[i], **kwargs)
        else:
            clients[i] = Client(config, i, x[i], **kwargs)
    keyholder = None
    if filtering is not None:
        keyholder = KeyHolder(config, paillier_key, pool=keyholder_pool)
    result = run_parties(
        server, clients, keyholder=keyholder, dropouts=dropouts, mean=mean, server_pool=server_pool
    )
    v = result.verification
    if culprit_search and v is not None and not v.passed:
        search = _search_culprits(
            x,
            v.clients,
            min_group,
            lies,
            dict(
                value_range=value_range,
                bits=bits,
                rule="mean",
                clip_norm=filtering.clip_norm,
                paillier_key=paillier_key,
                sketch_dim=sketch_dim,
                false_rejection=false_rejection,
                round_id=round_id,
            ),
        )
        result = dataclasses.replace(result, culprit_search=search)
    return result


@dataclass(frozen=True)
class CulpritSearch:
    """Where a failed verification's liars are, as far as groups of ``min_group`` allow.

    ``tests``: every group re-run, with whether its own verification passed, in the order
    run. ``suspects``: the members of the smallest failing groups (every liar that lied
    again is among them). What it cost in privacy: the server learned each tested group's
    sum, the key holder one bit per group (:func:`run_round`, ``culprit_search``).
    """

    min_group: int
    tests: tuple[tuple[tuple[int, ...], bool], ...]
    suspects: tuple[int, ...]


def _search_culprits(x, accepted, min_group, lies, kwargs) -> CulpritSearch:
    if isinstance(min_group, bool) or not isinstance(min_group, int) or min_group < 2:
        raise ProtocolConfigError(f"min_group must be an int >= 2, got {min_group!r}")
    tests: list[tuple[tuple[int, ...], bool]] = []
    suspects: list[int] = []

    def test(group: tuple[int, ...]) -> bool:
        rows = list(group)
        r = run_round(
            x[rows],
            sketched={p: lies[i] for p, i in enumerate(rows) if i in lies},
            **kwargs,
        )
        ok = not r.aborted and r.verification is not None and r.verification.passed
        tests.append((group, ok))
        return ok

    def split(group: tuple[int, ...]) -> None:
        if len(group) < 2 * min_group:
            suspects.extend(group)
            return
        half = len(group) // 2
        for part in (group[:half], group[half:]):
            if not test(part):
                split(part)

    split(tuple(sorted(accepted)))
    return CulpritSearch(min_group, tuple(tests), tuple(sorted(suspects)))


class LyingSketchClient(Client):
    """A Byzantine client that masks its update but sketches another one (``sketched_update``,
    e.g. a benign-looking vector), hoping the filter judges the sketch while the sum gets the
    masked update. The verification of a filtered round catches it (:mod:`secagg.zero_test`);
    this class exists for threat-model tests and the attack library.

    Raises what :class:`Client` raises, also for a bad ``sketched_update``.
    """

    def __init__(self, config: RoundConfig, client_id: int, update, *, sketched_update, **kw):
        super().__init__(config, client_id, update, **kw)
        fake = np.asarray(sketched_update, dtype=np.float64)
        if fake.shape != (config.dim,) or not np.isfinite(fake).all():
            raise ProtocolConfigError(
                f"client {client_id}: sketched_update must be finite, shape ({config.dim},)"
            )
        self._fake = fake

    def _sketch_input(self) -> np.ndarray:
        enc = self.config.encoder
        return enc.to_signed(enc.encode(self._fake, self._rng)).astype(np.int64)
