"""Errors of the network layer (transport, identities, credentials, persisted state).

:class:`TransportError` and :class:`FrameError` are a peer's fault on a connection (both name the
peer when it is known); :class:`IdentityError` is a certificate that does not name a party of the
federation; :class:`InsecureKeyFileError` a private key anyone but its owner can read;
:class:`StateError` a persisted state file that cannot be used.
"""

from __future__ import annotations

from fortis.errors import FortisError

from ..errors import party_name

__all__ = [
    "NetworkError",
    "TransportError",
    "FrameError",
    "IdentityError",
    "InsecureKeyFileError",
    "StateError",
]


class NetworkError(FortisError):
    """Base class of the network layer's errors."""


class TransportError(NetworkError, ValueError):
    """A peer broke the transport's rules (timeouts, closed connections, bad session messages).

    ``peer`` is the authenticated wire id (``None`` before authentication); ``reason`` a short
    machine-readable kind (``"oversized"``, ``"truncated"``, ``"slow"``, ...).
    """

    def __init__(self, detail: str, *, peer: int | None = None, reason: str = "transport") -> None:
        self.detail, self.peer, self.reason = detail, peer, reason
        super().__init__(f"{party_name(peer)}: {detail}")


class FrameError(TransportError):
    """Bytes on a connection that are not a well-formed frame (size, kind, truncation)."""


class IdentityError(NetworkError, ValueError):
    """A certificate that names no party of this federation, or names it wrongly."""


class InsecureKeyFileError(NetworkError, PermissionError):
    """A private-key file whose permissions let others than its owner read or write it."""


class StateError(NetworkError, ValueError):
    """A persisted state file that is corrupt, of another federation or of another version."""
