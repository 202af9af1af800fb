"""secagg.paillier*: keys, pooled encryption, CRT decryption, homomorphic operations,
multi-exponentiation, signed slot packing with checked headroom, ciphertext validation.

Most tests use 1024-bit keys (``allow_insecure=True``) for speed; one test runs the whole path
with a default 2048-bit key.
"""

from __future__ import annotations

import pickle
import random
import threading

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phe import paillier as phe_paillier

from secagg import (
    CiphertextError,
    ObfuscationPool,
    PaillierKeyError,
    PaillierOverflowError,
    PaillierPrivateKey,
    PaillierPublicKey,
    SecAggError,
    SecAggParameterError,
    SlotLayout,
)
from secagg.paillier_multiexp import MultiExpTable, batch_invert, multi_exp, multi_exp_naive

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def sk() -> PaillierPrivateKey:
    return PaillierPrivateKey.generate(1024, allow_insecure=True)


@pytest.fixture(scope="module")
def pk(sk) -> PaillierPublicKey:
    return sk.public_key


@pytest.fixture(scope="module")
def other_sk() -> PaillierPrivateKey:
    return PaillierPrivateKey.generate(1024, allow_insecure=True)


# -- keys ------------------------------------------------------------------------------------


def test_small_keys_need_allow_insecure(sk):
    with pytest.raises(PaillierKeyError, match="1024 bits refused"):
        PaillierPrivateKey.generate(1024)
    with pytest.raises(PaillierKeyError):
        PaillierPublicKey.from_bytes(sk.public_key.to_bytes())
    with pytest.raises(PaillierKeyError):
        PaillierPrivateKey.from_bytes(sk.to_bytes())
    with pytest.raises(PaillierKeyError):
        PaillierPrivateKey.generate(1000, allow_insecure=True)  # not a multiple of 8
    with pytest.raises(PaillierKeyError):
        PaillierPrivateKey.generate(512, allow_insecure=True)


def test_key_holds_mpz_and_crt_values(sk, pk):
    assert all(type(x) is type(mpz(0)) for x in (pk.n, pk.nsquare, pk.g, sk.p, sk.q, sk.hp, sk.hq))
    assert pk.g == pk.n + 1 and pk.nsquare == pk.n * pk.n and sk.p * sk.q == pk.n
    assert sk.p < sk.q and sk.p.bit_length() == sk.q.bit_length() == 512
    # with g = n + 1, h_p = (-q)^-1 mod p (L_p(g^(p-1) mod p^2) = (p-1) q mod p)
    assert sk.hp == gmpy2.invert(-sk.q % sk.p, sk.p)
    assert pk.n_bits == 1024 and pk.key_bytes == 128 and pk.ciphertext_bytes == 256


def test_public_key_bytes_roundtrip(pk):
    data = pk.to_bytes()
    assert len(data) == pk.key_bytes == 128
    assert int.from_bytes(data, "big") == pk.n
    again = PaillierPublicKey.from_bytes(data, allow_insecure=True)
    assert again == pk and hash(again) == hash(pk) and again.fingerprint() == pk.fingerprint()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d[:-1], "refused"),
        (lambda d: d + b"\x01", "refused"),
        (lambda d: b"\x00" + d[1:], "does not encode"),
        (lambda d: d[:-1] + bytes([d[-1] & 0xFE]), "even"),
    ],
)
def test_public_key_from_bytes_rejects(pk, mutate, match):
    with pytest.raises(PaillierKeyError, match=match):
        PaillierPublicKey.from_bytes(mutate(pk.to_bytes()), allow_insecure=True)


def test_public_key_sanity_checks():
    prime = gmpy2.next_prime(mpz(1) << 1023)
    with pytest.raises(PaillierKeyError, match="prime"):
        PaillierPublicKey(prime, allow_insecure=True)
    p = gmpy2.next_prime(mpz(3) << 510)
    with pytest.raises(PaillierKeyError, match="square"):
        PaillierPublicKey(p * p, allow_insecure=True)
    with pytest.raises(PaillierKeyError, match="factor below"):
        PaillierPublicKey(3 * gmpy2.next_prime(mpz(1) << 1022), allow_insecure=True)
    with pytest.raises(TypeError):
        PaillierPublicKey(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PaillierPublicKey(True)  # type: ignore[arg-type]


def test_private_key_bytes_roundtrip(sk):
    data = sk.to_bytes()
    assert data.startswith(b"FRTS-PSK") and len(data) == 8 + 1 + 2 + 128
    again = PaillierPrivateKey.from_bytes(data, allow_insecure=True)
    assert (again.p, again.q, again.public_key) == (sk.p, sk.q, sk.public_key)
    c = sk.public_key.encrypt(424242)
    assert again.decrypt(c) == 424242


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: b"XXXX" + d[4:], "magic"),
        (lambda d: d[:8] + b"\x07" + d[9:], "version"),
        (lambda d: d[:-1], "does not match"),
        (lambda d: d + b"\x00", "does not match"),
        (lambda d: d[:-64] + d[-128:-64], "refused|square"),  # q := p: n = p**2
    ],
)
def test_private_key_from_bytes_rejects(sk, mutate, match):
    with pytest.raises(PaillierKeyError, match=match):
        PaillierPrivateKey.from_bytes(mutate(sk.to_bytes()), allow_insecure=True)


def test_private_key_checks_factors(sk, other_sk):
    pk = sk.public_key
    with pytest.raises(PaillierKeyError, match="does not equal"):
        PaillierPrivateKey(pk, sk.p, other_sk.q)
    # a 512-bit composite without small factors, and a 512-bit prime: n passes the public checks
    composite = gmpy2.next_prime(mpz(3) << 254) * gmpy2.next_prime(mpz(1) << 256)
    prime = gmpy2.next_prime(mpz(3) << 510)
    assert composite.bit_length() == prime.bit_length() == 512
    public = PaillierPublicKey(prime * composite, allow_insecure=True)
    with pytest.raises(PaillierKeyError, match="not prime"):
        PaillierPrivateKey(public, prime, composite)
    small = gmpy2.next_prime(mpz(1) << 400)
    big = gmpy2.next_prime(mpz(1) << 623)
    with pytest.raises(PaillierKeyError, match="same bit length"):
        PaillierPrivateKey(PaillierPublicKey(small * big, allow_insecure=True), small, big)


def test_interoperates_with_phe():
    pub, priv = phe_paillier.generate_paillier_keypair(n_length=1024)
    sk = PaillierPrivateKey.from_phe(priv, allow_insecure=True)
    assert sk.public_key.n == pub.n
    c_phe = pub.raw_encrypt(987654321)
    assert sk.decrypt(c_phe) == 987654321
    c_ours = sk.public_key.encrypt(123456789)
    assert priv.raw_decrypt(int(c_ours)) == 123456789
    with pytest.raises(TypeError):
        PaillierPrivateKey.from_phe(object())


# -- encryption and decryption ------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_encrypt_decrypt_roundtrip(sk, pk, data):
    m = data.draw(st.integers(0, int(pk.n) - 1))
    c = pk.encrypt(m)
    assert 0 < c < pk.nsquare and sk.decrypt(c) == m


def test_encryption_matches_the_textbook_formula(sk, pk):
    r = mpz(123456789123456789)
    rn = gmpy2.powmod(r, pk.n, pk.nsquare)
    for m in (0, 1, 2, pk.n - 1, pk.n // 2, 10**200 % pk.n):
        assert pk.raw_encrypt(mpz(m), rn) == (1 + m * pk.n) * rn % pk.nsquare


def test_encrypt_is_randomised_and_checked(sk, pk):
    assert pk.encrypt(5) != pk.encrypt(5)
    for m in (0, pk.n - 1):
        assert sk.decrypt(pk.encrypt(m)) == m
    for bad in (-1, pk.n, pk.n + 5):
        with pytest.raises(PaillierOverflowError):
            pk.encrypt(bad)
    with pytest.raises(TypeError):
        pk.encrypt(1.0)  # type: ignore[arg-type]
    with pytest.raises(PaillierOverflowError):
        pk.encrypt_many([1, 2, -3])


def test_signed_encoding_limits(sk, pk):
    top = pk.max_signed
    for v in (top, -top, 0, -1, 1):
        assert sk.decrypt_signed(pk.encrypt_signed(v)) == v
    for v in (top + 1, -top - 1):
        with pytest.raises(PaillierOverflowError):
            pk.encode_signed(v)
    with pytest.raises(PaillierOverflowError):
        pk.decode_signed(pk.n)


def test_decrypt_many_matches_decrypt(sk, pk):
    ms = [0, 1, 17, pk.n - 1, 2**500 + 3, 99]
    cs = pk.encrypt_many(ms)
    for workers in (1, 2, 3):
        assert sk.decrypt_many(cs, workers=workers) == ms
    assert sk.decrypt_many([]) == []
    signed = sk.decrypt_many_signed(pk.encrypt_many([pk.encode_signed(v) for v in (-5, 5)]))
    assert signed == [-5, 5]


def test_decrypt_validates_first(sk, pk):
    with pytest.raises(CiphertextError, match="from K-test: is zero"):
        sk.decrypt(0, sender="K-test")
    with pytest.raises(CiphertextError) as info:
        sk.decrypt_many([pk.encrypt(1), pk.n * 3], sender=4)
    assert info.value.index == 1 and info.value.sender == 4


# -- homomorphic operations -------------------------------------------------------------------

BOUND = 2**200  # signed plaintexts far from n/2 (1024-bit key), so nothing wraps

signed = st.integers(-BOUND, BOUND)
small_scalar = st.integers(-(2**64), 2**64)


@SETTINGS
@given(a=signed, b=signed, k=small_scalar)
def test_homomorphic_ops_match_plaintext_arithmetic(sk, pk, a, b, k):
    ca, cb = pk.encrypt_signed(a), pk.encrypt_signed(b)
    dec = sk.decrypt_signed
    assert dec(pk.add(ca, cb)) == a + b
    assert dec(pk.sub(ca, cb)) == a - b
    assert dec(pk.negate(ca)) == -a
    assert dec(pk.add_plain(ca, b)) == a + b
    assert dec(pk.mul_scalar(ca, k)) == a * k
    assert dec(pk.sum([ca, cb, ca])) == 2 * a + b
    re = pk.rerandomize(ca)
    assert re != ca and dec(re) == a


@SETTINGS
@given(
    values=st.lists(st.integers(-(2**100), 2**100), min_size=1, max_size=12),
    data=st.data(),
)
def test_multi_exp_is_the_encrypted_inner_product(sk, pk, values, data):
    scalars = data.draw(st.lists(small_scalar, min_size=len(values), max_size=len(values)))
    cs = [pk.encrypt_signed(v) for v in values]
    expected = sum(v * s for v, s in zip(values, scalars))
    assert sk.decrypt_signed(pk.multi_exp(cs, scalars)) == expected


def test_empty_sum_and_multi_exp(sk, pk):
    assert sk.decrypt(pk.sum([])) == 0
    assert sk.decrypt(pk.multi_exp([], [])) == 0
    c = pk.encrypt(9)
    assert sk.decrypt(pk.multi_exp([c, c], [0, 0])) == 0


# -- multi-exponentiation ----------------------------------------------------------------------


def _residues(pk, k, seed):
    rng = np.random.default_rng(seed)
    return [pk.validate(mpz(int.from_bytes(rng.bytes(255), "big")) + 1) for _ in range(k)]


@SETTINGS
@given(
    k=st.integers(1, 40),
    bits=st.integers(1, 80),
    window=st.one_of(st.none(), st.integers(1, 9)),
    signed_exps=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_multi_exp_equals_naive(pk, k, bits, window, signed_exps, seed):
    rng = random.Random(seed)
    bases = _residues(pk, k, seed)
    lo = -(2**bits) + 1 if signed_exps else 0
    exps = [rng.randrange(lo, 2**bits) for _ in range(k)]
    ref = multi_exp_naive(bases, exps, pk.nsquare)
    assert multi_exp(bases, exps, pk.nsquare, window=window) == ref
    table = MultiExpTable(bases, pk.nsquare, exp_bits=bits, window=window)
    assert table(exps) == ref


def test_multi_exp_table_many_is_independent_of_workers(pk):
    bases = _residues(pk, 24, 1)
    rng = np.random.default_rng(2)
    rows = [[int(x) for x in rng.integers(-(2**40), 2**40, 24)] for _ in range(7)]
    table = MultiExpTable(bases, pk.nsquare, exp_bits=41)
    expected = [multi_exp_naive(bases, r, pk.nsquare) for r in rows]
    assert table.many(rows) == expected
    built_on_two = MultiExpTable(bases, pk.nsquare, exp_bits=41, workers=2)
    assert built_on_two._flat == table._flat and built_on_two.many(rows) == expected
    assert table.many(rows, workers=2) == expected
    assert table.many(rows, workers=16) == expected
    assert table.many([]) == []


def test_multi_exp_errors(pk):
    bases = _residues(pk, 3, 3)
    with pytest.raises(SecAggParameterError, match="one exponent per base"):
        multi_exp(bases, [1, 2], pk.nsquare)
    with pytest.raises(SecAggParameterError, match="window"):
        multi_exp(bases, [1, 2, 3], pk.nsquare, window=0)
    with pytest.raises(TypeError):
        multi_exp(bases, [1, 2, 3.5], pk.nsquare)  # type: ignore[list-item]
    table = MultiExpTable(bases, pk.nsquare, exp_bits=8)
    with pytest.raises(SecAggParameterError, match="exp_bits=8"):
        table([1, 256, 3])
    with pytest.raises(SecAggParameterError, match="expected 3"):
        table([1, 2])
    with pytest.raises(SecAggParameterError):
        MultiExpTable([], pk.nsquare, exp_bits=8)
    not_unit = pk.n * 2
    with pytest.raises(CiphertextError, match="not invertible"):
        multi_exp([bases[0], not_unit], [1, -1], pk.nsquare)
    with pytest.raises(CiphertextError, match="not invertible"):
        MultiExpTable([not_unit], pk.nsquare, exp_bits=4)([-3])


def test_batch_invert(pk):
    vals = _residues(pk, 9, 4)
    assert batch_invert(vals, pk.nsquare) == [gmpy2.invert(v, pk.nsquare) for v in vals]
    assert batch_invert([], pk.nsquare) == []
    with pytest.raises(CiphertextError) as info:
        batch_invert([vals[0], pk.n, vals[1]], pk.nsquare)
    assert info.value.index == 1


# -- packing -----------------------------------------------------------------------------------


def _homomorphic_sum(sk, layout, vectors):
    """Encrypt each packed vector, add the ciphertexts, decrypt and unpack the sum (a vector
    object that appears several times is encrypted once and its ciphertexts added again)."""
    pk = sk.public_key
    cache: dict[int, list[mpz]] = {}
    for v in vectors:
        if id(v) not in cache:
            cache[id(v)] = pk.encrypt_many(layout.pack(v))
    packed = [cache[id(v)] for v in vectors]
    sums = [pk.sum(col) for col in zip(*packed)]
    return layout.unpack(sk.decrypt_many(sums), len(vectors[0]))


def test_layout_sizes(pk):
    layout = SlotLayout.for_sums(pk, input_bound=2**20, additions=100)
    assert layout.max_abs == 100 * 2**20
    assert layout.slot_bits == (100 * 2**20).bit_length() + 1 == 28
    assert layout.slots == (1024 - 2) // 28
    assert layout.max_additions == 100
    assert layout.plaintexts_for(0) == 0 and layout.plaintexts_for(73) == 3
    assert SlotLayout.slots_for(pk, 28) == layout.slots and SlotLayout.bits_for(2**20) == 22


@SETTINGS
@given(
    slot_bits=st.integers(2, 140),
    data=st.data(),
)
def test_pack_unpack_roundtrip(pk, slot_bits, data):
    max_abs = data.draw(st.integers(1, 2 ** (slot_bits - 1) - 1))
    layout = SlotLayout(pk, max_abs=max_abs, slot_bits=slot_bits)
    size = min(2 * layout.slots + 2, 300)
    values = data.draw(st.lists(st.integers(-max_abs, max_abs), max_size=size))
    as_array = np.array(values, dtype=np.int64) if max_abs < 2**63 else np.array(values, object)
    packed = layout.pack(as_array)
    assert len(packed) == layout.plaintexts_for(len(values))
    assert all(0 <= m < pk.n for m in packed)
    # the vectorised int64 path and the exact per-value path agree
    assert packed == layout.pack(np.array(values, dtype=object))
    out = layout.unpack(packed, len(values))
    assert out.tolist() == values
    assert out.dtype == (np.int64 if max_abs < 2**63 else object)


def test_packed_plaintext_is_the_signed_slot_sum(pk):
    layout = SlotLayout(pk, max_abs=100, slot_bits=10)
    (m,) = layout.pack([3, -2, 0, 7])
    assert pk.decode_signed(m) == 3 - 2 * 2**10 + 7 * 2**30


@pytest.mark.parametrize("additions", [1, 2, 37, 1000])
def test_sum_at_the_headroom_limit_is_exact(sk, additions):
    bound = 2**23 - 1
    layout = SlotLayout.for_sums(sk.public_key, input_bound=bound, additions=additions)
    count = layout.slots + 5
    # extremes of both signs, alternating over the slots: every slot of the sum is +-max_abs
    extreme = np.where(np.arange(count) % 2 == 0, -bound, bound).astype(np.int64)
    vectors = [extreme] * additions
    expected = additions * extreme
    assert np.abs(expected).min() == layout.max_abs
    assert (_homomorphic_sum(sk, layout, vectors) == expected).all()
    # and random values over the whole input range
    rng = np.random.default_rng(additions)
    randoms = [rng.integers(-bound, bound, count, endpoint=True) for _ in range(min(additions, 8))]
    vectors = randoms + [extreme] * (additions - len(randoms))
    assert (_homomorphic_sum(sk, layout, vectors) == np.sum(vectors, axis=0)).all()


def test_sum_at_limit_with_wide_slots_is_exact(sk):
    bound = 2**90
    layout = SlotLayout.for_sums(sk.public_key, input_bound=bound, additions=5)
    vectors = [np.array([bound, -bound, bound - 1, 0, -1] * 4, dtype=object) for _ in range(5)]
    out = _homomorphic_sum(sk, layout, vectors)
    assert out.dtype == object and out.tolist() == (5 * vectors[0]).tolist()


def test_overflow_is_refused_never_wrapped(sk, pk):
    with pytest.raises(PaillierOverflowError, match="no headroom"):
        SlotLayout.for_sums(pk, input_bound=2**20, additions=100, slot_bits=27)
    with pytest.raises(PaillierOverflowError, match="does not fit"):
        SlotLayout(pk, max_abs=3, slot_bits=1100)
    with pytest.raises(PaillierOverflowError, match="input_bound"):
        SlotLayout(pk, max_abs=10, input_bound=11)
    layout = SlotLayout.for_sums(pk, input_bound=1000, additions=4)
    with pytest.raises(PaillierOverflowError, match="index 2"):
        layout.pack([1, -1000, 1001, 5])
    with pytest.raises(PaillierOverflowError, match="index 1"):
        layout.pack(np.array([1, -1001], dtype=object))
    layout.check_combination(4)
    with pytest.raises(PaillierOverflowError, match="at most 4"):
        layout.check_combination(5)
    # one addition too many: the sum exceeds max_abs (here still inside the slot) and unpack
    # refuses it
    vectors = [np.full(layout.slots, 1000, dtype=np.int64)] * 4 + [np.full(layout.slots, 50)]
    with pytest.raises(PaillierOverflowError, match="beyond max_abs"):
        _homomorphic_sum(sk, layout, vectors)
    # far beyond: the slot itself overflows into its neighbour; unpack still refuses
    vectors = [np.full(layout.slots, 1000, dtype=np.int64)] * 9
    with pytest.raises(PaillierOverflowError, match="headroom"):
        _homomorphic_sum(sk, layout, vectors)


def test_the_margin_and_slot_checks_guard_a_real_failure(sk, pk):
    """The same extreme round trip is exact with the checked layout and fails when a check is
    removed (``_unchecked``), so the checks (and the exactness tests) can fail."""
    w = 32  # 1024 / 32 = 32 slots without margin, 31 with the required 2 bits
    top = 2 ** (w - 1) - 1

    def exact(layout, vectors):
        try:
            return (_homomorphic_sum(sk, layout, vectors) == np.sum(vectors, axis=0)).all()
        except PaillierOverflowError:  # detected at unpack: still not the right answer
            return False

    extreme = [np.full(31, -top, dtype=np.int64)]
    checked = SlotLayout(pk, max_abs=top, slot_bits=w)
    assert checked.slots == 31 and exact(checked, extreme)
    no_margin = SlotLayout(pk, max_abs=top, slot_bits=w, margin=0, _unchecked=True)
    assert no_margin.slots == 32
    extreme = [np.full(32, -top, dtype=np.int64)]
    packed = -top * sum(2 ** (w * j) for j in range(32))
    assert 2 * abs(packed) > pk.n  # so the plaintext wraps modulo n ...
    assert not exact(no_margin, extreme)  # ... and the round trip fails

    bound, additions = 1000, 8
    checked = SlotLayout.for_sums(pk, input_bound=bound, additions=additions)
    narrow = SlotLayout(
        pk, max_abs=bound * additions, slot_bits=checked.slot_bits - 1, _unchecked=True
    )
    vectors = [np.full(checked.slots, bound, dtype=np.int64)] * additions
    assert exact(checked, vectors)
    assert not exact(narrow, vectors)  # a slot carries into its neighbour
    with pytest.raises(SecAggParameterError, match="margin"):
        SlotLayout(pk, max_abs=top, slot_bits=w, margin=1)


def test_pack_columns_roundtrip_and_layout(pk):
    layout = SlotLayout(pk, max_abs=2**40)
    rng = np.random.default_rng(5)
    rows, cols = 2 * layout.slots + 3, 6
    matrix = rng.integers(-(2**40), 2**40, (rows, cols), endpoint=True)
    blocks = layout.pack_columns(matrix)
    assert len(blocks) == 3 and all(len(b) == cols for b in blocks)
    # block b, column l holds rows b*slots.. of column l
    first = layout.unpack([blocks[1][2]], layout.slots)
    assert (first == matrix[layout.slots : 2 * layout.slots, 2]).all()
    assert (layout.unpack_columns(blocks, rows) == matrix).all()
    with pytest.raises(SecAggParameterError):
        layout.pack_columns(np.zeros(4, dtype=np.int64))
    with pytest.raises(SecAggParameterError):
        layout.unpack_columns(blocks, 3 * layout.slots + 1)


def test_packed_columns_multi_exp_gives_every_inner_product(sk, pk):
    """The distance protocol's step: Enc(column l of a block of clients) raised to a mask
    vector M gives, in slot i, <t_i, M>, for the whole block at once."""
    k, clients, t_bound, m_bits = 16, 11, 2**30, 40
    rng = np.random.default_rng(6)
    t = rng.integers(-t_bound, t_bound, (clients, k), endpoint=True)
    layout = SlotLayout(pk, max_abs=k * t_bound * (2**m_bits - 1), input_bound=t_bound)
    blocks = layout.pack_columns(t)
    enc = [pk.encrypt_many(block) for block in blocks]
    masks = [[int(x) for x in rng.integers(0, 2**m_bits, k)] for _ in range(3)]
    for block_index, columns in enumerate(enc):
        table = MultiExpTable(columns, pk.nsquare, exp_bits=m_bits)
        for mask, c in zip(masks, table.many(masks, workers=2)):
            inner = layout.unpack(sk.decrypt_many([c]), layout.slots)
            lo = block_index * layout.slots
            rows = t[lo : lo + layout.slots]
            expected = [sum(int(a) * b for a, b in zip(row, mask)) for row in rows]
            assert inner[: len(rows)].tolist() == expected


def test_pack_input_types(pk):
    layout = SlotLayout(pk, max_abs=100)
    with pytest.raises(TypeError):
        layout.pack(np.array([1.0, 2.0]))
    with pytest.raises(TypeError):
        layout.pack(np.array([True, False]))
    with pytest.raises(TypeError):
        layout.pack(np.array([1, "a"], dtype=object))
    assert layout.pack([]) == []
    assert layout.unpack([], 0).size == 0
    small = np.array([1, -2, 3], dtype=np.int8)
    assert layout.unpack(layout.pack(small), 3).tolist() == [1, -2, 3]
    assert layout.unpack(layout.pack(np.array([7], dtype=np.uint64)), 1).tolist() == [7]
    with pytest.raises(SecAggParameterError):
        layout.unpack(layout.pack([1, 2]), layout.slots + 1)
    with pytest.raises(PaillierOverflowError, match="outside"):
        layout.unpack([pk.n], 1)


# -- validation --------------------------------------------------------------------------------


def test_validation_rejects_bad_ciphertexts(sk, pk):
    good = pk.encrypt(3)
    cases = {
        0: "is zero",
        -good: "is negative",
        pk.nsquare: "not below n",
        pk.nsquare + 1: "not below n",
        sk.p * 7: "shares a factor",
        sk.q: "shares a factor",
        pk.n: "shares a factor",
        pk.n * 5 + 0: "shares a factor",
    }
    for bad, reason in cases.items():
        with pytest.raises(CiphertextError, match=reason) as info:
            pk.validate(bad, sender="client 7")
        assert info.value.sender == "client 7" and "client 7" in str(info.value)
        assert str(sk.p) not in str(info.value)
    for bad in (1.5, "12", None, True):
        with pytest.raises(CiphertextError, match="not an integer"):
            pk.validate(bad, sender=1)
    assert pk.validate(good) == good and pk.validate(int(good)) == good


def test_bulk_validation_names_the_first_bad_one(sk, pk):
    cs = pk.encrypt_many(range(10))
    assert pk.validate_many(cs) == cs
    for pos, bad in ((0, 0), (4, sk.p * 3), (9, pk.nsquare)):
        broken = list(cs)
        broken[pos] = bad
        with pytest.raises(CiphertextError) as info:
            pk.validate_many(broken, sender=12)
        assert info.value.index == pos and info.value.sender == 12
    err = pickle.loads(pickle.dumps(info.value))
    assert (err.reason, err.sender, err.index, str(err)) == (
        info.value.reason,
        12,
        9,
        str(info.value),
    )


def test_ciphertext_bytes(sk, pk):
    cs = pk.encrypt_many([5, 6, 7])
    data = pk.ciphertexts_to_bytes(cs)
    assert len(data) == 3 * pk.ciphertext_bytes
    assert pk.ciphertexts_from_bytes(data, count=3) == cs
    assert pk.ciphertext_from_bytes(pk.ciphertext_to_bytes(cs[0])) == cs[0]
    width = pk.ciphertext_bytes
    with pytest.raises(CiphertextError, match="not a multiple"):
        pk.ciphertexts_from_bytes(data[:-1], sender=3)
    with pytest.raises(CiphertextError, match="expected 2"):
        pk.ciphertexts_from_bytes(data, count=2)
    with pytest.raises(CiphertextError, match="expected 1"):
        pk.ciphertext_from_bytes(data[: 2 * width])
    with pytest.raises(CiphertextError, match="is zero"):
        pk.ciphertexts_from_bytes(bytes(width))
    with pytest.raises(CiphertextError, match="not below"):
        pk.ciphertexts_from_bytes(b"\xff" * width)
    with pytest.raises(CiphertextError, match="shares a factor"):
        pk.ciphertexts_from_bytes(data[:width] + pk.n.to_bytes(width, "big"), sender=2)
    with pytest.raises(CiphertextError, match="not bytes"):
        pk.ciphertexts_from_bytes("abc")  # type: ignore[arg-type]


def test_error_families():
    assert issubclass(CiphertextError, SecAggError) and issubclass(CiphertextError, ValueError)
    assert issubclass(PaillierOverflowError, SecAggError)
    assert issubclass(PaillierOverflowError, OverflowError)
    assert issubclass(PaillierKeyError, SecAggError)


# -- obfuscation pool --------------------------------------------------------------------------


def _is_nth_residue(sk, x):
    phi = (sk.p - 1) * (sk.q - 1)
    return gmpy2.powmod(x, phi, sk.public_key.nsquare) == 1


@pytest.mark.parametrize("holder", ["public", "private"])
def test_pool_values_are_fresh_nth_residues(sk, holder):
    pk = sk.public_key
    pool = ObfuscationPool(pk if holder == "public" else sk)
    pool.fill(12, workers=2)
    assert len(pool) == 12
    values = [pool.draw() for _ in range(12)]
    assert len(set(values)) == 12 and all(_is_nth_residue(sk, v) for v in values)
    assert len(pool) == 0 and pool.online_draws == 0 and pool.drawn == 12
    # a non-residue is not accepted by the check (the check can fail)
    assert not _is_nth_residue(sk, pk.n + 1)
    c = pk.encrypt(77, pool=pool)  # empty pool: computed online, counted
    assert pool.online_draws == 1 and sk.decrypt(c) == 77


def test_pool_values_are_consumed_once(sk):
    pk = sk.public_key
    pool = ObfuscationPool(sk)
    pool.fill(40)
    snapshot = list(pool._values)
    drawn: list[mpz] = []
    lock = threading.Lock()

    def drawer():
        mine = [pool.draw() for _ in range(10)] + pool.draw_many(5)
        with lock:
            drawn.extend(mine)

    threads = [threading.Thread(target=drawer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(drawn) == 60 and len(set(drawn)) == 60
    assert set(snapshot) <= set(drawn) and pool.online_draws == 20 and len(pool) == 0
    assert pool.drawn == 60
    # encryptions drawn from the pool never share an obfuscator
    pool.fill(6)
    cs = pk.encrypt_many([1] * 6, pool=pool)
    assert len(set(cs)) == 6 and sk.decrypt_many(cs) == [1] * 6


def test_pool_fills_in_background(sk):
    pool = ObfuscationPool(sk)
    thread = pool.fill_in_background(70, workers=2)
    early = [pool.draw() for _ in range(5)]  # drawing while it fills
    thread.join(timeout=60)
    assert not thread.is_alive()
    rest = pool.draw_many(len(pool))
    assert len(set(early + rest)) == len(early) + len(rest) == 70 + pool.online_draws


def test_pool_errors(sk, other_sk):
    pool = ObfuscationPool(other_sk)
    pool.fill(1)
    with pytest.raises(SecAggParameterError, match="another Paillier key"):
        sk.public_key.encrypt(1, pool=pool)
    with pytest.raises(SecAggParameterError, match="another Paillier key"):
        sk.public_key.encrypt_many([1], pool=pool)
    with pytest.raises(SecAggParameterError):
        pool.fill(-1)
    with pytest.raises(SecAggParameterError):
        pool.fill(1, workers=0)
    with pytest.raises(SecAggParameterError):
        pool.fill_in_background(2, workers=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ObfuscationPool(object())  # type: ignore[arg-type]


# -- the default key size ----------------------------------------------------------------------


def test_default_2048_bit_key_end_to_end():
    sk = PaillierPrivateKey.generate()
    pk = sk.public_key
    assert pk.n_bits == 2048 and pk.key_bytes == 256 and pk.ciphertext_bytes == 512
    assert PaillierPublicKey.from_bytes(pk.to_bytes()) == pk
    assert PaillierPrivateKey.from_bytes(sk.to_bytes()).q == sk.q
    pool = ObfuscationPool(sk)
    pool.fill(8, workers=2)
    layout = SlotLayout.for_sums(pk, input_bound=2**31, additions=100)
    assert layout.slots == (2048 - 2) // layout.slot_bits
    rng = np.random.default_rng(7)
    vectors = [rng.integers(-(2**31), 2**31, 2 * layout.slots, endpoint=True) for _ in range(4)]
    packed = [pk.encrypt_many(layout.pack(v), pool=pool) for v in vectors]
    assert pool.online_draws == 0
    data = pk.ciphertexts_to_bytes(packed[0])
    assert pk.ciphertexts_from_bytes(data, count=2) == packed[0]
    sums = [pk.sum(col) for col in zip(*packed)]
    assert (layout.unpack(sk.decrypt_many(sums, workers=2), 2 * layout.slots) == sum(vectors)).all()
    c = pk.multi_exp(packed[0], [3, -5])
    got = layout.unpack(sk.decrypt_many([c]), layout.slots)
    first, second = vectors[0][: layout.slots], vectors[0][layout.slots :]
    assert (got == 3 * first - 5 * second).all()


def test_generate_paillier_keypair_function():
    from secagg import generate_paillier_keypair

    pk, sk = generate_paillier_keypair(1024, allow_insecure=True)
    assert sk.public_key is pk and sk.decrypt(pk.encrypt(31337)) == 31337
