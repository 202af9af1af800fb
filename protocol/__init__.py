"""fortis.protocol: the secure-aggregation round as sans-I/O state machines.

* :mod:`protocol.messages` -- wire messages and their versioned byte encoding.
* :mod:`protocol.client` / :mod:`protocol.server` -- the parties (stage tables, checks).
* :mod:`protocol.config` -- the round's public parameters.
* :mod:`protocol.router` -- :class:`Router`, the one in-memory router for any sans-I/O parties,
  with fault injection as layers (:class:`Dropouts`, :class:`Tamper`, :class:`Replay`, ...).
* :mod:`protocol.driver` -- :func:`run_round` and :func:`run_parties` on that router.
* :mod:`protocol.audit` -- read-only views of what each party holds (:meth:`Server.audit`).
* :mod:`protocol.errors` -- :class:`ProtocolError` and :class:`MessageFormatError`.

A key holder party (Paillier sketches) joins in a later issue; it will be one more file with its
own stage table, talking to the server through the same message encoding.
"""

from .audit import ClientAudit, ServerAudit
from .client import Client, ClientStage
from .config import RoundConfig
from .driver import DROPOUT_STAGES, RoundResult, Transcript, run_parties, run_round
from .errors import SERVER_ID, MessageFormatError, ProtocolConfigError, ProtocolError
from .events import StageDeadline, StartRound
from .ledger import RoundLedger, RoundReplayError
from .messages import decode, encode
from .router import Dropouts, Envelope, Layer, Recorder, Replay, Router, RouterLog, Tamper
from .server import AggregateResult, Fault, Server, ServerStage, ShareDispute

__all__ = [
    "run_round",
    "run_parties",
    "RoundResult",
    "Transcript",
    "DROPOUT_STAGES",
    "Router",
    "RouterLog",
    "Envelope",
    "Layer",
    "Dropouts",
    "Tamper",
    "Replay",
    "Recorder",
    "ClientAudit",
    "ServerAudit",
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
