"""Identity on the wire: only CA-issued certificates get in, each speaks only as itself, and a
network attacker replaying an honest client's traffic cannot knock it out of the round."""

from __future__ import annotations

import asyncio
import ssl

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from fortis.files import atomic_write
from protocol.messages import AdvertiseKeys, encode
from protocol.network import PartyFiles, write_federation
from protocol.network.credentials import issue_certificate, make_ca
from protocol.network.transport import KIND_ROUND, Limits, tls_context
from tests.network_helpers import (
    FED,
    RawPeer,
    config,
    expected_encoded_sum,
    grid_updates,
    start_federation,
    stop_federation,
)

N, D = 6, 32


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    # client 6 is a member of the federation but not of the rounds below
    return write_federation(tmp_path_factory.mktemp("fed"), N + 1, federation=FED)


def _rogue_files(tmp_path, files, party, *, self_signed=False):
    """Credentials for ``party`` from a CA the federation does not trust."""
    ca_key, ca = make_ca(FED)
    key, cert = issue_certificate(ca_key, ca, FED, party)
    pem = serialization.Encoding.PEM
    atomic_write(tmp_path / "rogue.pem", cert.public_bytes(pem))
    atomic_write(
        tmp_path / "rogue.key",
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        private=True,
    )
    # trusts the real CA (so it would accept the real server)
    return PartyFiles(party, files[party].ca, tmp_path / "rogue.pem", tmp_path / "rogue.key")


async def _refused(fed, peer_files, *, certless=False):
    """Try to connect and speak; return whether the server ever accepted the connection."""
    before = len([line for line in fed.lines if "connected" in line])
    if certless:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cafile=str(peer_files.ca))
    else:
        ctx = tls_context(peer_files, server_side=False)
    try:
        reader, writer = await asyncio.open_connection(*fed.address, ssl=ctx)
        writer.write(b"\x00\x00\x00\x05\x01abcd")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(100), 5)  # TLS 1.3: the alert arrives here
        writer.close()
        refused = data == b""
    except (ssl.SSLError, ConnectionError, OSError):
        refused = True
    after = len([line for line in fed.lines if "connected" in line])
    return refused and after == before


def test_certless_and_foreign_ca_clients_are_refused_and_the_round_goes_on(files, tmp_path):
    x = grid_updates(N, D)

    async def main():
        fed = await start_federation(files, x, clients=range(N))
        outcomes = {
            "no certificate": await _refused(fed, files[0], certless=True),
            "foreign CA, client 2's identity": await _refused(
                fed, _rogue_files(tmp_path, files, 2)
            ),
        }
        res = await fed.server.run_round(config(N, D, round_id=3), step=0)
        await stop_federation(fed)
        return outcomes, res

    outcomes, res = asyncio.run(asyncio.wait_for(main(), 60))
    assert all(outcomes.values()), outcomes
    assert res.survivors == tuple(range(N))


def test_a_certificate_cannot_be_presented_without_its_key(files):
    """The other half of "a client presenting another client's certificate": TLS proves
    possession of the certificate's key, and OpenSSL will not even load a certificate with
    someone else's key, so such a connection never reaches the server."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ssl.SSLError, match="KEY_VALUES_MISMATCH|key values mismatch"):
        ctx.load_cert_chain(str(files[2].cert), str(files[3].key))


def test_a_federation_member_outside_the_population_is_refused_per_message(files):
    x = grid_updates(N, D)

    async def main():
        fed = await start_federation(files, x, clients=range(N))
        stranger = await RawPeer.connect(files[N], fed.address)
        await fed.server.wait_for(N + 1, timeout=10)
        task = asyncio.create_task(fed.server.run_round(config(N, D, round_id=4), step=0))
        await asyncio.sleep(0.05)
        advert = AdvertiseKeys(4, N, b"\x01" * 32, b"\x02" * 256)
        await stranger.send(KIND_ROUND, encode(advert))
        res = await task
        await stranger.close()
        await stop_federation(fed)
        return fed, res

    fed, res = asyncio.run(asyncio.wait_for(main(), 60))
    assert res.survivors == tuple(range(N))
    assert any(f.peer == N and f.reason == "not a member" for f in fed.server.faults)


class _Proxy:
    """A man in the middle on TCP: forwards both ways and records what the client sent."""

    def __init__(self, target):
        self.target = target
        self.recorded = bytearray()
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _pipe(self, reader, writer, record):
        try:
            while data := await reader.read(65536):
                if record:
                    self.recorded += data
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(
            self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False)
        )


def test_a_replayed_tls_stream_does_not_remove_the_honest_client(files):
    """Client 2 talks through a proxy that records its bytes; during the next round the
    attacker replays them to the server on a new connection. TLS 1.3's fresh handshake
    secrets make the replay fail the handshake: the server never sees a second "client 2",
    so the real one keeps its connection and its place in the round."""
    x = grid_updates(N, D)

    async def main():
        fed = await start_federation(files, x, clients=[i for i in range(N) if i != 2], wait=False)
        proxy = _Proxy(fed.address)
        port = await proxy.start()
        from protocol.network import ClientPolicy, NetworkClient

        honest = NetworkClient(
            files[2],
            federation=FED,
            address=("127.0.0.1", port),
            compute_update=lambda opening: x[2],
            policy=ClientPolicy(),
            rng_for=lambda step: np.random.default_rng([step, 2]),
        )
        fed.clients[2] = honest
        fed.tasks[2] = asyncio.create_task(honest.run())
        await fed.server.wait_for(N, timeout=20)
        cfg1 = config(N, D, round_id=7)
        first = await fed.server.run_round(cfg1, step=0)
        recorded = bytes(proxy.recorded)
        # the replay: a fresh TCP connection carrying client 2's recorded bytes
        cfg2 = config(N, D, round_id=8)
        task = asyncio.create_task(fed.server.run_round(cfg2, step=1))
        reader, writer = await asyncio.open_connection(*fed.address)
        writer.write(recorded)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        second = await task
        await stop_federation(fed)
        return fed, cfg2, first, second, recorded

    fed, cfg2, first, second, recorded = asyncio.run(asyncio.wait_for(main(), 60))
    assert len(recorded) > 1000
    assert 2 in first.survivors and 2 in second.survivors
    np.testing.assert_array_equal(second.encoded_sum, expected_encoded_sum(cfg2, x, range(N), 1))
    assert sum("client 2 connected" in line for line in fed.lines) == 1
    assert not any("client 2 reconnected" in line for line in fed.lines)


def test_limits_defaults_are_sane():
    lim = Limits()
    assert lim.frame_deadline(0) == lim.frame_timeout
    assert lim.frame_deadline(int(lim.min_rate)) == pytest.approx(lim.frame_timeout + 1)
