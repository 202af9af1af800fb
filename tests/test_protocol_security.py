"""Security properties of the protocol parties.

* The server's view of an honest client's masked input is uniform (statistically, and by
  construction: y = x + PRG(b) + pairwise masks).
* A curious server asking for both share kinds of one client is refused by honest clients.
* t-1 colluding clients together with the server's view learn nothing about b_i or s_sk_i.
* Hardened mode: forged advertisements are rejected; a server lying about U3 is caught.
"""

from __future__ import annotations

import numpy as np
import pytest
from protocol_helpers import make_parties, route, run_to_masked, to_server
from scipy import stats

from protocol import Client, ClientStage, ProtocolError, RoundConfig, RoundLedger, Server
from protocol.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    KeyEntry,
    ServerKeys,
    UnmaskRequest,
    UnmaskResponse,
    mask_agreement_info,
)
from secagg import keys as sk
from secagg import shamir, vss
from secagg.errors import ShamirError
from secagg.masking import pairwise_seed
from secagg.prg import MaskExpander


def make_round(n, d=4, *, x=None, hardened=False, bits=32, value_range=1.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-value_range, value_range, (n, d)) if x is None else x
    cfg = RoundConfig(
        round_id=5,
        population=range(n),
        dim=d,
        value_range=value_range,
        bits=bits,
        hardened=hardened,
    )
    server, clients, _ = make_parties(cfg, x, seed=seed, graph_seed=rng.bytes(32))
    clients = list(clients.values())
    return cfg, server, clients, x


def to_clients(clients, msgs, skip=()):
    out = []
    for m in msgs:
        if m.recipient not in skip:
            out += clients[m.recipient].receive(m)
    return out


# --- the server's view of a masked input ----------------------------------------------------


def test_masked_input_is_uniform_whatever_the_input():
    d, bits = 40_000, 8
    x = np.zeros((3, d))
    x[0] = 1.0  # the largest input
    x[1] = -1.0  # the smallest input
    cfg, server, clients, _ = make_round(3, d, x=x, bits=bits)
    masked, _ = run_to_masked(server, clients)
    bins = np.arange(2**bits + 1)
    hists = [np.histogram(m.masked, bins=bins)[0] for m in masked[:2]]
    for h in hists:
        assert stats.chisquare(h).pvalue > 1e-5
    # same distribution for two different inputs
    assert stats.chi2_contingency(np.array(hists)).pvalue > 1e-5
    # control: the test has power -- the unmasked encoding is far from uniform
    enc = cfg.encoder.encode(x[0], np.random.default_rng(0))
    assert stats.chisquare(np.histogram(enc, bins=bins)[0]).pvalue < 1e-12


def test_masked_input_is_one_time_pad_by_construction():
    d, bits = 257, 32
    cfg, server, clients, x = make_round(4, d, bits=bits)
    masked, _ = run_to_masked(server, clients)
    me = clients[1]
    y = masked[1].masked
    enc = cfg.encoder.encode(x[1], np.random.default_rng([0, 1]))
    exp = MaskExpander(d, bits)
    mask = exp.expand(me.audit().self_mask_seed).astype(
        np.uint64
    )  # PRG(b_1): fresh, never sent in the clear
    assert me.audit().partners == {0, 2, 3}
    for j in me.audit().partners:
        key = vss.dh_agree(
            vss.DHKeyPair.from_private_bytes(me.audit().mask_private_key),
            me.audit().peer_mask_keys[j],
            mask_agreement_info(cfg.round_id, 1, j),
        )
        m = exp.expand(pairwise_seed(key, cfg.round_id)).astype(np.uint64)
        mask = mask + m if j > 1 else mask - m
    # y = enc(x) + PRG(b) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)  (mod 2^bits)
    np.testing.assert_array_equal(y, cfg.encoder.wrap(enc.astype(np.uint64) + mask))
    # every coordinate carries its own full-width pad: y - enc(x) spans the whole ring
    pad = cfg.encoder.wrap(y.astype(np.uint64) - enc.astype(np.uint64))
    assert pad.max() > 2**31 and len(np.unique(pad)) == d


# --- curious server -----------------------------------------------------------------------


def test_curious_server_asking_both_share_kinds_is_refused():
    """Flower 1.42 handed out both kinds of shares for a client listed as alive and dropped."""
    cfg, server, clients, _ = make_round(6)
    _, requests = run_to_masked(server, clients)
    assert all(isinstance(r, UnmaskRequest) for r in requests)
    target = 2
    for req in requests:
        if req.recipient == target:
            continue
        evil = UnmaskRequest(
            req.round_id, req.sender, req.recipient, req.survivors, [target], req.signatures
        )
        client = clients[req.recipient]
        with pytest.raises(ProtocolError) as info:
            client.receive(evil)
        err = info.value
        assert err.sender == evil.sender and "from server" in str(err)
        assert err.role == f"client {req.recipient}" and err.event == "UnmaskRequest"
        assert "both survivor and dropped" in str(err)
        assert client.stage is ClientStage.FAILED
        with pytest.raises(ProtocolError):  # and it stays silent afterwards
            client.receive(req)


def test_client_answers_one_unmask_request_only_and_never_as_dropped():
    cfg, server, clients, _ = make_round(6)
    _, requests = run_to_masked(server, clients)
    req = requests[0]
    (resp,) = clients[0].receive(req)
    assert isinstance(resp, UnmaskResponse)
    assert {o for o, _ in resp.self_seed_shares} == set(range(6))
    assert resp.mask_key_shares == ()
    # the server swaps a client into the dropped list in a second request: refused
    swapped = UnmaskRequest(req.round_id, req.sender, 0, [0, 1, 3, 4, 5], [2])
    with pytest.raises(ProtocolError, match="not allowed in this stage"):
        clients[0].receive(swapped)
    # a request listing its own recipient as dropped: refused
    own = UnmaskRequest(req.round_id, req.sender, 1, [0, 2, 3, 4, 5], [1])
    with pytest.raises(ProtocolError, match="listed as dropped"):
        clients[1].receive(own)


def _adversary_points(server, clients, owner, colluders, kind):
    """Every share of ``owner``'s secret (``kind`` 0: self-mask seed b, 1: mask key s_sk) that
    the server and the colluding clients hold together: what the server received at unmasking,
    plus the colluders' own verified shares. Points are holder id + 1."""
    audit = server.audit()
    received = audit.seed_shares if kind == 0 else audit.key_shares
    points = dict(received.get(owner, {}))
    for c in colluders:
        held = clients[c].audit().held.get(owner)
        if held is not None:
            points[c + 1] = shamir.share_from_bytes(held[kind])
    return points


@pytest.mark.parametrize("colluders", [(1, 2, 3), (4, 5, 6), (1, 3, 5)])
def test_t_minus_1_colluders_and_server_cannot_recover_honest_secrets(colluders):
    n = 7
    cfg, server, clients, _ = make_round(n)
    _, requests = run_to_masked(server, clients)
    to_server(server, to_clients(clients, requests))
    assert server.result is not None
    t = server.threshold
    assert t == 4 and len(colluders) == t - 1
    for honest in sorted(set(range(n)) - set(colluders)):
        # Every honest client is a survivor: its b is unmasked by design, so its input stays
        # hidden only while its mask key s_sk does. The adversary's joint view -- everything
        # the server received plus the colluders' own shares -- must hold fewer than t points of
        # each honest s_sk (one more honest share, e.g. a client answering with both kinds,
        # would make it t and the key would come out; see the last assertion).
        points = _adversary_points(server, clients, honest, colluders, kind=1)
        assert len(points) == t - 1, (honest, sorted(points))
        with pytest.raises(ShamirError, match="need threshold=4"):
            shamir.reconstruct(points, t)
    # with one more share (t in total) the secret does come out: the threshold is exact
    honest = min(set(range(n)) - set(colluders))
    extra = next(h for h in clients[honest].audit().partners if h not in colluders)
    points = _adversary_points(server, clients, honest, colluders, kind=1)
    points[extra + 1] = shamir.share_from_bytes(clients[extra].audit().held[honest][1])
    assert shamir.reconstruct(points, t) == clients[honest].audit().mask_private_key


# --- hardened mode ------------------------------------------------------------------------


def test_hardened_forged_advertisement_rejected_by_server():
    cfg, server, clients, _ = make_round(6, hardened=True)
    adverts = [c.start() for c in clients]
    real = adverts[2]
    mitm_c, mitm_s = sk.KeyPair.generate(), vss.DHKeyPair.generate()
    forged = AdvertiseKeys(
        real.round_id, 2, mitm_c.public_bytes(), mitm_s.public_bytes(), real.signature
    )
    with pytest.raises(ProtocolError, match="signature does not verify"):
        server.receive_strict(forged)
    keys = to_server(server, [forged] + adverts)
    assert [f.sender for f in server.faults] == [2, 2]  # the forgery, then 2 is excluded
    assert 2 not in server.u1
    fwd = to_server(server, to_clients(clients, keys))
    fwd = to_server(server, to_clients(clients, fwd))  # complaints -> partners
    reqs = to_server(server, to_clients(clients, fwd))
    sigs = to_server(server, to_clients(clients, reqs))
    to_server(server, to_clients(clients, sigs))
    assert server.result is not None and server.result.survivors == (0, 1, 3, 4, 5)


def test_hardened_client_rejects_server_substituting_keys():
    cfg, server, clients, _ = make_round(5, hardened=True)
    keys = to_server(server, [c.start() for c in clients])
    msg = next(m for m in keys if m.recipient == 0)
    attacker = sk.KeyPair.generate()
    entries = [
        KeyEntry(e.client_id, attacker.public_bytes(), e.s_pk, e.signature)
        if e.client_id == 3
        else e
        for e in msg.keys
    ]
    evil = ServerKeys(
        msg.round_id,
        msg.sender,
        0,
        msg.graph_kind,
        msg.graph_seed,
        msg.threshold,
        msg.degree,
        entries,
    )
    with pytest.raises(ProtocolError, match="client 3 has an invalid signature") as info:
        clients[0].receive(evil)
    assert "from server" in str(info.value)


def _hardened_to_consistency(n=7):
    cfg, server, clients, _ = make_round(n, hardened=True)
    _, checks = run_to_masked(server, clients)
    assert all(isinstance(c, ConsistencyRequest) for c in checks)
    return cfg, server, clients, checks


def test_hardened_server_lying_about_survivors_is_caught():
    cfg, server, clients, checks = _hardened_to_consistency()
    sigs = to_clients(clients, checks)
    requests = to_server(server, sigs)
    need = cfg.min_signatures(server.threshold)  # the server forwards exactly what is needed
    assert all(isinstance(r, UnmaskRequest) and len(r.signatures) == need for r in requests)
    # the server now claims client 2 dropped, to get its mask-key shares
    for r in requests[3:]:
        lie = UnmaskRequest(
            r.round_id,
            r.sender,
            r.recipient,
            [i for i in r.survivors if i != 2],
            [2],
            r.signatures,
        )
        with pytest.raises(ProtocolError, match="differs from the one this client signed"):
            clients[r.recipient].receive(lie)
    # the honest requests are still answered by the others
    answers = to_clients(clients, requests[:3])
    assert all(isinstance(a, UnmaskResponse) for a in answers)


def test_hardened_split_view_attack_lacks_signatures():
    cfg, server, clients, checks = _hardened_to_consistency()
    u3 = checks[0].survivors
    fake = tuple(i for i in u3 if i != 2)
    group_b = [4, 5, 6]  # shown U3 without client 2; group A = 0..3 sees the truth
    sigs_b = {}
    for i in group_b:
        (s,) = clients[i].receive(ConsistencyRequest(cfg.round_id, checks[0].sender, i, fake))
        sigs_b[i] = s.signature
    sigs_a = {}
    for i in (0, 1, 3):
        (s,) = clients[i].receive(checks[i])
        sigs_a[i] = s.signature
    need = cfg.min_signatures(server.threshold)
    assert len(sigs_b) < need  # the smaller group is not a majority of the population
    lie = UnmaskRequest(cfg.round_id, checks[0].sender, 4, fake, [2], sigs_b)
    with pytest.raises(ProtocolError, match=f"only 3 consistency signatures, {need} needed"):
        clients[4].receive(lie)
    # adding group A's signatures does not help: they were made over the true U3
    lie = UnmaskRequest(cfg.round_id, checks[0].sender, 5, fake, [2], {**sigs_a, **sigs_b})
    with pytest.raises(ProtocolError, match="does not verify"):
        clients[5].receive(lie)


def test_hardened_needs_pki():
    cfg = RoundConfig(round_id=0, population=range(3), dim=2, value_range=1.0, hardened=True)
    with pytest.raises(ValueError, match="pki"):
        Server(cfg)
    with pytest.raises(ValueError, match="signing_key and pki"):
        Client(cfg, 0, np.zeros(2))
    key = sk.SigningKeyPair.generate()
    with pytest.raises(ValueError, match="round_ledger"):
        Client(cfg, 0, np.zeros(2), signing_key=key, pki={0: key.public_bytes()})


def test_hardened_split_view_with_one_colluder_is_refused():
    """Reviewer's attack: the server shows survivor set A (with victim 0) to clients 0-3 and
    set B (without it) to clients 4-7; colluder 8 signs both. With a bare-majority signature
    bound both sets got enough signatures and the victim's input was recovered exactly."""
    from protocol import Client, ProtocolError, RoundConfig, Server
    from protocol.messages import ConsistencyRequest, UnmaskRequest, survivors_signing_bytes
    from secagg import keys as sk

    n, d, rid, server_id = 9, 5, 7, 2**32 - 1
    pop = tuple(range(n))
    signing = {i: sk.SigningKeyPair.generate() for i in pop}
    pki = {i: signing[i].public_bytes() for i in pop}
    cfg = RoundConfig(round_id=rid, population=pop, dim=d, value_range=1.0, hardened=True)
    srv = Server(cfg, pki=pki)
    clients = {
        i: Client(
            cfg,
            i,
            np.full(d, 0.01 * i),
            signing_key=signing[i],
            pki=pki,
            round_ledger=RoundLedger.in_memory(),
        )
        for i in pop
    }
    assert cfg.min_signatures(srv.threshold) > (n + srv.threshold - 1) / 2
    # masked inputs are sent; the server turns malicious instead of asking for signatures
    route(srv, clients, until=lambda r: srv.phase == "consistency").take_pending()
    evil, A, B = 8, [0, 1, 2, 3], [4, 5, 6, 7]
    u_a, u_b = pop, tuple(i for i in pop if i != 0)
    for group, u3 in ((A, u_a), (B, u_b)):
        sigs = {
            i: clients[i].receive(ConsistencyRequest(rid, server_id, i, u3))[0].signature
            for i in group
        }
        sigs[evil] = signing[evil].sign(survivors_signing_bytes(srv.context, evil, u3))
        dropped = () if u3 == u_a else (0,)
        for i in group:
            with pytest.raises(ProtocolError, match="consistency signatures"):
                clients[i].receive(UnmaskRequest(rid, server_id, i, u3, dropped, sigs))


@pytest.mark.parametrize("field", ["c_pk", "s_pk"])
def test_low_order_key_is_the_advertisers_fault_and_the_round_goes_on(field):
    from protocol import Client, RoundConfig, Server, run_parties
    from protocol.messages import AdvertiseKeys

    n = 6
    cfg = RoundConfig(round_id=1, population=tuple(range(n)), dim=4, value_range=1.0)

    class LowOrderKey(Client):
        def start(self):
            m = super().start()
            # the X25519 all-zero point; the identity element of the masking group
            zero, one = bytes(32), bytes(255) + b"\x01"
            c_pk, s_pk = (zero, m.s_pk) if field == "c_pk" else (m.c_pk, one)
            return AdvertiseKeys(m.round_id, m.sender, c_pk, s_pk)

    clients = {i: Client(cfg, i, np.full(4, 0.1)) for i in range(1, n)}
    clients[0] = LowOrderKey(cfg, 0, np.full(4, 0.1))
    result = run_parties(Server(cfg), clients)
    assert not result.aborted
    assert result.survivors == (1, 2, 3, 4, 5)
    assert [f.sender for f in result.faults] == [0] and field in result.faults[0].reason
    np.testing.assert_allclose(result.aggregate, np.full(4, 0.5), atol=1e-6)
