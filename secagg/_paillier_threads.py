"""Run gmpy2-heavy work on worker threads with the GIL released inside gmpy2 calls.

gmpy2 releases the GIL during an mpz multiplication, division, ``gcd`` or ``powmod`` only when
the calling thread's context has ``allow_release_gil=True`` (contexts are per thread), and always
inside ``powmod_base_list``/``powmod_exp_list``. :func:`released_gil` sets that flag for the
current thread; :func:`map_chunks` splits a list into contiguous chunks, runs a function on each
chunk in its own thread under :func:`released_gil`, and concatenates the results in order, so
the result is identical for any worker count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

import gmpy2

from .errors import SecAggParameterError

T = TypeVar("T")
R = TypeVar("R")


def released_gil() -> AbstractContextManager:
    """A gmpy2 context manager (for the current thread) that lets mpz operations release the GIL."""
    return gmpy2.context(gmpy2.get_context(), allow_release_gil=True)


def check_workers(workers: int) -> int:
    """``workers`` as an int >= 1, or :class:`SecAggParameterError`."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SecAggParameterError(f"workers must be an int >= 1, got {workers!r}")
    return workers


def split(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    """``items`` cut into at most ``parts`` contiguous, nearly equal, non-empty chunks."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append(items[start:stop])
        start = stop
    return out


def map_chunks(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T], workers: int) -> list[R]:
    """``fn`` applied to contiguous chunks of ``items`` on up to ``workers`` threads, results
    concatenated in order (``fn(items)`` when one worker suffices). An exception raised in any
    chunk is re-raised here after every thread has finished."""
    check_workers(workers)
    chunks = split(items, workers)
    if len(chunks) <= 1:
        return list(fn(items))
    results: list[list[R] | None] = [None] * len(chunks)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with released_gil():
                results[i] = list(fn(chunks[i]))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(chunks))]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    out: list[R] = []
    for part in results:
        out.extend(part)  # type: ignore[arg-type]
    return out
