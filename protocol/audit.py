"""Read-only views of what each party holds, for tests, audits and threat-model checks.

A party's secrets and round state live in private attributes; these views copy them out,
immutable (tuples, frozensets, read-only mappings and arrays), so a test or an auditor can ask
"what does the server hold now?" or "what did this client reveal, and to whom?" without reaching
into the party or changing it. They are views of *this process's* party: a client's view holds
its own secrets (a client may audit itself); nothing here is ever sent on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

__all__ = ["ClientAudit", "ServerAudit", "frozen_map", "readonly_array"]

#: What a client revealed about an owner in its UnmaskResponse.
SELF_MASK_SEED = "self-mask seed"
MASK_KEY = "mask key"


def frozen_map(m: Mapping) -> Mapping:
    """A read-only copy of ``m`` (nested mappings copied read-only too)."""
    return MappingProxyType(
        {k: frozen_map(v) if isinstance(v, Mapping) else v for k, v in m.items()}
    )


def readonly_array(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a``."""
    out = np.array(a, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class ClientAudit:
    """One client's view of its own round.

    ``self_mask_seed`` (b) and ``mask_private_key`` (s_sk) are ``None`` before the client
    started. ``held`` maps each dealer whose shares verified to (b share, s_sk share) as
    fixed-width bytes; ``revealed`` maps each owner whose share this client sent at unmasking to
    :data:`SELF_MASK_SEED` or :data:`MASK_KEY` -- never both, by construction of the dict.
    """

    client_id: int
    stage: str
    self_mask_seed: bytes | None
    mask_private_key: bytes | None
    share_public_key: bytes | None
    mask_public_key: bytes | None
    peer_mask_keys: Mapping[int, bytes]
    partners: frozenset[int]
    held: Mapping[int, tuple[bytes, bytes]]
    revealed: Mapping[int, str]


@dataclass(frozen=True)
class ServerAudit:
    """What the server holds: the shares it received (owner -> {holder x -> share}), the masked
    inputs it keeps per client, each client's partner set, and the neighbours whose keys it
    forwarded to each client."""

    stage: str
    seed_shares: Mapping[int, Mapping[int, int]]
    key_shares: Mapping[int, Mapping[int, int]]
    masked_inputs: Mapping[int, np.ndarray]
    partners: Mapping[int, frozenset[int]]
    keys_forwarded: Mapping[int, frozenset[int]]
    survivors: tuple[int, ...]
    rejected: Mapping[int, str]
    pruned: Mapping[int, str]

    def learned_both(self) -> frozenset[int]:
        """Owners of whom the server received shares of both secrets (must stay empty)."""
        return frozenset(o for o in self.seed_shares if self.key_shares.get(o))
