"""Session messages: what the network driver says around a round, outside its sans-I/O parties.

A round on the network starts with the server's :class:`RoundOpen` (the round's
:class:`~protocol.config.RoundConfig`, the model or any payload the clients need, the
population's certificates as the PKI, and the key holder's endorsement of the configuration)
and ends with :class:`RoundClose`. The key holder answers its own ``RoundOpen`` with
:class:`Endorse`: an ECDSA signature, by its certificate's key, over the configuration's digest,
so a client can check that the key holder saw the same configuration (and that the Paillier key
it encrypts its sketch under is the key holder's, not one the server made). :class:`Shutdown`
ends the federation.

Wire format (all integers big-endian)::

    magic b"FRSN" | version u8 | type u8 | round u64 | body (per type, below)
      RoundOpen  u64 step | bytes config (canonical JSON) | certificates (u32 count | per entry
                 u32 id | bytes DER) | bytes endorsement | bytes keyholder certificate DER |
                 array payload (u64 length | float64 little-endian) | f64 timeout seconds
      RoundClose bytes outcome (UTF-8 text) | u8 included
      Endorse    bytes signature
      Shutdown   bytes reason (UTF-8 text)

Decoding is strict (limits checked before anything is allocated); any deviation raises
:class:`SessionFormatError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from secagg.paillier_public import PaillierPublicKey

from ..config import RoundConfig
from ..errors import KEYHOLDER_ID, MessageFormatError
from ..filtering import FilterConfig
from ..noise import NoiseConfig

__all__ = [
    "SESSION_MAGIC",
    "SESSION_VERSION",
    "SessionMessage",
    "RoundOpen",
    "RoundClose",
    "Endorse",
    "Shutdown",
    "SessionFormatError",
    "encode_session",
    "decode_session",
    "peek_round_open",
    "config_to_json",
    "config_from_json",
    "endorsement_bytes",
]

SESSION_MAGIC = b"FRSN"
SESSION_VERSION = 1
_HEAD = struct.Struct(">4sBBQ")
_U32, _U64, _F64 = struct.Struct(">I"), struct.Struct(">Q"), struct.Struct(">d")
#: Caps checked before allocation.
MAX_CONFIG_BYTES = 1 << 16
MAX_CERT_BYTES = 1 << 14
MAX_TEXT = 1 << 12
MAX_PAYLOAD_VALUES = 1 << 28


class SessionFormatError(MessageFormatError):
    """Bytes that are not a well-formed session message (names the field)."""


@dataclass(frozen=True, eq=False)
class SessionMessage:
    """Base class: every session message names its round."""

    round_id: int
    TAG: ClassVar[int] = 0


@dataclass(frozen=True, eq=False)
class RoundOpen(SessionMessage):
    """Server -> client or key holder: a round starts.

    ``step`` is the training round this secure round serves (round ids never repeat, steps do
    when a round is retried); ``certificates`` the DER certificates of the population (the PKI
    a client checks against its CA); ``endorsement``/``keyholder_cert`` the key holder's
    :class:`Endorse` signature and certificate (filtered rounds); ``payload`` the model or
    whatever the clients need to compute their update; ``timeout`` how long the server waits
    for the first message.
    """

    step: int
    config: RoundConfig
    certificates: Mapping[int, bytes] = field(default_factory=dict)
    endorsement: bytes = b""
    keyholder_cert: bytes = b""
    payload: np.ndarray = field(default_factory=lambda: np.zeros(0))
    timeout: float = 60.0
    TAG: ClassVar[int] = 1


@dataclass(frozen=True, eq=False)
class RoundClose(SessionMessage):
    """Server -> participant: the round ended; ``outcome`` says how, ``included`` whether this
    recipient's input is in the released aggregate."""

    outcome: str
    included: bool
    TAG: ClassVar[int] = 2


@dataclass(frozen=True, eq=False)
class Endorse(SessionMessage):
    """Key holder -> server: signature over :func:`endorsement_bytes` of the configuration."""

    signature: bytes
    TAG: ClassVar[int] = 3


@dataclass(frozen=True, eq=False)
class Shutdown(SessionMessage):
    """Server -> everyone: the federation is over (``round_id``: the last round)."""

    reason: str
    TAG: ClassVar[int] = 4


_TYPES = {cls.TAG: cls for cls in (RoundOpen, RoundClose, Endorse, Shutdown)}


def endorsement_bytes(config: RoundConfig) -> bytes:
    """What the key holder signs: a domain tag, the federation and the configuration digest
    (which covers the round id and the Paillier key's fingerprint)."""
    fed = config.federation.encode()
    return b"fortis/endorse/v1" + _U32.pack(len(fed)) + fed + config.digest


# -- RoundConfig as canonical JSON --------------------------------------------------------------


def _fields(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_CONFIG_KEYS = set(_fields(RoundConfig))
_FILTER_KEYS = set(_fields(FilterConfig))
_NOISE_KEYS = set(_fields(NoiseConfig))


def config_to_json(config: RoundConfig) -> bytes:
    """Canonical JSON of every field of ``config`` (the Paillier key as its modulus in hex)."""
    doc = {name: getattr(config, name) for name in _CONFIG_KEYS}
    doc["population"] = list(config.population)
    doc["value_range"] = float(config.value_range)
    if config.filtering is not None:
        fc = config.filtering
        doc["filtering"] = {name: getattr(fc, name) for name in _FILTER_KEYS}
        doc["filtering"].update(key=format(int(fc.key.n), "x"), rule_params=dict(fc.rule_params))
    if config.noise is not None:
        doc["noise"] = {name: getattr(config.noise, name) for name in _NOISE_KEYS}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name} in JSON")


def _exact_keys(doc: object, keys: set[str], what: str) -> dict:
    if not isinstance(doc, dict):
        raise SessionFormatError(f"{what} must be a JSON object", field=what)
    missing, extra = keys - set(doc), set(doc) - keys
    if missing or extra:
        raise SessionFormatError(
            f"{what}: missing {sorted(missing)}, unknown {sorted(extra)}", field=what
        )
    return doc


def config_from_json(data: bytes, *, allow_insecure_key: bool = False) -> RoundConfig:
    """Parse :func:`config_to_json` output back into a validated :class:`RoundConfig`.

    Raises :class:`SessionFormatError` for malformed JSON, missing or unknown keys, or any value
    :class:`RoundConfig` refuses (the message names it).
    """
    if len(data) > MAX_CONFIG_BYTES:
        raise SessionFormatError(f"{len(data)} bytes > {MAX_CONFIG_BYTES}", field="config")
    try:
        doc = json.loads(bytes(data).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SessionFormatError(f"not canonical JSON ({exc})", field="config") from None
    except RecursionError:
        raise SessionFormatError("JSON nested too deeply", field="config") from None
    doc = _exact_keys(doc, _CONFIG_KEYS, "config")
    try:
        filtering = None
        if doc["filtering"] is not None:
            fd = _exact_keys(doc["filtering"], _FILTER_KEYS, "config.filtering")
            if not isinstance(fd["key"], str) or len(fd["key"]) > 2048:
                raise SessionFormatError("key must be a hex modulus", field="config.filtering")
            key = PaillierPublicKey(int(fd["key"], 16), allow_insecure=allow_insecure_key)
            if not isinstance(fd["rule_params"], dict):
                raise SessionFormatError("rule_params must be an object", field="config.filtering")
            filtering = FilterConfig(**{**fd, "key": key})
        noise = None
        if doc["noise"] is not None:
            noise = NoiseConfig(**_exact_keys(doc["noise"], _NOISE_KEYS, "config.noise"))
        if not isinstance(doc["population"], list):
            raise SessionFormatError("population must be a list", field="config.population")
        return RoundConfig(
            **{
                **doc,
                "population": tuple(doc["population"]),
                "filtering": filtering,
                "noise": noise,
            }
        )
    except SessionFormatError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        # RoundConfig / FilterConfig / key errors are ValueErrors naming the field
        raise SessionFormatError(str(exc), field="config") from None


# -- binary encoding ------------------------------------------------------------------------------


def _bytes(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def encode_session(msg: SessionMessage) -> bytes:
    """The bytes of a session message."""
    if type(msg) not in _TYPES.values():
        raise TypeError(f"encode_session expects a session message, got {type(msg).__name__}")
    parts = [_HEAD.pack(SESSION_MAGIC, SESSION_VERSION, msg.TAG, msg.round_id)]
    if isinstance(msg, RoundOpen):
        payload = np.ascontiguousarray(msg.payload, dtype="<f8").ravel()
        parts += [
            _U64.pack(msg.step),
            _bytes(config_to_json(msg.config)),
            _U32.pack(len(msg.certificates)),
            *(_U32.pack(i) + _bytes(bytes(c)) for i, c in sorted(msg.certificates.items())),
            _bytes(msg.endorsement),
            _bytes(msg.keyholder_cert),
            _U64.pack(payload.size),
            payload.tobytes(),
            _F64.pack(float(msg.timeout)),
        ]
    elif isinstance(msg, RoundClose):
        parts += [_bytes(msg.outcome.encode()[:MAX_TEXT]), bytes([1 if msg.included else 0])]
    elif isinstance(msg, Endorse):
        parts.append(_bytes(msg.signature))
    else:
        parts.append(_bytes(msg.reason.encode()[:MAX_TEXT]))
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes, event: str) -> None:
        self.view, self.pos, self.event = memoryview(data), 0, event

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.view):
            raise SessionFormatError(
                f"truncated: need {n} bytes at offset {self.pos}", field=what, event=self.event
            )
        out = self.view[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack(self.take(8, what))[0]

    def blob(self, what: str, limit: int) -> bytes:
        n = self.u32(what)
        if n > limit:
            raise SessionFormatError(f"{n} bytes > limit {limit}", field=what, event=self.event)
        return bytes(self.take(n, what))

    def text(self, what: str) -> str:
        try:
            return self.blob(what, MAX_TEXT).decode("utf-8")
        except UnicodeDecodeError:
            raise SessionFormatError("not UTF-8", field=what, event=self.event) from None


def peek_round_open(data: bytes) -> int | None:
    """The round id of bytes whose header is a well-formed ``RoundOpen`` header, else ``None``
    (lets a client refuse, by round id, an opening whose body it cannot accept)."""
    if len(data) < _HEAD.size:
        return None
    magic, version, tag, round_id = _HEAD.unpack(memoryview(data)[: _HEAD.size])
    ok = magic == SESSION_MAGIC and version == SESSION_VERSION and tag == RoundOpen.TAG
    return round_id if ok else None


def decode_session(
    data: bytes, *, max_certificates: int = 1 << 16, allow_insecure_key: bool = False
) -> SessionMessage:
    """Parse :func:`encode_session` bytes strictly.

    Raises :class:`SessionFormatError` (field named) for a bad magic, version or type, a
    truncation, a limit exceeded, trailing bytes, or an invalid configuration.
    """
    if len(data) < _HEAD.size:
        raise SessionFormatError(f"{len(data)} bytes is shorter than the header", field="header")
    magic, version, tag, round_id = _HEAD.unpack(memoryview(data)[: _HEAD.size])
    if magic != SESSION_MAGIC:
        raise SessionFormatError(f"bad magic {bytes(magic)!r}", field="magic")
    if version != SESSION_VERSION:
        raise SessionFormatError(
            f"unsupported session version {version} (this build speaks {SESSION_VERSION})",
            field="version",
        )
    cls = _TYPES.get(tag)
    if cls is None:
        raise SessionFormatError(f"unknown session message type {tag}", field="type")
    r = _Reader(data, cls.__name__)
    r.pos = _HEAD.size
    msg: SessionMessage
    if cls is RoundOpen:
        step = r.u64("step")
        config = config_from_json(
            r.blob("config", MAX_CONFIG_BYTES), allow_insecure_key=allow_insecure_key
        )
        if config.round_id != round_id:
            raise SessionFormatError(
                f"config is for round {config.round_id}, header says {round_id}",
                field="config",
                event=cls.__name__,
            )
        count = r.u32("certificates")
        if count > max_certificates:
            raise SessionFormatError(
                f"{count} certificates > {max_certificates}", field="certificates"
            )
        certs: dict[int, bytes] = {}
        for _ in range(count):
            ident = r.u32("certificates")
            if ident in certs or ident >= KEYHOLDER_ID:
                raise SessionFormatError(f"bad or repeated id {ident}", field="certificates")
            certs[ident] = r.blob("certificates", MAX_CERT_BYTES)
        endorsement = r.blob("endorsement", 256)
        kh_cert = r.blob("keyholder_cert", MAX_CERT_BYTES)
        size = r.u64("payload")
        if size > MAX_PAYLOAD_VALUES:
            raise SessionFormatError(f"{size} values > {MAX_PAYLOAD_VALUES}", field="payload")
        payload = np.frombuffer(r.take(8 * size, "payload"), dtype="<f8").astype(np.float64)
        if not np.isfinite(payload).all():
            raise SessionFormatError("payload has non-finite values", field="payload")
        timeout = _F64.unpack(r.take(8, "timeout"))[0]
        if not math.isfinite(timeout) or not 0 < timeout <= 86400:
            raise SessionFormatError(f"timeout {timeout} outside (0, 86400] s", field="timeout")
        msg = RoundOpen(round_id, step, config, certs, endorsement, kh_cert, payload, timeout)
    elif cls is RoundClose:
        outcome = r.text("outcome")
        flag = r.take(1, "included")[0]
        if flag > 1:
            raise SessionFormatError(f"included must be 0 or 1, got {flag}", field="included")
        msg = RoundClose(round_id, outcome, bool(flag))
    elif cls is Endorse:
        msg = Endorse(round_id, r.blob("signature", 256))
    else:
        msg = Shutdown(round_id, r.text("reason"))
    if r.pos != len(data):
        raise SessionFormatError(
            f"{len(data) - r.pos} bytes after the last field", field="trailing bytes"
        )
    return msg
