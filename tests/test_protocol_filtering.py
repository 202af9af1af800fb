"""Secure filtering (protocol.filtering, protocol.keyholder): exactness, verification, views.

Every round here runs the real parties (clients, server, key holder) through the byte format,
with a 1024-bit Paillier key (allowed for tests only) to keep the suite fast.
"""

from __future__ import annotations

import numpy as np
import pytest
from protocol_helpers import filtered_parties, paillier_test_key
from scipy import stats

import robust
from protocol import (
    KEYHOLDER_ID,
    SERVER_ID,
    Client,
    FilterConfig,
    FilterPreparation,
    KeyHolder,
    ProtocolConfigError,
    ProtocolError,
    Server,
    run_parties,
    run_round,
)
from protocol.messages import (
    Abort,
    DistanceRequest,
    SketchCommit,
    ZeroTestRequest,
    encode,
)
from protocol.router import Dropouts, Router, Tamper
from secagg.masked_distance import exact_squared_distances
from secagg.paillier_private import generate_paillier_keypair
from secagg.sketch import sketch

KEY = paillier_test_key()


def _updates(n: int, d: int, seed: int, *, outliers: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.05, (n, d))
    x[:outliers] = rng.normal(0.0, 0.05, d) + 0.8 / np.sqrt(d) * np.sign(rng.normal(size=d))
    return x / np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True))


_parties = filtered_parties


def _prepare(server: Server, keyholder: KeyHolder, layers=()) -> FilterPreparation:
    """Run the round's preparation (key holder <-> server, no client) and attach it."""
    prep = FilterPreparation(server.config)
    Router([prep, keyholder], layers=list(layers)).run()
    server.attach_preparation(prep.prepared)
    return prep


def _plain_sketches(server: Server, clients, ids) -> np.ndarray:
    k = server.config.filtering.sketch_dim
    return np.array(
        [sketch(clients[i]._signed_input, server.projection_seed, k) for i in ids], dtype=object
    )


@pytest.mark.parametrize("rule,f", [("multi_krum", 2), ("distance_filter", 2), ("mean", 0)])
@pytest.mark.parametrize("drop", [None, "advertise", "masked_input", "sketch", "unmask"])
def test_selection_and_sum_equal_the_plaintext_rule_on_the_same_sketches(rule, f, drop):
    x = _updates(9, 24, seed=hash((rule, drop)) % 1000, outliers=2)
    server, clients, keyholder = _parties(x, rule=rule, f=f)
    dropouts = {drop: [8]} if drop else None
    result = run_parties(server, clients, keyholder=keyholder, dropouts=dropouts)
    assert not result.aborted, result.abort_reason
    decision = result.filter
    # the server's distances are the exact distances of the committed sketches
    sk = _plain_sketches(server, clients, decision.judged)
    exact = exact_squared_distances(sk)
    unit = decision.sq_distances[0, 1] and float(exact[0, 1]) / decision.sq_distances[0, 1]
    assert np.allclose(decision.sq_distances * unit, exact.astype(float), rtol=1e-12)
    # ... and the selection is the plaintext rule on them
    plain = robust.aggregate_detailed(None, rule, f=f, distances=decision.sq_distances)
    chosen = {decision.judged[p] for p in np.flatnonzero(plain.accepted)}
    assert set(decision.accepted) == chosen
    assert set(result.survivors) == chosen
    assert result.verification.passed
    # the aggregate is the exact sum of the accepted clients' fixed-point inputs
    enc = server.config.encoder
    want = sum(clients[i]._signed_input.astype(object) for i in result.survivors)
    assert np.array_equal(enc.to_signed(result.encoded_sum).astype(object), want)
    if drop in ("sketch",):
        assert "no encrypted sketch" in result.rejected[8]
    if drop == "unmask":
        assert 8 in result.survivors or 8 in result.rejected


def test_outliers_are_rejected_and_their_inputs_stay_hidden():
    x = _updates(10, 32, seed=3, outliers=2)
    server, clients, keyholder = _parties(x, f=2)
    result = run_parties(server, clients, keyholder=keyholder)
    assert set(result.rejected) == {0, 1}
    audit = server.audit()
    # a rejected client is treated like a dropout: its self-mask seed is never reconstructed
    for i in result.rejected:
        assert i not in audit.seed_shares
        assert i in audit.key_shares


def test_norm_bound_rejects_a_long_sketch():
    # d = 100: an honest sketch coordinate is bounded by sqrt(d) * C = 10 C, so the long
    # update (norm 2.2 C, k = 64: eps = 0.5) still packs, and the norm bound is what stops it
    x = _updates(8, 100, seed=5)
    server, clients, keyholder = _parties(x, rule="mean", f=0, k=64)
    liar = clients[0]
    liar._update = np.full(100, 2.2 / 10)  # bypasses the constructor's own norm check
    result = run_parties(server, clients, keyholder=keyholder)
    assert not result.aborted, result.abort_reason
    assert "exceeds the bound" in result.rejected[0]
    assert 0 not in result.survivors and result.verification.passed


def test_coordinate_rules_are_refused_with_the_rules_that_work():
    with pytest.raises(ProtocolConfigError, match="multi_krum") as exc:
        FilterConfig(KEY.public_key, 1.0, rule="median")
    assert "coordinates" in str(exc.value)
    # Krum's single selection would hand the server one client's update in the clear
    with pytest.raises(ProtocolConfigError, match="single client"):
        FilterConfig(KEY.public_key, 1.0, rule="krum")


def test_a_selection_smaller_than_the_threshold_aborts_instead_of_revealing_inputs():
    x = _updates(8, 16, seed=4)
    r = run_round(
        x,
        value_range=1.0,
        rule="multi_krum",
        f=1,
        rule_params={"m": 2},
        clip_norm=1.0,
        paillier_key=KEY,
        sketch_dim=16,
    )
    assert r.aborted and r.aggregate is None and "threshold" in r.abort_reason


@pytest.fixture(scope="module")
def lying_trials():
    caught, honest_failed = 0, 0
    x_base = _updates(4, 12, seed=11)
    for trial in range(200):
        x = x_base + np.random.default_rng(trial).normal(0, 0.01, x_base.shape)
        x /= np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True))
        fake = x[(trial + 1) % 4]  # sketch another client's (benign) update
        r = run_round(
            x,
            value_range=1.0,
            rule="mean",
            clip_norm=1.0,
            paillier_key=KEY,
            sketch_dim=16,
            seed=trial,
            sketched={trial % 4: fake},
        )
        caught += r.aborted and not r.verification.passed and r.aggregate is None
        if trial % 4 == 0:
            h = run_round(
                x, value_range=1.0, rule="mean", clip_norm=1.0, paillier_key=KEY, sketch_dim=16
            )
            honest_failed += h.aborted or not h.verification.passed
    return caught, honest_failed


def test_a_lying_sketch_is_caught_in_every_one_of_200_trials(lying_trials):
    caught, honest_failed = lying_trials
    assert caught == 200
    assert honest_failed == 0  # 50 honest rounds, none fails verification


def test_a_masked_input_altered_in_transit_is_left_out_and_the_round_verifies():
    # Without filtering a masked input altered in transit shifts the sum silently. With it,
    # the sketch request lists every committed input's digest: the sender sees that its own is
    # not the one it sent and refuses to sketch, so the input is never judged nor summed.
    x = _updates(6, 16, seed=2)
    server, clients, keyholder = _parties(x, rule="mean", f=0)

    def flip(env):
        data = bytearray(env.data)
        data[-70] ^= 1  # inside the masked vector
        return bytes(data)

    tamper = Tamper(lambda e: e.kind == "MaskedInput" and e.sender == 3, flip)
    result = run_parties(server, clients, keyholder=keyholder, layers=[tamper])
    assert not result.aborted and result.verification.passed
    assert "no encrypted sketch" in result.rejected[3]
    assert "digest" in result.refusals[3]
    assert 3 not in result.survivors


class _JunkMasker(Client):
    """Byzantine: adds junk to its masked input after masking (as if it used wrong masks) and
    sketches its true input."""

    def _on_MaskingPartners(self, msg):
        (out,) = super()._on_MaskingPartners(msg)
        y = out.masked.copy()
        y[0] += np.uint32(12345)
        from protocol.messages import MaskedInput, input_digest

        self._input_digest = input_digest(y)
        return [MaskedInput(out.round_id, out.sender, y, out.partners, out.signature)]


def test_masks_that_do_not_cancel_fail_verification():
    x = _updates(6, 16, seed=2)
    server, clients, keyholder = _parties(x, rule="mean", f=0)
    clients[2] = _JunkMasker(server.config, 2, x[2])
    result = run_parties(server, clients, keyholder=keyholder)
    assert result.aborted and result.aggregate is None
    assert result.verification is not None and not result.verification.passed
    assert "does not match" in result.abort_reason


def test_a_silent_key_holder_aborts_the_round_cleanly():
    x = _updates(5, 10, seed=1)
    server, clients, keyholder = _parties(x, rule="mean", f=0)
    _prepare(server, keyholder)
    router = Router(
        [server, *clients.values(), keyholder], layers=[Dropouts({KEYHOLDER_ID: "distances"})]
    )
    router.run()
    assert server.aborted and "key holder did not answer" in server.abort_reason
    assert server.result is None


def _keyholder_at_rows():
    x = _updates(4, 10, seed=4)
    server, clients, keyholder = _parties(x, rule="mean", f=0)
    _prepare(server, keyholder)
    router = Router([server, *clients.values(), keyholder])
    router.run(until=lambda r: any(e.kind == "DistanceRequest" for e in r.pending))
    (env,) = [e for e in router.take_pending() if e.kind == "DistanceRequest"]
    return server, keyholder, env


def _width() -> int:
    return KEY.public_key.ciphertext_bytes


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda m: m.ciphertexts[:-1], "multiple"),
        (lambda m: m.ciphertexts[: -_width()], "expected"),
        (lambda m: bytes(_width()) + m.ciphertexts[_width() :], "zero"),
        (lambda m: b"\xff" * _width() + m.ciphertexts[_width() :], "below n"),
        (
            lambda m: int(KEY.public_key.n).to_bytes(_width(), "big") + m.ciphertexts[_width() :],
            "factor",
        ),
    ],
    ids=["truncated", "wrong-count", "zero", "out-of-range", "not-coprime"],
)
def test_keyholder_refuses_malformed_ciphertexts(mutate, match):
    server, keyholder, env = _keyholder_at_rows()
    from protocol.messages import decode

    msg = decode(env.data)
    bad = DistanceRequest(
        msg.round_id, SERVER_ID, KEYHOLDER_ID, msg.clients, msg.public_rows, mutate(msg)
    )
    with pytest.raises(ProtocolError, match=match) as exc:
        keyholder.receive_strict(bad)
    assert "key holder" in str(exc.value) and exc.value.sender == SERVER_ID
    assert keyholder.stage.value == "WAIT_ROWS"  # unchanged: the honest request still works
    (answer,) = keyholder.receive_bytes(env.data, peer=SERVER_ID)
    assert type(answer).__name__ == "DistanceOpened"


def test_keyholder_refuses_replays_wrong_rounds_clients_and_extra_zero_tests():
    server, keyholder, env = _keyholder_at_rows()
    from protocol.messages import decode

    msg = decode(env.data)
    keyholder.receive_bytes(env.data, peer=SERVER_ID)
    with pytest.raises(ProtocolError, match="not allowed in this stage"):
        keyholder.receive_strict(msg)  # a replayed distance request
    other = ZeroTestRequest(msg.round_id + 1, SERVER_ID, KEYHOLDER_ID, b"")
    with pytest.raises(ProtocolError, match="round"):
        keyholder.receive_strict(other)
    from_client = Abort(msg.round_id, 2, KEYHOLDER_ID, "hi")
    with pytest.raises(ProtocolError, match="from the server only"):
        keyholder.receive_strict(from_client)
    many = ZeroTestRequest(msg.round_id, SERVER_ID, KEYHOLDER_ID, b"\x01" * (2 * _width()))
    keyholder.stage = type(keyholder.stage).WAIT_ZERO_TEST
    with pytest.raises(ProtocolError, match="capped"):
        keyholder.receive_strict(many)  # each test reveals a bit: at most one per round
    # tolerant entry point: one Abort to the server, then silence
    out = keyholder.receive_bytes(encode(many), peer=SERVER_ID)
    assert len(out) == 1 and isinstance(out[0], Abort) and out[0].recipient == SERVER_ID
    assert keyholder.receive_bytes(encode(many), peer=SERVER_ID) == []


def test_bad_sketch_commits_are_their_senders_fault_and_the_round_goes_on():
    x = _updates(7, 12, seed=9)
    server, clients, keyholder = _parties(x, rule="mean", f=0)
    w = _width()

    def garbage(env):
        from protocol.messages import decode

        m = decode(env.data)
        if env.sender == 1:  # wrong length
            return encode(SketchCommit(m.round_id, 1, m.ciphertexts[:-w]))
        # client 2: an invalid ciphertext (not coprime to n)
        ct = int(KEY.public_key.n).to_bytes(w, "big") + m.ciphertexts[w:]
        return encode(SketchCommit(m.round_id, 2, ct))

    tamper = Tamper(lambda e: e.kind == "SketchCommit" and e.sender in (1, 2), garbage)
    result = run_parties(server, clients, keyholder=keyholder, layers=[tamper])
    assert not result.aborted, result.abort_reason
    assert {f.sender for f in result.faults} >= {1, 2}
    assert {1, 2} <= set(result.rejected) and result.verification.passed
    assert set(result.survivors) == {0, 3, 4, 5, 6}


def test_a_sketch_outside_the_bound_is_reported_by_the_keyholder_as_its_senders_fault():
    x = _updates(6, 12, seed=6)
    server, clients, keyholder = _parties(x, rule="mean", f=0)
    pub = KEY.public_key
    lay = server.config.layouts

    def huge(env):
        from protocol.messages import decode

        m = decode(env.data)
        plain = lay.row_mask.pack(np.full(lay.k, (1 << lay.mask_bits) - 1, dtype=object))
        cts = [pub.encrypt(int(v)) for v in plain]
        return encode(SketchCommit(m.round_id, m.sender, pub.ciphertexts_to_bytes(cts)))

    tamper = Tamper(lambda e: e.kind == "SketchCommit" and e.sender == 4, huge)
    result = run_parties(server, clients, keyholder=keyholder, layers=[tamper])
    assert not result.aborted, result.abort_reason
    assert "not a bounded sketch" in result.rejected[4]
    assert any(f.sender == 4 for f in result.faults) and result.verification.passed


def test_keyholder_sees_only_values_statistically_independent_of_the_updates():
    # K decrypts t = s + M. Two very different sets of updates (zeros vs. updates at the clip
    # norm) must give the same distribution of what K sees: a two-sample KS test on
    # t / 2**mask_bits. The masks come from the OS CSPRNG, so the test is random: at
    # alpha = 1e-4 it fails by chance once in 10,000 runs, and with N = 2 x 640 values it
    # detects any difference of CDFs above sqrt(ln(2 / alpha) / 2) * sqrt(2 / 640) = 0.125
    # (Kolmogorov's asymptotics). The same test on the sketches must see their difference.
    def seen(x):
        values, sketches = [], []
        for rnd in range(4):
            server, clients, keyholder = _parties(x, rule="mean", f=0, seed=rnd)
            run_parties(server, clients, keyholder=keyholder)
            lay = server.config.layouts
            t = keyholder.audit().masked_rows[:-1]  # the clients' rows (last: the zero row)
            values.extend(float(v) / 2**lay.mask_bits for v in t.reshape(-1))
            sketches.extend(
                float(v) for v in _plain_sketches(server, clients, range(len(x))).reshape(-1)
            )
        return np.array(values), np.array(sketches)

    d = 40
    zeros = np.zeros((5, d))
    full = np.tile(np.sign(np.arange(d) % 3 - 1.0) + 0.5, (5, 1))
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    t0, s0 = seen(zeros)
    t1, s1 = seen(full)
    assert len(t0) == len(t1) == 640
    assert stats.ks_2samp(t0, t1).pvalue > 1e-4
    assert stats.ks_2samp(s0, s1).pvalue < 1e-6  # the test has power on the real values


def test_server_view_holds_no_sketch_and_no_input_in_the_clear():
    x = _updates(6, 20, seed=8, outliers=1)
    server, clients, keyholder = _parties(x, f=1)
    result = run_parties(server, clients, keyholder=keyholder)
    assert not result.aborted
    secrets_ = []
    for _i, c in clients.items():
        secrets_.append(c._signed_input)
        secrets_.append(sketch(c._signed_input, server.projection_seed, 32))
    found = []

    def scan(obj, path, depth=0):
        if depth > 6:
            return
        if isinstance(obj, np.ndarray) and obj.dtype != object and obj.ndim == 1:
            for s in secrets_:
                if obj.shape == s.shape and np.array_equal(obj.astype(np.int64), s):
                    found.append(path)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                scan(v, f"{path}[{k!r}]", depth + 1)
        elif isinstance(obj, (list, tuple)):
            for j, v in enumerate(obj[:64]):
                scan(v, f"{path}[{j}]", depth + 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            for k, v in vars(obj).items():
                scan(v, f"{path}.{k}", depth + 1)

    scan(server, "server")
    assert found == []
    # what it does hold: the distances, the verdicts, the aggregate
    assert result.filter.sq_distances.shape == (6, 6)
    assert result.aggregate is not None


def test_filtering_needs_a_keyholder_and_a_matching_key():
    x = _updates(4, 8, seed=0)
    server, clients, _ = _parties(x, rule="mean", f=0)
    with pytest.raises(ProtocolConfigError, match="keyholder"):
        run_parties(server, clients)
    _, other = generate_paillier_keypair(1024, allow_insecure=True)
    with pytest.raises(ProtocolConfigError, match="does not match"):
        KeyHolder(server.config, other)


def test_client_refuses_a_projection_seed_the_server_chose():
    x = _updates(4, 8, seed=0)
    server, clients, keyholder = _parties(x, rule="mean", f=0)
    router = Router([server, *clients.values(), keyholder])
    router.run(until=lambda r: any(e.kind == "SketchRequest" for e in r.pending))
    pending = router.take_pending()
    from protocol.messages import SketchRequest, decode

    env = next(e for e in pending if e.kind == "SketchRequest")
    m = decode(env.data)
    forged = SketchRequest(m.round_id, SERVER_ID, m.recipient, bytes(32), m.committed)
    with pytest.raises(ProtocolError, match="projection seed"):
        clients[m.recipient].receive(forged)
    fresh_server, fresh_clients, _ = _parties(x, rule="mean", f=0)
    assert fresh_server.projection_seed is None


def test_run_round_api_reports_verdicts_verification_and_keyholder_costs():
    x = _updates(8, 16, seed=12, outliers=1)
    r = run_round(
        x, value_range=1.0, rule="multi_krum", f=1, clip_norm=1.0, paillier_key=KEY, sketch_dim=32
    )
    assert not r.aborted and r.verification.passed
    assert 0 in r.rejected and 0 not in r.survivors
    t = r.transcript
    assert t.keyholder_bytes_sent > 0 and t.keyholder_bytes_received > 0
    assert set(t.keyholder_seconds) == {"prepare", "distances", "verify"}
    assert {"prepare", "sketch", "distances", "verify"} <= set(t.server_seconds)
    with pytest.raises(ProtocolConfigError, match="needs the clients' coordinates"):
        run_round(x, value_range=1.0, rule="trimmed_mean", clip_norm=1.0, paillier_key=KEY)


def test_hardened_filtered_round_signs_the_rejected_list_and_verifies():
    x = _updates(8, 16, seed=21, outliers=1)
    r = run_round(
        x,
        value_range=1.0,
        rule="multi_krum",
        f=1,
        clip_norm=1.0,
        paillier_key=KEY,
        sketch_dim=16,
        hardened=True,
    )
    assert not r.aborted, r.abort_reason
    assert 0 in r.rejected and r.verification.passed
    assert "consistency" in r.transcript.server_seconds


class _Shifter(Client):
    """Byzantine colluder: sketches its fixed-point input plus an integer shift."""

    shift = np.zeros(1, dtype=np.int64)

    def _sketch_input(self):
        return self._signed_input + self.shift


def test_colluders_who_shift_sketch_mass_pass_only_with_a_sum_of_filtered_vectors():
    # Two colluders mask q1 and q2 but sketch q1 + E and q2 - E: the sum of their sketches is
    # P(q1 + q2), so the zero test passes. What DESIGN.md's soundness argument promises is not
    # "every sketch is true" but "the summed contribution equals the sum of sketches that each
    # passed the filter"; here both shifted sketches pass it, and the released sum is exactly
    # the sum of the masked inputs. A lone liar with the same shift is caught.
    x = _updates(8, 16, seed=30)
    shift = np.full(16, 1 << 12, dtype=np.int64)

    def run(shifts):
        server, clients, keyholder = _parties(x, rule="mean", f=0)
        for i, sign in shifts.items():
            c = _Shifter(server.config, i, x[i])
            c.shift = sign * shift
            clients[i] = c
        return run_parties(server, clients, keyholder=keyholder), clients, server

    r, clients, server = run({1: 1, 2: -1})
    assert not r.aborted and r.verification.passed
    assert set(r.survivors) == set(range(8))
    want = sum(c._signed_input.astype(object) for c in clients.values())
    assert np.array_equal(server.config.encoder.to_signed(r.encoded_sum).astype(object), want)
    lone, _, _ = run({1: 1})
    assert lone.aborted and not lone.verification.passed


def test_culprit_search_narrows_a_failed_round_to_a_group_of_min_group():
    x = _updates(16, 12, seed=40)
    r = run_round(
        x,
        value_range=1.0,
        rule="mean",
        clip_norm=1.0,
        paillier_key=KEY,
        sketch_dim=16,
        sketched={5: x[6]},
        culprit_search=True,
        min_group=4,
    )
    assert r.aborted and not r.verification.passed
    search = r.culprit_search
    assert search.suspects == (4, 5, 6, 7)
    # halves, depth first into a failing half: each tested group has >= min_group clients
    assert [g for g, _ in search.tests] == [
        tuple(range(8)),
        (0, 1, 2, 3),
        (4, 5, 6, 7),
        tuple(range(8, 16)),
    ]
    assert [ok for _, ok in search.tests] == [False, True, False, True]
    assert all(len(g) >= 4 for g, _ in search.tests)
    honest = run_round(
        x, value_range=1.0, rule="mean", clip_norm=1.0, paillier_key=KEY, culprit_search=True
    )
    assert honest.verification.passed and honest.culprit_search is None


def test_what_the_keyholder_and_the_server_receive_in_a_round():
    from protocol.router import Recorder

    x = _updates(6, 20, seed=50, outliers=1)
    server, clients, keyholder = _parties(x, f=1)
    rec = Recorder()
    _prepare(server, keyholder, layers=[rec])
    result = run_parties(server, clients, keyholder=keyholder, layers=[rec])
    assert not result.aborted
    to_k = [(e.sender, e.kind) for e in rec.envelopes if e.recipient == KEYHOLDER_ID]
    from_k = [(e.recipient, e.kind) for e in rec.envelopes if e.sender == KEYHOLDER_ID]
    # K hears from the server only: the preparation's products, the masked rows, one zero
    # test; it sends its masks' encryption, the opened (masked) rows, one bit
    assert to_k == [
        (SERVER_ID, "PrepareProducts"),
        (SERVER_ID, "DistanceRequest"),
        (SERVER_ID, "ZeroTestRequest"),
    ]
    assert from_k == [
        (SERVER_ID, "PrepareColumns"),
        (SERVER_ID, "DistanceOpened"),
        (SERVER_ID, "ZeroTestResult"),
    ]
    # the server receives from each client its masked input and one encrypted sketch
    commits = rec.of_kind("SketchCommit")
    assert sorted(e.sender for e in commits) == list(range(6))
    width = KEY.public_key.ciphertext_bytes
    per_row = server.config.layouts.row_ciphertexts()
    assert all(len(e.data) < per_row * width + 64 for e in commits)  # ciphertexts only
    audit = keyholder.audit()
    assert audit.masked_rows.shape == (7, 32)  # six clients and the zero row, all masked
    assert audit.prepared and audit.zero_tests == (True,)


def test_a_bad_preparation_fails_cleanly_and_the_round_releases_nothing():
    from protocol.messages import PrepareColumns

    x = _updates(5, 10, seed=60)
    server, clients, keyholder = _parties(x, rule="mean", f=0)
    (cols,) = keyholder.begin()
    prep = FilterPreparation(server.config)
    w = _width()
    bad = [
        PrepareColumns(cols.round_id, KEYHOLDER_ID, cols.rows + 1, cols.columns),  # wrong rows
        PrepareColumns(cols.round_id, KEYHOLDER_ID, cols.rows, cols.columns[:-w]),  # short
        PrepareColumns(cols.round_id + 1, KEYHOLDER_ID, cols.rows, cols.columns),  # old round
        PrepareColumns(
            cols.round_id, KEYHOLDER_ID, cols.rows, bytes(w) + cols.columns[w:]
        ),  # a zero ciphertext
    ]
    for msg in bad:
        with pytest.raises(ProtocolError):
            prep.receive_strict(msg)
        assert prep.prepared is None
    assert prep.receive_bytes(encode(bad[0]), peer=KEYHOLDER_ID) == []
    assert prep.failure is not None and "row slots" in str(prep.failure)
    # a server without a preparation aborts at the distance stage: nothing is released
    result = run_parties(server, clients, keyholder=keyholder)
    assert not server.prepared or result.aborted or result.verification.passed
    server2, clients2, keyholder2 = _parties(x, rule="mean", f=0)
    router = Router([server2, *clients2.values(), keyholder2])
    router.run()
    assert server2.aborted and "preparation" in server2.abort_reason
    assert server2.result is None


def test_a_preparation_serves_one_round_only():
    x = _updates(5, 10, seed=61)
    server, clients, keyholder = _parties(x, rule="mean", f=0)
    prep = _prepare(server, keyholder)
    result = run_parties(server, clients, keyholder=keyholder)
    assert not result.aborted and result.verification.passed
    again, _, _ = _parties(x, rule="mean", f=0)
    with pytest.raises(ProtocolConfigError, match="already used"):
        again.attach_preparation(prep.prepared)


def test_a_split_view_of_the_committed_inputs_releases_nothing():
    # A lying server shows client 0 a different (self-consistent) set of committed inputs, so
    # client 0 sketches under another projection than everyone else. It learns nothing more
    # than the distances of sketches it cannot interpret, and the verification refuses the sum.
    from protocol.messages import SketchRequest, committed_digest, decode
    from secagg.sketch import projection_seed

    x = _updates(6, 16, seed=70)
    server, clients, keyholder = _parties(x, rule="mean", f=0)

    def other_view(env):
        m = decode(env.data)
        view = {i: d for i, d in m.committed if i != 5}  # drop client 5's input from the hash
        seed = projection_seed(committed_digest(view.items()), server.context)
        return encode(SketchRequest(m.round_id, SERVER_ID, m.recipient, seed, view))

    tamper = Tamper(lambda e: e.kind == "SketchRequest" and e.recipient == 0, other_view)
    result = run_parties(server, clients, keyholder=keyholder, layers=[tamper])
    assert tamper.changed and clients[0].refusal is None  # the view was consistent: accepted
    assert result.aborted and result.aggregate is None
    assert not result.verification.passed
