"""Every hostile-input kind of the threat model, sent over a real TLS socket by an
authenticated client (client 6), while clients 0..5 run honestly.

Each case asserts the three promises: the hostile input is rejected with a logged, typed reason
attributed to client 6; client 6 is left out of the round; and the round goes on for everyone
else, with the exact sum of the honest clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct

import numpy as np
import pytest

from protocol import Client
from protocol.messages import encode, peek_header
from protocol.network import Limits, StageTimeouts, write_federation
from protocol.network.session import RoundOpen, decode_session
from protocol.network.transport import FRAME_HEADER, KIND_ROUND, KIND_SESSION
from tests.network_helpers import (
    FED,
    RawPeer,
    config,
    expected_encoded_sum,
    grid_updates,
    start_federation,
    stop_federation,
)
from tests.protocol_helpers import paillier_test_key

N, D = 7, 48
HOSTILE = 6
HONEST = tuple(range(6))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_federation(tmp_path_factory.mktemp("fed"), N, federation=FED)


class HostileClient:
    """Client 6 with its real credentials, running a real :class:`Client` party by hand so
    that any of its outgoing frames can be replaced (``tamper(message, data) -> frames``)."""

    def __init__(self, files, address, x, tamper=None, raw=None):
        self.files, self.address, self.x = files, address, x
        self.tamper = tamper or (lambda msg, data: [(KIND_ROUND, data)])
        self.raw = raw  # replaces the whole behaviour: raw(peer) coroutine

    async def run(self):
        peer = await RawPeer.connect(self.files, self.address)
        try:
            if self.raw is not None:
                await self.raw(peer)
                return
            party = None
            while True:
                frame = await peer.read(timeout=30)
                if frame is None:
                    return
                kind, payload = frame
                if kind == KIND_SESSION:
                    msg = decode_session(payload, allow_insecure_key=True)
                    if isinstance(msg, RoundOpen):
                        party = Client(
                            msg.config, HOSTILE, self.x, rng=np.random.default_rng([0, HOSTILE])
                        )
                        out = party.begin()
                    else:
                        continue
                else:
                    if party is None:
                        continue
                    out = party.receive_bytes(payload)
                for m in out:
                    for k, data in self.tamper(m, encode(m)):
                        await peer.send(k, data)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            return
        finally:
            await peer.close()


def _round(
    files, hostile_factory, *, key=None, limits=None, timeouts=None, x=None, hostile_in_sum=False
):
    x = grid_updates(N, D) if x is None else x

    async def main():
        fed = await start_federation(
            files,
            x,
            clients=HONEST,
            key=key,
            limits=limits,
            timeouts=timeouts or StageTimeouts(first=3, stage=3, keyholder=20),
            wait=False,
        )
        hostile = hostile_factory(files[HOSTILE], fed.address, x[HOSTILE])
        task = asyncio.create_task(hostile.run())
        await fed.server.wait_for(N, keyholder=key is not None, timeout=20)
        cfg = config(N, D, round_id=5, key=key, rule="mean", f=0)
        res = await fed.server.run_round(cfg, step=0)
        await stop_federation(fed)
        task.cancel()
        return fed, cfg, res

    fed, cfg, res = asyncio.run(asyncio.wait_for(main(), 120))
    assert not res.aborted, res.abort_reason
    summed = (*HONEST, HOSTILE) if hostile_in_sum else HONEST
    assert set(res.survivors) == set(summed)
    np.testing.assert_array_equal(res.encoded_sum, expected_encoded_sum(cfg, x, summed, 0))
    for i in HONEST:
        assert fed.clients[i].reports[0].included
    return fed, res


def _transport_fault(fed, reason):
    faults = [f for f in fed.server.faults if f.peer == HOSTILE and f.reason == reason]
    assert faults, fed.server.faults
    assert any(f"client {HOSTILE}" in line and reason in line for line in fed.lines)
    return faults[0]


def _protocol_fault(fed, res, text):
    faults = [f for f in res.faults if f.sender == HOSTILE and text in str(f)]
    assert faults, [str(f) for f in res.faults]
    assert HOSTILE in res.excluded
    logged = [line for line in fed.lines if f"fault: client {HOSTILE}:" in line]
    assert any(text in line for line in logged), logged
    return faults[0]


def _first_message(kind):
    """A tamper that applies ``change(msg, data)`` to the hostile client's first ``kind``."""

    def factory(change):
        def tamper(msg, data):
            if type(msg).__name__ == kind:
                return change(msg, data)
            return [(KIND_ROUND, data)]

        return lambda files, address, x: HostileClient(files, address, x, tamper)

    return factory


# -- transport-level hostility -------------------------------------------------------------------


def test_an_oversized_frame_is_refused_on_its_header(files):
    async def raw(peer):
        await peer.send_raw(FRAME_HEADER.pack(2**31, KIND_ROUND))  # declares 2 GiB, sends nothing
        await asyncio.sleep(5)

    fed, _ = _round(
        files,
        lambda f, a, x: HostileClient(f, a, x, raw=raw),
        limits=Limits(max_frame_bytes=1 << 20),
    )
    assert "exceeds max_frame_bytes" in _transport_fault(fed, "oversized").detail


def test_a_truncated_frame_is_refused(files):
    async def raw(peer):
        await peer.send_raw(FRAME_HEADER.pack(1001, KIND_ROUND) + b"x" * 10)
        peer.writer.transport.abort()

    fed, _ = _round(files, lambda f, a, x: HostileClient(f, a, x, raw=raw))
    _transport_fault(fed, "truncated")


def test_an_unknown_frame_kind_is_refused(files):
    async def raw(peer):
        await peer.send_raw(FRAME_HEADER.pack(5, 99) + b"abcd")
        await asyncio.sleep(5)

    fed, _ = _round(files, lambda f, a, x: HostileClient(f, a, x, raw=raw))
    _transport_fault(fed, "kind")


def test_a_slow_loris_frame_is_cut_off(files):
    async def raw(peer):
        await peer.send_raw(FRAME_HEADER.pack(101, KIND_ROUND))
        for _ in range(50):  # one byte every 0.1 s: 10 s for the body
            await peer.send_raw(b"x")
            await asyncio.sleep(0.1)

    fed, _ = _round(
        files,
        lambda f, a, x: HostileClient(f, a, x, raw=raw),
        limits=Limits(frame_timeout=0.5),
    )
    assert "did not arrive within" in _transport_fault(fed, "slow").detail


def test_garbage_session_bytes_are_a_logged_fault(files):
    async def raw(peer):
        await peer.send(KIND_SESSION, b"FRSN\x01\x02" + b"\xff" * 20)
        await asyncio.sleep(5)

    fed, _ = _round(files, lambda f, a, x: HostileClient(f, a, x, raw=raw))
    _transport_fault(fed, "session")


# -- protocol-level hostility over the socket ------------------------------------------------------


def test_garbage_round_bytes_are_the_senders_fault(files):
    async def raw(peer):
        await peer.send(KIND_ROUND, b"\x00" * 64)
        await asyncio.sleep(5)

    fed, res = _round(files, lambda f, a, x: HostileClient(f, a, x, raw=raw))
    _protocol_fault(fed, res, "magic")


def test_a_wrong_wire_version_is_refused(files):
    def change(msg, data):
        bad = bytearray(data)
        bad[4] = 99
        return [(KIND_ROUND, bytes(bad))]

    fed, res = _round(files, _first_message("AdvertiseKeys")(change))
    _protocol_fault(fed, res, "unsupported wire version 99")


def test_a_message_for_a_later_round_is_refused(files):
    def change(msg, data):
        bad = bytearray(data)
        bad[6:14] = struct.pack(">Q", msg.round_id + 1)
        assert peek_header(bytes(bad)).round_id == msg.round_id + 1
        return [(KIND_ROUND, bytes(bad))]

    fed, res = _round(files, _first_message("AdvertiseKeys")(change))
    _protocol_fault(fed, res, "message is for round 6, this is round 5")


def test_a_replayed_message_is_refused(files):
    fed, res = _round(
        files, _first_message("AdvertiseKeys")(lambda m, d: [(KIND_ROUND, d), (KIND_ROUND, d)])
    )
    _protocol_fault(fed, res, "duplicate AdvertiseKeys")


def test_a_message_claiming_another_sender_is_refused(files):
    def change(msg, data):
        bad = bytearray(data)
        bad[14:18] = struct.pack(">I", 2)  # header says client 2
        assert peek_header(bytes(bad)).sender == 2
        return [(KIND_ROUND, bytes(bad))]

    fed, res = _round(files, _first_message("AdvertiseKeys")(change))
    _protocol_fault(fed, res, "header claims sender client 2 on client 6's channel")
    assert 2 not in res.excluded


def test_a_masked_input_of_the_wrong_length_is_refused(files):
    def change(msg, data):
        short = dataclasses.replace(msg, masked=msg.masked[:-1])
        return [(KIND_ROUND, encode(short))]

    fed, res = _round(files, _first_message("MaskedInput")(change))
    _protocol_fault(fed, res, f"masked input must be uint32[{D}], got uint32[{D - 1}]")


def test_a_masked_input_above_its_size_limit_is_refused_unparsed(files):
    def change(msg, data):
        big = dataclasses.replace(msg, masked=np.zeros(D * 1000, dtype=msg.masked.dtype))
        return [(KIND_ROUND, encode(big))]

    fed, res = _round(files, _first_message("MaskedInput")(change))
    _protocol_fault(fed, res, "-byte limit for this message type")


def test_bad_shares_are_a_dispute_naming_the_dealer_and_cost_no_honest_client(files):
    """A share that fails its Feldman check is complained about by its holder; the server
    cannot tell dealer from holder (plain mode), so the pair stop being partners and both
    stay in; the round, and every honest client's place in it, goes on."""

    def change(msg, data):
        owner, sealed = msg.shares[0]
        broken = bytes([sealed[0] ^ 1]) + sealed[1:]
        bad = dataclasses.replace(msg, shares=((owner, broken), *msg.shares[1:]))
        return [(KIND_ROUND, encode(bad))]

    fed, res = _round(files, _first_message("ShareKeys")(change), hostile_in_sum=True)
    (dispute,) = res.disputes
    assert (dispute.owner, dispute.holder) == (HOSTILE, 0)
    assert "client 0 rejects client 6's shares: does not decrypt" in dispute.reason


def test_a_non_finite_update_is_refused_by_its_own_client_and_costs_nobody_else(files):
    x = grid_updates(N, D)

    def factory(f, address, _x):
        bad = _x.copy()
        bad[0] = np.nan

        async def raw(peer):
            frame = await peer.read(timeout=20)
            opening = decode_session(frame[1])
            with pytest.raises(ValueError, match="not finite"):
                Client(opening.config, HOSTILE, bad)
            await asyncio.sleep(4)  # and it says nothing: a dropout

        return HostileClient(f, address, _x, raw=raw)

    _round(files, factory, x=x)


def test_an_invalid_ciphertext_in_a_sketch_is_the_senders_fault(files):
    key = paillier_test_key()

    def change(msg, data):
        width = len(msg.ciphertexts) // max(1, len(msg.ciphertexts) // 256)
        n2 = int(key.public_key.n) ** 2
        too_big = (n2 + 5).to_bytes(width, "big") if (n2 + 5).bit_length() <= 8 * width else None
        garbage = too_big or b"\xff" * width
        bad = dataclasses.replace(msg, ciphertexts=garbage + msg.ciphertexts[width:])
        return [(KIND_ROUND, encode(bad))]

    x = grid_updates(N, D)
    fed, res = _round(files, _first_message("SketchCommit")(change), key=key, x=x)
    assert HOSTILE in res.excluded or HOSTILE in res.rejected, (res.excluded, res.rejected)
    assert any(f.sender == HOSTILE for f in res.faults), [str(f) for f in res.faults]
