"""The public parameters of one round, agreed by all parties before it starts.

A :class:`RoundConfig` is what the server announces when clients register (the network driver
carries it in its handshake; the in-memory driver hands the same object to everybody). Every
party validates messages against it, so a server cannot, for example, lower the threshold or
switch graphs in the middle of a round without the clients noticing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from secagg.encoding import FixedPointEncoder
from secagg.graphs import MaskingGraph, complete_graph, secaggplus_graph

from .errors import SERVER_ID

__all__ = ["RoundConfig", "GRAPH_KINDS"]

GRAPH_KINDS = ("complete", "secagg+")


@lru_cache(maxsize=16)
def _graph(
    population: tuple[int, ...],
    kind: str,
    seed: bytes,
    threshold: int | None,
    degree: int | None,
    dropout_rate: float,
    corrupt_rate: float,
) -> MaskingGraph:
    if kind == "complete":
        return complete_graph(population, threshold)
    return secaggplus_graph(
        population,
        seed,
        degree=degree,
        threshold=threshold,
        dropout_rate=dropout_rate,
        corrupt_rate=corrupt_rate,
    )


@dataclass(frozen=True)
class RoundConfig:
    """Public parameters of a round.

    Parameters
    ----------
    round_id:
        Bound into every message, key derivation and signature of the round (u64).
    population:
        The ids of the clients invited to the round (distinct ints in ``[0, 2**32 - 1)``).
    dim:
        Length of every client's update vector.
    clip:
        Largest absolute coordinate value; clients raise instead of clipping (the caller clips).
    bits, frac_bits:
        Fixed-point ring ``Z_{2^bits}`` and scale ``2**frac_bits`` (``None``: the largest that
        leaves headroom for the sum of ``len(population)`` inputs); see
        :class:`secagg.encoding.FixedPointEncoder`.
    graph:
        ``"complete"`` (Bonawitz et al. 2017) or ``"secagg+"`` (Bell et al. 2020 random Harary
        graph; ring order fixed by the server's graph seed).
    threshold, degree:
        Shamir threshold ``t`` and (SecAgg+ only) graph degree; ``None`` takes the rule of
        :mod:`secagg.graphs`. A client keeps one share of its own secrets, so a secret is
        recoverable when ``t`` of {the owner} and its neighbours answer.
    hardened:
        Signed key advertisements and the consistency check on the survivor set (Bonawitz et
        al. 2017, section 6). Needs a PKI (client id -> Ed25519 public key) on every party.
    dropout_rate, corrupt_rate:
        Inputs of the SecAgg+ degree/threshold rule (ignored for the complete graph).

    Raises
    ------
    ValueError
        For a bad field (named in the message), e.g. fewer than 2 clients or ``dim < 1``.
    secagg.errors.EncodingOverflowError
        If ``bits`` leaves no headroom for the sum of ``len(population)`` values of ``clip``.
    """

    round_id: int
    population: tuple[int, ...]
    dim: int
    clip: float
    bits: int = 32
    frac_bits: int | None = None
    graph: str = "complete"
    threshold: int | None = None
    degree: int | None = None
    hardened: bool = False
    dropout_rate: float = 0.1
    corrupt_rate: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.round_id, bool) or not isinstance(self.round_id, (int, np.integer)):
            raise ValueError(f"round_id must be an int, got {self.round_id!r}")
        if not 0 <= int(self.round_id) < 2**64:
            raise ValueError(f"round_id must be in [0, 2**64), got {self.round_id}")
        object.__setattr__(self, "round_id", int(self.round_id))
        try:
            pop = tuple(sorted(int(i) for i in self.population))
        except (TypeError, ValueError):
            raise ValueError(
                f"population must be a sequence of int ids, got {self.population!r}"
            ) from None
        if len(set(pop)) != len(pop):
            raise ValueError("population: client ids must be distinct")
        if len(pop) < 2:
            raise ValueError(f"population: secure aggregation needs >= 2 clients, got {len(pop)}")
        if pop[0] < 0 or pop[-1] >= SERVER_ID:
            raise ValueError(
                f"population: ids must be in [0, {SERVER_ID}), got {pop[0]}..{pop[-1]}"
            )
        object.__setattr__(self, "population", pop)
        if (
            isinstance(self.dim, bool)
            or not isinstance(self.dim, (int, np.integer))
            or self.dim < 1
        ):
            raise ValueError(f"dim must be an int >= 1, got {self.dim!r}")
        object.__setattr__(self, "dim", int(self.dim))
        if self.graph not in GRAPH_KINDS:
            raise ValueError(f"graph must be one of {GRAPH_KINDS}, got {self.graph!r}")
        if not isinstance(self.clip, (int, float, np.floating)) or not math.isfinite(self.clip):
            raise ValueError(f"clip must be a finite positive number, got {self.clip!r}")
        if self.clip <= 0:
            raise ValueError(f"clip must be positive, got {self.clip}")
        if not isinstance(self.hardened, bool):
            raise ValueError(f"hardened must be a bool, got {self.hardened!r}")
        _ = self.encoder  # headroom check now, not in the middle of a round

    @cached_property
    def encoder(self) -> FixedPointEncoder:
        """The fixed-point encoder every party uses (``n_max`` = population size)."""
        return FixedPointEncoder(self.clip, len(self.population), self.bits, self.frac_bits)

    @property
    def n(self) -> int:
        """Population size."""
        return len(self.population)

    def masking_graph(self, seed: bytes) -> MaskingGraph:
        """The round's masking graph for the server's ``seed`` (cached; deterministic).

        Raises ``secagg.errors.GraphError`` if the graph parameters are invalid for this
        population (e.g. no SecAgg+ degree meets the rule for a small ``n``).
        """
        return _graph(
            self.population,
            self.graph,
            bytes(seed),
            self.threshold,
            self.degree,
            float(self.dropout_rate),
            float(self.corrupt_rate),
        )

    def min_signatures(self, threshold: int) -> int:
        """Hardened mode: consistency signatures a client needs before it unmasks.

        ``max(t, floor((n + t - 1) / 2) + 1)``. Honest clients sign one survivor set each, while
        up to c = t - 1 colluding clients (the most the threat model allows) can sign any
        number of sets. Two different sets that both gather S signatures need at least
        2S - c distinct signers, so S > (n + c) / 2 makes a split view impossible: a lying
        server cannot obtain the self-mask share from one half and the mask-key share from
        the other half for the same client. (A bare majority, n // 2 + 1, is not enough: one
        colluder signing both sets suffices for odd n.)
        """
        t = int(threshold)
        return max(t, (self.n + t - 1) // 2 + 1)
