"""The one in-memory router (protocol.router) and its fault layers, against the real parties."""

from __future__ import annotations

import numpy as np
import pytest
from protocol_helpers import expected_sum, make_parties

from protocol import SERVER_ID, ProtocolConfigError, RoundConfig, run_parties
from protocol.router import Dropouts, Envelope, Layer, Recorder, Replay, Router, Tamper

N, D = 8, 6


def _round(seed=0, hardened=False):
    x = np.random.default_rng(seed).uniform(-1, 1, (N, D))
    cfg = RoundConfig(round_id=4, population=range(N), dim=D, value_range=1.0, hardened=hardened)
    server, clients, _ = make_parties(cfg, x, seed=seed, graph_seed=bytes(32))
    return cfg, server, clients, x


@pytest.mark.parametrize("hardened", [False, True])
def test_router_runs_a_whole_round_and_logs_every_byte_and_phase(hardened):
    cfg, server, clients, x = _round(hardened=hardened)
    rec = Recorder()
    log = Router([server, *clients.values()], layers=[rec]).run()
    assert server.result is not None
    np.testing.assert_array_equal(server.result.encoded_sum, expected_sum(cfg, x, range(N)))
    sent = sum(len(e.data) for e in rec.envelopes)
    assert sum(log.bytes_sent.values()) == sent == sum(log.bytes_received.values())
    phases = {"advertise", "share_keys", "complaints", "masked_input", "unmask"}
    if hardened:
        phases.add("consistency")
    assert set(log.seconds[SERVER_ID]) == phases
    assert all(set(log.seconds[i]) == phases for i in range(N))
    assert log.messages_sent == log.messages_delivered == len(rec.envelopes)
    kinds = [e.kind for e in rec.envelopes]
    assert kinds.count("MaskedInput") == N and kinds.count("UnmaskResponse") == N


def test_dropout_layer_leaves_the_client_out_from_its_phase_on():
    cfg, server, clients, x = _round()
    drops = Dropouts({2: "masked_input", 5: "advertise"})
    rec = Recorder()
    Router([server, *clients.values()], layers=[drops, rec]).run()
    assert server.result.survivors == tuple(i for i in range(N) if i not in (2, 5))
    assert not [e for e in rec.envelopes if 5 in (e.sender, e.recipient)]
    assert not [e for e in rec.envelopes if e.sender == 2 and e.kind == "MaskedInput"]
    assert drops.gone == {2, 5}
    np.testing.assert_array_equal(
        server.result.encoded_sum, expected_sum(cfg, x, server.result.survivors)
    )


def test_tampered_masked_input_is_its_senders_fault_and_the_round_goes_on():
    cfg, server, clients, x = _round()

    def flip(env: Envelope) -> bytes:
        data = bytearray(env.data)
        data[-1] ^= 0x01  # inside the body: the masked vector no longer matches the size
        return bytes(data[:-3])

    tamper = Tamper(lambda e: e.sender == 3 and e.kind == "MaskedInput", flip, count=1)
    result = run_parties(server, clients, layers=[tamper])
    assert len(tamper.changed) == 1
    assert not result.aborted and 3 not in result.survivors
    assert [f.sender for f in result.faults] == [3]
    np.testing.assert_array_equal(result.encoded_sum, expected_sum(cfg, x, result.survivors))


def test_replayed_server_message_is_refused_by_the_client_and_the_round_goes_on():
    cfg, server, clients, x = _round()
    replay = Replay(
        capture=lambda e: e.kind == "ServerKeys" and e.recipient == 2,
        trigger=lambda e: e.kind == "MaskingPartners" and e.recipient == 2,
    )
    result = run_parties(server, clients, layers=[replay])
    assert len(replay.replayed) == 1
    assert "not allowed in this stage" in result.refusals[2]
    # client 2's masked input had arrived first, so it is still in the (exact) sum
    assert not result.aborted and 2 in result.survivors
    np.testing.assert_array_equal(result.encoded_sum, expected_sum(cfg, x, result.survivors))


def test_a_third_party_plugs_in_without_touching_the_router():
    """Anything with the Party interface is routed: here an observer that the clients copy
    nothing to, and that answers every deadline sweep with nothing, does not change the round;
    messages addressed to it by a layer reach it."""
    cfg, server, clients, x = _round()

    class Observer:
        party_id, phase, done = 10**6, "observe", False

        def __init__(self):
            self.seen: list[bytes] = []

        def begin(self):
            return []

        def receive_bytes(self, data, *, peer=None):
            self.seen.append(data)
            return []

        def deadline(self):
            return []

    class CopyMaskedInputs(Layer):
        def on_send(self, router, env):
            if env.kind == "MaskedInput":
                return [env, Envelope(env.sender, 10**6, env.data, env.kind, env.phase)]
            return [env]

    obs = Observer()
    Router([server, obs, *clients.values()], layers=[CopyMaskedInputs()]).run()
    assert len(obs.seen) == N
    np.testing.assert_array_equal(server.result.encoded_sum, expected_sum(cfg, x, range(N)))


def test_router_refuses_duplicate_ids_and_non_parties():
    _, server, clients, _ = _round()
    with pytest.raises(ProtocolConfigError, match="two parties with id 0"):
        Router([server, clients[0], clients[0]])
    with pytest.raises(ProtocolConfigError, match="lacks the Party interface"):
        Router([server, object()])


def test_run_until_stops_between_deliveries_and_resumes():
    cfg, server, clients, x = _round()
    router = Router([server, *clients.values()])
    router.run(until=lambda r: server.phase == "masked_input")
    assert server.phase == "masked_input" and server.result is None
    router.run()
    np.testing.assert_array_equal(server.result.encoded_sum, expected_sum(cfg, x, range(N)))
