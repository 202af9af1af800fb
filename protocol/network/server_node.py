"""The server on the network: accepts the parties' mutual-TLS connections and runs rounds.

:class:`NetworkServer` listens, authenticates every connection by its certificate (the peer's
protocol id is the identity its CA-signed certificate names; a second connection with the same
identity replaces the first), and runs one round at a time with the sans-I/O
:class:`~protocol.server.Server` (and, in filtered rounds, the
:class:`~protocol.preparation.FilterPreparation` with the key holder):

1. filtered rounds: the key holder gets :class:`~protocol.network.session.RoundOpen`, answers
   with its :class:`~protocol.network.session.Endorse` signature and runs the preparation;
2. every client of the population gets ``RoundOpen`` (the configuration, the payload, the
   population's certificates, the key holder's endorsement) and the round runs: frames go to
   the server party's tolerant ``receive_bytes(data, peer=<authenticated id>)``, its answers
   to the recipients' connections;
3. each stage has a deadline (:class:`StageTimeouts`); when it passes the party's
   ``deadline()`` closes the stage with whoever answered, so a silent client counts as
   dropped. A client whose connection is lost is dropped at once;
4. everyone gets :class:`~protocol.network.session.RoundClose`.

A peer's bad bytes never raise here: malformed round messages are the server party's faults
(recorded against the sender, who is excluded), broken frames close that peer's connection,
and a message of an earlier round is dropped and logged (a late answer, not a fault).
Everything is logged through ``log`` with the peer's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from cryptography import x509

from secagg.paillier_pool import ObfuscationPool

from ..config import RoundConfig
from ..driver import RoundResult, round_result
from ..errors import KEYHOLDER_ID, SERVER_ID, MessageFormatError, ProtocolConfigError, party_name
from ..messages import Abort, encode, peek_header
from ..preparation import FilterPreparation
from ..router import RouterLog
from ..server import Server
from .credentials import PartyFiles, certificate_signing_key
from .errors import IdentityError, TransportError
from .session import (
    Endorse,
    RoundClose,
    RoundOpen,
    SessionFormatError,
    Shutdown,
    decode_session,
    encode_session,
)
from .transport import KIND_ROUND, KIND_SESSION, Connection, Limits, peer_identity, tls_context

__all__ = ["StageTimeouts", "TransportFault", "NetworkServer"]


@dataclass(frozen=True)
class StageTimeouts:
    """Seconds the server waits per stage: ``first`` from ``RoundOpen`` to the clients' first
    messages (they compute their update meanwhile), ``stage`` for every later stage,
    ``keyholder`` for the key holder's endorsement and preparation."""

    first: float = 120.0
    stage: float = 30.0
    keyholder: float = 120.0

    def __post_init__(self) -> None:
        for name in ("first", "stage", "keyholder"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 < v <= 86400:
                raise ProtocolConfigError(f"timeouts.{name} must be in (0, 86400] s, got {v!r}")

    def for_phase(self, phase: str) -> float:
        return self.first if phase == "advertise" else self.stage


@dataclass(frozen=True)
class TransportFault:
    """A peer's transport-level fault: who (``None`` before authentication), what kind
    (``reason``), the detail, and the round it happened in (``None``: between rounds)."""

    peer: int | None
    reason: str
    detail: str
    round_id: int | None = None

    def __str__(self) -> str:
        return f"{party_name(self.peer)}: {self.reason}: {self.detail}"


_DISCONNECTED = -1


@dataclass
class _RoundCosts:
    log: RouterLog = field(default_factory=RouterLog)

    def sent(self, peer: int, size: int) -> None:
        lg = self.log
        lg.bytes_sent[SERVER_ID] = lg.bytes_sent.get(SERVER_ID, 0) + size
        lg.bytes_received[peer] = lg.bytes_received.get(peer, 0) + size
        lg.messages_sent += 1

    def received(self, peer: int, size: int) -> None:
        lg = self.log
        lg.bytes_received[SERVER_ID] = lg.bytes_received.get(SERVER_ID, 0) + size
        lg.bytes_sent[peer] = lg.bytes_sent.get(peer, 0) + size
        lg.messages_delivered += 1


class NetworkServer:
    """The server party's network driver (see the module docstring).

    Use as ``async with NetworkServer(files, federation=...) as server:`` then
    :meth:`wait_for`, :meth:`run_round` (any number of times) and :meth:`shutdown`.

    ``files`` are the server's credentials (:func:`~protocol.network.credentials.party_files`);
    ``port=0`` picks a free port (read :attr:`port`). ``log`` receives one line per event.
    """

    def __init__(
        self,
        files: PartyFiles,
        *,
        federation: str,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | None = None,
        timeouts: StageTimeouts | None = None,
        log: Callable[[str], None] | None = None,
        unmask_workers: int | None = None,
        server_pool: ObfuscationPool | None = None,
        max_connections: int = 100_000,
    ) -> None:
        if files.party != SERVER_ID:
            raise ProtocolConfigError(
                f"NetworkServer needs the server's credentials, got {files.name}'s"
            )
        self.files = files
        self.federation = federation
        self.host, self.port = host, int(port)
        self.limits = limits or Limits()
        self.timeouts = timeouts or StageTimeouts()
        self._log = log or (lambda line: None)
        self.unmask_workers = unmask_workers
        self.server_pool = server_pool
        self.max_connections = int(max_connections)
        self.faults: list[TransportFault] = []
        self._conns: dict[int, Connection] = {}
        self._certs: dict[int, bytes] = {}
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.base_events.Server | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fortis-server")
        self._round: int | None = None
        self._changed = asyncio.Event()
        #: The party of the round in progress (a :class:`~protocol.server.Server`, or the
        #: preparation), for progress displays; ``None`` between rounds.
        self.current = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Bind and listen; returns the port."""
        ctx = tls_context(self.files, server_side=True)
        self._server = await asyncio.start_server(
            self._accept,
            self.host,
            self.port,
            ssl=ctx,
            ssl_handshake_timeout=self.limits.handshake_timeout,
            limit=1 << 16,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._log(f"server: listening on {self.host}:{self.port} (TLS 1.3, mutual)")
        return self.port

    async def __aenter__(self) -> NetworkServer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
        for conn in list(self._conns.values()):
            await conn.close()
        # each connection's task ends by itself once its stream is closed; cancelling it while
        # it still closes its connection would make asyncio log a spurious traceback
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- connections -------------------------------------------------------------------------

    @property
    def connected(self) -> frozenset[int]:
        """Client ids with a live connection."""
        return frozenset(
            p for p, c in self._conns.items() if p != KEYHOLDER_ID and not c.closed.is_set()
        )

    @property
    def keyholder_connected(self) -> bool:
        conn = self._conns.get(KEYHOLDER_ID)
        return conn is not None and not conn.closed.is_set()

    def certificate(self, party: int) -> bytes | None:
        """The DER certificate ``party`` connected with (``None``: never connected)."""
        return self._certs.get(party)

    def _fault(self, peer: int | None, reason: str, detail: str) -> None:
        fault = TransportFault(peer, reason, detail, self._round)
        self.faults.append(fault)
        self._log(f"server: fault: {fault}")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            peer, der = peer_identity(writer, self.federation)
            if peer == SERVER_ID:
                raise IdentityError("a peer presented the server's own identity")
        except (IdentityError, ValueError) as exc:
            self._fault(None, "identity", str(exc))
            writer.close()
            return
        if len(self._conns) >= self.max_connections and peer not in self._conns:
            self._fault(peer, "capacity", f"more than {self.max_connections} connections")
            writer.close()
            return
        conn = Connection(
            reader,
            writer,
            peer,
            self.limits,
            on_error=lambda e: self._fault(e.peer, e.reason, e.detail),
        )
        old = self._conns.get(peer)
        self._conns[peer] = conn
        self._certs[peer] = der
        if old is not None:
            self._log(f"server: {party_name(peer)} reconnected; the old connection is closed")
            await old.close()
        self._log(f"server: {party_name(peer)} connected")
        self._changed.set()
        try:
            while True:
                try:
                    frame = await conn.read()
                except TransportError as exc:
                    self._fault(peer, exc.reason, exc.detail)
                    break
                if frame is None:
                    break
                self._inbox.put_nowait((peer, conn, frame[0], frame[1]))
        finally:
            await conn.close()
            if self._conns.get(peer) is conn:
                del self._conns[peer]
                self._log(f"server: {party_name(peer)} disconnected")
                self._inbox.put_nowait((peer, conn, _DISCONNECTED, b""))
            self._changed.set()

    async def wait_for(
        self, clients: int, *, keyholder: bool = False, timeout: float = 60.0
    ) -> frozenset[int]:
        """Wait until at least ``clients`` clients (and the key holder, if asked) are connected,
        or ``timeout`` passes; returns the connected client ids either way."""
        deadline = time.monotonic() + timeout
        while len(self.connected) < clients or (keyholder and not self.keyholder_connected):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return self.connected

    def pki(self, population) -> dict[int, bytes]:
        """Client id -> Ed25519 signing key, from the certificates the clients connected with
        (hardened mode's PKI). Raises :class:`ProtocolConfigError` if one is missing."""
        out = {}
        for i in population:
            der = self._certs.get(i)
            key = None
            if der is not None:
                key = certificate_signing_key(x509.load_der_x509_certificate(der))
            if key is None:
                raise ProtocolConfigError(f"{party_name(i)} has no certificate with a signing key")
            out[i] = key
        return out

    # -- sending -----------------------------------------------------------------------------

    def _send_session(self, peer: int, msg, costs: _RoundCosts | None = None) -> None:
        conn = self._conns.get(peer)
        if conn is None:
            return
        data = encode_session(msg)
        conn.send(KIND_SESSION, data)
        if costs is not None:
            costs.sent(peer, len(data))

    def _route(self, encoded: list[tuple[int, bytes]], costs: _RoundCosts) -> None:
        for to, data in encoded:
            conn = self._conns.get(to)
            if conn is not None:
                conn.send(KIND_ROUND, data)
                costs.sent(to, len(data))

    async def _call(self, party, phase: str, costs: _RoundCosts, fn: Callable, *args, **kw):
        """Run ``fn`` (a party entry point) on the worker thread, encode its messages there,
        and charge the time to ``phase``."""

        def work():
            t0 = time.perf_counter()
            out = fn(*args, **kw)
            encoded = [(getattr(m, "recipient", SERVER_ID), encode(m)) for m in out]
            return encoded, time.perf_counter() - t0

        encoded, seconds = await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(work)
        )
        costs.log._add_time(SERVER_ID, phase, seconds)
        return encoded

    # -- one round ---------------------------------------------------------------------------

    async def _pump(
        self,
        party,
        costs: _RoundCosts,
        *,
        until: Callable[[], bool],
        timeout_for: Callable[[str], float],
        on_session: Callable[[int, object], None],
        members: frozenset[int],
    ) -> None:
        """Deliver frames to ``party`` and its answers to their recipients until ``until()``;
        fire ``party.deadline()`` whenever a phase outlives ``timeout_for(phase)``."""
        rid = party.config.round_id if hasattr(party, "config") else self._round
        loop = asyncio.get_running_loop()
        self.current = party
        phase, ends = None, 0.0
        while not until():
            if party.phase != phase:
                phase = party.phase
                ends = loop.time() + timeout_for(phase)
            left = ends - loop.time()
            if left <= 0:
                self._log(f"server: round {rid}: stage {phase} timed out")
                self._route(await self._call(party, phase, costs, party.deadline), costs)
                ends = loop.time() + timeout_for(party.phase)
                continue
            try:
                peer, conn, kind, payload = await asyncio.wait_for(self._inbox.get(), left)
            except asyncio.TimeoutError:
                continue
            if kind == _DISCONNECTED:
                if peer in members and not party.done and isinstance(party, Server):
                    abort = Abort(rid, peer, SERVER_ID, "connection lost")
                    self._route(await self._call(party, phase, costs, party.receive, abort), costs)
                continue
            costs.received(peer, len(payload))
            if kind == KIND_SESSION:
                try:
                    msg = decode_session(payload)
                except SessionFormatError as exc:
                    self._fault(peer, "session", str(exc))
                    continue
                on_session(peer, msg)
                continue
            if peer not in members:
                self._fault(
                    peer, "not a member", f"sent a round message to round {rid} it is not part of"
                )
                continue
            try:
                round_of = peek_header(payload).round_id
            except MessageFormatError:
                round_of = rid  # the party records the format fault against the sender
            if round_of < rid:
                self._log(
                    f"server: dropped a late message of round {round_of} from {party_name(peer)}"
                )
                continue
            self._route(
                await self._call(
                    party, party.phase, costs, party.receive_bytes, payload, peer=peer
                ),
                costs,
            )

    async def run_round(
        self,
        config: RoundConfig,
        *,
        step: int = 0,
        payload: np.ndarray | None = None,
        mean: bool = False,
        graph_seed: bytes | None = None,
    ) -> RoundResult:
        """Run one round of ``config`` over the network; returns its :class:`RoundResult`
        (aborted with the reason if the key holder or too many clients fail).

        ``payload`` (a float vector, e.g. the model) goes to every client in ``RoundOpen``.
        Raises :class:`ProtocolConfigError` if a member of the population has never connected
        and the round could not even be opened to it, or for hardened mode without signing keys.
        """
        if not isinstance(config, RoundConfig):
            raise TypeError(f"config must be a RoundConfig, got {type(config).__name__}")
        if config.federation != self.federation:
            raise ProtocolConfigError(
                f"config is for federation {config.federation!r}, this server is {self.federation!r}"
            )
        rid = config.round_id
        self._round = rid
        costs = _RoundCosts()
        members = frozenset(config.population)
        pki = self.pki(config.population) if config.hardened else None
        certs = {i: self._certs[i] for i in config.population if i in self._certs}
        endorsement: dict[str, bytes] = {}
        prepared = None
        if config.filtered:
            prepared, failure = await self._prepare(config, costs, endorsement)
            if prepared is None:
                return self._aborted(config, costs, failure, mean)
        server = Server(
            config,
            graph_seed=None if config.hardened else graph_seed,
            pki=pki,
            unmask_workers=self.unmask_workers,
            prepared=prepared,
            max_message_size=min(self.limits.max_frame_bytes, 1 << 31),
        )
        payload_vec = (
            np.zeros(0) if payload is None else np.asarray(payload, dtype=np.float64).ravel()
        )
        opening = RoundOpen(
            rid,
            int(step),
            config,
            certs,
            endorsement.get("signature", b""),
            self._certs.get(KEYHOLDER_ID, b"") if config.filtered else b"",
            payload_vec,
            self.timeouts.first,
        )
        opened = encode_session(opening)
        absent = []
        for i in config.population:
            conn = self._conns.get(i)
            if conn is not None and not conn.closed.is_set():
                conn.send(KIND_SESSION, opened)
                costs.sent(i, len(opened))
            else:
                absent.append(i)
        self._log(
            f"server: round {rid} (step {step}) opened to {config.n - len(absent)} of "
            f"{config.n} clients"
        )
        for i in absent:  # gone before the round opened: a dropout now, not at the deadline
            gone = Abort(rid, i, SERVER_ID, "not connected when the round opened")
            self._route(await self._call(server, server.phase, costs, server.receive, gone), costs)

        def session(peer: int, msg) -> None:
            self._fault(peer, "session", f"unexpected {type(msg).__name__} during round {rid}")

        await self._pump(
            server,
            costs,
            until=lambda: server.done,
            timeout_for=self.timeouts.for_phase,
            on_session=session,
            members=members | ({KEYHOLDER_ID} if config.filtered else frozenset()),
        )
        self.current = None
        result = round_result(server, costs.log, mean=mean)
        outcome = (
            f"aborted: {result.abort_reason}"
            if result.aborted
            else f"aggregated {len(result.survivors)} clients"
        )
        for fault in result.faults:  # the party's typed rejections, attributed, in the log
            self._log(f"server: round {rid}: fault: {party_name(fault.sender)}: {fault.reason}")
        for dispute in result.disputes:
            self._log(f"server: round {rid}: share dispute: {dispute.reason}")
        survivors = set(result.survivors)
        for i in config.population:
            self._send_session(i, RoundClose(rid, outcome, i in survivors))
        self._log(f"server: round {rid} {outcome}")
        return result

    async def _prepare(self, config: RoundConfig, costs: _RoundCosts, endorsement: dict):
        """Open the round to the key holder, collect its endorsement and run the preparation;
        returns ``(prepared, failure reason)``."""
        rid = config.round_id
        if not self.keyholder_connected:
            return None, "the key holder is not connected"
        prep = FilterPreparation(config, workers=self.unmask_workers or 2, pool=self.server_pool)
        self._send_session(
            KEYHOLDER_ID, RoundOpen(rid, 0, config, timeout=self.timeouts.keyholder), costs
        )

        def session(peer: int, msg) -> None:
            if peer == KEYHOLDER_ID and isinstance(msg, Endorse) and msg.round_id == rid:
                endorsement["signature"] = msg.signature
            else:
                self._fault(peer, "session", f"unexpected {type(msg).__name__} during round {rid}")

        await self._pump(
            prep,
            costs,
            until=lambda: prep.done and "signature" in endorsement,
            timeout_for=lambda phase: self.timeouts.keyholder,
            on_session=session,
            members=frozenset({KEYHOLDER_ID}),
        )
        if prep.prepared is None:
            return None, f"preparation failed: {prep.failure}"
        return prep.prepared, None

    def _aborted(self, config: RoundConfig, costs: _RoundCosts, reason: str | None, mean: bool):
        server = Server(config, pki=self.pki(config.population) if config.hardened else None)
        server.abort(reason or "aborted before the clients were asked")
        self._log(f"server: round {config.round_id} aborted: {server.abort_reason}")
        return round_result(server, costs.log, mean=mean)

    async def shutdown(self, reason: str = "federation finished") -> None:
        """Tell every connected party the federation is over, and flush."""
        rid = self._round or 0
        for peer in list(self._conns):
            self._send_session(peer, Shutdown(rid, reason))
        for conn in list(self._conns.values()):
            await conn.flush(5.0)
