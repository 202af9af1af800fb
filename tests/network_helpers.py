"""Shared pieces of the network tests: a federation on loopback, raw TLS peers for attacks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from protocol import KEYHOLDER_ID, SERVER_ID, RoundConfig
from protocol.filtering import FilterConfig
from protocol.network import (
    ClientPolicy,
    Limits,
    NetworkClient,
    NetworkKeyHolder,
    NetworkServer,
    StageTimeouts,
)
from protocol.network.transport import encode_frame, read_frame, tls_context

FED = "testfed"


def grid_updates(n: int, d: int, seed: int = 0, scale: float = 0.01) -> np.ndarray:
    """Updates on a coarse binary grid (multiples of 2**-10): exactly representable, so the
    stochastic rounding is deterministic and sums are exact."""
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(size=(n, d)) * scale * 1024) / 1024


def config(
    n, d, round_id=1, *, key=None, hardened=False, rule="multi_krum", f=1, population=None, **kw
):
    filtering = FilterConfig(key.public_key, 1.0, rule=rule, f=f, sketch_dim=32) if key else None
    return RoundConfig(
        round_id,
        tuple(range(n)) if population is None else tuple(population),
        d,
        1.0,
        federation=FED,
        hardened=hardened,
        filtering=filtering,
        **kw,
    )


@dataclass
class Federation:
    """A running server with client (and key holder) tasks on loopback."""

    server: NetworkServer
    clients: dict[int, NetworkClient]
    tasks: dict[int, asyncio.Task]
    keyholder: NetworkKeyHolder | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def address(self):
        return ("127.0.0.1", self.server.port)


async def start_federation(
    files,
    x,
    *,
    clients=None,
    key=None,
    timeouts=None,
    limits=None,
    compute=None,
    wait=True,
) -> Federation:
    """Start the server, the clients in ``clients`` (default: all rows of ``x``) and, with a
    Paillier ``key``, the key holder; wait until they are connected."""
    lines: list[str] = []
    server = NetworkServer(
        files[SERVER_ID],
        federation=FED,
        timeouts=timeouts or StageTimeouts(first=10, stage=5, keyholder=20),
        limits=limits or Limits(),
        log=lines.append,
    )
    await server.start()
    ids = list(range(len(x))) if clients is None else list(clients)
    fed = Federation(server, {}, {}, lines=lines)
    for i in ids:
        c = NetworkClient(
            files[i],
            federation=FED,
            address=fed.address,
            compute_update=(compute or (lambda opening, i=i: x[i])),
            policy=ClientPolicy(min_paillier_bits=1024),
            rng_for=lambda step, i=i: np.random.default_rng([step, i]),
            log=lines.append,
        )
        fed.clients[i] = c
        fed.tasks[i] = asyncio.create_task(c.run())
    if key is not None:
        fed.keyholder = NetworkKeyHolder(
            files[KEYHOLDER_ID],
            federation=FED,
            address=fed.address,
            paillier_key=key,
            log=lines.append,
        )
        fed.tasks[KEYHOLDER_ID] = asyncio.create_task(fed.keyholder.run())
    if wait:
        await server.wait_for(len(ids), keyholder=key is not None, timeout=20)
    return fed


async def stop_federation(fed: Federation) -> None:
    await fed.server.shutdown()
    await asyncio.wait(list(fed.tasks.values()), timeout=10)
    await fed.server.close()
    for t in fed.tasks.values():
        t.cancel()


def expected_encoded_sum(cfg: RoundConfig, x, survivors, step: int) -> np.ndarray:
    """The exact ring sum the survivors' encodings must have (same rng as the clients)."""
    enc = cfg.encoder
    total = np.zeros(cfg.dim, dtype=np.uint64)
    for i in survivors:
        total = total + enc.encode(x[i], np.random.default_rng([step, i])).astype(np.uint64)
    return total % np.uint64(2**enc.bits) if enc.bits < 64 else total


class RawPeer:
    """A TLS connection made with some party's credentials, that sends whatever a test wants."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, files, address) -> RawPeer:
        ctx = tls_context(files, server_side=False)
        reader, writer = await asyncio.open_connection(*address, ssl=ctx)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, kind: int, payload: bytes) -> None:
        await self.send_raw(encode_frame(kind, payload))

    async def read(self, timeout: float = 10.0):
        return await asyncio.wait_for(read_frame(self.reader, Limits()), timeout)

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:  # noqa: BLE001
            pass
