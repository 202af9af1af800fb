"""Wire messages of one secure-aggregation round, and their versioned byte encoding.

Every message is a small frozen dataclass. Its constructor validates and normalises every field
(types, lengths, canonical order), so an object that exists is well formed; :func:`encode` turns
it into bytes and :func:`decode` turns bytes back into the same object, checking everything again.
The in-memory driver sends every message through this encoding, and the network driver of a later
issue uses the same bytes.

Messages of a round, in order (Bonawitz et al. 2017, with the SecAgg+ graph of Bell et al. 2020)::

    client -> server  AdvertiseKeys          c_pk (share encryption), s_pk (masking), [Ed25519 sig]
    server -> client  ServerKeys             graph kind/seed/threshold/degree + neighbours' keys
    client -> server  ShareKeys              AES-GCM sealed Shamir shares, one per neighbour, and
                                             Feldman commitments to both polynomials, [sigs]
    server -> client  ForwardShares          the sealed shares addressed to this client, with
                                             each dealer's commitments [and signature]
    client -> server  ShareComplaints        dealers whose shares did not verify (may be empty)
    server -> client  MaskingPartners        the partners to mask with, complaints judged
    client -> server  MaskedInput            y_i = x_i + PRG(b_i) +- PRG(s_ij), partners, [sig]
    server -> client  ConsistencyRequest     hardened mode: the survivor set U3 to sign
    client -> server  ConsistencySignature   hardened mode: Ed25519 signature over (context, U3)
    server -> client  UnmaskRequest          survivors U3, dropped U2 \\ U3, [signatures and
                                             the survivors' signed partner sets]
    client -> server  UnmaskResponse         b-shares of survivors, s_sk-shares of dropped
    either            Abort                  reason

Wire format (version 1), all integers big-endian unless stated::

    header  magic b"FRTS" | version u8 | type tag u8 | round u64 | sender u32 | body length u32
    body    the message's fields, in declaration order:
      u32 / u64           fixed width
      bytes, text         u32 length | data (text is UTF-8)
      id list             u32 count | count x u32, strictly increasing
      id -> bytes map     u32 count | count x (u32 id | u32 length | data), ids strictly increasing
      key records         u32 count | count x (u32 id | 32 B c_pk | 256 B s_pk | u32 len | sig)
      array               u8 dtype code | u8 ndim | ndim x u64 shape | raw little-endian data

Decoding is strict: wrong magic or version, unknown type tag, a body length that disagrees with
the data, truncated or trailing bytes, non-canonical order, a length or count above its limit, a
wrong dtype/shape/size, or a message larger than ``max_size`` all raise
:class:`~protocol.errors.MessageFormatError`, which names the field (and the sender when the
header parsed).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from .errors import KEYHOLDER_ID, SERVER_ID, MessageFormatError, ProtocolConfigError, party_name

__all__ = [
    "MAGIC",
    "VERSION",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_PARTIES",
    "MAX_BLOB_BYTES",
    "MAX_TEXT_BYTES",
    "KEY_BYTES",
    "MASK_KEY_BYTES",
    "MAX_COMMITMENT_BYTES",
    "SIGNATURE_BYTES",
    "SEED_BYTES",
    "Message",
    "KeyEntry",
    "AdvertiseKeys",
    "ServerKeys",
    "ShareKeys",
    "ForwardShares",
    "ShareComplaints",
    "MaskingPartners",
    "Complaint",
    "MaskedInput",
    "ConsistencyRequest",
    "ConsistencySignature",
    "UnmaskRequest",
    "UnmaskResponse",
    "Abort",
    "SketchRequest",
    "SketchCommit",
    "DistanceRequest",
    "DistanceOpened",
    "PrepareColumns",
    "PrepareProducts",
    "ZeroTestRequest",
    "ZeroTestResult",
    "MESSAGE_TYPES",
    "committed_digest",
    "channel_mismatch",
    "decode_from",
    "encode_signed_matrix",
    "decode_signed_matrix",
    "encode",
    "decode",
    "Header",
    "peek_header",
    "advertise_signing_bytes",
    "graph_seed_from_adverts",
    "round_context",
    "survivors_signing_bytes",
    "input_digest",
    "partners_signing_bytes",
    "encode_partner_record",
    "decode_partner_record",
    "encode_share_payload",
    "decode_share_payload",
    "share_signing_bytes",
    "encode_complaint",
    "decode_complaint",
    "mask_agreement_info",
    "share_agreement_info",
    "share_aad",
]

MAGIC = b"FRTS"
VERSION = 3  # 2: rejected lists; 3: secure filtering messages, the key holder's wire id
_HEADER = struct.Struct(">4sBBQII")
HEADER_BYTES = _HEADER.size

#: Default upper bound on one encoded message (64 MiB: a uint64 vector of 8 million entries).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Upper bound on any id list / id map length.
MAX_PARTIES = 1 << 20
#: Upper bound on one sealed share, signature or share blob.
MAX_BLOB_BYTES = 1 << 16
#: Upper bound on one field of concatenated Paillier ciphertexts (the message bound).
MAX_CIPHERTEXT_FIELD_BYTES = DEFAULT_MAX_MESSAGE_BYTES
#: Upper bound on an abort reason or graph-kind string.
MAX_TEXT_BYTES = 4096
#: Upper bound on one encoded partner record (partner ids, input digest, signature).
MAX_PARTNER_RECORD_BYTES = 4 + 4 * MAX_PARTIES + 32 + 4 + 64

KEY_BYTES = 32
#: A masking public key: an element of the 2048-bit Schnorr group of :mod:`secagg.vss`.
MASK_KEY_BYTES = 256
SIGNATURE_BYTES = 64
SEED_BYTES = 32
#: Upper bound on one dealer's two commitment vectors (threshold up to 4096).
MAX_COMMITMENT_BYTES = 2 * 4096 * MASK_KEY_BYTES

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class _FieldError(Exception):
    """Internal: a field value is invalid; re-raised as MessageFormatError with the field name."""


# ---------------------------------------------------------------------------------------------
# Field kinds: each knows how to validate/normalise a Python value and how to (de)serialise it.
# ---------------------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos", "end", "max_count")

    def __init__(self, data: memoryview, pos: int, end: int, max_count: int = MAX_PARTIES) -> None:
        self.data = data
        self.pos = pos
        self.end = end
        self.max_count = max_count

    def count(self) -> int:
        """Read a u32 element count and check it against the reader's limit before any work."""
        n = self.u32()
        if n > self.max_count:
            raise _FieldError(f"declared count {n} above the limit {self.max_count}")
        return n

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > self.end:
            raise _FieldError(f"truncated: needs {n} bytes, {self.end - self.pos} left")
        view = self.data[self.pos : self.pos + n]
        self.pos += n
        return view

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]


def _check_int(value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _FieldError(f"must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < limit:
        raise _FieldError(f"must be in [0, {limit}), got {value}")
    return value


def _check_bytes(value: Any, exact: int | None, allowed: tuple[int, ...] | None, max_len: int):
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise _FieldError(f"must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if exact is not None and len(value) != exact:
        raise _FieldError(f"must be exactly {exact} bytes, got {len(value)}")
    if allowed is not None and len(value) not in allowed:
        raise _FieldError(f"length must be one of {allowed}, got {len(value)}")
    if len(value) > max_len:
        raise _FieldError(f"is {len(value)} bytes, above the limit {max_len}")
    return value


class _UInt:
    def __init__(self, width: int) -> None:
        self.width = width
        self.limit = 1 << (8 * width)
        self.struct = _U32 if width == 4 else _U64

    def normalise(self, value: Any) -> int:
        return _check_int(value, self.limit)

    def write(self, value: int, out: list) -> None:
        out.append(self.struct.pack(value))

    def read(self, r: _Reader) -> int:
        return self.struct.unpack(r.take(self.width))[0]


class _PartyId(_UInt):
    """A client id: u32 below KEYHOLDER_ID (the two top ids are the server's and the key
    holder's)."""

    def __init__(self) -> None:
        super().__init__(4)

    def normalise(self, value: Any) -> int:
        return _check_int(value, KEYHOLDER_ID)


class _Bytes:
    def __init__(
        self,
        exact: int | None = None,
        allowed: tuple[int, ...] | None = None,
        max_len: int = MAX_BLOB_BYTES,
    ) -> None:
        self.exact, self.allowed, self.max_len = exact, allowed, max_len

    def normalise(self, value: Any) -> bytes:
        return _check_bytes(value, self.exact, self.allowed, self.max_len)

    def write(self, value: bytes, out: list) -> None:
        out.append(_U32.pack(len(value)))
        out.append(value)

    def read(self, r: _Reader) -> bytes:
        n = r.u32()
        if n > self.max_len:
            raise _FieldError(f"declared length {n} above the limit {self.max_len}")
        return bytes(r.take(n))


class _Text:
    def __init__(self, max_len: int = MAX_TEXT_BYTES) -> None:
        self.max_len = max_len

    def normalise(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _FieldError(f"must be str, got {type(value).__name__}")
        if len(value.encode("utf-8")) > self.max_len:
            raise _FieldError(f"longer than {self.max_len} bytes")
        return value

    def write(self, value: str, out: list) -> None:
        data = value.encode("utf-8")
        out.append(_U32.pack(len(data)))
        out.append(data)

    def read(self, r: _Reader) -> str:
        n = r.u32()
        if n > self.max_len:
            raise _FieldError(f"declared length {n} above the limit {self.max_len}")
        try:
            return bytes(r.take(n)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _FieldError(f"not valid UTF-8 ({exc.reason})") from None


def _check_increasing(ids: list[int]) -> None:
    for a, b in zip(ids, ids[1:]):
        if b <= a:
            raise _FieldError(f"ids must be strictly increasing (no duplicates), got {a} then {b}")


class _Ids:
    """A set of client ids, stored as a sorted tuple."""

    def normalise(self, value: Any) -> tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise _FieldError(f"must be an iterable of ids, got {type(value).__name__}")
        ids = [_check_int(v, KEYHOLDER_ID) for v in value]
        if len(ids) > MAX_PARTIES:
            raise _FieldError(f"has {len(ids)} ids, above the limit {MAX_PARTIES}")
        if len(set(ids)) != len(ids):
            raise _FieldError("contains duplicate ids")
        return tuple(sorted(ids))

    def write(self, value: tuple[int, ...], out: list) -> None:
        out.append(_U32.pack(len(value)))
        out.append(np.asarray(value, dtype=">u4").tobytes())

    def read(self, r: _Reader) -> tuple[int, ...]:
        n = r.count()
        ids = np.frombuffer(r.take(4 * n), dtype=">u4").tolist()
        _check_increasing(ids)
        if ids and ids[-1] >= KEYHOLDER_ID:
            raise _FieldError(f"id {ids[-1]} is reserved for the server or the key holder")
        return tuple(ids)


class _Blobs:
    """A map client id -> bytes, stored as a tuple of (id, bytes) pairs sorted by id."""

    def __init__(self, max_blob: int = MAX_BLOB_BYTES) -> None:
        self.max_blob = max_blob

    def normalise(self, value: Any) -> tuple[tuple[int, bytes], ...]:
        items = value.items() if isinstance(value, Mapping) else value
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise _FieldError(f"must be a mapping id -> bytes, got {type(value).__name__}")
        pairs = []
        for item in items:
            if not isinstance(item, tuple) or len(item) != 2:
                raise _FieldError("entries must be (id, bytes) pairs")
            pairs.append(
                (
                    _check_int(item[0], KEYHOLDER_ID),
                    _check_bytes(item[1], None, None, self.max_blob),
                )
            )
        if len(pairs) > MAX_PARTIES:
            raise _FieldError(f"has {len(pairs)} entries, above the limit {MAX_PARTIES}")
        pairs.sort(key=lambda p: p[0])
        _check_increasing([p[0] for p in pairs])
        return tuple(pairs)

    def write(self, value: tuple[tuple[int, bytes], ...], out: list) -> None:
        out.append(_U32.pack(len(value)))
        for ident, blob in value:
            out.append(_U32.pack(ident) + _U32.pack(len(blob)))
            out.append(blob)

    def read(self, r: _Reader) -> tuple[tuple[int, bytes], ...]:
        n = r.count()
        pairs = []
        for _ in range(n):
            ident, length = r.u32(), r.u32()
            if ident >= KEYHOLDER_ID:
                raise _FieldError(f"id {ident} is reserved for the server or the key holder")
            if length > self.max_blob:
                raise _FieldError(f"entry for id {ident} declares {length} bytes > {self.max_blob}")
            pairs.append((ident, bytes(r.take(length))))
        _check_increasing([p[0] for p in pairs])
        return tuple(pairs)


@dataclass(frozen=True)
class KeyEntry:
    """One client's advertised keys, as forwarded by the server in :class:`ServerKeys`."""

    client_id: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes = b""


class _KeyRecords:
    def normalise(self, value: Any) -> tuple[KeyEntry, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise _FieldError(f"must be an iterable of KeyEntry, got {type(value).__name__}")
        out = []
        for entry in value:
            if not isinstance(entry, KeyEntry):
                raise _FieldError(f"entries must be KeyEntry, got {type(entry).__name__}")
            out.append(
                KeyEntry(
                    _check_int(entry.client_id, KEYHOLDER_ID),
                    _check_bytes(entry.c_pk, KEY_BYTES, None, KEY_BYTES),
                    _check_bytes(entry.s_pk, MASK_KEY_BYTES, None, MASK_KEY_BYTES),
                    _check_bytes(entry.signature, None, (0, SIGNATURE_BYTES), SIGNATURE_BYTES),
                )
            )
        if len(out) > MAX_PARTIES:
            raise _FieldError(f"has {len(out)} entries, above the limit {MAX_PARTIES}")
        out.sort(key=lambda e: e.client_id)
        _check_increasing([e.client_id for e in out])
        return tuple(out)

    def write(self, value: tuple[KeyEntry, ...], out: list) -> None:
        out.append(_U32.pack(len(value)))
        for e in value:
            out.append(_U32.pack(e.client_id) + e.c_pk + e.s_pk + _U32.pack(len(e.signature)))
            out.append(e.signature)

    def read(self, r: _Reader) -> tuple[KeyEntry, ...]:
        n = r.count()
        out = []
        for _ in range(n):
            ident = r.u32()
            c_pk, s_pk = bytes(r.take(KEY_BYTES)), bytes(r.take(MASK_KEY_BYTES))
            siglen = r.u32()
            if siglen not in (0, SIGNATURE_BYTES):
                raise _FieldError(f"signature of id {ident} has length {siglen}, not 0 or 64")
            out.append(KeyEntry(ident, c_pk, s_pk, bytes(r.take(siglen))))
        _check_increasing([e.client_id for e in out])
        return tuple(out)


_DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint32),
    2: np.dtype(np.uint64),
}
_CODE_OF = {dt: code for code, dt in _DTYPE_CODES.items()}


class _Array:
    """A numpy array with an allowed dtype and fixed number of dimensions (read-only copy)."""

    def __init__(self, dtypes: tuple[type, ...], ndim: int = 1) -> None:
        self.dtypes = tuple(np.dtype(d) for d in dtypes)
        self.ndim = ndim

    def normalise(self, value: Any) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise _FieldError(f"must be a numpy array, got {type(value).__name__}")
        dt = value.dtype.newbyteorder("=") if value.dtype.byteorder != "|" else value.dtype
        if dt not in self.dtypes:
            names = ", ".join(d.name for d in self.dtypes)
            raise _FieldError(f"dtype must be one of [{names}], got {value.dtype}")
        if value.ndim != self.ndim:
            raise _FieldError(f"must have {self.ndim} dimension(s), got shape {value.shape}")
        if value.flags.writeable or not value.flags.c_contiguous or value.dtype != dt:
            value = np.array(value, dtype=dt, order="C", copy=True)
            value.flags.writeable = False
        return value

    def write(self, value: np.ndarray, out: list) -> None:
        out.append(struct.pack(">BB", _CODE_OF[value.dtype], value.ndim))
        out.append(b"".join(_U64.pack(s) for s in value.shape))
        le = value if value.dtype.byteorder in ("<", "|") or np.little_endian else None
        if le is None:
            le = value.astype(value.dtype.newbyteorder("<"))
        out.append(memoryview(np.ascontiguousarray(le)).cast("B"))

    def read(self, r: _Reader) -> np.ndarray:
        code, ndim = struct.unpack(">BB", r.take(2))
        if code not in _DTYPE_CODES:
            raise _FieldError(f"unknown dtype code {code}")
        dt = _DTYPE_CODES[code]
        if dt not in self.dtypes:
            raise _FieldError(f"dtype {dt.name} not allowed here")
        if ndim != self.ndim:
            raise _FieldError(f"must have {self.ndim} dimension(s), got {ndim}")
        shape = tuple(r.u64() for _ in range(ndim))
        count = 1
        for s in shape:
            count *= s
        nbytes = count * dt.itemsize
        if nbytes > r.end - r.pos:
            raise _FieldError(
                f"shape {shape} needs {nbytes} bytes of {dt.name}, only {r.end - r.pos} left"
            )
        raw = r.take(nbytes)
        arr = np.frombuffer(raw, dtype=dt.newbyteorder("<"), count=count).reshape(shape)
        if not np.little_endian:  # pragma: no cover - big-endian hosts
            arr = arr.astype(dt)
            arr.flags.writeable = False
        return arr


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------

_ROUND = _UInt(8)
_SENDER = _UInt(4)


@dataclass(frozen=True, eq=False)
class Message:
    """Base of every wire message: the round it belongs to and the sender's wire id.

    ``sender`` is a client id in ``[0, KEYHOLDER_ID)`` for client messages, ``SERVER_ID`` for
    server messages and ``KEYHOLDER_ID`` for the key holder's. Subclasses declare ``TAG`` (wire
    type tag), ``ORIGIN`` ("client", "server", "keyholder" or "any") and ``FIELDS`` (body fields
    in wire order).
    """

    round_id: int
    sender: int

    TAG: ClassVar[int] = 0
    ORIGIN: ClassVar[str] = "any"
    FIELDS: ClassVar[tuple[tuple[str, Any], ...]] = ()

    def __post_init__(self) -> None:
        name = type(self).__name__
        for fname, kind in (("round_id", _ROUND), ("sender", _SENDER)):
            try:
                object.__setattr__(self, fname, kind.normalise(getattr(self, fname)))
            except _FieldError as exc:
                raise MessageFormatError(str(exc), field=fname, event=name) from None
        if self.ORIGIN == "client" and self.sender >= KEYHOLDER_ID:
            raise MessageFormatError(
                f"{name} is a client message but the sender is the {party_name(self.sender)} id",
                field="sender",
                sender=self.sender,
                event=name,
            )
        if self.ORIGIN == "server" and self.sender != SERVER_ID:
            raise MessageFormatError(
                f"{name} is a server message but the sender is {party_name(self.sender)}",
                field="sender",
                sender=self.sender,
                event=name,
            )
        if self.ORIGIN == "keyholder" and self.sender != KEYHOLDER_ID:
            raise MessageFormatError(
                f"{name} is a key-holder message but the sender is {party_name(self.sender)}",
                field="sender",
                sender=self.sender,
                event=name,
            )
        for fname, kind in self.FIELDS:
            try:
                object.__setattr__(self, fname, kind.normalise(getattr(self, fname)))
            except _FieldError as exc:
                raise MessageFormatError(
                    str(exc), field=fname, sender=self.sender, event=name
                ) from None

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray):
                if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class AdvertiseKeys(Message):
    """Stage 1, client -> server: the two X25519 public keys (Bonawitz et al. 2017, round 0).

    ``c_pk`` (X25519) is used to agree the share-encryption keys, ``s_pk`` (an element of the
    Schnorr group of :mod:`secagg.vss`, so that the Feldman commitment to its private key is
    the key itself) to agree the pairwise masking seeds. In hardened mode ``signature`` is an
    Ed25519 signature over :func:`advertise_signing_bytes`; otherwise it is empty.
    """

    c_pk: bytes
    s_pk: bytes
    signature: bytes = b""

    TAG: ClassVar[int] = 1
    ORIGIN: ClassVar[str] = "client"
    FIELDS: ClassVar = (
        ("c_pk", _Bytes(exact=KEY_BYTES)),
        ("s_pk", _Bytes(exact=MASK_KEY_BYTES)),
        ("signature", _Bytes(allowed=(0, SIGNATURE_BYTES))),
    )


@dataclass(frozen=True, eq=False)
class ServerKeys(Message):
    """Stage 1 result, server -> one client: the masking graph and the neighbours' keys.

    ``graph_kind`` ("complete" or "secagg+"), ``graph_seed``, ``threshold`` and ``degree`` let the
    client recompute the masking graph over the round's population and check the server's claims;
    ``keys`` holds the advertised keys of the recipient's neighbours that advertised (U1).
    """

    recipient: int
    graph_kind: str
    graph_seed: bytes
    threshold: int
    degree: int
    keys: tuple[KeyEntry, ...]

    TAG: ClassVar[int] = 2
    ORIGIN: ClassVar[str] = "server"
    FIELDS: ClassVar = (
        ("recipient", _PartyId()),
        ("graph_kind", _Text(max_len=32)),
        ("graph_seed", _Bytes(exact=SEED_BYTES)),
        ("threshold", _UInt(4)),
        ("degree", _UInt(4)),
        ("keys", _KeyRecords()),
    )


@dataclass(frozen=True, eq=False)
class ShareKeys(Message):
    """Stage 2, client -> server: sealed shares, ``shares[j]`` is the ciphertext for client j.

    ``commitments`` holds the dealer's Feldman commitments to its two polynomials, self-mask
    seed then mask key (``2 * t`` group elements; the mask key's constant term must equal the
    advertised ``s_pk``). In hardened mode ``share_signatures[j]`` signs
    :func:`share_signing_bytes` for holder j, so a holder can tell the dealer's bytes from
    bytes the server altered; otherwise it is empty.
    """

    shares: tuple[tuple[int, bytes], ...]
    commitments: bytes = b""
    share_signatures: tuple[tuple[int, bytes], ...] = ()

    TAG: ClassVar[int] = 3
    ORIGIN: ClassVar[str] = "client"
    FIELDS: ClassVar = (
        ("shares", _Blobs()),
        ("commitments", _Bytes(max_len=MAX_COMMITMENT_BYTES)),
        ("share_signatures", _Blobs(max_blob=SIGNATURE_BYTES)),
    )


@dataclass(frozen=True, eq=False)
class ForwardShares(Message):
    """Stage 2 result, server -> one client: ``shares[i]`` is client i's ciphertext for it,
    ``commitments[i]`` client i's commitments and (hardened) ``share_signatures[i]`` its
    signature over them."""

    recipient: int
    shares: tuple[tuple[int, bytes], ...]
    commitments: tuple[tuple[int, bytes], ...] = ()
    share_signatures: tuple[tuple[int, bytes], ...] = ()

    TAG: ClassVar[int] = 4
    ORIGIN: ClassVar[str] = "server"
    FIELDS: ClassVar = (
        ("recipient", _PartyId()),
        ("shares", _Blobs()),
        ("commitments", _Blobs(max_blob=MAX_COMMITMENT_BYTES)),
        ("share_signatures", _Blobs(max_blob=SIGNATURE_BYTES)),
    )


@dataclass(frozen=True, eq=False)
class ShareComplaints(Message):
    """Stage 2b, client -> server: the dealers whose shares this holder could not accept.

    ``complaints[d]`` is :func:`encode_complaint` of what was wrong with dealer d's shares (an
    empty map says every share verified). A complaint that a share failed its Feldman check
    reveals the pair's share-encryption key, so the server can open the dealer's ciphertext
    and judge.
    """

    complaints: tuple[tuple[int, bytes], ...]

    TAG: ClassVar[int] = 11
    ORIGIN: ClassVar[str] = "client"
    FIELDS: ClassVar = (("complaints", _Blobs(max_blob=1 + KEY_BYTES)),)


@dataclass(frozen=True, eq=False)
class MaskingPartners(Message):
    """Stage 2b result, server -> one client: the partners to mask with, once complaints are
    judged (a subset of the dealers whose shares it was forwarded, without any it complained
    about)."""

    recipient: int
    partners: tuple[int, ...]

    TAG: ClassVar[int] = 12
    ORIGIN: ClassVar[str] = "server"
    FIELDS: ClassVar = (("recipient", _PartyId()), ("partners", _Ids()))


@dataclass(frozen=True, eq=False)
class MaskedInput(Message):
    """Stage 3, client -> server: the masked, quantised update y_i (uint32 or uint64, 1-D).

    ``partners`` is the set of clients the sender masked with (those whose shares reached it).
    In hardened mode ``signature`` is an Ed25519 signature over :func:`partners_signing_bytes`
    (round context, sender, partners, SHA-256 of ``masked``), so the server cannot later show a
    share holder a different partner set; otherwise it is empty.
    """

    masked: np.ndarray
    partners: tuple[int, ...] = ()
    signature: bytes = b""

    TAG: ClassVar[int] = 5
    ORIGIN: ClassVar[str] = "client"
    FIELDS: ClassVar = (
        ("masked", _Array((np.uint32, np.uint64), ndim=1)),
        ("partners", _Ids()),
        ("signature", _Bytes(allowed=(0, SIGNATURE_BYTES))),
    )


@dataclass(frozen=True, eq=False)
class ConsistencyRequest(Message):
    """Hardened mode, server -> one client: the survivor set U3 (the clients in the sum) that
    every client must sign, and the clients whose masked input arrived but was rejected by the
    server's filter (left out of the sum; their mask keys are unmasked like a dropout's)."""

    recipient: int
    survivors: tuple[int, ...]
    rejected: tuple[int, ...] = ()

    TAG: ClassVar[int] = 6
    ORIGIN: ClassVar[str] = "server"
    FIELDS: ClassVar = (
        ("recipient", _PartyId()),
        ("survivors", _Ids()),
        ("rejected", _Ids()),
    )


@dataclass(frozen=True, eq=False)
class ConsistencySignature(Message):
    """Hardened mode, client -> server: Ed25519 signature over :func:`survivors_signing_bytes`."""

    signature: bytes

    TAG: ClassVar[int] = 7
    ORIGIN: ClassVar[str] = "client"
    FIELDS: ClassVar = (("signature", _Bytes(exact=SIGNATURE_BYTES)),)


@dataclass(frozen=True, eq=False)
class UnmaskRequest(Message):
    """Stage 4, server -> one client: who is in the sum (U3), who dropped before sending a
    masked input (or was pruned), and who was rejected by the server's filter (its masked
    input arrived but is left out of the sum). Dropped and rejected clients' mask keys are
    unmasked; survivors' self-mask seeds are. No client is in two lists.

    In hardened mode ``signatures`` carries at least :meth:`RoundConfig.min_signatures`
    consistency signatures over ``survivors`` (signer id -> signature), and
    ``partner_records[i]`` is survivor i's signed partner set (:func:`encode_partner_record`)
    for every survivor whose self-mask share the recipient is asked for (itself included): a
    holder releases that share only if at least ``t`` of i's partners are survivors. Both are
    empty otherwise.
    """

    recipient: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: tuple[tuple[int, bytes], ...] = ()
    partner_records: tuple[tuple[int, bytes], ...] = ()
    rejected: tuple[int, ...] = ()

    TAG: ClassVar[int] = 8
    ORIGIN: ClassVar[str] = "server"
    FIELDS: ClassVar = (
        ("recipient", _PartyId()),
        ("survivors", _Ids()),
        ("dropped", _Ids()),
        ("signatures", _Blobs(max_blob=SIGNATURE_BYTES)),
        ("partner_records", _Blobs(max_blob=MAX_PARTNER_RECORD_BYTES)),
        ("rejected", _Ids()),
    )


@dataclass(frozen=True, eq=False)
class UnmaskResponse(Message):
    """Stage 4, client -> server: Shamir shares (fixed-width bytes) held by the sender.

    ``self_seed_shares[i]`` is the sender's share of survivor i's self-mask seed b_i;
    ``mask_key_shares[j]`` is its share of dropped client j's masking private key s_sk_j. An
    honest client never puts one owner id in both.
    """

    self_seed_shares: tuple[tuple[int, bytes], ...]
    mask_key_shares: tuple[tuple[int, bytes], ...]

    TAG: ClassVar[int] = 9
    ORIGIN: ClassVar[str] = "client"
    FIELDS: ClassVar = (("self_seed_shares", _Blobs()), ("mask_key_shares", _Blobs()))


@dataclass(frozen=True, eq=False)
class Abort(Message):
    """Either direction: the sender abandons the round, with a human-readable reason.

    ``recipient`` is the client id for an abort sent by the server, ``SERVER_ID`` otherwise.
    """

    recipient: int
    reason: str

    TAG: ClassVar[int] = 10
    ORIGIN: ClassVar[str] = "any"
    FIELDS: ClassVar = (("recipient", _UInt(4)), ("reason", _Text()))


# -- secure filtering (protocol.filtering): sketches, the masked distance protocol, the zero test


@dataclass(frozen=True, eq=False)
class SketchRequest(Message):
    """Secure filtering, server -> one client whose masked input arrived: the projection seed
    and the committed inputs it hashes (client id -> SHA-256 of its masked input).

    The seed is :func:`secagg.sketch.projection_seed` of :func:`committed_digest` of
    ``committed`` and the round context, so it is fixed only after every listed input is; the
    client checks that, and that its own input is listed with its own digest, before it sketches.
    """

    recipient: int
    seed: bytes
    committed: tuple[tuple[int, bytes], ...]

    TAG: ClassVar[int] = 13
    ORIGIN: ClassVar[str] = "server"
    FIELDS: ClassVar = (
        ("recipient", _PartyId()),
        ("seed", _Bytes(exact=SEED_BYTES)),
        ("committed", _Blobs(max_blob=32)),
    )


@dataclass(frozen=True, eq=False)
class SketchCommit(Message):
    """Secure filtering, client -> server: ``Enc(s_i)``, the Paillier encryption (under the key
    holder's key) of the sketch of its signed fixed-point input, packed across coordinates with
    the round's row layout: fixed-width ciphertexts, concatenated. With distributed noise,
    ``noise_seed`` is one more ciphertext: the seed of its noise share, for the key holder
    (:mod:`protocol.noise`); empty otherwise."""

    ciphertexts: bytes
    noise_seed: bytes = b""

    TAG: ClassVar[int] = 14
    ORIGIN: ClassVar[str] = "client"
    FIELDS: ClassVar = (
        ("ciphertexts", _Bytes(max_len=MAX_CIPHERTEXT_FIELD_BYTES)),
        ("noise_seed", _Bytes(max_len=MAX_BLOB_BYTES)),
    )


@dataclass(frozen=True, eq=False)
class DistanceRequest(Message):
    """Masked distance protocol, step 1, server -> key holder: ``Enc(s_r + M_r)`` for every row
    (rows of ``clients`` in id order, then ``public_rows`` rows the server encrypted itself,
    e.g. the zero row that gives the norms). A client's row slot is its index in the
    population, public row ``p``'s is ``n + p``. Fixed-width ciphertexts, row after row.

    With distributed noise: ``projection_seed`` and ``noise_seeds``, each client's encrypted
    noise seed in ``clients`` order, so the key holder can return the sketch of every share;
    both empty otherwise."""

    recipient: int
    clients: tuple[int, ...]
    public_rows: int
    ciphertexts: bytes
    projection_seed: bytes = b""
    noise_seeds: bytes = b""

    TAG: ClassVar[int] = 15
    ORIGIN: ClassVar[str] = "server"
    FIELDS: ClassVar = (
        ("recipient", _UInt(4)),
        ("clients", _Ids()),
        ("public_rows", _UInt(4)),
        ("ciphertexts", _Bytes(max_len=MAX_CIPHERTEXT_FIELD_BYTES)),
        ("projection_seed", _Bytes(allowed=(0, SEED_BYTES))),
        ("noise_seeds", _Bytes(max_len=MAX_CIPHERTEXT_FIELD_BYTES)),
    )


@dataclass(frozen=True, eq=False)
class DistanceOpened(Message):
    """Step 2, key holder -> server: which rows (slots) decrypted into the range of a bounded
    sketch, the reason for each that did not, and for the accepted ones (slot order)
    ``W = t - N`` (``accepted x k``) and ``Z = A - 2 comb(U)`` (``accepted x accepted``), as
    fixed-width signed big-endian integers (:func:`encode_signed_matrix`; the widths follow
    from the round's layouts). With distributed noise, ``noise_sketches`` holds
    ``Enc(P e_i)`` for every accepted client row (slot order, row layout), so the server can
    add the accepted shares' sketch to the verification, and ``noise_faults`` names the slots
    whose encrypted noise seed was not a seed (slot -> reason); both empty otherwise."""

    accepted: tuple[int, ...]
    out_of_range: tuple[tuple[int, bytes], ...]
    w: bytes
    z: bytes
    noise_sketches: bytes = b""
    noise_faults: tuple[tuple[int, bytes], ...] = ()

    TAG: ClassVar[int] = 16
    ORIGIN: ClassVar[str] = "keyholder"
    FIELDS: ClassVar = (
        ("accepted", _Ids()),
        ("out_of_range", _Blobs(max_blob=MAX_TEXT_BYTES)),
        ("w", _Bytes(max_len=MAX_CIPHERTEXT_FIELD_BYTES)),
        ("z", _Bytes(max_len=MAX_CIPHERTEXT_FIELD_BYTES)),
        ("noise_sketches", _Bytes(max_len=MAX_CIPHERTEXT_FIELD_BYTES)),
        ("noise_faults", _Blobs(max_blob=MAX_TEXT_BYTES)),
    )


@dataclass(frozen=True, eq=False)
class PrepareColumns(Message):
    """Preparation of a filtered round (before its clients commit anything), key holder ->
    server: ``Enc(N)`` for ``rows`` row slots, packed across rows (column blocks of ``k``
    ciphertexts each), ``N`` being the key holder's fresh uniform masks for this round."""

    rows: int
    columns: bytes

    TAG: ClassVar[int] = 17
    ORIGIN: ClassVar[str] = "keyholder"
    FIELDS: ClassVar = (
        ("rows", _UInt(4)),
        ("columns", _Bytes(max_len=MAX_CIPHERTEXT_FIELD_BYTES)),
    )


@dataclass(frozen=True, eq=False)
class PrepareProducts(Message):
    """Preparation, server -> key holder: ``Enc(<N_i, M_j> + R_ij)`` with the server's fresh
    row masks ``M`` and uniform blinds ``R``, one ciphertext per (column block, row slot)."""

    recipient: int
    products: bytes

    TAG: ClassVar[int] = 18
    ORIGIN: ClassVar[str] = "server"
    FIELDS: ClassVar = (
        ("recipient", _UInt(4)),
        ("products", _Bytes(max_len=MAX_CIPHERTEXT_FIELD_BYTES)),
    )


@dataclass(frozen=True, eq=False)
class ZeroTestRequest(Message):
    """Verification, server -> key holder: folded, re-randomised differences, one ciphertext
    per test (:func:`secagg.zero_test.server_blinded_difference`)."""

    recipient: int
    tests: bytes

    TAG: ClassVar[int] = 19
    ORIGIN: ClassVar[str] = "server"
    FIELDS: ClassVar = (
        ("recipient", _UInt(4)),
        ("tests", _Bytes(max_len=MAX_CIPHERTEXT_FIELD_BYTES)),
    )


@dataclass(frozen=True, eq=False)
class ZeroTestResult(Message):
    """Verification, key holder -> server: one byte per test, 1 if it decrypted to zero."""

    equal: bytes

    TAG: ClassVar[int] = 20
    ORIGIN: ClassVar[str] = "keyholder"
    FIELDS: ClassVar = (("equal", _Bytes(max_len=MAX_PARTIES)),)


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TAG: cls
    for cls in (
        AdvertiseKeys,
        ServerKeys,
        ShareKeys,
        ForwardShares,
        ShareComplaints,
        MaskingPartners,
        MaskedInput,
        ConsistencyRequest,
        ConsistencySignature,
        UnmaskRequest,
        UnmaskResponse,
        Abort,
        SketchRequest,
        SketchCommit,
        DistanceRequest,
        DistanceOpened,
        PrepareColumns,
        PrepareProducts,
        ZeroTestRequest,
        ZeroTestResult,
    )
}


def encode(msg: Message) -> bytes:
    """Serialise a message to bytes (wire format version :data:`VERSION`)."""
    if not isinstance(msg, Message) or type(msg).TAG not in MESSAGE_TYPES:
        raise TypeError(f"encode expects a fortis protocol message, got {type(msg).__name__}")
    body: list = []
    for fname, kind in msg.FIELDS:
        kind.write(getattr(msg, fname), body)
    length = sum(part.nbytes if isinstance(part, memoryview) else len(part) for part in body)
    header = _HEADER.pack(MAGIC, VERSION, msg.TAG, msg.round_id, msg.sender, length)
    return b"".join([header, *body])  # one copy of a large array, not two


@dataclass(frozen=True)
class Header:
    """The fixed-size header of an encoded message, parsed without touching the body."""

    type: type[Message]
    round_id: int
    sender: int
    body_length: int

    @property
    def size(self) -> int:
        """Total encoded size the header declares (header plus body)."""
        return HEADER_BYTES + self.body_length


def peek_header(data: bytes | bytearray | memoryview) -> Header:
    """Parse and check only the header of an encoded message: O(1), allocates nothing.

    Lets a receiver reject a message by its sender, type, round or declared size before any of
    its body is parsed.

    Raises
    ------
    MessageFormatError
        Truncated ``"header"``, bad ``"magic"``, ``"version"`` or ``"type"``, or a
        ``"body_length"`` that disagrees with the data.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) < HEADER_BYTES:
        raise MessageFormatError(
            f"truncated header: {len(view)} bytes, need {HEADER_BYTES}", field="header"
        )
    magic, version, tag, round_id, sender, body_len = _HEADER.unpack(view[:HEADER_BYTES])
    if magic != MAGIC:
        raise MessageFormatError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}", field="magic")
    if version != VERSION:
        raise MessageFormatError(
            f"unsupported wire version {version} (this build speaks {VERSION})",
            field="version",
            sender=sender,
        )
    cls = MESSAGE_TYPES.get(tag)
    if cls is None:
        raise MessageFormatError(f"unknown message type tag {tag}", field="type", sender=sender)
    if body_len != len(view) - HEADER_BYTES:
        raise MessageFormatError(
            f"header declares {body_len} body bytes, message carries {len(view) - HEADER_BYTES}",
            field="body_length",
            sender=sender,
            event=cls.__name__,
        )
    return Header(cls, round_id, sender, body_len)


def decode(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_count: int = MAX_PARTIES,
) -> Message:
    """Parse bytes produced by :func:`encode`.

    ``max_count`` caps every id list and id map in the body (a receiver passes the population
    size), checked before the entries are read.

    Raises
    ------
    MessageFormatError
        For any deviation from the format: size above ``max_size`` (field ``"message"``), bad
        ``"magic"``, ``"version"`` or ``"type"``, a ``"body_length"`` that disagrees with the data,
        truncation, a count above ``max_count`` or an invalid value in a named field, or
        ``"trailing bytes"``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode expects bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) > max_size:
        raise MessageFormatError(
            f"message of {len(view)} bytes exceeds max_size={max_size}", field="message"
        )
    header = peek_header(view)
    cls, sender = header.type, header.sender
    name = cls.__name__
    reader = _Reader(view, HEADER_BYTES, len(view), min(int(max_count), MAX_PARTIES))
    values: dict[str, Any] = {}
    for fname, kind in cls.FIELDS:
        try:
            values[fname] = kind.read(reader)
        except _FieldError as exc:
            raise MessageFormatError(str(exc), field=fname, sender=sender, event=name) from None
    if reader.pos != reader.end:
        raise MessageFormatError(
            f"{reader.end - reader.pos} bytes after the last field",
            field="trailing bytes",
            sender=sender,
            event=name,
        )
    return cls(round_id=header.round_id, sender=sender, **values)


# ---------------------------------------------------------------------------------------------
# Byte strings that are signed or sealed (also part of the versioned format)
# ---------------------------------------------------------------------------------------------


def advertise_signing_bytes(context: bytes, client_id: int, c_pk: bytes, s_pk: bytes) -> bytes:
    """The bytes a client signs in hardened mode to vouch for its advertised keys.

    ``context`` is :attr:`RoundConfig.digest`: the signature covers the whole round
    configuration (round id, population, graph parameters...), not only the round id.
    """
    return b"fortis/advertise/v2" + _digest32(context) + _U32.pack(client_id) + c_pk + s_pk


def graph_seed_from_adverts(context: bytes, adverts: Iterable[KeyEntry]) -> bytes:
    """The masking-graph seed of a hardened round: SHA-256 of the config digest and every
    accepted advertisement ``(id, c_pk, s_pk)`` in id order.

    Every client recomputes it from the advertisements the server forwards, so the server cannot
    pick the SecAgg+ ring order; it can only choose which advertisements to drop, each drop
    costing it that client.
    """
    h = hashlib.sha256(b"fortis/graph-seed/v1" + _digest32(context))
    for e in sorted(adverts, key=lambda e: e.client_id):
        h.update(_U32.pack(e.client_id) + e.c_pk + e.s_pk)
    return h.digest()


def round_context(config_digest: bytes, graph_seed: bytes) -> bytes:
    """What every later signature of a round covers: the config digest and the graph seed."""
    return hashlib.sha256(
        b"fortis/round-context/v1" + _digest32(config_digest) + _digest32(graph_seed)
    ).digest()


def survivors_signing_bytes(
    context: bytes, signer: int, survivors: Iterable[int], rejected: Iterable[int] = ()
) -> bytes:
    """The bytes a client signs in the consistency check: (round context, signer, sorted U3,
    sorted rejected set), so every honest client answers the unmask request for one split."""
    ids, out = sorted(survivors), sorted(rejected)
    return (
        b"fortis/consistency/v3"
        + _digest32(context)
        + _U32.pack(signer)
        + _U32.pack(len(ids))
        + np.asarray(ids, dtype=">u4").tobytes()
        + _U32.pack(len(out))
        + np.asarray(out, dtype=">u4").tobytes()
    )


def input_digest(masked: np.ndarray) -> bytes:
    """SHA-256 of a masked input's little-endian bytes (what a partner signature binds)."""
    arr = np.ascontiguousarray(masked, dtype=np.asarray(masked).dtype.newbyteorder("<"))
    return hashlib.sha256(memoryview(arr).cast("B")).digest()


def partners_signing_bytes(
    context: bytes, signer: int, partners: Iterable[int], digest: bytes
) -> bytes:
    """The bytes a client signs with its masked input: (context, signer, partners, digest)."""
    ids = sorted(partners)
    return (
        b"fortis/partners/v1"
        + _digest32(context)
        + _U32.pack(signer)
        + _digest32(digest)
        + _U32.pack(len(ids))
        + np.asarray(ids, dtype=">u4").tobytes()
    )


def encode_partner_record(partners: Iterable[int], digest: bytes, signature: bytes) -> bytes:
    """One survivor's partner set as forwarded in :class:`UnmaskRequest`: ids, input digest,
    signature."""
    ids = sorted(partners)
    return (
        _U32.pack(len(ids))
        + np.asarray(ids, dtype=">u4").tobytes()
        + _digest32(digest)
        + _U32.pack(len(signature))
        + signature
    )


def decode_partner_record(data: bytes) -> tuple[tuple[int, ...], bytes, bytes]:
    """Inverse of :func:`encode_partner_record`: ``(partners, digest, signature)``.

    Raises :class:`MessageFormatError` (field ``"partner record"``) if it is malformed.
    """
    r = _Reader(memoryview(data).cast("B"), 0, len(data))
    try:
        n = r.count()
        ids = np.frombuffer(r.take(4 * n), dtype=">u4").tolist()
        _check_increasing(ids)
        digest = bytes(r.take(32))
        siglen = r.u32()
        if siglen not in (0, SIGNATURE_BYTES):
            raise _FieldError(f"signature length {siglen}, not 0 or {SIGNATURE_BYTES}")
        signature = bytes(r.take(siglen))
    except _FieldError as exc:
        raise MessageFormatError(str(exc), field="partner record") from None
    if r.pos != r.end:
        raise MessageFormatError("trailing bytes", field="partner record")
    return tuple(ids), digest, signature


def _digest32(value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ProtocolConfigError("contexts, seeds and digests must be 32 bytes")
    return bytes(value)


class Complaint:
    """Why a holder rejects a dealer's shares (the one-byte code of :func:`encode_complaint`)."""

    UNSIGNED = 1  #: hardened: ciphertext or commitments not signed by the dealer (altered)
    UNDECRYPTABLE = 2  #: the ciphertext does not open (or its payload is malformed)
    BAD_COMMITMENTS = 3  #: malformed commitments, or a mask-key commitment that is not s_pk
    INVALID_SHARE = 4  #: opened, but a share fails its Feldman check (reveals the pair key)

    NAMES: ClassVar[dict[int, str]] = {
        1: "not signed by the dealer",
        2: "does not decrypt",
        3: "bad commitments",
        4: "share fails its commitment check",
    }


def encode_complaint(kind: int, revealed_key: bytes = b"") -> bytes:
    """A complaint: kind byte, then (``INVALID_SHARE`` only) the 32-byte pair key."""
    if kind not in Complaint.NAMES:
        raise ProtocolConfigError(f"unknown complaint kind {kind}")
    if (kind == Complaint.INVALID_SHARE) != (len(revealed_key) == KEY_BYTES):
        raise ProtocolConfigError(
            "an invalid-share complaint carries the 32-byte pair key, others none"
        )
    return bytes([kind]) + bytes(revealed_key)


def decode_complaint(data: bytes) -> tuple[int, bytes]:
    """Inverse of :func:`encode_complaint`; raises :class:`MessageFormatError`."""
    if not data or data[0] not in Complaint.NAMES:
        raise MessageFormatError("unknown complaint kind", field="complaints")
    kind, key = data[0], bytes(data[1:])
    if (kind == Complaint.INVALID_SHARE) != (len(key) == KEY_BYTES):
        raise MessageFormatError(
            "an invalid-share complaint carries the 32-byte pair key, others none",
            field="complaints",
        )
    return kind, key


def share_signing_bytes(
    context: bytes, dealer: int, holder: int, sealed: bytes, commitments: bytes
) -> bytes:
    """What a dealer signs (hardened) for each holder: its ciphertext and its commitments."""
    return (
        b"fortis/share/v1"
        + _digest32(context)
        + _U32.pack(dealer)
        + _U32.pack(holder)
        + hashlib.sha256(sealed).digest()
        + hashlib.sha256(commitments).digest()
    )


_PAYLOAD = struct.Struct(">4sBII")
_PAYLOAD_MAGIC = b"FSHR"


def encode_share_payload(owner: int, holder: int, seed_share: bytes, key_share: bytes) -> bytes:
    """Plaintext sealed for ``holder``: ``owner``'s shares of its b (self-mask seed) and s_sk."""
    return (
        _PAYLOAD.pack(_PAYLOAD_MAGIC, VERSION, owner, holder)
        + struct.pack(">H", len(seed_share))
        + seed_share
        + struct.pack(">H", len(key_share))
        + key_share
    )


def decode_share_payload(data: bytes) -> tuple[int, int, bytes, bytes]:
    """Inverse of :func:`encode_share_payload`: ``(owner, holder, seed_share, key_share)``.

    Raises :class:`MessageFormatError` (field ``"share payload"``) if the plaintext is malformed.
    """
    try:
        magic, version, owner, holder = _PAYLOAD.unpack_from(data, 0)
        pos = _PAYLOAD.size
        (n1,) = struct.unpack_from(">H", data, pos)
        seed_share = bytes(data[pos + 2 : pos + 2 + n1])
        pos += 2 + n1
        (n2,) = struct.unpack_from(">H", data, pos)
        key_share = bytes(data[pos + 2 : pos + 2 + n2])
        pos += 2 + n2
    except struct.error as exc:
        raise MessageFormatError(f"truncated ({exc})", field="share payload") from None
    if magic != _PAYLOAD_MAGIC or version != VERSION:
        raise MessageFormatError("bad magic or version", field="share payload")
    if len(seed_share) != n1 or len(key_share) != n2 or pos != len(data):
        raise MessageFormatError("length mismatch", field="share payload")
    return owner, holder, seed_share, key_share


# Key-derivation contexts (HKDF ``info``) and AEAD associated data. Both ends of a pair compute
# the same ``info`` because the ids are put in canonical (sorted) order.


def mask_agreement_info(round_id: int, a: int, b: int) -> bytes:
    """HKDF info for the pairwise masking key of clients ``a`` and ``b`` (order irrelevant)."""
    lo, hi = sorted((a, b))
    return b"fortis/mask-agreement/v1" + _U64.pack(round_id) + _U32.pack(lo) + _U32.pack(hi)


def share_agreement_info(round_id: int, a: int, b: int) -> bytes:
    """HKDF info for the share-encryption key of clients ``a`` and ``b`` (order irrelevant)."""
    lo, hi = sorted((a, b))
    return b"fortis/share-agreement/v1" + _U64.pack(round_id) + _U32.pack(lo) + _U32.pack(hi)


def share_aad(round_id: int, sender: int, recipient: int) -> bytes:
    """AES-GCM associated data binding a sealed share to (round, sender, recipient)."""
    return b"fortis/share-aad/v1" + _U64.pack(round_id) + _U32.pack(sender) + _U32.pack(recipient)


def channel_mismatch(claimed: int, peer: int | None) -> str | None:
    """Why a message whose header claims ``claimed`` as its sender cannot have come over
    ``peer``'s authenticated channel (``None``: it can, or the channel is not known)."""
    if peer is None or claimed == peer:
        return None
    return f"header claims sender {party_name(claimed)} on {party_name(peer)}'s channel"


def decode_from(data: bytes, peer: int | None, *, max_count: int = MAX_PARTIES) -> Message:
    """:func:`decode`, then check the header's sender against the channel it came over
    (``peer``, the id the transport authenticated; ``None``: not known).

    Raises :class:`MessageFormatError` as :func:`decode` does, or naming the field ``"sender"``
    when the header claims another sender than ``peer``.
    """
    msg = decode(data, max_count=max_count)
    mismatch = channel_mismatch(msg.sender, peer)
    if mismatch:
        raise MessageFormatError(mismatch, field="sender", sender=peer, event=type(msg).__name__)
    return msg


def committed_digest(committed: Iterable[tuple[int, bytes]]) -> bytes:
    """SHA-256 of the committed masked inputs (id, input digest) in id order: what the
    projection seed of a filtered round hashes."""
    h = hashlib.sha256(b"fortis/committed-inputs/v1")
    for ident, digest in sorted(committed):
        h.update(_U32.pack(ident) + _digest32(digest))
    return h.digest()


def encode_signed_matrix(values: np.ndarray, width: int) -> bytes:
    """Integers (any size) as ``width``-byte two's-complement big-endian, in row-major order.

    Raises :class:`OverflowError` if a value does not fit ``width`` bytes.
    """
    return b"".join(int(v).to_bytes(width, "big", signed=True) for v in np.ravel(values))


def decode_signed_matrix(
    data: bytes, rows: int, cols: int, width: int, *, field: str = "z"
) -> np.ndarray:
    """Inverse of :func:`encode_signed_matrix` for a ``rows x cols`` matrix (object ints).

    Raises :class:`MessageFormatError` (naming ``field``) for a wrong length.
    """
    if len(data) != rows * cols * width:
        raise MessageFormatError(
            f"{len(data)} bytes, expected {rows}x{cols} values of {width} bytes", field=field
        )
    view = memoryview(data)
    out = np.empty((rows, cols), dtype=object)
    flat = out.reshape(-1)
    for i in range(rows * cols):
        flat[i] = int.from_bytes(view[i * width : (i + 1) * width], "big", signed=True)
    return out
