"""The key holder party of a filtered round, as a sans-I/O state machine.

Theory of operation
===================

The key holder K holds the Paillier secret key under which clients encrypt their sketches. It
never colludes with the server (the README's threat model). It talks only to the server and
answers three requests per round, in this order (its stage table, :data:`KEYHOLDER_STAGES`)::

    stage            waits for            answers (and what it decrypts)
    WAIT_ROWS        DistanceRequest      DistanceColumns  t_r = s_r + M_r for every row
    WAIT_CROSS       DistanceCrossTerms   DistanceCombined C'_ij = <t_i, M_j> + R_ij
    WAIT_ZERO_TEST   ZeroTestRequest      ZeroTestResult   a folded difference: 0 or not
    DONE

Every value it decrypts is hidden under a uniform mask the server chose (``sigma`` bits of
statistical hiding, :mod:`secagg.masked_distance`), or is the zero test's folded value, which
is 0 or uniform (:mod:`secagg.zero_test`): K learns nothing about one client's update. What it
learns is listed in :meth:`KeyHolder.audit`: the masked rows, the blinded cross terms, which
rows decrypted outside the range of a bounded sketch (a client that encrypted something other
than a bounded sketch), and one bit per zero test.

Rule 1: everything that decides K's stage lives in this file. Rule 2: no I/O, no sleeping, no
thread beyond one call (decryptions spread over ``workers`` threads, then they end).

Bad messages: :meth:`KeyHolder.receive_strict` raises :class:`ProtocolError` (naming the key
holder, the sender, the stage and the message type) and leaves the state unchanged;
:meth:`KeyHolder.receive_bytes` (tolerant) refuses the message, keeps the error in
:attr:`KeyHolder.refusal`, answers once with an ``Abort`` and takes no further part. Illegal:
not from the server, another round, not allowed in this stage (replays land here), addressed to
somebody else, rows of clients outside the population, ciphertexts of the wrong count or
invalid (out of range, not coprime to n: the server validated its clients' ciphertexts, so an
invalid one is the server's fault), more zero tests than :attr:`KeyHolder.max_zero_tests`.
A row whose *decryption* is out of range is not the server's fault: it is reported back as
that row's (its client's) fault and takes no further part.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from secagg.errors import SecAggError
from secagg.masked_distance import (
    KeyHolderRows,
    keyholder_combine,
    keyholder_open_rows,
)
from secagg.paillier_pool import ObfuscationPool
from secagg.paillier_private import PaillierPrivateKey
from secagg.zero_test import keyholder_is_zero

from .audit import readonly_array
from .config import RoundConfig
from .errors import KEYHOLDER_ID, SERVER_ID, ProtocolConfigError, ProtocolError, party_name
from .events import Refused
from .messages import (
    Abort,
    DistanceColumns,
    DistanceCombined,
    DistanceCrossTerms,
    DistanceRequest,
    Message,
    ZeroTestRequest,
    ZeroTestResult,
    decode,
    encode_signed_matrix,
)
from .stages import Stage, build_transitions, phase_of

__all__ = [
    "KeyHolder",
    "KeyHolderStage",
    "KEYHOLDER_STAGES",
    "KEYHOLDER_TRANSITIONS",
    "KeyHolderAudit",
    "z_width",
]


class KeyHolderStage(enum.Enum):
    """Where the key holder is in the round (named after what it waits for)."""

    WAIT_ROWS = "WAIT_ROWS"
    WAIT_CROSS = "WAIT_CROSS"
    WAIT_ZERO_TEST = "WAIT_ZERO_TEST"
    DONE = "DONE"
    ABORTED = "ABORTED"
    FAILED = "FAILED"


K = KeyHolderStage
_EXITS = {Abort: K.ABORTED, Refused: K.FAILED}

#: The key holder's stages in round order; the phase is that of the answer it sends.
KEYHOLDER_STAGES: tuple[Stage, ...] = (
    Stage(K.WAIT_ROWS, DistanceRequest, "distances", exits=_EXITS),
    Stage(K.WAIT_CROSS, DistanceCrossTerms, "distances", exits=_EXITS),
    Stage(K.WAIT_ZERO_TEST, ZeroTestRequest, "verify", exits=_EXITS),
)

#: stage -> {message or event type -> next stage} (the same in every mode).
KEYHOLDER_TRANSITIONS: dict[KeyHolderStage, dict[type, KeyHolderStage]] = build_transitions(
    KEYHOLDER_STAGES,
    hardened=False,
    done=K.DONE,
    terminal={K.DONE: {Abort: K.DONE}, K.ABORTED: {Abort: K.ABORTED}, K.FAILED: {}},
)


def z_width(layouts) -> int:
    """Bytes of one signed value of ``Z`` in :class:`DistanceCombined` for these layouts."""
    lay = layouts
    spread = (1 << lay.mask_bits) + 2 * lay.bound  # |t_i - t_j| for in-range rows
    a_max = lay.k * spread * spread
    blinded = lay.cross_max + (1 << lay.blind_bits)
    return (max(a_max, 1) + 8 * blinded).bit_length() // 8 + 1


@dataclass(frozen=True)
class KeyHolderAudit:
    """Everything the key holder decrypted or learned in the round (read-only).

    ``masked_rows``: ``t`` of the accepted rows (object ints, rows x k) -- each ``s + M``;
    ``row_ids``: the client id of each request row (``None`` for the server's public rows);
    ``out_of_range``: request row index -> reason; ``combined``: whether it decrypted the
    blinded cross terms ``C'_ij = <t_i, M_j> + R_ij`` (uniform blinds chosen by the server);
    ``zero_tests``: the answers it gave.
    """

    stage: str
    row_ids: tuple[int | None, ...]
    masked_rows: np.ndarray | None
    out_of_range: MappingProxyType
    combined: bool
    zero_tests: tuple[bool, ...]


class KeyHolder:
    """The key holder's side of one filtered round.

    Parameters
    ----------
    config:
        The round's public parameters; must have ``filtering`` whose key is ``private_key``'s.
    private_key:
        The Paillier secret key.
    pool:
        Optional :class:`ObfuscationPool` filled ahead of time for K's re-encryptions (without
        one, ``r**n`` is computed online with the factorisation).
    workers:
        Threads for decryptions.
    max_zero_tests:
        Most folded differences K decrypts in a round (each reveals one bit). Default 1.

    Raises :class:`ProtocolConfigError` for a round without filtering or a key mismatch.
    """

    def __init__(
        self,
        config: RoundConfig,
        private_key: PaillierPrivateKey,
        *,
        pool: ObfuscationPool | None = None,
        workers: int = 2,
        max_zero_tests: int = 1,
    ) -> None:
        if not isinstance(config, RoundConfig):
            raise TypeError(f"config must be a RoundConfig, got {type(config).__name__}")
        if config.filtering is None:
            raise ProtocolConfigError("key holder: the round has no secure filtering")
        if not isinstance(private_key, PaillierPrivateKey):
            raise TypeError(
                f"private_key must be a PaillierPrivateKey, got {type(private_key).__name__}"
            )
        if private_key.public_key != config.filtering.key:
            raise ProtocolConfigError(
                "key holder: its private key does not match the round's filtering key"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ProtocolConfigError(f"workers must be an int >= 1, got {workers!r}")
        self.config = config
        self.role = party_name(KEYHOLDER_ID)
        self._key = private_key
        self._pool = pool
        self.workers = workers
        self.max_zero_tests = int(max_zero_tests)
        self.stage = KeyHolderStage.WAIT_ROWS
        self.refusal: ProtocolError | None = None
        self.abort_reason: str | None = None
        self._layouts = config.layouts
        self._row_ids: tuple[int | None, ...] = ()
        self._rows: KeyHolderRows | None = None
        self._combined = False
        self._zero_tests: tuple[bool, ...] = ()

    # -- party protocol (router) ------------------------------------------------------------

    @property
    def party_id(self) -> int:
        return KEYHOLDER_ID

    @property
    def phase(self) -> str:
        return phase_of(KEYHOLDER_STAGES, self.stage)

    @property
    def done(self) -> bool:
        return self.stage in (K.DONE, K.ABORTED, K.FAILED)

    def begin(self) -> list[Message]:
        """The key holder speaks only when asked: ``[]``."""
        return []

    def deadline(self) -> list[Message]:
        """No timers (a silent server is the transport's business): ``[]``."""
        return []

    def audit(self) -> KeyHolderAudit:
        rows = self._rows
        return KeyHolderAudit(
            stage=self.stage.value,
            row_ids=self._row_ids,
            masked_rows=None if rows is None else readonly_array(rows.t),
            out_of_range=MappingProxyType(dict(rows.out_of_range) if rows else {}),
            combined=self._combined,
            zero_tests=self._zero_tests,
        )

    def receive_bytes(self, data: bytes, *, peer: int | None = None) -> list[Message]:
        """Tolerant entry point: never raises for the sender's fault (see the module doc)."""
        try:
            msg = decode(data, max_count=self.config.n + 1)
            if peer is not None and msg.sender != peer:
                raise self._error(
                    f"header claims sender {party_name(msg.sender)} on {party_name(peer)}'s "
                    "channel",
                    msg,
                )
            return self.receive_strict(msg)
        except ProtocolError as exc:
            if exc.role != self.role:
                exc = ProtocolError(
                    exc.detail, role=self.role, sender=peer, stage=self.stage.value, event=exc.event
                )
            first = self.refusal is None
            self.refusal = self.refusal or exc
            self.stage = KEYHOLDER_TRANSITIONS[self.stage].get(Refused, self.stage)
            if not first:
                return []
            rid = self.config.round_id
            return [Abort(rid, KEYHOLDER_ID, SERVER_ID, f"refused: {exc.detail}")]

    def receive_strict(self, msg: Message) -> list[Message]:
        """Process one message from the server; raise :class:`ProtocolError` if it is illegal
        (the state is then unchanged)."""
        if not isinstance(msg, Message):
            raise TypeError(f"key holder: expects a Message, got {type(msg).__name__}")
        if msg.sender != SERVER_ID:
            raise self._error("the key holder accepts messages from the server only", msg)
        if msg.round_id != self.config.round_id:
            raise self._error(
                f"message is for round {msg.round_id}, this is round {self.config.round_id}", msg
            )
        if getattr(msg, "recipient", KEYHOLDER_ID) != KEYHOLDER_ID:
            raise self._error(f"message is addressed to {party_name(msg.recipient)}", msg)
        table = KEYHOLDER_TRANSITIONS[self.stage]
        nxt = table.get(type(msg))
        if nxt is None or type(msg) is Refused:
            allowed = ", ".join(t.__name__ for t in table if t is not Refused) or "nothing"
            raise self._error(f"not allowed in this stage (expects {allowed})", msg)
        out = getattr(self, "_on_" + type(msg).__name__)(msg)
        self.stage = nxt
        return out

    # -- handlers -----------------------------------------------------------------------------

    def _error(self, detail: str, msg: object) -> ProtocolError:
        return ProtocolError(
            detail,
            role=self.role,
            sender=getattr(msg, "sender", None),
            stage=self.stage.value,
            event=type(msg).__name__,
        )

    def _on_Abort(self, msg: Abort) -> list[Message]:
        self.abort_reason = msg.reason
        self._rows = None if self.stage is not K.DONE else self._rows
        return []

    def _ciphertexts(self, data: bytes, count: int, what: str, msg: Message):
        try:
            return self.config.filtering.key.ciphertexts_from_bytes(
                data, count=count, sender="server"
            )
        except SecAggError as exc:
            raise self._error(f"{what}: {exc}", msg) from None

    def _on_DistanceRequest(self, msg: DistanceRequest) -> list[Message]:
        lay = self._layouts
        strangers = sorted(set(msg.clients) - set(self.config.population))
        if strangers:
            raise self._error(f"rows of clients {strangers[:10]} outside the population", msg)
        if msg.public_rows > 4:
            raise self._error(f"{msg.public_rows} public rows, at most 4", msg)
        rows = len(msg.clients) + msg.public_rows
        if rows < 2:
            raise self._error(f"{rows} rows: distances need at least 2", msg)
        per_row = lay.row_ciphertexts()
        flat = self._ciphertexts(msg.ciphertexts, rows * per_row, "masked rows", msg)
        masked = [flat[r * per_row : (r + 1) * per_row] for r in range(rows)]
        columns, state = keyholder_open_rows(
            self._key, masked, lay, pool=self._pool, workers=self.workers
        )
        self._rows = state
        self._row_ids = (*msg.clients, *([None] * msg.public_rows))
        key = self.config.filtering.key
        return [
            DistanceColumns(
                self.config.round_id,
                KEYHOLDER_ID,
                state.accepted,
                {r: why.encode()[:4096] for r, why in state.out_of_range.items()},
                key.ciphertexts_to_bytes(c for block in columns for c in block),
            )
        ]

    def _on_DistanceCrossTerms(self, msg: DistanceCrossTerms) -> list[Message]:
        lay, state = self._layouts, self._rows
        m = len(state.accepted)
        blocks = -(-m // lay.column.slots)
        flat = self._ciphertexts(msg.cross, blocks * m, "blinded cross terms", msg)
        blinded = [flat[b * m : (b + 1) * m] for b in range(blocks)]
        try:
            z = keyholder_combine(self._key, blinded, state, workers=self.workers)
        except SecAggError as exc:
            raise self._error(f"blinded cross terms do not decode: {exc}", msg) from None
        self._combined = True
        return [
            DistanceCombined(
                self.config.round_id, KEYHOLDER_ID, encode_signed_matrix(z, z_width(lay))
            )
        ]

    def _on_ZeroTestRequest(self, msg: ZeroTestRequest) -> list[Message]:
        key = self.config.filtering.key
        width = key.ciphertext_bytes
        count = len(msg.tests) // width if len(msg.tests) % width == 0 else -1
        if not 1 <= count <= self.max_zero_tests:
            raise self._error(
                f"{len(msg.tests)} bytes: expected 1 to {self.max_zero_tests} ciphertexts of "
                f"{width} bytes (each zero test reveals a bit; the number is capped)",
                msg,
            )
        tests = self._ciphertexts(msg.tests, count, "zero tests", msg)
        answers = tuple(keyholder_is_zero(self._key, c, sender="server") for c in tests)
        self._zero_tests = answers
        return [ZeroTestResult(self.config.round_id, KEYHOLDER_ID, bytes(int(a) for a in answers))]
