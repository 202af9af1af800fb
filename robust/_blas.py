"""Control of the BLAS thread count around our own threaded kernels (internal).

The Gram and mixing products of an (n, d) matrix with small n are skinny: OpenBLAS's own
threading of one ``n × chunk`` product synchronises for very little work, and on a loaded
machine its spinning threads can make it an order of magnitude slower than one thread. The
kernels in :mod:`robust._rows` therefore split the columns between Python worker threads
(numpy releases the GIL inside BLAS) and run BLAS single-threaded meanwhile.

The thread count is set through numpy's bundled OpenBLAS (found among the loaded shared
libraries). If it cannot be found, :func:`blas_threads_controllable` is False and the
kernels keep BLAS's own threading.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)
_lock = threading.Lock()
_funcs: tuple[object, object] | None | bool = False  # False = not looked up yet


def _candidate_libraries() -> list[str]:
    paths: list[str] = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                p = line.split()[-1] if line.strip() else ""
                if "openblas" in os.path.basename(p).lower() and p not in paths:
                    paths.append(p)
    except OSError:
        pass
    import numpy

    libdir = os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs")
    paths += [p for p in glob.glob(os.path.join(libdir, "*openblas*")) if p not in paths]
    return paths


def _lookup() -> tuple[object, object] | None:
    global _funcs
    if _funcs is False:
        _funcs = None
        for path in _candidate_libraries():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for set_name, get_name in _SYMBOLS:
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                    getter.restype = ctypes.c_int
                    _funcs = (setter, getter)
                    return _funcs
    return _funcs  # type: ignore[return-value]


def blas_threads_controllable() -> bool:
    return _lookup() is not None


_depth = 0
_saved = 0


@contextmanager
def single_threaded_blas() -> Iterator[bool]:
    """Run the block with BLAS limited to one thread (re-entrant, process-wide). Yields
    whether the limit could be applied."""
    global _depth, _saved
    funcs = _lookup()
    if funcs is None:
        yield False
        return
    setter, getter = funcs
    with _lock:
        if _depth == 0:
            _saved = int(getter())  # type: ignore[operator]
            setter(1)  # type: ignore[operator]
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                setter(_saved)  # type: ignore[operator]
