"""Distributed noise with verifiable shares (protocol.noise): the filter reads noise-free
sketches, the sum carries the shares, and a client that poisons its share is caught."""

from __future__ import annotations

import numpy as np
import pytest
from protocol_helpers import filtered_parties, paillier_test_key

from protocol import (
    Client,
    FilterConfig,
    NoiseConfig,
    ProtocolConfigError,
    RoundConfig,
    run_parties,
    run_round,
)
from protocol.messages import SketchCommit, decode, encode
from protocol.noise import noise_share
from protocol.router import Tamper
from secagg.masked_distance import exact_squared_distances
from secagg.sketch import sketch

KEY = paillier_test_key()


def _updates(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=d) * 0.05 + rng.normal(size=(n, d)) * 0.05
    return x / np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True))


def _parties(x, noise, *, rule="mean", f=0, k=16):
    return filtered_parties(x, rule=rule, f=f, k=k, noise=noise)


@pytest.mark.parametrize("mechanism,sigma", [("ddg", 0.01), ("skellam", 0.02)])
def test_the_sum_carries_the_shares_and_the_filter_reads_noise_free_sketches(mechanism, sigma):
    x = _updates(10, 300, seed=1)
    noise = NoiseConfig(mechanism, sigma)
    server, clients, keyholder = _parties(x, noise, rule="multi_krum", f=2, k=32)
    result = run_parties(server, clients, keyholder=keyholder)
    assert not result.aborted and result.verification.passed
    accepted = list(result.survivors)
    enc = server.config.encoder
    # the unmasked sum is exactly the accepted inputs plus their seeded shares
    shares = {i: noise_share(noise, clients[i]._noise_seed, 300, enc.scale) for i in accepted}
    want = sum(clients[i]._signed_input.astype(object) + shares[i] for i in accepted)
    assert np.array_equal(enc.to_signed(result.encoded_sum).astype(object), want)
    # ... the noise has the stated standard deviation on the sum ...
    total = sum(shares.values()) / enc.scale
    assert abs(total.std() / (sigma * np.sqrt(len(accepted))) - 1) < 0.15
    # ... and the filter judged the noise-free sketches: its distances are theirs exactly
    judged = result.filter.judged
    sk = np.array([sketch(clients[i]._signed_input, server.projection_seed, 32) for i in judged])
    exact = exact_squared_distances(sk).astype(float) / (32 * enc.scale**2)
    assert np.allclose(result.filter.sq_distances, exact, rtol=1e-12, atol=0)


class _PoisonedNoise(Client):
    """Byzantine: masks an attack vector where its noise share should be, and commits the
    honest seed (the only one it can: the key holder regenerates the share from it)."""

    attack = None

    def _noise_share(self):
        return self.attack


@pytest.fixture(scope="module")
def poisoned_trials():
    caught = honest_failed = 0
    noise = NoiseConfig("ddg", 0.02)
    for trial in range(200):
        x = _updates(4, 12, seed=trial)
        server, clients, keyholder = _parties(x, noise)
        liar = trial % 4
        bad = _PoisonedNoise(server.config, liar, x[liar])
        scale = server.config.encoder.scale
        # a share-sized attack: large along one direction, as much norm as honest noise
        rng = np.random.default_rng(trial)
        direction = rng.normal(size=12)
        direction /= np.linalg.norm(direction)
        bad.attack = np.rint(direction * 0.02 * np.sqrt(12) * scale).astype(np.int64)
        clients[liar] = bad
        r = run_parties(server, clients, keyholder=keyholder)
        caught += r.aborted and not r.verification.passed and r.aggregate is None
        if trial % 4 == 0:
            server, clients, keyholder = _parties(x, noise)
            h = run_parties(server, clients, keyholder=keyholder)
            honest_failed += h.aborted or not h.verification.passed
    return caught, honest_failed


def test_a_poisoned_noise_share_is_caught_in_every_one_of_200_trials(poisoned_trials):
    caught, honest_failed = poisoned_trials
    assert caught == 200
    assert honest_failed == 0


def test_a_bad_noise_seed_is_its_senders_fault_and_the_round_goes_on():
    x = _updates(8, 20, seed=3)  # t = 5: six clients left keep t partners each
    server, clients, keyholder = _parties(x, NoiseConfig("ddg", 0.02))
    pub = KEY.public_key

    def not_a_seed(env):
        m = decode(env.data)
        seed = pub.ciphertext_to_bytes(pub.encrypt(1 << 300))  # decrypts to a non-seed
        return encode(SketchCommit(m.round_id, m.sender, m.ciphertexts, seed))

    def no_seed(env):
        m = decode(env.data)
        return encode(SketchCommit(m.round_id, m.sender, m.ciphertexts))

    layers = [
        Tamper(lambda e: e.kind == "SketchCommit" and e.sender == 1, not_a_seed),
        Tamper(lambda e: e.kind == "SketchCommit" and e.sender == 2, no_seed),
    ]
    result = run_parties(server, clients, keyholder=keyholder, layers=layers)
    assert not result.aborted and result.verification.passed
    assert "noise share cannot be verified" in result.rejected[1]
    assert "no encrypted sketch" in result.rejected[2]  # refused on receipt: a fault
    assert {f.sender for f in result.faults} >= {1, 2}
    assert set(result.survivors) == {0, 3, 4, 5, 6, 7}


def test_noise_needs_filtering_and_a_sensible_scale():
    with pytest.raises(ProtocolConfigError, match="filtering"):
        RoundConfig(0, (0, 1, 2), 4, 1.0, noise=NoiseConfig("ddg", 0.1))
    with pytest.raises(ProtocolConfigError, match="mechanism"):
        NoiseConfig("laplace", 0.1)
    with pytest.raises(ProtocolConfigError, match="sigma"):
        NoiseConfig("ddg", -1.0)
    filtering = FilterConfig(KEY.public_key, 1.0, rule="mean")
    with pytest.raises(ProtocolConfigError, match="below 1"):
        RoundConfig(
            0, (0, 1, 2), 4, 1.0, bits=16, filtering=filtering, noise=NoiseConfig("ddg", 1e-9)
        )


def test_shares_are_a_deterministic_function_of_the_seed_on_the_inputs_lattice():
    noise = NoiseConfig("ddg", 0.05)
    scale = float(2**noise.max_frac_bits)
    assert 2**13 < 0.05 * scale <= 2**14
    a = noise_share(noise, bytes(range(32)), 5000, scale)
    b = noise_share(noise, bytes(range(32)), 5000, scale)
    c = noise_share(noise, bytes(range(1, 33)), 5000, scale)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(a.std() / (0.05 * scale) - 1) < 0.05
    # every integer is reachable: the noise is not on a coarser grid than the inputs (a
    # discrete Gaussian on a coarser lattice would not hide a one-unit difference at all)
    assert np.gcd.reduce(np.abs(a[a != 0])) == 1
    # the round caps its precision so that the share fits that lattice
    filtering = FilterConfig(KEY.public_key, 1.0, rule="mean")
    cfg = RoundConfig(0, tuple(range(5)), 10, 1.0, filtering=filtering, noise=noise)
    assert cfg.encoder.frac_bits == noise.max_frac_bits
    with pytest.raises(ProtocolConfigError, match="above"):
        RoundConfig(0, tuple(range(5)), 10, 1.0, frac_bits=24, filtering=filtering, noise=noise)


def test_run_round_with_noise_reports_the_costs_of_regenerating_shares():
    x = _updates(6, 64, seed=8)
    r = run_round(
        x,
        value_range=1.0,
        rule="mean",
        clip_norm=1.0,
        paillier_key=KEY,
        sketch_dim=16,
        noise=NoiseConfig("skellam", 0.01),
    )
    assert not r.aborted and r.verification.passed
    assert r.transcript.keyholder_seconds["distances"] > 0
    assert np.abs(r.aggregate - x.sum(axis=0)).max() < 0.01 * np.sqrt(6) * 10
