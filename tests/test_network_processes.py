"""End to end on loopback with real processes: a server, a key holder and 22 client processes,
3 rounds, clients killed mid-round; every aggregate equals the in-memory driver's for the same
inputs and survivor set."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

from protocol import SERVER_ID, run_round
from protocol.network import NetworkServer, StageTimeouts, save_paillier_key, write_federation
from protocol.network.synthetic import synthetic_update
from tests.network_helpers import FED, config
from tests.protocol_helpers import paillier_test_key

N, D, SEED = 22, 200, 5
# client -> (message type it dies instead of sending, in which round id)
DEATHS = {3: ("MaskedInput", 2), 7: ("MaskedInput", 2), 11: ("UnmaskResponse", 3)}


def _spawn(args):
    return subprocess.Popen(
        [sys.executable, "-m", "protocol.network.synthetic", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("procs")
    files = write_federation(root, N, federation=FED)
    save_paillier_key(root / "keyholder.paillier", paillier_test_key())
    return root, files


def test_22_client_processes_3_rounds_with_kills_match_the_in_memory_driver(federation):
    root, files = federation
    key = paillier_test_key()

    async def main():
        server = NetworkServer(
            files[SERVER_ID],
            federation=FED,
            timeouts=StageTimeouts(first=60, stage=20, keyholder=60),
        )
        await server.start()
        common = ["--certs", str(root), "--federation", FED, "--port", str(server.port)]
        procs = [_spawn([*common, "--keyholder", "--paillier", str(root / "keyholder.paillier")])]
        for i in range(N):
            extra = ["--id", str(i), "--dim", str(D), "--seed", str(SEED)]
            extra += ["--min-paillier-bits", "1024"]
            if i in DEATHS:
                extra += ["--die-at", DEATHS[i][0], "--die-round", str(DEATHS[i][1])]
            procs.append(_spawn([*common, *extra]))
        try:
            return await rounds(server, procs)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            await server.close()

    async def rounds(server, procs):
        joined = await server.wait_for(N, keyholder=True, timeout=120)
        assert len(joined) == N
        results = []
        for step, rid in enumerate((1, 2, 3)):
            alive = sorted(server.connected)
            cfg = config(
                len(alive), D, rid, key=key, hardened=True, rule="mean", f=0, population=alive
            )
            results.append((cfg, step, await server.run_round(cfg, step=step)))
        await server.shutdown()
        outs = []
        for p in procs:
            out, _ = await asyncio.get_running_loop().run_in_executor(None, p.communicate)
            outs.append((p.returncode, out.decode()))
        return results, outs

    results, outs = asyncio.run(asyncio.wait_for(main(), 300))
    codes = {i: outs[i + 1][0] for i in range(N)}
    assert all(codes[i] == 9 for i in DEATHS), codes  # they died as told
    assert all(codes[i] == 0 for i in range(N) if i not in DEATHS), outs
    assert outs[0][0] == 0 and "3 rounds" in outs[0][1]  # the key holder served all three

    expected_dropped = {1: set(), 2: {3, 7}, 3: set()}
    for cfg, step, res in results:
        assert not res.aborted, res.abort_reason
        assert res.verification is not None and res.verification.passed
        assert set(res.dropped) == expected_dropped[cfg.round_id]
        survivors = list(res.survivors)
        if cfg.round_id == 3:
            assert 11 in survivors  # died during unmasking: its input is still in the sum
        x = np.stack([synthetic_update(SEED, i, step, D) for i in survivors])
        in_memory = run_round(x, value_range=1.0, seed=0)
        np.testing.assert_array_equal(res.aggregate, in_memory.aggregate)
        np.testing.assert_array_equal(res.aggregate, x.sum(axis=0))
