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

Offline/online variant (``*_prepared``; a Beaver-style precomputation). The expensive
multi-exponentiations and decryptions depend on random masks only, so they run before the round;
online, K decrypts the masked rows and S finishes in the clear. ``rows`` slots (the population
plus public rows) are fixed offline; a run uses any subset of them, named by slot index.

Offline:

1. :func:`prepare_keyholder_columns` (K -> S). K draws ``N`` (``rows x k``) uniform in ``[0,
   2**prep_bits)``, ``prep_bits = mask_bits + 1 + sigma + 1``, and sends ``Enc(N)`` packed
   across rows (:attr:`DistanceLayouts.prep_column`).
2. :func:`prepare_server_products` (S -> K). S draws its masks ``M`` (``rows x k``, uniform in
   ``[0, 2**mask_bits)``) and, per block and row ``j``, one multi-exponentiation ``prod_l
   Enc(Ncol_l)**M_jl = Enc(<N_i, M_j>)`` for the block's ``i``; it adds blinds ``R_ij`` uniform
   in ``[0, 2**(gamma+sigma))`` (``<N_i, M_j> < 2**gamma``) and a fresh ``r**n`` per ciphertext.
3. :func:`prepare_keyholder_finish` (K). ``U_ij = <N_i, M_j> + R_ij``.

Online:

4. :func:`server_mask_rows_prepared` (S -> K): ``Enc(s_r + M_r)`` for the slots present.
5. :func:`keyholder_open_rows_prepared` (K -> S). K decrypts ``t_r``, range-checks it as in step
   2 above, and returns, over the accepted slots, ``W_r = t_r - N_r`` and ``Zpart = A - 2
   comb(U)`` with ``comb(X)_ij = X_ii - X_ij - X_ji + X_jj``.
6. :func:`server_distances_prepared` (S). ``D = Zpart - 2 comb(W M^T) + 2 comb(R) + ||M_i -
   M_j||**2``: since ``T M^T = W M^T + N M^T = W M^T + U - R`` and ``||s_i - s_j||**2 = ||t_i -
   t_j||**2 - 2 comb(T M^T)_ij + ||M_i - M_j||**2``. ``2 comb(R) + ||M_i - M_j||**2`` is computed
   offline; ``W M^T`` is an exact int64-limb matrix product.

What each party sees (offline/online). K: ``t_r = s_r + M_r`` as in the four-message protocol
(within ``2**(1-sigma)`` of uniform per coordinate) and ``U_ij``, hidden by S's uniform blinds
``R_ij`` (within ``2**-sigma``); the randomness of each ciphertext S returns is fresh, so K,
which holds the factorisation and chose the randomness of its columns, cannot read ``M`` from it.
K never decrypts a sketch or a difference of sketches. S: ciphertexts, ``W_r = s_r + M_r - N_r``
-- its own sketch-plus-mask under K's uniform ``N`` (``T`` spans fewer than ``2**(mask_bits+1)``
values, ``N`` spans ``2**(mask_bits+sigma+2)``: within ``2**-(sigma+1)`` of a distribution that
does not depend on ``s``) --, ``Zpart`` (a function of D and of S's own ``M``, ``R``, ``W``) and
D. **Every run needs a fresh (M, N, R, U)**: with the same masks in two runs, S would learn ``W
- W' = s - s'`` and K ``t - t' = s - s'``, the differences of sketches (and, for a client in
both runs, the change of its sketch). The state objects therefore refuse a second use
(:class:`SecAggParameterError`).

Cost (prepared). Offline: K ``rows * k / slots`` encryptions and ``rows * prep_blocks``
decryptions; S ``rows * prep_blocks`` multi-exponentiations with ``mask_bits``-bit exponents and
as many ``r**n``. ``prep_column`` slots are wider than ``column`` slots (``N`` is ``sigma + 2``
bits wider than ``t`` and the products are with ``M``, not ``s``), so there are more blocks than
in the four-message protocol. Online: ``len(slots) * row_ciphertexts()`` decryptions at K (one
round trip) and integer matrix products at both. Measured (2048-bit key, n = 100 rows, k =
128, same machine under load ~3.5, ``python benchmarks/sketch_bench.py --n 100 --k 128``):
online S 0.05 s + K 1.6-1.8 s (K's 500 decryptions), against 9-10 s for the four-message
protocol in the same runs; offline S ~20 s, K ~8-9 s. See benchmarks/results/sketch_bench.md.

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
from dataclasses import dataclass, field
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
    "KeyHolderPrepared",
    "ServerPrepared",
    "KeyHolderOpened",
    "prepare_keyholder_columns",
    "prepare_server_products",
    "prepare_keyholder_finish",
    "server_mask_rows_prepared",
    "keyholder_open_rows_prepared",
    "server_distances_prepared",
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

    # -- the offline/online variant (see "Offline/online variant" in the module docstring) --

    @property
    def prep_bits(self) -> int:
        """Bits of K's offline mask ``N``: ``mask_bits + 1 + sigma + 1``, so that ``W = t - N``
        is within ``2**-(sigma+1)`` of a shift-invariant distribution for any in-range ``t``."""
        return self.mask_bits + self.sigma + 2

    @property
    def prep_cross_max(self) -> int:
        """Largest offline cross term ``<N_i, M_j>``: ``k * (2**prep_bits - 1) * (2**mask_bits -
        1)`` (both factors are non-negative)."""
        return self.k * ((1 << self.prep_bits) - 1) * ((1 << self.mask_bits) - 1)

    @property
    def prep_blind_bits(self) -> int:
        """Bits of S's offline blind ``R_ij``: ``gamma + sigma`` with ``2**gamma >
        prep_cross_max``."""
        return self.prep_cross_max.bit_length() + self.sigma

    @property
    def u_max(self) -> int:
        """Largest ``U_ij = <N_i, M_j> + R_ij``."""
        return self.prep_cross_max + (1 << self.prep_blind_bits) - 1

    @cached_property
    def prep_column(self) -> SlotLayout:
        """K's packing of ``N`` across rows; room for ``<N_i, M_j> + R_ij``."""
        return SlotLayout(
            self.key,
            max_abs=self.u_max,
            input_bound=(1 << self.prep_bits) - 1,
        )

    @cached_property
    def prep_column_blind(self) -> SlotLayout:
        """The :attr:`prep_column` slots, for packing S's offline blinds."""
        return self.prep_column.with_input_bound((1 << self.prep_blind_bits) - 1)

    def prep_blocks(self, rows: int) -> int:
        """Column blocks of the offline phase for ``rows`` rows: ``ceil(rows / prep_column.slots)``."""
        return self.prep_column.plaintexts_for(rows)

    @property
    def w_max(self) -> int:
        """Largest ``|W_il|`` for an in-range row: ``W = t - N`` with ``-B <= t < 2**mask_bits +
        B`` and ``0 <= N < 2**prep_bits``."""
        return max((1 << self.prep_bits) - 1 + self.bound, (1 << self.mask_bits) + self.bound - 1)

    @property
    def z_max(self) -> int:
        """Largest ``|Zpart_ij|`` over in-range rows: ``A_ij <= k (2**mask_bits + 2B - 1)**2`` and
        ``|comb(U)_ij| <= 2 u_max``."""
        a_max = self.k * ((1 << self.mask_bits) + 2 * self.bound - 1) ** 2
        return a_max + 4 * self.u_max

    @property
    def w_bytes(self) -> int:
        """Bytes of a signed two's complement integer that holds any in-range ``W_il``."""
        return (self.w_max.bit_length() + 1 + 7) // 8

    @property
    def z_bytes(self) -> int:
        """Bytes of a signed two's complement integer that holds any in-range ``Zpart_ij``."""
        return (self.z_max.bit_length() + 1 + 7) // 8


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
    gram = _nonneg_products(shifted, shifted)
    diag = np.array([gram[i, i] for i in range(m)], dtype=object)
    return diag[:, None] + diag[None, :] - 2 * gram


def _nonneg_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` exactly for object arrays of non-negative ints (``(m, k)`` and ``(p, k)``,
    ``k <= 16384``), from int64 limb products recombined with Python integers."""
    bits_a = max(1, max((int(v) for v in a.reshape(-1)), default=0).bit_length())
    bits_b = max(1, max((int(v) for v in b.reshape(-1)), default=0).bit_length())
    limbs_a = _limbs(a, bits_a)
    limbs_b = limbs_a if b is a else _limbs(b, bits_b)
    out = np.zeros((a.shape[0], b.shape[0]), dtype=object)
    for x, la in enumerate(limbs_a):
        for y, lb in enumerate(limbs_b):
            out = out + (la @ lb.T).astype(object) * (1 << (_LIMB_BITS * (x + y)))
    return out


def _exact_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` exactly for 2-D object arrays of (signed) ints with the same number of
    columns: both are shifted to non-negative values, and the shifts are corrected for."""
    m, k = a.shape
    if m == 0 or b.shape[0] == 0 or k == 0:
        return np.zeros((m, b.shape[0]), dtype=object)
    low_a = min(int(v) for v in a.reshape(-1))
    low_b = min(int(v) for v in b.reshape(-1))
    sa, sb = a - low_a, b - low_b  # a = sa + low_a, b = sb + low_b
    out = _nonneg_products(sa, sb)
    sum_a = sa.sum(axis=1)
    sum_b = sb.sum(axis=1)
    return out + low_b * sum_a[:, None] + low_a * sum_b[None, :] + k * low_a * low_b


def _comb(x: np.ndarray) -> np.ndarray:
    """``comb(X)_ij = X_ii - X_ij - X_ji + X_jj`` for a square object array."""
    diag = np.array([x[i, i] for i in range(x.shape[0])], dtype=object)
    return diag[:, None] - x - x.T + diag[None, :]


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
    accepted, t, out_of_range = _open_masked(key, masked, range(len(masked)), layouts, workers)
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


def _open_masked(
    key: PaillierPrivateKey,
    masked: Sequence[Sequence[mpz]],
    labels: Sequence[int],
    layouts: DistanceLayouts,
    workers: int,
) -> tuple[list[int], np.ndarray, dict[int, str]]:
    """Decrypt masked rows (``masked[i]`` labelled ``labels[i]``) and range-check them: the
    accepted labels, their ``t`` (object array, ``len(accepted) x k``) and label -> reason for
    the rows that do not decode into slots or leave ``[-B, 2**mask_bits + B)``."""
    row = layouts.row
    accepted, t_rows, out_of_range = [], [], {}
    hi = (1 << layouts.mask_bits) + layouts.bound
    # one batch of decryptions for every row (the threads share it), then row by row
    flat = key.decrypt_many([c for cts in masked for c in cts], sender="server", workers=workers)
    starts = np.cumsum([0] + [len(cts) for cts in masked])
    for i, label in enumerate(labels):
        try:
            t = row.unpack(flat[starts[i] : starts[i + 1]], layouts.k)
        except PaillierOverflowError as exc:
            out_of_range[label] = f"masked row does not decode into slots ({exc})"
            continue
        t = np.asarray(t, dtype=object)
        if any(v < -layouts.bound or v >= hi for v in t):
            out_of_range[label] = "a masked coordinate is outside the range of a bounded sketch"
            continue
        accepted.append(label)
        t_rows.append(t)
    return accepted, np.array(t_rows, dtype=object).reshape(len(accepted), layouts.k), out_of_range


def server_cross_terms(
    key: PaillierPublicKey,
    columns: Sequence[Sequence[mpz]],
    masks: ServerMasks,
    accepted: Sequence[int],
    *,
    processes: int = 1,
    workers: int = 1,
    pool: ObfuscationPool | None = None,
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

    Every output is re-randomised with a fresh public ``r**n`` (from ``pool`` if given):
    otherwise K, which chose its columns' randomness and can extract a ciphertext's randomness
    with the factorisation, would hold ``prod_l r_l**M_jl`` -- a handle on S's masks, which
    unmask the sketches.

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
        with ProcessPoolExecutor(max_workers=min(processes, len(jobs)), mp_context=ctx) as executor:
            products = list(executor.map(_block_products, jobs))
    else:
        products = [_block_products(job) for job in jobs]
    count = len(products) * m
    obfuscators = iter(
        pool.draw_many(count)
        if pool is not None
        else key.random_obfuscators(count, workers=workers)
    )
    nsq = key.nsquare
    out: list[list[mpz]] = []
    for b, cross in enumerate(products):
        rows_in_block = range(b * slots, min(m, (b + 1) * slots))
        per_j = []
        for j in range(m):
            (blind,) = packer.pack([blinds[i, j] for i in rows_in_block])
            per_j.append(key.add_plain(cross[j], blind) * next(obfuscators) % nsq)
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


# -- the offline/online variant -------------------------------------------------------------------


@dataclass(eq=False)
class KeyHolderPrepared:
    """K's secrets of one prepared run: the offline masks ``N`` (``rows x k``, uniform in
    ``[0, 2**prep_bits)``) and, after :func:`prepare_keyholder_finish`, the decrypted blinded
    cross terms ``U`` (``U[i, j] = <N_i, M_j> + R_ij``). Never leaves K.

    Single use: :func:`keyholder_open_rows_prepared` accepts a state once (a second run on the
    same ``N`` and ``U`` would hand S the difference of two rounds' sketches) and raises
    :class:`SecAggParameterError` after that.
    """

    layouts: DistanceLayouts
    rows: int
    n: np.ndarray = field(repr=False)
    u: np.ndarray | None = field(default=None, repr=False)
    comb_u: np.ndarray | None = field(default=None, repr=False)
    used: bool = False


@dataclass(eq=False)
class ServerPrepared:
    """S's secrets of one prepared run: its masks ``M`` (``rows x k``, uniform in ``[0,
    2**mask_bits)``), its blinds ``R`` (``rows x rows``, ``R[i, j]`` hides ``<N_i, M_j>``) and
    ``2 comb(R) + ||M_i - M_j||**2`` over all rows (the offline part of step 6). Never leaves S.

    Single use: :func:`server_mask_rows_prepared` and :func:`server_distances_prepared` each
    accept a state once and raise :class:`SecAggParameterError` after that.
    """

    layouts: DistanceLayouts
    rows: int
    masks: np.ndarray = field(repr=False)
    blinds: np.ndarray = field(repr=False)
    offset: np.ndarray = field(repr=False)
    masked_slots: tuple[int, ...] | None = None
    finished: bool = False


@dataclass(frozen=True, eq=False)
class KeyHolderOpened:
    """K's answer in step 5 (and what it decrypted, for audits).

    ``accepted``: the slots whose masked row is in range, increasing; ``out_of_range``: slot ->
    reason for the others; ``w`` (``len(accepted) x k``) and ``z`` (``len(accepted) x
    len(accepted)``): object arrays of ints, ``w[a] = t_r - N_r`` and ``z = A - 2 comb(U)`` for
    ``r = accepted[a]``; ``t``: the decrypted masked rows of ``accepted`` (K's, not sent).
    """

    accepted: tuple[int, ...]
    out_of_range: dict[int, str]
    w: np.ndarray = field(repr=False)
    z: np.ndarray = field(repr=False)
    t: np.ndarray = field(repr=False)


def _check_rows(rows: object) -> int:
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise SecAggParameterError(f"rows must be an int >= 1, got {rows!r}")
    return rows


def _check_slots(slots: Sequence[int], rows: int, what: str) -> tuple[int, ...]:
    out = []
    for s in slots:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise SecAggParameterError(f"{what} must be ints, got {type(s).__name__}")
        out.append(int(s))
    if any(b <= a for a, b in zip(out, out[1:])):
        raise SecAggParameterError(f"{what} must be strictly increasing")
    if out and (out[0] < 0 or out[-1] >= rows):
        raise SecAggParameterError(f"{what} must lie in [0, {rows})")
    return tuple(out)


def _check_row_slots(
    rows: Sequence[Sequence[mpz]],
    slots: Sequence[int],
    count: int,
    layouts: DistanceLayouts,
    what: str,
) -> tuple[int, ...]:
    """The slots of ``rows`` (one per row, strictly increasing in ``[0, count)``), each row
    holding :meth:`DistanceLayouts.row_ciphertexts` ciphertexts; else SecAggParameterError."""
    chosen = _check_slots(slots, count, "slots")
    if len(chosen) != len(rows):
        raise SecAggParameterError(f"{len(rows)} {what} for {len(chosen)} slots")
    per_row = layouts.row_ciphertexts()
    bad = [chosen[i] for i, r in enumerate(rows) if len(r) != per_row]
    if bad:
        raise SecAggParameterError(f"slots {bad[:10]} do not have {per_row} ciphertexts each")
    return chosen


def prepare_keyholder_columns(
    key: PaillierPrivateKey,
    layouts: DistanceLayouts,
    rows: int,
    *,
    pool: ObfuscationPool | None = None,
    workers: int = 1,
) -> tuple[list[list[mpz]], KeyHolderPrepared]:
    """Offline step 1 (K -> S): draw ``N`` (``rows x k``, uniform in ``[0, 2**prep_bits)``,
    OS CSPRNG) and encrypt it packed across rows: ``columns[b][l]`` holds coordinate ``l`` of
    rows ``b*slots ...`` (:attr:`DistanceLayouts.prep_column`, :meth:`DistanceLayouts.prep_blocks`
    blocks of ``k`` ciphertexts).

    ``rows`` is the number of row slots of the coming run (population plus public rows). The
    encryptions draw ``r**n`` from ``pool`` or, without one, compute them with the
    factorisation on ``workers`` threads.

    Raises :class:`SecAggParameterError` for ``rows < 1`` or ``workers < 1``.
    """
    rows = _check_rows(rows)
    check_workers(workers)
    n_masks = _uniform(layouts.prep_bits, (rows, layouts.k))
    blocks = layouts.prep_column.pack_columns(n_masks)
    count = sum(len(block) for block in blocks)
    if pool is not None:
        obfuscators = pool.draw_many(count)
    else:
        obfuscators = key.random_obfuscators(count, workers=workers)
    it = iter(obfuscators)
    pub = key.public_key
    columns = [[pub.raw_encrypt(mpz(m), next(it)) for m in block] for block in blocks]
    return columns, KeyHolderPrepared(layouts, rows, n_masks)


def prepare_server_products(
    key: PaillierPublicKey,
    columns: Sequence[Sequence[mpz]],
    layouts: DistanceLayouts,
    rows: int,
    *,
    workers: int = 1,
    pool: ObfuscationPool | None = None,
) -> tuple[list[list[mpz]], ServerPrepared]:
    """Offline step 2 (S -> K): draw S's masks ``M`` and blinds ``R`` and return
    ``blinded[b][j] = Enc(<N_i, M_j> + R_ij for i in block b)`` for every row ``j``, each
    re-randomised with a fresh ``r**n`` (from ``pool`` if given, else computed on ``workers``
    threads), so that the ciphertext's randomness -- which K, holding the factorisation and the
    randomness of its own columns, can extract -- tells K nothing about ``M``.

    ``columns`` are validated ciphertexts. Each block is one
    :class:`~secagg.paillier_multiexp.MultiExpTable` over its ``k`` columns, with one product per
    row ``j`` (on ``workers`` threads).

    Raises :class:`SecAggParameterError` for ``rows < 1``, ``workers < 1``, a number of blocks
    other than :meth:`DistanceLayouts.prep_blocks` or a block that does not hold ``k``
    ciphertexts.
    """
    rows = _check_rows(rows)
    check_workers(workers)
    lay = layouts
    want = lay.prep_blocks(rows)
    if len(columns) != want:
        raise SecAggParameterError(
            f"{len(columns)} column blocks for {rows} rows of {lay.prep_column.slots} slots "
            f"(expected {want})"
        )
    if any(len(block) != lay.k for block in columns):
        raise SecAggParameterError(f"every column block must hold k={lay.k} ciphertexts")
    masks = _uniform(lay.mask_bits, (rows, lay.k))
    blinds = _uniform(lay.prep_blind_bits, (rows, rows))  # blinds[i, j] hides <N_i, M_j>
    mask_rows = [[int(v) for v in row] for row in masks]
    count = want * rows
    obfuscators = iter(
        pool.draw_many(count)
        if pool is not None
        else key.random_obfuscators(count, workers=workers)
    )
    slots = lay.prep_column.slots
    packer = lay.prep_column_blind
    nsq = key.nsquare
    out: list[list[mpz]] = []
    for b, block in enumerate(columns):
        products = _block_products((list(block), nsq, lay.mask_bits, mask_rows, workers))
        in_block = range(b * slots, min(rows, (b + 1) * slots))
        per_j = []
        for j in range(rows):
            (blind,) = packer.pack([blinds[i, j] for i in in_block])
            per_j.append(key.add_plain(products[j], blind) * next(obfuscators) % nsq)
        out.append(per_j)
    offset = 2 * _comb(blinds) + exact_squared_distances(masks)
    return out, ServerPrepared(lay, rows, masks, blinds, offset)


def prepare_keyholder_finish(
    key: PaillierPrivateKey,
    blinded: Sequence[Sequence[mpz]],
    state: KeyHolderPrepared,
    *,
    workers: int = 1,
) -> None:
    """Offline step 3 (K, local): decrypt S's blinded cross terms into ``state.u``
    (``U[i, j] = <N_i, M_j> + R_ij``, each hidden by S's uniform ``R_ij``) and keep
    ``comb(U)`` for step 5.

    Raises :class:`SecAggParameterError` if the state is already finished or used, or the
    blocks do not match it; :class:`~secagg.errors.CiphertextError` for an invalid ciphertext;
    :class:`PaillierOverflowError` if a value does not decode into the layout's slots (S sent
    something other than blinded cross terms).
    """
    if state.u is not None or state.used:
        raise SecAggParameterError(
            "this prepared key-holder state is already finished: prepare a fresh one per run"
        )
    lay = state.layouts
    rows = state.rows
    col = lay.prep_column
    if len(blinded) != lay.prep_blocks(rows):
        raise SecAggParameterError(
            f"{len(blinded)} blinded blocks for {rows} rows (expected {lay.prep_blocks(rows)})"
        )
    bad = [b for b, per_j in enumerate(blinded) if len(per_j) != rows]
    if bad:
        raise SecAggParameterError(f"blinded blocks {bad[:10]} do not hold {rows} cross terms")
    flat = key.decrypt_many(
        [c for per_j in blinded for c in per_j], sender="server", workers=workers
    )
    values = col.unpack(flat, len(flat) * col.slots)
    values = np.asarray(values, dtype=object).reshape(len(blinded), rows, col.slots)
    u = np.empty((rows, rows), dtype=object)
    for b in range(len(blinded)):
        for slot, i in enumerate(range(b * col.slots, min(rows, (b + 1) * col.slots))):
            u[i, :] = values[b, :, slot]
    if any(v < 0 for v in u.reshape(-1)):
        raise PaillierOverflowError("a blinded cross term is negative: not <N_i, M_j> + R_ij")
    state.u = u
    state.comb_u = _comb(u)


def server_mask_rows_prepared(
    key: PaillierPublicKey,
    rows: Sequence[Sequence[mpz]],
    slots: Sequence[int],
    state: ServerPrepared,
) -> list[list[mpz]]:
    """Online step 4 (S -> K): ``Enc(s_r + M_r)`` for the rows present, ``rows[i]`` being the
    validated ciphertexts (:meth:`DistanceLayouts.row_ciphertexts` of them) of slot
    ``slots[i]``, with the precomputed masks ``M_r``. Uses the state once.

    Raises :class:`SecAggParameterError` if the state was already used, ``slots`` are not
    strictly increasing in ``[0, rows)``, their number differs from ``len(rows)``, or a row has
    the wrong number of ciphertexts.
    """
    if state.masked_slots is not None:
        raise SecAggParameterError(
            "this prepared server state was already used to mask rows: a second use would show "
            "K the difference of two sets of sketches; prepare a fresh one per run"
        )
    lay = state.layouts
    chosen = _check_row_slots(rows, slots, state.rows, lay, "rows")
    state.masked_slots = chosen
    packer = lay.row_mask
    out = []
    for r, cts in zip(chosen, rows):
        plain = packer.pack(state.masks[r])
        out.append([key.add_plain(c, m) for c, m in zip(cts, plain)])
    return out


def keyholder_open_rows_prepared(
    key: PaillierPrivateKey,
    masked: Sequence[Sequence[mpz]],
    slots: Sequence[int],
    state: KeyHolderPrepared,
    *,
    workers: int = 1,
) -> KeyHolderOpened:
    """Online step 5 (K -> S): decrypt the masked rows ``masked[i]`` of slot ``slots[i]``, set
    aside the out-of-range ones (as :func:`keyholder_open_rows`: ``out_of_range`` maps the slot
    to a reason), and return, over the accepted slots, ``W_r = t_r - N_r`` and ``Zpart = A - 2
    comb(U)`` (``A_ij = ||t_i - t_j||**2``). Uses the state once (whatever the outcome, once the
    arguments are checked).

    Raises :class:`SecAggParameterError` if the state is not finished or already used,
    ``slots`` are not strictly increasing in ``[0, rows)`` or do not match ``masked``, or a row
    does not hold :meth:`DistanceLayouts.row_ciphertexts` ciphertexts (S's fault, not a client's);
    :class:`~secagg.errors.CiphertextError` for an invalid ciphertext (nothing is decrypted).
    """
    if state.used:
        raise SecAggParameterError(
            "this prepared key-holder state was already used: a second use would show S the "
            "difference of two sets of sketches; prepare a fresh one per run"
        )
    if state.u is None or state.comb_u is None:
        raise SecAggParameterError("prepare_keyholder_finish must run before the online step")
    lay = state.layouts
    chosen = _check_row_slots(masked, slots, state.rows, lay, "masked rows")
    state.used = True
    accepted, t, out_of_range = _open_masked(key, masked, chosen, lay, workers)
    m = len(accepted)
    w = t - state.n[accepted] if m else np.zeros((0, lay.k), dtype=object)
    z = exact_squared_distances(t) - 2 * state.comb_u[np.ix_(accepted, accepted)]
    return KeyHolderOpened(tuple(accepted), out_of_range, w, np.asarray(z, dtype=object), t)


def server_distances_prepared(
    opened_w: np.ndarray,
    opened_z: np.ndarray,
    accepted: Sequence[int],
    state: ServerPrepared,
) -> np.ndarray:
    """Online step 6 (S, local): the exact squared distances ``D`` of the accepted slots'
    sketches (``len(accepted)``-square object array of ints, in the order of ``accepted``):
    ``D = Zpart - 2 comb(W M^T) + 2 comb(R) + ||M_i - M_j||**2``. Uses the state once.

    ``opened_w``/``opened_z`` are K's :attr:`KeyHolderOpened.w`/``z``, ``accepted`` its slots.

    Raises :class:`SecAggParameterError` if the rows were not masked with this state, the state
    was already finished, ``accepted`` is not a strictly increasing subset of the masked slots,
    or the shapes do not match.
    """
    if state.masked_slots is None:
        raise SecAggParameterError("server_mask_rows_prepared must run before the distances")
    if state.finished:
        raise SecAggParameterError(
            "this prepared server state was already used for distances; prepare a fresh one"
        )
    lay = state.layouts
    acc = _check_slots(accepted, state.rows, "accepted")
    if not set(acc) <= set(state.masked_slots):
        raise SecAggParameterError("accepted slots must be among the masked slots")
    m = len(acc)
    w = np.asarray(opened_w, dtype=object)
    z = np.asarray(opened_z, dtype=object)
    if w.shape != (m, lay.k) or z.shape != (m, m):
        raise SecAggParameterError(
            f"W must be {m} x {lay.k} and Zpart {m} x {m}, got {w.shape} and {z.shape}"
        )
    state.finished = True
    idx = list(acc)
    wm = _exact_products(w, state.masks[idx])  # wm[i, j] = <W_i, M_j>
    return z - 2 * _comb(wm) + state.offset[np.ix_(idx, idx)]
