"""Mutual TLS 1.3 connections that carry length-prefixed frames between authenticated parties.

* :func:`tls_context` -- an ``ssl.SSLContext`` that speaks TLS 1.3 only, requires the peer's
  certificate and trusts only the federation's CA.
* :func:`peer_identity` -- the protocol id the peer's (CA-verified) certificate names.
* Frames: ``u32 length | u8 kind | payload`` with ``length = 1 + len(payload)``. The length is
  checked against :attr:`Limits.max_frame_bytes` *before* anything is allocated, and a frame
  whose header has arrived must arrive whole within :meth:`Limits.frame_deadline` (a slow-loris
  peer that trickles bytes is cut off).
* :class:`Connection` -- one authenticated stream: it reads frames, and writes through a queue
  drained by its own task, so a peer that stops reading stalls only its own connection and is
  dropped after :attr:`Limits.send_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from ..errors import party_name
from .credentials import PartyFiles, certificate_identity, check_private_file
from .errors import FrameError, IdentityError, TransportError

__all__ = [
    "KIND_ROUND",
    "KIND_SESSION",
    "FRAME_HEADER",
    "Limits",
    "tls_context",
    "peer_identity",
    "peer_certificate",
    "encode_frame",
    "read_frame",
    "Connection",
]

#: Frame kinds: a round message of :mod:`protocol.messages`, or a session message of
#: :mod:`protocol.network.session`.
KIND_ROUND = 1
KIND_SESSION = 2
_KINDS = (KIND_ROUND, KIND_SESSION)
FRAME_HEADER = struct.Struct(">IB")


@dataclass(frozen=True)
class Limits:
    """Transport limits (all checked per connection).

    ``max_frame_bytes`` caps one frame (checked on its 5-byte header); ``handshake_timeout``
    the TLS handshake; a frame must arrive within ``frame_timeout + size / min_rate`` seconds
    once its header has; ``send_timeout`` is how long a peer may leave sent data unread.
    """

    max_frame_bytes: int = 64 << 20
    handshake_timeout: float = 10.0
    frame_timeout: float = 10.0
    min_rate: float = 256 * 1024.0
    send_timeout: float = 60.0

    def frame_deadline(self, size: int) -> float:
        """Seconds allowed for a frame body of ``size`` bytes to arrive."""
        return self.frame_timeout + size / self.min_rate


def tls_context(files: PartyFiles, *, server_side: bool) -> ssl.SSLContext:
    """A TLS 1.3-only context that presents ``files``' certificate, requires the peer's and
    trusts only the federation CA in ``files.ca``. Hostnames are not checked: the peer's
    identity is its certificate's fortis URI (:func:`peer_identity`), checked after the
    handshake.

    Raises :class:`~protocol.network.errors.InsecureKeyFileError` if the key file is readable
    by others, ``ssl.SSLError`` if the files do not match.
    """
    check_private_file(files.key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if not server_side:
        ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(files.ca))
    ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx


def peer_certificate(writer: asyncio.StreamWriter) -> bytes:
    """The DER certificate the TLS peer presented (verified by the handshake against the CA).

    Raises :class:`IdentityError` if there is none.
    """
    sslobj = writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        raise IdentityError("the peer presented no certificate")
    return der


def peer_identity(writer: asyncio.StreamWriter, federation: str) -> tuple[int, bytes]:
    """``(party id, DER certificate)`` of the TLS peer behind ``writer``.

    Raises :class:`IdentityError` if the certificate names no party of ``federation``.
    """
    der = peer_certificate(writer)
    return certificate_identity(x509.load_der_x509_certificate(der), federation), der


def encode_frame(kind: int, payload: bytes) -> bytes:
    """One frame's bytes."""
    return FRAME_HEADER.pack(len(payload) + 1, kind) + payload


async def read_frame(
    reader: asyncio.StreamReader, limits: Limits, *, peer: int | None = None
) -> tuple[int, bytes] | None:
    """The next frame ``(kind, payload)``, or ``None`` on a clean end of stream between frames.

    Waits for a frame to start as long as it takes; once its header is in, the size is checked
    (before allocating) and the body must arrive within :meth:`Limits.frame_deadline`.

    Raises :class:`FrameError` (``reason``: ``"oversized"``, ``"kind"``, ``"truncated"``,
    ``"slow"``) naming ``peer``.
    """
    try:
        head = await reader.readexactly(FRAME_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError(
            f"connection closed inside a frame header ({len(exc.partial)} of 5 bytes)",
            peer=peer,
            reason="truncated",
        ) from None
    length, kind = FRAME_HEADER.unpack(head)
    if length < 1 or length - 1 > limits.max_frame_bytes:
        raise FrameError(
            f"frame of {length - 1} bytes exceeds max_frame_bytes={limits.max_frame_bytes}"
            if length >= 1
            else "frame length 0",
            peer=peer,
            reason="oversized",
        )
    if kind not in _KINDS:
        raise FrameError(f"unknown frame kind {kind}", peer=peer, reason="kind")
    size = length - 1
    try:
        body = await asyncio.wait_for(reader.readexactly(size), limits.frame_deadline(size))
    except asyncio.IncompleteReadError as exc:
        raise FrameError(
            f"connection closed inside a frame ({len(exc.partial)} of {size} bytes)",
            peer=peer,
            reason="truncated",
        ) from None
    except asyncio.TimeoutError:
        raise FrameError(
            f"a {size}-byte frame did not arrive within {limits.frame_deadline(size):.1f} s",
            peer=peer,
            reason="slow",
        ) from None
    except (ConnectionError, OSError, ssl.SSLError) as exc:
        raise FrameError(
            f"connection lost inside a {size}-byte frame ({type(exc).__name__})",
            peer=peer,
            reason="truncated",
        ) from None
    return kind, body


class Connection:
    """An authenticated stream to ``peer``: :meth:`send` queues a frame (never blocks), a writer
    task drains the queue, :meth:`close` ends both directions. Counts bytes both ways."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: int,
        limits: Limits,
        *,
        on_error: Callable[[TransportError], None] | None = None,
    ) -> None:
        self.reader, self.writer, self.peer, self.limits = reader, writer, peer, limits
        self.bytes_sent = 0
        self.bytes_received = 0
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._on_error = on_error
        self.closed = asyncio.Event()
        self._writer_task = asyncio.create_task(self._drain_loop())

    @property
    def name(self) -> str:
        return party_name(self.peer)

    def send(self, kind: int, payload: bytes) -> None:
        """Queue one frame (dropped silently once the connection is closed)."""
        if not self.closed.is_set():
            self._queue.put_nowait(encode_frame(kind, payload))

    async def _drain_loop(self) -> None:
        try:
            while True:
                data = await self._queue.get()
                try:
                    if data is None:
                        break
                    self.writer.write(data)
                    self.bytes_sent += len(data)
                    await asyncio.wait_for(self.writer.drain(), self.limits.send_timeout)
                finally:
                    self._queue.task_done()
        except asyncio.TimeoutError:
            self._error(
                TransportError(
                    f"did not read its data for {self.limits.send_timeout:.0f} s",
                    peer=self.peer,
                    reason="slow",
                )
            )
        except (ConnectionError, OSError):
            pass
        finally:
            await self._shutdown()

    def _error(self, exc: TransportError) -> None:
        if self._on_error is not None:
            self._on_error(exc)

    async def read(self) -> tuple[int, bytes] | None:
        """The next frame, ``None`` once the peer closed cleanly; raises :class:`FrameError`."""
        try:
            frame = await read_frame(self.reader, self.limits, peer=self.peer)
        except (ConnectionError, OSError, ssl.SSLError):
            return None
        if frame is not None:
            self.bytes_received += FRAME_HEADER.size + len(frame[1])
        return frame

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued frame has been written and drained (or ``timeout``)."""
        if not self.closed.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)

    async def _shutdown(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        with contextlib.suppress(Exception):
            self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)

    async def close(self) -> None:
        """Send what is queued, then close (idempotent)."""
        if not self.closed.is_set():
            self._queue.put_nowait(None)
            await asyncio.wait({self._writer_task}, timeout=5.0)  # never raises its outcome
        await self._shutdown()
        if not self._writer_task.done():
            self._writer_task.cancel()
