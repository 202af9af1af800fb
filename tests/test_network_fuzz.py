"""Fuzzing the network layer's decoders with hypothesis (issue 11).

* Frames (:func:`protocol.network.transport.read_frame`): any byte stream, fed to an
  ``asyncio.StreamReader`` in arbitrary chunks, yields exactly the frames a reference parser
  finds, then ``None`` at a clean end or a :class:`FrameError` with the reason the reference
  gives -- never another exception; a declared length above ``Limits.max_frame_bytes`` is
  refused on the header alone (nothing more is read or allocated), and a declared length within
  the limit allocates nothing before its bytes arrive; concatenated valid frames round-trip.
* Session messages (:func:`protocol.network.session.decode_session`): valid ``RoundOpen``
  (plain and filtered configurations), ``RoundClose``, ``Endorse`` and ``Shutdown`` messages,
  mutated byte by byte, field by field and inside the configuration's JSON, either decode to a
  message that re-encodes to itself or raise :class:`SessionFormatError` -- never anything else.

About 5,700 generated inputs per run (2,000 + 500 + 300 frame streams, 2,900 session
messages). Regression tests at the end pin the bugs it found: a deeply nested configuration
escaped as ``RecursionError``, and configurations with ``dim >= 2**64``, a filtering
``sigma >= 2**32``, a threshold or degree of any JSON type, or more than 255 fractional bits
were accepted with a digest that raised.
"""

from __future__ import annotations

import asyncio
import json
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import RoundConfig
from protocol.filtering import FilterConfig
from protocol.network.errors import FrameError
from protocol.network.session import (
    Endorse,
    RoundClose,
    RoundOpen,
    SessionFormatError,
    SessionMessage,
    Shutdown,
    decode_session,
    encode_session,
    peek_round_open,
)
from protocol.network.transport import FRAME_HEADER, KIND_ROUND, KIND_SESSION, Limits, read_frame
from protocol.noise import NoiseConfig
from tests.protocol_helpers import paillier_test_key

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
PEER = 7
KINDS = (KIND_ROUND, KIND_SESSION)


@pytest.fixture(scope="module")
def runner():
    """One event loop for every example (a fresh ``asyncio.run`` per example is slow)."""
    with asyncio.Runner() as r:
        yield r


# --- frames ------------------------------------------------------------------------------------


def _reference(stream: bytes, limit: int) -> tuple[list[tuple[int, bytes]], str | None]:
    """What a stream holds: its frames, then ``None`` (a clean end) or a FrameError reason."""
    frames, pos = [], 0
    while True:
        rest = len(stream) - pos
        if rest == 0:
            return frames, None
        if rest < FRAME_HEADER.size:
            return frames, "truncated"
        length, kind = FRAME_HEADER.unpack_from(stream, pos)
        if length < 1 or length - 1 > limit:
            return frames, "oversized"
        if kind not in KINDS:
            return frames, "kind"
        if rest - FRAME_HEADER.size < length - 1:
            return frames, "truncated"
        frames.append((kind, stream[pos + FRAME_HEADER.size : pos + 4 + length]))
        pos += 4 + length


async def _read_all(chunks: list[bytes], limits: Limits):
    """Feed ``chunks`` (then EOF) from a task while reading frames; returns (frames, the end:
    ``None`` or the FrameError). Any other exception propagates."""
    reader = asyncio.StreamReader()

    async def feed():
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        reader.feed_eof()

    task = asyncio.create_task(feed())
    frames: list[tuple[int, bytes]] = []
    try:
        async with asyncio.timeout(5):  # the stream ends: reading can never wait for more
            while True:
                frame = await read_frame(reader, limits, peer=PEER)
                if frame is None:
                    return frames, None
                frames.append(frame)
    except FrameError as exc:
        return frames, exc
    finally:
        await task


def _chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    return [stream[a:b] for a, b in zip(points, points[1:])]


@st.composite
def _streams(draw) -> bytes:
    """Byte streams near the frame format: frames with honest or lying headers (any length,
    any kind), raw bytes, then possibly a truncation or a few flipped bits."""
    part = st.one_of(
        st.tuples(st.sampled_from(KINDS), st.binary(max_size=48)).map(
            lambda kp: FRAME_HEADER.pack(len(kp[1]) + 1, kp[0]) + kp[1]
        ),
        st.tuples(
            st.one_of(
                st.integers(0, 80),
                st.sampled_from([2**31, 2**32 - 1, (64 << 20) + 1, (64 << 20) + 2]),
                st.integers(0, 2**32 - 1),
            ),
            st.integers(0, 255),
            st.binary(max_size=48),
        ).map(lambda lkp: FRAME_HEADER.pack(*lkp[:2]) + lkp[2]),
        st.binary(max_size=24),
    )
    stream = bytearray(b"".join(draw(st.lists(part, max_size=6))))
    if stream and draw(st.booleans()):
        for pos, bit in draw(
            st.lists(st.tuples(st.integers(0, len(stream) - 1), st.integers(0, 7)), max_size=3)
        ):
            stream[pos] ^= 1 << bit
    if draw(st.booleans()):
        stream = stream[: draw(st.integers(0, len(stream)))]
    return bytes(stream)


LIMITS = st.sampled_from([0, 1, 16, 47, 48, 49, 1024, 64 << 20]).map(
    lambda m: Limits(max_frame_bytes=m)
)


@settings(FUZZ, max_examples=2000)
@given(stream=_streams(), cuts=st.lists(st.integers(0, 2**16), max_size=6), limits=LIMITS)
def test_any_byte_stream_yields_the_reference_frames_then_none_or_a_frame_error(
    runner, stream, cuts, limits
):
    frames, end = runner.run(_read_all(_chunks(stream, cuts), limits))
    want_frames, want_end = _reference(stream, limits.max_frame_bytes)
    assert frames == want_frames
    assert all(k in KINDS and len(p) <= limits.max_frame_bytes for k, p in frames)
    if want_end is None:
        assert end is None
    else:
        assert isinstance(end, FrameError) and end.reason == want_end, end
        assert end.peer == PEER


@settings(FUZZ, max_examples=500)
@given(
    frames=st.lists(st.tuples(st.sampled_from(KINDS), st.binary(max_size=300)), max_size=8),
    cuts=st.lists(st.integers(0, 2**16), max_size=12),
    slack=st.integers(0, 2),
)
def test_concatenated_valid_frames_round_trip_exactly(runner, frames, cuts, slack):
    stream = b"".join(FRAME_HEADER.pack(len(p) + 1, k) + p for k, p in frames)
    # the largest frame is exactly at the limit (slack 0) or just below it
    limits = Limits(max_frame_bytes=max((len(p) for _, p in frames), default=0) + slack)
    got, end = runner.run(_read_all(_chunks(stream, cuts), limits))
    assert got == frames and end is None


async def _declared(limits: Limits, declared: int, kind: int, body: bytes):
    """Feed a header declaring ``declared`` payload bytes and ``body`` (no EOF if the size is
    refused: reading the body would then wait forever). Returns (outcome, unread bytes, peak
    bytes allocated while reading)."""
    reader = asyncio.StreamReader()
    reader.feed_data(FRAME_HEADER.pack(declared + 1, kind) + body)
    oversized = declared > limits.max_frame_bytes
    if not oversized:
        reader.feed_eof()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        try:
            outcome = await asyncio.wait_for(read_frame(reader, limits, peer=PEER), 2.0)
        except FrameError as exc:
            outcome = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if oversized:
        reader.feed_eof()  # now read what is left: none of it was consumed
    return outcome, await reader.read(), peak - base


@settings(FUZZ, max_examples=300)
@given(
    limit=st.sampled_from([0, 1024, 1 << 20, 64 << 20]),
    declared=st.one_of(
        st.integers(0, 2**32 - 2), st.sampled_from([0, 1023, 1024, 1025, 64 << 20, 2**32 - 2])
    ),
    kind=st.sampled_from(KINDS),
    body=st.binary(max_size=64),
)
def test_a_declared_length_costs_nothing_before_its_bytes_arrive(
    runner, limit, declared, kind, body
):
    limits = Limits(max_frame_bytes=limit)
    outcome, unread, allocated = runner.run(_declared(limits, declared, kind, body))
    assert allocated < 256 * 1024, allocated  # never the declared size
    if declared > limit:
        # refused on the header, at once (the body was never awaited) and before any of it
        assert isinstance(outcome, FrameError) and outcome.reason == "oversized"
        assert unread == body
    elif len(body) < declared:
        assert isinstance(outcome, FrameError) and outcome.reason == "truncated"
    else:
        assert outcome == (kind, body[:declared]) and unread == body[declared:]


# --- session messages ----------------------------------------------------------------------------


def _configs() -> list[RoundConfig]:
    key = paillier_test_key().public_key
    plain = RoundConfig(3, (0, 1, 2, 5), 10, 2.0, federation="f1")
    filt = FilterConfig(key, 1.5, rule="multi_krum", f=2, rule_params={"m": 3}, sketch_dim=64)
    filtered = RoundConfig(
        3, tuple(range(8)), 100, 1.0, filtering=filt, noise=NoiseConfig("ddg", 0.01)
    )
    return [plain, filtered]


def _valid_messages() -> list[SessionMessage]:
    plain, filtered = _configs()
    return [
        RoundOpen(3, 9, plain, {0: b"cert0", 5: b"c5"}, b"sig", b"khcert", np.arange(4.0), 12.5),
        RoundOpen(3, 0, filtered, {i: bytes([i]) * 40 for i in range(8)}, b"e" * 71, b"k" * 90),
        RoundClose(3, "aggregated 4 clients", True),
        Endorse(3, b"\x01" * 70),
        Shutdown(3, "done"),
    ]


VALID = [encode_session(m) for m in _valid_messages()]
#: where a RoundOpen's configuration blob starts: header 14 bytes, step 8
CONFIG_AT = 14 + 8
BOUNDARY = [0, 1, 2, 7, 8, 255, 256, 2**16, 2**28, 2**28 + 1, 2**31, 2**32 - 1]


def _decode_or_refuse(data: bytes, insecure: bool) -> SessionMessage | None:
    """decode_session, which may only raise SessionFormatError; peek_round_open never raises."""
    rid = peek_round_open(data)
    assert rid is None or (isinstance(rid, int) and 0 <= rid < 2**64)
    try:
        msg = decode_session(data, allow_insecure_key=insecure)
    except SessionFormatError as exc:
        assert exc.field  # names what was wrong
        return None
    # accepted: a well-formed message that survives its own round trip
    assert isinstance(msg, SessionMessage)
    again = decode_session(encode_session(msg), allow_insecure_key=insecure)
    assert type(again) is type(msg) and again.round_id == msg.round_id
    if isinstance(msg, RoundOpen):
        assert rid == msg.round_id and again.step == msg.step
        assert again.config.digest == msg.config.digest
        assert dict(again.certificates) == dict(msg.certificates)
        np.testing.assert_array_equal(again.payload, msg.payload)
    else:
        assert vars(again) == vars(msg)
    return msg


@st.composite
def _byte_mutations(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 6))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:  # flip a bit
            data[min(pos, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:  # set a byte
            data[min(pos, len(data) - 1)] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == 2:  # insert
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == 3:  # delete
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == 4:  # truncate
            del data[pos:]
        elif op == 5:  # a u32 or u64 count/length overwritten with a boundary value
            width = draw(st.sampled_from([4, 8]))
            value = draw(st.sampled_from(BOUNDARY)) % (1 << (8 * width))
            data[pos : pos + width] = value.to_bytes(width, "big")
        else:  # append
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def _config_mutations(draw) -> bytes:
    """A RoundOpen whose configuration JSON is changed (and its length prefix kept right)."""
    data = draw(st.sampled_from(VALID[:2]))
    (size,) = struct.unpack_from(">I", data, CONFIG_AT)
    start, end = CONFIG_AT + 4, CONFIG_AT + 4 + size
    doc = json.loads(data[start:end])
    target = doc
    if doc["filtering"] is not None and draw(st.booleans()):
        target = doc["filtering"]
    op = draw(st.integers(0, 4))
    keys = sorted(target)
    if op == 0:  # a field set to any JSON value
        target[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
    elif op == 1:  # a field missing
        del target[draw(st.sampled_from(keys))]
    elif op == 2:  # an unknown field
        target[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    elif op == 3:  # a field set to a nearby value of its own type
        key = draw(st.sampled_from(keys))
        value = target[key]
        if isinstance(value, bool):
            target[key] = not value
        elif isinstance(value, int):
            target[key] = value + draw(st.sampled_from([-(2**33), -1, 1, 2**33, 10**30]))
        elif isinstance(value, float):
            target[key] = draw(st.sampled_from([0.0, -value, value * 1e300, 1e-320]))
        elif isinstance(value, str):
            target[key] = value[: draw(st.integers(0, len(value)))] + draw(st.text(max_size=4))
        elif isinstance(value, list):
            target[key] = value + draw(st.lists(st.integers(-1, 2**32), max_size=3))
    raw = json.dumps(doc, allow_nan=True).encode()
    if op == 4:  # not canonical JSON: spacing, another encoding, garbage
        raw = draw(
            st.sampled_from(
                [
                    json.dumps(doc, indent=1).encode(),
                    json.dumps(doc).encode("utf-16"),
                    raw[: draw(st.integers(0, len(raw)))],
                    raw + b"x",
                    b"\xff" + raw,
                ]
            )
        )
    return data[:CONFIG_AT] + struct.pack(">I", len(raw)) + raw + data[end:]


@settings(FUZZ, max_examples=2000)
@given(data=_byte_mutations(), insecure=st.booleans())
def test_mutated_session_messages_decode_or_raise_only_session_format_error(data, insecure):
    _decode_or_refuse(data, insecure)


@settings(FUZZ, max_examples=900)
@given(data=_config_mutations(), insecure=st.booleans())
def test_mutated_round_configs_decode_or_raise_only_session_format_error(data, insecure):
    msg = _decode_or_refuse(data, insecure)
    if msg is not None:  # a config the decoder took is a valid RoundConfig of this round
        assert isinstance(msg.config, RoundConfig) and msg.config.round_id == msg.round_id


@pytest.mark.parametrize("data", VALID, ids=lambda d: f"tag{d[5]}-{len(d)}B")
def test_the_valid_messages_decode_exactly(data):
    msg = _decode_or_refuse(data, insecure=True)
    assert msg is not None and encode_session(msg) == data
    if isinstance(msg, RoundOpen) and msg.config.filtered:  # 1024 bits: refused unless allowed
        with pytest.raises(SessionFormatError, match="1024 bits"):
            decode_session(data)


# --- regressions: bugs this fuzzer found ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value", [("dim", 2**64), ("filtering.sigma", 2**32)], ids=["dim", "sigma"]
)
def test_a_decoded_config_always_has_a_digest(field, value):
    data = VALID[1] if field.startswith("filtering.") else VALID[0]
    (size,) = struct.unpack_from(">I", data, CONFIG_AT)
    end = CONFIG_AT + 4 + size
    doc = json.loads(data[CONFIG_AT + 4 : end])
    *path, last = field.split(".")
    target = doc
    for key in path:
        target = target[key]
    target[last] = value
    raw = json.dumps(doc).encode()
    bad = data[:CONFIG_AT] + struct.pack(">I", len(raw)) + raw + data[end:]
    try:
        msg = decode_session(bad, allow_insecure_key=True)
    except SessionFormatError:
        return  # refused: fine
    assert len(msg.config.digest) == 32  # accepted: then it must be usable


@pytest.mark.parametrize("nest", [b"[", b'{"a":'], ids=["array", "object"])
def test_a_deeply_nested_config_is_a_format_error(nest):
    config = nest * (60000 // len(nest))
    data = VALID[0][:CONFIG_AT] + struct.pack(">I", len(config)) + config
    with pytest.raises(SessionFormatError):
        decode_session(data)
