"""Local events: things that happen to a party that are not messages from another party.

Like h11's events they are small immutable classes; they appear in the stage tables next to the
wire messages, so a table shows every way a party can change stage.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StartRound", "StageDeadline", "RoundFailed", "LeaveRound", "Refused"]


@dataclass(frozen=True)
class StartRound:
    """The application tells a client to join the round (it then advertises its keys)."""


@dataclass(frozen=True)
class StageDeadline:
    """The server's timer for the current stage expired: whoever has not answered dropped out.

    The server also closes a stage by itself as soon as every expected client has answered (or
    been excluded), so a driver only needs this event for clients that really went silent.
    """


@dataclass(frozen=True)
class RoundFailed:
    """The server cannot close its stage successfully (too few clients left, a secret that
    cannot be reconstructed, a sum out of range): the round ends in ``ABORTED``."""


@dataclass(frozen=True)
class LeaveRound:
    """The application tells a client to leave the round (:meth:`Client.abort`)."""


@dataclass(frozen=True)
class Refused:
    """A client rejected an illegal message (it raised :class:`ProtocolError`); it takes no
    further part in the round."""
