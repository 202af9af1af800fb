"""fortis.protocol.network: the sans-I/O parties over mutual TLS 1.3, one process per party.

* :mod:`~protocol.network.credentials` -- the federation's CA and per-party certificates that
  bind TLS keys (and clients' signing keys) to protocol ids; owner-only key files.
* :mod:`~protocol.network.transport` -- TLS contexts, length-prefixed frames with size and time
  limits, :class:`Connection`.
* :mod:`~protocol.network.session` -- ``RoundOpen`` / ``RoundClose`` / ``Endorse`` /
  ``Shutdown`` around the round messages.
* :mod:`~protocol.network.server_node` -- :class:`NetworkServer`.
* :mod:`~protocol.network.peer_nodes` -- :class:`NetworkClient`, :class:`NetworkKeyHolder` and
  the client's :class:`ClientPolicy`.
"""

from .credentials import PartyFiles, party_files, write_federation
from .errors import (
    FrameError,
    IdentityError,
    InsecureKeyFileError,
    NetworkError,
    StateError,
    TransportError,
)
from .peer_nodes import (
    ClientPolicy,
    ClientRoundReport,
    NetworkClient,
    NetworkKeyHolder,
    PolicyError,
    load_paillier_key,
    save_paillier_key,
)
from .server_node import NetworkServer, StageTimeouts, TransportFault
from .session import Endorse, RoundClose, RoundOpen, Shutdown
from .transport import Limits

__all__ = [
    "PartyFiles",
    "party_files",
    "write_federation",
    "NetworkError",
    "TransportError",
    "FrameError",
    "IdentityError",
    "InsecureKeyFileError",
    "StateError",
    "ClientPolicy",
    "ClientRoundReport",
    "PolicyError",
    "NetworkClient",
    "NetworkKeyHolder",
    "load_paillier_key",
    "save_paillier_key",
    "NetworkServer",
    "StageTimeouts",
    "TransportFault",
    "RoundOpen",
    "RoundClose",
    "Endorse",
    "Shutdown",
    "Limits",
]
