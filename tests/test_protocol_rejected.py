"""The "rejected" status: a filter leaves a received masked input out of the sum without
calling its sender a dropout; clients accept it and never reveal both share kinds."""

from __future__ import annotations

import numpy as np
import pytest
from protocol_helpers import expected_sum, make_parties, route

from protocol import ProtocolConfigError, RoundConfig, run_parties
from protocol.audit import MASK_KEY, SELF_MASK_SEED
from protocol.messages import ConsistencyRequest, UnmaskRequest


def _setup(n=8, d=5, hardened=False, graph="complete", seed=0, input_filter=None):
    x = np.random.default_rng(seed).uniform(-1, 1, (n, d))
    cfg = RoundConfig(
        round_id=9, population=range(n), dim=d, value_range=1.0, graph=graph, hardened=hardened
    )
    server, clients, _ = make_parties(
        cfg, x, seed=seed, graph_seed=bytes(range(32)), input_filter=input_filter
    )
    return cfg, server, clients, x


@pytest.mark.parametrize("hardened", [False, True])
def test_rejected_client_is_left_out_of_the_sum_and_only_its_mask_key_is_revealed(hardened):
    cfg, server, clients, x = _setup(hardened=hardened, input_filter=lambda got: {3: "outlier"})
    result = run_parties(server, clients)
    assert not result.aborted, result.abort_reason
    assert result.rejected == {3: "outlier"} and 3 not in result.dropped
    assert result.survivors == (0, 1, 2, 4, 5, 6, 7) and result.refusals == {}
    np.testing.assert_array_equal(result.encoded_sum, expected_sum(cfg, x, result.survivors))
    audit = server.audit()
    assert audit.learned_both() == frozenset()
    assert 3 in audit.key_shares and 3 not in audit.seed_shares
    for c in clients.values():  # every holder revealed client 3's mask key, never its seed
        revealed = c.audit().revealed
        assert revealed.get(3) in (None, MASK_KEY)
        assert all(revealed[o] == SELF_MASK_SEED for o in result.survivors if o in revealed)
    assert clients[3].audit().stage == "DONE"  # it answered the unmask request too


def test_rejecting_a_clients_partners_prunes_it_rather_than_exposing_it():
    """SecAgg+ graph: rejecting enough of client 0's partners leaves it fewer than t partners
    in the sum; it is pruned (out of the sum, b never revealed), not exposed."""
    n = 30
    probe_cfg, probe, probe_clients, _ = _setup(n=n, graph="secagg+")
    route(probe, probe_clients)
    partners = sorted(probe.audit().partners[0])
    t = probe.threshold
    victims_partners = partners[: len(partners) - t + 1]  # leaves t - 1 partners in the sum

    cfg, server, clients, x = _setup(
        n=n, graph="secagg+", input_filter=lambda got: dict.fromkeys(victims_partners, "test")
    )
    result = run_parties(server, clients)
    assert not result.aborted, result.abort_reason
    assert set(result.rejected) == set(victims_partners)
    assert 0 in result.pruned and 0 not in result.survivors
    audit = server.audit()
    assert 0 not in audit.seed_shares and audit.learned_both() == frozenset()
    np.testing.assert_array_equal(result.encoded_sum, expected_sum(cfg, x, result.survivors))


def test_filter_cannot_reject_a_client_whose_input_never_arrived():
    cfg, server, clients, _ = _setup(input_filter=lambda got: {99: "?"})
    with pytest.raises(ProtocolConfigError, match="did not arrive"):
        run_parties(server, clients)


def test_client_refuses_to_be_both_survivor_and_rejected():
    cfg, server, clients, _ = _setup()
    route(server, clients, until=lambda r: server.phase == "unmask").take_pending()
    u3 = server.u3
    for i in (0, 1):
        req = UnmaskRequest(cfg.round_id, server.party_id, i, u3, (), rejected=(2,))
        refused = clients[i].receive_bytes(_enc(req), peer=server.party_id)
        assert "both survivor and dropped or rejected" in str(clients[i].refusal)
        assert refused[0].reason.startswith("refused")
        assert clients[i].audit().revealed == {}


def test_hardened_split_between_rejected_and_survivor_views_is_refused():
    """The server shows client 1 a split where client 3 is rejected (mask key requested) and
    client 2 the signed split where 3 is a survivor (seed requested): the consistency
    signatures cover the rejected set too, so client 1 refuses."""
    cfg, server, clients, _ = _setup(hardened=True)
    pending = route(server, clients, until=lambda r: server.phase == "consistency").take_pending()
    checks = {m.recipient: m for m in map(_dec, pending)}
    assert all(isinstance(m, ConsistencyRequest) and m.rejected == () for m in checks.values())
    sigs = {}
    for i, m in checks.items():
        (reply,) = clients[i].receive(m)
        sigs[i] = reply.signature
    u3 = tuple(i for i in server.u3 if i != 3)
    lie = UnmaskRequest(cfg.round_id, server.party_id, 1, u3, (), tuple(sigs.items()), (), (3,))
    clients[1].receive_bytes(_enc(lie), peer=server.party_id)
    assert "differs from the one this client signed" in str(clients[1].refusal)
    assert 3 not in clients[1].audit().revealed


def _enc(msg):
    from protocol import encode

    return encode(msg)


def _dec(env):
    from protocol import decode

    return decode(env.data)


def test_consistency_signatures_cover_the_rejected_list():
    """The bytes a client signs change with the rejected list, so signatures gathered for one
    split cannot be shown to a client as signatures over another."""
    from protocol.messages import survivors_signing_bytes

    ctx = bytes(32)
    plain = survivors_signing_bytes(ctx, 1, (0, 1, 2, 4))
    assert survivors_signing_bytes(ctx, 1, (0, 1, 2, 4), (3,)) != plain
    assert survivors_signing_bytes(ctx, 1, (0, 1, 2, 4), (5,)) != survivors_signing_bytes(
        ctx, 1, (0, 1, 2, 4), (3,)
    )
