"""A pool of Paillier obfuscators ``r**n mod n**2``, computed ahead of time.

The exponentiation ``r**n mod n**2`` is almost the whole cost of a Paillier encryption (a
2048-bit exponent modulo a 4096-bit number); with it precomputed, encrypting is two
multiplications. :class:`ObfuscationPool` holds such values, fills up with :meth:`~ObfuscationPool.
fill` (blocking) or :meth:`~ObfuscationPool.fill_in_background` (a daemon thread, while the
caller does other work), and hands each value out once.

Guarantees
----------
* Each value is fresh: ``r`` uniform in ``Z_n^*`` from :mod:`secrets` (or, for a pool built on a
  :class:`~secagg.paillier.PaillierPrivateKey`, the same distribution computed with the CRT; see
  :meth:`~secagg.paillier.PaillierPrivateKey.random_obfuscators`).
* Each value is handed out at most once: :meth:`~ObfuscationPool.draw` removes it from the pool
  (``collections.deque.popleft``, atomic under the GIL, so concurrent drawers and a filling
  thread never share a value) and the pool keeps no other reference to it.
* Drawing from an empty pool never blocks and never fails: the value is computed online (one
  full exponentiation) and counted in :attr:`~ObfuscationPool.online_draws`, so a caller can see
  that the pool was too small.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from ._paillier_threads import check_workers
from .errors import SecAggParameterError

if TYPE_CHECKING:
    from gmpy2 import mpz

    from .paillier import PaillierPrivateKey, PaillierPublicKey

__all__ = ["ObfuscationPool"]

_FILL_CHUNK = 32  # values computed per call before they become available to drawers


class ObfuscationPool:
    """Precomputed obfuscators ``r**n mod n**2`` for one Paillier key.

    Parameters
    ----------
    key:
        A :class:`~secagg.paillier.PaillierPublicKey` (anyone encrypting), or the key holder's
        :class:`~secagg.paillier.PaillierPrivateKey`, which fills ~4x faster with the CRT.

    Use it with ``public_key.encrypt(m, pool=pool)`` or ``encrypt_many``.
    """

    def __init__(self, key: PaillierPublicKey | PaillierPrivateKey):
        public = getattr(key, "public_key", key)
        if not hasattr(public, "nsquare") or not hasattr(key, "random_obfuscators"):
            raise TypeError("ObfuscationPool needs a PaillierPublicKey or PaillierPrivateKey")
        self.public_key: PaillierPublicKey = public
        self._source = key
        self._values: deque[mpz] = deque()
        self._lock = threading.Lock()
        self._online = 0
        self._drawn = 0

    def __len__(self) -> int:
        """Values ready to draw."""
        return len(self._values)

    def __repr__(self) -> str:
        return (
            f"ObfuscationPool(ready={len(self)}, drawn={self._drawn}, "
            f"online_draws={self._online}, n_bits={self.public_key.n_bits})"
        )

    @property
    def online_draws(self) -> int:
        """How many draws found the pool empty and computed their value online."""
        return self._online

    @property
    def drawn(self) -> int:
        """How many values were handed out (pooled or online)."""
        return self._drawn

    def fill(self, count: int, *, workers: int = 1) -> None:
        """Compute ``count`` more values and add them to the pool (blocking).

        Values become drawable in chunks of 32 as they are computed, so a drawer running
        concurrently does not wait for the whole fill. ``workers`` threads share each chunk.

        Raises :class:`SecAggParameterError` for a negative ``count`` or ``workers < 1``.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SecAggParameterError(f"count must be an int >= 0, got {count!r}")
        check_workers(workers)
        chunk = max(_FILL_CHUNK, _FILL_CHUNK * workers)
        done = 0
        while done < count:
            m = min(chunk, count - done)
            self._values.extend(self._source.random_obfuscators(m, workers=workers))
            done += m

    def fill_in_background(self, count: int, *, workers: int = 1) -> threading.Thread:
        """Start :meth:`fill` on a daemon thread and return it (``join()`` to wait).

        The exponentiations release the GIL, so the caller's own work proceeds in parallel on
        another core. Arguments are checked before the thread starts.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SecAggParameterError(f"count must be an int >= 0, got {count!r}")
        check_workers(workers)
        thread = threading.Thread(
            target=self.fill, args=(count,), kwargs={"workers": workers}, daemon=True
        )
        thread.start()
        return thread

    def draw(self) -> mpz:
        """Remove and return one value; computed online if the pool is empty (see module)."""
        try:
            value = self._values.popleft()
        except IndexError:
            value = self._source.random_obfuscators(1)[0]
            with self._lock:
                self._online += 1
        with self._lock:
            self._drawn += 1
        return value

    def draw_many(self, count: int) -> list[mpz]:
        """Remove and return ``count`` values (those missing are computed online, in one batch)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SecAggParameterError(f"count must be an int >= 0, got {count!r}")
        out: list[mpz] = []
        pop = self._values.popleft
        try:
            while len(out) < count:
                out.append(pop())
        except IndexError:
            missing = count - len(out)
            out.extend(self._source.random_obfuscators(missing))
            with self._lock:
                self._online += missing
        with self._lock:
            self._drawn += count
        return out
