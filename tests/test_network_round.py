"""Whole rounds over mutual TLS on loopback: exact sums, dropouts, deadlines, client checks."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np
import pytest

from protocol import KEYHOLDER_ID, SERVER_ID
from protocol.network import StageTimeouts, write_federation
from protocol.network import server_node as server_node_mod
from tests.network_helpers import (
    FED,
    config,
    expected_encoded_sum,
    grid_updates,
    start_federation,
    stop_federation,
)
from tests.protocol_helpers import paillier_test_key

N, D = 7, 64


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_federation(tmp_path_factory.mktemp("fed"), N, federation=FED)


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_two_plain_rounds_give_the_exact_sum_of_every_client(files):
    x = grid_updates(N, D)

    async def main():
        fed = await start_federation(files, x)
        out = []
        for step in range(2):
            cfg = config(N, D, round_id=10 + step)
            out.append((cfg, step, await fed.server.run_round(cfg, step=step)))
        await stop_federation(fed)
        return fed, out

    fed, out = run(main())
    for cfg, step, res in out:
        assert not res.aborted and res.survivors == tuple(range(N))
        np.testing.assert_array_equal(
            res.encoded_sum, expected_encoded_sum(cfg, x, res.survivors, step)
        )
        np.testing.assert_allclose(res.aggregate, x.sum(axis=0), atol=1e-9)
        assert res.transcript.server_bytes_received > N * D * 4
    assert fed.server.faults == []
    for c in fed.clients.values():
        assert [r.included for r in c.reports] == [True, True]
    assert all(c.shutdown_reason for c in fed.clients.values())


def test_hardened_filtered_round_with_the_key_holder_rejects_the_scaled_client(files):
    key = paillier_test_key()
    x = grid_updates(N, D)
    x[3] = np.clip(x[3] * 40, -0.12, 0.12)  # far from the others, still within the norm bound

    async def main():
        fed = await start_federation(files, x, key=key)
        cfg = config(N, D, round_id=20, key=key, hardened=True)
        res = await fed.server.run_round(cfg, step=0)
        await stop_federation(fed)
        return fed, cfg, res

    fed, cfg, res = run(main())
    assert not res.aborted, res.abort_reason
    assert 3 in res.rejected and 3 not in res.survivors
    assert res.verification is not None and res.verification.passed
    np.testing.assert_array_equal(res.encoded_sum, expected_encoded_sum(cfg, x, res.survivors, 0))
    assert res.transcript.keyholder_bytes_sent > 0
    assert fed.keyholder.rounds == [20]
    assert not fed.clients[3].reports[0].included
    assert fed.clients[0].reports[0].included


def test_a_client_that_misses_the_first_deadline_counts_as_dropped(files):
    x = grid_updates(N, D, seed=1)

    async def main():
        def update(opening, i):
            if i == 5:
                time.sleep(3.0)  # training that outlives the first stage's 1.5 s
            return x[i]

        fed = await start_federation(
            files,
            x,
            timeouts=StageTimeouts(first=1.5, stage=5),
        )
        for i, c in fed.clients.items():
            c.compute_update = lambda opening, i=i: update(opening, i)
        cfg = config(N, D, round_id=30)
        res = await fed.server.run_round(cfg, step=0)
        await stop_federation(fed)
        return res

    res = run(main())
    assert not res.aborted
    assert 5 in res.dropped and 5 not in res.survivors
    np.testing.assert_allclose(res.aggregate, np.delete(x, 5, axis=0).sum(axis=0), atol=1e-9)


def test_clients_killed_mid_round_are_dropped_and_the_sum_is_the_survivors(files):
    x = grid_updates(N, D, seed=2)

    async def main():
        fed = await start_federation(files, x)
        cfg = config(N, D, round_id=40)
        # client 1's process dies at the moment it would send its masked input
        dial = fed.clients[1]._dial
        real_send = dial.send_round

        def send_or_die(messages):
            if any(type(m).__name__ == "MaskedInput" for m in messages):
                fed.tasks[1].cancel()
                dial.conn.writer.transport.abort()
                return
            real_send(messages)

        dial.send_round = send_or_die
        task = asyncio.create_task(fed.server.run_round(cfg, step=0))
        fed.tasks[6].cancel()  # client 6 dies before it even joins
        res = await task
        await stop_federation(fed)
        return res

    res = run(main())
    assert not res.aborted, res.abort_reason
    assert {1, 6} <= set(res.dropped)
    np.testing.assert_allclose(res.aggregate, x[list(res.survivors)].sum(axis=0), atol=1e-9)
    assert len(res.survivors) >= 4


def test_clients_refuse_a_threshold_below_the_rule_at_once(files):
    x = grid_updates(N, D)

    async def main():
        fed = await start_federation(files, x)
        cfg = config(N, D, round_id=50, threshold=2)
        t0 = time.monotonic()
        res = await fed.server.run_round(cfg, step=0)
        took = time.monotonic() - t0
        await stop_federation(fed)
        return fed, res, took

    fed, res, took = run(main())
    assert res.aborted
    assert took < 5, "refusals are Abort messages, the server need not wait for the deadline"
    for c in fed.clients.values():
        assert len(c.reports) == 1 and not c.reports[0].joined
        assert "below the complete graph's rule" in c.reports[0].refused
    assert all("client aborted" in r for r in res.excluded.values())


def test_a_server_that_swaps_the_key_holders_key_is_caught_by_the_endorsement(files, monkeypatch):
    key = paillier_test_key()
    from secagg.paillier_private import generate_paillier_keypair

    server_key = generate_paillier_keypair(1024, allow_insecure=True)[1]
    x = grid_updates(N, D)
    real_open = server_node_mod.RoundOpen

    def lying_open(rid, step, cfg, certs=None, *rest, **kw):
        if certs:  # the clients' opening: the server's own key in place of the key holder's
            filt = dataclasses.replace(cfg.filtering, key=server_key.public_key)
            cfg = dataclasses.replace(cfg, filtering=filt)
        return real_open(rid, step, cfg, *((certs,) if certs is not None else ()), *rest, **kw)

    monkeypatch.setattr(server_node_mod, "RoundOpen", lying_open)

    async def main():
        fed = await start_federation(files, x, key=key)
        res = await fed.server.run_round(config(N, D, round_id=60, key=key), step=0)
        await stop_federation(fed)
        return fed, res

    fed, res = run(main())
    assert res.aborted
    for c in fed.clients.values():
        assert "endorsement does not cover this configuration" in c.reports[0].refused


def test_a_server_that_substitutes_a_certificate_is_caught(files, monkeypatch):
    x = grid_updates(N, D)
    real_open = server_node_mod.RoundOpen

    def lying_open(rid, step, cfg, certs=None, *rest, **kw):
        certs = dict(certs or {})
        if 2 in certs:
            certs[2] = certs[4]  # a server that wants client 2 replaced by a key it controls
        return real_open(rid, step, cfg, certs, *rest, **kw)

    monkeypatch.setattr(server_node_mod, "RoundOpen", lying_open)

    async def main():
        fed = await start_federation(files, x)
        res = await fed.server.run_round(config(N, D, round_id=70, hardened=True), step=0)
        await stop_federation(fed)
        return fed, res

    fed, res = run(main())
    assert res.aborted
    refusals = {i: c.reports[0].refused for i, c in fed.clients.items()}
    assert all("names client 4" in r or "not its own" in r for r in refusals.values()), refusals


def test_the_server_and_key_holder_wire_ids_are_fixed():
    assert SERVER_ID != KEYHOLDER_ID
