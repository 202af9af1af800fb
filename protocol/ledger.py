"""A client's record of the last round id it took part in, per federation, kept on disk.

Hardened mode signs everything with the whole round context, but a server could still run two
rounds under one id and replay what clients signed in one into the other. A client therefore
joins a round only if its id is strictly greater than the last round it joined with the same
federation (:attr:`RoundConfig.federation`), and it records the new id *before* it sends
anything for the round. The record survives restarts: it is a small JSON file replaced
atomically (temporary file, fsync, rename, fsync of the folder), so a crash leaves either the
old or the new record, never a torn one.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from fortis.files import atomic_write

from .errors import ProtocolConfigError, ProtocolError

__all__ = ["RoundLedger", "RoundReplayError"]


class RoundReplayError(ProtocolError):
    """The round id is not above the last round this client joined with that federation."""


class RoundLedger:
    """Last round id per federation, in memory (``path=None``) or persisted at ``path``.

    Raises
    ------
    ValueError
        If the file at ``path`` exists but is not a ledger (it is never overwritten then).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                if not isinstance(data, dict) or not all(
                    isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                    for k, v in data.items()
                ):
                    raise ProtocolConfigError("not a mapping federation -> round id")
            except (ValueError, OSError) as exc:
                raise ProtocolConfigError(
                    f"round ledger {self.path} is unreadable: {exc}"
                ) from None
            self._last = dict(data)

    def __deepcopy__(self, memo: dict) -> RoundLedger:
        """A copy with its own lock (snapshots of a client in tests and simulations)."""
        twin = RoundLedger.__new__(RoundLedger)
        twin.path, twin._lock, twin._last = self.path, threading.Lock(), dict(self._last)
        return twin

    @classmethod
    def in_memory(cls) -> RoundLedger:
        """A ledger that lives as long as the object (one process, e.g. simulations)."""
        return cls(None)

    def last(self, federation: str) -> int | None:
        """The last round id joined with ``federation``, or ``None``."""
        return self._last.get(federation)

    def advance(self, federation: str, round_id: int, *, role: str = "client") -> None:
        """Record that this client joins ``round_id``; persist before returning.

        Raises
        ------
        RoundReplayError
            If ``round_id`` is not strictly above the last recorded id for ``federation``.
        OSError
            If the record cannot be written (the client must then not join the round).
        """
        with self._lock:
            last = self._last.get(federation)
            if last is not None and round_id <= last:
                raise RoundReplayError(
                    f"round {round_id} is not after round {last}, the last one this client "
                    f"joined with federation {federation!r} (a replayed or reused round id)",
                    role=role,
                    stage="NEW",
                    event="StartRound",
                )
            updated = {**self._last, federation: int(round_id)}
            if self.path is not None:
                self._write(updated)
            self._last = updated

    def _write(self, data: dict[str, int]) -> None:
        assert self.path is not None
        atomic_write(self.path, json.dumps(data, sort_keys=True).encode())
