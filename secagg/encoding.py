"""Fixed-point encoding of float vectors into the ring Z_{2^bits}.

A real value ``x`` with ``|x| <= clip`` becomes the integer ``q`` with ``E[q] = x * 2**frac_bits``
(stochastic rounding: ``floor(x*scale)`` plus one with probability equal to the fractional part),
stored in two's complement modulo ``2**bits``. Sums of encodings are computed modulo
``2**bits`` (that is what pairwise masking preserves), and :meth:`FixedPointEncoder.decode`
turns a sum of ``count`` encodings back into floats.

Guarantees
----------
* Headroom: the constructor proves that the sum of up to ``n_max`` encodings of values in
  ``[-clip, clip]`` lies in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``; so decoding that sum is exact
  (no wrap) and the only error is the rounding error, ``< count / 2**frac_bits`` per coordinate
  and zero in expectation.
* Nothing is clipped or wrapped silently: a value outside ``[-clip, clip]`` or a non-finite value
  raises :class:`EncodingOverflowError`; so does a configuration without headroom.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import EncodingOverflowError, SecAggParameterError

__all__ = ["FixedPointEncoder", "dtype_for_bits"]

# float64 represents every integer up to 2**53 exactly; beyond that stochastic rounding loses
# its meaning, so scaled magnitudes are kept below this bound.
_MAX_EXACT_FLOAT_INT = 2**53
_CHUNK = 1 << 15  # elements per encoding chunk (temporaries stay in L2 cache)


def dtype_for_bits(bits: int) -> type[np.unsignedinteger]:
    """The unsigned numpy dtype that holds elements of Z_{2^bits}: uint32 or uint64."""
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool):
        raise TypeError(f"bits must be an int, got {type(bits).__name__}")
    if not 2 <= bits <= 64:
        raise SecAggParameterError(f"bits must be in [2, 64], got {bits}")
    return np.uint32 if bits <= 32 else np.uint64


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


class FixedPointEncoder:
    """Signed fixed-point encoder into Z_{2^bits} with stochastic rounding and checked headroom.

    Parameters
    ----------
    clip:
        Largest absolute value accepted by :meth:`encode` (the caller clips first).
    n_max:
        Largest number of encodings that will be summed before decoding.
    bits:
        Ring size exponent, in ``[2, 64]``; elements are stored as ``uint32`` (bits <= 32) or
        ``uint64``.
    frac_bits:
        Number of fractional bits (scale ``2**frac_bits``). ``None`` picks the largest value for
        which the headroom check passes (and the scaled clip stays below 2**53).

    Raises
    ------
    EncodingOverflowError
        If ``n_max * ceil(clip * 2**frac_bits) >= 2**(bits-1)``: the sum of ``n_max`` maximal
        encodings would not fit. The message names all numbers involved.
    ValueError
        If ``clip`` is not a positive finite number, ``n_max < 1``, ``bits`` outside [2, 64] or
        ``frac_bits < 0``.
    """

    def __init__(self, clip: float, n_max: int, bits: int = 32, frac_bits: int | None = None):
        clip = float(clip)
        if not math.isfinite(clip) or clip <= 0:
            raise SecAggParameterError(f"clip must be a positive finite number, got {clip}")
        if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
            raise SecAggParameterError(f"n_max must be an int >= 1, got {n_max!r}")
        self.dtype = dtype_for_bits(bits)
        self.bits = int(bits)
        self.clip = clip
        self.n_max = int(n_max)
        half = 1 << (self.bits - 1)
        if frac_bits is None:
            frac_bits = self._largest_frac_bits(clip, self.n_max, half)
        else:
            if isinstance(frac_bits, bool) or not isinstance(frac_bits, (int, np.integer)):
                raise SecAggParameterError(f"frac_bits must be an int or None, got {frac_bits!r}")
            if frac_bits < 0:
                raise SecAggParameterError(f"frac_bits must be >= 0, got {frac_bits}")
            frac_bits = int(frac_bits)
            max_int = math.ceil(clip * 2.0**frac_bits)
            if self.n_max * max_int >= half:
                raise EncodingOverflowError(
                    f"no headroom: n_max={self.n_max} * ceil(clip={clip} * 2**frac_bits="
                    f"{2**frac_bits}) = {self.n_max * max_int} >= 2**(bits-1) = {half} "
                    f"(bits={self.bits}); lower frac_bits, clip or n_max, or raise bits"
                )
            if max_int >= _MAX_EXACT_FLOAT_INT:
                raise EncodingOverflowError(
                    f"clip={clip} * 2**frac_bits={2**frac_bits} = {max_int} >= 2**53: "
                    "beyond float64 integer precision; lower frac_bits"
                )
        self.frac_bits: int = frac_bits
        self.scale: float = float(2.0**frac_bits)
        self.max_int: int = math.ceil(clip * self.scale)
        self.modulus: int = 1 << self.bits
        self._mask = self.modulus - 1

    @staticmethod
    def _largest_frac_bits(clip: float, n_max: int, half: int) -> int:
        best = None
        for f in range(0, 64 + 1100):  # clip may be tiny; 2**f stays finite up to f=1023
            max_int = math.ceil(clip * 2.0**f)
            if n_max * max_int >= half or max_int >= _MAX_EXACT_FLOAT_INT:
                break
            best = f
            if f >= 1023:
                break
        if best is None:
            raise EncodingOverflowError(
                f"no headroom even with frac_bits=0: n_max={n_max} * ceil(clip={clip}) = "
                f"{n_max * math.ceil(clip)} >= 2**(bits-1) = {half}; raise bits or lower "
                "clip or n_max"
            )
        return best

    def __repr__(self) -> str:
        return (
            f"FixedPointEncoder(clip={self.clip}, n_max={self.n_max}, bits={self.bits}, "
            f"frac_bits={self.frac_bits})"
        )

    @property
    def resolution(self) -> float:
        """Quantisation step ``2**-frac_bits``; each encoded coordinate errs by less than this."""
        return 1.0 / self.scale

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Encode ``x`` (any shape, real values) into Z_{2^bits} with stochastic rounding.

        Returns a new array of :attr:`dtype` with the shape of ``x``. The rounding is unbiased:
        ``E[decode(encode(x), 1)] == x`` exactly (up to float64 arithmetic).

        Raises
        ------
        EncodingOverflowError
            If any value is non-finite or ``|x| > clip`` (message gives the first bad index and
            value). Nothing is clipped.
        """
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"encode expects a real numeric array, got dtype {x.dtype}")
        x = x.astype(np.float64, copy=False)
        flat = np.ascontiguousarray(x).reshape(-1)
        if flat.size:
            # NaN makes both comparisons false, +-inf fails one: a single pass finds every problem
            lo, hi = float(flat.min()), float(flat.max())
            if not (lo >= -self.clip and hi <= self.clip):
                self._raise_bad_value(x)
        out = np.empty(flat.size, dtype=self.dtype)
        # Chunked so that the temporaries stay in cache; per chunk:
        # q = floor(x*scale) + [u < frac], u ~ U[0,1): unbiased stochastic rounding.
        n_chunk = min(_CHUNK, flat.size)
        s = np.empty(n_chunk)
        q = np.empty(n_chunk)
        u = np.empty(n_chunk)
        up = np.empty(n_chunk, dtype=bool)
        qi = np.empty(n_chunk, dtype=np.int64)
        for start in range(0, flat.size, _CHUNK):
            stop = min(start + _CHUNK, flat.size)
            m = stop - start
            sv, qv, uv, upv, qiv = s[:m], q[:m], u[:m], up[:m], qi[:m]
            np.multiply(flat[start:stop], self.scale, out=sv)
            np.floor(sv, out=qv)
            np.subtract(sv, qv, out=sv)  # fractional part, exact, in [0, 1)
            rng.random(out=uv)
            np.less(uv, sv, out=upv)
            np.add(qv, upv, out=qv)
            np.copyto(qiv, qv, casting="unsafe")  # exact: |q| < 2**53
            # two's complement: the int64 -> uint cast keeps the low bits (mod 2**width)
            np.copyto(out[start:stop], qiv, casting="unsafe")
        if self.bits < 8 * out.itemsize:
            out &= self.dtype(self._mask)
        return out.reshape(x.shape)

    def _raise_bad_value(self, x: np.ndarray) -> None:
        finite = np.isfinite(x)
        if not finite.all():
            idx = _index(int(np.argmin(finite)), x.shape)
            raise EncodingOverflowError(f"non-finite value {x[idx]} at index {idx}; refusing")
        idx = _index(int(np.argmax(np.abs(x))), x.shape)
        raise EncodingOverflowError(
            f"value {x[idx]} at index {idx} exceeds clip={self.clip} "
            "(fortis never clips silently; clip before encoding)"
        )

    def wrap(self, a: np.ndarray) -> np.ndarray:
        """Reduce an integer array modulo ``2**bits`` and return it as :attr:`dtype`.

        Accepts signed/unsigned numpy integers (two's complement semantics) or an object array of
        Python ints (any size, negative allowed).
        """
        a = np.asarray(a)
        if a.dtype.kind == "O":
            return np.array([int(v) % self.modulus for v in a.ravel()], dtype=self.dtype).reshape(
                a.shape
            )
        if a.dtype.kind not in "iu":
            raise TypeError(f"wrap expects an integer array, got dtype {a.dtype}")
        u = a.astype(np.int64 if a.dtype.kind == "i" else np.uint64, copy=False)
        if u.dtype == np.int64:
            u = u.view(np.uint64)
        return (u & np.uint64(self._mask)).astype(self.dtype)

    def to_signed(self, y: np.ndarray) -> np.ndarray:
        """Interpret ring elements as signed integers in ``[-2**(bits-1), 2**(bits-1))`` (int64)."""
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise TypeError(f"expected an integer array, got dtype {y.dtype}")
        if y.dtype.kind == "u":
            u = y.astype(np.uint64, copy=False)
        else:
            u = y.astype(np.int64, copy=False).view(np.uint64)
        # sign-extend from `bits` to 64 bits: shift the sign bit to the top, arithmetic shift back
        shift = np.uint64(64 - self.bits)
        return (u << shift).view(np.int64) >> np.int64(64 - self.bits)

    def decode(self, y: np.ndarray, count: int = 1) -> np.ndarray:
        """Decode a sum (mod ``2**bits``) of ``count`` encodings to float64.

        Raises
        ------
        EncodingOverflowError
            If ``count > n_max``: the headroom proof does not cover that many summands, so the
            sum could have wrapped.
        ValueError
            If ``count < 1``.
        """
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise SecAggParameterError(f"count must be an int >= 1, got {count!r}")
        if count > self.n_max:
            raise EncodingOverflowError(
                f"decode of a sum of count={count} encodings exceeds n_max={self.n_max}; "
                "the sum may have wrapped"
            )
        return self.to_signed(y).astype(np.float64) / self.scale
