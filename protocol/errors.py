"""The protocol's error types.

There is one error type for everything that goes wrong *between* parties, :class:`ProtocolError`
(modelled on h11's ``LocalProtocolError``). Its message always names the role that detected the
problem, the sender of the offending message, the stage the role was in, and the message or event
type, so a log line says who did what, when:

    ProtocolError: server in stage COLLECT_SHARES rejected ShareKeys from client 7: ...

:class:`MessageFormatError` is the subclass for bytes that do not parse (bad magic, version,
length, dtype, shape, size): it also names the offending ``field``. Both derive from
:class:`fortis.FortisError` and ``ValueError`` (the fault is always a peer's or caller's input).
"""

from __future__ import annotations

from fortis.errors import FortisError

__all__ = [
    "ProtocolError",
    "ProtocolConfigError",
    "MessageFormatError",
    "party_name",
    "SERVER_ID",
    "KEYHOLDER_ID",
]

#: The sender id used by the server on the wire.
SERVER_ID = 0xFFFFFFFF
#: The key holder's wire id. Client ids are in ``[0, KEYHOLDER_ID)``.
KEYHOLDER_ID = 0xFFFFFFFE


def party_name(party: int | None) -> str:
    """Human-readable name of a wire id: ``"server"``, ``"key holder"``, ``"client 3"`` or
    ``"unknown sender"``."""
    if party is None:
        return "unknown sender"
    if party == SERVER_ID:
        return "server"
    if party == KEYHOLDER_ID:
        return "key holder"
    return f"client {party}"


class ProtocolError(FortisError, ValueError):
    """A message or event is illegal for the party that received it.

    Attributes
    ----------
    role:
        Who detected the problem (``"server"``, ``"client 3"``, ``"decoder"``).
    sender:
        Wire id of the party that sent the offending message (``SERVER_ID`` for the server), or
        ``None`` when it is unknown (e.g. the header itself did not parse).
    stage:
        Name of the stage the detecting role was in, or ``None``.
    event:
        Name of the message/event type, or ``None``.
    detail:
        What exactly was wrong.
    """

    def __init__(
        self,
        detail: str,
        *,
        role: str,
        sender: int | None = None,
        stage: str | None = None,
        event: str | None = None,
    ) -> None:
        self.detail = detail
        self.role = role
        self.sender = sender
        self.stage = stage
        self.event = event
        where = f" in stage {stage}" if stage else ""
        what = event or "message"
        super().__init__(f"{role}{where} rejected {what} from {party_name(sender)}: {detail}")


class MessageFormatError(ProtocolError):
    """Bytes that are not a well-formed fortis message; ``field`` names the offending field."""

    def __init__(
        self,
        detail: str,
        *,
        field: str,
        sender: int | None = None,
        event: str | None = None,
        role: str = "decoder",
        stage: str | None = None,
    ) -> None:
        self.field = field
        super().__init__(
            f"field {field!r}: {detail}", role=role, sender=sender, stage=stage, event=event
        )


class ProtocolConfigError(FortisError, ValueError):
    """A party, round configuration or driver call was set up with an invalid value (a round id,
    a population, a graph kind, a value range, a dropout schedule ...); the message names it.

    Unlike :class:`ProtocolError` this is raised before any message is exchanged, to the caller
    that supplied the value.
    """
