"""The optional compiled multi-exponentiation of secagg (internal), and whether it is in use.

``secagg._multiexp`` is built from ``secagg/_multiexp.c`` against GMP at install, when a C
compiler and ``gmp.h`` are available. :class:`~secagg.paillier_multiexp.MultiExpTable` uses it
for an odd modulus (every Paillier ``n**2``) and falls back to gmpy2 otherwise; both give the
same products (the tests compare them with ``multi_exp_naive``).

**A build must match its source**, as for ``robust._kernels``: ``setup.py`` compiles in the
SHA-256 of ``_multiexp.c``; where the source is shipped next to this file, a build with another
hash (edited, not rebuilt) or none is refused and :func:`kernel_status` says why. Without the
source (a wheel) the build is used as is.

``$FORTIS_KERNELS`` is shared with robust: ``numpy`` turns the compiled kernels off (secagg
then uses gmpy2), ``compiled`` requires them, ``auto`` (the default) uses them when built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from gmpy2 import mpz

from fortis.native import check_build, kernels_enabled, kernels_reason

__all__ = ["NativeTable", "available", "enabled", "kernel_status"]

SOURCE = Path(__file__).with_name("_multiexp.c")


def _load() -> ModuleType:
    from . import _multiexp

    return _multiexp


def _check_build() -> tuple[ModuleType | None, dict[str, Any]]:
    """(the module if built and matching its source, else None; facts for kernel_status)."""
    return check_build(
        _load, SOURCE, name="secagg._multiexp", needs="a C compiler and GMP", fallback="gmpy2"
    )


#: The compiled module when it is built and matches its source, else None.
kernels, _BUILD = _check_build()


def available() -> bool:
    """Whether ``secagg._multiexp`` was built, imported and matches its source."""
    return kernels is not None


def enabled() -> bool:
    """Whether the compiled kernel is to be used, from ``$FORTIS_KERNELS`` (see the module).

    Raises RuntimeError for an unknown value, or for ``compiled`` without a usable build.
    """
    return kernels_enabled(kernels, _BUILD)


def kernel_status() -> dict[str, Any]:
    """Whether the compiled multi-exponentiation is in use, and why (never raises).

    Keys: ``available``, ``in_use``, ``reason`` (one line), ``source_hash_ok`` (True, False
    for a stale or unhashed build, None when not built or no source to compare), ``built``,
    ``path``.
    """
    in_use, reason = kernels_reason(
        kernels,
        _BUILD,
        in_use="compiled multi-exponentiation in use",
        what="compiled multi-exponentiation",
    )
    return {
        "available": kernels is not None,
        "in_use": in_use,
        "reason": reason,
        "source_hash_ok": _BUILD["source_hash_ok"],
        "built": _BUILD["built"],
        "path": _BUILD["path"],
    }


class NativeTable:
    """The compiled counterpart of the table of :class:`~secagg.paillier_multiexp.MultiExpTable`:
    ``base**(2**b)`` for ``b < exp_bits`` in Montgomery form, and products of non-negative
    exponent rows.

    ``modulus`` must be odd and ``>= 3`` and the bases reduced (the caller checks); raises
    RuntimeError if the compiled module is not available.
    """

    def __init__(self, bases: Sequence[mpz], modulus: mpz, exp_bits: int, table: bytes = b""):
        if kernels is None:
            raise RuntimeError(_BUILD["problem"])
        self.modulus = mpz(modulus)
        self.k = len(bases)
        self.exp_bits = exp_bits
        self.limbs = (int(self.modulus.bit_length()) + 63) // 64
        self.elimbs = (exp_bits + 63) // 64
        self._width = 8 * self.limbs
        self._mod = int(self.modulus).to_bytes(self._width, "little")
        self._table = table

    @classmethod
    def build(cls, bases: Sequence[mpz], modulus: mpz, exp_bits: int) -> NativeTable:
        """The table of ``bases`` (one call; see :meth:`powers` to split it over threads)."""
        out = cls(bases, modulus, exp_bits)
        out._table = out.powers(bases)
        return out

    def powers(self, bases: Sequence[mpz]) -> bytes:
        """The table rows of some bases (concatenate in order for all of them). Releases the
        GIL while it computes."""
        shift = 64 * self.limbs
        mont = b"".join(
            int((mpz(b) << shift) % self.modulus).to_bytes(self._width, "little") for b in bases
        )
        return kernels.powers(self._mod, mont, self.exp_bits)

    def products(self, rows: Sequence[Sequence[int]]) -> list[mpz]:
        """``prod_l bases[l]**row[l] mod modulus`` for each row of ``k`` integers in
        ``[0, 2**exp_bits)`` (checked here: ValueError otherwise). Releases the GIL while it
        computes."""
        size = 8 * self.elimbs
        exps = b"".join(int(e).to_bytes(size, "little") for row in rows for e in row)
        if any(len(row) != self.k for row in rows):
            raise ValueError(f"every exponent row must hold k={self.k} values")
        out = kernels.products(self._mod, self._table, self.k, self.exp_bits, exps, self.elimbs)
        w = self._width
        return [mpz.from_bytes(out[i : i + w], "little") for i in range(0, len(out), w)]
