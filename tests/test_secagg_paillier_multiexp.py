"""The compiled multi-exponentiation (secagg._multiexp) against the gmpy2 path and the naive
reference, its refusal of bad input and of a stale build, and its use by default."""

from __future__ import annotations

import os
import random

import gmpy2
import pytest
from gmpy2 import mpz

from secagg import _native_multiexp as native
from secagg import paillier_multiexp as pm
from secagg.errors import CiphertextError, SecAggParameterError
from secagg.paillier_multiexp import MultiExpTable, default_backend, multi_exp_naive

needs_kernel = pytest.mark.skipif(not native.available(), reason="secagg._multiexp not built")
BACKENDS = ["python", pytest.param("compiled", marks=needs_kernel)]

# odd moduli of 1, 2, 3 and 64 words (the last is a Paillier-sized n**2 of 4096 bits)
_P1024 = gmpy2.next_prime(mpz(2) ** 1023 + 12345)
_Q1024 = gmpy2.next_prime(mpz(2) ** 1023 + 98765)
MODULI = [
    mpz(1000003),
    gmpy2.next_prime(mpz(2) ** 127 + 3),
    mpz(2) ** 191 - 1,
    (_P1024 * _Q1024) ** 2,
]


def test_the_kernel_is_built_where_ci_requires_it(monkeypatch):
    """With FORTIS_REQUIRE_KERNELS=1 (CI builds with `pip install -e .`) a missing or stale
    build fails; elsewhere the status must say why the gmpy2 path is used."""
    monkeypatch.delenv("FORTIS_KERNELS", raising=False)
    status = native.kernel_status()
    assert set(status) == {"available", "in_use", "reason", "source_hash_ok", "built", "path"}
    if status["available"]:
        assert status["in_use"] and status["source_hash_ok"] in (True, None)
        assert default_backend(MODULI[-1]) == "compiled"
        assert MultiExpTable([mpz(3)], MODULI[-1], exp_bits=8).backend == "compiled"
    else:
        assert not status["in_use"] and (
            "not built" in status["reason"] or "rebuild" in status["reason"]
        )
        assert default_backend(MODULI[-1]) == "python"
        if os.environ.get("FORTIS_REQUIRE_KERNELS") == "1":
            pytest.fail(f"FORTIS_REQUIRE_KERNELS=1 but secagg._multiexp is not in use: {status}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("modulus", MODULI, ids=["1w", "2w", "3w", "64w"])
@pytest.mark.parametrize("k, bits", [(1, 1), (1, 70), (3, 64), (7, 65), (12, 130)])
def test_table_equals_naive_with_edge_cases(backend, modulus, k, bits):
    rng = random.Random(k * 1000 + bits + int(modulus % 997))
    bases = [mpz(rng.randrange(int(modulus))) for _ in range(k)]
    bases[0] = mpz(1) if k > 2 else bases[0]
    if k > 3:
        bases[1] = mpz(0)  # zero base: 0**0 = 1, 0**e = 0
        bases[2] = modulus + 5  # unreduced base
    top = (1 << bits) - 1
    rows = [[rng.randrange(1 << bits) for _ in range(k)] for _ in range(23)]
    rows.append([0] * k)  # empty product
    rows.append([top] * k)  # every bit set
    rows.append([0] * (k - 1) + [1])
    rows.append([1] + [0] * (k - 1))
    sparse = [[0] * k for _ in range(11)]  # few non-zero entries: empty buckets
    for r in sparse:
        r[rng.randrange(k)] = rng.randrange(1, 1 << bits)
    rows += sparse
    if k > 3:
        rows.append([0, 0] + [rng.randrange(1 << bits) for _ in range(k - 2)])
        rows.append([0, 5] + [0] * (k - 2))
    table = MultiExpTable(bases, modulus, exp_bits=bits, backend=backend)
    assert table.backend == backend
    want = [multi_exp_naive(bases, r, modulus) for r in rows]
    assert table.many(rows) == want
    assert table.many(rows, workers=3) == want
    assert [table(r) for r in rows[:5]] == want[:5]
    for r in rows[:3]:  # the gmpy2 and compiled backends agree through the public API too
        assert MultiExpTable(bases, modulus, exp_bits=bits, backend="python")(r) == table(r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_signed_exponents_and_a_non_invertible_base(backend):
    modulus = MODULI[-1]
    rng = random.Random(5)
    bases = [mpz(rng.randrange(2, int(modulus))) for _ in range(9)]
    rows = [[rng.randrange(-(2**40) + 1, 2**40) for _ in range(9)] for _ in range(6)]
    rows.append([-1] * 9)
    table = MultiExpTable(bases, modulus, exp_bits=40, backend=backend, workers=2)
    assert table.many(rows, workers=2) == [multi_exp_naive(bases, r, modulus) for r in rows]
    not_unit = MultiExpTable([_P1024 * 7, mpz(3)], modulus, exp_bits=4, backend=backend)
    assert (
        not_unit([3, -2])
        == multi_exp_naive([_P1024 * 7, mpz(3)], [3, 0], modulus)
        * gmpy2.invert(9, modulus)
        % modulus
    )
    with pytest.raises(CiphertextError, match="not invertible"):
        not_unit([-3, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_table_rejects_bad_exponents_before_any_work(backend):
    table = MultiExpTable([mpz(2), mpz(3)], MODULI[1], exp_bits=10, backend=backend)
    with pytest.raises(SecAggParameterError, match="exceeds"):
        table.many([[1, 2], [1024, 0]])
    with pytest.raises(SecAggParameterError, match="exceeds"):
        table([-1024, 0])
    with pytest.raises(SecAggParameterError, match="expected 2 exponents"):
        table.many([[1, 2, 3]])
    with pytest.raises(TypeError):
        table([1.5, 2])  # type: ignore[list-item]


@needs_kernel
def test_compiled_backend_refuses_what_it_cannot_do(monkeypatch):
    with pytest.raises(SecAggParameterError, match="even modulus"):
        MultiExpTable([mpz(3)], 2**64, exp_bits=4, backend="compiled")
    assert MultiExpTable([mpz(3)], 2**64, exp_bits=4).backend == "python"  # auto: gmpy2
    with pytest.raises(SecAggParameterError, match="backend must be"):
        MultiExpTable([mpz(3)], 7, exp_bits=4, backend="gpu")
    monkeypatch.setenv("FORTIS_KERNELS", "numpy")
    assert default_backend(MODULI[-1]) == "python"
    assert native.kernel_status()["reason"].endswith("FORTIS_KERNELS=numpy")
    with pytest.raises(SecAggParameterError, match="cannot be used"):
        MultiExpTable([mpz(3)], 7, exp_bits=4, backend="compiled")
    monkeypatch.setenv("FORTIS_KERNELS", "fast")
    with pytest.raises(SecAggParameterError, match="FORTIS_KERNELS must be"):
        MultiExpTable([mpz(3)], 7, exp_bits=4)


@needs_kernel
def test_kernel_checks_its_buffers():
    k = native.kernels
    mod = int(MODULI[1]).to_bytes(16, "little")
    with pytest.raises(ValueError, match="odd"):
        k.powers((2**100).to_bytes(16, "little"), b"\0" * 16, 4)
    with pytest.raises(ValueError, match="whole number"):
        k.powers(b"\1\2\3", b"", 4)
    with pytest.raises(ValueError, match="not reduced"):
        k.powers(mod, b"\xff" * 16, 4)
    table = k.powers(mod, (5).to_bytes(16, "little"), 4)
    assert len(table) == 4 * 16
    with pytest.raises(ValueError, match="more than 4 bits"):
        k.products(mod, table, 1, 4, (16).to_bytes(8, "little"), 1)
    with pytest.raises(ValueError, match="more than 4 bits"):
        k.products(mod, table, 1, 4, (1 << 64).to_bytes(16, "little"), 2)
    with pytest.raises(ValueError, match="table does not hold"):
        k.products(mod, table[:-8], 1, 4, (3).to_bytes(8, "little"), 1)
    with pytest.raises(ValueError, match="whole rows"):
        k.products(mod, table, 1, 4, b"\1", 1)
    assert k.products(mod, table, 1, 4, b"", 1) == b""


@needs_kernel
def test_a_build_that_does_not_match_its_source_is_refused(monkeypatch, tmp_path):
    module, facts = native._check_build()
    assert module is native.kernels and facts["source_hash_ok"] is True
    assert len(module.SOURCE_SHA256) == 64  # compiled in by setup.py
    edited = tmp_path / "_multiexp.c"
    edited.write_bytes(native.SOURCE.read_bytes() + b"/* edited, not rebuilt */\n")
    monkeypatch.setattr(native, "SOURCE", edited)
    module, facts = native._check_build()
    assert module is None and facts["source_hash_ok"] is False and "rebuild" in facts["problem"]


def test_without_the_kernel_everything_falls_back_to_gmpy2(monkeypatch):
    monkeypatch.setattr(native, "kernels", None)
    monkeypatch.setitem(native._BUILD, "problem", "secagg._multiexp is not built (test)")
    monkeypatch.delenv("FORTIS_KERNELS", raising=False)
    assert not native.enabled() and default_backend(MODULI[-1]) == "python"
    bases = [mpz(3), mpz(5)]
    table = MultiExpTable(bases, MODULI[-1], exp_bits=8)
    assert table.backend == "python" and table([7, 9]) == pm.multi_exp_naive(
        bases, [7, 9], MODULI[-1]
    )
    with pytest.raises(SecAggParameterError, match="not built"):
        MultiExpTable(bases, MODULI[-1], exp_bits=8, backend="compiled")
    monkeypatch.setenv("FORTIS_KERNELS", "compiled")
    with pytest.raises(SecAggParameterError, match="FORTIS_KERNELS=compiled"):
        MultiExpTable(bases, MODULI[-1], exp_bits=8)
