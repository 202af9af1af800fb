"""Local events: things that happen to a party that are not messages from another party.

Like h11's events they are small immutable classes; they appear in the stage tables next to the
wire messages, so a table shows every way a party can change stage.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StartRound", "StageDeadline"]


@dataclass(frozen=True)
class StartRound:
    """The application tells a client to join the round (it then advertises its keys)."""


@dataclass(frozen=True)
class StageDeadline:
    """The server's timer for the current stage expired: whoever has not answered dropped out.

    The server also closes a stage by itself as soon as every expected client has answered (or
    been excluded), so a driver only needs this event for clients that really went silent.
    """
