"""fortis.protocol: the secure-aggregation round as sans-I/O state machines.

* :mod:`protocol.messages` -- wire messages and their versioned byte encoding.
* :mod:`protocol.client` / :mod:`protocol.server` -- the parties (stage tables, checks).
* :mod:`protocol.config` -- the round's public parameters.
* :mod:`protocol.driver` -- :func:`run_round`, the in-memory driver.
* :mod:`protocol.errors` -- :class:`ProtocolError` and :class:`MessageFormatError`.

A key holder party (Paillier sketches) joins in a later issue; it will be one more file with its
own stage table, talking to the server through the same message encoding.
"""

from .client import Client, ClientStage
from .config import RoundConfig
from .driver import DROPOUT_STAGES, RoundResult, Transcript, run_parties, run_round
from .errors import SERVER_ID, MessageFormatError, ProtocolConfigError, ProtocolError
from .events import StageDeadline, StartRound
from .ledger import RoundLedger, RoundReplayError
from .messages import decode, encode
from .server import AggregateResult, Fault, Server, ServerStage, ShareDispute

__all__ = [
    "run_round",
    "run_parties",
    "RoundResult",
    "Transcript",
    "DROPOUT_STAGES",
    "RoundConfig",
    "RoundLedger",
    "RoundReplayError",
    "Client",
    "ClientStage",
    "Server",
    "ServerStage",
    "Fault",
    "ShareDispute",
    "AggregateResult",
    "ProtocolError",
    "ProtocolConfigError",
    "MessageFormatError",
    "SERVER_ID",
    "StartRound",
    "StageDeadline",
    "encode",
    "decode",
]
