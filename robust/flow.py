"""The state that flows through the stages of one aggregation (internal).

Every stage of :func:`robust.aggregate_detailed` reads and changes one :class:`Flow`: the
rows it works on, their distances when known, the f the later stages must tolerate, and
for each original client the row its update ended up in (its own row, its clipped or mixed
row, or its bucket). Stages change it only through the methods here, which keep that map,
the verdicts and the reports consistent:

* :meth:`Flow.reject` drops rows (their clients get a ``"rejected:<reason>"`` verdict and
  each dropped row lowers f: honest clients do not get dropped);
* :meth:`Flow.replace` swaps in new rows (clipped, mixed or bucketed), mapping old rows to
  new ones;
* :meth:`Flow.record` appends the stage's report. Every report has ``"stage"`` (the name),
  the stage's measurements, ``"rejected_count"`` and ``"rejected"`` (the clients this stage
  rejected, in client order); stages that change updates also name whom (e.g. ``clipped``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._rows import RowSet
from .result import ACCEPTED

__all__ = ["Flow"]


class Flow:
    """Rows of the current stage and where each of the ``n`` original clients went.

    Attributes:
        n: number of clients; ``d``: coordinates (None in distance-only mode).
        rows: the current rows (None in distance-only mode).
        D: squared distances of the current rows, when known (None otherwise).
        f: the f the remaining stages tolerate among the current rows.
        owner: ``owner[i]`` is client i's current row, or -1 once it was dropped.
        verdicts: per-client verdict strings; ``reports``: the stage reports so far.
        done: names of the stages run so far (for error messages).
    """

    def __init__(self, n: int, d: int | None, rows: RowSet | None, keep: np.ndarray) -> None:
        self.n = n
        self.d = d
        self.rows = rows
        self.D: np.ndarray | None = None
        self.f = 0
        self.owner = np.full(n, -1, dtype=np.intp)
        self.owner[keep] = np.arange(len(keep))
        self.count = len(keep)
        self.verdicts = np.array([ACCEPTED] * n, dtype=object)
        self.reports: list[dict[str, Any]] = []
        self.done: list[str] = []

    @property
    def live(self) -> np.ndarray:
        """Boolean mask of the clients whose update is still in a row."""
        return self.owner >= 0

    def clients_in(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Sorted indices of the clients whose update is in one of ``rows``."""
        chosen = np.zeros(self.count + 1, dtype=bool)  # the last slot stands for "dropped"
        chosen[np.asarray(rows, dtype=np.intp)] = True
        return np.flatnonzero(chosen[self.owner])

    def reject(self, rows: np.ndarray, verdict: str) -> np.ndarray:
        """Drop ``rows`` (indices into the current rows); their clients get ``verdict`` and f
        drops by one per row. Returns the rejected clients."""
        rows = np.asarray(rows, dtype=np.intp)
        clients = self.clients_in(rows)
        self.verdicts[clients] = verdict
        kept = np.ones(self.count, dtype=bool)
        kept[rows] = False
        good = np.flatnonzero(kept)
        remap = np.full(self.count, -1, dtype=np.intp)
        remap[good] = np.arange(len(good))
        self.owner = np.where(self.live, remap[np.maximum(self.owner, 0)], -1)
        if self.D is not None:
            self.D = self.D[np.ix_(good, good)]
        if self.rows is not None:
            self.rows = self.rows.subset(good)
        self.count = len(good)
        self.f = max(self.f - len(rows), 0)
        return clients

    def replace(self, Y: np.ndarray, new_row_of: np.ndarray | None = None) -> None:
        """The rows become ``Y``; ``new_row_of[r]`` is the new row of current row ``r``
        (row r stays row r when None). Known distances are dropped."""
        if new_row_of is not None:
            self.owner = np.where(self.live, new_row_of[np.maximum(self.owner, 0)], -1)
        self.rows = RowSet(Y)
        self.count = Y.shape[0]
        self.D = None

    def record(self, stage: str, rejected: Sequence[int] = (), **measurements: Any) -> None:
        """Append ``{"stage": stage, **measurements, "rejected_count", "rejected"}``."""
        rejected = [int(i) for i in rejected]
        self.reports.append(
            {"stage": stage, **measurements, "rejected_count": len(rejected), "rejected": rejected}
        )

    def where(self) -> str:
        """`` (after clip -> nnm: 5 rows)`` for error messages ('' before any stage)."""
        if not self.done:
            return ""
        return f" (after {' -> '.join(self.done)}: {self.count} rows)"

    def row_weights(self, client_weights: np.ndarray | None) -> np.ndarray | None:
        """Per-row trusted weights: the sum of the weights of the clients in each row."""
        if client_weights is None:
            return None
        w = np.zeros(self.count)
        live = self.live
        np.add.at(w, self.owner[live], client_weights[live])
        return w
