"""Signed integer slots packed into Paillier plaintexts, with checked headroom.

A plaintext holds ``slots`` values ``v_0 .. v_{s-1}`` of ``slot_bits = w`` bits each as the
integer ``m = sum_j v_j * 2**(w*j)``, stored as ``m mod n``. The digits are *balanced*
(``-2**(w-1) <= v_j < 2**(w-1)``), so negative values need no two's complement and no per-slot
offset: adding packed plaintexts (homomorphic addition), multiplying them by integers
(homomorphic scalar multiplication, multi-exponentiation) and adding packed constants act on
each slot independently, borrows and carries included, as long as every slot of the result stays
in ``[-2**(w-1), 2**(w-1))`` and the whole ``|m|`` stays below ``n/2``.

Guarantees
----------
* The layout proves both conditions when it is built: the caller states ``max_abs``, the largest
  ``|slot|`` any packed plaintext will hold after the intended operations (or, with
  :meth:`SlotLayout.for_sums`, the input bound and the number of additions), and the layout
  checks ``max_abs < 2**(w-1)`` and ``slots * w <= n_bits - margin`` (``margin >= 2`` makes
  ``|m| < 2**(slots*w) <= n/2``). A layout without that headroom is a
  :class:`PaillierOverflowError`, as is packing a value beyond the input bound, or asking
  :meth:`SlotLayout.check_combination` for a combination beyond ``max_abs``.
* :meth:`SlotLayout.unpack` is exact for every plaintext that respects the bound, and it checks
  what it can: a plaintext whose slots do not decode (bits above the last slot) or a slot
  beyond ``max_abs`` is a :class:`PaillierOverflowError`, never a silently wrong value. This
  check detects most overflows but is not a proof; the proof is the bound checked up front.

Packing directions: :meth:`SlotLayout.pack` fills plaintexts with consecutive values (one
client's vector across coordinates, in ``ceil(len/slots)`` plaintexts);
:meth:`SlotLayout.pack_columns` packs *across rows* (coordinate ``l`` of a block of ``slots``
clients in one plaintext), as the masked distance protocol does. The numpy conversions are
vectorised (bits via ``np.unpackbits``/``np.packbits``) for values that fit ``int64``; larger
values (Python ints, object arrays) take an exact per-value path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gmpy2 import mpz

from .errors import PaillierOverflowError, SecAggParameterError

__all__ = ["SlotLayout", "MIN_MARGIN"]

MIN_MARGIN = 2  # bits of n left unused by the slots: |m| < 2**(n_bits-2) < n/2
_INT64_LIMIT = 1 << 63
_CHUNK_BITS = 1 << 23  # bits materialised at once by the vectorised paths (1 MiB of uint8)


def _as_pos_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise SecAggParameterError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise SecAggParameterError(f"{name} must be >= {minimum}, got {value}")
    return value


def _modulus_of(key: object) -> int:
    n = getattr(key, "n", key)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer, type(mpz(0)))):
        raise SecAggParameterError(
            f"expected a PaillierPublicKey or its modulus n, got {type(key).__name__}"
        )
    n = int(n)
    if n < 3:
        raise SecAggParameterError(f"modulus n must be >= 3, got {n}")
    return n


def _as_values(values: object) -> np.ndarray:
    """A 1-D array of the values: int64 when they fit, else an object array of Python ints."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.size == 0 and arr.dtype.kind in "fO":  # an empty list has no integer dtype
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == object:
        flat = arr.reshape(-1)
        out = np.empty(flat.size, dtype=object)
        for i, v in enumerate(flat):
            if isinstance(v, (bool, np.bool_)) or not isinstance(
                v, (int, np.integer, type(mpz(0)))
            ):
                raise TypeError(f"packed values must be integers, got {type(v).__name__}")
            out[i] = int(v)
        return out
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iu":
        raise TypeError(f"packed values must be integers, got dtype {arr.dtype}")
    arr = arr.reshape(-1)
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= _INT64_LIMIT:
        return arr.astype(object)
    return arr.astype(np.int64, copy=False)


class SlotLayout:
    """Signed slots of ``slot_bits`` bits, ``slots`` per Paillier plaintext, with headroom.

    Parameters
    ----------
    key:
        The :class:`~secagg.paillier.PaillierPublicKey` (or its modulus ``n``).
    slot_bits:
        Width ``w`` of a slot. ``None``: the narrowest that holds ``max_abs``,
        ``max_abs.bit_length() + 1``.
    max_abs:
        The largest ``|slot value|`` any plaintext packed with this layout may hold, after all
        the homomorphic operations the caller intends. Must satisfy ``max_abs < 2**(w-1)``.
    input_bound:
        The largest ``|value|`` :meth:`pack` accepts (default ``max_abs``).
    margin:
        Bits of ``n`` left unused; ``slots = (n_bits - margin) // w``. At least 2.

    Raises
    ------
    PaillierOverflowError
        If ``max_abs >= 2**(w-1)`` (no headroom in a slot), ``input_bound > max_abs``, or not
        one slot fits (``w > n_bits - margin``).
    SecAggParameterError
        For a non-int or non-positive parameter, or ``margin < 2``.
    """

    __slots__ = (
        "n",
        "n_bits",
        "slot_bits",
        "slots",
        "max_abs",
        "input_bound",
        "margin",
        "_half",
        "_offset",
        "_plain_bits",
        "_plain_bytes",
        "_limit",
    )

    def __init__(
        self,
        key: object,
        *,
        max_abs: int,
        slot_bits: int | None = None,
        input_bound: int | None = None,
        margin: int = MIN_MARGIN,
        _unchecked: bool = False,
    ):
        n = _modulus_of(key)
        max_abs = _as_pos_int(max_abs, "max_abs")
        input_bound = max_abs if input_bound is None else _as_pos_int(input_bound, "input_bound")
        if slot_bits is None:
            slot_bits = max_abs.bit_length() + 1
        slot_bits = _as_pos_int(slot_bits, "slot_bits", minimum=2)
        margin = _as_pos_int(margin, "margin", minimum=0)
        n_bits = n.bit_length()
        if not _unchecked:  # _unchecked exists only so that tests can show what the checks stop
            if margin < MIN_MARGIN:
                raise SecAggParameterError(f"margin must be >= {MIN_MARGIN}, got {margin}")
            if max_abs >= 1 << (slot_bits - 1):
                raise PaillierOverflowError(
                    f"no headroom: max_abs={max_abs} ({max_abs.bit_length()} bits) needs "
                    f"slot_bits >= {max_abs.bit_length() + 1}, got {slot_bits}"
                )
            if input_bound > max_abs:
                raise PaillierOverflowError(
                    f"input_bound={input_bound} exceeds max_abs={max_abs}: a single packed "
                    "value would already overflow"
                )
        slots = (n_bits - margin) // slot_bits
        if slots < 1:
            raise PaillierOverflowError(
                f"a {slot_bits}-bit slot does not fit a {n_bits}-bit modulus with margin {margin}"
            )
        self.n = n
        self.n_bits = n_bits
        self.slot_bits = slot_bits
        self.slots = slots
        self.max_abs = max_abs
        self.input_bound = input_bound
        self.margin = margin
        self._half = (n - 1) // 2
        w = slot_bits
        self._plain_bits = slots * w
        self._plain_bytes = (self._plain_bits + 7) // 8
        self._limit = 1 << self._plain_bits
        # sum_j 2**(w-1) * 2**(w*j): adding it turns balanced digits into digits in [0, 2**w)
        self._offset = sum(1 << (w * j + w - 1) for j in range(slots))

    @classmethod
    def for_sums(
        cls,
        key: object,
        *,
        input_bound: int,
        additions: int,
        slot_bits: int | None = None,
        margin: int = MIN_MARGIN,
    ) -> SlotLayout:
        """A layout whose slots survive the sum of ``additions`` packed vectors with entries in
        ``[-input_bound, input_bound]``: ``max_abs = input_bound * additions``.

        Raises :class:`PaillierOverflowError` if ``slot_bits`` is too narrow for that sum.
        """
        input_bound = _as_pos_int(input_bound, "input_bound")
        additions = _as_pos_int(additions, "additions")
        return cls(
            key,
            max_abs=input_bound * additions,
            slot_bits=slot_bits,
            input_bound=input_bound,
            margin=margin,
        )

    def __repr__(self) -> str:
        return (
            f"SlotLayout(n_bits={self.n_bits}, slot_bits={self.slot_bits}, slots={self.slots}, "
            f"max_abs={self.max_abs}, input_bound={self.input_bound})"
        )

    def with_input_bound(self, input_bound: int) -> SlotLayout:
        """The same slots (width, count, headroom, margin) packing values up to ``input_bound``:
        e.g. a mask or blind added to values packed with this layout.

        Raises :class:`PaillierOverflowError` if ``input_bound > max_abs``.
        """
        return SlotLayout(
            self.n,
            max_abs=self.max_abs,
            slot_bits=self.slot_bits,
            input_bound=input_bound,
            margin=self.margin,
        )

    @property
    def max_additions(self) -> int:
        """How many packed inputs may be summed: ``max_abs // input_bound``."""
        return self.max_abs // self.input_bound

    def plaintexts_for(self, count: int) -> int:
        """Plaintexts needed for ``count`` values: ``ceil(count / slots)``."""
        return -(-_as_pos_int(count, "count", minimum=0) // self.slots)

    def check_combination(self, weight_l1: int) -> None:
        """Check that an integer combination ``sum_i a_i * x_i`` of packed inputs, with
        ``sum_i |a_i| = weight_l1``, stays within ``max_abs`` (a sum of ``c`` inputs has
        ``weight_l1 = c``).

        Raises :class:`PaillierOverflowError` if ``weight_l1 * input_bound > max_abs``.
        """
        weight_l1 = _as_pos_int(weight_l1, "weight_l1", minimum=0)
        if weight_l1 * self.input_bound > self.max_abs:
            raise PaillierOverflowError(
                f"a combination with sum |a_i| = {weight_l1} of inputs bounded by "
                f"{self.input_bound} can reach {weight_l1 * self.input_bound} > max_abs="
                f"{self.max_abs}; at most {self.max_additions} fit this layout"
            )

    # -- packing ------------------------------------------------------------------------------

    def _check_inputs(self, arr: np.ndarray) -> None:
        if arr.size == 0:
            return
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -self.input_bound or hi > self.input_bound:
            idx = (
                int(np.argmax(arr > self.input_bound))
                if hi > self.input_bound
                else int(np.argmax(arr < -self.input_bound))
            )
            raise PaillierOverflowError(
                f"value {int(arr[idx])} at index {idx} exceeds the layout's input_bound="
                f"{self.input_bound} (nothing is wrapped; use a wider layout)"
            )

    def pack(self, values: Sequence[int] | np.ndarray) -> list[mpz]:
        """Pack a 1-D sequence of signed integers, ``slots`` per plaintext (the last one padded
        with zeros), into plaintexts in ``[0, n)`` ready for
        :meth:`~secagg.paillier.PaillierPublicKey.encrypt`.

        Raises
        ------
        PaillierOverflowError
            If some ``|value| > input_bound`` (the message names the first such index).
        TypeError
            For non-integer values.
        """
        arr = _as_values(values)
        self._check_inputs(arr)
        if arr.size == 0:
            return []
        if arr.dtype == object:
            return self._pack_objects(arr)
        return self._pack_int64(arr)

    def _to_plaintext(self, m: int | mpz) -> mpz:
        return mpz(m) % self.n

    def _pack_objects(self, arr: np.ndarray) -> list[mpz]:
        w, s = self.slot_bits, self.slots
        out = []
        for start in range(0, arr.size, s):
            m = mpz(0)
            for v in reversed(arr[start : start + s].tolist()):
                m = (m << w) + v
            out.append(self._to_plaintext(m))
        return out

    def _pack_int64(self, arr: np.ndarray) -> list[mpz]:
        w, s = self.slot_bits, self.slots
        count = arr.size
        n_plain = -(-count // s)
        # offset-binary digit bits of v: the w-bit two's complement of v with its top bit
        # flipped, i.e. the bits of v + 2**(w-1) in [0, 2**w); bits 63.. of an int64 repeat the
        # sign, so bit b of the digit is bit min(b, 63) of v, except the flipped top bit
        src = np.minimum(np.arange(w), 63)
        per_chunk = max(1, _CHUNK_BITS // (s * w))
        out: list[mpz] = []
        offset = self._offset
        for p0 in range(0, n_plain, per_chunk):
            p1 = min(n_plain, p0 + per_chunk)
            vals = np.zeros((p1 - p0) * s, dtype="<i8")
            part = arr[p0 * s : p1 * s]
            vals[: part.size] = part
            bits64 = np.unpackbits(vals.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
            digits = bits64[:, src]
            digits[:, w - 1] ^= 1
            packed = np.packbits(digits.reshape(p1 - p0, s * w), axis=1, bitorder="little")
            for row in packed:
                out.append(self._to_plaintext(mpz.from_bytes(row.tobytes(), "little") - offset))
        return out

    def pack_columns(self, matrix: np.ndarray | Sequence[Sequence[int]]) -> list[list[mpz]]:
        """Pack a ``(rows, cols)`` integer matrix across rows: ``out[b][l]`` holds column ``l`` of
        rows ``b*slots .. b*slots + slots - 1`` (slot ``j`` is row ``b*slots + j``; the last
        block is padded with zeros). ``len(out) == ceil(rows / slots)``.

        Raises :class:`PaillierOverflowError` as :meth:`pack`; :class:`SecAggParameterError`
        for an input that is not 2-D.
        """
        mat = np.asarray(matrix)
        if mat.ndim != 2:
            raise SecAggParameterError(f"pack_columns expects a 2-D matrix, got shape {mat.shape}")
        rows, cols = mat.shape
        if rows == 0 or cols == 0:
            return []
        s = self.slots
        blocks = -(-rows // s)
        padded = np.zeros((blocks * s, cols), dtype=mat.dtype)
        padded[:rows] = mat
        order = padded.reshape(blocks, s, cols).transpose(0, 2, 1).reshape(-1)
        flat = self.pack(order)
        return [flat[b * cols : (b + 1) * cols] for b in range(blocks)]

    # -- unpacking ----------------------------------------------------------------------------

    def _unsigned(self, plaintext: object, index: int) -> int:
        m = int(plaintext)
        if not 0 <= m < self.n:
            raise PaillierOverflowError(f"plaintext {index} is outside [0, n)")
        if m > self._half:
            m -= self.n
        u = m + self._offset
        if not 0 <= u < self._limit:
            raise PaillierOverflowError(
                f"plaintext {index} does not decode into {self.slots} slots of "
                f"{self.slot_bits} bits: an operation exceeded the layout's headroom"
            )
        return u

    def _out_of_bound(self, values: np.ndarray) -> None:
        bad = np.flatnonzero((values > self.max_abs) | (values < -self.max_abs))
        if bad.size:
            i = int(bad[0])
            raise PaillierOverflowError(
                f"slot {i % self.slots} of plaintext {i // self.slots} decodes beyond "
                f"max_abs={self.max_abs}: an operation exceeded the layout's headroom (the "
                "value itself is not reported: it may be a secret of the decrypting party)"
            )

    def unpack(self, plaintexts: Sequence[int], count: int) -> np.ndarray:
        """The first ``count`` slot values of decrypted plaintexts (in ``[0, n)``, as returned
        by :meth:`~secagg.paillier.PaillierPrivateKey.decrypt`), in packing order.

        Returns ``int64`` values when ``max_abs < 2**63``, else an object array of Python ints.

        Raises
        ------
        PaillierOverflowError
            If a plaintext is outside ``[0, n)``, does not decode into the layout's slots, or a
            slot's value exceeds ``max_abs`` (an operation exceeded the headroom).
        SecAggParameterError
            If the plaintexts hold fewer than ``count`` slots.
        """
        count = _as_pos_int(count, "count", minimum=0)
        plaintexts = list(plaintexts)
        if count > len(plaintexts) * self.slots:
            raise SecAggParameterError(
                f"{len(plaintexts)} plaintexts of {self.slots} slots cannot hold {count} values"
            )
        plaintexts = plaintexts[: -(-count // self.slots)] if count else []
        us = [self._unsigned(m, i) for i, m in enumerate(plaintexts)]
        if self.max_abs < _INT64_LIMIT:
            values = self._unpack_int64(us)[:count]
        else:
            values = self._unpack_objects(us)[:count]
        self._out_of_bound(values)
        return values

    def _unpack_objects(self, us: list[int]) -> np.ndarray:
        w, s = self.slot_bits, self.slots
        mask, half = (1 << w) - 1, 1 << (w - 1)
        out = np.empty(len(us) * s, dtype=object)
        i = 0
        for u in us:
            for _ in range(s):
                out[i] = (u & mask) - half
                u >>= w
                i += 1
        return out

    def _unpack_int64(self, us: list[int]) -> np.ndarray:
        w, s, nbytes = self.slot_bits, self.slots, self._plain_bytes
        if not us:
            return np.zeros(0, dtype=np.int64)
        per_chunk = max(1, _CHUNK_BITS // (s * w))
        # two's complement bit b (b < 64) of a slot is digit bit min(b, w-1), the top one flipped
        src = np.minimum(np.arange(64), w - 1)
        parts = []
        for p0 in range(0, len(us), per_chunk):
            chunk = us[p0 : p0 + per_chunk]
            raw = np.frombuffer(b"".join(u.to_bytes(nbytes, "little") for u in chunk), np.uint8)
            bits = np.unpackbits(raw.reshape(len(chunk), nbytes), axis=1, bitorder="little")
            digits = bits[:, : s * w].reshape(len(chunk) * s, w)
            digits[:, w - 1] ^= 1
            if w > 64:
                # beyond bit 63 every bit must repeat the sign, or the value needs > 64 bits
                high = digits[:, 63:]
                if np.any(high != high[:, :1]):
                    bad = int(np.flatnonzero(np.any(high != high[:, :1], axis=1))[0])
                    raise PaillierOverflowError(
                        f"slot {bad % s} of plaintext {p0 + bad // s} does not fit 64 bits, "
                        f"beyond max_abs={self.max_abs}: an operation exceeded the headroom"
                    )
            tc = np.packbits(digits[:, src], axis=1, bitorder="little")
            parts.append(np.ascontiguousarray(tc).view("<i8").reshape(-1).astype(np.int64))
        return np.concatenate(parts)

    def unpack_columns(self, blocks: Sequence[Sequence[int]], rows: int) -> np.ndarray:
        """Invert :meth:`pack_columns`: from decrypted ``blocks[b][l]``, the ``(rows, cols)``
        matrix (dtype as :meth:`unpack`).

        Raises :class:`PaillierOverflowError` as :meth:`unpack`; :class:`SecAggParameterError`
        if the blocks are ragged or too few for ``rows``.
        """
        rows = _as_pos_int(rows, "rows", minimum=0)
        blocks = [list(b) for b in blocks]
        if not blocks:
            if rows:
                raise SecAggParameterError(f"no blocks, but {rows} rows requested")
            return np.zeros((0, 0), dtype=np.int64)
        cols = len(blocks[0])
        if any(len(b) != cols for b in blocks):
            raise SecAggParameterError("pack_columns blocks must all have the same length")
        s = self.slots
        if rows > len(blocks) * s:
            raise SecAggParameterError(f"{len(blocks)} blocks of {s} slots cannot hold {rows} rows")
        flat = [m for b in blocks for m in b]
        values = self.unpack(flat, len(flat) * s)
        return values.reshape(len(blocks), cols, s).transpose(0, 2, 1).reshape(-1, cols)[:rows]

    # -- sizes --------------------------------------------------------------------------------

    @staticmethod
    def bits_for(max_abs: int) -> int:
        """The narrowest slot width for ``max_abs``: ``max_abs.bit_length() + 1``."""
        return _as_pos_int(max_abs, "max_abs").bit_length() + 1

    @staticmethod
    def slots_for(key: object, slot_bits: int, margin: int = MIN_MARGIN) -> int:
        """Slots per plaintext for a slot width: ``(n_bits - margin) // slot_bits``."""
        n_bits = _modulus_of(key).bit_length()
        return max(0, (n_bits - margin) // _as_pos_int(slot_bits, "slot_bits", minimum=2))
