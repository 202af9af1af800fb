"""The security review's attacks, played against the real Client and Server (issue 7).

Each test drives real parties with a scripted malicious server or client and checks that the
attack no longer works: the adversary ends with fewer than t shares of the victim's self-mask
seed (so its view is the same whatever the victim's input), a replayed or reused round is
refused, a hostile message is rejected cheaply, and a garbled sum is never released.
"""

from __future__ import annotations

import secrets
import struct
import time
import tracemalloc

import numpy as np
import pytest
from protocol_helpers import make_parties, to_server

from protocol import (
    Client,
    ProtocolError,
    RoundConfig,
    RoundLedger,
    RoundReplayError,
    Server,
    ServerStage,
    run_parties,
)
from protocol.errors import SERVER_ID
from protocol.messages import (
    HEADER_BYTES,
    MAGIC,
    VERSION,
    AdvertiseKeys,
    ConsistencyRequest,
    ForwardShares,
    MaskedInput,
    MaskingPartners,
    ServerKeys,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    encode,
)
from secagg import keys as sk
from secagg import shamir, vss


def hardened_round(n, graph="complete", *, rid=1, d=8, seed=0, **cfg_kw):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, d))
    cfg = RoundConfig(
        round_id=rid,
        population=range(n),
        dim=d,
        value_range=1.0,
        graph=graph,
        hardened=True,
        **cfg_kw,
    )
    server, clients, signing = make_parties(cfg, x, seed=seed)
    return cfg, server, clients, signing, x


def answer(clients, msgs, refusals=None):
    """Deliver server messages; collect replies (and refusals, client id -> error)."""
    out = []
    for m in msgs:
        try:
            out += clients[m.recipient].receive(m)
        except ProtocolError as exc:
            if refusals is None:
                raise
            refusals[m.recipient] = exc
    return out


# --- finding 1: partial forwarding -------------------------------------------------------


def _partial_forwarding(n, graph, n_colluders, n_partners, **cfg_kw):
    """The review's attack: the server forwards to victim V only ``n_partners`` partners'
    shares, made of colluders C and honest clients D, then announces U3 = everyone - D and asks
    every holder for V's self-mask share. Returns what the adversary ends up holding."""
    cfg, server, clients, signing, x = hardened_round(n, graph, **cfg_kw)
    t = server.threshold
    keys = to_server(server, [c.start() for c in clients.values()])
    fwd = to_server(server, answer(clients, keys))
    victim = 0
    honest_fwd = next(m for m in fwd if m.recipient == victim)
    nbrs = [i for i, _ in honest_fwd.shares]
    colluders, rest = nbrs[:n_colluders], nbrs[n_colluders:]
    dropped = rest[: n_partners - n_colluders]  # honest partners the server will call dropped
    partners = set(colluders) | set(dropped)
    refusals: dict[int, ProtocolError] = {}
    parts = to_server(server, answer(clients, fwd))  # honest shares and complaints
    restricted = MaskingPartners(cfg.round_id, SERVER_ID, victim, partners)
    masked = answer(clients, [restricted if m.recipient == victim else m for m in parts], refusals)
    view = {"t": t, "refusals": refusals, "colluders": colluders, "seed_shares": {}}
    if victim in refusals:
        return view, clients
    by_sender = {m.sender: m for m in masked}
    u3 = tuple(sorted(set(by_sender) - set(dropped)))
    sigs = {}
    for i in u3:  # colluders sign anything; honest clients check the set first
        if i in colluders:
            sigs[i] = None
            continue
        for reply in answer(
            clients, [ConsistencyRequest(cfg.round_id, SERVER_ID, i, u3)], refusals
        ):
            sigs[i] = reply.signature
    # colluders' signatures, made with their own keys over the server's context
    from protocol.messages import (
        encode_partner_record,
        input_digest,
        survivors_signing_bytes,
    )

    for c in colluders:
        sigs[c] = signing[c].sign(survivors_signing_bytes(server.context, c, u3))
    records = {
        i: encode_partner_record(m.partners, input_digest(m.masked), m.signature)
        for i, m in by_sender.items()
    }
    honest_holders = [i for i in u3 if i not in colluders]  # the victim is asked too
    for h in honest_holders:
        owners = (set(clients[h].audit().partners) & set(u3)) | {h}
        req = UnmaskRequest(
            cfg.round_id,
            SERVER_ID,
            h,
            u3,
            tuple(sorted(set(by_sender) - set(u3))),
            sigs,
            {o: records[o] for o in owners},
        )
        for reply in answer(clients, [req], refusals):
            for owner, share in reply.self_seed_shares:
                if owner == victim:
                    view["seed_shares"][h + 1] = shamir.share_from_bytes(share)
    for c in colluders:  # the colluders hand over their own shares of V's seed
        opened = clients[c].audit().held[victim]
        view["seed_shares"][c + 1] = shamir.share_from_bytes(opened[0])
    return view, clients


@pytest.mark.parametrize(
    "n, graph, n_colluders",
    [(30, "secagg+", 0), (20, "complete", 7), (12, "complete", 0), (40, "secagg+", 2)],
)
def test_partial_forwarding_to_t_minus_1_partners_is_refused(n, graph, n_colluders):
    cfg = RoundConfig(round_id=1, population=range(n), dim=1, value_range=1.0, graph=graph)
    t = cfg.round_threshold
    view, _ = _partial_forwarding(n, graph, min(n_colluders, t - 1), t - 1)
    err = view["refusals"][0]
    assert "below the threshold" in err.detail and err.sender == SERVER_ID
    assert view["seed_shares"] == {}  # the victim never sent a masked input


@pytest.mark.parametrize(
    "n, graph, n_colluders",
    [(30, "secagg+", 0), (20, "complete", 7), (30, "complete", 15), (40, "secagg+", 2)],
)
def test_partial_forwarding_gives_the_server_fewer_than_t_seed_shares(n, graph, n_colluders):
    cfg = RoundConfig(round_id=1, population=range(n), dim=1, value_range=1.0, graph=graph)
    t = cfg.round_threshold
    n_colluders = min(n_colluders, t - 1)
    view, clients = _partial_forwarding(n, graph, n_colluders, t)
    shares = view["seed_shares"]
    # only the colluders' own shares: every honest holder refused to release V's seed share
    assert set(shares) == {c + 1 for c in view["colluders"]}
    assert len(shares) < t
    reasons = ("partners are survivors", "did not mask with this client", "signatures")
    for i, err in view["refusals"].items():
        assert err.sender == SERVER_ID
        assert i == 0 or any(r in err.detail for r in reasons), err.detail
    assert 0 in view["refusals"]  # the victim never answers for its own share either
    # At most t - 1 shares: every candidate seed is equally consistent with the adversary's
    # view (pad it to t - 1 points with guesses), so its best reconstruction of the victim's
    # input is no better than a guess.
    padded = dict(shares)
    x = 10**6
    while len(padded) < t - 1:
        padded[x] = secrets.randbelow(shamir.PRIME)
        x += 1
    true_b = int.from_bytes(clients[0].audit().self_mask_seed, "big")
    for candidate in (true_b, int.from_bytes(secrets.token_bytes(32), "big")):
        coeffs = shamir.consistent_polynomial(padded, candidate, t)
        assert all(shamir.evaluate(coeffs, xk) == yk for xk, yk in padded.items())


def test_honest_hardened_round_with_dropouts_still_completes_under_the_partner_rule():
    n = 30
    cfg, server, clients, _, x = hardened_round(n, "secagg+", d=4, seed=3)
    drops = {"masked_input": [1, 2, 3], "unmask": [4]}
    result = run_parties(server, clients, dropouts=drops)
    assert not result.aborted, result.abort_reason
    assert set(result.survivors) | set(result.pruned) == set(range(n)) - {1, 2, 3}
    total = x[list(result.survivors)].sum(axis=0)
    np.testing.assert_allclose(result.aggregate, total, atol=n * cfg.encoder.resolution)


# --- finding 2: replays across rounds ------------------------------------------------------


def test_reused_round_id_is_refused_by_the_ledger(tmp_path):
    path = tmp_path / "client0" / "rounds.json"
    ledger = RoundLedger(path)
    cfg7 = RoundConfig(round_id=7, population=range(3), dim=2, value_range=1.0)
    Client(cfg7, 0, np.zeros(2), round_ledger=ledger).start()
    for rid in (7, 6):  # the same id again, or an older one: refused before any key is made
        cfg = RoundConfig(round_id=rid, population=range(3), dim=2, value_range=1.0)
        client = Client(cfg, 0, np.zeros(2), round_ledger=ledger)
        with pytest.raises(RoundReplayError, match="not after round 7"):
            client.start()
        assert client.audit().share_public_key is None
    # the record survives a restart (a new ledger object reading the same file)
    again = Client(cfg7, 0, np.zeros(2), round_ledger=RoundLedger(path))
    with pytest.raises(RoundReplayError):
        again.start()
    # other federations and later rounds are fine
    other = RoundConfig(round_id=7, population=range(3), dim=2, value_range=1.0, federation="lab-b")
    Client(other, 0, np.zeros(2), round_ledger=ledger).start()
    later = RoundConfig(round_id=8, population=range(3), dim=2, value_range=1.0)
    Client(later, 0, np.zeros(2), round_ledger=ledger).start()
    assert RoundLedger(path).last("fortis") == 8 and RoundLedger(path).last("lab-b") == 7
    assert sorted(p.name for p in path.parent.iterdir()) == ["rounds.json"]  # no temp files


def test_unreadable_ledger_is_refused_not_overwritten(tmp_path):
    path = tmp_path / "rounds.json"
    path.write_text("[1, 2")
    with pytest.raises(ValueError, match="unreadable"):
        RoundLedger(path)
    assert path.read_text() == "[1, 2"


def test_signatures_do_not_carry_over_between_rounds_with_the_same_id():
    """The review's attack: two abandoned rounds with one id give signatures over 'everyone'
    and over 'everyone - V'. Even clients that lost their ledger refuse them in a new round:
    the signed context includes the graph seed, a hash of that round's fresh keys."""
    n = 7
    cfg, server_a, clients_a, signing, _ = hardened_round(n, rid=5, seed=1)
    keys = to_server(server_a, [c.start() for c in clients_a.values()])
    fwd = to_server(server_a, answer(clients_a, keys))
    fwd = to_server(server_a, answer(clients_a, fwd))  # complaints -> partners
    checks = to_server(server_a, answer(clients_a, fwd))
    sigs_a = {m.sender: m.signature for m in answer(clients_a, checks)}
    # round B: same config and id, same identity keys, fresh clients and ledgers
    server_b, clients_b, _ = make_parties(cfg, np.zeros((n, cfg.dim)), signing=signing)
    keys = to_server(server_b, [c.start() for c in clients_b.values()])
    fwd = to_server(server_b, answer(clients_b, keys))
    fwd = to_server(server_b, answer(clients_b, fwd))  # complaints -> partners
    checks_b = to_server(server_b, answer(clients_b, fwd))
    assert server_b.context != server_a.context
    victim = 0
    u3 = checks_b[1].survivors
    (sig,) = answer(clients_b, [checks_b[1]])
    replay = UnmaskRequest(cfg.round_id, SERVER_ID, 1, u3, (), sigs_a)
    with pytest.raises(ProtocolError, match="does not verify"):
        clients_b[1].receive(replay)
    assert victim in u3


def test_config_digest_covers_every_field():
    base = dict(round_id=3, population=range(5), dim=4, value_range=1.0)
    digests = {RoundConfig(**base).digest}
    for change in (
        {"round_id": 4},
        {"population": range(1, 6)},
        {"dim": 5},
        {"value_range": 2.0},
        {"bits": 64},
        {"threshold": 4},
        {"hardened": True},
        {"federation": "other"},
        {"corrupt_rate": 0.2},
        {"dropout_rate": 0.2},
    ):
        digests.add(RoundConfig(**{**base, **change}).digest)
    assert len(digests) == 11


def test_survivor_set_outside_the_population_is_refused():
    cfg, server, clients, _, _ = hardened_round(7)
    keys = to_server(server, [c.start() for c in clients.values()])
    fwd = to_server(server, answer(clients, keys))
    fwd = to_server(server, answer(clients, fwd))  # complaints -> partners
    checks = to_server(server, answer(clients, fwd))
    bad = ConsistencyRequest(cfg.round_id, SERVER_ID, 2, checks[2].survivors + (99,))
    with pytest.raises(ProtocolError, match="not in the round's population"):
        clients[2].receive(bad)


# --- finding 4: the SecAgg+ signature bound ------------------------------------------------


@pytest.mark.parametrize("n", [200, 500, 1000])
def test_secaggplus_signature_bound_counts_corrupt_rate_colluders(n):
    cfg = RoundConfig(
        round_id=0, population=range(n), dim=1, value_range=1.0, graph="secagg+", hardened=True
    )
    t = cfg.round_threshold
    c = cfg.max_colluders(t)
    assert c == max(t - 1, int(0.1 * n)) and c > t - 1  # the review's cases: 20, 50, 100
    s = cfg.min_signatures(t)
    # two different survivor sets with s signatures each need 2s - n signers of both: more
    # than the colluders can be
    assert 2 * s - n > c
    # the old bound (t - 1 colluders) would have let c colluders sign two sets
    old = max(t, (n + t - 1) // 2 + 1)
    assert 2 * old - n <= c


# --- finding 5: cheap rejection ------------------------------------------------------------


def _raw_unmask_response(round_id: int, sender: int, entries: int) -> bytes:
    ids = np.arange(entries, dtype=">u4")
    pairs = np.zeros((entries, 2), dtype=">u4")
    pairs[:, 0] = ids  # id, length 0
    one_map = struct.pack(">I", entries) + pairs.tobytes()
    body = one_map + one_map
    header = struct.pack(">4sBBQII", MAGIC, VERSION, 9, round_id, sender, len(body))
    return header + body


def _cost(server, data, peer):
    tracemalloc.start()
    t0 = time.thread_time()  # CPU of this thread: not inflated by other work on the machine
    server.receive_bytes(data, peer=peer)
    seconds = time.thread_time() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak


def test_huge_message_in_the_wrong_stage_costs_nothing():
    cfg = RoundConfig(round_id=2, population=range(5), dim=4, value_range=1.0)
    server = Server(cfg)
    data = _raw_unmask_response(2, 3, 2**20)  # 16 MiB, 2 x 2^20 empty entries
    assert len(data) > 16 * 2**20
    seconds, peak = _cost(server, data, 3)
    assert seconds < 0.01 and peak < 10 * 2**20
    assert "not allowed in this stage" in server.faults[-1].reason
    seconds, peak = _cost(server, data, 3)  # the excluded sender repeats it
    assert seconds < 0.01 and peak < 10 * 2**20
    assert "excluded earlier" in server.faults[-1].reason


def test_oversized_and_overcounted_messages_in_the_right_stage_are_rejected_cheaply():
    n = 6
    cfg = RoundConfig(round_id=2, population=range(n), dim=4, value_range=1.0)
    server = Server(cfg)
    clients = [Client(cfg, i, np.full(4, 0.1)) for i in range(n)]
    keys = to_server(server, [c.start() for c in clients])
    fwd = to_server(server, answer(dict(enumerate(clients)), keys))
    fwd = to_server(server, answer(dict(enumerate(clients)), fwd))  # complaints -> partners
    reqs = to_server(server, answer(dict(enumerate(clients)), fwd))
    assert server.stage is ServerStage.COLLECT_UNMASK
    big = _raw_unmask_response(2, 0, 2**20)
    seconds, peak = _cost(server, big, 0)
    assert seconds < 0.01 and peak < 10 * 2**20
    assert "above the" in server.faults[-1].reason and "limit" in server.faults[-1].reason
    # a small message that declares more entries than the population: count checked first
    small = _raw_unmask_response(2, 1, 40)
    seconds, peak = _cost(server, small, 1)
    assert seconds < 0.01 and "above the" in server.faults[-1].reason
    answers = answer(dict(enumerate(clients)), [r for r in reqs if r.recipient > 1])
    to_server(server, answers)
    assert server.stage is ServerStage.DONE  # 0 and 1 still in the sum, unmasked by others
    assert server.result.survivors == tuple(range(n))


def test_fault_flood_is_counted_not_stored():
    cfg = RoundConfig(round_id=2, population=range(4), dim=2, value_range=1.0)
    server = Server(cfg)
    for _ in range(1000):
        server.receive_bytes(b"nonsense", peer=1)
    assert len([f for f in server.faults if f.sender == 1]) == 16
    assert server.suppressed_faults[1] == 1000 - 16


# --- finding 7: unbounded contributions ------------------------------------------------------


class _OutOfRange(Client):
    """A Byzantine client that adds one more value_range to coordinate 0 of its encoded input."""

    def _on_MaskingPartners(self, msg):
        (m,) = super()._on_MaskingPartners(msg)
        enc = self.config.encoder
        y = m.masked.astype(np.uint64)
        y[0] += np.uint64(enc.max_int)
        return [MaskedInput(m.round_id, m.sender, enc.wrap(y), m.partners, m.signature)]


def test_out_of_range_contribution_fails_the_round():
    """Honest inputs at +value_range sum to the bound; one client's extra value_range lands outside it. (A
    contribution that wraps back inside the range cannot be seen here: the per-client bound
    comes with the sketch norm check.)"""
    n, d = 6, 3
    cfg = RoundConfig(round_id=1, population=range(n), dim=d, value_range=1.0)
    clients = {i: Client(cfg, i, np.full(d, 1.0)) for i in range(1, n)}
    clients[0] = _OutOfRange(cfg, 0, np.full(d, 1.0))
    result = run_parties(Server(cfg), clients)
    assert result.aborted and result.aggregate is None
    assert "out of range" in result.abort_reason and "[0]" in result.abort_reason


def test_mask_key_altered_in_transit_is_caught_by_its_commitment():
    """The review flipped bits in an accepted AdvertiseKeys and garbled the sum. Now the
    dealer's commitment to its mask key must equal the advertised key, so the altered key is
    rejected with the dealer's shares and the round completes without it."""
    n, d = 6, 64
    cfg = RoundConfig(round_id=1, population=range(n), dim=d, value_range=1.0)
    server = Server(cfg)
    clients = {i: Client(cfg, i, np.full(d, 0.25)) for i in range(n)}
    adverts = [c.start() for c in clients.values()]
    a = adverts[2]
    flipped = AdvertiseKeys(a.round_id, 2, a.c_pk, vss.DHKeyPair.generate().public_bytes())
    pending = to_server(server, adverts[:2] + [flipped] + adverts[3:])
    while not server.done:
        pending = to_server(server, answer(clients, pending, {}))
    assert server.stage is ServerStage.DONE, server.abort_reason
    assert server.result.survivors == (0, 1, 3, 4, 5)
    assert "is not the advertised s_pk" in server.excluded[2]
    np.testing.assert_allclose(server.result.aggregate, np.full(d, 1.25), atol=1e-6)


# --- finding 8: server-chosen graph seed ---------------------------------------------------


def test_hardened_client_refuses_a_server_chosen_graph_seed():
    n = 30
    cfg, server, clients, _, _ = hardened_round(n, "secagg+")
    keys = to_server(server, [c.start() for c in clients.values()])
    k = keys[0]
    assert isinstance(k, ServerKeys) and len(k.keys) == n  # every advertisement, to recompute
    chosen = ServerKeys(
        k.round_id,
        SERVER_ID,
        k.recipient,
        k.graph_kind,
        bytes(32),
        k.threshold,
        k.degree,
        k.keys,
    )
    with pytest.raises(ProtocolError, match="graph seed is not the hash"):
        clients[k.recipient].receive(chosen)
    # the honest message passes, and client and server derived the same graph
    (share_keys,) = clients[keys[1].recipient].receive(keys[1])
    assert {j for j, _ in share_keys.shares} == set(
        server.audit().keys_forwarded[keys[1].recipient]
    )


def test_hardened_client_refuses_a_dropped_or_forged_advertisement_list():
    cfg, server, clients, _, _ = hardened_round(7)
    keys = to_server(server, [c.start() for c in clients.values()])
    k = keys[3]
    without_me = [e for e in k.keys if e.client_id != 3]
    for entries, match in ((without_me, "own advertisement is missing"),):
        evil = ServerKeys(
            k.round_id, SERVER_ID, 3, k.graph_kind, k.graph_seed, k.threshold, k.degree, entries
        )
        with pytest.raises(ProtocolError, match=match):
            clients[3].receive(evil)


def test_message_header_constant_is_the_encoders():
    # guards the raw-bytes helpers above against a format change
    m = UnmaskResponse(2, 1, {}, {})
    assert encode(m)[:HEADER_BYTES] == struct.pack(">4sBBQII", MAGIC, VERSION, 9, 2, 1, 8)


# --- finding 6: what plain mode does not stop ------------------------------------------------


def test_plain_mode_does_not_stop_an_active_server_with_a_split_view():
    """Documented limit (README threat model): plain mode assumes an honest-but-curious server.
    A server that lists the victim as a survivor to group A and as dropped to group B, with 2
    colluders at t = 6, gets both of its secrets and its exact input. Hardened mode refuses the
    same split (test_hardened_split_view_* in test_protocol_security.py)."""
    from secagg.masking import pairwise_seed, unmask_sum

    n, d, victim = 11, 6, 0
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (n, d))
    cfg = RoundConfig(round_id=3, population=range(n), dim=d, value_range=1.0)
    assert cfg.round_threshold == 6
    server = Server(cfg, graph_seed=bytes(32))
    clients = {i: Client(cfg, i, x[i], rng=np.random.default_rng([4, i])) for i in range(n)}
    keys = to_server(server, [c.start() for c in clients.values()])
    fwd = to_server(server, answer(clients, keys))
    fwd = to_server(server, answer(clients, fwd))  # complaints -> partners
    masked = answer(clients, fwd)
    y_victim = next(m.masked for m in masked if m.sender == victim)
    colluders, group_a, group_b = [1, 2], [3, 4, 5, 6], [7, 8, 9, 10]
    everyone, without = tuple(range(n)), tuple(range(1, n))
    b_shares, s_shares = {}, {}
    for h in group_a:
        (r,) = answer(clients, [UnmaskRequest(cfg.round_id, SERVER_ID, h, everyone, ())])
        b_shares[h + 1] = shamir.share_from_bytes(dict(r.self_seed_shares)[victim])
    for h in group_b:
        (r,) = answer(clients, [UnmaskRequest(cfg.round_id, SERVER_ID, h, without, (victim,))])
        s_shares[h + 1] = shamir.share_from_bytes(dict(r.mask_key_shares)[victim])
    for c in colluders:
        opened = clients[c].audit().held[victim]
        b_shares[c + 1] = shamir.share_from_bytes(opened[0])
        s_shares[c + 1] = shamir.share_from_bytes(opened[1])
    b = shamir.reconstruct(b_shares, 6, 32)
    s_sk = vss.DHKeyPair.from_private_bytes(shamir.reconstruct(s_shares, 6, 32))
    from protocol.messages import mask_agreement_info

    pairwise = {}
    for j in range(1, n):
        s_pk_j = clients[j].audit().mask_public_key
        key = vss.dh_agree(s_sk, s_pk_j, mask_agreement_info(cfg.round_id, victim, j))
        pairwise[(victim, j)] = pairwise_seed(key, cfg.round_id)
    enc = unmask_sum(y_victim, {victim: b}, pairwise, cfg.bits)
    recovered = cfg.encoder.decode(enc)
    np.testing.assert_allclose(recovered, x[victim], atol=cfg.encoder.resolution)


# --- finding 3: one Byzantine client must not abort everyone's round -----------------------


class _BadDealer(Client):
    """Deals wrong shares (``what``: "seed", "key" or "garbage" ciphertexts) to ``victims``
    (default: every holder), then optionally goes silent."""

    what = "seed"
    victims: frozenset[int] | None = None
    silent_after_sharing = False

    def _on_ServerKeys(self, msg):
        from protocol.messages import decode_share_payload, encode_share_payload, share_aad

        (m,) = super()._on_ServerKeys(msg)
        rid, sealed = self.config.round_id, dict(m.shares)
        for j, blob in sealed.items():
            if self.victims is not None and j not in self.victims:
                continue
            if self.what == "garbage":
                sealed[j] = secrets.token_bytes(len(blob))
                continue
            key = self._share_keys[j]
            owner, holder, b, s = decode_share_payload(
                sk.open_sealed(key, blob, share_aad(rid, self.id, j))
            )
            wrong = shamir.share_to_bytes(secrets.randbelow(shamir.PRIME))
            b, s = (wrong, s) if self.what == "seed" else (b, wrong)
            sealed[j] = sk.seal(
                key, encode_share_payload(owner, holder, b, s), share_aad(rid, self.id, j)
            )
        return [ShareKeys(m.round_id, m.sender, sealed, m.commitments, m.share_signatures)]

    def receive(self, msg):
        if self.silent_after_sharing and isinstance(msg, ForwardShares):
            return []  # goes silent: never answers again
        return super().receive(msg)


def _run_with(dealer_cls, n=9, d=5, hardened=False):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (n, d))
    cfg = RoundConfig(round_id=2, population=range(n), dim=d, value_range=1.0)
    clients = {
        i: (dealer_cls if i == 0 else Client)(cfg, i, x[i], rng=np.random.default_rng([7, i]))
        for i in range(n)
    }
    result = run_parties(Server(cfg, graph_seed=bytes(32)), clients)
    return cfg, x, result


def _assert_exact(cfg, x, result, survivors):
    assert not result.aborted, result.abort_reason
    assert result.survivors == tuple(survivors)
    enc = [cfg.encoder.encode(x[i], np.random.default_rng([7, i])) for i in survivors]
    expected = cfg.encoder.wrap(np.sum([e.astype(np.uint64) for e in enc], axis=0))
    np.testing.assert_array_equal(result.encoded_sum, expected)


@pytest.mark.parametrize("what", ["seed", "key"])
@pytest.mark.parametrize("silent", [False, True])
def test_dealer_of_wrong_shares_is_convicted_before_masking(what, silent):
    class Dealer(_BadDealer):
        pass

    Dealer.what, Dealer.silent_after_sharing = what, silent
    cfg, x, result = _run_with(Dealer)
    # every holder complained with its pair key; the first judged complaint convicts client 0
    assert [f.sender for f in result.faults] == [0] and "upheld" in result.faults[0].reason
    assert 0 in result.excluded
    _assert_exact(cfg, x, result, range(1, 9))


def test_dealer_of_wrong_shares_to_a_single_holder_is_convicted_too():
    class Dealer(_BadDealer):
        what, victims = "key", frozenset({5})

    cfg, x, result = _run_with(Dealer)
    assert [f.sender for f in result.faults] == [0]
    _assert_exact(cfg, x, result, range(1, 9))


def test_undecryptable_shares_cut_the_dealer_off_before_masking():
    class Dealer(_BadDealer):
        what = "garbage"

    cfg, x, result = _run_with(Dealer)
    # nobody can judge an undecryptable ciphertext, so each pair is cut (a dispute), and a
    # dealer that no holder accepts is left with no partners: out before anyone masked
    assert {(dp.owner, dp.holder) for dp in result.disputes} == {(0, h) for h in range(1, 9)}
    assert "partners" in result.excluded[0] and result.faults == ()
    _assert_exact(cfg, x, result, range(1, 9))


def test_false_complaint_convicts_the_complainer():
    from protocol.messages import Complaint, ShareComplaints, encode_complaint

    class Liar(Client):
        def _on_ForwardShares(self, msg):
            super()._on_ForwardShares(msg)
            return [
                ShareComplaints(
                    self.config.round_id,
                    self.id,
                    {3: encode_complaint(Complaint.INVALID_SHARE, self._share_keys[3])},
                )
            ]

    cfg, x, result = _run_with(Liar)
    assert [f.sender for f in result.faults] == [0] and "is false" in result.faults[0].reason
    _assert_exact(cfg, x, result, range(1, 9))


@pytest.mark.parametrize("liars", [[2, 5], [2, 4, 5, 6]])
def test_several_lying_holders_at_unmasking_are_all_convicted(liars):
    """Gao decoding corrects up to (m - t) / 2 wrong shares (2 of 11 at t = 7); past that the
    shares are checked against the commitments. Either way every liar is named with proof."""

    class LyingHolder(Client):
        def _on_UnmaskRequest(self, msg):
            (r,) = super()._on_UnmaskRequest(msg)
            seeds = {
                o: shamir.share_to_bytes(secrets.randbelow(shamir.PRIME))
                for o, _ in r.self_seed_shares
            }
            return [UnmaskResponse(r.round_id, r.sender, seeds, r.mask_key_shares)]

    n, d = 12, 4
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (n, d))
    cfg = RoundConfig(round_id=2, population=range(n), dim=d, value_range=1.0)
    clients = {
        i: (LyingHolder if i in liars else Client)(cfg, i, x[i], rng=np.random.default_rng([7, i]))
        for i in range(n)
    }
    result = run_parties(Server(cfg, graph_seed=bytes(32)), clients, dropouts={"unmask": [11]})
    assert sorted({f.sender for f in result.faults}) == liars
    assert all("does not match the dealer's commitments" in f.reason for f in result.faults)
    _assert_exact(cfg, x, result, range(n))
