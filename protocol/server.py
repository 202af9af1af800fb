"""The server party of a secure-aggregation round, as a sans-I/O state machine.

Theory of operation
===================

Rule 1: everything that decides the server's stage lives in this file: the stage table
:data:`SERVER_TRANSITIONS` (built from :data:`SERVER_STAGES`), the stage-closing rules in
``_close_*``, the requests that open the next stage in ``_open_*``, and the checks in the
``_check_*`` handlers. Rule 2: no I/O, no sleeping, and no thread beyond one call (unmasking
spreads its arithmetic over ``unmask_workers`` threads, then they end). A driver feeds client messages to
:meth:`Server.receive` and, when a stage's timer expires, calls :meth:`Server.deadline`; both
return the messages to send (each server message names its ``recipient``).

The server collects one message per client per stage. A stage closes when every client it
expects has answered or been excluded (a *state-triggered* transition, as in h11), or when the
driver signals the deadline. Whoever has not answered by then has dropped out::

    stage               collects               closes into (sends)
    COLLECT_KEYS        AdvertiseKeys   -> U1  COLLECT_SHARES      (ServerKeys to U1)
    COLLECT_SHARES      ShareKeys       -> U2  COLLECT_COMPLAINTS  (ForwardShares to U2)
    COLLECT_COMPLAINTS  ShareComplaints        COLLECT_MASKED      (MaskingPartners)
    COLLECT_MASKED      MaskedInput     -> U3  COLLECT_SIGNATURES  (ConsistencyRequest, hardened)
                                               COLLECT_UNMASK      (UnmaskRequest, plain)
    COLLECT_SIGNATURES  ConsistencySig. -> U4  COLLECT_UNMASK      (UnmaskRequest + signatures)
    COLLECT_UNMASK      UnmaskResponse  -> U5  DONE                (result)

Any stage closes into ``ABORTED`` (and sends ``Abort`` to the remaining clients) when too few
clients are left. The survival rules: a client's secrets are shared among its graph neighbours
plus itself, ``t``-of-them, and a client masks with at least ``t`` partners. After key
advertisement and after key sharing the server keeps only clients with ``t`` live neighbours
(the ``t``-core of the graph). After masked inputs it keeps in the sum (U3) only clients with
``t`` partners in the sum (the ``t``-core of the partner graph); a client whose masked input
arrived but falls out of that core is *pruned*: its input is left out and its mask key unmasked
like a dropout's (masked inputs are kept per client until the sum is final for this reason). A
survivor that drops during unmasking is still in the sum, its self-mask seed being reconstructed
from its neighbours' shares. After unmasking, the round aborts with a reason naming the client
if some survivor's ``b`` or some dropped client's ``s_sk`` has fewer than ``t`` shares, and it
fails (never releasing the sum) if the decoded sum lies outside ``+-|U3| * value_range``. A wrong share
(shares not on one polynomial, or an ``s_sk`` that does not match the advertised ``s_pk``) is
traced to its holder by leave-one-out when enough extra shares arrived (``> t + 1`` for ``b``,
``> t`` for ``s_sk``) and recorded as a dealer/holder dispute; the reconstruction is retried.

Hardened mode adds: the graph seed is the hash of every accepted advertisement (so the server
cannot choose it), signatures cover the round context (config digest, graph seed), each masked
input comes with its sender's signed partner set, and the server forwards to every holder the
signed partner sets of the survivors whose self-mask shares it is asked for.

Bad client messages
-------------------
Two entry points, by design:

* :meth:`Server.receive_strict` raises :class:`ProtocolError` (naming the server, the sender, the
  stage and the message type) for an illegal message and leaves the state unchanged. For tests
  and for drivers that want to handle faults themselves.
* :meth:`Server.receive` (tolerant, the one to deploy) never raises for a client's fault. It
  rejects the message, records a :class:`Fault` in :attr:`Server.faults`, logs it, and counts it
  as that client's fault: the client is treated as having dropped out at the current stage (a
  client whose masked input was already accepted stays in the sum, like a dropout during
  unmasking). Honest clients' round carries on. :meth:`Server.receive_bytes` does the same for
  raw bytes, including ones that do not even decode.

Illegal means: from an id outside the population (or the server id), for another round, not
allowed in the stage (replays of earlier stages land here), a duplicate, from a client that is
not expected in this stage, or failing the stage's content checks (array dtype/shape/range,
share recipients, signatures, share owners).
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from secagg import keys as sk
from secagg import shamir, vss
from secagg.errors import PaillierOverflowError, SecAggError
from secagg.graphs import k_core
from secagg.masked_distance import (
    ServerPrepared,
    server_distances_prepared,
    server_mask_rows_prepared,
)
from secagg.masking import default_workers, pairwise_seed, sum_masked, unmask_sum
from secagg.sketch import projection_seed, sketch
from secagg.zero_test import server_blinded_difference

from .audit import ServerAudit, frozen_map, readonly_array
from .config import RoundConfig
from .errors import (
    KEYHOLDER_ID,
    SERVER_ID,
    MessageFormatError,
    ProtocolConfigError,
    ProtocolError,
    party_name,
)
from .events import RoundFailed, StageDeadline
from .filtering import FilterDecision, decide
from .keyholder import row_slots
from .messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HEADER_BYTES,
    KEY_BYTES,
    MASK_KEY_BYTES,
    MAX_TEXT_BYTES,
    SIGNATURE_BYTES,
    Abort,
    AdvertiseKeys,
    Complaint,
    ConsistencyRequest,
    ConsistencySignature,
    DistanceOpened,
    DistanceRequest,
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
    ZeroTestRequest,
    ZeroTestResult,
    advertise_signing_bytes,
    channel_mismatch,
    committed_digest,
    decode,
    decode_complaint,
    decode_share_payload,
    decode_signed_matrix,
    encode_partner_record,
    encode_share_payload,
    graph_seed_from_adverts,
    input_digest,
    mask_agreement_info,
    partners_signing_bytes,
    peek_header,
    round_context,
    share_aad,
    survivors_signing_bytes,
)
from .stages import Stage, build_transitions, phase_of

__all__ = [
    "Server",
    "ServerStage",
    "SERVER_STAGES",
    "SERVER_TRANSITIONS",
    "KEYHOLDER_STAGES",
    "Verification",
    "Fault",
    "AggregateResult",
]

log = logging.getLogger("fortis.protocol.server")

#: Faults listed per sender in :attr:`Server.faults`; later ones are only counted.
MAX_FAULTS_LISTED = 16


class ServerStage(enum.Enum):
    """Where the server is in the round (named after what it collects)."""

    COLLECT_KEYS = "COLLECT_KEYS"
    COLLECT_SHARES = "COLLECT_SHARES"
    COLLECT_COMPLAINTS = "COLLECT_COMPLAINTS"
    COLLECT_MASKED = "COLLECT_MASKED"
    COLLECT_SKETCHES = "COLLECT_SKETCHES"
    AWAIT_DISTANCES = "AWAIT_DISTANCES"
    COLLECT_SIGNATURES = "COLLECT_SIGNATURES"
    COLLECT_UNMASK = "COLLECT_UNMASK"
    AWAIT_ZERO_TEST = "AWAIT_ZERO_TEST"
    DONE = "DONE"
    ABORTED = "ABORTED"


S = ServerStage


def _collecting(
    stage: ServerStage,
    message: type,
    phase: str,
    *,
    hardened_only: bool = False,
    filtering_only: bool = False,
) -> Stage:
    """A collecting stage: ``message`` (one per expected party: clients, or the key holder)
    and ``Abort`` keep it; ``StageDeadline`` (or every expected party having answered) closes
    it into the next stage; ``RoundFailed`` ends the round."""
    return Stage(
        stage,
        advances_on=StageDeadline,
        phase=phase,
        stays_on=(message, Abort),
        exits={RoundFailed: S.ABORTED},
        hardened_only=hardened_only,
        filtering_only=filtering_only,
    )


#: The server's stages in round order. Closing a stage runs ``_close_<stage>`` (checks, pruning;
#: returns who is expected next), entering the next runs ``_open_<stage>`` (the requests it
#: sends). Inserting a stage is one line here plus its two methods.
SERVER_STAGES: tuple[Stage, ...] = (
    _collecting(S.COLLECT_KEYS, AdvertiseKeys, "advertise"),
    _collecting(S.COLLECT_SHARES, ShareKeys, "share_keys"),
    _collecting(S.COLLECT_COMPLAINTS, ShareComplaints, "complaints"),
    _collecting(S.COLLECT_MASKED, MaskedInput, "masked_input"),
    _collecting(S.COLLECT_SKETCHES, SketchCommit, "sketch", filtering_only=True),
    _collecting(S.AWAIT_DISTANCES, DistanceOpened, "distances", filtering_only=True),
    _collecting(S.COLLECT_SIGNATURES, ConsistencySignature, "consistency", hardened_only=True),
    _collecting(S.COLLECT_UNMASK, UnmaskResponse, "unmask"),
    _collecting(S.AWAIT_ZERO_TEST, ZeroTestResult, "verify", filtering_only=True),
)

#: The stages in which the server waits for the key holder rather than for clients.
KEYHOLDER_STAGES = frozenset({S.AWAIT_DISTANCES, S.AWAIT_ZERO_TEST})

#: mode (hardened?, filtering?) -> stage -> {event or message type -> next stage}. Anything
#: not listed is illegal in that stage. Late aborts after the end are harmless and ignored.
SERVER_TRANSITIONS: dict[tuple[bool, bool], dict[ServerStage, dict[type, ServerStage]]] = {
    (hardened, filtering): build_transitions(
        SERVER_STAGES,
        hardened=hardened,
        filtering=filtering,
        done=S.DONE,
        terminal={S.DONE: {Abort: S.DONE}, S.ABORTED: {Abort: S.ABORTED}},
    )
    for hardened in (False, True)
    for filtering in (False, True)
}


@dataclass(frozen=True)
class ShareDispute:
    """A share that did not fit the others: dealt wrong by ``owner`` or misreported by
    ``holder``; the server cannot tell which, so it blames neither."""

    owner: int
    holder: int
    what: str
    reason: str


@dataclass(frozen=True)
class Fault:
    """A rejected client message: who sent it (``None`` if unknown), in which stage, what."""

    sender: int | None
    stage: str
    event: str | None
    reason: str


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """The server's output of a successful round.

    ``encoded_sum`` is ``sum_{i in survivors} encode(x_i) mod 2**bits`` (exact, integer domain);
    ``aggregate`` is its decoding to float64; ``survivors`` are the ids in the sum (U3), sorted.
    """

    encoded_sum: np.ndarray
    aggregate: np.ndarray
    survivors: tuple[int, ...]


@dataclass(frozen=True)
class Verification:
    """Outcome of the verification of a filtered round (DESIGN.md, round step 7).

    ``passed``: the key holder's blinded zero test found ``P·Σ_A x_i == Σ_A s_i`` (every
    accepted client masked the input it sketched, and the masks cancelled); ``reason`` says
    why not otherwise. ``clients`` are the accepted clients the test covered. A failed round
    is never applied: its sum is not released.
    """

    passed: bool
    clients: tuple[int, ...]
    reason: str = ""


class Server:
    """The server's side of a round.

    Parameters
    ----------
    config:
        The round's public parameters.
    graph_seed:
        Plain mode: 32-byte seed of the masking graph (ring order of SecAgg+); default: fresh
        random bytes. Hardened mode derives it from the advertisements (passing one raises).
    pki:
        Hardened mode: client id -> Ed25519 public key, to reject forged advertisements and
        consistency signatures early.
    max_message_size:
        Upper bound for :meth:`receive_bytes`.
    unmask_workers:
        Threads for unmasking and, in a filtered round, for the distance protocol's
        multi-exponentiations (default: the machine's cores).
    prepared:
        Secure filtering: the server's side of the round's preparation with the key holder
        (:class:`protocol.preparation.FilterPreparation`); it can also be attached later with
        :meth:`attach_preparation`, before the sketches are collected.
    input_filter:
        Called once, when masked-input collection closes, with the ids whose masked inputs
        arrived; returns the ones to leave out of the sum (id -> reason). They are *rejected*,
        not dropped (:attr:`rejected`). The sketch filter of a later stage decides this from
        encrypted sketches; until then this is the hook for it. An id outside the argument
        raises :class:`ProtocolConfigError`.

    Attributes
    ----------
    stage, faults, excluded, result, abort_reason:
        Current :class:`ServerStage`; rejected messages; clients dropped for a fault or their own
        ``Abort`` (id -> reason); the :class:`AggregateResult` once ``DONE``; why it aborted.
    filter_decision, verification:
        Secure filtering only: the filter's :class:`protocol.filtering.FilterDecision` (sketch
        distances and norms, verdicts, the rule's report) and the :class:`Verification`.
    """

    def __init__(
        self,
        config: RoundConfig,
        *,
        graph_seed: bytes | None = None,
        pki: Mapping[int, bytes] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_BYTES,
        unmask_workers: int | None = None,
        input_filter: Callable[[frozenset[int]], Mapping[int, str]] | None = None,
        prepared: ServerPrepared | None = None,
    ) -> None:
        if not isinstance(config, RoundConfig):
            raise TypeError(f"config must be a RoundConfig, got {type(config).__name__}")
        self.config = config
        self.role = "server"
        if config.hardened and graph_seed is not None:
            raise ProtocolConfigError(
                "server: hardened mode derives the graph seed from the advertisements (so the "
                "server cannot choose it); do not pass graph_seed"
            )
        self.threshold = config.round_threshold
        self.graph_seed: bytes | None = None
        self.graph = None
        self.context = b""
        if not config.hardened:
            self._set_graph(secrets.token_bytes(32) if graph_seed is None else bytes(graph_seed))
        if config.hardened:
            if pki is None:
                raise ProtocolConfigError(
                    "server: hardened mode needs the pki (client id -> Ed25519 key)"
                )
            need = config.min_signatures(self.threshold)
            if need > config.n:
                raise ProtocolConfigError(
                    f"server: hardened mode needs {need} consistency signatures but the round "
                    f"has {config.n} clients (lower corrupt_rate or use the complete graph)"
                )
        self._pki = dict(pki) if pki is not None else {}
        self._mode = (config.hardened, config.filtered)
        self.max_message_size = max_message_size
        self.unmask_workers = default_workers() if unmask_workers is None else int(unmask_workers)
        if self.unmask_workers < 1:
            raise ProtocolConfigError(f"unmask_workers must be >= 1, got {unmask_workers!r}")
        self._population = frozenset(config.population)
        self._size_limits = self._message_size_limits()
        self.stage = ServerStage.COLLECT_KEYS
        self.faults: list[Fault] = []
        #: Faults not listed in :attr:`faults` because the sender already had
        #: :data:`MAX_FAULTS_LISTED` there (sender -> count): a flood costs no memory.
        self.suppressed_faults: dict[int | None, int] = {}
        self._fault_count: dict[int | None, int] = {}
        self.disputes: list[ShareDispute] = []
        self.excluded: dict[int, str] = {}
        #: Clients whose masked input arrived but is left out of the sum because fewer than
        #: ``t`` of their partners survived (id -> reason); treated as dropped for unmasking.
        self.pruned: dict[int, str] = {}
        #: Clients whose masked input arrived but that ``input_filter`` left out of the sum
        #: (id -> reason). Not dropouts: they are listed as rejected to every client, and their
        #: mask keys (never their self-mask seeds) are unmasked.
        self.rejected: dict[int, str] = {}
        self._input_filter = input_filter
        self.result: AggregateResult | None = None
        self.abort_reason: str | None = None
        # per-stage state
        self._expected: set[int] = set(config.population)
        self._received: set[int] = set()
        self._adverts: dict[int, AdvertiseKeys] = {}
        self._entries: dict[int, KeyEntry] = {}  # accepted advertisements, as forwarded
        self._key_owner: dict[bytes, int] = {}  # advertised public key -> client
        self._keys_sent: dict[int, frozenset[int]] = {}  # client -> neighbours whose keys it got
        self._sealed: dict[int, dict[int, bytes]] = {}  # sender -> recipient -> ciphertext
        self._commitments: dict[int, tuple[vss.Commitments, vss.Commitments]] = {}
        self._commitment_bytes: dict[int, bytes] = {}
        self._share_sigs: dict[int, dict[int, bytes]] = {}
        self._complaints: dict[int, dict[int, tuple[int, bytes]]] = {}  # holder -> dealer -> ...
        self._masking_partners: dict[int, frozenset[int]] = {}  # sent in MaskingPartners
        self._forwarded: dict[int, frozenset[int]] = {}  # recipient -> senders forwarded to it
        self.u1: tuple[int, ...] = ()
        self.u2: tuple[int, ...] = ()
        self.u3: tuple[int, ...] = ()
        self.dropped_before_input: tuple[int, ...] = ()
        # masked inputs are kept per client until the sum is final, so a client can still be
        # left out of it (pruned) without touching the others
        self._masked: dict[int, np.ndarray] = {}
        self._partner_records: dict[int, bytes] = {}  # client -> encoded signed partner set
        self._digests: dict[int, bytes] = {}  # client -> SHA-256 of its masked input
        self._partners: dict[int, frozenset[int]] = {}
        self._signatures: dict[int, bytes] = {}
        self._seed_shares: dict[int, dict[int, int]] = {}
        self._key_shares: dict[int, dict[int, int]] = {}
        # secure filtering
        self.filter_decision: FilterDecision | None = None
        self.verification: Verification | None = None
        self.projection_seed: bytes | None = None
        self._candidates: tuple[int, ...] = ()  # inputs judged by the filter
        self._sketches: dict[int, list] = {}  # client -> validated Enc(s_i) ciphertexts
        self._rows: tuple[int, ...] = ()  # clients of the distance request's rows
        self._slots: tuple[int, ...] = ()  # their row slots, then the zero row's
        self._prepared: ServerPrepared | None = None
        self._noise_seed_cts: dict[int, object] = {}  # client -> Enc(noise seed), for K
        self._noise_sketches: dict[int, list] = {}  # client -> Enc(P e_i), from K
        self._opened: tuple[DistanceOpened, np.ndarray, np.ndarray] | None = None
        self._opened_noise: dict[int, list] = {}
        self._zero_test: ZeroTestResult | None = None
        self._keyholder_contacted = False
        self._keyholder_failure: str | None = None
        self._pending: AggregateResult | None = None
        if prepared is not None:
            self.attach_preparation(prepared)

    def attach_preparation(self, prepared: ServerPrepared) -> None:
        """Use ``prepared`` (this round's masks and blinded products, agreed with the key
        holder) for the distance protocol.

        Raises :class:`ProtocolConfigError` for a round without filtering, a state that is not
        a :class:`~secagg.masked_distance.ServerPrepared`, one already used or made for another
        configuration, or once the distances are asked.
        """
        if not self.config.filtered:
            raise ProtocolConfigError("server: this round has no secure filtering to prepare")
        if not isinstance(prepared, ServerPrepared):
            raise ProtocolConfigError(
                f"server: prepared must be a ServerPrepared, got {type(prepared).__name__}"
            )
        if self._keyholder_contacted:
            raise ProtocolConfigError("server: the distance request has already been sent")
        if prepared.masked_slots is not None or prepared.finished:
            raise ProtocolConfigError(
                "server: this preparation was already used by a round; its masks serve once"
            )
        if prepared.rows != row_slots(self.config) or prepared.layouts != self.config.layouts:
            raise ProtocolConfigError(
                "server: the preparation was made for another round configuration"
            )
        self._prepared = prepared

    @property
    def prepared(self) -> bool:
        """Whether the filtering preparation is attached (always true without filtering)."""
        return not self.config.filtered or self._prepared is not None

    def _set_graph(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ProtocolConfigError(f"graph_seed must be 32 bytes, got {len(seed)}")
        self.graph_seed = seed
        self.graph = self.config.masking_graph(seed)
        self.context = round_context(self.config.digest, seed)

    def _sketch_bytes(self) -> int:
        """Bytes of one client's encrypted sketch (0 without filtering)."""
        if not self.config.filtered:
            return 0
        lay, key = self.config.layouts, self.config.filtering.key
        seed = key.ciphertext_bytes if self.config.noise is not None else 0
        return lay.row_ciphertexts() * key.ciphertext_bytes + 4 + seed

    def _message_size_limits(self) -> dict[type, int]:
        """Largest legal encoding of each client message type in this round (header included)."""
        cfg, n = self.config, self.config.n
        blob = 8  # u32 id + u32 length of one map entry
        share = len(
            encode_share_payload(0, 0, bytes(shamir.SHARE_BYTES), bytes(shamir.SHARE_BYTES))
        )
        sealed = sk.sealed_size(share)
        limits = {
            AdvertiseKeys: 3 * 4 + KEY_BYTES + MASK_KEY_BYTES + SIGNATURE_BYTES,
            ShareKeys: 4
            + n * (blob + sealed)
            + 4
            + 2 * self.threshold * vss.get_group().element_bytes
            + 4
            + n * (blob + SIGNATURE_BYTES),
            ShareComplaints: 4 + n * (blob + 1 + 32),
            MaskedInput: 2
            + 8
            + cfg.dim * np.dtype(cfg.encoder.dtype).itemsize
            + 4
            + 4 * n
            + 4
            + SIGNATURE_BYTES,
            ConsistencySignature: 4 + SIGNATURE_BYTES,
            SketchCommit: 4 + self._sketch_bytes(),
            UnmaskResponse: 2 * (4 + n * (blob + shamir.SHARE_BYTES)),
            Abort: 4 + 4 + MAX_TEXT_BYTES,
        }
        return {k: HEADER_BYTES + v for k, v in limits.items()}

    # -- public API ---------------------------------------------------------------------------

    @property
    def party_id(self) -> int:
        """The server's wire id, :data:`SERVER_ID`."""
        return SERVER_ID

    def begin(self) -> list[Message]:
        """The server sends nothing to start a round (clients advertise first): ``[]``."""
        return []

    @property
    def done(self) -> bool:
        """True once the round ended (``DONE`` or ``ABORTED``)."""
        return self.stage in (ServerStage.DONE, ServerStage.ABORTED)

    @property
    def aborted(self) -> bool:
        return self.stage is ServerStage.ABORTED

    def audit(self) -> ServerAudit:
        """A read-only copy of what the server holds (:class:`protocol.audit.ServerAudit`):
        received shares, masked inputs, partner sets; for tests and audits."""
        return ServerAudit(
            stage=self.stage.value,
            seed_shares=frozen_map(self._seed_shares),
            key_shares=frozen_map(self._key_shares),
            masked_inputs=frozen_map({i: readonly_array(y) for i, y in self._masked.items()}),
            partners=frozen_map(self._partners),
            keys_forwarded=frozen_map(self._keys_sent),
            survivors=tuple(self.u3),
            rejected=frozen_map(self.rejected),
            pruned=frozen_map(self.pruned),
        )

    def receive_strict(self, msg: Message) -> list[Message]:
        """Process one client message; raise :class:`ProtocolError` if it is illegal.

        On error nothing changes (the message is simply not accepted). Returns the messages to
        send (non-empty when the message completed the stage).
        """
        if not isinstance(msg, Message):
            raise TypeError(f"server: receive expects a Message, got {type(msg).__name__}")
        commit = self._check(msg)
        commit()
        if not isinstance(msg, Abort):
            self._received.add(msg.sender)
        return self._maybe_close()

    def receive(self, msg: Message) -> list[Message]:
        """Tolerant :meth:`receive_strict`: a client's fault is recorded, never raised.

        The offending message is rejected, a :class:`Fault` is appended to :attr:`faults`, and a
        known sender is excluded (treated as a dropout at the current stage).
        """
        try:
            return self.receive_strict(msg)
        except ProtocolError as exc:
            return self._record_fault(exc, msg.sender if isinstance(msg, Message) else None)

    def receive_bytes(self, data: bytes, *, peer: int | None = None) -> list[Message]:
        """Decode and tolerantly process one message.

        ``peer`` is the id the transport authenticated (e.g. from the TLS client certificate);
        a message whose header claims another sender is a fault of ``peer``. The header alone
        is checked first -- sender, exclusion, round, type allowed in this stage, and the
        type's size limit for this round -- so a message that fails those costs no parsing
        of its body; id lists and maps in the body are capped at the population size.
        """
        if len(data) > self.max_message_size:
            exc = MessageFormatError(
                f"message of {len(data)} bytes exceeds max_size={self.max_message_size}",
                field="message",
                role=self.role,
                stage=self.stage.value,
            )
            return self._record_fault(exc, peer)
        try:
            header = peek_header(data)
        except MessageFormatError as exc:
            exc.role, exc.stage = self.role, self.stage.value
            return self._record_fault(exc, peer if peer is not None else exc.sender)
        sender = header.sender if peer is None else peer
        problem = self._precheck(header, peer)
        if problem is not None:
            exc = ProtocolError(
                problem,
                role=self.role,
                sender=sender,
                stage=self.stage.value,
                event=header.type.__name__,
            )
            return self._record_fault(exc, sender if sender in self._population else None)
        try:
            extra = 4 if sender == KEYHOLDER_ID else 0  # the key holder's rows add public rows
            msg = decode(data, max_size=self.max_message_size, max_count=self.config.n + extra)
        except MessageFormatError as exc:
            exc.role, exc.stage = self.role, self.stage.value
            return self._record_fault(exc, sender)
        return self.receive(msg)

    def _precheck(self, header, peer: int | None) -> str | None:
        """Why a message must be rejected on its header alone (``None``: parse it)."""
        mismatch = channel_mismatch(header.sender, peer)
        if mismatch:
            return mismatch
        if header.sender not in self._population and not self._keyholder_may_send(header.sender):
            return "sender is not in the round's population"
        if header.round_id != self.config.round_id:
            return f"message is for round {header.round_id}, this is round {self.config.round_id}"
        if header.type is Abort and self.done:
            return None
        if header.sender in self.excluded:
            return f"sender was excluded earlier ({self.excluded[header.sender]})"
        table = SERVER_TRANSITIONS[self._mode][self.stage]
        if header.type not in table:
            allowed = ", ".join(t.__name__ for t in table if t is not StageDeadline)
            return f"not allowed in this stage (expects {allowed or 'nothing'})"
        default = self.max_message_size if header.sender == KEYHOLDER_ID else 0
        limit = min(self._size_limits.get(header.type, default), self.max_message_size)
        if header.size > limit:
            return f"{header.size} bytes, above the {limit}-byte limit for this message type"
        return None

    def deadline(self) -> list[Message]:
        """The current stage's time is up: close it with whoever answered (no-op when done)."""
        if self.done:
            return []
        return self._close_stage()

    # -- checks (validate fully, then return a commit closure) ----------------------------------

    def _error(self, detail: str, msg: Message) -> ProtocolError:
        return ProtocolError(
            detail,
            role=self.role,
            sender=msg.sender,
            stage=self.stage.value,
            event=type(msg).__name__,
        )

    def _keyholder_may_send(self, sender: int) -> bool:
        """The key holder speaks in the stages that wait for it (filtered rounds only)."""
        return (
            sender == KEYHOLDER_ID
            and self.config.filtered
            and (self.stage in KEYHOLDER_STAGES or self.done)
        )

    def _check(self, msg: Message):
        cfg = self.config
        keyholder = msg.sender == KEYHOLDER_ID
        if msg.sender not in self._population and not self._keyholder_may_send(msg.sender):
            raise self._error("sender is not in the round's population", msg)
        if msg.round_id != cfg.round_id:
            raise self._error(
                f"message is for round {msg.round_id}, this is round {cfg.round_id}", msg
            )
        table = SERVER_TRANSITIONS[self._mode][self.stage]
        if type(msg) not in table:
            allowed = ", ".join(t.__name__ for t in table if t is not StageDeadline)
            raise self._error(f"not allowed in this stage (expects {allowed or 'nothing'})", msg)
        if isinstance(msg, Abort) and self.done:
            return lambda: None
        if msg.sender in self.excluded:
            raise self._error(f"sender was excluded earlier ({self.excluded[msg.sender]})", msg)
        if isinstance(msg, Abort):
            if msg.recipient != SERVER_ID:
                raise self._error(f"Abort addressed to {party_name(msg.recipient)}", msg)
            if keyholder:
                return lambda: self._keyholder_failed(f"the key holder aborted: {msg.reason}")
            return lambda: self._exclude(msg.sender, f"client aborted: {msg.reason}")
        if msg.sender in self._received:
            raise self._error(f"duplicate {type(msg).__name__} (replayed?)", msg)
        if msg.sender not in self._expected:
            raise self._error("sender is not a participant of this stage", msg)
        return getattr(self, "_check_" + type(msg).__name__)(msg)

    def _check_AdvertiseKeys(self, msg: AdvertiseKeys):
        checks = (
            ("c_pk", msg.c_pk, sk.validate_public_key, "X25519 key"),
            ("s_pk", msg.s_pk, vss.validate_dh_public_key, "mask key (Schnorr group element)"),
        )
        for field, key, validate, what in checks:
            try:
                validate(key)
            except SecAggError as exc:
                raise self._error(f"{field} is not a usable {what} ({exc})", msg) from None
            if key in self._key_owner:
                raise self._error(
                    f"public key already advertised by client {self._key_owner[key]}", msg
                )
        if self.config.hardened:
            vk = self._pki.get(msg.sender)
            if vk is None:
                raise self._error("no identity key for this client in the PKI", msg)
            data = advertise_signing_bytes(self.config.digest, msg.sender, msg.c_pk, msg.s_pk)
            try:
                sk.verify_signature(vk, msg.signature, data)
            except SecAggError:
                raise self._error(
                    "advertisement signature does not verify (forged?)", msg
                ) from None
        elif msg.signature:
            raise self._error("signature present in a round that is not hardened", msg)

        def commit() -> None:
            self._adverts[msg.sender] = msg
            self._key_owner[msg.c_pk] = self._key_owner[msg.s_pk] = msg.sender

        return commit

    def _check_ShareKeys(self, msg: ShareKeys):
        want = self._keys_sent[msg.sender]
        got = {j for j, _ in msg.shares}
        if got != want:
            missing, extra = sorted(want - got), sorted(got - want)
            raise self._error(
                f"shares must go to exactly its neighbours in U1; missing {missing[:10]}, "
                f"unexpected {extra[:10]}",
                msg,
            )
        t = self.threshold
        width = vss.get_group().element_bytes
        if len(msg.commitments) != 2 * t * width:
            raise self._error(
                f"commitments must be 2 x t={t} group elements ({2 * t * width} bytes), got "
                f"{len(msg.commitments)} bytes",
                msg,
            )
        try:
            c_b = vss.Commitments.from_bytes(msg.commitments[: t * width], t)
            c_s = vss.Commitments.from_bytes(msg.commitments[t * width :], t)
        except SecAggError as exc:
            raise self._error(f"malformed commitments: {exc}", msg) from None
        if c_s.constant != int.from_bytes(self._adverts[msg.sender].s_pk, "big"):
            raise self._error(
                "the mask-key commitment C_0 is not the advertised s_pk: the shared key would "
                "not be the masking key",
                msg,
            )
        sigs = dict(msg.share_signatures)
        if self.config.hardened and set(sigs) != got:
            raise self._error("every sealed share needs the dealer's signature", msg)
        if not self.config.hardened and sigs:
            raise self._error("share signatures in a round that is not hardened", msg)

        def commit() -> None:
            self._sealed[msg.sender] = dict(msg.shares)
            self._commitments[msg.sender] = (c_b, c_s)
            self._commitment_bytes[msg.sender] = msg.commitments
            self._share_sigs[msg.sender] = sigs

        return commit

    def _check_ShareComplaints(self, msg: ShareComplaints):
        dealers = self._forwarded.get(msg.sender, frozenset())
        parsed = {}
        for dealer, blob in msg.complaints:
            if dealer not in dealers:
                raise self._error(f"complaint about client {dealer}, not a dealer of its", msg)
            try:
                parsed[dealer] = decode_complaint(blob)
            except MessageFormatError as exc:
                raise self._error(f"complaint about client {dealer}: {exc.detail}", msg) from None
        return lambda: self._complaints.__setitem__(msg.sender, parsed)

    def _check_MaskedInput(self, msg: MaskedInput):
        cfg = self.config
        y = msg.masked
        if y.dtype != cfg.encoder.dtype or y.shape != (cfg.dim,):
            raise self._error(
                f"masked input must be {np.dtype(cfg.encoder.dtype).name}[{cfg.dim}], got "
                f"{y.dtype}{list(y.shape)}",
                msg,
            )
        if cfg.bits < 8 * y.itemsize and y.size and int(y.max()) >> cfg.bits:
            raise self._error(f"masked input has elements >= 2**{cfg.bits}", msg)
        expected = self._masking_partners.get(msg.sender, frozenset())
        if set(msg.partners) != expected:
            raise self._error(
                f"partner set differs from the {len(expected)} masking partners it was sent",
                msg,
            )
        record = b""
        # the digest binds the input: to the partner set (hardened), to the projection seed
        digest = input_digest(y) if cfg.hardened or cfg.filtered else b""
        if cfg.hardened:
            data = partners_signing_bytes(self.context, msg.sender, msg.partners, digest)
            try:
                sk.verify_signature(self._pki[msg.sender], msg.signature, data)
            except (SecAggError, KeyError):
                raise self._error("partner-set signature does not verify", msg) from None
            record = encode_partner_record(msg.partners, digest, msg.signature)
        elif msg.signature:
            raise self._error("signature present in a round that is not hardened", msg)

        def commit() -> None:
            self._masked[msg.sender] = y
            self._digests[msg.sender] = digest
            self._partners[msg.sender] = frozenset(msg.partners)
            self._partner_records[msg.sender] = record

        return commit

    def _check_ConsistencySignature(self, msg: ConsistencySignature):
        data = survivors_signing_bytes(self.context, msg.sender, self.u3, self.rejected)
        try:
            sk.verify_signature(self._pki[msg.sender], msg.signature, data)
        except (SecAggError, KeyError):
            raise self._error("consistency signature over U3 does not verify", msg) from None
        return lambda: self._signatures.__setitem__(msg.sender, msg.signature)

    def _check_UnmaskResponse(self, msg: UnmaskResponse):
        me = msg.sender
        holds = self._masking_partners.get(me, frozenset()) | {me}
        surv = set(self.u3)
        dropped = set(self.dropped_before_input) | set(self.rejected)
        seed_owners = {o for o, _ in msg.self_seed_shares}
        key_owners = {o for o, _ in msg.mask_key_shares}
        if seed_owners & key_owners:
            raise self._error("shares of both kinds for one client", msg)
        bad_seed = sorted(seed_owners - (surv & holds))
        bad_key = sorted(key_owners - ((dropped & holds) - {me}))
        if bad_seed or bad_key:
            raise self._error(
                f"shares not requested or not held: self-seed owners {bad_seed[:10]}, "
                f"mask-key owners {bad_key[:10]}",
                msg,
            )
        try:
            seeds = {o: shamir.share_from_bytes(v) for o, v in msg.self_seed_shares}
            keys = {o: shamir.share_from_bytes(v) for o, v in msg.mask_key_shares}
        except SecAggError as exc:
            raise self._error(f"malformed share: {exc}", msg) from None

        def commit() -> None:
            x = me + 1
            for o, v in seeds.items():
                self._seed_shares.setdefault(o, {})[x] = v
            for o, v in keys.items():
                self._key_shares.setdefault(o, {})[x] = v

        return commit

    def _check_SketchCommit(self, msg: SketchCommit):
        key = self.config.filtering.key
        count = self.config.layouts.row_ciphertexts()
        try:
            cts = key.ciphertexts_from_bytes(msg.ciphertexts, count=count, sender=msg.sender)
        except SecAggError as exc:
            raise self._error(f"encrypted sketch: {exc}", msg) from None
        if self.config.noise is None:
            if msg.noise_seed:
                raise self._error("a noise seed in a round without distributed noise", msg)
            seed_ct = None
        else:
            try:
                (seed_ct,) = key.ciphertexts_from_bytes(msg.noise_seed, count=1, sender=msg.sender)
            except SecAggError as exc:
                raise self._error(f"encrypted noise seed: {exc}", msg) from None

        def commit() -> None:
            self._sketches[msg.sender] = cts
            if seed_ct is not None:
                self._noise_seed_cts[msg.sender] = seed_ct

        return commit

    def _check_DistanceOpened(self, msg: DistanceOpened):
        sent = set(self._slots)
        accepted, out = set(msg.accepted), {r for r, _ in msg.out_of_range}
        if accepted & out or accepted | out != sent:
            raise self._error(
                f"accepted and out-of-range rows must split the {len(sent)} row slots sent", msg
            )
        zero = self._slots[-1]
        if zero not in accepted:
            raise self._error("the server's own zero row was reported out of range", msg)
        lay, m = self.config.layouts, len(msg.accepted)
        try:
            w = decode_signed_matrix(msg.w, m, lay.k, lay.w_bytes, field="w")
            z = decode_signed_matrix(msg.z, m, m, lay.z_bytes, field="z")
        except MessageFormatError as exc:
            raise self._error(exc.detail, msg) from None
        noise: dict[int, list] = {}
        if self.config.noise is not None:
            if {r for r, _ in msg.noise_faults} - (accepted - {zero}):
                raise self._error("noise faults name rows that are not accepted clients", msg)
            per_row = lay.row_ciphertexts()
            try:
                flat = self.config.filtering.key.ciphertexts_from_bytes(
                    msg.noise_sketches, count=(m - 1) * per_row, sender="key holder"
                )
            except SecAggError as exc:
                raise self._error(f"noise sketches: {exc}", msg) from None
            for a, slot in enumerate(msg.accepted[:-1]):
                noise[slot] = flat[a * per_row : (a + 1) * per_row]
        elif msg.noise_sketches or msg.noise_faults:
            raise self._error("noise sketches in a round without distributed noise", msg)

        def commit() -> None:
            self._opened = (msg, w, z)
            self._opened_noise = noise

        return commit

    def _check_ZeroTestResult(self, msg: ZeroTestResult):
        if len(msg.equal) != 1 or msg.equal[0] not in (0, 1):
            raise self._error("expected one answer byte, 0 or 1", msg)
        return lambda: setattr(self, "_zero_test", msg)

    # -- faults, exclusion and stage closing ----------------------------------------------------

    def _record_fault(self, exc: ProtocolError, sender: int | None) -> list[Message]:
        count = self._fault_count.get(sender, 0) + 1
        self._fault_count[sender] = count
        if count <= MAX_FAULTS_LISTED:
            self.faults.append(Fault(sender, self.stage.value, exc.event, str(exc)))
            log.warning("%s", exc)
        else:
            self.suppressed_faults[sender] = self.suppressed_faults.get(sender, 0) + 1
        if sender is not None and sender in self._population and sender not in self.excluded:
            self._exclude(sender, f"fault in {self.stage.value}: {exc.detail}")
            return self._maybe_close()
        if sender == KEYHOLDER_ID and self.stage in KEYHOLDER_STAGES:
            self._keyholder_failed(f"the key holder's answer was rejected: {exc.detail}")
            return self._maybe_close()
        return []

    def _keyholder_failed(self, reason: str) -> None:
        """Without the key holder the filter (or the verification) cannot finish: the stage
        closes and the round aborts with ``reason``."""
        self._keyholder_failure = reason
        self._expected.discard(KEYHOLDER_ID)

    def _exclude(self, client: int, reason: str) -> None:
        self.excluded[client] = reason
        self._expected.discard(client)

    def _maybe_close(self) -> list[Message]:
        if not self.done and self._expected <= self._received:
            return self._close_stage()
        return []

    def _close_stage(self) -> list[Message]:
        """Close the current stage (``_close_<stage>``: checks and pruning, returns who is
        expected next), move to the next stage of the table and open it (``_open_<stage>``:
        the requests to send)."""
        try:
            expected = getattr(self, "_close_" + self.stage.name.lower())()
            self.stage = self._table()[StageDeadline]
            self._expected = set(expected) - set(self.excluded)
            self._received = set()
            return getattr(self, "_open_" + self.stage.name.lower())()
        except _RoundAbort as exc:
            return self._abort(str(exc))

    def _table(self) -> dict[type, ServerStage]:
        return SERVER_TRANSITIONS[self._mode][self.stage]

    @property
    def phase(self) -> str:
        """The round phase of the current stage (``"advertise"`` ... ``"unmask"``, ``"done"``)."""
        return phase_of(SERVER_STAGES, self.stage)

    def abort(self, reason: str) -> list[Message]:
        """Abort the round now (a driver's decision, e.g. the key holder never prepared);
        returns the ``Abort`` notices to send. No-op once done."""
        if self.done:
            return []
        return self._abort(reason)

    def _abort(self, reason: str) -> list[Message]:
        notify = sorted((set(self._expected) | set(self._received)) - set(self.excluded))
        self.stage = self._table()[RoundFailed]
        self.abort_reason = reason
        log.warning("server aborted round %d: %s", self.config.round_id, reason)
        rid = self.config.round_id
        out = [Abort(rid, SERVER_ID, c, reason) for c in notify if c != KEYHOLDER_ID]
        if self._keyholder_contacted and self._keyholder_failure is None:
            out.append(Abort(rid, SERVER_ID, KEYHOLDER_ID, reason))
        return out

    def _prune(self, alive: set[int], what: str, partners=None) -> set[int]:
        """Keep the clients with at least t live neighbours in the masking graph, or t live
        partners in ``partners`` when given (the t-core of ``alive``); exclude the others. A
        client needs t partners, so that t-1 colluders cannot be all of them."""
        t = self.threshold
        adjacency, noun = (
            (self.graph.neighbours, "neighbours")
            if partners is None
            else (
                partners,
                "partners",
            )
        )
        kept = k_core(adjacency, alive, t)
        for i in sorted(set(alive) - kept):
            self._exclude(i, f"fewer than t={t} live {noun} after {what}")
        return kept

    def _require(self, count: int, what: str) -> None:
        if count < self.threshold:
            raise _RoundAbort(
                f"only {count} clients {what}; the threshold is t={self.threshold} (round of "
                f"{self.config.n} clients)"
            )

    def _close_collect_keys(self) -> set[int]:
        cfg = self.config
        a1 = set(self._adverts) - set(self.excluded)
        entries = {
            j: KeyEntry(j, self._adverts[j].c_pk, self._adverts[j].s_pk, self._adverts[j].signature)
            for j in sorted(a1)
        }
        if cfg.hardened:
            # Nobody chooses the ring order: it hashes every accepted advertisement, and every
            # client gets them all to check it.
            self._set_graph(graph_seed_from_adverts(cfg.digest, entries.values()))
        u1 = self._prune(a1, "key advertisement")
        self._require(len(u1), "advertised keys")
        self.u1 = tuple(sorted(u1))
        self._entries = entries
        return u1

    def _open_collect_shares(self) -> list[Message]:
        cfg, entries, u1 = self.config, self._entries, set(self.u1)
        out: list[Message] = []
        rid = cfg.round_id
        for i in self.u1:
            nbrs = self.graph.neighbours[i] & u1
            self._keys_sent[i] = frozenset(nbrs)
            listed = entries.values() if cfg.hardened else [entries[j] for j in sorted(nbrs)]
            out.append(
                ServerKeys(
                    rid,
                    SERVER_ID,
                    i,
                    cfg.graph,
                    self.graph_seed,
                    self.threshold,
                    self.graph.max_degree(),
                    listed,
                )
            )
        return out

    def _close_collect_shares(self) -> set[int]:
        u2 = self._prune(set(self._sealed) - set(self.excluded), "key sharing")
        self._require(len(u2), "shared keys")
        self.u2 = tuple(sorted(u2))
        return u2

    def _open_collect_complaints(self) -> list[Message]:
        u2 = set(self.u2)
        rid = self.config.round_id
        out: list[Message] = []
        for j in self.u2:
            dealers = sorted(self.graph.neighbours[j] & u2)
            inbox = {i: self._sealed[i][j] for i in dealers}
            commitments = {i: self._commitment_bytes[i] for i in dealers}
            sigs = {i: self._share_sigs[i][j] for i in dealers} if self.config.hardened else {}
            self._forwarded[j] = frozenset(inbox)
            out.append(ForwardShares(rid, SERVER_ID, j, inbox, commitments, sigs))
        return out

    def _close_collect_complaints(self) -> set[int]:
        """Judge the complaints, then tell every client whom to mask with.

        A complaint that a share fails its Feldman check reveals the pair's key: the server
        opens the dealer's own ciphertext with it and checks the share against the dealer's
        commitments. A bad share convicts the dealer; a good one (or a key that does not open
        the ciphertext) convicts the holder. Either way the convicted client is excluded before
        any input is masked. Other complaints (altered or undecryptable ciphertexts) cannot be
        judged: that pair stops being partners and the dispute is recorded.
        """
        alive = set(self._complaints) - set(self.excluded)
        cut: set[frozenset[int]] = set()
        for holder in sorted(alive):
            for dealer, (kind, key) in sorted(self._complaints[holder].items()):
                if kind == Complaint.INVALID_SHARE:
                    guilty, why = self._judge(dealer, holder, key)
                    self._convict(guilty, why)
                else:
                    cut.add(frozenset((dealer, holder)))
                    self.disputes.append(
                        ShareDispute(
                            owner=dealer,
                            holder=holder,
                            what="sealed shares",
                            reason=f"{party_name(holder)} rejects client {dealer}'s shares: "
                            f"{Complaint.NAMES[kind]} (they stop being partners)",
                        )
                    )
        alive -= set(self.excluded)
        partners = {
            h: frozenset(d for d in self._forwarded[h] & alive if frozenset((d, h)) not in cut)
            for h in alive
        }
        keep = self._prune(alive, "share complaints", partners)
        self._require(len(keep), "hold verified shares of t partners")
        for h in keep:
            self._masking_partners[h] = partners[h] & keep
        self._sealed.clear()
        return keep

    def _open_collect_masked(self) -> list[Message]:
        rid = self.config.round_id
        return [
            MaskingPartners(rid, SERVER_ID, h, self._masking_partners[h])
            for h in sorted(self._expected)
        ]

    def _judge(self, dealer: int, holder: int, key: bytes) -> tuple[int, str]:
        """Who is at fault for an invalid-share complaint, and why (see _close_complaints)."""
        rid = self.config.round_id
        sealed = self._sealed.get(dealer, {}).get(holder)
        against = f"client {holder}'s complaint against client {dealer}"
        if sealed is None:
            return holder, f"{against} names shares that were never forwarded"
        try:
            plain = sk.open_sealed(key, sealed, share_aad(rid, dealer, holder))
        except SecAggError:
            return holder, f"{against}: the revealed key does not open the dealer's ciphertext"
        try:
            owner, to, b_raw, s_raw = decode_share_payload(plain)
            if (owner, to) != (dealer, holder):
                raise MessageFormatError("payload for another pair", field="share payload")
            b_share, s_share = shamir.share_from_bytes(b_raw), shamir.share_from_bytes(s_raw)
        except (MessageFormatError, SecAggError):
            return dealer, f"{against} upheld: the sealed payload is malformed"
        c_b, c_s = self._commitments[dealer]
        x = holder + 1
        if vss.verify_share(c_b, x, b_share) and vss.verify_share(c_s, x, s_share):
            return holder, f"{against} is false: both shares match the dealer's commitments"
        return dealer, f"{against} upheld: a share does not match the dealer's commitments"

    def _convict(self, client: int, reason: str, event: str = "ShareComplaints") -> None:
        """Exclude a client proven to have cheated, recording the proof as its fault."""
        if client in self.excluded:
            return
        self.faults.append(Fault(client, self.stage.value, event, reason))
        log.warning("convicted client %d: %s", client, reason)
        self._exclude(client, reason)

    def _close_collect_masked(self) -> set[int]:
        # Every accepted masked input counts, even if its sender faulted later. A client stays
        # in the sum only with at least t partners in it (t-core of the partner graph): once its
        # self-mask seed is revealed, an honest partner's mask must still hide its input.
        rejected: dict[int, str] = {}
        received = set(self._masked)
        if self._input_filter is not None:
            verdict = dict(self._input_filter(frozenset(received)))
            strangers = sorted(set(verdict) - received)
            if strangers:
                raise ProtocolConfigError(
                    f"server: input_filter rejected clients {strangers[:10]} whose masked "
                    "inputs did not arrive"
                )
            rejected = {int(i): str(why) for i, why in verdict.items()}
            for i, why in sorted(rejected.items()):
                log.info("client %d rejected by the input filter: %s", i, why)
        if not self.config.filtered:
            return self._settle(rejected)
        # Secure filtering: the inputs are committed; ask their senders for their sketches.
        self.rejected = rejected
        candidates = self._core(received - set(rejected))
        self._require(len(candidates), "sent masked inputs with enough live partners")
        self._candidates = tuple(sorted(candidates))
        return candidates

    def _core(self, alive: set[int]) -> set[int]:
        """The t-core of ``alive`` in the partner graph; the others are pruned (left out of
        the sum, their mask keys unmasked like a dropout's)."""
        t = self.threshold
        core = k_core(self._partners, alive, t)
        for i in sorted(alive - core):
            live = len(self._partners[i] & core)
            self.pruned[i] = f"only {live} of its partners sent masked inputs, t={t} needed"
            log.info("client %d left out of the sum: %s", i, self.pruned[i])
        return core

    def _settle(self, rejected: Mapping[int, str]) -> set[int]:
        """Fix the sum's set U3: the received inputs, minus the rejected ones, pruned to the
        partner graph's t-core. Returns who is asked next (U3 and the rejected clients, who
        still hold shares of the others' secrets)."""
        self.rejected = dict(rejected)
        received = set(self._masked) - set(self.pruned)
        u3 = self._core(received - set(self.rejected))
        self.u3 = tuple(sorted(u3))
        self.dropped_before_input = tuple(
            sorted(set(self._masking_partners) - u3 - set(self.rejected))
        )
        self._require(len(u3), "sent masked inputs with enough live partners")
        return u3 | set(self.rejected)

    # -- secure filtering: sketches, distances with the key holder, the filter ------------------

    def _open_collect_sketches(self) -> list[Message]:
        committed = {i: self._digests[i] for i in self._candidates}
        seed = projection_seed(committed_digest(committed.items()), self.context)
        self.projection_seed = seed
        rid = self.config.round_id
        return [SketchRequest(rid, SERVER_ID, i, seed, committed) for i in sorted(self._expected)]

    def _close_collect_sketches(self) -> set[int]:
        missing = sorted(set(self._candidates) - set(self._sketches))
        for i in missing:
            self.rejected[i] = "no encrypted sketch arrived: its input cannot be judged"
        self._rows = tuple(i for i in self._candidates if i in self._sketches)
        self._require(len(self._rows), "committed sketches")
        return {KEYHOLDER_ID}

    def _open_await_distances(self) -> list[Message]:
        cfg = self.config
        if self._prepared is None:
            raise _RoundAbort(
                "the filtering preparation with the key holder did not complete before the "
                "sketches arrived (attach_preparation)"
            )
        key, lay = cfg.filtering.key, cfg.layouts
        index = {c: i for i, c in enumerate(cfg.population)}
        zero_row = [key.encrypt(0) for _ in range(lay.row_ciphertexts())]
        rows = [self._sketches[i] for i in self._rows] + [zero_row]
        self._slots = (*(index[c] for c in self._rows), cfg.n)
        masked = server_mask_rows_prepared(key, rows, self._slots, self._prepared)
        self._keyholder_contacted = True
        data = key.ciphertexts_to_bytes(c for row in masked for c in row)
        seed, seeds = b"", b""
        if cfg.noise is not None:
            seed = self.projection_seed
            seeds = key.ciphertexts_to_bytes(self._noise_seed_cts[i] for i in self._rows)
        return [
            DistanceRequest(cfg.round_id, SERVER_ID, KEYHOLDER_ID, self._rows, 1, data, seed, seeds)
        ]

    def _keyholder_answer(self, what: str):
        if self._keyholder_failure is not None:
            raise _RoundAbort(self._keyholder_failure)
        if KEYHOLDER_ID not in self._received:
            raise _RoundAbort(f"the key holder did not answer the {what} in time")

    def _close_await_distances(self) -> set[int]:
        self._keyholder_answer("distance request")
        opened, w, z = self._opened
        client_of = {slot: c for slot, c in zip(self._slots, self._rows)}
        for slot, why in opened.out_of_range:
            client = client_of[slot]
            reason = (
                f"its encrypted sketch is not a bounded sketch ({why.decode(errors='replace')})"
            )
            self.rejected[client] = reason
            self.faults.append(Fault(client, self.stage.value, "SketchCommit", reason))
        for slot, why in opened.noise_faults:
            client = client_of[slot]
            reason = f"its noise share cannot be verified ({why.decode(errors='replace')})"
            self.rejected[client] = reason
            self.faults.append(Fault(client, self.stage.value, "SketchCommit", reason))
        self._noise_sketches = {client_of[s]: cts for s, cts in self._opened_noise.items()}
        d = server_distances_prepared(w, z, opened.accepted, self._prepared)
        self._prepared = None  # used once
        zero = len(opened.accepted) - 1  # the zero row has the last slot, always accepted
        # the rule judges the clients whose rows opened (and whose noise seed is a seed)
        keep = [a for a, s in enumerate(opened.accepted[:-1]) if client_of[s] not in self.rejected]
        ids = tuple(client_of[opened.accepted[a]] for a in keep)
        enc = self.config.encoder
        sq_distances, sq_norms = d[np.ix_(keep, keep)], d[keep, zero]
        impossible = _impossible_distances(sq_distances, sq_norms)
        if impossible is not None:
            # exact integer sketch distances cannot be negative or asymmetric: the key
            # holder's answer (or its preparation) is not the protocol's
            reason = f"the key holder's answer gives impossible sketch distances ({impossible})"
            self.faults.append(Fault(KEYHOLDER_ID, self.stage.value, "DistanceOpened", reason))
            raise _RoundAbort(reason)
        decision = decide(
            self.config.filtering,
            ids,
            sq_distances,
            sq_norms,
            scale=enc.scale,
            dim=self.config.dim,
        )
        self.filter_decision = decision
        rejected = dict(self.rejected)
        for i, why in sorted(decision.rejected.items()):
            rejected[i] = why
            log.info("client %d rejected by the filter: %s", i, why)
        return self._settle(rejected)

    # -- consistency, unmasking, verification ------------------------------------------------

    def _open_collect_signatures(self) -> list[Message]:
        rid = self.config.round_id
        rejected = tuple(sorted(self.rejected))
        return [
            ConsistencyRequest(rid, SERVER_ID, i, self.u3, rejected) for i in sorted(self._expected)
        ]

    def _close_collect_signatures(self) -> set[int]:
        need = self.config.min_signatures(self.threshold)
        signers = set(self._signatures) - set(self.excluded)
        if len(signers) < need:
            raise _RoundAbort(f"only {len(signers)} consistency signatures over U3, {need} needed")
        return signers

    def _open_collect_unmask(self) -> list[Message]:
        rid = self.config.round_id
        rejected = tuple(sorted(self.rejected))
        if not self.config.hardened:
            return [
                UnmaskRequest(
                    rid, SERVER_ID, i, self.u3, self.dropped_before_input, rejected=rejected
                )
                for i in sorted(self._expected)
            ]
        # every client needs min_signatures valid ones; more would only cost bytes and checks
        need = self.config.min_signatures(self.threshold)
        sigs = {i: self._signatures[i] for i in sorted(self._expected)[:need]}
        u3 = set(self.u3)
        out = []
        for i in sorted(self._expected):
            # the signed partner sets of the survivors whose self-mask shares i holds
            owners = (self._masking_partners.get(i, frozenset()) | {i}) & u3
            records = {o: self._partner_records[o] for o in owners}
            out.append(
                UnmaskRequest(
                    rid, SERVER_ID, i, self.u3, self.dropped_before_input, sigs, records, rejected
                )
            )
        return out

    def _close_collect_unmask(self) -> set[int]:
        self._finish()
        if self.config.filtered:
            self._pending, self.result = self.result, None  # released once verified
            return {KEYHOLDER_ID}
        return set()

    def _open_await_zero_test(self) -> list[Message]:
        cfg, pending = self.config, self._pending
        key, lay = cfg.filtering.key, cfg.layouts
        signed = cfg.encoder.to_signed(pending.encoded_sum).astype(np.int64)
        expected = sketch(signed, self.projection_seed, lay.k, wide=True)
        rows = [self._sketches[i] for i in self.u3]
        if cfg.noise is not None:  # the sum carries the accepted shares: so does the check
            rows += [self._noise_sketches[i] for i in self.u3]
        try:
            test = server_blinded_difference(key, rows, expected, lay.row)
        except PaillierOverflowError as exc:
            self._verification_failed(
                f"the sketch of the sum cannot equal the sketches' sum ({exc})"
            )
            raise _RoundAbort(self.verification.reason) from None
        data = key.ciphertexts_to_bytes([test])
        return [ZeroTestRequest(cfg.round_id, SERVER_ID, KEYHOLDER_ID, data)]

    def _verification_failed(self, reason: str) -> None:
        self.verification = Verification(False, self.u3, reason)

    def _close_await_zero_test(self) -> set[int]:
        self._keyholder_answer("zero test")
        if self._zero_test.equal[0] != 1:
            self._verification_failed(
                "the unmasked sum does not match the accepted clients' committed sketches "
                "(a client masked another input than it sketched, or masks did not cancel); "
                "the round is not applied"
            )
            raise _RoundAbort(f"verification failed: {self.verification.reason}")
        self.verification = Verification(True, self.u3)
        self.result, self._pending = self._pending, None
        return set()

    def _open_done(self) -> list[Message]:
        return []

    def _reconstruct(self, owner: int, shares: dict[int, int], what: str) -> bytes:
        """Reconstruct ``owner``'s committed secret from the returned shares.

        Decoding corrects up to ``(m - t) // 2`` wrong shares (Gao); every point it flags is
        checked against the dealer's commitments, so a holder that returned a wrong share is
        convicted with proof. Past that radius (or with exactly ``t`` shares, where a wrong
        one cannot be seen by decoding) the result is checked against ``C_0``, and on a
        mismatch only the shares that match the commitments are used.
        """
        t = self.threshold
        c_b, c_s = self._commitments[owner]
        commitments = c_b if what == "self-mask seed" else c_s
        if len(shares) < t:
            raise _RoundAbort(
                f"only {len(shares)} shares of client {owner}'s {what} arrived, t={t} needed"
            )
        try:
            decoded = shamir.decode(shares, t, 32)
            secret, suspects = decoded.secret, set(decoded.wrong)
            if not commitments.commits_to(secret):
                raise SecAggError("decoded secret does not match the commitments")
        except SecAggError:
            suspects = set(vss.find_bad_shares(commitments, shares))
            secret = None
        liars = {x for x in suspects if not vss.verify_share(commitments, x, shares[x])}
        for x in sorted(liars):
            self._convict(
                x - 1,
                f"{party_name(x - 1)} returned a share of client {owner}'s {what} that does "
                "not match the dealer's commitments",
                event="UnmaskResponse",
            )
        if secret is None:
            good = {x: v for x, v in shares.items() if x not in liars}
            if len(good) < t:
                raise _RoundAbort(
                    f"only {len(good)} correct shares of client {owner}'s {what}, t={t} needed"
                )
            secret = shamir.reconstruct(good, t, 32)
        return secret

    def _finish(self) -> None:
        cfg = self.config
        seeds = {
            i: self._reconstruct(i, self._seed_shares.get(i, {}), "self-mask seed") for i in self.u3
        }
        survivors = set(self.u3)
        jobs = []
        for d in sorted(set(self.dropped_before_input) | set(self.rejected)):
            # the survivors that masked with d (d in their signed partner set)
            partners = sorted(i for i in survivors if d in self._partners[i])
            if partners:
                secret = self._reconstruct(d, self._key_shares.get(d, {}), "mask key")
                jobs.append((d, vss.DHKeyPair.from_private_bytes(secret), partners))

        def agree(job) -> dict[tuple[int, int], bytes]:
            d, kp, partners = job
            keys = vss.dh_agree_many(
                kp,
                [self._adverts[i].s_pk for i in partners],
                [mask_agreement_info(cfg.round_id, i, d) for i in partners],
                full_check=False,  # validated in full at advertisement
            )
            return {(i, d): pairwise_seed(k, cfg.round_id) for i, k in zip(partners, keys)}

        pairwise: dict[tuple[int, int], bytes] = {}
        workers = min(self.unmask_workers, max(1, len(jobs)))
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for part in pool.map(agree, jobs):
                    pairwise.update(part)
        else:
            for job in jobs:
                pairwise.update(agree(job))
        acc = sum_masked((self._masked[i] for i in self.u3), cfg.bits)
        total = unmask_sum(acc, seeds, pairwise, cfg.bits, workers=self.unmask_workers)
        self._check_sum_range(total)
        total.flags.writeable = False
        aggregate = cfg.encoder.decode(total, len(self.u3))
        self.result = AggregateResult(total, aggregate, self.u3)

    def _check_sum_range(self, total: np.ndarray) -> None:
        """A sum of |U3| honest encodings lies in ``[-|U3| * max_int, |U3| * max_int]``; a value
        outside means an input outside ``[-value_range, value_range]`` or masks that did not cancel (bad
        shares, keys altered in transit). The round then fails: it is never applied."""
        enc = self.config.encoder
        bound = len(self.u3) * enc.max_int
        signed = enc.to_signed(total)
        over = np.flatnonzero(np.abs(signed) > bound)
        if over.size:
            j = int(over[0])
            raise _RoundAbort(
                f"the unmasked sum is out of range at {over.size} coordinate(s), first "
                f"[{j}] = {int(signed[j]) / enc.scale:.6g} outside +-{len(self.u3)} x value_range="
                f"{self.config.value_range}: some input was outside [-value_range, value_range] or masks did not "
                "cancel; the round failed and its sum is not released"
            )


def _impossible_distances(sq_distances: np.ndarray, sq_norms: np.ndarray) -> str | None:
    """Why exact squared sketch distances and norms cannot be real (``None``: they can)."""
    if any(v < 0 for v in np.asarray(sq_norms).ravel()):
        return "a negative squared norm"
    if any(v < 0 for v in np.asarray(sq_distances).ravel()):
        return "a negative squared distance"
    m = len(sq_norms)
    for i in range(m):
        if sq_distances[i, i] != 0:
            return "a non-zero self-distance"
        for j in range(i):
            if sq_distances[i, j] != sq_distances[j, i]:
                return "asymmetric distances"
    return None


class _RoundAbort(Exception):
    """Internal: a stage cannot close successfully; the round aborts with this reason."""
