"""The public parameters of one round, agreed by all parties before it starts.

A :class:`RoundConfig` is what the server announces when clients register (the network driver
carries it in its handshake; the in-memory driver hands the same object to everybody). Every
party validates messages against it, so a server cannot, for example, lower the threshold or
switch graphs in the middle of a round without the clients noticing.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from secagg.encoding import FixedPointEncoder
from secagg.graphs import MaskingGraph, complete_graph, secaggplus_graph

from .errors import KEYHOLDER_ID, ProtocolConfigError
from .filtering import FilterConfig
from .noise import NoiseConfig

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
    value_range:
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
        ``corrupt_rate`` also sets how many colluding clients the hardened-mode signature bound
        must withstand (:meth:`max_colluders`).
    filtering:
        Secure filtering (:class:`protocol.filtering.FilterConfig`: the key holder's Paillier
        key, the norm bound, the rule, the sketch dimension), or ``None`` for plain secure
        aggregation.
    noise:
        Distributed DP noise with verifiable shares (:class:`protocol.noise.NoiseConfig`);
        needs ``filtering`` (the key holder checks the shares). The fixed-point range then
        leaves room for the noise (the encoder covers ``value_range + noise.headroom``), and
        the default precision is capped at ``noise.max_frac_bits`` so that input and noise
        share one integer lattice.
    federation:
        Name of the server (or federation) running the round, at most 64 bytes of UTF-8. It is
        part of :attr:`digest`, so signatures never carry over between federations, and clients
        keep their last round id per federation (:class:`protocol.ledger.RoundLedger`).

    Raises
    ------
    ValueError
        For a bad field (named in the message), e.g. fewer than 2 clients or ``dim < 1``.
    secagg.errors.EncodingOverflowError
        If ``bits`` leaves no headroom for the sum of ``len(population)`` values of ``value_range``.
    """

    round_id: int
    population: tuple[int, ...]
    dim: int
    value_range: float
    bits: int = 32
    frac_bits: int | None = None
    graph: str = "complete"
    threshold: int | None = None
    degree: int | None = None
    hardened: bool = False
    dropout_rate: float = 0.1
    corrupt_rate: float = 0.1
    federation: str = "fortis"
    filtering: FilterConfig | None = None
    noise: NoiseConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.round_id, bool) or not isinstance(self.round_id, (int, np.integer)):
            raise ProtocolConfigError(f"round_id must be an int, got {self.round_id!r}")
        if not 0 <= int(self.round_id) < 2**64:
            raise ProtocolConfigError(f"round_id must be in [0, 2**64), got {self.round_id}")
        object.__setattr__(self, "round_id", int(self.round_id))
        try:
            pop = tuple(sorted(int(i) for i in self.population))
        except (TypeError, ValueError):
            raise ProtocolConfigError(
                f"population must be a sequence of int ids, got {self.population!r}"
            ) from None
        if len(set(pop)) != len(pop):
            raise ProtocolConfigError("population: client ids must be distinct")
        if len(pop) < 2:
            raise ProtocolConfigError(
                f"population: secure aggregation needs >= 2 clients, got {len(pop)}"
            )
        if pop[0] < 0 or pop[-1] >= KEYHOLDER_ID:
            raise ProtocolConfigError(
                f"population: ids must be in [0, {KEYHOLDER_ID}), got {pop[0]}..{pop[-1]}"
            )
        object.__setattr__(self, "population", pop)
        if (
            isinstance(self.dim, bool)
            or not isinstance(self.dim, (int, np.integer))
            or self.dim < 1
        ):
            raise ProtocolConfigError(f"dim must be an int >= 1, got {self.dim!r}")
        if self.dim >= 2**63:
            raise ProtocolConfigError(f"dim must be below 2**63, got {self.dim}")
        object.__setattr__(self, "dim", int(self.dim))
        if self.graph not in GRAPH_KINDS:
            raise ProtocolConfigError(f"graph must be one of {GRAPH_KINDS}, got {self.graph!r}")
        for name, top in (("threshold", len(pop)), ("degree", len(pop) - 1)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ProtocolConfigError(f"{name} must be an int or None, got {value!r}")
            if not 1 <= int(value) <= top:
                raise ProtocolConfigError(f"{name} must be in [1, {top}], got {value}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.value_range, (int, float, np.floating)) or not math.isfinite(
            self.value_range
        ):
            raise ProtocolConfigError(
                f"value_range must be a finite positive number, got {self.value_range!r}"
            )
        if self.value_range <= 0:
            raise ProtocolConfigError(f"value_range must be positive, got {self.value_range}")
        if not isinstance(self.hardened, bool):
            raise ProtocolConfigError(f"hardened must be a bool, got {self.hardened!r}")
        if not isinstance(self.federation, str) or not 0 < len(self.federation.encode()) <= 64:
            raise ProtocolConfigError(
                f"federation must be a non-empty str of <= 64 bytes, got {self.federation!r}"
            )
        for name in ("dropout_rate", "corrupt_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.floating)) or not 0 <= value < 1:
                raise ProtocolConfigError(f"{name} must be a number in [0, 1), got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.filtering is not None and not isinstance(self.filtering, FilterConfig):
            raise ProtocolConfigError(
                f"filtering must be a FilterConfig or None, got {type(self.filtering).__name__}"
            )
        if self.noise is not None:
            if not isinstance(self.noise, NoiseConfig):
                raise ProtocolConfigError(
                    f"noise must be a NoiseConfig or None, got {type(self.noise).__name__}"
                )
            if self.filtering is None:
                raise ProtocolConfigError(
                    "noise: distributed noise shares are verified by the key holder of secure "
                    "filtering; configure filtering too (an unverified share could hide an "
                    "attack vector)"
                )
        _ = self.encoder  # headroom check now, not in the middle of a round
        if self.noise is not None:
            self.noise.integer_sigma(self.encoder.scale)  # within [1, MAX_INTEGER_SIGMA]

    @cached_property
    def encoder(self) -> FixedPointEncoder:
        """The fixed-point encoder every party uses (``n_max`` = population size)."""
        if self.noise is None:
            return FixedPointEncoder(self.value_range, self.n, self.bits, self.frac_bits)
        clip, frac = self.value_range + self.noise.headroom, self.frac_bits
        if frac is None:  # the noise's lattice is the input's: cap the precision for it
            finest = FixedPointEncoder(clip, self.n, self.bits).frac_bits
            frac = min(finest, self.noise.max_frac_bits)
        return FixedPointEncoder(clip, self.n, self.bits, frac)

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

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of every field in a canonical encoding (with the resolved fixed-point
        precision): what hardened-mode signatures bind, so a signature made for one round
        configuration never verifies for another, even with the same round id."""
        enc = self.encoder
        h = hashlib.sha256(b"fortis/round-config/v2")
        h.update(struct.pack(">QQI", self.round_id, self.dim, self.n))
        h.update(np.asarray(self.population, dtype=">u4").tobytes())
        h.update(struct.pack(">dBH", float(self.value_range), enc.bits, enc.frac_bits))
        for text in (self.graph, self.federation):
            raw = text.encode()
            h.update(struct.pack(">I", len(raw)) + raw)
        for opt in (self.threshold, self.degree):
            h.update(struct.pack(">q", -1 if opt is None else int(opt)))
        h.update(struct.pack(">?dd", self.hardened, self.dropout_rate, self.corrupt_rate))
        if self.filtering is not None:
            h.update(b"filtering" + self.filtering.digest)
        if self.noise is not None:
            h.update(b"noise" + self.noise.digest)
        return h.digest()

    @property
    def filtered(self) -> bool:
        """Whether the round runs secure filtering (sketches, distances, verification)."""
        return self.filtering is not None

    @cached_property
    def layouts(self):
        """The masked distance protocol's slot layouts (secure filtering only)."""
        if self.filtering is None:
            raise ProtocolConfigError("this round has no secure filtering")
        enc = self.encoder
        return self.filtering.layouts(enc.scale, self.dim, enc.max_int)

    @cached_property
    def round_threshold(self) -> int:
        """The Shamir threshold ``t`` of the round's graph (it does not depend on the graph
        seed: the SecAgg+ rule fixes degree and threshold from ``n`` and the rates)."""
        return self.masking_graph(bytes(32)).threshold

    def max_colluders(self, threshold: int) -> int:
        """How many clients may collude with the server, for the hardened-mode bounds.

        ``t - 1`` for the complete graph (the Shamir threshold's own bound); for SecAgg+ the
        larger of ``t - 1`` and ``floor(corrupt_rate * n)``, the number the graph's security
        statement assumes (at n = 1000 and corrupt_rate = 0.1 that is 100, far above t - 1).
        """
        t = int(threshold)
        if self.graph == "complete":
            return t - 1
        return max(t - 1, math.floor(self.corrupt_rate * self.n + 1e-12))

    def min_signatures(self, threshold: int) -> int:
        """Hardened mode: consistency signatures a client needs before it unmasks.

        ``max(t, floor((n + c) / 2) + 1)`` with ``c`` = :meth:`max_colluders`. Honest clients
        sign one survivor set each, while c colluding clients can sign any number of sets. Two
        different sets that both gather S signatures need at least 2S - c distinct signers, so
        S > (n + c) / 2 makes a split view impossible: a lying server cannot obtain the
        self-mask share from one half and the mask-key share from the other half for the same
        client. (A bare majority, n // 2 + 1, is not enough: one colluder signing both sets
        suffices for odd n.)
        """
        t = int(threshold)
        return max(t, (self.n + self.max_colluders(t)) // 2 + 1)
