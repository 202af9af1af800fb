"""Stage tables built from data: one list of stages per party, one builder.

A party's round is a sequence of *stages*, each waiting for one kind of message (or event) and
each labelled with the *phase* of the round it belongs to -- the same phase names for every party
(``"advertise"``, ``"share_keys"``, ...), so a transcript can put the server's and the clients'
time for one phase side by side. Some stages exist only in hardened mode.

:func:`build_transitions` turns such a list into an h11-style table
``stage -> {event or message type -> next stage}`` for one mode. Inserting a stage (sketch
collection, filtering, verification) is one more entry in the party's list; the table, the
terminal stages and the ways out of every stage follow from it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Stage", "build_transitions", "phase_of", "PHASE_DONE"]

#: The phase label of a party whose round is over (done, aborted or failed).
PHASE_DONE = "done"


@dataclass(frozen=True)
class Stage:
    """One stage of a party: where it is, what moves it on, which phase it works for.

    ``stays_on`` are message types accepted without leaving the stage (a collecting server
    stage takes one message per client); ``advances_on`` is the event or message type that
    moves to the next stage of the list; ``exits`` maps further event or message types to a
    terminal stage (e.g. ``Abort -> ABORTED``). ``hardened_only`` stages are left out of the
    plain-mode table, ``filtering_only`` stages (sketches, distances, verification) out of the
    table of a round without secure filtering.
    """

    stage: enum.Enum
    advances_on: type
    phase: str
    stays_on: tuple[type, ...] = ()
    exits: Mapping[type, enum.Enum] | None = None
    hardened_only: bool = False
    filtering_only: bool = False

    def present(self, *, hardened: bool, filtering: bool) -> bool:
        """Whether this stage is part of a round in that mode."""
        return (hardened or not self.hardened_only) and (filtering or not self.filtering_only)


def build_transitions(
    stages: Sequence[Stage],
    *,
    hardened: bool,
    filtering: bool = False,
    done: enum.Enum,
    terminal: Mapping[enum.Enum, Mapping[type, enum.Enum]],
) -> dict[enum.Enum, dict[type, enum.Enum]]:
    """The transition table of one mode (hardened or not, with secure filtering or not): each stage advances to the next one present in this
    mode, the last one to ``done``; ``terminal`` gives the (few) events terminal stages take.

    Raises ``ValueError`` if a stage appears twice (a table edit gone wrong).
    """
    present = [s for s in stages if s.present(hardened=hardened, filtering=filtering)]
    names = [s.stage for s in present]
    if len(set(names)) != len(names):
        raise ValueError(f"stage listed twice: {names}")
    table: dict[enum.Enum, dict[type, enum.Enum]] = {}
    for here, after in zip(present, [*present[1:], None]):
        row: dict[type, enum.Enum] = {t: here.stage for t in here.stays_on}
        row[here.advances_on] = after.stage if after is not None else done
        row.update(here.exits or {})
        table[here.stage] = row
    for stage, row in terminal.items():
        table[stage] = dict(row)
    return table


def phase_of(stages: Sequence[Stage], stage: enum.Enum) -> str:
    """The phase label of ``stage`` (:data:`PHASE_DONE` for a stage not in the list)."""
    for s in stages:
        if s.stage is stage:
            return s.phase
    return PHASE_DONE
