"""The key holder party of a filtered round, as a sans-I/O state machine.

Theory of operation
===================

The key holder K holds the Paillier secret key under which clients encrypt their sketches. It
never colludes with the server (the README's threat model). It talks only to the server, in
this order (its stage table, :data:`KEYHOLDER_STAGES`)::

    stage            waits for            sends (and what it decrypts)
    (begin)                               PrepareColumns   Enc(N), its fresh uniform masks
    PREPARE          PrepareProducts      --               U = N M^T + R (S's blinds R)
    WAIT_ROWS        DistanceRequest      DistanceOpened   t_r = s_r + M_r for every row
    WAIT_ZERO_TEST   ZeroTestRequest      ZeroTestResult   a folded difference: 0 or not
    DONE

The preparation needs no client and runs before the round's clients commit anything (between
rounds in a deployment); the round itself then costs K one decryption per row ciphertext
(:mod:`secagg.masked_distance`, the prepared variant). Every value K decrypts is hidden under a
uniform mask the server chose (``sigma`` bits of statistical hiding), or is the zero test's
folded value, which is 0 or uniform (:mod:`secagg.zero_test`): K learns nothing about one
client's update. What it learns is listed in :meth:`KeyHolder.audit`: the masked rows, that it
decrypted the blinded products, which rows decrypted outside the range of a bounded sketch (a
client that encrypted something other than a bounded sketch), and one bit per zero test.

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
from gmpy2 import mpz

from secagg.errors import SecAggError
from secagg.masked_distance import (
    KeyHolderOpened,
    KeyHolderPrepared,
    keyholder_open_rows_prepared,
    prepare_keyholder_columns,
    prepare_keyholder_finish,
)
from secagg.paillier_pool import ObfuscationPool
from secagg.paillier_private import PaillierPrivateKey
from secagg.sketch import sketch
from secagg.zero_test import keyholder_is_zero

from .audit import readonly_array
from .config import RoundConfig
from .errors import KEYHOLDER_ID, SERVER_ID, ProtocolConfigError, ProtocolError, party_name
from .events import Refused
from .messages import (
    Abort,
    DistanceOpened,
    DistanceRequest,
    Message,
    PrepareColumns,
    PrepareProducts,
    ZeroTestRequest,
    ZeroTestResult,
    decode_from,
    encode_signed_matrix,
)
from .noise import NOISE_SEED_BYTES, noise_share
from .stages import Stage, build_transitions, phase_of

__all__ = [
    "KeyHolder",
    "KeyHolderStage",
    "KEYHOLDER_STAGES",
    "KEYHOLDER_TRANSITIONS",
    "KeyHolderAudit",
    "PUBLIC_ROWS",
    "row_slots",
]

#: Rows the server adds to its clients' in the distance protocol: the zero row (norms).
PUBLIC_ROWS = 1


def row_slots(config: RoundConfig) -> int:
    """Row slots of a round's prepared distance protocol: one per client of the population
    (its index), then :data:`PUBLIC_ROWS`."""
    return config.n + PUBLIC_ROWS


class KeyHolderStage(enum.Enum):
    """Where the key holder is in the round (named after what it waits for)."""

    PREPARE = "PREPARE"
    WAIT_ROWS = "WAIT_ROWS"
    WAIT_ZERO_TEST = "WAIT_ZERO_TEST"
    DONE = "DONE"
    ABORTED = "ABORTED"
    FAILED = "FAILED"


K = KeyHolderStage
_EXITS = {Abort: K.ABORTED, Refused: K.FAILED}

#: The key holder's stages in round order; the phase is that of the answer it sends.
KEYHOLDER_STAGES: tuple[Stage, ...] = (
    Stage(K.PREPARE, PrepareProducts, "prepare", exits=_EXITS),
    Stage(K.WAIT_ROWS, DistanceRequest, "distances", exits=_EXITS),
    Stage(K.WAIT_ZERO_TEST, ZeroTestRequest, "verify", exits=_EXITS),
)

#: stage -> {message or event type -> next stage} (the same in every mode).
KEYHOLDER_TRANSITIONS: dict[KeyHolderStage, dict[type, KeyHolderStage]] = build_transitions(
    KEYHOLDER_STAGES,
    hardened=False,
    done=K.DONE,
    terminal={K.DONE: {Abort: K.DONE}, K.ABORTED: {Abort: K.ABORTED}, K.FAILED: {}},
)


@dataclass(frozen=True)
class KeyHolderAudit:
    """Everything the key holder decrypted or learned in the round (read-only).

    ``masked_rows``: ``t`` of the accepted rows (object ints, rows x k) -- each ``s + M``;
    ``row_ids``: the client id of each request row (``None`` for the server's public rows);
    ``out_of_range``: request row index -> reason; ``prepared``: whether it decrypted the
    blinded products ``U = N M^T + R`` of the preparation (uniform blinds chosen by the
    server); ``zero_tests``: the answers it gave.
    """

    stage: str
    row_ids: tuple[int | None, ...]
    masked_rows: np.ndarray | None
    out_of_range: MappingProxyType
    prepared: bool
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
        self.stage = KeyHolderStage.PREPARE
        self.refusal: ProtocolError | None = None
        self.abort_reason: str | None = None
        self._layouts = config.layouts
        self._row_ids: tuple[int | None, ...] = ()
        self._prepared: KeyHolderPrepared | None = None
        self._columns_sent = False
        self._opened: KeyHolderOpened | None = None
        self._products_done = False
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
        """Start the preparation: draw this round's masks ``N`` and send ``Enc(N)`` packed
        across row slots (once; later calls return ``[]``)."""
        if self.stage is not K.PREPARE or self._columns_sent:
            return []
        cfg = self.config
        columns, self._prepared = prepare_keyholder_columns(
            self._key, self._layouts, row_slots(cfg), pool=self._pool, workers=self.workers
        )
        self._columns_sent = True
        data = cfg.filtering.key.ciphertexts_to_bytes(c for block in columns for c in block)
        return [PrepareColumns(cfg.round_id, KEYHOLDER_ID, row_slots(cfg), data)]

    def deadline(self) -> list[Message]:
        """No timers (a silent server is the transport's business): ``[]``."""
        return []

    def audit(self) -> KeyHolderAudit:
        opened = self._opened
        return KeyHolderAudit(
            stage=self.stage.value,
            row_ids=self._row_ids,
            masked_rows=None if opened is None else readonly_array(opened.t),
            out_of_range=MappingProxyType(dict(opened.out_of_range) if opened else {}),
            prepared=self._products_done,
            zero_tests=self._zero_tests,
        )

    def receive_bytes(self, data: bytes, *, peer: int | None = None) -> list[Message]:
        """Tolerant entry point: never raises for the sender's fault (see the module doc)."""
        try:
            return self.receive_strict(decode_from(data, peer, max_count=self.config.n + 1))
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
        self._prepared = None  # a round's masks are never used for another
        return []

    def _ciphertexts(self, data: bytes, count: int | None, what: str, msg: Message):
        try:
            return self.config.filtering.key.ciphertexts_from_bytes(
                data, count=count, sender="server"
            )
        except SecAggError as exc:
            raise self._error(f"{what}: {exc}", msg) from None

    def _on_PrepareProducts(self, msg: PrepareProducts) -> list[Message]:
        if not self._columns_sent:
            raise self._error("products before the key holder sent its columns", msg)
        rows = row_slots(self.config)
        flat = self._ciphertexts(msg.products, None, "blinded products", msg)
        per_block = rows
        if not flat or len(flat) % per_block:
            raise self._error(
                f"{len(flat)} blinded products is not a whole number of blocks of {rows}", msg
            )
        blinded = [flat[b : b + per_block] for b in range(0, len(flat), per_block)]
        try:
            prepare_keyholder_finish(self._key, blinded, self._prepared, workers=self.workers)
        except SecAggError as exc:
            raise self._error(f"blinded products: {exc}", msg) from None
        self._products_done = True
        return []

    def _on_DistanceRequest(self, msg: DistanceRequest) -> list[Message]:
        cfg, lay = self.config, self._layouts
        strangers = sorted(set(msg.clients) - set(cfg.population))
        if strangers:
            raise self._error(f"rows of clients {strangers[:10]} outside the population", msg)
        if msg.public_rows != PUBLIC_ROWS:
            raise self._error(f"{msg.public_rows} public rows, expected {PUBLIC_ROWS}", msg)
        # every check that can refuse the request comes before anything is decrypted, so a
        # refused request leaves the prepared masks unused and the audit empty
        if cfg.noise is not None:
            if len(msg.projection_seed) != 32:
                raise self._error("distributed noise needs the 32-byte projection seed", msg)
            self._ciphertexts(msg.noise_seeds, len(msg.clients), "noise seeds", msg)
        elif msg.projection_seed or msg.noise_seeds:
            raise self._error("noise seeds in a round without distributed noise", msg)
        index = {c: i for i, c in enumerate(cfg.population)}
        slots = [index[c] for c in msg.clients] + [cfg.n + p for p in range(msg.public_rows)]
        per_row = lay.row_ciphertexts()
        flat = self._ciphertexts(msg.ciphertexts, len(slots) * per_row, "masked rows", msg)
        masked = [flat[r * per_row : (r + 1) * per_row] for r in range(len(slots))]
        try:
            opened = keyholder_open_rows_prepared(
                self._key, masked, slots, self._prepared, workers=self.workers
            )
        except SecAggError as exc:
            raise self._error(f"masked rows: {exc}", msg) from None
        self._opened = opened
        self._row_ids = (*msg.clients, *([None] * msg.public_rows))
        noise_sketches, noise_faults = b"", {}
        if cfg.noise is not None:
            noise_sketches, noise_faults = self._noise_sketches(msg, slots, opened.accepted)
        return [
            DistanceOpened(
                cfg.round_id,
                KEYHOLDER_ID,
                opened.accepted,
                {r: why.encode()[:4096] for r, why in opened.out_of_range.items()},
                encode_signed_matrix(opened.w, lay.w_bytes),
                encode_signed_matrix(opened.z, lay.z_bytes),
                noise_sketches,
                noise_faults,
            )
        ]

    def _noise_sketches(self, msg: DistanceRequest, slots: list[int], accepted: tuple[int, ...]):
        """``Enc(P e_i)`` for every accepted client row, from the noise seeds (verifiable
        shares, :mod:`protocol.noise`), and the slots whose seed did not decrypt to a seed."""
        cfg, lay = self.config, self._layouts
        key = cfg.filtering.key
        cts = self._ciphertexts(msg.noise_seeds, len(msg.clients), "noise seeds", msg)
        plain = self._key.decrypt_many(cts, sender="server", workers=self.workers)
        slot_of = dict(zip(range(len(msg.clients)), slots))
        faults, seeds = {}, {}
        for row, value in enumerate(plain):
            if int(value) >> (8 * NOISE_SEED_BYTES):
                faults[slot_of[row]] = b"its encrypted noise seed is not a 32-byte seed"
            else:
                seeds[slot_of[row]] = int(value).to_bytes(NOISE_SEED_BYTES, "big")
        clients = [s for s in accepted if s < cfg.n]
        scale = cfg.encoder.scale
        # room for |A| such rows next to |A| sketches in the verification's slots
        packer = lay.row.with_input_bound(lay.row.max_abs // (4 * (cfg.n + 1)))
        plain = []
        for slot in clients:  # one share at a time: n x d int64 would not fit in memory
            if slot in seeds:
                share = noise_share(cfg.noise, seeds[slot], cfg.dim, scale)
                row = sketch(share, msg.projection_seed, lay.k)
            else:  # a faulty seed: the server rejects that client; the row is never used
                row = np.zeros(lay.k, dtype=np.int64)
            plain.extend(packer.pack(row))
        # r**n from the pool, else with the factorisation (about 4x the public computation)
        if self._pool is not None:
            obfuscators = self._pool.draw_many(len(plain))
        else:
            obfuscators = self._key.random_obfuscators(len(plain), workers=self.workers)
        out = [key.raw_encrypt(mpz(m), r) for m, r in zip(plain, obfuscators)]
        return key.ciphertexts_to_bytes(out), faults

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
