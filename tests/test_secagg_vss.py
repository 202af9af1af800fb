"""Feldman VSS and Diffie-Hellman in the Schnorr group of order PRIME (secagg.vss)."""

from __future__ import annotations

import secrets

import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    PRIME,
    GroupElementError,
    GroupParameterError,
    KeyAgreementError,
    SecAggError,
    ShamirError,
    reconstruct,
    shamir,
    vss,
)
from secagg.vss import Commitments, DHKeyPair, deal, verify_share

G = vss.get_group()


def _g_k_element(group: vss.SchnorrGroup) -> int:
    """An element of order k: a quadratic residue outside G_q."""
    h = 3
    while (u := pow(h, 2 * PRIME, group.p)) == 1:
        h += 1
    return u


# -- group parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2048, 3072])
def test_group_parameters_rederived_from_the_seed(bits):
    group = vss.get_group(bits)
    k, p = vss.group_candidate(bits, group.counter)
    assert (group.k, group.p, group.q) == (k, p, PRIME)
    assert p == 2 * PRIME * k + 1 and p.bit_length() == bits
    assert gmpy2.is_prime(k, 30) and gmpy2.is_prime(p, 30)
    assert p % 4 == 3  # so -1 is a non-residue: the Legendre check excludes the order-2 part
    assert group.g == pow(2, 2 * k, p) != 1
    assert pow(group.g, PRIME, p) == 1
    assert group.element_bytes == bits // 8
    group.check()


def test_counter_is_the_first_in_a_window_before_it():
    """search_group finds the hard-coded counter starting 1500 candidates earlier (the full
    search from 0: ``python -m secagg.vss``, about 2 minutes per size)."""
    c = vss._COUNTERS[2048]
    assert vss.search_group(2048, c - 1500, c + 1) == c
    with pytest.raises(GroupParameterError, match="no 2048-bit group"):
        vss.search_group(2048, c - 50, c)


def test_bad_parameters_are_refused():
    wrong = vss.SchnorrGroup(2048, vss._COUNTERS[2048] + 1)
    with pytest.raises(GroupParameterError, match="counter .*: check failed: (k|p) is prime"):
        wrong.check()
    with pytest.raises(GroupParameterError, match="available"):
        vss.get_group(1024)


def test_fixed_base_table_matches_powmod():
    for e in (0, 1, 2, 255, 256, PRIME - 1, PRIME, PRIME + 5, secrets.randbelow(PRIME)):
        assert G.pow_g(e) == pow(G.g, e % PRIME, G.p)


# -- group elements ------------------------------------------------------------------------------


def test_element_validation_names_the_failure():
    y = int(G.pow_g(secrets.randbelow(PRIME)))
    assert vss.validate_element(G, y, full=True) == y
    assert vss.decode_element(G, vss.encode_element(G, y), full=True) == y
    for bad, match in [
        (0, "out of range"),
        (G.p, "out of range"),
        (G.p + y, "out of range"),
        (G.p - 1, "quadratic residue"),  # -1, order 2
        (G.p - y, "quadratic residue"),  # -y
        (True, "must be an int"),
        ("1", "must be an int"),
    ]:
        with pytest.raises(GroupElementError, match=match):
            vss.validate_element(G, bad, what="test element")
    u = _g_k_element(G)
    assert vss.validate_element(G, u) == u  # the cheap check lets G_k through ...
    with pytest.raises(GroupElementError, match="subgroup of order q"):
        vss.validate_element(G, u * y % G.p, full=True)  # ... the full one does not
    with pytest.raises(GroupElementError, match="256 bytes"):
        vss.decode_element(G, b"\x01" * 255)
    with pytest.raises(GroupElementError, match="not in \\[1, p\\)"):
        vss.encode_element(G, G.p)
    assert issubclass(GroupElementError, SecAggError) and issubclass(GroupElementError, ValueError)


# -- dealing and verification --------------------------------------------------------------------


def test_honest_shares_verify_and_commit_to_the_secret():
    secret = secrets.token_bytes(32)
    xs = [1, 2, 7, 100, 2**32]  # client ids 0..2**32 - 1 are points id + 1
    dealt = deal(secret, 3, xs)
    assert dealt.shares.keys() == set(xs)
    c = dealt.commitments
    assert c.threshold == 3 and c.constant == G.pow_g(int.from_bytes(secret, "big"))
    assert c.commits_to(secret) and not c.commits_to(secrets.token_bytes(32))
    assert all(verify_share(c, x, y) for x, y in dealt.shares.items())
    assert reconstruct(dealt.shares, 3) == secret
    one = deal(b"k", 1, [5, 6])
    assert one.commitments.threshold == 1 and all(
        verify_share(one.commitments, x, y) for x, y in one.shares.items()
    )


def test_tampered_share_wrong_point_or_tampered_commitment_rejected():
    dealt = deal(secrets.token_bytes(32), 4, range(1, 8))
    c, shares = dealt.commitments, dealt.shares
    for x, y in shares.items():
        assert not verify_share(c, x, (y + 1) % PRIME)
        assert not verify_share(c, x, shares[x % 7 + 1])  # a neighbour's share
        assert not verify_share(c, x % 7 + 1, y)  # right share, wrong point
    assert not verify_share(c, 1, shares[1] + PRIME)  # not a field element
    assert not verify_share(c, 1, -1) and not verify_share(c, 1, "1")
    for j in range(c.threshold):
        values = list(c.values)
        values[j] = values[j] * G.g % G.p  # C_j of a polynomial with a_j + 1
        forged = Commitments(G, values)
        assert not any(verify_share(forged, x, y) for x, y in shares.items())
    with pytest.raises(ShamirError, match="evaluation point"):
        verify_share(c, 0, shares[1])


def test_commitments_bytes_round_trip_and_validation():
    t = 5
    c = deal(secrets.token_bytes(32), t, range(1, 9)).commitments
    blob = c.to_bytes()
    assert len(blob) == Commitments.byte_size(t) == t * 256
    assert Commitments.from_bytes(blob, t) == c
    assert Commitments.from_bytes(blob, t, full=True) == c
    assert hash(Commitments.from_bytes(blob, t)) == hash(c)
    with pytest.raises(GroupElementError, match="must be 1280 bytes, got 1024"):
        Commitments.from_bytes(blob[:-256], t)
    with pytest.raises(GroupElementError, match="threshold=0"):
        Commitments.from_bytes(b"", 0)

    def with_element(j, value):
        return blob[: 256 * j] + value.to_bytes(256, "big") + blob[256 * (j + 1) :]

    with pytest.raises(GroupElementError, match="C_0 is not a quadratic residue"):
        Commitments.from_bytes(with_element(0, G.p - c.constant), t)
    with pytest.raises(GroupElementError, match="C_3 is not in \\[1, p\\)"):
        Commitments.from_bytes(with_element(3, 0), t)
    with pytest.raises(GroupElementError, match="C_2 is not in the subgroup"):
        tainted = c.values[2] * _g_k_element(G) % G.p
        Commitments.from_bytes(with_element(2, tainted), t, full=True)


def test_components_outside_g_q_pass_only_where_they_cancel():
    """A dealer may hide a G_k part in its commitments that vanishes at t - 1 chosen points;
    shares there verify (they are on the G_q polynomial), every other point fails, and t
    verified points would force the G_k part to be trivial (module docstring). full=True
    catches it at decoding."""
    t = 4
    xs = list(range(1, 11))
    dealt = deal(secrets.token_bytes(32), t, xs)
    u = _g_k_element(G)
    chosen = [2, 5, 9]  # t - 1 points; d(X) = (X - 2)(X - 5)(X - 9) in the exponent of u
    d = [-2 * 5 * 9, 2 * 5 + 2 * 9 + 5 * 9, -(2 + 5 + 9), 1]
    tainted = [c * pow(u, dj % G.k, G.p) % G.p for c, dj in zip(dealt.commitments.values, d)]
    blob = b"".join(v.to_bytes(256, "big") for v in tainted)
    received = Commitments.from_bytes(blob, t)  # cheap checks pass: all are residues
    ok = {x for x in xs if verify_share(received, x, dealt.shares[x])}
    assert ok == set(chosen)
    with pytest.raises(GroupElementError, match="subgroup of order q"):
        Commitments.from_bytes(blob, t, full=True)
    # a sign on C_1 and C_2 cancels at every point ((-1)**(x + x*x) == 1): same verdicts
    signed = list(dealt.commitments.values)
    signed[1], signed[2] = G.p - signed[1], G.p - signed[2]
    flipped = Commitments.from_bytes(b"".join(v.to_bytes(256, "big") for v in signed), t)
    assert all(verify_share(flipped, x, y) for x, y in dealt.shares.items())
    assert not verify_share(flipped, 3, dealt.shares[3] + 1)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 14), data=st.data())
def test_property_any_t_verified_shares_reconstruct_the_committed_secret(n, data):
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 2**32), min_size=n, max_size=n, unique=True))
    secret = data.draw(st.binary(min_size=32, max_size=32))
    dealt = deal(secret, t, xs)
    c = Commitments.from_bytes(dealt.commitments.to_bytes(), t)
    chosen = data.draw(st.permutations(xs))[:t]
    assert all(verify_share(c, x, dealt.shares[x]) for x in chosen)
    got = reconstruct({x: dealt.shares[x] for x in chosen}, t)
    assert got == secret and c.commits_to(got)
    assert G.pow_g(int.from_bytes(got, "big")) == c.constant


def test_holder_checks_many_dealers_and_names_the_bad_ones():
    me = 42
    received = {}
    for dealer in range(6):
        for purpose in ("mask_key", "self_seed"):
            dealt = deal(secrets.token_bytes(32), 5, [me, 1, 2, 3, 4, 5])
            received[(dealer, purpose)] = (dealt.commitments, dealt.shares[me])
    assert vss.verify_shares(me, received) == frozenset()
    c, y = received[(3, "self_seed")]
    received[(3, "self_seed")] = (c, (y + 7) % PRIME)
    c, _ = received[(4, "mask_key")]
    received[(4, "mask_key")] = (c, received[(0, "mask_key")][1])  # another dealer's share
    assert vss.verify_shares(me, received) == {(3, "self_seed"), (4, "mask_key")}
    assert vss.verify_shares(me + 1, received) == set(received)  # wrong holder point
    with pytest.raises(ShamirError):
        vss.verify_shares(0, received)


def test_server_attributes_decoded_wrong_points_with_the_commitments():
    m, t = 12, 4
    secret = secrets.token_bytes(32)
    dealt = deal(secret, t, range(1, m + 1))
    returned = dict(dealt.shares)
    liars = {3, 8, 11}  # e = (12 - 4) // 2 = 4
    for x in liars:
        returned[x] = secrets.randbelow(PRIME)
    got = shamir.decode(returned, t)
    assert got == (secret, frozenset(liars))
    assert vss.find_bad_shares(dealt.commitments, returned) == liars
    assert dealt.commitments.commits_to(got.secret)


def test_past_the_radius_the_commitments_expose_a_wrong_decoding():
    """e + 1 colluders following another polynomial make decode return its secret (see the
    Shamir test); the commitments reject that secret and name the colluders."""
    m, t = 9, 3
    xs = list(range(1, m + 1))
    shares, coeffs = shamir.split_with_coefficients(secrets.token_bytes(32), t, xs)
    dealt = vss.VerifiableSharing(shares, vss.commit(coeffs))
    assert dealt.commitments.commits_to(coeffs[0])
    c = secrets.randbelow(PRIME - 1) + 1
    other = [(coeffs[0] + 2 * c) % PRIME, (coeffs[1] - 3 * c) % PRIME, (coeffs[2] + c) % PRIME]
    liars = {3, 4, 5, 6}
    returned = {x: shamir.evaluate(other, x) if x in liars else y for x, y in dealt.shares.items()}
    got = shamir.decode(returned, t)
    assert int.from_bytes(got.secret, "big") == other[0]
    assert not dealt.commitments.commits_to(got.secret)
    assert vss.find_bad_shares(dealt.commitments, returned) == liars
    honest = {x: y for x, y in returned.items() if x not in liars}
    assert dealt.commitments.commits_to(reconstruct(honest, t))


# -- Diffie-Hellman in G_q -----------------------------------------------------------------------


def test_dh_agreement_is_symmetric_and_bound_to_info():
    a, b, c = DHKeyPair.generate(), DHKeyPair.generate(), DHKeyPair.generate()
    k_ab = vss.dh_agree(a, b.public_bytes(), b"round 1 | 3 5")
    assert len(k_ab) == 32 and k_ab == vss.dh_agree(b, a.public_bytes(), b"round 1 | 3 5")
    assert k_ab != vss.dh_agree(a, b.public_bytes(), b"round 2 | 3 5")
    assert k_ab != vss.dh_agree(a, c.public_bytes(), b"round 1 | 3 5")
    assert len(a.public_bytes()) == 256 and a.public == G.pow_g(int.from_bytes(a.private_bytes()))
    again = DHKeyPair.from_private_bytes(a.private_bytes())
    assert again.public == a.public


def test_dh_peer_key_validation():
    y = DHKeyPair.generate().public
    assert vss.validate_dh_public_key(y.to_bytes(256, "big")) == y
    for bad, match in [
        (1, "identity"),
        (G.p - 1, "quadratic residue"),
        (G.p - y, "quadratic residue"),
        (_g_k_element(G), "subgroup of order q"),
        (y * _g_k_element(G) % G.p, "subgroup of order q"),
    ]:
        with pytest.raises(KeyAgreementError, match=match):
            vss.validate_dh_public_key(bad.to_bytes(256, "big"))
    # a client may skip the subgroup exponentiation; the order-2 part is still refused
    u = _g_k_element(G)
    assert vss.validate_dh_public_key((y * u % G.p).to_bytes(256, "big"), full=False)
    with pytest.raises(KeyAgreementError, match="quadratic residue"):
        vss.validate_dh_public_key((G.p - y).to_bytes(256, "big"), full=False)
    a, b = DHKeyPair.generate(), DHKeyPair.generate()
    assert vss.dh_agree(a, b.public_bytes(), b"x", full_check=False) == vss.dh_agree(
        b, a.public_bytes(), b"x"
    )
    for blob in (b"\x00" * 256, G.p.to_bytes(256, "big"), b"\x01" * 32, (1).to_bytes(256, "big")):
        for full in (True, False):
            with pytest.raises(KeyAgreementError):
                vss.dh_agree(a, blob, b"", full_check=full)
    with pytest.raises(KeyAgreementError, match="nonzero"):
        DHKeyPair.from_private_bytes(b"\x00" * 32)
    with pytest.raises(KeyAgreementError, match="32 bytes"):
        DHKeyPair.from_private_bytes(b"\x01" * 31)


def test_private_key_sharing_is_bound_to_the_public_key():
    """With the masking key pair in G_q, the Feldman constant term of the private key's sharing
    is the advertised public key, and recovery gives the same key pair back."""
    kp = DHKeyPair.generate()
    dealt = deal(kp.private_bytes(), 3, range(1, 6))
    assert dealt.commitments.constant == kp.public
    assert vss.validate_dh_public_key(kp.public_bytes()) == dealt.commitments.constant
    recovered = DHKeyPair.from_private_bytes(
        reconstruct({1: dealt.shares[1], 4: dealt.shares[4], 5: dealt.shares[5]}, 3)
    )
    assert recovered.public == kp.public
    other = DHKeyPair.generate()
    assert deal(other.private_bytes(), 3, range(1, 6)).commitments.constant != kp.public


def test_dh_agree_many_gives_the_same_keys_as_dh_agree():
    me = vss.DHKeyPair.generate()
    peers = [vss.DHKeyPair.generate().public_bytes() for _ in range(5)]
    infos = [b"info-%d" % i for i in range(5)]
    many = vss.dh_agree_many(me, peers, infos, full_check=False)
    assert many == [vss.dh_agree(me, pk, info) for pk, info in zip(peers, infos)]
    assert len(set(many)) == 5
    with pytest.raises(KeyAgreementError):
        vss.dh_agree_many(me, [bytes(255) + b"\x01"], [b"x"])
