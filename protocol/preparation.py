"""The server's side of a filtered round's preparation with the key holder (sans-I/O).

Before a filtered round's clients commit anything -- between rounds, in a deployment -- the
server and the key holder run the expensive part of the masked distance protocol on random
masks only (:mod:`secagg.masked_distance`, the prepared variant)::

    key holder -> server  PrepareColumns   Enc(N): the key holder's fresh masks, packed across
                                           the round's row slots
    server -> key holder  PrepareProducts  Enc(<N_i, M_j> + R_ij): the server's fresh row masks
                                           M and blinds R, one multi-exponentiation per
                                           (column block, row slot)

No client input is involved, so nothing here can leak one. The result,
:attr:`FilterPreparation.prepared`, is handed to :class:`protocol.server.Server`
(``prepared=`` or :meth:`~protocol.server.Server.attach_preparation`); its masks serve exactly
one round (the state refuses a second use). Online, the round then costs the key holder one
decryption per row ciphertext and the server a few integer matrix products.

:class:`FilterPreparation` is a party of :class:`protocol.router.Router` (wire id
``SERVER_ID``; phase ``"prepare"``). Its tolerant :meth:`FilterPreparation.receive_bytes`
never raises for the key holder's fault: the preparation then fails with the reason in
:attr:`FilterPreparation.failure` and no state is produced.
"""

from __future__ import annotations

from secagg.errors import SecAggError
from secagg.masked_distance import ServerPrepared, prepare_server_products
from secagg.paillier_pool import ObfuscationPool

from .config import RoundConfig
from .errors import KEYHOLDER_ID, SERVER_ID, ProtocolConfigError, ProtocolError
from .keyholder import row_slots
from .messages import Abort, Message, PrepareColumns, PrepareProducts, decode_from

__all__ = ["FilterPreparation"]


class FilterPreparation:
    """The server's preparation of one filtered round (see the module docstring).

    Parameters
    ----------
    config:
        The round's configuration (must have ``filtering``).
    workers:
        Threads for the multi-exponentiations (the compiled kernel releases the GIL).
    pool:
        An :class:`~secagg.paillier_pool.ObfuscationPool` of the round's key, filled in idle
        time, for the fresh ``r**n`` that re-randomise every product (without one they are
        computed on the spot: most of the preparation's cost).

    Raises :class:`ProtocolConfigError` for a round without filtering.
    """

    def __init__(
        self, config: RoundConfig, *, workers: int = 2, pool: ObfuscationPool | None = None
    ) -> None:
        if not isinstance(config, RoundConfig):
            raise TypeError(f"config must be a RoundConfig, got {type(config).__name__}")
        if config.filtering is None:
            raise ProtocolConfigError("preparation: the round has no secure filtering")
        self.config = config
        self.workers = int(workers)
        self.pool = pool
        self.role = "server (preparation)"
        self.prepared: ServerPrepared | None = None
        self.failure: ProtocolError | None = None

    @property
    def party_id(self) -> int:
        return SERVER_ID

    @property
    def phase(self) -> str:
        return "done" if self.done else "prepare"

    @property
    def done(self) -> bool:
        return self.prepared is not None or self.failure is not None

    def begin(self) -> list[Message]:
        """The key holder speaks first: ``[]``."""
        return []

    def deadline(self) -> list[Message]:
        """The key holder did not send its columns in time: the preparation fails."""
        if not self.done:
            self.failure = ProtocolError(
                "the key holder sent no columns in time",
                role=self.role,
                sender=KEYHOLDER_ID,
                stage="PREPARE",
            )
        return []

    def receive_bytes(self, data: bytes, *, peer: int | None = None) -> list[Message]:
        """Decode and process the key holder's columns; never raises for its fault."""
        try:
            return self.receive_strict(decode_from(data, peer, max_count=self.config.n + 1))
        except ProtocolError as exc:
            if self.failure is None and not self.done:
                self.failure = exc
            return []

    def receive_strict(self, msg: Message) -> list[Message]:
        """Process one message; raise :class:`ProtocolError` if it is illegal."""
        cfg = self.config
        if msg.sender != KEYHOLDER_ID:
            raise self._error("the preparation accepts the key holder's messages only", msg)
        if msg.round_id != cfg.round_id:
            raise self._error(
                f"message is for round {msg.round_id}, this is round {cfg.round_id}", msg
            )
        if isinstance(msg, Abort):
            raise self._error(f"the key holder aborted: {msg.reason}", msg)
        if not isinstance(msg, PrepareColumns) or self.done:
            raise self._error("not allowed here (expects one PrepareColumns)", msg)
        rows = row_slots(cfg)
        if msg.rows != rows:
            raise self._error(f"{msg.rows} row slots, the round has {rows}", msg)
        key, lay = cfg.filtering.key, cfg.layouts
        try:
            flat = key.ciphertexts_from_bytes(msg.columns, sender="key holder")
            if not flat or len(flat) % lay.k:
                raise ProtocolError(
                    f"{len(flat)} column ciphertexts is not a whole number of blocks of k={lay.k}",
                    role=self.role,
                    sender=msg.sender,
                    stage="PREPARE",
                    event="PrepareColumns",
                )
            columns = [flat[b : b + lay.k] for b in range(0, len(flat), lay.k)]
            products, prepared = prepare_server_products(
                key, columns, lay, rows, workers=self.workers, pool=self.pool
            )
        except SecAggError as exc:
            raise self._error(f"columns: {exc}", msg) from None
        self.prepared = prepared
        data = key.ciphertexts_to_bytes(c for block in products for c in block)
        return [PrepareProducts(cfg.round_id, SERVER_ID, KEYHOLDER_ID, data)]

    def _error(self, detail: str, msg: Message) -> ProtocolError:
        return ProtocolError(
            detail,
            role=self.role,
            sender=getattr(msg, "sender", None),
            stage="PREPARE",
            event=type(msg).__name__,
        )
