"""The blinded zero test: does the sum of the accepted clients' encrypted sketches equal the
sketch of the unmasked sum? The key holder learns only "equal" or "not equal".

After unmasking, the server S holds ``X = sum_{i in A} x_i`` (fixed-point integers) and can
compute ``P @ X`` itself (:func:`secagg.sketch.sketch` with ``wide=True``). It also holds every
``Enc(s_i)``, packed across coordinates with one :class:`~secagg.paillier_pack.SlotLayout`. By
linearity ``P @ X == sum_A s_i`` exactly when every accepted client sketched the input it masked
(up to a ``2**-k`` chance for a lie fixed before P, see :mod:`secagg.sketch`).

:func:`server_blinded_difference`: S adds up the accepted clients' ciphertexts, subtracts the
packed expected sketch, and folds every resulting ciphertext ``Enc(delta_c)`` into one,
``Enc(sum_c rho_c * delta_c)`` with independent uniform ``rho_c`` in ``[1, n)``, re-randomised.
:func:`keyholder_is_zero`: K decrypts and answers whether the plaintext is 0.

What K learns. If every ``delta_c`` is 0, the plaintext is 0. Otherwise, for ``n = pq`` and a
``delta_c`` not divisible by p or q, ``rho_c * delta_c`` is uniform in ``Z_n`` given everything
else, so the plaintext is a uniform value: K learns one bit. (A ``delta_c`` sharing a factor with
n would reveal a factor of n to S's adversary -- not a risk for honest parties, and a Byzantine
client cannot find one without factoring n.) The test wrongly says "equal" for unequal sums with
probability at most ``1/p + 1/q``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np
from gmpy2 import mpz

from .errors import PaillierOverflowError, SecAggParameterError
from .paillier_pack import SlotLayout
from .paillier_pool import ObfuscationPool
from .paillier_private import PaillierPrivateKey
from .paillier_public import PaillierPublicKey

__all__ = ["server_blinded_difference", "keyholder_is_zero"]


def server_blinded_difference(
    key: PaillierPublicKey,
    rows: Sequence[Sequence[mpz]],
    expected: np.ndarray | Sequence[int],
    layout: SlotLayout,
    *,
    pool: ObfuscationPool | None = None,
) -> mpz:
    """One ciphertext that decrypts to 0 iff ``sum(rows) == pack(expected)`` slot by slot.

    ``rows`` are the accepted clients' validated ciphertexts (each a packing of ``k`` sketch
    values with ``layout``), ``expected`` the ``k`` integers ``P @ X``.

    Raises
    ------
    PaillierOverflowError
        If ``len(rows)`` packed inputs, or ``expected``, exceed the layout's headroom (then the
        slot-wise comparison would not be exact). Call with a layout that holds the sum.
    SecAggParameterError
        For no rows, or rows of different lengths.
    """
    if not rows:
        raise SecAggParameterError("the zero test needs at least one row")
    per_row = len(rows[0])
    if any(len(r) != per_row for r in rows):
        raise SecAggParameterError("every row must have the same number of ciphertexts")
    layout.check_combination(len(rows))
    expected = np.asarray(expected, dtype=object)
    if any(abs(int(v)) > layout.max_abs for v in expected):
        raise PaillierOverflowError(
            f"an expected sketch value exceeds the layout's max_abs={layout.max_abs}: the "
            "sum cannot equal it (reject the round) or the layout is too narrow"
        )
    packed_expected = layout.with_input_bound(layout.max_abs).pack(expected)
    if len(packed_expected) != per_row:
        raise SecAggParameterError(
            f"expected has {len(expected)} values: {len(packed_expected)} plaintexts, rows have "
            f"{per_row}"
        )
    folded = None
    for c in range(per_row):
        total = key.sum(r[c] for r in rows)
        delta = key.add_plain(total, -int(packed_expected[c]))
        rho = secrets.randbelow(int(key.n) - 1) + 1
        term = key.mul_scalar(delta, rho)
        folded = term if folded is None else key.add(folded, term)
    return key.rerandomize(folded, pool=pool)


def keyholder_is_zero(key: PaillierPrivateKey, ciphertext: mpz, *, sender: object = None) -> bool:
    """Decrypt the folded difference; ``True`` iff it is 0 (the sums are equal).

    Raises :class:`~secagg.errors.CiphertextError` for an invalid ciphertext.
    """
    return int(key.decrypt(ciphertext, sender=sender)) == 0
