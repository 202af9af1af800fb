"""Multi-exponentiation ``prod_l bases[l]**exponents[l] mod modulus`` with shared work.

On Paillier ciphertexts this is the homomorphic inner product ``Enc(sum_l e_l * m_l)``; the
masked distance protocol spends most of its time here (``n * ceil(n/slots)`` products over ``k``
bases with exponents of a few tens of bits).

* :func:`multi_exp` — one product. Bucket method per window of ``w`` exponent bits (Pippenger):
  the squarings of the accumulator are shared by all bases (``b`` squarings in all instead of
  ``b`` per base), each base costs one multiplication per window whose digit is non-zero, and
  each window's buckets are combined with about ``2**w`` more (running products).
* :class:`MultiExpTable` — many products over the same bases (one per exponent vector), the
  masked distance protocol's case (the window tables are reused across the ``n`` mask vectors).
  The powers ``base**(2**(w*t))`` are computed once; each product then needs no squaring at all:
  every (base, window) pair with a non-zero digit is multiplied into one bucket per digit value,
  and the buckets are combined once, for about ``k * ceil(b/w) + 2**w`` multiplications.
* :func:`multi_exp_naive` — the reference: one ``powmod`` per base.

Signed exponents are supported: a base with a negative exponent is inverted (all such bases with
one modular inversion, Montgomery's batch trick) in :func:`multi_exp`; in
:class:`MultiExpTable`, negative digits go to separate buckets whose combined product is
inverted once per call. Every function returns exactly ``prod_l bases[l]**exponents[l] mod
modulus`` (the tests compare it with :func:`multi_exp_naive`); bases must be invertible modulo
``modulus`` when their exponent is negative (validated ciphertexts are).

Compiled kernel: for an odd modulus (every Paillier ``n**2``) :class:`MultiExpTable` runs on
``secagg._multiexp`` when it is built (:mod:`secagg._native_multiexp`; ``FORTIS_KERNELS=numpy``
turns it off): Montgomery products on GMP's mpn layer, and Pippenger's output grouping over
exponent bits, about ``k * exp_bits / 10`` products per vector (``r`` vectors share one pass
over the table: every entry goes to the bucket of its ``r``-bit pattern). Same results.

Threads: :meth:`MultiExpTable.many` splits the exponent vectors over ``workers`` threads. The
compiled kernel releases the GIL; the gmpy2 path runs each thread with gmpy2's
``allow_release_gil`` context, so multiplications on different threads overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from . import _native_multiexp as native
from ._paillier_threads import check_workers, map_chunks
from .errors import CiphertextError, SecAggParameterError

__all__ = ["multi_exp", "multi_exp_naive", "MultiExpTable", "batch_invert", "default_backend"]

_ONE = mpz(1)
_MPZ = type(_ONE)
_MAX_WINDOW = 14
_BACKENDS = ("compiled", "python")


def _ints(exponents: Sequence[int]) -> list[int]:
    out = []
    for e in exponents:
        if isinstance(e, int) and not isinstance(e, bool):
            out.append(e)
        elif type(e) is _MPZ or (isinstance(e, np.integer) and not isinstance(e, np.bool_)):
            out.append(int(e))
        else:
            raise TypeError(f"exponents must be integers, got {type(e).__name__}")
    return out


def _check_lengths(bases: Sequence[mpz], exponents: Sequence[int]) -> None:
    if len(bases) != len(exponents):
        raise SecAggParameterError(
            f"multi-exponentiation needs one exponent per base: {len(bases)} bases, "
            f"{len(exponents)} exponents"
        )


def _check_window(window: int | None) -> None:
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= _MAX_WINDOW
    ):
        raise SecAggParameterError(f"window must be an int in [1, {_MAX_WINDOW}], got {window!r}")


def batch_invert(values: Sequence[mpz], modulus: mpz) -> list[mpz]:
    """The inverses of ``values`` modulo ``modulus`` with one ``gmpy2.invert`` and ``3(k-1)``
    multiplications (Montgomery's trick).

    Raises :class:`CiphertextError` if some value is not invertible (its ``index`` is set).
    """
    k = len(values)
    if k == 0:
        return []
    prefix = [values[0]]
    for v in values[1:]:
        prefix.append(prefix[-1] * v % modulus)
    try:
        inv = gmpy2.invert(prefix[-1], modulus)
    except ZeroDivisionError:
        for i, v in enumerate(values):
            if gmpy2.gcd(v, modulus) != 1:
                raise CiphertextError("is not invertible", index=i) from None
        raise  # pragma: no cover - the product of units is a unit
    out = [_ONE] * k
    for i in range(k - 1, 0, -1):
        out[i] = inv * prefix[i - 1] % modulus
        inv = inv * values[i] % modulus
    out[0] = inv
    return out


def multi_exp_naive(bases: Sequence[mpz], exponents: Sequence[int], modulus: mpz) -> mpz:
    """``prod_l powmod(bases[l], exponents[l], modulus)``: the reference (no shared work)."""
    _check_lengths(bases, exponents)
    acc = _ONE
    for b, e in zip(bases, _ints(exponents)):
        acc = acc * gmpy2.powmod(b, e, modulus) % modulus
    return acc


def _window_cost(k: int, bits: int, w: int, squarings: bool) -> float:
    """Multiplications of :func:`multi_exp` (``squarings=True``: buckets combined per window)
    or of one :class:`MultiExpTable` product (one combine for all windows).

    A bucket's first entry costs nothing (it is assigned), so sorting ``items`` entries into
    buckets and combining ``2**w - 1`` buckets with running products costs about
    ``items + 2**w`` multiplications.
    """
    windows = math.ceil(bits / w)
    items = k * (1.0 - 2.0**-w)
    if squarings:
        return bits + windows * (items + 2**w)
    return windows * items + 2**w


def _best_window(k: int, bits: int, squarings: bool) -> int:
    return min(range(1, _MAX_WINDOW + 1), key=lambda w: _window_cost(k, bits, w, squarings))


def _digit_matrix(mags: Sequence[int], w: int, windows: int) -> np.ndarray:
    """``out[t, l] = (mags[l] >> (w*t)) & (2**w - 1)`` as int64, vectorised when every
    magnitude fits 64 bits."""
    mask = (1 << w) - 1
    if all(0 <= e < 1 << 64 for e in mags):
        m = np.array(mags, dtype=np.uint64)
        shifts = np.arange(windows, dtype=np.uint64) * np.uint64(w)
        return ((m[None, :] >> shifts[:, None]) & np.uint64(mask)).astype(np.int64)
    return np.array([[(e >> (w * t)) & mask for e in mags] for t in range(windows)], np.int64)


def _sort_into_buckets(ids: np.ndarray, buckets: int) -> tuple[list[int], list[int]]:
    """Entries sorted by bucket id, and ``ends[i]``: where bucket ``i`` stops in that order."""
    order = np.argsort(ids, kind="stable").tolist()
    ends = np.cumsum(np.bincount(ids, minlength=buckets)).tolist()
    return order, ends


def _combine_sorted(
    entries: Sequence[mpz], order: list[int], ends: list[int], base: int, size: int, modulus: mpz
) -> mpz | None:
    """``prod_d B_d**d`` over ``d`` in ``[1, size)``, where ``B_d`` is the product of the
    ``entries`` sorted into bucket ``base + d`` (bucket ``i`` is ``order[ends[i-1]:ends[i]]``).

    A bucket's first entry is assigned, each further one costs a multiplication, and the
    buckets are combined with running products (one or two multiplications per bucket);
    ``None`` stands for an empty product.
    """
    run = None
    total = None
    for d in range(size - 1, 0, -1):
        lo, hi = ends[base + d - 1], ends[base + d]
        if lo < hi:
            b = entries[order[lo]]
            for i in order[lo + 1 : hi]:
                b = b * entries[i] % modulus
            run = b if run is None else run * b % modulus
        if run is not None:
            total = run if total is None else total * run % modulus
    return total


def multi_exp(
    bases: Sequence[mpz], exponents: Sequence[int], modulus: mpz, *, window: int | None = None
) -> mpz:
    """``prod_l bases[l]**exponents[l] mod modulus`` with shared squarings (bucket method).

    Parameters
    ----------
    bases:
        mpz values in ``[0, modulus)`` (those with a negative exponent must be invertible).
    exponents:
        Integers of any sign.
    window:
        Bits per window; ``None`` picks the cheapest for ``len(bases)`` and the longest exponent.

    Raises
    ------
    SecAggParameterError
        If the lengths differ or ``window`` is not in ``[1, 14]``.
    CiphertextError
        If a base with a negative exponent is not invertible.
    """
    _check_lengths(bases, exponents)
    _check_window(window)
    exps = _ints(exponents)
    terms = [(b, e) for b, e in zip(bases, exps) if e]
    if not terms:
        return _ONE % modulus
    neg = [i for i, (_, e) in enumerate(terms) if e < 0]
    if neg:
        inverses = batch_invert([terms[i][0] for i in neg], modulus)
        for i, inv in zip(neg, inverses):
            terms[i] = (inv, -terms[i][1])
    if len(terms) == 1:
        return gmpy2.powmod(terms[0][0], terms[0][1], modulus)
    bits = max(e.bit_length() for _, e in terms)
    w = window or _best_window(len(terms), bits, squarings=True)
    windows = math.ceil(bits / w)
    entries = [b for b, _ in terms]
    digits = _digit_matrix([e for _, e in terms], w, windows)
    size = 1 << w
    acc = None
    for t in range(windows - 1, -1, -1):
        if acc is not None:
            for _ in range(w):
                acc = acc * acc % modulus
        order, ends = _sort_into_buckets(digits[t], size)
        total = _combine_sorted(entries, order, ends, 0, size, modulus)
        if total is not None:
            acc = total if acc is None else acc * total % modulus
    return _ONE % modulus if acc is None else acc


def default_backend(modulus: int) -> str:
    """The backend :class:`MultiExpTable` picks for ``modulus`` when none is named:
    ``"compiled"`` if ``secagg._multiexp`` is built and enabled (see
    :mod:`secagg._native_multiexp`) and the modulus is odd and ``>= 3``, else ``"python"``.

    Raises :class:`SecAggParameterError` for an invalid ``$FORTIS_KERNELS``, or for
    ``FORTIS_KERNELS=compiled`` without a usable build.
    """
    try:
        on = native.enabled()
    except RuntimeError as exc:
        raise SecAggParameterError(str(exc)) from None
    return "compiled" if on and modulus % 2 == 1 and modulus >= 3 else "python"


class MultiExpTable:
    """Fixed bases, many exponent vectors: ``table(e) == prod_l bases[l]**e[l] mod modulus``.

    Two backends give the same products:

    * ``"compiled"`` (the default when ``secagg._multiexp`` is built, the modulus is odd and
      ``FORTIS_KERNELS`` does not turn it off): ``base**(2**b)`` for every bit ``b`` in
      Montgomery form (``len(bases) * exp_bits`` squarings, as many residues of memory); vectors
      are then taken about ten at a time, each table entry goes to the bucket of its pattern of
      exponent bits across those vectors, and the buckets are folded into the ten products: about
      ``len(bases) * exp_bits / 10`` Montgomery products per vector.
    * ``"python"`` (gmpy2): ``base**(2**(w*t))`` for every base and window ``t`` (about
      ``len(bases) * exp_bits`` squarings, ``len(bases) * ceil(exp_bits/w)`` residues); each
      product costs about ``len(bases) * ceil(exp_bits / w) + 2**w`` multiplications and no
      squaring: the window digits are extracted with numpy, the table entries are sorted into one
      bucket per digit value, and the buckets are combined with running products.

    Negative exponents cost one modular inversion per product (the compiled backend computes the
    positive and the negative parts as two products).

    Parameters
    ----------
    bases:
        mpz values in ``[0, modulus)``; must be invertible if negative exponents are used.
    modulus:
        The modulus (``n**2`` for Paillier ciphertexts).
    exp_bits:
        Every exponent passed later satisfies ``|e| < 2**exp_bits``.
    window:
        Bits per window of the ``"python"`` backend; ``None`` picks the cheapest per product.
    workers:
        Threads sharing the precomputation (the bases are split between them).
    backend:
        ``"compiled"``, ``"python"`` or ``None`` (compiled when available, see above).

    Raises
    ------
    SecAggParameterError
        For an empty ``bases``, ``exp_bits < 1``, a window outside ``[1, 14]``,
        ``workers < 1``, an unknown backend, or ``"compiled"`` when it cannot be used (not built,
        turned off, or an even modulus); at call time, for a vector of the wrong length or an
        exponent with ``|e| >= 2**exp_bits``.
    """

    def __init__(
        self,
        bases: Sequence[mpz],
        modulus: int,
        *,
        exp_bits: int,
        window: int | None = None,
        workers: int = 1,
        backend: str | None = None,
    ):
        if len(bases) == 0:
            raise SecAggParameterError("MultiExpTable needs at least one base")
        if isinstance(exp_bits, bool) or not isinstance(exp_bits, int) or exp_bits < 1:
            raise SecAggParameterError(f"exp_bits must be an int >= 1, got {exp_bits!r}")
        _check_window(window)
        check_workers(workers)
        self.modulus = mpz(modulus)
        self.k = len(bases)
        self.exp_bits = exp_bits
        self.window = window or _best_window(self.k, exp_bits, squarings=False)
        self.windows = math.ceil(exp_bits / self.window)
        self._bound = 1 << exp_bits
        self.backend = self._pick_backend(backend)
        modulus, w, windows = self.modulus, self.window, self.windows
        reduced = [mpz(b) % modulus for b in bases]
        self._native: native.NativeTable | None = None
        self._flat: list[mpz] = []
        if self.backend == "compiled":
            table = native.NativeTable(reduced, modulus, exp_bits)
            parts = map_chunks(lambda chunk: [table.powers(chunk)], reduced, workers)
            table._table = b"".join(parts)
            self._native = table
            return

        def powers(chunk: Sequence[mpz]) -> list[list[mpz]]:
            # [b, b**(2**w), b**(2**(2w)), ...] by repeated squaring (Python-level squarings
            # beat powmod's per-call Montgomery set-up for these short exponents)
            out = []
            for x in chunk:
                row = [x]
                for _ in range(windows - 1):
                    for _ in range(w):
                        x = x * x % modulus
                    row.append(x)
                out.append(row)
            return out

        per_base = map_chunks(powers, reduced, workers)
        # flat[t * k + l] = bases[l] ** (2 ** (w * t))
        self._flat = [per_base[i][t] for t in range(windows) for i in range(self.k)]

    def _pick_backend(self, backend: str | None) -> str:
        if backend is not None and backend not in _BACKENDS:
            raise SecAggParameterError(
                f"backend must be one of {_BACKENDS} or None, got {backend!r}"
            )
        if backend == "python":
            return "python"
        auto = default_backend(self.modulus)
        if backend == "compiled" and auto != "compiled":
            why = native.kernel_status()["reason"] if native.kernels is None else "even modulus"
            raise SecAggParameterError(f"the compiled multi-exponentiation cannot be used: {why}")
        return auto

    def __repr__(self) -> str:
        return (
            f"MultiExpTable(k={self.k}, exp_bits={self.exp_bits}, backend={self.backend!r}, "
            f"window={self.window}, modulus_bits={int(self.modulus.bit_length())})"
        )

    def _checked(self, exponents: Sequence[int]) -> list[int]:
        if len(exponents) != self.k:
            raise SecAggParameterError(
                f"expected {self.k} exponents (one per base), got {len(exponents)}"
            )
        exps = _ints(exponents)
        bound = self._bound
        for e in exps:
            if not -bound < e < bound:
                raise SecAggParameterError(
                    f"exponent of {abs(e).bit_length()} bits exceeds the table's "
                    f"exp_bits={self.exp_bits}"
                )
        return exps

    def __call__(self, exponents: Sequence[int]) -> mpz:
        """``prod_l bases[l]**exponents[l] mod modulus``."""
        exps = self._checked(exponents)
        if self._native is not None:
            return self._native_rows([exps])[0]
        return self._python_product(exps)

    def _invert(self, value: mpz) -> mpz:
        try:
            return gmpy2.invert(value, self.modulus)
        except ZeroDivisionError:
            raise CiphertextError("a base with a negative exponent is not invertible") from None

    def _native_rows(self, rows: Sequence[list[int]]) -> list[mpz]:
        """Checked rows on the compiled kernel: a row with negative exponents is computed as
        its positive part times the inverse of its negative part."""
        assert self._native is not None
        flat: list[list[int]] = []
        signed = []
        for exps in rows:
            if any(e < 0 for e in exps):
                signed.append(len(flat))
                flat.append([e if e > 0 else 0 for e in exps])
                flat.append([-e if e < 0 else 0 for e in exps])
            else:
                flat.append(exps)
        got = self._native.products(flat)
        if not signed:
            return got
        out = []
        i = 0
        for exps in rows:
            if any(e < 0 for e in exps):
                out.append(got[i] * self._invert(got[i + 1]) % self.modulus)
                i += 2
            else:
                out.append(got[i])
                i += 1
        return out

    def _python_product(self, exps: list[int]) -> mpz:
        negative = None
        mags = exps
        if any(e < 0 for e in exps):
            negative = np.fromiter((e < 0 for e in exps), dtype=np.int64, count=len(exps))
            mags = [-e if e < 0 else e for e in exps]
        digits = _digit_matrix(mags, self.window, self.windows)
        size = 1 << self.window
        # bucket id: the digit, plus `size` for the bases whose exponent is negative
        ids = (digits + (negative * size)[None, :] if negative is not None else digits).reshape(-1)
        order, ends = _sort_into_buckets(ids, 2 * size)
        total = _combine_sorted(self._flat, order, ends, 0, size, self.modulus)
        if negative is not None:
            neg = _combine_sorted(self._flat, order, ends, size, size, self.modulus)
            if neg is not None:
                inv = self._invert(neg)
                total = inv if total is None else total * inv % self.modulus
        return _ONE % self.modulus if total is None else total

    def many(self, exponent_rows: Sequence[Sequence[int]], *, workers: int = 1) -> list[mpz]:
        """``[self(row) for row in exponent_rows]``, the rows split over ``workers`` threads
        (the compiled kernel and gmpy2's multiplications release the GIL). Same result for any
        ``workers``; every row is checked before any product is computed."""
        check_workers(workers)
        rows = [self._checked(r) for r in exponent_rows]
        if self._native is not None:
            return map_chunks(self._native_rows, rows, workers)
        return map_chunks(lambda part: [self._python_product(r) for r in part], rows, workers)
