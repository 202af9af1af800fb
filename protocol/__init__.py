"""fortis.protocol: the secure-aggregation round as sans-I/O state machines.

* :mod:`protocol.messages` -- wire messages and their versioned byte encoding.
* :mod:`protocol.client` / :mod:`protocol.server` / :mod:`protocol.keyholder` -- the parties
  (stage tables, checks); the key holder holds the Paillier key of secure filtering.
* :mod:`protocol.filtering` -- secure filtering's public parameters (:class:`FilterConfig`) and
  the filter decision on sketch distances.
* :mod:`protocol.config` -- the round's public parameters.
* :mod:`protocol.router` -- :class:`Router`, the one in-memory router for any sans-I/O parties,
  with fault injection as layers (:class:`Dropouts`, :class:`Tamper`, :class:`Replay`, ...).
* :mod:`protocol.driver` -- :func:`run_round` and :func:`run_parties` on that router.
* :mod:`protocol.audit` -- read-only views of what each party holds (:meth:`Server.audit`).
* :mod:`protocol.errors` -- :class:`ProtocolError` and :class:`MessageFormatError`.

"""

from .audit import ClientAudit, ServerAudit
from .client import Client, ClientStage
from .config import RoundConfig
from .driver import (
    DROPOUT_STAGES,
    CulpritSearch,
    LyingSketchClient,
    RoundResult,
    Transcript,
    run_parties,
    run_round,
)
from .errors import KEYHOLDER_ID, SERVER_ID, MessageFormatError, ProtocolConfigError, ProtocolError
from .events import StageDeadline, StartRound
from .filtering import SECURE_RULES, FilterConfig, FilterDecision, check_secure_rule
from .keyholder import KeyHolder, KeyHolderAudit, KeyHolderStage
from .ledger import RoundLedger, RoundReplayError
from .messages import decode, encode
from .noise import NoiseConfig
from .preparation import FilterPreparation
from .router import Dropouts, Envelope, Layer, Recorder, Replay, Router, RouterLog, Tamper
from .server import AggregateResult, Fault, Server, ServerStage, ShareDispute, Verification

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
    "KEYHOLDER_ID",
    "KeyHolder",
    "KeyHolderAudit",
    "KeyHolderStage",
    "FilterPreparation",
    "NoiseConfig",
    "FilterConfig",
    "FilterDecision",
    "SECURE_RULES",
    "check_secure_rule",
    "Verification",
    "LyingSketchClient",
    "CulpritSearch",
    "StartRound",
    "StageDeadline",
    "encode",
    "decode",
]
