"""The base class of every error fortis raises on purpose.

Each package derives its own family from :class:`FortisError` (``robust.RobustError``,
``secagg.SecAggError``, ``protocol.ProtocolError``, ``simulations`` config and data errors ...).
Where the fault is the caller's or a peer's input, the family also derives from ``ValueError``,
so generic handlers keep working. A caller that wants "anything fortis refused" catches
``FortisError``; the CLI turns any of them into a one-line message.
"""

from __future__ import annotations

__all__ = ["FortisError"]


class FortisError(Exception):
    """Base class of every typed error raised by fortis.

    Guarantees: the message names what was wrong and, where a party or field is involved,
    whose input it was.
    """
