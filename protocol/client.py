"""The client party of a secure-aggregation round, as a sans-I/O state machine.

Theory of operation
===================

Rule 1: everything that decides the client's stage lives in this file: the stage table
:data:`CLIENT_TRANSITIONS` below (built from :data:`CLIENT_STAGES`), plus the checks in the
``_on_*`` handlers. Rule 2: the client does no I/O and no sleeping, and keeps no thread beyond
one call (``mask_workers`` threads share the mask expansion and key agreements inside a call,
then end). The application (a driver, e.g. :class:`protocol.router.Router`) calls
:meth:`Client.start` once and then feeds every message from the server to :meth:`Client.receive`
(or the bytes to the tolerant :meth:`Client.receive_bytes`), which returns the messages to send
back (a list with zero or one element).

A round follows Bonawitz et al. (CCS 2017), with the masking graph either complete or the SecAgg+
random sparse graph of Bell et al. (CCS 2020), plus the partner-set binding of fortis:

1. ``start()``: in hardened mode (and whenever a :class:`~protocol.ledger.RoundLedger` is
   given) refuse a round id that is not above the last one joined with this federation, and
   record it first. Make two X25519 key pairs, ``c`` (share encryption) and ``s`` (pairwise
   masks), and a random 32-byte self-mask seed ``b``; advertise ``c_pk`` and ``s_pk`` (signed
   with Ed25519 over the round's :attr:`RoundConfig.digest` in hardened mode).
2. ``ServerKeys``: check every claim of the server (graph, threshold, that the keys are distinct
   and, hardened, validly signed). Hardened mode gets *every* accepted advertisement, recomputes
   the graph seed as their hash (the server cannot choose the SecAgg+ ring) and the pruning of
   clients with fewer than ``t`` live neighbours. A client needs at least ``t`` neighbours. Split
   ``b`` and ``s_sk`` into ``t``-of-``k+1`` Shamir shares (points = holder id + 1; one share is
   kept by the client itself, as in Bonawitz et al.) and seal each neighbour's pair of shares with
   AES-GCM under the ``c`` agreement key, with associated data binding (round, sender, recipient).
3. ``ForwardShares``: the neighbours whose shares arrived (U2) are the partners we mask with;
   fewer than ``t`` partners is refused (t-1 colluders could be all of them). Quantise the
   update, add ``PRG(b)`` and ``+-PRG(s_ij)`` for each partner, send ``y`` with the partner set
   (hardened: signed together with ``SHA-256(y)`` and the round context).
4. Hardened mode only, ``ConsistencyRequest``: sign the survivor set U3 (with the round context:
   config digest and graph seed), after the same checks as step 5 on U3.
5. ``UnmaskRequest``: send the share of ``b_i`` for each survivor ``i`` and the share of
   ``s_sk_j`` for each dropped ``j`` -- after checking that no id is in both lists, that we are a
   survivor ourselves with at least ``t`` partners among the survivors, that the lists agree with
   what we know and lie in the population, and, hardened, that U3 is the one we signed, that it
   carries :meth:`RoundConfig.min_signatures` valid signatures, and that every survivor whose
   ``b`` share we release signed a partner set that contains us and keeps ``t`` partners in U3.
   One answer per round: a second ``UnmaskRequest`` is illegal in stage ``DONE``.

Invariants. Never both shares: the server must never obtain both ``b_i`` and ``s_sk_i`` of a
client; an honest client enforces it on its side by the checks of step 5, and in hardened mode
the signed U3 makes every honest client answer for the same split. Partners: once ``b_i`` is
out, ``x_i`` stays hidden only by the masks of partners still in the sum, so ``b_i`` is released
only while ``t`` of ``i``'s partners are survivors, at least one of them honest when at most
``t - 1`` clients collude. A violating request raises :class:`ProtocolError` naming the server,
and the client does not answer.

Errors: every illegal message -- wrong round, not from the server, addressed to another client,
not allowed in the current stage (which covers replays), or failing a check -- raises
:class:`ProtocolError` naming this client as the role, the sender, the stage and the message
type. The client then moves to ``FAILED`` and refuses everything afterwards. An ``Abort`` from
the server moves it to ``ABORTED``.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from secagg import keys as sk
from secagg import shamir, vss
from secagg.errors import EncodingOverflowError, SecAggError
from secagg.masking import default_workers, mask_input, pairwise_seed
from secagg.paillier_pool import ObfuscationPool
from secagg.sketch import projection_seed, sketch

from .audit import MASK_KEY, SELF_MASK_SEED, ClientAudit, frozen_map
from .config import RoundConfig
from .errors import SERVER_ID, MessageFormatError, ProtocolConfigError, ProtocolError, party_name
from .events import LeaveRound, Refused, StartRound
from .ledger import RoundLedger
from .messages import (
    Abort,
    AdvertiseKeys,
    Complaint,
    ConsistencyRequest,
    ConsistencySignature,
    ForwardShares,
    KeyEntry,
    MaskedInput,
    MaskingPartners,
    Message,
    ServerKeys,
    ShareComplaints,
    ShareKeys,
    SketchCommit,
    SketchRequest,
    UnmaskRequest,
    UnmaskResponse,
    advertise_signing_bytes,
    committed_digest,
    decode_from,
    decode_partner_record,
    decode_share_payload,
    encode_complaint,
    encode_share_payload,
    graph_seed_from_adverts,
    input_digest,
    mask_agreement_info,
    partners_signing_bytes,
    round_context,
    share_aad,
    share_agreement_info,
    share_signing_bytes,
    survivors_signing_bytes,
)
from .noise import NOISE_SEED_BYTES, noise_share
from .stages import Stage, build_transitions, phase_of

__all__ = ["Client", "ClientStage", "CLIENT_STAGES", "CLIENT_TRANSITIONS"]


class ClientStage(enum.Enum):
    """Where a client is in the round (named after what it waits for)."""

    NEW = "NEW"
    WAIT_KEYS = "WAIT_KEYS"
    WAIT_SHARES = "WAIT_SHARES"
    WAIT_PARTNERS = "WAIT_PARTNERS"
    WAIT_SKETCH = "WAIT_SKETCH"
    WAIT_CONSISTENCY = "WAIT_CONSISTENCY"
    WAIT_UNMASK = "WAIT_UNMASK"
    DONE = "DONE"
    ABORTED = "ABORTED"
    FAILED = "FAILED"


S = ClientStage

#: What ends a client's round from any live stage: the server's Abort or the application's
#: LeaveRound (-> ABORTED), or an illegal message it refused (-> FAILED).
_EXITS = {Abort: S.ABORTED, LeaveRound: S.ABORTED, Refused: S.FAILED}


def _waiting(
    stage: ClientStage,
    message: type,
    phase: str,
    *,
    hardened_only: bool = False,
    filtering_only: bool = False,
) -> Stage:
    """A stage waiting for one server message, which moves it to the next stage."""
    return Stage(
        stage,
        message,
        phase,
        exits=_EXITS,
        hardened_only=hardened_only,
        filtering_only=filtering_only,
    )


#: The client's stages in round order; the phase is that of the answer the client sends. Each
#: stage's message is handled by ``_on_<message type>``. Inserting a stage is one line here.
CLIENT_STAGES: tuple[Stage, ...] = (
    Stage(S.NEW, StartRound, "advertise", exits={LeaveRound: S.ABORTED, Refused: S.FAILED}),
    _waiting(S.WAIT_KEYS, ServerKeys, "share_keys"),
    _waiting(S.WAIT_SHARES, ForwardShares, "complaints"),
    _waiting(S.WAIT_PARTNERS, MaskingPartners, "masked_input"),
    _waiting(S.WAIT_SKETCH, SketchRequest, "sketch", filtering_only=True),
    _waiting(S.WAIT_CONSISTENCY, ConsistencyRequest, "consistency", hardened_only=True),
    _waiting(S.WAIT_UNMASK, UnmaskRequest, "unmask"),
)

#: mode (hardened?, filtering?) -> stage -> {event or message type -> next stage}. Anything
#: not listed is illegal in that stage and raises ProtocolError. After DONE the server may
#: still abort.
CLIENT_TRANSITIONS: dict[tuple[bool, bool], dict[ClientStage, dict[type, ClientStage]]] = {
    (hardened, filtering): build_transitions(
        CLIENT_STAGES,
        hardened=hardened,
        filtering=filtering,
        done=S.DONE,
        terminal={
            S.DONE: {Abort: S.ABORTED, LeaveRound: S.ABORTED, Refused: S.FAILED},
            S.ABORTED: {},
            S.FAILED: {},
        },
    )
    for hardened in (False, True)
    for filtering in (False, True)
}

#: Local events that the table lists but that never arrive through :meth:`Client.receive`.
_LOCAL = (LeaveRound, Refused)


class Client:
    """One client's side of a round.

    Parameters
    ----------
    config:
        The round's public parameters (same object/values as the server's).
    client_id:
        This client's id; must be in ``config.population``.
    update:
        The client's update, shape ``(config.dim,)``, every ``|x| <= config.value_range`` (the caller
        clips; nothing is clipped here).
    rng:
        Generator for stochastic rounding (default: a fresh ``np.random.default_rng()``). The
        cryptographic secrets always come from the OS CSPRNG, never from ``rng``.
    signing_key, pki:
        Hardened mode: this client's Ed25519 key pair and the map client id -> Ed25519 public key
        used to verify the other clients' advertisements and consistency signatures.
    paillier_pool:
        Secure filtering: an :class:`~secagg.paillier_pool.ObfuscationPool` for the round's
        Paillier key, filled ahead of time, so encrypting the sketch online costs one
        multiplication per ciphertext (without one, ``r**n`` is computed on the spot).
    round_ledger:
        The client's record of the last round id it joined per federation
        (:class:`protocol.ledger.RoundLedger`). Required in hardened mode; :meth:`start` refuses
        a round id that is not above the last one, so a server cannot replay signatures of an
        abandoned round into a new round with the same id. Optional in plain mode (checked
        when given).

    Raises
    ------
    ValueError
        Bad ``client_id``, ``update`` shape, or missing hardened-mode keys or ledger.
    secagg.errors.EncodingOverflowError
        If ``update`` has a non-finite value or a value above ``config.value_range``.
    """

    def __init__(
        self,
        config: RoundConfig,
        client_id: int,
        update: np.ndarray,
        *,
        rng: np.random.Generator | None = None,
        signing_key: sk.SigningKeyPair | None = None,
        pki: Mapping[int, bytes] | None = None,
        mask_workers: int | None = None,
        round_ledger: RoundLedger | None = None,
        paillier_pool: ObfuscationPool | None = None,
    ) -> None:
        if not isinstance(config, RoundConfig):
            raise TypeError(f"config must be a RoundConfig, got {type(config).__name__}")
        self.config = config
        self.mask_workers = default_workers() if mask_workers is None else int(mask_workers)
        if self.mask_workers < 1:
            raise ProtocolConfigError(f"mask_workers must be >= 1, got {mask_workers!r}")
        if client_id not in config.population:
            raise ProtocolConfigError(f"client_id {client_id!r} is not in the round's population")
        self.id = int(client_id)
        self.role = party_name(self.id)
        x = np.asarray(update, dtype=np.float64)
        if x.shape != (config.dim,):
            raise ProtocolConfigError(
                f"{self.role}: update must have shape ({config.dim},), got {x.shape}"
            )
        if not np.isfinite(x).all():
            bad = int(np.argmin(np.isfinite(x)))
            raise EncodingOverflowError(f"{self.role}: update[{bad}] = {x[bad]} is not finite")
        if x.size and float(np.max(np.abs(x))) > config.value_range:
            bad = int(np.argmax(np.abs(x)))
            raise EncodingOverflowError(
                f"{self.role}: update[{bad}] = {x[bad]} exceeds value_range={config.value_range}; fortis never "
                "clips silently: clip the update first or use a larger value_range"
            )
        if config.filtering is not None:
            norm = float(np.linalg.norm(x))
            if not config.filtering.admits(norm):
                raise EncodingOverflowError(
                    f"{self.role}: update norm {norm:.6g} exceeds the round's clip_norm="
                    f"{config.filtering.clip_norm:g}; fortis never clips silently: clip the "
                    "update to that norm first"
                )
        self._update = x
        self._rng = rng if rng is not None else np.random.default_rng()
        self._pool = paillier_pool
        self._signed_input: np.ndarray | None = None  # filtering: what the client sketches
        self._noise_seed: bytes | None = None  # distributed noise: the share's seed
        if config.hardened:
            if signing_key is None or pki is None:
                raise ProtocolConfigError(f"{self.role}: hardened mode needs signing_key and pki")
            if pki.get(self.id) != signing_key.public_bytes():
                raise ProtocolConfigError(
                    f"{self.role}: pki[{self.id}] is not this client's signing key"
                )
            if round_ledger is None:
                raise ProtocolConfigError(
                    f"{self.role}: hardened mode needs a round_ledger (RoundLedger(path) to "
                    "persist the last round id across restarts, RoundLedger.in_memory() for "
                    "one process)"
                )
        if round_ledger is not None and not isinstance(round_ledger, RoundLedger):
            raise TypeError(
                f"round_ledger must be a RoundLedger, got {type(round_ledger).__name__}"
            )
        self._ledger = round_ledger
        self._signing_key = signing_key
        self._pki = dict(pki) if pki is not None else {}
        self.stage = ClientStage.NEW
        self.abort_reason: str | None = None
        #: The first illegal message this client refused through :meth:`receive_bytes`.
        self.refusal: ProtocolError | None = None
        #: Non-fatal problems (e.g. a neighbour's sealed share that failed to decrypt).
        self.warnings: list[str] = []
        # secrets and round state, filled in as the round goes
        self._c: sk.KeyPair | None = None
        self._s: vss.DHKeyPair | None = None
        self._b: bytes | None = None
        self._threshold = 0
        self._neighbours: frozenset[int] = frozenset()
        self._peers: dict[int, tuple[bytes, bytes]] = {}  # id -> (c_pk, s_pk) from ServerKeys
        self._share_keys: dict[int, bytes] = {}  # id -> AES key for sealed shares
        self._own_shares: tuple[int, int] = (0, 0)  # own share of (b, s_sk)
        self._inbox: dict[int, bytes] = {}  # dealer -> sealed shares forwarded to us
        #: dealer -> (self-mask seed share, mask key share) that verified against its commitments
        self._held: dict[int, tuple[bytes, bytes]] = {}
        self._complained: frozenset[int] = frozenset()
        self._partners: frozenset[int] = frozenset()  # who we masked with
        self._input_digest = b""
        self._context = b""  # round_context(config digest, graph seed), set at ServerKeys
        self._revealed: dict[int, str] = {}  # owner -> what we sent of it at unmasking
        self._signed_split: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    # -- public API ---------------------------------------------------------------------------

    def start(self) -> AdvertiseKeys:
        """Join the round: generate keys and return the :class:`AdvertiseKeys` to send."""
        (msg,) = self._dispatch(StartRound(), SERVER_ID)
        return msg

    @property
    def party_id(self) -> int:
        """This client's wire id."""
        return self.id

    def begin(self) -> list[Message]:
        """:meth:`start` as a list (the router's entry point)."""
        return [self.start()]

    def deadline(self) -> list[Message]:
        """Clients keep no timers (a silent server is the transport's business): ``[]``."""
        return []

    def receive_bytes(self, data: bytes, *, peer: int | None = None) -> list[Message]:
        """Tolerant entry point: decode and process one message; never raises for the sender's
        fault.

        An illegal message (bytes that do not decode, a check that fails) is refused as
        :meth:`receive` would refuse it: the :class:`ProtocolError` is kept in
        :attr:`refusal` and the client answers, once, with an ``Abort`` telling the server
        why. ``peer`` is the sender the transport authenticated; a header claiming another
        sender is refused.
        """
        try:
            return self.receive(decode_from(data, peer, max_count=self.config.n))
        except ProtocolError as exc:
            if exc.role != self.role:  # decoder errors name the decoder
                exc = ProtocolError(
                    exc.detail, role=self.role, sender=peer, stage=self.stage.value, event=exc.event
                )
            first = self.refusal is None
            self.refusal = self.refusal or exc
            self.stage = self._table().get(Refused, self.stage)
            if not first:
                return []
            return [Abort(self.config.round_id, self.id, SERVER_ID, f"refused: {exc.detail}")]

    def receive(self, msg: Message) -> list[Message]:
        """Process one message from the server; return the messages to send back (0 or 1).

        Raises :class:`ProtocolError` (and moves to ``FAILED``) if the message is illegal.
        """
        if not isinstance(msg, Message):
            raise TypeError(f"{self.role}: receive expects a Message, got {type(msg).__name__}")
        return self._dispatch(msg, msg.sender)

    def audit(self) -> ClientAudit:
        """A read-only copy of this client's own secrets and round state
        (:class:`protocol.audit.ClientAudit`), for tests and audits."""
        return ClientAudit(
            client_id=self.id,
            stage=self.stage.value,
            self_mask_seed=self._b,
            mask_private_key=self._s.private_bytes() if self._s is not None else None,
            share_public_key=self._c.public_bytes() if self._c is not None else None,
            mask_public_key=self._s.public_bytes() if self._s is not None else None,
            peer_mask_keys=frozen_map({j: s_pk for j, (_, s_pk) in self._peers.items()}),
            partners=frozenset(self._partners),
            held=frozen_map(self._held),
            revealed=frozen_map(self._revealed),
        )

    def abort(self, reason: str) -> Abort:
        """Leave the round voluntarily; returns the :class:`Abort` to send to the server."""
        self.stage = self._table().get(LeaveRound, self.stage)
        self.abort_reason = reason
        return Abort(self.config.round_id, self.id, SERVER_ID, reason)

    # -- dispatch -----------------------------------------------------------------------------

    def _error(self, detail: str, event: object, sender: int | None) -> ProtocolError:
        name = type(event).__name__
        return ProtocolError(
            detail, role=self.role, sender=sender, stage=self.stage.value, event=name
        )

    def _table(self) -> dict[type, ClientStage]:
        return CLIENT_TRANSITIONS[(self.config.hardened, self.config.filtered)][self.stage]

    @property
    def phase(self) -> str:
        """The round phase of this client's next answer (``"advertise"`` ... ``"unmask"``), or
        ``"done"`` once its part is over."""
        return phase_of(CLIENT_STAGES, self.stage)

    @property
    def done(self) -> bool:
        """True once the client has nothing more to send (done, aborted or failed)."""
        return self.stage in (ClientStage.DONE, ClientStage.ABORTED, ClientStage.FAILED)

    def _dispatch(self, event: object, sender: int) -> list[Message]:
        table = self._table()
        if isinstance(event, Message):
            problem = None
            if event.sender != SERVER_ID:
                problem = "clients accept messages from the server only"
            elif event.round_id != self.config.round_id:
                problem = (
                    f"message is for round {event.round_id}, this is round {self.config.round_id}"
                )
            elif getattr(event, "recipient", self.id) != self.id:
                problem = f"message is addressed to client {event.recipient}"
            if problem is not None:
                raise self._fail(self._error(problem, event, sender))
        next_stage = None if isinstance(event, _LOCAL) else table.get(type(event))
        if next_stage is None:
            allowed = ", ".join(t.__name__ for t in table if t not in _LOCAL)
            allowed = allowed or "nothing (terminal stage)"
            raise self._fail(
                self._error(f"not allowed in this stage (expects {allowed})", event, sender)
            )
        handler = getattr(self, "_on_" + type(event).__name__)
        try:
            out = handler(event)
        except ProtocolError as exc:
            raise self._fail(exc) from None
        except SecAggError as exc:  # e.g. a malformed peer key forwarded by the server
            raise self._fail(self._error(f"{type(exc).__name__}: {exc}", event, sender)) from exc
        self.stage = next_stage
        return out

    def _fail(self, exc: ProtocolError) -> ProtocolError:
        self.stage = self._table().get(Refused, self.stage)
        return exc

    # -- handlers (one per table entry) ---------------------------------------------------------

    def _on_StartRound(self, event: StartRound) -> list[Message]:
        if self._ledger is not None:
            self._ledger.advance(self.config.federation, self.config.round_id, role=self.role)
        self._c = sk.KeyPair.generate()
        self._s = vss.DHKeyPair.generate()
        self._b = secrets.token_bytes(32)
        c_pk, s_pk = self._c.public_bytes(), self._s.public_bytes()
        sig = b""
        if self.config.hardened:
            sig = self._signing_key.sign(
                advertise_signing_bytes(self.config.digest, self.id, c_pk, s_pk)
            )
        return [AdvertiseKeys(self.config.round_id, self.id, c_pk, s_pk, sig)]

    def _on_Abort(self, msg: Abort) -> list[Message]:
        self.abort_reason = msg.reason
        return []

    def _on_ServerKeys(self, msg: ServerKeys) -> list[Message]:
        cfg = self.config

        def bad(detail: str) -> ProtocolError:
            return self._error(detail, msg, msg.sender)

        if msg.graph_kind != cfg.graph:
            raise bad(f"graph kind {msg.graph_kind!r} differs from the round's {cfg.graph!r}")
        entries = self._check_key_entries(msg, bad)
        if cfg.hardened:
            # The graph seed is a hash of every accepted advertisement, so the server cannot
            # choose the ring order; the client recomputes the seed and the pruning itself.
            seed = graph_seed_from_adverts(cfg.digest, entries.values())
            if msg.graph_seed != seed:
                raise bad("graph seed is not the hash of the advertisements (server-chosen seed)")
        try:
            graph = cfg.masking_graph(msg.graph_seed)
        except SecAggError as exc:
            raise bad(f"graph parameters do not give a valid graph: {exc}") from None
        if msg.threshold != graph.threshold:
            raise bad(f"threshold {msg.threshold} differs from the graph's {graph.threshold}")
        if msg.degree != graph.max_degree():
            raise bad(f"degree {msg.degree} differs from the graph's {graph.max_degree()}")
        t = graph.threshold
        nbrs = graph.neighbours[self.id]
        if cfg.hardened:
            u1 = graph.core(entries, t)
            if self.id not in u1:
                raise bad(f"this client has fewer than t={t} live neighbours among the advertisers")
            peers = {j: entries[j] for j in sorted((nbrs & u1) - {self.id})}
        else:
            strangers = sorted(set(entries) - nbrs)
            if strangers:
                raise bad(f"keys of clients {strangers[:10]}, which are not neighbours of ours")
            peers = entries
        if len(peers) < t:
            raise bad(
                f"only {len(peers)} neighbours advertised keys; a client needs t={t} partners "
                "so that at least one honest partner's mask hides its input"
            )
        self._threshold = t
        self._neighbours = nbrs
        self._context = round_context(cfg.digest, msg.graph_seed)
        for j, e in peers.items():
            try:
                vss.validate_dh_public_key(e.s_pk, full=False)
            except SecAggError as exc:
                raise bad(f"mask key of client {j} is not usable: {exc}") from None
        self._peers = {j: (e.c_pk, e.s_pk) for j, e in peers.items()}
        holders = sorted(self._peers) + [self.id]
        xs = [h + 1 for h in holders]
        # Feldman-verifiable sharings: every holder checks its shares before anyone masks, and
        # the mask key's commitment C_0 is its public key s_pk itself.
        b_deal = vss.deal(self._b, t, xs)
        s_deal = vss.deal(self._s.private_bytes(), t, xs)
        commitments = b_deal.commitments.to_bytes() + s_deal.commitments.to_bytes()
        b_shares, s_shares = b_deal.shares, s_deal.shares
        self._own_shares = (b_shares[self.id + 1], s_shares[self.id + 1])
        sealed, sigs = {}, {}
        for j, (c_pk, _) in self._peers.items():
            key = sk.agree(self._c, c_pk, share_agreement_info(cfg.round_id, self.id, j))
            self._share_keys[j] = key
            payload = encode_share_payload(
                self.id,
                j,
                shamir.share_to_bytes(b_shares[j + 1]),
                shamir.share_to_bytes(s_shares[j + 1]),
            )
            sealed[j] = sk.seal(key, payload, share_aad(cfg.round_id, self.id, j))
            if cfg.hardened:
                sigs[j] = self._signing_key.sign(
                    share_signing_bytes(self._context, self.id, j, sealed[j], commitments)
                )
        return [ShareKeys(cfg.round_id, self.id, sealed, commitments, sigs)]

    def _check_key_entries(self, msg: ServerKeys, bad) -> dict[int, KeyEntry]:
        """Keys forwarded by the server: in the population, distinct, validly signed (hardened).

        Hardened mode: the list is every accepted advertisement and must contain ours unaltered.
        Plain mode: the neighbours' advertisements only. Returns id -> entry without our own.
        """
        cfg = self.config
        own_keys = (self._c.public_bytes(), self._s.public_bytes())
        seen: set[bytes] = set()
        others: dict[int, KeyEntry] = {}
        own_listed = False
        for e in msg.keys:
            if e.client_id == self.id:
                if not cfg.hardened or (e.c_pk, e.s_pk) != own_keys:
                    raise bad("our own advertisement is listed altered or in plain mode")
                own_listed = True
                continue
            if e.client_id not in cfg.population:
                raise bad(f"keys of client {e.client_id}, which is not in the population")
            if (
                e.c_pk in seen
                or e.s_pk in seen
                or e.c_pk == e.s_pk
                or {e.c_pk, e.s_pk} & set(own_keys)
            ):
                raise bad(f"public key of client {e.client_id} repeats another advertised key")
            seen.update((e.c_pk, e.s_pk))
            if cfg.hardened:
                vk = self._pki.get(e.client_id)
                if vk is None:
                    raise bad(f"client {e.client_id} has no identity key in the PKI")
                data = advertise_signing_bytes(cfg.digest, e.client_id, e.c_pk, e.s_pk)
                try:
                    sk.verify_signature(vk, e.signature, data)
                except SecAggError:
                    raise bad(
                        f"advertisement of client {e.client_id} has an invalid signature"
                    ) from None
            others[e.client_id] = e
        if cfg.hardened and not own_listed:
            raise bad("our own advertisement is missing from the advertisements")
        if cfg.hardened:
            others[self.id] = KeyEntry(self.id, *own_keys)
        return others

    def _on_ForwardShares(self, msg: ForwardShares) -> list[Message]:
        """Open and verify every dealer's shares now, before anyone masks; complain about the
        dealers whose shares cannot be accepted."""
        senders = [i for i, _ in msg.shares]
        strangers = [i for i in senders if i not in self._peers]
        if strangers:
            raise self._error(
                f"shares from clients {strangers[:10]} whose keys were never forwarded to us",
                msg,
                msg.sender,
            )
        commitments, sigs = dict(msg.commitments), dict(msg.share_signatures)
        if set(commitments) != set(senders):
            raise self._error(
                "commitments must come with exactly the forwarded shares", msg, msg.sender
            )
        self._inbox = dict(msg.shares)
        complaints: dict[int, bytes] = {}
        for dealer in senders:
            problem, key = self._check_dealer(dealer, commitments[dealer], sigs.get(dealer, b""))
            if problem is not None:
                complaints[dealer] = encode_complaint(problem, key)
                self.warnings.append(
                    f"shares of client {dealer} rejected: {Complaint.NAMES[problem]}"
                )
        self._complained = frozenset(complaints)
        return [ShareComplaints(self.config.round_id, self.id, complaints)]

    def _check_dealer(
        self, dealer: int, commitments: bytes, signature: bytes
    ) -> tuple[int | None, bytes]:
        """``(None, b"")`` and the shares kept, or ``(complaint kind, revealed key)``."""
        cfg, t = self.config, self._threshold
        sealed = self._inbox[dealer]
        if cfg.hardened:
            data = share_signing_bytes(self._context, dealer, self.id, sealed, commitments)
            try:
                sk.verify_signature(self._pki[dealer], signature, data)
            except (SecAggError, KeyError):
                return Complaint.UNSIGNED, b""
        width = vss.get_group().element_bytes
        try:
            if len(commitments) != 2 * t * width:
                raise SecAggError("wrong length")
            c_b = vss.Commitments.from_bytes(commitments[: t * width], t)
            c_s = vss.Commitments.from_bytes(commitments[t * width :], t)
        except SecAggError:
            return Complaint.BAD_COMMITMENTS, b""
        if c_s.constant != int.from_bytes(self._peers[dealer][1], "big"):
            return Complaint.BAD_COMMITMENTS, b""
        opened = self._open(dealer, sealed)
        if opened is None:
            return Complaint.UNDECRYPTABLE, b""
        b_share, s_share = (shamir.share_from_bytes(v) for v in opened)
        bad = vss.verify_shares(self.id + 1, {"b": (c_b, b_share), "s": (c_s, s_share)})
        if bad:
            return Complaint.INVALID_SHARE, self._share_keys[dealer]
        self._held[dealer] = opened
        return None, b""

    def _on_MaskingPartners(self, msg: MaskingPartners) -> list[Message]:
        cfg = self.config
        partners = set(msg.partners)

        def bad(detail: str) -> ProtocolError:
            return self._error(detail, msg, msg.sender)

        unheld = sorted(partners - set(self._held))
        if unheld:
            raise bad(
                f"partners {unheld[:10]} are dealers whose verified shares we do not hold "
                "(never forwarded, or complained about)"
            )
        if len(partners) < self._threshold:
            raise bad(
                f"only {len(partners)} partners, below the threshold t={self._threshold}: with "
                "fewer than t partners, t-1 colluders could be all of them"
            )
        senders = sorted(partners)
        self._partners = frozenset(senders)
        seeds = {
            j: pairwise_seed(key, cfg.round_id)
            for j, key in zip(senders, self._agree_with(senders))
        }
        encoded = cfg.encoder.encode(self._update, self._rng)
        if cfg.filtered:
            self._signed_input = cfg.encoder.to_signed(encoded).astype(np.int64)
        if cfg.noise is not None:
            # the share is a function of a seed the key holder will get: verifiable
            self._noise_seed = secrets.token_bytes(NOISE_SEED_BYTES)
            encoded = cfg.encoder.wrap(self._signed_input + self._noise_share())
        y = mask_input(encoded, self.id, self._b, seeds, cfg.bits, workers=self.mask_workers)
        y.flags.writeable = False  # ours alone: the message keeps it without a copy
        if cfg.filtered or cfg.hardened:  # the sketch request and the signature bind it
            self._input_digest = input_digest(y)
        sig = b""
        if cfg.hardened:
            # Bind the partner set to this input: the server must show it to every holder of
            # our self-mask share, and they check that t of these partners are still in the sum.
            sig = self._signing_key.sign(
                partners_signing_bytes(self._context, self.id, senders, self._input_digest)
            )
        return [MaskedInput(cfg.round_id, self.id, y, tuple(senders), sig)]

    def _agree_with(self, partners: list[int]) -> list[bytes]:
        """The pairwise mask keys with ``partners`` (in order): one Diffie-Hellman agreement
        each in the Schnorr group, split over :attr:`mask_workers` threads (gmpy2 releases the
        GIL). Public keys were validated when they arrived."""
        cfg = self.config

        def agree(chunk: list[int]) -> list[bytes]:
            return vss.dh_agree_many(
                self._s,
                [self._peers[j][1] for j in chunk],
                [mask_agreement_info(cfg.round_id, self.id, j) for j in chunk],
                full_check=False,
            )

        workers = min(self.mask_workers, max(1, len(partners) // 8))
        if workers == 1:
            return agree(partners)
        chunks = [partners[w::workers] for w in range(workers)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(agree, chunks))
        keys: dict[int, bytes] = {}
        for chunk, part in zip(chunks, parts):
            keys.update(zip(chunk, part))
        return [keys[j] for j in partners]

    def _on_SketchRequest(self, msg: SketchRequest) -> list[Message]:
        """Check the projection seed (a hash of the committed inputs, ours among them), then
        send ``Enc(P·x)`` of the signed fixed-point input we masked."""
        cfg = self.config
        committed = dict(msg.committed)

        def bad(detail: str) -> ProtocolError:
            return self._error(detail, msg, msg.sender)

        if committed.get(self.id) != self._input_digest:
            raise bad("the committed inputs do not list this client's masked input with its digest")
        strangers = sorted(set(committed) - set(cfg.population))
        if strangers:
            raise bad(f"committed inputs of clients {strangers[:10]} outside the population")
        seed = projection_seed(committed_digest(committed.items()), self._context)
        if msg.seed != seed:
            raise bad(
                "the projection seed is not the hash of the committed inputs (the server "
                "may not choose the projection)"
            )
        lay = cfg.layouts
        values = sketch(self._sketch_input(), seed, lay.k)
        plain = lay.row.pack(values)
        key = cfg.filtering.key
        cts = [key.encrypt(int(m), pool=self._pool) for m in plain]
        noise = b""
        if cfg.noise is not None:
            seed_ct = key.encrypt(int.from_bytes(self._noise_seed, "big"), pool=self._pool)
            noise = key.ciphertext_to_bytes(seed_ct)
        return [SketchCommit(cfg.round_id, self.id, key.ciphertexts_to_bytes(cts), noise)]

    def _noise_share(self) -> np.ndarray:
        """The integer noise share this client adds before masking: a deterministic function
        of its noise seed (:func:`protocol.noise.noise_share`), so the key holder can
        regenerate it. (A poisoned-noise attacker overrides this; verification catches it.)"""
        cfg = self.config
        return noise_share(cfg.noise, self._noise_seed, cfg.dim, cfg.encoder.scale)

    def _sketch_input(self) -> np.ndarray:
        """The vector this client sketches: its signed fixed-point input, the one it masked.
        (The lying-sketch attack of :mod:`simulations` overrides this; verification catches
        it.)"""
        return self._signed_input

    def _on_ConsistencyRequest(self, msg: ConsistencyRequest) -> list[Message]:
        self._check_survivor_claims(msg, msg.survivors, msg.rejected)
        self._signed_split = (msg.survivors, msg.rejected)
        data = survivors_signing_bytes(self._context, self.id, msg.survivors, msg.rejected)
        return [ConsistencySignature(self.config.round_id, self.id, self._signing_key.sign(data))]

    def _check_survivor_claims(
        self, msg: Message, survivors: tuple[int, ...], rejected: tuple[int, ...]
    ) -> None:
        """Checks shared by the consistency and unmask requests on the survivor list U3 and
        the rejected list (masked inputs left out of the sum by the server's filter)."""
        surv, out = set(survivors), set(rejected)
        outsiders = sorted((surv | out) - set(self.config.population))
        if outsiders:
            raise self._error(
                f"survivors or rejected clients {outsiders[:10]} are not in the round's population",
                msg,
                msg.sender,
            )
        both = sorted(surv & out)
        if both:
            raise self._error(
                f"clients {both[:10]} are listed as both survivor and rejected", msg, msg.sender
            )
        if self.id in out:
            return  # our input is left out of the sum: our self-mask seed is never revealed
        if self.id not in surv:
            raise self._error(
                "this client sent its masked input but is listed neither as a survivor nor "
                "as rejected",
                msg,
                msg.sender,
            )
        if len(surv) < self._threshold:
            raise self._error(
                f"only {len(surv)} survivors, below the threshold t={self._threshold}: "
                "their sum would reveal too little-aggregated inputs",
                msg,
                msg.sender,
            )
        live = len(self._partners & surv)
        if live < self._threshold:
            raise self._error(
                f"only {live} of this client's partners are survivors, below t="
                f"{self._threshold}: revealing its self-mask seed could expose its input",
                msg,
                msg.sender,
            )

    def _on_UnmaskRequest(self, msg: UnmaskRequest) -> list[Message]:
        cfg = self.config

        def bad(detail: str) -> ProtocolError:
            return self._error(detail, msg, msg.sender)

        surv, dropped, rejected = set(msg.survivors), set(msg.dropped), set(msg.rejected)
        both = sorted(surv & (dropped | rejected))
        if both:
            raise bad(
                f"clients {both[:10]} are listed as both survivor and dropped or rejected: "
                "answering would give the server both the self-mask seed and the mask key "
                "(refused)"
            )
        if dropped & rejected:
            raise bad(f"clients {sorted(dropped & rejected)[:10]} are both dropped and rejected")
        if self.id in dropped:
            raise bad(
                "this client is listed as dropped although it sent its masked input: the server "
                "would learn the shares of its mask key (refused)"
            )
        self._check_survivor_claims(msg, msg.survivors, msg.rejected)
        outsiders = sorted(dropped - set(cfg.population))
        if outsiders:
            raise bad(f"dropped clients {outsiders[:10]} are not in the round's population")
        unaccounted = sorted(self._partners - surv - dropped - rejected)
        if unaccounted:
            raise bad(f"partners {unaccounted[:10]} are neither survivors, dropped nor rejected")
        if cfg.hardened:
            if (msg.survivors, msg.rejected) != self._signed_split:
                raise bad(
                    "the survivor or rejected set differs from the one this client signed in "
                    "the consistency check (the server is lying about who dropped)"
                )
            self._check_signatures(msg, surv, bad)
            self._check_partner_records(msg, surv, bad)
        elif msg.signatures or msg.partner_records:
            raise bad("consistency signatures or partner records in a round that is not hardened")
        seed_shares: dict[int, bytes] = {}
        key_shares: dict[int, bytes] = {}
        if self.id in surv:
            seed_shares[self.id] = shamir.share_to_bytes(self._own_shares[0])
        for owner in self._partners:
            if owner in surv:
                seed_shares[owner] = self._held[owner][0]
            elif owner in dropped or owner in rejected:
                key_shares[owner] = self._held[owner][1]
        self._revealed = {o: SELF_MASK_SEED for o in seed_shares}
        self._revealed.update({o: MASK_KEY for o in key_shares})
        # Once answered, the stage becomes DONE: a second request (e.g. with the lists swapped)
        # is illegal, so the never-both invariant holds across requests too.
        return [UnmaskResponse(cfg.round_id, self.id, seed_shares, key_shares)]

    def _check_signatures(self, msg: UnmaskRequest, surv: set[int], bad) -> None:
        """Hardened: enough valid consistency signatures over exactly this survivor set."""
        need = self.config.min_signatures(self._threshold)
        valid = 0
        signers_allowed = surv | set(msg.rejected)
        for signer, sig in msg.signatures:
            if signer not in signers_allowed:
                raise bad(f"consistency signature from client {signer}, not a survivor")
            vk = self._pki.get(signer)
            if vk is None:
                raise bad(f"client {signer} has no identity key in the PKI")
            try:
                data = survivors_signing_bytes(self._context, signer, msg.survivors, msg.rejected)
                sk.verify_signature(vk, sig, data)
            except SecAggError:
                raise bad(f"consistency signature of client {signer} does not verify") from None
            valid += 1
        if valid < need:
            raise bad(f"only {valid} consistency signatures, {need} needed")

    def _check_partner_records(self, msg: UnmaskRequest, surv: set[int], bad) -> None:
        """Hardened: release survivor i's self-mask share only if i's signed partner set keeps
        at least t partners in the sum (so an honest partner's mask still hides x_i once b_i is
        known), and i masked with us as we masked with it."""
        t = self._threshold
        want = (self._partners | {self.id}) & surv  # (a rejected client's b stays secret)
        records = dict(msg.partner_records)
        if set(records) != want:
            missing, extra = sorted(want - set(records)), sorted(set(records) - want)
            raise bad(
                f"partner records must cover exactly the survivors whose self-mask shares we "
                f"hold; missing {missing[:10]}, unexpected {extra[:10]}"
            )
        for owner, blob in records.items():
            try:
                partners, digest, sig = decode_partner_record(blob)
            except MessageFormatError as exc:
                raise bad(f"partner record of client {owner}: {exc.detail}") from None
            data = partners_signing_bytes(self._context, owner, partners, digest)
            try:
                sk.verify_signature(self._pki[owner], sig, data)
            except (SecAggError, KeyError):
                raise bad(f"partner record of client {owner} is not signed by it") from None
            if owner == self.id:
                if set(partners) != self._partners or digest != self._input_digest:
                    raise bad("our own partner record is not the one we signed")
                continue
            if self.id not in partners:
                raise bad(
                    f"client {owner} did not mask with this client although we masked with it "
                    "(the server forwarded shares one way only)"
                )
            live = len(set(partners) & surv)
            if live < t:
                raise bad(
                    f"only {live} of client {owner}'s partners are survivors, below t={t}: "
                    f"releasing its self-mask share could expose its input (refused)"
                )

    def _open(self, owner: int, sealed: bytes) -> tuple[bytes, bytes] | None:
        """Decrypt ``owner``'s sealed shares for us; ``None`` (and a warning) if they are bad."""
        rid = self.config.round_id
        try:
            plain = sk.open_sealed(self._share_keys[owner], sealed, share_aad(rid, owner, self.id))
            o, h, seed_share, key_share = decode_share_payload(plain)
            if (o, h) != (owner, self.id):
                raise MessageFormatError(
                    f"payload is for ({o} -> {h}), not ({owner} -> {self.id})",
                    field="share payload",
                )
            shamir.share_from_bytes(seed_share)
            shamir.share_from_bytes(key_share)
        except (SecAggError, MessageFormatError) as exc:
            self.warnings.append(f"sealed shares of client {owner} unusable: {exc}")
            return None
        return seed_share, key_share
