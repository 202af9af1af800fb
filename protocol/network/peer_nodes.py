"""Clients and the key holder on the network: they dial the server over mutual TLS, wait for
``RoundOpen`` and run their sans-I/O party for each round.

:class:`NetworkClient` checks every ``RoundOpen`` before it takes part (:class:`ClientPolicy`):

* it is in the population, the population is large enough, the threshold is not below the
  graph's rule, and the round id is new (the :class:`~protocol.ledger.RoundLedger`);
* every certificate the server forwards was issued by the federation's CA and names the id it
  is listed under; in hardened mode the signing keys (the PKI) come from those certificates,
  so the server cannot substitute one;
* in a filtered round, the key holder's certificate is the CA's and its endorsement signature
  covers this exact configuration, so the Paillier key the client encrypts its sketch under is
  the key holder's, not one the server made up.

A refused round is answered with an ``Abort`` naming the reason. The update itself comes from
the caller's ``compute_update(opening)`` (a training loop; it runs on a worker thread).

:class:`NetworkKeyHolder` loads its Paillier key from an owner-only file, refuses a round whose
filtering key is not its own, endorses the configuration with its certificate's key and runs
the :class:`~protocol.keyholder.KeyHolder`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from secagg.keys import SigningKeyPair
from secagg.paillier_pool import ObfuscationPool
from secagg.paillier_private import PaillierPrivateKey

from ..client import Client
from ..config import RoundConfig
from ..errors import KEYHOLDER_ID, SERVER_ID, ProtocolConfigError, ProtocolError, party_name
from ..keyholder import KeyHolder
from ..ledger import RoundLedger
from ..messages import Abort, encode, peek_header
from .credentials import (
    PartyFiles,
    certificate_identity,
    certificate_signing_key,
    check_private_file,
    load_certificate,
    load_private_key,
    verify_issued_by,
)
from .errors import FrameError, IdentityError, TransportError
from .session import (
    Endorse,
    RoundClose,
    RoundOpen,
    SessionFormatError,
    Shutdown,
    decode_session,
    encode_session,
    endorsement_bytes,
    peek_round_open,
)
from .transport import KIND_ROUND, KIND_SESSION, Connection, Limits, peer_identity, tls_context

__all__ = [
    "ClientPolicy",
    "PolicyError",
    "ClientRoundReport",
    "NetworkClient",
    "NetworkKeyHolder",
    "load_paillier_key",
    "save_paillier_key",
]


class PolicyError(ProtocolError):
    """A round the client refuses to join (names the rule the server's ``RoundOpen`` broke)."""


@dataclass(frozen=True)
class ClientPolicy:
    """What a client accepts from a server's ``RoundOpen``.

    ``dim``: the update length it expects (``None``: any); ``min_clients``: the smallest
    population; ``require_hardened`` / ``require_filtering``: refuse rounds without them;
    ``min_paillier_bits``: the smallest key holder key.
    """

    dim: int | None = None
    min_clients: int = 2
    require_hardened: bool = False
    require_filtering: bool = False
    min_paillier_bits: int = 2048

    def check(self, config: RoundConfig, me: int) -> None:
        """Raise :class:`PolicyError` if ``config`` breaks a rule (named)."""

        def refuse(detail: str) -> None:
            raise PolicyError(detail, role=party_name(me), sender=SERVER_ID, event="RoundOpen")

        if me not in config.population:
            refuse(f"{party_name(me)} is not in the round's population")
        if config.n < self.min_clients:
            refuse(f"population of {config.n} is below the policy's minimum {self.min_clients}")
        if self.dim is not None and config.dim != self.dim:
            refuse(f"round dim {config.dim} != this client's update length {self.dim}")
        if self.require_hardened and not config.hardened:
            refuse("the policy requires hardened rounds (signed keys, consistency check)")
        if self.require_filtering and not config.filtered:
            refuse("the policy requires secure filtering")
        if config.graph == "complete":
            rule = config.n // 2 + 1
            if config.round_threshold < rule:
                refuse(
                    f"threshold {config.round_threshold} is below the complete graph's rule {rule}"
                )
        elif config.threshold is not None or config.degree is not None:
            refuse("SecAgg+ threshold and degree must come from the graph rule, not the server")
        if config.filtered and config.filtering.key.n.bit_length() < self.min_paillier_bits:
            refuse(
                f"key holder key of {config.filtering.key.n.bit_length()} bits < "
                f"{self.min_paillier_bits}"
            )


@dataclass
class ClientRoundReport:
    """What one client saw of one round."""

    round_id: int
    step: int
    joined: bool
    outcome: str = ""
    included: bool = False
    refused: str | None = None
    seconds: float = 0.0


def _verify_population(
    opening: RoundOpen, ca: x509.Certificate, me: int, my_cert: bytes
) -> dict[int, bytes] | None:
    """Check the forwarded certificates; returns the PKI (hardened) or ``None``."""
    cfg = opening.config
    missing = [i for i in cfg.population if i not in opening.certificates]
    if missing:
        raise IdentityError(f"no certificate for {party_name(missing[0])} ({len(missing)} missing)")
    pki: dict[int, bytes] = {}
    for i in cfg.population:
        der = opening.certificates[i]
        if i == me and der != my_cert:
            raise IdentityError("the certificate listed for this client is not its own")
        cert = x509.load_der_x509_certificate(der)
        verify_issued_by(cert, ca)
        named = certificate_identity(cert, cfg.federation)
        if named != i:
            raise IdentityError(
                f"the certificate listed for {party_name(i)} names {party_name(named)}"
            )
        key = certificate_signing_key(cert)
        if cfg.hardened:
            if key is None:
                raise IdentityError(f"{party_name(i)}'s certificate carries no signing key")
            pki[i] = key
    return pki if cfg.hardened else None


def _verify_endorsement(opening: RoundOpen, ca: x509.Certificate) -> None:
    if not opening.keyholder_cert or not opening.endorsement:
        raise IdentityError("a filtered round without the key holder's endorsement")
    cert = x509.load_der_x509_certificate(opening.keyholder_cert)
    verify_issued_by(cert, ca)
    if certificate_identity(cert, opening.config.federation) != KEYHOLDER_ID:
        raise IdentityError("the endorsing certificate is not the key holder's")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise IdentityError("the key holder's certificate key is not ECDSA")
    try:
        public.verify(
            opening.endorsement, endorsement_bytes(opening.config), ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        raise IdentityError(
            "the key holder's endorsement does not cover this configuration (a server that "
            "changed it, or its Paillier key)"
        ) from None


class _Dialer:
    """Shared by the client and the key holder: connect (with retries), read frames, send."""

    def __init__(self, files: PartyFiles, federation: str, address: tuple[str, int], limits, log):
        self.files, self.federation, self.address = files, federation, address
        self.limits = limits or Limits()
        self._log = log or (lambda line: None)
        self.conn: Connection | None = None
        self.name = party_name(files.party)

    async def connect(self, timeout: float) -> None:
        ctx = tls_context(self.files, server_side=False)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        *self.address, ssl=ctx, ssl_handshake_timeout=self.limits.handshake_timeout
                    ),
                    self.limits.handshake_timeout + 5,
                )
                break
            except (OSError, asyncio.TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise TransportError(
                        f"could not connect to the server at {self.address[0]}:{self.address[1]} "
                        f"within {timeout:.0f} s ({exc})",
                        peer=SERVER_ID,
                        reason="connect",
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        peer, _ = peer_identity(writer, self.federation)
        if peer != SERVER_ID:
            writer.close()
            raise IdentityError(f"the peer at {self.address} is {party_name(peer)}, not the server")
        self.conn = Connection(reader, writer, SERVER_ID, self.limits)
        self._log(f"{self.name}: connected to the server")

    async def call(self, fn, *args, **kw):
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(fn, *args, **kw)
        )

    async def deliver(self, party, payload: bytes) -> None:
        """Hand a round frame to ``party`` (the current round's; ``None``: no round) and send
        its answers. A message of another round (a late one) is ignored; bytes that do not
        parse are the party's to refuse."""
        if party is None:
            return
        try:
            round_of = peek_header(payload).round_id
        except ProtocolError:
            round_of = party.config.round_id
        if round_of != party.config.round_id:
            return
        self.send_round(await self.call(party.receive_bytes, payload, peer=SERVER_ID))

    def send_round(self, messages) -> None:
        for m in messages:
            self.conn.send(KIND_ROUND, encode(m))

    async def frames(self):
        """Yield ``(kind, payload)`` until the server closes the connection."""
        while True:
            try:
                frame = await self.conn.read()
            except FrameError as exc:
                self._log(f"{self.name}: bad frame from the server ({exc.detail}); closing")
                return
            if frame is None:
                return
            yield frame

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class NetworkClient:
    """A client process's network driver (see the module docstring).

    ``compute_update(opening) -> vector`` produces this client's update for a round (it gets
    the :class:`RoundOpen`, whose ``payload`` is the model); ``rng_for(step)`` optionally gives
    the generator for the stochastic rounding (reproducible runs). ``ledger`` keeps the last
    round id per federation (a file path makes it survive restarts).
    """

    def __init__(
        self,
        files: PartyFiles,
        *,
        federation: str,
        address: tuple[str, int],
        compute_update: Callable[[RoundOpen], np.ndarray],
        policy: ClientPolicy | None = None,
        limits: Limits | None = None,
        ledger: RoundLedger | str | os.PathLike | None = None,
        rng_for: Callable[[int], np.random.Generator] | None = None,
        log: Callable[[str], None] | None = None,
        mask_workers: int = 1,
    ) -> None:
        if files.party in (SERVER_ID, KEYHOLDER_ID):
            raise ProtocolConfigError(
                f"NetworkClient needs a client's credentials, got {files.name}'s"
            )
        self.id = files.party
        self.files = files
        self.compute_update = compute_update
        self.policy = policy or ClientPolicy()
        if isinstance(ledger, RoundLedger):
            self.ledger = ledger
        else:
            self.ledger = RoundLedger(ledger) if ledger is not None else RoundLedger.in_memory()
        self.rng_for = rng_for
        self.mask_workers = mask_workers
        self._dial = _Dialer(files, federation, address, limits, log)
        self._log = self._dial._log
        self.ca = load_certificate(files.ca)
        self.my_cert = load_certificate(files.cert).public_bytes(serialization.Encoding.DER)
        self.signing_key = None
        if files.signing_key is not None:
            priv = load_private_key(files.signing_key)
            if not isinstance(priv, ed25519.Ed25519PrivateKey):
                raise ProtocolConfigError(f"{files.signing_key}: not an Ed25519 signing key")
            self.signing_key = SigningKeyPair(priv)
        self.reports: list[ClientRoundReport] = []
        self.shutdown_reason: str | None = None

    async def run(
        self, *, rounds: int | None = None, connect_timeout: float = 30.0
    ) -> list[ClientRoundReport]:
        """Connect and take part in rounds until the server shuts the federation down, closes
        the connection, or ``rounds`` rounds have closed; returns the per-round reports."""
        await self._dial.connect(connect_timeout)
        party: Client | None = None
        report: ClientRoundReport | None = None
        try:
            async for kind, payload in self._dial.frames():
                if kind == KIND_SESSION:
                    try:
                        msg = decode_session(
                            payload, allow_insecure_key=self.policy.min_paillier_bits < 2048
                        )
                    except SessionFormatError as exc:
                        self._log(f"{self._dial.name}: bad session message from the server: {exc}")
                        rid = peek_round_open(payload)
                        if rid is not None:  # an opening we cannot accept: say so at once
                            reason = f"unusable RoundOpen: {exc}"[:1000]
                            self._dial.send_round([Abort(rid, self.id, SERVER_ID, reason)])
                            party, report = None, None
                        continue
                    if isinstance(msg, RoundOpen):
                        party, report = await self._open(msg)
                    elif (
                        isinstance(msg, RoundClose)
                        and report is not None
                        and msg.round_id == report.round_id
                    ):
                        report.outcome, report.included = msg.outcome, msg.included
                        report.seconds = time.monotonic() - report.seconds
                        self.reports.append(report)
                        self._log(
                            f"{self._dial.name}: round {msg.round_id}: {msg.outcome}"
                            f"{' (included)' if msg.included else ''}"
                        )
                        party, report = None, None
                        if rounds is not None and len(self.reports) >= rounds:
                            break
                    elif isinstance(msg, Shutdown):
                        self.shutdown_reason = msg.reason
                        self._log(f"{self._dial.name}: server shut down: {msg.reason}")
                        break
                    continue
                await self._dial.deliver(party, payload)
        finally:
            await self._dial.close()
        return self.reports

    async def serve(self, *, connect_timeout: float = 60.0) -> list[ClientRoundReport]:
        """:meth:`run`, reconnecting whenever the connection is lost (a server restarted
        with ``--resume``), until the server shuts the federation down or cannot be reached
        for ``connect_timeout`` seconds (then raises :class:`TransportError`)."""
        while self.shutdown_reason is None:
            await self.run(connect_timeout=connect_timeout)
            if self.shutdown_reason is None:
                self._log(f"{self._dial.name}: connection lost; reconnecting")
        return self.reports

    async def _open(self, opening: RoundOpen):
        cfg = opening.config
        report = ClientRoundReport(
            cfg.round_id, opening.step, joined=False, seconds=time.monotonic()
        )
        try:
            self.policy.check(cfg, self.id)
            pki = _verify_population(opening, self.ca, self.id, self.my_cert)
            if cfg.filtered:
                _verify_endorsement(opening, self.ca)
            update = await self._dial.call(self.compute_update, opening)
            rng = self.rng_for(opening.step) if self.rng_for is not None else None
            party = Client(
                cfg,
                self.id,
                update,
                rng=rng,
                signing_key=self.signing_key if cfg.hardened else None,
                pki=pki,
                round_ledger=self.ledger,
                mask_workers=self.mask_workers,
            )
            out = await self._dial.call(party.begin)
        except Exception as exc:  # noqa: BLE001 - any refusal becomes the Abort's reason
            reason = f"{type(exc).__name__}: {exc}"
            report.refused = reason
            self._log(f"{self._dial.name}: refused round {cfg.round_id}: {reason}")
            self._dial.send_round([Abort(cfg.round_id, self.id, SERVER_ID, reason[:1000])])
            return None, report
        report.joined = True
        self._dial.send_round(out)
        return party, report


def save_paillier_key(path: str | os.PathLike, key: PaillierPrivateKey) -> None:
    """Write the key holder's Paillier private key, owner-only (0600), atomically."""
    from fortis.files import atomic_write

    atomic_write(path, key.to_bytes(), private=True)


def load_paillier_key(
    path: str | os.PathLike, *, allow_insecure: bool = False
) -> PaillierPrivateKey:
    """Load the key holder's Paillier private key after checking the file is owner-only.

    Raises :class:`~protocol.network.errors.InsecureKeyFileError` if it is not.
    """
    check_private_file(path)
    with open(path, "rb") as fh:
        return PaillierPrivateKey.from_bytes(fh.read(), allow_insecure=allow_insecure)


class NetworkKeyHolder:
    """The key holder process's network driver (see the module docstring)."""

    def __init__(
        self,
        files: PartyFiles,
        *,
        federation: str,
        address: tuple[str, int],
        paillier_key: PaillierPrivateKey,
        limits: Limits | None = None,
        pool: ObfuscationPool | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if files.party != KEYHOLDER_ID:
            raise ProtocolConfigError(
                f"NetworkKeyHolder needs the key holder's credentials, got {files.name}'s"
            )
        self.key = paillier_key
        self.pool = pool
        self.tls_key = load_private_key(files.key)
        self._dial = _Dialer(files, federation, address, limits, log)
        self._log = self._dial._log
        self.rounds: list[int] = []
        self.refused: dict[int, str] = {}
        self.shutdown_reason: str | None = None

    async def run(self, *, rounds: int | None = None, connect_timeout: float = 30.0) -> list[int]:
        """Serve rounds until shut down or disconnected; returns the round ids it served."""
        await self._dial.connect(connect_timeout)
        party: KeyHolder | None = None
        try:
            async for kind, payload in self._dial.frames():
                if kind == KIND_SESSION:
                    try:
                        msg = decode_session(
                            payload, allow_insecure_key=self.key.public_key.n.bit_length() < 2048
                        )
                    except SessionFormatError as exc:
                        self._log(f"key holder: bad session message from the server: {exc}")
                        continue
                    if isinstance(msg, RoundOpen):
                        party = await self._open(msg)
                    elif isinstance(msg, Shutdown):
                        self.shutdown_reason = msg.reason
                        break
                    continue
                await self._dial.deliver(party, payload)
                if party is not None and party.done and party.config.round_id not in self.rounds:
                    self.rounds.append(party.config.round_id)
                    if rounds is not None and len(self.rounds) >= rounds:
                        break
        finally:
            with contextlib.suppress(Exception):
                await self._dial.conn.flush(5.0)
            await self._dial.close()
        return self.rounds

    async def serve(self, *, connect_timeout: float = 60.0) -> list[int]:
        """:meth:`run`, reconnecting whenever the connection is lost, until shut down or the
        server cannot be reached for ``connect_timeout`` seconds (raises
        :class:`TransportError`)."""
        while self.shutdown_reason is None:
            await self.run(connect_timeout=connect_timeout)
        return self.rounds

    async def _open(self, opening: RoundOpen) -> KeyHolder | None:
        cfg = opening.config
        rid = cfg.round_id
        try:
            if not cfg.filtered:
                raise ProtocolConfigError("the round has no secure filtering")
            if cfg.filtering.key.n != self.key.public_key.n:
                raise ProtocolConfigError("the round's filtering key is not this key holder's key")
            party = KeyHolder(cfg, self.key, pool=self.pool)
            signature = self.tls_key.sign(endorsement_bytes(cfg), ec.ECDSA(hashes.SHA256()))
            out = await self._dial.call(party.begin)
        except Exception as exc:  # noqa: BLE001
            reason = f"{type(exc).__name__}: {exc}"
            self.refused[rid] = reason
            self._log(f"key holder: refused round {rid}: {reason}")
            self._dial.send_round([Abort(rid, KEYHOLDER_ID, SERVER_ID, reason[:1000])])
            return None
        self._dial.conn.send(KIND_SESSION, encode_session(Endorse(rid, signature)))
        self._dial.send_round(out)
        self._log(f"key holder: round {rid} endorsed; preparation sent")
        return party
