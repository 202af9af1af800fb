"""A hostile *server*: the key holder and the clients survive whatever bytes it sends them,
refuse what they must (naming why), and never crash."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from protocol import KEYHOLDER_ID, SERVER_ID
from protocol.messages import Abort, decode
from protocol.network import (
    ClientPolicy,
    NetworkClient,
    NetworkKeyHolder,
    write_federation,
)
from protocol.network.session import RoundOpen, encode_session
from protocol.network.transport import (
    FRAME_HEADER,
    KIND_ROUND,
    KIND_SESSION,
    Limits,
    encode_frame,
    read_frame,
    tls_context,
)
from secagg.paillier_private import generate_paillier_keypair
from tests.network_helpers import FED, config
from tests.protocol_helpers import paillier_test_key

N, D = 4, 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_federation(tmp_path_factory.mktemp("fed"), N, federation=FED)


async def _fake_server(files, script):
    """A TLS server with the real server's credentials that runs ``script(reader, writer)``
    for the first connection; returns (port, the frames the peer sent, a done event)."""
    received: list[tuple[int, bytes]] = []
    done = asyncio.Event()

    async def handle(reader, writer):
        try:
            await script(reader, writer, received)
        finally:
            done.set()

    server = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=tls_context(files[SERVER_ID], server_side=True)
    )
    return server, server.sockets[0].getsockname()[1], received, done


async def _collect(reader, received, timeout=3.0):
    try:
        while True:
            frame = await asyncio.wait_for(read_frame(reader, Limits()), timeout)
            if frame is None:
                return
            received.append(frame)
    except (asyncio.TimeoutError, ConnectionError, OSError):
        return


def test_the_key_holder_survives_a_hostile_server_and_refuses_a_foreign_key(files):
    key = paillier_test_key()
    other = generate_paillier_keypair(1024, allow_insecure=True)[1]

    async def script(reader, writer, received):
        foreign = config(N, D, 7, key=other)  # a round under a key that is not K's
        for data in (
            encode_frame(KIND_SESSION, b"FRSN\x01\x01" + b"\xff" * 30),  # garbage session
            encode_frame(KIND_ROUND, b"\x00" * 50),  # a round message before any round
            encode_frame(KIND_SESSION, encode_session(RoundOpen(7, 0, foreign))),
        ):
            writer.write(data)
        await writer.drain()
        await _collect(reader, received)
        writer.write(FRAME_HEADER.pack(2**31, KIND_ROUND))  # then an oversized frame
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    async def main():
        server, port, received, done = await _fake_server(files, script)
        lines: list[str] = []
        kh = NetworkKeyHolder(
            files[KEYHOLDER_ID],
            federation=FED,
            address=("127.0.0.1", port),
            paillier_key=key,
            log=lines.append,
        )
        rounds = await asyncio.wait_for(kh.run(), 20)
        await done.wait()
        server.close()
        return kh, rounds, received, lines

    kh, rounds, received, lines = asyncio.run(main())
    assert rounds == []
    assert "not this key holder's key" in kh.refused[7]
    aborts = [decode(p) for k, p in received if k == KIND_ROUND]
    assert len(aborts) == 1 and isinstance(aborts[0], Abort)
    assert aborts[0].sender == KEYHOLDER_ID and "not this key holder's key" in aborts[0].reason
    assert any("bad session message" in line for line in lines)
    assert any("exceeds max_frame_bytes" in line for line in lines)


def test_a_client_refuses_a_non_finite_model_and_an_opening_without_its_certificates(files):
    cfg = config(N, D, 9)

    async def script(reader, writer, received):
        bad = bytearray(encode_session(RoundOpen(9, 0, cfg, payload=np.array([1.0]))))
        bad[-16:-8] = np.array([np.nan]).tobytes()  # the payload value becomes NaN
        writer.write(encode_frame(KIND_SESSION, bytes(bad)))
        writer.write(encode_frame(KIND_SESSION, encode_session(RoundOpen(10, 0, config(N, D, 10)))))
        await writer.drain()
        await _collect(reader, received)
        writer.close()

    async def main():
        server, port, received, done = await _fake_server(files, script)
        lines: list[str] = []
        client = NetworkClient(
            files[1],
            federation=FED,
            address=("127.0.0.1", port),
            compute_update=lambda opening: np.zeros(D),
            policy=ClientPolicy(),
            log=lines.append,
        )
        await asyncio.wait_for(client.run(), 20)
        await done.wait()
        server.close()
        return received, lines

    received, lines = asyncio.run(main())
    aborts = [decode(p) for k, p in received if k == KIND_ROUND]
    assert [a.round_id for a in aborts] == [9, 10]
    assert "non-finite" in aborts[0].reason
    assert "no certificate for client 0" in aborts[1].reason
