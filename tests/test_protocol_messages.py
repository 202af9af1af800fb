"""Wire format of protocol messages: round trips and strict rejection of bad bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from protocol.errors import KEYHOLDER_ID, SERVER_ID, MessageFormatError, ProtocolError
from protocol.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HEADER_BYTES,
    MAGIC,
    MESSAGE_TYPES,
    VERSION,
    Abort,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    DistanceOpened,
    DistanceRequest,
    ForwardShares,
    KeyEntry,
    MaskedInput,
    MaskingPartners,
    PrepareColumns,
    PrepareProducts,
    ServerKeys,
    ShareComplaints,
    ShareKeys,
    SketchCommit,
    SketchRequest,
    UnmaskRequest,
    UnmaskResponse,
    ZeroTestRequest,
    ZeroTestResult,
    decode,
    decode_share_payload,
    encode,
    encode_complaint,
    encode_share_payload,
    encode_signed_matrix,
)

K = bytes(range(32))
K2 = bytes(range(1, 33))
MK = bytes(range(256))  # a masking key is a 256-byte group element
SIG = bytes(64)


def examples():
    return [
        AdvertiseKeys(7, 3, K, MK),
        AdvertiseKeys(7, 3, K, MK, SIG),
        ServerKeys(
            7, SERVER_ID, 3, "secagg+", K, 4, 6, [KeyEntry(5, K, MK, SIG), KeyEntry(1, K2, MK)]
        ),
        ShareKeys(7, 3, {9: b"abc", 1: b"\x00" * 100}),
        ShareKeys(7, 3, {9: b"abc"}, b"c" * 512, {9: SIG}),
        ForwardShares(7, SERVER_ID, 3, {2: b"x"}),
        ForwardShares(7, SERVER_ID, 3, {2: b"x"}, {2: b"c" * 512}, {2: SIG}),
        ShareComplaints(7, 3, {}),
        ShareComplaints(7, 3, {2: encode_complaint(4, K), 5: encode_complaint(2)}),
        MaskingPartners(7, SERVER_ID, 3, [5, 1, 2]),
        MaskedInput(7, 3, np.arange(5, dtype=np.uint32)),
        MaskedInput(7, 3, np.arange(5, dtype=np.uint32), [1, 4], SIG),
        MaskedInput(2**63, 0, np.array([2**64 - 1, 0], dtype=np.uint64)),
        MaskedInput(7, 3, np.zeros(0, dtype=np.uint32)),
        ConsistencyRequest(7, SERVER_ID, 3, [4, 2, 3]),
        ConsistencySignature(7, 3, SIG),
        UnmaskRequest(7, SERVER_ID, 3, [1, 3], [2], {1: SIG}),
        UnmaskResponse(7, 3, {1: b"s" * 33}, {2: b"k" * 33}),
        Abort(7, SERVER_ID, 3, "too few clients: ünïcode"),
        Abort(7, 3, SERVER_ID, "bye"),
        Abort(7, SERVER_ID, KEYHOLDER_ID, "round failed"),
        SketchRequest(7, SERVER_ID, 3, K, {3: K2, 1: K}),
        SketchCommit(7, 3, b"\x01" * 512),
        DistanceRequest(7, SERVER_ID, KEYHOLDER_ID, [1, 3], 1, b"\x02" * 768),
        DistanceOpened(
            7,
            KEYHOLDER_ID,
            [0, 2],
            {1: b"out of range"},
            encode_signed_matrix(np.array([[1, -2], [3, 4]]), 16),
            encode_signed_matrix(np.array([[0, -5], [-5, 0]]), 4),
        ),
        PrepareColumns(7, KEYHOLDER_ID, 3, b"\x03" * 256),
        PrepareProducts(7, SERVER_ID, KEYHOLDER_ID, b"\x04" * 256),
        ZeroTestRequest(7, SERVER_ID, KEYHOLDER_ID, b"\x05" * 256),
        ZeroTestResult(7, KEYHOLDER_ID, b"\x01"),
    ]


@pytest.mark.parametrize("msg", examples(), ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    data = encode(msg)
    assert data[:4] == MAGIC
    back = decode(data)
    assert back == msg
    assert type(back) is type(msg)
    assert encode(back) == data  # canonical


def test_every_message_type_has_an_example():
    assert {type(m) for m in examples()} == set(MESSAGE_TYPES.values())


def test_constructor_normalises_to_canonical_order():
    m = ShareKeys(0, 1, [(5, b"a"), (2, b"b")])
    assert m.shares == ((2, b"b"), (5, b"a"))
    r = UnmaskRequest(0, SERVER_ID, 1, [3, 1], [])
    assert r.survivors == (1, 3)


def test_masked_array_is_read_only_copy():
    a = np.arange(4, dtype=np.uint32)
    m = MaskedInput(0, 1, a)
    a[0] = 99
    assert m.masked[0] == 0
    with pytest.raises(ValueError):
        m.masked[0] = 1


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: AdvertiseKeys(0, 1, b"short", MK), "c_pk"),
        (lambda: AdvertiseKeys(0, 1, K, K2), "s_pk"),
        (lambda: AdvertiseKeys(0, 1, K, MK, b"x" * 10), "signature"),
        (lambda: AdvertiseKeys(-1, 1, K, MK), "round_id"),
        (lambda: AdvertiseKeys(0, SERVER_ID, K, MK), "sender"),
        (lambda: ServerKeys(0, 5, 3, "complete", K, 2, 2, []), "sender"),
        (lambda: ShareKeys(0, 1, {SERVER_ID: b"x"}), "shares"),
        (lambda: UnmaskRequest(0, SERVER_ID, 1, [2, 2], []), "survivors"),
        (lambda: MaskedInput(0, 1, np.zeros(3, dtype=np.float64)), "masked"),
        (lambda: MaskedInput(0, 1, np.zeros((2, 2), dtype=np.uint32)), "masked"),
        (lambda: MaskedInput(0, 1, [1, 2, 3]), "masked"),
        (lambda: ConsistencySignature(0, 1, b"x" * 63), "signature"),
        (lambda: Abort(0, 1, SERVER_ID, "x" * 5000), "reason"),
    ],
)
def test_constructor_rejects_bad_fields_naming_them(make, field):
    with pytest.raises(MessageFormatError) as info:
        make()
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ProtocolError) and isinstance(info.value, ValueError)


def _masked_bytes():
    return encode(MaskedInput(4, 12, np.arange(6, dtype=np.uint32)))


def _patch(data: bytes, offset: int, raw: bytes) -> bytes:
    return data[:offset] + raw + data[offset + len(raw) :]


def test_truncated_message_names_field_and_sender():
    data = _masked_bytes()
    with pytest.raises(MessageFormatError) as info:
        decode(data[:-3])
    assert info.value.field == "body_length"
    assert info.value.sender == 12 and "client 12" in str(info.value)
    # a consistent header over a truncated body: the array field reports the truncation
    body = data[HEADER_BYTES : -(3 + 4 + 4)]  # into the array: partners and signature go too
    hdr = _patch(data[:HEADER_BYTES], HEADER_BYTES - 4, struct.pack(">I", len(body)))
    with pytest.raises(MessageFormatError) as info:
        decode(hdr + body)
    assert info.value.field == "masked"
    with pytest.raises(MessageFormatError) as info:
        decode(data[:10])
    assert info.value.field == "header"


def test_trailing_bytes_rejected():
    data = _masked_bytes() + b"\0\0"
    data = _patch(data, HEADER_BYTES - 4, struct.pack(">I", len(data) - HEADER_BYTES))
    with pytest.raises(MessageFormatError) as info:
        decode(data)
    assert info.value.field == "trailing bytes"


def test_bad_magic_version_type():
    data = _masked_bytes()
    with pytest.raises(MessageFormatError) as info:
        decode(b"XXXX" + data[4:])
    assert info.value.field == "magic"
    with pytest.raises(MessageFormatError) as info:
        decode(_patch(data, 4, bytes([VERSION + 1])))
    assert info.value.field == "version" and f"version {VERSION + 1}" in str(info.value)
    with pytest.raises(MessageFormatError) as info:
        decode(_patch(data, 5, b"\xee"))
    assert info.value.field == "type"


def test_oversized_message_rejected_before_parsing():
    data = encode(MaskedInput(0, 1, np.zeros(1000, dtype=np.uint32)))
    with pytest.raises(MessageFormatError) as info:
        decode(data, max_size=1000)
    assert info.value.field == "message" and "max_size" in str(info.value)
    assert decode(data, max_size=len(data)).masked.shape == (1000,)
    assert DEFAULT_MAX_MESSAGE_BYTES >= 8 * 10**6  # a uint64 vector of 10^6 fits by default


def test_array_shape_and_dtype_checked_against_data():
    data = _masked_bytes()
    off = HEADER_BYTES
    # dtype code 2 = uint64: 6 elements need 48 bytes, only 24 present
    with pytest.raises(MessageFormatError) as info:
        decode(_patch(data, off, b"\x02"))
    assert info.value.field == "masked" and "needs 48 bytes" in str(info.value)
    with pytest.raises(MessageFormatError) as info:
        decode(_patch(data, off, b"\x09"))
    assert "dtype code" in str(info.value)
    with pytest.raises(MessageFormatError) as info:
        decode(_patch(data, off + 1, b"\x02"))
    assert info.value.field == "masked" and "dimension" in str(info.value)
    # a huge declared shape is refused without allocating
    with pytest.raises(MessageFormatError):
        decode(_patch(data, off + 2, struct.pack(">Q", 2**60)))


def test_non_canonical_or_duplicate_ids_rejected():
    good = encode(UnmaskRequest(0, SERVER_ID, 1, [2, 5], []))
    off = HEADER_BYTES + 4 + 4  # recipient, count
    swapped = _patch(good, off, struct.pack(">II", 5, 2))
    with pytest.raises(MessageFormatError) as info:
        decode(swapped)
    assert info.value.field == "survivors" and "increasing" in str(info.value)
    dup = _patch(good, off, struct.pack(">II", 2, 2))
    with pytest.raises(MessageFormatError):
        decode(dup)


def test_blob_length_limit():
    good = encode(ShareKeys(0, 1, {2: b"abc"}))
    off = HEADER_BYTES + 4 + 4  # count, id
    with pytest.raises(MessageFormatError) as info:
        decode(_patch(good, off, struct.pack(">I", 10**9)))
    assert info.value.field == "shares"


def test_server_message_from_client_id_rejected_on_decode():
    data = encode(ForwardShares(0, SERVER_ID, 1, {}))
    forged = _patch(data, 14, struct.pack(">I", 5))
    with pytest.raises(MessageFormatError) as info:
        decode(forged)
    assert info.value.field == "sender"


def test_share_payload_round_trip_and_errors():
    p = encode_share_payload(3, 4, b"a" * 33, b"b" * 33)
    assert decode_share_payload(p) == (3, 4, b"a" * 33, b"b" * 33)
    with pytest.raises(MessageFormatError):
        decode_share_payload(p[:-1])
    with pytest.raises(MessageFormatError):
        decode_share_payload(p + b"x")


def test_decode_rejects_non_bytes_and_encode_rejects_non_messages():
    with pytest.raises(TypeError):
        decode("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode(object())  # type: ignore[arg-type]
