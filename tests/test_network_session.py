"""Session messages and the RoundConfig wire form: exact round trips, strict refusals."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import RoundConfig
from protocol.filtering import FilterConfig
from protocol.network.session import (
    Endorse,
    RoundClose,
    RoundOpen,
    SessionFormatError,
    Shutdown,
    config_from_json,
    config_to_json,
    decode_session,
    encode_session,
    peek_round_open,
)
from protocol.noise import NoiseConfig
from tests.protocol_helpers import paillier_test_key


def _configs():
    key = paillier_test_key().public_key
    plain = RoundConfig(3, (0, 1, 2, 5), 10, 2.0, federation="f1")
    hardened = RoundConfig(4, tuple(range(30)), 7, 0.5, graph="secagg+", hardened=True, bits=40)
    filt = FilterConfig(key, 1.5, rule="multi_krum", f=2, rule_params={"m": 3}, sketch_dim=64)
    filtered = RoundConfig(
        5, tuple(range(8)), 100, 1.0, filtering=filt, noise=NoiseConfig("ddg", 0.01)
    )
    return [plain, hardened, filtered]


@pytest.mark.parametrize("cfg", _configs(), ids=["plain", "secagg+", "filtered+noise"])
def test_round_config_json_round_trips_to_the_same_digest(cfg):
    back = config_from_json(config_to_json(cfg), allow_insecure_key=True)
    assert back.digest == cfg.digest
    assert config_to_json(back) == config_to_json(cfg)


def test_a_1024_bit_key_is_refused_unless_allowed():
    cfg = _configs()[2]
    with pytest.raises(SessionFormatError, match="1024 bits refused"):
        config_from_json(config_to_json(cfg))


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("dim"), "missing"),
        (lambda d: d.update(extra=1), "unknown"),
        (lambda d: d.update(population=[1]), "population"),
        (lambda d: d.update(dim=-3), "dim"),
        (lambda d: d.update(value_range="big"), "value_range"),
        (lambda d: d.update(graph="ring"), "graph"),
    ],
)
def test_a_bad_config_is_refused_with_the_field_named(mutate, field):
    import json

    doc = json.loads(config_to_json(_configs()[0]))
    mutate(doc)
    with pytest.raises(SessionFormatError, match=field):
        config_from_json(json.dumps(doc).encode())


def test_non_finite_numbers_in_the_config_are_refused():
    raw = config_to_json(_configs()[0]).replace(b'"value_range":2.0', b'"value_range":NaN')
    with pytest.raises(SessionFormatError, match="non-finite"):
        config_from_json(raw)


def _messages():
    cfg = _configs()[0]
    return [
        RoundOpen(3, 9, cfg, {0: b"cert0", 5: b"c5"}, b"sig", b"khcert", np.arange(4.0), 12.5),
        RoundClose(3, "aggregated 4 clients", True),
        Endorse(3, b"\x01" * 70),
        Shutdown(3, "done"),
    ]


@pytest.mark.parametrize("msg", _messages(), ids=lambda m: type(m).__name__)
def test_session_messages_round_trip(msg):
    back = decode_session(encode_session(msg))
    assert type(back) is type(msg) and back.round_id == msg.round_id
    if isinstance(msg, RoundOpen):
        assert back.step == msg.step and back.config.digest == msg.config.digest
        assert dict(back.certificates) == dict(msg.certificates)
        assert (back.endorsement, back.keyholder_cert, back.timeout) == (b"sig", b"khcert", 12.5)
        np.testing.assert_array_equal(back.payload, msg.payload)
        assert peek_round_open(encode_session(msg)) == 3
    else:
        assert vars(back) == vars(msg)
        assert peek_round_open(encode_session(msg)) is None


@pytest.mark.parametrize("msg", _messages(), ids=lambda m: type(m).__name__)
def test_every_truncation_and_any_trailing_byte_is_refused(msg):
    data = encode_session(msg)
    for cut in range(len(data)):
        with pytest.raises(SessionFormatError):
            decode_session(data[:cut])
    with pytest.raises(SessionFormatError, match="trailing"):
        decode_session(data + b"\0")


def test_header_faults_are_named():
    data = bytearray(encode_session(_messages()[3]))
    for offset, value, field in ((0, ord("X"), "magic"), (4, 9, "version"), (5, 77, "type")):
        bad = bytearray(data)
        bad[offset] = value
        with pytest.raises(SessionFormatError, match=field):
            decode_session(bytes(bad))


def test_a_non_finite_payload_and_a_config_of_another_round_are_refused():
    cfg = _configs()[0]
    nan = encode_session(RoundOpen(3, 0, cfg, payload=np.array([1.0, np.nan])))
    with pytest.raises(SessionFormatError, match="non-finite"):
        decode_session(nan)
    other = bytearray(encode_session(RoundOpen(3, 0, cfg)))
    other[6:14] = struct.pack(">Q", 4)  # header round 4, config round 3
    with pytest.raises(SessionFormatError, match="config is for round 3"):
        decode_session(bytes(other))


def test_a_huge_declared_count_is_refused_before_allocation():
    cfg = _configs()[0]
    data = bytearray(encode_session(RoundOpen(3, 0, cfg)))
    # the certificate count follows step (8) and the config blob (4 + len)
    at = 14 + 8 + 4 + len(config_to_json(cfg))
    data[at : at + 4] = struct.pack(">I", 2**31)
    with pytest.raises(SessionFormatError, match="certificates"):
        decode_session(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_escape_as_anything_but_a_format_error(data):
    try:
        decode_session(b"FRSN\x01" + data)
    except SessionFormatError:
        pass
