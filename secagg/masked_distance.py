"""The masked distance protocol: the server learns the pairwise squared distances of encrypted
sketches; the key holder only ever decrypts values hidden under uniform masks.

Parties: the server S holds Paillier encryptions ``Enc(s_i)`` of the rows ``s_i`` (clients'
integer sketches, packed across coordinates with :meth:`DistanceLayouts.row`; a public row such as
the zero vector or a centre is encrypted by S itself) and the public key; the key holder K holds
the private key. Four messages, in the order of the functions below:

1. :func:`server_mask_rows` (S -> K). S draws a mask ``M_i`` uniform in ``[0, 2**(beta+sigma))**k``
   per row, where ``|s_il| <= B < 2**beta``, and sends ``Enc(s_i + M_i)``.
2. :func:`keyholder_open_rows` (K -> S). K decrypts ``t_i = s_i + M_i`` -- each coordinate is
   within ``2**(1-sigma)`` in statistical distance of uniform whatever ``s_i`` is -- and checks
   ``-B <= t_il < 2**(beta+sigma) + B``: a row outside is its sender's fault (a client that
   encrypted something other than a sketch bounded by B) and is reported, never used. K keeps
   ``A_ij = ||t_i - t_j||**2`` and returns every coordinate re-encrypted *packed across rows*:
   ``columns[b][l]`` holds coordinate ``l`` of rows ``b*slots ...``.
3. :func:`server_cross_terms` (S -> K). S takes its masks off the columns homomorphically
   (``Enc(t_il - M_il) = Enc(s_il)``, still packed across rows, never decrypted). For every block
   ``b`` and row ``j``, one multi-exponentiation ``prod_l (column_l / Enc(M_l))**M_jl`` encrypts
   ``Q_ij = <s_i, M_j>`` for the whole block of ``i`` at once. S adds a fresh blind ``R_ij``
   uniform in ``[0, 2**(gamma+sigma))`` (``|Q_ij| < 2**gamma``) to every slot and sends the
   results.
4. :func:`keyholder_combine` (K -> S). K decrypts ``C'_ij = Q_ij + R_ij`` (hidden by ``R_ij``) and
   returns ``Z_ij = A_ij - 2 (C'_ii - C'_ij - C'_ji + C'_jj)``.
5. :func:`server_distances` (S, local). ``D_ij = Z_ij + 2 (R_ii - R_ij - R_ji + R_jj) -
   ||M_i - M_j||**2 = ||s_i - s_j||**2`` exactly, since ``<t_i - t_j, M_i - M_j> =
   <s_i - s_j, M_i - M_j> + ||M_i - M_j||**2`` and
   ``||s_i - s_j||**2 = ||t_i - t_j||**2 - 2 <t_i - t_j, M_i - M_j> + ||M_i - M_j||**2``.

What each party sees. K: ``t_i`` and ``C'_ij``, each within ``2**(1-sigma)`` of uniform per value,
independently of the sketches, plus which rows were out of range. S: ciphertexts, ``Z`` (a
function of D and of its own masks) and therefore exactly D. Neither decrypts a sketch or a
difference of sketches: the design that PEFL-style schemes got wrong.

Cost. S's step 3 is ``rows * ceil(rows / slots)`` multi-exponentiations over ``k`` bases with
``beta + sigma``-bit exponents, modulo ``n**2``; K's steps 2 and 4 are ``rows *
row_ciphertexts() + rows * ceil(rows / slots)`` CRT decryptions; everything else is linear in
``rows * k`` or quadratic in ``rows`` with cheap integer arithmetic. ``slots`` is set by the
width of a blinded cross term, about ``2 beta + sigma + log2 k + sigma`` bits (taking the masks
off the columns saves ``sigma + 1`` bits against ``<t_i, M_j>``). The multi-exponentiations run
on the compiled kernel ``secagg._multiexp`` when it is built (see
:class:`~secagg.paillier_multiexp.MultiExpTable`), else on gmpy2.

Measured (2048-bit key, k = 128, sigma = 40, ``B ~ 2**25`` so 30 row slots and 14 column slots,
``python benchmarks/sketch_bench.py --n 100 --k 128 --backend compiled python``, 2 threads, on
a 2-core machine shared with other work; see benchmarks/results/sketch_bench.md): n = 100 rows,
S 2.5 s and K 3.0 s online (9.4 CPU seconds in all) when the second core was free, S 4.9 s and
K 5.3 s under another session's load; the first version took S 5.7 s and K 3.8 s online on a
nearly idle machine (12.1 s and 5.0 s under that load). The issue's target for the whole
filtering step at n = 100 is 2.4 s; it is not met: the 1,300 CRT decryptions at K (~3.4 ms
each) and the 800 multi-exponentiations at S (~5 ms each, ~1,000 Montgomery products of
4096-bit numbers) are ~8.5 core-seconds of
big-number arithmetic, and this machine's second core adds only ~1.3x on it.
"""

from __future__ import annotations

import multiprocessing
import secrets
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from gmpy2 import mpz

from ._paillier_threads import check_workers
from .errors import PaillierOverflowError, SecAggParameterError
from .paillier_multiexp import MultiExpTable, default_backend
from .paillier_pack import SlotLayout
from .paillier_pool import ObfuscationPool
from .paillier_private import PaillierPrivateKey
from .paillier_public import PaillierPublicKey

__all__ = [
    "DEFAULT_SIGMA",
    "DistanceLayouts",
    "ServerMasks",
    "KeyHolderRows",
    "server_mask_rows",
    "keyholder_open_rows",
    "server_cross_terms",
    "keyholder_combine",
    "server_distances",
    "exact_squared_distances",
]

#: Statistical hiding parameter: every value K decrypts is within 2**(1 - sigma) of uniform.
DEFAULT_SIGMA = 40

_LIMB_BITS = 24  # limb products summed over k <= 2**14 coordinates stay below 2**63


@dataclass(frozen=True)
class DistanceLayouts:
    """Slot layouts of one run of the protocol, derived from public parameters only.

    ``k`` coordinates per row, ``|s_il| <= bound``, ``sigma`` bits of statistical hiding.

    * :attr:`row`: how a row is packed across its coordinates (clients pack their sketches with
      it; ``input_bound = bound``); its slots have room for ``s + M``.
    * :attr:`row_mask`: the same slots, for packing S's masks.
    * :attr:`column`: K's packing of ``t`` across rows; room for the cross terms plus blinds.
    * :attr:`column_blind`: the same slots, for packing S's blinds.
    * :attr:`column_mask`: the same slots, for packing S's masks (taken off K's columns).

    Raises :class:`SecAggParameterError` for non-positive ``k``/``bound``/``sigma``, and
    :class:`PaillierOverflowError` if a blinded cross term does not fit one plaintext.
    """

    key: PaillierPublicKey
    k: int
    bound: int
    sigma: int = DEFAULT_SIGMA

    def __post_init__(self) -> None:
        for name in ("k", "bound", "sigma"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SecAggParameterError(f"{name} must be an int >= 1, got {v!r}")
        if self.k > 1 << 14:
            raise SecAggParameterError(f"k must be <= 16384, got {self.k}")

    @property
    def mask_bits(self) -> int:
        """Bits of a row mask: ``beta + sigma`` with ``2**beta > bound``."""
        return self.bound.bit_length() + self.sigma

    @property
    def t_max(self) -> int:
        """Largest ``|t_il|`` for an in-range row."""
        return self.bound + (1 << self.mask_bits)

    @property
    def cross_max(self) -> int:
        """Largest cross term ``|Q_ij| = |<s_i, M_j>|``: ``k * bound * (2**mask_bits - 1)``."""
        return self.k * self.bound * ((1 << self.mask_bits) - 1)

    @property
    def blind_bits(self) -> int:
        """Bits of a cross-term blind: ``gamma + sigma`` with ``2**gamma > cross_max``."""
        return self.cross_max.bit_length() + self.sigma

    @cached_property
    def row(self) -> SlotLayout:
        return SlotLayout(self.key, max_abs=self.t_max, input_bound=self.bound)

    @cached_property
    def row_mask(self) -> SlotLayout:
        return self.row.with_input_bound((1 << self.mask_bits) - 1)

    @cached_property
    def column(self) -> SlotLayout:
        return SlotLayout(
            self.key, max_abs=self.cross_max + (1 << self.blind_bits), input_bound=self.t_max
        )

    @cached_property
    def column_blind(self) -> SlotLayout:
        return self.column.with_input_bound((1 << self.blind_bits) - 1)

    @cached_property
    def column_mask(self) -> SlotLayout:
        """The column slots, for packing S's masks across rows (S takes them off K's columns)."""
        return self.column.with_input_bound((1 << self.mask_bits) - 1)

    def row_ciphertexts(self) -> int:
        """Ciphertexts per row: ``ceil(k / row.slots)``."""
        return self.row.plaintexts_for(self.k)


def _uniform(bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """An object array of independent uniform integers in ``[0, 2**bits)`` (OS CSPRNG)."""
    out = np.empty(shape, dtype=object)
    flat = out.reshape(-1)
    for i in range(flat.size):
        flat[i] = secrets.randbits(bits)
    return out


def _limbs(values: np.ndarray, bits: int) -> list[np.ndarray]:
    """Non-negative object integers of at most ``bits`` bits as int64 limbs of _LIMB_BITS."""
    count = -(-bits // _LIMB_BITS)
    mask = (1 << _LIMB_BITS) - 1
    out = []
    rest = values
    for _ in range(count):
        out.append(np.asarray(rest & mask, dtype=np.int64))
        rest = rest >> _LIMB_BITS
    return out


def exact_squared_distances(rows: np.ndarray) -> np.ndarray:
    """``D[i, j] = ||rows[i] - rows[j]||**2`` exactly, for an ``(m, k)`` array of (Python or
    numpy) integers of any size, as an object array of Python ints.

    The Gram matrix is computed from int64 limb products (k <= 16384 keeps every limb sum below
    2**63) and recombined with Python integers.
    """
    rows = np.asarray(rows, dtype=object)
    if rows.ndim != 2:
        raise SecAggParameterError(f"rows must be 2-D, got shape {rows.shape}")
    m, k = rows.shape
    if m == 0:
        return np.zeros((0, 0), dtype=object)
    if k > 1 << 14:
        raise SecAggParameterError(f"at most 16384 coordinates, got {k}")
    low = min((int(v) for v in rows.reshape(-1)), default=0)
    shifted = rows - low  # distances do not change; limbs need non-negative values
    bits = max(1, max(int(v) for v in shifted.reshape(-1)).bit_length())
    limbs = _limbs(shifted, bits)
    gram = np.zeros((m, m), dtype=object)
    for a, la in enumerate(limbs):
        for b, lb in enumerate(limbs):
            part = (la @ lb.T).astype(object)
            gram = gram + part * (1 << (_LIMB_BITS * (a + b)))
    diag = np.array([gram[i, i] for i in range(m)], dtype=object)
    return diag[:, None] + diag[None, :] - 2 * gram


@dataclass
class ServerMasks:
    """S's secrets of one run: the row masks ``M`` (rows x k) and, after step 3, the blinds
    ``R`` (rows x rows, ``R[i, j]`` blinds ``C_ij``). Never leaves S."""

    layouts: DistanceLayouts
    masks: np.ndarray
    blinds: np.ndarray | None = None


@dataclass
class KeyHolderRows:
    """K's state of one run: the rows it accepted (in range), their ``t`` and ``A``."""

    layouts: DistanceLayouts
    accepted: tuple[int, ...]
    out_of_range: dict[int, str]
    t: np.ndarray
    a: np.ndarray


def server_mask_rows(
    key: PaillierPublicKey, rows: Sequence[Sequence[mpz]], layouts: DistanceLayouts
) -> tuple[list[list[mpz]], ServerMasks]:
    """Step 1: ``Enc(s_i + M_i)`` for every row (``rows[i]`` are row i's validated ciphertexts,
    :meth:`DistanceLayouts.row_ciphertexts` of them), and S's masks.

    Raises :class:`SecAggParameterError` if a row has the wrong number of ciphertexts.
    """
    per_row = layouts.row_ciphertexts()
    bad = [i for i, r in enumerate(rows) if len(r) != per_row]
    if bad:
        raise SecAggParameterError(f"rows {bad[:10]} do not have {per_row} ciphertexts each")
    masks = _uniform(layouts.mask_bits, (len(rows), layouts.k))
    packer = layouts.row_mask
    out = []
    for i, cts in enumerate(rows):
        plain = packer.pack(masks[i])
        out.append([key.add_plain(c, m) for c, m in zip(cts, plain)])
    return out, ServerMasks(layouts, masks)


def keyholder_open_rows(
    key: PaillierPrivateKey,
    masked: Sequence[Sequence[mpz]],
    layouts: DistanceLayouts,
    *,
    pool: ObfuscationPool | None = None,
    workers: int = 1,
) -> tuple[list[list[mpz]], KeyHolderRows]:
    """Step 2: decrypt the masked rows, set aside the out-of-range ones, keep ``A`` and return
    the accepted rows' coordinates re-encrypted packed across rows (``columns[b][l]``, blocks
    of :attr:`DistanceLayouts.column` slots, in the order of ``accepted``).

    The re-encryptions draw ``r**n`` from ``pool`` (filled ahead of time) or, without one,
    compute them with the factorisation on ``workers`` threads.

    A row that does not decode into slots, or whose ``t`` leaves ``[-B, 2**(beta+sigma) + B)``,
    is listed in ``out_of_range`` (row index -> reason) and takes no further part.
    """
    row = layouts.row
    accepted, t_rows, out_of_range = [], [], {}
    hi = (1 << layouts.mask_bits) + layouts.bound
    # one batch of decryptions for every row (the threads share it), then row by row
    flat = key.decrypt_many([c for cts in masked for c in cts], sender="server", workers=workers)
    starts = np.cumsum([0] + [len(cts) for cts in masked])
    for i in range(len(masked)):
        try:
            t = row.unpack(flat[starts[i] : starts[i + 1]], layouts.k)
        except PaillierOverflowError as exc:
            out_of_range[i] = f"masked row does not decode into slots ({exc})"
            continue
        t = np.asarray(t, dtype=object)
        if any(v < -layouts.bound or v >= hi for v in t):
            out_of_range[i] = "a masked coordinate is outside the range of a bounded sketch"
            continue
        accepted.append(i)
        t_rows.append(t)
    t = np.array(t_rows, dtype=object).reshape(len(accepted), layouts.k)
    a = exact_squared_distances(t)
    blocks = layouts.column.pack_columns(t)
    pub = key.public_key
    count = sum(len(block) for block in blocks)
    if pool is not None:
        obfuscators = [pool.draw() for _ in range(count)]
    else:  # K's own r**n with the factorisation: ~4x cheaper than the public computation
        obfuscators = key.random_obfuscators(count, workers=workers)
    it = iter(obfuscators)
    columns = [[pub.raw_encrypt(mpz(m), next(it)) for m in block] for block in blocks]
    return columns, KeyHolderRows(layouts, tuple(accepted), out_of_range, t, a)


def server_cross_terms(
    key: PaillierPublicKey,
    columns: Sequence[Sequence[mpz]],
    masks: ServerMasks,
    accepted: Sequence[int],
    *,
    processes: int = 1,
    workers: int = 1,
) -> list[list[mpz]]:
    """Step 3: ``out[b][j] = Enc(Q_ij + R_ij for i in block b)`` for every accepted row ``j``
    (indices into ``accepted``), with ``Q_ij = <s_i, M_j>`` and fresh blinds ``R``; ``columns``
    are validated.

    S first takes its masks off K's columns (``Enc(t_il) * Enc(-M_il) = Enc(s_il)``, packed
    across rows), so the cross terms, and the slots that hold them, are ``sigma + 1`` bits
    narrower than ``<t_i, M_j>`` would need. Each block is then one
    :class:`~secagg.paillier_multiexp.MultiExpTable` over its ``k`` columns, with one product
    per row ``j``. With the compiled kernel the products run on ``max(workers, processes)``
    threads (it releases the GIL); without it, blocks are spread over ``processes`` worker
    processes when there are several. The result does not depend on either.

    Raises :class:`SecAggParameterError` if the column blocks do not have ``k`` ciphertexts or
    do not match the number of rows.
    """
    lay = masks.layouts
    m = len(accepted)
    if any(len(block) != lay.k for block in columns):
        raise SecAggParameterError(f"every column block must hold k={lay.k} ciphertexts")
    slots = lay.column.slots
    if len(columns) != -(-m // slots):
        raise SecAggParameterError(f"{len(columns)} column blocks for {m} rows of {slots} slots")
    check_workers(workers)
    check_workers(processes)
    own = masks.masks[list(accepted)]
    mask_rows = [[int(v) for v in row] for row in own]
    unmask = lay.column_mask.pack_columns(-own) if m else []
    sketch_columns = [
        [key.add_plain(c, u) for c, u in zip(block, plain)] for block, plain in zip(columns, unmask)
    ]
    blinds = _uniform(lay.blind_bits, (m, m))  # blinds[i, j] hides Q_ij
    packer = lay.column_blind
    jobs = [(block, key.nsquare, lay.mask_bits, mask_rows, 1) for block in sketch_columns]
    threads = max(workers, processes)
    if jobs and default_backend(key.nsquare) == "compiled":
        products = [_block_products(job[:4] + (threads,)) for job in jobs]
    elif processes > 1 and len(jobs) > 1:
        # the gmpy2 products hold the GIL between multiplications: processes, not threads,
        # use the other cores (spawned, so no forked locks or pool threads)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(processes, len(jobs)), mp_context=ctx) as pool:
            products = list(pool.map(_block_products, jobs))
    else:
        products = [_block_products(job) for job in jobs]
    out: list[list[mpz]] = []
    for b, cross in enumerate(products):
        rows_in_block = range(b * slots, min(m, (b + 1) * slots))
        per_j = []
        for j in range(m):
            (blind,) = packer.pack([blinds[i, j] for i in rows_in_block])
            per_j.append(key.add_plain(cross[j], blind))
        out.append(per_j)
    masks.blinds = blinds
    return out


def _block_products(job: tuple[list[mpz], mpz, int, list[list[int]], int]) -> list[mpz]:
    """One column block's cross terms: ``prod_l block[l] ** M_jl`` for every row ``j``, from one
    multi-exponentiation table (the block's bases are shared by every row), on ``threads``."""
    block, modulus, exp_bits, mask_rows, threads = job
    table = MultiExpTable(block, modulus, exp_bits=exp_bits, workers=threads)
    return table.many(mask_rows, workers=threads)


def keyholder_combine(
    key: PaillierPrivateKey,
    blinded: Sequence[Sequence[mpz]],
    state: KeyHolderRows,
    *,
    workers: int = 1,
) -> np.ndarray:
    """Step 4: ``Z_ij = A_ij - 2 (C'_ii - C'_ij - C'_ji + C'_jj)`` over the accepted rows."""
    lay = state.layouts
    col = lay.column
    m = len(state.accepted)
    c = np.empty((m, m), dtype=object)  # c[i, j] = C'_ij
    for b, per_j in enumerate(blinded):
        if len(per_j) != m:
            raise SecAggParameterError(f"block {b} holds {len(per_j)} cross terms, not {m}")
        rows_in_block = list(range(b * col.slots, min(m, (b + 1) * col.slots)))
        values = col.unpack(key.decrypt_many(per_j, workers=workers), len(per_j) * col.slots)
        values = np.asarray(values, dtype=object).reshape(m, col.slots)
        for slot, i in enumerate(rows_in_block):
            c[i, :] = values[:, slot]
    diag = np.array([c[i, i] for i in range(m)], dtype=object)
    return state.a - 2 * (diag[:, None] - c - c.T + diag[None, :])


def server_distances(z: np.ndarray, masks: ServerMasks, accepted: Sequence[int]) -> np.ndarray:
    """Step 5: the exact squared distances ``D`` of the accepted rows (object array of ints)."""
    if masks.blinds is None:
        raise SecAggParameterError("server_cross_terms must run before server_distances")
    r = masks.blinds
    m = len(accepted)
    diag = np.array([r[i, i] for i in range(m)], dtype=object)
    own = exact_squared_distances(masks.masks[list(accepted)])
    return z + 2 * (diag[:, None] - r - r.T + diag[None, :]) - own
